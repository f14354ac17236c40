#!/usr/bin/env bash
# Database migration of flask-example. twelve (like paas-charm) runs it as
# `bash -eo pipefail migrate.sh` in the app directory, as the app user, with
# the app's full environment, before the app starts with a new environment.
# It must be idempotent: it may run again after any integration change.
set -euo pipefail

if [ -n "${POSTGRESQL_DB_CONNECT_STRING:-}" ]; then
  PGOPTIONS="--client-min-messages=warning" psql "$POSTGRESQL_DB_CONNECT_STRING" -v ON_ERROR_STOP=1 -q \
    -c 'CREATE TABLE IF NOT EXISTS visits (id SERIAL PRIMARY KEY, visited_at TIMESTAMPTZ NOT NULL DEFAULT now())'
  echo "visits table ready"
fi

if [ -n "${MYSQL_DB_CONNECT_STRING:-}" ]; then
  mariadb -h "$MYSQL_DB_HOSTNAME" -P "$MYSQL_DB_PORT" -u "$MYSQL_DB_USERNAME" -p"$MYSQL_DB_PASSWORD" "$MYSQL_DB_NAME" \
    -e 'CREATE TABLE IF NOT EXISTS visits (id INT AUTO_INCREMENT PRIMARY KEY, visited_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)'
  echo "mysql visits table ready"
fi

echo "migration ran"

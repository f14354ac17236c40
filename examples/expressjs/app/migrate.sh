#!/usr/bin/env bash
# Database migration of expressjs-example. twelve (like paas-charm) runs it as
# `bash -eo pipefail migrate.sh` in the app directory, as the app user, with
# the app's full environment, before the app starts with a new environment.
# It must be idempotent: it may run again after any integration change.
set -euo pipefail

if [ -n "${POSTGRESQL_DB_CONNECT_STRING:-}" ]; then
  PGOPTIONS="--client-min-messages=warning" psql "$POSTGRESQL_DB_CONNECT_STRING" -v ON_ERROR_STOP=1 -q \
    -c 'CREATE TABLE IF NOT EXISTS visits (id SERIAL PRIMARY KEY, visited_at TIMESTAMPTZ NOT NULL DEFAULT now())'
  echo "visits table ready"
fi

echo "migration ran"

#!/usr/bin/env bash
# Make sure the backing services twelve's tests use are up on this machine:
#   PostgreSQL 127.0.0.1:5432, MariaDB 3306, Redis 6379, RabbitMQ 5672.
# A service whose port already answers is left alone; one that does not is
# started with the machine's own command, then awaited for up to
# SERVICES_TIMEOUT seconds (default 60). Exits non-zero naming the service
# that did not come up.
set -uo pipefail

TIMEOUT=${SERVICES_TIMEOUT:-60}
if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" >/dev/null 2>&1
}

start_postgresql() {
  [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null || { echo "PostgreSQL is not installed (no /etc/postgresql or pg_ctlcluster)"; return 1; }
  "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start
}
start_mariadb() {
  [ -x /usr/sbin/mariadbd ] || { echo "MariaDB is not installed (no /usr/sbin/mariadbd)"; return 1; }
  "${SUDO[@]}" start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
}
start_redis() {
  command -v redis-server >/dev/null || { echo "Redis is not installed (no redis-server)"; return 1; }
  "${SUDO[@]}" redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
}
start_rabbitmq() {
  command -v rabbitmq-server >/dev/null || { echo "RabbitMQ is not installed (no rabbitmq-server)"; return 1; }
  "${SUDO[@]}" rabbitmq-server -detached
}

# ensure NAME PORT STARTFN
ensure() {
  local name=$1 port=$2 start=$3
  if port_open "$port"; then
    echo "services: $name is up on port $port"
    return 0
  fi
  echo "services: starting $name (port $port)"
  if ! "$start"; then
    echo "services: ERROR: could not start $name" >&2
    return 1
  fi
  local waited=0
  until port_open "$port"; do
    if [ "$waited" -ge "$TIMEOUT" ]; then
      echo "services: ERROR: $name did not come up on 127.0.0.1:$port within ${TIMEOUT}s" >&2
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  echo "services: $name is up on port $port (after ${waited}s)"
}

main() {
  local failed=()
  ensure PostgreSQL 5432 start_postgresql || failed+=(PostgreSQL)
  ensure MariaDB 3306 start_mariadb || failed+=(MariaDB)
  ensure Redis 6379 start_redis || failed+=(Redis)
  ensure RabbitMQ 5672 start_rabbitmq || failed+=(RabbitMQ)
  if [ ${#failed[@]} -gt 0 ]; then
    echo "services: FAILED: ${failed[*]} not running" >&2
    return 1
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi

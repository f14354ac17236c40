#!/usr/bin/env bash
# A config change on 3 Flask units vs 1, side by side, under a client loop through the
# ingress (bench/deploy/config_units.py): how long until every unit serves the new value,
# and how many requests failed meanwhile.
#
#   bench/deploy/config_units.sh [REPS] [UNITS]      (default 3 reps, 3 units)
#   PROFILE=debug bench/deploy/config_units.sh       (the debug build, no release build)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
PROFILE=${PROFILE:-release}
PY=/usr/bin/python3

if [ "$PROFILE" = release ]; then
  (cd "$root" && cargo build -q --release --bin twelve)
else
  (cd "$root" && cargo build -q --bin twelve)
fi
export TWELVE_BIN=$CARGO_TARGET_DIR/$PROFILE/twelve

work=$(mktemp -d /tmp/twelve-config-bench.XXXXXX)
chmod 755 "$work"
export TWELVE_HOME=$work/home
mkdir -p "$TWELVE_HOME" && chmod 755 "$TWELVE_HOME"
export TWELVE_INGRESS_PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
src=$work/src/flask
mkdir -p "$work/src" && cp -r "$root/examples/flask" "$src"
rm -rf "$src/__pycache__"

cleanup() {
  set +e
  for app in one many; do "$TWELVE_BIN" remove-application "$app" >/dev/null 2>&1; done
  "$TWELVE_BIN" controller stop >/dev/null 2>&1
  [ -f "$TWELVE_HOME/ingress/ingress.pid" ] && kill "$(tr -dc 0-9 <"$TWELVE_HOME/ingress/ingress.pid")" 2>/dev/null
  for f in "$TWELVE_HOME"/units/*/.pebble.pid; do [ -f "$f" ] && kill "$(tr -dc 0-9 <"$f")" 2>/dev/null; done
  sleep 0.5
  rm -rf "$work"
}
trap cleanup EXIT

echo "$("$TWELVE_BIN" --version | head -1) ($PROFILE), $(nproc) cores, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
$PY "$here/config_units.py" "$src" "${1:-3}" "${2:-3}"

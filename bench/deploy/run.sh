#!/usr/bin/env bash
# Deploy benchmark, one run, side by side:
#   1. deploy overhead: `twelve deploy SRC bench --no-wait` of an already-packed Flask
#      example until its unit answers 200 at / (and until the ingress URL does), against the
#      floor: the same gunicorn started by hand from the release's venv until its first 200.
#      REPS times each (default 5), median and min.
#   2. config change live on 3 units: `twelve config bench greeting=xN` until all 3 units
#      serve "xN from ..." (polled every 20 ms, unit addresses re-read each poll). 3 times.
#   3. idle footprint with 10 apps x 3 units: controller RSS, sum of unit supervisors' RSS,
#      ingress RSS, controller CPU over 30 idle seconds.
#
#   bench/deploy/run.sh           (needs python3; builds twelve in release mode)
#   REPS=5 APPS=10 UNITS=3 IDLE=30 bench/deploy/run.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
REPS=${REPS:-5}
CONFIG_REPS=${CONFIG_REPS:-3}
APPS=${APPS:-10}
UNITS=${UNITS:-3}
IDLE=${IDLE:-30}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
PY=/usr/bin/python3

echo "building twelve (release)..." >&2
(cd "$root" && cargo build -q --release --bin twelve)
export TWELVE_BIN=$CARGO_TARGET_DIR/release/twelve

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

work=$(mktemp -d /tmp/twelve-deploy-bench.XXXXXX)
chmod 755 "$work"
export TWELVE_HOME=$work/home
mkdir -p "$TWELVE_HOME" && chmod 755 "$TWELVE_HOME"
export TWELVE_INGRESS_PORT=$(free_port)
export FLOOR_PIDFILE=$work/floor.pid
src=$work/src/flask
mkdir -p "$work/src" && cp -r "$root/examples/flask" "$src"
rm -rf "$src/__pycache__"

twelve() { "$TWELVE_BIN" "$@"; }
kill_pidfile() {
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(tr -dc 0-9 <"$f")
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
}
kill_floor() {
  # The floor gunicorn runs in its own session: signal the whole group.
  [ -f "$FLOOR_PIDFILE" ] || return 0
  local pid; pid=$(tr -dc 0-9 <"$FLOOR_PIDFILE")
  if [ -n "$pid" ]; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$FLOOR_PIDFILE"
}
cleanup() {
  set +e
  kill_floor
  if [ -S "$TWELVE_HOME/controller.sock" ]; then
    for app in $(twelve status --format json 2>/dev/null |
                 $PY -c 'import json,sys; [print(a["name"]) for a in json.load(sys.stdin).get("apps") or []]' 2>/dev/null); do
      twelve remove-application "$app" >/dev/null 2>&1
    done
    twelve controller stop >/dev/null 2>&1
  fi
  kill_pidfile "$TWELVE_HOME/ingress/ingress.pid"
  for f in "$TWELVE_HOME"/units/*/.pebble.pid; do kill_pidfile "$f"; done
  sleep 0.5
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.0f\n", (a[NR/2]+a[NR/2+1])/2}'; }
minimum() { sort -n | head -1; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k/1024}'; }
app_names() { twelve status --format json | $PY -c 'import json,sys; [print(a["name"]) for a in json.load(sys.stdin).get("apps") or []]'; }
wait_gone() {  # until APP is no longer in the status
  for _ in $(seq 600); do
    app_names | grep -qx "$1" || return 0
    sleep 0.1
  done
  echo "run.sh: $1 still there after 60 s" >&2; exit 1
}

# --- 0. pack once, deploy once (the release and its venv exist from now on) ---------
echo "home $TWELVE_HOME, ingress port $TWELVE_INGRESS_PORT" >&2
echo "packing and deploying once..." >&2
twelve pack "$src" >&2
twelve deploy "$src" bench >&2
release=$(ls "$TWELVE_HOME/releases" | head -1)
[ "$(ls "$TWELVE_HOME/releases" | wc -l)" = 1 ] || { echo "run.sh: more than one release" >&2; exit 1; }
rel=$TWELVE_HOME/releases/$release
twelve remove-application bench >&2
wait_gone bench

# --- 1. deploy overhead vs the floor ------------------------------------------------
: >"$work/deploy.txt"; : >"$work/floor.txt"
for i in $(seq "$REPS"); do
  # Floor first, then twelve, alternating, so both see the same load drift.
  port=$(free_port)
  $PY "$here/measure.py" floor "$port" "$rel/app" \
      "$rel/venv/bin/python3" -m gunicorn -b "127.0.0.1:$port" app:app >>"$work/floor.txt"
  kill_floor
  $PY "$here/measure.py" deploy bench "$src" >>"$work/deploy.txt"
  echo "  rep $i: floor $(tail -1 "$work/floor.txt") ms; twelve cmd/unit/ingress/gunicorn $(tail -1 "$work/deploy.txt") ms" >&2
  twelve remove-application bench >/dev/null
  wait_gone bench
done

# --- 2. config change live on UNITS units -------------------------------------------
echo "deploying bench with $UNITS units..." >&2
twelve deploy "$src" bench -n "$UNITS" >&2
$PY "$here/measure.py" active bench 180
: >"$work/config.txt"
for i in $(seq "$CONFIG_REPS"); do
  $PY "$here/measure.py" config bench "x$i" "$UNITS" >>"$work/config.txt"
  echo "  config rep $i: $(tail -1 "$work/config.txt") ms" >&2
done
twelve remove-application bench >/dev/null
wait_gone bench

# --- 3. idle footprint with APPS apps x UNITS units ---------------------------------
echo "deploying $APPS apps x $UNITS units..." >&2
apps=()
for n in $(seq "$APPS"); do
  apps+=("app$n")
  twelve deploy "$src" "app$n" -n "$UNITS" --no-wait >/dev/null
done
$PY "$here/measure.py" active "${apps[@]}" 600
sleep 10
ctl=$(tr -dc 0-9 <"$TWELVE_HOME/controller.pid")
ing=$(tr -dc 0-9 <"$TWELVE_HOME/ingress/ingress.pid")
ctl_rss=$(rss_kib "$ctl")
ing_rss=$(rss_kib "$ing")
sup_rss=0; sups=0
for f in "$TWELVE_HOME"/units/*/.pebble.pid; do
  pid=$(tr -dc 0-9 <"$f"); r=$(rss_kib "$pid")
  [ "$r" -gt 0 ] && sups=$((sups + 1))
  sup_rss=$((sup_rss + r))
done
c0=$(cpu_ticks "$ctl"); i0=$(cpu_ticks "$ing")
sleep "$IDLE"
c1=$(cpu_ticks "$ctl"); i1=$(cpu_ticks "$ing")
hz=$(getconf CLK_TCK)
ctl_rss_after=$(rss_kib "$ctl")

# --- results -------------------------------------------------------------------------
col() { awk -v c="$1" '{print $c}' "$2"; }
f_med=$(col 1 "$work/floor.txt" | median);  f_min=$(col 1 "$work/floor.txt" | minimum)
c_med=$(col 1 "$work/deploy.txt" | median); c_min=$(col 1 "$work/deploy.txt" | minimum)
u_med=$(col 2 "$work/deploy.txt" | median); u_min=$(col 2 "$work/deploy.txt" | minimum)
g_med=$(col 3 "$work/deploy.txt" | median); g_min=$(col 3 "$work/deploy.txt" | minimum)
n_med=$(col 4 "$work/deploy.txt" | median); n_min=$(col 4 "$work/deploy.txt" | minimum)
k_med=$(col 1 "$work/config.txt" | median); k_min=$(col 1 "$work/config.txt" | minimum)
echo
echo "$( "$TWELVE_BIN" --version 2>/dev/null | head -1), $(nproc) cores, loadavg now: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "raw floor ms: $(tr '\n' ' ' <"$work/floor.txt")"
echo "raw deploy ms (cmd unit ingress gunicorn): $(tr '\n' ',' <"$work/deploy.txt")"
echo "raw config ms: $(tr '\n' ' ' <"$work/config.txt")"
echo
printf '| %-60s | %12s | %10s |\n' "measure" "median" "min"
printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..62})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..12})"
printf '| %-60s | %9s ms | %7s ms |\n' "floor: gunicorn by hand -> first 200" "$f_med" "$f_min"
printf '| %-60s | %9s ms | %7s ms |\n' "twelve deploy --no-wait returns" "$c_med" "$c_min"
printf '| %-60s | %9s ms | %7s ms |\n' "twelve deploy -> its gunicorn answers 200 (port from conf)" "$n_med" "$n_min"
printf '| %-60s | %9s ms | %7s ms |\n' "twelve deploy -> unit address (from status) answers 200" "$u_med" "$u_min"
printf '| %-60s | %9s ms | %7s ms |\n' "twelve deploy -> ingress URL answers 200" "$g_med" "$g_min"
printf '| %-60s | %9s ms | %7s ms |\n' "overhead over floor: gunicorn under twelve" "$((n_med - f_med))" "$((n_min - f_min))"
printf '| %-60s | %9s ms | %7s ms |\n' "deploy overhead over floor (unit, medians/mins)" "$((u_med - f_med))" "$((u_min - f_min))"
printf '| %-60s | %9s ms | %7s ms |\n' "deploy overhead over floor (ingress, medians/mins)" "$((g_med - f_med))" "$((g_min - f_min))"
printf '| %-60s | %9s ms | %7s ms |\n' "config greeting=xN -> all $UNITS units serve it" "$k_med" "$k_min"
echo
printf '| %-60s | %25s |\n' "idle, $APPS apps x $UNITS units" "value"
printf '|%s|%s|\n' "$(printf -- '-%.0s' {1..62})" "$(printf -- '-%.0s' {1..27})"
printf '| %-60s | %25s |\n' "controller RSS (10 s idle / after ${IDLE} s more)" "$(mib "$ctl_rss") / $(mib "$ctl_rss_after")"
printf '| %-60s | %25s |\n' "unit supervisors RSS, sum of $sups" "$(mib "$sup_rss")"
printf '| %-60s | %25s |\n' "unit supervisor RSS, mean" "$(mib $((sup_rss / (sups > 0 ? sups : 1))))"
printf '| %-60s | %25s |\n' "ingress RSS" "$(mib "$ing_rss")"
printf '| %-60s | %25s |\n' "controller CPU over ${IDLE} s idle" \
  "$(awk -v t=$((c1 - c0)) -v hz="$hz" -v s="$IDLE" 'BEGIN {printf "%d ticks = %.3f%% of a core", t, 100*t/hz/s}')"
printf '| %-60s | %25s |\n' "ingress CPU over ${IDLE} s idle" \
  "$(awk -v t=$((i1 - i0)) -v hz="$hz" -v s="$IDLE" 'BEGIN {printf "%d ticks = %.3f%% of a core", t, 100*t/hz/s}')"

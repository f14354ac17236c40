#!/usr/bin/env bash
# twelve pebble vs supervisord, side by side: the same N services (`sleep 100000`).
#
#   bench/pebble/run.sh                 N=50, 60 idle seconds
#   N=20 IDLE_SECONDS=30 bench/pebble/run.sh
#
# Prints, for each supervisor (the daemon alone, never its children):
#   - RSS idle (plan/config loaded, nothing running) and with N services running;
#   - time from `replan` (supervisord: `supervisorctl start all`) until all N processes
#     exist, and until the command returns (both wait for the 1 s okay delay /
#     startsecs, so that figure is >= 1 s by design);
#   - CPU use over IDLE_SECONDS with N services running (utime+stime from /proc/PID/stat),
#     both measured over the same window.
# Needs supervisord (Debian `supervisor`); installs it with apt-get if missing. Leaves
# nothing running.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

N=${N:-50}
IDLE=${IDLE_SECONDS:-60}

cargo build --release -p twelve >&2
BIN=${CARGO_TARGET_DIR:-target}/release/twelve
if ! command -v supervisord >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq supervisor) >&2
fi
# Debian's package starts a system-wide supervisord; this benchmark runs its own.

work=$(mktemp -d /tmp/pebble-bench.XXXXXX)
tw_pid=""
sv_pid=""
cleanup() {
  [ -n "$tw_pid" ] && kill -TERM "$tw_pid" 2>/dev/null || true
  [ -n "$sv_pid" ] && kill -TERM "$sv_pid" 2>/dev/null || true
  for p in $tw_pid $sv_pid; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  rm -rf "$work"
}
trap cleanup EXIT

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# utime+stime in clock ticks; fields counted after the ")" closing the command name.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
now_ms() { date +%s%3N; }
children() { cat /proc/"$1"/task/*/children 2>/dev/null | wc -w; }
wait_children() { # pid count -> ms when reached
  while [ "$(children "$1")" -lt "$2" ]; do sleep 0.005; done
  now_ms
}
wait_socket() { for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done; return 1; }

# --- twelve pebble -------------------------------------------------------------------
mkdir -p "$work/tw/layers"
{
  echo "services:"
  for i in $(seq "$N"); do
    printf '  s%s:\n    override: replace\n    command: sleep 100000\n    startup: enabled\n' "$i"
  done
} >"$work/tw/layers/001-bench.yaml"
"$BIN" pebble run --hold --dir "$work/tw" 2>"$work/tw.log" &
tw_pid=$!
wait_socket "$work/tw/.pebble.socket"
sleep 2
tw_idle=$(rss_kib "$tw_pid")
t0=$(now_ms)
"$BIN" pebble replan --dir "$work/tw" >/dev/null &
ctl=$!
tw_spawned=$(( $(wait_children "$tw_pid" "$N") - t0 ))
wait "$ctl" # replan waits for every service to pass the okay delay
tw_done=$(( $(now_ms) - t0 ))

# --- supervisord ---------------------------------------------------------------------
mkdir -p "$work/sv"
{
  cat <<CONF
[unix_http_server]
file=$work/sv/supervisor.sock
[supervisord]
logfile=$work/sv/supervisord.log
pidfile=$work/sv/supervisord.pid
childlogdir=$work/sv
nodaemon=true
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://$work/sv/supervisor.sock
CONF
  for i in $(seq "$N"); do
    printf '[program:s%s]\ncommand=sleep 100000\nautostart=false\n' "$i"
  done
} >"$work/sv/supervisord.conf"
supervisord -c "$work/sv/supervisord.conf" >/dev/null 2>&1 &
sv_pid=$!
wait_socket "$work/sv/supervisor.sock"
sleep 2
sv_idle=$(rss_kib "$sv_pid")
t0=$(now_ms)
supervisorctl -c "$work/sv/supervisord.conf" start all >/dev/null &
ctl=$!
sv_spawned=$(( $(wait_children "$sv_pid" "$N") - t0 ))
wait "$ctl"
sv_done=$(( $(now_ms) - t0 ))

# --- both idle with N services, same window ------------------------------------------
sleep 2
tw_busy=$(rss_kib "$tw_pid")
sv_busy=$(rss_kib "$sv_pid")
tw_c0=$(cpu_ticks "$tw_pid"); sv_c0=$(cpu_ticks "$sv_pid")
sleep "$IDLE"
tw_c1=$(cpu_ticks "$tw_pid"); sv_c1=$(cpu_ticks "$sv_pid")
hz=$(getconf CLK_TCK)
pct() { awk -v t="$1" -v hz="$hz" -v s="$IDLE" 'BEGIN {printf "%.3f%%", 100 * t / hz / s}'; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }

printf '\n%s services, %s idle seconds, %s cores, %s\n\n' "$N" "$IDLE" "$(nproc)" "$(date -u +%Y-%m-%d)"
printf '| %-40s | %-14s | %-14s |\n' "" "twelve pebble" "supervisord"
printf '|%s|%s|%s|\n' "------------------------------------------" "----------------" "----------------"
printf '| %-40s | %-14s | %-14s |\n' "RSS idle (nothing running)" "$(mib "$tw_idle")" "$(mib "$sv_idle")"
printf '| %-40s | %-14s | %-14s |\n' "RSS with $N services" "$(mib "$tw_busy")" "$(mib "$sv_busy")"
printf '| %-40s | %-14s | %-14s |\n' "start -> all $N processes spawned" "${tw_spawned} ms" "${sv_spawned} ms"
printf '| %-40s | %-14s | %-14s |\n' "start -> all $N past the 1 s okay delay" "${tw_done} ms" "${sv_done} ms"
printf '| %-40s | %-14s | %-14s |\n' "CPU over ${IDLE}s idle (of one core)" "$(pct $((tw_c1 - tw_c0)))" "$(pct $((sv_c1 - sv_c0)))"
printf '\nsupervisord %s; twelve %s\n' "$(supervisord --version)" "$("$BIN" --version)"

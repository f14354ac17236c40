#!/usr/bin/env bash
# Ingress benchmark: the same wrk load against two upstreams, each reached
#   direct            wrk -> upstream
#   twelve ingress    wrk -> twelve ingress -> upstream
#   nginx             wrk -> nginx (upstream + proxy_pass + keepalive) -> upstream
#   nginx-unix        (Flask only) nginx to the Unix socket gunicorn also listens on
# Upstreams: a minimal gunicorn Flask app (2 sync workers, bound to TCP and to a Unix
# socket as twelve binds gunicorn units; twelve's ingress is given the socket as a
# deployed unit's route is) and a tiny static one (nginx, `return 200 "ok"`). Prints, for each of RUNS rounds, a table with ratios to direct
# and the proxy's CPU time per request (utime+stime of its process(es) over the measured wrk
# run, divided by the requests answered), then the median of the rounds.
#
#   CARGO_TARGET_DIR=/tmp/bench-target bench/ingress/run.sh   (needs wrk, nginx: scripts/setup.sh)
#   RUNS=3 DURATION=10s CONNS=32 THREADS=2 INGRESS_WORKERS=2 bench/ingress/run.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2s}
INGRESS_WORKERS=${INGRESS_WORKERS:-2}
RUNS=${RUNS:-3}
VENV=${VENV:-/tmp/twelve-bench-venv}
NGINX=${NGINX:-/usr/sbin/nginx}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

command -v wrk >/dev/null || { echo "run.sh: wrk missing (scripts/setup.sh)" >&2; exit 1; }
[ -x "$NGINX" ] || { echo "run.sh: nginx missing (scripts/setup.sh)" >&2; exit 1; }

work=$(mktemp -d /tmp/twelve-ingress-bench.XXXXXX)
chmod 755 "$work" # nginx workers run as nobody and reach the Unix socket here
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "run.sh: nothing listens on port $1" >&2; exit 1
}

echo "building twelve ingress (release)..." >&2
(cd "$root" && cargo build -q --release -p twelve-ingress --example ingress)
ingress_bin=$CARGO_TARGET_DIR/release/examples/ingress

if [ ! -x "$VENV/bin/gunicorn" ]; then
  echo "creating $VENV with flask and gunicorn..." >&2
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q flask gunicorn
fi

flask_port=$(free_port); static_port=$(free_port); ingress_port=$(free_port); nginx_port=$(free_port)

# Upstream 1: gunicorn Flask, 2 sync workers.
cat >"$work/app.py" <<'EOF'
from flask import Flask
app = Flask(__name__)

@app.route("/")
def index():
    return "ok"
EOF
(cd "$work" && exec "$VENV/bin/gunicorn" -w 2 -b "127.0.0.1:$flask_port" -b "unix:$work/flask.sock" --log-level warning app:app) &
pids+=($!)

# Upstream 2: a static answer from nginx, one worker.
mkdir -p "$work/static/logs"
cat >"$work/static/nginx.conf" <<EOF
worker_processes 1;
daemon off;
error_log stderr error;
pid $work/static/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:$static_port;
    location / { default_type text/plain; return 200 "ok"; }
  }
}
EOF
"$NGINX" -p "$work/static" -c "$work/static/nginx.conf" &
pids+=($!)

# Proxy 1: twelve ingress.
cat >"$work/routes.json" <<EOF
{"apps": {
  "flask": {"backends": [{"unit": "flask/0", "addr": "127.0.0.1:$flask_port", "socket": "$work/flask.sock"}]},
  "static": {"backends": [{"unit": "static/0", "addr": "127.0.0.1:$static_port"}]}
}}
EOF
mkdir -p "$work/ingress"
cp "$work/routes.json" "$work/ingress/routes.json"
"$ingress_bin" run --workers "$INGRESS_WORKERS" --port "$ingress_port" --dir "$work/ingress" 2>"$work/ingress.log" &
pids+=($!)
ingress_pid=$!

# Proxy 2: nginx configured the equivalent way (host routing, forwarded headers, pooled
# HTTP/1.1 upstream connections, no access log, 2 workers like the ingress' 2 threads).
mkdir -p "$work/proxy/logs"
cat >"$work/proxy/nginx.conf" <<EOF
worker_processes 2;
daemon off;
error_log stderr error;
pid $work/proxy/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  upstream flask { server 127.0.0.1:$flask_port; keepalive 32; }
  upstream flask-unix { server unix:$work/flask.sock; keepalive 32; }
  upstream static { server 127.0.0.1:$static_port; keepalive 32; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host \$host;
  proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto \$scheme;
  proxy_set_header X-Forwarded-Host \$host;
  proxy_buffering off;
  server { listen 127.0.0.1:$nginx_port; server_name flask.localhost; location / { proxy_pass http://flask; } }
  server { listen 127.0.0.1:$nginx_port; server_name flask-unix.localhost; location / { proxy_pass http://flask-unix; } }
  server { listen 127.0.0.1:$nginx_port; server_name static.localhost; location / { proxy_pass http://static; } }
}
EOF
"$NGINX" -p "$work/proxy" -c "$work/proxy/nginx.conf" &
pids+=($!)
nginx_pid=$!

for p in $flask_port $static_port $ingress_port $nginx_port; do wait_port "$p"; done
# nginx's CPU is its workers' (the master only supervises them).
nginx_workers=$(pgrep -P "$nginx_pid" | tr '\n' ' ')
ticks=$(getconf CLK_TCK)

# cpu_ticks PID... -> utime+stime of those processes (all threads), in clock ticks
cpu_ticks() {
  local total=0 p
  for p in "$@"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}

# "1.23ms" / "812.00us" / "1.02s" -> milliseconds
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n = n / 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n = n * 1000
    printf "%.3f", n }'
}

# run NAME PORT HOST [PID...] -> "rps p50 p99 cpu_us_per_request" (cpu "-" without PIDs)
run() {
  local name=$1 port=$2 host=$3 out
  shift 3
  wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" -H "Host: $host" "http://127.0.0.1:$port/" >/dev/null
  local before=0
  [ $# -gt 0 ] && before=$(cpu_ticks "$@")
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "Host: $host" "http://127.0.0.1:$port/")
  local cpu=-
  if [ $# -gt 0 ]; then cpu=$(( $(cpu_ticks "$@") - before )); fi
  if echo "$out" | grep -q "Non-2xx"; then
    echo "run.sh: $name answered errors:" >&2; echo "$out" >&2; exit 1
  fi
  local rps p50 p99 requests
  rps=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  p50=$(to_ms "$(echo "$out" | awk '$1 == "50%" {print $2}')")
  p99=$(to_ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")
  if [ "$cpu" != - ]; then
    cpu=$(awk -v c="$cpu" -v t="$ticks" -v n="$requests" 'BEGIN { printf "%.1f", c * 1e6 / t / n }')
  fi
  echo "$rps $p50 $p99 $cpu"
}

header() {
  printf "| upstream | path           | req/s    | p50 ms | p99 ms | req/s vs direct | p99 vs direct | proxy CPU µs/req |\n"
  printf "|----------|----------------|----------|--------|--------|-----------------|---------------|------------------|\n"
}

printf "\nwrk -t%s -c%s -d%s --latency, ingress --workers %s, nginx 2 workers, %s cores, %s, %s rounds\n" \
  "$THREADS" "$CONNS" "$DURATION" "$INGRESS_WORKERS" "$(nproc)" "$(date -u '+%Y-%m-%d %H:%M UTC')" "$RUNS"
rows=$work/rows
: >"$rows"
for round in $(seq "$RUNS"); do
  printf "\nround %s, load average before: %s\n\n" "$round" "$(cut -d' ' -f1-3 /proc/loadavg)"
  header
  for upstream in flask static; do
    upstream_port=$flask_port
    [ "$upstream" = static ] && upstream_port=$static_port
    read -r d_rps d_p50 d_p99 d_cpu < <(run "$upstream direct" "$upstream_port" "$upstream.localhost")
    read -r t_rps t_p50 t_p99 t_cpu < <(run "$upstream via twelve" "$ingress_port" "$upstream.localhost" "$ingress_pid")
    # shellcheck disable=SC2086
    read -r n_rps n_p50 n_p99 n_cpu < <(run "$upstream via nginx" "$nginx_port" "$upstream.localhost" $nginx_workers)
    rows_now=("direct $d_rps $d_p50 $d_p99 $d_cpu" "twelve-ingress $t_rps $t_p50 $t_p99 $t_cpu" "nginx $n_rps $n_p50 $n_p99 $n_cpu")
    if [ "$upstream" = flask ]; then
      # shellcheck disable=SC2086
      read -r u_rps u_p50 u_p99 u_cpu < <(run "flask via nginx (unix)" "$nginx_port" "flask-unix.localhost" $nginx_workers)
      rows_now+=("nginx-unix $u_rps $u_p50 $u_p99 $u_cpu")
    fi
    for row in "${rows_now[@]}"; do
      read -r name rps p50 p99 cpu <<<"$row"
      awk -v u="$upstream" -v n="$name" -v r="$rps" -v a="$p50" -v b="$p99" -v c="$cpu" -v dr="$d_rps" -v db="$d_p99" \
        'BEGIN { printf "| %-8s | %-14s | %8.0f | %6.2f | %6.2f | %14.2fx | %12.2fx | %16s |\n", u, n, r, a, b, r / dr, b / db, c }'
      echo "$upstream $name $rps $p50 $p99 $cpu $d_rps $d_p99" >>"$rows"
    done
  done
  printf "\nload average after: %s\n" "$(cut -d' ' -f1-3 /proc/loadavg)"
done

# The median of each column over the rounds (ratios are taken per round first).
printf "\nmedian of %s rounds\n\n" "$RUNS"
header
for upstream in flask static; do
  names="direct twelve-ingress nginx"
  [ "$upstream" = flask ] && names="$names nginx-unix"
  for name in $names; do
    awk -v u="$upstream" -v n="$name" '
      function median(a, k,   i, j, t) {
        for (i = 2; i <= k; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
      }
      $1 == u && $2 == n { k++; r[k] = $3; a[k] = $4; b[k] = $5; c[k] = $6; rr[k] = $3 / $7; bb[k] = $5 / $8 }
      END {
        cpu = c[1] == "-" ? "-" : sprintf("%.1f", median(c, k))
        printf "| %-8s | %-14s | %8.0f | %6.2f | %6.2f | %14.2fx | %12.2fx | %16s |\n",
          u, n, median(r, k), median(a, k), median(b, k), median(rr, k), median(bb, k), cpu
      }' "$rows"
  done
done

#!/usr/bin/env bash
# TLS benchmark: twelve's ingress and nginx 1.22 side by side, same ECDSA P-256
# certificate, same upstreams (a gunicorn Flask app with 2 sync workers, and a static
# nginx `return 200 "ok"`), both proxies with 2 workers:
#   keep-alive   wrk -t2 -c32 over TLS, connections kept: req/s, p50, p99
#   handshakes   wrk -t2 -c32 with `Connection: close`: every request a new TCP + TLS
#                handshake (no session resumption in wrk): new connections per second
# wrk connects to 127.0.0.1 (so its SNI is an IP address, which both servers ignore: each
# serves its default, the one certificate) and routes by the Host header.
#
#   TWELVE=/path/to/twelve bench/ingress/tls.sh     (needs wrk, nginx, openssl)
#   RUNS=3 DURATION=10s bench/ingress/tls.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DURATION=${DURATION:-10s}; RUNS=${RUNS:-3}; CONNS=${CONNS:-32}
VENV=${VENV:-/tmp/twelve-bench-venv}
TWELVE=${TWELVE:?set TWELVE to a twelve binary (cargo build --profile dist -p twelve)}
work=$(mktemp -d /tmp/twelve-tls-bench.XXXXXX); chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "nothing on $1" >&2; exit 1; }

cd "$work"
openssl ecparam -name prime256v1 -genkey -noout -out key.pem 2>/dev/null
openssl req -x509 -new -key key.pem -subj /CN=bench.localhost -days 2 \
  -addext "subjectAltName=DNS:flask.localhost,DNS:static.localhost" -out cert.pem 2>/dev/null

if [ ! -x "$VENV/bin/gunicorn" ]; then /usr/bin/python3 -m venv "$VENV"; "$VENV/bin/pip" install -q flask gunicorn; fi
fp=$(free_port); sp=$(free_port); tp=$(free_port); hp=$(free_port); np=$(free_port)
printf 'from flask import Flask\napp = Flask(__name__)\n@app.route("/")\ndef index():\n    return "ok"\n' > app.py
"$VENV/bin/gunicorn" -w 2 -b "127.0.0.1:$fp" --log-level warning app:app & pids+=($!)
mkdir -p static/logs proxy/logs
cat > static/nginx.conf <<E
worker_processes 1; daemon off; error_log stderr error; pid $work/static/nginx.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000;
  server { listen 127.0.0.1:$sp; location / { default_type text/plain; return 200 "ok"; } } }
E
cat > proxy/nginx.conf <<E
worker_processes 2; daemon off; error_log stderr error; pid $work/proxy/nginx.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000;
  upstream static { server 127.0.0.1:$sp; keepalive 32; }
  upstream flask { server 127.0.0.1:$fp; keepalive 32; }
  proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host \$host;
  proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto \$scheme;
  ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem;
  ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache off; ssl_session_tickets off;
  server { listen 127.0.0.1:$np ssl http2; server_name static.localhost; location / { proxy_pass http://static; } }
  server { listen 127.0.0.1:$np ssl http2; server_name flask.localhost; location / { proxy_pass http://flask; } }
}
E
/usr/sbin/nginx -p "$work/static" -c "$work/static/nginx.conf" & pids+=($!)
/usr/sbin/nginx -p "$work/proxy" -c "$work/proxy/nginx.conf" & pids+=($!)
mkdir -p ingress
python3 - "$work" "$sp" "$fp" > ingress/routes.json <<'E'
import json, sys
w, sp, fp = sys.argv[1], sys.argv[2], sys.argv[3]
print(json.dumps({"apps": {
  "static": {"backends": [{"unit": "static/0", "addr": f"127.0.0.1:{sp}"}]},
  "flask": {"backends": [{"unit": "flask/0", "addr": f"127.0.0.1:{fp}"}]}},
  "certificates": [{"cert_pem": open(f"{w}/cert.pem").read(), "key_pem": open(f"{w}/key.pem").read()}]}))
E
"$TWELVE" ingress run --workers 2 --port "$hp" --https "127.0.0.1:$tp" --dir "$work/ingress" 2>ingress.log & pids+=($!)
ingress_pid=${pids[-1]}
for p in $fp $sp $tp $np; do wait_port "$p"; done
nginx_pids() { pgrep -P "$(cat "$work/proxy/nginx.pid")" | tr '\n' ' '; echo "$(cat "$work/proxy/nginx.pid")"; }
cpu_ticks() { local t=0; for p in $*; do set -- $(cut -d' ' -f14,15 /proc/$p/stat); t=$((t + $1 + $2)); done; echo $t; }

# run NAME PORT HOST MODE -> "rps p50 p99 cpu_us_per_req"
run() {
  local port=$2 host=$3 mode=$4 extra=() procs
  [ "$mode" = handshake ] && extra=(-H "Connection: close")
  if [ "$1" = twelve ]; then procs=$ingress_pid; else procs=$(nginx_pids); fi
  wrk -t2 -c"$CONNS" -d2s "${extra[@]}" -H "Host: $host" "https://127.0.0.1:$port/" >/dev/null 2>&1 || true
  local before; before=$(cpu_ticks $procs)
  local out; out=$(wrk -t2 -c"$CONNS" -d"$DURATION" --latency "${extra[@]}" -H "Host: $host" "https://127.0.0.1:$port/" 2>&1)
  local after; after=$(cpu_ticks $procs)
  local rps p50 p99 reqs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  local cpu; cpu=$(python3 -c "print(round(($after-$before)*1e6/$(getconf CLK_TCK)/max($reqs,1),1))")
  local errs; errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  echo "$rps $p50 $p99 $cpu ${errs:-}"
}
printf "%-6s %-7s %-10s %-10s %-8s %-8s %-10s %s\n" round upstream mode proxy req/s p50 p99 "cpu-us/req"
for r in $(seq "$RUNS"); do
  for up in static flask; do
    for mode in keepalive handshake; do
      for proxy in twelve nginx; do
        port=$tp; [ $proxy = nginx ] && port=$np
        read -r rps p50 p99 cpu errs <<<"$(run $proxy $port $up.localhost $mode)"
        printf "%-6s %-7s %-10s %-10s %-8s %-8s %-10s %s %s\n" "$r" "$up" "$mode" "$proxy" "$rps" "$p50" "$p99" "$cpu" "$errs"
      done
    done
  done
done

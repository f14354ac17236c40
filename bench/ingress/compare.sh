#!/usr/bin/env bash
# Paired comparison of ingress builds against nginx on the static upstream (nginx
# `return 200 "ok"`), for changes whose effect is smaller than the load's noise: every round
# runs `wrk -t2 -c32 -d$DUR` against each in turn, all started from this one session (one
# scheduler autogroup, as run.sh), and prints rps, p50/p90/p99/p99.9 and the proxy's CPU
# per request (µs), then the median of each column.
#
#   bench/ingress/compare.sh old=/tmp/ingress-old new=/tmp/ingress-new:1 var=BIN@ENV=1,ENV2=x
#   ROUNDS=8 DUR=3s DIRECT=1 bench/ingress/compare.sh ...
# NAME=BIN[:WORKERS][@ENV=VALUE,...]: an `ingress` example binary (cargo build --release -p
# twelve-ingress --example ingress), its --workers (2) and environment.
set -e
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROUNDS=${ROUNDS:-8}; DUR=${DUR:-3s}
W=$(mktemp -d /tmp/twelve-ingress-compare.XXXXXX); mkdir -p $W/static/logs $W/proxy/logs
pids=(); cpids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null; done; wait 2>/dev/null; rm -rf $W' EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SP=$(free_port); NP=$(free_port)
cat >$W/static/nginx.conf <<E2
worker_processes 1;
daemon off;
error_log stderr error;
pid $W/static/nginx.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000;
  server { listen 127.0.0.1:$SP; location / { default_type text/plain; return 200 "ok"; } } }
E2
cat >$W/proxy/nginx.conf <<E2
worker_processes 2;
daemon off;
error_log stderr error;
pid $W/proxy/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  upstream static { server 127.0.0.1:$SP; keepalive 32; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host \$host;
  proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto \$scheme;
  proxy_set_header X-Forwarded-Host \$host;
  proxy_buffering off;
  server { listen 127.0.0.1:$NP; server_name static.localhost; location / { proxy_pass http://static; } }
}
E2
/usr/sbin/nginx -p $W/static -c $W/static/nginx.conf & pids+=($!)
/usr/sbin/nginx -p $W/proxy -c $W/proxy/nginx.conf & pids+=($!)
names=(); ports=()
for spec in "$@"; do
  name=${spec%%=*}; rest=${spec#*=}; envs=; [[ $rest == *@* ]] && { envs=${rest#*@}; envs=${envs//,/ }; rest=${rest%%@*}; }
  bin=${rest%%:*}; workers=2; [[ $rest == *:* ]] && workers=${rest##*:}
  p=$(free_port); mkdir -p $W/$name
  echo "{\"apps\": {\"static\": {\"backends\": [{\"unit\": \"static/0\", \"addr\": \"127.0.0.1:$SP\"}]}}}" > $W/$name/routes.json
  env $envs $bin run --workers $workers --port $p --dir $W/$name 2>$W/$name.log & pids+=($!)
  names+=($name); ports+=($p); cpids+=("${pids[-1]}")
done
sleep 0.5
names+=(nginx); ports+=($NP); cpids+=("$(pgrep -P ${pids[1]} | tr '\n' ' ')")
[ -n "$DIRECT" ] && { names+=(direct); ports+=($SP); }
sleep 1
for i in "${!names[@]}"; do wrk -t2 -c32 -d1s -H "Host: static.localhost" http://127.0.0.1:${ports[$i]}/ >/dev/null; done
echo "load $(cut -d' ' -f1-3 /proc/loadavg) $(date -u +%H:%M:%S)"
for r in $(seq $ROUNDS); do
  for i in "${!names[@]}"; do
    c0=0; for q in ${cpids[$i]}; do c0=$((c0+$(awk '{print $14+$15}' /proc/$q/stat))); done
    line=$(wrk -t2 -c32 -d$DUR -s $here/percentiles.lua -H "Host: static.localhost" http://127.0.0.1:${ports[$i]}/ | tail -1)
    c1=0; for q in ${cpids[$i]}; do c1=$((c1+$(awk '{print $14+$15}' /proc/$q/stat))); done
    reqs=${line#req=}; reqs=${reqs%% *}
    printf "%-8s %s cpu=%.2f\n" ${names[$i]} "$line" $(awk -v c=$((c1-c0)) -v n=$reqs 'BEGIN{print c*1e4/n}')
  done
done | tee $W/out
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
# medians
for n in "${names[@]}"; do
  awk -v n=$n '$1==n { for (i=2;i<=NF;i++) { split($i,kv,"="); v[kv[1]][++c[kv[1]]]=kv[2] } }
   function med(a,k,  i,j,t){ for(i=2;i<=k;i++)for(j=i;j>1&&a[j-1]>a[j];j--){t=a[j];a[j]=a[j-1];a[j-1]=t}; return k%2?a[(k+1)/2]:(a[k/2]+a[k/2+1])/2 }
   END { printf "median %-8s rps=%.0f p50=%.2f p90=%.2f p99=%.2f p99.9=%.2f cpu_us=%.2f\n", n, med(v["rps"],c["rps"]), med(v["p50"],c["p50"]), med(v["p90"],c["p90"]), med(v["p99"],c["p99"]), med(v["p99.9"],c["p99.9"]), med(v["cpu"],c["cpu"]) }' $W/out
done

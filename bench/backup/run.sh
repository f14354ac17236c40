#!/usr/bin/env bash
# Backup benchmark: time and size of `twelve run pg create-backup` and `restore` of one
# PostgreSQL app database, side by side with plain `pg_dump -Fc` and `pg_restore` run by
# hand on the same database.
#
#   bench/backup/run.sh          SCALE=64 (pgbench scale: about 15 MB of table data and
#                                indexes per unit of scale, so ~1 GB at 64); RUNS=3;
#                                TWELVE_BIN=path/to/release/twelve to skip the build
#
# The database is the app database twelve provisioned for the Flask example on the
# machine's PostgreSQL (adopted with --external, as postgres), filled by `pgbench -i`.
# twelve's restore returns once the restored database is swapped in and the app is back;
# the backup of the state before the restore (docs/backups.md) is then made from the
# replaced database, which is dropped after it: the time until that backup is stored and
# the copy gone is given too.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
SCALE=${SCALE:-64}
RUNS=${RUNS:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
if [ -n "${TWELVE_BIN:-}" ]; then
  bin=$TWELVE_BIN        # a release binary built already
else
  (cd "$root" && cargo build -q --release --bin twelve)
  bin=$CARGO_TARGET_DIR/release/twelve
fi
PG=${PG:-postgresql://postgres@127.0.0.1:5432/postgres}
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
export PATH=$pgbin:$PATH

work=$(mktemp -d /var/tmp/twelve-bench-backup.XXXXXX)
chmod 755 "$work"
export TWELVE_HOME=$work/home TWELVE_INGRESS_PORT=${TWELVE_INGRESS_PORT:-18480} TWELVE_WEB_ADDR=127.0.0.1:0
app=benchbk
cleanup() {
  "$bin" remove-relation "$app" pg --destroy-data >/dev/null 2>&1 || true
  "$bin" remove-application "$app" >/dev/null 2>&1 || true
  "$bin" remove-application pg >/dev/null 2>&1 || true
  "$bin" controller stop >/dev/null 2>&1 || true
  psql -q "$PG" -c "DROP DATABASE IF EXISTS bench_by_hand WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" deploy "$root/examples/flask" "$app" >/dev/null
"$bin" deploy postgresql pg --external "$PG" >/dev/null
"$bin" integrate "$app" pg >/dev/null
db=$app
echo "filling database $db: pgbench -i -s $SCALE"
pgbench -q -i -s "$SCALE" "${PG%/*}/$db" >/dev/null 2>&1
dbsize=$(psql -tA "$PG" -c "select pg_database_size('$db')")

secs() { python3 -c 'import sys,time; print(f"{time.time():.3f}")'; }
# Each timed step starts after a checkpoint, so that none pays for the WAL the one before
# it wrote (a 1 GB restore writes about as much WAL, and max_wal_size is 1 GB by default).
checkpoint() { psql -q "$PG" -c CHECKPOINT >/dev/null; }
measure() { # label command...: prints the seconds the command took
  local t0 t1
  checkpoint
  t0=$(secs); "$@" >/dev/null; t1=$(secs)
  python3 -c "print(f'{$t1-$t0:.2f}')"
}
median() { python3 -c 'import sys,statistics; print(f"{statistics.median(map(float,sys.argv[1:])):.2f}")' "$@"; }

gone() { # seconds until the database the restore replaced is dropped, from $1
  while [ "$(psql -tA "$PG" -c "select 1 from pg_database where datname = '$db\$old'")" = 1 ]; do
    sleep 0.1
  done
  python3 -c "import time; print(f'{time.time()-$1:.2f}')"
}

declare -a tb tr trd td tpr
for i in $(seq 1 "$RUNS"); do
  # twelve: backup, then restore (whose backup of the state it replaces follows it).
  checkpoint
  t0=$(secs)
  out=$("$bin" run pg create-backup --format json)
  t1=$(secs)
  id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["backup-id"])' <<<"$out")
  tb+=($(python3 -c "print(f'{$t1-$t0:.2f}')"))
  size_twelve=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])' <<<"$out")
  checkpoint
  t0=$(secs)
  "$bin" run pg restore "backup-id=$id" >/dev/null
  t1=$(secs)
  tr+=($(python3 -c "print(f'{$t1-$t0:.2f}')"))
  trd+=($(gone "$t0"))
  # By hand: pg_dump -Fc to a file, pg_restore into a new database.
  td+=($(measure pg_dump -Fc -f "$work/by-hand.dump" "${PG%/*}/$db"))
  size_hand=$(stat -c %s "$work/by-hand.dump")
  psql -q "$PG" -c "DROP DATABASE IF EXISTS bench_by_hand WITH (FORCE)" >/dev/null
  psql -q "$PG" -c "CREATE DATABASE bench_by_hand" >/dev/null
  tpr+=($(measure pg_restore --no-owner -d "${PG%/*}/bench_by_hand" "$work/by-hand.dump"))
  # Keep only the newest backups (each restore made a pre-restore backup too).
  "$bin" config pg backup-retention=1 >/dev/null
done

mb() { python3 -c "print(f'{$1/1048576:.1f} MiB')"; }
b=$(median "${tb[@]}"); r=$(median "${tr[@]}"); rd=$(median "${trd[@]}"); d=$(median "${td[@]}"); p=$(median "${tpr[@]}")
cat <<EOF

PostgreSQL $(psql -tA "$PG" -c 'show server_version'), database $(mb "$dbsize") (pgbench scale $SCALE), median of $RUNS runs
| | time (s) | size |
| --- | --- | --- |
| twelve create-backup (pg_dump -Fc -Z0 + zstd -3) | $b | $(mb "$size_twelve") |
| pg_dump -Fc (zlib -6 by default) | $d | $(mb "$size_hand") |
| twelve restore (until the app is back: restore beside, swap) | $r | |
| twelve restore until its pre-restore backup is stored and the copy dropped | $rd | |
| pg_restore into a new database | $p | |
runs: backup ${tb[*]}; restore ${tr[*]}; restore+drop ${trd[*]}; pg_dump ${td[*]}; pg_restore ${tpr[*]}
load average: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores shared with other work)
EOF

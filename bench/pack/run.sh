#!/usr/bin/env bash
# Pack benchmark, pip and uv side by side in one run (hyperfine):
#   cold: empty wheel caches and no virtual environment (a first pack on a new machine,
#         downloads included);
#   warm: the wheel caches filled by an earlier pack, no virtual environment for these
#         requirements yet (a redeploy whose requirements.txt changed).
# Projects: the Flask example (examples/flask) and the seed demo's FastAPI app
# (fastapi[standard], as shared/seeds/12-factor-plan-25.04.txt has it).
#
#   bench/pack/run.sh            RUNS=3 by default; needs hyperfine and uv (scripts/setup.sh)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
RUNS=${RUNS:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
(cd "$root" && cargo build -q --release --bin twelve)
bin=$CARGO_TARGET_DIR/release/twelve
command -v hyperfine >/dev/null || { echo "hyperfine missing: scripts/setup.sh" >&2; exit 1; }
command -v uv >/dev/null || { echo "uv missing: scripts/setup.sh" >&2; exit 1; }

work=$(mktemp -d /var/tmp/twelve-bench-pack.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -r "$root/examples/flask" "$work/flask"
mkdir -p "$work/fastapi"
"$bin" init --profile fastapi-framework --name seed-demo "$work/fastapi" >/dev/null
printf 'fastapi[standard]\n' > "$work/fastapi/requirements.txt"

for project in flask fastapi; do
  for installer in pip uv; do
    cache=$work/cache-$installer-$project
    # Each run packs into a fresh TWELVE_HOME; the venv store is emptied before each run,
    # the wheel caches (pip's, uv's) only for the cold runs.
    pack="TWELVE_HOME=\$(mktemp -d $work/home.XXXX) TWELVE_PACK_CACHE=$cache PIP_CACHE_DIR=$cache/pip TWELVE_UV=$([ $installer = pip ] && echo pip || command -v uv) $bin pack $work/$project"
    hyperfine --runs "$RUNS" --style basic \
      --command-name "$project $installer cold" --prepare "rm -rf $cache" "$pack" \
      --export-json "$work/$project-$installer-cold.json" >/dev/null 2>&1 || true
    hyperfine --runs "$RUNS" --style basic --warmup 1 \
      --command-name "$project $installer warm" --prepare "rm -rf $cache/venvs" "$pack" \
      --export-json "$work/$project-$installer-warm.json" >/dev/null 2>&1 || true
  done
done

printf '\n%-10s %-5s %10s %10s\n' project tool "cold (s)" "warm (s)"
for project in flask fastapi; do
  for installer in pip uv; do
    c=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results'][0]; print('%.2f ± %.2f' % (r['median'], r['stddev'] or 0))" "$work/$project-$installer-cold.json" 2>/dev/null || echo failed)
    w=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results'][0]; print('%.2f ± %.2f' % (r['median'], r['stddev'] or 0))" "$work/$project-$installer-warm.json" 2>/dev/null || echo failed)
    printf '%-10s %-5s %14s %14s\n' "$project" "$installer" "$c" "$w"
  done
done

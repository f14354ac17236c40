#!/usr/bin/env bash
# Time and size of `twelve pack --oci` for the Flask and FastAPI examples: cold (an empty
# cache: mmdebstrap makes the base layer, pip downloads) and warm (base layer and
# dependencies cached, the same input again), then warm after an app change.
#
#   bench/oci/run.sh [TWELVE_BINARY]     default: target/release/twelve, else debug
#
# Each framework gets a cache of its own under a temporary directory, so both colds are
# really cold. Results go to stdout as a Markdown table (bench/oci/README.md keeps one).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
target=${CARGO_TARGET_DIR:-target}
bin=${1:-}
[ -n "$bin" ] || { [ -x "$target/release/twelve" ] && bin=$target/release/twelve || bin=$target/debug/twelve; }
bin=$(realpath "$bin")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
echo "| app | run | time (s) | image (MB) | base / dependencies / app / twelve layers (MB, gzip) |"
echo "|---|---|---:|---:|---|"
for app in flask fastapi; do
  export TWELVE_CACHE=$work/cache-$app
  cp -a "examples/$app" "$work/$app"
  for run in cold warm changed; do
    [ "$run" = changed ] && echo "# changed $(date +%s%N)" >>"$work/$app/app.py"
    out=$work/$app-$run.oci.tar
    s=$(now)
    "$bin" pack "$work/$app" --oci -o "$out" >"$work/$app-$run.log" 2>&1 || { cat "$work/$app-$run.log"; exit 1; }
    e=$(now)
    sizes=$(awk '/^  layer /{gsub(/[()]/,"",$3); printf "%s%s", sep, $3; sep=" / "}' "$work/$app-$run.log")
    printf '| %s | %s | %.1f | %.1f | %s |\n' "$app" "$run" "$(echo "$e - $s" | bc)" \
      "$(echo "$(stat -c %s "$out") / 1000000" | bc -l)" "$sizes"
  done
done
echo
echo "twelve binary: $bin ($(stat -c %s "$bin") bytes); $(nproc) cores"

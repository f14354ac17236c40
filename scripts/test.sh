#!/usr/bin/env bash
# The whole test suite: tools and backing services, formatting, lints, then every test.
#
#   scripts/test.sh            everything (what CI runs)
#   scripts/test.sh --quick    skip setup, fmt and clippy; only cargo test
#
# Cargo's build output is cached in $TWELVE_CACHE (default ~/.cache/twelve) so that reruns
# and CI's fresh clones do not rebuild every dependency.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1

export TWELVE_CACHE=${TWELVE_CACHE:-$HOME/.cache/twelve}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$TWELVE_CACHE/cargo-target}
export CARGO_TERM_COLOR=never
mkdir -p "$TWELVE_CACHE"

step() { printf '\n==> %s\n' "$*"; }

if [ "$quick" = 0 ]; then
  step "tools (scripts/setup.sh) and backing services (scripts/services.sh)"
  scripts/setup.sh --services

  step "cargo fmt --check"
  cargo fmt --all --check

  step "cargo clippy -D warnings"
  cargo clippy --workspace --all-targets -- -D warnings
fi

step "cargo test"
start=$(date +%s)
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$TWELVE_CACHE/last-test.log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '^test result: [a-z]+\. [0-9]+ passed' "$TWELVE_CACHE/last-test.log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '; [0-9]+ failed' "$TWELVE_CACHE/last-test.log" | awk '{s+=$2} END {print s+0}')
echo
echo "tests: $passed passed, $failed failed ($(( $(date +%s) - start )) s)"
exit "$status"

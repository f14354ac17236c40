#!/usr/bin/env bash
# The main job: build twelve and show what it would run for the bundled Flask example.
# (Until the controller lands this renders the plan; see README.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export TWELVE_CACHE=${TWELVE_CACHE:-$HOME/.cache/twelve}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$TWELVE_CACHE/cargo-target}
scripts/setup.sh >/dev/null
cargo build --release --locked -q --bin twelve
twelve="$CARGO_TARGET_DIR/release/twelve"
echo "==> twelve render examples/flask --scenario examples/flask/scenario.yaml"
"$twelve" render examples/flask --scenario examples/flask/scenario.yaml

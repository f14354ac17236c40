#!/usr/bin/env bash
# The main job: build twelve, deploy the bundled Flask example, and print its URL.
#
#   scripts/demo.sh            deploy (or update) the example in $TWELVE_HOME
#   TWELVE_HOME=/tmp/x scripts/demo.sh
#
# The app keeps running after the script exits; remove it with
#   $CARGO_TARGET_DIR/release/twelve remove-application flask-example
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export TWELVE_CACHE=${TWELVE_CACHE:-$HOME/.cache/twelve}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$TWELVE_CACHE/cargo-target}
scripts/setup.sh >/dev/null
cargo build --release -q --bin twelve
twelve="$CARGO_TARGET_DIR/release/twelve"
"$twelve" deploy examples/flask
url=$("$twelve" status flask-example --format json | sed -n 's/.*"url": "\([^"]*\)".*/\1/p' | head -1)
echo
echo "flask-example is serving at: $url"
echo "try: curl $url  |  $twelve status  |  $twelve logs flask-example/0"

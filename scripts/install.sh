#!/usr/bin/env bash
# Builds twelve with the `dist` profile (release, no debug info, stripped) and installs
# the binary: PREFIX/bin/twelve (PREFIX=/usr/local by default).
#   scripts/install.sh                 # as root, or with sudo available
#   PREFIX=$HOME/.local scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
command -v cargo >/dev/null || { echo "error: cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
cargo build --locked --profile dist -p twelve
target=${CARGO_TARGET_DIR:-target}
bin="$target/dist/twelve"
SUDO=()
if [ ! -w "$PREFIX/bin" ] && [ -d "$PREFIX/bin" ] && [ "$(id -u)" != 0 ]; then
  SUDO=(sudo)
fi
"${SUDO[@]}" mkdir -p "$PREFIX/bin"
"${SUDO[@]}" install -m 0755 "$bin" "$PREFIX/bin/twelve"
echo "installed $PREFIX/bin/twelve ($(du -h "$bin" | cut -f1)): $("$PREFIX/bin/twelve" --version)"
echo "next: twelve init --profile flask-framework hello && twelve deploy hello"
echo "on a server: twelve ingress configure --http 0.0.0.0:80 --https 0.0.0.0:443; twelve controller install"

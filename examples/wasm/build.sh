#!/usr/bin/env bash
# Build the example modules: C to wasm32-wasi with Debian's clang, lld and wasi-libc
# (./scripts/setup installs them). Usage: examples/wasm/build.sh [OUT_DIR]  (default: here)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here}"
mkdir -p "$out"
for m in anomaly scale; do
  clang --target=wasm32-wasi -O2 -Wl,--strip-all -o "$out/$m.wasm" "$here/$m.c" -lm
  echo "$out/$m.wasm"
done

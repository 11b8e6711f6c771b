#!/usr/bin/env bash
# Build the example modules, upload them to a cluster and run each once as a task.
#
#   EDGERUN_API_KEY=$(cat /tmp/edgerun-dev-7101/admin.key) examples/wasm/run.sh [URL]
#
# URL defaults to http://127.0.0.1:7101 (./scripts/run's first node). Needs curl; the build
# needs clang, lld and wasi-libc (./scripts/setup installs them).
set -euo pipefail
url="${1:-http://127.0.0.1:7101}"
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$here/build.sh" "$out" >/dev/null

auth=()
if [ -n "${EDGERUN_API_KEY:-}" ]; then
  token=$(curl -sf -XPOST "$url/v1/auth/token" -d "{\"api_key\":\"$EDGERUN_API_KEY\"}" |
    sed 's/.*"token":"\([^"]*\)".*/\1/')
  auth=(-H "Authorization: Bearer $token")
fi

for m in scale anomaly; do
  echo "upload $m: $(curl -sf "${auth[@]}" -XPOST "$url/v1/modules?name=$m" --data-binary "@$out/$m.wasm")"
done

# Submit a task, wait for it, print its result.
run() {
  local what="$1" body="$2" id
  id=$(curl -sf "${auth[@]}" -XPOST "$url/v1/tasks" -d "$body" | sed 's/^{"id":\([0-9]*\).*/\1/')
  echo "$what: task $id: $(curl -sf "${auth[@]}" "$url/v1/tasks/$id/wait?timeout=30s" |
    sed 's/.*"status":"\([a-z_]*\)".*"result":\(.*\),"error".*/\1 \2/')"
}
run "scale (Celsius to Fahrenheit)" \
  '{"wasm":{"module":"scale","args":["1.8","32"]},"input":{"values":[20,21.5,19,35]}}'
run "anomaly (moving average, 4 sigma)" \
  '{"wasm":{"module":"anomaly"},"input":{"values":[20,20.1,20.2,20,20.1,20.2,20,20.1,20.2,35,20.1],"window":8,"threshold":4}}'

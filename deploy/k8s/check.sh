#!/usr/bin/env bash
# Check the manifests offline: each document against the Kubernetes JSON schemas
# (kubernetes-validate from PyPI carries them), and the embedded node.toml with edgerun's own
# config loader (`edgerun node --check`-style: the binary refuses a bad config at start).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  python3 -m pip install -q kubernetes-validate >/dev/null 2>&1 || {
    echo "k8s: cannot install kubernetes-validate (PyPI); skipped" >&2; exit 0; }
fi
kubernetes-validate --strict configmap.yaml service.yaml statefulset.yaml

# The embedded node.toml, through edgerun's own loader (as pod edgerun-1 would start it).
bin=${EDGERUN_BIN:-../../target/debug/edgerun}
if [ -x "$bin" ]; then
  toml=$(mktemp)
  trap 'rm -f "$toml"' EXIT
  python3 - configmap.yaml "$toml" <<'PY'
import sys
text = open(sys.argv[1]).read()
body = text.split("node.toml: |\n", 1)[1]
lines = [l[4:] if l.startswith("    ") else l.strip() for l in body.splitlines()]
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
PY
  "$bin" node --config "$toml" --id 2 --set 'cluster.advertise_rpc="edgerun-1.edgerun:7201"' --check-config
else
  echo "k8s: $bin not built; node.toml not checked" >&2
fi

#!/usr/bin/env bash
# The docker-compose smoke test: build the image, start the three-node cluster, submit 100
# tasks through each node, kill one node's container, keep submitting, check every result,
# then `down` and `up` again and find the data back. Skipped (exit 0, said so) where there is
# no Docker engine.
#
#   deploy/smoke.sh               # PROFILE=dev (the debug binary the tests built) by default
#   PROFILE=release deploy/smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1; then
  echo "smoke: no Docker engine here (docker info failed); skipped" >&2
  [ "${REQUIRE_ALL_TESTS:-0}" = 1 ] && { echo "  ... and REQUIRE_ALL_TESTS=1: failing instead" >&2; exit 1; }
  exit 0
fi
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
export PROFILE=${PROFILE:-dev}
project=edgerun-smoke
dc() { "${compose[@]}" -p "$project" -f deploy/docker-compose.yml "$@"; }
cleanup() { dc down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup

deploy/build-image.sh

ports=(7101 7102 7103)
now_ms() { date +%s%3N; }

# wait_ready PORT...: every given node answers /readyz 200 (deadline 60 s).
wait_ready() {
  local deadline=$(( $(date +%s) + 60 )) port code
  for port in "$@"; do
    while :; do
      code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" || true)
      [ "$code" = 200 ] && break
      if [ "$(date +%s)" -gt "$deadline" ]; then
        echo "smoke: node on port $port not ready after 60 s (last HTTP $code)" >&2
        dc logs --tail 40 >&2
        exit 1
      fi
      sleep 0.2
    done
  done
}

# login: the admin key from the shared secrets volume, traded for a token (auth is on).
login() {
  local key
  key=$(docker exec "$(dc ps -q node1)" cat /secrets/admin.key)
  TOKEN=$(curl -sf -XPOST http://127.0.0.1:7101/v1/auth/token -H 'Content-Type: application/json' \
    -d "{\"api_key\":\"$key\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  export TOKEN
}

# submit PORT N OFFSET: N stats tasks in one batch through one node; prints the ids.
submit() {
  local port=$1 n=$2 off=$3
  python3 - "$port" "$n" "$off" <<'PY'
import json, os, sys, urllib.request
port, n, off = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
tasks = [{"kernel": "stats", "input": {"values": [off + i, off + i + 1, off + i + 2]},
          "idempotency_key": f"smoke-{off + i}"} for i in range(n)]
req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/tasks/batch",
                             data=json.dumps({"tasks": tasks}).encode(),
                             headers={"Content-Type": "application/json",
                                      "Authorization": "Bearer " + os.environ["TOKEN"]})
ids = json.load(urllib.request.urlopen(req, timeout=60))["ids"]
assert len(ids) == n, ids
print(" ".join(f"{i}:{off + k}" for k, i in enumerate(ids)))
PY
}

# check PORT ID:BASE...: every task succeeded with mean BASE + 1 (waits up to 120 s each).
check() {
  local port=$1; shift
  python3 - "$port" "$@" <<'PY'
import json, os, sys, time, urllib.request
port = int(sys.argv[1])
auth = {"Authorization": "Bearer " + os.environ["TOKEN"]}
pairs = [a.split(":") for a in sys.argv[2:]]
bad, nodes = [], {}
for tid, base in pairs:
    deadline = time.time() + 120
    while True:
        try:
            t = json.load(urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/tasks/{tid}/wait?timeout=10s", headers=auth), timeout=30))
        except Exception as e:
            t = {"status": f"error {e}"}
        if t.get("status") in ("succeeded", "failed", "timed_out", "cancelled"):
            break
        if time.time() > deadline:
            break
        time.sleep(0.2)
    nodes[t.get("node")] = nodes.get(t.get("node"), 0) + 1
    want = float(base) + 1.0
    if t.get("status") != "succeeded" or (t.get("result") or {}).get("mean") != want:
        bad.append((tid, t.get("status"), t.get("error"), (t.get("result") or {}).get("mean"), want))
if bad:
    print(f"smoke: {len(bad)} of {len(pairs)} tasks wrong, e.g. {bad[:5]}", file=sys.stderr)
    sys.exit(1)
print(f"smoke: {len(pairs)} tasks succeeded with the right results; ran on nodes {nodes}")
PY
}

t0=$(now_ms)
dc up -d
wait_ready "${ports[@]}"
echo "smoke: cluster ready $(( $(now_ms) - t0 )) ms after 'up -d'"
code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:7101/v1/cluster)
[ "$code" = 401 ] || { echo "smoke: /v1/cluster without a token answered $code, not 401" >&2; exit 1; }
login
curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:7101/v1/cluster; echo

all=()
for k in 0 1 2; do
  read -r -a got <<<"$(submit "${ports[$k]}" 100 $((k * 1000)))"
  all+=("${got[@]}")
done
check 7101 "${all[@]}"
iso=$(curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:7101/v1/tasks/${all[0]%%:*}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["isolation"])')
echo "smoke: tasks ran with isolation $iso"

echo "smoke: killing node3's container"
docker kill "$(dc ps -q node3)" >/dev/null
more=()
for k in 0 1; do
  read -r -a got <<<"$(submit "${ports[$k]}" 100 $((5000 + k * 1000)))"
  more+=("${got[@]}")
done
check 7101 "${more[@]}"

echo "smoke: down, then up again"
dc down
t0=$(now_ms)
dc up -d
wait_ready "${ports[@]}"
echo "smoke: cluster back $(( $(now_ms) - t0 )) ms after 'up -d'"
check 7102 "${all[@]}" "${more[@]}"
echo "smoke: passed"

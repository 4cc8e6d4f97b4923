#!/usr/bin/env bash
# The demo's warm `GET /items/1` with its near cache on, beside a constant handler that returns
# the same bytes on the same path, under `wrk -t2 -c64 -d${SECONDS_PER_RUN}s` (1 s warm-up
# each), alternating the two servers ROUNDS times so a change in the machine's load hits both.
#
#   benches/instr/demo-wrk.sh <demo-app binary> <constant binary> [label]
#
# Starts a private redis-server on a free loopback port; REDIS_CACHE_NEAR_ENTRIES=10000.
set -euo pipefail
demo="$1" constant="$2" label="${3:-demo}"
rounds="${ROUNDS:-3}" seconds="${SECONDS_PER_RUN:-5}" path=/items/1
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
work="$(mktemp -d)"; pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
rport="$(free_port)"
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
pids+=($!)
until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.05; done
dport="$(free_port)"
env BIND="127.0.0.1:$dport" DATABASE_PATH="$work/catalog.db" REDIS_URL="redis://127.0.0.1:$rport" \
  RUST_LOG=warn REDIS_CACHE_NEAR_ENTRIES=10000 "$demo" &
pids+=($!)
for _ in $(seq 1 600); do
  curl -s -o /dev/null -D - "http://127.0.0.1:$dport$path" 2>/dev/null | grep -qi '^x-cache: HIT' && break
  sleep 0.05
done
curl -s "http://127.0.0.1:$dport$path" >"$work/body.json"
cport="$(free_port)"
BIND="127.0.0.1:$cport" BODY_FILE="$work/body.json" PATH_TO_SERVE="$path" "$constant" &
pids+=($!)
until curl -s -o /dev/null "http://127.0.0.1:$cport$path"; do sleep 0.05; done
rps() {
  wrk -t2 -c64 -d1s "$1" >/dev/null
  wrk -t2 -c64 -d"${seconds}s" "$1" | awk '/Requests\/sec:/ { print $2 }'
}
for r in $(seq 1 "$rounds"); do
  d="$(rps "http://127.0.0.1:$dport$path")"
  c="$(rps "http://127.0.0.1:$cport$path")"
  echo "$label round=$r load=$(cut -d' ' -f1 /proc/loadavg) demo_near=$d constant=$c ratio=$(awk -v a="$d" -v b="$c" 'BEGIN { printf "%.2f", a / b }')"
done
echo "$label /metrics item hits by tier:"
curl -s "http://127.0.0.1:$dport/metrics" | grep '^redis_cache_requests_total' | grep 'prefix="item"' || true

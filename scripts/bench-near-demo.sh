#!/usr/bin/env bash
# The demo's near cache from the outside: builds demo-app (release), starts a private
# redis-server on a free loopback port, then runs the demo binary twice on it, with
# REDIS_CACHE_NEAR_ENTRIES unset (Redis only) and set (the near cache on, read through
# CacheBuilder::from_env), and measures the warm `GET /items/1` of each under
# `wrk -t2 -c64 -d5s` after a 1 s warm-up. Prints a Markdown table and the `tier` series of
# the near-cache run's /metrics, which show where the hits were answered.
#
# `cargo bench -p benches --bench cache` measures the same read in-process beside a constant
# JSON handler (its `http` section); this script checks the environment variable path of the
# real binary. LOCAL_ENTRIES (default 10000), SECONDS_PER_RUN (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "bench-near-demo: $*" >&2; }

local_entries="${LOCAL_ENTRIES:-10000}"
seconds="${SECONDS_PER_RUN:-5}"
path="/items/1"

command -v wrk >/dev/null || { say "wrk is missing (Debian: apt-get install wrk)"; exit 1; }
scripts/ensure-redis.sh

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

work="$(mktemp -d)"
redis_pid=""
app_pid=""
cleanup() {
  if [[ -n $app_pid ]]; then
    kill -TERM "$app_pid" 2>/dev/null || true
    wait "$app_pid" 2>/dev/null || true
  fi
  if [[ -n $redis_pid ]]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
  >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 1 100); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.05
done
redis-cli -p "$redis_port" ping >/dev/null || { say "redis-server did not start"; exit 1; }

say "building demo-app (release)"
cargo build --release -q -p demo-app --bin demo-app
binary="${CARGO_TARGET_DIR:-target}/release/demo-app"

# Starts the demo with "$@" as extra environment; waits until the item is a cache hit.
start_demo() {
  local port
  port="$(free_port)"
  env BIND="127.0.0.1:$port" DATABASE_PATH="$work/catalog-$port.db" \
    REDIS_URL="redis://127.0.0.1:$redis_port" RUST_LOG=warn "$@" "$binary" &
  app_pid=$!
  addr="127.0.0.1:$port"
  for _ in $(seq 1 300); do
    if curl -s -o /dev/null -D - "http://$addr$path" 2>/dev/null | grep -qi '^x-cache: HIT'; then
      return 0
    fi
    sleep 0.05
  done
  say "the demo never answered $path from the cache"
  exit 1
}

stop_demo() {
  kill -TERM "$app_pid" 2>/dev/null || true
  wait "$app_pid" 2>/dev/null || true
  app_pid=""
}

# Prints "requests/s p99" of one wrk run.
measure() {
  wrk -t2 -c64 -d1s "http://$addr$path" >/dev/null
  wrk -t2 -c64 -d"${seconds}s" --latency "http://$addr$path" |
    awk '/Requests\/sec:/ { rps = $2 } $1 == "99%" { p99 = $2 } END { print rps, p99 }'
}

echo "| demo-app | requests/s | p99 |"
echo "|---|---:|---:|"
start_demo
read -r off_rps off_p99 < <(measure)
echo "| Redis only (REDIS_CACHE_NEAR_ENTRIES unset) | $off_rps | $off_p99 |"
stop_demo

start_demo REDIS_CACHE_NEAR_ENTRIES="$local_entries"
read -r on_rps on_p99 < <(measure)
echo "| near cache on (REDIS_CACHE_NEAR_ENTRIES=$local_entries) | $on_rps | $on_p99 |"
echo
echo "near / Redis only: $(awk -v a="$on_rps" -v b="$off_rps" 'BEGIN { printf "%.2f", a / b }')"
echo
echo "/metrics of the near-cache run (requests by outcome and tier):"
echo
echo '```'
curl -s "http://$addr/metrics" | grep '^redis_cache_requests_total' | grep 'prefix="item"' || true
echo '```'
stop_demo

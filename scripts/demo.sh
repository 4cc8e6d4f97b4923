#!/usr/bin/env bash
# The README's demo command: builds the demo service (release) and runs it in the foreground.
#
# When no Redis answers at REDIS_URL (default redis://127.0.0.1:6379), it makes sure
# redis-server is installed (scripts/ensure-redis.sh) and starts a private one on a free
# loopback port for the demo's lifetime, stopping it when the demo exits. Ctrl-C (SIGINT) or
# SIGTERM stops the demo gracefully.
#
# DEMO_REDIS=cluster starts a private local Redis Cluster instead (3 primaries, 3 replicas,
# scripts/redis-cluster.sh) and points the service at it with REDIS_CLUSTER_NODES.
#
# The near cache is on (10000 entries) unless REDIS_CACHE_NEAR_ENTRIES says otherwise
# (REDIS_CACHE_NEAR_ENTRIES=0 turns it off).
#
# Every variable of the service passes through: BIND, DATABASE_PATH (default
# target/demo/catalog.db), ADMIN_TOKEN, REDIS_URL, REDIS_CLUSTER_NODES, REDIS_SENTINEL_*,
# REDIS_CACHE_*, RUST_LOG.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "demo: $*" >&2; }

# Whether something speaking RESP answers PING at host $1 port $2 (an auth error counts: a
# Redis is there and the service will authenticate with the URL's password).
redis_answers() {
  timeout 3 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "PING\r\n" >&3
    IFS= read -r -t 2 reply <&3 || exit 1
    [[ $reply == [+-]* ]]
  ' "$1" "$2" 2>/dev/null
}

# A loopback port nobody listens on right now.
free_port() {
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 40000))
    if ! timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$port" 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

export DATABASE_PATH="${DATABASE_PATH:-target/demo/catalog.db}"
export REDIS_CACHE_NEAR_ENTRIES="${REDIS_CACHE_NEAR_ENTRIES:-10000}"
mkdir -p "$(dirname "$DATABASE_PATH")"

redis_pid=""
redis_dir=""
app_pid=""
cleanup() {
  if [[ -n $app_pid ]] && kill -0 "$app_pid" 2>/dev/null; then
    kill -TERM "$app_pid" 2>/dev/null || true
    wait "$app_pid" 2>/dev/null || true
  fi
  if [[ -n $redis_pid ]]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    say "stopped the private redis-server"
  fi
  if [[ -n $redis_dir && -f $redis_dir/pids ]]; then
    kill $(cat "$redis_dir/pids") 2>/dev/null || true
    say "stopped the private Redis Cluster"
  fi
  [[ -n $redis_dir ]] && rm -rf "$redis_dir"
  return 0
}
trap cleanup EXIT

if [[ ${DEMO_REDIS:-} == cluster ]]; then
  redis_dir="$(mktemp -d)"
  say "starting a private local Redis Cluster (3 primaries, 3 replicas)"
  nodes="$(scripts/redis-cluster.sh "$redis_dir")" || {
    say "the local cluster did not start; its logs: $redis_dir"
    exit 1
  }
  unset REDIS_URL
  export REDIS_CLUSTER_NODES="$nodes"
  say "private cluster at $nodes, stopped when the demo exits"
elif [[ -n ${REDIS_CLUSTER_NODES:-} || -n ${REDIS_SENTINEL_MASTER:-} ]]; then
  say "using the Redis Cluster or Sentinel set in the environment"
else
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
# host and port of redis://[user[:password]@]host[:port][/db]; other schemes are trusted.
if [[ $REDIS_URL =~ ^redis://([^@/]*@)?([^:/]+)(:([0-9]+))?(/.*)?$ ]]; then
  host="${BASH_REMATCH[2]}"
  port="${BASH_REMATCH[4]:-6379}"
  if redis_answers "$host" "$port"; then
    say "using the Redis at $host:$port"
  else
    say "no Redis answers at $host:$port: starting a private redis-server for this demo"
    if ! scripts/ensure-redis.sh; then
      say "cannot get a redis-server: install one (Debian: apt-get install redis-server) or set REDIS_URL to a running Redis"
      exit 1
    fi
    redis_dir="$(mktemp -d)"
    for _ in 1 2 3; do
      port="$(free_port)" || { say "no free loopback port found"; exit 1; }
      redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$redis_dir" >"$redis_dir/redis.log" 2>&1 &
      redis_pid=$!
      for _ in $(seq 1 100); do
        redis_answers 127.0.0.1 "$port" && break
        kill -0 "$redis_pid" 2>/dev/null || break
        sleep 0.05
      done
      redis_answers 127.0.0.1 "$port" && break
      kill "$redis_pid" 2>/dev/null || true
      redis_pid=""
    done
    if [[ -z $redis_pid ]]; then
      say "redis-server did not start; its log: $redis_dir/redis.log"
      redis_dir=""
      exit 1
    fi
    export REDIS_URL="redis://127.0.0.1:$port"
    say "private redis-server on 127.0.0.1:$port (pid $redis_pid), stopped when the demo exits"
  fi
fi
fi

say "building demo-app (release)"
cargo build --release -p demo-app --bin demo-app

target_dir="${CARGO_TARGET_DIR:-target}"
"$target_dir/release/demo-app" &
app_pid=$!
# Forward Ctrl-C / SIGTERM to the service, which shuts down gracefully, then clean up.
trap 'kill -TERM "$app_pid" 2>/dev/null || true' INT TERM
while :; do
  set +e
  wait "$app_pid"
  status=$?
  set -e
  # `wait` also returns when a trapped signal arrives: keep waiting for the shutdown.
  kill -0 "$app_pid" 2>/dev/null || break
done
app_pid=""
exit "$status"

#!/usr/bin/env bash
# Starts a local Redis Cluster for the demo or the benchmark: 3 primaries and 3 replicas on
# free loopback ports, joined with `redis-cli --cluster create`, in directory $1 (created).
# Prints the comma-separated node URLs (the value for REDIS_CLUSTER_NODES) on stdout and
# writes the server pids to $1/pids. Stop it with: kill $(cat "$1/pids").
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${1:?usage: scripts/redis-cluster.sh DIR}"
mkdir -p "$dir"
scripts/ensure-redis.sh

free_port() {
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 30000))
    if ! timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$port" 2>/dev/null \
      && ! timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$((port + 10000))" 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

: >"$dir/pids"
nodes=()
for i in 1 2 3 4 5 6; do
  port="$(free_port)"
  mkdir -p "$dir/$port"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --cluster-enabled yes --cluster-config-file "$dir/$port/nodes.conf" \
    --cluster-node-timeout 1000 --dir "$dir/$port" --logfile "$dir/$port/redis.log" \
    </dev/null >/dev/null 2>&1 &
  echo $! >>"$dir/pids"
  nodes+=("127.0.0.1:$port")
done
for node in "${nodes[@]}"; do
  for _ in $(seq 1 100); do
    redis-cli -h 127.0.0.1 -p "${node#*:}" ping >/dev/null 2>&1 && break
    sleep 0.05
  done
done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1
for node in "${nodes[@]}"; do
  for _ in $(seq 1 200); do
    redis-cli -h 127.0.0.1 -p "${node#*:}" cluster info 2>/dev/null | grep -q cluster_state:ok && break
    sleep 0.05
  done
done
urls=""
for node in "${nodes[@]}"; do urls+="${urls:+,}redis://$node"; done
echo "$urls"

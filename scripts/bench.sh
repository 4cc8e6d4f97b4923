#!/usr/bin/env bash
# Runs every benchmark of docs/BENCHMARKS.md in one go: the hit and miss paths of the four
# variants with redis-benchmark as the server's ceiling, the cold stampede, invalidation of
# 1,000,000 keys, and HTTP under wrk. Everything runs on loopback against private
# redis-server processes on free ports; nothing shared is touched. About 5 minutes on 2 cores.
#
# Output: the tables on stdout (also saved to target/bench/results.md) and the chart at
# docs/bench-hit-path.svg. BENCH_SKIP=calls,stampede,invalidation,http skips sections.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "bench: $*" >&2; }

scripts/ensure-redis.sh
if ! command -v wrk >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    say "installing wrk"
    apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
  else
    say "wrk is missing and this is not root: the HTTP section will be skipped"
  fi
fi

mkdir -p target/bench
say "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(rustc --version), $(redis-server --version | cut -d' ' -f1-3)"
BENCH_CHART="${BENCH_CHART:-$PWD/docs/bench-hit-path.svg}" \
  timeout 900 cargo bench -p benches --bench cache | tee target/bench/results.md

#!/usr/bin/env bash
# Makes sure redis-server (and redis-benchmark) exist, installing Debian's package when
# missing and running as root. Prints one line saying what to do otherwise.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "redis-server not found: installing Debian's redis-server package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
  # The package starts a system instance on 6379; the project never uses it.
  (service redis-server stop || true) >/dev/null 2>&1
  command -v redis-server >/dev/null 2>&1 && exit 0
fi
echo "redis-server is missing: install it (Debian: apt-get install redis-server) or set REDIS_SERVER_BIN" >&2
exit 1

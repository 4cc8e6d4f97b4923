#!/usr/bin/env bash
# Makes sure redis-server (and redis-benchmark) and openssl (the TLS test makes its
# certificates with it) exist, installing Debian's packages when missing and running as root.
# Prints one line saying what to do otherwise.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "redis-server or openssl not found: installing Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends redis-server redis-tools openssl >/dev/null
  # The package starts a system instance on 6379; the project never uses it.
  (service redis-server stop || true) >/dev/null 2>&1
  command -v redis-server >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1 && exit 0
fi
echo "redis-server or openssl is missing: install them (Debian: apt-get install redis-server openssl)" >&2
exit 1

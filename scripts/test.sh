#!/usr/bin/env bash
# The README's test command: everything the tests need, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-redis.sh
cargo test --workspace --all-targets
cargo test --workspace --doc

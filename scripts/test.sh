#!/usr/bin/env bash
# The README's test command: everything the tests need, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# Imports go downward only (docs/ARCHITECTURE.md); cheap, so before the build.
scripts/check-layers.sh
scripts/check-layers.sh --self-test
scripts/ensure-redis.sh
cargo test --workspace --all-targets
cargo test --workspace --doc

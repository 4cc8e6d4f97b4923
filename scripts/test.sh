#!/usr/bin/env bash
# The README's test command: everything the tests need, then the whole suite. The benchmarks
# (`cargo bench -p benches`) are left out: they would build their peers and chart crates only
# to print "skipped"; `cargo clippy --workspace --all-targets` still checks them.
set -euo pipefail
cd "$(dirname "$0")/.."
# Imports go downward only (docs/ARCHITECTURE.md); cheap, so before the build.
scripts/check-layers.sh
scripts/check-layers.sh --self-test
scripts/ensure-redis.sh
cargo test --workspace --exclude benches --all-targets
cargo test --workspace --exclude benches --doc

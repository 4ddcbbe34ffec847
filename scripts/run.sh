#!/usr/bin/env bash
# Runs the Inventory job on an embedded broker with a few sample orders
# (confirmed, duplicate, invalid, undecodable). Extra arguments go to
# `weir run`, e.g. scripts/run.sh --exit-after-samples.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
# Build exactly what scripts/test.sh builds: the same feature set, so RocksDB
# and librdkafka compile once for both.
cargo build --workspace --all-targets --quiet
# Duplicates are logged at debug; show them here so every outcome is visible.
exec "${CARGO_TARGET_DIR:-target}/debug/weir" --log "${WEIR_LOG:-info,rdkafka=warn,weir_topology::dedup=debug}" run --sample-orders "$@"

#!/usr/bin/env bash
# Runs the Inventory job on an embedded broker with a few sample orders
# (confirmed, duplicate, invalid, undecodable). Extra arguments go to
# `weir run`, e.g. scripts/run.sh --exit-after-samples.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
exec cargo run --quiet --bin weir -- run --sample-orders "$@"

#!/usr/bin/env bash
# Every check and test: formatting, clippy, unit, topology-driver and
# integration tests (embedded broker). Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
echo "test: target dir ${CARGO_TARGET_DIR:-./target}" >&2
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --all-targets
cargo test --workspace --doc --quiet

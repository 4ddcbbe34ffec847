#!/usr/bin/env bash
# Every check and test: formatting, clippy, unit, topology-driver and
# integration tests (embedded broker). Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
echo "test: target dir ${CARGO_TARGET_DIR:-./target}" >&2
WEIR_NISSHI=$(bash scripts/nisshi.sh)
export WEIR_NISSHI
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-targets 2>&1 | tee "$log"
# One closing line for the whole run.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"

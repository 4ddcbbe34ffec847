#!/usr/bin/env bash
# Flame graphs of the Inventory job where issue 6's targets are missed, on
# the embedded broker: the stream thread at-least-once and exactly-once (a
# few seconds of steady processing), and a restore of 1,000,000 entries (the
# stream thread reading the changelog and the restore writer thread).
#
#   bash bench/profile.sh [OUT_DIR]     (default bench/results/flamegraphs)
#
# Writes alo.svg, eos.svg and restore.svg. Needs perf (Debian's linux-perf)
# and inferno (crates.io); installs them when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-bench/results/flamegraphs}"
source scripts/env.sh
bash scripts/setup.sh >/dev/null
command -v perf >/dev/null || apt-get install -y -qq linux-perf >/dev/null
command -v inferno-flamegraph >/dev/null || cargo install -q inferno --locked
cargo build -q --release -p weir
WEIR="${CARGO_TARGET_DIR:-target}/release/weir"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'kill "${BENCH:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# profile NAME STEPS PATTERN DELAY SECONDS TITLE: runs `weir bench --steps
# STEPS`, waits for PATTERN in its output and DELAY seconds more, samples
# the process for SECONDS (DWARF call graphs: the C and C++ libraries have
# no frame pointers) and draws the stacks of Weir's own threads.
profile() {
  local name=$1 steps=$2 pattern=$3 delay=$4 seconds=$5 title=$6
  "$WEIR" bench --steps "$steps" --out "$WORK/$name" >"$WORK/$name.log" 2>&1 &
  BENCH=$!
  until grep -q "$pattern" "$WORK/$name.log"; do
    kill -0 "$BENCH" 2>/dev/null || { cat "$WORK/$name.log"; exit 1; }
    sleep 0.02
  done
  sleep "$delay"
  perf record -q -F 499 --call-graph dwarf,16384 -p "$BENCH" -o "$WORK/$name.data" \
    -- sleep "$seconds" >/dev/null 2>&1
  wait "$BENCH"
  perf script -i "$WORK/$name.data" 2>/dev/null | inferno-collapse-perf \
    | grep -E '^weir-(stream|restore)' \
    | inferno-flamegraph --title "$title" --width 1600 >"$OUT/$name.svg"
  echo "$OUT/$name.svg"
}

profile alo alo "weir at-least-once" 3 3 \
  "Weir inventory, at-least-once, stream thread (embedded broker, 2 cores)"
profile eos eos "weir exactly-once" 3 3 \
  "Weir inventory, exactly-once, stream thread (embedded broker, 2 cores)"
profile restore alo,restore "restoring store from changelog" 0 0.6 \
  "Weir restore of 1,000,000 entries: stream thread reads, restore writer writes"

#!/usr/bin/env bash
# Makes sure nisshi 0.7.0 (a Kafka-compatible broker: durable across kill -9,
# Admin API, transactions, fencing) is installed for the crash and
# exactly-once tests, and prints its path. Built from crates.io once into a
# stable cache directory (~25 minutes on 2 cores); later runs reuse it.
set -euo pipefail
for root in "${WEIR_TOOLS:-}" /var/cache/weir-tools "${XDG_CACHE_HOME:-$HOME/.cache}/weir-tools"; do
  [ -n "$root" ] || continue
  if [ -x "$root/bin/nisshi" ]; then echo "$root/bin/nisshi"; exit 0; fi
  if mkdir -p "$root" 2>/dev/null && [ -w "$root" ]; then break; fi
done
echo "nisshi: building nisshi 0.7.0 into $root (once, ~25 min)" >&2
# Its lockfile pins crates that declare rustc 1.96; they build with 1.95.
CARGO_TARGET_DIR="$root/build" cargo install nisshi@0.7.0 --locked --features libsql \
  --ignore-rust-version --root "$root" >&2
rm -rf "$root/build"
echo "$root/bin/nisshi"

#!/usr/bin/env bash
# Sourced by the other scripts: a cargo target dir that outlives clones when
# the machine has a writable cache location (CI is much faster with it),
# ./target otherwise. Never required.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  for dir in /var/cache/weir-target "${XDG_CACHE_HOME:-$HOME/.cache}/weir-target"; do
    if mkdir -p "$dir" 2>/dev/null && [ -w "$dir" ]; then
      export CARGO_TARGET_DIR="$dir"
      break
    fi
  done
fi

#!/usr/bin/env bash
# Installs what building Weir needs on a fresh Debian machine, skipping
# what is already there: a C/C++ toolchain and make (librdkafka, RocksDB),
# libclang (bindgen for RocksDB), zlib and pkg-config; Prometheus and
# promtool (Debian's prometheus package) for the observability tests.
set -euo pipefail

need=()
for pkg in build-essential clang libclang-dev pkg-config zlib1g-dev cmake prometheus; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo is missing (install Rust with rustup)" >&2; exit 1; }

#!/usr/bin/env bash
# Proves on the host that the firmware library is no_std and allocation-free.
#
# 1. `cargo build -p firmware` compiles the library without cfg(test), where
#    `#![no_std]` is in force and no `alloc` is declared: any std/alloc use fails here.
# 2. The dependency graph of that build enables no `std` (or `alloc`) feature anywhere.
# 3. The integration test scans the sources for `extern crate std/alloc` and std-only
#    macros outside test modules, and links the library as a board build would.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p firmware
if cargo tree -p firmware -e normal,features --prefix none | grep -E 'feature "(std|alloc)"'; then
    echo "error: a dependency of firmware enables std or alloc" >&2
    exit 1
fi
cargo test -p firmware --test no_std_build
echo "firmware is no_std: ok"

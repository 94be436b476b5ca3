#!/usr/bin/env bash
# Builds the Rust payload module: target/wasm32-unknown-unknown/release/mothership_wasm_guest.wasm
# under this folder. rustup cannot fetch the wasm32 target here, so core is built from
# source (-Zbuild-std) with Debian's Rust (rustc-web, cargo-web, rust-web-src) and linked
# by LLVM's wasm-ld (lld-16). Prints the module's path.
set -euo pipefail
cd "$(dirname "$0")"
env RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 RUSTFLAGS="-C linker=/usr/bin/wasm-ld-16" \
  /usr/bin/cargo build --quiet --release --target wasm32-unknown-unknown -Zbuild-std=core \
  --target-dir target >&2
echo "$PWD/target/wasm32-unknown-unknown/release/mothership_wasm_guest.wasm"

#!/usr/bin/env bash
# Checks a static build: an x86-64 ELF with no NEEDED entry, no interpreter and no glibc
# ABI note, whose stripped size is within BUDGET bytes. Prints its size.
# Usage: check.sh BINARY BUDGET
set -euo pipefail
bin=$1 budget=$2
fail() { echo "$bin: $*" >&2; exit 1; }
readelf -h "$bin" | grep -q 'X86-64' || fail "not an x86-64 ELF"
if readelf -d "$bin" 2>&1 | grep -q NEEDED; then fail "has NEEDED entries"; fi
if readelf -l "$bin" 2>&1 | grep -q INTERP; then fail "has an interpreter"; fi
if readelf -n "$bin" 2>&1 | grep -q NT_GNU_ABI_TAG; then fail "is a glibc binary"; fi
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
strip -o "$tmp" "$bin"
size=$(stat -c %s "$tmp")
echo "$bin: static, stripped $((size / 1024)) KiB (budget $((budget / 1024)) KiB)"
[ "$size" -le "$budget" ] || fail "stripped size $size over the budget of $budget bytes"

#!/usr/bin/env bash
# Checks that a build without WASM support refuses a manifest with a module (exit 78,
# saying why) rather than run without it.
# Usage: no-wasm.sh BINARY
set -euo pipefail
bin=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
printf '(not a module: never read)\n' >"$dir/guard.wasm"
cat >"$dir/ship-manifest.toml" <<'TOML'
[[fleet.w]]
name = "idle"
command = "true"
[[modules]]
name = "guard"
wasm = "guard.wasm"
TOML
rc=0
out=$("$bin" clearance -c "$dir/ship-manifest.toml" 2>&1) || rc=$?
if [ "$rc" -ne 78 ] || ! printf '%s\n' "$out" | grep -q 'no WASM support.*guard'; then
  echo "$bin: a manifest with a module was not refused (exit $rc): $out" >&2
  exit 1
fi
echo "$bin: refuses modules (no WASM support)"

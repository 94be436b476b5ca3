#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS (default 60) each, starting from the committed
# seed corpus (tests/fuzz/corpus/TARGET, read only) and a work corpus under
# target/fuzz-corpus/TARGET that grows between runs. Fails on a crash, a hang (10 s for
# one input), a leak or an out-of-memory (2 GiB), and prints each target's executions
# and coverage. FUZZ_TARGETS picks targets (default: all).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-http_request http_response chunked proxy_protocol manifest user_agent exchange docking websocket payload control}
export RUSTC_BOOTSTRAP=1 # cargo-fuzz's sanitizer flags on the stable toolchain
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo fuzz build --fuzz-dir tests/fuzz
mkdir -p target/fuzz-logs
summary=""
for t in $targets; do
  work=target/fuzz-corpus/$t
  mkdir -p "$work"
  log=target/fuzz-logs/$t.log
  echo "== $t: $secs s"
  if ! cargo fuzz run --fuzz-dir tests/fuzz "$t" "$work" "tests/fuzz/corpus/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -detect_leaks=1 \
      -print_final_stats=1 > "$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz target $t failed (log: $log; the input is under tests/fuzz/artifacts/$t)" >&2
    exit 1
  fi
  done_line=$(grep -a -E '^Done [0-9]+ runs' "$log" | tail -1)
  cov=$(grep -a -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
  corpus=$(ls "$work" | wc -l)
  echo "   $done_line; $cov; corpus $corpus"
  summary="$summary\n  $t: $done_line; $cov; corpus $corpus"
done
printf "fuzz summary (%s s per target):$summary\n" "$secs"

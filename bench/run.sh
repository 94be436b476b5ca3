#!/usr/bin/env bash
# Foundation benchmarks (issue 3). Prints one line per figure; rerun with `make bench`.
# Needs: python3, procps. Takes about two minutes (one 60 s idle measurement).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/target/release/mothership}
W=$(mktemp -d /tmp/ms-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
now_ns() { date +%s%N; }
ctxsw() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ {s+=$2} END {print s+0}'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' /proc/"$1"/status; }
wait_lines() { # file pattern count timeout_s
  local end=$(( $(date +%s) + $4 ))
  while [ "$(grep -c -- "$2" "$1" 2>/dev/null || true)" -lt "$3" ]; do
    [ "$(date +%s)" -lt "$end" ] || { echo "timeout waiting for $3 x '$2' in $1" >&2; return 1; }
    sleep 0.005
  done
}
fleet() { # n -> manifest of n sleeping ships
  for i in $(seq 1 "$1"); do printf '[[fleet.s]]\nname = "s%d"\ncommand = "sleep"\nargs = ["1000"]\n' "$i"; done
}

echo "== mothership foundation benchmarks ($(date -u +%FT%TZ), $(nproc) cores, $(uname -sr))"

# 1. Binary size
strip -o "$W/ms-stripped" "$BIN"
echo "binary: $(( $(stat -c %s "$BIN") / 1024 )) KiB, stripped $(( $(stat -c %s "$W/ms-stripped") / 1024 )) KiB (glibc release build)"
# The static builds (`make static`), when built: their stripped sizes against the budgets.
for spec in mothership:3072 mothership-minimal:2560; do
  f=target/static/${spec%%:*}
  [ -x "$f" ] || { echo "static ${spec%%:*}: not built (make static)"; continue; }
  strip -o "$W/static-stripped" "$f"
  echo "static ${spec%%:*}: stripped $(( $(stat -c %s "$W/static-stripped") / 1024 )) KiB (budget ${spec#*:} KiB)"
done
# What each crate costs in the default static build.
[ -x target/static/mothership ] && python3 packaging/static/bloat.py target/static/mothership 16

# 2. Spawn latency: exec to the last ship spawned, from the JSON log timestamps
for n in 10 1000; do
  fleet "$n" > "$W/f$n.toml"
  t0=$(now_ns)
  "$BIN" -c "$W/f$n.toml" --log-format json > /dev/null 2> "$W/f$n.log" & mp=$!
  wait_lines "$W/f$n.log" ': started (pid' "$n" 60
  last=$(grep ': started (pid' "$W/f$n.log" | tail -1 | sed 's/^{"ts":"\([^"]*\)".*/\1/')
  t_last=$(date -d "$last" +%s%N)
  echo "spawn: exec to all $n ships started: $(( (t_last - t0) / 1000000 )) ms"
  if [ "$n" = 1000 ]; then :; fi
  kill -TERM $mp; wait $mp || true
done

# 3. RSS with 100 running children
fleet 100 > "$W/f100.toml"
"$BIN" -c "$W/f100.toml" > /dev/null 2> "$W/f100.log" & mp=$!
wait_lines "$W/f100.log" 'running:' 1 30
sleep 1
echo "memory: supervisor RSS with 100 running children: $(rss_kib $mp) KiB (target < 8192)"
kill -TERM $mp; wait $mp || true

# 4. Idle wake-ups over 60 s
fleet 2 > "$W/idle.toml"
"$BIN" -c "$W/idle.toml" > /dev/null 2> "$W/idle.log" & mp=$!
wait_lines "$W/idle.log" 'running:' 1 30
sleep 2
a=$(ctxsw $mp); sleep 60; b=$(ctxsw $mp)
echo "idle: voluntary context switches of an idle 2-ship fleet over 60 s: $(( b - a )) (target 0)"
kill -TERM $mp; wait $mp || true

# 5. Log throughput: 1 GiB of 100-byte lines through mothership vs through cat
python3 - "$W/lines" <<'PY'
import sys
line = b"x" * 99 + b"\n"
block = line * 10000
with open(sys.argv[1], "wb") as f:
    for _ in range((1 << 30) // len(block)):
        f.write(block)
PY
size=$(stat -c %s "$W/lines")
cat "$W/lines" > /dev/null   # warm the page cache
printf '[[fleet.j]]\nname = "talker"\ncommand = "cat"\nargs = ["%s"]\noneshot = true\n' "$W/lines" > "$W/log.toml"
best_ms=; best_cat=
for run in 1 2 3; do
  t0=$(now_ns); cat "$W/lines" | cat > /dev/null; t1=$(now_ns)
  c=$(( (t1 - t0) / 1000000 )); [ -z "$best_cat" ] || [ "$c" -lt "$best_cat" ] && best_cat=$c
  t0=$(now_ns); "$BIN" -c "$W/log.toml" > /dev/null 2>"$W/log.err"; t1=$(now_ns)
  m=$(( (t1 - t0) / 1000000 )); [ -z "$best_ms" ] || [ "$m" -lt "$best_ms" ] && best_ms=$m
done
mb=$(( size / 1048576 ))
echo "logs: $mb MiB of 100-byte lines: cat|cat $best_cat ms ($(( mb * 1000 / best_cat )) MiB/s), through mothership $best_ms ms ($(( mb * 1000 / best_ms )) MiB/s); ratio $(python3 -c "print(f'{$best_cat/$best_ms:.2f}')") (target >= 0.5)"

# 6. The same lines also written to log files (issue 18): log_dir with the default 1 MiB x
# 10 rotation, then with gzip of the archives; the writer thread's backpressure slows the
# reads when the disk (or gzip) is slower than the pipe.
for variant in plain gzip; do
  extra=""; [ "$variant" = gzip ] && extra="log_compress = true"
  printf '[mothership]\nlog_dir = "%s/logs"\n%s\n[[fleet.j]]\nname = "talker"\ncommand = "cat"\nargs = ["%s"]\noneshot = true\n' "$W" "$extra" "$W/lines" > "$W/logfiles.toml"
  best=
  for run in 1 2 3; do
    rm -rf "$W/logs"
    t0=$(now_ns); "$BIN" -c "$W/logfiles.toml" > /dev/null 2>"$W/log.err"; t1=$(now_ns)
    m=$(( (t1 - t0) / 1000000 )); [ -z "$best" ] || [ "$m" -lt "$best" ] && best=$m
  done
  echo "log files ($variant): $mb MiB of 100-byte lines to stdout and to log files: $best ms ($(( mb * 1000 / best )) MiB/s; without files $best_ms ms)"
done

#!/usr/bin/env bash
# WASM payload benchmark (issue 17): one mothership in front of one nginx backend, wrk with
# keep-alive at 50 connections on three routes of the same fleet, same run: no module, a
# no-op module (WAT), and the Rust API-key module of tests/wasm-guest/ (parses the request
# JSON and its config, checks a header, sets one). Reports requests/s, p99 and mothership's
# CPU time per request (median of REPS rounds, order rotated). SIZE=1 also builds the
# release binary without the `wasm` feature and prints the stripped size the feature adds.
# Needs nginx, wrk, wat2wasm (wabt) and what tests/wasm-guest/build.sh needs.
# Usage: bench/wasm.sh [seconds per run, default 5]
. "$(dirname "$0")/common.sh" wasm
D=${1:-5}
PB=$(port); PM=$(port)
guest=$(bash tests/wasm-guest/build.sh)
printf '(module (func (export "on_request")))\n' > "$W/noop.wat"
wat2wasm "$W/noop.wat" -o "$W/noop.wasm"
cat > "$W/backend.conf" <<NG
worker_processes 1; daemon off; pid $W/b.pid; error_log $W/b.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$PB backlog=4096; location / { return 200 "hello from backend\n"; } } }
NG
cat > "$W/ship-manifest.toml" <<TOML
[mothership]
bind = { http = "127.0.0.1:$PM" }
[[fleet.web]]
name = "backend"
command = "nginx"
args = ["-c", "$W/backend.conf"]
bind = "127.0.0.1:$PB"
routes = ["http:/"]
[[modules]]
name = "noop"
wasm = "$W/noop.wasm"
routes = ["^/noop"]
[[modules]]
name = "api-key"
wasm = "$guest"
routes = ["^/json"]
config = { key = "s3cret" }
TOML
ulimit -n 65536 2>/dev/null || true
"$BIN" -c "$W/ship-manifest.toml" > "$W/ms.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PM/plain" > /dev/null && break; sleep 0.1; done
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'X-Api-Key: s3cret' "http://127.0.0.1:$PM/json")
[ "$code" = 200 ] || { echo "the API-key module did not let a good key through ($code)"; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PM/json")
[ "$code" = 401 ] || { echo "the API-key module did not refuse a missing key ($code)"; exit 1; }
pid=${pids[0]}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
run() { # path -> "rps p99 cpu-us-per-request"
  local a b
  a=$(ticks "$pid")
  wrk -t1 -c50 -d"${D}s" --latency -H 'X-Api-Key: s3cret' "http://127.0.0.1:$PM/$1" 2>/dev/null > "$W/wrk.out"
  b=$(ticks "$pid")
  grep -q 'Non-2xx' "$W/wrk.out" && { echo "non-2xx answers on /$1" >&2; exit 1; }
  awk -v t=$((b - a)) -v hz="$HZ" '
         / requests in / {n=$1}
         /Requests\/sec/ {r=$2}
         / 99%/ {p=$2; u=p; gsub(/[0-9.]/, "", u); sub(/[a-z]+$/, "", p);
                 p = (u == "us") ? p / 1000 : (u == "s") ? p * 1000 : p}
         END {printf "%d %.2f %.1f", r, p, (n > 0) ? t / hz * 1e6 / n : 0}' "$W/wrk.out"
}
REPS=${REPS:-5}
echo "== wasm benchmark ($(date -u +%FT%TZ), $(nproc) cores, wrk -t1 -c50, ${D}s per run, median of $REPS rounds, order rotated)"
printf '%-22s %10s %9s %12s\n' route req/s p99 "CPU us/req"
declare -A all=()
order=(plain noop json)
for rep in $(seq "$REPS"); do
  for i in 0 1 2; do
    t=${order[$(( (i + rep) % 3 ))]}
    all[$t]+="$(run "$t");"
  done
done
median() { tr ';' '\n' | grep . | awk -v k="$1" '{print $k}' | sort -g |
  awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}'; }
for t in plain noop json; do
  case $t in plain) label="no module" ;; noop) label="no-op module" ;; json) label="JSON + header (Rust)" ;; esac
  printf '%-22s %10s %9s %12s\n' "$label" "$(echo "${all[$t]}" | median 1)" \
    "$(echo "${all[$t]}" | median 2)ms" "$(echo "${all[$t]}" | median 3)"
done
if [ "${SIZE:-0}" = 1 ]; then
  cargo build --release --quiet --no-default-features --features brotli --target-dir target/bench-nowasm
  a=$(strip -o "$W/a" target/bench-nowasm/release/mothership && stat -c %s "$W/a")
  b=$(strip -o "$W/b" "$BIN" && stat -c %s "$W/b")
  echo "stripped release binary: $((b / 1024)) KiB with wasm, $((a / 1024)) KiB without: +$(((b - a) / 1024)) KiB"
fi

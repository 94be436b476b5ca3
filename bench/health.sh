#!/usr/bin/env bash
# Health-check and edge-guard benchmark (issue 15). Needs nginx and wrk.
# Usage: bench/health.sh [seconds per measurement, default 20]
#  1. The cost of checking 100 ships every second: mothership's CPU time per second and its
#     wake-ups (voluntary context switches) per second, with the checks on and, in the same
#     run, with the same fleet without checks. The checks are HTTP GETs to one nginx.
#  2. Requests/s and CPU per request through mothership to one nginx backend with the
#     circuit breaker and a maxconn line on, and with both off, in the same run.
. "$(dirname "$0")/common.sh" health
D=${1:-20}
PN=$(port)
cat > "$W/nginx.conf" <<NG
worker_processes 1; daemon off; pid $W/n.pid; error_log $W/n.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$PN backlog=4096; location / { return 200 "ok\n"; } } }
NG
nginx -c "$W/nginx.conf" & pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PN/" > /dev/null && break; sleep 0.1; done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, clock ticks
switches() { awk '/^voluntary_ctxt_switches/ {print $2}' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)

# fleet FILE CHECKS: 100 idle ships; with CHECKS=1 each is checked every second (and is
# ready at its first passing check)
fleet() {
  : > "$1"
  for i in $(seq 100); do
    printf '[[fleet.w]]\nname = "s%d"\ncommand = "sleep"\nargs = ["1000000"]\n' "$i" >> "$1"
    if [ "$2" = 1 ]; then
      printf 'healthcheck = "http://127.0.0.1:%d/health"\nhealth_interval = "1s"\n' "$PN" >> "$1"
    else
      printf 'ready = "100ms"\n' >> "$1"
    fi
  done
}
# idle_cost FILE: "cpu-ms-per-s wakeups-per-s" of a mothership running FILE
idle_cost() {
  "$BIN" -c "$1" > "$W/idle.log" 2>&1 &
  local p=$! a b sa sb
  sleep 5 # launched and settled
  a=$(ticks $p); sa=$(switches $p)
  sleep "$D"
  b=$(ticks $p); sb=$(switches $p)
  kill -TERM $p; wait $p 2>/dev/null || true
  awk -v t=$((b - a)) -v s=$((sb - sa)) -v hz="$HZ" -v d="$D" \
    'BEGIN {printf "%.2f %.1f", t / hz * 1000 / d, s / d}'
}
fleet "$W/checked.toml" 1
fleet "$W/plain.toml" 0
echo "== health benchmark ($(date -u +%FT%TZ), $(nproc) cores, ${D}s per measurement)"
printf '%-36s %14s %12s\n' "100 ships, mothership idle" "CPU ms/s" "wakeups/s"
read -r c w <<< "$(idle_cost "$W/plain.toml")"
printf '%-36s %14s %12s\n' "no health checks" "$c" "$w"
read -r c w <<< "$(idle_cost "$W/checked.toml")"
printf '%-36s %14s %12s\n' "HTTP check of each every second" "$c" "$w"

# Part 2: the edge in front of nginx, guards on and off.
guarded() { # FILE PORT BREAKER(0/1) MAXCONN(0 = none)
  local br="" mc=""
  [ "$3" = 0 ] && br="breaker_failures = 0"
  [ "$4" != 0 ] && mc="maxconn = $4"
  cat > "$1" <<TOML
[mothership]
bind = { http = "127.0.0.1:$2" }
http = { ${br} }
[[fleet.web]]
name = "backend"
command = "sleep"
args = ["1000000"]
bind = "127.0.0.1:$PN"
routes = ["http:/"]
$mc
TOML
}
PON=$(port); POFF=$(port)
guarded "$W/on.toml" "$PON" 1 1000
guarded "$W/off.toml" "$POFF" 0 0
ulimit -n 65536 2>/dev/null || true
"$BIN" -c "$W/on.toml" > "$W/on.log" 2>&1 & pon=$!; pids+=("$pon")
"$BIN" -c "$W/off.toml" > "$W/off.log" 2>&1 & poff=$!; pids+=("$poff")
for p in $PON $POFF; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$p/" > /dev/null && break; sleep 0.1; done
done
run() { # pid port conns -> "rps cpu-us-per-request"
  local a b
  a=$(ticks "$1")
  wrk -t1 -c"$3" -d"$((D / 4 + 1))s" "http://127.0.0.1:$2/" 2>/dev/null > "$W/wrk.out"
  b=$(ticks "$1")
  awk -v t=$((b - a)) -v hz="$HZ" '/ requests in / {n=$1} /Requests\/sec/ {r=$2}
       END {printf "%d %.1f", r, (n > 0) ? t / hz * 1e6 / n : 0}' "$W/wrk.out"
}
printf '%-6s %-34s %10s %12s\n' conns "edge guards" req/s "CPU us/req"
for c in 50 500; do
  # Off first, on second, then the other way round: both places, medians not needed.
  for order in "off on" "on off"; do
    for which in $order; do
      if [ "$which" = on ]; then r=$(run $pon "$PON" $c); label="breaker on, maxconn 1000"; else r=$(run $poff "$POFF" $c); label="breaker off, no maxconn"; fi
      read -r rps cpu <<< "$r"
      printf '%-6s %-34s %10s %12s\n' "$c" "$label" "$rps" "$cpu"
    done
  done
done

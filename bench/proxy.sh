#!/usr/bin/env bash
# Proxy benchmark (issue 4): one nginx backend on loopback; wrk with keep-alive at 50 and 500
# connections against: the backend directly, mothership, nginx (one worker, upstream
# keep-alive) and HAProxy (one thread, http-reuse always). Same run, same machine.
# Needs nginx, haproxy, wrk. Usage: bench/proxy.sh [seconds per run, default 5]
# BASE_BIN=/path/to/another/mothership adds it as target "base" (an A/B of two builds in one
# run: it proxies to the same backend, which the first mothership supervises).
. "$(dirname "$0")/common.sh" proxy
D=${1:-5}
PB=$(port); PM=$(port); PN=$(port); PH=$(port)

cat > "$W/backend.conf" <<NG
worker_processes 1; daemon off; pid $W/b.pid; error_log $W/b.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$PB backlog=4096; location / { return 200 "hello from backend\n"; } } }
NG
cat > "$W/nginx.conf" <<NG
worker_processes 1; daemon off; pid $W/n.pid; error_log $W/n.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; upstream b { server 127.0.0.1:$PB; keepalive 512; }
  server { listen 127.0.0.1:$PN backlog=4096; location / { proxy_pass http://b; proxy_http_version 1.1;
  proxy_set_header Connection ""; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } } }
NG
cat > "$W/haproxy.cfg" <<HA
global
  nbthread 1
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$PH
  default_backend be
backend be
  server s1 127.0.0.1:$PB
HA
cat > "$W/ship-manifest.toml" <<TOML
[mothership]
bind = { http = "127.0.0.1:$PM" }
[[fleet.web]]
name = "backend"
command = "nginx"
args = ["-c", "$W/backend.conf"]
bind = "127.0.0.1:$PB"
routes = ["http:/"]
TOML
ulimit -n 65536 2>/dev/null || true
"$BIN" -c "$W/ship-manifest.toml" > "$W/ms.log" 2>&1 & pids+=($!)
nginx -c "$W/nginx.conf" & pids+=($!)
haproxy -f "$W/haproxy.cfg" -p "$W/ha.pid" > /dev/null 2>&1 & pids+=($!)
ports="$PB $PM $PN $PH"
if [ -n "${BASE_BIN:-}" ]; then
  PBASE=$(port)
  mkdir -p "$W/base"
  cat > "$W/base/ship-manifest.toml" <<TOML
[mothership]
bind = { http = "127.0.0.1:$PBASE" }
# The backend is the first mothership's nginx: this ship only stands for it.
[[fleet.web]]
name = "backend"
command = "sleep"
args = ["1000000"]
bind = "127.0.0.1:$PB"
routes = ["http:/"]
TOML
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PB/" > /dev/null && break; sleep 0.1; done
  "$BASE_BIN" -c "$W/base/ship-manifest.toml" > "$W/base.log" 2>&1 & pids+=($!)
  ports="$ports $PBASE"
fi
for p in $ports; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$p/" > /dev/null && break; sleep 0.1; done
done

# The process doing the proxying for each target (for its CPU time): mothership itself,
# the nginx workers, HAProxy; for "direct", the backend's worker.
sleep 0.5
declare -A PIDS=(
  [mothership]=${pids[0]}
  [nginx]=$(pgrep -P "$(cat "$W/n.pid")" | head -1)
  [haproxy]=${pids[2]}
  [direct]=$(pgrep -P "$(cat "$W/b.pid")" | head -1)
)
targets=(mothership:$PM direct:$PB nginx:$PN haproxy:$PH)
names="direct mothership nginx haproxy"
if [ -n "${BASE_BIN:-}" ]; then
  PIDS[base]=${pids[3]}
  targets+=(base:$PBASE)
  names="$names base"
fi
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, clock ticks
HZ=$(getconf CLK_TCK)
run() { # name port conns -> "rps p99 cpu-us-per-request"
  local a b
  a=$(ticks "${PIDS[$1]}")
  wrk -t1 -c"$3" -d"${D}s" --latency "http://127.0.0.1:$2/" 2>/dev/null > "$W/wrk.out"
  b=$(ticks "${PIDS[$1]}")
  awk -v t=$((b - a)) -v hz="$HZ" '
         / requests in / {n=$1}
         /Requests\/sec/ {r=$2}
         / 99%/ {p=$2; u=p; gsub(/[0-9.]/, "", u); sub(/[a-z]+$/, "", p);
                 p = (u == "us") ? p / 1000 : (u == "s") ? p * 1000 : p}
         END {printf "%d %.2f %.1f", r, p, (n > 0) ? t / hz * 1e6 / n : 0}' "$W/wrk.out"
}
REPS=${REPS:-5}
echo "== proxy benchmark ($(date -u +%FT%TZ), $(nproc) cores, wrk -t1, ${D}s per run, median of $REPS rounds, order rotated each round)"
printf '%-6s %-12s %12s %10s %8s %12s\n' conns target req/s p99 ms/target "CPU us/req"
for c in 50 500; do
  declare -A all=()
  # The order turns by one each round: which target runs first measurably changes its
  # figures on a shared VM, so every target takes every place.
  order=("${targets[@]}")
  for rep in $(seq "$REPS"); do
    for i in "${!order[@]}"; do
      t=${order[$(( (i + rep) % ${#order[@]} ))]}
      all[${t%%:*}]+="$(run ${t%%:*} ${t#*:} $c);"
    done
  done
  # column 1 (req/s) or 2 (p99 ms) of the runs of one target -> its median
  median() { tr ';' '\n' | grep . | awk -v k="$1" '{print $k}' | sort -g |
    awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}'; }
  base=$(echo "${all[mothership]}" | median 1)
  for name in $names; do
    r=$(echo "${all[$name]}" | median 1); p=$(echo "${all[$name]}" | median 2)
    u=$(echo "${all[$name]}" | median 3)
    printf '%-6s %-12s %12s %10s %8s %12s\n' "$c" "$name" "$r" "${p}ms" \
      "$(python3 -c "print(f'{$base/max($r,1):.2f}')")" "$u"
  done
  unset all
done
pid=${PIDS[mothership]}
echo "mothership RSS after the runs: $(awk '/^VmRSS:/ {print $2}' /proc/$pid/status) KiB"
echo "(req/s, p99 and CPU are each the median over the runs; the ratio column is mothership's req/s over the target's; CPU us/req is the proxying process's user+system time per request, the backend's for direct)"

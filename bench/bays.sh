#!/usr/bin/env bash
# Bays benchmark (issue 16). Needs nginx and python3 with `websockets` (make test-deps).
# Usage: bench/bays.sh [seconds per echo run, default 10]
# Same run, same load client (bench/ws_load.py):
#   A. mothership terminating WebSocket for a docking bay (tests/e2e/bay.py, protocol 3);
#   B. nginx proxying WebSocket to a plain Python `websockets` echo server
#      (bench/ws_echo_server.py).
#  1. Echo: messages/s and p50/p99 latency for 1, 100 and 1,000 clients.
#  2. Fan-out of one message to 1,000 clients: A with one Cargo per client and with one
#     Broadcast frame; B with websockets.broadcast.
#  3. mothership's RSS with 10,000 idle WebSocket clients (and before they connect).
. "$(dirname "$0")/common.sh" bays
D=${1:-10}
ulimit -n "$(ulimit -Hn)"
PM=$(port); PN=$(port); PE=$(port)
mkdir -p "$W/sock"
cat > "$W/fleet.toml" <<TOML
[mothership.bind]
ws = "127.0.0.1:$PM"
[[bays.bench]]
name = "echo"
command = "python3"
args = ["$PWD/tests/e2e/bay.py", "--proto", "3", "--broadcast", "--quiet", "--log", "$W/bay.log"]
routes = [{ bind = "ws", pattern = "^/" }]
TOML
MS_SOCKET_DIR="$W/sock" "$BIN" -c "$W/fleet.toml" > "$W/ms.log" 2>&1 & mp=$!; pids+=($mp)
python3 bench/ws_echo_server.py "$PE" & pids+=($!)
cat > "$W/nginx.conf" <<NG
worker_processes 1; daemon off; pid $W/n.pid; error_log $W/n.err warn;
worker_rlimit_nofile 20000;
events { worker_connections 19000; }
http { access_log off;
  map \$http_upgrade \$conn_up { default upgrade; '' close; }
  server { listen 127.0.0.1:$PN backlog=4096;
    location / { proxy_pass http://127.0.0.1:$PE; proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade; proxy_set_header Connection \$conn_up;
      proxy_read_timeout 1h; } } }
NG
nginx -c "$W/nginx.conf" & pids+=($!)
for _ in $(seq 100); do grep -q '"moored"' "$W/bay.log" 2>/dev/null && break; sleep 0.1; done
sleep 1
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
M="ws://127.0.0.1:$PM/"; N="ws://127.0.0.1:$PN/"
echo "== echo, $D s per run: messages/s, p50 and p99 latency; mothership CPU per message"
for n in 1 100 1000; do
  t0=$(ticks "$mp")
  a=$(python3 bench/ws_load.py echo "$M" "$n" "$D")
  t1=$(ticks "$mp")
  b=$(python3 bench/ws_load.py echo "$N" "$n" "$D")
  cpu=$(python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(round(($t1-$t0)/$HZ*1e6/max(1, r['msgs_per_s']*$D), 1))" "$a")
  echo "  $n clients  mothership+bay: $a  (mothership ${cpu} us CPU/msg)"
  echo "  $n clients  nginx+websockets: $b"
done
echo "== fan-out of one message to 1000 clients (50 rounds); mothership CPU per round"
fan() { # LABEL CMD
  local t0 t1 r
  t0=$(ticks "$mp"); r=$(python3 bench/ws_load.py fanout "$M" 1000 "$2" 50); t1=$(ticks "$mp")
  echo "  $1 $r  (mothership $(python3 -c "print(round(($t1-$t0)/$HZ*1000/50, 2))") ms CPU/round, connecting included)"
}
fan "mothership, one Cargo per client:" "all x"
fan "mothership, one Broadcast frame: " "bcast x"
echo "  nginx + websockets.broadcast:     $(python3 bench/ws_load.py fanout "$N" 1000 'all x' 50)"
echo "== mothership RSS with 10000 idle WebSocket clients"
before=$(rss "$mp")
python3 bench/ws_load.py idle "$M" 10000 "$W/done" > "$W/idle.json" & ip=$!; pids+=($ip)
for _ in $(seq 600); do grep -q connected "$W/idle.json" 2>/dev/null && break; sleep 0.2; done
sleep 1
during=$(rss "$mp")
touch "$W/done"; wait "$ip" || true
echo "  before: ${before} KiB; with $(head -1 "$W/idle.json"): ${during} KiB"

#!/usr/bin/env bash
# Edge features benchmark (issue 5), one run, same machine, against nginx (one worker):
#  - static files: requests/s for a 1 KiB file (wrk, 50 connections) and throughput for a
#    1 GiB file (curl to /dev/null), mothership's static mount vs nginx serving the same
#    folder with sendfile;
#  - compression: requests/s for a 96 KiB JavaScript file with Accept-Encoding: gzip,
#    mothership (level 4) vs nginx (gzip_comp_level 4); and br through mothership;
#  - CORS: requests/s of a preflight answered from mothership's cache vs the same preflight
#    proxied to the nginx backend (cors_cache = false).
# Needs nginx, wrk, curl. Usage: bench/edge.sh [seconds per run, default 5]
. "$(dirname "$0")/common.sh" edge
D=${1:-5}
PB=$(port); PM=$(port); PM2=$(port); PN=$(port)

mkdir -p "$W/public"
chmod 755 "$W" "$W/public"  # nginx workers run as another user
head -c 1024 /dev/urandom | base64 -w 76 | head -c 1024 > "$W/public/small.txt"
python3 -c "print('function hello(a, b) { return a + b + 42; } // some code\n' * 1600, end='')" > "$W/public/app.js"
truncate -s 1G "$W/public/big.bin"

cat > "$W/backend.conf" <<NG
worker_processes 1; daemon off; pid $W/b.pid; error_log $W/b.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$PB backlog=4096;
    location / {
      add_header Access-Control-Allow-Origin \$http_origin always;
      add_header Access-Control-Allow-Methods "GET, PUT" always;
      add_header Access-Control-Max-Age 600 always;
      return 204; } } }
NG
cat > "$W/nginx.conf" <<NG
worker_processes 1; daemon off; pid $W/n.pid; error_log $W/n.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; sendfile on; tcp_nopush on;
  types { text/javascript js; text/plain txt; application/octet-stream bin; }
  gzip on; gzip_comp_level 4; gzip_min_length 1024; gzip_types text/javascript text/plain;
  gzip_vary on;
  server { listen 127.0.0.1:$PN backlog=4096; location /static/ { alias $W/public/; } } }
NG
cat > "$W/m1.toml" <<TOML
[mothership]
bind = { http = "127.0.0.1:$PM" }
compression = true
[[mothership.static_dirs]]
path = "$W/public"
prefix = "/static"
[[fleet.web]]
name = "backend"
command = "nginx"
args = ["-c", "$W/backend.conf"]
bind = "127.0.0.1:$PB"
routes = ["http:/"]
TOML
cat > "$W/m2.toml" <<TOML
[mothership]
bind = { http = "127.0.0.1:$PM2" }
cors_cache = false
[[fleet.web]]
name = "backend"
command = "sleep"
args = ["100000"]
bind = "127.0.0.1:$PB"
routes = ["http:/"]
TOML
cat > "$W/preflight.lua" <<'LUA'
wrk.method = "OPTIONS"
wrk.headers["Origin"] = "https://app.example"
wrk.headers["Access-Control-Request-Method"] = "PUT"
wrk.headers["Access-Control-Request-Headers"] = "content-type, x-token"
LUA
ulimit -n 65536 2>/dev/null || true
"$BIN" -c "$W/m1.toml" > "$W/m1.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PB/" && break; sleep 0.1; done
"$BIN" -c "$W/m2.toml" > "$W/m2.log" 2>&1 & pids+=($!)
nginx -c "$W/nginx.conf" & pids+=($!)
for p in $PM $PM2 $PN; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$p/static/small.txt" && break; sleep 0.1; done
done

rps() { wrk -t1 -c50 -d"${D}s" "$@" 2>/dev/null | awk '/Requests\/sec/ {printf "%d", $2}'; }
mibs() { # url -> MiB/s of a download to /dev/null
  curl -s -o /dev/null -w '%{speed_download}' "$1" | awk '{printf "%.0f", $1 / 1048576}'
}
best() { sort -n | tail -1; }
echo "== edge benchmark ($(date -u +%FT%TZ), $(nproc) cores, wrk -t1 -c50, ${D}s per run, best of 3)"
row() { printf '%-44s %14s %14s\n' "$@"; }
row "measure" "mothership" "nginx"
m=$(for _ in 1 2 3; do rps "http://127.0.0.1:$PM/static/small.txt"; echo; done | best)
n=$(for _ in 1 2 3; do rps "http://127.0.0.1:$PN/static/small.txt"; echo; done | best)
row "static 1 KiB file, req/s" "$m" "$n"
m=$(for _ in 1 2 3; do mibs "http://127.0.0.1:$PM/static/big.bin"; echo; done | best)
n=$(for _ in 1 2 3; do mibs "http://127.0.0.1:$PN/static/big.bin"; echo; done | best)
row "static 1 GiB file, MiB/s (curl)" "$m" "$n"
m=$(for _ in 1 2 3; do rps -H "Accept-Encoding: gzip" "http://127.0.0.1:$PM/static/app.js"; echo; done | best)
n=$(for _ in 1 2 3; do rps -H "Accept-Encoding: gzip" "http://127.0.0.1:$PN/static/app.js"; echo; done | best)
row "96 KiB JS gzip level 4, req/s" "$m" "$n"
m=$(for _ in 1 2 3; do rps -H "Accept-Encoding: br" "http://127.0.0.1:$PM/static/app.js"; echo; done | best)
row "96 KiB JS br quality 3, req/s" "$m" "-"
c=$(for _ in 1 2 3; do rps -s "$W/preflight.lua" "http://127.0.0.1:$PM/api/login"; echo; done | best)
p=$(for _ in 1 2 3; do rps -s "$W/preflight.lua" "http://127.0.0.1:$PM2/api/login"; echo; done | best)
row "CORS preflight cached, req/s" "$c" "-"
row "CORS preflight proxied (cache off), req/s" "$p" "-"
size=$(curl -s -H 'Accept-Encoding: gzip' "http://127.0.0.1:$PM/static/app.js" | wc -c)
nsize=$(curl -s -H 'Accept-Encoding: gzip' "http://127.0.0.1:$PN/static/app.js" | wc -c)
bsize=$(curl -s -H 'Accept-Encoding: br' "http://127.0.0.1:$PM/static/app.js" | wc -c)
echo "app.js: $(wc -c < "$W/public/app.js") bytes; gzip mothership $size, nginx $nsize; br $bsize"

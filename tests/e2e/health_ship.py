"""Test ship for the health-check tests, written for them.

Usage: health_ship.py PORT STATEDIR [HEALTHY_AFTER_SECONDS] [other words, ignored]
GET /health answers the status in STATEDIR/health (default 200), or 503 for the first
HEALTHY_AFTER_SECONDS after the start. Any other path answers 200 and is counted in
STATEDIR/requests. Each start appends its pid to STATEDIR/pid; the first 2xx answer to
/health writes time.time_ns() to STATEDIR/first-pass. Exits when its parent goes away.
"""
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, DIR = int(sys.argv[1]), sys.argv[2]
AFTER = float(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3][:1].isdigit() else 0.0
START = time.monotonic()
PARENT = os.getppid()
LOCK = threading.Lock()


def state(name, default):
    try:
        with open(os.path.join(DIR, name)) as f:
            return f.read().strip() or default
    except OSError:
        return default


def append(name, line):
    with LOCK, open(os.path.join(DIR, name), "a") as f:
        f.write(line + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/health":
            code = int(state("health", "200"))
            if time.monotonic() - START < AFTER:
                code = 503
            if 200 <= code < 300 and not os.path.exists(os.path.join(DIR, "first-pass")):
                append("first-pass", str(time.time_ns()))
        else:
            code = 200
            append("requests", self.path)
        body = b"ok\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def orphan_watch():
    while os.getppid() == PARENT:
        time.sleep(0.1)
    os._exit(0)


os.makedirs(DIR, exist_ok=True)
append("pid", str(os.getpid()))
threading.Thread(target=orphan_watch, daemon=True).start()
ThreadingHTTPServer.allow_reuse_address = True
ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()

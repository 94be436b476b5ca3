"""Test backend for the proxy tests: HTTP/1.1 with keep-alive, written for these tests.

GET/POST anything      -> JSON: name, method, path, headers, body length and sha256,
                          connection number (to count upstream connections)
/chunked?bytes=N       -> N bytes of a known pattern, chunked
/big?bytes=N           -> N bytes of the pattern with Content-Length
/die?bytes=N           -> headers announcing 2N bytes, N bytes, then the process exits
/ws                    -> 101 Switching Protocols, then echoes bytes back
/sleep?s=N             -> waits N seconds before answering
/reject                -> 413 at once, without reading the body, then the connection closes
/flaky                 -> answered only as the first request of a connection; later ones
                          see the connection closed without an answer
OPTIONS with Origin    -> a CORS preflight answer (204, Access-Control-Allow-*); its
                          Max-Age is the query's max_age (default 600), and ?deny=1 gives
                          403; each is counted
/__preflights          -> how many preflights this backend answered
/text?bytes=N          -> N bytes of text; options: chunked=1, ct=TYPE (text/plain),
                          ce=CODING (a Content-Encoding), cc=VALUE (Cache-Control); always
                          sends ETag "t1" and Vary: Origin
Usage: echo_backend.py PORT NAME  (or unix:/path NAME)
"""
import hashlib
import json
import os
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

NAME = sys.argv[2]
PREFLIGHTS = 0
CONNS = 0
LOCK = threading.Lock()
PATTERN = bytes(range(256)) * 256  # 64 KiB


def pattern(n):
    out = bytearray()
    while len(out) < n:
        out += PATTERN[: n - len(out)]
    return bytes(out)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        global CONNS
        super().setup()
        self.served = 0
        with LOCK:
            CONNS += 1
            self.conn_no = CONNS

    def log_message(self, *a):
        pass

    def read_body(self):
        h = hashlib.sha256()
        n = 0
        if self.headers.get("Transfer-Encoding", "").lower().endswith("chunked"):
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    break
                left = size
                while left:
                    d = self.rfile.read(min(left, 1 << 20))
                    h.update(d)
                    n += len(d)
                    left -= len(d)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", 0) or 0)
            while left:
                d = self.rfile.read(min(left, 1 << 20))
                if not d:
                    break
                h.update(d)
                n += len(d)
                left -= len(d)
        return n, h.hexdigest()

    def handle_any(self):
        global PREFLIGHTS
        self.served += 1
        path, _, query = self.path.partition("?")
        if path == "/flaky" and self.served > 1:
            self.close_connection = True
            return
        args = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if path == "/reject":
            self.send_response(413)
            self.send_header("Content-Length", "8")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"too big\n")
            self.close_connection = True
            return
        if path == "/__preflights":
            out = str(PREFLIGHTS).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        if self.command == "OPTIONS" and self.headers.get("Origin"):
            with LOCK:
                PREFLIGHTS += 1
            self.send_response(403 if args.get("deny") else 204)
            self.send_header("Access-Control-Allow-Origin", self.headers["Origin"])
            self.send_header("Access-Control-Allow-Methods", "GET, POST, PUT")
            self.send_header("Access-Control-Max-Age", args.get("max_age", "600"))
            self.send_header("X-Preflight-Count", str(PREFLIGHTS))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        n, digest = self.read_body()
        if path == "/sleep":
            import time

            time.sleep(float(args.get("s", "1")))
        if path == "/ws":
            self.send_response(101)
            self.send_header("Upgrade", self.headers.get("Upgrade", "websocket"))
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            while True:
                d = self.connection.recv(65536)
                if not d:
                    break
                self.connection.sendall(d)
            self.close_connection = True
            return
        if path == "/chunked":
            total = int(args.get("bytes", "0"))
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            sent = 0
            while sent < total:
                piece = PATTERN[: min(len(PATTERN), total - sent)]
                self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                sent += len(piece)
            self.wfile.write(b"0\r\nX-Trailer: done\r\n\r\n")
            return
        if path == "/text":
            from urllib.parse import unquote

            total = int(args.get("bytes", "0"))
            line = b"the quick brown fox jumps over the lazy dog 0123456789\n"
            text = (line * (total // len(line) + 1))[:total]
            self.send_response(200)
            self.send_header("Content-Type", unquote(args.get("ct", "text/plain")))
            if "ce" in args:
                self.send_header("Content-Encoding", args["ce"])
            if "cc" in args:
                self.send_header("Cache-Control", unquote(args["cc"]))
            self.send_header("ETag", '"t1"')
            self.send_header("Vary", "Origin")
            if args.get("chunked") == "1":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, total, 10000):
                    piece = text[i : i + 10000]
                    self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(total))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(text)
            return
        if path in ("/big", "/die"):
            total = int(args.get("bytes", "0"))
            self.send_response(200)
            self.send_header("Content-Length", str(total * (2 if path == "/die" else 1)))
            self.end_headers()
            sent = 0
            while sent < total:
                piece = PATTERN[: min(len(PATTERN), total - sent)]
                self.wfile.write(piece)
                sent += len(piece)
            if path == "/die":
                self.wfile.flush()
                os._exit(0)
            return
        body = json.dumps(
            {
                "name": NAME,
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "header_names": list(self.headers.keys()),
                "body_bytes": n,
                "body_sha256": digest,
                "conn": self.conn_no,
            },
            indent=1,
        ).encode()
        status = int(args.get("status", "200"))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "keep-alive, X-Hop")
        self.send_header("X-Hop", "must not reach the client")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = handle_any


class TCP(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Unix(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        conn, _ = self.socket.accept()
        return conn, ("unix", 0)


if __name__ == "__main__":
    where = sys.argv[1]
    if where.startswith("unix:"):
        path = where[5:]
        if os.path.exists(path):
            os.unlink(path)
        Unix(path, Handler).serve_forever()
    else:
        TCP(("127.0.0.1", int(where)), Handler).serve_forever()

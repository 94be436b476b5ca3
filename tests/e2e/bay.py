#!/usr/bin/env python3
"""A bay for the end-to-end tests: speaks the docking protocol (version 1 or 3) on
$MS_SOCKET_PATH and echoes what its clients send, with commands to exercise mothership.

usage: bay.py --proto 1|3 --log FILE [--broadcast] [--quiet] [--threads N] [--nodock-if FILE]

Every event is one JSON line in FILE. Boarding gets a text "hi <conn_id>" to that client.
Text messages that are commands (the rest is echoed with its kind):
  close CODE       Disembark that client with CODE, twice, then Cargo for it (both ignored)
  all MSG          MSG to every boarded client, one Cargo each
  bcast MSG        MSG to every client in one Broadcast frame (needs --broadcast)
  junk             a frame of unknown type 0x7f
  huge             a Cargo header announcing 2 GiB
  badjson          a Disembark whose payload is not JSON
  ghost            Cargo and Disembark for a conn_id nobody has
  flood N SIZE     N binary messages of SIZE bytes to that client
  pause SECS       stop reading the link for SECS
Version 3 docks with "threads": 2 and answers HTTP (Hail) by the last part of PATH_INFO:
  empty (204), stream (three Haul chunks), length (Content-Length 5), echo (the body back),
  params (the CGI params as JSON), file (www/file.txt in its folder), fileat (the file the
  query names, as given), outside (/etc/passwd),
  slow (3 s), desync (a Reply for another request id), early (413 before the body is read),
  liar (Content-Length 5 and 10 bytes), text (6 KB of text/plain in 3 chunks); anything
  else 404. A WebSocket handshake (Hail with
  HTTP_UPGRADE) is taken over: a Tunnel reply, then the bytes sent back upper-cased.
With --nodock-if FILE, a run that finds FILE never listens (it sleeps).
"""
import base64
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time

DOCK, MOORED, BOARDING, DISEMBARK, CARGO, BROADCAST = 0x01, 0x02, 0x10, 0x11, 0x12, 0x30
HAIL, HAUL, REPLY, READY = 0x20, 0x21, 0x22, 0x23


def opt(name, default=None):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


PROTO = int(opt("--proto", "1"))
LOG = open(opt("--log", "/dev/null"), "a", buffering=1)
# --quiet: messages are not logged (for benchmarks).
QUIET = "--quiet" in sys.argv


def log(ev, **kw):
    kw.update(ev=ev, pid=os.getpid())
    LOG.write(json.dumps(kw) + "\n")


def frame(kind, payload):
    return struct.pack(">BI", kind, len(payload)) + payload


def cargo(conn, data, text):
    head = struct.pack(">I", conn)
    if PROTO >= 3:
        head += b"MSWS" + bytes([1 if text else 2])
    return frame(CARGO, head + data)


def read_frame(sock, buf):
    while True:
        if len(buf) >= 5:
            kind, n = struct.unpack(">BI", bytes(buf[:5]))
            if len(buf) >= 5 + n:
                payload = bytes(buf[5:5 + n])
                del buf[:5 + n]
                return kind, payload
        data = sock.recv(1 << 16)
        if not data:
            return None, None
        buf.extend(data)


def decode_cargo(p):
    conn, rest = struct.unpack(">I", p[:4])[0], p[4:]
    if len(rest) >= 5 and rest[:4] == b"MSWS":
        return conn, rest[5:], rest[4] == 1, 3
    try:
        rest.decode("utf-8")
        return conn, rest, True, 1
    except UnicodeDecodeError:
        return conn, rest, False, 1


def serve(sock):
    dock = {"version": PROTO, "ship": os.environ.get("MS_SHIP", "")}
    if PROTO >= 3:
        dock["pid"] = os.getpid()
        dock["threads"] = int(opt("--threads", "2"))
    if "--broadcast" in sys.argv:
        dock["broadcast"] = True
    sock.sendall(frame(DOCK, json.dumps(dock).encode()))
    buf = bytearray()
    kind, p = read_frame(sock, buf)
    if kind != MOORED:
        log("no-moored", kind=kind)
        return
    m = json.loads(p)
    log("moored", version=m["version"], config=m["config"], raw=p.decode())
    if PROTO == 1 and buf:
        # As the published version-1 bays do: what came in the same read as Moored is lost.
        log("lost-after-moored", size=len(buf))
        buf.clear()
    clients = set()
    while True:
        kind, p = read_frame(sock, buf)
        if kind is None:
            log("link-closed")
            return
        if kind == HAIL:
            if http(sock, buf, p) == "closed":
                return
        elif kind == BOARDING:
            b = json.loads(p)
            clients.add(b["conn_id"])
            log("boarding", **b)
            sock.sendall(cargo(b["conn_id"], b"hi %d" % b["conn_id"], True))
        elif kind == DISEMBARK:
            d = json.loads(p)
            clients.discard(d["conn_id"])
            log("disembark", **d)
        elif kind == CARGO:
            conn, data, text, shape = decode_cargo(p)
            if not QUIET:
                log("cargo", conn_id=conn, shape=shape, text=text, size=len(data))
            words = data.decode("utf-8", "replace").split(" ", 2) if text else [""]
            cmd = words[0]
            if cmd == "close":
                d = json.dumps({"conn_id": conn, "code": int(words[1]), "reason": "bye"}).encode()
                sock.sendall(frame(DISEMBARK, d) + frame(DISEMBARK, d) + cargo(conn, b"late", True))
            elif cmd == "all":
                sock.sendall(b"".join(cargo(c, words[1].encode(), True) for c in sorted(clients)))
            elif cmd == "bcast":
                body = struct.pack(">I", 0) + b"\x01" + words[1].encode()
                sock.sendall(frame(BROADCAST, body))
            elif cmd == "junk":
                sock.sendall(frame(0x7F, b"?"))
            elif cmd == "huge":
                sock.sendall(struct.pack(">BI", CARGO, 0x7FFFFFFF))
            elif cmd == "badjson":
                sock.sendall(frame(DISEMBARK, b"{nope"))
            elif cmd == "ghost":
                d = json.dumps({"conn_id": 4000000000, "code": 1000, "reason": ""}).encode()
                sock.sendall(cargo(4000000000, b"boo", True) + frame(DISEMBARK, d) + cargo(conn, b"ghosted", True))
            elif cmd == "pause":
                time.sleep(float(words[1]))
            elif cmd == "flood":
                chunk = cargo(conn, b"z" * int(words[2]), False)
                for _ in range(int(words[1])):
                    sock.sendall(chunk)
            else:
                sock.sendall(cargo(conn, data, text))
        else:
            log("unexpected", kind=kind)


def pairs(p, at):
    (n,) = struct.unpack(">I", p[at:at + 4])
    at += 4
    out = []
    for _ in range(n):
        (ln,) = struct.unpack(">I", p[at:at + 4])
        name = p[at + 4:at + 4 + ln]
        at += 4 + ln
        (lv,) = struct.unpack(">I", p[at:at + 4])
        out.append((name, p[at + 4:at + 4 + lv]))
        at += 4 + lv
    return out


def put_pairs(pairs):
    b = struct.pack(">I", len(pairs))
    for k, v in pairs:
        b += struct.pack(">I", len(k)) + k + struct.pack(">I", len(v)) + v
    return b


def reply(rid, status, flags, headers, path=None):
    body = struct.pack(">IHB", rid, status, flags)
    if path is not None:
        body += struct.pack(">I", len(path)) + path
    return frame(REPLY, body + put_pairs(headers))


def haul(rid, data, last):
    return frame(HAUL, struct.pack(">IB", rid, 1 if last else 0) + data)


def http(sock, buf, p):
    """One HTTP exchange (version 3): Hail, its body in Haul frames, then the answer."""
    rid, length = struct.unpack(">IQ", p[:12])
    params = dict(pairs(p, 12))
    path = params.get(b"PATH_INFO", b"").decode()
    if path.endswith("/early"):
        # Answers before reading the body, then waits for it (as upstream's apps do).
        sock.sendall(reply(rid, 413, 0, []))
    body = b""
    last = length == 0
    while not last:
        kind, h = read_frame(sock, buf)
        if kind != HAUL or struct.unpack(">I", h[:4])[0] != rid:
            log("bad-haul", kind=kind)
            return
        body += h[5:]
        last = h[4] == 1
    if len(body) != length:
        log("bad-body", got=len(body), want=length)
    log("hail", request_id=rid, path=path, body=len(body),
        params={k.decode(): v.decode("utf-8", "replace") for k, v in params.items()})
    ready = frame(READY, struct.pack(">I", rid))
    name = path.rsplit("/", 1)[-1]
    if params.get(b"HTTP_UPGRADE", b"").lower() == b"websocket":
        # Taken over: a 101, then what comes is sent back upper-cased until the end.
        key = params.get(b"HTTP_SEC_WEBSOCKET_KEY", b"") + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        accept = base64.b64encode(hashlib.sha1(key).digest())
        # (Upgrade and Connection left to the server, as some adapters do.)
        hs = [(b"Sec-WebSocket-Accept", accept)]
        sock.sendall(reply(rid, 101, 4, hs))
        log("tunnel", request_id=rid, connection=params.get(b"HTTP_CONNECTION", b"").decode())
        while True:
            kind, h = read_frame(sock, buf)
            if kind != HAUL:
                return "closed"
            last = h[4] == 1
            if h[5:] == b"bye":
                # The app ends first: its last bytes, its end, and the link closed.
                sock.sendall(haul(rid, b"BYE", False) + haul(rid, b"", True))
                log("tunnel-end", request_id=rid, by="app")
                return "closed"
            sock.sendall(haul(rid, h[5:].upper(), last))
            if last:
                log("tunnel-end", request_id=rid, by="client")
                return "closed"
    if name == "empty":
        sock.sendall(reply(rid, 204, 0, [(b"x-empty", b"yes")]) + ready)
    elif name == "stream":
        hs = [(b"content-type", b"text/plain"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]
        sock.sendall(reply(rid, 200, 1, hs) + haul(rid, b"one ", False) + haul(rid, b"two ", False))
        time.sleep(0.05)
        sock.sendall(haul(rid, b"three", True) + ready)
    elif name == "length":
        sock.sendall(reply(rid, 200, 1, [(b"content-length", b"5")]) + haul(rid, b"hello", True) + ready)
    elif name == "echo":
        sock.sendall(reply(rid, 201, 1, [(b"content-type", b"application/octet-stream")]))
        for i in range(0, len(body), 200000):
            sock.sendall(haul(rid, body[i:i + 200000], False))
        sock.sendall(haul(rid, b"", True) + ready)
    elif name == "params":
        sock.sendall(reply(rid, 200, 1, [(b"content-type", b"application/json")])
                     + haul(rid, json.dumps({k.decode(): v.decode("utf-8", "replace") for k, v in params.items()}).encode(), True) + ready)
    elif name == "file":
        sock.sendall(reply(rid, 200, 2, [(b"content-type", b"text/plain")], os.path.abspath("www/file.txt").encode()) + ready)
    elif name == "text":
        hs = [(b"content-type", b"text/plain"), (b"vary", b"Cookie"), (b"vary", b"Origin"), (b"etag", b'"v1"')]
        sock.sendall(reply(rid, 200, 1, hs))
        for i in range(3):
            sock.sendall(haul(rid, (b"line %d of some compressible text\n" % i) * 60, i == 2))
        sock.sendall(ready)
    elif name == "fileat":
        sock.sendall(reply(rid, 200, 2, [], params.get(b"QUERY_STRING", b"")) + ready)
    elif name == "outside":
        sock.sendall(reply(rid, 200, 2, [], b"/etc/passwd") + ready)
    elif name == "slow":
        time.sleep(3)
        sock.sendall(reply(rid, 200, 0, []) + ready)
    elif name == "early":
        sock.sendall(ready)
    elif name == "liar":
        sock.sendall(reply(rid, 200, 1, [(b"content-length", b"5")]) + haul(rid, b"0123456789", True) + ready)
    elif name == "desync":
        sock.sendall(reply(rid + 1000, 200, 0, []) + ready)
    else:
        sock.sendall(reply(rid, 404, 1, []) + haul(rid, b"no such thing", True) + ready)


def main():
    gate = opt("--nodock-if")
    if gate and os.path.exists(gate):
        log("not-docking")
        time.sleep(3600)
        return
    path = os.environ["MS_SOCKET_PATH"]
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    log("listening", env={k: v for k, v in os.environ.items() if k.startswith("MS_")})
    while True:
        s, _ = srv.accept()
        threading.Thread(target=link, args=(s,), daemon=True).start()


def link(s):
    try:
        serve(s)
    except (OSError, ValueError) as e:
        log("link-error", error=str(e))
    finally:
        s.close()


if __name__ == "__main__":
    main()

"""Strict test backend for the hardening tests: every byte that reaches it is parsed by
h11, a strict reference HTTP/1.1 parser, so a test can tell what mothership really sent
upstream. Written for these tests.

Any request           -> 200 with a JSON body: method, target, headers (name, value pairs
                         in order), body (latin-1), trailers, and the connection number.
                         A request h11 refuses gets 418 with the reason: mothership must
                         never forward one.
/raw/NAME             -> the canned raw response NAME (see RAW), written as is; after
                         it the connection stays open and whatever arrives on it next is
                         recorded under /__after/NAME instead of being parsed.
/__after/NAME         -> what arrived after the raw response NAME, as JSON
                         ({"bytes": ..., "eof": bool}).
Usage: strict_backend.py PORT NAME
"""
import json
import socket
import sys
import threading

import h11

RAW = {
    # 101 without an upgrade request, then something that looks like an answer.
    "unasked101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSMUGG",
    # 204 announcing a body that follows only once the next request is in.
    "204cl": b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    # Framed by chunks although it also says Content-Length.
    "clte": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "nul": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    "obsfold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    "twocl": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    "badchunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
    "baretrailer": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nSet-Cookie: a=b\r\nX-T: 1\r\n\r\n",
}
# What a broken backend sends once the next request arrives on a connection that
# should have been closed.
LATE = {
    "204cl": b"HELLOHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSMUGG",
    "unasked101": b"",
}
AFTER = {}
LOCK = threading.Lock()
CONNS = [0]


def text(b):
    return b.decode("latin-1")


def send_json(sock, conn, status, obj):
    body = json.dumps(obj).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    sock.sendall(conn.send(h11.Response(status_code=status, headers=headers)))
    sock.sendall(conn.send(h11.Data(data=body)))
    sock.sendall(conn.send(h11.EndOfMessage()))


def after_raw(sock, name):
    """Records what arrives after a raw response, answering as a broken backend would."""
    got = b""
    sock.settimeout(10)
    eof = False
    try:
        while True:
            d = sock.recv(65536)
            if not d:
                eof = True
                break
            got += d
            late = LATE.get(name)
            if late:
                sock.sendall(late)
                LATE[name] = b""
    except OSError:
        pass
    with LOCK:
        AFTER[name] = {"bytes": text(got), "eof": eof}


def serve(sock):
    with LOCK:
        CONNS[0] += 1
        conn_no = CONNS[0]
    conn = h11.Connection(h11.SERVER)
    req = None
    body = b""
    while True:
        try:
            ev = conn.next_event()
        except h11.RemoteProtocolError as e:
            msg = json.dumps({"h11_error": str(e)}).encode()
            sock.sendall(b"HTTP/1.1 418 Refused\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(msg) + msg)
            sock.close()
            return
        if ev is h11.NEED_DATA:
            try:
                d = sock.recv(65536)
            except OSError:
                d = b""
            conn.receive_data(d)
            if not d and conn.their_state is h11.IDLE:
                sock.close()
                return
            continue
        if isinstance(ev, h11.ConnectionClosed):
            sock.close()
            return
        if isinstance(ev, h11.Request):
            req = ev
            body = b""
        elif isinstance(ev, h11.Data):
            body += ev.data
        elif isinstance(ev, h11.EndOfMessage):
            target = text(req.target)
            if target.startswith("/raw/"):
                name = target[5:]
                sock.sendall(RAW[name])
                after_raw(sock, name)
                sock.close()
                return
            if target.startswith("/__after/"):
                with LOCK:
                    obj = AFTER.get(target[9:], {"bytes": None, "eof": False})
            else:
                obj = {
                    "name": sys.argv[2],
                    "method": text(req.method),
                    "target": target,
                    "version": text(req.http_version),
                    "headers": [[text(k), text(v)] for k, v in req.headers],
                    "body": text(body),
                    "trailers": [[text(k), text(v)] for k, v in ev.headers],
                    "conn": conn_no,
                }
            send_json(sock, conn, 200, obj)
            if conn.our_state is h11.MUST_CLOSE:
                sock.close()
                return
            conn.start_next_cycle()


def main():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", int(sys.argv[1])))
    srv.listen(128)
    while True:
        s, _ = srv.accept()
        threading.Thread(target=serve, args=(s,), daemon=True).start()


main()

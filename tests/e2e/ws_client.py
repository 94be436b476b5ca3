#!/usr/bin/env python3
"""WebSocket clients for the end-to-end tests (python `websockets`, asyncio API).

usage: ws_client.py SCENARIO URL [args]; prints one JSON object.
  echo URL [PROTO...]     offers the subprotocols; hi, then a non-ASCII text and a binary
                          message echoed: their kinds and whether they came back intact
  send URL TEXT           hi, sends TEXT, then collects what comes until the close
  fire URL TEXT           hi, sends TEXT and leaves
  close URL CODE          hi, then closes with CODE
  many URL N              N clients at once, each: hi, then its own text echoed
  hold URL GO SECS        hi, prints {"ready": true}, waits for file GO, then sends "again"
                          until it is echoed or SECS pass (or the connection is closed)
  fanout URL N CMD WORD   N clients; the first sends CMD; how many receive WORD
  stall URL               the bay pauses; 2.4 MB sent meanwhile, then all of it echoed?
  flood URL N             asks for N x 64 KiB in one burst and reads them all
  slow URL                asks for a flood and does not read: how the connection ends
"""
import asyncio
import json
import os
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


def out(d):
    print(json.dumps(d), flush=True)


async def hi(ws):
    m = await asyncio.wait_for(ws.recv(), 10)
    return int(m.split()[1]) if isinstance(m, str) and m.startswith("hi ") else None


def closed(ws):
    return {"code": ws.close_code, "reason": ws.close_reason}


async def echo(url, protos):
    r = {}
    async with connect(url, subprotocols=protos or None, additional_headers={"X-Probe": "Yes"}) as ws:
        r["conn_id"] = await hi(ws)
        r["subprotocol"] = ws.subprotocol
        u = "h\u00e9llo \u2713 \U0001F680"
        await ws.send(u)
        m = await asyncio.wait_for(ws.recv(), 10)
        r["text_kind"] = "text" if isinstance(m, str) else "binary"
        r["text_ok"] = m == u
        blob = bytes([0, 0xFF, 0x80, 0xC3]) + os.urandom(300)
        await ws.send(blob)
        m = await asyncio.wait_for(ws.recv(), 10)
        r["binary_kind"] = "text" if isinstance(m, str) else "binary"
        r["binary_ok"] = m == blob
    return r


async def send(url, text):
    r = {"got": []}
    async with connect(url) as ws:
        r["conn_id"] = await hi(ws)
        await ws.send(text)
        try:
            while True:
                m = await asyncio.wait_for(ws.recv(), 10)
                r["got"].append(m if isinstance(m, str) else "<%d bytes>" % len(m))
        except ConnectionClosed:
            pass
        except asyncio.TimeoutError:
            r["timeout"] = True
        r.update(closed(ws))
    return r


async def fire(url, text):
    async with connect(url) as ws:
        cid = await hi(ws)
        await ws.send(text)
    return {"conn_id": cid}


async def close(url, code):
    async with connect(url) as ws:
        cid = await hi(ws)
        await ws.close(code, "leaving")
    return {"conn_id": cid}


async def many(url, n):
    async def one(i):
        try:
            async with connect(url, open_timeout=30) as ws:
                if await hi(ws) is None:
                    return False
                await ws.send("n%d" % i)
                return await asyncio.wait_for(ws.recv(), 30) == "n%d" % i
        except Exception:
            return False

    t = time.monotonic()
    ok = await asyncio.gather(*(one(i) for i in range(n)))
    return {"ok": sum(ok), "secs": round(time.monotonic() - t, 2)}


async def hold(url, go, secs):
    r = {"echo_after": False}
    async with connect(url, ping_interval=None) as ws:
        r["conn_id"] = await hi(ws)
        out({"ready": True})
        give_up = time.monotonic() + 60
        while not os.path.exists(go) and time.monotonic() < give_up:
            await asyncio.sleep(0.05)
        end = time.monotonic() + secs
        try:
            await ws.send("again")
            while time.monotonic() < end:
                m = await asyncio.wait_for(ws.recv(), end - time.monotonic())
                if m == "again":
                    r["echo_after"] = True
                    break
        except (ConnectionClosed, asyncio.TimeoutError):
            pass
        r.update(closed(ws))
    return r


async def fanout(url, n, cmd, word):
    conns = []
    try:
        for _ in range(n):
            ws = await connect(url, open_timeout=30)
            await hi(ws)
            conns.append(ws)
        await conns[0].send(cmd)

        async def got(ws):
            try:
                while True:
                    if await asyncio.wait_for(ws.recv(), 10) == word:
                        return True
            except Exception:
                return False

        t = time.monotonic()
        ok = await asyncio.gather(*(got(ws) for ws in conns))
        return {"received": sum(ok), "secs": round(time.monotonic() - t, 3)}
    finally:
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)


async def stall(url):
    # The bay stops reading; what is sent meanwhile (over its link's bound) waits, then
    # all of it is echoed, a message larger than a buffer last.
    async with connect(url, max_size=None, max_queue=None) as ws:
        await hi(ws)
        await ws.send("pause 2")
        msgs = [bytes([i]) * 60000 for i in range(40)] + [b"L" * 100000]
        for m in msgs:
            await ws.send(m)
        n = 0
        try:
            for m in msgs:
                if await asyncio.wait_for(ws.recv(), 20) == m:
                    n += 1
        except (ConnectionClosed, asyncio.TimeoutError):
            pass
        return {"echoed": n, "of": len(msgs)}


async def flood(url, count):
    async with connect(url, max_size=None, max_queue=None) as ws:
        await hi(ws)
        await ws.send("flood %d 65536" % count)
        n = 0
        try:
            while n < count:
                await asyncio.wait_for(ws.recv(), 10)
                n += 1
        except (ConnectionClosed, asyncio.TimeoutError):
            pass
        r = {"received": n}
        r.update(closed(ws))
        return r


async def slow(url):
    async with connect(url, max_queue=1, ping_interval=None) as ws:
        await hi(ws)
        await ws.send("flood 400 65536")
        await asyncio.sleep(3)
        n = 0
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
                n += 1
        except (ConnectionClosed, asyncio.TimeoutError):
            pass
        r = {"received": n}
        r.update(closed(ws))
    return r


def main():
    scenario, url, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    if scenario == "echo":
        out(asyncio.run(echo(url, rest)))
    elif scenario == "send":
        out(asyncio.run(send(url, rest[0])))
    elif scenario == "fire":
        out(asyncio.run(fire(url, rest[0])))
    elif scenario == "close":
        out(asyncio.run(close(url, int(rest[0]))))
    elif scenario == "many":
        out(asyncio.run(many(url, int(rest[0]))))
    elif scenario == "hold":
        out(asyncio.run(hold(url, rest[0], float(rest[1]))))
    elif scenario == "fanout":
        out(asyncio.run(fanout(url, int(rest[0]), rest[1], rest[2])))
    elif scenario == "stall":
        out(asyncio.run(stall(url)))
    elif scenario == "flood":
        out(asyncio.run(flood(url, int(rest[0]))))
    elif scenario == "slow":
        out(asyncio.run(slow(url)))
    else:
        sys.exit("unknown scenario " + scenario)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""WebSocket load for bench/bays.sh (python `websockets`); prints one JSON object.

  echo URL N SECS         N clients, each sending a 32-byte text and waiting for its echo,
                          in a loop for SECS: messages/s and latency percentiles
  fanout URL N CMD ROUNDS N clients; the first sends CMD ("all x" or "bcast x") ROUNDS
                          times: median and worst time until every client has the message
  idle URL N FILE         N clients connected and silent until FILE exists"""
import asyncio
import json
import os
import sys
import time

from websockets.asyncio.client import connect


async def opened(url, n):
    conns = []
    for i in range(0, n, 200):
        batch = await asyncio.gather(*(connect(url, open_timeout=60, ping_interval=None, max_queue=None) for _ in range(min(200, n - i))))
        conns.extend(batch)
    for ws in conns:
        await asyncio.wait_for(ws.recv(), 30)
    return conns


async def echo(url, n, secs):
    conns = await opened(url, n)
    lat = []
    stop = time.monotonic() + secs

    async def one(ws):
        msg = "m" * 32
        while time.monotonic() < stop:
            t = time.perf_counter()
            await ws.send(msg)
            await ws.recv()
            lat.append(time.perf_counter() - t)

    t0 = time.monotonic()
    await asyncio.gather(*(one(ws) for ws in conns))
    took = time.monotonic() - t0
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
    lat.sort()
    pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2)
    return {"clients": n, "msgs_per_s": round(len(lat) / took), "p50_ms": pick(0.5), "p99_ms": pick(0.99)}


async def fanout(url, n, cmd, rounds):
    conns = await opened(url, n)
    word = cmd.split(" ", 1)[1]
    times = []
    for r in range(rounds):
        t = time.perf_counter()
        await conns[0].send(cmd)

        async def got(ws):
            while await ws.recv() != word:
                pass

        await asyncio.gather(*(got(ws) for ws in conns))
        times.append((time.perf_counter() - t) * 1000)
        await asyncio.sleep(0.05)
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
    times.sort()
    return {"clients": n, "median_ms": round(times[len(times) // 2], 1), "max_ms": round(times[-1], 1)}


async def idle(url, n, flag):
    conns = await opened(url, n)
    print(json.dumps({"connected": len(conns)}), flush=True)
    while not os.path.exists(flag):
        await asyncio.sleep(0.2)
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
    return {"closed": len(conns)}


def main():
    mode, url = sys.argv[1], sys.argv[2]
    a = sys.argv[3:]
    if mode == "echo":
        r = asyncio.run(echo(url, int(a[0]), float(a[1])))
    elif mode == "fanout":
        r = asyncio.run(fanout(url, int(a[0]), a[1], int(a[2])))
    else:
        r = asyncio.run(idle(url, int(a[0]), a[1]))
    print(json.dumps(r), flush=True)


main()

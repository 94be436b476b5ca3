#!/usr/bin/env python3
"""The peer of bench/bays.sh: a plain WebSocket echo server (python `websockets`) that nginx
proxies to. Greets each client with "hi <n>" as the bays do, echoes what it gets, and
answers "all MSG" by sending MSG to every client (websockets.broadcast).

usage: ws_echo_server.py PORT"""
import asyncio
import itertools
import sys

from websockets.asyncio.server import broadcast, serve

CLIENTS = set()
IDS = itertools.count(1)


async def handler(ws):
    CLIENTS.add(ws)
    try:
        await ws.send("hi %d" % next(IDS))
        async for m in ws:
            if isinstance(m, str) and m.startswith("all "):
                broadcast(CLIENTS, m[4:])
            else:
                await ws.send(m)
    finally:
        CLIENTS.discard(ws)


async def main(port):
    async with serve(handler, "127.0.0.1", port, max_size=None, ping_interval=None):
        await asyncio.Future()


asyncio.run(main(int(sys.argv[1])))

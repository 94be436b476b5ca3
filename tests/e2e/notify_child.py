"""A program that declares readiness the systemd way, for the readiness tests.

Usage: notify_child.py OUT DELAY [PINGS] [other words, ignored]
Appends its pid to OUT.pid, waits DELAY seconds, writes time.time_ns() to OUT, sends
READY=1 (with a STATUS line) to $NOTIFY_SOCKET, then WATCHDOG=1 every 0.1 s: PINGS times
if given (then it hangs silently), else for ever. Exits when its parent goes away.
"""
import os
import socket
import sys
import time

out, delay = sys.argv[1], float(sys.argv[2])
pings = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3].isdigit() else -1
parent = os.getppid()
with open(out + ".pid", "a") as f:
    f.write(f"{os.getpid()}\n")
addr = os.environ["NOTIFY_SOCKET"]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
time.sleep(delay)
with open(out + ".tmp", "w") as f:
    f.write(str(time.time_ns()))
os.rename(out + ".tmp", out)
s.sendto(b"READY=1\nSTATUS=serving", addr)
while os.getppid() == parent:
    if pings != 0:
        s.sendto(b"WATCHDOG=1", addr)
        pings -= 1
    time.sleep(0.1)

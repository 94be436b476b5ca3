#!/usr/bin/env python3
"""Runs a command (the test suite) as a child subreaper, so that every process it starts,
however deeply, stays its descendant; fails when any of them outlives the command by more
than a few seconds (a test that left a fleet, a grandchild or a server running), after
listing and stopping them. Written for `make test`.

Usage: no-leftovers.py COMMAND [ARG...]
"""
import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
GRACE = 5.0


def children():
    pids = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return pids


def describe(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("no-leftovers: cannot become a child subreaper", file=sys.stderr)
        return 1
    main_child = subprocess.Popen(sys.argv[1:])
    # Reap every process that ends while the command runs: orphans are reparented here.
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == main_child.pid:
            rc = os.waitstatus_to_exitcode(status)
            rc = rc if rc >= 0 else 128 - rc
            break
    end = time.monotonic() + GRACE
    left = []
    while time.monotonic() < end:
        reap()
        left = children()
        if not left:
            break
        time.sleep(0.1)
    if not left:
        return rc
    print(f"no-leftovers: {len(left)} process(es) started by the tests are still running:", file=sys.stderr)
    for pid in left:
        print(f"  {pid}: {describe(pid)}", file=sys.stderr)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in children():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        time.sleep(1)
        reap()
    return rc or 1


sys.exit(main())

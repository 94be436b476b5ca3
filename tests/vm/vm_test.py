#!/usr/bin/env python3
"""`make vm-test`: mothership as the init of a qemu VM (TCG), checked from the outside.

Boot 1 (tests/vm/ship-manifest.toml): the fleet starts, the busybox httpd ship answers
through the edge on a hostfwd port of 127.0.0.1, an orphan is reaped, the hostname is
set; then Ctrl-Alt-Del (qemu monitor `sendkey`, what Firecracker's SendCtrlAltDel sends)
lands the fleet and the VM powers off: qemu exits 0, no "Kernel panic" on the console.

Boot 2 (tests/vm/failing.toml): a prelaunch job fails; mothership logs why and powers off
with its exit status written to isa-debug-exit: qemu exits (1 << 1) | 1 = 3.

Prints boot-to-running and landing-to-power-off times. Usage: vm_test.py OUTDIR
(OUTDIR holds vmlinuz and initramfs.gz from build-initramfs.sh).
"""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

OUT = os.path.abspath(sys.argv[1])
# TCG on a loaded 2-core machine boots in seconds; these bounds only stop a wedged VM.
BOOT_LIMIT = 180
LAND_LIMIT = 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Vm:
    def __init__(self, name, manifest, port=None):
        self.name = name
        self.console = os.path.join(OUT, f"console-{name}.log")
        self.monitor = os.path.join(OUT, f"monitor-{name}.sock")
        for p in (self.console, self.monitor):
            if os.path.exists(p):
                os.unlink(p)
        netdev = "user,id=n0"
        if port:
            netdev += f",hostfwd=tcp:127.0.0.1:{port}-:8080"
        append = (
            "console=ttyS0 panic=-1 rdinit=/sbin/mothership -- "
            f"-c /etc/{manifest} --hostname shipvm --exit-port 0xf4"
        )
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                "qemu-system-x86_64",
                "-machine", "q35", "-accel", "tcg", "-m", "256", "-smp", "1",
                "-display", "none", "-no-reboot",
                "-kernel", os.path.join(OUT, "vmlinuz"),
                "-initrd", os.path.join(OUT, "initramfs.gz"),
                "-append", append,
                "-serial", f"file:{self.console}",
                "-monitor", f"unix:{self.monitor},server,nowait",
                "-netdev", netdev,
                "-device", "virtio-net-pci,netdev=n0,romfile=",
                "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
            ],
            stdin=subprocess.DEVNULL,
        )

    def text(self):
        try:
            with open(self.console, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, needle, limit):
        """Seconds from boot until `needle` (a string, or a compiled pattern) is on the
        console."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            text = self.text()
            found = needle.search(text) if isinstance(needle, re.Pattern) else needle in text
            if found:
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.fail(f"never saw {needle!r} on the console")

    def monitor_cmd(self, cmd):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.monitor)
            s.sendall(cmd.encode() + b"\n")
            time.sleep(0.2)

    def wait_exit(self, limit):
        try:
            return self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.fail(f"qemu still running {limit} s later")

    def fail(self, why):
        print(f"--- console of boot {self.name} ---\n{self.text()}\n---", file=sys.stderr)
        self.kill()
        sys.exit(f"vm-test: boot {self.name}: {why}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def check_clean(self):
        text = self.text()
        if "Kernel panic" in text:
            self.fail("the kernel panicked")


def get(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
        return r.status, r.read().decode()


def boot_fleet():
    port = free_port()
    vm = Vm("fleet", "ship-manifest.toml", port)
    try:
        vm.wait_for("is the init of this machine", BOOT_LIMIT)
        running = vm.wait_for("running: ", BOOT_LIMIT)
        vm.wait_for("network up: shipvm", 5)
        # The guest script's verdict: "orphan N reaped", or "orphan N not reaped" and the
        # job fails.
        vm.wait_for(re.compile(r"orphan \d+ (not )?reaped|reaped: failed"), BOOT_LIMIT)
        if not re.search(r"orphan \d+ reaped", vm.text()):
            vm.fail("the orphan was left a zombie")
        status, body = None, ""
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                status, body = get(port)
                break
            except OSError:
                time.sleep(0.2)
        if status != 200 or "hello from the vm" not in body:
            vm.fail(f"through the edge: status {status}, body {body!r}")
        landing = time.monotonic()
        vm.monitor_cmd("sendkey ctrl-alt-delete")
        code = vm.wait_exit(LAND_LIMIT)
        landed = time.monotonic() - landing
        vm.check_clean()
        text = vm.text()
        for needle in ("received SIGINT", "landed: received SIGINT", "exit status 0; powering off"):
            if needle not in text:
                vm.fail(f"no {needle!r} on the console")
        if code != 0:
            vm.fail(f"qemu exited {code}, not 0 (a clean power-off)")
        print(f"vm-test: fleet boot: running {running:.1f} s after qemu started; "
              f"edge answered 200 through hostfwd; orphan reaped; "
              f"Ctrl-Alt-Del to power-off {landed:.1f} s")
    finally:
        vm.kill()


def boot_failing():
    vm = Vm("failing", "failing.toml")
    try:
        code = vm.wait_exit(BOOT_LIMIT)
        vm.check_clean()
        text = vm.text()
        for needle in ("prelaunch", "failed:", "exit status 1; powering off"):
            if needle not in text:
                vm.fail(f"no {needle!r} on the console")
        if code != 3:
            vm.fail(f"qemu exited {code}, not 3 (exit status 1 through isa-debug-exit)")
        print(f"vm-test: failing boot: powered off with exit status 1 after "
              f"{time.monotonic() - vm.started:.1f} s")
    finally:
        vm.kill()


if __name__ == "__main__":
    boot_fleet()
    boot_failing()
    print("vm-test: passed")

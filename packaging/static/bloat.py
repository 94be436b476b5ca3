#!/usr/bin/env python3
"""What each crate costs in a binary (unstripped): code and read-only data by crate, from
`nm --size-sort` with demangled names, largest first. A symbol named `<A as B>::f` counts
for crate A; generic code is named after the crate that defines it, wherever it was
instantiated. Symbols of C code (musl, libunwind) and unnamed data are not attributed.
Usage: bloat.py BINARY [N]"""

import collections
import re
import subprocess
import sys

binary = sys.argv[1]
top = int(sys.argv[2]) if len(sys.argv) > 2 else 20
out = subprocess.run(
    ["nm", "--size-sort", "-S", "-C", binary], check=True, capture_output=True, text=True
).stdout
code, data = collections.Counter(), collections.Counter()
for line in out.splitlines():
    parts = line.split(None, 3)
    if len(parts) < 4:
        continue
    size, kind, name = int(parts[1], 16), parts[2], parts[3].strip()
    m = re.match(r"<(?:&(?:mut )?)?\[?([A-Za-z_][A-Za-z0-9_]*)", name)
    if name.startswith("<") and m:
        crate = m.group(1)
    elif "::" in name:
        crate = name.split("::")[0]
    else:
        crate = "(C and unnamed)"
    (code if kind in "tTwW" else data)[crate] += size
sections = subprocess.run(["size", "-A", binary], check=True, capture_output=True, text=True).stdout
print(f"{binary}:")
for line in sections.splitlines():
    f = line.split()
    if len(f) >= 2 and f[0] in (".text", ".rodata", ".eh_frame", ".eh_frame_hdr", ".data", ".bss"):
        print(f"  section {f[0]:14} {int(f[1]) / 1024:8.1f} KiB")
total = code + data
print(f"  {'crate':24} {'code KiB':>9} {'data KiB':>9}")
for crate, _ in total.most_common(top):
    print(f"  {crate:24} {code[crate] / 1024:9.1f} {data[crate] / 1024:9.1f}")

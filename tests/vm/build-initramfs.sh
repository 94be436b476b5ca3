#!/usr/bin/env bash
# Builds what `make vm-test` boots: a Debian cloud kernel (from its package, unpacked, never
# installed) and an initramfs holding the static mothership as /sbin/mothership, a static
# busybox, the virtio network modules and the test manifests of this folder.
# Usage: build-initramfs.sh MOTHERSHIP_BINARY OUTDIR
set -euo pipefail
bin=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)

# The kernel: the package that Debian's linux-image-cloud-amd64 points at today.
if [ ! -f "$out/vmlinuz" ]; then
  kernel_package() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[0-9].*\)/\1/p' | head -1
  }
  pkg=$(kernel_package)
  if [ -z "$pkg" ] && [ "$(id -u)" -eq 0 ]; then
    apt-get update -q >/dev/null
    pkg=$(kernel_package)
  fi
  [ -n "$pkg" ] || { echo "no linux-image-cloud-amd64 in apt's lists (apt-get update?)" >&2; exit 1; }
  rm -rf "$out/kernel" && mkdir -p "$out/kernel"
  (cd "$out/kernel" && apt-get -o APT::Sandbox::User=root download "$pkg" >/dev/null && dpkg-deb -x ./*.deb unpacked)
  cp "$out"/kernel/unpacked/boot/vmlinuz-* "$out/vmlinuz.tmp"
  mods=$(echo "$out"/kernel/unpacked/lib/modules/*/kernel)
  mkdir -p "$out/modules"
  for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev \
           drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci net/core/failover \
           drivers/net/net_failover drivers/net/virtio_net; do
    [ -f "$mods/$m.ko" ] || { echo "$pkg has no $m.ko (compressed or built in?): update this list" >&2; exit 1; }
    cp "$mods/$m.ko" "$out/modules/"
  done
  echo "$pkg" > "$out/kernel-package"
  rm -rf "$out/kernel"
  mv "$out/vmlinuz.tmp" "$out/vmlinuz"
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,etc,lib/modules,www,proc,sys,dev,run,tmp}
install -m 0755 "$bin" "$root/sbin/mothership"
# busybox-static's, not a dynamic one that may be first on PATH.
readelf -d /bin/busybox 2>/dev/null | grep -q NEEDED && { echo "/bin/busybox is not static (busybox-static?)" >&2; exit 1; }
install -m 0755 /bin/busybox "$root/bin/busybox"
for tool in sh ash cat echo grep insmod ip sleep setsid hostname awk httpd wget test sync; do
  ln -s busybox "$root/bin/$tool"
done
cp "$out"/modules/*.ko "$root/lib/modules/"
cp "$here"/*.toml "$root/etc/"
for f in "$here"/guest-*.sh; do install -m 0755 "$f" "$root/etc/$(basename "$f")"; done
echo "hello from the vm" > "$root/www/index.html"
# The console and /dev/null: Rust's start-up code needs /dev/null when the kernel gives
# init no console. (The kernel's built-in initramfs has /dev/console; this does not rely
# on it.)
mkdir -p "$root/dev"
if ! { mknod -m 0600 "$root/dev/console" c 5 1 && mknod -m 0666 "$root/dev/null" c 1 3; } 2>/dev/null; then
  echo "note: no device nodes (not root); the kernel's built-in /dev/console has to do" >&2
fi
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) | gzip -1 > "$out/initramfs.gz"
echo "initramfs: $(du -k "$out/initramfs.gz" | cut -f1) KiB; kernel: $(cat "$out/kernel-package")"

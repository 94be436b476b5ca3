#!/bin/sh
# Guest side of `make vm-test`: the virtio network driver and qemu's user-mode address.
set -e
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
  insmod "/lib/modules/$m.ko"
done
ip link set lo up
# The device shows up shortly after its driver is loaded.
n=0
until ip link show eth0 >/dev/null 2>&1; do
  n=$((n + 1))
  [ "$n" -lt 100 ] || { echo "no eth0"; exit 1; }
  sleep 0.1
done
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
echo "network up: $(hostname)"

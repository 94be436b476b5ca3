#!/bin/sh
# Guest side of `make vm-test`: waits until the orphan left by the `orphan` job is gone
# from the process table (reaped, not a zombie), and says so on the console.
pid=$(cat /run/orphan.pid)
n=0
while [ -e "/proc/$pid" ]; do
  n=$((n + 1))
  if [ "$n" -gt 600 ]; then
    echo "orphan $pid not reaped: $(cat "/proc/$pid/stat")"
    exit 1
  fi
  sleep 0.1
done
echo "orphan $pid reaped"

#!/bin/sh
# Installs the Debian packages named on the command line that are not installed yet (when
# run as root), or prints the one apt-get line that would. Used by the Makefile, so that
# `make run` and `make test` work on a fresh Debian machine without a setup step.
set -eu
missing=""
for p in "$@"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  echo "installing Debian packages:$missing" >&2
  apt-get update -q
  # shellcheck disable=SC2086 # one word per package
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
else
  echo "missing Debian packages; as root, run: apt-get install -y --no-install-recommends$missing" >&2
  exit 1
fi

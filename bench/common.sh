# Sourced by bench scripts as `. bench/common.sh NAME`: strict mode, the repository root as
# working directory, BIN (the release binary unless set), a work directory W that is
# removed on exit after the processes whose pids are added to `pids` are stopped, and
# port() for a free loopback port.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${BIN:-$PWD/target/release/mothership}
W=$(mktemp -d "/tmp/ms-$1-bench.XXXXXX")
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.5; rm -rf "$W"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

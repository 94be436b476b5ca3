# Mothership: `make run` starts the example fleet, `make test` runs every check.
CARGO ?= cargo
BIN := target/release/mothership
MANPAGES := man/mothership.1 man/ship-manifest.toml.5

.PHONY: all build run test unit lint fmt-check man-lint bench cross setup clean fuzz

all: build

build:
	$(CARGO) build --release

run: build
	./$(BIN) -c examples/ship-manifest.toml

# Every test: unit and end-to-end tests, lints, formatting, man pages.
test: unit lint fmt-check man-lint

# Under a child subreaper that fails the run when a process started by a test outlives it.
unit:
	python3 tests/no-leftovers.py $(CARGO) test --all-features

lint:
	$(CARGO) clippy --all-targets --all-features -- -D warnings
	$(CARGO) clippy --all-targets -- -D warnings

fmt-check:
	$(CARGO) fmt --all -- --check

man-lint:
	mandoc -T lint -W warning $(MANPAGES)

# Benchmarks (slow; not part of `make test`). Figures go to stdout.
bench: build
	bash bench/run.sh
	bash bench/proxy.sh
	bash bench/edge.sh
	bash bench/compress.sh

# Coverage-guided fuzzing (cargo-fuzz, libFuzzer; installs cargo-fuzz when missing): every
# target for FUZZ_SECONDS (default 60) each; fails on a crash, a hang or a leak.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz/run.sh

# Type-check and lint the FreeBSD and macOS code paths (needs rustup and network once).
cross:
	rustup target add x86_64-unknown-freebsd x86_64-apple-darwin
	$(CARGO) clippy --target x86_64-unknown-freebsd -- -D warnings
	$(CARGO) clippy --target x86_64-apple-darwin -- -D warnings

# System packages the tests and the example need (Debian/Ubuntu, as root).
setup:
	apt-get update
	apt-get install -y --no-install-recommends mandoc python3 python3-pip python3-h11 curl procps util-linux nginx haproxy wrk prometheus postgresql openssl
	# h11 (the strict reference parser of tests/e2e/hardening.rs) for whichever python3 is first on PATH.
	python3 -c 'import h11' 2>/dev/null || python3 -m pip install --quiet h11 || python3 -m pip install --quiet --break-system-packages h11

clean:
	$(CARGO) clean

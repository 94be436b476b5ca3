# Mothership: `make run` starts the example fleet, `make test` runs every check.
CARGO ?= cargo
BIN := target/release/mothership
MANPAGES := man/mothership.1 man/ship-manifest.toml.5

.PHONY: all build run test unit lint fmt-check man-lint package-lint bench cross setup clean fuzz static static-deps static-check dist vm-test vm-deps test-deps bench-deps

all: build

build:
	$(CARGO) build --release

# The example fleet needs only what every Debian has (sh, bash, perl-base).
run: build
	./$(BIN) -c examples/ship-manifest.toml

# Every test: unit and end-to-end tests, lints, formatting, man pages, packaging scripts.
# Installs the Debian packages the tests use when they are missing (as root; otherwise it
# prints the apt-get line to run).
test: test-deps
	$(MAKE) unit lint fmt-check man-lint package-lint

# rustc-web, cargo-web, rust-web-src and lld-16 build the Rust WASM module of the tests
# (tests/wasm-guest/: core for wasm32 built from source, linked by wasm-ld); chromium
# renders the status page in tests/e2e/edge.rs.
TEST_PACKAGES := mandoc shellcheck tmux python3 python3-pip python3-h11 curl procps util-linux iproute2 nginx prometheus postgresql openssl wrk rustc-web cargo-web rust-web-src lld-16 chromium
BENCH_PACKAGES := nginx haproxy wrk curl procps python3 python3-pip wabt rustc-web cargo-web rust-web-src lld-16
test-deps:
	sh packaging/need.sh $(TEST_PACKAGES)
	@# h11 (the strict reference parser of tests/e2e/hardening.rs) for whichever python3 is first on PATH.
	python3 -c 'import h11' 2>/dev/null || python3 -m pip install --quiet h11 || python3 -m pip install --quiet --break-system-packages h11
	@# websockets 13 or later (its asyncio client), the WebSocket client of tests/e2e/bays.rs.
	python3 -c 'import websockets.asyncio.client' 2>/dev/null || python3 -m pip install --quiet 'websockets>=13' || python3 -m pip install --quiet --break-system-packages 'websockets>=13'

bench-deps:
	sh packaging/need.sh $(BENCH_PACKAGES)
	python3 -c 'import websockets.asyncio.client' 2>/dev/null || python3 -m pip install --quiet 'websockets>=13' || python3 -m pip install --quiet --break-system-packages 'websockets>=13'

# Under a child subreaper that fails the run when a process started by a test outlives it.
unit:
	python3 tests/no-leftovers.py $(CARGO) test --all-features

lint:
	$(CARGO) clippy --all-targets --all-features -- -D warnings
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --no-default-features -- -D warnings

fmt-check:
	$(CARGO) fmt --all -- --check

man-lint:
	mandoc -T lint -W warning $(MANPAGES)

# The shell parts of the Alpine and FreeBSD packaging.
package-lint:
	shellcheck -s sh packaging/alpine/mothership.initd packaging/alpine/mothership.pre-install packaging/freebsd/files/mothership.in
	shellcheck -s sh -e SC2034,SC2154 packaging/alpine/APKBUILD
	shellcheck -s sh packaging/need.sh tests/vm/guest-net.sh tests/vm/guest-reaped.sh
	shellcheck tests/vm/build-initramfs.sh packaging/static/check.sh packaging/static/no-wasm.sh tests/wasm-guest/build.sh

# Benchmarks (slow; not part of `make test`). Figures go to stdout.
bench: bench-deps build
	bash bench/run.sh
	bash bench/proxy.sh
	bash bench/edge.sh
	bash bench/compress.sh
	bash bench/health.sh
	bash bench/bays.sh
	SIZE=1 bash bench/wasm.sh

# Coverage-guided fuzzing (cargo-fuzz, libFuzzer; installs cargo-fuzz when missing): every
# target for FUZZ_SECONDS (default 60) each; fails on a crash, a hang or a leak.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz/run.sh

# Fully static x86_64 musl binaries: target/static/mothership (default features) and
# target/static/mothership-minimal (no default features). rustup cannot fetch the musl
# target here, so std is built from source (-Zbuild-std) with Debian's Rust 1.96
# (rustc-web, cargo-web, rust-web-src), linked by musl-gcc (musl-tools) against LLVM's
# libunwind (libunwind-16-dev) plus a shim for the one glibc symbol it calls
# (packaging/static/fortify_shim.c). Installs those packages when missing (as root).
STATIC_TARGET := x86_64-unknown-linux-musl
STATIC_SHIM := target/static-shim
STATIC_FLAGS := -C target-feature=+crt-static -C link-self-contained=no -C relocation-model=static -C force-unwind-tables=no -Zlocation-detail=none -L $(CURDIR)/$(STATIC_SHIM)
STATIC_CARGO := env RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=musl-gcc RUSTFLAGS="$(STATIC_FLAGS)" /usr/bin/cargo
# Neither static build has the postgres feature, whose worker thread is the one thing a
# panic may end without ending the process: they abort on a panic. No unwind tables
# (-164 KiB) and no source locations in panics (-Zlocation-detail=none, -92 KiB with the
# bays): a panic still prints its message, not where it was raised nor the stack.
STATIC_BUILD := $(STATIC_CARGO) build --release --locked --config 'profile.release.panic="abort"' -Zbuild-std=std,panic_abort -Zbuild-std-features= --target $(STATIC_TARGET)
# Budgets of the stripped static binaries (issue 13): the default build at most 3 MiB
# before WASM, 4 MiB with WASM payloads (wasmi adds 790 KiB), 4.5 MiB with the TUI and the
# operator features of issue 18 (4217 KiB measured).
BUDGET_DEFAULT := 4718592
BUDGET_MINIMAL := 2621440

static: $(STATIC_SHIM)/libunwind.a
	$(STATIC_BUILD) --target-dir target/static-build
	$(STATIC_BUILD) --target-dir target/static-build-minimal --no-default-features
	mkdir -p target/static
	cp target/static-build/$(STATIC_TARGET)/release/mothership target/static/mothership
	cp target/static-build-minimal/$(STATIC_TARGET)/release/mothership target/static/mothership-minimal
	-bash packaging/static/check.sh target/static/mothership $(BUDGET_DEFAULT)
	-bash packaging/static/check.sh target/static/mothership-minimal $(BUDGET_MINIMAL)

# Fails when a static binary is dynamic or over its budget (CI runs it).
static-check: static
	bash packaging/static/check.sh target/static/mothership $(BUDGET_DEFAULT)
	bash packaging/static/check.sh target/static/mothership-minimal $(BUDGET_MINIMAL)
	bash packaging/static/no-wasm.sh target/static/mothership-minimal

static-deps:
	sh packaging/need.sh rustc-web cargo-web rust-web-src musl-tools libunwind-16-dev

$(STATIC_SHIM)/libunwind.a: packaging/static/fortify_shim.c | static-deps
	mkdir -p $(STATIC_SHIM)
	musl-gcc -O2 -c packaging/static/fortify_shim.c -o $(STATIC_SHIM)/fortify_shim.o
	cp /usr/lib/llvm-16/lib/libunwind.a $@.tmp
	ar rs $@.tmp $(STATIC_SHIM)/fortify_shim.o
	mv $@.tmp $@

# The release tarball: the static default binary (stripped), the man pages, the example
# manifest, the README and the licence, as dist/mothership-VERSION-x86_64-linux-musl.tar.gz
# (owner, order and times fixed, so it is the same for the same binary), and
# dist/SHA256SUMS for it.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
DIST := mothership-$(VERSION)-x86_64-linux-musl
dist: static
	rm -rf dist/$(DIST) dist/$(DIST).tar.gz
	mkdir -p dist/$(DIST)
	strip -o dist/$(DIST)/mothership target/static/mothership
	cp man/mothership.1 man/ship-manifest.toml.5 examples/ship-manifest.toml README.md packaging/LICENSE dist/$(DIST)/
	chmod 0755 dist/$(DIST)/mothership && chmod 0644 dist/$(DIST)/*.1 dist/$(DIST)/*.5 dist/$(DIST)/*.toml dist/$(DIST)/README.md dist/$(DIST)/LICENSE
	tar -C dist --owner=0 --group=0 --numeric-owner --sort=name --mtime=@0 --mode=go-w -cf - $(DIST) | gzip -9n > dist/$(DIST).tar.gz
	rm -rf dist/$(DIST)
	cd dist && sha256sum $(DIST).tar.gz > SHA256SUMS && sha256sum -c SHA256SUMS

# Mothership as the init of a qemu VM (TCG): the minimal static binary, a static busybox
# and a Debian cloud kernel in an initramfs; see tests/vm/vm_test.py for what it checks.
# Installs qemu-system-x86, busybox-static and cpio when missing (as root).
VM_OUT := target/vm
vm-test: static vm-deps
	bash tests/vm/build-initramfs.sh target/static/mothership-minimal $(VM_OUT)
	python3 tests/vm/vm_test.py $(VM_OUT)

vm-deps:
	sh packaging/need.sh qemu-system-x86 busybox-static cpio

# Type-check the FreeBSD and macOS code paths: `cargo check` (nothing is linked) with std
# for those targets built from source by Debian's Rust (the packages of `make static`), as
# rustup cannot fetch them here.
CROSS_CHECK := env RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo check --locked -Zbuild-std=std,panic_abort --target-dir target/cross
# A warning fails it, as clippy's -D warnings does (RUSTFLAGS would reach std as well).
cross: static-deps
	@for t in "x86_64-unknown-freebsd" "x86_64-unknown-freebsd --no-default-features" "x86_64-apple-darwin"; do \
	  echo "cargo check --target $$t"; \
	  out=$$($(CROSS_CHECK) --target $$t 2>&1) || { echo "$$out"; exit 1; }; \
	  if echo "$$out" | grep -q '^warning'; then echo "$$out"; exit 1; fi; \
	done

# Every Debian package the tests and the benchmarks use, at once (`make test` and
# `make bench` install what they need themselves).
setup: test-deps bench-deps

clean:
	$(CARGO) clean

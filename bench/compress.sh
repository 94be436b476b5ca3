#!/usr/bin/env bash
# Compression speed (issue 5): the flate2 backends (miniz_oxide, zlib-rs) and the brotli
# crate at several levels, on a corpus of real text (Python's standard library sources,
# this project's sources and a JSON document), in one run. Builds a throwaway crate in a
# temp dir, once per flate2 backend. Usage: bench/compress.sh
set -euo pipefail
cd "$(dirname "$0")/.."
W=$(mktemp -d /tmp/ms-compress-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
# Corpus: about 8 MiB of text.
set +o pipefail
{
  find /usr/lib/python3* -name '*.py' -size -200k 2>/dev/null | sort | head -400 | xargs cat
  cat src/*/*.rs
  python3 -c "
import json, random, sys
random.seed(1)
print(json.dumps([{'id': i, 'name': 'user%d' % i, 'email': 'user%d@example.com' % i,
  'score': random.random(), 'tags': random.sample(['a','b','c','d','e','f'], 3)} for i in range(30000)]))" 2>/dev/null
} | head -c 8388608 > "$W/corpus"
set -o pipefail
mkdir -p "$W/c/src"
cat > "$W/c/Cargo.toml" <<TOML
[package]
name = "cb"
version = "0.0.0"
edition = "2021"
[features]
miniz = ["flate2/rust_backend"]
zrs = ["flate2/zlib-rs"]
[dependencies]
flate2 = { version = "1", default-features = false }
brotli = "$(awk -F'"' '/^brotli *=/ {print $2}' Cargo.toml)"
[profile.release]
opt-level = 3
lto = true
codegen-units = 1
TOML
cat > "$W/c/src/main.rs" <<'RS'
use std::io::Write;
use std::time::Instant;
fn rate(n: usize, t: Instant) -> f64 { n as f64 / t.elapsed().as_secs_f64() / 1048576.0 }
fn main() {
    let data = std::fs::read(std::env::args().nth(1).unwrap()).unwrap();
    let backend = std::env::args().nth(2).unwrap();
    for level in [1u32, 4, 6] {
        let t = Instant::now();
        let mut out = 0;
        for _ in 0..3 {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            for c in data.chunks(16384) { e.write_all(c).unwrap(); }
            out = e.finish().unwrap().len();
        }
        println!("gzip ({backend}) level {level}: {:.0} MiB/s, ratio {:.3}", rate(data.len() * 3, t), out as f64 / data.len() as f64);
    }
    if backend != "zlib-rs" { return; }
    for q in [1u32, 3, 4, 5] {
        let t = Instant::now();
        let mut e = brotli::CompressorWriter::new(Vec::new(), 16384, q, 20);
        for c in data.chunks(16384) { e.write_all(c).unwrap(); }
        e.flush().unwrap();
        let out = e.into_inner().len();
        println!("br quality {q} lgwin 20: {:.0} MiB/s, ratio {:.3}", rate(data.len(), t), out as f64 / data.len() as f64);
    }
}
RS
echo "== compression ($(date -u +%FT%TZ), corpus $(wc -c < "$W/corpus") bytes)"
(cd "$W/c" && cargo build -q --release --features miniz && ./target/release/cb "$W/corpus" miniz_oxide)
(cd "$W/c" && cargo build -q --release --features zrs && ./target/release/cb "$W/corpus" zlib-rs)

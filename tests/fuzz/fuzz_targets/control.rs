//! The control socket's protocol: any request line, against a fleet with programs,
//! groups and tags and a journal with lines, gets exactly one answer line that is a JSON
//! object with `ok`; nothing panics; a refused or failed request asks nothing of the
//! supervisor.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use mothership::control::{answer, Ctx};
use mothership::fleet::FleetView;
use mothership::output::journal::Journal;
use mothership::output::Stream;
use mothership::proto::json::{self, Value};

const MANIFEST: &str = r#"
[[fleet.web]]
name = "api"
command = "x"
tags = ["front"]
[[fleet.web]]
name = "worker"
command = "x"
depends_on = ["api"]
[[fleet.jobs]]
name = "once"
command = "x"
oneshot = true
"#;

fn fleet() -> &'static FleetView {
    static F: OnceLock<FleetView> = OnceLock::new();
    F.get_or_init(|| {
        let loaded = mothership::manifest::parse(
            Path::new("ship-manifest.toml"),
            Path::new("/nonexistent-fuzz-dir"),
            MANIFEST.to_string(),
            &|_| None,
        );
        let m = loaded.manifest.expect("the fuzz fleet's manifest");
        let mut v = FleetView::new(&m.programs, Instant::now());
        v.state = "running";
        v
    })
}

fuzz_target!(|data: &[u8]| {
    let mut j = Journal::new(["api".to_string(), "worker".to_string(), "once".to_string()]);
    for i in 0..50u64 {
        let stream = if i % 3 == 0 { Stream::Stderr } else { Stream::Stdout };
        j.push((i % 3) as usize, 1_000 + i, stream, format!("line {i} \u{1}\"").as_bytes());
    }
    for line in data.split(|&b| b == b'\n').take(8) {
        for full in [false, true] {
            let mut out = Vec::new();
            let mut ctx = Ctx {
                fleet: fleet(),
                usage: None,
                now: Instant::now(),
                outbox: &mut out,
                journal: Some(&j),
                extras: None,
                files: None,
                full,
            };
            let (a, _follow) = answer(line, &mut ctx);
            assert!(a.ends_with(b"\n"));
            assert_eq!(a.iter().filter(|&&b| b == b'\n').count(), 1);
            let v = json::parse(&a[..a.len() - 1]).expect("the answer is JSON");
            let ok = v.get("ok") == Some(&Value::Bool(true));
            assert!(ok || v.get("error").is_some());
            if !ok {
                assert!(out.is_empty(), "a refused request asks nothing");
            }
        }
    }
});

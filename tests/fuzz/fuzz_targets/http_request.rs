//! Request heads: whatever the bytes, the parser never panics, a head parsed in pieces
//! (resuming its scan) gives the same answer as the whole, and an accepted head is
//! self-consistent (its length within the input, its target in normal form).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mothership::proto::http::{parse_request, parse_request_resume, Limits};
use mothership::proto::target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let whole = parse_request(data, &limits);
    // The same bytes arriving in pieces of a size taken from the input.
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut scanned = 0;
    let mut end = 0;
    let pieces = loop {
        end = (end + step).min(data.len());
        let r = parse_request_resume(&data[..end], &limits, &mut scanned);
        assert!(scanned <= end);
        match r {
            Ok(None) if end < data.len() => continue,
            other => break other,
        }
    };
    match (&whole, &pieces) {
        (Ok(Some(a)), Ok(Some(b))) => {
            assert_eq!(a.head_len, b.head_len);
            assert_eq!(a.target, b.target);
            assert_eq!(a.body, b.body);
        }
        (Ok(None), Ok(None)) => {}
        (Err(a), Err(b)) => assert_eq!(a.status(), b.status()),
        // A whole head that parses may fail in pieces only where a prefix is an error by
        // itself (never): anything else is a disagreement.
        (a, b) => panic!("whole {a:?} vs pieces {b:?}"),
    }
    if let Ok(Some(r)) = whole {
        assert!(r.head_len <= data.len());
        if r.target != "*" {
            // Normal form is a fixed point.
            assert_eq!(target::normalize(&r.target).as_deref(), Ok(r.target.as_str()));
        }
        if let Some(h) = &r.host {
            assert!(h.is_empty() || target::valid_authority(h), "{h:?}");
        }
        let _ = mothership::proto::ja4h::ja4h(&r);
    }
});

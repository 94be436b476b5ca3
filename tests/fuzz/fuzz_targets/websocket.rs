//! WebSocket client frames: never a panic; read whole or a byte at a time, the same
//! events come out, or the same violation.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mothership::proto::ws::{Decoder, Event, Step, Violation};

fn events(data: &[u8], step: usize) -> (Vec<Event>, Option<Violation>) {
    let mut d = Decoder::default();
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    for piece in data.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match d.next(&buf, 4096) {
                Ok(Step::Need) => break,
                Ok(Step::Took(n)) => {
                    buf.drain(..n);
                }
                Ok(Step::Event(e, n)) => {
                    out.push(e);
                    buf.drain(..n);
                }
                Err(v) => return (out, Some(v)),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let whole = events(data, data.len());
    let bytes = events(data, 1);
    assert_eq!(whole, bytes);
    for e in &whole.0 {
        if let Event::Text(t) = e {
            assert!(std::str::from_utf8(t).is_ok());
        }
    }
});

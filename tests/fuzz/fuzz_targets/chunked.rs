//! Chunked bodies: never a panic or a hang; feeding in pieces consumes the same bytes and
//! yields the same payload as feeding the whole; what `forward` passes on decodes to the
//! same payload and is itself a complete chunked body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mothership::proto::chunked::ChunkedDecoder;

fn decode(data: &[u8], step: usize) -> (Result<usize, ()>, Vec<u8>, bool) {
    let mut d = ChunkedDecoder::default();
    let mut payload = Vec::new();
    let mut used = 0;
    for piece in data.chunks(step.max(1)) {
        match d.feed(piece, |b| payload.extend_from_slice(b)) {
            Ok(n) => {
                used += n;
                if n < piece.len() {
                    break;
                }
            }
            Err(_) => return (Err(()), payload, false),
        }
    }
    (Ok(used), payload, d.is_done())
}

fuzz_target!(|data: &[u8]| {
    let step = usize::from(data.first().copied().unwrap_or(1));
    let (used_a, pay_a, done_a) = decode(data, data.len().max(1));
    let (used_b, pay_b, done_b) = decode(data, step);
    assert_eq!(used_a.is_ok(), used_b.is_ok());
    if let (Ok(a), Ok(b)) = (used_a, used_b) {
        assert_eq!((a, done_a), (b, done_b));
        assert_eq!(pay_a, pay_b);
    }
    let mut d = ChunkedDecoder::default();
    let mut fwd = Vec::new();
    if let Ok(n) = d.forward(data, &mut fwd) {
        assert!(fwd.len() <= n);
        if d.is_done() {
            let (used, payload, done) = decode(&fwd, fwd.len().max(1));
            assert_eq!(used, Ok(fwd.len()), "what is forwarded is one whole body");
            assert!(done);
            assert_eq!(payload, pay_a);
        }
    }
});

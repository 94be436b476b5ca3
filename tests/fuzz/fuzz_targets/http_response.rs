//! Response heads: never a panic, the same answer whole and in pieces.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mothership::proto::http::{parse_response, parse_response_resume, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let (method, data) = match data.split_first() {
        Some((m, rest)) if m & 1 == 1 => ("HEAD", rest),
        Some((_, rest)) => ("GET", rest),
        None => ("GET", data),
    };
    let whole = parse_response(data, &limits, method);
    let mut scanned = 0;
    let mut pieces = Ok(None);
    for end in 1..=data.len() {
        pieces = parse_response_resume(&data[..end], &limits, method, &mut scanned);
        if !matches!(pieces, Ok(None)) {
            break;
        }
    }
    match (&whole, &pieces) {
        (Ok(Some(a)), Ok(Some(b))) => {
            assert_eq!((a.head_len, a.body, a.keep_alive), (b.head_len, b.body, b.keep_alive));
            assert!(a.head_len <= data.len());
        }
        (Ok(None), Ok(None)) => {}
        (Err(_), Err(_)) => {}
        (a, b) => panic!("whole {a:?} vs pieces {b:?}"),
    }
});

//! PROXY protocol v1/v2 headers: never a panic, a header length within the input, and the
//! same decision on a longer input that starts with the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mothership::proto::proxy_protocol::{parse, Outcome};

fuzz_target!(|data: &[u8]| {
    let r = parse(data);
    if let Ok(Some(Outcome::Header { len, .. })) = r {
        assert!(len > 0 && len <= data.len());
        let mut more = data.to_vec();
        more.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(parse(&more), r);
    }
});

//! What a WASM module reads and asks for, without the interpreter: the request and
//! response JSON of any head the parser takes is valid JSON that holds its method and
//! status; what `set_block_with_headers`, `set_path` and the header functions accept never
//! panics, and what they let through can be written into a head safely (no line break, a
//! target already in normal form).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mothership::payload::{self, Edit};
use mothership::proto::http::{self, Limits};
use mothership::proto::{json, target};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(Some(req)) = http::parse_request(data, &limits) {
        let j = payload::request_json(&req, "192.0.2.1".parse().ok());
        let v = json::parse(&j).expect("the request JSON parses");
        assert_eq!(v.get("method").and_then(json::Value::as_str), Some(req.method.as_str()));
    }
    if let Ok(Some(resp)) = http::parse_response(data, &limits, "GET") {
        let j = payload::response_json(&resp);
        let v = json::parse(&j).expect("the response JSON parses");
        assert_eq!(v.get("status").and_then(json::Value::as_u64), Some(u64::from(resp.status)));
    }
    if let Ok(headers) = payload::block_headers(data) {
        for (n, v) in headers {
            assert!(!n.is_empty() && !n.contains(['\r', '\n', ':', ' ']));
            assert!(!v.contains(&b'\r') && !v.contains(&b'\n'));
        }
    }
    let (a, b) = data.split_at(data.len() / 2);
    let query = std::str::from_utf8(b).ok();
    if let Some(Edit::Target(t)) = payload::target_edit(a, query) {
        assert!(t.starts_with('/') && t.len() <= 8192);
        assert!(t.bytes().all(|c| (0x21..0x7f).contains(&c)), "{t:?}");
        assert_eq!(target::normalize(&t).ok().as_deref(), Some(t.as_str()), "normal form");
    }
    for request in [true, false] {
        match payload::header_edit(a, Some(b), request) {
            Some(Edit::SetHeader(n, v)) => {
                assert!(!v.contains(&b'\r') && !v.contains(&b'\n') && !v.contains(&0));
                assert!(!matches!(
                    n.as_str(),
                    "content-length" | "transfer-encoding" | "connection"
                ));
            }
            Some(other) => panic!("{other:?}"),
            None => {}
        }
    }
});

//! The HTTP exchange driven with two byte streams: requests from a client and responses
//! from a backend. Whatever the input, what mothership would send on (the request head it
//! writes upstream and the body as it forwards it; the response head it writes to the
//! client and its body) must parse strictly again and frame exactly the same body, with
//! nothing after it that could be taken for another message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mothership::manifest::BindAddr;
use mothership::proto::chunked::ChunkedDecoder;
use mothership::proto::http::{parse_request, parse_response, Body, Limits};
use mothership::proxy::{client_head, upstream_head, ClientSide};

/// The body that follows a head, as a proxy forwards it: `(bytes forwarded, payload,
/// bytes consumed)`, or None when it is incomplete or invalid.
fn body(kind: Body, rest: &[u8]) -> Option<(Vec<u8>, Vec<u8>, usize)> {
    match kind {
        Body::None => Some((Vec::new(), Vec::new(), 0)),
        Body::Length(n) => {
            let n = usize::try_from(n).ok()?;
            let b = rest.get(..n)?;
            Some((b.to_vec(), b.to_vec(), n))
        }
        Body::Chunked => {
            let mut d = ChunkedDecoder::default();
            let mut fwd = Vec::new();
            let used = d.forward(rest, &mut fwd).ok()?;
            if !d.is_done() {
                return None;
            }
            let mut payload = Vec::new();
            let mut d2 = ChunkedDecoder::default();
            d2.feed(&rest[..used], |b| payload.extend_from_slice(b)).ok()?;
            Some((fwd, payload, used))
        }
        Body::UntilClose => Some((rest.to_vec(), rest.to_vec(), rest.len())),
    }
}

/// Decodes a body framed by `kind` from `bytes`, which must hold exactly that body.
fn decode_exact(kind: Body, bytes: &[u8]) -> Vec<u8> {
    match kind {
        Body::None => {
            assert!(bytes.is_empty(), "bytes after a message without a body");
            Vec::new()
        }
        Body::Length(n) => {
            assert_eq!(bytes.len() as u64, n, "Content-Length does not frame the body");
            bytes.to_vec()
        }
        Body::Chunked => {
            let mut d = ChunkedDecoder::default();
            let mut payload = Vec::new();
            let used = d
                .feed(bytes, |b| payload.extend_from_slice(b))
                .expect("forwarded chunks parse");
            assert!(d.is_done(), "forwarded chunks end");
            assert_eq!(used, bytes.len(), "bytes after the forwarded chunks");
            payload
        }
        Body::UntilClose => bytes.to_vec(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let at = (usize::from(split) * data.len()) / 255;
    let (requests, responses) = data.split_at(at.min(data.len()));
    let limits = Limits::default();
    let backend = BindAddr::Tcp(([127, 0, 0, 1], 9).into());

    let mut a = requests;
    while let Ok(Some(req)) = parse_request(a, &limits) {
        let Some((fwd, payload, used)) = body(req.body, &a[req.head_len..]) else {
            break;
        };
        let mut up = upstream_head(&req, &req.target, "203.0.113.9:5555", &backend, None);
        up.extend_from_slice(&fwd);
        let again = match parse_request(&up, &limits) {
            Ok(Some(r)) => r,
            other => panic!("the upstream request does not parse: {other:?}\n{}", String::from_utf8_lossy(&up)),
        };
        assert_eq!(again.method, req.method);
        assert_eq!(again.target, req.target);
        assert_eq!(again.minor, 1);
        assert_eq!(again.body, req.body);
        assert_eq!(again.upgrade, req.upgrade);
        assert_eq!(decode_exact(again.body, &up[again.head_len..]), payload);
        a = &a[req.head_len + used..];
    }

    let mut b = responses;
    while let Ok(Some(r)) = parse_response(b, &limits, "GET") {
        if (100..200).contains(&r.status) {
            b = &b[r.head_len..];
            continue;
        }
        let Some((fwd, payload, used)) = body(r.body, &b[r.head_len..]) else {
            break;
        };
        let side = ClientSide {
            upgrade: false,
            client_minor: 1,
        };
        let keep = r.keep_alive && r.body != Body::UntilClose;
        let mut out = client_head(&r, side, keep, r.body == Body::Chunked, false, None);
        out.extend_from_slice(&fwd);
        let again = match parse_response(&out, &limits, "GET") {
            Ok(Some(x)) => x,
            other => panic!("the client response does not parse: {other:?}\n{}", String::from_utf8_lossy(&out)),
        };
        assert_eq!(again.status, r.status);
        assert_eq!(again.body, r.body);
        assert_eq!(decode_exact(again.body, &out[again.head_len..]), payload);
        if !keep {
            break;
        }
        b = &b[r.head_len + used..];
    }
});

//! Docking frames: never a panic or an allocation the input does not pay for; a stream
//! read whole or a byte at a time yields the same frames; every frame that decodes
//! encodes back to a payload that decodes the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mothership::proto::dock::{self, kind};

/// The frames of `data` read as a reader would: buffering what came, taking whole frames.
fn frames(data: &[u8], step: usize) -> (Vec<(u8, Vec<u8>)>, bool) {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for piece in data.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match dock::next_frame(&buf, 4096) {
                Ok(Some((f, used))) => {
                    out.push((f.kind, f.payload.to_vec()));
                    buf.drain(..used);
                }
                Ok(None) => break,
                Err(_) => return (out, false),
            }
        }
        assert!(buf.len() < dock::HEADER + 4096, "buffered past the bound");
    }
    (out, true)
}

fuzz_target!(|data: &[u8]| {
    let (whole, ok_whole) = frames(data, data.len());
    let (bytes, ok_bytes) = frames(data, 1);
    assert_eq!(whole, bytes);
    assert_eq!(ok_whole, ok_bytes);
    for (k, payload) in &whole {
        let mut wire = Vec::new();
        match *k {
            kind::CARGO => {
                if let Ok(c) = dock::decode_cargo(payload) {
                    dock::encode_cargo(3, &c, &mut wire);
                    assert_eq!(dock::decode_cargo(&wire[dock::HEADER..]), Ok(c));
                }
                // A version-1 link: the data whole, back as it came.
                if let Ok(c) = dock::decode_cargo_v1(payload) {
                    wire.clear();
                    dock::encode_cargo(1, &c, &mut wire);
                    assert_eq!(&wire[dock::HEADER..], &payload[..]);
                }
            }
            kind::HAIL => {
                if let Ok(h) = dock::decode_hail(payload) {
                    dock::encode_hail(&h, &mut wire);
                    assert_eq!(dock::decode_hail(&wire[dock::HEADER..]), Ok(h));
                }
            }
            kind::HAUL => {
                if let Ok(h) = dock::decode_haul(payload) {
                    dock::encode_haul(&h, &mut wire);
                    assert_eq!(dock::decode_haul(&wire[dock::HEADER..]), Ok(h));
                }
            }
            kind::REPLY => {
                if let Ok(r) = dock::decode_reply(payload) {
                    dock::encode_reply(&r, &mut wire);
                    assert_eq!(dock::decode_reply(&wire[dock::HEADER..]), Ok(r));
                }
            }
            kind::READY => {
                if let Ok(id) = dock::decode_ready(payload) {
                    dock::encode_ready(id, &mut wire);
                    assert_eq!(dock::decode_ready(&wire[dock::HEADER..]), Ok(id));
                }
            }
            kind::DOCK => {
                let _ = dock::decode_dock(payload);
            }
            kind::BROADCAST => {
                if let Ok(b) = dock::decode_broadcast(payload) {
                    dock::encode_broadcast(&b, &mut wire);
                    assert_eq!(dock::decode_broadcast(&wire[dock::HEADER..]), Ok(b));
                }
            }
            kind::DISEMBARK => {
                if let Ok(d) = dock::decode_disembark(payload) {
                    dock::encode_disembark(&d, &mut wire);
                    assert_eq!(dock::decode_disembark(&wire[dock::HEADER..]), Ok(d));
                }
            }
            _ => {}
        }
    }
});

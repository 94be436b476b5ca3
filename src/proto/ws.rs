//! WebSocket (RFC 6455), the server's side, without IO: the opening handshake's checks and
//! answer key, an incremental frame decoder that assembles messages (client frames must
//! be masked; control frames may come between fragments; text is checked to be UTF-8),
//! and the encoder of the server's unmasked frames. Errors carry the close code to send.

use sha1::{Digest, Sha1};

use super::http::{has_token, header_list, RequestHead};

/// The GUID of RFC 6455 section 1.3.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Close codes used here.
pub mod code {
    pub const NORMAL: u16 = 1000;
    pub const PROTOCOL: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(GUID.as_bytes());
    base64(&h.finalize())
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Length of what a base64 string decodes to, if it is well formed.
fn base64_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.len() % 4 != 0 {
        return None;
    }
    let pad = b.iter().rev().take_while(|&&c| c == b'=').count();
    let ok = b[..b.len() - pad]
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/');
    (ok && pad <= 2).then(|| b.len() / 4 * 3 - pad)
}

/// What a valid opening handshake asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub accept: String,
    /// `Sec-WebSocket-Protocol` values offered, in order.
    pub protocols: Vec<String>,
    /// `Sec-WebSocket-Extensions` as sent (joined).
    pub extensions: String,
}

/// Why a handshake is refused: the status to answer and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub why: &'static str,
}

/// Checks an opening handshake (RFC 6455 section 4.2.1).
pub fn handshake(req: &RequestHead) -> Result<Handshake, Refusal> {
    let no = |status, why| Err(Refusal { status, why });
    if req.method != "GET" || req.minor < 1 {
        return no(400, "a WebSocket handshake is a GET over HTTP/1.1");
    }
    let h = &req.headers;
    if !has_token(h, "upgrade", "websocket") || !has_token(h, "connection", "upgrade") {
        return no(400, "not an upgrade to websocket");
    }
    let version = req.header("sec-websocket-version").map(|h| h.value_str());
    if version.map(str::trim) != Some("13") {
        return no(426, "Sec-WebSocket-Version must be 13");
    }
    let Some(key) = req.header("sec-websocket-key").map(|h| h.value_str()) else {
        return no(400, "no Sec-WebSocket-Key");
    };
    if base64_len(key.trim()) != Some(16) {
        return no(400, "Sec-WebSocket-Key is not 16 bytes in base64");
    }
    Ok(Handshake {
        accept: accept_key(key),
        // Subprotocol names are compared as sent (they are case-sensitive).
        protocols: header_list(h, "sec-websocket-protocol"),
        extensions: header_list(h, "sec-websocket-extensions").join(", "),
    })
}

/// The 101 answer to a handshake; `protocol`: the subprotocol chosen, if any.
pub fn switching_protocols(h: &Handshake, protocol: Option<&str>) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n",
        h.accept
    );
    if let Some(p) = protocol {
        out.push_str("sec-websocket-protocol: ");
        out.push_str(p);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A message or control frame from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The client closes (code 1005 when it gave none).
    Close {
        code: u16,
        reason: Vec<u8>,
    },
}

/// A violation: close the connection with `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    pub why: &'static str,
}

fn violation<T>(code: u16, why: &'static str) -> Result<T, Violation> {
    Err(Violation { code, why })
}

/// What the decoder found at the front of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No whole frame yet: nothing taken.
    Need,
    /// A fragment of a message was taken (this many bytes); no event yet.
    Took(usize),
    /// An event, and the bytes it took.
    Event(Event, usize),
}

/// Assembles client frames into messages.
#[derive(Debug, Default)]
pub struct Decoder {
    /// The message being assembled from fragments: text or not, and its bytes.
    partial: Option<(bool, Vec<u8>)>,
}

impl Decoder {
    /// Reads the frame at the front of `buf`. `max`: the largest message.
    pub fn next(&mut self, buf: &[u8], max: usize) -> Result<Step, Violation> {
        let Some((f, used)) = frame(buf, max)? else {
            return Ok(Step::Need);
        };
        let event = match f.opcode {
            0x8 => {
                let (c, reason) = match f.payload.len() {
                    0 => (1005, Vec::new()),
                    1 => return violation(code::PROTOCOL, "close payload of one byte"),
                    _ => {
                        let c = u16::from_be_bytes([f.payload[0], f.payload[1]]);
                        if !valid_close_code(c) {
                            return violation(code::PROTOCOL, "invalid close code");
                        }
                        let reason = f.payload[2..].to_vec();
                        if std::str::from_utf8(&reason).is_err() {
                            return violation(code::INVALID_DATA, "close reason not UTF-8");
                        }
                        (c, reason)
                    }
                };
                Event::Close { code: c, reason }
            }
            0x9 => Event::Ping(f.payload),
            0xA => Event::Pong(f.payload),
            0x0 => {
                let Some((text, mut data)) = self.partial.take() else {
                    return violation(code::PROTOCOL, "continuation without a message");
                };
                if data.len() + f.payload.len() > max {
                    return violation(code::TOO_BIG, "message too big");
                }
                data.extend_from_slice(&f.payload);
                if !f.fin {
                    self.partial = Some((text, data));
                    return Ok(Step::Took(used));
                }
                message(text, data)?
            }
            0x1 | 0x2 => {
                if self.partial.is_some() {
                    return violation(code::PROTOCOL, "a new message inside a fragmented one");
                }
                let text = f.opcode == 0x1;
                if !f.fin {
                    self.partial = Some((text, f.payload));
                    return Ok(Step::Took(used));
                }
                message(text, f.payload)?
            }
            _ => return violation(code::PROTOCOL, "reserved opcode"),
        };
        Ok(Step::Event(event, used))
    }
}

fn message(text: bool, data: Vec<u8>) -> Result<Event, Violation> {
    if !text {
        return Ok(Event::Binary(data));
    }
    if std::str::from_utf8(&data).is_err() {
        return violation(code::INVALID_DATA, "text message not UTF-8");
    }
    Ok(Event::Text(data))
}

/// Close codes a peer may send (RFC 6455 section 7.4).
fn valid_close_code(c: u16) -> bool {
    matches!(c, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

struct Frame {
    fin: bool,
    opcode: u8,
    /// Unmasked.
    payload: Vec<u8>,
}

/// One whole client frame at the front of `buf` (unmasked), and its length in bytes.
fn frame(buf: &[u8], max: usize) -> Result<Option<(Frame, usize)>, Violation> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return violation(code::PROTOCOL, "reserved bits set");
    }
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    if b1 & 0x80 == 0 {
        return violation(code::PROTOCOL, "client frame not masked");
    }
    let control = opcode & 0x8 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            None => return Ok(None),
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
        },
        127 => match buf.get(2..10) {
            None => return Ok(None),
            Some(b) => {
                let mut a = [0; 8];
                a.copy_from_slice(b);
                (u64::from_be_bytes(a), 10)
            }
        },
        n => (u64::from(n), 2),
    };
    if control && (len > 125 || !fin) {
        return violation(code::PROTOCOL, "control frame fragmented or over 125 bytes");
    }
    if len > max as u64 {
        return violation(code::TOO_BIG, "message too big");
    }
    let len = len as usize;
    let Some(mask) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let mask = [mask[0], mask[1], mask[2], mask[3]];
    at += 4;
    let Some(data) = buf.get(at..at + len) else {
        return Ok(None);
    };
    let payload = data
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Ok(Some((
        Frame {
            fin,
            opcode,
            payload,
        },
        at + len,
    )))
}

/// The whole length of the client frame at the front of `buf` (header, mask and
/// payload), once its header is in: how far a reader must read to decode it.
pub fn frame_len(buf: &[u8]) -> Option<u64> {
    let b1 = *buf.get(1)?;
    let (len, at) = match b1 & 0x7f {
        126 => {
            let b = buf.get(2..4)?;
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let mut a = [0; 8];
            a.copy_from_slice(buf.get(2..10)?);
            (u64::from_be_bytes(a), 10)
        }
        n => (u64::from(n), 2),
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    Some(len.saturating_add(at + mask))
}

/// The header of a whole server frame (unmasked) with `len` payload bytes: opcode 0x1
/// text, 0x2 binary, 0x8 close, 0x9 ping, 0xA pong. Returns the header and its length.
pub fn head(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut h = [0; 10];
    h[0] = 0x80 | (opcode & 0x0f);
    match len {
        0..=125 => {
            h[1] = len as u8;
            (h, 2)
        }
        126..=65535 => {
            h[1] = 126;
            h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            (h, 4)
        }
        _ => {
            h[1] = 127;
            h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            (h, 10)
        }
    }
}

/// Appends a whole server frame (see [`head`]).
pub fn encode(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    let (h, n) = head(opcode, payload.len());
    out.extend_from_slice(&h[..n]);
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and `reason` (cut to fit a control frame).
pub fn encode_close(c: u16, reason: &str, out: &mut Vec<u8>) {
    let mut r = reason;
    while r.len() > 123 {
        let mut cut = 123;
        while !r.is_char_boundary(cut) {
            cut -= 1;
        }
        r = &r[..cut];
    }
    let mut p = c.to_be_bytes().to_vec();
    p.extend_from_slice(r.as_bytes());
    encode(0x8, &p, out);
}

#[cfg(test)]
mod tests {
    use super::super::http::{parse_request, Limits};
    use super::*;

    /// A client frame: masked with a fixed key.
    fn client(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn all(bytes: &[u8], max: usize) -> Result<Vec<Event>, Violation> {
        let mut d = Decoder::default();
        let mut events = Vec::new();
        let mut at = 0;
        loop {
            match d.next(&bytes[at..], max)? {
                Step::Need => return Ok(events),
                Step::Took(n) => at += n,
                Step::Event(e, n) => {
                    events.push(e);
                    at += n;
                }
            }
        }
    }

    #[test]
    fn the_accept_key_of_the_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64_len("dGhlIHNhbXBsZSBub25jZQ=="), Some(16));
    }

    #[test]
    fn handshakes_accepted_and_refused() {
        let req = |extra: &str| {
            let text = format!("GET /cable HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n{extra}\r\n");
            parse_request(text.as_bytes(), &Limits::default())
                .expect("parses")
                .expect("whole")
        };
        let ok = req("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: actioncable-v1-json, actioncable-unsupported\r\n");
        let h = handshake(&ok).expect("valid");
        assert_eq!(h.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(
            h.protocols,
            ["actioncable-v1-json", "actioncable-unsupported"]
        );
        let answer =
            String::from_utf8(switching_protocols(&h, Some("actioncable-v1-json"))).expect("text");
        assert!(answer.contains("sec-websocket-protocol: actioncable-v1-json\r\n"));
        assert_eq!(
            handshake(&req(
                "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            ))
            .map(|_| ()),
            Err(Refusal {
                status: 426,
                why: "Sec-WebSocket-Version must be 13"
            })
        );
        assert!(handshake(&req(
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=\r\n"
        ))
        .is_err());
        assert!(handshake(&req("Sec-WebSocket-Version: 13\r\n")).is_err());
    }

    #[test]
    fn frames_of_every_length_and_fragments_around_control_frames() {
        for n in [0usize, 125, 126, 127, 65535, 65536] {
            let data = vec![b'a'; n];
            let wire = client(true, 0x2, &data);
            assert_eq!(
                all(&wire, 1 << 20),
                Ok(vec![Event::Binary(data.clone())]),
                "{n}"
            );
            // Byte by byte: nothing until the frame is whole.
            let mut d = Decoder::default();
            if n <= 126 {
                for cut in 0..wire.len() {
                    assert_eq!(d.next(&wire[..cut], 1 << 20), Ok(Step::Need));
                }
            }
        }
        let mut wire = client(false, 0x1, "hé".as_bytes());
        wire.extend(client(true, 0x9, b"p"));
        wire.extend(client(false, 0x0, "llo ".as_bytes()));
        wire.extend(client(true, 0x0, "wörld".as_bytes()));
        assert_eq!(
            all(&wire, 1024),
            Ok(vec![
                Event::Ping(b"p".to_vec()),
                Event::Text("héllo wörld".as_bytes().to_vec())
            ])
        );
    }

    #[test]
    fn violations_carry_their_close_codes() {
        let code_of = |bytes: &[u8]| all(bytes, 1024).map_err(|v| v.code).err();
        assert_eq!(
            code_of(&client(true, 0x1, &[0xff, 0xfe])),
            Some(code::INVALID_DATA)
        );
        assert_eq!(
            code_of(&[0x81, 0x01, b'a']),
            Some(code::PROTOCOL),
            "unmasked"
        );
        assert_eq!(
            code_of(&[0xc1, 0x80, 0, 0, 0, 0]),
            Some(code::PROTOCOL),
            "rsv1"
        );
        assert_eq!(
            code_of(&client(true, 0x3, b"")),
            Some(code::PROTOCOL),
            "opcode"
        );
        assert_eq!(
            code_of(&client(false, 0x9, b"")),
            Some(code::PROTOCOL),
            "fragmented ping"
        );
        assert_eq!(
            code_of(&client(true, 0x9, &[0; 126])),
            Some(code::PROTOCOL),
            "big ping"
        );
        assert_eq!(
            code_of(&client(true, 0x0, b"x")),
            Some(code::PROTOCOL),
            "stray continuation"
        );
        assert_eq!(
            code_of(&client(true, 0x8, &[0x03, 0xe4])),
            Some(code::PROTOCOL),
            "close 1004"
        );
        assert_eq!(code_of(&client(true, 0x8, &[0x03])), Some(code::PROTOCOL));
        assert_eq!(code_of(&client(true, 0x2, &[0; 1025])), Some(code::TOO_BIG));
        let mut two = client(false, 0x1, b"a");
        two.extend(client(true, 0x1, b"b"));
        assert_eq!(
            code_of(&two),
            Some(code::PROTOCOL),
            "a message inside a message"
        );
        assert_eq!(
            all(&client(true, 0x8, &[0x03, 0xe8, b'o', b'k']), 1024),
            Ok(vec![Event::Close {
                code: 1000,
                reason: b"ok".to_vec()
            }])
        );
        assert_eq!(
            all(&client(true, 0x8, b""), 1024),
            Ok(vec![Event::Close {
                code: 1005,
                reason: Vec::new()
            }])
        );
    }

    #[test]
    fn server_frames_are_unmasked_and_close_reasons_fit() {
        let mut out = Vec::new();
        encode(0x1, b"hi", &mut out);
        assert_eq!(out, [0x81, 2, b'h', b'i']);
        let mut out = Vec::new();
        encode(0x2, &[0; 300], &mut out);
        assert_eq!(&out[..4], &[0x82, 126, 1, 44]);
        let mut out = Vec::new();
        encode_close(1001, &"é".repeat(100), &mut out);
        assert!(out.len() <= 2 + 125, "{}", out.len());
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }
}

//! The docking protocol's framing and its binary frames (COMPAT.md sections 4 and 4b),
//! without IO: every frame is one type byte, a big-endian u32 payload length and the
//! payload. [`next_frame`] finds the next whole frame at the front of a buffer (so a
//! reader feeds it what it has, however split); an unknown type or a length over the
//! maximum is an error as soon as the header is read, so that nothing unbounded is ever
//! buffered. The JSON frames (Dock, Moored, Boarding, Disembark) are framed here and
//! their payloads read elsewhere; Cargo and the HTTP frames of version 3 (Hail, Haul,
//! Reply, Ready) are decoded and encoded here, each checked against its payload's length
//! before anything is allocated.

use std::fmt;

use super::json::{self, Value};

/// Bytes of a frame header.
pub const HEADER: usize = 5;
/// The largest payload by default: the published codec's bound.
pub const DEFAULT_MAX_PAYLOAD: usize = 16 << 20;
/// The most data one Haul frame carries.
pub const MAX_HAUL: usize = 256 << 10;
/// What version 3 puts after a Cargo's conn_id, before the kind byte.
pub const CARGO_MARKER: &[u8; 4] = b"MSWS";

/// Frame types.
pub mod kind {
    pub const DOCK: u8 = 0x01;
    pub const MOORED: u8 = 0x02;
    pub const BOARDING: u8 = 0x10;
    pub const DISEMBARK: u8 = 0x11;
    pub const CARGO: u8 = 0x12;
    pub const HAIL: u8 = 0x20;
    pub const HAUL: u8 = 0x21;
    pub const REPLY: u8 = 0x22;
    pub const READY: u8 = 0x23;
    /// Mothership's own extensions are numbered from 0x30 (upstream uses none of them).
    /// Broadcast, bay -> mothership: one message for many clients. Only a bay that said
    /// `"broadcast": true` in its Dock may send it; from any other it is a protocol error.
    pub const BROADCAST: u8 = 0x30;

    /// Every type the protocol knows.
    pub const ALL: [u8; 10] = [
        DOCK, MOORED, BOARDING, DISEMBARK, CARGO, HAIL, HAUL, REPLY, READY, BROADCAST,
    ];
}

/// A protocol error: the docking link cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    UnknownType(u8),
    TooLarge {
        len: usize,
        max: usize,
    },
    /// A payload that does not have the shape of its type.
    Malformed {
        kind: u8,
        why: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownType(t) => write!(f, "unknown docking frame type 0x{t:02x}"),
            Error::TooLarge { len, max } => {
                write!(f, "docking frame of {len} bytes, over the {max}-byte bound")
            }
            Error::Malformed { kind, why } => {
                write!(f, "malformed docking frame 0x{kind:02x}: {why}")
            }
        }
    }
}

/// One whole frame, borrowed from the buffer it was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub payload: &'a [u8],
}

/// The next whole frame at the front of `buf` and the bytes it takes, `None` while more
/// is needed. `max`: the largest payload accepted.
pub fn next_frame(buf: &[u8], max: usize) -> Result<Option<(Frame<'_>, usize)>, Error> {
    let Some(&t) = buf.first() else {
        return Ok(None);
    };
    if !kind::ALL.contains(&t) {
        return Err(Error::UnknownType(t));
    }
    let Some(len) = buf.get(1..HEADER).map(be32) else {
        return Ok(None);
    };
    let len = len as usize;
    if len > max {
        return Err(Error::TooLarge { len, max });
    }
    let Some(payload) = buf.get(HEADER..HEADER + len) else {
        return Ok(None);
    };
    Ok(Some((Frame { kind: t, payload }, HEADER + len)))
}

/// Appends a frame of type `t` with `payload`.
pub fn encode(t: u8, payload: &[u8], out: &mut Vec<u8>) {
    let at = begin(t, out);
    out.extend_from_slice(payload);
    finish(out, at);
}

/// Starts a frame whose payload is appended next; [`finish`] writes its length.
fn begin(t: u8, out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.push(t);
    out.extend_from_slice(&[0; 4]);
    at
}

fn finish(out: &mut [u8], at: usize) {
    let len = (out.len() - at - HEADER) as u32;
    out[at + 1..at + HEADER].copy_from_slice(&len.to_be_bytes());
}

fn be32(b: &[u8]) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

/// Reads a payload front to back; every read checks what is left.
struct Reader<'a> {
    rest: &'a [u8],
    kind: u8,
}

impl<'a> Reader<'a> {
    fn bad(&self, why: &'static str) -> Error {
        Error::Malformed {
            kind: self.kind,
            why,
        }
    }

    fn take(&mut self, n: usize, why: &'static str) -> Result<&'a [u8], Error> {
        if self.rest.len() < n {
            return Err(self.bad(why));
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Ok(a)
    }

    fn u8(&mut self, why: &'static str) -> Result<u8, Error> {
        Ok(self.take(1, why)?[0])
    }

    fn u16(&mut self, why: &'static str) -> Result<u16, Error> {
        let b = self.take(2, why)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, why: &'static str) -> Result<u32, Error> {
        Ok(be32(self.take(4, why)?))
    }

    fn u64(&mut self, why: &'static str) -> Result<u64, Error> {
        let b = self.take(8, why)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// u32 length, then that many bytes.
    fn bytes(&mut self, why: &'static str) -> Result<&'a [u8], Error> {
        let n = self.u32(why)? as usize;
        self.take(n, why)
    }

    /// A u32 count of name/value pairs, each two length-prefixed byte strings. The
    /// count is checked against what is left (8 bytes a pair at least) before any room
    /// is reserved.
    fn pairs(&mut self, why: &'static str) -> Result<Pairs, Error> {
        let n = self.u32(why)? as usize;
        if n > self.rest.len() / 8 {
            return Err(self.bad(why));
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.bytes(why)?.to_vec();
            let value = self.bytes(why)?.to_vec();
            v.push((name, value));
        }
        Ok(v)
    }

    fn end(&self, why: &'static str) -> Result<(), Error> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.bad(why))
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_pairs(out: &mut Vec<u8>, pairs: &Pairs) {
    out.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
    for (n, v) in pairs {
        put_bytes(out, n);
        put_bytes(out, v);
    }
}

/// Name/value pairs (CGI meta-variables, headers), as raw bytes, in order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A WebSocket message's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Text,
    Binary,
}

/// A Cargo frame: one message for or from one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cargo<'a> {
    pub conn_id: u32,
    pub kind: MessageKind,
    pub data: &'a [u8],
}

/// Decodes a Cargo payload of either shape: version 3's (conn_id, `MSWS`, kind byte,
/// data) or version 1's (conn_id, data), whose data is text when it is valid UTF-8.
pub fn decode_cargo(payload: &[u8]) -> Result<Cargo<'_>, Error> {
    let mut r = Reader {
        rest: payload,
        kind: kind::CARGO,
    };
    let conn_id = r.u32("no conn_id")?;
    if r.rest.len() >= 5 && r.rest.starts_with(CARGO_MARKER) {
        let k = match r.rest[4] {
            0x01 => MessageKind::Text,
            0x02 => MessageKind::Binary,
            _ => return Err(r.bad("unknown message kind")),
        };
        return Ok(Cargo {
            conn_id,
            kind: k,
            data: &r.rest[5..],
        });
    }
    decode_cargo_v1(payload)
}

/// Decodes a Cargo payload of version 1 (conn_id, data) from a bay that docked with it:
/// the data is taken whole, whatever its first bytes (it may start with `MSWS`), and is
/// text when it is valid UTF-8.
pub fn decode_cargo_v1(payload: &[u8]) -> Result<Cargo<'_>, Error> {
    let mut r = Reader {
        rest: payload,
        kind: kind::CARGO,
    };
    let conn_id = r.u32("no conn_id")?;
    let k = if std::str::from_utf8(r.rest).is_ok() {
        MessageKind::Text
    } else {
        MessageKind::Binary
    };
    Ok(Cargo {
        conn_id,
        kind: k,
        data: r.rest,
    })
}

/// Appends a Cargo frame in the shape of docking `version` (3 and later carry the kind;
/// version 1 only the data, which its bay reads as text when it is valid UTF-8).
pub fn encode_cargo(version: u32, c: &Cargo<'_>, out: &mut Vec<u8>) {
    let at = begin(kind::CARGO, out);
    out.extend_from_slice(&c.conn_id.to_be_bytes());
    if version >= 3 {
        out.extend_from_slice(CARGO_MARKER);
        out.push(match c.kind {
            MessageKind::Text => 0x01,
            MessageKind::Binary => 0x02,
        });
    }
    out.extend_from_slice(c.data);
    finish(out, at);
}

/// Hail: an HTTP request for a bay, as CGI-style meta-variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hail {
    pub request_id: u32,
    pub content_length: u64,
    pub params: Pairs,
}

pub fn decode_hail(payload: &[u8]) -> Result<Hail, Error> {
    let mut r = Reader {
        rest: payload,
        kind: kind::HAIL,
    };
    let h = Hail {
        request_id: r.u32("no request id")?,
        content_length: r.u64("no content length")?,
        params: r.pairs("bad parameters")?,
    };
    r.end("bytes after the parameters")?;
    Ok(h)
}

pub fn encode_hail(h: &Hail, out: &mut Vec<u8>) {
    let at = begin(kind::HAIL, out);
    out.extend_from_slice(&h.request_id.to_be_bytes());
    out.extend_from_slice(&h.content_length.to_be_bytes());
    put_pairs(out, &h.params);
    finish(out, at);
}

/// Haul: a piece of a body (or of a tunnel), either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Haul<'a> {
    pub request_id: u32,
    /// The last piece.
    pub last: bool,
    pub data: &'a [u8],
}

pub fn decode_haul(payload: &[u8]) -> Result<Haul<'_>, Error> {
    let mut r = Reader {
        rest: payload,
        kind: kind::HAUL,
    };
    let request_id = r.u32("no request id")?;
    let flags = r.u8("no flags")?;
    if flags & !0x01 != 0 {
        return Err(r.bad("unknown flags"));
    }
    if r.rest.len() > MAX_HAUL {
        return Err(r.bad("more than 256 KiB of data"));
    }
    Ok(Haul {
        request_id,
        last: flags & 0x01 != 0,
        data: r.rest,
    })
}

/// Appends a Haul frame (`data` at most [`MAX_HAUL`] bytes: the caller splits).
pub fn encode_haul(h: &Haul<'_>, out: &mut Vec<u8>) {
    let at = begin(kind::HAUL, out);
    out.extend_from_slice(&h.request_id.to_be_bytes());
    out.push(u8::from(h.last));
    out.extend_from_slice(h.data);
    finish(out, at);
}

/// How a Reply's body comes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyBody {
    None,
    /// In Haul frames, until the last.
    Stream,
    /// The file at this path, served by mothership.
    File(Vec<u8>),
    /// The request was an upgrade the app took over: raw bytes both ways in Haul frames;
    /// the link is not reused.
    Tunnel,
}

/// Reply: the status and headers of a bay's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub request_id: u32,
    pub status: u16,
    pub body: ReplyBody,
    pub headers: Pairs,
}

pub fn decode_reply(payload: &[u8]) -> Result<Reply, Error> {
    let mut r = Reader {
        rest: payload,
        kind: kind::REPLY,
    };
    let request_id = r.u32("no request id")?;
    let status = r.u16("no status")?;
    if !(100..=999).contains(&status) {
        return Err(r.bad("status out of range"));
    }
    let body = match r.u8("no flags")? {
        0x00 => ReplyBody::None,
        0x01 => ReplyBody::Stream,
        0x02 => ReplyBody::File(r.bytes("bad file path")?.to_vec()),
        0x04 => ReplyBody::Tunnel,
        _ => return Err(r.bad("unknown flags")),
    };
    let headers = r.pairs("bad headers")?;
    r.end("bytes after the headers")?;
    Ok(Reply {
        request_id,
        status,
        body,
        headers,
    })
}

pub fn encode_reply(rep: &Reply, out: &mut Vec<u8>) {
    let at = begin(kind::REPLY, out);
    out.extend_from_slice(&rep.request_id.to_be_bytes());
    out.extend_from_slice(&rep.status.to_be_bytes());
    match &rep.body {
        ReplyBody::None => out.push(0x00),
        ReplyBody::Stream => out.push(0x01),
        ReplyBody::File(p) => {
            out.push(0x02);
            put_bytes(out, p);
        }
        ReplyBody::Tunnel => out.push(0x04),
    }
    put_pairs(out, &rep.headers);
    finish(out, at);
}

/// Ready: the link may carry the next request.
pub fn decode_ready(payload: &[u8]) -> Result<u32, Error> {
    let mut r = Reader {
        rest: payload,
        kind: kind::READY,
    };
    let id = r.u32("no request id")?;
    r.end("bytes after the request id")?;
    Ok(id)
}

pub fn encode_ready(request_id: u32, out: &mut Vec<u8>) {
    encode(kind::READY, &request_id.to_be_bytes(), out);
}

/// Dock: a bay says who it is and which protocol version it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dock {
    pub version: u32,
    pub ship: String,
    /// Version 3: the bay's pid and how many HTTP exchanges it serves at once.
    pub pid: Option<u32>,
    pub threads: Option<u16>,
    /// The bay sends Broadcast frames (`"broadcast": true`, a mothership extension).
    pub broadcast: bool,
}

fn json_of(k: u8, payload: &[u8]) -> Result<Value, Error> {
    json::parse(payload).map_err(|_| Error::Malformed {
        kind: k,
        why: "not JSON",
    })
}

fn malformed(k: u8, why: &'static str) -> Error {
    Error::Malformed { kind: k, why }
}

pub fn decode_dock(payload: &[u8]) -> Result<Dock, Error> {
    let k = kind::DOCK;
    let v = json_of(k, payload)?;
    let version = v
        .get("version")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| malformed(k, "no version"))?;
    let ship = v
        .get("ship")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(k, "no ship"))?
        .to_string();
    let num = |name: &str| v.get(name).filter(|x| **x != Value::Null);
    let pid = match num("pid") {
        None => None,
        Some(x) => Some(
            x.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| malformed(k, "bad pid"))?,
        ),
    };
    let threads = match num("threads") {
        None => None,
        Some(x) => Some(
            x.as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| malformed(k, "bad threads"))?,
        ),
    };
    let broadcast = match v.get("broadcast") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return Err(malformed(k, "broadcast is not a boolean")),
    };
    Ok(Dock {
        version,
        ship,
        pid,
        threads,
        broadcast,
    })
}

/// Appends Moored for a bay docked with `version`, with its `config` exactly as the
/// manifest has it (a version-3 bay refuses keys it does not know).
pub fn encode_moored(version: u32, config: &[(String, String)], out: &mut Vec<u8>) {
    let mut j = format!("{{\"version\":{version},\"config\":{{");
    for (i, (k, v)) in config.iter().enumerate() {
        if i > 0 {
            j.push(',');
        }
        json::write_str(&mut j, k);
        j.push(':');
        json::write_str(&mut j, v);
    }
    j.push_str("}}");
    encode(kind::MOORED, j.as_bytes(), out);
}

/// Boarding: a WebSocket client arrived for the bay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boarding<'a> {
    pub conn_id: u32,
    /// Path and query, as the bay's route passes them on.
    pub path: &'a str,
    /// The client's address (`ip:port`), from the PROXY header where one is honoured.
    pub remote_addr: &'a str,
    /// Lowercase names; a repeated header's values joined with `, `.
    pub headers: &'a [(String, String)],
    /// The subprotocol the handshake selected (added field; bays that do not read it
    /// ignore it, as the published codec does with fields it does not know).
    pub protocol: Option<&'a str>,
    /// The client was boarded before, on an earlier run of the bay, and is boarded
    /// again after its restart (added field, present only then).
    pub resumed: bool,
}

/// Appends a Boarding frame: the published fields first, in its order, then ours.
pub fn encode_boarding(b: &Boarding<'_>, out: &mut Vec<u8>) {
    let mut j = format!("{{\"conn_id\":{},\"path\":", b.conn_id);
    json::write_str(&mut j, b.path);
    j.push_str(",\"remote_addr\":");
    json::write_str(&mut j, b.remote_addr);
    j.push_str(",\"headers\":{");
    for (i, (k, v)) in b.headers.iter().enumerate() {
        if i > 0 {
            j.push(',');
        }
        json::write_str(&mut j, k);
        j.push(':');
        json::write_str(&mut j, v);
    }
    j.push('}');
    if let Some(p) = b.protocol {
        j.push_str(",\"protocol\":");
        json::write_str(&mut j, p);
    }
    if b.resumed {
        j.push_str(",\"resumed\":true");
    }
    j.push('}');
    encode(kind::BOARDING, j.as_bytes(), out);
}

/// Broadcast (mothership extension 0x30): one message for several clients of the bay,
/// or for all of them. Payload: a u32 count of conn_ids (0 = every client of the bay),
/// the conn_ids (u32 each), one kind byte (0x01 text, 0x02 binary), then the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcast<'a> {
    /// Empty: every client of the bay.
    pub conn_ids: Vec<u32>,
    pub kind: MessageKind,
    pub data: &'a [u8],
}

pub fn decode_broadcast(payload: &[u8]) -> Result<Broadcast<'_>, Error> {
    let mut r = Reader {
        rest: payload,
        kind: kind::BROADCAST,
    };
    let n = r.u32("no count")? as usize;
    if n > r.rest.len() / 4 {
        return Err(r.bad("more conn_ids than bytes"));
    }
    let mut conn_ids = Vec::with_capacity(n);
    for _ in 0..n {
        conn_ids.push(r.u32("short conn_id")?);
    }
    let k = match r.u8("no kind")? {
        0x01 => MessageKind::Text,
        0x02 => MessageKind::Binary,
        _ => return Err(r.bad("unknown message kind")),
    };
    Ok(Broadcast {
        conn_ids,
        kind: k,
        data: r.rest,
    })
}

pub fn encode_broadcast(b: &Broadcast<'_>, out: &mut Vec<u8>) {
    let at = begin(kind::BROADCAST, out);
    out.extend_from_slice(&(b.conn_ids.len() as u32).to_be_bytes());
    for c in &b.conn_ids {
        out.extend_from_slice(&c.to_be_bytes());
    }
    out.push(match b.kind {
        MessageKind::Text => 0x01,
        MessageKind::Binary => 0x02,
    });
    out.extend_from_slice(b.data);
    finish(out, at);
}

/// Disembark: a client left (to the bay), or the bay closes it (from the bay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disembark {
    pub conn_id: u32,
    /// The WebSocket close code (1000 when the bay gives none).
    pub code: u16,
    pub reason: String,
}

pub fn decode_disembark(payload: &[u8]) -> Result<Disembark, Error> {
    let k = kind::DISEMBARK;
    let v = json_of(k, payload)?;
    let conn_id = v
        .get("conn_id")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| malformed(k, "no conn_id"))?;
    let code = match v.get("code").filter(|x| **x != Value::Null) {
        None => 1000,
        Some(c) => c
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| malformed(k, "bad code"))?,
    };
    let reason = v
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Ok(Disembark {
        conn_id,
        code,
        reason,
    })
}

pub fn encode_disembark(d: &Disembark, out: &mut Vec<u8>) {
    let mut j = format!(
        "{{\"conn_id\":{},\"code\":{},\"reason\":",
        d.conn_id, d.code
    );
    json::write_str(&mut j, &d.reason);
    j.push('}');
    encode(kind::DISEMBARK, j.as_bytes(), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boarding_has_the_published_fields_first_and_ours_only_when_set() {
        let headers = vec![
            ("x-probe".to_string(), "a\u{e9}\"b".to_string()),
            ("cookie".to_string(), "k=v".to_string()),
        ];
        let mut b = Boarding {
            conn_id: 7,
            path: "/chat?room=1",
            remote_addr: "127.0.0.1:5000",
            headers: &headers,
            protocol: None,
            resumed: false,
        };
        let mut wire = Vec::new();
        encode_boarding(&b, &mut wire);
        assert_eq!(wire[0], kind::BOARDING);
        let text = std::str::from_utf8(&wire[HEADER..]).expect("utf-8");
        assert!(
            text.starts_with(
                r#"{"conn_id":7,"path":"/chat?room=1","remote_addr":"127.0.0.1:5000","headers":{"#
            ),
            "{text}"
        );
        assert!(
            !text.contains("protocol") && !text.contains("resumed"),
            "{text}"
        );
        let v = json::parse(text.as_bytes()).expect("json");
        let h = v.get("headers").expect("headers");
        assert_eq!(h.get("x-probe").and_then(Value::as_str), Some("a\u{e9}\"b"));
        b.protocol = Some("actioncable-v1-json");
        b.resumed = true;
        wire.clear();
        encode_boarding(&b, &mut wire);
        let v = json::parse(&wire[HEADER..]).expect("json");
        assert_eq!(
            v.get("protocol").and_then(Value::as_str),
            Some("actioncable-v1-json")
        );
        assert_eq!(v.get("resumed"), Some(&Value::Bool(true)));
        let (f, used) = next_frame(&wire, DEFAULT_MAX_PAYLOAD)
            .expect("frame")
            .expect("whole");
        assert_eq!((f.kind, used), (kind::BOARDING, wire.len()));
    }

    #[test]
    fn a_version_1_cargo_is_data_whatever_it_starts_with() {
        let mut p = 7u32.to_be_bytes().to_vec();
        p.extend_from_slice(b"MSWS\x09 not a kind");
        assert!(decode_cargo(&p).is_err());
        let c = decode_cargo_v1(&p).expect("v1");
        assert_eq!((c.conn_id, c.kind, c.data), (7, MessageKind::Text, &p[4..]));
        let c = decode_cargo_v1(&[0, 0, 0, 1, 0xff]).expect("v1");
        assert_eq!(c.kind, MessageKind::Binary);
        assert!(decode_cargo_v1(&[0, 0]).is_err());
    }

    #[test]
    fn broadcast_round_trips_and_a_lying_count_is_refused() {
        let b = Broadcast {
            conn_ids: vec![1, 2, 70000],
            kind: MessageKind::Binary,
            data: &[0, 255, 1],
        };
        let mut wire = Vec::new();
        encode_broadcast(&b, &mut wire);
        let (f, _) = next_frame(&wire, DEFAULT_MAX_PAYLOAD)
            .expect("frame")
            .expect("whole");
        assert_eq!(f.kind, kind::BROADCAST);
        assert_eq!(decode_broadcast(f.payload), Ok(b));
        let all = Broadcast {
            conn_ids: Vec::new(),
            kind: MessageKind::Text,
            data: b"hi",
        };
        wire.clear();
        encode_broadcast(&all, &mut wire);
        assert_eq!(decode_broadcast(&wire[HEADER..]), Ok(all));
        for bad in [
            &[0u8, 0, 0, 9, 1][..],
            &[0, 0, 0, 0],
            &[0, 0, 0, 0, 3, b'x'],
            &[0, 0],
        ] {
            assert!(decode_broadcast(bad).is_err(), "{bad:?}");
        }
        let d = decode_dock(br#"{"version":3,"ship":"x","broadcast":true}"#).expect("dock");
        assert!(d.broadcast);
        assert!(decode_dock(br#"{"version":3,"ship":"x","broadcast":1}"#).is_err());
    }

    #[test]
    fn json_frames_of_both_versions() {
        let d = decode_dock(br#"{"version":1,"ship":"chat"}"#).expect("v1 dock");
        assert_eq!(
            (d.version, d.ship.as_str(), d.pid, d.threads),
            (1, "chat", None, None)
        );
        let d =
            decode_dock(br#"{"version":3,"ship":"web","pid":4242,"threads":8}"#).expect("v3 dock");
        assert_eq!((d.pid, d.threads), (Some(4242), Some(8)));
        for bad in [
            &br#"{"ship":"x"}"#[..],
            br#"{"version":1}"#,
            br#"{"version":-1,"ship":"x"}"#,
            br#"{"version":3,"ship":"x","threads":70000}"#,
            b"not json",
        ] {
            assert!(
                decode_dock(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut wire = Vec::new();
        let config = vec![("channel".to_string(), "a\"b".to_string())];
        encode_moored(3, &config, &mut wire);
        let v = json::parse(&wire[HEADER..]).expect("moored is json");
        assert_eq!(wire[0], kind::MOORED);
        assert_eq!(v.get("version").and_then(Value::as_u64), Some(3));
        let c = v.get("config").expect("config");
        assert_eq!(c.get("channel").and_then(Value::as_str), Some("a\"b"));
        assert_eq!(
            c,
            &Value::Object(vec![("channel".into(), Value::String("a\"b".into()))])
        );
        let bye = Disembark {
            conn_id: 9,
            code: 1001,
            reason: "going away".into(),
        };
        let mut wire = Vec::new();
        encode_disembark(&bye, &mut wire);
        assert_eq!(decode_disembark(&wire[HEADER..]), Ok(bye));
        let from_bay = decode_disembark(br#"{"conn_id":9}"#).expect("bare");
        assert_eq!((from_bay.code, from_bay.reason.as_str()), (1000, ""));
    }

    #[test]
    fn frames_are_found_whole_however_the_bytes_come() {
        let mut wire = Vec::new();
        encode(kind::DOCK, br#"{"version":1,"ship":"chat"}"#, &mut wire);
        encode_ready(7, &mut wire);
        // Byte by byte: nothing until the whole first frame is there.
        for cut in 0..HEADER + 27 {
            assert_eq!(next_frame(&wire[..cut], 1024), Ok(None), "{cut}");
        }
        let (f, used) = next_frame(&wire, 1024).expect("ok").expect("a frame");
        assert_eq!((f.kind, f.payload.len(), used), (kind::DOCK, 27, 32));
        let (f, used2) = next_frame(&wire[used..], 1024)
            .expect("ok")
            .expect("a frame");
        assert_eq!(f.kind, kind::READY);
        assert_eq!(decode_ready(f.payload), Ok(7));
        assert_eq!(used + used2, wire.len());
    }

    #[test]
    fn an_unknown_type_or_an_oversize_length_fails_at_the_header() {
        assert_eq!(next_frame(&[0x7f], 1024), Err(Error::UnknownType(0x7f)));
        // Only the header is there: the length alone decides.
        let header = [kind::CARGO, 0, 0, 4, 1];
        assert_eq!(
            next_frame(&header, 1024),
            Err(Error::TooLarge {
                len: 1025,
                max: 1024
            })
        );
        assert_eq!(
            next_frame(&[kind::CARGO, 0xff, 0xff, 0xff, 0xff], DEFAULT_MAX_PAYLOAD),
            Err(Error::TooLarge {
                len: u32::MAX as usize,
                max: DEFAULT_MAX_PAYLOAD
            })
        );
    }

    #[test]
    fn cargo_in_both_shapes() {
        for version in [1, 3] {
            for (k, data) in [
                (MessageKind::Text, "héllo".as_bytes()),
                (MessageKind::Binary, &[0xff, 0x00, 0xfe][..]),
            ] {
                let c = Cargo {
                    conn_id: 42,
                    kind: k,
                    data,
                };
                let mut wire = Vec::new();
                encode_cargo(version, &c, &mut wire);
                let (f, _) = next_frame(&wire, 1024).expect("ok").expect("frame");
                assert_eq!(decode_cargo(f.payload), Ok(c), "version {version}");
            }
        }
        // Version 1: valid UTF-8 is text (non-ASCII included), anything else binary.
        let v1 = [&7u32.to_be_bytes()[..], "ça".as_bytes()].concat();
        assert_eq!(decode_cargo(&v1).expect("v1").kind, MessageKind::Text);
        // Binary data that happens to be valid UTF-8 keeps its kind only with version 3.
        let mut wire = Vec::new();
        let bin = Cargo {
            conn_id: 1,
            kind: MessageKind::Binary,
            data: b"abc",
        };
        encode_cargo(3, &bin, &mut wire);
        assert_eq!(decode_cargo(&wire[HEADER..]), Ok(bin));
        assert!(decode_cargo(&[0, 0, 0]).is_err(), "no conn_id");
        let bad_kind = [&1u32.to_be_bytes()[..], b"MSWS", &[9]].concat();
        assert!(decode_cargo(&bad_kind).is_err());
    }

    #[test]
    fn http_frames_round_trip_and_lying_counts_are_refused() {
        let hail = Hail {
            request_id: 3,
            content_length: 11,
            params: vec![
                (b"REQUEST_METHOD".to_vec(), b"POST".to_vec()),
                (b"HTTP_X_A".to_vec(), vec![0xff, 0]),
            ],
        };
        let mut wire = Vec::new();
        encode_hail(&hail, &mut wire);
        assert_eq!(decode_hail(&wire[HEADER..]), Ok(hail));
        for body in [
            ReplyBody::None,
            ReplyBody::Stream,
            ReplyBody::File(b"/srv/a.txt".to_vec()),
            ReplyBody::Tunnel,
        ] {
            let rep = Reply {
                request_id: 3,
                status: 200,
                body,
                headers: vec![
                    (b"set-cookie".to_vec(), b"a=1".to_vec()),
                    (b"set-cookie".to_vec(), b"b=2".to_vec()),
                ],
            };
            let mut wire = Vec::new();
            encode_reply(&rep, &mut wire);
            assert_eq!(decode_reply(&wire[HEADER..]), Ok(rep));
        }
        let haul = Haul {
            request_id: 3,
            last: true,
            data: b"hello world",
        };
        let mut wire = Vec::new();
        encode_haul(&haul, &mut wire);
        assert_eq!(decode_haul(&wire[HEADER..]), Ok(haul));
        // A count of a billion pairs in a few bytes: refused before any allocation.
        let lying = [
            &3u32.to_be_bytes()[..],
            &[0; 8],
            &1_000_000_000u32.to_be_bytes(),
        ]
        .concat();
        assert!(decode_hail(&lying).is_err());
        // A pair whose length runs past the end.
        let short = [
            &3u32.to_be_bytes()[..],
            &[0; 8],
            &1u32.to_be_bytes(),
            &9u32.to_be_bytes(),
            b"ab",
        ]
        .concat();
        assert!(decode_hail(&short).is_err());
        assert!(
            decode_reply(&[0, 0, 0, 1, 0, 200, 0x08, 0, 0, 0, 0]).is_err(),
            "flags"
        );
        assert!(
            decode_reply(&[0, 0, 0, 1, 0, 5, 0, 0, 0, 0, 0]).is_err(),
            "status"
        );
        assert!(decode_ready(&[0, 0, 0, 1, 2]).is_err(), "trailing bytes");
        let big = vec![0u8; 5 + MAX_HAUL + 1];
        assert!(decode_haul(&big).is_err(), "over 256 KiB");
    }
}

//! HTTP/1.x message heads: strict parsing of requests (httparse plus the checks that stop
//! request smuggling) and of responses, and the body framing that follows from them
//! (RFC 9112 section 6). Pure functions over bytes.

use std::fmt;

use super::target;

/// Size limits for one head.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most bytes of request line plus headers.
    pub max_head: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Most bytes of the request line (or status line), CRLF excluded: a longer request
    /// line is answered 414.
    pub max_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 16 << 10,
            max_headers: 100,
            max_line: 8 << 10,
        }
    }
}

/// Why a head was refused; each maps to one status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// 400, with a short reason for logs.
    Bad(&'static str),
    /// 431: head or header count over the limit.
    HeadTooLarge,
    /// 414: request line over the limit.
    UriTooLong,
    /// 501: a transfer coding we do not implement.
    NotImplemented(&'static str),
    /// 505
    Version,
}

impl HttpError {
    pub fn status(self) -> u16 {
        match self {
            HttpError::Bad(_) => 400,
            HttpError::HeadTooLarge => 431,
            HttpError::UriTooLong => 414,
            HttpError::NotImplemented(_) => 501,
            HttpError::Version => 505,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Bad(why) => write!(f, "bad request: {why}"),
            HttpError::HeadTooLarge => write!(f, "request head too large"),
            HttpError::UriTooLong => write!(f, "request line too long"),
            HttpError::NotImplemented(why) => write!(f, "not implemented: {why}"),
            HttpError::Version => write!(f, "HTTP version not supported"),
        }
    }
}

/// How the body of a message is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    None,
    Length(u64),
    Chunked,
    /// Responses only: the body runs until the server closes the connection.
    UntilClose,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// As received (original case).
    pub name: String,
    pub value: Vec<u8>,
}

impl Header {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    pub fn value_str(&self) -> &str {
        std::str::from_utf8(&self.value).unwrap_or("")
    }
}

#[derive(Clone, Debug)]
pub struct RequestHead {
    pub method: String,
    /// Request target as sent (path and query for origin-form).
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// In wire order.
    pub headers: Vec<Header>,
    pub body: Body,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// `Connection: upgrade` with an `Upgrade` header: the protocol asked for.
    pub upgrade: Option<String>,
    pub expect_continue: bool,
    pub host: Option<String>,
    /// Bytes of the head, including the final CRLF CRLF.
    pub head_len: usize,
    /// Validated transfer codings, lowercase, in order (empty without Transfer-Encoding).
    pub codings: Vec<String>,
    /// The (single, validated) Content-Length value, if one was sent.
    pub content_length: Option<u64>,
}

impl RequestHead {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    pub fn header(&self, name: &str) -> Option<&Header> {
        self.headers.iter().find(|h| h.is(name))
    }
}

#[derive(Clone, Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub minor: u8,
    pub headers: Vec<Header>,
    pub body: Body,
    /// The server keeps the connection open after this response.
    pub keep_alive: bool,
    pub head_len: usize,
    /// Transfer codings, lowercase, in order (empty without Transfer-Encoding).
    pub codings: Vec<String>,
}

impl ResponseHead {
    pub fn header(&self, name: &str) -> Option<&Header> {
        self.headers.iter().find(|h| h.is(name))
    }
}

/// Header slots kept on the stack; larger limits use the heap.
const STACK_HEADERS: usize = 128;

/// `n` empty header slots for httparse, from `stack` when it is large enough.
fn header_slots<'a, 'b>(
    stack: &'a mut [httparse::Header<'b>; STACK_HEADERS],
    heap: &'a mut Vec<httparse::Header<'b>>,
    n: usize,
) -> &'a mut [httparse::Header<'b>] {
    if n <= STACK_HEADERS {
        &mut stack[..n]
    } else {
        heap.resize(n, httparse::EMPTY_HEADER);
        heap
    }
}

/// Finds the end of a head (`\r\n\r\n`), refusing bare LF and a first line longer than
/// `line_limit`. `Ok(None)` means "need more". `scanned` is how far earlier calls on the
/// same (grown) buffer looked: the scan resumes there, so a head that arrives a few bytes
/// at a time costs linear, not quadratic, time. Reset it to 0 when the buffer is consumed.
fn head_end(
    buf: &[u8],
    limit: usize,
    line_limit: usize,
    scanned: &mut usize,
) -> Result<Option<usize>, HttpError> {
    let scan = &buf[..buf.len().min(limit)];
    let start = (*scanned).min(scan.len());
    let mut prev = if start > 0 { scan[start - 1] } else { 0 };
    for (i, &b) in scan.iter().enumerate().skip(start) {
        if i == line_limit + 2 && memchr::memchr(b'\n', &scan[..i]).is_none() {
            return Err(HttpError::UriTooLong);
        }
        if b == b'\n' {
            if prev != b'\r' {
                return Err(HttpError::Bad("bare LF in head"));
            }
            if i >= 3 && &scan[i - 3..=i] == b"\r\n\r\n" {
                *scanned = 0;
                return Ok(Some(i + 1));
            }
        }
        prev = b;
    }
    *scanned = scan.len();
    if buf.len() >= limit {
        // The request line alone fills the head: it is the line that is too long.
        if memchr::memchr(b'\n', scan).is_none() {
            return Err(HttpError::UriTooLong);
        }
        return Err(HttpError::HeadTooLarge);
    }
    Ok(None)
}

/// A request line whose version is `HTTP/1.x` with x from 2 to 9: a later minor version
/// of HTTP/1 is served as HTTP/1.1 (RFC 9110 2.5). The copy has it rewritten, same length.
fn newer_minor(head: &[u8]) -> Option<Vec<u8>> {
    let line_end = memchr::memchr(b'\r', head)?;
    let v = head[..line_end].rsplit(|&b| b == b' ').next()?;
    if v.len() == 8 && v.starts_with(b"HTTP/1.") && (b'2'..=b'9').contains(&v[7]) {
        let mut copy = head.to_vec();
        copy[line_end - 1] = b'1';
        return Some(copy);
    }
    None
}

fn check_value(v: &[u8]) -> Result<(), HttpError> {
    if v.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(HttpError::Bad("control character in a header value"));
    }
    Ok(())
}

/// Comma-separated items of every header named `name`, trimmed, as sent.
pub fn header_list(headers: &[Header], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|h| h.is(name))
        .flat_map(|h| {
            h.value_str()
                .split(',')
                .map(|t| t.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// Comma-separated tokens of every header named `name`, trimmed and lowercased.
fn tokens(headers: &[Header], name: &str) -> Vec<String> {
    let mut v = header_list(headers, name);
    v.iter_mut().for_each(|t| t.make_ascii_lowercase());
    v
}

/// Does a header named `name` list `token` (case-insensitive)? No allocation.
pub fn has_token(headers: &[Header], name: &str, token: &str) -> bool {
    headers.iter().filter(|h| h.is(name)).any(|h| {
        h.value_str()
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

/// The one Content-Length of a message: every value (also in lists) must be the same
/// non-negative decimal number.
fn content_length(headers: &[Header]) -> Result<Option<u64>, HttpError> {
    let mut found: Option<u64> = None;
    for h in headers.iter().filter(|h| h.is("content-length")) {
        for part in h.value_str().split(',') {
            let p = part.trim_matches([' ', '\t']);
            if p.is_empty() || p.len() > 19 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HttpError::Bad("invalid Content-Length"));
            }
            let n: u64 = p
                .parse()
                .map_err(|_| HttpError::Bad("invalid Content-Length"))?;
            match found {
                Some(f) if f != n => {
                    return Err(HttpError::Bad("conflicting Content-Length values"))
                }
                _ => found = Some(n),
            }
        }
        if h.value.is_empty() {
            return Err(HttpError::Bad("empty Content-Length"));
        }
    }
    Ok(found)
}

/// Is the last transfer coding `chunked`, with `chunked` nowhere else?
fn transfer_chunked(codings: &[String]) -> Result<bool, HttpError> {
    let n = codings.iter().filter(|c| c.as_str() == "chunked").count();
    match (codings.last().map(String::as_str), n) {
        (Some("chunked"), 1) => Ok(true),
        (_, 0) => Ok(false),
        _ => Err(HttpError::Bad(
            "chunked must be the last transfer coding, once",
        )),
    }
}

fn convert_headers(raw: &[httparse::Header<'_>]) -> Result<Vec<Header>, HttpError> {
    raw.iter()
        .map(|h| {
            check_value(h.value)?;
            Ok(Header {
                name: h.name.to_string(),
                value: h.value.to_vec(),
            })
        })
        .collect()
}

/// Parses a request head at the start of `buf`. `Ok(None)`: incomplete, read more.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<RequestHead>, HttpError> {
    parse_request_resume(buf, limits, &mut 0)
}

/// [`parse_request`] for a head that arrives in pieces: `scanned` carries how far the
/// search for its end got (start at 0, keep it while the buffer only grows).
///
/// Beyond httparse's syntax: the target is classified and normalised ([`target`]),
/// absolute-form becomes origin-form with `Host` taken from its authority, CONNECT is not
/// implemented, `Host` must be a valid authority, `HTTP/1.x` with x > 1 is served as
/// HTTP/1.1, and only `Upgrade: websocket` is honoured (on HTTP/1.1).
pub fn parse_request_resume(
    buf: &[u8],
    limits: &Limits,
    scanned: &mut usize,
) -> Result<Option<RequestHead>, HttpError> {
    let Some(head_len) = head_end(buf, limits.max_head, limits.max_line, scanned)? else {
        return Ok(None);
    };
    let fixed = newer_minor(&buf[..head_len]);
    let head = fixed.as_deref().unwrap_or(&buf[..head_len]);
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut heap = Vec::new();
    let raw = header_slots(&mut stack, &mut heap, limits.max_headers);
    let mut req = httparse::Request::new(raw);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HttpError::Bad("malformed head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(httparse::Error::Version) => {
            // 505 for a well-formed other version (HTTP/2.0 over cleartext, say) on a
            // well-formed line; anything else (a space in the target, say) is a bad
            // request line.
            let line = buf.split(|&b| b == b'\r').next().unwrap_or(b"");
            let v = line.rsplit(|&b| b == b' ').next().unwrap_or(b"");
            let versioned = line.split(|&b| b == b' ').count() == 3
                && v.len() == 8
                && v.starts_with(b"HTTP/")
                && v[5].is_ascii_digit()
                && v[6] == b'.'
                && v[7].is_ascii_digit();
            return Err(if versioned {
                HttpError::Version
            } else {
                HttpError::Bad("malformed request line")
            });
        }
        Err(httparse::Error::HeaderName) => {
            return Err(HttpError::Bad(
                "invalid header name (or whitespace before the colon, or obs-fold)",
            ))
        }
        Err(httparse::Error::HeaderValue) => return Err(HttpError::Bad("invalid header value")),
        Err(httparse::Error::Token) => return Err(HttpError::Bad("invalid method")),
        Err(_) => return Err(HttpError::Bad("malformed request line")),
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HttpError::Bad("incomplete request line"));
    };
    if target.is_empty() || target.bytes().any(|b| b <= 0x20 || b >= 0x7f) {
        return Err(HttpError::Bad("invalid request target"));
    }
    if method == "CONNECT" {
        return Err(HttpError::NotImplemented(
            "CONNECT (this is not a forward proxy)",
        ));
    }
    let form = target::parse(method, target).map_err(|e| HttpError::Bad(e.0))?;
    let mut headers = convert_headers(req.headers)?;

    let codings = tokens(&headers, "transfer-encoding");
    let has_te = headers.iter().any(|h| h.is("transfer-encoding"));
    let cl = content_length(&headers)?;
    let body = if has_te {
        if cl.is_some() {
            return Err(HttpError::Bad("both Content-Length and Transfer-Encoding"));
        }
        if minor == 0 {
            return Err(HttpError::Bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if !transfer_chunked(&codings)? {
            return Err(HttpError::Bad("the final transfer coding is not chunked"));
        }
        Body::Chunked
    } else {
        match cl {
            Some(0) | None => Body::None,
            Some(n) => Body::Length(n),
        }
    };

    let hosts: Vec<&Header> = headers.iter().filter(|h| h.is("host")).collect();
    if hosts.len() > 1 {
        return Err(HttpError::Bad("more than one Host header"));
    }
    let mut host = hosts.first().map(|h| h.value_str().trim().to_string());
    if minor == 1 && host.is_none() {
        return Err(HttpError::Bad("HTTP/1.1 request without Host"));
    }
    // RFC 9112 3.2: Host is an authority (empty when the target has none).
    if host
        .as_deref()
        .is_some_and(|h| !h.is_empty() && !target::valid_authority(h))
    {
        return Err(HttpError::Bad("invalid Host"));
    }
    let target = match form {
        target::Form::Origin(t) => t.into_owned(),
        target::Form::Asterisk => "*".to_string(),
        target::Form::Absolute { authority, target } => {
            // RFC 9112 3.2.2: the target's authority replaces Host.
            headers.retain(|h| !h.is("host"));
            headers.insert(
                0,
                Header {
                    name: "Host".into(),
                    value: authority.as_bytes().to_vec(),
                },
            );
            host = Some(authority.to_string());
            target.into_owned()
        }
    };
    let keep_alive = if minor == 1 {
        !has_token(&headers, "connection", "close")
    } else {
        has_token(&headers, "connection", "keep-alive")
    };
    // Only WebSocket is tunnelled: any other protocol (h2c, say) would carry requests
    // that no route, class or limit sees. HTTP/1.0 has no Upgrade.
    let upgrade = (minor == 1
        && has_token(&headers, "connection", "upgrade")
        && has_token(&headers, "upgrade", "websocket"))
    .then(|| "websocket".to_string());
    let expect_continue = minor == 1 && has_token(&headers, "expect", "100-continue");
    Ok(Some(RequestHead {
        method: method.to_string(),
        target,
        minor,
        headers,
        body,
        keep_alive,
        upgrade,
        expect_continue,
        host,
        head_len,
        codings,
        content_length: cl,
    }))
}

/// Parses a response head to a request with `method`. `Ok(None)`: incomplete.
pub fn parse_response(
    buf: &[u8],
    limits: &Limits,
    method: &str,
) -> Result<Option<ResponseHead>, HttpError> {
    parse_response_resume(buf, limits, method, &mut 0)
}

/// [`parse_response`] for a head that arrives in pieces (see [`parse_request_resume`]).
pub fn parse_response_resume(
    buf: &[u8],
    limits: &Limits,
    method: &str,
    scanned: &mut usize,
) -> Result<Option<ResponseHead>, HttpError> {
    let head_len = match head_end(buf, limits.max_head, limits.max_line, scanned) {
        Ok(Some(n)) => n,
        Ok(None) => return Ok(None),
        Err(HttpError::UriTooLong) => return Err(HttpError::Bad("status line too long")),
        Err(e) => return Err(e),
    };
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut heap = Vec::new();
    let raw = header_slots(&mut stack, &mut heap, limits.max_headers);
    let mut res = httparse::Response::new(raw);
    match res.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HttpError::Bad("malformed response head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(_) => return Err(HttpError::Bad("malformed response head")),
    }
    let (Some(status), Some(minor)) = (res.code, res.version) else {
        return Err(HttpError::Bad("incomplete status line"));
    };
    if !(100..=999).contains(&status) {
        return Err(HttpError::Bad("invalid status code"));
    }
    let reason = res.reason.unwrap_or("").to_string();
    let headers = convert_headers(res.headers)?;
    let res_codings = tokens(&headers, "transfer-encoding");
    let mut keep_alive = if minor == 1 {
        !has_token(&headers, "connection", "close")
    } else {
        has_token(&headers, "connection", "keep-alive")
    };
    let no_body = method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&status)
        || status == 204
        || status == 304;
    let body = if no_body {
        // A 1xx or 204 that announces a body (a non-zero length, or chunks) comes from a
        // broken upstream: whatever follows cannot be trusted, so it is not reused.
        let announces = headers.iter().any(|h| h.is("transfer-encoding"))
            || !matches!(content_length(&headers), Ok(None | Some(0)));
        if status != 304 && !method.eq_ignore_ascii_case("HEAD") && announces {
            keep_alive = false;
        }
        Body::None
    } else if headers.iter().any(|h| h.is("transfer-encoding")) {
        // With Transfer-Encoding, Content-Length is ignored, and the connection is not
        // reused (RFC 9112 6.3): it may have been crafted to desynchronise.
        if headers.iter().any(|h| h.is("content-length")) {
            keep_alive = false;
        }
        let codings = tokens(&headers, "transfer-encoding");
        match transfer_chunked(&codings) {
            Ok(true) => Body::Chunked,
            _ => {
                keep_alive = false;
                Body::UntilClose
            }
        }
    } else {
        match content_length(&headers)? {
            Some(n) => Body::Length(n),
            None => {
                keep_alive = false;
                Body::UntilClose
            }
        }
    };
    Ok(Some(ResponseHead {
        status,
        reason,
        minor,
        headers,
        body,
        keep_alive,
        head_len,
        codings: res_codings,
    }))
}

/// Hop-by-hop headers (RFC 9110 7.6.1) that a proxy never forwards, plus those named in
/// `Connection`.
pub fn is_hop_by_hop(name: &str, connection_tokens: &[String]) -> bool {
    const HOP: [&str; 8] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
    ];
    // `Connection` may name extra hop-by-hop fields, but never the ones that frame or
    // address the message: `Connection: content-length` must not make a body vanish.
    const PROTECTED: [&str; 2] = ["content-length", "host"];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || (connection_tokens
            .iter()
            .any(|t| name.eq_ignore_ascii_case(t))
            && !PROTECTED.iter().any(|p| name.eq_ignore_ascii_case(p)))
}

/// The tokens of the `Connection` headers, lowercased.
pub fn connection_tokens(headers: &[Header]) -> Vec<String> {
    tokens(headers, "connection")
}

/// Standard reason phrase for a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A complete short response generated by mothership itself (errors, redirects).
pub fn simple_response(status: u16, body: &str, close: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(body.len() + 1);
    b.extend_from_slice(body.as_bytes());
    b.push(b'\n');
    response(
        status,
        b"",
        Some("text/plain; charset=utf-8"),
        &b,
        close,
        false,
    )
}

/// A whole response with a known body. `extra` holds header lines, each ending in CRLF.
/// `head_only` (an answer to HEAD) leaves the body out but keeps its Content-Length.
pub fn response(
    status: u16,
    extra: &[u8],
    content_type: Option<&str>,
    body: &[u8],
    close: bool,
    head_only: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + extra.len() + body.len());
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
    if let Some(ct) = content_type {
        out.extend_from_slice(format!("content-type: {ct}\r\n").as_bytes());
    }
    // No body at all for 1xx, 204 and 304.
    let bodiless = status < 200 || status == 204 || status == 304;
    if !bodiless {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(extra);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only && !bodiless {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Result<Option<RequestHead>, HttpError> {
        parse_request(s.as_bytes(), &Limits::default())
    }

    #[test]
    fn valid_requests() {
        for (name, input, body, keep, minor) in [
            (
                "get",
                "GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n",
                Body::None,
                true,
                1,
            ),
            ("1.0 closes", "GET / HTTP/1.0\r\n\r\n", Body::None, false, 0),
            (
                "1.0 keep-alive",
                "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
                Body::None,
                true,
                0,
            ),
            (
                "close",
                "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                Body::None,
                false,
                1,
            ),
            (
                "length",
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
                Body::Length(5),
                true,
                1,
            ),
            (
                "same lengths",
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\n",
                Body::Length(5),
                true,
                1,
            ),
            (
                "chunked",
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                Body::Chunked,
                true,
                1,
            ),
            (
                "gzip then chunked",
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                Body::Chunked,
                true,
                1,
            ),
            (
                "tab in value",
                "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\tb\r\n\r\n",
                Body::None,
                true,
                1,
            ),
            (
                "obs-text in value",
                "GET / HTTP/1.1\r\nHost: x\r\nX-A: \u{e9}\r\n\r\n",
                Body::None,
                true,
                1,
            ),
        ] {
            let r = req(input)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .unwrap_or_else(|| panic!("{name}: incomplete"));
            assert_eq!(
                (r.body, r.keep_alive, r.minor),
                (body, keep, minor),
                "{name}"
            );
            assert_eq!(
                &input.as_bytes()[r.head_len - 4..r.head_len],
                b"\r\n\r\n",
                "{name}"
            );
        }
        let r = req("GET /p/q?x=1&y HTTP/1.1\r\nhost: ex.com\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nExpect: 100-continue\r\n\r\n").unwrap().unwrap();
        assert_eq!((r.path(), r.query()), ("/p/q", Some("x=1&y")));
        assert_eq!(r.host.as_deref(), Some("ex.com"));
        assert_eq!(r.upgrade.as_deref(), Some("websocket"));
        assert!(r.expect_continue);
        assert_eq!(r.headers[0].name, "host", "original case kept");
    }

    #[test]
    fn incomplete_requests_ask_for_more() {
        for input in [
            "",
            "GET",
            "GET / HTTP/1.1\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n\r",
        ] {
            assert_eq!(req(input).map(|r| r.is_none()), Ok(true), "{input:?}");
        }
    }

    #[test]
    fn smuggling_and_malformed_requests_are_refused() {
        for (name, input, status) in [
            ("CL and TE", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("differing CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
            ("differing CL in a list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\n", 400),
            ("signed CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n", 400),
            ("hex CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\n", 400),
            ("empty CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n", 400),
            ("TE not chunked last", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
            ("TE gzip only", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            ("TE chunked twice", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("TE bogus", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n", 400),
            ("TE in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
            ("space before colon", "GET / HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n", 400),
            ("control char in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400),
            ("DEL in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n", 400),
            ("control char in name", "GET / HTTP/1.1\r\nHost: x\r\nX\x01A: a\r\n\r\n", 400),
            ("NUL in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00\r\n\r\n", 400),
            ("no Host in 1.1", "GET / HTTP/1.1\r\n\r\n", 400),
            ("two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("bare LF", "GET / HTTP/1.1\nHost: x\n\n", 400),
            ("bare LF in a header", "GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", 400),
            ("bad method", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("HTTP/2 line", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
            (
                "PROXY line where none is expected",
                "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n\r\n",
                400,
            ),
            ("garbage", "\x16\x03\x01\x00\x05\x01\x00\x00\r\n\r\n", 400),
            // Issue 12: what a differential probe found answered wrongly.
            ("asterisk on GET", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("authority-form on GET", "GET example.com:80 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501),
            ("space in the target", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("two spaces in the target", "GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("non-ASCII target", "GET /\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("fragment in the target", "GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("bad percent-encoding", "GET /a%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("absolute-form with userinfo", "GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("absolute-form, other scheme", "GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("Host with userinfo", "GET / HTTP/1.1\r\nHost: user@x\r\n\r\n", 400),
            ("Host with a path", "GET / HTTP/1.1\r\nHost: x/admin\r\n\r\n", 400),
            ("Host with a space", "GET / HTTP/1.1\r\nHost: x y\r\n\r\n", 400),
            ("Host with a bad port", "GET / HTTP/1.1\r\nHost: x:99999\r\n\r\n", 400),
            ("Host with a letter port", "GET / HTTP/1.1\r\nHost: x:8o\r\n\r\n", 400),
            ("HTTP/3 line", "GET / HTTP/3.0\r\nHost: x\r\n\r\n", 505),
        ] {
            match req(input) {
                Err(e) => assert_eq!(e.status(), status, "{name}: {e}"),
                Ok(r) => panic!("{name}: accepted {r:?}"),
            }
        }
    }

    #[test]
    fn targets_are_normalised_and_absolute_form_takes_its_host() {
        let r = req("GET /x/../%61dmin//y?q=/../z HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.target, "/admin/y?q=/../z");
        let r = req("GET http://example.test/abs?q=1 HTTP/1.1\r\nHost: other.test\r\nX: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.target, "/abs?q=1");
        assert_eq!(r.host.as_deref(), Some("example.test"));
        let hosts: Vec<&str> = r
            .headers
            .iter()
            .filter(|h| h.is("host"))
            .map(Header::value_str)
            .collect();
        assert_eq!(hosts, ["example.test"]);
        let r = req("GET http://h:8080 HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert_eq!(
            (r.target.as_str(), r.host.as_deref()),
            ("/", Some("h:8080"))
        );
        let r = req("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.target, "*");
        let r = req("GET / HTTP/1.1\r\nHost: \r\n\r\n").unwrap().unwrap();
        assert_eq!(r.host.as_deref(), Some(""), "an empty Host is valid");
        let r = req("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.host.as_deref(), Some("[::1]:8080"));
    }

    #[test]
    fn later_http1_minor_versions_are_served_as_1_1() {
        let r = req("GET /v HTTP/1.2\r\nHost: x\r\n\r\n").unwrap().unwrap();
        assert_eq!((r.minor, r.target.as_str(), r.keep_alive), (1, "/v", true));
        let r = req("GET /v HTTP/1.9\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((r.minor, r.keep_alive), (1, false));
    }

    #[test]
    fn only_websocket_upgrades_on_http_1_1() {
        for (input, want) in [
            ("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", None),
            ("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n", Some("websocket")),
            ("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c, websocket\r\n\r\n", Some("websocket")),
            ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", None),
            ("GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", None),
        ] {
            let r = req(input).unwrap().unwrap();
            assert_eq!(r.upgrade.as_deref(), want, "{input:?}");
        }
    }

    #[test]
    fn request_line_limit_is_414() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
        assert_eq!(req(&long).map(|_| ()), Err(HttpError::UriTooLong));
        let at = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(8192 - 14));
        assert!(
            req(&at).unwrap().is_some(),
            "a line of exactly 8 KiB is accepted"
        );
        let over = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(8192 - 13));
        assert_eq!(req(&over).map(|_| ()), Err(HttpError::UriTooLong));
        // Arriving in pieces, with no end in sight.
        let partial = format!("GET /{}", "a".repeat(9000));
        let mut scanned = 0;
        let mut result = Ok(None);
        for end in (1..=partial.len()).step_by(100) {
            result =
                parse_request_resume(&partial.as_bytes()[..end], &Limits::default(), &mut scanned)
                    .map(|r| r.map(|_| ()));
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(HttpError::UriTooLong));
    }

    #[test]
    fn resumed_scans_agree_with_whole_ones() {
        let input =
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nX-Long: 0123456789\r\n\r\nabc";
        let whole = parse_request(input, &Limits::default()).unwrap().unwrap();
        for step in [1, 2, 3, 5, 17] {
            let mut scanned = 0;
            let mut got = None;
            let mut end = 0;
            while got.is_none() {
                end = (end + step).min(input.len());
                got =
                    parse_request_resume(&input[..end], &Limits::default(), &mut scanned).unwrap();
                if got.is_none() {
                    // Everything so far was looked at once and will not be again: linear,
                    // however small the pieces.
                    assert_eq!(scanned, end, "step {step}");
                }
            }
            let got = got.unwrap();
            assert_eq!(
                (got.head_len, got.body),
                (whole.head_len, whole.body),
                "step {step}"
            );
        }
        let bad = b"GET / HTTP/1.1\r\nHost: x\nY: z\r\n\r\n";
        let mut scanned = 0;
        let mut err = None;
        for end in 1..=bad.len() {
            if let Err(e) = parse_request_resume(&bad[..end], &Limits::default(), &mut scanned) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(HttpError::Bad("bare LF in head")));
    }

    #[test]
    fn limits() {
        let small = Limits {
            max_head: 64,
            max_headers: 3,
            max_line: 8192,
        };
        // A request line that alone fills max_head is a line too long (414)...
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100));
        assert_eq!(
            parse_request(long.as_bytes(), &small).map(|_| ()),
            Err(HttpError::UriTooLong)
        );
        assert_eq!(parse_request(b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", &small).map(|_| ()), Err(HttpError::UriTooLong));
        // ...and headers past it are a head too large (431).
        let fat = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
            "b".repeat(100)
        );
        assert_eq!(
            parse_request(fat.as_bytes(), &small).map(|_| ()),
            Err(HttpError::HeadTooLarge)
        );
        let many = "GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(
            parse_request(
                many.as_bytes(),
                &Limits {
                    max_head: 1000,
                    max_headers: 3,
                    max_line: 8192,
                }
            )
            .map(|_| ()),
            Err(HttpError::HeadTooLarge)
        );
    }

    #[test]
    fn response_framing() {
        let l = Limits::default();
        for (name, input, method, body, keep) in [
            ("length", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", "GET", Body::Length(3), true),
            ("chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", Body::Chunked, true),
            ("until close", "HTTP/1.1 200 OK\r\n\r\n", "GET", Body::UntilClose, false),
            ("1.0 until close", "HTTP/1.0 200 OK\r\n\r\n", "GET", Body::UntilClose, false),
            ("1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", "GET", Body::Length(0), true),
            ("HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", "HEAD", Body::None, true),
            ("204", "HTTP/1.1 204 No Content\r\n\r\n", "GET", Body::None, true),
            ("304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", "GET", Body::None, true),
            ("101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", "GET", Body::None, true),
            ("TE and CL", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", Body::Chunked, false),
            ("close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", "GET", Body::Length(1), false),
            ("204 announcing a body", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", "GET", Body::None, false),
            ("204 with length 0", "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", "GET", Body::None, true),
            ("204 with chunks", "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", Body::None, false),
            ("HEAD keeps its length", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", "HEAD", Body::None, true),
        ] {
            let r = parse_response(input.as_bytes(), &l, method).unwrap_or_else(|e| panic!("{name}: {e}")).unwrap();
            assert_eq!((r.body, r.keep_alive), (body, keep), "{name}");
        }
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            &l,
            "GET"
        )
        .is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nX: 1\r\n", &l, "GET")
            .unwrap()
            .is_none());
    }

    #[test]
    fn hop_by_hop() {
        let headers = vec![Header {
            name: "Connection".into(),
            value: b"close, X-Secret".to_vec(),
        }];
        let t = connection_tokens(&headers);
        assert!(is_hop_by_hop("x-secret", &t));
        assert!(is_hop_by_hop("Keep-Alive", &t));
        assert!(is_hop_by_hop("TE", &t));
        let t = vec!["content-length".to_string(), "host".to_string()];
        assert!(
            !is_hop_by_hop("Content-Length", &t),
            "framing cannot be removed by Connection"
        );
        assert!(!is_hop_by_hop("Host", &t));
        assert!(!is_hop_by_hop("Content-Type", &t));
    }

    #[test]
    fn generated_responses() {
        let r = simple_response(404, "no route", true);
        let head = parse_response(&r, &Limits::default(), "GET")
            .unwrap()
            .unwrap();
        assert_eq!(head.status, 404);
        assert_eq!(head.body, Body::Length(9));
        assert!(!head.keep_alive);
    }
}

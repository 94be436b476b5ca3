//! One HTTP/1 exchange, without IO: the request body from the client's buffer to the
//! upstream's, the response from the upstream's buffer to the client's, and what must
//! happen next. The session driver (`session.rs`) fills and empties the four buffers with
//! the sockets and carries out the [`Step`] each call returns; this module never touches a
//! socket, a registry or a clock of its own, so its tests pair scripted client and backend
//! bytes in memory.
//!
//! The request head has been parsed, routed and rewritten before the exchange begins (the
//! request pipeline in `mod.rs`); the response head is rewritten here (`rewrite.rs` makes
//! the bytes).

use std::time::Instant;

use super::buffers::{Buf, BUF};
use super::metrics::UpstreamError;
use super::rewrite::{client_head, compress_choice, interim_head, ClientSide};
use super::{compress, cors};
use crate::manifest::ids::ProgramId;
use crate::payload::{Outcome, Payloads};
use crate::proto::chunked::ChunkedDecoder;
use crate::proto::http::{self, Body, Limits, RequestHead};

pub(super) enum ReqBody {
    Done,
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
}

pub(super) enum RespBody {
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
    UntilClose,
}

pub(super) enum Resp {
    Head,
    Body {
        body: RespBody,
        dechunk: bool,
        reusable: bool,
    },
    Done {
        reusable: bool,
    },
}

/// The buffers of both sides and what the driver knows of the sockets behind them.
pub(super) struct Wire<'a> {
    pub cin: &'a mut Buf,
    pub cout: &'a mut Buf,
    pub uin: &'a mut Buf,
    pub uout: &'a mut Buf,
    /// The client's side has ended (no byte will follow what is in `cin`).
    pub client_eof: bool,
    /// The upstream's side has ended (no byte will follow what is in `uin`).
    pub up_eof: bool,
    /// More upstream bytes may be readable right now (a compressor then waits for them
    /// before flushing).
    pub up_readable: bool,
}

/// What the exchange borrows from the edge: settings, the CORS cache, the compressors.
pub(super) struct Ctx<'a> {
    pub limits: &'a Limits,
    pub max_body_size: u64,
    /// The edge is draining: no connection is kept for another request.
    pub draining: bool,
    pub cors: Option<&'a mut cors::Cache>,
    pub encoders: &'a compress::Budget,
    pub now: Instant,
    /// The WASM modules, for the response phase.
    pub payloads: Option<&'a mut Payloads>,
}

/// What the driver does after a call to [`Exchange::step`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Nothing moved: wait for the sockets.
    Wait,
    /// Bytes moved: write and read, then call again.
    Moved,
    /// The pooled upstream was closed before it answered: open a fresh connection, put
    /// these bytes in its `uout`, and call again.
    Replay(Vec<u8>),
    /// The upstream switched protocols as asked: the connection becomes a tunnel (the 101
    /// head is in `cout`).
    Upgrade,
    /// The exchange is over. `reusable`: the upstream may go back to the pool as far as
    /// HTTP goes; `keep`: the client connection goes on with its next request.
    Done { reusable: bool, keep: bool },
    /// The upstream answered before the whole request body arrived (the answer is in
    /// `cout`): the rest of the body cannot be told from a next request, so both close.
    AnsweredEarly,
    /// The request is refused before any of the answer went out: close the upstream and
    /// answer `status` with `why`, closing the connection.
    Refuse { status: u16, why: &'static str },
    /// The upstream failed (`kind` for the counts, `why` after its name in the log).
    /// `sent`: part of the answer is out, so the client connection can only be closed;
    /// otherwise the driver answers 502.
    Fail {
        kind: UpstreamError,
        why: String,
        sent: bool,
    },
    /// The client went away in the middle of its request, or sent a broken body after
    /// the answer began: close the connection.
    Drop,
    /// A response module blocked the backend's answer (its own answer replaces it) or
    /// failed (503): nothing of the backend's answer went out; the upstream is closed and
    /// the client connection goes on if `keep`. `backend`: the status the backend gave.
    Replace {
        outcome: Box<Outcome>,
        backend: u16,
        keep: bool,
    },
}

pub(super) struct Exchange {
    method: String,
    client_keep: bool,
    client_minor: u8,
    upgrade: bool,
    pub req: ReqBody,
    pub resp: Resp,
    /// Bytes of the response sent to the client so far (0: an error can still be answered).
    pub sent: u64,
    /// The client buffer holds a response head whose body has not arrived yet: it is sent
    /// with MSG_MORE so that head and first body bytes leave in one segment.
    pub head_only: bool,
    /// How far the search for the end of the response head in the upstream buffer got.
    resp_scan: usize,
    /// An interim (1xx) response said the connection cannot be reused.
    no_reuse: bool,
    /// For an idempotent request without a body sent on a reused connection: the bytes to
    /// send again on a fresh connection if the reused one turns out to be closed.
    replay: Option<Vec<u8>>,
    /// The backend's program (for upstream error counts).
    pub target: ProgramId,
    /// A cacheable CORS preflight: its cache key until the response head arrives, then
    /// what is kept of the answer while its body arrives.
    cors_key: Option<String>,
    capture: Option<Box<cors::Capture>>,
    /// The request's Accept-Encoding, when the response may be compressed.
    accept: Option<String>,
    /// Compressing the response body.
    enc: Option<Box<compress::Encoder>>,
    /// Counted since the last [`Exchange::take_counts`]: request body bytes taken from
    /// the client, response body bytes given to it (as sent, compressed or not).
    bytes_in: u64,
    bytes_out: u64,
    /// The final response's status (0: not yet).
    pub status: u16,
    /// The response modules chosen for this request (by its path before `strip_prefix`).
    pub modules: Vec<usize>,
}

impl Exchange {
    /// An exchange for `req`, whose head (already consumed from the client's buffer) has
    /// been rewritten into the upstream's. `replay`: the head's bytes when the upstream was
    /// reused and the request may be sent again; `accept`: the Accept-Encoding to compress
    /// for.
    pub fn new(
        req: &RequestHead,
        target: ProgramId,
        replay: Option<Vec<u8>>,
        accept: Option<String>,
        cors_key: Option<String>,
    ) -> Exchange {
        let body = match req.body {
            Body::None | Body::UntilClose => ReqBody::Done,
            Body::Length(n) => ReqBody::Length(n),
            Body::Chunked => ReqBody::Chunked(Box::default()),
        };
        Exchange {
            method: req.method.clone(),
            client_keep: req.keep_alive,
            client_minor: req.minor,
            upgrade: req.upgrade.is_some(),
            req: body,
            resp: Resp::Head,
            sent: 0,
            head_only: false,
            resp_scan: 0,
            no_reuse: false,
            replay,
            target,
            cors_key,
            capture: None,
            accept,
            enc: None,
            bytes_in: 0,
            bytes_out: 0,
            status: 0,
            modules: Vec::new(),
        }
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    fn side(&self) -> ClientSide {
        ClientSide {
            upgrade: self.upgrade,
            client_minor: self.client_minor,
        }
    }

    /// The request body has been read whole.
    pub fn request_done(&self) -> bool {
        matches!(self.req, ReqBody::Done)
    }

    /// The bytes moved since the last call: (request body in, response out).
    pub fn take_counts(&mut self) -> (u64, u64) {
        (
            std::mem::take(&mut self.bytes_in),
            std::mem::take(&mut self.bytes_out),
        )
    }

    /// Moves what the buffers allow and says what follows.
    pub fn step(&mut self, w: &mut Wire, cx: &mut Ctx) -> Step {
        let mut moved = match self.request_body(w, cx) {
            Ok(m) => m,
            Err(step) => return step,
        };
        if w.client_eof && !self.request_done() && w.cin.is_empty() {
            return Step::Drop;
        }
        loop {
            match &mut self.resp {
                Resp::Head if w.cout.len() >= BUF => break,
                Resp::Head => match self.response_head(w, cx) {
                    Ok(true) => moved = true,
                    Ok(false) => break,
                    Err(step) => return step,
                },
                Resp::Body { .. } => match self.response_body(w, &mut moved) {
                    Ok(true) => moved = true,
                    Ok(false) => break,
                    Err(step) => return step,
                },
                Resp::Done { .. } => break,
            }
        }
        match (&self.req, &self.resp) {
            (ReqBody::Done, Resp::Done { reusable }) => {
                let reusable = *reusable;
                if let (Some(cap), Some(cc)) = (self.capture.take(), cx.cors.as_deref_mut()) {
                    cc.put(*cap, cx.now);
                }
                Step::Done {
                    reusable,
                    keep: self.client_keep,
                }
            }
            (_, Resp::Done { .. }) => Step::AnsweredEarly,
            _ if moved => Step::Moved,
            _ => Step::Wait,
        }
    }

    /// Request body: client -> upstream.
    fn request_body(&mut self, w: &mut Wire, cx: &Ctx) -> Result<bool, Step> {
        let room = BUF.saturating_sub(w.uout.len());
        if room == 0 || w.cin.is_empty() {
            return Ok(false);
        }
        match &mut self.req {
            ReqBody::Done => Ok(false),
            ReqBody::Length(left) => {
                let n = (*left).min(w.cin.len() as u64).min(room as u64) as usize;
                w.uout.extend_from_slice(&w.cin[..n]);
                w.cin.consume(n);
                *left -= n as u64;
                self.bytes_in += n as u64;
                if *left == 0 {
                    self.req = ReqBody::Done;
                }
                Ok(n > 0)
            }
            ReqBody::Chunked(dec) => {
                let n = w.cin.len().min(room);
                // Chunks pass as they came; trailers are checked, and the fields that may
                // not be trailers are removed.
                match dec.forward(&w.cin[..n], w.uout.vec()) {
                    Ok(_) if dec.payload > cx.max_body_size => {
                        log::debug!("chunked body over max_body_size");
                        w.cin.clear();
                        Err(self.refuse(413, "request body too large"))
                    }
                    Ok(used) => {
                        w.cin.consume(used);
                        self.bytes_in += used as u64;
                        if dec.is_done() {
                            self.req = ReqBody::Done;
                        }
                        Ok(used > 0)
                    }
                    Err(e) => {
                        log::debug!("bad chunked request body: {e:?}");
                        w.cin.clear();
                        Err(self.refuse(400, "bad chunked body"))
                    }
                }
            }
        }
    }

    fn refuse(&self, status: u16, why: &'static str) -> Step {
        if self.sent == 0 {
            Step::Refuse { status, why }
        } else {
            Step::Drop
        }
    }

    fn fail(&self, kind: UpstreamError, why: String) -> Step {
        Step::Fail {
            kind,
            why,
            sent: self.sent > 0,
        }
    }

    /// Looks for the response head; true when one (interim or final) was taken.
    fn response_head(&mut self, w: &mut Wire, cx: &mut Ctx) -> Result<bool, Step> {
        let r = match http::parse_response_resume(
            w.uin,
            cx.limits,
            &self.method,
            &mut self.resp_scan,
        ) {
            Ok(Some(r)) => r,
            Ok(None) => {
                if w.up_eof && w.uin.is_empty() {
                    if let Some(bytes) = self.replay.take() {
                        self.resp_scan = 0;
                        return Err(Step::Replay(bytes));
                    }
                }
                if w.up_eof {
                    let why = if w.uin.is_empty() {
                        "closed the connection before responding"
                    } else {
                        "sent an incomplete response head"
                    };
                    return Err(self.fail(UpstreamError::Closed, why.into()));
                }
                return Ok(false);
            }
            Err(e) => {
                let why = format!("sent an invalid response: {e}");
                return Err(self.fail(UpstreamError::Invalid, why));
            }
        };
        w.uin.consume(r.head_len);
        if r.status == 101 && self.upgrade {
            w.cout.extend_from_slice(&interim_head(&r, self.side()));
            self.sent += 1;
            return Err(Step::Upgrade);
        }
        if r.status == 101 {
            // Switching protocols without being asked (RFC 9110 7.8): what follows is
            // another protocol, never an answer to pass on, and the connection must not go
            // back to the pool.
            let why = "switched protocols (101) unasked".to_string();
            return Err(self.fail(UpstreamError::Invalid, why));
        }
        if (100..200).contains(&r.status) {
            // One that announced a body comes from a broken upstream.
            self.no_reuse |= !r.keep_alive;
            if self.client_minor == 1 {
                w.cout.extend_from_slice(&interim_head(&r, self.side()));
            }
            return Ok(true);
        }
        let mut r = r;
        if !self.modules.is_empty() {
            if let Some(p) = cx.payloads.as_deref_mut() {
                let backend = r.status;
                match p.on_response(&self.modules, &mut r, cx.now) {
                    Outcome::Continue { .. } => {}
                    o => {
                        return Err(Step::Replace {
                            outcome: Box::new(o),
                            backend,
                            keep: self.client_keep && !cx.draining && self.request_done(),
                        })
                    }
                }
            }
        }
        let coding = self.accept.take().and_then(|a| compress_choice(&r, &a));
        self.enc = coding.and_then(|c| cx.encoders.encoder(c)).map(Box::new);
        let coding = self.enc.as_ref().and(coding);
        let dechunk = r.body == Body::Chunked && (self.client_minor == 0 || coding.is_some());
        let until_close = coding.is_none() && (r.body == Body::UntilClose || dechunk);
        // An answer before the whole request body arrived ends the connection: the rest of
        // the body cannot be told from a next request.
        let keep = self.client_keep && !until_close && !cx.draining && self.request_done();
        let head = client_head(
            &r,
            self.side(),
            keep,
            r.body == Body::Chunked && !dechunk,
            self.client_minor == 0 && keep,
            coding,
        );
        w.cout.extend_from_slice(&head);
        self.sent += 1;
        self.client_keep = keep;
        if let (Some(k), Some(cc)) = (self.cors_key.take(), cx.cors.as_deref()) {
            let len = match r.body {
                Body::None => Some(0),
                Body::Length(n) => Some(n),
                _ => None,
            };
            self.capture = len.and_then(|n| cc.capture(k, &r, n)).map(Box::new);
        }
        let reusable = r.keep_alive && !self.no_reuse;
        self.resp = match r.body {
            Body::None | Body::Length(0) => Resp::Done { reusable },
            Body::Length(n) => Resp::Body {
                body: RespBody::Length(n),
                dechunk,
                reusable,
            },
            Body::Chunked => Resp::Body {
                body: RespBody::Chunked(Box::default()),
                dechunk,
                reusable,
            },
            Body::UntilClose => Resp::Body {
                body: RespBody::UntilClose,
                dechunk,
                reusable: false,
            },
        };
        self.head_only = matches!(self.resp, Resp::Body { .. }) && w.uin.is_empty();
        self.status = r.status;
        Ok(true)
    }

    /// Moves response body bytes (`moved` set when any did); true when the body ended
    /// (the response is then done).
    fn response_body(&mut self, w: &mut Wire, moved: &mut bool) -> Result<bool, Step> {
        let Resp::Body {
            body,
            dechunk,
            reusable,
        } = &mut self.resp
        else {
            return Ok(false);
        };
        let room = BUF.saturating_sub(w.cout.len());
        if room == 0 {
            return Ok(false);
        }
        let n = w.uin.len().min(room);
        if n > 0 {
            self.head_only = false;
        }
        let before = w.cout.len();
        let sent = self.sent > 0;
        let finished;
        let consumed;
        let cut_short = match body {
            RespBody::Length(left) => {
                let k = (*left).min(n as u64) as usize;
                if let Some(cap) = &mut self.capture {
                    cap.body.extend_from_slice(&w.uin[..k]);
                    cap.left = cap.left.saturating_sub(k as u64);
                }
                w.cout.extend_from_slice(&w.uin[..k]);
                w.uin.consume(k);
                consumed = k;
                *left -= k as u64;
                finished = *left == 0;
                "closed in the middle of a response"
            }
            RespBody::Chunked(dec) => {
                let cout = &mut *w.cout;
                let res = if *dechunk {
                    dec.feed(&w.uin[..n], |d| cout.extend_from_slice(d))
                } else {
                    dec.forward(&w.uin[..n], cout.vec())
                };
                match res {
                    Ok(used) => {
                        w.uin.consume(used);
                        consumed = used;
                        finished = dec.is_done();
                    }
                    Err(e) => {
                        return Err(Step::Fail {
                            kind: UpstreamError::Invalid,
                            why: format!("sent a bad chunked body: {e:?}"),
                            sent,
                        });
                    }
                }
                "closed in the middle of a chunked response"
            }
            RespBody::UntilClose => {
                w.cout.extend_from_slice(&w.uin[..n]);
                w.uin.consume(n);
                consumed = n;
                finished = w.up_eof && w.uin.is_empty();
                ""
            }
        };
        if !finished && w.up_eof && w.uin.is_empty() && !cut_short.is_empty() {
            return Err(Step::Fail {
                kind: UpstreamError::Closed,
                why: cut_short.into(),
                sent,
            });
        }
        if let Some(enc) = &mut self.enc {
            let plain = w.cout.split_off(before);
            // Flush when nothing more is at hand, so a slow stream is not held.
            let flush = !finished && w.uin.is_empty() && !w.up_readable;
            enc.feed(&plain, flush, w.cout.vec());
            if finished {
                if let Some(enc) = self.enc.take() {
                    enc.finish(w.cout.vec());
                }
            }
        }
        self.bytes_out += (w.cout.len() - before) as u64;
        if finished {
            self.resp = Resp::Done {
                reusable: *reusable && w.uin.is_empty(),
            };
            return Ok(true);
        }
        *moved |= consumed > 0;
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client and a backend on paper: the four buffers, the ends of stream, and what
    /// the exchange borrows from the edge, under a clock that does not move.
    struct Pair {
        cin: Buf,
        cout: Buf,
        uin: Buf,
        uout: Buf,
        client_eof: bool,
        up_eof: bool,
        limits: Limits,
        max_body_size: u64,
        encoders: compress::Budget,
        now: Instant,
    }

    impl Pair {
        fn new() -> Pair {
            Pair {
                cin: Buf::new(),
                cout: Buf::new(),
                uin: Buf::new(),
                uout: Buf::new(),
                client_eof: false,
                up_eof: false,
                limits: Limits::default(),
                max_body_size: 1 << 20,
                encoders: compress::Budget::new(4),
                now: Instant::now(),
            }
        }

        /// The client sends `b`.
        fn client(&mut self, b: &str) {
            self.cin.extend_from_slice(b.as_bytes());
        }

        /// The backend sends `b`.
        fn backend(&mut self, b: &str) {
            self.uin.extend_from_slice(b.as_bytes());
        }

        /// Takes the request head at the front of the client's bytes, as the pipeline
        /// does, and begins its exchange (the upstream head itself is not rewritten here).
        fn begin(&mut self, replay: Option<Vec<u8>>) -> Exchange {
            let req = http::parse_request(&self.cin, &self.limits)
                .expect("valid request")
                .expect("whole head");
            self.cin.consume(req.head_len);
            Exchange::new(&req, ProgramId::at(7), replay, None, None)
        }

        fn step(&mut self, ex: &mut Exchange) -> Step {
            let mut w = Wire {
                cin: &mut self.cin,
                cout: &mut self.cout,
                uin: &mut self.uin,
                uout: &mut self.uout,
                client_eof: self.client_eof,
                up_eof: self.up_eof,
                up_readable: false,
            };
            let mut cx = Ctx {
                limits: &self.limits,
                max_body_size: self.max_body_size,
                draining: false,
                cors: None,
                payloads: None,
                encoders: &self.encoders,
                now: self.now,
            };
            ex.step(&mut w, &mut cx)
        }

        /// What the client has been sent so far (taken).
        fn client_got(&mut self) -> String {
            let s = String::from_utf8_lossy(&self.cout).into_owned();
            self.cout.clear();
            s
        }

        /// What the backend has been sent so far (taken).
        fn backend_got(&mut self) -> String {
            let s = String::from_utf8_lossy(&self.uout).into_owned();
            self.uout.clear();
            s
        }
    }

    const OK2: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    #[test]
    fn pipelined_requests_wait_in_the_client_buffer_for_their_turn() {
        let mut p = Pair::new();
        let second = "GET /b HTTP/1.1\r\nhost: x\r\n\r\n";
        p.client(&format!("GET /a HTTP/1.1\r\nhost: x\r\n\r\n{second}"));
        let mut ex = p.begin(None);
        assert_eq!(p.step(&mut ex), Step::Wait, "no answer yet");
        p.backend(OK2);
        assert_eq!(
            p.step(&mut ex),
            Step::Done {
                reusable: true,
                keep: true
            }
        );
        let out = p.client_got();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nok"), "{out}");
        assert_eq!(ex.status, 200);
        assert_eq!(ex.take_counts(), (0, 2));
        assert_eq!(
            &p.cin[..],
            second.as_bytes(),
            "the next request is untouched"
        );
        assert!(p.backend_got().is_empty(), "no body went upstream");

        // Its turn: the backend sends its answer and a stray byte after it.
        let mut ex = p.begin(None);
        assert!(p.cin.is_empty());
        p.backend(&format!("{OK2}X"));
        assert_eq!(
            p.step(&mut ex),
            Step::Done {
                reusable: false,
                keep: true
            },
            "an upstream with bytes left over is not pooled"
        );
    }

    #[test]
    fn expect_100_continue_passes_the_interim_answer_then_the_body() {
        let mut p = Pair::new();
        p.client(
            "POST /up HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n",
        );
        let mut ex = p.begin(None);
        assert_eq!(p.step(&mut ex), Step::Wait);
        p.backend("HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(p.step(&mut ex), Step::Moved);
        let out = p.client_got();
        assert!(out.starts_with("HTTP/1.1 100 Continue\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\n"), "{out}");
        assert_eq!(ex.status, 0, "an interim answer is not the status");
        p.client("hel");
        assert_eq!(p.step(&mut ex), Step::Moved);
        p.client("lo");
        assert_eq!(p.step(&mut ex), Step::Moved);
        assert_eq!(p.backend_got(), "hello");
        assert!(ex.request_done());
        p.backend("HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(
            p.step(&mut ex),
            Step::Done {
                reusable: true,
                keep: true
            }
        );
        assert_eq!(ex.status, 201);
        assert_eq!(ex.take_counts(), (5, 0));
    }

    #[test]
    fn an_http_1_0_client_is_not_sent_interim_answers() {
        let mut p = Pair::new();
        p.client("POST /up HTTP/1.0\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi");
        let mut ex = p.begin(None);
        p.backend("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(
            p.step(&mut ex),
            Step::Done {
                reusable: true,
                keep: false
            }
        );
        let out = p.client_got();
        // Answered as HTTP/1.1 (the server's version, RFC 9110 6.2), without the 100.
        assert!(out.starts_with("HTTP/1.1 204 "), "{out}");
        assert!(!out.contains("100"), "{out}");
        assert!(out.contains("connection: close\r\n"), "{out}");
    }

    #[test]
    fn an_answer_before_the_whole_body_closes_both_sides() {
        let mut p = Pair::new();
        p.client("POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789");
        let mut ex = p.begin(None);
        assert_eq!(p.step(&mut ex), Step::Moved);
        assert_eq!(p.backend_got(), "0123456789");
        p.backend("HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(p.step(&mut ex), Step::AnsweredEarly);
        let out = p.client_got();
        assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
        assert!(out.contains("connection: close\r\n"), "{out}");
    }

    #[test]
    fn a_backend_closing_in_the_middle_of_a_body_fails_after_the_answer_began() {
        let mut p = Pair::new();
        p.client("GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        let mut ex = p.begin(None);
        p.backend("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabcd");
        assert_eq!(p.step(&mut ex), Step::Moved);
        assert!(p.client_got().ends_with("abcd"));
        p.up_eof = true;
        assert_eq!(
            p.step(&mut ex),
            Step::Fail {
                kind: UpstreamError::Closed,
                why: "closed in the middle of a response".into(),
                sent: true
            }
        );

        let mut p = Pair::new();
        p.client("GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        let mut ex = p.begin(None);
        p.backend("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n");
        p.up_eof = true;
        let step = p.step(&mut ex);
        assert!(
            matches!(
                step,
                Step::Fail {
                    kind: UpstreamError::Closed,
                    sent: true,
                    ..
                }
            ),
            "{step:?}"
        );
    }

    #[test]
    fn a_backend_closing_before_its_answer_gets_502_unless_it_can_be_replayed() {
        let mut p = Pair::new();
        p.client("GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        let mut ex = p.begin(None);
        p.up_eof = true;
        assert_eq!(
            p.step(&mut ex),
            Step::Fail {
                kind: UpstreamError::Closed,
                why: "closed the connection before responding".into(),
                sent: false
            }
        );

        let mut p = Pair::new();
        p.client("GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        let mut ex = p.begin(None);
        p.backend("HTTP/1.1 200 OK\r\ncontent-le");
        p.up_eof = true;
        let step = p.step(&mut ex);
        assert!(
            matches!(&step, Step::Fail { why, sent: false, .. } if why.contains("incomplete")),
            "{step:?}"
        );
    }

    #[test]
    fn a_pooled_connection_closed_before_it_answered_is_replayed_once() {
        let mut p = Pair::new();
        let head = "GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        p.client(head);
        let mut ex = p.begin(Some(head.as_bytes().to_vec()));
        p.uout.extend_from_slice(head.as_bytes());
        p.up_eof = true;
        assert_eq!(p.step(&mut ex), Step::Replay(head.as_bytes().to_vec()));
        // The driver opens a fresh connection with the same bytes.
        p.uout = head.as_bytes().to_vec().into();
        p.up_eof = false;
        assert_eq!(p.step(&mut ex), Step::Wait);
        p.up_eof = true;
        let step = p.step(&mut ex);
        assert!(
            matches!(step, Step::Fail { sent: false, .. }),
            "a second close is a failure: {step:?}"
        );

        let mut p = Pair::new();
        p.client(head);
        let mut ex = p.begin(Some(head.as_bytes().to_vec()));
        p.up_eof = true;
        assert!(matches!(p.step(&mut ex), Step::Replay(_)));
        p.up_eof = false;
        p.backend(OK2);
        assert_eq!(
            p.step(&mut ex),
            Step::Done {
                reusable: true,
                keep: true
            }
        );
    }

    #[test]
    fn a_client_leaving_in_the_middle_of_its_body_is_dropped() {
        let mut p = Pair::new();
        p.client("PUT / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc");
        let mut ex = p.begin(None);
        p.client_eof = true;
        assert_eq!(p.step(&mut ex), Step::Drop);
    }

    #[test]
    fn chunked_request_bodies_are_checked_before_anything_is_sent() {
        let mut p = Pair::new();
        p.max_body_size = 4;
        p.client(
            "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n8\r\n12345678\r\n",
        );
        let mut ex = p.begin(None);
        assert_eq!(
            p.step(&mut ex),
            Step::Refuse {
                status: 413,
                why: "request body too large"
            }
        );

        let mut p = Pair::new();
        p.client("POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n");
        let mut ex = p.begin(None);
        assert_eq!(
            p.step(&mut ex),
            Step::Refuse {
                status: 400,
                why: "bad chunked body"
            }
        );

        // Once the answer began, a broken body can only close the connection.
        let mut p = Pair::new();
        p.client("POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n");
        let mut ex = p.begin(None);
        p.backend("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab");
        assert_eq!(p.step(&mut ex), Step::Moved);
        p.client("zz\r\n");
        assert_eq!(p.step(&mut ex), Step::Drop);
    }

    #[test]
    fn a_chunked_request_body_passes_with_its_trailers_checked() {
        let mut p = Pair::new();
        p.client("POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n");
        let mut ex = p.begin(None);
        p.client("3\r\nabc\r\n0\r\nx-sum: 1\r\ncontent-length: 9\r\n\r\n");
        assert_eq!(p.step(&mut ex), Step::Moved);
        assert!(ex.request_done());
        let sent = p.backend_got();
        assert!(sent.starts_with("3\r\nabc\r\n0\r\n"), "{sent}");
        assert!(sent.contains("x-sum: 1\r\n"), "{sent}");
        assert!(
            !sent.contains("content-length"),
            "forbidden trailer removed: {sent}"
        );
    }

    #[test]
    fn an_asked_upgrade_becomes_a_tunnel_and_an_unasked_one_fails() {
        let mut p = Pair::new();
        p.client(
            "GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        );
        let mut ex = p.begin(None);
        p.backend("HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\nframe");
        assert_eq!(p.step(&mut ex), Step::Upgrade);
        assert!(p.client_got().starts_with("HTTP/1.1 101 "));
        assert_eq!(&p.uin[..], b"frame", "tunnel bytes are left for the tunnel");

        let mut p = Pair::new();
        p.client("GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        let mut ex = p.begin(None);
        p.backend(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: evil\r\nconnection: upgrade\r\n\r\n",
        );
        let step = p.step(&mut ex);
        assert!(
            matches!(
                step,
                Step::Fail {
                    kind: UpstreamError::Invalid,
                    sent: false,
                    ..
                }
            ),
            "{step:?}"
        );
        assert!(p.client_got().is_empty());
    }

    #[test]
    fn a_body_until_close_ends_the_client_connection_with_it() {
        let mut p = Pair::new();
        p.client("GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        let mut ex = p.begin(None);
        p.backend("HTTP/1.0 200 OK\r\n\r\nstream");
        assert_eq!(p.step(&mut ex), Step::Moved);
        let out = p.client_got();
        assert!(out.contains("connection: close\r\n"), "{out}");
        assert!(out.ends_with("stream"), "{out}");
        p.backend(" end");
        p.up_eof = true;
        assert_eq!(
            p.step(&mut ex),
            Step::Done {
                reusable: false,
                keep: false
            }
        );
        assert_eq!(p.client_got(), " end");
    }

    #[test]
    fn a_full_client_buffer_holds_the_response_back() {
        let mut p = Pair::new();
        p.client("GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        let mut ex = p.begin(None);
        let body = "x".repeat(BUF * 2);
        p.backend(&format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ));
        assert_eq!(p.step(&mut ex), Step::Moved);
        assert_eq!(p.cout.len(), BUF, "at most a buffer's worth at a time");
        assert_eq!(
            p.step(&mut ex),
            Step::Wait,
            "nothing moves until the client reads"
        );
        let mut got = p.client_got().len();
        while !matches!(p.step(&mut ex), Step::Done { .. }) {
            got += p.client_got().len();
        }
        got += p.client_got().len();
        let head = "HTTP/1.1 200 OK\r\n".len();
        assert!(got > body.len() + head, "every byte arrived: {got}");
    }
}

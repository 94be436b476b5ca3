//! Static files on the wire: the answer head and a small file in one write, a large one
//! sent from the file a chunk at a time (sendfile), or read and compressed as it goes.
//! What to send (mount lookup, ranges, conditional requests) is decided in
//! `static_files.rs`; this is how it is sent.

use super::*;

/// Static files up to this size are read into the client buffer; larger ones are sent from
/// the file (sendfile) a chunk at a time.
const SMALL_FILE: u64 = 32 << 10;
/// Most bytes of a file handed to one sendfile call.
const FILE_CHUNK: usize = 1 << 20;
/// A static file being sent.
pub(super) struct FileSend {
    file: std::fs::File,
    pos: u64,
    end: u64,
    keep: bool,
    /// Compressing: the file is read and encoded instead of sent with sendfile.
    enc: Option<Box<compress::Encoder>>,
}

impl Edge {
    /// Answers from a static mount (the request head is already consumed).
    pub(super) fn serve_static(
        &mut self,
        c: &mut Conn,
        method: &str,
        o: static_files::Outcome,
        keep: bool,
    ) {
        use static_files::Outcome;
        match o {
            Outcome::Pass => {}
            Outcome::Answer {
                status,
                headers,
                body,
            } => {
                let ct = (!body.is_empty()).then_some(TEXT);
                answer(c, method, status, &headers, ct, &body, !keep);
                self.account(c);
            }
            Outcome::File {
                status,
                headers,
                file,
                start,
                len,
                compress: coding,
            } => {
                let mut head =
                    format!("HTTP/1.1 {status} {}\r\n", http::reason(status)).into_bytes();
                if coding.is_some() {
                    head.extend_from_slice(b"transfer-encoding: chunked\r\n");
                }
                head.extend_from_slice(&headers);
                if coding.is_none() {
                    head.extend_from_slice(format!("content-length: {len}\r\n").as_bytes());
                }
                if !keep {
                    head.extend_from_slice(b"connection: close\r\n");
                }
                head.extend_from_slice(b"\r\n");
                c.cout.extend_from_slice(&head);
                if let Some(st) = &mut c.stat {
                    st.status = status;
                }
                let next = if keep { Phase::head() } else { Phase::CLOSING };
                if method == "HEAD" || len == 0 {
                    c.phase = next;
                    self.account(c);
                    return;
                }
                if let Some(coding) = coding {
                    // The lookup chose compression only with an encoder available.
                    let Some(enc) = self.encoders.encoder(coding) else {
                        log::error!("{}: no encoder for a compressed static answer", c.peer);
                        c.dead = true;
                        return;
                    };
                    c.phase = Phase::File(Box::new(FileSend {
                        file,
                        pos: start,
                        end: start + len,
                        keep,
                        enc: Some(Box::new(enc)),
                    }));
                    return;
                }
                if len <= SMALL_FILE {
                    // Small: one read, and head and body leave together.
                    use std::os::unix::fs::FileExt;
                    let at = c.cout.len();
                    c.cout.resize(at + len as usize, 0);
                    match file.read_exact_at(&mut c.cout[at..], start) {
                        Ok(()) => {
                            if let Some(st) = &mut c.stat {
                                st.bytes_out += len;
                            }
                            c.phase = next;
                            self.account(c);
                        }
                        Err(e) => {
                            // The file changed under us: the head is out, so close.
                            log::warn!("{}: static file read failed: {e}", c.peer);
                            c.cout.truncate(at);
                            c.dead = true;
                        }
                    }
                    return;
                }
                c.phase = Phase::File(Box::new(FileSend {
                    file,
                    pos: start,
                    end: start + len,
                    keep,
                    enc: None,
                }));
            }
        }
    }

    /// Moves the next part of the static file being sent; true when anything moved.
    pub(super) fn send_file_part(&mut self, c: &mut Conn) -> bool {
        let mut progress = false;
        let Phase::File(f) = &mut c.phase else {
            return false;
        };
        if let Some(enc) = &mut f.enc {
            // Compressing: read a piece, encode it, queue the chunk.
            if c.cout.len() < BUF && f.pos < f.end {
                use std::os::unix::fs::FileExt;
                let want = (f.end - f.pos).min(self.scratch.len() as u64) as usize;
                match f.file.read_at(&mut self.scratch[..want], f.pos) {
                    Ok(0) => {
                        log::warn!("{}: static file shrank while being sent", c.peer);
                        c.dead = true;
                    }
                    Ok(n) => {
                        f.pos += n as u64;
                        let before = c.cout.len();
                        enc.feed(&self.scratch[..n], false, c.cout.vec());
                        if f.pos >= f.end {
                            if let Some(enc) = f.enc.take() {
                                enc.finish(c.cout.vec());
                            }
                        }
                        if let Some(st) = &mut c.stat {
                            st.bytes_out += (c.cout.len() - before) as u64;
                        }
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::warn!("{}: static file read failed: {e}", c.peer);
                        c.dead = true;
                    }
                }
            }
        } else if c.cout.is_empty() && c.c_writable && f.pos < f.end {
            let n = (f.end - f.pos).min(FILE_CHUNK as u64) as usize;
            match c.client.send_file(&f.file, f.pos, n) {
                Ok(0) => {
                    log::warn!("{}: static file shrank while being sent", c.peer);
                    c.dead = true;
                }
                Ok(k) => {
                    f.pos += k as u64;
                    if let Some(st) = &mut c.stat {
                        st.bytes_out += k as u64;
                    }
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.c_writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("{}: sendfile: {e}", c.peer);
                    c.dead = true;
                }
            }
        }
        if f.pos >= f.end && f.enc.is_none() && !c.dead {
            c.phase = if f.keep {
                Phase::head()
            } else {
                Phase::CLOSING
            };
            self.account(c);
            progress = true;
        }
        progress
    }
}

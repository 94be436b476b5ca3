//! Static file mounts (`[[mothership.static_dirs]]`): which mount a request belongs to, which
//! file it names, and the answer's status and headers (conditional requests, byte ranges,
//! precompressed siblings). The file itself is sent by the edge.
//!
//! Safe by construction: the path is percent-decoded once and then refused if a segment is
//! `..` or holds a NUL or a slash; the file found is resolved with every symlink followed
//! and must still be inside the mount's folder (resolved the same way); names starting
//! with a dot are hidden unless `dotfiles = true`.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::compress;
use crate::manifest::ids::BindId;
use crate::manifest::Manifest;
use crate::proto::coding::{media_type, negotiate};
use crate::proto::http::RequestHead;
use crate::proto::httpdate;

struct Mount {
    /// Without a trailing slash (`""` for a mount at `/`).
    prefix: String,
    root: PathBuf,
    /// Its bind, or every bind.
    bind: Option<BindId>,
    dotfiles: bool,
}

/// What to do with a request.
pub enum Outcome {
    /// Not for a mount (or the file does not exist): go on with the routes.
    Pass,
    /// An answer with a small body (redirect, 304, 400, 404, 416).
    Answer {
        status: u16,
        /// Header lines, each ending in CRLF.
        headers: Vec<u8>,
        body: Vec<u8>,
    },
    /// A file (or part of it) to send.
    File {
        status: u16,
        headers: Vec<u8>,
        file: File,
        start: u64,
        len: u64,
        /// Compress on the fly with this coding (the headers already say so; the length
        /// is unknown, so the body goes chunked).
        compress: Option<&'static str>,
    },
}

pub struct Statics {
    mounts: Vec<Mount>,
    compression: bool,
}

/// `%XX` decoding; None for a malformed escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

fn etag_of(m: &fs::Metadata) -> String {
    let t = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    format!(
        "\"{:x}-{:x}{:08x}\"",
        m.len(),
        t.as_secs(),
        t.subsec_nanos()
    )
}

fn mtime_secs(m: &fs::Metadata) -> u64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Whether `If-None-Match` matches `etag` (weak comparison).
fn none_match(values: &[&str], etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let mine = strip(etag);
    values
        .iter()
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || strip(t) == mine)
}

/// A single `bytes=` range against a file of `size` bytes: Ok(None) when the header is to be
/// ignored (not bytes, several ranges, malformed), Err(()) when it cannot be satisfied.
#[allow(clippy::result_unit_err)]
pub fn parse_range(v: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if a.is_empty() {
        // Suffix: the last n bytes.
        let Some(n) = num(b) else { return Ok(None) };
        if n == 0 || size == 0 {
            return Err(());
        }
        let n = n.min(size);
        return Ok(Some((size - n, n)));
    }
    let Some(first) = num(a) else { return Ok(None) };
    let last = if b.is_empty() {
        size.saturating_sub(1)
    } else {
        match num(b) {
            Some(l) if l >= first => l.min(size.saturating_sub(1)),
            _ => return Ok(None),
        }
    };
    if first >= size {
        return Err(());
    }
    Ok(Some((first, last - first + 1)))
}

impl Statics {
    pub fn new(m: &Manifest) -> Statics {
        let mounts = m
            .static_dirs
            .iter()
            .map(|s| Mount {
                prefix: s.prefix.trim_end_matches('/').to_string(),
                root: s.path.clone(),
                bind: s.bind_id,
                dotfiles: s.dotfiles,
            })
            .collect();
        Statics {
            mounts,
            compression: m.compression,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty()
    }

    /// `static:<prefix>/` for each mount, for the metrics (mounts sharing a prefix on
    /// different binds get ` #2`... from `Stats::new`).
    pub fn labels(&self) -> Vec<String> {
        self.mounts
            .iter()
            .map(|m| format!("static:{}/", m.prefix))
            .collect()
    }

    /// The mount for `path` on `bind`: the longest prefix matching on whole segments.
    fn mount_for(&self, bind: BindId, path: &str) -> Option<(usize, &Mount)> {
        self.mounts
            .iter()
            .enumerate()
            .filter(|(_, m)| m.bind.is_none_or(|b| b == bind))
            .filter(|(_, m)| {
                path.strip_prefix(m.prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .max_by_key(|(_, m)| m.prefix.len())
    }

    /// The mount index (for the metrics) and what to do. `now_secs`: wall-clock time, so
    /// that a file modified in the future does not get a Last-Modified there.
    /// `may_compress`: an encoder is available for on-the-fly compression (the edge's
    /// budget has room); without one, the file is sent as it is.
    pub fn lookup(
        &self,
        bind: BindId,
        req: &RequestHead,
        may_compress: bool,
    ) -> (Option<usize>, Outcome) {
        if req.method != "GET" && req.method != "HEAD" {
            return (None, Outcome::Pass);
        }
        let path = req.path();
        let Some((i, m)) = self.mount_for(bind, path) else {
            return (None, Outcome::Pass);
        };
        (Some(i), self.resolve(m, req, path, may_compress))
    }

    fn resolve(&self, m: &Mount, req: &RequestHead, path: &str, may_compress: bool) -> Outcome {
        let rest = &path[m.prefix.len()..];
        let Some(decoded) = percent_decode(rest) else {
            return bad("malformed percent-encoding");
        };
        let mut rel = PathBuf::new();
        let segments: Vec<&[u8]> = decoded.split(|&c| c == b'/').collect();
        for seg in &segments {
            match *seg {
                b"" | b"." => continue,
                b".." => return bad("`..` in a static path"),
                s if s.contains(&0) || s.contains(&b'\\') => {
                    return bad("invalid byte in a static path")
                }
                s if s.starts_with(b".") && !m.dotfiles => return Outcome::Pass,
                s => rel.push(OsStr::from_bytes(s)),
            }
        }
        let dir_wanted = rest.is_empty() || rest.ends_with('/');
        let root = Beneath::new(&m.root);
        let (mut f, mut meta) = match root.open(&rel) {
            Open::File(f, meta) => (f, meta),
            Open::Absent => return Outcome::Pass,
            Open::Outside => {
                log::debug!("static: {} leaves its folder; refused", rel.display());
                return Outcome::Answer {
                    status: 404,
                    headers: Vec::new(),
                    body: b"not found\n".to_vec(),
                };
            }
        };
        if meta.is_dir() {
            if !dir_wanted {
                // Keep the whole original path (mount prefix included) and the query.
                let mut loc = format!("{path}/");
                if let Some(q) = req.query() {
                    loc.push('?');
                    loc.push_str(q);
                }
                return Outcome::Answer {
                    status: 301,
                    headers: format!("location: {loc}\r\n").into_bytes(),
                    body: Vec::new(),
                };
            }
            rel.push("index.html");
            match root.open(&rel) {
                Open::File(f2, m2) if m2.is_file() => (f, meta) = (f2, m2),
                _ => return Outcome::Pass,
            }
        } else if dir_wanted && !rest.is_empty() {
            // `/file.txt/`: not a folder.
            return Outcome::Pass;
        }
        if !meta.is_file() {
            return Outcome::Pass;
        }
        let ext = rel
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let content_type = media_type(&ext);
        let values = |name: &str| -> Vec<&str> {
            req.headers
                .iter()
                .filter(|h| h.is(name))
                .map(|h| h.value_str())
                .collect()
        };
        // Precompressed siblings, looked for only when the client takes br or gzip and asks
        // for no range. Vary is sent with the answers that depend on Accept-Encoding; an
        // identity answer without it is safe for a cache to give anyone.
        let accept = values("accept-encoding");
        let wants = |c: &str| negotiate(&accept, &[c]).is_some();
        let mut siblings = Vec::new();
        let ranged = req.header("range").is_some();
        for (coding, suffix) in [("br", "br"), ("gzip", "gz")] {
            if ranged || !wants(coding) {
                continue;
            }
            let mut name = rel.clone().into_os_string();
            name.push(".");
            name.push(suffix);
            if let Open::File(sf, sm) = root.open(Path::new(&name)) {
                if sm.is_file() {
                    siblings.push((coding, sf, sm));
                }
            }
        }
        let mut vary = !siblings.is_empty();
        // A `.svgz` file is gzip-compressed SVG: say so, and never compress it again.
        let mut encoding = (ext == "svgz").then_some("gzip");
        if !siblings.is_empty() {
            let offered: Vec<&str> = siblings.iter().map(|s| s.0).collect();
            if let Some(c) = negotiate(&accept, &offered) {
                if let Some((c, sf, sm)) = siblings.into_iter().find(|(x, _, _)| *x == c) {
                    (f, meta) = (sf, sm);
                    encoding = Some(c);
                }
            }
        }
        let mut etag = etag_of(&meta);
        let mtime = mtime_secs(&meta);
        let size = meta.len();
        // Compressed on the fly (decided here so that a 304 carries the same validators and
        // Vary as the 200 it stands for): an HTTP/1.1 client, no range, not already encoded.
        let compress = if self.compression
            && may_compress
            && encoding.is_none()
            && req.minor == 1
            && req.header("range").is_none()
        {
            compress::choose(&accept, Some(content_type), false, Some(size), false)
        } else {
            None
        };
        if compress.is_some() {
            // Another representation: the validator becomes weak.
            etag = format!("W/{etag}");
            vary = true;
        }
        let mut h = format!(
            "content-type: {content_type}\r\netag: {etag}\r\nlast-modified: {}\r\naccept-ranges: bytes\r\n",
            httpdate::format(mtime)
        );
        if let Some(c) = encoding.or(compress) {
            h.push_str(&format!("content-encoding: {c}\r\n"));
        }
        if vary {
            h.push_str("vary: accept-encoding\r\n");
        }
        // Conditional requests: If-None-Match wins over If-Modified-Since.
        let inm = values("if-none-match");
        let not_modified = if !inm.is_empty() {
            none_match(&inm, &etag)
        } else {
            req.header("if-modified-since")
                .and_then(|v| httpdate::parse(v.value_str()))
                .is_some_and(|since| mtime <= since)
        };
        if not_modified {
            return Outcome::Answer {
                status: 304,
                headers: h.into_bytes(),
                body: Vec::new(),
            };
        }
        // Ranges, unless If-Range names another version.
        let if_range_ok = match req.header("if-range").map(|v| v.value_str().trim()) {
            None => true,
            Some(v) if v.starts_with('"') => v == etag,
            Some(v) => httpdate::parse(v) == Some(mtime),
        };
        if let (Some(r), true) = (req.header("range"), if_range_ok) {
            match parse_range(r.value_str(), size) {
                Ok(Some((start, len))) => {
                    h.push_str(&format!(
                        "content-range: bytes {start}-{}/{size}\r\n",
                        start + len - 1
                    ));
                    return Outcome::File {
                        status: 206,
                        headers: h.into_bytes(),
                        file: f,
                        start,
                        len,
                        compress: None,
                    };
                }
                Ok(None) => {}
                Err(()) => {
                    return Outcome::Answer {
                        status: 416,
                        headers: format!("content-range: bytes */{size}\r\n").into_bytes(),
                        body: b"range not satisfiable\n".to_vec(),
                    }
                }
            }
        }
        Outcome::File {
            status: 200,
            headers: h.into_bytes(),
            file: f,
            start: 0,
            len: size,
            compress,
        }
    }
}

// Short-lived on the stack; boxing the metadata would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Open {
    File(File, fs::Metadata),
    Absent,
    /// It exists, but only outside the folder (through a symlink).
    Outside,
}

/// A mount's folder, opened once per request, under which paths are opened following
/// symlinks only as long as they stay inside it. On Linux one `openat2(RESOLVE_BENEATH)`
/// call per file does it, race-free; elsewhere (or where a sandbox refuses `openat2`), the
/// path is resolved with `realpath` and checked first.
struct Beneath<'a> {
    root: &'a Path,
    #[cfg(target_os = "linux")]
    dir: Option<std::os::fd::OwnedFd>,
}

impl<'a> Beneath<'a> {
    fn new(root: &'a Path) -> Beneath<'a> {
        Beneath {
            root,
            #[cfg(target_os = "linux")]
            dir: open_dir(root).ok(),
        }
    }

    fn open(&self, rel: &Path) -> Open {
        #[cfg(target_os = "linux")]
        {
            let Some(dir) = &self.dir else {
                return Open::Absent;
            };
            match openat2_beneath(dir, rel) {
                Ok(f) => {
                    return match f.metadata() {
                        Ok(m) => Open::File(f, m),
                        Err(_) => Open::Absent,
                    }
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EXDEV) => return Open::Outside,
                    Some(libc::ENOSYS | libc::EPERM) => {}
                    _ => return Open::Absent,
                },
            }
        }
        open_by_realpath(self.root, rel)
    }
}

/// Opens the regular file `rel` under `root`, following symlinks only while they stay
/// inside (as static mounts do): the file and its length, or why not.
pub fn open_confined(root: &Path, rel: &Path) -> Result<(File, u64), &'static str> {
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err("path outside the folder");
    }
    match Beneath::new(root).open(rel) {
        Open::File(f, m) if m.is_file() => Ok((f, m.len())),
        Open::File(..) => Err("not a regular file"),
        Open::Absent => Err("no such file"),
        Open::Outside => Err("path outside the folder"),
    }
}

#[cfg(test)]
fn open_beneath(root: &Path, rel: &Path) -> Open {
    Beneath::new(root).open(rel)
}

/// The portable way: resolve the path with `realpath`, check it is inside, then open it.
fn open_by_realpath(root: &Path, rel: &Path) -> Open {
    let Ok(root) = fs::canonicalize(root) else {
        return Open::Absent;
    };
    let Ok(real) = fs::canonicalize(root.join(rel)) else {
        return Open::Absent;
    };
    if !real.starts_with(&root) {
        return Open::Outside;
    }
    use std::os::unix::fs::OpenOptionsExt;
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&real);
    match opened.and_then(|f| f.metadata().map(|m| (f, m))) {
        Ok((f, m)) => Open::File(f, m),
        Err(_) => Open::Absent,
    }
}

#[cfg(target_os = "linux")]
fn c_path(p: &Path) -> std::io::Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::ENOENT))
}

#[cfg(target_os = "linux")]
fn open_dir(root: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let root_c = c_path(root)?;
    // SAFETY: a valid C string; the descriptor returned is owned below.
    let dir = unsafe {
        libc::open(
            root_c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `dir` was just opened and is owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(dir) })
}

#[cfg(target_os = "linux")]
fn openat2_beneath(dir: &std::os::fd::OwnedFd, rel: &Path) -> std::io::Result<File> {
    use std::os::fd::FromRawFd;
    let c = c_path;
    let rel_c = if rel.as_os_str().is_empty() {
        c(Path::new("."))?
    } else {
        c(rel)?
    };
    // SAFETY: a plain-data struct; zero is valid for every field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    // O_NONBLOCK: opening a FIFO (or a device) someone put in the folder must not block
    // the loop; such files are then refused as not regular.
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    use std::os::fd::AsRawFd;
    // SAFETY: valid descriptor, C string and `open_how` of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            rel_c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd as i32) })
}

fn bad(why: &str) -> Outcome {
    log::debug!("static: {why}");
    Outcome::Answer {
        status: 400,
        headers: Vec::new(),
        body: b"bad request path\n".to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 10))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 10))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 10))));
        assert_eq!(parse_range("bytes=-1000", 100), Ok(Some((0, 100))));
        assert_eq!(parse_range("bytes=50-1000", 100), Ok(Some((50, 50))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=-0", 100), Err(()));
        assert_eq!(parse_range("bytes=0-0", 0), Err(()));
        assert_eq!(parse_range("bytes=5-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=a-b", 100), Ok(None));
        assert_eq!(parse_range("bytes=+1-2", 100), Ok(None));
    }

    #[test]
    fn both_ways_of_opening_stay_inside() {
        let d = std::env::temp_dir().join(format!("ms-static-unit-{}", std::process::id()));
        let root = d.join("root");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(d.join("secret"), "s").unwrap();
        fs::write(root.join("sub/f"), "f").unwrap();
        let _ = std::os::unix::fs::symlink("../secret", root.join("out"));
        let _ = std::os::unix::fs::symlink("/etc/hostname", root.join("abs"));
        let _ = std::os::unix::fs::symlink("sub/f", root.join("in"));
        let fifo = std::ffi::CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) };
        for open in [open_beneath, open_by_realpath] {
            assert!(matches!(open(&root, Path::new("sub/f")), Open::File(..)));
            assert!(matches!(open(&root, Path::new("in")), Open::File(..)));
            assert!(matches!(open(&root, Path::new("")), Open::File(_, m) if m.is_dir()));
            assert!(matches!(open(&root, Path::new("out")), Open::Outside));
            assert!(matches!(open(&root, Path::new("abs")), Open::Outside));
            assert!(matches!(open(&root, Path::new("nope")), Open::Absent));
            // A FIFO opens without blocking and is seen for what it is.
            assert!(matches!(open(&root, Path::new("fifo")), Open::File(_, m) if !m.is_file()));
        }
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn decoding_and_etags() {
        assert_eq!(percent_decode("/a%20b").unwrap(), b"/a b");
        assert_eq!(percent_decode("/%2e%2E").unwrap(), b"/..");
        assert_eq!(percent_decode("/%252e").unwrap(), b"/%2e");
        assert!(percent_decode("/%2").is_none());
        assert!(percent_decode("/%zz").is_none());
        assert!(none_match(&["\"a\", W/\"b\""], "\"b\""));
        assert!(none_match(&["*"], "\"x\""));
        assert!(!none_match(&["\"a\""], "\"b\""));
    }
}

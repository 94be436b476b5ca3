//! The programs' log files (`log_dir`, `log_file`): written by one thread fed by a
//! bounded queue, as the terminal is by the output writer, so that the loop never waits
//! on a disk. When the queue is full the loop stops reading the children's pipes
//! (backpressure, nothing dropped) and the writer wakes it once there is room.
//!
//! Each file is rotated before it would grow past `log_max_size`, at a line boundary:
//! `NAME.log` becomes `NAME.log.1`, the older archives move up one and the last of
//! `log_keep` goes (as s6-log and svlogd keep theirs); with `log_compress` an archive is
//! gzipped as it is made, by a compressing thread (the writer goes on meanwhile). A file
//! that cannot be written (a full disk) is reported once, its lines counted as lost to
//! it (they stay in the journal), and tried again with the next lines. `reopen`
//! (SIGUSR1, `mothership reopen`) closes every file so the next lines open it afresh,
//! after an external logrotate.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use super::spool::Spool;
use crate::manifest::LogFiles as Settings;

/// Above this many queued bytes the loop stops reading child output.
const HIGH_WATER: usize = 4 << 20;
/// The writer wakes a paused loop once the queue is back under this.
const LOW_WATER: usize = 1 << 20;

/// The loop's handle on the log files' writer.
pub struct Files {
    spool: Arc<Spool<usize>>,
    /// Lines that could not be written to their file.
    lost: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
    paths: Vec<Option<PathBuf>>,
}

impl Files {
    /// Starts the writer for `paths` (one per program, None for those without a file).
    /// Folders are made as needed when a file is first opened.
    pub fn start(paths: Vec<Option<PathBuf>>, settings: &Settings) -> io::Result<Files> {
        let spool = Arc::new(Spool::new(HIGH_WATER, LOW_WATER));
        let lost = Arc::new(AtomicU64::new(0));
        let (s, l) = (spool.clone(), lost.clone());
        let files: Vec<Option<LogFile>> =
            paths.iter().map(|p| p.clone().map(LogFile::new)).collect();
        let settings = settings.clone();
        let handle = std::thread::Builder::new()
            .name("log-files".into())
            .spawn(move || writer(&s, &l, files, &settings))?;
        Ok(Files {
            spool,
            lost,
            handle: Some(handle),
            paths,
        })
    }

    /// The file of program `i`, if it has one.
    pub fn path(&self, i: usize) -> Option<&Path> {
        self.paths.get(i).and_then(|p| p.as_deref())
    }

    pub fn set_waker(&self, waker: Arc<mio::Waker>) {
        self.spool.set_waker(waker);
    }

    /// Queues lines (whole, each ending with a line feed) for program `i`'s file.
    pub fn push(&self, i: usize, data: Vec<u8>) {
        // Only refused once the files are finished: there is nowhere left to write.
        let _ = self.spool.push(i, data);
    }

    /// Too much is waiting: stop reading the children until the writer says.
    pub fn congested(&self) -> bool {
        self.spool.congested()
    }

    /// Every file is closed and opened again with its next line.
    pub fn reopen(&self) {
        self.spool.flag();
    }

    /// Lines lost to their files so far.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// The count of lines lost to their files, for the metrics.
    pub fn lost_counter(&self) -> Arc<AtomicU64> {
        self.lost.clone()
    }

    /// Writes what is queued and ends the writer (waiting at most a few seconds).
    pub fn finish(&mut self) {
        self.spool.close();
        if let Some(h) = self.handle.take() {
            let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !h.is_finished() && std::time::Instant::now() < end {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One program's file, as the writer keeps it.
struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    /// Its last write failed (said once until one works again).
    failing: bool,
    /// Its newest archive being compressed, by the compressing thread: the writer goes
    /// on with every file meanwhile. Says when it is done.
    compressing: Option<mpsc::Receiver<()>>,
}

impl LogFile {
    fn new(path: PathBuf) -> LogFile {
        LogFile {
            path,
            file: None,
            size: 0,
            failing: false,
            compressing: None,
        }
    }

    /// Waits for the compression of its newest archive, if one is under way.
    fn compressed(&mut self) {
        if let Some(done) = self.compressing.take() {
            let _ = done.recv();
        }
    }

    fn open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            // Never through a symlink someone left in its place.
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&self.path)?;
            self.size = f.metadata()?.len();
            self.file = Some(f);
        }
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("not open"))
    }

    /// Writes whole lines, rotating at line boundaries so that no file grows past the
    /// limit (a single line longer than the limit gets a file of its own). On an error,
    /// also says how many of the bytes (from the end) did not reach the file.
    fn write(
        &mut self,
        data: &[u8],
        s: &Settings,
        gz: &mut Gzipper,
    ) -> Result<(), (usize, io::Error)> {
        let mut rest = data;
        self.write_some(&mut rest, s, gz)
            .map_err(|e| (rest.len(), e))
    }

    fn write_some(&mut self, data: &mut &[u8], s: &Settings, gz: &mut Gzipper) -> io::Result<()> {
        while !data.is_empty() {
            self.open()?;
            let room = s.max_size.saturating_sub(self.size) as usize;
            let take = if data.len() <= room {
                data.len()
            } else {
                // The lines that fit; none when the file already has some.
                match data[..room.min(data.len())]
                    .iter()
                    .rposition(|&b| b == b'\n')
                {
                    Some(nl) => nl + 1,
                    None if self.size == 0 => data
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(data.len(), |nl| nl + 1),
                    None => 0,
                }
            };
            if take == 0 {
                self.rotate(s, gz)?;
                continue;
            }
            let f = self.open()?;
            f.write_all(&data[..take])?;
            self.size += take as u64;
            *data = &data[take..];
        }
        Ok(())
    }

    /// `NAME.log` becomes `NAME.log.1` (compressed when asked), the older ones move up.
    fn rotate(&mut self, s: &Settings, gz: &mut Gzipper) -> io::Result<()> {
        self.file = None;
        self.size = 0;
        // The archives move up one: not while the last is still being compressed.
        self.compressed();
        if s.keep == 0 {
            return std::fs::remove_file(&self.path);
        }
        let name = |k: u32, gz: bool| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{k}{}", if gz { ".gz" } else { "" }));
            PathBuf::from(p)
        };
        for gz in [false, true] {
            let _ = std::fs::remove_file(name(s.keep, gz));
        }
        for k in (1..s.keep).rev() {
            for gz in [false, true] {
                let from = name(k, gz);
                if from.exists() {
                    std::fs::rename(&from, name(k + 1, gz))?;
                }
            }
        }
        let first = name(1, false);
        std::fs::rename(&self.path, &first)?;
        if s.compress {
            self.compressing = gz.queue(first, name(1, true));
        }
        Ok(())
    }
}

type Job = (PathBuf, PathBuf, mpsc::Sender<()>);

/// One thread that compresses the archives of every file, one after the other (a burst
/// of rotations takes one core, not one each), started with the first.
#[derive(Default)]
struct Gzipper {
    jobs: Option<mpsc::Sender<Job>>,
    handle: Option<JoinHandle<()>>,
}

impl Gzipper {
    /// Queues `from` to be compressed into `to`; what says it is done, or None when it
    /// was compressed here (no thread could be started).
    fn queue(&mut self, from: PathBuf, to: PathBuf) -> Option<mpsc::Receiver<()>> {
        if self.jobs.is_none() {
            let (tx, rx) = mpsc::channel::<Job>();
            let spawned = std::thread::Builder::new()
                .name("log-gzip".into())
                .spawn(move || {
                    for (from, to, done) in rx {
                        compress(&from, &to);
                        let _ = done.send(());
                    }
                });
            if let Ok(h) = spawned {
                self.jobs = Some(tx);
                self.handle = Some(h);
            }
        }
        let (done, said) = mpsc::channel();
        match &self.jobs {
            Some(tx) => match tx.send((from, to, done)) {
                Ok(()) => Some(said),
                Err(mpsc::SendError((from, to, _))) => {
                    compress(&from, &to);
                    None
                }
            },
            None => {
                compress(&from, &to);
                None
            }
        }
    }

    /// Compresses what is queued and ends the thread.
    fn finish(&mut self) {
        self.jobs = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn compress(from: &Path, to: &Path) {
    if let Err(e) = gzip(from, to) {
        log::warn!("log file {}: compressing it: {e}", from.display());
    }
}

/// Compresses `from` into `to` (made whole under a temporary name, then renamed, so
/// that a reader never sees half of it) and removes `from`.
fn gzip(from: &Path, to: &Path) -> io::Result<()> {
    let mut tmp = to.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut input = File::open(from)?;
    let out = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    io::copy(&mut input, &mut enc)?;
    enc.finish()?;
    std::fs::rename(&tmp, to)?;
    std::fs::remove_file(from)
}

fn writer(
    s: &Spool<usize>,
    lost: &AtomicU64,
    mut files: Vec<Option<LogFile>>,
    settings: &Settings,
) {
    let mut gz = Gzipper::default();
    while let Some(batch) = s.take() {
        if batch.flagged {
            for f in files.iter_mut().flatten() {
                f.file = None;
            }
            log::info!("log files reopened");
        }
        let mut written = 0;
        for (i, data) in batch.chunks {
            written += data.len();
            let Some(Some(f)) = files.get_mut(i) else {
                continue;
            };
            match f.write(&data, settings, &mut gz) {
                Ok(()) => {
                    if std::mem::take(&mut f.failing) {
                        log::info!("log file {}: writing again", f.path.display());
                    }
                }
                Err((unwritten, e)) => {
                    let tail = &data[data.len().saturating_sub(unwritten)..];
                    let lines = tail.iter().filter(|&&b| b == b'\n').count() as u64;
                    lost.fetch_add(lines, Ordering::Relaxed);
                    if !f.failing {
                        f.failing = true;
                        log::warn!(
                            "log file {}: {e}; its lines are kept in memory only (`mothership logs`) until it can be written again",
                            f.path.display()
                        );
                    }
                    // Opened afresh with the next lines.
                    f.file = None;
                }
            }
        }
        s.done(written);
    }
    gz.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ms-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn lines_in(path: &Path) -> Vec<String> {
        let bytes = std::fs::read(path).unwrap_or_default();
        let text = if path.extension().is_some_and(|e| e == "gz") {
            let mut s = String::new();
            let _ = io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut s);
            s
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        text.lines().map(String::from).collect()
    }

    #[test]
    fn rotates_at_line_boundaries_and_keeps_every_line() {
        let d = dir("rotate");
        let path = d.join("sub/web.log");
        for compress in [false, true] {
            let _ = std::fs::remove_dir_all(&d);
            let s = Settings {
                dir: None,
                max_size: 4096,
                keep: 100,
                compress,
            };
            let mut files =
                Files::start(vec![Some(path.clone()), None], &s).unwrap_or_else(|e| panic!("{e}"));
            let mut all = Vec::new();
            for i in 0..2000 {
                let line = format!("line {i:05} {}\n", "x".repeat(i % 50));
                all.extend_from_slice(line.as_bytes());
                if i % 37 == 0 {
                    files.push(0, std::mem::take(&mut all));
                }
            }
            files.push(0, all);
            files.push(1, b"nowhere\n".to_vec());
            files.finish();
            // Oldest first: the highest archive down to the current file.
            let mut got = Vec::new();
            let mut k = 100;
            while k > 0 {
                for name in [format!("web.log.{k}"), format!("web.log.{k}.gz")] {
                    let p = d.join("sub").join(&name);
                    if p.exists() {
                        let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                        if !compress {
                            assert!(size <= 4096, "{name}: {size}");
                        }
                        assert_eq!(name.ends_with(".gz"), compress);
                        got.extend(lines_in(&p));
                    }
                }
                k -= 1;
            }
            got.extend(lines_in(&path));
            assert_eq!(got.len(), 2000, "compress {compress}");
            for (i, l) in got.iter().enumerate() {
                assert!(l.starts_with(&format!("line {i:05} ")), "{l}");
            }
            assert_eq!(files.lost(), 0);
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn keeps_only_the_last_archives_and_counts_what_it_cannot_write() {
        let d = dir("keep");
        let s = Settings {
            dir: None,
            max_size: 4096,
            keep: 2,
            compress: false,
        };
        let path = d.join("w.log");
        let mut files =
            Files::start(vec![Some(path.clone())], &s).unwrap_or_else(|e| panic!("{e}"));
        for i in 0..1000 {
            files.push(0, format!("{i:099}\n").into_bytes());
        }
        files.finish();
        assert!(d.join("w.log.1").exists() && d.join("w.log.2").exists());
        assert!(!d.join("w.log.3").exists());
        assert_eq!(lines_in(&path).last().map(|l| l.len()), Some(99));
        // A file that cannot be opened (its folder is a file): lines counted as lost.
        std::fs::write(d.join("blocker"), b"").unwrap_or_else(|e| panic!("{e}"));
        let mut files =
            Files::start(vec![Some(d.join("blocker/x.log"))], &s).unwrap_or_else(|e| panic!("{e}"));
        files.push(0, b"a\nb\n".to_vec());
        files.finish();
        assert_eq!(files.lost(), 2);
        let _ = std::fs::remove_dir_all(&d);
    }
}

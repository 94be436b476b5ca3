//! The terminal under the dashboard: raw mode (no echo, no line editing, no signals from
//! keys: Ctrl-C arrives as a key), the alternate screen and a hidden cursor, and their
//! undoing on every way out: [`Terminal`]'s drop, a panic (the hook installed by
//! [`Terminal::enter`]), and the signals its owner catches and turns into an orderly end.

use std::io;
use std::sync::Mutex;

/// Enters the alternate screen, hides the cursor, clears.
const ENTER: &str = "\x1b[?1049h\x1b[?25l\x1b[2J";
/// Shows the cursor, leaves the alternate screen.
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";

/// The modes to put back, for the panic hook.
static SAVED: Mutex<Option<(i32, libc::termios)>> = Mutex::new(None);

/// A terminal in raw mode on the alternate screen, until dropped.
pub struct Terminal {
    fd: i32,
    saved: Option<libc::termios>,
}

fn write_all(fd: i32, mut s: &[u8]) {
    while !s.is_empty() {
        // SAFETY: write from a live slice.
        let n = unsafe { libc::write(fd, s.as_ptr().cast(), s.len()) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        s = &s[n as usize..];
    }
}

fn restore_modes(fd: i32, t: &libc::termios) {
    write_all(fd, LEAVE.as_bytes());
    // SAFETY: tcsetattr with modes tcgetattr filled.
    unsafe {
        libc::tcsetattr(fd, libc::TCSAFLUSH, t);
    }
}

/// Columns and rows of the terminal on `fd` (80 x 24 when it does not say).
pub fn size(fd: i32) -> (usize, usize) {
    // SAFETY: winsize is plain data; the ioctl fills it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ with a winsize to fill.
    let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 && ws.ws_row > 0 {
        (ws.ws_col as usize, ws.ws_row as usize)
    } else {
        (80, 24)
    }
}

impl Terminal {
    /// Puts the terminal on `fd` in raw mode and on the alternate screen; the drop (or a
    /// panic) undoes it.
    pub fn enter(fd: i32) -> io::Result<Terminal> {
        // SAFETY: termios is plain data; tcgetattr fills it.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let saved = t;
        t.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
        t.c_iflag &= !(libc::IXON | libc::ICRNL | libc::BRKINT | libc::INPCK | libc::ISTRIP);
        t.c_cc[libc::VMIN] = 1;
        t.c_cc[libc::VTIME] = 0;
        // SAFETY: modes derived from the terminal's own.
        if unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if let Ok(mut s) = SAVED.lock() {
            *s = Some((fd, saved));
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Ok(mut s) = SAVED.lock() {
                if let Some((fd, t)) = s.take() {
                    restore_modes(fd, &t);
                }
            }
            previous(info);
        }));
        write_all(fd, ENTER.as_bytes());
        Ok(Terminal {
            fd,
            saved: Some(saved),
        })
    }

    /// Columns and rows (80 x 24 when the terminal does not say).
    pub fn size(&self) -> (usize, usize) {
        size(self.fd)
    }

    /// Writes a frame (blocking: for `top`, which owns its terminal).
    pub fn draw(&self, frame: &str) {
        write_all(self.fd, frame.as_bytes());
    }

    /// Puts the terminal back as it was (also done on drop).
    pub fn restore(&mut self) {
        if let Some(t) = self.saved.take() {
            restore_modes(self.fd, &t);
            if let Ok(mut s) = SAVED.lock() {
                *s = None;
            }
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.restore();
    }
}

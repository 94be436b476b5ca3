//! Keys from a terminal in raw mode: bytes in, keys out. The sequences of xterm and its
//! kin (VT100 cursor keys in both modes, `CSI n ~` for the paging keys).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Char(char),
    /// A control key: `Ctrl('c')` is 0x03.
    Ctrl(char),
    Enter,
    Tab,
    BackTab,
    Escape,
    Backspace,
    Up,
    Down,
    Left,
    Right,
    PageUp,
    PageDown,
    Home,
    End,
}

/// The keys in `input` (what one read gave). A sequence this does not know is skipped
/// whole; an escape at the end of the input is the Escape key.
pub fn parse(input: &[u8]) -> Vec<Key> {
    let mut keys = Vec::new();
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        i += 1;
        let k = match b {
            b'\r' | b'\n' => Key::Enter,
            b'\t' => Key::Tab,
            0x7f | 0x08 => Key::Backspace,
            0x1b => {
                let (k, used) = escape(&input[i..]);
                i += used;
                match k {
                    Some(k) => k,
                    None => continue,
                }
            }
            0x01..=0x1a => Key::Ctrl((b'a' + b - 1) as char),
            0x20..=0x7e => Key::Char(b as char),
            _ => {
                // UTF-8: the whole character.
                let len = match b {
                    0xc0..=0xdf => 2,
                    0xe0..=0xef => 3,
                    0xf0..=0xf7 => 4,
                    _ => 1,
                };
                let end = (i - 1 + len).min(input.len());
                let c = std::str::from_utf8(&input[i - 1..end])
                    .ok()
                    .and_then(|s| s.chars().next());
                i = end;
                match c {
                    Some(c) => Key::Char(c),
                    None => continue,
                }
            }
        };
        keys.push(k);
    }
    keys
}

/// What follows an escape: the key and the bytes it used (None: skipped).
fn escape(rest: &[u8]) -> (Option<Key>, usize) {
    match rest.first() {
        None => (Some(Key::Escape), 0),
        Some(b'[') => {
            // CSI: parameters and intermediates, then one final byte 0x40..=0x7e.
            let Some(end) = rest[1..].iter().position(|b| (0x40..=0x7e).contains(b)) else {
                return (None, rest.len());
            };
            let params = &rest[1..1 + end];
            let fin = rest[1 + end];
            let k = match (fin, params) {
                (b'A', _) => Some(Key::Up),
                (b'B', _) => Some(Key::Down),
                (b'C', _) => Some(Key::Right),
                (b'D', _) => Some(Key::Left),
                (b'H', _) => Some(Key::Home),
                (b'F', _) => Some(Key::End),
                (b'Z', _) => Some(Key::BackTab),
                (b'~', b"5") => Some(Key::PageUp),
                (b'~', b"6") => Some(Key::PageDown),
                (b'~', b"1" | b"7") => Some(Key::Home),
                (b'~', b"4" | b"8") => Some(Key::End),
                _ => None,
            };
            (k, 2 + end)
        }
        Some(b'O') => {
            let k = match rest.get(1) {
                Some(b'A') => Some(Key::Up),
                Some(b'B') => Some(Key::Down),
                Some(b'C') => Some(Key::Right),
                Some(b'D') => Some(Key::Left),
                Some(b'H') => Some(Key::Home),
                Some(b'F') => Some(Key::End),
                _ => None,
            };
            (k, rest.len().min(2))
        }
        // Escape pressed, then another key.
        Some(_) => (Some(Key::Escape), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_sequences() {
        assert_eq!(
            parse(b"q\t\x1b[Z\r\x1b[A\x1bOB\x1b[5~\x1b[6~\x1b[H\x1b[4~\x03"),
            vec![
                Key::Char('q'),
                Key::Tab,
                Key::BackTab,
                Key::Enter,
                Key::Up,
                Key::Down,
                Key::PageUp,
                Key::PageDown,
                Key::Home,
                Key::End,
                Key::Ctrl('c'),
            ]
        );
        assert_eq!(parse(b"\x1b"), vec![Key::Escape]);
        assert_eq!(parse(b"\x1bq"), vec![Key::Escape, Key::Char('q')]);
        // Unknown sequences are skipped whole; a cut one is dropped.
        assert_eq!(parse(b"\x1b[99;5Xr\x1b[12"), vec![Key::Char('r')]);
        assert_eq!(parse("é".as_bytes()), vec![Key::Char('é')]);
        assert_eq!(parse(b"\xff"), Vec::<Key>::new());
    }
}

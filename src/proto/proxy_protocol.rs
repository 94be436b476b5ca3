//! The PROXY protocol (HAProxy), versions 1 (text) and 2 (binary), auto-detected at the
//! start of a connection. Yields the original client address and the number of header
//! bytes to skip. Pure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const V2_SIG: &[u8; 12] = b"\r\n\r\n\x00\r\nQUIT\n";
/// Longest v1 line, CRLF included (from the specification).
const V1_MAX: usize = 107;
/// Most v2 address and TLV bytes accepted.
const V2_MAX: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not a PROXY header: the connection starts with the application's own bytes.
    Absent,
    /// A header of `len` bytes; `addr` is the original source, when it carried one
    /// (`UNKNOWN`, `LOCAL` and non-IP families carry none).
    Header {
        len: usize,
        addr: Option<SocketAddr>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

/// Looks at the first bytes of a connection. `Ok(None)`: too few bytes to decide.
pub fn parse(buf: &[u8]) -> Result<Option<Outcome>, Invalid> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] == b'P' {
        let n = buf.len().min(6);
        if buf[..n] != b"PROXY "[..n] {
            return Ok(Some(Outcome::Absent));
        }
        if buf.len() < 6 {
            return Ok(None);
        }
        return parse_v1(buf);
    }
    if buf[0] == b'\r' {
        let n = buf.len().min(12);
        if buf[..n] != V2_SIG[..n] {
            return Ok(Some(Outcome::Absent));
        }
        if buf.len() < 16 {
            return Ok(None);
        }
        return parse_v2(buf);
    }
    Ok(Some(Outcome::Absent))
}

fn parse_v1(buf: &[u8]) -> Result<Option<Outcome>, Invalid> {
    let Some(end) = buf.windows(2).take(V1_MAX).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(Invalid("PROXY v1 line too long"));
        }
        return Ok(None);
    };
    let line =
        std::str::from_utf8(&buf[..end]).map_err(|_| Invalid("PROXY v1 line is not ASCII"))?;
    let parts: Vec<&str> = line.split(' ').collect();
    let len = end + 2;
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(Some(Outcome::Header { len, addr: None })),
        ["PROXY", fam @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let src: IpAddr = src
                .parse()
                .map_err(|_| Invalid("PROXY v1 bad source address"))?;
            let _: IpAddr = dst
                .parse()
                .map_err(|_| Invalid("PROXY v1 bad destination address"))?;
            if (*fam == "TCP4") != src.is_ipv4() {
                return Err(Invalid("PROXY v1 address family mismatch"));
            }
            let port = |p: &str| -> Result<u16, Invalid> {
                if p.is_empty()
                    || p.len() > 5
                    || !p.bytes().all(|b| b.is_ascii_digit())
                    || (p.len() > 1 && p.starts_with('0'))
                {
                    return Err(Invalid("PROXY v1 bad port"));
                }
                p.parse().map_err(|_| Invalid("PROXY v1 bad port"))
            };
            let sport = port(sport)?;
            port(dport)?;
            Ok(Some(Outcome::Header {
                len,
                addr: Some(SocketAddr::new(src, sport)),
            }))
        }
        _ => Err(Invalid("malformed PROXY v1 line")),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Option<Outcome>, Invalid> {
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(Invalid("PROXY v2 bad version"));
    }
    let fam = buf[13];
    let alen = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if alen > V2_MAX {
        return Err(Invalid("PROXY v2 header too long"));
    }
    let len = 16 + alen;
    if buf.len() < len {
        return Ok(None);
    }
    let a = &buf[16..len];
    let addr = match ver_cmd & 0xf {
        0x0 => None, // LOCAL: health checks from the proxy itself
        0x1 => match fam {
            0x11 | 0x12 => {
                if a.len() < 12 {
                    return Err(Invalid("PROXY v2 short IPv4 block"));
                }
                let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
                Some(SocketAddr::new(
                    IpAddr::V4(ip),
                    u16::from_be_bytes([a[8], a[9]]),
                ))
            }
            0x21 | 0x22 => {
                if a.len() < 36 {
                    return Err(Invalid("PROXY v2 short IPv6 block"));
                }
                let mut o = [0u8; 16];
                o.copy_from_slice(&a[..16]);
                Some(SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(o)),
                    u16::from_be_bytes([a[32], a[33]]),
                ))
            }
            _ => None,
        },
        _ => return Err(Invalid("PROXY v2 bad command")),
    };
    Ok(Some(Outcome::Header { len, addr }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, addr: &[u8]) -> Vec<u8> {
        let mut v = V2_SIG.to_vec();
        v.push(0x20 | cmd);
        v.push(fam);
        v.extend_from_slice(&(addr.len() as u16).to_be_bytes());
        v.extend_from_slice(addr);
        v
    }

    #[test]
    fn version_1() {
        let sa = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        let line = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(line),
            Ok(Some(Outcome::Header {
                len: 43,
                addr: sa("203.0.113.7:40000")
            }))
        );
        let line = b"PROXY TCP6 2001:db8::1 ::1 5 443\r\n";
        assert_eq!(
            parse(line),
            Ok(Some(Outcome::Header {
                len: 34,
                addr: sa("[2001:db8::1]:5")
            }))
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Some(Outcome::Header {
                len: 15,
                addr: None
            }))
        );
        for partial in [&b"P"[..], b"PROX", b"PROXY TCP4 1.2.3.4"] {
            assert_eq!(parse(partial), Ok(None), "{partial:?}");
        }
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 1\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&[b"PROXY ".to_vec(), vec![b'x'; 200]].concat()).is_err());
    }

    #[test]
    fn version_2() {
        let mut a4 = vec![198, 51, 100, 9, 127, 0, 0, 1];
        a4.extend_from_slice(&1234u16.to_be_bytes());
        a4.extend_from_slice(&80u16.to_be_bytes());
        let h = v2(1, 0x11, &a4);
        assert_eq!(
            parse(&h),
            Ok(Some(Outcome::Header {
                len: 28,
                addr: Some("198.51.100.9:1234".parse().unwrap())
            }))
        );
        assert_eq!(parse(&h[..20]), Ok(None));
        let mut a6 = vec![0u8; 36];
        a6[15] = 1;
        a6[32..34].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            parse(&v2(1, 0x21, &a6)),
            Ok(Some(Outcome::Header {
                len: 52,
                addr: Some("[::1]:7".parse().unwrap())
            }))
        );
        assert_eq!(
            parse(&v2(0, 0x00, &[])),
            Ok(Some(Outcome::Header {
                len: 16,
                addr: None
            }))
        );
        // TLVs after the addresses are skipped with them.
        let mut t = a4.clone();
        t.extend_from_slice(&[0x04, 0, 2, 9, 9]);
        assert_eq!(
            parse(&v2(1, 0x11, &t)).map(|o| matches!(o, Some(Outcome::Header { len: 33, .. }))),
            Ok(true)
        );
        assert!(parse(&v2(1, 0x11, &a4[..4])).is_err());
        assert!(parse(&v2(5, 0x11, &a4)).is_err());
    }

    #[test]
    fn plain_http_is_absent() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Ok(Some(Outcome::Absent)));
        assert_eq!(parse(b"POST"), Ok(Some(Outcome::Absent)));
        assert_eq!(parse(b"PUT /"), Ok(Some(Outcome::Absent)));
        assert_eq!(parse(b"\r\nxyz"), Ok(Some(Outcome::Absent)));
    }
}

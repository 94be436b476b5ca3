//! JA4H, the HTTP client fingerprint logged per request (COMPAT.md section 6):
//! `<m><v><c><r><nn><lang>_<h1>_<h2>_<h3>`. Pure.

use sha2::{Digest, Sha256};

use super::http::RequestHead;

/// First 12 hex digits of SHA-256 over `items` joined by `,`; `000000000000` for none.
fn hash12(items: &[&str]) -> String {
    if items.is_empty() {
        return "000000000000".to_string();
    }
    let mut h = Sha256::new();
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            h.update(b",");
        }
        h.update(it.as_bytes());
    }
    h.finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn ja4h(req: &RequestHead) -> String {
    let mut m: String = req
        .method
        .chars()
        .take(2)
        .collect::<String>()
        .to_ascii_lowercase();
    while m.len() < 2 {
        m.push('0');
    }
    let v = if req.minor == 0 { "10" } else { "11" };
    let is_cookie = |n: &str| n.eq_ignore_ascii_case("cookie");
    let is_referer = |n: &str| n.eq_ignore_ascii_case("referer");
    let c = if req.headers.iter().any(|h| is_cookie(&h.name)) {
        'c'
    } else {
        'n'
    };
    let r = if req.headers.iter().any(|h| is_referer(&h.name)) {
        'r'
    } else {
        'n'
    };
    let names: Vec<&str> = req
        .headers
        .iter()
        .map(|h| h.name.as_str())
        .filter(|n| !is_cookie(n) && !is_referer(n))
        .collect();
    let nn = names.len().min(99);
    let lang: String = req
        .header("accept-language")
        .map(|h| {
            let first = h.value_str().split([',', ';']).next().unwrap_or("");
            first
                .chars()
                .filter(|c| c.is_ascii_alphabetic())
                .map(|c| c.to_ascii_lowercase())
                .take(4)
                .collect()
        })
        .unwrap_or_default();
    let lang = format!("{lang:0<4}");
    let mut pairs: Vec<(&str, &str)> = req
        .headers
        .iter()
        .filter(|h| is_cookie(&h.name))
        .flat_map(|h| h.value_str().split(';'))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    pairs.sort();
    let mut cookie_names: Vec<&str> = pairs.iter().map(|(n, _)| *n).collect();
    cookie_names.sort();
    let joined: Vec<String> = pairs.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let joined: Vec<&str> = joined.iter().map(String::as_str).collect();
    format!(
        "{m}{v}{c}{r}{nn:02}{lang}_{}_{}_{}",
        hash12(&names),
        hash12(&cookie_names),
        hash12(&joined)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::{parse_request, Limits};

    fn fp(raw: &str) -> String {
        ja4h(
            &parse_request(raw.as_bytes(), &Limits::default())
                .unwrap()
                .unwrap(),
        )
    }

    /// Expected values computed independently with Python's hashlib.
    #[test]
    fn known_vectors() {
        assert_eq!(
            fp("GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\nAccept: */*\r\nCookie: sid=abc; _ga=GA1.2\r\nReferer: http://r/\r\nAccept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip\r\nCookie: theme=dark\r\n\r\n"),
            "ge11cr05enus_f3bb7aa45ec4_86aa86fc6cd2_760a8ef12d1d"
        );
        assert_eq!(
            fp("POST /x HTTP/1.0\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 1\r\nAccept-Language: fr\r\n\r\n"),
            "po10nn04fr00_4e7c4f369128_000000000000_000000000000"
        );
        assert_eq!(
            fp("DELETE / HTTP/1.0\r\n\r\n"),
            "de10nn000000_000000000000_000000000000_000000000000"
        );
        assert_eq!(
            fp("GET / HTTP/1.0\r\nx-a: 1\r\n\r\n"),
            "ge10nn010000_e9bd2f58abef_000000000000_000000000000"
        );
    }
}

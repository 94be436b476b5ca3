//! `Accept-Encoding` negotiation (RFC 9110 section 12.5.3) and the table of media types
//! worth compressing.

/// The content coding to use among `offered` (in the server's order of preference), given
/// the request's `Accept-Encoding` values; None means identity. A coding is acceptable when
/// it is listed, or `*` is, with a q-value above 0; the highest q wins and ties go to the
/// server's order.
pub fn negotiate<'a>(accept: &[&str], offered: &[&'a str]) -> Option<&'a str> {
    let mut listed: Vec<(String, f32)> = Vec::new();
    for v in accept {
        for item in v.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            let mut q = 1.0f32;
            for p in parts {
                if let Some((k, v)) = p.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("q") {
                        q = v.trim().parse().unwrap_or(0.0);
                        if !(0.0..=1.0).contains(&q) {
                            q = 0.0;
                        }
                    }
                }
            }
            // `x-gzip` is gzip (RFC 9110 section 8.4.1.3).
            let name = if name == "x-gzip" {
                "gzip".to_string()
            } else {
                name
            };
            listed.push((name, q));
        }
    }
    let star = listed.iter().find(|(n, _)| n == "*").map(|(_, q)| *q);
    let mut best: Option<(&'a str, f32)> = None;
    for &c in offered {
        let q = listed
            .iter()
            .find(|(n, _)| n == c)
            .map(|(_, q)| *q)
            .or(star)
            .unwrap_or(0.0);
        if q > 0.0 && best.is_none_or(|(_, bq)| q > bq) {
            best = Some((c, q));
        }
    }
    best.map(|(c, _)| c)
}

/// Whether a response of this media type is worth compressing: text, JSON, JavaScript,
/// XML, SVG, WebAssembly and a few other textual formats. Already compressed formats
/// (images, video, archives, fonts in WOFF) are not.
pub fn compressible(content_type: &str) -> bool {
    let t = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if t == "text/event-stream" {
        // A stream of events: compressing would hold them back.
        return false;
    }
    if t.starts_with("text/") {
        return true;
    }
    if t.ends_with("+json") || t.ends_with("+xml") {
        return true;
    }
    matches!(
        t.as_str(),
        "application/json"
            | "application/javascript"
            | "application/x-javascript"
            | "application/ecmascript"
            | "application/xml"
            | "application/wasm"
            | "application/x-ndjson"
            | "application/graphql"
            | "application/rtf"
            | "application/x-sh"
            | "application/x-yaml"
            | "application/yaml"
            | "application/toml"
            | "application/manifest+json"
            | "application/vnd.ms-fontobject"
            | "font/ttf"
            | "font/otf"
            | "image/svg+xml"
            | "image/x-icon"
            | "image/vnd.microsoft.icon"
            | "image/bmp"
    )
}

/// Media type from a file extension (lowercase, without the dot).
pub fn media_type(ext: &str) -> &'static str {
    match ext {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" | "cjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" | "text" | "log" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "rss" => "application/rss+xml",
        "atom" => "application/atom+xml",
        "svg" | "svgz" => "image/svg+xml",
        "yaml" | "yml" => "application/yaml",
        "toml" => "application/toml",
        "wasm" => "application/wasm",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "bmp" => "image/bmp",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "eot" => "application/vnd.ms-fontobject",
        "pdf" => "application/pdf",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "ogv" => "video/ogg",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "br" => "application/x-brotli",
        "tar" => "application/x-tar",
        "sh" => "application/x-sh",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: [&str; 3] = ["br", "gzip", "deflate"];

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(&[], &OFFER), None);
        assert_eq!(negotiate(&["gzip"], &OFFER), Some("gzip"));
        assert_eq!(negotiate(&["gzip, deflate, br"], &OFFER), Some("br"));
        assert_eq!(negotiate(&["gzip;q=1.0, br;q=0.5"], &OFFER), Some("gzip"));
        assert_eq!(negotiate(&["br;q=0, gzip;q=0.1"], &OFFER), Some("gzip"));
        assert_eq!(negotiate(&["*"], &OFFER), Some("br"));
        assert_eq!(negotiate(&["*;q=0.5, br;q=0"], &OFFER), Some("gzip"));
        assert_eq!(negotiate(&["identity"], &OFFER), None);
        assert_eq!(negotiate(&["gzip;q=0"], &OFFER), None);
        assert_eq!(negotiate(&["GZIP ; Q=0.8"], &OFFER), Some("gzip"));
        assert_eq!(negotiate(&["x-gzip"], &OFFER), Some("gzip"));
        assert_eq!(
            negotiate(&["deflate", "gzip;q=0.9"], &OFFER),
            Some("deflate")
        );
        assert_eq!(negotiate(&["gzip;q=2"], &OFFER), None);
        assert_eq!(negotiate(&["gzip;q=abc"], &OFFER), None);
    }

    #[test]
    fn types() {
        assert!(compressible("text/html; charset=utf-8"));
        assert!(compressible("application/json"));
        assert!(compressible("application/problem+json"));
        assert!(compressible("image/svg+xml"));
        assert!(compressible("application/wasm"));
        assert!(!compressible("image/png"));
        assert!(!compressible("application/octet-stream"));
        assert!(!compressible("font/woff2"));
        assert!(!compressible("text/event-stream"));
        assert_eq!(media_type("js"), "text/javascript; charset=utf-8");
        assert_eq!(media_type("nope"), "application/octet-stream");
    }
}

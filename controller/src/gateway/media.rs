//! What a file is served as: `Content-Type` from its name and kind, and the
//! `Content-Disposition` that carries its name. Pure functions.
//!
//! The gateway shares its origin with the dashboard (and its session cookie), so nothing a
//! user shared may run as a page there: HTML and anything else scriptable is never given a
//! type a browser would render as a document (HTML is `text/plain`, SVG is an attachment),
//! and every answer also carries a sandboxing CSP (see `gateway.rs`).

/// The type and whether it must be an attachment even when not downloading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Media {
    pub content_type: &'static str,
    /// Scriptable when rendered on its own (SVG): offered for download, never shown inline.
    pub attachment_only: bool,
}

const OCTET_STREAM: &str = "application/octet-stream";
const TEXT: &str = "text/plain; charset=utf-8";

fn extension(name: &str) -> Option<String> {
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then(|| ext.to_ascii_lowercase())
}

/// The media type for a share named `name` of kind `kind` (one of `trove_common::api::KINDS`).
/// The extension decides; the kind settles containers that hold either sound or pictures
/// (`.ogg`, `.webm`, `.mp4`).
pub fn media_of(name: &str, kind: &str) -> Media {
    let video = kind == "video";
    let audio = kind == "audio";
    let content_type = match extension(name).as_deref() {
        Some("mp4" | "m4v") if audio => "audio/mp4",
        Some("mp4" | "m4v") => "video/mp4",
        Some("webm") if audio => "audio/webm",
        Some("webm") => "video/webm",
        Some("mkv") => "video/x-matroska",
        Some("mka") => "audio/x-matroska",
        Some("mov") => "video/quicktime",
        Some("ogv") => "video/ogg",
        Some("ogg") if video => "video/ogg",
        Some("ogg" | "oga" | "opus") => "audio/ogg",
        Some("mp3") => "audio/mpeg",
        Some("flac") => "audio/flac",
        Some("wav") => "audio/wav",
        Some("m4a") => "audio/mp4",
        Some("aac") => "audio/aac",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("avif") => "image/avif",
        Some("svg") => "image/svg+xml",
        Some("pdf") => "application/pdf",
        // Shown as text, never rendered: HTML from a share must not run on our origin.
        Some("txt" | "text" | "md" | "log" | "csv" | "json" | "html" | "htm" | "xml") => TEXT,
        _ => OCTET_STREAM,
    };
    Media {
        content_type,
        attachment_only: content_type == "image/svg+xml",
    }
}

/// RFC 8187 `attr-char`: what may stand unescaped in `filename*=UTF-8''...`.
fn is_attr_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b)
}

/// `attachment` or `inline`, with the name both as an ASCII fallback (`filename=`, quotes and
/// backslashes and non-ASCII replaced) and exactly (`filename*=`, RFC 6266 and 8187).
pub fn disposition(name: &str, attachment: bool) -> String {
    let mut fallback: String = name
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if fallback.trim().is_empty() {
        fallback = "file".into();
    }
    let mut exact = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if is_attr_char(b) {
            exact.push(b as char);
        } else {
            exact.push_str(&format!("%{b:02X}"));
        }
    }
    let kind = if attachment { "attachment" } else { "inline" };
    format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{exact}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(name: &str, kind: &str, expected: &str) {
        assert_eq!(media_of(name, kind).content_type, expected, "{name} ({kind})");
    }

    #[test]
    fn types_by_extension_and_kind() {
        check("a.mp4", "video", "video/mp4");
        check("A.MP4", "other", "video/mp4");
        check("a.mp4", "audio", "audio/mp4");
        check("a.webm", "video", "video/webm");
        check("a.mkv", "video", "video/x-matroska");
        check("a.mp3", "audio", "audio/mpeg");
        check("a.ogg", "audio", "audio/ogg");
        check("a.ogg", "video", "video/ogg");
        check("a.flac", "audio", "audio/flac");
        check("a.wav", "audio", "audio/wav");
        check("a.m4a", "audio", "audio/mp4");
        check("a.jpg", "image", "image/jpeg");
        check("a.jpeg", "image", "image/jpeg");
        check("a.png", "image", "image/png");
        check("a.gif", "image", "image/gif");
        check("a.webp", "image", "image/webp");
        check("a.pdf", "document", "application/pdf");
        check("notes.txt", "document", "text/plain; charset=utf-8");
        check("page.html", "document", "text/plain; charset=utf-8");
        check("a.tar.gz", "archive", "application/octet-stream");
        check("README", "document", "application/octet-stream");
        check(".mp4", "video", "application/octet-stream");
        check("a.", "video", "application/octet-stream");
        check("", "video", "application/octet-stream");
    }

    #[test]
    fn svg_is_never_inline() {
        let m = media_of("logo.svg", "image");
        assert_eq!(m.content_type, "image/svg+xml");
        assert!(m.attachment_only);
        assert!(!media_of("a.png", "image").attachment_only);
    }

    #[test]
    fn dispositions() {
        assert_eq!(
            disposition("movie.mp4", true),
            "attachment; filename=\"movie.mp4\"; filename*=UTF-8''movie.mp4"
        );
        assert_eq!(
            disposition("été \"x\".mp3", false),
            "inline; filename=\"_t_ _x_.mp3\"; filename*=UTF-8''%C3%A9t%C3%A9%20%22x%22.mp3"
        );
        assert_eq!(
            disposition("a;b\r\nc%.txt", true),
            "attachment; filename=\"a;b__c%.txt\"; filename*=UTF-8''a%3Bb%0D%0Ac%25.txt"
        );
        assert_eq!(
            disposition("日本", true),
            "attachment; filename=\"__\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC"
        );
        assert_eq!(
            disposition("", true),
            "attachment; filename=\"file\"; filename*=UTF-8''"
        );
    }

    proptest! {
        /// Whatever the name, the header value is visible ASCII (a valid header), and the
        /// exact form decodes back to the name.
        #[test]
        fn dispositions_are_valid_headers_and_exact(name in "\\PC{0,40}", attachment in any::<bool>()) {
            let d = disposition(&name, attachment);
            prop_assert!(d.bytes().all(|b| b == b' ' || b.is_ascii_graphic()), "{d:?}");
            let exact = d.split("filename*=UTF-8''").nth(1).unwrap();
            let mut bytes = Vec::new();
            let mut it = exact.bytes();
            while let Some(b) = it.next() {
                if b == b'%' {
                    let h: String = [it.next().unwrap() as char, it.next().unwrap() as char].iter().collect();
                    bytes.push(u8::from_str_radix(&h, 16).unwrap());
                } else {
                    bytes.push(b);
                }
            }
            prop_assert_eq!(String::from_utf8(bytes).unwrap(), name);
        }
    }
}

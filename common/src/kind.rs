//! What a shared file is (one of [`crate::api::KINDS`]), from its first bytes and its name.
//!
//! Content first: `infer`'s magic-byte matchers, mapped onto Trove's kinds. The name's
//! extension decides when the content says nothing, and also when it names only a generic
//! container (a zip, some XML or HTML) that the extension is more precise about: an `.svg`
//! is XML, a `.jar` is a zip. Plain UTF-8 text with neither is a document. Pure: the caller
//! reads [`SNIFF_BYTES`] of the file. Shared by the CLI (`trove share`) and the controller
//! (uploads from the dashboard), behind the feature `kind`, which `troved` does not enable.

/// How much of a file the detection looks at. infer's matchers look within the first few
/// KiB (tar's header at 257, MP4 brands in the first box).
pub const SNIFF_BYTES: usize = 8 << 10;

/// Content types that say "a container" rather than what is in it: the extension is trusted
/// over them when it is in [`EXTENSIONS`].
const GENERIC_MIME: [&str; 4] = ["application/zip", "text/xml", "text/html", "application/octet-stream"];

/// infer files some types under a matcher type that is not what people mean: PDF and RTF are
/// "archives" there, package formats too.
const MIME_KINDS: [(&str, &str); 9] = [
    ("application/pdf", "document"),
    ("application/postscript", "document"),
    ("application/rtf", "document"),
    ("application/epub+zip", "document"),
    ("application/vnd.debian.binary-package", "software"),
    ("application/x-rpm", "software"),
    ("application/x-google-chrome-extension", "software"),
    ("application/vnd.sqlite3", "other"),
    ("application/x-x509-ca-cert", "other"),
];

/// Lowercase extensions (without the dot) and their kinds.
const EXTENSIONS: [(&str, &str); 78] = [
    ("mkv", "video"),
    ("mp4", "video"),
    ("m4v", "video"),
    ("webm", "video"),
    ("mov", "video"),
    ("avi", "video"),
    ("wmv", "video"),
    ("mpg", "video"),
    ("mpeg", "video"),
    ("ts", "video"),
    ("flv", "video"),
    ("mp3", "audio"),
    ("flac", "audio"),
    ("ogg", "audio"),
    ("oga", "audio"),
    ("opus", "audio"),
    ("wav", "audio"),
    ("m4a", "audio"),
    ("aac", "audio"),
    ("aiff", "audio"),
    ("mid", "audio"),
    ("jpg", "image"),
    ("jpeg", "image"),
    ("png", "image"),
    ("gif", "image"),
    ("webp", "image"),
    ("svg", "image"),
    ("bmp", "image"),
    ("tif", "image"),
    ("tiff", "image"),
    ("heic", "image"),
    ("avif", "image"),
    ("raw", "image"),
    ("pdf", "document"),
    ("txt", "document"),
    ("md", "document"),
    ("rst", "document"),
    ("html", "document"),
    ("htm", "document"),
    ("epub", "document"),
    ("mobi", "document"),
    ("doc", "document"),
    ("docx", "document"),
    ("odt", "document"),
    ("ods", "document"),
    ("odp", "document"),
    ("xls", "document"),
    ("xlsx", "document"),
    ("ppt", "document"),
    ("pptx", "document"),
    ("rtf", "document"),
    ("csv", "document"),
    ("tex", "document"),
    ("zip", "archive"),
    ("tar", "archive"),
    ("tgz", "archive"),
    ("gz", "archive"),
    ("bz2", "archive"),
    ("xz", "archive"),
    ("7z", "archive"),
    ("zst", "archive"),
    ("rar", "archive"),
    ("lz4", "archive"),
    ("cbz", "archive"),
    ("deb", "software"),
    ("rpm", "software"),
    ("apk", "software"),
    ("jar", "software"),
    ("exe", "software"),
    ("msi", "software"),
    ("dmg", "software"),
    ("appimage", "software"),
    ("flatpak", "software"),
    ("iso", "software"),
    ("img", "software"),
    ("wasm", "software"),
    ("ttf", "other"),
    ("otf", "other"),
];

/// The kind of a file named `name` that starts with `head` (its first [`SNIFF_BYTES`], or
/// all of it when shorter). `name` is a file name or a path; only its extension counts.
/// Always one of [`crate::api::KINDS`].
pub fn detect(name: &str, head: &[u8]) -> &'static str {
    let by_name = by_extension(name);
    match infer::get(head) {
        Some(t) if GENERIC_MIME.contains(&t.mime_type()) => by_name.unwrap_or_else(|| by_infer(&t)),
        Some(t) => by_infer(&t),
        None => by_name.unwrap_or(if looks_like_text(head) { "document" } else { "other" }),
    }
}

fn by_infer(t: &infer::Type) -> &'static str {
    use infer::MatcherType as M;
    if let Some((_, kind)) = MIME_KINDS.iter().find(|(mime, _)| *mime == t.mime_type()) {
        return kind;
    }
    match t.matcher_type() {
        M::Video => "video",
        M::Audio => "audio",
        M::Image => "image",
        M::Doc | M::Book | M::Text => "document",
        M::Archive => "archive",
        M::App => "software",
        M::Font | M::Custom => "other",
    }
}

/// The extension as `std::path::Path::extension` sees it: after the last dot of the last
/// path component, unless that dot starts the name (`.bashrc` has none).
fn by_extension(name: &str) -> Option<&'static str> {
    let base = name.rsplit(['/', '\\']).next()?;
    let (stem, ext) = base.rsplit_once('.')?;
    if stem.is_empty() {
        return None;
    }
    let ext = ext.to_ascii_lowercase();
    EXTENSIONS.iter().find(|(e, _)| *e == ext).map(|(_, kind)| *kind)
}

/// UTF-8 without NULs or other control characters than whitespace. The head may end inside
/// a multi-byte character: that part is forgiven.
fn looks_like_text(head: &[u8]) -> bool {
    if head.is_empty() {
        return false;
    }
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        Err(e) if e.error_len().is_none() => match std::str::from_utf8(&head[..e.valid_up_to()]) {
            Ok(t) => t,
            Err(_) => return false,
        },
        Err(_) => return false,
    };
    text.chars().all(|c| !c.is_control() || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use crate::api::KINDS;

    use super::*;

    fn check(name: &str, head: &[u8], expected: &str) {
        assert_eq!(detect(name, head), expected, "{name:?} starting {head:?}");
    }

    /// The first box of an MP4 as ffmpeg writes it: size, `ftyp`, brand `isom`, version,
    /// compatible brands.
    const MP4_HEAD: &[u8] = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41\x00\x00\x00\x08free";
    const PNG_HEAD: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00";
    const PDF_HEAD: &[u8] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n";
    const ZIP_HEAD: &[u8] = b"PK\x03\x04\x14\x00\x00\x00\x08\x00\x00\x00!\x00";
    /// The 64-byte header of an x86-64 executable, as `readelf -h` describes `troved`.
    const ELF_HEAD: &[u8] = b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00\x3e\x00\x01\x00\x00\x00\
        \x40\x5e\x01\x00\x00\x00\x00\x00\x40\x00\x00\x00\x00\x00\x00\x00\x18\x3a\x4c\x00\x00\x00\x00\x00\
        \x00\x00\x00\x00\x40\x00\x38\x00\x0e\x00\x40\x00\x26\x00\x25\x00";

    #[test]
    fn magic_bytes_decide_whatever_the_name() {
        check("holiday.mp4", MP4_HEAD, "video");
        check("holiday", MP4_HEAD, "video");
        check("misnamed.txt", MP4_HEAD, "video");
        check("pic.png", PNG_HEAD, "image");
        check("scan", PNG_HEAD, "image");
        check("paper.pdf", PDF_HEAD, "document");
        check("paper.bin", PDF_HEAD, "document");
        check("troved", ELF_HEAD, "software");
        check("Trove-x86_64.AppImage", ELF_HEAD, "software");
        check("song.flac", b"fLaC\x00\x00\x00\x22", "audio");
        check("a.gz", b"\x1f\x8b\x08\x00\x00\x00\x00\x00", "archive");
        check("pkg.deb", b"!<arch>\ndebian-binary   ", "software");
    }

    #[test]
    fn a_plain_zip_takes_its_kind_from_the_extension() {
        check("photos.zip", ZIP_HEAD, "archive");
        check("noname", ZIP_HEAD, "archive");
        check("app.jar", ZIP_HEAD, "software");
        check("comic.cbz", ZIP_HEAD, "archive");
        check("logo.svg", b"<?xml version=\"1.0\"?><svg xmlns=", "image");
    }

    #[test]
    fn the_extension_decides_when_the_content_says_nothing() {
        let noise = [0x13u8, 0x00, 0xfe, 0x42, 0x99, 0x00, 0x01];
        check("movie.MKV", &noise, "video");
        check("track.opus", &noise, "audio");
        check("notes.md", &noise, "document");
        check("backup.tar.zst", &noise, "archive");
        check("debian-12.iso", &noise, "software");
        check("tool.exe", &noise, "software");
        check("font.ttf", &noise, "other");
        check("mystery.bin", &noise, "other");
        check("empty", b"", "other");
    }

    #[test]
    fn text_without_a_known_extension_is_a_document() {
        check("README", b"Trove shares files.\n\tIndented line.\n", "document");
        check("LICENSE", "Copyright \u{a9} 2026".as_bytes(), "document");
        // A head cut inside a multi-byte character is still text.
        check("notes", &"caf\u{e9}".as_bytes()[..4], "document");
        check("blob", b"abc\x00def", "other");
    }

    #[test]
    fn extensions_are_read_like_paths_do() {
        check("dir.mp4/notes", b"", "other");
        check("/home/me/movie.mkv", b"", "video");
        check(".mp3", b"", "other");
        check("a.b.FLAC", b"", "audio");
    }

    #[test]
    fn every_answer_is_a_kind() {
        for (_, kind) in EXTENSIONS.iter().chain(MIME_KINDS.iter()) {
            assert!(KINDS.contains(kind), "{kind}");
        }
    }
}

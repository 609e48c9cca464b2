//! What may be uploaded: the type is read from the content (magic bytes, via `infer`), must be
//! on the allow-list and must match the type the client declared; markup and scripts are
//! refused wherever they hide (a "polyglot" image with HTML inside, an SVG, a PDF with
//! JavaScript); names are cut down to a harmless file name.

use crate::chat::error::ChatError;

/// How many bytes the type is read from before anything is stored.
pub const SNIFF_BYTES: usize = 8 * 1024;

/// The types accepted, by their canonical name, and the names clients may declare for each.
const ALLOWED: &[(&str, &[&str])] = &[
    ("image/png", &["image/png"]),
    ("image/jpeg", &["image/jpeg", "image/jpg", "image/pjpeg"]),
    ("image/gif", &["image/gif"]),
    ("image/webp", &["image/webp"]),
    ("application/pdf", &["application/pdf"]),
    ("audio/mpeg", &["audio/mpeg", "audio/mp3"]),
    (
        "audio/wav",
        &["audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"],
    ),
    ("audio/ogg", &["audio/ogg", "audio/opus"]),
    ("audio/webm", &["audio/webm", "video/webm"]),
    ("audio/mp4", &["audio/mp4", "audio/m4a", "audio/x-m4a"]),
    ("audio/flac", &["audio/flac", "audio/x-flac"]),
    ("text/plain", &["text/plain"]),
    ("text/markdown", &["text/markdown", "text/x-markdown"]),
    ("text/csv", &["text/csv"]),
    ("application/json", &["application/json"]),
];

/// `infer`'s name for a type -> our canonical name.
fn canonical(sniffed: &str) -> &str {
    match sniffed {
        "audio/x-wav" => "audio/wav",
        "video/webm" => "audio/webm",
        "audio/m4a" | "audio/x-m4a" => "audio/mp4",
        "audio/x-flac" => "audio/flac",
        "audio/opus" => "audio/ogg",
        other => other,
    }
}

/// Markers of markup or script, refused anywhere in any file (compared in lower case).
const MARKERS: &[&[u8]] = &[
    b"<script",
    b"<html",
    b"<!doctype html",
    b"<svg",
    b"<iframe",
    b"<?php",
    b"javascript:",
];
/// Active content in a PDF.
const PDF_MARKERS: &[&[u8]] = &[b"/javascript", b"/js ", b"/js(", b"/launch"];

pub fn is_text(mime: &str) -> bool {
    mime.starts_with("text/") || mime == "application/json"
}

/// The declared type without parameters, in lower case (`Text/Plain; charset=utf-8` ->
/// `text/plain`).
fn declared_type(declared: &str) -> String {
    declared
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The canonical type of a file whose first bytes are `head`, when it is allowed and what the
/// client declared; else a 400 saying why. `complete`: `head` is the whole file.
pub fn check(head: &[u8], declared: &str, complete: bool) -> Result<&'static str, ChatError> {
    let declared = declared_type(declared);
    let sniffed = match infer::get(head) {
        Some(kind) => canonical(kind.mime_type()).to_string(),
        None if looks_like_text(head, complete) && starts_with_markup(head) => {
            return Err(refused("HTML, XML and SVG files are not accepted"));
        }
        None if looks_like_text(head, complete) => {
            // Text has no magic bytes: it is what it was declared as, if that is a text type.
            if is_text(&declared) {
                declared.clone()
            } else {
                "text/plain".to_string()
            }
        }
        None => {
            return Err(refused(
                "The file's type cannot be recognised from its content",
            ));
        }
    };
    let Some((mime, names)) = ALLOWED.iter().find(|(mime, _)| *mime == sniffed) else {
        return Err(refused(&format!(
            "Files of type {} are not accepted",
            shown(&sniffed)
        )));
    };
    if !names.contains(&declared.as_str()) {
        return Err(refused(&format!(
            "The file was declared as {} but its content is {mime}",
            shown(&declared)
        )));
    }
    Ok(mime)
}

fn refused(message: &str) -> ChatError {
    ChatError::invalid("file", message)
}

/// A type as it may appear in a message: at most 64 characters, printable.
fn shown(mime: &str) -> String {
    let cut: String = mime.chars().filter(|c| !c.is_control()).take(64).collect();
    if cut.is_empty() {
        "no type".into()
    } else {
        cut
    }
}

/// UTF-8 without NUL bytes (a cut at the end of `head` is allowed unless it is the whole file).
fn looks_like_text(head: &[u8], complete: bool) -> bool {
    if head.contains(&0) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(err) => !complete && err.error_len().is_none() && head.len() - err.valid_up_to() < 4,
    }
}

fn starts_with_markup(head: &[u8]) -> bool {
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    text.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'<')
}

/// Scans a file's bytes as they stream past for [`MARKERS`], across chunk boundaries.
pub struct Scanner {
    markers: Vec<&'static [u8]>,
    /// The end of the previous chunk, in lower case: a marker may straddle two chunks.
    tail: Vec<u8>,
    longest: usize,
}

impl Scanner {
    pub fn new(mime: &str) -> Self {
        let mut markers: Vec<&'static [u8]> = MARKERS.to_vec();
        if mime == "application/pdf" {
            markers.extend_from_slice(PDF_MARKERS);
        }
        let longest = markers.iter().map(|m| m.len()).max().unwrap_or(1);
        Self {
            markers,
            tail: Vec::new(),
            longest,
        }
    }

    /// Fails (400) when a marker appears in the bytes seen so far.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ChatError> {
        let mut window = std::mem::take(&mut self.tail);
        window.extend(chunk.iter().map(u8::to_ascii_lowercase));
        if self
            .markers
            .iter()
            .any(|m| window.windows(m.len()).any(|w| w == *m))
        {
            return Err(refused(
                "The file contains markup or script (HTML, SVG, JavaScript, PHP), which is not accepted",
            ));
        }
        let keep = window.len().min(self.longest - 1);
        self.tail = window.split_off(window.len() - keep);
        Ok(())
    }
}

/// A client's file name made harmless: no control characters, no leading dots, at most 200
/// bytes; `file` when nothing is left. A name with path parts (`/`, `\\`, `..`) is refused
/// (400): browsers send a bare name, so a path is a probe.
pub fn sanitize_name(raw: &str) -> Result<String, ChatError> {
    if raw.contains(['/', '\\']) || raw.trim() == ".." {
        return Err(ChatError::invalid(
            "file",
            "The file name must be a name, not a path",
        ));
    }
    let cleaned: String = raw
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| {
            if matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').trim();
    let mut name = String::new();
    for c in trimmed.chars() {
        if name.len() + c.len_utf8() > 200 {
            break;
        }
        name.push(c);
    }
    Ok(if name.is_empty() { "file".into() } else { name })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    const PNG: &[u8] =
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
    const ELF: &[u8] = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0>\0";

    #[test]
    fn allowed_types_pass_when_declared_as_what_they_are() {
        assert_eq!(check(PNG, "image/png", true).unwrap(), "image/png");
        assert_eq!(
            check(b"%PDF-1.7\n1 0 obj", "application/pdf", true).unwrap(),
            "application/pdf"
        );
        assert_eq!(
            check(b"hello, world\n", "text/plain; charset=utf-8", true).unwrap(),
            "text/plain"
        );
        assert_eq!(check(b"a,b\n1,2\n", "text/csv", true).unwrap(), "text/csv");
        assert_eq!(
            check(b"{\"a\": 1}", "application/json", true).unwrap(),
            "application/json"
        );
        assert_eq!(
            check(b"ID3\x04\0\0\0\0\0\0", "audio/mpeg", true).unwrap(),
            "audio/mpeg"
        );
    }

    #[test]
    fn executables_wrong_types_and_markup_are_refused() {
        for (bytes, declared) in [
            (ELF, "image/png"),
            (ELF, "application/octet-stream"),
            (
                b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0".as_slice(),
                "image/jpeg",
            ),
            (PNG, "image/jpeg"),
            (PNG, "text/plain"),
            (
                b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"
                    .as_slice(),
                "image/svg+xml",
            ),
            (b"<html><body>hi</body></html>".as_slice(), "text/plain"),
            (b"  <?xml version='1.0'?><a/>".as_slice(), "text/plain"),
            (b"#!/bin/sh\nrm -rf /\n".as_slice(), "text/x-shellscript"),
            (b"\0\0binary".as_slice(), "text/plain"),
        ] {
            let err = check(bytes, declared, true).expect_err(declared);
            assert_eq!(err.code(), 400, "{err}");
            assert_eq!(err.field(), Some("file"));
        }
    }

    #[test]
    fn the_scanner_finds_markup_across_chunks_and_in_pdfs() {
        let mut s = Scanner::new("image/png");
        s.feed(PNG).unwrap();
        s.feed(b"....<scr").unwrap();
        assert!(s.feed(b"IPT>alert(1)").is_err(), "split over two chunks");
        let mut s = Scanner::new("application/pdf");
        assert!(
            s.feed(b"%PDF-1.4 << /S /JavaScript /JS (app.alert(1)) >>")
                .is_err()
        );
        let mut s = Scanner::new("image/png");
        s.feed(PNG).unwrap();
        s.feed(&[0x3c; 3]).unwrap();
    }

    #[test]
    fn paths_are_refused_and_names_lose_control_characters() {
        for path in ["../../etc/passwd", "C:\\Windows\\evil.exe", "a/b.png", ".."] {
            assert_eq!(sanitize_name(path).expect_err(path).code(), 400);
        }
        let name = |raw: &str| sanitize_name(raw).unwrap();
        assert_eq!(name("..."), "file");
        assert_eq!(name(""), "file");
        assert_eq!(name("a\u{0}b\nc.png"), "abc.png");
        assert_eq!(name(".hidden"), "hidden");
        assert_eq!(name("re<port>.pdf"), "re_port_.pdf");
        assert!(name(&"é".repeat(300)).len() <= 200);
    }
}

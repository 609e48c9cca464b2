//! Encryption at rest. Its one role: the [`Keyring`] (the current key and every older key
//! still needed to read), and the two stored forms it seals and opens, AES-256-GCM each:
//!
//! - **Text columns** (message text, reply text checkpointed mid-stream, context documents,
//!   help reasons): `enc:v1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`, with the column and
//!   the row's id as associated data, so a ciphertext moved to another row or column fails to
//!   open. Text without the `enc:` prefix is plaintext (rows written before a key was
//!   configured) and reads as it is.
//! - **File contents**: a header (`\0CHATENC`, version, key id, segment size) and then the
//!   plaintext in segments of [`SEGMENT_BYTES`], each sealed on its own with a fresh nonce
//!   and the file id, its index and whether it is the last one as associated data (so
//!   segments cannot be reordered, swapped between files or cut off). A byte range maps to
//!   whole segments, so range reads decrypt only what they need. An object without the magic
//!   is a plaintext upload from before.
//!
//! Keys come from the environment only (`CHAT_ENCRYPTION__KEYS`, see
//! [`crate::config::EncryptionSettings`]); the keyring never prints them (its `Debug` shows
//! key ids). Without keys the keyring is off and text is stored as given, with one
//! exception: text that itself starts with `enc:` is stored as `enc:raw:<text>`, so no
//! stored plaintext can ever be taken for a ciphertext. Nonces are random (96 bits), which
//! keeps one key safe for about 2^32 writes: rotate long before that.
//!
//! The AEAD is aws-lc-rs's AES-256-GCM (already in the build for TLS and URL signing, so no
//! second crypto stack; hardware AES where the CPU has it).

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The prefix every stored form of a text column that is not plain text starts with.
const TEXT_MARK: &str = "enc:";
/// A ciphertext: `enc:v1:<key id>:<base64>`.
const TEXT_V1: &str = "enc:v1:";
/// A plaintext that starts with [`TEXT_MARK`], escaped (stored without a key).
const TEXT_RAW: &str = "enc:raw:";
/// The first bytes of an encrypted file. No upload the allow-list accepts starts with them:
/// text files hold no NUL byte, and every binary type has its own magic (MP4's box size may
/// start with NUL, but its bytes 4..8 are `ftyp`).
pub const FILE_MAGIC: &[u8; 8] = b"\0CHATENC";
/// The file format's version byte.
const FILE_VERSION: u8 = 1;
/// Plaintext bytes per file segment (the last one may be shorter).
pub const SEGMENT_BYTES: u32 = 64 * 1024;
/// The GCM tag.
const TAG_LEN: usize = 16;
/// Bytes a sealed segment adds to its plaintext (nonce and tag).
pub const SEGMENT_OVERHEAD: u64 = (NONCE_LEN + TAG_LEN) as u64;
/// The longest key id.
const MAX_KEY_ID: usize = 32;
/// The longest file header: magic, version, id length, id, segment size.
pub const MAX_FILE_HEADER: u64 = (FILE_MAGIC.len() + 2 + MAX_KEY_ID + 4) as u64;

/// What can go wrong sealing or opening. None of these carries key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// `CHAT_ENCRYPTION__KEYS` does not parse (the message says which entry and why).
    #[error("CHAT_ENCRYPTION__KEYS: {0}")]
    BadKeys(String),
    /// Stored data names a key id the keyring does not have.
    #[error(
        "stored data is encrypted with key {0:?}, which CHAT_ENCRYPTION__KEYS does not hold \
         (add it back, after the current key, to read it)"
    )]
    UnknownKey(String),
    /// Authentication failed: the data was altered, moved to another row or file, or the key
    /// under its id is not the one it was sealed with.
    #[error("stored data failed authentication (altered, moved, or a different key under its id)")]
    Tampered,
    /// The stored form is cut short or garbled.
    #[error("stored ciphertext is malformed: {0}")]
    Malformed(&'static str),
    /// The system's random source or the cipher failed (never expected).
    #[error("encryption failed")]
    Seal,
}

struct Key {
    id: String,
    key: Arc<LessSafeKey>,
}

/// The keys: the first is current (new writes use it), the others only read older data.
/// Empty: encryption is off. Cheap to share behind an `Arc`.
pub struct Keyring {
    keys: Vec<Key>,
    random: SystemRandom,
}

impl fmt::Debug for Keyring {
    /// Key ids only, never key bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field(
                "key_ids",
                &self.keys.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for Keyring {
    fn default() -> Self {
        Self::off()
    }
}

impl Keyring {
    /// No keys: text is stored as given (escaped only when it starts with `enc:`), files as
    /// uploaded; encrypted data cannot be read.
    pub fn off() -> Self {
        Self {
            keys: Vec::new(),
            random: SystemRandom::new(),
        }
    }

    /// Parses `id:base64key,id:base64key,...`, the first entry current. Each key is 32 bytes
    /// (`openssl rand -base64 32`); an id is 1 to 32 of `A-Z a-z 0-9 _ -`, and appears once.
    /// Whitespace around entries is ignored; an empty string means off. Fails naming the
    /// entry (by position and id, never its key) and what is wrong.
    pub fn parse(spec: &str) -> Result<Self, CryptoError> {
        let mut keys: Vec<Key> = Vec::new();
        for (n, entry) in spec
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let position = n + 1;
            let Some((id, encoded)) = entry.split_once(':') else {
                return Err(CryptoError::BadKeys(format!(
                    "entry {position} is not id:base64key"
                )));
            };
            let id = id.trim();
            if id.is_empty()
                || id.len() > MAX_KEY_ID
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(CryptoError::BadKeys(format!(
                    "entry {position}: a key id is 1 to {MAX_KEY_ID} of A-Z a-z 0-9 _ -"
                )));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(CryptoError::BadKeys(format!("key id {id:?} appears twice")));
            }
            let bytes = STANDARD
                .decode(encoded.trim())
                .map_err(|_| CryptoError::BadKeys(format!("key {id:?} is not valid base64")))?;
            if bytes.len() != 32 {
                return Err(CryptoError::BadKeys(format!(
                    "key {id:?} is {} bytes; AES-256 needs 32 (openssl rand -base64 32)",
                    bytes.len()
                )));
            }
            let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
                .map_err(|_| CryptoError::BadKeys(format!("key {id:?} is not usable")))?;
            keys.push(Key {
                id: id.to_owned(),
                key: Arc::new(LessSafeKey::new(unbound)),
            });
        }
        Ok(Self {
            keys,
            random: SystemRandom::new(),
        })
    }

    /// Whether new writes are encrypted.
    pub fn is_on(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The id new writes are sealed under, when encryption is on.
    pub fn current_id(&self) -> Option<&str> {
        self.keys.first().map(|k| k.id.as_str())
    }

    fn key(&self, id: &str) -> Result<&Arc<LessSafeKey>, CryptoError> {
        self.keys
            .iter()
            .find(|k| k.id == id)
            .map(|k| &k.key)
            .ok_or_else(|| CryptoError::UnknownKey(id.to_owned()))
    }

    fn nonce(&self) -> Result<[u8; NONCE_LEN], CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| CryptoError::Seal)?;
        Ok(nonce)
    }

    /// The stored form of `plain` for a text column. `aad` names the column and the row
    /// (`messages.content:<id>`); [`Keyring::open_text`] must be given the same.
    pub fn seal_text(&self, aad: &str, plain: &str) -> Result<String, CryptoError> {
        if !self.is_on() {
            return Ok(if plain.starts_with(TEXT_MARK) {
                format!("{TEXT_RAW}{plain}")
            } else {
                plain.to_owned()
            });
        }
        self.seal_form(aad, plain.as_bytes())
    }

    /// `enc:v1:<current key id>:<base64(nonce ‖ ciphertext ‖ tag)>` of `plain`.
    fn seal_form(&self, aad: &str, plain: &[u8]) -> Result<String, CryptoError> {
        let current = self.keys.first().ok_or(CryptoError::Seal)?;
        let nonce = self.nonce()?;
        let mut sealed = plain.to_vec();
        current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| CryptoError::Seal)?;
        let mut blob = Vec::with_capacity(NONCE_LEN + sealed.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(format!("{TEXT_V1}{}:{}", current.id, STANDARD.encode(blob)))
    }

    /// The plaintext of a stored text value (see [`Keyring::seal_text`]). Plain text passes
    /// through. Fails with [`CryptoError::UnknownKey`] when the value's key is not in the
    /// keyring and [`CryptoError::Tampered`] when it does not authenticate.
    ///
    /// A value that starts with `enc:v1:` but is not a well-formed ciphertext (no key id,
    /// not base64, too short) was written before this format existed and reads as plain text.
    pub fn open_text(&self, aad: &str, stored: &str) -> Result<String, CryptoError> {
        let plain = self.open_bytes(aad, stored.as_bytes())?;
        String::from_utf8(plain).map_err(|_| CryptoError::Malformed("not UTF-8"))
    }

    /// Whether a stored text value should be rewritten by re-encryption: encryption is on and
    /// the value is plaintext (or escaped) or sealed under another key than the current one.
    pub fn text_is_stale(&self, stored: &str) -> bool {
        match self.current_id() {
            None => false,
            Some(current) => text_key_id(stored) != Some(current),
        }
    }

    /// [`Keyring::text_is_stale`] for a binary column.
    pub fn bytes_are_stale(&self, stored: &[u8]) -> bool {
        match std::str::from_utf8(stored) {
            Ok(text) => self.text_is_stale(text),
            Err(_) => self.is_on(),
        }
    }

    /// [`Keyring::seal_text`] for a binary column holding UTF-8 or other bytes (a stored event's
    /// JSON): the same stored form, as bytes.
    pub fn seal_bytes(&self, aad: &str, plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match std::str::from_utf8(plain) {
            Ok(text) => Ok(self.seal_text(aad, text)?.into_bytes()),
            // Bytes that are not UTF-8 can never be taken for a stored form (which is text), so
            // without a key they are stored as they are.
            Err(_) if !self.is_on() => Ok(plain.to_vec()),
            Err(_) => Ok(self.seal_form(aad, plain)?.into_bytes()),
        }
    }

    /// [`Keyring::open_text`] for a binary column: bytes that are not a UTF-8 stored form
    /// pass through as they are.
    pub fn open_bytes(&self, aad: &str, stored: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let Ok(text) = std::str::from_utf8(stored) else {
            return Ok(stored.to_vec());
        };
        if let Some(rest) = text.strip_prefix(TEXT_RAW) {
            return Ok(rest.as_bytes().to_vec());
        }
        let Some((id, blob)) = parse_text(text) else {
            return Ok(stored.to_vec());
        };
        let key = self.key(id)?;
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| CryptoError::Malformed("short nonce"))?;
        let mut sealed = sealed.to_vec();
        let len = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| CryptoError::Tampered)?
            .len();
        sealed.truncate(len);
        Ok(sealed)
    }

    /// A sealer for the contents of the file `file_id`, under the current key; `None` when
    /// encryption is off (store the bytes as uploaded).
    pub fn file_sealer(&self, file_id: &str) -> Option<FileSealer> {
        let current = self.keys.first()?;
        Some(FileSealer {
            key: current.key.clone(),
            random: self.random.clone(),
            key_id: current.id.clone(),
            file_id: file_id.to_owned(),
            pending: Vec::new(),
            index: 0,
            header_sent: false,
        })
    }

    /// An opener for an encrypted file whose object starts with `head` (at least its header;
    /// [`MAX_FILE_HEADER`] bytes are always enough), holding `size` plaintext bytes. `None`:
    /// the object is not encrypted (no magic). Fails when the header is garbled or names a
    /// key the keyring does not have.
    pub fn file_opener(
        &self,
        file_id: &str,
        size: u64,
        head: &[u8],
    ) -> Result<Option<FileOpener>, CryptoError> {
        let Some(layout) = FileLayout::parse(head)? else {
            return Ok(None);
        };
        let key = self.key(&layout.key_id)?.clone();
        Ok(Some(FileOpener {
            key,
            file_id: file_id.to_owned(),
            layout,
            size,
        }))
    }
}

/// The key id and decoded blob of a well-formed `enc:v1:` value.
fn parse_text(stored: &str) -> Option<(&str, Vec<u8>)> {
    let rest = stored.strip_prefix(TEXT_V1)?;
    let (id, encoded) = rest.split_once(':')?;
    if id.is_empty() || id.len() > MAX_KEY_ID {
        return None;
    }
    let blob = STANDARD.decode(encoded).ok()?;
    (blob.len() >= NONCE_LEN + TAG_LEN).then_some((id, blob))
}

/// The key id a stored text value is sealed under; `None` for plain text.
pub fn text_key_id(stored: &str) -> Option<&str> {
    if stored.starts_with(TEXT_RAW) {
        return None;
    }
    parse_text(stored).map(|(id, _)| id)
}

/// The associated data of one file segment.
fn segment_aad(file_id: &str, index: u64, last: bool) -> Vec<u8> {
    format!("files:{file_id}:{index}:{}", u8::from(last)).into_bytes()
}

/// Seals one upload as it streams: [`FileSealer::push`] the plaintext chunks, write what it
/// returns, then write [`FileSealer::finish`]. Holds at most one segment of plaintext.
pub struct FileSealer {
    key: Arc<LessSafeKey>,
    random: SystemRandom,
    key_id: String,
    file_id: String,
    /// Plaintext not sealed yet: up to one segment (a full segment waits until more data
    /// shows it is not the last).
    pending: Vec<u8>,
    index: u64,
    header_sent: bool,
}

impl FileSealer {
    fn header(&self) -> Vec<u8> {
        let mut header = Vec::with_capacity(MAX_FILE_HEADER as usize);
        header.extend_from_slice(FILE_MAGIC);
        header.push(FILE_VERSION);
        // Key ids are at most MAX_KEY_ID (32) bytes, checked when parsed.
        header.push(u8::try_from(self.key_id.len()).unwrap_or(u8::MAX));
        header.extend_from_slice(self.key_id.as_bytes());
        header.extend_from_slice(&SEGMENT_BYTES.to_be_bytes());
        header
    }

    fn seal_segment(
        &mut self,
        plain: &[u8],
        last: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| CryptoError::Seal)?;
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(segment_aad(&self.file_id, self.index, last).as_slice()),
                &mut sealed,
            )
            .map_err(|_| CryptoError::Seal)?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        self.index += 1;
        Ok(())
    }

    /// Takes the next plaintext bytes; returns the stored bytes that are ready (the header
    /// first, then every segment known not to be the last), possibly none.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::new();
        if !self.header_sent {
            out = self.header();
            self.header_sent = true;
        }
        let segment = SEGMENT_BYTES as usize;
        let mut data = data;
        while !data.is_empty() {
            let room = segment - self.pending.len();
            if room == 0 {
                // A full segment followed by more data: not the last one.
                let full = std::mem::take(&mut self.pending);
                self.seal_segment(&full, false, &mut out)?;
                continue;
            }
            let take = room.min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(out)
    }

    /// The last stored bytes: the final segment (and the header, for an empty file).
    pub fn finish(mut self) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::new();
        if !self.header_sent {
            out = self.header();
            self.header_sent = true;
        }
        let last = std::mem::take(&mut self.pending);
        self.seal_segment(&last, true, &mut out)?;
        Ok(out)
    }
}

/// An encrypted file's header, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileLayout {
    key_id: String,
    segment: u64,
    header_len: u64,
}

impl FileLayout {
    /// `None` when `head` does not start with [`FILE_MAGIC`].
    fn parse(head: &[u8]) -> Result<Option<Self>, CryptoError> {
        let Some(rest) = head.strip_prefix(FILE_MAGIC.as_slice()) else {
            return Ok(None);
        };
        let [version, id_len, rest @ ..] = rest else {
            return Err(CryptoError::Malformed("file header cut short"));
        };
        if *version != FILE_VERSION {
            return Err(CryptoError::Malformed("unknown file format version"));
        }
        let id_len = usize::from(*id_len);
        if id_len == 0 || id_len > MAX_KEY_ID || rest.len() < id_len + 4 {
            return Err(CryptoError::Malformed("file header cut short"));
        }
        let key_id = std::str::from_utf8(&rest[..id_len])
            .map_err(|_| CryptoError::Malformed("file key id"))?
            .to_owned();
        let mut segment = [0u8; 4];
        segment.copy_from_slice(&rest[id_len..id_len + 4]);
        let segment = u64::from(u32::from_be_bytes(segment));
        if segment == 0 {
            return Err(CryptoError::Malformed("file segment size 0"));
        }
        Ok(Some(Self {
            key_id,
            segment,
            header_len: (FILE_MAGIC.len() + 2 + id_len + 4) as u64,
        }))
    }
}

/// Opens an encrypted file, whole or by byte range: [`FileOpener::span`] says which stored
/// bytes hold a plaintext range, [`FileOpener::open`] turns them back into plaintext.
pub struct FileOpener {
    key: Arc<LessSafeKey>,
    file_id: String,
    layout: FileLayout,
    /// Plaintext bytes of the whole file.
    size: u64,
}

/// Which stored bytes to fetch for a plaintext range, and how to cut the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSpan {
    /// The stored byte range (end exclusive) of the segments `first..=last`.
    pub stored: std::ops::Range<u64>,
    pub first: u64,
    pub last: u64,
    /// Plaintext bytes to drop from the start of segment `first`.
    pub skip: u64,
    /// Plaintext bytes wanted in all.
    pub len: u64,
}

impl FileOpener {
    fn segments(&self) -> u64 {
        self.size.div_ceil(self.layout.segment).max(1)
    }

    /// The stored length of segment `index`.
    fn stored_len(&self, index: u64) -> u64 {
        let start = index * self.layout.segment;
        self.layout.segment.min(self.size.saturating_sub(start)) + SEGMENT_OVERHEAD
    }

    /// The stored bytes of the plaintext bytes `start..=end` (clamped to the file).
    pub fn span(&self, start: u64, end: u64) -> SegmentSpan {
        let s = self.layout.segment;
        let end = end.min(self.size.saturating_sub(1));
        let first = (start / s).min(self.segments() - 1);
        let last = (end / s).clamp(first, self.segments() - 1);
        let begin = self.layout.header_len + first * (s + SEGMENT_OVERHEAD);
        let stop = self.layout.header_len + last * (s + SEGMENT_OVERHEAD) + self.stored_len(last);
        SegmentSpan {
            stored: begin..stop,
            first,
            last,
            skip: start.saturating_sub(first * s),
            len: (end + 1).saturating_sub(start),
        }
    }

    /// Opens the stored segment `index` (its nonce, ciphertext and tag) into plaintext.
    pub fn open_segment(&self, index: u64, stored: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if stored.len() as u64 != self.stored_len(index) {
            return Err(CryptoError::Malformed("file segment cut short"));
        }
        let (nonce, sealed) = stored.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| CryptoError::Malformed("short nonce"))?;
        let last = index + 1 == self.segments();
        let mut sealed = sealed.to_vec();
        let len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(segment_aad(&self.file_id, index, last).as_slice()),
                &mut sealed,
            )
            .map_err(|_| CryptoError::Tampered)?
            .len();
        sealed.truncate(len);
        Ok(sealed)
    }

    /// A decoder for the stored bytes of `span`, fed as they arrive.
    pub fn decoder(self: Arc<Self>, span: SegmentSpan) -> SegmentDecoder {
        SegmentDecoder {
            next: span.first,
            skip: span.skip,
            remaining: span.len,
            span,
            buffer: Vec::new(),
            opener: self,
        }
    }

    /// The key id of this file.
    pub fn key_id(&self) -> &str {
        &self.layout.key_id
    }
}

/// Turns the stored bytes of a [`SegmentSpan`], in chunks of any size, into the plaintext
/// range it was made for. Buffers at most one segment.
pub struct SegmentDecoder {
    opener: Arc<FileOpener>,
    span: SegmentSpan,
    next: u64,
    skip: u64,
    remaining: u64,
    buffer: Vec<u8>,
}

impl SegmentDecoder {
    /// Takes the next stored bytes; returns the plaintext they complete (possibly none).
    pub fn push(&mut self, mut data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::new();
        while !data.is_empty() && self.next <= self.span.last {
            let want = self.opener.stored_len(self.next) as usize;
            let take = (want - self.buffer.len()).min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buffer.len() == want {
                let plain = self.opener.open_segment(self.next, &self.buffer)?;
                self.buffer.clear();
                self.next += 1;
                let skip = (self.skip as usize).min(plain.len());
                self.skip = 0;
                let keep =
                    (plain.len() - skip).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                out.extend_from_slice(&plain[skip..skip + keep]);
                self.remaining -= keep as u64;
            }
        }
        Ok(out)
    }

    /// Checks that every segment arrived (the store returned the whole span).
    pub fn finish(&self) -> Result<(), CryptoError> {
        if self.next <= self.span.last || self.remaining > 0 {
            return Err(CryptoError::Malformed("file cut short"));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    fn ring(spec: &str) -> Keyring {
        Keyring::parse(spec).unwrap()
    }

    #[test]
    fn text_round_trips_and_names_its_key() {
        let keys = ring(&format!("k1:{K1}"));
        let sealed = keys
            .seal_text("messages.content:m1", "hello, world")
            .unwrap();
        assert!(sealed.starts_with("enc:v1:k1:"), "{sealed}");
        assert!(!sealed.contains("hello"));
        assert_eq!(text_key_id(&sealed), Some("k1"));
        assert_eq!(
            keys.open_text("messages.content:m1", &sealed).unwrap(),
            "hello, world"
        );
        // Two seals of one text differ (fresh nonces).
        assert_ne!(
            sealed,
            keys.seal_text("messages.content:m1", "hello, world")
                .unwrap()
        );
        assert_eq!(
            keys.open_text("x", &keys.seal_text("x", "").unwrap())
                .unwrap(),
            ""
        );
    }

    #[test]
    fn another_row_a_changed_byte_or_a_missing_key_fail_clearly() {
        let keys = ring(&format!("k1:{K1}"));
        let sealed = keys
            .seal_text("messages.content:m1", "secret text")
            .unwrap();
        assert!(matches!(
            keys.open_text("messages.content:m2", &sealed),
            Err(CryptoError::Tampered)
        ));
        let mut blob = STANDARD.decode(sealed.rsplit(':').next().unwrap()).unwrap();
        blob[NONCE_LEN] ^= 1;
        let altered = format!("enc:v1:k1:{}", STANDARD.encode(blob));
        assert!(matches!(
            keys.open_text("messages.content:m1", &altered),
            Err(CryptoError::Tampered)
        ));
        let other = ring(&format!("k2:{K2}"));
        let err = other.open_text("messages.content:m1", &sealed).unwrap_err();
        assert!(
            matches!(err, CryptoError::UnknownKey(ref id) if id == "k1"),
            "{err}"
        );
        assert!(err.to_string().contains("k1"));
        // The same id with different key bytes is caught by the tag.
        let impostor = ring(&format!("k1:{K2}"));
        assert!(matches!(
            impostor.open_text("messages.content:m1", &sealed),
            Err(CryptoError::Tampered)
        ));
        assert!(matches!(
            Keyring::off().open_text("messages.content:m1", &sealed),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn plaintext_passes_through_and_lookalikes_stay_text() {
        let keys = ring(&format!("k1:{K1}"));
        for plain in [
            "hello",
            "",
            "enc:v1:",
            "enc:v1:k1:not base64!",
            "enc:v1:k1:AAAA",
            "enc:",
        ] {
            assert_eq!(keys.open_text("a", plain).unwrap(), plain);
            assert_eq!(Keyring::off().open_text("a", plain).unwrap(), plain);
        }
        // Without a key, text that looks like the format is escaped on the way in.
        let off = Keyring::off();
        let tricky = format!("enc:v1:k1:{}", STANDARD.encode([0u8; 40]));
        let stored = off.seal_text("a", &tricky).unwrap();
        assert_eq!(stored, format!("enc:raw:{tricky}"));
        assert_eq!(off.open_text("a", &stored).unwrap(), tricky);
        assert_eq!(keys.open_text("a", &stored).unwrap(), tricky);
        assert_eq!(off.seal_text("a", "plain").unwrap(), "plain");
        assert!(keys.text_is_stale(&stored) && keys.text_is_stale("plain"));
        assert!(!off.text_is_stale("plain"));
    }

    #[test]
    fn bytes_round_trip_in_the_text_form_and_plain_bytes_pass() {
        let keys = ring(&format!("k1:{K1}"));
        for plain in [&b"{\"title\":\"x\"}"[..], b"\xff\xfe not utf-8", b""] {
            let sealed = keys.seal_bytes("chat_events.payload:c1:1", plain).unwrap();
            assert!(sealed.starts_with(b"enc:v1:k1:"));
            assert_eq!(
                keys.open_bytes("chat_events.payload:c1:1", &sealed)
                    .unwrap(),
                plain
            );
            assert!(
                keys.open_bytes("chat_events.payload:c1:2", &sealed)
                    .is_err()
            );
            assert!(!keys.bytes_are_stale(&sealed) && keys.bytes_are_stale(plain));
            assert_eq!(keys.open_bytes("a", plain).unwrap(), plain);
        }
        assert_eq!(Keyring::off().seal_bytes("a", b"\xff").unwrap(), b"\xff");
    }

    #[test]
    fn rotation_reads_old_keys_and_writes_the_first() {
        let old = ring(&format!("k1:{K1}"));
        let sealed = old.seal_text("a", "old row").unwrap();
        let rotated = ring(&format!("k2:{K2}, k1:{K1}"));
        assert_eq!(rotated.current_id(), Some("k2"));
        assert_eq!(rotated.open_text("a", &sealed).unwrap(), "old row");
        assert!(rotated.text_is_stale(&sealed));
        let fresh = rotated.seal_text("a", "new row").unwrap();
        assert_eq!(text_key_id(&fresh), Some("k2"));
        assert!(!rotated.text_is_stale(&fresh));
    }

    #[test]
    fn bad_key_specs_are_refused_without_showing_the_key() {
        for (spec, says) in [
            ("k1", "id:base64key"),
            (":AAAA", "key id"),
            ("k 1:AAAA", "key id"),
            ("k1:not-base64!!", "base64"),
            ("k1:AAAA", "32"),
        ] {
            let err = Keyring::parse(spec).unwrap_err().to_string();
            assert!(err.contains(says), "{spec}: {err}");
        }
        let dup = Keyring::parse(&format!("k1:{K1},k1:{K2}"))
            .unwrap_err()
            .to_string();
        assert!(
            dup.contains("twice") && !dup.contains(K1) && !dup.contains(K2),
            "{dup}"
        );
        assert!(!Keyring::parse("").unwrap().is_on());
        let debug = format!("{:?}", ring(&format!("k1:{K1}")));
        assert!(debug.contains("k1") && !debug.contains(K1), "{debug}");
    }

    fn seal_file(keys: &Keyring, id: &str, data: &[u8], chunk: usize) -> Vec<u8> {
        let mut sealer = keys.file_sealer(id).unwrap();
        let mut stored = Vec::new();
        for piece in data.chunks(chunk.max(1)) {
            stored.extend(sealer.push(piece).unwrap());
        }
        stored.extend(sealer.finish().unwrap());
        stored
    }

    fn read_range(
        keys: &Keyring,
        id: &str,
        stored: &[u8],
        size: u64,
        start: u64,
        end: u64,
    ) -> Vec<u8> {
        let head = &stored[..stored.len().min(MAX_FILE_HEADER as usize)];
        let opener = Arc::new(keys.file_opener(id, size, head).unwrap().unwrap());
        let span = opener.span(start, end);
        let bytes = &stored[span.stored.start as usize..span.stored.end as usize];
        let mut decoder = opener.decoder(span);
        let mut out = Vec::new();
        // Odd chunk sizes, as a store streams them.
        for piece in bytes.chunks(7777) {
            out.extend(decoder.push(piece).unwrap());
        }
        decoder.finish().unwrap();
        out
    }

    #[test]
    fn files_round_trip_by_segment_and_by_range_at_every_boundary() {
        let keys = ring(&format!("k1:{K1}"));
        let s = SEGMENT_BYTES as usize;
        for size in [1, 10, s - 1, s, s + 1, 3 * s, 3 * s + 5] {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let stored = seal_file(&keys, "f1", &data, 10_000);
            assert!(stored.starts_with(FILE_MAGIC));
            let segments = size.div_ceil(s) as u64;
            assert_eq!(
                stored.len() as u64,
                MAX_FILE_HEADER - (MAX_KEY_ID as u64 - 2)
                    + size as u64
                    + segments * SEGMENT_OVERHEAD,
                "size {size}"
            );
            let n = size as u64;
            assert_eq!(
                read_range(&keys, "f1", &stored, n, 0, n - 1),
                data,
                "whole {size}"
            );
            let mut points = vec![0, n - 1, n / 2];
            for b in [s as u64, 2 * s as u64, 3 * s as u64] {
                points.extend([b.saturating_sub(1), b, b + 1]);
            }
            points.retain(|p| *p < n);
            for &a in &points {
                for &b in &points {
                    if a <= b {
                        assert_eq!(
                            read_range(&keys, "f1", &stored, n, a, b),
                            &data[a as usize..=b as usize],
                            "size {size} range {a}..={b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_file_moved_reordered_cut_or_altered_fails() {
        let keys = ring(&format!("k1:{K1}"));
        let s = SEGMENT_BYTES as usize;
        let data = vec![7u8; 2 * s + 100];
        let stored = seal_file(&keys, "f1", &data, s);
        let n = data.len() as u64;
        let head = &stored[..MAX_FILE_HEADER as usize];
        // Another file's id.
        let opener = keys.file_opener("f2", n, head).unwrap().unwrap();
        let span = opener.span(0, n - 1);
        let first = &stored[span.stored.start as usize..][..opener.stored_len(0) as usize];
        assert!(matches!(
            opener.open_segment(0, first),
            Err(CryptoError::Tampered)
        ));
        // A changed byte.
        let opener = keys.file_opener("f1", n, head).unwrap().unwrap();
        let mut altered = first.to_vec();
        altered[20] ^= 1;
        assert!(matches!(
            opener.open_segment(0, &altered),
            Err(CryptoError::Tampered)
        ));
        // Cut after two full segments: the second was sealed as "not last".
        let cut = keys.file_opener("f1", 2 * s as u64, head).unwrap().unwrap();
        let header = span.stored.start as usize;
        let second =
            &stored[header + s + SEGMENT_OVERHEAD as usize..][..s + SEGMENT_OVERHEAD as usize];
        assert!(matches!(
            cut.open_segment(1, second),
            Err(CryptoError::Tampered)
        ));
        // Unknown key; a plain file is not an encrypted one.
        let err = ring(&format!("k2:{K2}")).file_opener("f1", n, head).err();
        assert!(matches!(err, Some(CryptoError::UnknownKey(_))));
        assert!(
            keys.file_opener("f1", 3, b"\x89PNG\r\n\x1a\n")
                .unwrap()
                .is_none()
        );
        assert!(keys.file_opener("f1", 3, b"hi").unwrap().is_none());
        assert!(Keyring::off().file_sealer("f1").is_none());
    }
}

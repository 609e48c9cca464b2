//! Files: uploads checked by content ([`content`]), stored in an object store (the local disk
//! by default), recorded in the `files` table, and read back only through signed, expiring
//! URLs ([`sign`]). Bytes stream through in chunks in both directions; the only buffer is the
//! first [`content::SNIFF_BYTES`] of an upload, read before anything is stored.
//!
//! With encryption at rest on ([`crate::crypto`]), the store holds each file sealed in
//! segments; uploads are sealed as they stream (one segment buffered), downloads and ranges
//! fetch the header and then only the segments the range needs, and sizes stay the
//! plaintext's. Objects stored before a key was configured are served as they are.

pub mod content;
pub mod scan;
pub mod sign;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::path::Path as StorePath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::chat::engine::new_id;
use crate::chat::error::ChatError;
use crate::crypto::{CryptoError, FileOpener, Keyring, MAX_FILE_HEADER};
use crate::storage::{self, Db, FileRow};
use sign::UrlSigner;

/// `[files]`: where uploads go and how large they may be.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileSettings {
    /// Largest file, in bytes (413 past it).
    pub max_bytes: u64,
    /// Where the bytes are kept: `local` (`local_dir`) or `s3` (`[files.s3]`).
    pub store: StoreKind,
    /// The bucket of the `s3` store (AWS, or any S3-compatible server).
    pub s3: S3Settings,
    /// The folder of the `local` store (created at start).
    pub local_dir: PathBuf,
    /// How long a download URL works, in seconds.
    pub url_ttl_secs: u64,
    /// The key of download URLs (environment only: `CHAT_FILES__SIGNING_SECRET`, at least 32
    /// bytes). Unset: derived from `auth.secret`; with neither, a random key per start (URLs
    /// then stop working when the core restarts).
    #[serde(skip_serializing)]
    pub signing_secret: Option<SecretString>,
    /// Most attachments on one message.
    pub max_attachments: usize,
    /// clamd's TCP address (`127.0.0.1:3310`): every upload is scanned through `INSTREAM`
    /// and refused when clamd finds something; unset: no scan.
    pub clamd_addr: Option<String>,
    /// How long clamd may take to accept, to take each chunk, and to answer.
    pub scan_timeout_ms: u64,
    /// Uploads no message attached are deleted this many hours after the upload; 0 keeps them.
    pub unattached_hours: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    Local,
    S3,
}

/// `[files.s3]`: an S3 bucket. Credentials from the environment only: `CHAT_FILES__S3__ACCESS_KEY_ID`
/// and `CHAT_FILES__S3__SECRET_ACCESS_KEY`, else the standard `AWS_*` variables (and instance
/// credentials on AWS).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Settings {
    pub bucket: String,
    /// `us-east-1` when unset.
    pub region: Option<String>,
    /// An S3-compatible server (`http://127.0.0.1:9000` for MinIO); unset: AWS.
    pub endpoint: Option<String>,
    /// Allow an `http://` endpoint (a server on a private network).
    pub allow_http: bool,
    #[serde(skip_serializing)]
    pub access_key_id: Option<SecretString>,
    #[serde(skip_serializing)]
    pub secret_access_key: Option<SecretString>,
}

impl Default for FileSettings {
    fn default() -> Self {
        Self {
            max_bytes: 10 * 1024 * 1024,
            store: StoreKind::Local,
            s3: S3Settings::default(),
            local_dir: PathBuf::from("data/files"),
            url_ttl_secs: 3600,
            signing_secret: None,
            max_attachments: 10,
            clamd_addr: None,
            scan_timeout_ms: 10_000,
            unattached_hours: 24,
        }
    }
}

impl FileSettings {
    pub const VERBATIM_KEYS: &'static [&'static str] = &[
        "files.signing_secret",
        "files.s3.bucket",
        "files.s3.region",
        "files.s3.access_key_id",
        "files.s3.secret_access_key",
    ];
}

/// The file service: settings, store and URL signer.
pub struct Files {
    settings: FileSettings,
    store: Arc<dyn ObjectStore>,
    signer: UrlSigner,
    /// Seals new uploads and opens sealed objects (off: bytes stored as uploaded).
    keyring: Arc<Keyring>,
}

/// What re-encrypting the files did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileCounts {
    /// Files looked at.
    pub scanned: u64,
    /// Files rewritten under the current key.
    pub rewritten: u64,
    /// Files that could not be read or opened; left as they were.
    pub failed: u64,
}

/// A download: the record, the byte range that follows, and the bytes.
pub struct Download {
    pub file: FileRow,
    pub start: u64,
    pub end: u64,
    pub partial: bool,
    pub bytes: futures::stream::BoxStream<'static, Result<Bytes, ChatError>>,
}

impl Files {
    /// Opens the configured store. `auth_secret`: the JWT secret, when HS256 is used (the
    /// URL key is derived from it unless `files.signing_secret` is set).
    pub fn open(settings: &FileSettings, auth_secret: Option<&[u8]>) -> Result<Self, String> {
        let store: Arc<dyn ObjectStore> = match settings.store {
            StoreKind::Local => {
                std::fs::create_dir_all(&settings.local_dir).map_err(|e| {
                    format!(
                        "files.local_dir {}: cannot create it: {e}",
                        settings.local_dir.display()
                    )
                })?;
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(&settings.local_dir)
                        .map_err(|e| format!("files.local_dir: {e}"))?,
                )
            }
            StoreKind::S3 => {
                let s3 = &settings.s3;
                if s3.bucket.trim().is_empty() {
                    return Err("files.s3.bucket is required when files.store = \"s3\"".into());
                }
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&s3.bucket)
                    .with_region(s3.region.as_deref().unwrap_or("us-east-1"))
                    .with_allow_http(s3.allow_http);
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(key) = &s3.access_key_id {
                    builder = builder.with_access_key_id(key.expose_secret());
                }
                if let Some(secret) = &s3.secret_access_key {
                    builder = builder.with_secret_access_key(secret.expose_secret());
                }
                Arc::new(builder.build().map_err(|e| format!("files.s3: {e}"))?)
            }
        };
        let ttl = settings.url_ttl_secs;
        let signer = match (&settings.signing_secret, auth_secret) {
            (Some(secret), _) => {
                let secret = secret.expose_secret().as_bytes();
                if secret.len() < 32 {
                    return Err(
                        "files.signing_secret must be at least 32 bytes (CHAT_FILES__SIGNING_SECRET)"
                            .into(),
                    );
                }
                UrlSigner::new(secret, ttl)
            }
            (None, Some(secret)) => UrlSigner::derived(secret, ttl),
            (None, None) => {
                tracing::warn!(
                    "no files.signing_secret (CHAT_FILES__SIGNING_SECRET) and no HS256 secret: \
                     download URLs use a random key and stop working when the core restarts"
                );
                UrlSigner::random(ttl)
            }
        };
        Ok(Self {
            settings: settings.clone(),
            store,
            signer,
            keyring: Arc::new(Keyring::off()),
        })
    }

    /// The same store with `keyring` sealing new uploads and opening sealed ones.
    pub fn with_keyring(self, keyring: Arc<Keyring>) -> Self {
        Self { keyring, ..self }
    }

    /// An opener for the stored object of `file`, when it is sealed: reads its first bytes.
    /// `None`: stored as uploaded.
    async fn opener(&self, file: &FileRow) -> Result<Option<Arc<FileOpener>>, ChatError> {
        let size = u64::try_from(file.size).unwrap_or(0);
        if size == 0 {
            return Ok(None);
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(0..MAX_FILE_HEADER)),
            ..GetOptions::default()
        };
        let head = self
            .store
            .get_opts(&StorePath::from(file.id.as_str()), options)
            .await
            .map_err(|err| match err {
                object_store::Error::NotFound { .. } => {
                    ChatError::NotFound("File not found".into())
                }
                other => store_error(other),
            })?
            .bytes()
            .await
            .map_err(store_error)?;
        Ok(self
            .keyring
            .file_opener(&file.id, size, &head)
            .map_err(crypto_error)?
            .map(Arc::new))
    }

    /// Whether the store answers: a write, a read and a delete of a probe object (what
    /// `chat-core` checks at start, so a wrong bucket or key fails the start, not an upload).
    pub async fn check(&self) -> Result<(), String> {
        let probe = StorePath::from(format!(".probe-{}", new_id()));
        self.store
            .put(&probe, object_store::PutPayload::from_static(b"probe"))
            .await
            .map_err(|e| format!("the file store refuses writes: {e}"))?;
        self.store
            .get(&probe)
            .await
            .map_err(|e| format!("the file store refuses reads: {e}"))?;
        self.store
            .delete(&probe)
            .await
            .map_err(|e| format!("the file store refuses deletes: {e}"))?;
        Ok(())
    }

    pub fn settings(&self) -> &FileSettings {
        &self.settings
    }

    /// A fresh download URL for a file.
    pub fn url(&self, file_id: &str) -> String {
        self.signer.url(file_id, chrono::Utc::now().timestamp())
    }

    /// Stores an upload of `owner`: the type is read from the first bytes and checked before
    /// anything is written; the rest streams into the store, scanned for markup and counted
    /// against `files.max_bytes`. Nothing is kept when any check fails.
    pub async fn upload<S>(
        &self,
        db: &Db,
        owner: &str,
        name: &str,
        declared: &str,
        mut data: S,
    ) -> Result<FileRow, ChatError>
    where
        S: Stream<Item = Result<Bytes, ChatError>> + Unpin,
    {
        let max = self.settings.max_bytes;
        let too_large = || ChatError::TooLarge {
            message: format!("The file is larger than {max} bytes"),
            field: Some("file"),
        };
        let name = content::sanitize_name(name)?;
        let mut head: Vec<u8> = Vec::new();
        let mut complete = false;
        while head.len() < content::SNIFF_BYTES {
            match data.next().await {
                Some(chunk) => head.extend_from_slice(&chunk?),
                None => {
                    complete = true;
                    break;
                }
            }
            if head.len() as u64 > max {
                return Err(too_large());
            }
        }
        if head.is_empty() {
            return Err(ChatError::invalid("file", "The file is empty"));
        }
        let mime = content::check(&head, declared, complete)?;
        let mut scanner = content::Scanner::new(mime);
        scanner.feed(&head)?;
        let mut virus_scan = match &self.settings.clamd_addr {
            Some(addr) => Some(
                scan::Scan::start(
                    addr,
                    std::time::Duration::from_millis(self.settings.scan_timeout_ms),
                )
                .await?,
            ),
            None => None,
        };
        if let Some(s) = &mut virus_scan {
            s.feed(&head).await?;
        }

        let id = new_id();
        let path = StorePath::from(id.as_str());
        let mut sealer = self.keyring.file_sealer(&id);
        let upload = self.store.put_multipart(&path).await.map_err(store_error)?;
        let mut writer = WriteMultipart::new(upload);
        let mut size = head.len() as u64;
        match &mut sealer {
            Some(sealer) => match sealer.push(&head) {
                Ok(sealed) => writer.write(&sealed),
                Err(err) => {
                    let _ = writer.abort().await;
                    return Err(crypto_error(err));
                }
            },
            None => writer.write(&head),
        }
        drop(head);
        let streamed: Result<(), ChatError> = async {
            while let Some(chunk) = data.next().await {
                let chunk = chunk?;
                size += chunk.len() as u64;
                if size > max {
                    return Err(too_large());
                }
                scanner.feed(&chunk)?;
                if let Some(s) = &mut virus_scan {
                    s.feed(&chunk).await?;
                }
                writer.wait_for_capacity(2).await.map_err(store_error)?;
                match &mut sealer {
                    Some(sealer) => {
                        let sealed = sealer.push(&chunk).map_err(crypto_error)?;
                        if !sealed.is_empty() {
                            writer.put(Bytes::from(sealed));
                        }
                    }
                    None => writer.put(chunk),
                }
            }
            if let Some(sealer) = sealer.take() {
                writer.write(&sealer.finish().map_err(crypto_error)?);
            }
            Ok(())
        }
        .await;
        if let Err(err) = streamed {
            let _ = writer.abort().await;
            return Err(err);
        }
        writer.finish().await.map_err(store_error)?;
        // The scanner's verdict comes last, once it has seen every byte; the stored bytes go
        // again unless it says the file is clean.
        if let Some(s) = virus_scan
            && let Err(err) = s.verdict().await
        {
            let _ = self.store.delete(&path).await;
            return Err(err);
        }
        let stored = storage::insert_file(
            db,
            storage::NewFile {
                id: &id,
                owner_id: owner,
                name: &name,
                mime,
                size: i64::try_from(size).unwrap_or(i64::MAX),
                now: chrono::Utc::now().naive_utc(),
            },
        )
        .await;
        match stored {
            Ok(row) => {
                tracing::info!(file = %row.id, user = %owner, mime = %row.mime, size = row.size, "file uploaded");
                Ok(row)
            }
            Err(err) => {
                let _ = self.store.delete(&path).await;
                Err(err.into())
            }
        }
    }

    /// Removes a file's bytes from the store (its record is already gone); a file the store
    /// does not have counts as removed.
    pub async fn remove(&self, file_id: &str) -> Result<(), ChatError> {
        match self.store.delete(&StorePath::from(file_id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(store_error(err)),
        }
    }

    /// A whole file's bytes (for the prompt: small files only).
    pub async fn read(&self, db: &Db, file_id: &str) -> Result<Bytes, ChatError> {
        let gone = || ChatError::NotFound("File not found".into());
        let file = storage::get_file(db, file_id).await?.ok_or_else(gone)?;
        let result = self
            .store
            .get(&StorePath::from(file.id.as_str()))
            .await
            .map_err(store_error)?;
        let stored = result.bytes().await.map_err(store_error)?;
        let size = u64::try_from(file.size).unwrap_or(0);
        let Some(opener) = self
            .keyring
            .file_opener(&file.id, size, &stored)
            .map_err(crypto_error)?
        else {
            return Ok(stored);
        };
        let span = opener.span(0, size.saturating_sub(1));
        let sealed = usize::try_from(span.stored.start)
            .ok()
            .zip(usize::try_from(span.stored.end).ok())
            .and_then(|(start, end)| stored.get(start..end))
            .ok_or_else(|| crypto_error(CryptoError::Malformed("file cut short")))?;
        let mut decoder = Arc::new(opener).decoder(span);
        let plain = decoder.push(sealed).map_err(crypto_error)?;
        decoder.finish().map_err(crypto_error)?;
        Ok(Bytes::from(plain))
    }

    /// Rewrites every stored file that is not sealed under the keyring's current key (plain
    /// uploads from before a key was set, files under an older key), `batch` records per
    /// read. Each file is streamed through (one segment in memory) into a new object beside
    /// it, which then replaces it (`rename`: atomic on the local disk, copy and delete on S3),
    /// so a download never sees half a file. A no-op when encryption is off. Files that
    /// cannot be read or opened are counted and logged, and left as they were; running it
    /// again resumes (files under the current key are skipped).
    pub async fn reencrypt(&self, db: &Db, batch: i64) -> Result<FileCounts, ChatError> {
        let mut counts = FileCounts::default();
        let Some(current) = self.keyring.current_id() else {
            return Ok(counts);
        };
        let mut after = String::new();
        loop {
            let page = storage::files_after(db, &after, batch.clamp(1, 10_000)).await?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            for file in page {
                counts.scanned += 1;
                match self.reencrypt_one(db, &file, current).await {
                    Ok(true) => counts.rewritten += 1,
                    Ok(false) => {}
                    // Deleted meanwhile: nothing to do.
                    Err(ChatError::NotFound(_)) => {}
                    Err(err) => {
                        tracing::warn!(file = %file.id, error = %err, "cannot re-encrypt a file");
                        counts.failed += 1;
                    }
                }
            }
        }
        Ok(counts)
    }

    /// Rewrites one file under `current`; `false` when it already was.
    async fn reencrypt_one(
        &self,
        db: &Db,
        file: &FileRow,
        current: &str,
    ) -> Result<bool, ChatError> {
        let opener = self.opener(file).await?;
        if opener.as_ref().is_some_and(|o| o.key_id() == current) {
            return Ok(false);
        }
        let size = u64::try_from(file.size).unwrap_or(0);
        let path = StorePath::from(file.id.as_str());
        let stored = self
            .store
            .get(&path)
            .await
            .map_err(store_error)?
            .into_stream();
        let mut plain = match opener {
            Some(opener) => {
                let span = opener.span(0, size.saturating_sub(1));
                // The whole object: its header is skipped by the span's start.
                let skip = span.stored.start;
                decrypted(skip_bytes(stored, skip), opener.decoder(span)).boxed()
            }
            None => stored.map(|chunk| chunk.map_err(store_error)).boxed(),
        };
        let Some(mut sealer) = self.keyring.file_sealer(&file.id) else {
            return Ok(false);
        };
        let fresh = StorePath::from(format!("{}.reencrypt", file.id));
        let upload = self
            .store
            .put_multipart(&fresh)
            .await
            .map_err(store_error)?;
        let mut writer = WriteMultipart::new(upload);
        let copied: Result<(), ChatError> = async {
            while let Some(chunk) = plain.next().await {
                let sealed = sealer.push(&chunk?).map_err(crypto_error)?;
                writer.wait_for_capacity(2).await.map_err(store_error)?;
                if !sealed.is_empty() {
                    writer.put(Bytes::from(sealed));
                }
            }
            writer.write(&sealer.finish().map_err(crypto_error)?);
            Ok(())
        }
        .await;
        if let Err(err) = copied {
            let _ = writer.abort().await;
            return Err(err);
        }
        writer.finish().await.map_err(store_error)?;
        self.store
            .rename(&fresh, &path)
            .await
            .map_err(store_error)?;
        // Deleted while it was being copied: the rename brought the bytes back.
        if storage::get_file(db, &file.id).await?.is_none() {
            let _ = self.store.delete(&path).await;
        }
        tracing::info!(file = %file.id, key = current, "file re-encrypted");
        Ok(true)
    }

    /// The bytes of a file for a signed URL, whole or an inclusive range. A bad, expired or
    /// forged URL, like an unknown file, is 404.
    pub async fn download(
        &self,
        db: &Db,
        file_id: &str,
        exp: i64,
        sig: &str,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<Download, ChatError> {
        let gone = || ChatError::NotFound("File not found".into());
        if self
            .signer
            .verify(file_id, exp, sig, chrono::Utc::now().timestamp())
            .is_err()
        {
            return Err(gone());
        }
        let file = storage::get_file(db, file_id).await?.ok_or_else(gone)?;
        let size = u64::try_from(file.size).unwrap_or(0);
        let (start, end, partial) = match range {
            None => (0, size.saturating_sub(1), false),
            Some((start, end)) => {
                let end = end.unwrap_or(u64::MAX).min(size.saturating_sub(1));
                if start >= size || start > end {
                    return Err(ChatError::Invalid {
                        message: format!("The range is outside the file's {size} bytes"),
                        field: Some("range"),
                    });
                }
                (start, end, true)
            }
        };
        let path = StorePath::from(file.id.as_str());
        let opener = self.opener(&file).await?;
        let (range, decoder) = match opener {
            Some(opener) => {
                let span = opener.span(start, end);
                (
                    Some(GetRange::Bounded(span.stored.clone())),
                    Some(opener.decoder(span)),
                )
            }
            None => (
                (size > 0).then_some(GetRange::Bounded(start..end + 1)),
                None,
            ),
        };
        let options = GetOptions {
            range,
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(&path, options)
            .await
            .map_err(|err| match err {
                object_store::Error::NotFound { .. } => gone(),
                other => store_error(other),
            })?;
        let bytes = match decoder {
            None => result
                .into_stream()
                .map(|chunk| chunk.map_err(store_error))
                .boxed(),
            Some(decoder) => decrypted(result.into_stream(), decoder).boxed(),
        };
        Ok(Download {
            file,
            start,
            end,
            partial,
            bytes,
        })
    }
}

/// The plaintext of a sealed object's stored bytes, as they stream in: whole segments are
/// opened as they complete; a segment that does not authenticate, or a body cut short, ends
/// the stream with an error.
fn decrypted(
    stored: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
    decoder: crate::crypto::SegmentDecoder,
) -> impl Stream<Item = Result<Bytes, ChatError>> + Send + 'static {
    futures::stream::unfold(
        (stored, Some(decoder)),
        |(mut stored, decoder)| async move {
            let mut decoder = decoder?;
            loop {
                match stored.next().await {
                    Some(Ok(chunk)) => match decoder.push(&chunk) {
                        Ok(plain) if plain.is_empty() => continue,
                        Ok(plain) => {
                            return Some((Ok(Bytes::from(plain)), (stored, Some(decoder))));
                        }
                        Err(err) => return Some((Err(crypto_error(err)), (stored, None))),
                    },
                    Some(Err(err)) => return Some((Err(store_error(err)), (stored, None))),
                    None => {
                        return match decoder.finish() {
                            Ok(()) => None,
                            Err(err) => Some((Err(crypto_error(err)), (stored, None))),
                        };
                    }
                }
            }
        },
    )
}

/// `stored` without its first `skip` bytes.
fn skip_bytes(
    stored: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
    skip: u64,
) -> futures::stream::BoxStream<'static, object_store::Result<Bytes>> {
    stored
        .scan(skip, |left, chunk| {
            let out = chunk.map(|mut bytes| {
                let cut = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                *left -= cut as u64;
                bytes.split_off(cut)
            });
            std::future::ready(Some(out))
        })
        .boxed()
}

fn crypto_error(err: CryptoError) -> ChatError {
    tracing::error!(error = %err, "file encryption failed");
    ChatError::Internal(format!("file encryption: {err}"))
}

fn store_error(err: object_store::Error) -> ChatError {
    tracing::error!(error = %err, "file store failed");
    ChatError::Unavailable("File storage is unavailable; try again shortly".into())
}

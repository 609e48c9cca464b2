//! Files: uploads checked by content ([`content`]), stored in an object store (the local disk
//! by default), recorded in the `files` table, and read back only through signed, expiring
//! URLs ([`sign`]). Bytes stream through in chunks in both directions; the only buffer is the
//! first [`content::SNIFF_BYTES`] of an upload, read before anything is stored.

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
        })
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
        let upload = self.store.put_multipart(&path).await.map_err(store_error)?;
        let mut writer = WriteMultipart::new(upload);
        let mut size = head.len() as u64;
        writer.write(&head);
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
                writer.put(chunk);
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
        result.bytes().await.map_err(store_error)
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
        let options = GetOptions {
            range: (size > 0).then_some(GetRange::Bounded(start..end + 1)),
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
        let bytes = result
            .into_stream()
            .map(|chunk| chunk.map_err(store_error))
            .boxed();
        Ok(Download {
            file,
            start,
            end,
            partial,
            bytes,
        })
    }
}

fn store_error(err: object_store::Error) -> ChatError {
    tracing::error!(error = %err, "file store failed");
    ChatError::Unavailable("File storage is unavailable; try again shortly".into())
}

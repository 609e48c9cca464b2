//! Virus scanning through clamd's `INSTREAM` command over TCP, while an upload streams: the
//! bytes go to clamd as they go to the store, and the file is recorded only when clamd answers
//! `OK`. A file clamd finds infected is refused (400, naming the signature); a scanner that
//! cannot be reached, fails or does not answer in time makes the upload a 503, never a silent
//! pass.
//!
//! The protocol: `zINSTREAM\0`, then chunks each prefixed by its length (4 bytes, big endian),
//! then a zero length; the answer is `stream: OK`, `stream: <name> FOUND` or `... ERROR`,
//! NUL-terminated.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::chat::error::ChatError;

/// clamd's default `StreamMaxLength` is 25 MiB; chunks are sent as they come.
const MAX_ANSWER: usize = 1024;

/// One scan in progress.
pub struct Scan {
    stream: TcpStream,
    timeout: Duration,
}

fn unavailable() -> ChatError {
    ChatError::Unavailable("The virus scanner is unavailable; try again shortly".into())
}

impl Scan {
    /// Connects to clamd at `addr` and starts an `INSTREAM`.
    pub async fn start(addr: &str, timeout: Duration) -> Result<Self, ChatError> {
        let connect = async {
            let mut stream = TcpStream::connect(addr).await?;
            stream.write_all(b"zINSTREAM\0").await?;
            Ok::<_, std::io::Error>(stream)
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(stream)) => Ok(Self { stream, timeout }),
            Ok(Err(err)) => {
                tracing::error!(error = %err, "virus scanner unreachable");
                Err(unavailable())
            }
            Err(_) => {
                tracing::error!("virus scanner did not accept the connection in time");
                Err(unavailable())
            }
        }
    }

    /// Sends the next bytes.
    pub async fn feed(&mut self, bytes: &[u8]) -> Result<(), ChatError> {
        for chunk in bytes.chunks(u32::MAX as usize) {
            let len = (chunk.len() as u32).to_be_bytes();
            let send = async {
                self.stream.write_all(&len).await?;
                self.stream.write_all(chunk).await
            };
            match tokio::time::timeout(self.timeout, send).await {
                Ok(Ok(())) => {}
                _ => {
                    tracing::error!("virus scanner stopped taking the stream");
                    return Err(unavailable());
                }
            }
        }
        Ok(())
    }

    /// Ends the stream and reads the verdict: `Ok` for a clean file, 400 naming the signature
    /// for an infected one, 503 for anything else.
    pub async fn verdict(mut self) -> Result<(), ChatError> {
        let finish = async {
            self.stream.write_all(&0u32.to_be_bytes()).await?;
            let mut answer = Vec::new();
            let mut buf = [0u8; 256];
            loop {
                let n = self.stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                answer.extend_from_slice(&buf[..n]);
                if answer.contains(&0) || answer.len() > MAX_ANSWER {
                    break;
                }
            }
            Ok::<_, std::io::Error>(answer)
        };
        let answer = match tokio::time::timeout(self.timeout, finish).await {
            Ok(Ok(answer)) => answer,
            _ => {
                tracing::error!("virus scanner gave no verdict in time");
                return Err(unavailable());
            }
        };
        let text = String::from_utf8_lossy(&answer);
        let text = text.trim_end_matches(['\0', '\n']).trim();
        let verdict = text.strip_prefix("stream:").unwrap_or(text).trim();
        if verdict == "OK" {
            return Ok(());
        }
        if let Some(name) = verdict.strip_suffix("FOUND") {
            let name: String = name
                .trim()
                .chars()
                .filter(|c| !c.is_control())
                .take(100)
                .collect();
            tracing::warn!(signature = %name, "upload refused: the virus scanner found malware");
            return Err(ChatError::invalid(
                "file",
                format!("The file was refused by the virus scanner ({name})"),
            ));
        }
        tracing::error!(answer = %verdict, "virus scanner failed");
        Err(unavailable())
    }
}

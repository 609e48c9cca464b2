//! A fake clamd for the upload scan tests: it speaks the real `INSTREAM` protocol over TCP
//! (`zINSTREAM\0`, length-prefixed chunks, a zero length, a NUL-terminated answer) and finds
//! the EICAR test string. A real clamd cannot run here: its signature database is a large
//! download.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The EICAR anti-virus test file: harmless, and detected by every scanner.
pub const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// A running fake; stopped when dropped.
pub struct FakeClamd {
    pub addr: SocketAddr,
    scans: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeClamd {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake clamd");
        let addr = listener.local_addr().expect("addr");
        let scans = Arc::new(AtomicUsize::new(0));
        let counted = scans.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    if serve(stream).await.is_ok() {
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Self { addr, scans, task }
    }

    /// Streams scanned to the end so far.
    pub fn scans(&self) -> usize {
        self.scans.load(Ordering::SeqCst)
    }
}

impl Drop for FakeClamd {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    let mut command = [0u8; 10];
    stream.read_exact(&mut command).await?;
    if &command != b"zINSTREAM\0" {
        stream.write_all(b"UNKNOWN COMMAND\0").await?;
        return Ok(());
    }
    let mut data = Vec::new();
    loop {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 {
            break;
        }
        let start = data.len();
        data.resize(start + len, 0);
        stream.read_exact(&mut data[start..]).await?;
    }
    let found = data.windows(EICAR.len()).any(|w| w == EICAR.as_bytes());
    let answer: &[u8] = if found {
        b"stream: Eicar-Test-Signature FOUND\0"
    } else {
        b"stream: OK\0"
    };
    stream.write_all(answer).await?;
    Ok(())
}

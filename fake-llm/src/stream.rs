//! The body of a streamed reply: the frames with the script's pacing and ending, and a guard
//! that notes a client leaving before the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use futures::stream::{self, StreamExt as _};

use crate::Shared;
use crate::script::{Ending, FakeScript};
use crate::wire::Frames;

/// Interval of the SSE comments a hanging reply sends.
const KEEP_ALIVE: Duration = Duration::from_millis(25);
/// Pause before a cut, so hyper flushes what came before and the client sees it first.
const FLUSH_BEFORE_CUT: Duration = Duration::from_millis(50);

/// Notes a client that went away: dropped with the body before the reply finished.
pub(crate) struct DisconnectGuard {
    shared: Arc<Shared>,
    finished: AtomicBool,
}

impl DisconnectGuard {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        DisconnectGuard {
            shared,
            finished: AtomicBool::new(false),
        }
    }

    /// The body ended as scripted (completed or cut by the fake itself).
    fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst);
    }
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::SeqCst) {
            self.shared.disconnected.store(true, Ordering::SeqCst);
            self.shared.disconnect.notify_waiters();
        }
    }
}

type Chunk = Result<Bytes, std::io::Error>;

/// `frames` as a response body, paced and ended as `script` says. The guard lives inside the
/// stream, so hyper dropping the body drops it.
pub(crate) fn body(frames: Frames, script: &FakeScript, guard: DisconnectGuard) -> Body {
    let delay = script.delay;
    let limit = match script.ending {
        Ending::Complete => usize::MAX,
        Ending::Hang { after } | Ending::Cut { after } => after,
    };
    let guard = Arc::new(guard);
    let before = stream::iter(frames.before).map(|frame| Ok(Bytes::from(frame)));
    let pieces = stream::iter(frames.pieces.into_iter().enumerate())
        .take(limit)
        .then(move |(index, frame)| async move {
            if index > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(Bytes::from(frame))
        });
    let tail = match script.ending {
        Ending::Complete => {
            let guard = Arc::clone(&guard);
            let finish =
                stream::once(async move { guard.finish() }).filter_map(|()| async { None });
            stream::iter(frames.after)
                .map(|frame| Ok(Bytes::from(frame)))
                .chain(finish)
                .boxed()
        }
        Ending::Hang { .. } => stream::unfold((), |()| async {
            tokio::time::sleep(KEEP_ALIVE).await;
            Some((Ok(Bytes::from_static(b": keep-alive\n\n")), ()))
        })
        .boxed(),
        Ending::Cut { .. } => {
            let guard = Arc::clone(&guard);
            stream::once(async move {
                // A cut is the fake's doing, not the client's.
                guard.finish();
                tokio::time::sleep(FLUSH_BEFORE_CUT).await;
                Err(std::io::Error::other("scripted cut"))
            })
            .boxed()
        }
    };
    let body = before.chain(pieces).chain(tail).map(move |chunk: Chunk| {
        // The guard travels with the stream and drops with it.
        let _keep = &guard;
        chunk
    });
    Body::from_stream(body)
}

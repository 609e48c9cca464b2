//! The write side of one socket: a bounded queue of frames drained by one writer task that gives
//! every write a send deadline (a write is the frames queued when the writer wakes, up to
//! [`WRITE_TOGETHER`], flushed once). The bridge never awaits the socket itself: it queues, waiting
//! for room at most the send deadline when the queue is full (a burst the writer has not caught
//! up with yet). A socket that cannot take its frames (no room within the deadline, or one frame
//! not written within it) is reported so the bridge closes it with 1013 and frees its slot,
//! instead of the edge buffering without bound or holding the slot forever.
//!
//! With a batch window (`?batch=<ms>`, seed 001's batching) the writer coalesces text frames
//! into one `{"type":"batch","data":{"messages":[...]},"timestamp"}` frame at most once per
//! window, each inner frame unchanged and in order; pings go out at once, and the close frame
//! only after the batch in progress.
//!
//! Queued frames and bytes are counted per edge ([`QueueFigures`], shown by `/ws/health`) so
//! tests and operators can see the memory that waiting frames hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures::{Sink, SinkExt};
use tokio::sync::{Notify, mpsc};
use tokio_util::task::AbortOnDropHandle;

/// Frames and bytes waiting in every socket's queue of one edge.
#[derive(Debug, Default)]
pub struct QueueFigures {
    pub frames: AtomicUsize,
    pub bytes: AtomicUsize,
}

/// The bounds of one socket's queue (`limits.send_queue_*`, `limits.send_timeout_ms`).
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub frames: usize,
    pub bytes: usize,
    pub send_timeout: Duration,
    /// Coalesce text frames into `batch` frames, one per window at most (`?batch=<ms>`).
    pub batch: Option<Duration>,
}

/// Why the writer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Everything queued was written, the close frame last.
    Flushed,
    /// One frame was not written within the deadline: the peer is not reading.
    Stalled,
    /// The socket failed (the peer went away).
    Broken,
}

/// The socket did not take its frames: its queue stayed full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// One queued frame.
struct Queued {
    message: Message,
    /// `None` for the close frame, which is not counted against the socket's bounds.
    counts: Option<Counts>,
}

/// What one frame adds to the figures; taken off again when it is written or dropped with the
/// queue.
struct Counts {
    bytes: usize,
    socket: Arc<SocketQueue>,
    figures: Arc<QueueFigures>,
}

/// One socket's queued bytes, and the signal that some left.
#[derive(Default)]
struct SocketQueue {
    bytes: AtomicUsize,
    room: Notify,
}

impl Drop for Counts {
    fn drop(&mut self) {
        self.socket.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
        self.socket.room.notify_one();
        self.figures.frames.fetch_sub(1, Ordering::Relaxed);
        self.figures.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The bridge's handle on the queue. Dropping it stops the writer and drops the socket; use
/// [`Outbox::close`] to say goodbye first.
pub struct Outbox {
    /// Boxed: the channel allocates its first block of 32 slots up front, per socket.
    tx: mpsc::Sender<Box<Queued>>,
    socket: Arc<SocketQueue>,
    figures: Arc<QueueFigures>,
    max_bytes: usize,
    send_timeout: Duration,
    writer: AbortOnDropHandle<Ended>,
}

impl Outbox {
    /// Starts the writer over `sink`. It ends when the queue is dropped and drained, after a
    /// close frame, or when the socket stalls or fails.
    pub fn start<S>(sink: S, limits: QueueLimits, figures: Arc<QueueFigures>) -> Self
    where
        S: Sink<Message> + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(limits.frames.max(1));
        let writer = match limits.batch {
            None => tokio::spawn(write_all(sink, rx, limits.send_timeout)),
            Some(window) => tokio::spawn(write_batched(sink, rx, limits.send_timeout, window)),
        };
        Self {
            tx,
            socket: Arc::default(),
            figures,
            max_bytes: limits.bytes,
            send_timeout: limits.send_timeout,
            writer: AbortOnDropHandle::new(writer),
        }
    }

    /// Queues a text frame (see [`Outbox::push`]).
    pub async fn text(&self, text: String) -> Result<(), Full> {
        self.push(Message::Text(text.into())).await
    }

    /// Queues a frame, waiting at most the send deadline for room. A frame larger than the
    /// byte bound still enters an empty queue, so one large `history` is not refused outright.
    pub async fn push(&self, message: Message) -> Result<(), Full> {
        let bytes = frame_bytes(&message);
        if let Some(permit) = self.room_for(bytes) {
            self.queue(permit, message, bytes);
            return Ok(());
        }
        // Boxed: the socket task, whose state is its largest await's, holds the timer only
        // while it waits for room.
        Box::pin(self.wait_for_room(message, bytes)).await
    }

    /// [`Outbox::push`] once the queue was found full: waits for room until the deadline.
    async fn wait_for_room(&self, message: Message, bytes: usize) -> Result<(), Full> {
        let mut message = Some(message);
        let wait = async {
            loop {
                let room = self.socket.room.notified();
                if let Some(permit) = self.room_for(bytes) {
                    let message = message.take().ok_or(Full)?;
                    self.queue(permit, message, bytes);
                    return Ok(());
                }
                if self.tx.is_closed() {
                    return Err(Full);
                }
                room.await;
            }
        };
        tokio::time::timeout(self.send_timeout, wait)
            .await
            .unwrap_or(Err(Full))
    }

    fn room_for(&self, bytes: usize) -> Option<mpsc::Permit<'_, Box<Queued>>> {
        let queued = self.socket.bytes.load(Ordering::Relaxed);
        if queued > 0 && queued.saturating_add(bytes) > self.max_bytes {
            return None;
        }
        self.tx.try_reserve().ok()
    }

    fn queue(&self, permit: mpsc::Permit<'_, Box<Queued>>, message: Message, bytes: usize) {
        self.socket.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.figures.frames.fetch_add(1, Ordering::Relaxed);
        self.figures.bytes.fetch_add(bytes, Ordering::Relaxed);
        permit.send(Box::new(Queued {
            message,
            counts: Some(Counts {
                bytes,
                socket: self.socket.clone(),
                figures: self.figures.clone(),
            }),
        }));
    }

    /// Resolves when the writer stops on its own (stalled or broken); cancel-safe, for the
    /// bridge's `select!`.
    pub async fn stopped(&mut self) -> Ended {
        match (&mut self.writer).await {
            Ok(ended) => ended,
            Err(_) => Ended::Broken,
        }
    }

    /// Queues the close frame after what is already queued and waits (at most `grace`, in
    /// all) for the writer to deliver everything. A stopped writer or a zero `grace` (a socket
    /// closed for not reading) drop the socket at once: a peer that reads nothing would not
    /// read the close frame either.
    pub async fn close(self, code: u16, reason: &str, grace: Duration) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let Self { tx, writer, .. } = self;
        if grace.is_zero() || writer.is_finished() {
            return;
        }
        let closing = async {
            if let Ok(permit) = tx.reserve_owned().await {
                // The queue's last sender goes with the permit: the writer ends after this.
                drop(permit.send(Box::new(Queued {
                    message: Message::Close(Some(frame)),
                    counts: None,
                })));
                let _ = writer.await;
            }
        };
        let _ = tokio::time::timeout(grace, closing).await;
    }
}

fn frame_bytes(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) | Message::Ping(bytes) | Message::Pong(bytes) => bytes.len(),
        Message::Close(_) => 0,
    }
}

/// Frames written together at most: what is already queued when the writer wakes goes out
/// with one flush (one system call for a socket that is behind, up to the socket's 4 KiB
/// write buffer) instead of one flush per frame. Each stays a frame of its own.
const WRITE_TOGETHER: usize = 32;

/// The writer: the frames queued so far, each group within `deadline`.
///
/// Idle, the task holds only the sink and the queue: each write (with its timer) is boxed.
/// The frames of a group have left the queue while they are written (so up to
/// [`WRITE_TOGETHER`] frames more than the queue's bound can wait), but they count against
/// the byte bound until the socket has taken them.
async fn write_all<S>(mut sink: S, mut rx: mpsc::Receiver<Box<Queued>>, deadline: Duration) -> Ended
where
    S: Sink<Message> + Unpin + Send,
{
    while let Some(first) = rx.recv().await {
        let mut group = vec![*first];
        while group.len() < WRITE_TOGETHER
            && !group
                .last()
                .is_some_and(|q| matches!(q.message, Message::Close(_)))
        {
            match rx.try_recv() {
                Ok(next) => group.push(*next),
                Err(_) => break,
            }
        }
        let closing = group
            .last()
            .is_some_and(|q| matches!(q.message, Message::Close(_)));
        let (messages, counts): (Vec<Message>, Vec<Option<Counts>>) =
            group.into_iter().map(|q| (q.message, q.counts)).unzip();
        let sent = Box::pin(tokio::time::timeout(
            deadline,
            write_group(&mut sink, messages),
        ))
        .await
        .map(|written| written.is_ok());
        // A frame counts until the socket has taken it.
        drop(counts);
        match sent {
            Ok(true) => {}
            Ok(false) => return Ended::Broken,
            Err(_) => return Ended::Stalled,
        }
        if closing {
            let _ = Box::pin(tokio::time::timeout(deadline, sink.close())).await;
            return Ended::Flushed;
        }
    }
    let _ = Box::pin(tokio::time::timeout(deadline, sink.close())).await;
    Ended::Flushed
}

/// Feeds `messages` to the sink in order, then flushes once.
async fn write_group<S>(sink: &mut S, messages: Vec<Message>) -> Result<(), S::Error>
where
    S: Sink<Message> + Unpin,
{
    for message in messages {
        sink.feed(message).await?;
    }
    sink.flush().await
}

/// The writer with a batch window: after a batch goes out, the next waits until the window has
/// passed, gathering every text frame queued meanwhile.
async fn write_batched<S>(
    mut sink: S,
    mut rx: mpsc::Receiver<Box<Queued>>,
    deadline: Duration,
    window: Duration,
) -> Ended
where
    S: Sink<Message> + Unpin,
{
    let mut next_batch = tokio::time::Instant::now();
    // Text frames waiting for the window; they count until the batch is written.
    let mut pending: Vec<Queued> = Vec::new();
    loop {
        let received = if pending.is_empty() {
            rx.recv().await
        } else {
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(next_batch) => {
                    if let Err(ended) = flush(&mut sink, &mut pending, deadline).await {
                        return ended;
                    }
                    next_batch = tokio::time::Instant::now() + window;
                    continue;
                }
                received = rx.recv() => received,
            }
        };
        let Some(queued) = received.map(|queued| *queued) else {
            // The bridge dropped the queue: what waits still goes out.
            if let Err(ended) = flush(&mut sink, &mut pending, deadline).await {
                return ended;
            }
            let _ = tokio::time::timeout(deadline, sink.close()).await;
            return Ended::Flushed;
        };
        match queued.message {
            Message::Text(_) => pending.push(queued),
            Message::Close(_) => {
                if let Err(ended) = flush(&mut sink, &mut pending, deadline).await {
                    return ended;
                }
                if let Err(ended) = send_within(&mut sink, queued.message, deadline).await {
                    return ended;
                }
                let _ = tokio::time::timeout(deadline, sink.close()).await;
                return Ended::Flushed;
            }
            message => {
                let sent = send_within(&mut sink, message, deadline).await;
                drop(queued.counts);
                if let Err(ended) = sent {
                    return ended;
                }
            }
        }
    }
}

/// Writes the pending text frames as seed 001's `batch` frame (nothing when none wait), then
/// releases their counts.
async fn flush<S>(sink: &mut S, pending: &mut Vec<Queued>, deadline: Duration) -> Result<(), Ended>
where
    S: Sink<Message> + Unpin,
{
    if pending.is_empty() {
        return Ok(());
    }
    let mut out = String::from(r#"{"type":"batch","data":{"messages":["#);
    for (i, queued) in pending.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if let Message::Text(text) = &queued.message {
            // Each inner frame is a JSON object already: copied, not parsed.
            out.push_str(text.as_str());
        }
    }
    let now = chrono::Utc::now().timestamp_millis();
    out.push_str(&format!(r#"]}},"timestamp":{now}}}"#));
    let sent = send_within(sink, Message::Text(out.into()), deadline).await;
    pending.clear();
    sent
}

/// One frame, within `deadline`.
async fn send_within<S>(sink: &mut S, message: Message, deadline: Duration) -> Result<(), Ended>
where
    S: Sink<Message> + Unpin,
{
    // Boxed, so that a writer waiting for its next frame holds no timer.
    match Box::pin(tokio::time::timeout(deadline, sink.send(message))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Ended::Broken),
        Err(_) => Err(Ended::Stalled),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn limits(frames: usize, bytes: usize) -> QueueLimits {
        QueueLimits {
            frames,
            bytes,
            send_timeout: Duration::from_millis(50),
            batch: None,
        }
    }

    /// A sink that never takes a frame: a peer that stopped reading.
    fn stuck() -> impl Sink<Message> + Unpin + Send + 'static {
        Box::pin(
            futures::sink::unfold((), |(), _: Message| {
                futures::future::pending::<Result<(), std::convert::Infallible>>()
            })
            .sink_map_err(|_| ()),
        )
    }

    async fn settle() {
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
    }

    /// Every idle socket holds its writer task's whole state, and its queue's first block of
    /// 32 slots: the writes are boxed, and so are the queued frames.
    #[test]
    fn an_idle_writer_stays_small() {
        let (_tx, rx) = mpsc::channel::<Box<Queued>>(8);
        let writer = write_all(stuck(), rx, Duration::from_secs(1));
        let bytes = std::mem::size_of_val(&writer);
        assert!(bytes <= 256, "an idle writer holds {bytes} bytes");
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_the_figures_count_what_waits() {
        let figures = Arc::new(QueueFigures::default());
        let outbox = Outbox::start(stuck(), limits(3, 1000), figures.clone());
        for _ in 0..3 {
            outbox.text("x".repeat(10)).await.unwrap();
        }
        assert_eq!(outbox.text("y".into()).await, Err(Full));
        assert_eq!(figures.frames.load(Ordering::Relaxed), 3);
        assert_eq!(figures.bytes.load(Ordering::Relaxed), 30);
        drop(outbox);
        settle().await;
        assert_eq!(
            figures.frames.load(Ordering::Relaxed),
            0,
            "dropped frames are released"
        );
        assert_eq!(figures.bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn the_byte_bound_refuses_but_lets_one_large_frame_into_an_empty_queue() {
        let figures = Arc::new(QueueFigures::default());
        let outbox = Outbox::start(stuck(), limits(100, 10), figures.clone());
        outbox
            .text("a frame larger than ten bytes".into())
            .await
            .unwrap();
        assert_eq!(outbox.text("x".into()).await, Err(Full));
        assert_eq!(figures.bytes.load(Ordering::Relaxed), 29);
    }

    #[tokio::test]
    async fn a_frame_not_written_within_the_deadline_stops_the_writer_as_stalled() {
        let figures = Arc::new(QueueFigures::default());
        let mut outbox = Outbox::start(stuck(), limits(8, 1000), figures.clone());
        outbox.text("hello".into()).await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), outbox.stopped())
            .await
            .unwrap();
        assert_eq!(ended, Ended::Stalled);
        settle().await;
        assert_eq!(figures.frames.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_burst_larger_than_the_queue_waits_for_a_writer_that_keeps_up() {
        let (sink, seen) = futures::channel::mpsc::unbounded::<Message>();
        let figures = Arc::new(QueueFigures::default());
        let outbox = Outbox::start(sink.sink_map_err(|_| ()), limits(2, 1000), figures);
        for i in 0..100 {
            outbox.text(format!("{i}")).await.unwrap();
        }
        outbox.close(1000, "done", Duration::from_secs(5)).await;
        use futures::StreamExt;
        let texts: Vec<String> = seen
            .filter_map(|m| async move {
                match m {
                    Message::Text(text) => Some(text.to_string()),
                    _ => None,
                }
            })
            .collect()
            .await;
        let expected: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        assert_eq!(texts, expected, "every frame, in order");
    }

    /// A sink that keeps what it is fed and counts its flushes.
    #[derive(Default, Clone)]
    struct Recorder {
        frames: Arc<std::sync::Mutex<Vec<Message>>>,
        flushes: Arc<AtomicUsize>,
    }

    impl Sink<Message> for Recorder {
        type Error = ();
        fn poll_ready(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), ()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn start_send(self: std::pin::Pin<&mut Self>, item: Message) -> Result<(), ()> {
            self.frames.lock().unwrap().push(item);
            Ok(())
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), ()>> {
            self.flushes.fetch_add(1, Ordering::Relaxed);
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), ()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn frames_queued_while_the_writer_was_busy_go_out_with_one_flush() {
        let sink = Recorder::default();
        let figures = Arc::new(QueueFigures::default());
        let outbox = Outbox::start(sink.clone(), limits(64, 100_000), figures.clone());
        // Queued before the writer first runs (this runtime has one thread).
        for i in 0..40 {
            outbox.text(format!("{i}")).await.unwrap();
        }
        outbox.close(1000, "done", Duration::from_secs(5)).await;
        let frames = sink.frames.lock().unwrap().clone();
        let texts: Vec<String> = frames
            .iter()
            .filter_map(|m| match m {
                Message::Text(text) => Some(text.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(texts, (0..40).map(|i| i.to_string()).collect::<Vec<_>>());
        assert!(
            matches!(frames.last(), Some(Message::Close(_))),
            "closed last"
        );
        // 32 frames, then the other 8 with the close frame.
        assert_eq!(sink.flushes.load(Ordering::Relaxed), 2);
        assert_eq!(
            figures.frames.load(Ordering::Relaxed),
            0,
            "every count released"
        );
        assert_eq!(figures.bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn close_delivers_what_was_queued_then_the_close_frame() {
        let (sink, mut seen) = futures::channel::mpsc::unbounded::<Message>();
        let figures = Arc::new(QueueFigures::default());
        let outbox = Outbox::start(sink.sink_map_err(|_| ()), limits(8, 1000), figures);
        outbox.text("last words".into()).await.unwrap();
        outbox.close(1013, "Too slow", Duration::from_secs(5)).await;
        use futures::StreamExt;
        assert_eq!(seen.next().await, Some(Message::Text("last words".into())));
        let Some(Message::Close(Some(frame))) = seen.next().await else {
            panic!("no close frame");
        };
        assert_eq!(frame.code, 1013);
    }
}

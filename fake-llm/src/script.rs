//! What the fake answers: a [`FakeScript`] describes one reply (its text pieces or raw SSE
//! frames, usage, pacing, and whether it completes, hangs or is cut) and the [`Fault`]s given
//! to the first requests before it.

use std::time::Duration;

/// What the fake answers. Changeable between turns with
/// [`FakeLlm::set_script`](crate::FakeLlm::set_script).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeScript {
    pub(crate) body: Body,
    /// Pause before each piece after the first.
    pub(crate) delay: Duration,
    /// Reported usage: (prompt tokens, completion tokens).
    pub(crate) usage: (u32, u32),
    /// Answers to the first requests, one per request, in order; later requests get the reply.
    pub(crate) faults: Vec<Fault>,
    pub(crate) ending: Ending,
    /// What `/v1/audio/transcriptions` hears in any audio.
    pub(crate) transcript: String,
    /// What `/v1/audio/speech` answers, whatever the text (a WAV file).
    pub(crate) speech: Vec<u8>,
}

/// The content of a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Body {
    /// Text pieces, each streamed as one delta in the wire format of the endpoint asked.
    Pieces(Vec<String>),
    /// SSE frames sent as they are, whatever the endpoint (for parser tests).
    Frames(Vec<String>),
}

/// How a reply ends after its pieces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The closing events (finish, usage, end marker), then the end of the body.
    Complete,
    /// After this many pieces, nothing but SSE comments, forever (so a client that leaves is
    /// noticed on the next write).
    Hang { after: usize },
    /// After this many pieces, the connection breaks mid-body.
    Cut { after: usize },
}

/// A scripted failure of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A non-2xx answer with the provider's own error body around `message`.
    Status {
        status: u16,
        /// Sent as `Retry-After: <seconds>` when set.
        retry_after_secs: Option<u64>,
        message: String,
    },
    /// Headers and status 200, then the connection breaks before the first piece.
    Cut,
}

impl Fault {
    /// A failing `status` with a generic message; a 429 carries `Retry-After: 0`, so retries
    /// do not slow tests down.
    pub fn status(status: u16) -> Fault {
        Fault::Status {
            status,
            retry_after_secs: (status == 429).then_some(0),
            message: format!("scripted failure ({status})"),
        }
    }
}

impl Default for FakeScript {
    fn default() -> Self {
        FakeScript::reply(&["Hello", " from", " the", " fake", " model."])
    }
}

impl FakeScript {
    /// A well-behaved reply made of `pieces`, usage (12, number of pieces).
    pub fn reply(pieces: &[&str]) -> Self {
        FakeScript {
            body: Body::Pieces(pieces.iter().map(|piece| (*piece).to_owned()).collect()),
            delay: Duration::ZERO,
            usage: (12, u32::try_from(pieces.len()).unwrap_or(u32::MAX)),
            faults: Vec::new(),
            ending: Ending::Complete,
            transcript: "What is the weather like today?".to_owned(),
            speech: silence_wav(),
        }
    }

    /// A reply made of raw SSE frames (see [`sse_data`](crate::sse_data) and
    /// [`sse_event`](crate::sse_event)), sent as they are: no preamble, no closing events.
    pub fn frames(frames: Vec<String>) -> Self {
        FakeScript {
            body: Body::Frames(frames),
            ..FakeScript::reply(&[])
        }
    }

    /// The whole reply text (empty for raw frames).
    pub fn text(&self) -> String {
        match &self.body {
            Body::Pieces(pieces) => pieces.concat(),
            Body::Frames(_) => String::new(),
        }
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn with_usage(mut self, prompt: u32, completion: u32) -> Self {
        self.usage = (prompt, completion);
        self
    }

    /// The first requests fail with these statuses, one per request, in order (e.g.
    /// `[503, 429]`), as [`Fault::status`] describes.
    pub fn failing_first(self, statuses: &[u16]) -> Self {
        self.with_faults(statuses.iter().copied().map(Fault::status).collect())
    }

    /// The first requests fail as `faults` say, one per request, in order.
    pub fn with_faults(mut self, faults: Vec<Fault>) -> Self {
        self.faults = faults;
        self
    }

    /// Stop after this many pieces but keep the connection open (comments only), for the stop
    /// and timeout tests.
    pub fn hanging_after(mut self, pieces: usize) -> Self {
        self.ending = Ending::Hang { after: pieces };
        self
    }

    /// Break the connection after this many pieces.
    pub fn cut_after(mut self, pieces: usize) -> Self {
        self.ending = Ending::Cut { after: pieces };
        self
    }

    /// What the transcription endpoint answers (`""`: nothing was heard).
    pub fn with_transcript(mut self, text: &str) -> Self {
        self.transcript = text.to_owned();
        self
    }

    /// The audio the speech endpoint answers.
    pub fn with_speech(mut self, audio: Vec<u8>) -> Self {
        self.speech = audio;
        self
    }
}

/// A tenth of a second of silence as a 16-bit mono 16 kHz WAV file.
fn silence_wav() -> Vec<u8> {
    let samples: u32 = 1600;
    let data = samples * 2;
    let mut wav = Vec::with_capacity(44 + data as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&16_000u32.to_le_bytes());
    wav.extend_from_slice(&32_000u32.to_le_bytes()); // bytes per second
    wav.extend_from_slice(&2u16.to_le_bytes()); // block align
    wav.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data.to_le_bytes());
    wav.resize(44 + data as usize, 0);
    wav
}

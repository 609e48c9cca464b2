//! Voice: speech to text and text to speech through an OpenAI-compatible provider's audio
//! endpoints (`[llm.voice]`). `POST {base_url}/audio/transcriptions` takes the audio as a
//! multipart upload and answers `{"text": ...}`; `POST {base_url}/audio/speech` takes JSON and
//! answers the audio itself. Both are bounded by `voice.timeout_ms`; errors are [`LlmError`]s
//! like the chat providers', without provider text beyond a short excerpt.

use std::time::Duration;

use bytes::Bytes;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use super::settings::{SPEECH_FORMATS, VoiceSettings};
use super::{LlmError, sse};

/// Most bytes of spoken audio read from the provider (the file store's own limit applies when
/// it is stored).
const MAX_SPEECH_BYTES: usize = 32 * 1024 * 1024;

/// The audio endpoints of one provider.
pub struct Voice {
    client: reqwest::Client,
    base_url: String,
    key: Option<SecretString>,
    settings: VoiceSettings,
}

/// Spoken audio, as the provider answered it.
#[derive(Debug)]
pub struct Speech {
    pub bytes: Bytes,
    /// The stored type of `voice.speech_format` (`audio/mpeg` for mp3).
    pub mime: &'static str,
    /// The file name extension (`mp3`).
    pub extension: &'static str,
}

#[derive(Serialize)]
struct SpeechRequest<'a> {
    model: &'a str,
    input: &'a str,
    voice: &'a str,
    response_format: &'a str,
}

#[derive(Deserialize)]
struct Transcription {
    text: String,
}

impl Voice {
    pub(super) fn new(
        client: reqwest::Client,
        base_url: &str,
        key: Option<SecretString>,
        settings: VoiceSettings,
    ) -> Self {
        Voice {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
            settings,
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let request = self
            .client
            .post(format!("{}{path}", self.base_url))
            .timeout(Duration::from_millis(self.settings.timeout_ms));
        match &self.key {
            Some(key) => request.bearer_auth(key.expose_secret()),
            None => request,
        }
    }

    /// The text spoken in `audio` (of type `mime`, named `name`), trimmed.
    ///
    /// # Errors
    /// The provider cannot be reached or refuses ([`LlmError::Connect`], [`LlmError::Status`]),
    /// or its answer is not a transcription ([`LlmError::Protocol`]).
    pub async fn transcribe(
        &self,
        audio: Bytes,
        mime: &str,
        name: &str,
    ) -> Result<String, LlmError> {
        let length = audio.len() as u64;
        let part = reqwest::multipart::Part::stream_with_length(reqwest::Body::from(audio), length)
            .file_name(name.to_owned())
            .mime_str(mime)
            .map_err(|err| LlmError::Protocol(format!("audio type: {err}")))?;
        let form = reqwest::multipart::Form::new()
            .text("model", self.settings.transcription_model.clone())
            .text("response_format", "json")
            .part("file", part);
        let response = sse::send(self.post("/audio/transcriptions").multipart(form)).await?;
        let body = response
            .bytes()
            .await
            .map_err(|err| LlmError::Connect(sse::describe(err)))?;
        let transcription: Transcription = serde_json::from_slice(&body)
            .map_err(|err| LlmError::Protocol(format!("transcription: {err}")))?;
        Ok(transcription.text.trim().to_owned())
    }

    /// `text` spoken (up to `voice.max_speech_chars` characters of it).
    ///
    /// # Errors
    /// As [`Voice::transcribe`]; an empty or oversized answer is [`LlmError::Protocol`].
    pub async fn speak(&self, text: &str) -> Result<Speech, LlmError> {
        let (extension, mime) = SPEECH_FORMATS
            .iter()
            .find(|(format, _)| *format == self.settings.speech_format)
            .copied()
            // validate() allows only the formats listed.
            .unwrap_or(SPEECH_FORMATS[0]);
        let input: String = text.chars().take(self.settings.max_speech_chars).collect();
        let request = SpeechRequest {
            model: &self.settings.speech_model,
            input: &input,
            voice: &self.settings.speech_voice,
            response_format: extension,
        };
        let mut response = sse::send(self.post("/audio/speech").json(&request)).await?;
        let mut audio = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| LlmError::Connect(sse::describe(err)))?
        {
            audio.extend_from_slice(&chunk);
            if audio.len() > MAX_SPEECH_BYTES {
                return Err(LlmError::Protocol(format!(
                    "the spoken reply is larger than {MAX_SPEECH_BYTES} bytes"
                )));
            }
        }
        if audio.is_empty() {
            return Err(LlmError::Protocol("the spoken reply is empty".into()));
        }
        Ok(Speech {
            bytes: Bytes::from(audio),
            mime,
            extension,
        })
    }
}

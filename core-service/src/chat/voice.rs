//! Voice in and out. A message with empty content and an audio attachment is a voice
//! message: its audio is transcribed (`[llm.voice]`) and the transcript becomes its text,
//! the audio staying attached. A chat that asked for spoken replies (`chat_update
//! {action: "set_spoken_replies"}`) gets each complete reply spoken and attached to the final
//! message as audio; when speaking fails the reply goes out without audio and its metadata
//! says why (`speechError`).

use bytes::Bytes;

use super::engine::Engine;
use super::error::ChatError;
use super::event::StoredAttachment;
use super::validate::MessageText;
use crate::llm::LlmError;
use crate::storage::ChatRow;

/// Why a spoken reply has no audio (`metadata.speechError`).
pub(super) enum SpeechError {
    /// The speech service failed or the audio could not be stored.
    Unavailable,
    /// The audio was over `files.max_bytes`.
    TooLarge,
}

impl SpeechError {
    pub(super) fn as_str(&self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::TooLarge => "too_large",
        }
    }
}

impl Engine {
    /// The text of a voice message: the transcript of its first audio attachment, cut to
    /// `chat.max_message_chars`. 400 when it has no audio, when voice is off, or when nothing
    /// was heard; 503 when the transcription service is unavailable.
    pub(super) async fn transcribe_voice_message(
        &self,
        attachments: &[StoredAttachment],
    ) -> Result<MessageText, ChatError> {
        let Some(audio) = attachments.iter().find(|a| a.mime.starts_with("audio/")) else {
            return Err(ChatError::invalid(
                "data.content",
                "data.content is required unless an audio file is attached",
            ));
        };
        let Some(voice) = self.llm.voice() else {
            return Err(ChatError::invalid(
                "data.content",
                "Voice messages are not enabled on this server (llm.voice); send text",
            ));
        };
        let bytes = self.files()?.read(&self.db, &audio.id).await?;
        let transcript = voice
            .transcribe(bytes, &audio.mime, &audio.name)
            .await
            .map_err(|err| {
                metrics::counter!("chat_core_voice_total", "kind" => "transcription", "outcome" => err.kind())
                    .increment(1);
                tracing::warn!(file = %audio.id, error = %err, "transcription failed");
                voice_error(&err)
            })?;
        metrics::counter!("chat_core_voice_total", "kind" => "transcription", "outcome" => "ok")
            .increment(1);
        let max = self.settings.max_message_chars;
        let cut: String = transcript.chars().take(max as usize).collect();
        MessageText::parse(&cut, max).map_err(|_| {
            ChatError::invalid("data.attachments", "No speech was recognised in the audio")
        })
    }

    /// Whether replies in this chat are to be spoken (voice on, and the chat asked).
    pub(super) async fn wants_spoken_replies(&self, chat: &ChatRow) -> bool {
        if self.llm.voice().is_none() {
            return false;
        }
        match crate::storage::spoken_replies(&self.db, &chat.id).await {
            Ok(spoken) => spoken,
            Err(err) => {
                tracing::warn!(error = %err, "spoken-replies setting not read; replying in text");
                false
            }
        }
    }

    /// Speaks a reply and stores the audio as a file of the chat's owner, named after the
    /// reply (`reply-<id>.mp3`).
    pub(super) async fn speak_reply(
        &self,
        chat: &ChatRow,
        message_id: &str,
        text: &str,
    ) -> Result<StoredAttachment, SpeechError> {
        let voice = self.llm.voice().ok_or(SpeechError::Unavailable)?;
        let files = self.files().map_err(|_| SpeechError::Unavailable)?;
        let speech = voice.speak(text).await.map_err(|err| {
            metrics::counter!("chat_core_voice_total", "kind" => "speech", "outcome" => err.kind())
                .increment(1);
            tracing::warn!(error = %err, "speech failed");
            SpeechError::Unavailable
        })?;
        let name = format!("reply-{message_id}.{}", speech.extension);
        let bytes: Bytes = speech.bytes;
        let stored = files
            .upload(
                &self.db,
                &chat.owner_id,
                &name,
                speech.mime,
                futures::stream::iter([Ok::<_, ChatError>(bytes)]),
            )
            .await
            .map_err(|err| {
                tracing::warn!(error = %err, "spoken reply not stored");
                match err {
                    ChatError::TooLarge { .. } => SpeechError::TooLarge,
                    _ => SpeechError::Unavailable,
                }
            })?;
        metrics::counter!("chat_core_voice_total", "kind" => "speech", "outcome" => "ok")
            .increment(1);
        Ok(StoredAttachment::of(&stored))
    }
}

/// A failed transcription as the sender sees it: 503 while a retry may help, else 400.
fn voice_error(err: &LlmError) -> ChatError {
    if err.is_retryable() {
        ChatError::Unavailable("The transcription service is unavailable; try again shortly".into())
    } else {
        ChatError::invalid("data.attachments", "The audio could not be transcribed")
    }
}

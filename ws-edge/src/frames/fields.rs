//! A cursor over one JSON object of a client frame: typed reads of its fields (ids, text,
//! counts, enums, nested objects) that fail with a [`FrameError`] naming the field by its path
//! ("data.chatId", "data.chats[2].lastSeq").

use chat_proto::json::struct_from_json;
use chat_proto::limits::code;
use chat_proto::pb::chat as pb;
use serde_json::{Map, Value};

use super::{CHAT_ACTIONS, FrameError};

/// One JSON object being decoded, with its path for error messages ("data", "data.chats[2]").
pub(super) struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Fields<'a> {
    /// The frame itself: its fields are named bare ("messageId").
    pub(super) fn top(map: &'a Map<String, Value>) -> Self {
        Self {
            map,
            path: String::new(),
        }
    }

    /// The frame's `data` object.
    pub(super) fn data(map: &'a Map<String, Value>) -> Self {
        Self {
            map,
            path: "data".to_owned(),
        }
    }

    pub(super) fn nested(value: &'a Value, path: String) -> Result<Self, FrameError> {
        match value {
            Value::Object(map) => Ok(Self { map, path }),
            _ => Err(FrameError::invalid(path, "must be an object")),
        }
    }

    /// The path of one of this object's fields.
    pub(super) fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(super) fn error(&self, key: &str, problem: &str) -> FrameError {
        FrameError::invalid(self.name(key), problem)
    }

    /// A field that must be there; an explicit `null` is there, and then has the wrong type.
    pub(super) fn required(&self, key: &str) -> Result<&'a Value, FrameError> {
        self.map
            .get(key)
            .ok_or_else(|| self.error(key, "is required"))
    }

    /// An optional field; `null` counts as absent.
    pub(super) fn present(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|value| !value.is_null())
    }

    /// Any string, empty included (free text: its length is the core's business).
    pub(super) fn text(&self, key: &str) -> Result<String, FrameError> {
        self.as_text(key, self.required(key)?)
    }

    pub(super) fn opt_text(&self, key: &str) -> Result<Option<String>, FrameError> {
        self.present(key)
            .map(|value| self.as_text(key, value))
            .transpose()
    }

    pub(super) fn as_text(&self, key: &str, value: &Value) -> Result<String, FrameError> {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.error(key, "must be a string"))
    }

    /// A non-empty string: chat, user, model, message ids and tokens.
    pub(super) fn id(&self, key: &str) -> Result<String, FrameError> {
        self.as_id(&self.name(key), self.required(key)?)
    }

    pub(super) fn opt_id(&self, key: &str) -> Result<Option<String>, FrameError> {
        self.present(key)
            .map(|value| self.as_id(&self.name(key), value))
            .transpose()
    }

    pub(super) fn as_id(&self, field: &str, value: &Value) -> Result<String, FrameError> {
        match value {
            Value::String(id) if id.is_empty() => {
                Err(FrameError::invalid(field, "must not be empty"))
            }
            Value::String(id) => Ok(id.clone()),
            _ => Err(FrameError::invalid(field, "must be a string")),
        }
    }

    pub(super) fn flag(&self, key: &str) -> Result<bool, FrameError> {
        self.required(key)?
            .as_bool()
            .ok_or_else(|| self.error(key, "must be a boolean"))
    }

    pub(super) fn opt_flag(&self, key: &str) -> Result<Option<bool>, FrameError> {
        self.present(key).map(|_| self.flag(key)).transpose()
    }

    /// A non-negative integer that fits an `int64` (sequence numbers, chunk indexes).
    pub(super) fn count(&self, key: &str) -> Result<i64, FrameError> {
        self.required(key)?
            .as_i64()
            .filter(|n| *n >= 0)
            .ok_or_else(|| self.error(key, "must be a non-negative integer"))
    }

    /// Milliseconds since the epoch. Fractions (`performance.now()`-style) are truncated and
    /// out-of-range values saturate rather than fail: a timestamp is informational.
    pub(super) fn opt_millis(&self, key: &str) -> Result<Option<i64>, FrameError> {
        match self.present(key) {
            None => Ok(None),
            Some(value) => value
                .as_i64()
                .or_else(|| value.as_f64().map(|ms| ms as i64))
                .map(Some)
                .ok_or_else(|| self.error(key, "must be a number")),
        }
    }

    pub(super) fn array(&self, key: &str) -> Result<&'a Vec<Value>, FrameError> {
        self.required(key)?
            .as_array()
            .ok_or_else(|| self.error(key, "must be an array"))
    }

    /// An optional list of ids: `attachments`.
    pub(super) fn opt_ids(&self, key: &str) -> Result<Option<Vec<String>>, FrameError> {
        let Some(value) = self.present(key) else {
            return Ok(None);
        };
        let items = value
            .as_array()
            .ok_or_else(|| self.error(key, "must be an array of strings"))?;
        self.as_ids(key, items).map(Some)
    }

    /// `read_receipt.messageIds`: 1 to `max` ids.
    pub(super) fn receipt_ids(&self, key: &str, max: usize) -> Result<Vec<String>, FrameError> {
        let items = self
            .required(key)?
            .as_array()
            .ok_or_else(|| self.error(key, "must be an array of strings"))?;
        if items.is_empty() || items.len() > max {
            return Err(self.error(key, &format!("must have 1 to {max} entries")));
        }
        self.as_ids(key, items)
    }

    pub(super) fn as_ids(&self, key: &str, items: &[Value]) -> Result<Vec<String>, FrameError> {
        let field = self.name(key);
        items
            .iter()
            .enumerate()
            .map(|(i, item)| self.as_id(&format!("{field}[{i}]"), item))
            .collect()
    }

    /// `history.before`: an opaque cursor, a string or (older clients) a number. An empty string
    /// is "no cursor", since that is what `history.cursor` holds when a chat has no messages.
    pub(super) fn opt_cursor(&self, key: &str) -> Result<Option<String>, FrameError> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::String(cursor)) if cursor.is_empty() => Ok(None),
            Some(Value::String(cursor)) => Ok(Some(cursor.clone())),
            Some(Value::Number(cursor)) => Ok(Some(cursor.to_string())),
            Some(_) => Err(self.error(key, "must be a string")),
        }
    }

    pub(super) fn opt_limit(&self, key: &str, max: u32) -> Result<Option<u32>, FrameError> {
        let Some(value) = self.present(key) else {
            return Ok(None);
        };
        value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=max).contains(n))
            .map(Some)
            .ok_or_else(|| self.error(key, &format!("must be an integer from 1 to {max}")))
    }

    pub(super) fn opt_context(
        &self,
        key: &str,
        max_bytes: usize,
    ) -> Result<Option<prost_types::Struct>, FrameError> {
        let Some(value) = self.present(key) else {
            return Ok(None);
        };
        let context = value
            .as_object()
            .ok_or_else(|| self.error(key, "must be an object"))?;
        // Serialising a `Value` cannot fail; a failure would count as too large.
        let size = serde_json::to_vec(value).map_or(usize::MAX, |json| json.len());
        if size > max_bytes {
            let problem = format!("must be at most {max_bytes} bytes as JSON");
            return Err(FrameError {
                code: code::TOO_LARGE,
                ..self.error(key, &problem)
            });
        }
        Ok(Some(struct_from_json(context)))
    }

    pub(super) fn action(&self, key: &str) -> Result<pb::ChatAction, FrameError> {
        let name = self
            .required(key)?
            .as_str()
            .ok_or_else(|| self.error(key, "must be a string"))?;
        CHAT_ACTIONS.iter().find(|(known, _)| *known == name).map(|(_, action)| *action).ok_or_else(|| {
            self.error(
                key,
                "must be one of join, leave, create, rename, select_model, end, add_member, remove_member, set_spoken_replies",
            )
        })
    }

    /// Clients may only say they are here or away; `offline` is the server's to announce.
    pub(super) fn presence(&self, key: &str) -> Result<pb::PresenceStatus, FrameError> {
        match self.required(key)?.as_str() {
            Some("online") => Ok(pb::PresenceStatus::Online),
            Some("away") => Ok(pb::PresenceStatus::Away),
            _ => Err(self.error(key, "must be online or away")),
        }
    }
}

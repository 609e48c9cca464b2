//! How deeply a client frame nests: a frame deeper than [`super::Limits::max_depth`] is refused
//! at the edge with 400 naming the field that holds the deep value ("data.context"), so it never
//! reaches the core, whose protobuf decoder has a recursion limit of its own.

use serde_json::{Map, Value};

use super::FrameError;

/// The first field of `frame` whose value makes the frame nest deeper than `max` levels, as an
/// error naming it. The frame object is level 1, `data` level 2, `data.context` level 3.
pub(super) fn check(frame: &Map<String, Value>, max: usize) -> Result<(), FrameError> {
    let too_deep = |field: String| {
        FrameError::invalid(
            field,
            &format!("is nested too deeply: a frame may nest at most {max} levels"),
        )
    };
    for (key, value) in frame {
        if let (true, Value::Object(data)) = (key == "data", value) {
            for (inner, value) in data {
                if 2 + depth(value) > max {
                    return Err(too_deep(format!("data.{inner}")));
                }
            }
        }
        if 1 + depth(value) > max {
            return Err(too_deep(key.clone()));
        }
    }
    Ok(())
}

/// Levels of arrays and objects in `value`: a scalar is 0, `{}` and `[]` are 1, `{"a": []}` is
/// 2. Iterative, so no input can exhaust the stack.
pub(super) fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(value, 1)];
    while let Some((value, level)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(fields) => Box::new(fields.values()),
            _ => continue,
        };
        deepest = deepest.max(level);
        pending.extend(children.map(|child| (child, level + 1)));
    }
    deepest
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::frames::{Limits, MAX_JSON_DEPTH, decode_client_frame};

    /// `{"k":{"k":...{}}}`, `levels` objects deep.
    fn nested(levels: usize) -> Value {
        (1..levels).fold(json!({}), |inner, _| json!({ "k": inner }))
    }

    fn message_with_context(context: Value) -> String {
        json!({"type": "message", "messageId": "deep-1",
               "data": {"content": "hi", "context": context}})
        .to_string()
    }

    #[test]
    fn depth_counts_arrays_and_objects() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({})), 1);
        assert_eq!(depth(&json!([[], {"a": [1]}])), 3);
        assert_eq!(depth(&nested(50)), 50);
    }

    #[test]
    fn a_context_fifty_levels_deep_fits_in_eight_kib_and_is_refused_naming_it() {
        let frame = message_with_context(nested(50));
        assert!(frame.len() < 8192, "the attack fits the context size limit");
        let err = decode_client_frame(&frame, &Limits::PROTOCOL).unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(err.field.as_deref(), Some("data.context"));
        assert_eq!(
            err.message_id.as_deref(),
            Some("deep-1"),
            "the id is echoed"
        );
        assert_eq!(
            err.message,
            "data.context is nested too deeply: a frame may nest at most 32 levels"
        );
    }

    #[test]
    fn a_frame_exactly_at_the_limit_decodes() {
        // frame (1) > data (2) > context (3) > ... : a context of 30 levels ends at level 32.
        let at_limit = message_with_context(nested(MAX_JSON_DEPTH - 2));
        assert!(decode_client_frame(&at_limit, &Limits::PROTOCOL).is_ok());
        let over = message_with_context(nested(MAX_JSON_DEPTH - 1));
        assert!(decode_client_frame(&over, &Limits::PROTOCOL).is_err());
    }

    #[test]
    fn any_deep_field_is_named_even_one_the_edge_ignores() {
        let deep = (0..40).fold(json!(1), |inner, _| json!([inner]));
        let err = |frame: Value| {
            decode_client_frame(&frame.to_string(), &Limits::PROTOCOL)
                .unwrap_err()
                .field
        };
        assert_eq!(
            err(json!({"type": "ping", "extra": deep.clone()})).as_deref(),
            Some("extra")
        );
        assert_eq!(
            err(json!({"type": "resume", "data": {"chats": deep}})).as_deref(),
            Some("data.chats")
        );
    }
}

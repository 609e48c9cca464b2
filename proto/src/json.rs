//! `google.protobuf.Struct` <-> JSON, the one conversion both processes use: the edge for
//! `message.context` frames, the core for storing and prompting with that context.

use prost_types::value::Kind;
use serde_json::{Map, Number, Value};

/// A JSON object as a `google.protobuf.Struct` (numbers become doubles, as Struct requires).
pub fn struct_from_json(object: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: object
            .iter()
            .map(|(key, value)| (key.clone(), value_from_json(value)))
            .collect(),
    }
}

fn value_from_json(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(prost_types::NullValue::NullValue as i32),
        Value::Bool(flag) => Kind::BoolValue(*flag),
        // Always `Some` without serde_json's `arbitrary_precision`.
        Value::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or(0.0)),
        Value::String(text) => Kind::StringValue(text.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(value_from_json).collect(),
        }),
        Value::Object(object) => Kind::StructValue(struct_from_json(object)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A `google.protobuf.Struct` as a JSON object. Whole numbers within the exactly representable
/// range come out as integers (`3`, not `3.0`); NaN and infinities, which JSON lacks, as `null`.
pub fn struct_to_json(object: &prost_types::Struct) -> Map<String, Value> {
    object
        .fields
        .iter()
        .map(|(key, value)| (key.clone(), value_to_json(value)))
        .collect()
}

/// One `google.protobuf.Value` as JSON, by the rules of [`struct_to_json`]; an unset value is
/// `null`.
pub fn value_to_json(value: &prost_types::Value) -> Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(flag)) => Value::Bool(*flag),
        Some(Kind::NumberValue(number)) => number_to_json(*number),
        Some(Kind::StringValue(text)) => Value::String(text.clone()),
        Some(Kind::ListValue(list)) => {
            Value::Array(list.values.iter().map(value_to_json).collect())
        }
        Some(Kind::StructValue(object)) => Value::Object(struct_to_json(object)),
    }
}

fn number_to_json(number: f64) -> Value {
    const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;
    if number.fract() == 0.0 && number.abs() <= MAX_SAFE_INTEGER {
        Value::from(number as i64)
    } else {
        Number::from_f64(number).map_or(Value::Null, Value::Number)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn struct_numbers_come_back_as_integers_when_whole() {
        let object = json!({"n": 3, "f": 2.5, "neg": -7, "big": 1e300, "list": [1, "a", null, {"b": false}]});
        let back = struct_to_json(&struct_from_json(object.as_object().unwrap()));
        assert_eq!(Value::Object(back), object);
        assert_eq!(number_to_json(f64::NAN), Value::Null);
        assert_eq!(number_to_json(f64::INFINITY), Value::Null);
        assert_eq!(
            value_to_json(&prost_types::Value { kind: None }),
            Value::Null
        );
    }

    #[test]
    fn integers_beyond_what_a_double_holds_exactly_stay_floating_point() {
        let big = prost_types::Value {
            kind: Some(Kind::NumberValue(2f64.powi(60))),
        };
        assert_eq!(value_to_json(&big), json!(2f64.powi(60)));
        assert!(value_to_json(&big).is_f64());
    }
}

//! `google.protobuf.Struct`, the type of every `metadata` field, to and from a JSON object
//! (`serde_json`), as grpcurl and protobuf's JSON mapping show it.

use prost_types::{ListValue, Struct, Value, value::Kind};
use serde_json::{Map, Value as Json};

/// A number in a `Struct` that JSON cannot hold (NaN or an infinity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonFiniteNumber;

impl std::fmt::Display for NonFiniteNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("metadata numbers must be finite")
    }
}

impl std::error::Error for NonFiniteNumber {}

/// A JSON object as a `Struct`; `None` for an empty one (the field stays unset).
pub fn to_struct(object: &Map<String, Json>) -> Option<Struct> {
    (!object.is_empty()).then(|| fields(object))
}

fn fields(object: &Map<String, Json>) -> Struct {
    Struct {
        fields: object
            .iter()
            .map(|(k, v)| (k.clone(), to_value(v)))
            .collect(),
    }
}

fn to_value(value: &Json) -> Value {
    let kind = match value {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(fields(map)),
    };
    Value { kind: Some(kind) }
}

/// A `Struct` as a JSON object; unset is empty. Whole numbers within 2^53 become integers.
pub fn to_json(value: Option<&Struct>) -> Result<Map<String, Json>, NonFiniteNumber> {
    value.map_or_else(
        || Ok(Map::new()),
        |s| {
            s.fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), value_json(v)?)))
                .collect()
        },
    )
}

fn value_json(value: &Value) -> Result<Json, NonFiniteNumber> {
    Ok(match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            const EXACT: f64 = 9_007_199_254_740_992.0;
            if n.fract() == 0.0 && n.abs() <= EXACT {
                #[allow(clippy::cast_possible_truncation)]
                Json::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n)
                    .map(Json::Number)
                    .ok_or(NonFiniteNumber)?
            }
        }
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::ListValue(list)) => Json::Array(
            list.values
                .iter()
                .map(value_json)
                .collect::<Result<_, _>>()?,
        ),
        Some(Kind::StructValue(s)) => Json::Object(to_json(Some(s))?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_round_trip_and_non_finite_numbers_are_refused() {
        let json = serde_json::json!({
            "plan": "pro", "seats": 25, "ratio": 0.5, "tags": ["a", null, true],
            "nested": {"deep": {"x": -3}}
        });
        let Json::Object(map) = json else {
            unreachable!()
        };
        assert_eq!(to_json(to_struct(&map).as_ref()), Ok(map));
        assert_eq!(to_json(None), Ok(Map::new()));
        assert_eq!(to_struct(&Map::new()), None);
        let bad = Struct {
            fields: [(
                "x".to_owned(),
                Value {
                    kind: Some(Kind::NumberValue(f64::NAN)),
                },
            )]
            .into(),
        };
        assert_eq!(to_json(Some(&bad)), Err(NonFiniteNumber));
    }
}

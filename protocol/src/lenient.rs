//! Lenient decoding of inbound requests, as the Java Arklet's fastjson accepts them.
//!
//! fastjson matches bean properties case-insensitively and ignoring `_` and `-`
//! (`biz_name`, `BIZNAME` → `bizName`), maps `isAsync` to `async`, coerces scalars (`"true"`
//! → `true`, `1.0` → `"1.0"`), and treats an empty body as a null input (spec protocol §1.9,
//! traps T13/T14). Single-quoted strings and unquoted keys are *not* accepted here: no known
//! client sends them, and accepting them would need a JSON5 parser on the hot path.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde_json::{Map, Value};

/// Why a request body could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON at all (also truncated JSON).
    #[error("request body is not valid JSON: {0}")]
    Syntax(String),
    /// Valid JSON, but not an object (an array, a string, a number).
    #[error("request body must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// An object whose fields have the wrong types (for example `args` given as an object).
    #[error("request body has a field of the wrong type: {0}")]
    Shape(String),
}

/// A request type whose keys are matched leniently.
pub trait LenientRequest: DeserializeOwned {
    /// The canonical (camelCase) field names.
    const FIELDS: &'static [&'static str];
}

fn fold(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Renames keys of `map` to their canonical spelling from `fields`; unknown keys are kept as
/// they are (the request types ignore them).
pub fn canonicalize_keys(map: Map<String, Value>, fields: &[&str]) -> Map<String, Value> {
    let mut out = Map::with_capacity(map.len());
    for (k, v) in map {
        let folded = fold(&k);
        let canonical = fields.iter().find(|f| fold(f) == folded).or_else(|| {
            // fastjson's smartMatch also strips a leading `is` (`isAsync` → `async`).
            folded
                .strip_prefix("is")
                .and_then(|rest| fields.iter().find(|f| fold(f) == rest))
        });
        match canonical {
            // An exact key wins over a variant of it if both are present.
            Some(c) if out.contains_key(*c) && k != *c => {}
            Some(c) => {
                out.insert((*c).to_owned(), v);
            }
            None => {
                out.insert(k, v);
            }
        }
    }
    out
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Decodes a request body. `Ok(None)` is the Java "null input": an empty (or all-whitespace)
/// body, or the literal `null`.
pub fn decode_request<T: LenientRequest>(body: &[u8]) -> Result<Option<T>, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| DecodeError::Syntax(e.to_string()))?;
    decode_value(value)
}

/// Like [`decode_request`] for an already parsed value.
pub fn decode_value<T: LenientRequest>(value: Value) -> Result<Option<T>, DecodeError> {
    match value {
        Value::Null => Ok(None),
        Value::Object(map) => {
            let map = canonicalize_keys(map, T::FIELDS);
            serde_json::from_value(Value::Object(map))
                .map(Some)
                .map_err(|e| DecodeError::Shape(e.to_string()))
        }
        other => Err(DecodeError::NotAnObject(kind(&other))),
    }
}

/// A string that also accepts numbers and booleans, as fastjson coerces them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(format!("{v:?}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// `deserialize_with` for `Option<String>` fields: null → `None`, scalars → text.
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Text>::deserialize(d)?.map(|t| t.0))
}

/// `deserialize_with` for `bool` fields: accepts booleans, `"true"`/`"false"` in any case,
/// and `0`/`1`; null is `false`.
pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") || s.is_empty() => Ok(false),
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => Ok(false),
        Some(Value::Number(n)) if n.as_f64() == Some(1.0) => Ok(true),
        Some(other) => Err(de::Error::custom(format!(
            "expected a boolean, got {other}"
        ))),
    }
}

/// `deserialize_with` for `Option<Vec<String>>`: a JSON array of scalars (a single scalar is
/// taken as a one-element list, as fastjson does).
pub fn opt_string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<Text>),
        One(Text),
    }
    Ok(Option::<OneOrMany>::deserialize(d)?.map(|v| match v {
        OneOrMany::Many(v) => v.into_iter().map(|t| t.0).collect(),
        OneOrMany::One(t) => vec![t.0],
    }))
}

/// `deserialize_with` for `Option<BTreeMap<String, String>>` with scalar values coerced.
pub fn opt_string_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    Ok(Option::<BTreeMap<String, Text>>::deserialize(d)?
        .map(|m| m.into_iter().map(|(k, v)| (k, v.0)).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalize_table() {
        let fields = &["bizName", "bizVersion", "async", "requestId"];
        let cases = [
            (r#"{"bizname":"a"}"#, r#"{"bizName":"a"}"#),
            (r#"{"biz_name":"a"}"#, r#"{"bizName":"a"}"#),
            (r#"{"BIZ-NAME":"a"}"#, r#"{"bizName":"a"}"#),
            (r#"{"isAsync":true}"#, r#"{"async":true}"#),
            (r#"{"request_id":"r"}"#, r#"{"requestId":"r"}"#),
            (r#"{"other":1}"#, r#"{"other":1}"#),
            (r#"{"bizName":"x","biz_name":"y"}"#, r#"{"bizName":"x"}"#),
        ];
        for (input, want) in cases {
            let Value::Object(m) = serde_json::from_str(input).unwrap() else {
                unreachable!()
            };
            let got = Value::Object(canonicalize_keys(m, fields));
            assert_eq!(got, serde_json::from_str::<Value>(want).unwrap(), "{input}");
        }
    }

    #[test]
    fn flag_table() {
        #[derive(Deserialize)]
        struct F {
            #[serde(default, deserialize_with = "flag")]
            a: bool,
        }
        let cases = [
            (r#"{"a":true}"#, Some(true)),
            (r#"{"a":"TRUE"}"#, Some(true)),
            (r#"{"a":"false"}"#, Some(false)),
            (r#"{"a":1}"#, Some(true)),
            (r#"{"a":null}"#, Some(false)),
            (r#"{}"#, Some(false)),
            (r#"{"a":"yes"}"#, None),
        ];
        for (input, want) in cases {
            let got = serde_json::from_str::<F>(input).ok().map(|f| f.a);
            assert_eq!(got, want, "{input}");
        }
    }
}

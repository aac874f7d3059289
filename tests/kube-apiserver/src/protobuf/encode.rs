//! JSON objects to Kubernetes protobuf, over the same field tables as the
//! decoder: the inverse mapping of every type (see the parent module), fields
//! in tag order, map entries in key order, as Go's marshallers write them.

use super::{Card, Field, MAGIC, Message, Special, Ty, message, message_for};
use base64::Engine;
use serde_json::{Map, Value};

/// Why an object could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// No protobuf schema for the object's apiVersion/kind.
    #[error("no protobuf schema for {api_version}, Kind={kind}")]
    UnknownKind {
        /// `apiVersion` of the object.
        api_version: String,
        /// `kind` of the object.
        kind: String,
    },
    /// A field's JSON value does not fit its protobuf type.
    #[error("cannot encode {message}.{field} as protobuf: {why}")]
    Value {
        /// The message.
        message: String,
        /// The field's JSON name.
        field: String,
        /// What was wrong.
        why: String,
    },
}

/// Encodes an object (its `apiVersion` and `kind` name the type) as a whole
/// protobuf body: `k8s\0` and a `runtime.Unknown` envelope.
pub fn encode(obj: &Value) -> Result<Vec<u8>, EncodeError> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let unknown = || EncodeError::UnknownKind {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
    };
    let msg = message_for(api_version, kind)
        .and_then(message)
        .ok_or_else(unknown)?;
    let empty = Map::new();
    let mut raw = Vec::new();
    encode_message(msg, obj.as_object().unwrap_or(&empty), &mut raw)?;
    let mut type_meta = Vec::new();
    put_bytes(&mut type_meta, 1, api_version.as_bytes());
    put_bytes(&mut type_meta, 2, kind.as_bytes());
    let mut out = MAGIC.to_vec();
    put_bytes(&mut out, 1, &type_meta);
    put_bytes(&mut out, 2, &raw);
    put_bytes(&mut out, 3, b"");
    put_bytes(&mut out, 4, b"");
    Ok(out)
}

/// One event of a protobuf watch stream: a 4-byte big-endian length, then a
/// meta/v1 `WatchEvent` (`type`, and the object's protobuf body in a
/// `RawExtension`), as the real server's length-delimited framer writes it.
pub fn watch_frame(event_type: &str, obj: &Value) -> Result<Vec<u8>, EncodeError> {
    let mut raw_ext = Vec::new();
    put_bytes(&mut raw_ext, 1, &encode(obj)?);
    let mut ev = Vec::new();
    put_bytes(&mut ev, 1, event_type.as_bytes());
    put_bytes(&mut ev, 2, &raw_ext);
    let len = u32::try_from(ev.len()).map_err(|_| EncodeError::Value {
        message: "WatchEvent".into(),
        field: "object".into(),
        why: "larger than 4 GiB".into(),
    })?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend(ev);
    Ok(out)
}

fn encode_message(
    msg: &Message,
    obj: &Map<String, Value>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    for field in msg.fields {
        let err = |why: String| EncodeError::Value {
            message: msg.name.to_string(),
            field: field.json.to_string(),
            why,
        };
        if field.card == Card::Inline {
            // the embedded struct's fields are the parent's JSON keys
            let Ty::Msg(name) = field.ty else {
                return Err(err("inline field is not a message".into()));
            };
            let inner = message(name).ok_or_else(|| err(format!("no schema for {name}")))?;
            let mut buf = Vec::new();
            encode_message(inner, obj, &mut buf)?;
            put_bytes(out, field.tag, &buf);
            continue;
        }
        let Some(v) = obj.get(field.json).filter(|v| !v.is_null()) else {
            continue;
        };
        match field.card {
            Card::One | Card::Keep => value(field, v, out)?,
            Card::Many => {
                let items = v
                    .as_array()
                    .ok_or_else(|| err("a repeated field must be a JSON array".into()))?;
                for item in items {
                    value(field, item, out)?;
                }
            }
            Card::Map => {
                let entries = v
                    .as_object()
                    .ok_or_else(|| err("a map field must be a JSON object".into()))?;
                for (k, item) in entries {
                    let mut entry = Vec::new();
                    put_bytes(&mut entry, 1, k.as_bytes());
                    let inner = Field {
                        tag: 2,
                        json: field.json,
                        card: Card::One,
                        ty: field.ty,
                    };
                    value(&inner, item, &mut entry)?;
                    put_bytes(out, field.tag, &entry);
                }
            }
            Card::Inline => unreachable!("handled above"),
        }
    }
    Ok(())
}

/// Writes one occurrence of `field` with JSON value `v`.
fn value(field: &Field, v: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let err = |why: &str| EncodeError::Value {
        message: String::new(),
        field: field.json.to_string(),
        why: why.to_string(),
    };
    match field.ty {
        Ty::Str => put_bytes(
            out,
            field.tag,
            v.as_str().ok_or_else(|| err("not a string"))?.as_bytes(),
        ),
        Ty::Bytes => {
            let b = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().ok_or_else(|| err("not a base64 string"))?)
                .map_err(|_| err("not valid base64"))?;
            put_bytes(out, field.tag, &b);
        }
        Ty::Bool => put_varint_field(
            out,
            field.tag,
            u64::from(v.as_bool().ok_or_else(|| err("not a boolean"))?),
        ),
        Ty::I32 | Ty::I64 => {
            let n = v.as_i64().ok_or_else(|| err("not an integer"))?;
            // negative numbers are sign-extended to 64 bits, int32 too
            put_varint_field(out, field.tag, n as u64);
        }
        Ty::Msg(name) => {
            let inner = message(name).ok_or_else(|| err("no schema for the message"))?;
            let m = v.as_object().ok_or_else(|| err("not a JSON object"))?;
            let mut buf = Vec::new();
            encode_message(inner, m, &mut buf)?;
            put_bytes(out, field.tag, &buf);
        }
        Ty::Special(s) => {
            let buf = special(s, v).map_err(|why| err(&why))?;
            put_bytes(out, field.tag, &buf);
        }
    }
    Ok(())
}

/// The protobuf bytes of a special type from its JSON form.
pub(crate) fn special(s: Special, v: &Value) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    match s {
        Special::Time | Special::MicroTime => {
            let text = v.as_str().ok_or("a time must be a string")?;
            let t = chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))?;
            put_varint_field(&mut out, 1, t.timestamp() as u64);
            put_varint_field(&mut out, 2, u64::from(t.timestamp_subsec_nanos()));
        }
        Special::Quantity => {
            let q = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err("a quantity must be a string or a number".into()),
            };
            put_bytes(&mut out, 1, q.as_bytes());
        }
        Special::IntOrString => match v {
            Value::Number(n) => {
                let i = n.as_i64().ok_or("IntOrString must be an integer")?;
                put_varint_field(&mut out, 1, 0);
                put_varint_field(&mut out, 2, i as u64);
                put_bytes(&mut out, 3, b"");
            }
            Value::String(s) => {
                put_varint_field(&mut out, 1, 1);
                put_varint_field(&mut out, 2, 0);
                put_bytes(&mut out, 3, s.as_bytes());
            }
            _ => return Err("IntOrString must be a number or a string".into()),
        },
        Special::FieldsV1 => {
            let raw = serde_json::to_vec(v).map_err(|e| e.to_string())?;
            put_bytes(&mut out, 1, &raw);
        }
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint_field(out: &mut Vec<u8>, tag: u32, v: u64) {
    put_varint(out, u64::from(tag) << 3);
    put_varint(out, v);
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, b: &[u8]) {
    put_varint(out, (u64::from(tag) << 3) | 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

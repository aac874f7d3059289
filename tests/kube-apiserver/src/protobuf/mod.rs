//! Protobuf request bodies (`Content-Type: application/vnd.kubernetes.protobuf`), as
//! client-go's typed clients send them (every `kubectl create <kind>` generator,
//! `kubectl drain`'s evictions, typed clients' DeleteOptions).
//!
//! The wire form is the 4-byte magic `k8s\0` followed by a `runtime.Unknown`
//! envelope: `typeMeta` (apiVersion, kind), `raw` (the object's own protobuf
//! encoding), `contentEncoding`, `contentType`. The object is decoded by one
//! generic walker over field tables (`schema.rs`, generated from the upstream
//! protobuf definitions as packaged by the `k8s-pb` crate, with the JSON
//! names of `k8s-openapi`) into the JSON form the rest of the server handles.
//! The types whose JSON form differs from their protobuf shape are mapped as
//! the Go types' JSON marshallers do:
//!
//! | type | protobuf | JSON |
//! | --- | --- | --- |
//! | `Time` | `{seconds, nanos}` | RFC 3339, whole seconds; empty message: zero time, `null` |
//! | `MicroTime` | `{seconds, nanos}` | RFC 3339 with 6 fractional digits; empty: `null` |
//! | `Quantity` | `{string}` | the string |
//! | `IntOrString` | `{type, intVal, strVal}` | a number (type 0) or a string (type 1) |
//! | `FieldsV1` | `{raw}` | the embedded JSON |
//! | `bytes` (Secret `data`, ConfigMap `binaryData`) | bytes | base64 string |
//! | embedded Go structs (`VolumeSource` in `Volume`, ...) | a field | their fields inline in the parent |
//!
//! Presence: Go's protobuf encoder writes every value (non-pointer) field,
//! zero or not, and pointer fields only when set; its JSON encoder leaves a
//! value field's zero out when the field is `omitempty`. The tables carry
//! that fact per field (from the Go types), so a zero is dropped for
//! `minReadySeconds` or `hostPort` (value, `omitempty`) and kept for
//! `replicas` or `gracePeriodSeconds` (pointers: zero is a choice) and for
//! fields without `omitempty`, as the real server's JSON shows them.
//!
//! Unknown field numbers are skipped, as Go's generated unmarshallers do.
//!
//! The same tables encode responses for a client that accepts only protobuf
//! ([`encode`]): objects, lists and `Status` in the envelope above, watch
//! events as length-prefixed `WatchEvent` frames ([`watch_frame`]).

mod encode;
mod schema;

pub use encode::{EncodeError, encode, watch_frame};

use base64::Engine;
use serde_json::{Map, Value, json};

/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Why a protobuf body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body does not start with `k8s\0`.
    #[error("provided object is not a Kubernetes protobuf object (missing the k8s\\0 prefix)")]
    NoMagic,
    /// The bytes are not valid protobuf for the expected message.
    #[error("invalid protobuf in {message}: {why}")]
    Wire {
        /// The message being decoded.
        message: String,
        /// What was wrong.
        why: String,
    },
    /// The envelope names a type this server has no protobuf schema for.
    #[error("no protobuf schema for {api_version}, Kind={kind}")]
    UnknownKind {
        /// `typeMeta.apiVersion`.
        api_version: String,
        /// `typeMeta.kind`.
        kind: String,
    },
    /// `contentEncoding` is set (the real server refuses those too).
    #[error("unsupported protobuf content encoding {0:?}")]
    ContentEncoding(String),
}

/// How often a field occurs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Card {
    /// Singular; a zero scalar ("", 0, false) is left out (a Go value field
    /// with `omitempty`).
    One,
    /// Singular; a zero scalar is shown (a Go pointer, or no `omitempty`).
    Keep,
    /// Repeated (packed or not, for scalars).
    Many,
    /// `map<string, T>`.
    Map,
    /// An embedded Go struct: its fields belong to the parent in JSON.
    Inline,
}

/// Types with a JSON form of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special {
    /// meta/v1 Time.
    Time,
    /// meta/v1 MicroTime.
    MicroTime,
    /// resource.Quantity.
    Quantity,
    /// intstr.IntOrString.
    IntOrString,
    /// meta/v1 FieldsV1 (managedFields) and runtime.RawExtension
    /// (ControllerRevision `data`): JSON bytes in field 1.
    FieldsV1,
}

/// A field's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Str,
    Bool,
    I32,
    I64,
    Bytes,
    Msg(&'static str),
    Special(Special),
}

/// One field of a message.
#[derive(Debug)]
pub(crate) struct Field {
    tag: u32,
    json: &'static str,
    card: Card,
    ty: Ty,
}

/// A message and its fields, sorted by tag.
#[derive(Debug)]
pub(crate) struct Message {
    name: &'static str,
    fields: &'static [Field],
}

/// Builds a [`Field`] (keeps the generated table short).
pub(crate) const fn f(tag: u32, json: &'static str, card: Card, ty: Ty) -> Field {
    Field {
        tag,
        json,
        card,
        ty,
    }
}

fn message(name: &str) -> Option<&'static Message> {
    schema::MESSAGES
        .binary_search_by(|m| m.name.cmp(name))
        .ok()
        .map(|i| &schema::MESSAGES[i])
}

/// The schema name of a group/version/kind, if this server can decode or
/// encode it. `DeleteOptions` is registered in every group (client-go sends
/// it with the group of the resource being deleted) and `Status` in v1;
/// both are meta/v1's.
pub fn message_for(api_version: &str, kind: &str) -> Option<&'static str> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let name = if kind == "DeleteOptions" || (kind == "Status" && api_version == "v1") {
        format!("apimachinery.pkg.apis.meta.v1.{kind}")
    } else {
        let pkg = match group {
            "" => "core",
            "apps" | "autoscaling" | "policy" => group,
            "coordination.k8s.io" => "coordination",
            "events.k8s.io" => "events",
            "rbac.authorization.k8s.io" => "rbac",
            "authorization.k8s.io" => "authorization",
            _ => return None,
        };
        format!("api.{pkg}.{version}.{kind}")
    };
    message(&name).map(|m| m.name)
}

/// The `runtime.Unknown` envelope of a protobuf body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// `typeMeta.apiVersion`.
    pub api_version: String,
    /// `typeMeta.kind`.
    pub kind: String,
    /// The object's protobuf encoding.
    pub raw: Vec<u8>,
    /// `contentEncoding` (empty for plain bodies).
    pub content_encoding: String,
}

/// Splits a body (`k8s\0` + `runtime.Unknown`) into its envelope.
pub fn envelope(body: &[u8]) -> Result<Envelope, DecodeError> {
    let rest = body.strip_prefix(MAGIC).ok_or(DecodeError::NoMagic)?;
    let wire = |why: String| DecodeError::Wire {
        message: "runtime.Unknown".into(),
        why,
    };
    let mut env = Envelope::default();
    let mut r = Reader(rest);
    while let Some((tag, wt)) = r.key().map_err(wire)? {
        match (tag, wt) {
            (1, 2) => {
                let mut tm = Reader(r.bytes().map_err(wire)?);
                while let Some((t, w)) = tm.key().map_err(wire)? {
                    match (t, w) {
                        (1, 2) => {
                            env.api_version = utf8(tm.bytes().map_err(wire)?).map_err(wire)?
                        }
                        (2, 2) => env.kind = utf8(tm.bytes().map_err(wire)?).map_err(wire)?,
                        _ => tm.skip(w).map_err(wire)?,
                    }
                }
            }
            (2, 2) => env.raw = r.bytes().map_err(wire)?.to_vec(),
            (3, 2) => env.content_encoding = utf8(r.bytes().map_err(wire)?).map_err(wire)?,
            _ => r.skip(wt).map_err(wire)?,
        }
    }
    Ok(env)
}

/// Decodes a whole protobuf body into the JSON object, `apiVersion` and
/// `kind` set from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    let env = envelope(body)?;
    if !env.content_encoding.is_empty() {
        return Err(DecodeError::ContentEncoding(env.content_encoding));
    }
    let name =
        message_for(&env.api_version, &env.kind).ok_or_else(|| DecodeError::UnknownKind {
            api_version: env.api_version.clone(),
            kind: env.kind.clone(),
        })?;
    let mut obj = decode_message(name, &env.raw)?;
    if let Value::Object(m) = &mut obj {
        m.insert("apiVersion".into(), json!(env.api_version));
        m.insert("kind".into(), json!(env.kind));
    }
    Ok(obj)
}

/// Decodes the protobuf encoding of message `name` (a schema name such as
/// `api.core.v1.Pod`) into its JSON form.
pub fn decode_message(name: &str, bytes: &[u8]) -> Result<Value, DecodeError> {
    let msg = message(name).ok_or_else(|| DecodeError::UnknownKind {
        api_version: String::new(),
        kind: name.to_string(),
    })?;
    let mut out = Map::new();
    decode_into(msg, bytes, &mut out)?;
    Ok(Value::Object(out))
}

fn decode_into(
    msg: &Message,
    bytes: &[u8],
    out: &mut Map<String, Value>,
) -> Result<(), DecodeError> {
    let wire = |why: String| DecodeError::Wire {
        message: msg.name.to_string(),
        why,
    };
    let mut r = Reader(bytes);
    while let Some((tag, wt)) = r.key().map_err(wire)? {
        let Ok(i) = msg.fields.binary_search_by(|f| f.tag.cmp(&tag)) else {
            r.skip(wt).map_err(wire)?;
            continue;
        };
        let field = &msg.fields[i];
        match field.card {
            Card::One | Card::Keep => {
                if let Some(v) = single(field, wt, &mut r).map_err(wire)? {
                    out.insert(field.json.into(), v);
                } else {
                    out.remove(field.json);
                }
            }
            Card::Many => {
                let entry = out.entry(field.json).or_insert_with(|| json!([]));
                let list = entry.as_array_mut().expect("repeated fields hold arrays");
                if wt == 2 && matches!(field.ty, Ty::Bool | Ty::I32 | Ty::I64) {
                    // packed scalars
                    let mut p = Reader(r.bytes().map_err(wire)?);
                    while !p.0.is_empty() {
                        list.push(scalar(field.ty, p.varint().map_err(wire)?));
                    }
                } else {
                    list.push(element(field, wt, &mut r).map_err(wire)?);
                }
            }
            Card::Map => {
                let mut e = Reader(r.bytes().map_err(wire)?);
                let (mut key, mut value) = (String::new(), None);
                while let Some((t, w)) = e.key().map_err(wire)? {
                    match t {
                        1 => key = utf8(e.bytes().map_err(wire)?).map_err(wire)?,
                        2 => value = Some(element(field, w, &mut e).map_err(wire)?),
                        _ => e.skip(w).map_err(wire)?,
                    }
                }
                let value = value.unwrap_or_else(|| zero(field.ty));
                let entry = out.entry(field.json).or_insert_with(|| json!({}));
                if let Some(m) = entry.as_object_mut() {
                    m.insert(key, value);
                }
            }
            Card::Inline => {
                let Ty::Msg(name) = field.ty else {
                    return Err(wire(format!("inline field {tag} is not a message")));
                };
                let inner = message(name).ok_or_else(|| wire(format!("no schema for {name}")))?;
                decode_into(inner, r.bytes().map_err(wire)?, out)?;
            }
        }
    }
    Ok(())
}

/// A singular field's JSON value, `None` when it is to be left out.
fn single(field: &Field, wt: u8, r: &mut Reader<'_>) -> Result<Option<Value>, String> {
    let v = element(field, wt, r)?;
    // only scalars have Go zero values to leave out: a message (or a special
    // type such as IntOrString 0) on the wire was set
    let zero = match (&field.ty, &v) {
        (_, Value::Null) => return Ok(None),
        (Ty::Str | Ty::Bytes, Value::String(s)) => s.is_empty(),
        (Ty::Bool, Value::Bool(b)) => !b,
        (Ty::I32 | Ty::I64, Value::Number(n)) => n.as_i64() == Some(0),
        _ => false,
    };
    Ok((!zero || field.card == Card::Keep).then_some(v))
}

/// The JSON value of one occurrence of `field` (one list element, one map value).
fn element(field: &Field, wt: u8, r: &mut Reader<'_>) -> Result<Value, String> {
    match field.ty {
        Ty::Str => {
            expect_wire(wt, 2, field)?;
            Ok(Value::String(utf8(r.bytes()?)?))
        }
        Ty::Bytes => {
            expect_wire(wt, 2, field)?;
            Ok(Value::String(
                base64::engine::general_purpose::STANDARD.encode(r.bytes()?),
            ))
        }
        Ty::Bool | Ty::I32 | Ty::I64 => {
            expect_wire(wt, 0, field)?;
            Ok(scalar(field.ty, r.varint()?))
        }
        Ty::Msg(name) => {
            expect_wire(wt, 2, field)?;
            let inner = message(name).ok_or_else(|| format!("no schema for {name}"))?;
            let mut m = Map::new();
            decode_into(inner, r.bytes()?, &mut m).map_err(|e| e.to_string())?;
            Ok(Value::Object(m))
        }
        Ty::Special(s) => {
            expect_wire(wt, 2, field)?;
            special(s, r.bytes()?)
        }
    }
}

fn expect_wire(got: u8, want: u8, field: &Field) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "field {} ({}) has wire type {got}, expected {want}",
            field.tag, field.json
        ))
    }
}

fn scalar(ty: Ty, v: u64) -> Value {
    match ty {
        Ty::Bool => json!(v != 0),
        // int32 is sign-extended to 64 bits on the wire
        Ty::I32 => json!(v as i64 as i32),
        _ => json!(v as i64),
    }
}

fn zero(ty: Ty) -> Value {
    match ty {
        Ty::Str | Ty::Bytes => json!(""),
        Ty::Bool => json!(false),
        Ty::I32 | Ty::I64 => json!(0),
        Ty::Msg(_) => json!({}),
        Ty::Special(s) => special(s, &[]).unwrap_or(Value::Null),
    }
}

/// The JSON form of a special type from its protobuf bytes.
pub(crate) fn special(s: Special, bytes: &[u8]) -> Result<Value, String> {
    let mut fields: [Option<Result<u64, Vec<u8>>>; 4] = [None, None, None, None];
    let mut r = Reader(bytes);
    while let Some((tag, wt)) = r.key()? {
        let slot = match fields.get_mut(tag as usize) {
            Some(s) if tag > 0 => s,
            _ => {
                r.skip(wt)?;
                continue;
            }
        };
        *slot = Some(match wt {
            0 => Ok(r.varint()?),
            2 => Err(r.bytes()?.to_vec()),
            _ => return Err(format!("{s:?} field {tag} has wire type {wt}")),
        });
    }
    let int = |i: usize| match &fields[i] {
        Some(Ok(v)) => Ok(*v as i64),
        None => Ok(0),
        Some(Err(_)) => Err(format!("{s:?} field {i} is not a number")),
    };
    let string = |i: usize| match &fields[i] {
        Some(Err(b)) => utf8(b),
        None => Ok(String::new()),
        Some(Ok(_)) => Err(format!("{s:?} field {i} is not a string")),
    };
    Ok(match s {
        Special::Time | Special::MicroTime => {
            if bytes.is_empty() {
                // Go's Time unmarshals an empty message to the zero time: JSON null
                return Ok(Value::Null);
            }
            let (secs, nanos) = (int(1)?, int(2)? as i32);
            let t = chrono::DateTime::from_timestamp(secs, nanos.max(0) as u32)
                .ok_or_else(|| format!("{s:?} out of range: {secs}s {nanos}ns"))?;
            let format = if s == Special::Time {
                chrono::SecondsFormat::Secs
            } else {
                chrono::SecondsFormat::Micros
            };
            json!(t.to_rfc3339_opts(format, true))
        }
        Special::Quantity => json!(string(1)?),
        Special::IntOrString => match int(1)? {
            0 => json!(int(2)? as i32),
            1 => json!(string(3)?),
            t => {
                return Err(format!(
                    "IntOrString type {t} is neither 0 (int) nor 1 (string)"
                ));
            }
        },
        Special::FieldsV1 => {
            let raw = match &fields[1] {
                Some(Err(b)) => b.as_slice(),
                None => return Ok(Value::Null),
                Some(Ok(_)) => return Err(format!("{s:?} raw is not bytes")),
            };
            serde_json::from_slice(raw).map_err(|e| format!("{s:?} does not hold JSON: {e}"))?
        }
    })
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string field is not valid UTF-8".to_string())
}

/// A cursor over protobuf wire bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.0.split_first().ok_or("truncated varint")?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    /// The next field's (number, wire type), `None` at the end.
    fn key(&mut self) -> Result<Option<(u32, u8)>, String> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let k = self.varint()?;
        let tag = u32::try_from(k >> 3).map_err(|_| "field number out of range")?;
        if tag == 0 {
            return Err("field number 0".into());
        }
        Ok(Some((tag, (k & 7) as u8)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err(format!("length {n} past the end of the message"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| "length out of range")?)
    }

    fn skip(&mut self, wt: u8) -> Result<(), String> {
        match wt {
            0 => self.varint().map(|_| ()),
            1 => self.take(8).map(|_| ()),
            2 => self.bytes().map(|_| ()),
            5 => self.take(4).map(|_| ()),
            _ => Err(format!("unsupported wire type {wt}")),
        }
    }
}

#[cfg(test)]
mod tests;

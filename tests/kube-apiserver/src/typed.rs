//! Decoding bodies as their real types (via k8s-openapi), as the real
//! server decodes into Go structs: a wrongly typed field is 400 BadRequest,
//! and unknown fields are handled by `fieldValidation` (`Strict`: 400
//! "strict decoding error"; `Warn`, the default: dropped with a `Warning`
//! header; `Ignore`: dropped).

use crate::errors::ApiError;
use crate::resources::{ResourceDef, Storage};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The `fieldValidation` directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Unknown fields are an error.
    Strict,
    /// Unknown fields are dropped with a warning.
    Warn,
    /// Unknown fields are dropped.
    Ignore,
}

impl FieldValidation {
    /// From the query parameter (default `Warn`).
    pub fn parse(v: Option<&str>) -> Result<Self, ApiError> {
        match v {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            ))),
        }
    }
}

/// What went wrong decoding.
enum DecodeError {
    /// A required field is missing at `path` (handled by validation, as
    /// the real server decodes missing fields to zero values).
    Missing { path: Vec<Seg>, field: String },
    /// Anything else (wrong type, bad enum, ...).
    Other(String),
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn roundtrip<K: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, DecodeError> {
    match serde_path_to_error::deserialize::<_, K>(v.clone()) {
        Ok(k) => serde_json::to_value(&k).map_err(|e| DecodeError::Other(e.to_string())),
        Err(e) => {
            let msg = e.inner().to_string();
            let path: Vec<Seg> = e
                .path()
                .iter()
                .filter_map(|s| match s {
                    serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                    serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                    _ => None,
                })
                .collect();
            let shown = e.path().to_string();
            match msg
                .strip_prefix("missing field `")
                .and_then(|r| r.split('`').next())
            {
                Some(field) => Err(DecodeError::Missing {
                    path,
                    field: field.to_string(),
                }),
                None if shown == "." || shown.is_empty() => Err(DecodeError::Other(msg)),
                None => Err(DecodeError::Other(format!("{shown}: {msg}"))),
            }
        }
    }
}

fn at_path<'a>(v: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    let mut cur = v;
    for s in path {
        cur = match s {
            Seg::Key(k) => cur.as_object_mut()?.get_mut(k)?,
            Seg::Index(i) => cur.as_array_mut()?.get_mut(*i)?,
        };
    }
    Some(cur)
}

/// Decodes `v` as the kind's type, filling missing required fields with
/// placeholders (in a copy) so that the rest can still be checked.
fn typed_lenient(def: &ResourceDef, v: &Value) -> Result<Value, String> {
    let mut work = v.clone();
    let placeholders = [json!([]), json!({}), json!(""), json!(0), json!(false)];
    let mut filled: Vec<(String, usize)> = Vec::new();
    for _ in 0..64 {
        match typed(def, &work) {
            Ok(t) => return Ok(t),
            Err(DecodeError::Other(m)) => {
                // A placeholder of the wrong type: try the next one.
                if let Some((where_, idx)) = filled.last().cloned()
                    && m.starts_with(&where_)
                    && idx + 1 < placeholders.len()
                {
                    let (path, field) = split_where(&where_);
                    if let Some(obj) = at_path(&mut work, &path).and_then(Value::as_object_mut) {
                        obj.insert(field, placeholders[idx + 1].clone());
                        filled.last_mut().expect("present").1 = idx + 1;
                        continue;
                    }
                }
                return Err(m);
            }
            Err(DecodeError::Missing { path, field }) => {
                let where_ = describe(&path, &field);
                let Some(obj) = at_path(&mut work, &path).and_then(Value::as_object_mut) else {
                    return Err(format!("missing field `{field}`"));
                };
                obj.insert(field, placeholders[0].clone());
                filled.push((where_, 0));
            }
        }
    }
    Err("too many missing required fields".into())
}

fn describe(path: &[Seg], field: &str) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    if !s.is_empty() {
        s.push('.');
    }
    s.push_str(field);
    s
}

fn split_where(w: &str) -> (Vec<Seg>, String) {
    let (head, field) = match w.rsplit_once('.') {
        Some((h, f)) => (h, f.to_string()),
        None => ("", w.to_string()),
    };
    let mut path = Vec::new();
    for part in head.split('.').filter(|p| !p.is_empty()) {
        let mut it = part.split('[');
        if let Some(k) = it.next()
            && !k.is_empty()
        {
            path.push(Seg::Key(k.to_string()));
        }
        for idx in it {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                path.push(Seg::Index(i));
            }
        }
    }
    (path, field)
}

fn typed(def: &ResourceDef, v: &Value) -> Result<Value, DecodeError> {
    use k8s_openapi::api::{
        apps::v1 as apps, coordination::v1 as coord, core::v1 as core, events::v1 as ev,
        rbac::v1 as rbac,
    };
    match def.storage {
        Storage::Nodes => roundtrip::<core::Node>(v),
        Storage::Pods => roundtrip::<core::Pod>(v),
        Storage::Namespaces => roundtrip::<core::Namespace>(v),
        Storage::Services => roundtrip::<core::Service>(v),
        Storage::Events if def.is_events_v1() => roundtrip::<ev::Event>(v),
        Storage::Events => roundtrip::<core::Event>(v),
        Storage::Deployments => roundtrip::<apps::Deployment>(v),
        Storage::ReplicaSets => roundtrip::<apps::ReplicaSet>(v),
        Storage::DaemonSets => roundtrip::<apps::DaemonSet>(v),
        Storage::Leases => roundtrip::<coord::Lease>(v),
        Storage::ConfigMaps => roundtrip::<core::ConfigMap>(v),
        Storage::Secrets => roundtrip::<core::Secret>(v),
        Storage::PodDisruptionBudgets => {
            roundtrip::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(v)
        }
        Storage::ServiceAccounts => roundtrip::<core::ServiceAccount>(v),
        Storage::ControllerRevisions => roundtrip::<apps::ControllerRevision>(v),
        Storage::Roles => roundtrip::<rbac::Role>(v),
        Storage::RoleBindings => roundtrip::<rbac::RoleBinding>(v),
        Storage::ClusterRoles => roundtrip::<rbac::ClusterRole>(v),
        Storage::ClusterRoleBindings => roundtrip::<rbac::ClusterRoleBinding>(v),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Removes from `raw` what the typed form does not have, recording the
/// paths of non-empty unknown fields.
fn prune(raw: &mut Value, typed: &Value, path: &mut Vec<String>, unknown: &mut Vec<String>) {
    match (raw, typed) {
        (Value::Object(r), Value::Object(t)) => {
            let keys: Vec<String> = r.keys().cloned().collect();
            for k in keys {
                match t.get(&k) {
                    Some(tv) => {
                        path.push(k.clone());
                        prune(r.get_mut(&k).expect("key exists"), tv, path, unknown);
                        path.pop();
                    }
                    None => {
                        if !is_empty(&r[&k]) {
                            path.push(k.clone());
                            unknown.push(path.join("."));
                            path.pop();
                            r.remove(&k);
                        }
                    }
                }
            }
        }
        (Value::Array(r), Value::Array(t)) if r.len() == t.len() => {
            for (i, (rv, tv)) in r.iter_mut().zip(t).enumerate() {
                let last = path.pop();
                let base = last.clone().unwrap_or_default();
                path.push(format!("{base}[{i}]"));
                prune(rv, tv, path, unknown);
                path.pop();
                if let Some(l) = last {
                    path.push(l);
                }
            }
        }
        _ => {}
    }
}

/// Checks `obj` (in the API version of `def`) against its type. Returns
/// the object without unknown fields, plus warnings for them.
pub fn check(
    def: &ResourceDef,
    mut obj: Value,
    fv: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let t = typed_lenient(def, &obj).map_err(|e| {
        ApiError::bad_request(format!(
            "{kind} in version \"{v}\" cannot be handled as a {kind}: {e}",
            kind = def.kind,
            v = def.version
        ))
    })?;
    let mut unknown = Vec::new();
    prune(&mut obj, &t, &mut Vec::new(), &mut unknown);
    if unknown.is_empty() {
        return Ok((obj, Vec::new()));
    }
    match fv {
        FieldValidation::Strict => {
            let list: Vec<String> = unknown
                .iter()
                .map(|u| format!("unknown field {u:?}"))
                .collect();
            Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                list.join(", ")
            )))
        }
        FieldValidation::Warn => Ok((
            obj,
            unknown
                .iter()
                .map(|u| format!("unknown field {u:?}"))
                .collect(),
        )),
        FieldValidation::Ignore => Ok((obj, Vec::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pods() -> &'static ResourceDef {
        crate::resources::find("", "v1", "pods").unwrap()
    }

    #[test]
    fn missing_required_fields_are_not_type_errors() {
        let deps = crate::resources::find("apps", "v1", "deployments").unwrap();
        let partial = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 2, "paused": true, "bogus": 1}});
        let (clean, warnings) = check(deps, partial, FieldValidation::Warn).unwrap();
        assert_eq!(warnings, vec!["unknown field \"spec.bogus\""]);
        assert!(
            clean["spec"].get("selector").is_none(),
            "placeholders stay out of the object"
        );
        let nocontainers = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
            "spec": {"initContainers": [{"image": "i"}]}});
        check(pods(), nocontainers, FieldValidation::Strict).unwrap();
        let mistyped = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": "2"}});
        let e = check(deps, mistyped, FieldValidation::Warn).unwrap_err();
        assert!(e.message.contains("spec.replicas"), "{}", e.message);
    }

    #[test]
    fn unknown_and_mistyped_fields() {
        let p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "bogus": 1, "labels": {}},
            "spec": {"containers": [{"name": "c", "image": "i", "imagee": "typo"}]}});
        let (clean, warnings) = check(pods(), p.clone(), FieldValidation::Warn).unwrap();
        assert_eq!(
            warnings,
            vec![
                "unknown field \"metadata.bogus\"",
                "unknown field \"spec.containers[0].imagee\""
            ]
        );
        assert!(clean["metadata"].get("bogus").is_none());
        assert_eq!(clean["metadata"]["labels"], json!({}));
        let e = check(pods(), p, FieldValidation::Strict).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message.starts_with("strict decoding error"),
            "{}",
            e.message
        );
        let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": "no"}});
        let e = check(pods(), bad, FieldValidation::Ignore).unwrap_err();
        assert!(
            e.message.contains("cannot be handled as a Pod"),
            "{}",
            e.message
        );
    }
}

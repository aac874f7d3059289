//! JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge
//! patch with the directives `$patch` (`replace`, `delete`, `merge`),
//! `$retainKeys`, `$setElementOrder/<list>` and
//! `$deleteFromPrimitiveList/<list>`.

use crate::errors::ApiError;
use crate::schema::{ListType, list_type};
use serde_json::{Map, Value};

/// The patch types, chosen by Content-Type as the real server does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`
    Json,
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/apply-patch+yaml` (also `+cbor` is not supported)
    Apply,
}

/// Media types accepted for PATCH.
pub const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

impl PatchType {
    /// From a Content-Type header.
    pub fn from_content_type(ct: &str) -> Result<Self, ApiError> {
        let base = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match base.as_str() {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" => Ok(PatchType::Apply),
            _ => Err(ApiError::unsupported_media_type(ct, PATCH_TYPES)),
        }
    }
}

/// RFC 7386.
pub fn merge_patch(doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "json: cannot unmarshal non-object merge patch into map[string]interface {}",
        ));
    }
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    Ok(out)
}

/// RFC 6902.
///
/// As the real server's JSON patch library (evanphx/json-patch v4), `replace`
/// of a missing key of an existing object sets it (RFC 6902 says it fails);
/// `kubectl rollout undo` relies on that for `/metadata/annotations`.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    // checks the whole patch first, so a malformed one is 400 whatever it would do
    let _: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut out = doc.clone();
    for (i, op) in patch.as_array().into_iter().flatten().enumerate() {
        let mut op = op.clone();
        if op["op"] == "replace"
            && let Some(path) = op["path"].as_str()
            && let Some((parent, key)) = path.rsplit_once('/')
        {
            let key = key.replace("~1", "/").replace("~0", "~");
            if out
                .pointer(parent)
                .and_then(Value::as_object)
                .is_some_and(|m| !m.contains_key(&key))
            {
                op["op"] = Value::from("add");
            }
        }
        let one: json_patch::PatchOperation = serde_json::from_value(op)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        json_patch::patch(&mut out, std::slice::from_ref(&one)).map_err(|e| ApiError {
            code: 422,
            reason: "Invalid",
            message: format!(
                "the server rejected our request due to an error in our request: {}",
                e.to_string().replacen("'/0'", &format!("'/{i}'"), 1)
            ),
            details: None,
        })?;
    }
    Ok(out)
}

/// Strategic merge patch of a whole object of `kind`.
pub fn strategic_merge_patch(kind: &str, doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    let Value::Object(p) = patch else {
        return Err(ApiError::bad_request(
            "strategic merge patch must be a JSON object",
        ));
    };
    let Value::Object(d) = doc else {
        return Err(ApiError::bad_request(
            "object to patch is not a JSON object",
        ));
    };
    let mut path = Vec::new();
    match merge_map(kind, &mut path, d.clone(), p)? {
        Some(m) => Ok(Value::Object(m)),
        None => Err(ApiError::bad_request(
            "a strategic merge patch cannot delete the whole object",
        )),
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

fn merge_map<'a>(
    kind: &str,
    path: &mut Vec<&'a str>,
    mut orig: Map<String, Value>,
    patch: &'a Map<String, Value>,
) -> Result<Option<Map<String, Value>>, ApiError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut out = patch.clone();
            out.remove("$patch");
            return Ok(Some(strip_directives(out)));
        }
        Some("merge") | None => {}
        Some(other) => return Err(bad(format!("Unknown patch type: {other}"))),
    }
    if let Some(keys) = patch.get("$retainKeys") {
        let keys = keys
            .as_array()
            .ok_or_else(|| bad("invalid patch: $retainKeys must be a list of strings"))?;
        let keep: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        for k in patch.keys() {
            if !k.starts_with('$') && !keep.contains(&k.as_str()) && !patch[k].is_null() {
                return Err(ApiError {
                    code: 422,
                    reason: "Invalid",
                    message:
                        "doesn't match $retainKeys: patch content doesn't match retainKeys list"
                            .into(),
                    details: None,
                });
            }
        }
        orig.retain(|k, _| keep.contains(&k.as_str()));
    }
    // $deleteFromPrimitiveList/<field>
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let del = v
                .as_array()
                .ok_or_else(|| bad("invalid patch: $deleteFromPrimitiveList must be a list"))?;
            if let Some(Value::Array(items)) = orig.get_mut(field) {
                items.retain(|x| !del.contains(x));
            }
        }
    }
    for (k, pv) in patch {
        if k.starts_with('$') {
            continue;
        }
        path.push(k.as_str());
        if pv.is_null() {
            orig.remove(k);
        } else {
            match (orig.remove(k), pv) {
                (Some(Value::Object(om)), Value::Object(pm)) => {
                    if let Some(m) = merge_map(kind, path, om, pm)? {
                        orig.insert(k.clone(), Value::Object(m));
                    }
                }
                (None, Value::Object(pm)) => {
                    if let Some(m) = merge_map(kind, path, Map::new(), pm)? {
                        orig.insert(k.clone(), Value::Object(m));
                    }
                }
                (old, Value::Array(pl)) => {
                    let old_list = match old {
                        Some(Value::Array(a)) => a,
                        _ => Vec::new(),
                    };
                    let merged = merge_list(kind, path, old_list, pl)?;
                    orig.insert(k.clone(), Value::Array(merged));
                }
                (_, other) => {
                    orig.insert(k.clone(), other.clone());
                }
            }
        }
        path.pop();
    }
    // $setElementOrder/<field>
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            let order = v
                .as_array()
                .ok_or_else(|| bad("invalid patch: $setElementOrder must be a list"))?;
            path.push(field);
            let lt = list_type(kind, path);
            path.pop();
            if let Some(Value::Array(items)) = orig.get_mut(field) {
                reorder(items, order, &lt);
            }
        }
    }
    Ok(Some(orig))
}

fn strip_directives(mut m: Map<String, Value>) -> Map<String, Value> {
    m.retain(|k, _| !k.starts_with('$'));
    m
}

fn key_matches(a: &Value, b: &Value, keys: &[&str]) -> bool {
    keys.iter().all(|k| a.get(*k) == b.get(*k))
}

fn reorder(items: &mut Vec<Value>, order: &[Value], lt: &ListType) {
    let mut rest = std::mem::take(items);
    let mut out = Vec::new();
    for o in order {
        let pos = match lt {
            ListType::Map(keys) => rest.iter().position(|x| key_matches(x, o, keys)),
            _ => rest.iter().position(|x| x == o),
        };
        if let Some(p) = pos {
            out.push(rest.remove(p));
        }
    }
    out.extend(rest);
    *items = out;
}

fn merge_list<'a>(
    kind: &str,
    path: &mut Vec<&'a str>,
    orig: Vec<Value>,
    patch: &'a [Value],
) -> Result<Vec<Value>, ApiError> {
    match list_type(kind, path) {
        ListType::Atomic => {
            // A list without a patch strategy is replaced; directives inside
            // are meaningless and are stripped.
            Ok(patch
                .iter()
                .filter(|x| !(x.is_object() && x.get("$patch").is_some()))
                .cloned()
                .collect())
        }
        ListType::Set => {
            let mut out = orig;
            if patch
                .iter()
                .any(|x| x.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                return Ok(patch.iter().filter(|x| !x.is_object()).cloned().collect());
            }
            for x in patch {
                if x.is_object() || x.is_array() {
                    return Err(bad(
                        "invalid patch: a list of primitives with merge strategy cannot contain objects or lists",
                    ));
                }
                if !out.contains(x) {
                    out.push(x.clone());
                }
            }
            Ok(out)
        }
        ListType::Map(keys) => {
            if patch
                .iter()
                .any(|x| x.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                return Ok(patch
                    .iter()
                    .filter(|x| x.get("$patch").is_none())
                    .cloned()
                    .collect());
            }
            let mut out = orig;
            for item in patch {
                let Value::Object(pm) = item else {
                    return Err(bad(format!(
                        "invalid patch: list {} must contain objects",
                        path.join(".")
                    )));
                };
                for k in keys {
                    if !pm.contains_key(*k) {
                        return Err(bad(format!(
                            "map: {} does not contain declared merge key: {}",
                            item, k
                        )));
                    }
                }
                let pos = out.iter().position(|x| key_matches(x, item, keys));
                match pm.get("$patch").and_then(Value::as_str) {
                    Some("delete") => {
                        out.retain(|x| !key_matches(x, item, keys));
                    }
                    Some("merge") | None => match pos {
                        Some(p) => {
                            let existing = match std::mem::take(&mut out[p]) {
                                Value::Object(m) => m,
                                _ => Map::new(),
                            };
                            match merge_map(kind, path, existing, pm)? {
                                Some(m) => out[p] = Value::Object(m),
                                None => {
                                    out.remove(p);
                                }
                            }
                        }
                        None => {
                            if let Some(m) = merge_map(kind, path, Map::new(), pm)? {
                                out.push(Value::Object(m));
                            }
                        }
                    },
                    Some(other) => return Err(bad(format!("Unknown patch type: {other}"))),
                }
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patch_replace_is_lenient_on_object_keys() {
        let doc = json!({"metadata": {"name": "d"}, "spec": {"list": [1]}});
        let ok = |p: Value| json_patch(&doc, &p).unwrap();
        let err = |p: Value| json_patch(&doc, &p).unwrap_err();
        // what kubectl rollout undo sends to a Deployment without annotations
        assert_eq!(
            ok(json!([{"op": "replace", "path": "/metadata/annotations", "value": {"a": "1"}}])),
            json!({"metadata": {"name": "d", "annotations": {"a": "1"}}, "spec": {"list": [1]}})
        );
        assert_eq!(
            ok(json!([{"op": "replace", "path": "/metadata/name", "value": "e"}]))["metadata"]["name"],
            "e"
        );
        assert_eq!(
            ok(json!([{"op": "replace", "path": "/metadata/a~1b", "value": 1}]))["metadata"]["a/b"],
            1
        );
        // a missing parent, or an index past a list's end, still fails
        let e = err(json!([{"op": "add", "path": "/x", "value": 1},
                           {"op": "replace", "path": "/missing/key", "value": 1}]));
        assert_eq!(e.code, 422);
        assert!(e.message.contains("'/1'"), "{}", e.message);
        assert_eq!(
            err(json!([{"op": "replace", "path": "/spec/list/3", "value": 1}])).code,
            422
        );
        assert_eq!(err(json!([{"op": "frobnicate", "path": "/x"}])).code, 400);
    }

    #[test]
    fn conditions_merge_by_type() {
        let doc = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False"},
            {"type": "PodScheduled", "status": "True"}
        ], "containerStatuses": [{"name": "a"}, {"name": "b"}]}});
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}],
            "containerStatuses": [{"name": "b", "ready": true}]}});
        let out = strategic_merge_patch("Pod", &doc, &patch).unwrap();
        assert_eq!(
            out["status"]["conditions"],
            json!([
                {"type": "Ready", "status": "True"},
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"}
            ])
        );
        // containerStatuses has no patch strategy in the real API: replaced.
        assert_eq!(
            out["status"]["containerStatuses"],
            json!([{"name": "b", "ready": true}])
        );
    }

    #[test]
    fn directives() {
        let doc = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"containers": [{"name": "x", "image": "i"}, {"name": "y", "image": "j"}]}});
        let patch = json!({
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"]},
            "spec": {"containers": [{"name": "x", "$patch": "delete"}]}
        });
        let out = strategic_merge_patch("Pod", &doc, &patch).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "y", "image": "j"}])
        );
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "y"}, {"name": "x"}], "containers": [{"name": "x", "image": "k"}]}});
        let out = strategic_merge_patch("Pod", &doc, &patch).unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "y", "image": "j"}, {"name": "x", "image": "k"}])
        );
    }
}

//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! Field sets are tracked at leaf granularity in the real `FieldsV1`
//! format (`f:<field>`, `k:<key json>` for items of keyed lists, `v:<json>`
//! for items of set lists); atomic lists and scalars are leaves. This is a
//! simplified structured-merge-diff:
//! - the list semantics come from [`crate::schema`];
//! - a manager is identified by its name and subresource (an `Apply` and an
//!   `Update` entry of the same name never conflict with each other);
//! - a conflict is reported when an apply changes the value of a field
//!   owned by another manager (unless `force=true`, which transfers it);
//! - fields the applier owned before and no longer applies are removed
//!   when no other manager owns them (or anything beneath them);
//! - updates (PUT/PATCH/POST) take ownership of every field they change
//!   and never conflict.

use crate::errors::ApiError;
use crate::schema::{ListType, list_type};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// A path of FieldsV1 tokens.
pub type Path = Vec<String>;
/// A set of owned paths.
pub type FieldSet = BTreeSet<Path>;

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// apiVersion the fields were written with.
    pub api_version: String,
    /// Timestamp.
    pub time: String,
    /// Subresource ("" for the main resource).
    pub subresource: String,
    /// Owned fields.
    pub fields: FieldSet,
}

/// Fields never tracked (system-managed or identifying).
fn skip_top(path: &[String]) -> bool {
    match path {
        [a] if a == "f:apiVersion" || a == "f:kind" => true,
        [m, f] if m == "f:metadata" => matches!(
            f.as_str(),
            "f:name"
                | "f:namespace"
                | "f:uid"
                | "f:resourceVersion"
                | "f:generation"
                | "f:creationTimestamp"
                | "f:deletionTimestamp"
                | "f:deletionGracePeriodSeconds"
                | "f:managedFields"
                | "f:selfLink"
                | "f:generateName"
        ),
        _ => false,
    }
}

/// Which part of an object a write may own: the main resource does not own
/// `status` (for kinds with a status subresource), `/status` owns only
/// `status` and `metadata`, `/finalize` only `spec.finalizers` and
/// `metadata` (the real reset-fields strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything.
    All,
    /// Everything but status.
    NoStatus,
    /// status + metadata.
    Status,
    /// spec.finalizers + metadata.
    Finalize,
}

fn in_scope(scope: Scope, p: &[String]) -> bool {
    let first = p.first().map(String::as_str).unwrap_or("");
    match scope {
        Scope::All => true,
        Scope::NoStatus => first != "f:status",
        Scope::Status => first == "f:status" || first == "f:metadata",
        Scope::Finalize => {
            first == "f:metadata"
                || (first == "f:spec" && p.get(1).map(String::as_str) == Some("f:finalizers"))
        }
    }
}

/// [`flatten`] restricted to a scope.
pub fn flatten_scoped(kind: &str, obj: &Value, scope: Scope) -> BTreeMap<Path, Option<Value>> {
    let mut f = flatten(kind, obj);
    f.retain(|p, _| in_scope(scope, p));
    f
}

/// Flattens an object into owned paths → leaf value (`None` for list
/// items, which are owned as elements).
pub fn flatten(kind: &str, obj: &Value) -> BTreeMap<Path, Option<Value>> {
    let mut out = BTreeMap::new();
    let mut path = Vec::new();
    let mut names = Vec::new();
    if let Value::Object(m) = obj {
        walk_map(kind, m, &mut path, &mut names, &mut out);
    }
    out
}

fn walk_map<'a>(
    kind: &str,
    m: &'a Map<String, Value>,
    path: &mut Path,
    names: &mut Vec<&'a str>,
    out: &mut BTreeMap<Path, Option<Value>>,
) {
    for (k, v) in m {
        path.push(format!("f:{k}"));
        names.push(k.as_str());
        if !skip_top(path) {
            walk_value(kind, v, path, names, out);
        }
        names.pop();
        path.pop();
    }
}

fn walk_value<'a>(
    kind: &str,
    v: &'a Value,
    path: &mut Path,
    names: &mut Vec<&'a str>,
    out: &mut BTreeMap<Path, Option<Value>>,
) {
    match v {
        Value::Object(m) if !m.is_empty() => walk_map(kind, m, path, names, out),
        Value::Array(items) => match list_type(kind, names) {
            ListType::Atomic => {
                out.insert(path.clone(), Some(v.clone()));
            }
            ListType::Set => {
                if items.is_empty() {
                    out.insert(path.clone(), Some(v.clone()));
                }
                for it in items {
                    let mut p = path.clone();
                    p.push(format!("v:{it}"));
                    out.insert(p, None);
                }
            }
            ListType::Map(keys) => {
                if items.is_empty() {
                    out.insert(path.clone(), Some(v.clone()));
                }
                for it in items {
                    let Value::Object(im) = it else {
                        out.insert(path.clone(), Some(v.clone()));
                        continue;
                    };
                    path.push(key_token(im, keys));
                    out.insert(path.clone(), None);
                    walk_map(kind, im, path, names, out);
                    path.pop();
                }
            }
        },
        other => {
            out.insert(path.clone(), Some(other.clone()));
        }
    }
}

fn key_token(item: &Map<String, Value>, keys: &[&str]) -> String {
    let mut k = Map::new();
    for key in keys {
        if let Some(v) = item.get(*key) {
            k.insert((*key).to_string(), v.clone());
        }
    }
    format!("k:{}", Value::Object(k))
}

/// Converts a field set to the `fieldsV1` trie.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for p in set {
        let mut cur = &mut root;
        for (i, tok) in p.iter().enumerate() {
            let entry = cur.entry(tok.clone()).or_insert_with(|| json!({}));
            let last = i + 1 == p.len();
            let Value::Object(m) = entry else { break };
            if last && tok.starts_with("k:") {
                m.insert(".".into(), json!({}));
            }
            cur = m;
        }
    }
    Value::Object(root)
}

/// Parses a `fieldsV1` trie.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    let mut path = Vec::new();
    walk_trie(v, &mut path, &mut out);
    out
}

fn walk_trie(v: &Value, path: &mut Path, out: &mut FieldSet) {
    let Value::Object(m) = v else { return };
    if m.is_empty() && !path.is_empty() {
        out.insert(path.clone());
        return;
    }
    for (k, child) in m {
        if k == "." {
            out.insert(path.clone());
            continue;
        }
        path.push(k.clone());
        walk_trie(child, path, out);
        path.pop();
    }
}

/// Reads `metadata.managedFields`.
pub fn read_entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e.as_object().is_some_and(|m| !m.is_empty()))
                .map(|e| Entry {
                    manager: e["manager"].as_str().unwrap_or_default().to_string(),
                    operation: e["operation"].as_str().unwrap_or("Update").to_string(),
                    api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
                    time: e["time"].as_str().unwrap_or_default().to_string(),
                    subresource: e["subresource"].as_str().unwrap_or_default().to_string(),
                    fields: from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `metadata.managedFields` (omitted when empty).
pub fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if !e.manager.is_empty() {
                v["manager"] = json!(e.manager);
            }
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(m) = obj["metadata"].as_object_mut() {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn is_prefix(prefix: &[String], p: &[String]) -> bool {
    p.len() >= prefix.len() && &p[..prefix.len()] == prefix
}

/// Records an update (non-apply write) by `manager`: it takes the fields
/// that changed; removed fields leave every set.
#[allow(clippy::too_many_arguments)]
pub fn record_update(
    kind: &str,
    scope: Scope,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: &str,
    now: &str,
) {
    let mut entries = match old {
        Some(o) => {
            // the client may replace managedFields explicitly
            // (an empty list keeps them; `[{}]` resets them, as upstream)
            if new["metadata"]["managedFields"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                read_entries(new)
            } else {
                read_entries(o)
            }
        }
        None => read_entries(new),
    };
    let old_flat = old
        .map(|o| flatten_scoped(kind, o, scope))
        .unwrap_or_default();
    let new_flat = flatten_scoped(kind, new, scope);
    let changed: FieldSet = new_flat
        .iter()
        .filter(|(p, v)| old_flat.get(*p) != Some(*v))
        .map(|(p, _)| p.clone())
        .collect();
    let removed: FieldSet = old_flat
        .keys()
        .filter(|p| !new_flat.contains_key(*p))
        .cloned()
        .collect();
    for e in entries.iter_mut() {
        e.fields
            .retain(|p| !removed.contains(p) && !removed.iter().any(|r| is_prefix(r, p)));
        if !(e.manager == manager && e.operation == "Update" && e.subresource == subresource) {
            e.fields.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| {
            e.manager == manager && e.operation == "Update" && e.subresource == subresource
        }) {
            Some(e) => {
                e.fields.extend(changed);
                e.time = now.to_string();
                e.api_version = api_version.to_string();
            }
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: api_version.to_string(),
                time: now.to_string(),
                subresource: subresource.to_string(),
                fields: changed,
            }),
        }
    }
    write_entries(new, &entries);
}

/// The result of an apply: the merged object (managedFields set).
pub struct Applied {
    /// Merged object.
    pub object: Value,
}

/// Server-side apply of `config` onto `live` (or onto an empty object when
/// creating). `status_only` restricts the config to status (the `/status`
/// subresource); otherwise status is dropped for kinds with a status
/// subresource.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    kind: &str,
    scope: Scope,
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    api_version: &str,
    subresource: &str,
    force: bool,
    now: &str,
) -> Result<Applied, ApiError> {
    let empty = json!({});
    let live_v = live.unwrap_or(&empty);
    let mut entries = read_entries(live_v);
    let live_flat = flatten_scoped(kind, live_v, scope);
    let cfg_flat = flatten_scoped(kind, config, scope);
    let cfg_set: FieldSet = cfg_flat.keys().cloned().collect();

    // conflicts
    let mut conflicts: Vec<(String, String, Path)> = Vec::new();
    for (p, v) in &cfg_flat {
        let Some(v) = v else { continue };
        let differs = match live_flat.get(p) {
            Some(Some(lv)) => lv != v,
            Some(None) => false,
            None => false,
        };
        if !differs {
            continue;
        }
        for e in &entries {
            if e.manager == manager && e.subresource == subresource {
                continue;
            }
            if e.fields.contains(p) {
                conflicts.push((e.manager.clone(), e.api_version.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, av, p)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m:?} using {av}"), "field": display_path(p)})
            })
            .collect();
        let msg = if conflicts.len() == 1 {
            let (m, av, p) = &conflicts[0];
            format!(
                "Apply failed with 1 conflict: conflict with {m:?} using {av}: {}",
                display_path(p)
            )
        } else {
            let lines: Vec<String> = conflicts
                .iter()
                .map(|(m, av, p)| format!("conflict with {m:?} using {av}: {}", display_path(p)))
                .collect();
            format!(
                "Apply failed with {} conflicts: {}",
                conflicts.len(),
                lines.join("\n")
            )
        };
        return Err(ApiError {
            code: 409,
            reason: "Conflict",
            message: msg,
            details: Some(json!({"causes": causes})),
        });
    }
    if force {
        for e in entries.iter_mut() {
            if e.manager == manager && e.subresource == subresource {
                continue;
            }
            e.fields
                .retain(|p| !conflicts.iter().any(|(_, _, c)| c == p));
        }
    }

    // merge
    let mut merged = live_v.clone();
    let mut names = Vec::new();
    merge_into(kind, &mut merged, config, &mut names);

    // remove fields this manager dropped from its config
    let prev: FieldSet = entries
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply" && e.subresource == subresource)
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut dropped: Vec<&Path> = prev.iter().filter(|p| !cfg_set.contains(*p)).collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        let owned_by_other = entries.iter().any(|e| {
            !(e.manager == manager && e.operation == "Apply" && e.subresource == subresource)
                && e.fields.iter().any(|q| is_prefix(p, q))
        });
        let still_applied = cfg_set.iter().any(|q| is_prefix(p, q));
        if !owned_by_other && !still_applied {
            remove_path(kind, &mut merged, p);
        }
    }

    // ownership
    for e in entries.iter_mut() {
        if e.manager == manager && e.operation == "Apply" && e.subresource == subresource {
            e.fields = cfg_set.clone();
            e.time = now.to_string();
            e.api_version = api_version.to_string();
        }
    }
    if !entries
        .iter()
        .any(|e| e.manager == manager && e.operation == "Apply" && e.subresource == subresource)
    {
        entries.push(Entry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            subresource: subresource.to_string(),
            fields: cfg_set,
        });
    }
    write_entries(&mut merged, &entries);
    Ok(Applied { object: merged })
}

/// `.spec.replicas`, `.spec.containers[name="x"].image`.
pub fn display_path(p: &Path) -> String {
    let mut s = String::new();
    for t in p {
        if let Some(f) = t.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = t.strip_prefix("k:") {
            let v: Value = serde_json::from_str(k).unwrap_or(Value::Null);
            let parts: Vec<String> = v
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = t.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

/// Merges an applied configuration into an object: maps recursively,
/// keyed lists by key, set lists by union, everything else replaced.
fn merge_into<'a>(kind: &str, dst: &mut Value, src: &'a Value, names: &mut Vec<&'a str>) {
    let (Value::Object(d), Value::Object(s)) = (&mut *dst, src) else {
        *dst = src.clone();
        return;
    };
    for (k, sv) in s {
        names.push(k.as_str());
        if sv.is_null() {
            d.remove(k);
        } else {
            match (d.get_mut(k), sv) {
                (Some(dv @ Value::Object(_)), Value::Object(_)) => merge_into(kind, dv, sv, names),
                (Some(Value::Array(dl)), Value::Array(sl)) => match list_type(kind, names) {
                    ListType::Atomic => *dl = sl.clone(),
                    ListType::Set => {
                        for x in sl {
                            if !dl.contains(x) {
                                dl.push(x.clone());
                            }
                        }
                    }
                    ListType::Map(keys) => {
                        for item in sl {
                            let pos = dl
                                .iter()
                                .position(|x| keys.iter().all(|k| x.get(*k) == item.get(*k)));
                            match pos {
                                Some(p) => merge_into(kind, &mut dl[p], item, names),
                                None => dl.push(item.clone()),
                            }
                        }
                    }
                },
                _ => {
                    d.insert(k.clone(), sv.clone());
                }
            }
        }
        names.pop();
    }
}

fn remove_path(kind: &str, obj: &mut Value, p: &Path) {
    let _ = kind;
    let Some((last, parent)) = p.split_last() else {
        return;
    };
    let mut cur = obj;
    for t in parent {
        cur = match step(cur, t) {
            Some(c) => c,
            None => return,
        };
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        let key: Value = serde_json::from_str(k).unwrap_or(Value::Null);
        if let (Some(list), Some(km)) = (cur.as_array_mut(), key.as_object()) {
            list.retain(|x| !km.iter().all(|(kk, kv)| x.get(kk) == Some(kv)));
        }
    } else if let Some(v) = last.strip_prefix("v:") {
        let val: Value = serde_json::from_str(v).unwrap_or(Value::Null);
        if let Some(list) = cur.as_array_mut() {
            list.retain(|x| *x != val);
        }
    }
}

fn step<'a>(cur: &'a mut Value, t: &str) -> Option<&'a mut Value> {
    if let Some(f) = t.strip_prefix("f:") {
        cur.as_object_mut()?.get_mut(f)
    } else if let Some(k) = t.strip_prefix("k:") {
        let key: Value = serde_json::from_str(k).ok()?;
        let km = key.as_object()?.clone();
        cur.as_array_mut()?
            .iter_mut()
            .find(|x| km.iter().all(|(kk, kv)| x.get(kk) == Some(kv)))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_roundtrip() {
        let obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "labels": {"a": "b"}, "finalizers": ["f/x"]},
            "spec": {"containers": [{"name": "c", "image": "i", "args": ["1"]}]}});
        let flat = flatten("Pod", &obj);
        let set: FieldSet = flat.keys().cloned().collect();
        let back = from_fields_v1(&to_fields_v1(&set));
        assert_eq!(set, back);
        assert!(set.contains(&vec![
            "f:spec".to_string(),
            "f:containers".into(),
            "k:{\"name\":\"c\"}".into(),
            "f:args".into()
        ]));
    }

    #[test]
    fn apply_conflicts_and_removal() {
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        let a = apply(
            "Deployment",
            Scope::All,
            Some(&live),
            &json!({"metadata": {"name": "x"}, "spec": {"replicas": 2, "paused": true}}),
            "a",
            "apps/v1",
            "",
            false,
            "t",
        )
        .unwrap();
        // b changes replicas: conflict
        let err = apply(
            "Deployment",
            Scope::All,
            Some(&a.object),
            &json!({"spec": {"replicas": 3}}),
            "b",
            "apps/v1",
            "",
            false,
            "t",
        )
        .err()
        .unwrap();
        assert_eq!(err.code, 409);
        // b applies the same value: shared, no conflict
        let b = apply(
            "Deployment",
            Scope::All,
            Some(&a.object),
            &json!({"spec": {"replicas": 2}}),
            "b",
            "apps/v1",
            "",
            false,
            "t",
        )
        .unwrap();
        // a drops replicas and paused: paused removed, replicas kept (b owns it)
        let a2 = apply(
            "Deployment",
            Scope::All,
            Some(&b.object),
            &json!({"metadata": {"name": "x"}}),
            "a",
            "apps/v1",
            "",
            false,
            "t",
        )
        .unwrap();
        assert_eq!(a2.object["spec"]["replicas"], json!(2));
        assert!(a2.object["spec"].get("paused").is_none());
    }
}

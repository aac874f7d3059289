//! The `scale` subresource (`autoscaling/v1` `Scale`) of Deployments and
//! ReplicaSets, as the real registry's ScaleREST serves it: a view of the
//! parent (name, namespace, uid, resourceVersion, creationTimestamp,
//! `spec.replicas`, `status.replicas`, and `status.selector` as the label
//! selector's string form), and writes that change only the parent's
//! `spec.replicas`. This module holds the pure parts; the HTTP driver is in
//! [`crate::api`].

use crate::errors::{Cause, invalid_value};
use crate::resources::{ResourceDef, Storage};
use crate::table::{IncludeObject, partial_metadata};
use serde_json::{Map, Value, json};

/// Whether `def` has a `scale` subresource here (the real server also has one
/// for StatefulSets and ReplicationControllers, which are not stored).
pub fn has_scale(def: &ResourceDef) -> bool {
    def.group == "apps" && matches!(def.storage, Storage::Deployments | Storage::ReplicaSets)
}

/// `metav1.LabelSelectorAsSelector(sel).String()`: requirements sorted by key,
/// `k=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, values sorted, joined by
/// commas. A missing or empty selector is "".
pub fn selector_string(sel: &Value) -> Result<String, String> {
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = sel["matchLabels"].as_object() {
        for (k, v) in m {
            let v = v
                .as_str()
                .ok_or_else(|| format!("matchLabels[{k}] is not a string"))?;
            reqs.push((k.clone(), format!("{k}={v}")));
        }
    }
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or_default();
        let mut values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let text = match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            op => return Err(format!("{op:?} is not a valid label selector operator")),
        };
        reqs.push((key.to_string(), text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(reqs
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(","))
}

/// The `autoscaling/v1` `Scale` view of a stored Deployment or ReplicaSet.
pub fn scale_of(obj: &Value) -> Result<Value, String> {
    let mut meta = Map::new();
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = obj["metadata"].get(k).filter(|v| !v.is_null()) {
            meta.insert(k.to_string(), v.clone());
        }
    }
    let mut spec = json!({});
    // ScaleSpec.replicas is `omitempty`: zero is not shown
    if let Some(r) = obj["spec"]["replicas"].as_i64().filter(|r| *r != 0) {
        spec["replicas"] = json!(r);
    }
    let mut status = json!({"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0)});
    let selector = selector_string(&obj["spec"]["selector"])?;
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": spec,
        "status": status,
    }))
}

/// The server-side `Table` of a Scale (`kubectl get deploy d1
/// --subresource=scale`): the real printer's Name, Desired, Available.
pub fn scale_table(scale: &Value, include: IncludeObject) -> Value {
    let col = |name: &str, ty: &str, format: &str, description: &str| json!({"name": name, "type": ty, "format": format, "description": description, "priority": 0});
    let mut row = json!({"cells": [
        scale["metadata"]["name"],
        scale["spec"]["replicas"].as_i64().unwrap_or(0),
        scale["status"]["replicas"].as_i64().unwrap_or(0),
    ]});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => row["object"] = partial_metadata(scale),
        IncludeObject::Object => row["object"] = scale.clone(),
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": scale["metadata"]["resourceVersion"]},
        "columnDefinitions": [
            col("Name", "string", "name", "Name must be unique within a namespace."),
            col("Desired", "integer", "", "replicas is the desired number of instances for the scaled object."),
            col("Available", "integer", "", "replicas is the actual number of observed instances of the scaled object."),
        ],
        "rows": [row],
    })
}

/// `spec.replicas` of a Scale written by a client, checked as the real
/// ValidateScale does (a missing value is 0).
pub fn requested_replicas(scale: &Value) -> Result<i64, Vec<Cause>> {
    let r = &scale["spec"]["replicas"];
    let n = match r {
        Value::Null => 0,
        v => v
            .as_i64()
            .ok_or_else(|| vec![invalid_value("spec.replicas", v, "must be an integer")])?,
    };
    if n < 0 {
        return Err(vec![invalid_value(
            "spec.replicas",
            r,
            "must be greater than or equal to 0",
        )]);
    }
    if n > i64::from(i32::MAX) {
        return Err(vec![invalid_value("spec.replicas", r, "must be an int32")]);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_strings() {
        let cases = [
            (json!(null), ""),
            (json!({}), ""),
            (json!({"matchLabels": {"app": "d1"}}), "app=d1"),
            (
                json!({"matchLabels": {"tier": "fe", "app": "d1"}}),
                "app=d1,tier=fe",
            ),
            (
                json!({"matchExpressions": [
                    {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                    {"key": "zone", "operator": "NotIn", "values": ["b", "a"]},
                    {"key": "canary", "operator": "DoesNotExist"},
                    {"key": "app", "operator": "Exists"}
                ]}),
                "app,!canary,env in (dev,prod),zone notin (a,b)",
            ),
            (
                json!({"matchLabels": {"b": "1"},
                       "matchExpressions": [{"key": "a", "operator": "In", "values": ["x"]}]}),
                "a in (x),b=1",
            ),
        ];
        for (sel, want) in cases {
            assert_eq!(selector_string(&sel).as_deref(), Ok(want), "{sel}");
        }
        assert!(
            selector_string(&json!({"matchExpressions": [{"key": "a", "operator": "Near"}]}))
                .is_err()
        );
    }

    #[test]
    fn scale_view() {
        let d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d1", "namespace": "ns", "uid": "u1", "resourceVersion": "1007",
                         "creationTimestamp": "2025-01-01T00:00:00Z", "generation": 3,
                         "labels": {"app": "d1"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "d1"}}},
            "status": {"replicas": 2, "readyReplicas": 1}
        });
        assert_eq!(
            scale_of(&d).unwrap(),
            json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
                   "metadata": {"name": "d1", "namespace": "ns", "uid": "u1",
                                "resourceVersion": "1007",
                                "creationTimestamp": "2025-01-01T00:00:00Z"},
                   "spec": {"replicas": 3},
                   "status": {"replicas": 2, "selector": "app=d1"}})
        );
        let zero = json!({"metadata": {"name": "d0"}, "spec": {"replicas": 0}});
        assert_eq!(
            scale_of(&zero).unwrap(),
            json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": "d0"},
                   "spec": {}, "status": {"replicas": 0}})
        );
    }

    #[test]
    fn table() {
        let s = json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
                       "metadata": {"name": "d1", "resourceVersion": "9"},
                       "spec": {"replicas": 3}, "status": {"replicas": 1}});
        let t = scale_table(&s, IncludeObject::Metadata);
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["Name", "Desired", "Available"]);
        assert_eq!(t["rows"][0]["cells"], json!(["d1", 3, 1]));
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["metadata"]["resourceVersion"], "9");
        let zero = json!({"metadata": {"name": "d0"}, "spec": {}, "status": {"replicas": 0}});
        let t = scale_table(&zero, IncludeObject::None);
        assert_eq!(t["rows"][0], json!({"cells": ["d0", 0, 0]}));
    }

    #[test]
    fn replicas_validation() {
        let r = |v: Value| requested_replicas(&json!({"spec": {"replicas": v}}));
        assert_eq!(r(json!(3)).unwrap(), 3);
        assert_eq!(r(json!(0)).unwrap(), 0);
        assert_eq!(requested_replicas(&json!({"spec": {}})).unwrap(), 0);
        let e = r(json!(-1)).unwrap_err();
        assert_eq!(
            (e[0].field.as_str(), e[0].message.as_str()),
            (
                "spec.replicas",
                "Invalid value: -1: must be greater than or equal to 0"
            )
        );
        assert!(r(json!("3")).is_err());
        assert!(r(json!(1_i64 << 40)).is_err());
    }
}

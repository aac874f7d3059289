//! Patch types and server-side apply.

use crate::common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

pub async fn merge_patch(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    pods.create(
        &PostParams::default(),
        &pod("mp", json!({"a": "1", "b": "2"}), None),
    )
    .await
    .unwrap();
    let p = pods
        .patch(
            "mp",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"a": null, "c": "3"}, "annotations": {"x": "y"}}}),
            ),
        )
        .await
        .unwrap();
    let labels = p.metadata.labels.unwrap();
    assert!(!labels.contains_key("a"));
    assert_eq!(labels["b"], "2");
    assert_eq!(labels["c"], "3");
    assert_eq!(p.metadata.annotations.unwrap()["x"], "y");
    // merge patch replaces lists whole
    let p = pods
        .patch(
            "mp",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/a", "example.com/b"]}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.finalizers.unwrap().len(), 2);
    let p = pods
        .patch(
            "mp",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/b"]}})),
        )
        .await
        .unwrap();
    assert_eq!(
        p.metadata.finalizers.unwrap(),
        vec!["example.com/b".to_string()]
    );
    pods.patch(
        "mp",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
}

pub async fn json_patch(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    pods.create(&PostParams::default(), &pod("jp", json!({"a": "1"}), None))
        .await
        .unwrap();
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/metadata/labels/b", "value": "2"},
        {"op": "replace", "path": "/metadata/labels/a", "value": "10"},
        {"op": "test", "path": "/metadata/labels/b", "value": "2"}
    ]))
    .unwrap();
    let p = pods
        .patch("jp", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    let labels = p.metadata.labels.unwrap();
    assert_eq!((labels["a"].as_str(), labels["b"].as_str()), ("10", "2"));
    // a failing test op is rejected and changes nothing
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/metadata/labels/a", "value": "11"},
        {"op": "test", "path": "/metadata/labels/b", "value": "nope"}
    ]))
    .unwrap();
    let s = status(
        pods.patch("jp", &PatchParams::default(), &Patch::<()>::Json(ops))
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 422, "{s:?}");
    assert_eq!(
        pods.get("jp").await.unwrap().metadata.labels.unwrap()["a"],
        "10"
    );
    // removing a missing path fails too
    let ops: json_patch::Patch =
        serde_json::from_value(json!([{"op": "remove", "path": "/metadata/labels/zzz"}])).unwrap();
    let s = status(
        pods.patch("jp", &PatchParams::default(), &Patch::<()>::Json(ops))
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 422, "{s:?}");
}

fn cond(t: &str, s: &str) -> Value {
    json!({"type": t, "status": s, "lastTransitionTime": "2025-01-01T00:00:00Z"})
}

pub async fn strategic_merge_conditions(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    pods.create(&PostParams::default(), &pod("smp", json!({}), None))
        .await
        .unwrap();
    let sp = |v: Value| Patch::Strategic(v);
    pods.patch_status("smp", &PatchParams::default(), &sp(json!({"status": {"conditions": [cond("Initialized", "True"), cond("Ready", "False")]}})))
        .await
        .unwrap();
    // conditions merge by type: Ready is replaced in place, a new type is appended
    let p = pods
        .patch_status("smp", &PatchParams::default(), &sp(json!({"status": {"conditions": [cond("Ready", "True"), cond("ContainersReady", "True")]}})))
        .await
        .unwrap();
    let conds = p.status.unwrap().conditions.unwrap();
    let got: Vec<(String, String)> = conds
        .iter()
        .map(|c| (c.type_.clone(), c.status.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("Initialized".into(), "True".into()),
            ("Ready".into(), "True".into()),
            ("ContainersReady".into(), "True".into())
        ]
    );
    // $patch: delete removes one condition by key
    let p = pods
        .patch_status(
            "smp",
            &PatchParams::default(),
            &sp(json!({"status": {"conditions": [{"type": "Initialized", "$patch": "delete"}]}})),
        )
        .await
        .unwrap();
    assert_eq!(p.status.unwrap().conditions.unwrap().len(), 2);
    // containerStatuses have no merge key in the real API: replaced whole
    let cs = |name: &str, ready: bool| json!({"name": name, "ready": ready, "restartCount": 0, "image": "i", "imageID": "", "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}});
    pods.patch_status(
        "smp",
        &PatchParams::default(),
        &sp(json!({"status": {"containerStatuses": [cs("main", false), cs("side", false)]}})),
    )
    .await
    .unwrap();
    let p = pods
        .patch_status(
            "smp",
            &PatchParams::default(),
            &sp(json!({"status": {"containerStatuses": [cs("main", true)]}})),
        )
        .await
        .unwrap();
    let statuses = p.status.unwrap().container_statuses.unwrap();
    assert_eq!(statuses.len(), 1);
    assert!(statuses[0].ready);
    // node addresses merge by type
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let name = ctx.unique("smp-node");
    let n: Node = obj(
        json!({"metadata": {"name": name}, "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "h"}]}}),
    );
    nodes.create(&PostParams::default(), &n).await.unwrap();
    let n = nodes
        .patch_status(
            &name,
            &PatchParams::default(),
            &sp(json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}})),
        )
        .await
        .unwrap();
    let addrs = n.status.unwrap().addresses.unwrap();
    assert_eq!(addrs.len(), 2);
    assert_eq!(addrs[0].address, "10.0.0.2");
    nodes.delete(&name, &DeleteParams::default()).await.unwrap();
}

pub async fn strategic_merge_lists_and_directives(ctx: Ctx) {
    let deps: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    deps.create(&PostParams::default(), &super::core::deployment("smp", 1))
        .await
        .unwrap();
    // containers merge by name; env by name
    let d = deps
        .patch(
            "smp",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "c", "env": [{"name": "A", "value": "1"}]},
                {"name": "sidecar", "image": "busybox:1.36"}
            ]}}}})),
        )
        .await
        .unwrap();
    let cs = d.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(cs.len(), 2);
    assert_eq!(
        cs[0].image.as_deref(),
        Some("nginx:1.25"),
        "merged into the existing container"
    );
    assert_eq!(cs[0].env.as_ref().unwrap()[0].name, "A");
    // $setElementOrder reorders; $patch: replace on a list replaces it
    let d = deps
        .patch(
            "smp",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "c"}],
                "containers": [{"name": "c", "image": "nginx:1.26"}]
            }}}})),
        )
        .await
        .unwrap();
    let cs = d.spec.unwrap().template.spec.unwrap().containers;
    let names: Vec<&str> = cs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["sidecar", "c"]);
    assert_eq!(cs[1].image.as_deref(), Some("nginx:1.26"));
    let d = deps
        .patch(
            "smp",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "c", "image": "nginx:1.27"}, {"$patch": "replace"}
            ]}}}})),
        )
        .await
        .unwrap();
    let cs = d.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(cs.len(), 1);
    // finalizers merge as a set; $deleteFromPrimitiveList removes
    let p = deps
        .patch(
            "smp",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"finalizers": ["example.com/a"]}})),
        )
        .await
        .unwrap();
    assert_eq!(
        p.metadata.finalizers.unwrap(),
        vec!["example.com/a".to_string()]
    );
    let p = deps
        .patch(
            "smp",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"finalizers": ["example.com/b"]}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.finalizers.unwrap().len(), 2);
    let p = deps
        .patch(
            "smp",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/a", "example.com/b"]}})),
        )
        .await
        .unwrap();
    assert!(p.metadata.finalizers.unwrap_or_default().is_empty());
}

pub async fn patch_with_stale_resource_version(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let created = pods
        .create(&PostParams::default(), &pod("prv", json!({}), None))
        .await
        .unwrap();
    pods.patch(
        "prv",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"a": "1"}}})),
    )
    .await
    .unwrap();
    let stale = created.metadata.resource_version.unwrap();
    expect_err(
        pods.patch(
            "prv",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": stale, "labels": {"a": "2"}}})),
        )
        .await,
        409,
        "Conflict",
    );
    let current = pods
        .get("prv")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    pods.patch(
        "prv",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"resourceVersion": current, "labels": {"a": "3"}}})),
    )
    .await
    .unwrap();
}

pub async fn unsupported_patch_content_type(ctx: Ctx) {
    pods_created(&ctx, "ct").await;
    let req = http::Request::patch(format!("/api/v1/namespaces/{}/pods/ct", ctx.ns))
        .header("content-type", "text/plain")
        .body(b"{}".to_vec())
        .unwrap();
    let s = status(ctx.client.request_text(req).await.unwrap_err());
    assert_eq!(s.code, 415, "{s:?}");
}

async fn pods_created(ctx: &Ctx, name: &str) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    pods.create(&PostParams::default(), &pod(name, json!({}), None))
        .await
        .unwrap();
}

fn managers(d: &Deployment) -> Vec<(String, String)> {
    d.metadata
        .managed_fields
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            (
                m.manager.unwrap_or_default(),
                m.operation.unwrap_or_default(),
            )
        })
        .collect()
}

pub async fn server_side_apply_ownership(ctx: Ctx) {
    let deps: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let cfg = |replicas: Option<i32>, label: Option<&str>| {
        let mut v = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "ssa"},
            "spec": {
                "selector": {"matchLabels": {"app": "ssa"}},
                "template": {"metadata": {"labels": {"app": "ssa"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}}
            }
        });
        if let Some(r) = replicas {
            v["spec"]["replicas"] = json!(r);
        }
        if let Some(l) = label {
            v["metadata"]["labels"] = json!({"owned-by-a": l});
        }
        v
    };
    // apply creates
    let d = deps
        .patch(
            "ssa",
            &PatchParams::apply("manager-a"),
            &Patch::Apply(cfg(Some(2), Some("x"))),
        )
        .await
        .unwrap();
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2));
    assert!(managers(&d).contains(&("manager-a".into(), "Apply".into())));
    // re-applying the same configuration is not a write
    let again = deps
        .patch(
            "ssa",
            &PatchParams::apply("manager-a"),
            &Patch::Apply(cfg(Some(2), Some("x"))),
        )
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, d.metadata.resource_version);
    let mf = d
        .metadata
        .managed_fields
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.manager.as_deref() == Some("manager-a"))
        .unwrap();
    let fields = serde_json::to_value(&mf.fields_v1).unwrap();
    assert!(!fields["f:spec"]["f:replicas"].is_null(), "{fields}");
    // another manager changing an owned field conflicts
    let other = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ssa"}, "spec": {"replicas": 5}});
    let s = expect_err(
        deps.patch(
            "ssa",
            &PatchParams::apply("manager-b"),
            &Patch::Apply(other.clone()),
        )
        .await,
        409,
        "Conflict",
    );
    assert!(s.message.contains("manager-a"), "{}", s.message);
    assert!(s.message.contains(".spec.replicas"), "{}", s.message);
    // force takes ownership
    let d = deps
        .patch(
            "ssa",
            &PatchParams::apply("manager-b").force(),
            &Patch::Apply(other),
        )
        .await
        .unwrap();
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(5));
    // manager-a drops replicas (no longer owns it) and the label: the label is
    // removed, replicas stays (manager-b owns it)
    let d = deps
        .patch(
            "ssa",
            &PatchParams::apply("manager-a"),
            &Patch::Apply(cfg(None, None)),
        )
        .await
        .unwrap();
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(5));
    assert!(
        !d.metadata
            .labels
            .unwrap_or_default()
            .contains_key("owned-by-a")
    );
    // an update (non-apply) takes ownership without conflict
    let d = deps
        .patch(
            "ssa",
            &PatchParams {
                field_manager: Some("updater".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"replicas": 7}})),
        )
        .await
        .unwrap();
    assert!(managers(&d).contains(&("updater".into(), "Update".into())));
    // apply without a field manager is rejected
    let req = http::Request::patch(format!(
        "/apis/apps/v1/namespaces/{}/deployments/ssa",
        ctx.ns
    ))
    .header("content-type", "application/apply-patch+yaml")
    .body(b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ssa\n".to_vec())
    .unwrap();
    let s = status(ctx.client.request_text(req).await.unwrap_err());
    assert_eq!(s.code, 422, "{s:?}");
    // YAML bodies are accepted
    let req = http::Request::patch(format!("/apis/apps/v1/namespaces/{}/deployments/ssa?fieldManager=yaml-applier", ctx.ns))
        .header("content-type", "application/apply-patch+yaml")
        .body(b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ssa\n  annotations:\n    from: yaml\n".to_vec())
        .unwrap();
    let text = ctx.client.request_text(req).await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["metadata"]["annotations"]["from"], "yaml");
}

pub async fn server_side_apply_status(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    pods.create(&PostParams::default(), &pod("ssast", json!({}), None))
        .await
        .unwrap();
    let cfg = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ssast"},
        "status": {"phase": "Running", "conditions": [cond("Ready", "True")]}});
    let p = pods
        .patch_status(
            "ssast",
            &PatchParams::apply("vnode-kubelet"),
            &Patch::Apply(cfg),
        )
        .await
        .unwrap();
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    let entry = p
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("vnode-kubelet"))
        .expect("status apply recorded");
    assert_eq!(entry.subresource.as_deref(), Some("status"));
    // applying status to the main resource is ignored for the status part
    let cfg = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ssast", "labels": {"l": "v"}}, "status": {"phase": "Failed"}});
    let p = pods
        .patch("ssast", &PatchParams::apply("other"), &Patch::Apply(cfg))
        .await
        .unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(p.metadata.labels.unwrap()["l"], "v");
}

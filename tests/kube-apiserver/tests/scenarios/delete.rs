//! Deletion: finalizers, grace periods, preconditions, propagation,
//! deletecollection, namespace termination.

use crate::common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
};
use serde_json::json;
use std::time::Duration;

pub async fn finalizers_block_deletion(ctx: Ctx) {
    let deps: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let mut d = super::core::deployment("fin", 1);
    d.metadata.finalizers = Some(vec!["example.com/keep".into()]);
    deps.create(&PostParams::default(), &d).await.unwrap();
    let res = deps.delete("fin", &DeleteParams::default()).await.unwrap();
    let pending = res
        .left()
        .expect("the object is returned while finalizers remain");
    assert!(pending.metadata.deletion_timestamp.is_some());
    let got = deps.get("fin").await.unwrap();
    assert!(got.metadata.deletion_timestamp.is_some());
    assert_eq!(got.metadata.deletion_grace_period_seconds, Some(0));
    // no new finalizers while deleting
    let s = expect_err(
        deps.patch(
            "fin",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["example.com/keep", "example.com/new"]}}),
            ),
        )
        .await,
        422,
        "Invalid",
    );
    assert!(s.message.contains("no new finalizers"), "{}", s.message);
    // other updates still work
    deps.patch(
        "fin",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"still": "here"}}})),
    )
    .await
    .unwrap();
    // deleting again is accepted and changes nothing
    deps.delete("fin", &DeleteParams::default()).await.unwrap();
    // removing the last finalizer deletes it
    deps.patch(
        "fin",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(deps.get_opt("fin").await.unwrap().is_none());
}

pub async fn graceful_pod_deletion(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let node = ctx.unique("grace-node");
    pods.create(&PostParams::default(), &pod("g", json!({}), Some(&node)))
        .await
        .unwrap();
    let res = pods.delete("g", &DeleteParams::default()).await.unwrap();
    let p = res.left().expect("a bound pod is returned, not deleted");
    assert!(p.metadata.deletion_timestamp.is_some());
    assert_eq!(
        p.metadata.deletion_grace_period_seconds,
        Some(30),
        "defaults to terminationGracePeriodSeconds"
    );
    // still there, waiting for the kubelet
    let p = pods.get("g").await.unwrap();
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
    // a shorter grace period shortens it
    let p = pods
        .delete(
            "g",
            &DeleteParams {
                grace_period_seconds: Some(5),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(5));
    // the kubelet's final delete (grace 0) removes it
    pods.delete(
        "g",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(10), || async {
        pods.get_opt("g").await.unwrap().is_none().then_some(())
    })
    .await;

    // a bound pod with a finalizer: grace 0 leaves it until the finalizer goes
    let mut p = pod("gf", json!({}), Some(&node));
    p.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    pods.create(&PostParams::default(), &p).await.unwrap();
    pods.delete(
        "gf",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let p = pods.get("gf").await.unwrap();
    assert!(p.metadata.deletion_timestamp.is_some());
    pods.patch(
        "gf",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(10), || async {
        pods.get_opt("gf").await.unwrap().is_none().then_some(())
    })
    .await;
}

pub async fn unbound_pod_deleted_at_once(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    pods.create(&PostParams::default(), &pod("u", json!({}), None))
        .await
        .unwrap();
    pods.delete("u", &DeleteParams::default()).await.unwrap();
    assert!(pods.get_opt("u").await.unwrap().is_none());
    // other kinds answer a delete with a Status
    let deps: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    deps.create(&PostParams::default(), &super::core::deployment("st", 1))
        .await
        .unwrap();
    let res = deps.delete("st", &DeleteParams::default()).await.unwrap();
    let s = res.right().expect("deployments answer with a Status");
    assert!(s.is_success());
    assert_eq!(s.details.unwrap().name, "st");
}

pub async fn delete_preconditions(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let p = pods
        .create(&PostParams::default(), &pod("pre", json!({}), None))
        .await
        .unwrap();
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("00000000-0000-0000-0000-000000000000".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let s = expect_err(pods.delete("pre", &dp).await, 409, "Conflict");
    assert!(
        s.message
            .contains("Precondition failed: UID in precondition"),
        "{}",
        s.message
    );
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: p.metadata.uid.clone(),
            resource_version: p.metadata.resource_version.clone(),
        }),
        ..Default::default()
    };
    pods.delete("pre", &dp).await.unwrap();
    assert!(pods.get_opt("pre").await.unwrap().is_none());
}

pub async fn propagation_policy_finalizers(ctx: Ctx) {
    let deps: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    deps.create(&PostParams::default(), &super::core::deployment("orph", 1))
        .await
        .unwrap();
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    let d = deps
        .delete("orph", &dp)
        .await
        .unwrap()
        .left()
        .expect("kept for the garbage collector");
    assert!(
        d.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"orphan".to_string())
    );
    assert!(d.metadata.deletion_timestamp.is_some());
    // (a real cluster's garbage collector removes the finalizer; the test
    // server has none, so do it here when it is still there)
    if let Some(cur) = deps.get_opt("orph").await.unwrap()
        && cur
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"orphan".to_string())
    {
        let _ = deps
            .patch(
                "orph",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await;
    }
    eventually(Duration::from_secs(30), || async {
        deps.get_opt("orph").await.unwrap().is_none().then_some(())
    })
    .await;

    deps.create(&PostParams::default(), &super::core::deployment("fg", 1))
        .await
        .unwrap();
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    let d = deps
        .delete("fg", &dp)
        .await
        .unwrap()
        .left()
        .expect("kept for the garbage collector");
    assert!(
        d.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"foregroundDeletion".to_string())
    );
    if let Some(cur) = deps.get_opt("fg").await.unwrap()
        && !cur.metadata.finalizers.unwrap_or_default().is_empty()
    {
        let _ = deps
            .patch(
                "fg",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await;
    }
    eventually(Duration::from_secs(30), || async {
        deps.get_opt("fg").await.unwrap().is_none().then_some(())
    })
    .await;
    // an unknown policy is invalid
    let req = http::Request::delete(format!(
        "/apis/apps/v1/namespaces/{}/deployments/fg",
        ctx.ns
    ))
    .header("content-type", "application/json")
    .body(br#"{"propagationPolicy":"Sideways"}"#.to_vec())
    .unwrap();
    let s = status(ctx.client.request_text(req).await.unwrap_err());
    assert!(s.code == 422 || s.code == 400, "{s:?}");
}

pub async fn delete_collection(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    for (n, l) in [("dc1", "a"), ("dc2", "a"), ("dc3", "b")] {
        pods.create(&PostParams::default(), &pod(n, json!({"grp": l}), None))
            .await
            .unwrap();
    }
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("grp=a"),
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(10), || async {
        let left: Vec<String> = pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect();
        (left == vec!["dc3".to_string()]).then_some(())
    })
    .await;
}

pub async fn namespace_termination(ctx: Ctx) {
    let nss: Api<Namespace> = Api::all(ctx.client.clone());
    let name = format!("{}-t", ctx.ns);
    let ns = nss
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": name}})),
        )
        .await
        .unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
    assert_eq!(
        ns.spec.unwrap().finalizers.unwrap(),
        vec!["kubernetes".to_string()]
    );
    assert_eq!(
        ns.metadata.labels.unwrap()["kubernetes.io/metadata.name"],
        name
    );
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &name);
    let mut p = pod("held", json!({}), None);
    p.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    pods.create(&PostParams::default(), &p).await.unwrap();
    nss.delete(&name, &DeleteParams::default()).await.unwrap();
    let ns = nss.get(&name).await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    // no new content in a terminating namespace
    let s = expect_err(
        pods.create(&PostParams::default(), &pod("late", json!({}), None))
            .await,
        403,
        "Forbidden",
    );
    assert!(
        s.message.contains("because it is being terminated"),
        "{}",
        s.message
    );
    // the held pod is marked for deletion; releasing it lets the namespace go
    let held = eventually(Duration::from_secs(30), || async {
        pods.get("held")
            .await
            .ok()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
    })
    .await;
    assert!(held.metadata.deletion_timestamp.is_some());
    pods.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(60), || async {
        nss.get_opt(&name).await.unwrap().is_none().then_some(())
    })
    .await;
    // the built-in namespaces cannot be deleted
    expect_err(
        nss.delete("default", &DeleteParams::default()).await,
        403,
        "Forbidden",
    );
}

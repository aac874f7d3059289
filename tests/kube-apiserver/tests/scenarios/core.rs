//! CRUD, concurrency, selectors, pagination, status isolation, validation.

use crate::common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Node, Pod, Service};
use k8s_openapi::api::events::v1::Event as EventV1;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ObjectMeta, PartialObjectMeta};
use serde_json::json;
use std::collections::BTreeSet;
use std::ops::Not;

pub async fn create_sets_system_fields(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let mut p = pod("sys", json!({"app": "x"}), None);
    p.metadata.uid = Some("client-chosen".into());
    let created = pods.create(&PostParams::default(), &p).await.unwrap();
    let m = &created.metadata;
    assert_ne!(
        m.uid.as_deref(),
        Some("client-chosen"),
        "uid is set by the server"
    );
    assert!(m.uid.as_deref().is_some_and(|u| u.len() >= 32));
    assert!(m.creation_timestamp.is_some());
    assert!(m.resource_version.is_some());
    assert_eq!(m.namespace.as_deref(), Some(ctx.ns.as_str()));
    // create resets pod status and defaults the spec
    let st = created.status.as_ref().unwrap();
    assert_eq!(st.phase.as_deref(), Some("Pending"));
    let spec = created.spec.as_ref().unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.termination_grace_period_seconds, Some(30));
    assert_eq!(
        spec.containers[0].image_pull_policy.as_deref(),
        Some("IfNotPresent")
    );
    let got = pods.get("sys").await.unwrap();
    assert_eq!(got.metadata.uid, m.uid);
    assert_eq!(got.metadata.resource_version, m.resource_version);
    let list = pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(
        list.metadata
            .resource_version
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= rv_of(&created)
    );
}

pub async fn already_exists_is_409(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    pods.create(&PostParams::default(), &pod("dup", json!({}), None))
        .await
        .unwrap();
    let s = expect_err(
        pods.create(&PostParams::default(), &pod("dup", json!({}), None))
            .await,
        409,
        "AlreadyExists",
    );
    assert_eq!(s.message, "pods \"dup\" already exists");
    let d = s.details.unwrap();
    assert_eq!((d.name.as_str(), d.kind.as_str()), ("dup", "pods"));
}

pub async fn not_found_is_404_status(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let s = expect_err(pods.get("nope").await, 404, "NotFound");
    assert_eq!(s.message, "pods \"nope\" not found");
    assert!(s.is_failure());
    let deps: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let s = expect_err(deps.get("nope").await, 404, "NotFound");
    assert_eq!(s.message, "deployments.apps \"nope\" not found");
    assert_eq!(s.details.unwrap().group, "apps");
    expect_err(
        pods.delete("nope", &DeleteParams::default()).await,
        404,
        "NotFound",
    );
    expect_err(
        pods.patch("nope", &PatchParams::default(), &Patch::Merge(json!({})))
            .await,
        404,
        "NotFound",
    );
    assert!(pods.get_opt("nope").await.unwrap().is_none());
}

pub async fn generate_name(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let p: Pod = obj(
        json!({"metadata": {"generateName": "gen-"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    );
    let a = pods.create(&PostParams::default(), &p).await.unwrap();
    let b = pods.create(&PostParams::default(), &p).await.unwrap();
    let (na, nb) = (a.metadata.name.unwrap(), b.metadata.name.unwrap());
    assert!(
        na.starts_with("gen-") && na.len() == "gen-".len() + 5,
        "{na}"
    );
    assert_ne!(na, nb);
    assert_eq!(a.metadata.generate_name.as_deref(), Some("gen-"));
    // neither name nor generateName: invalid
    let p: Pod =
        obj(json!({"metadata": {}, "spec": {"containers": [{"name": "c", "image": "i"}]}}));
    expect_err(
        pods.create(&PostParams::default(), &p).await,
        422,
        "Invalid",
    );
}

pub async fn stale_update_conflicts(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let created = pods
        .create(&PostParams::default(), &pod("occ", json!({"v": "1"}), None))
        .await
        .unwrap();
    let mut a = created.clone();
    a.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("v".into(), "2".into());
    let updated = pods
        .replace("occ", &PostParams::default(), &a)
        .await
        .unwrap();
    assert!(rv_of(&updated) > rv_of(&created));
    // the second writer still holds the first version
    let mut b = created.clone();
    b.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("v".into(), "3".into());
    let s = expect_err(
        pods.replace("occ", &PostParams::default(), &b).await,
        409,
        "Conflict",
    );
    assert!(
        s.message.contains("the object has been modified; please apply your changes to the latest version and try again"),
        "{}",
        s.message
    );
    // an update without resourceVersion is unconditional for pods
    let mut c = updated.clone();
    c.metadata.resource_version = None;
    c.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("v".into(), "4".into());
    let forced = pods
        .replace("occ", &PostParams::default(), &c)
        .await
        .unwrap();
    assert_eq!(forced.metadata.labels.unwrap()["v"], "4");
}

pub async fn resource_version_increases(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let mut last = 0;
    for i in 0..5 {
        let p = pods
            .create(
                &PostParams::default(),
                &pod(&format!("rv{i}"), json!({}), None),
            )
            .await
            .unwrap();
        assert!(rv_of(&p) > last);
        last = rv_of(&p);
        let p = pods
            .patch(
                &format!("rv{i}"),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"i": i.to_string()}}})),
            )
            .await
            .unwrap();
        assert!(rv_of(&p) > last);
        last = rv_of(&p);
    }
    let list = pods.list(&ListParams::default()).await.unwrap();
    assert!(
        list.metadata
            .resource_version
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= last
    );
}

pub async fn noop_update_keeps_resource_version(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let created = pods
        .create(
            &PostParams::default(),
            &pod("noop", json!({"a": "b"}), None),
        )
        .await
        .unwrap();
    let again = pods
        .replace("noop", &PostParams::default(), &created)
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        created.metadata.resource_version
    );
    let patched = pods
        .patch(
            "noop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.metadata.resource_version,
        created.metadata.resource_version
    );
}

async fn names(pods: &Api<Pod>, lp: &ListParams) -> BTreeSet<String> {
    pods.list(lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub async fn label_selectors(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    for (n, l) in [
        ("a", json!({"app": "web", "tier": "fe"})),
        ("b", json!({"app": "web", "tier": "be"})),
        ("c", json!({"app": "db"})),
        ("d", json!({})),
    ] {
        pods.create(&PostParams::default(), &pod(n, l, None))
            .await
            .unwrap();
    }
    let q = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(&pods, &q("app=web")).await, set(&["a", "b"]));
    assert_eq!(names(&pods, &q("app==web")).await, set(&["a", "b"]));
    // != matches objects without the label
    assert_eq!(names(&pods, &q("app!=web")).await, set(&["c", "d"]));
    assert_eq!(names(&pods, &q("tier in (fe,be)")).await, set(&["a", "b"]));
    assert_eq!(
        names(&pods, &q("tier notin (fe)")).await,
        set(&["b", "c", "d"])
    );
    assert_eq!(names(&pods, &q("tier")).await, set(&["a", "b"]));
    assert_eq!(names(&pods, &q("!tier")).await, set(&["c", "d"]));
    assert_eq!(names(&pods, &q("app=web,tier=be")).await, set(&["b"]));
    assert_eq!(names(&pods, &q("app=none")).await, set(&[]));
    assert_eq!(
        names(&pods, &q("app in (web, db),!tier")).await,
        set(&["c"])
    );
}

pub async fn invalid_selectors_are_400(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    for bad in ["app in ()", "a=b,", "=x", "app in (a", "a b"] {
        let s = expect_err(
            pods.list(&ListParams::default().labels(bad)).await,
            400,
            "BadRequest",
        );
        assert!(!s.message.is_empty(), "{bad}");
    }
    let s = expect_err(
        pods.list(&ListParams::default().fields("spec.unknownField=x"))
            .await,
        400,
        "BadRequest",
    );
    assert!(s.message.contains("spec.unknownField"), "{}", s.message);
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    expect_err(
        nodes
            .list(&ListParams::default().fields("spec.nodeName=x"))
            .await,
        400,
        "BadRequest",
    );
}

pub async fn field_selectors(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let node = ctx.unique("fs-node");
    pods.create(
        &PostParams::default(),
        &pod("bound", json!({}), Some(&node)),
    )
    .await
    .unwrap();
    pods.create(&PostParams::default(), &pod("free", json!({}), None))
        .await
        .unwrap();
    pods.patch_status(
        "bound",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "10.9.8.7", "podIPs": [{"ip": "10.9.8.7"}]}})),
    )
    .await
    .unwrap();
    let q = |s: &str| ListParams::default().fields(s);
    assert_eq!(names(&pods, &q("metadata.name=free")).await, set(&["free"]));
    assert_eq!(
        names(&pods, &q(&format!("metadata.namespace={}", ctx.ns))).await,
        set(&["bound", "free"])
    );
    assert_eq!(
        names(&pods, &q(&format!("spec.nodeName={node}"))).await,
        set(&["bound"])
    );
    assert_eq!(names(&pods, &q("spec.nodeName=")).await, set(&["free"]));
    assert_eq!(
        names(&pods, &q("status.phase=Running")).await,
        set(&["bound"])
    );
    assert_eq!(
        names(&pods, &q("status.phase!=Running")).await,
        set(&["free"])
    );
    assert_eq!(
        names(&pods, &q("status.phase==Pending")).await,
        set(&["free"])
    );
    assert_eq!(
        names(&pods, &q("status.podIP=10.9.8.7")).await,
        set(&["bound"])
    );
    assert_eq!(
        names(
            &pods,
            &q(&format!(
                "spec.nodeName={node},status.phase!=Failed,status.phase!=Succeeded"
            ))
        )
        .await,
        set(&["bound"])
    );
    // label and field selectors combine
    let lp = ListParams::default()
        .fields("metadata.name=bound")
        .labels("x=y");
    assert_eq!(names(&pods, &lp).await, set(&[]));
}

pub async fn pagination_is_consistent(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    for i in 0..7 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("p{i}"), json!({"page": "yes"}), None),
        )
        .await
        .unwrap();
    }
    let first = pods.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(first.items.len(), 3);
    let token = first.metadata.continue_.clone().expect("continue token");
    assert_eq!(first.metadata.remaining_item_count, Some(4));
    // a change after the first page is not visible in later pages
    pods.create(&PostParams::default(), &pod("p9", json!({}), None))
        .await
        .unwrap();
    pods.delete("p6", &DeleteParams::default()).await.unwrap();
    let mut seen: Vec<String> = first
        .items
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    let mut token = Some(token);
    while let Some(t) = token {
        let page = pods
            .list(&ListParams::default().limit(3).continue_token(&t))
            .await
            .unwrap();
        assert_eq!(
            page.metadata.resource_version, first.metadata.resource_version,
            "pages share the snapshot version"
        );
        seen.extend(page.items.iter().map(|p| p.metadata.name.clone().unwrap()));
        token = page.metadata.continue_.filter(|c| !c.is_empty());
    }
    assert_eq!(seen, (0..7).map(|i| format!("p{i}")).collect::<Vec<_>>());
    // a bad token
    let s = status(
        pods.list(&ListParams::default().continue_token("not-a-token"))
            .await
            .unwrap_err(),
    );
    assert!(s.code == 400 || s.code == 410, "{s:?}");
    // a full list sees the new state
    let all = names(&pods, &ListParams::default()).await;
    assert!(all.contains("p9") && !all.contains("p6"));
}

pub async fn status_isolation_pod(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let mut p = pod("iso", json!({}), None);
    p.status = Some(obj(json!({"phase": "Running", "podIP": "1.2.3.4"})));
    let created = pods.create(&PostParams::default(), &p).await.unwrap();
    let st = created.status.clone().unwrap();
    assert_eq!(
        st.phase.as_deref(),
        Some("Pending"),
        "create ignores the status sent"
    );
    assert_eq!(st.pod_ip, None);
    // main resource update ignores status
    let mut upd = created.clone();
    upd.status.as_mut().unwrap().phase = Some("Failed".into());
    upd.metadata.labels = Some([("changed".to_string(), "yes".to_string())].into());
    let after = pods
        .replace("iso", &PostParams::default(), &upd)
        .await
        .unwrap();
    assert_eq!(after.status.unwrap().phase.as_deref(), Some("Pending"));
    assert_eq!(after.metadata.labels.unwrap()["changed"], "yes");
    // status update ignores spec
    let mut upd = pods.get("iso").await.unwrap();
    upd.status.as_mut().unwrap().phase = Some("Running".into());
    upd.spec.as_mut().unwrap().active_deadline_seconds = Some(99);
    let after = pods
        .replace_status("iso", &PostParams::default(), &upd)
        .await
        .unwrap();
    assert_eq!(after.status.unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(after.spec.unwrap().active_deadline_seconds, None);
    // merge patch on main resource with status: status untouched
    let after = pods
        .patch(
            "iso",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
        )
        .await
        .unwrap();
    assert_eq!(after.status.unwrap().phase.as_deref(), Some("Running"));
}

pub async fn status_isolation_node_and_deployment(ctx: Ctx) {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let name = ctx.unique("iso-node");
    let n: Node = obj(json!({
        "metadata": {"name": name},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"}],
                   "capacity": {"pods": "110"}}
    }));
    let created = nodes.create(&PostParams::default(), &n).await.unwrap();
    // a node keeps the status it was created with (kubelets register this way)
    let conds = created.status.as_ref().unwrap().conditions.clone().unwrap();
    assert_eq!(conds[0].type_, "Ready");
    let after = nodes
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"unschedulable": true}, "status": {"capacity": {"pods": "1"}}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(after.spec.unwrap().unschedulable, Some(true));
    assert_eq!(after.status.unwrap().capacity.unwrap()["pods"].0, "110");
    let after = nodes
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"unschedulable": false}, "status": {"capacity": {"pods": "5"}}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(after.spec.unwrap().unschedulable, Some(true));
    assert_eq!(after.status.unwrap().capacity.unwrap()["pods"].0, "5");
    nodes.delete(&name, &DeleteParams::default()).await.unwrap();

    let deps: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let d = deps
        .create(&PostParams::default(), &deployment("iso", 2))
        .await
        .unwrap();
    let after = deps
        .patch_status(
            "iso",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"replicas": 2, "readyReplicas": 1}, "spec": {"replicas": 9}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(after.spec.unwrap().replicas, Some(2));
    assert_eq!(after.status.unwrap().ready_replicas, Some(1));
    assert_eq!(after.metadata.generation, d.metadata.generation);
}

pub fn deployment(name: &str, replicas: i32) -> Deployment {
    obj(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}}
        }
    }))
}

pub async fn generation_tracks_spec(ctx: Ctx) {
    let deps: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let d = deps
        .create(&PostParams::default(), &deployment("gen", 1))
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    let d = deps
        .patch(
            "gen",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(2));
    let d = deps
        .patch(
            "gen",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        d.metadata.generation,
        Some(2),
        "metadata changes do not bump generation"
    );
    let d = deps
        .patch_status(
            "gen",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(
        d.metadata.generation,
        Some(2),
        "status changes do not bump generation"
    );
    // defaults
    let spec = d.spec.unwrap();
    assert_eq!(spec.revision_history_limit, Some(10));
    assert_eq!(
        spec.strategy.unwrap().type_.as_deref(),
        Some("RollingUpdate")
    );
    // selector is immutable in apps/v1
    let s = expect_err(
        deps.patch(
            "gen",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {"matchLabels": {"app": "other"}}, "template": {"metadata": {"labels": {"app": "other"}}}}})),
        )
        .await,
        422,
        "Invalid",
    );
    assert!(s.message.contains("field is immutable"), "{}", s.message);
}

pub async fn validation_errors_are_invalid_status(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let s = expect_err(
        pods.create(&PostParams::default(), &pod("Bad_Name", json!({}), None))
            .await,
        422,
        "Invalid",
    );
    assert!(
        s.message.starts_with("Pod \"Bad_Name\" is invalid"),
        "{}",
        s.message
    );
    let d = s.details.unwrap();
    assert_eq!(d.kind, "Pod");
    assert!(
        d.causes.iter().any(|c| c.field == "metadata.name"),
        "{:?}",
        d.causes
    );
    let p: Pod = obj(json!({"metadata": {"name": "nocontainers"}, "spec": {"containers": []}}));
    let s = expect_err(
        pods.create(&PostParams::default(), &p).await,
        422,
        "Invalid",
    );
    assert!(
        s.details
            .unwrap()
            .causes
            .iter()
            .any(|c| c.field == "spec.containers")
    );
    let s = expect_err(
        pods.create(
            &PostParams::default(),
            &pod("badlabel", json!({"k": "-x-"}), None),
        )
        .await,
        422,
        "Invalid",
    );
    assert!(
        s.details
            .unwrap()
            .causes
            .iter()
            .any(|c| c.field == "metadata.labels")
    );
    let deps: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let mut d = deployment("mismatch", 1);
    d.spec.as_mut().unwrap().selector.match_labels =
        Some([("app".to_string(), "other".to_string())].into());
    let s = expect_err(
        deps.create(&PostParams::default(), &d).await,
        422,
        "Invalid",
    );
    assert!(
        s.message
            .contains("`selector` does not match template `labels`"),
        "{}",
        s.message
    );
}

pub async fn name_mismatch_is_bad_request(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let created = pods
        .create(&PostParams::default(), &pod("right", json!({}), None))
        .await
        .unwrap();
    let mut other = created.clone();
    other.metadata.name = Some("wrong".into());
    let s = expect_err(
        pods.replace("right", &PostParams::default(), &other).await,
        400,
        "BadRequest",
    );
    assert!(
        s.message.contains("does not match the name on the URL"),
        "{}",
        s.message
    );
    let mut other = pod("nsx", json!({}), None);
    other.metadata.namespace = Some("some-other-namespace".into());
    let s = expect_err(
        pods.create(&PostParams::default(), &other).await,
        400,
        "BadRequest",
    );
    assert!(
        s.message.contains("does not match the namespace"),
        "{}",
        s.message
    );
}

pub async fn pod_spec_is_mostly_immutable(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    pods.create(&PostParams::default(), &pod("imm", json!({}), None))
        .await
        .unwrap();
    // the image may change
    let p = pods
        .patch(
            "imm",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"spec": {"containers": [{"name": "main", "image": "busybox:1.37"}]}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        p.spec.unwrap().containers[0].image.as_deref(),
        Some("busybox:1.37")
    );
    // nodeName may not (binding is the way)
    let s = expect_err(
        pods.patch(
            "imm",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"nodeName": "n1"}})),
        )
        .await,
        422,
        "Invalid",
    );
    assert!(
        s.message
            .contains("pod updates may not change fields other than"),
        "{}",
        s.message
    );
}

pub async fn missing_namespace_is_404(ctx: Ctx) {
    let ns = format!("{}-missing", ctx.ns);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let s = expect_err(
        pods.create(&PostParams::default(), &pod("x", json!({}), None))
            .await,
        404,
        "NotFound",
    );
    assert!(
        s.message
            .contains(&format!("namespaces \"{ns}\" not found")),
        "{}",
        s.message
    );
    // listing in a missing namespace is an empty list
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

pub async fn events_two_apis_one_storage(ctx: Ctx) {
    let v1: Api<EventV1> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let core: Api<CoreEvent> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let ev: EventV1 = obj(json!({
        "metadata": {"name": "ev1"},
        "eventTime": "2025-01-01T00:00:00.000000Z",
        "reportingController": "koupleless.io/test",
        "reportingInstance": "test-1",
        "action": "Testing",
        "reason": "Tested",
        "type": "Normal",
        "note": "hello",
        "regarding": {"kind": "Pod", "name": "p", "namespace": ctx.ns, "apiVersion": "v1"}
    }));
    v1.create(&PostParams::default(), &ev).await.unwrap();
    let c = core.get("ev1").await.unwrap();
    assert_eq!(c.message.as_deref(), Some("hello"));
    assert_eq!(c.involved_object.name.as_deref(), Some("p"));
    assert_eq!(c.reporting_component.as_deref(), Some("koupleless.io/test"));
    // field selectors on the core API
    let l = core
        .list(&ListParams::default().fields("involvedObject.name=p,involvedObject.kind=Pod"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
    let l = core
        .list(&ListParams::default().fields("involvedObject.name=other"))
        .await
        .unwrap();
    assert!(l.items.is_empty());
    // events.k8s.io validation
    let bad: EventV1 = obj(json!({"metadata": {"name": "ev2"}, "reason": "x"}));
    expect_err(
        v1.create(&PostParams::default(), &bad).await,
        422,
        "Invalid",
    );
    // a core event is visible through events.k8s.io
    let ce: CoreEvent = obj(json!({
        "metadata": {"name": "ev3"},
        "involvedObject": {"kind": "Pod", "name": "p2", "namespace": ctx.ns},
        "reason": "NodeReady", "message": "up", "type": "Normal",
        "source": {"component": "kubelet"},
        "firstTimestamp": "2025-01-01T00:00:00Z", "lastTimestamp": "2025-01-01T00:00:00Z", "count": 1
    }));
    core.create(&PostParams::default(), &ce).await.unwrap();
    let e = v1.get("ev3").await.unwrap();
    assert_eq!(e.note.as_deref(), Some("up"));
    assert_eq!(e.regarding.unwrap().name.as_deref(), Some("p2"));
    // events.k8s.io field labels
    let l = v1
        .list(&ListParams::default().fields("regarding.name=p2"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
    // an event about a cluster-scoped object belongs in "default"
    let bad: CoreEvent = obj(json!({
        "metadata": {"name": "ev4"},
        "involvedObject": {"kind": "Node", "name": "n1"},
        "reason": "NodeReady", "message": "up", "type": "Normal"
    }));
    let s = expect_err(
        core.create(&PostParams::default(), &bad).await,
        422,
        "Invalid",
    );
    assert!(
        s.message.contains("does not match event.namespace"),
        "{}",
        s.message
    );
    assert_eq!(e.deprecated_count, Some(1));
}

pub async fn lease_put_creates(ctx: Ctx) {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let l: Lease = obj(
        json!({"metadata": {"name": "vnode-lease"}, "spec": {"holderIdentity": "vnode", "leaseDurationSeconds": 40}}),
    );
    // PUT on a missing lease creates it (AllowCreateOnUpdate)
    let created = leases
        .replace("vnode-lease", &PostParams::default(), &l)
        .await
        .unwrap();
    assert_eq!(
        created.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("vnode")
    );
    let mut renew = created.clone();
    renew.spec.as_mut().unwrap().renew_time = Some(obj(json!("2025-01-01T00:00:00.000000Z")));
    let renewed = leases
        .replace("vnode-lease", &PostParams::default(), &renew)
        .await
        .unwrap();
    assert!(rv_of(&renewed) > rv_of(&created));
    expect_err(
        leases
            .replace("vnode-lease", &PostParams::default(), &renew)
            .await,
        409,
        "Conflict",
    );
}

pub async fn dry_run_does_not_persist(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let p = pods
        .create(&pp, &pod("dry", json!({}), None))
        .await
        .unwrap();
    assert_eq!(p.metadata.name.as_deref(), Some("dry"));
    assert!(pods.get_opt("dry").await.unwrap().is_none());
    pods.create(&PostParams::default(), &pod("dry", json!({}), None))
        .await
        .unwrap();
    let dp = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    pods.delete("dry", &dp).await.unwrap();
    assert!(pods.get_opt("dry").await.unwrap().is_some());
    let pp = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    let p = pods
        .patch(
            "dry",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"d": "r"}}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.labels.unwrap()["d"], "r");
    assert!(
        pods.get("dry")
            .await
            .unwrap()
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("d")
            .not()
    );
}

pub async fn metadata_api(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    pods.create(
        &PostParams::default(),
        &pod("meta", json!({"m": "1"}), None),
    )
    .await
    .unwrap();
    let l = pods.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(l.items.len(), 1);
    let m: &PartialObjectMeta<Pod> = &l.items[0];
    assert_eq!(m.metadata.labels.as_ref().unwrap()["m"], "1");
    let one = pods.get_metadata("meta").await.unwrap();
    assert_eq!(one.metadata.name.as_deref(), Some("meta"));
    let _: ObjectMeta = one.metadata;
}

pub async fn binding_subresource(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    pods.create(&PostParams::default(), &pod("tobind", json!({}), None))
        .await
        .unwrap();
    let node = ctx.unique("bind-node");
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "tobind"}, "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    let req = http::Request::post(format!("/api/v1/namespaces/{}/pods/tobind/binding", ctx.ns))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&binding).unwrap())
        .unwrap();
    ctx.client.request_text(req).await.unwrap();
    let p = pods.get("tobind").await.unwrap();
    assert_eq!(p.spec.unwrap().node_name.as_deref(), Some(node.as_str()));
    let scheduled = p.status.unwrap().conditions.unwrap_or_default();
    assert!(
        scheduled
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True")
    );
    // binding again conflicts
    let req = http::Request::post(format!("/api/v1/namespaces/{}/pods/tobind/binding", ctx.ns))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&binding).unwrap())
        .unwrap();
    let e = status(ctx.client.request_text(req).await.unwrap_err());
    assert_eq!(e.code, 409);
    // force-delete (the pod is bound now)
    pods.delete(
        "tobind",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

pub async fn service_allocation(ctx: Ctx) {
    let svcs: Api<Service> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let s: Service = obj(
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    );
    let created = svcs.create(&PostParams::default(), &s).await.unwrap();
    let spec = created.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let ip = spec.cluster_ip.unwrap();
    assert!(ip.split('.').count() == 4 || ip.contains(':'), "{ip}");
    let port = &spec.ports.unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(80))
    );
    let s: Service =
        obj(json!({"metadata": {"name": "noports"}, "spec": {"selector": {"app": "web"}}}));
    expect_err(
        svcs.create(&PostParams::default(), &s).await,
        422,
        "Invalid",
    );
}

pub async fn pod_ip_fields_stay_in_step(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    pods.create(&PostParams::default(), &pod("ips", json!({}), None))
        .await
        .unwrap();
    let p = pods
        .patch_status(
            "ips",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"podIP": "10.1.2.3", "hostIP": "192.168.7.1"}})),
        )
        .await
        .unwrap();
    let st = p.status.unwrap();
    assert_eq!(st.pod_ips.unwrap()[0].ip, "10.1.2.3");
    assert_eq!(st.host_ips.unwrap()[0].ip, "192.168.7.1");
    let p = pods
        .patch_status(
            "ips",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"podIP": null, "podIPs": [{"ip": "10.1.2.4"}]}})),
        )
        .await
        .unwrap();
    assert_eq!(p.status.unwrap().pod_ip.as_deref(), Some("10.1.2.4"));
}

pub async fn field_validation(ctx: Ctx) {
    let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fv"},
        "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicyy": "Always"}]}});
    let post = |q: &str| {
        http::Request::post(format!("/api/v1/namespaces/{}/pods{q}", ctx.ns))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap()
    };
    let s = status(
        ctx.client
            .request_text(post("?fieldValidation=Strict"))
            .await
            .unwrap_err(),
    );
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    assert!(
        s.message.contains("unknown field") && s.message.contains("imagePullPolicyy"),
        "{}",
        s.message
    );
    // the default (Warn) drops the field
    let text = ctx.client.request_text(post("")).await.unwrap();
    let created: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        created["spec"]["containers"][0]
            .get("imagePullPolicyy")
            .is_none()
    );
    // wrong types are errors whatever the directive
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let s = status(
        pods.patch(
            "fv",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"activeDeadlineSeconds": "soon"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(s.code, 400, "{s:?}");
    // strict patches
    let pp = PatchParams {
        field_validation: Some(kube::api::ValidationDirective::Strict),
        ..Default::default()
    };
    let s = status(
        pods.patch(
            "fv",
            &pp,
            &Patch::Merge(json!({"metadata": {"labelz": {"a": "b"}}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(s.code, 400, "{s:?}");
    let s = status(
        pods.patch("fv", &PatchParams::apply("fv").validation_strict(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fv"}, "spec": {"nodeNam": "x"}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 400, "{s:?}");
}

//! kubectl's imperative commands, as a person types them: the `create`
//! generators (protobuf bodies), `scale`, `rollout history|undo|restart|status`,
//! `label`, `annotate`, `cordon`, `uncordon` and `drain`. Each asserts that the
//! stored object moved.

use crate::common::*;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, EvictParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;

/// These scenarios are about kubectl: without it they cannot run, and fail.
fn require_kubectl() {
    assert!(
        kubectl_bin().is_some(),
        "kubectl not found (set KUBECTL or put kubectl on PATH)"
    );
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("kubectl task")
}

fn deployment(name: &str, replicas: i32, image: &str) -> Deployment {
    obj(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]}
            }
        }
    }))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub async fn create_generators(ctx: Ctx) {
    require_kubectl();
    let ns_name = ctx.unique("kc-created");
    let c = ctx.clone();
    let n = ns_name.clone();
    blocking(move || {
        let out = kubectl_ok(&c, &["create", "namespace", &n]);
        assert_eq!(out.trim(), format!("namespace/{n} created"));
        let out = kubectl_ok(
            &c,
            &[
                "create",
                "deployment",
                "gen",
                "--image=nginx:1.25",
                "--replicas=2",
                "--port=80",
            ],
        );
        assert_eq!(out.trim(), "deployment.apps/gen created");
        let out = kubectl_ok(
            &c,
            &["create", "service", "clusterip", "gen", "--tcp=80:8080"],
        );
        assert_eq!(out.trim(), "service/gen created");
        let out = kubectl_ok(
            &c,
            &[
                "expose",
                "deployment",
                "gen",
                "--name=gen-exposed",
                "--port=8080",
                "--target-port=80",
            ],
        );
        assert_eq!(out.trim(), "service/gen-exposed exposed");
        let out = kubectl_ok(
            &c,
            &[
                "create",
                "configmap",
                "cfg",
                "--from-literal=a=1",
                "--from-literal=b=2",
            ],
        );
        assert_eq!(out.trim(), "configmap/cfg created");
        let out = kubectl_ok(
            &c,
            &[
                "create",
                "secret",
                "generic",
                "creds",
                "--from-literal=password=s3cr3t",
            ],
        );
        assert_eq!(out.trim(), "secret/creds created");
        let table = |args: &[&str]| -> Vec<Vec<String>> {
            kubectl_ok(&c, args)
                .lines()
                .map(|l| l.split_whitespace().map(str::to_string).collect())
                .collect()
        };
        let cm = table(&["get", "configmap", "cfg"]);
        assert_eq!(cm[0], ["NAME", "DATA", "AGE"]);
        assert_eq!(cm[1][..2], ["cfg", "2"]);
        let secret = table(&["get", "secret", "creds"]);
        assert_eq!(secret[0], ["NAME", "TYPE", "DATA", "AGE"]);
        assert_eq!(secret[1][..3], ["creds", "Opaque", "1"]);
        // the same name again: AlreadyExists, decoded from protobuf first
        let out = kubectl(&c, &["create", "deployment", "gen", "--image=nginx"]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("deployments.apps \"gen\" already exists"),
            "{}",
            stderr(&out)
        );
    })
    .await;
    let nss: Api<Namespace> = Api::all(ctx.client.clone());
    let ns = nss.get(&ns_name).await.unwrap();
    assert_eq!(
        ns.metadata.labels.unwrap()["kubernetes.io/metadata.name"],
        ns_name
    );
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
    let deps: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let d = serde_json::to_value(deps.get("gen").await.unwrap()).unwrap();
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        d["spec"]["selector"],
        json!({"matchLabels": {"app": "gen"}})
    );
    let c0 = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (&c0["name"], &c0["image"], &c0["ports"]),
        (
            &json!("nginx"),
            &json!("nginx:1.25"),
            &json!([{"containerPort": 80, "protocol": "TCP"}])
        )
    );
    // kubectl sends `strategy: {}`: defaulted field by field
    assert_eq!(
        d["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    // (a real cluster's controllers add their own entries for status)
    let created_by: Vec<(&str, &str)> = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["subresource"].is_null())
        .filter_map(|m| Some((m["manager"].as_str()?, m["operation"].as_str()?)))
        .collect();
    assert_eq!(created_by, [("kubectl-create", "Update")]);
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let cm = cms.get("cfg").await.unwrap();
    assert_eq!(
        serde_json::to_value(cm.data).unwrap(),
        json!({"a": "1", "b": "2"})
    );
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let secret = serde_json::to_value(secrets.get("creds").await.unwrap()).unwrap();
    assert_eq!(secret["data"], json!({"password": "czNjcjN0"}));
    assert_eq!(secret["type"], "Opaque");
    let svcs: Api<Service> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let s = serde_json::to_value(svcs.get("gen").await.unwrap()).unwrap();
    assert_eq!(
        s["spec"]["ports"],
        json!([{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}])
    );
    assert_eq!(s["spec"]["selector"], json!({"app": "gen"}));
    let exposed = serde_json::to_value(svcs.get("gen-exposed").await.unwrap()).unwrap();
    assert_eq!(
        exposed["spec"]["ports"],
        json!([{"port": 8080, "protocol": "TCP", "targetPort": 80}])
    );
    assert_eq!(exposed["spec"]["selector"], json!({"app": "gen"}));
    let c = ctx.clone();
    let n = ns_name.clone();
    blocking(move || kubectl_ok(&c, &["delete", "namespace", &n])).await;
    eventually(Duration::from_secs(30), || {
        let nss = nss.clone();
        let n = ns_name.clone();
        async move { nss.get_opt(&n).await.unwrap().is_none().then_some(()) }
    })
    .await;
}

pub async fn scale(ctx: Ctx) {
    require_kubectl();
    let deps: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let d = deps
        .create(&PostParams::default(), &deployment("sc", 1, "nginx:1.25"))
        .await
        .unwrap();
    let gen0 = d.metadata.generation.unwrap();
    let rss: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let rs: ReplicaSet = obj(json!({
        "metadata": {"name": "sc-rs"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "sc-rs"}},
                 "template": {"metadata": {"labels": {"app": "sc-rs"}},
                              "spec": {"containers": [{"name": "main", "image": "nginx:1.25"}]}}}
    }));
    rss.create(&PostParams::default(), &rs).await.unwrap();
    let c = ctx.clone();
    blocking(move || {
        let out = kubectl_ok(&c, &["scale", "deployment", "sc", "--replicas=3"]);
        assert_eq!(out.trim(), "deployment.apps/sc scaled");
        let out = kubectl_ok(&c, &["scale", "rs", "sc-rs", "--replicas=0"]);
        assert_eq!(out.trim(), "replicaset.apps/sc-rs scaled");
        // a precondition on the current size that does not hold
        let out = kubectl(
            &c,
            &[
                "scale",
                "deployment",
                "sc",
                "--current-replicas=2",
                "--replicas=5",
            ],
        );
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("Expected replicas to be 2, was 3"),
            "{}",
            stderr(&out)
        );
    })
    .await;
    let d = deps.get("sc").await.unwrap();
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(d.metadata.generation, Some(gen0 + 1), "a spec change");
    assert_eq!(
        rss.get("sc-rs").await.unwrap().spec.unwrap().replicas,
        Some(0)
    );
    // the scale subresource itself
    let s = deps.get_scale("sc").await.unwrap();
    assert_eq!(s.spec.unwrap().replicas, Some(3));
    assert_eq!(s.status.unwrap().selector.as_deref(), Some("app=sc"));
    assert_eq!(s.metadata.resource_version, d.metadata.resource_version);
    let s = deps
        .patch_scale(
            "sc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(s.spec.as_ref().unwrap().replicas, Some(4));
    let mut stale = s.clone();
    stale.metadata.resource_version = d.metadata.resource_version.clone();
    expect_err(
        deps.replace_scale("sc", &PostParams::default(), &stale)
            .await,
        409,
        "Conflict",
    );
    // no resourceVersion precondition from here on: a real cluster's
    // controllers write the status meanwhile
    let mut negative = s.clone();
    negative.metadata.resource_version = None;
    negative.spec.as_mut().unwrap().replicas = Some(-1);
    let st = expect_err(
        deps.replace_scale("sc", &PostParams::default(), &negative)
            .await,
        422,
        "Invalid",
    );
    assert!(
        st.message
            .contains("spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
        "{}",
        st.message
    );
    let mut five = s.clone();
    five.metadata.resource_version = None;
    five.spec.as_mut().unwrap().replicas = Some(5);
    let s = deps
        .replace_scale("sc", &PostParams::default(), &five)
        .await
        .unwrap();
    assert_eq!(s.spec.unwrap().replicas, Some(5));
    assert_eq!(
        deps.get("sc").await.unwrap().spec.unwrap().replicas,
        Some(5)
    );
    let st = expect_err(deps.get_scale("missing").await, 404, "NotFound");
    assert_eq!(st.message, "deployments/scale.apps \"missing\" not found");
    let mut other = five.clone();
    other.metadata.uid = Some("not-the-deployment".into());
    let st = expect_err(
        deps.replace_scale("sc", &PostParams::default(), &other)
            .await,
        409,
        "Conflict",
    );
    assert!(
        st.message
            .contains("Precondition failed: UID in precondition"),
        "{}",
        st.message
    );
    let c = ctx.clone();
    let table =
        blocking(move || kubectl_ok(&c, &["get", "deployment", "sc", "--subresource=scale"])).await;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "DESIRED", "AVAILABLE"], "{table}");
    assert_eq!(rows[1][..2], ["sc", "5"], "{table}");
}

/// A ReplicaSet as the deployment controller makes them: owned, with the
/// template hash label and the revision annotation.
fn owned_rs(d: &Deployment, hash: &str, revision: u32, image: &str) -> ReplicaSet {
    let name = d.metadata.name.clone().unwrap();
    obj(json!({
        "metadata": {
            "name": format!("{name}-{hash}"),
            "labels": {"app": name, "pod-template-hash": hash},
            "annotations": {"deployment.kubernetes.io/revision": revision.to_string()},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                                 "uid": d.metadata.uid, "controller": true,
                                 "blockOwnerDeletion": true}]
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name, "pod-template-hash": hash}},
            "template": {
                "metadata": {"labels": {"app": name, "pod-template-hash": hash}},
                "spec": {"containers": [{"name": "main", "image": image}]}
            }
        }
    }))
}

pub async fn rollout(ctx: Ctx) {
    require_kubectl();
    if ctx.real {
        eprintln!(
            "SKIP rollout: the scenario plays the deployment controller (its ReplicaSets and status), which a real cluster runs itself"
        );
        return;
    }
    let deps: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let d = deps
        .create(&PostParams::default(), &deployment("ro", 1, "nginx:1.0"))
        .await
        .unwrap();
    let rss: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    for (hash, rev, image) in [("aaa", 1, "nginx:1.0"), ("bbb", 2, "nginx:1.1")] {
        rss.create(&PostParams::default(), &owned_rs(&d, hash, rev, image))
            .await
            .unwrap();
    }
    let c = ctx.clone();
    blocking(move || {
        kubectl_ok(&c, &["set", "image", "deployment/ro", "main=nginx:1.1"]);
        let out = kubectl_ok(&c, &["rollout", "history", "deployment/ro"]);
        let revisions: Vec<&str> = out
            .lines()
            .skip_while(|l| !l.starts_with("REVISION"))
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(revisions, ["1", "2"], "{out}");
        let out = kubectl_ok(&c, &["rollout", "history", "deployment/ro", "--revision=1"]);
        assert!(out.contains("nginx:1.0"), "{out}");
        let out = kubectl_ok(&c, &["rollout", "pause", "deployment/ro"]);
        assert_eq!(out.trim(), "deployment.apps/ro paused");
        let paused = kubectl_ok(
            &c,
            &["get", "deployment", "ro", "-o", "jsonpath={.spec.paused}"],
        );
        assert_eq!(paused, "true");
        // undo refuses a paused deployment, as upstream
        let out = kubectl(&c, &["rollout", "undo", "deployment/ro"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("paused"), "{}", stderr(&out));
        let out = kubectl_ok(&c, &["rollout", "resume", "deployment/ro"]);
        assert_eq!(out.trim(), "deployment.apps/ro resumed");
        let out = kubectl_ok(&c, &["rollout", "restart", "deployment/ro"]);
        assert_eq!(out.trim(), "deployment.apps/ro restarted");
        let out = kubectl_ok(&c, &["rollout", "undo", "deployment/ro", "--to-revision=1"]);
        assert_eq!(out.trim(), "deployment.apps/ro rolled back");
    })
    .await;
    let d = serde_json::to_value(deps.get("ro").await.unwrap()).unwrap();
    // undo copies revision 1's template (minus the hash label): the image and
    // no restartedAt annotation
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.0"
    );
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"],
        json!({"app": "ro"})
    );
    assert!(
        d["spec"]["template"]["metadata"]["annotations"].is_null(),
        "{d}"
    );
    let generation = d["metadata"]["generation"].as_i64().unwrap();
    assert_eq!(
        generation, 6,
        "create, set image, pause, resume, restart, undo: {d}"
    );
    // rollout status waits until the status says the rollout is done
    let c = ctx.clone();
    let status = tokio::task::spawn_blocking(move || {
        kubectl(&c, &["rollout", "status", "deployment/ro", "--timeout=20s"])
    });
    eventually(Duration::from_secs(10), || {
        let deps = deps.clone();
        async move {
            deps.patch_status(
                "ro",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "observedGeneration": generation, "replicas": 1, "updatedReplicas": 1,
                    "readyReplicas": 1, "availableReplicas": 1
                }})),
            )
            .await
            .ok()
        }
    })
    .await;
    let out = status.await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "deployment \"ro\" successfully rolled out"
    );
}

pub async fn label_annotate_workloads(ctx: Ctx) {
    require_kubectl();
    let deps: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    deps.create(&PostParams::default(), &deployment("la", 1, "nginx:1.25"))
        .await
        .unwrap();
    let c = ctx.clone();
    blocking(move || {
        kubectl_ok(&c, &["label", "deployment", "la", "tier=web"]);
        kubectl_ok(&c, &["annotate", "deployment", "la", "owner=team-a"]);
        kubectl_ok(
            &c,
            &["label", "deployment", "la", "tier=api", "--overwrite"],
        );
        let out = kubectl(&c, &["label", "deployment", "la", "tier=db"]);
        assert!(!out.status.success(), "relabel without --overwrite");
        kubectl_ok(&c, &["annotate", "deployment", "la", "owner-"]);
    })
    .await;
    let d = deps.get("la").await.unwrap();
    assert_eq!(d.metadata.labels.unwrap()["tier"], "api");
    assert!(
        !d.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("owner")
    );
}

fn node(name: &str) -> Node {
    obj(
        json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
               "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
    )
}

fn owned_pod(name: &str, node: &str, kind: &str, owner: &str, uid: &str) -> Pod {
    obj(json!({
        "metadata": {"name": name, "labels": {"app": owner},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": owner,
                                          "uid": uid, "controller": true}]},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "nginx:1.25"}]}
    }))
}

pub async fn cordon_and_drain(ctx: Ctx) {
    require_kubectl();
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let n1 = ctx.unique("drain-a");
    let n2 = ctx.unique("drain-b");
    for n in [&n1, &n2] {
        nodes
            .create(&PostParams::default(), &node(n))
            .await
            .unwrap();
    }
    let dss: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let ds: DaemonSet = obj(json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent"}},
                              "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}}}
    }));
    let ds = dss.create(&PostParams::default(), &ds).await.unwrap();
    let rss: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let rs: ReplicaSet = obj(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "main", "image": "nginx:1.25"}]}}}
    }));
    let rs = rss.create(&PostParams::default(), &rs).await.unwrap();
    let (ds_uid, rs_uid) = (ds.metadata.uid.unwrap(), rs.metadata.uid.unwrap());
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    for p in [
        owned_pod("agent-a", &n1, "DaemonSet", "agent", &ds_uid),
        owned_pod("web-a", &n1, "ReplicaSet", "web", &rs_uid),
        owned_pod("web-b", &n2, "ReplicaSet", "web", &rs_uid),
    ] {
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    let unschedulable = |n: Node| n.spec.and_then(|s| s.unschedulable).unwrap_or(false);
    let c = ctx.clone();
    let node_name = n1.clone();
    blocking(move || {
        let out = kubectl_ok(&c, &["cordon", &node_name]);
        assert_eq!(out.trim(), format!("node/{node_name} cordoned"));
    })
    .await;
    assert!(unschedulable(nodes.get(&n1).await.unwrap()));
    let c = ctx.clone();
    let node_name = n1.clone();
    blocking(move || {
        let out = kubectl_ok(&c, &["uncordon", &node_name]);
        assert_eq!(out.trim(), format!("node/{node_name} uncordoned"));
        kubectl_ok(&c, &["label", "node", &node_name, "pool=modules"]);
    })
    .await;
    let n = nodes.get(&n1).await.unwrap();
    assert_eq!(n.metadata.labels.as_ref().unwrap()["pool"], "modules");
    assert!(!unschedulable(n));
    // drain: cordon, list the node's pods by field selector, evict (a
    // protobuf Eviction), then wait until the evicted pods are gone
    let c = ctx.clone();
    let node_name = n1.clone();
    let drain = tokio::task::spawn_blocking(move || {
        kubectl(
            &c,
            &["drain", &node_name, "--ignore-daemonsets", "--timeout=30s"],
        )
    });
    // the eviction is a graceful delete of a bound pod: it waits for the
    // kubelet, played here
    let terminating = eventually(Duration::from_secs(20), || {
        let pods = pods.clone();
        async move {
            let p = pods.get_opt("web-a").await.unwrap()?;
            p.metadata.deletion_timestamp.is_some().then_some(p)
        }
    })
    .await;
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    assert!(!drain.is_finished(), "drain waits for the pod to go");
    pods.delete("web-a", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let out = drain.await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("pod/web-a evicted") && stdout.contains(&format!("node/{n1} drained")),
        "{stdout}"
    );
    assert!(
        stderr(&out).contains("ignoring DaemonSet-managed Pods"),
        "{}",
        stderr(&out)
    );
    assert!(pods.get_opt("web-a").await.unwrap().is_none());
    let kept = pods.get("agent-a").await.unwrap();
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "DaemonSet pods stay"
    );
    let other = pods.get("web-b").await.unwrap();
    assert!(
        other.metadata.deletion_timestamp.is_none(),
        "other nodes' pods stay"
    );
    assert!(unschedulable(nodes.get(&n1).await.unwrap()));
    // evictions through the API: an unbound pod goes at once, a missing one is 404
    pods.create(&PostParams::default(), &pod("loose", json!({}), None))
        .await
        .unwrap();
    pods.evict("loose", &EvictParams::default()).await.unwrap();
    assert!(pods.get_opt("loose").await.unwrap().is_none());
    expect_err(
        pods.evict("loose", &EvictParams::default()).await,
        404,
        "NotFound",
    );
    // deleteOptions are honoured: grace 0 removes a bound pod at once (sent by
    // hand: kube-rs 5 spells the field `delete_options`, which servers ignore)
    let req = http::Request::post(format!("/api/v1/namespaces/{}/pods/web-b/eviction", ctx.ns))
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(&json!({
                "apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": "web-b", "namespace": ctx.ns},
                "deleteOptions": {"gracePeriodSeconds": 0}
            }))
            .unwrap(),
        )
        .unwrap();
    ctx.client.request_text(req).await.unwrap();
    assert!(pods.get_opt("web-b").await.unwrap().is_none());
    // the Eviction must name the pod of the URL
    let req = http::Request::post(format!(
        "/api/v1/namespaces/{}/pods/agent-a/eviction",
        ctx.ns
    ))
    .header("content-type", "application/json")
    .body(br#"{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {}}"#.to_vec())
    .unwrap();
    let st = status(ctx.client.request_text(req).await.unwrap_err());
    assert_eq!(
        (st.code, st.message.as_str()),
        (400, "name in URL does not match name in Eviction object")
    );
    // drain by deleting (the typed client sends DeleteOptions as protobuf)
    pods.create(
        &PostParams::default(),
        &owned_pod("web-c", &n2, "ReplicaSet", "web", &rs_uid),
    )
    .await
    .unwrap();
    let c = ctx.clone();
    let node_name = n2.clone();
    let out = blocking(move || {
        kubectl(
            &c,
            &[
                "drain",
                &node_name,
                "--disable-eviction",
                "--grace-period=0",
                "--timeout=20s",
            ],
        )
    })
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("pod/web-c deleted"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(pods.get_opt("web-c").await.unwrap().is_none());
    for n in [&n1, &n2] {
        nodes.delete(n, &DeleteParams::default()).await.unwrap();
    }
}

pub async fn eviction_respects_budgets(ctx: Ctx) {
    require_kubectl();
    if ctx.real {
        eprintln!(
            "SKIP eviction_respects_budgets: the scenario writes the budget's status, which a real cluster's disruption controller owns"
        );
        return;
    }
    // a refused eviction is a 429, which kube-rs would retry for minutes
    let pods: Api<Pod> = Api::namespaced(no_retry_client(&ctx).await, &ctx.ns);
    for name in ["bw-1", "bw-2"] {
        pods.create(
            &PostParams::default(),
            &pod(name, json!({"app": "budget"}), Some("budget-node")),
        )
        .await
        .unwrap();
        pods.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}
            ]}})),
        )
        .await
        .unwrap();
    }
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let both: PodDisruptionBudget = obj(json!({
        "metadata": {"name": "both"},
        "spec": {"minAvailable": 1, "maxUnavailable": "50%",
                 "selector": {"matchLabels": {"app": "budget"}}}
    }));
    expect_err(
        pdbs.create(&PostParams::default(), &both).await,
        422,
        "Invalid",
    );
    let budget: PodDisruptionBudget = obj(json!({
        "metadata": {"name": "budget"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "budget"}}}
    }));
    let created = pdbs.create(&PostParams::default(), &budget).await.unwrap();
    let status = serde_json::to_value(created.status).unwrap();
    assert_eq!(
        status,
        json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0})
    );
    // nobody has processed the budget yet
    let st = expect_err(
        pods.evict("bw-1", &EvictParams::default()).await,
        429,
        "TooManyRequests",
    );
    let cause = &st.details.as_ref().unwrap().causes[0];
    assert_eq!(
        (cause.reason.as_str(), cause.message.as_str()),
        (
            "DisruptionBudget",
            "The disruption budget budget is still being processed by the server."
        )
    );
    // as the disruption controller would: two healthy, one may go
    pdbs.patch_status(
        "budget",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"observedGeneration": 1, "disruptionsAllowed": 1,
            "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2}}),
        ),
    )
    .await
    .unwrap();
    pods.evict("bw-1", &EvictParams::default()).await.unwrap();
    let evicted = pods.get("bw-1").await.unwrap();
    assert!(evicted.metadata.deletion_timestamp.is_some(), "graceful");
    let charged = serde_json::to_value(pdbs.get_status("budget").await.unwrap().status).unwrap();
    assert_eq!(charged["disruptionsAllowed"], 0);
    assert!(charged["disruptedPods"]["bw-1"].is_string(), "{charged}");
    assert_eq!(charged["conditions"][0]["reason"], "InsufficientPods");
    let st = expect_err(
        pods.evict("bw-2", &EvictParams::default()).await,
        429,
        "TooManyRequests",
    );
    assert_eq!(
        st.details.as_ref().unwrap().causes[0].message,
        "The disruption budget budget needs 1 healthy pods and has 2 currently"
    );
    assert!(
        pods.get("bw-2")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
    let c = ctx.clone();
    let table = blocking(move || kubectl_ok(&c, &["get", "pdb"])).await;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "NAME",
            "MIN",
            "AVAILABLE",
            "MAX",
            "UNAVAILABLE",
            "ALLOWED",
            "DISRUPTIONS",
            "AGE"
        ],
        "{table}"
    );
    assert_eq!(rows[1][..4], ["budget", "1", "N/A", "0"], "{table}");
    // a second budget over the same pods: the eviction cannot choose
    let second: PodDisruptionBudget = obj(json!({
        "metadata": {"name": "second"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "budget"}}}
    }));
    pdbs.create(&PostParams::default(), &second).await.unwrap();
    let st = expect_err(
        pods.evict("bw-2", &EvictParams::default()).await,
        500,
        "InternalError",
    );
    assert!(
        format!("{st:?}").contains("more than one PodDisruptionBudget"),
        "{st:?}"
    );
}

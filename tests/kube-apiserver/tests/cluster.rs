//! The test cluster (API server + scheduler + workload controllers) driven
//! as users drive a real one: module manifests shaped as upstream's samples
//! (`../shared/spec/controller.md` §7.4) applied with kubectl against
//! vnode-shaped Nodes; readiness is set by the test, as a kubelet would.

mod cluster_common;

use cluster_common::*;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use serde_json::json;
use std::time::Duration;

/// The module Deployment of spec §7.4 (upstream's sample, with the node
/// affinity on the labels vnodes carry), `replicas` and `version` varied.
fn module_deployment(replicas: i32, biz_version: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: test-module-deployment
  namespace: default
  labels:
    virtual-kubelet.koupleless.io/component: module-deployment
    virtual-kubelet.koupleless.io/env: test
    virtual-kubelet.koupleless.io/strategy: peer
spec:
  replicas: {replicas}
  revisionHistoryLimit: 3
  selector:
    matchLabels:
      module.koupleless.io/name: biz1
      module.koupleless.io/version: 0.0.1
  strategy:
    rollingUpdate:
      maxSurge: 30%
      maxUnavailable: 30%
    type: RollingUpdate
  template:
    metadata:
      labels:
        virtual-kubelet.koupleless.io/component: module
        module.koupleless.io/name: biz1
        module.koupleless.io/version: 0.0.1
    spec:
      containers:
        - name: biz1
          image: https://example.com/biz1-{biz_version}-ark-biz.jar
          env:
            - name: BIZ_VERSION
              value: {biz_version}
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
              - matchExpressions:
                  - key: base.koupleless.io/name
                    operator: In
                    values: [base]
                  - key: base.koupleless.io/version
                    operator: In
                    values: [1.0.0]
                  - key: base.koupleless.io/cluster-name
                    operator: In
                    values: [default]
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            - labelSelector:
                matchExpressions:
                  - key: module.koupleless.io/name
                    operator: In
                    values: [biz1]
                  - key: module.koupleless.io/version
                    operator: In
                    values: ["0.0.1"]
              topologyKey: kubernetes.io/hostname
      tolerations:
        - key: schedule.koupleless.io/virtual-node
          operator: Equal
          value: "True"
          effect: NoExecute
        - key: schedule.koupleless.io/node-env
          operator: Equal
          value: test
          effect: NoExecute
"#
    )
}

const TOLERATIONS: &str = r#"
  tolerations:
    - key: schedule.koupleless.io/virtual-node
      operator: Equal
      value: "True"
      effect: NoExecute
    - key: schedule.koupleless.io/node-env
      operator: Equal
      value: test
      effect: NoExecute"#;

const AFFINITY: &str = r#"
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
          - matchExpressions:
              - key: base.koupleless.io/name
                operator: In
                values: [base]
              - key: base.koupleless.io/version
                operator: In
                values: [1.0.0]"#;

/// The bare-Pod samples: one biz, a two-biz Pod with anti-affinity, and
/// version 2 of biz1.
fn bare_pods() -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: test-single-module-biz1
  labels:
    virtual-kubelet.koupleless.io/component: module
spec:
  containers:
    - name: biz1
      image: https://example.com/biz1-web-single-host-0.0.1-SNAPSHOT-ark-biz.jar
      env:
        - name: BIZ_VERSION
          value: 0.0.1-SNAPSHOT{AFFINITY}{TOLERATIONS}
---
apiVersion: v1
kind: Pod
metadata:
  name: test-biz-combine-koupleless
  labels:
    virtual-kubelet.koupleless.io/component: module
spec:
  containers:
    - name: biz2
      image: https://example.com/biz2-web-single-host-0.0.1-SNAPSHOT-ark-biz.jar
      env:
        - name: BIZ_VERSION
          value: 0.0.1-SNAPSHOT
    - name: biz1
      image: https://example.com/biz1-web-single-host-0.0.1-SNAPSHOT-ark-biz.jar
      env:
        - name: BIZ_VERSION
          value: 0.0.1-SNAPSHOT{AFFINITY}
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        - labelSelector:
            matchExpressions:
              - key: module.koupleless.io/name
                operator: In
                values: [biz1]
          topologyKey: kubernetes.io/hostname{TOLERATIONS}
---
apiVersion: v1
kind: Pod
metadata:
  name: test-single-module-biz1-version2
  labels:
    virtual-kubelet.koupleless.io/component: module
spec:
  containers:
    - name: biz1
      image: https://example.com/biz1-web-single-host-0.0.2-SNAPSHOT-ark-biz.jar
      env:
        - name: BIZ_VERSION
          value: 0.0.2-SNAPSHOT{AFFINITY}{TOLERATIONS}
"#
    )
}

async fn rs_list(env: &Env) -> Vec<ReplicaSet> {
    env.api::<ReplicaSet>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn revision(o: &impl ResourceExt) -> String {
    o.annotations()
        .get("deployment.kubernetes.io/revision")
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_sample_binds_spreads_and_reports_unschedulable() {
    let env = Env::start().await;
    create_vnode(&env, "vnode.a.test", "test", "host-a").await;
    create_vnode(&env, "vnode.b.test", "test", "host-b").await;
    create_vnode(&env, "vnode.c.dev", "dev", "host-c").await;
    env.apply(&module_deployment(2, "0.0.1")).await;
    let sel = "module.koupleless.io/name=biz1";
    eventually("two bound module pods", || async {
        let p = pods_with(&env, sel).await;
        p.len() == 2 && p.iter().all(|p| !node_of(p).is_empty())
    })
    .await;
    let pods = pods_with(&env, sel).await;
    let mut nodes: Vec<String> = pods.iter().map(node_of).collect();
    nodes.sort();
    assert_eq!(
        nodes,
        ["vnode.a.test", "vnode.b.test"],
        "one per hostname, never the dev node"
    );
    let rss = rs_list(&env).await;
    assert_eq!(rss.len(), 1);
    let rs = &rss[0];
    let hash = rs
        .labels()
        .get("pod-template-hash")
        .cloned()
        .expect("hash label");
    assert_eq!(rs.name_any(), format!("test-module-deployment-{hash}"));
    assert_eq!(revision(rs), "1");
    let dref = &rs.owner_references()[0];
    assert_eq!(
        (
            dref.kind.as_str(),
            dref.controller,
            dref.block_owner_deletion
        ),
        ("Deployment", Some(true), Some(true))
    );
    for p in &pods {
        let r = &p.owner_references()[0];
        assert_eq!(
            (r.kind.as_str(), r.name.as_str(), r.controller),
            ("ReplicaSet", rs.name_any().as_str(), Some(true))
        );
        assert!(p.name_any().starts_with(&format!("{}-", rs.name_any())));
        assert_eq!(p.labels().get("pod-template-hash"), Some(&hash));
        let sched = p
            .status
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "PodScheduled")
            .unwrap();
        assert_eq!(sched.status, "True");
        let ev = events_for(&env, &p.name_any()).await;
        assert!(
            ev.iter().any(|e| e.reason.as_deref() == Some("Scheduled")
                && e.message.as_deref()
                    == Some(&format!(
                        "Successfully assigned default/{} to {}",
                        p.name_any(),
                        node_of(p)
                    ))),
            "{ev:?}"
        );
    }

    // scale to 3 through the API: the third cannot go anywhere
    let deploys: Api<Deployment> = env.api();
    deploys
        .patch(
            "test-module-deployment",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    let want = "0/3 nodes are available: 1 node(s) had untolerated taint {schedule.koupleless.io/node-env: dev}, \
                2 node(s) didn't match pod anti-affinity rules. preemption: 0/3 nodes are available: \
                1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.";
    eventually("a pending pod with the scheduler's reasons", || async {
        pods_with(&env, sel).await.iter().any(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter().any(|c| {
                        c.type_ == "PodScheduled"
                            && c.status == "False"
                            && c.reason.as_deref() == Some("Unschedulable")
                            && c.message.as_deref() == Some(want)
                    })
                })
        })
    })
    .await;
    let pending = pods_with(&env, sel)
        .await
        .into_iter()
        .find(|p| node_of(p).is_empty())
        .unwrap();
    let ev = events_for(&env, &pending.name_any()).await;
    assert!(
        ev.iter()
            .any(|e| e.reason.as_deref() == Some("FailedScheduling")
                && e.type_.as_deref() == Some("Warning")
                && e.message.as_deref() == Some(want)),
        "{ev:?}"
    );
    let described = env
        .kubectl_ok(&["describe", "pod", &pending.name_any()], None)
        .await;
    assert!(
        described.contains("FailedScheduling")
            && described.contains("didn't match pod anti-affinity rules"),
        "{described}"
    );

    // a new matching Node: the scheduler retries and binds it there
    create_vnode(&env, "vnode.d.test", "test", "host-d").await;
    eventually("the pending pod bound to the new node", || async {
        env.pods()
            .get(&pending.name_any())
            .await
            .is_ok_and(|p| node_of(&p) == "vnode.d.test")
    })
    .await;
    let wide = env.kubectl_ok(&["get", "pods", "-o", "wide"], None).await;
    assert!(
        wide.contains("vnode.d.test") && wide.contains("vnode.a.test"),
        "{wide}"
    );
    eventually("status counts 3 replicas", || async {
        let d = deploys.get("test-module-deployment").await.unwrap();
        d.status
            .as_ref()
            .is_some_and(|s| s.replicas == Some(3) && s.updated_replicas == Some(3))
    })
    .await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_is_paced_by_readiness_and_kubectl_rollout_works() {
    let env = Env::start().await;
    for (n, h) in [
        ("vnode.a.test", "a"),
        ("vnode.b.test", "b"),
        ("vnode.c.test", "c"),
        ("vnode.d.test", "d"),
    ] {
        create_vnode(&env, n, "test", h).await;
    }
    let kubelet = Kubelet::start(env.client.clone(), false); // finishes terminations only
    env.apply(&module_deployment(3, "0.0.1")).await;
    let sel = "module.koupleless.io/name=biz1";
    eventually("three bound pods", || async {
        let p = pods_with(&env, sel).await;
        p.len() == 3 && p.iter().all(|p| !node_of(p).is_empty())
    })
    .await;
    for p in pods_with(&env, sel).await {
        set_ready(&env, &p.name_any()).await;
    }
    env.kubectl_ok(
        &[
            "rollout",
            "status",
            "deployment/test-module-deployment",
            "--timeout=20s",
        ],
        None,
    )
    .await;
    let deploys: Api<Deployment> = env.api();
    let d = deploys.get("test-module-deployment").await.unwrap();
    let conds = d.status.as_ref().unwrap().conditions.clone().unwrap();
    let reason = |t: &str| {
        conds
            .iter()
            .find(|c| c.type_ == t)
            .and_then(|c| c.reason.clone())
    };
    assert_eq!(
        reason("Available").as_deref(),
        Some("MinimumReplicasAvailable")
    );
    assert_eq!(
        reason("Progressing").as_deref(),
        Some("NewReplicaSetAvailable")
    );

    // version 2: maxSurge 30% of 3 = 1 (up), maxUnavailable 30% of 3 = 0 (down)
    env.apply(&module_deployment(3, "0.0.2")).await;
    let kc = env.kubeconfig.path().to_path_buf();
    let status = tokio::task::spawn_blocking(move || {
        kubectl_blocking(
            &kc,
            &[
                "rollout".into(),
                "status".into(),
                "deployment/test-module-deployment".into(),
                "--timeout=30s".into(),
            ],
            None,
        )
    });
    let v2 = |p: &Pod| {
        p.spec.as_ref().unwrap().containers[0].env.as_ref().unwrap()[0]
            .value
            .as_deref()
            == Some("0.0.2")
    };
    for step in 1..=3 {
        eventually(&format!("new pod {step} bound"), || async {
            pods_with(&env, sel)
                .await
                .iter()
                .filter(|p| v2(p) && !node_of(p).is_empty())
                .count()
                == step
        })
        .await;
        // without readiness, the rollout does not move on
        tokio::time::sleep(Duration::from_millis(400)).await;
        let pods = pods_with(&env, sel).await;
        let new: Vec<&Pod> = pods.iter().filter(|p| v2(p)).collect();
        assert_eq!(
            new.len(),
            step,
            "no new pod beyond the surge before readiness"
        );
        let old_live = pods
            .iter()
            .filter(|p| !v2(p) && p.metadata.deletion_timestamp.is_none())
            .count();
        assert_eq!(
            old_live,
            4 - step,
            "old pods go only as new ones turn ready (max 4 pods, 3 available)"
        );
        let unready = new
            .iter()
            .find(|p| !is_ready(p))
            .expect("one new pod waiting for readiness");
        set_ready(&env, &unready.name_any()).await;
    }
    let (ok, out, err) = status.await.unwrap();
    assert!(ok, "{out}{err}");
    assert!(out.contains("successfully rolled out"), "{out}");
    assert!(
        out.contains("Waiting for deployment \"test-module-deployment\" rollout to finish"),
        "{out}"
    );
    eventually("old pods gone", || async {
        pods_with(&env, sel).await.iter().all(v2)
    })
    .await;
    let d = deploys.get("test-module-deployment").await.unwrap();
    assert_eq!(revision(&d), "2");

    let hist = env
        .kubectl_ok(
            &["rollout", "history", "deployment/test-module-deployment"],
            None,
        )
        .await;
    assert!(
        hist.lines().any(|l| l.trim_start().starts_with('1'))
            && hist.lines().any(|l| l.trim_start().starts_with('2')),
        "{hist}"
    );

    // rollback: kubectl copies revision 1's template back; its RS becomes revision 3
    env.kubectl_ok(
        &["rollout", "undo", "deployment/test-module-deployment"],
        None,
    )
    .await;
    let auto = Kubelet::start(env.client.clone(), true);
    env.kubectl_ok(
        &[
            "rollout",
            "status",
            "deployment/test-module-deployment",
            "--timeout=30s",
        ],
        None,
    )
    .await;
    let rss = rs_list(&env).await;
    assert_eq!(rss.len(), 2, "the undo reuses the first ReplicaSet");
    let live: Vec<&ReplicaSet> = rss.iter().filter(|r| rs_replicas(r) == 3).collect();
    assert_eq!(live.len(), 1);
    assert_eq!(revision(live[0]), "3");
    assert_eq!(
        live[0]
            .annotations()
            .get("deployment.kubernetes.io/revision-history")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        revision(&deploys.get("test-module-deployment").await.unwrap()),
        "3"
    );
    eventually("v1 pods back", || async {
        let p = pods_with(&env, sel).await;
        p.len() == 3 && p.iter().all(|p| !v2(p))
    })
    .await;

    // restart: a template annotation, so a new ReplicaSet (revision 4)
    env.kubectl_ok(
        &["rollout", "restart", "deployment/test-module-deployment"],
        None,
    )
    .await;
    env.kubectl_ok(
        &[
            "rollout",
            "status",
            "deployment/test-module-deployment",
            "--timeout=30s",
        ],
        None,
    )
    .await;
    let rss = rs_list(&env).await;
    assert_eq!(rss.len(), 3);
    let newest = rss.iter().find(|r| rs_replicas(r) == 3).unwrap();
    assert_eq!(revision(newest), "4");
    auto.stop().await;
    kubelet.stop().await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_removes_unready_first_and_history_is_limited() {
    let env = Env::start().await;
    for (n, h) in [
        ("vnode.a.test", "a"),
        ("vnode.b.test", "b"),
        ("vnode.c.test", "c"),
    ] {
        create_vnode(&env, n, "test", h).await;
    }
    let kubelet = Kubelet::start(env.client.clone(), false);
    let yaml =
        module_deployment(3, "0.0.1").replace("revisionHistoryLimit: 3", "revisionHistoryLimit: 1");
    env.apply(&yaml).await;
    let sel = "module.koupleless.io/name=biz1";
    eventually("three bound pods", || async {
        let p = pods_with(&env, sel).await;
        p.len() == 3 && p.iter().all(|p| !node_of(p).is_empty())
    })
    .await;
    let pods = pods_with(&env, sel).await;
    let unready = pods[1].name_any();
    for p in &pods {
        if p.name_any() != unready {
            set_ready(&env, &p.name_any()).await;
        }
    }
    let deploys: Api<Deployment> = env.api();
    deploys
        .patch(
            "test-module-deployment",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    eventually("the unready pod is the one removed", || async {
        env.pods().get_opt(&unready).await.unwrap().is_none()
    })
    .await;
    assert_eq!(pods_with(&env, sel).await.len(), 2);

    // three template changes with revisionHistoryLimit 1: one old RS kept
    let auto = Kubelet::start(env.client.clone(), true);
    for v in ["0.0.2", "0.0.3", "0.0.4"] {
        env.apply(
            &yaml
                .replace("replicas: 3", "replicas: 2")
                .replace("0.0.1-ark", &format!("{v}-ark"))
                .replace("value: 0.0.1", &format!("value: {v}")),
        )
        .await;
        env.kubectl_ok(
            &[
                "rollout",
                "status",
                "deployment/test-module-deployment",
                "--timeout=30s",
            ],
            None,
        )
        .await;
    }
    eventually("history trimmed to one old ReplicaSet", || async {
        rs_list(&env).await.len() == 2
    })
    .await;
    let mut revs: Vec<String> = rs_list(&env).await.iter().map(revision).collect();
    revs.sort();
    assert_eq!(revs, ["3", "4"]);
    auto.stop().await;
    kubelet.stop().await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_pod_samples_bind_and_unsupported_rules_fail_loudly() {
    let env = Env::start().await;
    create_vnode(&env, "vnode.a.test", "test", "host-a").await;
    create_vnode(&env, "vnode.b.dev", "dev", "host-b").await;
    env.apply(&bare_pods()).await;
    for name in [
        "test-single-module-biz1",
        "test-biz-combine-koupleless",
        "test-single-module-biz1-version2",
    ] {
        eventually(name, || async {
            env.pods()
                .get(name)
                .await
                .is_ok_and(|p| node_of(&p) == "vnode.a.test")
        })
        .await;
    }
    // a Pod selecting labels no vnode carries (vnode.koupleless.io/*, as an
    // older upstream sample did) stays Pending with the scheduler's message
    let upstream_affinity = bare_pods()
        .split("---")
        .next()
        .unwrap()
        .replace("test-single-module-biz1", "upstream-keys")
        .replace("base.koupleless.io/name", "vnode.koupleless.io/name")
        .replace("base.koupleless.io/version", "vnode.koupleless.io/version");
    env.apply(&upstream_affinity).await;
    let want = "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
                1 node(s) had untolerated taint {schedule.koupleless.io/node-env: dev}. \
                preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.";
    eventually("unschedulable with upstream's message", || async {
        let p = env.pods().get("upstream-keys").await.unwrap();
        p.status
            .and_then(|s| s.conditions)
            .is_some_and(|c| c.iter().any(|c| c.message.as_deref() == Some(want)))
    })
    .await;
    // a rule the scheduler does not play is refused, not ignored
    let spread = r#"apiVersion: v1
kind: Pod
metadata: {name: spread, labels: {app: spread}}
spec:
  containers: [{name: c, image: x}]
  topologySpreadConstraints:
    - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: spread}}}
"#;
    env.apply(spread).await;
    eventually("spread refused", || async {
        let p = env.pods().get("spread").await.unwrap();
        node_of(&p).is_empty()
            && p.status.and_then(|s| s.conditions).is_some_and(|c| {
                c.iter().any(|c| {
                    c.reason.as_deref() == Some("Unschedulable")
                        && c.message.as_deref().is_some_and(|m| {
                            m.contains("does not implement topologySpreadConstraints")
                        })
                })
            })
    })
    .await;
    env.shutdown().await;
}

/// Upstream's published samples, verbatim (the controller's test fixtures,
/// `controller/tests/fixtures/upstream/SOURCE.md` names the commit).
const UPSTREAM: [(&str, &str); 6] = [
    (
        "module_deployment",
        include_str!("../../../controller/tests/fixtures/upstream/module_deployment.yaml"),
    ),
    (
        "module_daemonset",
        include_str!("../../../controller/tests/fixtures/upstream/module_daemonset.yaml"),
    ),
    (
        "single_module_biz1",
        include_str!("../../../controller/tests/fixtures/upstream/single_module_biz1.yaml"),
    ),
    (
        "single_module_biz2",
        include_str!("../../../controller/tests/fixtures/upstream/single_module_biz2.yaml"),
    ),
    (
        "multi_module_biz1_biz2",
        include_str!("../../../controller/tests/fixtures/upstream/multi_module_biz1_biz2.yaml"),
    ),
    (
        "single_module_biz1_version2",
        include_str!(
            "../../../controller/tests/fixtures/upstream/single_module_biz1_version2.yaml"
        ),
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_samples_verbatim_bind_to_matching_vnodes() {
    let env = Env::start().await;
    create_vnode(&env, "vnode.a.test", "test", "a").await;
    create_vnode(&env, "vnode.b.test", "test", "b").await;
    create_vnode(&env, "vnode.c.dev", "dev", "c").await; // env taint not tolerated
    for (name, yaml) in UPSTREAM {
        let (ok, out, err) = env.kubectl(&["apply", "-f", "-"], Some(yaml)).await;
        if name == "module_daemonset" {
            // invalid as published (see SOURCE.md): a real API server refuses it too
            assert!(!ok, "{out}");
            assert!(
                err.contains("`selector` does not match template `labels`"),
                "{err}"
            );
        } else {
            assert!(ok, "{name}: {err}");
        }
    }
    for pod in [
        "test-single-module-biz1",
        "test-biz2-koupleless",
        "test-biz-combine-koupleless",
        "test-single-module-biz1-version2",
    ] {
        eventually(pod, || async {
            env.pods()
                .get(pod)
                .await
                .is_ok_and(|p| node_of(&p).ends_with(".test"))
        })
        .await;
    }
    let sel = "module.koupleless.io/name=biz1,module.koupleless.io/version=0.0.1";
    eventually("the Deployment's pod on a test vnode", || async {
        let p = pods_with(&env, sel).await;
        p.len() == 1 && node_of(&p[0]).ends_with(".test")
    })
    .await;
    // scaled to 2: its own anti-affinity keeps the second replica off the
    // first one's vnode and the two-module Pod's anti-affinity (against
    // biz1 0.0.1) off the other, so it waits, as on a real cluster...
    env.kubectl_ok(
        &["scale", "deployment/test-module-deployment", "--replicas=2"],
        None,
    )
    .await;
    eventually("second replica unschedulable by anti-affinity", || async {
        pods_with(&env, sel).await.iter().any(|p| {
            node_of(p).is_empty()
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter().any(|c| {
                            c.reason.as_deref() == Some("Unschedulable")
                                && c.message.as_deref().is_some_and(|m| {
                                    m.contains("anti-affinity")
                                        && m.contains("untolerated taint {schedule.koupleless.io/node-env: dev}")
                                })
                        })
                    })
        })
    })
    .await;
    // ...until a third test vnode joins
    create_vnode(&env, "vnode.d.test", "test", "d").await;
    eventually("both replicas bound to distinct test vnodes", || async {
        let n: Vec<String> = pods_with(&env, sel).await.iter().map(node_of).collect();
        n.len() == 2 && n.iter().all(|n| n.ends_with(".test")) && n[0] != n[1]
    })
    .await;
    let multi = node_of(&env.pods().get("test-biz-combine-koupleless").await.unwrap());
    assert!(
        pods_with(&env, sel)
            .await
            .iter()
            .all(|p| node_of(p) != multi),
        "never beside the two-module Pod"
    );
    env.shutdown().await;
}

fn daemonset(version: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: test-module-daemon-set
  namespace: default
spec:
  revisionHistoryLimit: 3
  selector:
    matchLabels:
      app: test-module-daemon-set
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 30%
  template:
    metadata:
      labels:
        app: test-module-daemon-set
        virtual-kubelet.koupleless.io/component: module
    spec:
      containers:
        - name: biz1
          image: https://example.com/biz1-{version}-ark-biz.jar
          env:
            - name: BIZ_VERSION
              value: {version}
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
              - matchExpressions:
                  - key: base.koupleless.io/name
                    operator: In
                    values: [base]
      tolerations:
        - key: schedule.koupleless.io/virtual-node
          operator: Equal
          value: "True"
          effect: NoExecute
        - key: schedule.koupleless.io/node-env
          operator: Equal
          value: test
          effect: NoExecute
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_follows_nodes_and_rolls() {
    let env = Env::start().await;
    create_vnode(&env, "vnode.a.test", "test", "a").await;
    create_vnode(&env, "vnode.b.test", "test", "b").await;
    create_vnode(&env, "vnode.c.dev", "dev", "c").await; // taint not tolerated
    let kubelet = Kubelet::start(env.client.clone(), true);
    env.apply(&daemonset("0.0.1")).await;
    let sel = "app=test-module-daemon-set";
    let on_nodes = |want: &'static [&'static str]| {
        let env = &env;
        move || async move {
            let mut n: Vec<String> = pods_with(env, sel)
                .await
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(node_of)
                .collect();
            n.sort();
            n == want
        }
    };
    eventually(
        "one pod per eligible node",
        on_nodes(&["vnode.a.test", "vnode.b.test"]),
    )
    .await;
    let p = &pods_with(&env, sel).await[0];
    let terms = serde_json::to_value(&p.spec.as_ref().unwrap().affinity).unwrap();
    assert_eq!(terms.pointer("/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchFields/0/key").and_then(|v| v.as_str()), Some("metadata.name"));
    assert!(
        p.spec
            .as_ref()
            .unwrap()
            .tolerations
            .as_ref()
            .unwrap()
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unreachable"))
    );
    let dss: Api<DaemonSet> = env.api();
    eventually("status", || async {
        dss.get("test-module-daemon-set")
            .await
            .unwrap()
            .status
            .is_some_and(|s| {
                s.desired_number_scheduled == 2
                    && s.current_number_scheduled == 2
                    && s.number_ready == 2
                    && s.number_available == Some(2)
                    && s.updated_number_scheduled == Some(2)
            })
    })
    .await;

    create_vnode(&env, "vnode.d.test", "test", "d").await;
    eventually(
        "the new node gets a pod",
        on_nodes(&["vnode.a.test", "vnode.b.test", "vnode.d.test"]),
    )
    .await;
    // a Node that stops matching loses its pod
    env.nodes()
        .patch(
            "vnode.b.test",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"base.koupleless.io/name": "other"}}})),
        )
        .await
        .unwrap();
    eventually(
        "relabelled node drained",
        on_nodes(&["vnode.a.test", "vnode.d.test"]),
    )
    .await;
    // a deleted Node: its bound pod is collected (pod GC), none recreated
    env.nodes()
        .delete("vnode.d.test", &DeleteParams::default())
        .await
        .unwrap();
    eventually("deleted node's pod gone", || async {
        let n: Vec<String> = pods_with(&env, sel).await.iter().map(node_of).collect();
        n == ["vnode.a.test"]
    })
    .await;

    create_vnode(&env, "vnode.e.test", "test", "e").await;
    eventually(
        "two pods again",
        on_nodes(&["vnode.a.test", "vnode.e.test"]),
    )
    .await;
    env.apply(&daemonset("0.0.2")).await;
    env.kubectl_ok(
        &[
            "rollout",
            "status",
            "daemonset/test-module-daemon-set",
            "--timeout=30s",
        ],
        None,
    )
    .await;
    let pods = pods_with(&env, sel).await;
    assert!(
        pods.iter()
            .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref()
                == Some("https://example.com/biz1-0.0.2-ark-biz.jar")),
        "{pods:?}"
    );
    // history: one ControllerRevision per template, as upstream
    let revisions = || async {
        let revs: Api<ControllerRevision> = env.api();
        let mut v: Vec<(i64, String)> = revs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|r| {
                let image = r.data.as_ref().and_then(|d| {
                    d.0.pointer("/spec/template/spec/containers/0/image")
                        .and_then(|v| v.as_str())
                        .map(|s| s.to_string())
                });
                (r.revision, image.unwrap_or_default())
            })
            .collect();
        v.sort();
        v
    };
    eventually("two revisions", || async { revisions().await.len() == 2 }).await;
    let history = env
        .kubectl_ok(
            &["rollout", "history", "daemonset/test-module-daemon-set"],
            None,
        )
        .await;
    let rows: Vec<Vec<&str>> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows, [["1", "<none>"], ["2", "<none>"]], "{history}");
    let one = env
        .kubectl_ok(
            &[
                "rollout",
                "history",
                "daemonset/test-module-daemon-set",
                "--revision=1",
            ],
            None,
        )
        .await;
    assert!(one.contains("biz1-0.0.1-ark-biz.jar"), "{one}");
    // undo: the old template comes back and its revision becomes the newest
    env.kubectl_ok(
        &["rollout", "undo", "daemonset/test-module-daemon-set"],
        None,
    )
    .await;
    env.kubectl_ok(
        &[
            "rollout",
            "status",
            "daemonset/test-module-daemon-set",
            "--timeout=30s",
        ],
        None,
    )
    .await;
    eventually("rolled back pods", || async {
        let pods = pods_with(&env, sel).await;
        pods.len() == 2
            && pods.iter().all(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.spec.as_ref().unwrap().containers[0].image.as_deref()
                        == Some("https://example.com/biz1-0.0.1-ark-biz.jar")
            })
    })
    .await;
    eventually("revision 1 renumbered 3", || async {
        revisions().await
            == [
                (2, "https://example.com/biz1-0.0.2-ark-biz.jar".to_string()),
                (3, "https://example.com/biz1-0.0.1-ark-biz.jar".to_string()),
            ]
    })
    .await;
    // deleting the DaemonSet collects its history too
    env.kubectl_ok(&["delete", "daemonset", "test-module-daemon-set"], None)
        .await;
    eventually("revisions collected", || async {
        revisions().await.is_empty()
    })
    .await;
    kubelet.stop().await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_background_foreground_orphan() {
    let env = Env::start().await;
    for (n, h) in [("vnode.a.test", "a"), ("vnode.b.test", "b")] {
        create_vnode(&env, n, "test", h).await;
    }
    let kubelet = Kubelet::start(env.client.clone(), true);
    env.apply(&module_deployment(2, "0.0.1")).await;
    let sel = "module.koupleless.io/name=biz1";
    eventually("two pods", || async {
        pods_with(&env, sel).await.len() == 2
    })
    .await;

    // orphan: the ReplicaSet stays, without its owner reference
    env.kubectl_ok(
        &[
            "delete",
            "deployment",
            "test-module-deployment",
            "--cascade=orphan",
        ],
        None,
    )
    .await;
    eventually("deployment gone, RS orphaned", || async {
        let d: Api<Deployment> = env.api();
        let rss = rs_list(&env).await;
        d.get_opt("test-module-deployment").await.unwrap().is_none()
            && rss.len() == 1
            && rss[0].owner_references().is_empty()
    })
    .await;
    assert_eq!(pods_with(&env, sel).await.len(), 2);

    // foreground: the RS waits (finalizer) until its pods are gone
    let rs = rs_list(&env).await.remove(0);
    let rsapi: Api<ReplicaSet> = env.api();
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    rsapi.delete(&rs.name_any(), &dp).await.unwrap();
    eventually("rs and pods gone", || async {
        rsapi.get_opt(&rs.name_any()).await.unwrap().is_none()
            && pods_with(&env, sel).await.is_empty()
    })
    .await;

    // background (kubectl's default): deployment, then RS, then pods
    env.apply(&module_deployment(2, "0.0.1")).await;
    eventually("two pods again", || async {
        pods_with(&env, sel).await.len() == 2
    })
    .await;
    env.kubectl_ok(&["delete", "deployment", "test-module-deployment"], None)
        .await;
    eventually("everything collected", || async {
        rs_list(&env).await.is_empty() && pods_with(&env, sel).await.is_empty()
    })
    .await;
    kubelet.stop().await;
    env.shutdown().await;
}

fn taint_keys(n: &Node) -> Vec<String> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| {
            t.iter()
                .map(|t| format!("{}:{}", t.key, t.effect))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_lifecycle_taints_and_evicts() {
    let env = Env::start().await;
    create_vnode(&env, "vnode.a.test", "test", "a").await;
    let pod = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: x}}]\n  tolerations:\n    - {{key: schedule.koupleless.io/virtual-node, operator: Exists}}\n    - {{key: schedule.koupleless.io/node-env, operator: Exists}}\n{extra}"
        )
    };
    env.apply(&pod(
        "forever",
        "    - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute}\n",
    ))
    .await;
    env.apply(&pod("briefly", "    - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 2}\n")).await;
    // DefaultTolerationSeconds gives a Pod that says nothing 300 s; one
    // that tolerates the taint for 0 s goes at once
    env.apply(&pod("never", "    - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 0}\n")).await;
    env.apply(&pod("defaulted", "")).await;
    let defaulted = env.pods().get("defaulted").await.unwrap();
    let added: Vec<_> = defaulted
        .spec
        .unwrap()
        .tolerations
        .unwrap()
        .into_iter()
        .filter(|t| {
            t.key
                .as_deref()
                .is_some_and(|k| k.starts_with("node.kubernetes.io/"))
        })
        .map(|t| {
            (
                t.key.unwrap(),
                t.operator.unwrap(),
                t.effect.unwrap(),
                t.toleration_seconds,
            )
        })
        .collect();
    assert_eq!(
        added,
        [
            (
                "node.kubernetes.io/not-ready".to_string(),
                "Exists".to_string(),
                "NoExecute".to_string(),
                Some(300)
            ),
            (
                "node.kubernetes.io/unreachable".to_string(),
                "Exists".to_string(),
                "NoExecute".to_string(),
                Some(300)
            ),
        ],
        "admission adds both tolerations"
    );
    for n in ["forever", "briefly", "never", "defaulted"] {
        eventually(n, || async {
            env.pods()
                .get(n)
                .await
                .is_ok_and(|p| !node_of(&p).is_empty())
        })
        .await;
        set_ready(&env, n).await;
    }
    let started = std::time::Instant::now();
    env.nodes()
        .patch_status("vnode.a.test", &PatchParams::default(), &Patch::Strategic(json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady"}]}})))
        .await
        .unwrap();
    eventually("not-ready NoSchedule then NoExecute taints", || async {
        let t = taint_keys(&env.nodes().get("vnode.a.test").await.unwrap());
        t.contains(&"node.kubernetes.io/not-ready:NoSchedule".to_string())
            && t.contains(&"node.kubernetes.io/not-ready:NoExecute".to_string())
    })
    .await;
    eventually("pods turned not ready", || async {
        !is_ready(&env.pods().get("forever").await.unwrap())
    })
    .await;
    eventually("untolerating pod evicted", || async {
        env.pods()
            .get("never")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    })
    .await;
    let p = env.pods().get("never").await.unwrap();
    assert!(
        p.status
            .unwrap()
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "DisruptionTarget"
                && c.reason.as_deref() == Some("DeletionByTaintManager"))
    );
    assert!(
        env.pods()
            .get("briefly")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none(),
        "tolerated for 2 s"
    );
    eventually(
        "briefly tolerating pod evicted after its seconds",
        || async {
            env.pods()
                .get("briefly")
                .await
                .unwrap()
                .metadata
                .deletion_timestamp
                .is_some()
        },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "not before tolerationSeconds"
    );
    assert!(
        env.pods()
            .get("forever")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
    assert!(
        env.pods()
            .get("defaulted")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none(),
        "the default 300 s toleration keeps it"
    );
    // a new pod does not schedule onto the not-ready Node
    env.apply(&pod("newcomer", "")).await;
    eventually("newcomer unschedulable", || async {
        env.pods()
            .get("newcomer")
            .await
            .unwrap()
            .status
            .and_then(|s| s.conditions)
            .is_some_and(|c| {
                c.iter().any(|c| {
                    c.message.as_deref().is_some_and(|m| {
                        m.contains("had untolerated taint {node.kubernetes.io/not-ready: }")
                    })
                })
            })
    })
    .await;
    // Ready again: the taints go and the newcomer is bound
    env.nodes()
        .patch_status(
            "vnode.a.test",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            ),
        )
        .await
        .unwrap();
    eventually("taints removed", || async {
        taint_keys(&env.nodes().get("vnode.a.test").await.unwrap())
            .iter()
            .all(|t| !t.starts_with("node.kubernetes.io/"))
    })
    .await;
    eventually("newcomer bound", || async {
        !node_of(&env.pods().get("newcomer").await.unwrap()).is_empty()
    })
    .await;
    // cordon: the unschedulable taint
    env.kubectl_ok(&["cordon", "vnode.a.test"], None).await;
    eventually("unschedulable taint", || async {
        taint_keys(&env.nodes().get("vnode.a.test").await.unwrap())
            .contains(&"node.kubernetes.io/unschedulable:NoSchedule".to_string())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_walkthrough_create_scale_drain() {
    let env = Env::start().await;
    for n in ["node-1", "node-2"] {
        env.nodes()
            .create(&Default::default(), &plain_node(n))
            .await
            .unwrap();
    }
    let kubelet = Kubelet::start(env.client.clone(), true);
    env.kubectl_ok(
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=2",
        ],
        None,
    )
    .await;
    env.kubectl_ok(
        &["rollout", "status", "deployment/web", "--timeout=30s"],
        None,
    )
    .await;
    env.kubectl_ok(&["scale", "deployment", "web", "--replicas=4"], None)
        .await;
    let out = env
        .kubectl_ok(
            &["rollout", "status", "deployment/web", "--timeout=30s"],
            None,
        )
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = pods_with(&env, "app=web").await;
    assert_eq!(pods.len(), 4);
    let on_1 = pods.iter().filter(|p| node_of(p) == "node-1").count();
    assert_eq!(on_1, 2, "least allocated memory spreads the pods");
    let wide = env.kubectl_ok(&["get", "pods", "-o", "wide"], None).await;
    assert!(
        wide.contains("node-1") && wide.contains("node-2") && wide.contains("Running"),
        "{wide}"
    );
    let d = env
        .kubectl_ok(&["describe", "pod", &pods[0].name_any()], None)
        .await;
    assert!(
        d.contains("Scheduled") && d.contains("Successfully assigned default/"),
        "{d}"
    );
    // drain evicts through pods/eviction; the ReplicaSet replaces the pods on node-2
    env.kubectl_ok(
        &["drain", "node-1", "--ignore-daemonsets", "--timeout=30s"],
        None,
    )
    .await;
    eventually("all four pods on node-2", || async {
        let p = pods_with(&env, "app=web").await;
        p.len() == 4 && p.iter().all(|p| node_of(p) == "node-2")
    })
    .await;
    let n = env.nodes().get("node-1").await.unwrap();
    assert_eq!(n.spec.and_then(|s| s.unschedulable), Some(true));
    env.kubectl_ok(&["uncordon", "node-1"], None).await;
    env.kubectl_ok(&["scale", "deployment", "web", "--replicas=5"], None)
        .await;
    eventually("the fifth pod goes to the emptier node-1", || async {
        pods_with(&env, "app=web")
            .await
            .iter()
            .any(|p| node_of(p) == "node-1")
    })
    .await;
    kubelet.stop().await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_stops_old_pods_before_starting_new_ones() {
    let env = Env::start().await;
    env.nodes()
        .create(&Default::default(), &plain_node("node-1"))
        .await
        .unwrap();
    let yaml = |image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: re}}\nspec:\n  replicas: 2\n  strategy: {{type: Recreate}}\n  selector: {{matchLabels: {{app: re}}}}\n  template:\n    metadata: {{labels: {{app: re}}}}\n    spec: {{containers: [{{name: c, image: {image}}}]}}\n"
        )
    };
    let auto = Kubelet::start(env.client.clone(), true);
    env.apply(&yaml("v1")).await;
    env.kubectl_ok(
        &["rollout", "status", "deployment/re", "--timeout=30s"],
        None,
    )
    .await;
    auto.stop().await;
    env.apply(&yaml("v2")).await;
    // no kubelet: the old pods stay Terminating, so no new pod may appear
    eventually("old pods terminating", || async {
        let p = pods_with(&env, "app=re").await;
        p.len() == 2 && p.iter().all(|p| p.metadata.deletion_timestamp.is_some())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let image = |p: &Pod| {
        p.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap_or_default()
    };
    assert!(
        pods_with(&env, "app=re")
            .await
            .iter()
            .all(|p| image(p) == "v1"),
        "no v2 pod while v1 pods run"
    );
    let auto = Kubelet::start(env.client.clone(), true);
    env.kubectl_ok(
        &["rollout", "status", "deployment/re", "--timeout=30s"],
        None,
    )
    .await;
    let p = pods_with(&env, "app=re").await;
    assert_eq!(p.len(), 2);
    assert!(p.iter().all(|p| image(p) == "v2"));
    auto.stop().await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_with_controllers_converges() {
    use std::io::BufRead;
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let mut guard = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_koupleless-kube-apiserver"))
            .args(["--port", "0", "--with-controllers", "--kubeconfig"])
            .arg(&kc)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(guard.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on"), "{line}");
    let kcp = kc.clone();
    let run = move |args: Vec<&'static str>, stdin: Option<String>| {
        let kcp = kcp.clone();
        async move {
            let args: Vec<String> = args.into_iter().map(String::from).collect();
            tokio::task::spawn_blocking(move || kubectl_blocking(&kcp, &args, stdin.as_deref()))
                .await
                .unwrap()
        }
    };
    let node = serde_json::to_string(&plain_node("node-1")).unwrap();
    let (ok, _, err) = run(vec!["create", "-f", "-"], Some(node)).await;
    assert!(ok, "{err}");
    let (ok, _, err) = run(vec!["create", "deployment", "web", "--image=nginx"], None).await;
    assert!(ok, "{err}");
    eventually("a bound pod", || {
        let run = run.clone();
        async move {
            let (_, out, _) = run(
                vec![
                    "get",
                    "pods",
                    "-l",
                    "app=web",
                    "-o",
                    "jsonpath={.items[*].spec.nodeName}",
                ],
                None,
            )
            .await;
            out.trim() == "node-1"
        }
    })
    .await;
    let status = std::process::Command::new("kill")
        .args(["-INT", &guard.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        koupleless_testkit::eventually(WAIT, || {
            let exited = guard.0.try_wait().unwrap().is_some_and(|s| s.success());
            async move { exited }
        })
        .await,
        "the server and its controllers stop on Ctrl-C"
    );
}

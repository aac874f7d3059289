//! kubectl (the installed one, or `$KUBECTL`) as a client.

use crate::common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Whether to skip for want of kubectl: under `KOUPLELESS_REQUIRE_TOOLS=1` (scripts/test) a
/// missing kubectl fails the test instead; a plain `cargo test` skips and says so.
fn skip() -> bool {
    if kubectl_bin().is_none() {
        koupleless_testkit::skip_or_fail(
            "kubectl scenarios",
            "kubectl not found (set KUBECTL or put kubectl on PATH)",
        );
        return true;
    }
    false
}

pub async fn get_and_describe(ctx: Ctx) {
    if skip() {
        return;
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let node = ctx.unique("kc-node");
    let p = pods
        .create(
            &PostParams::default(),
            &pod("kc", json!({"app": "kc"}), Some(&node)),
        )
        .await
        .unwrap();
    let events: Api<Event> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let ev: Event = obj(json!({
        "metadata": {"name": "kc.1"},
        "involvedObject": {"kind": "Pod", "name": "kc", "namespace": ctx.ns, "uid": p.metadata.uid, "apiVersion": "v1"},
        "reason": "Scheduled", "message": "assigned by the test", "type": "Normal",
        "source": {"component": "koupleless-test"},
        "firstTimestamp": "2025-01-01T00:00:00Z", "lastTimestamp": "2025-01-01T00:00:00Z", "count": 1
    }));
    events.create(&PostParams::default(), &ev).await.unwrap();
    let c = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let out = kubectl_ok(&c, &["get", "pods"]);
        let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            "{out}"
        );
        assert!(out.lines().nth(1).unwrap().starts_with("kc "), "{out}");
        assert!(out.contains("Pending"), "{out}");
        let wide = kubectl_ok(&c, &["get", "pods", "-o", "wide"]);
        assert!(wide.contains(&node), "{wide}");
        let js: Value =
            serde_json::from_str(&kubectl_ok(&c, &["get", "pod", "kc", "-o", "json"])).unwrap();
        assert_eq!(js["metadata"]["labels"]["app"], "kc");
        assert_eq!(js["kind"], "Pod");
        let list: Value = serde_json::from_str(&kubectl_ok(
            &c,
            &["get", "pods", "-l", "app=kc", "-o", "json"],
        ))
        .unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        let jp = kubectl_ok(&c, &["get", "pod", "kc", "-o", "jsonpath={.spec.nodeName}"]);
        assert_eq!(jp, node);
        let yaml = kubectl_ok(&c, &["get", "pod", "kc", "-o", "yaml"]);
        assert!(yaml.contains("name: kc"), "{yaml}");
        let d = kubectl_ok(&c, &["describe", "pod", "kc"]);
        assert!(
            d.lines()
                .any(|l| l.starts_with("Name:") && l.ends_with("kc")),
            "{d}"
        );
        assert!(
            d.contains("assigned by the test"),
            "describe shows the pod's events: {d}"
        );
        let nd = kubectl(&c, &["describe", "node", &node]);
        // the node does not exist: describe says so
        assert!(!nd.status.success());
        let ev = kubectl_ok(&c, &["get", "events"]);
        assert!(ev.contains("Scheduled") && ev.contains("pod/kc"), "{ev}");
        let missing = kubectl(&c, &["get", "pod", "missing"]);
        assert!(!missing.status.success());
        let err = String::from_utf8_lossy(&missing.stderr);
        assert!(
            err.contains("NotFound") && err.contains("\"missing\" not found"),
            "{err}"
        );
        // force delete the bound pod
        kubectl_ok(&c, &["delete", "pod", "kc", "--grace-period=0", "--force"]);
    })
    .await
    .unwrap();
}

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: kapply
  labels:
    app: kapply
spec:
  replicas: REPLICAS
  selector:
    matchLabels:
      app: kapply
  template:
    metadata:
      labels:
        app: kapply
    spec:
      containers:
      - name: web
        image: nginx:1.25
        ports:
        - containerPort: 80
"#;

pub async fn apply(ctx: Ctx) {
    if skip() {
        return;
    }
    let c = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let out = kubectl_stdin(
            &c,
            &["apply", "-f", "-"],
            Some(&DEPLOYMENT.replace("REPLICAS", "1")),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("deployment.apps/kapply created"));
        let out = kubectl_stdin(
            &c,
            &["apply", "-f", "-"],
            Some(&DEPLOYMENT.replace("REPLICAS", "3")),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("configured"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(
            kubectl_ok(
                &c,
                &["get", "deploy", "kapply", "-o", "jsonpath={.spec.replicas}"]
            ),
            "3"
        );
        let out = kubectl_stdin(
            &c,
            &["apply", "-f", "-"],
            Some(&DEPLOYMENT.replace("REPLICAS", "3")),
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("unchanged"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        // switching to server-side apply with the same values: kubectl then
        // migrates the client-side-apply ownership to its apply manager
        let out = kubectl_stdin(
            &c,
            &["apply", "--server-side", "-f", "-"],
            Some(&DEPLOYMENT.replace("REPLICAS", "3")),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("serverside-applied"));
        let out = kubectl_stdin(
            &c,
            &["apply", "--server-side", "-f", "-"],
            Some(&DEPLOYMENT.replace("REPLICAS", "4")),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            kubectl_ok(
                &c,
                &["get", "deploy", "kapply", "-o", "jsonpath={.spec.replicas}"]
            ),
            "4"
        );
        // another manager changing an owned field conflicts unless forced
        let other = ["apply", "--server-side", "--field-manager=other", "-f", "-"];
        let out = kubectl_stdin(&c, &other, Some(&DEPLOYMENT.replace("REPLICAS", "5")));
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("conflict with \"kubectl\"") && err.contains(".spec.replicas"),
            "{err}"
        );
        let forced = [
            "apply",
            "--server-side",
            "--field-manager=other",
            "--force-conflicts",
            "-f",
            "-",
        ];
        let out = kubectl_stdin(&c, &forced, Some(&DEPLOYMENT.replace("REPLICAS", "5")));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            kubectl_ok(
                &c,
                &["get", "deploy", "kapply", "-o", "jsonpath={.spec.replicas}"]
            ),
            "5"
        );
        let table = kubectl_ok(&c, &["get", "deployments"]);
        let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            "{table}"
        );
        let out = kubectl_stdin(
            &c,
            &["create", "-f", "-"],
            Some(&DEPLOYMENT.replace("REPLICAS", "1")),
        );
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("AlreadyExists"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        kubectl_ok(&c, &["delete", "deployment", "kapply"]);
    })
    .await
    .unwrap();
    let deps: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    assert!(deps.get_opt("kapply").await.unwrap().is_none());
}

pub async fn patch_label_annotate(ctx: Ctx) {
    if skip() {
        return;
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    pods.create(&PostParams::default(), &pod("kp", json!({}), None))
        .await
        .unwrap();
    let c = ctx.clone();
    tokio::task::spawn_blocking(move || {
        kubectl_ok(&c, &["label", "pod", "kp", "tier=fe"]);
        kubectl_ok(&c, &["annotate", "pod", "kp", "note=hi"]);
        kubectl_ok(
            &c,
            &[
                "patch",
                "pod",
                "kp",
                "--type=merge",
                "-p",
                r#"{"metadata":{"labels":{"m":"1"}}}"#,
            ],
        );
        kubectl_ok(
            &c,
            &[
                "patch",
                "pod",
                "kp",
                "--type=json",
                "-p",
                r#"[{"op":"add","path":"/metadata/labels/j","value":"2"}]"#,
            ],
        );
        kubectl_ok(
            &c,
            &[
                "patch",
                "pod",
                "kp",
                "-p",
                r#"{"spec":{"containers":[{"name":"main","image":"busybox:1.37"}]}}"#,
            ],
        );
        kubectl_ok(
            &c,
            &[
                "patch",
                "pod",
                "kp",
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"phase":"Running"}}"#,
            ],
        );
        let js: Value =
            serde_json::from_str(&kubectl_ok(&c, &["get", "pod", "kp", "-o", "json"])).unwrap();
        let l = &js["metadata"]["labels"];
        assert_eq!(
            (l["tier"].as_str(), l["m"].as_str(), l["j"].as_str()),
            (Some("fe"), Some("1"), Some("2"))
        );
        assert_eq!(js["metadata"]["annotations"]["note"], "hi");
        assert_eq!(js["spec"]["containers"][0]["image"], "busybox:1.37");
        assert_eq!(js["status"]["phase"], "Running");
        let out = kubectl(
            &c,
            &[
                "patch",
                "pod",
                "kp",
                "-p",
                r#"{"spec":{"nodeName":"elsewhere"}}"#,
            ],
        );
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("is invalid"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await
    .unwrap();
}

pub async fn wait_and_delete(ctx: Ctx) {
    if skip() {
        return;
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    pods.create(&PostParams::default(), &pod("kw", json!({}), None))
        .await
        .unwrap();
    let c = ctx.clone();
    let waiter = tokio::task::spawn_blocking(move || {
        kubectl(
            &c,
            &["wait", "--for=condition=Ready", "pod/kw", "--timeout=20s"],
        )
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    pods.patch_status(
        "kw",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}})),
    )
    .await
    .unwrap();
    let out = waiter.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("condition met"));
    let c = ctx.clone();
    tokio::task::spawn_blocking(move || {
        kubectl_ok(
            &c,
            &[
                "wait",
                "--for=jsonpath={.status.phase}=Pending",
                "pod/kw",
                "--timeout=10s",
            ],
        );
        let out = kubectl_ok(&c, &["delete", "pod", "kw"]);
        assert!(out.contains("pod \"kw\" deleted"), "{out}");
        let out = kubectl_ok(&c, &["wait", "--for=delete", "pod/kw", "--timeout=10s"]);
        let _ = out;
    })
    .await
    .unwrap();
    assert!(pods.get_opt("kw").await.unwrap().is_none());
}

pub async fn get_watch(ctx: Ctx) {
    if skip() {
        return;
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    pods.create(&PostParams::default(), &pod("kgw", json!({}), None))
        .await
        .unwrap();
    let mut child = Command::new(kubectl_bin().unwrap())
        .env("KUBECONFIG", &ctx.kubeconfig)
        .args(["-n", &ctx.ns, "get", "pods", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pods.patch(
        "kgw",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"w": "1"}}})),
    )
    .await
    .unwrap();
    pods.create(&PostParams::default(), &pod("kgw2", json!({}), None))
        .await
        .unwrap();
    pods.delete("kgw2", &Default::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = child.wait();
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0][..3], ["EVENT", "NAME", "READY"], "{out}\n{err}");
    let events: Vec<(&str, &str)> = lines[1..].iter().map(|l| (l[0], l[1])).collect();
    assert_eq!(
        events,
        vec![
            ("ADDED", "kgw"),
            ("MODIFIED", "kgw"),
            ("ADDED", "kgw2"),
            ("DELETED", "kgw2")
        ],
        "{out}\n{err}"
    );
}

//! `kubectl logs` on a module Pod, end to end: kubectl -> the API test server's `pods/log`
//! (with its kubelet client certificate) -> our controller's kubelet API on the vnode's
//! kubelet endpoint -> our agent's `GET /logs/{name}/{version}` -> the module JVM's own output.
//! A two-module Deployment applied with kubectl; each container shows its own module's log,
//! `--tail` and `-f` work, and the controller's kubelet port refuses a caller without
//! credentials.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Replica, TOKEN, http_settings, node_ready, running_ready, start_base};
use k8s_openapi::api::core::v1::{Node, Pod};
use koupleless_testkit::{Behaviour, BizJar, eventually, file_url, java_available};
use kube::Api;
use kube::api::ListParams;

const T: Duration = Duration::from_secs(90);

fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl is installed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn deployment(image_a: &str, image_b: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: logs-demo
spec:
  replicas: 1
  selector:
    matchLabels: {{app: logs-demo}}
  template:
    metadata:
      labels:
        app: logs-demo
        virtual-kubelet.koupleless.io/component: module
    spec:
      containers:
      - name: biz-a
        image: {image_a}
        env: [{{name: BIZ_VERSION, value: 1.0.0}}]
      - name: biz-b
        image: {image_b}
        env: [{{name: BIZ_VERSION, value: 1.0.0}}]
      tolerations:
      - {{key: schedule.koupleless.io/virtual-node, operator: Equal, value: "True", effect: NoExecute}}
      - {{key: schedule.koupleless.io/node-env, operator: Equal, value: dev, effect: NoExecute}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_shows_each_modules_own_output() {
    assert!(java_available(), "this test needs java and javac");
    let tmp = tempfile::tempdir().unwrap();
    let (client, cluster) = koupleless_kube_apiserver::cluster::start_cluster()
        .await
        .expect("test cluster");
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.server().kubeconfig_yaml()).unwrap();
    let base = start_base(tmp.path());

    // Module a prints twelve lines, then waits for the test's go to print its last one.
    let go = tmp.path().join("go");
    let mut a = BizJar::new("biz-a", "1.0.0").file_name("biz-a.jar");
    for i in 1..=12 {
        a = a.behaviour(Behaviour::PrintLine(format!("a line {i}")));
    }
    let a = a
        .behaviour(Behaviour::ExitWhenFileExists(go.clone()))
        .build(tmp.path());
    let b = BizJar::new("biz-b", "1.0.0")
        .file_name("biz-b.jar")
        .behaviour(Behaviour::PrintLine("b says hello".into()))
        .behaviour(Behaviour::StayUp)
        .build(tmp.path());

    // The controller trusts the API server's kubelet client certificate and advertises its
    // kubelet port on the vnodes.
    let ca = tmp.path().join("kubelet-client-ca.crt");
    std::fs::write(
        &ca,
        koupleless_kube_apiserver::kubelet_client::KUBELET_CLIENT_CA_PEM,
    )
    .unwrap();
    let kubelet = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let kubelet_addr = kubelet.local_addr().unwrap();
    let mut settings = http_settings("ctl-logs");
    settings.node.kubelet_port = i32::from(kubelet_addr.port());
    settings.kubelet.client_ca = Some(ca);
    settings.kubelet.arklet_token = koupleless_controller::config::BearerToken::new(TOKEN);
    let controller = Replica::start_with_kubelet(&client, settings, Some(kubelet)).await;

    let pid = base.0.id().to_string();
    let work = tmp.path().join("agent");
    let endpoint = format!("http://{}", controller.http.unwrap());
    let agent = common::start_agent(&[
        "--local-ip",
        "127.0.0.1",
        "--api-token",
        TOKEN,
        "--work-dir",
        work.to_str().unwrap(),
        "--base-identity",
        "base-logs",
        "--base-pid",
        &pid,
        "--controller-endpoint",
        &endpoint,
        "--http-heartbeat-interval",
        "1s",
    ])
    .await;

    let nodes: Api<Node> = Api::all(client.clone());
    assert!(
        eventually(T, || {
            let nodes = nodes.clone();
            async move {
                nodes
                    .get_opt("vnode.base-logs.dev")
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|n| node_ready(&n).as_deref() == Some("True"))
            }
        })
        .await,
        "vnode Ready"
    );
    let manifest = tmp.path().join("deployment.yaml");
    std::fs::write(&manifest, deployment(&file_url(&a), &file_url(&b))).unwrap();
    let (ok, _, err) = kubectl(&kubeconfig, &["apply", "-f", manifest.to_str().unwrap()]);
    assert!(ok, "kubectl apply: {err}");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let running = eventually(T, || {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default().labels("app=logs-demo"))
                .await
                .is_ok_and(|l| l.items.len() == 1 && running_ready(&l.items[0]))
        }
    })
    .await;
    let list = pods
        .list(&ListParams::default().labels("app=logs-demo"))
        .await
        .unwrap();
    assert!(running, "module Pod Running/Ready: {:?}", list.items);
    let pod = list.items[0].metadata.name.clone().unwrap();

    // Each container shows its own module's output.
    let (ok, out_a, err) = kubectl(&kubeconfig, &["logs", &pod, "-c", "biz-a"]);
    assert!(ok, "kubectl logs -c biz-a: {err}");
    assert!(
        out_a.contains("a line 1\n") && out_a.contains("a line 12\n"),
        "{out_a}"
    );
    assert!(!out_a.contains("b says hello"), "{out_a}");
    let (ok, out_b, err) = kubectl(&kubeconfig, &["logs", &pod, "-c", "biz-b"]);
    assert!(ok, "kubectl logs -c biz-b: {err}");
    assert!(
        out_b.contains("b says hello\n") && !out_b.contains("a line"),
        "{out_b}"
    );

    // --tail 5: the last five lines.
    let (ok, tail, err) = kubectl(&kubeconfig, &["logs", &pod, "-c", "biz-a", "--tail", "5"]);
    assert!(ok, "kubectl logs --tail 5: {err}");
    assert_eq!(
        tail, "a line 8\na line 9\na line 10\na line 11\na line 12\n",
        "--tail 5"
    );

    // --timestamps: RFC 3339 times in front.
    let (ok, stamped, err) = kubectl(
        &kubeconfig,
        &["logs", &pod, "-c", "biz-a", "--tail", "1", "--timestamps"],
    );
    assert!(ok, "kubectl logs --timestamps: {err}");
    let (t, line) = stamped.trim_end().split_once(' ').unwrap();
    assert!(t.ends_with('Z') && t.contains('T'), "{stamped}");
    assert_eq!(line, "a line 12");

    // -f: follows the module's log; the line printed after the test's go arrives.
    let mut follow = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["logs", "-f", &pod, "-c", "biz-a"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("kubectl logs -f prints the log so far");
    assert!(
        first.contains("dependency loaded") || first == "a line 1",
        "{first}"
    );
    std::fs::write(&go, "").unwrap();
    let mut seen = Vec::new();
    let late = loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if l.contains("koupleless-testkit: exiting") => break true,
            Ok(l) => seen.push(l),
            Err(_) => break false,
        }
    };
    let _ = follow.kill();
    let _ = follow.wait();
    let _ = reader.join();
    assert!(late, "the line printed after -f started arrives: {seen:?}");

    // The controller's kubelet port itself: TLS, and no entry without credentials.
    let resp = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .get(format!(
            "https://{kubelet_addr}/containerLogs/default/{pod}/biz-a"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    agent.shutdown().await;
    controller.stop().await;
    drop(cluster);
}

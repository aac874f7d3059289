//! The vnodes' kubelet API (`kubectl logs` for module Pods): TLS, callers authenticated as a
//! kubelet authenticates them (a client certificate signed by the configured CA; nothing else
//! gets in), `containerLogs` resolved from the Pod to the module's own log on the agent beside
//! its base (with the agent token and the kubelet's options), and plain answers for what a
//! module cannot do or does not have.

mod common;

use std::sync::{Arc, Mutex};

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::get;
use common::{Kube, settings};
use k8s_openapi::api::core::v1::{Node, Pod};
use koupleless_controller::Listeners;
use koupleless_controller::config::BearerToken;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// What the fake agent was asked.
#[derive(Clone, Debug, Default)]
struct Asked {
    path: String,
    query: String,
    authorization: String,
}

/// The agent's `GET /logs/{name}/{version}`.
async fn fake_agent() -> (u16, Arc<Mutex<Vec<Asked>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route(
            "/logs/{name}/{version}",
            get(
                |State(log): State<Arc<Mutex<Vec<Asked>>>>,
                 Path((name, version)): Path<(String, String)>,
                 RawQuery(q): RawQuery,
                 headers: HeaderMap| async move {
                    log.lock().unwrap().push(Asked {
                        path: format!("{name}/{version}"),
                        query: q.unwrap_or_default(),
                        authorization: headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned(),
                    });
                    format!("{name} {version} line 1\n{name} {version} line 2\n")
                },
            ),
        )
        .with_state(asked.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (port, asked)
}

/// A CA, and a client certificate it signed (PEM: CA cert; client cert + key).
fn pki() -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
    let client_key = KeyPair::generate().unwrap();
    let client_cert = client.signed_by(&client_key, &issuer).unwrap();
    (
        ca_cert.pem(),
        format!("{}{}", client_cert.pem(), client_key.serialize_pem()),
    )
}

fn https(identity: Option<&str>) -> reqwest::Client {
    let mut b = reqwest::Client::builder().danger_accept_invalid_certs(true);
    if let Some(pem) = identity {
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// A running controller with its kubelet API, a vnode-shaped Node (no component label: the
/// controller leaves it alone) whose base's agent is the fake one, and a two-module Pod on it
/// with one module installed, plus a plain Pod.
struct World {
    base: String,
    asked: Arc<Mutex<Vec<Asked>>>,
    cancel: CancellationToken,
    controller: tokio::task::JoinHandle<Result<(), koupleless_controller::Error>>,
}

impl World {
    async fn start(client: &kube::Client, client_ca: Option<std::path::PathBuf>) -> World {
        let (agent_port, asked) = fake_agent().await;
        let mut s = settings("ctl-kubelet", None, true);
        s.kubelet.client_ca = client_ca;
        s.kubelet.arklet_token = BearerToken::new("agent-secret");
        let kubelet = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let kubelet_addr = kubelet.local_addr().unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cancel = CancellationToken::new();
        let controller = tokio::spawn(koupleless_controller::run(
            s,
            client.clone(),
            Listeners {
                http_tunnel: Some(http),
                kubelet: Some(kubelet),
                ..Listeners::default()
            },
            cancel.clone(),
        ));
        let nodes: Api<Node> = Api::all(client.clone());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "vnode.logs.suite",
                "labels": {"base.koupleless.io/tunnel-port": agent_port.to_string()}},
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "two", "namespace": "default",
                "labels": {"virtual-kubelet.koupleless.io/component": "module"}},
            "spec": {"nodeName": "vnode.logs.suite", "containers": [
                {"name": "biz1", "image": "https://r/biz1.jar"},
                {"name": "biz2", "image": "https://r/biz2.jar"}]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        let status = json!({"status": {"hostIP": "127.0.0.1", "containerStatuses": [{
            "name": "biz1", "image": "https://r/biz1.jar", "imageID": "https://r/biz1.jar",
            "ready": true, "restartCount": 0,
            "containerID": "koupleless://vnode.logs.suite/biz1:1.0.0"}]}});
        pods.patch_status("two", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
        let plain: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "plain", "namespace": "default"},
            "spec": {"nodeName": "vnode.logs.suite", "containers": [{"name": "c", "image": "nginx"}]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &plain).await.unwrap();
        let base = format!("https://{kubelet_addr}");
        let probe = https(None);
        let url = format!("{base}/healthz");
        let up = koupleless_testkit::eventually(std::time::Duration::from_secs(20), || {
            let (c, url) = (probe.clone(), url.clone());
            async move { c.get(url).send().await.is_ok() }
        })
        .await;
        assert!(up, "the kubelet API serves TLS");
        World {
            base,
            asked,
            cancel,
            controller,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn calls(&self) -> usize {
        self.asked.lock().unwrap().len()
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.controller.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_logs_of_a_module_pod() {
    let kube = Kube::start().await;
    let (ca_pem, client_pem) = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let w = World::start(&kube.client, Some(ca_file)).await;
    let trusted = https(Some(&client_pem));

    // The module's own log, with the kubelet's options passed on and the agent token sent.
    let resp = trusted
        .get(w.url(
            "/containerLogs/default/two/biz1?tailLines=5&timestamps=true&follow=false&insecureSkipTLSVerifyBackend=true",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.unwrap(),
        "biz1 1.0.0 line 1\nbiz1 1.0.0 line 2\n"
    );
    let a = w.asked.lock().unwrap().last().cloned().unwrap();
    assert_eq!(a.path, "biz1/1.0.0");
    assert_eq!(a.query, "tailLines=5&timestamps=true&follow=false");
    assert_eq!(a.authorization, "Bearer agent-secret");

    // Who may not, and what is not there.
    let cases = [
        (https(None), "/containerLogs/default/two/biz1", 401),
        (trusted.clone(), "/containerLogs/default/two/biz2", 400),
        (trusted.clone(), "/containerLogs/default/two/nope", 404),
        (trusted.clone(), "/containerLogs/default/missing/biz1", 404),
        (trusted.clone(), "/containerLogs/default/plain/c", 404),
        (trusted.clone(), "/exec/default/two/biz1", 501),
        (trusted.clone(), "/attach/default/two/biz1", 501),
        (trusted.clone(), "/portForward/default/two", 501),
        (trusted.clone(), "/stats/summary", 404),
    ];
    let before = w.calls();
    for (client, path, want) in cases {
        let resp = client.get(w.url(path)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), want, "{path}");
    }
    // The base's agent is down: 502 naming the address, nothing hangs.
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let nodes: Api<Node> = Api::all(kube.client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "vnode.dead.suite",
            "labels": {"base.koupleless.io/tunnel-port": dead_port.to_string()}},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(kube.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orphaned", "namespace": "default",
            "labels": {"virtual-kubelet.koupleless.io/component": "module"}},
        "spec": {"nodeName": "vnode.dead.suite", "containers": [
            {"name": "biz1", "image": "https://r/biz1.jar"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {"hostIP": "127.0.0.1", "containerStatuses": [{
        "name": "biz1", "image": "https://r/biz1.jar", "imageID": "https://r/biz1.jar",
        "ready": true, "restartCount": 0,
        "containerID": "koupleless://vnode.dead.suite/biz1:1.0.0"}]}});
    pods.patch_status("orphaned", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let resp = trusted
        .get(w.url("/containerLogs/default/orphaned/biz1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(&format!("127.0.0.1:{dead_port}")),
        "names the agent's address: {text}"
    );

    // Without RBAC this test server authenticates no token: 401.
    let resp = https(None)
        .get(w.url("/containerLogs/default/two/biz1"))
        .bearer_auth("some-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(w.calls(), before, "no refused call reached the agent");
    w.stop().await;
}

/// Bearer tokens, as a kubelet checks them: TokenReview authenticates, SubjectAccessReview on
/// the vnode's `nodes/proxy` authorizes (the API test server enforcing RBAC).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_reviewed() {
    let (admin, server) =
        koupleless_kube_apiserver::start_with(koupleless_kube_apiserver::Config {
            rbac: true,
            ..Default::default()
        })
        .await
        .expect("API test server with RBAC");
    let w = World::start(&admin, None).await;

    // Two ServiceAccounts: one granted nodes/proxy, one granted nothing.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(admin.clone(), "default");
    for name in ["log-reader", "nobody"] {
        let sa = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        sas.create(&PostParams::default(), &sa).await.unwrap();
    }
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(admin.clone());
    let role = serde_json::from_value(json!({
        "metadata": {"name": "node-logs"},
        "rules": [{"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]}],
    }))
    .unwrap();
    roles.create(&PostParams::default(), &role).await.unwrap();
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(admin.clone());
    let binding = serde_json::from_value(json!({
        "metadata": {"name": "node-logs"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "node-logs"},
        "subjects": [{"kind": "ServiceAccount", "name": "log-reader", "namespace": "default"}],
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let reader = server
        .service_account_token("default", "log-reader")
        .unwrap();
    let nobody = server.service_account_token("default", "nobody").unwrap();
    let call = |token: String| {
        let url = w.url("/containerLogs/default/two/biz1");
        async move {
            https(None)
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let resp = call(reader).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("biz1 1.0.0 line 1"));
    let before = w.calls();
    let resp = call(nobody).await;
    assert_eq!(resp.status(), 403);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("system:serviceaccount:default:nobody"),
        "the 403 names the user"
    );
    assert_eq!(call("not-a-token".into()).await.status(), 401);
    assert_eq!(w.calls(), before, "refused callers never reach the agent");
    w.stop().await;
    drop(server);
}

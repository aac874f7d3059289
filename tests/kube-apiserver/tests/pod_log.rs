//! `pods/log` through a fake kubelet: an axum server over rustls that
//! authenticates callers by a client certificate signed by
//! `KUBELET_CLIENT_CA_PEM` (401 without one, as a kubelet), serves
//! `/containerLogs/{ns}/{pod}/{container}` from a fixed log with the
//! options applied, and follows with lines the test pushes. kubectl logs
//! (`-c`, `--tail`, `-f`, `--timestamps`, `--since`) runs through the test
//! server; the error cases are checked against upstream's answers.

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use koupleless_kube_apiserver::kubelet_client::{
    KUBELET_CLIENT_CA_PEM, KUBELET_CLIENT_CERT_PEM, KUBELET_SERVING_CERT_PEM,
    KUBELET_SERVING_KEY_PEM, KubeletConfig,
};
use koupleless_kube_apiserver::tls::pem_to_der;
use koupleless_kube_apiserver::{ApiServerHandle, Config, start_with};
use koupleless_testkit::wait_until;
use kube::api::{Api, PostParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

const WAIT: Duration = Duration::from_secs(20);

// ------------------------------------------------------------ fake kubelet

/// What the fake kubelet saw and the follow streams it holds.
#[derive(Default)]
struct KubeletState {
    /// Every request: path and query, and whether the caller presented
    /// exactly the API server's kubelet client certificate.
    seen: Mutex<Vec<(String, bool)>>,
    /// Senders of the open follow streams.
    live: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<String>>>,
    /// Follow streams whose client went away.
    closed: AtomicUsize,
}

struct FakeKubelet {
    addr: SocketAddr,
    state: Arc<KubeletState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeKubelet {
    fn seen(&self) -> Vec<(String, bool)> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Sends `line` to every open follow stream; how many took it.
    fn push(&self, line: &str) -> usize {
        let mut live = self.state.live.lock().unwrap();
        live.retain(|tx| tx.send(line.to_string()).is_ok());
        live.len()
    }

    fn followers(&self) -> usize {
        let mut live = self.state.live.lock().unwrap();
        live.retain(|tx| !tx.is_closed());
        live.len()
    }
}

/// The peer's certificate chain, taken from the TLS session.
#[derive(Clone)]
struct Peer(Option<Vec<u8>>);

struct KubeletListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for KubeletListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((sock, addr)) = self.tcp.accept().await else {
                continue;
            };
            // a caller whose certificate does not verify fails here, as at a kubelet
            if let Ok(tls) = self.acceptor.accept(sock).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, KubeletListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, KubeletListener>) -> Self {
        Peer(
            stream
                .io()
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec()),
        )
    }
}

fn kubelet_tls() -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(pem_to_der(KUBELET_CLIENT_CA_PEM)))
        .unwrap();
    // as a kubelet: a certificate is optional at the TLS layer (anonymous
    // callers get 401 from the handler), but one that is presented must verify
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    let cert = CertificateDer::from(pem_to_der(KUBELET_SERVING_CERT_PEM));
    let key = PrivateKeyDer::from_pem_slice(KUBELET_SERVING_KEY_PEM.as_bytes()).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

/// The container's log: ten lines, the first five an hour old, the last
/// five from now, each with its RFC 3339 timestamp.
fn log_lines(container: &str) -> Vec<(chrono::DateTime<chrono::Utc>, String)> {
    let now = chrono::Utc::now();
    (1..=10)
        .map(|i| {
            let t = if i <= 5 {
                now - chrono::Duration::hours(1) + chrono::Duration::seconds(i)
            } else {
                now - chrono::Duration::seconds(10 - i)
            };
            (t, format!("{container} line {i}"))
        })
        .collect()
}

fn render(t: &chrono::DateTime<chrono::Utc>, line: &str, timestamps: bool) -> String {
    if timestamps {
        format!(
            "{} {line}\n",
            t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
        )
    } else {
        format!("{line}\n")
    }
}

/// Counts a follow stream as closed when its body is dropped.
struct ClosedOnDrop(Arc<KubeletState>);

impl Drop for ClosedOnDrop {
    fn drop(&mut self) {
        self.0.closed.fetch_add(1, Ordering::SeqCst);
    }
}

async fn container_logs(
    State(state): State<Arc<KubeletState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path((_ns, pod, container)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    uri: http::Uri,
) -> Response {
    let apiserver = peer.0.as_deref() == Some(pem_to_der(KUBELET_CLIENT_CERT_PEM).as_slice());
    let pq = uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    state.seen.lock().unwrap().push((pq, apiserver));
    if peer.0.is_none() {
        return (http::StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    }
    match pod.as_str() {
        "p401" => return (http::StatusCode::UNAUTHORIZED, "Unauthorized").into_response(),
        "p403" => {
            return (
                http::StatusCode::FORBIDDEN,
                "Forbidden (user=kube-apiserver-kubelet-client, verb=get, resource=nodes, subresource=proxy)",
            )
                .into_response();
        }
        "p404" => return (http::StatusCode::NOT_FOUND, "404 page not found").into_response(),
        "p500" => {
            return (http::StatusCode::INTERNAL_SERVER_ERROR, "agent unreachable").into_response();
        }
        "p501" => return (http::StatusCode::NOT_IMPLEMENTED, "not served").into_response(),
        _ => {}
    }
    let timestamps = q.get("timestamps").is_some_and(|v| v == "true");
    let mut lines = log_lines(&container);
    if let Some(s) = q.get("sinceSeconds").and_then(|v| v.parse::<i64>().ok()) {
        let since = chrono::Utc::now() - chrono::Duration::seconds(s);
        lines.retain(|(t, _)| *t >= since);
    }
    if let Some(n) = q.get("tailLines").and_then(|v| v.parse::<usize>().ok()) {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let head: String = lines
        .iter()
        .map(|(t, l)| render(t, l, timestamps))
        .collect();
    if q.get("follow").is_none_or(|v| v != "true") {
        return (
            [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            head,
        )
            .into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    state.live.lock().unwrap().push(tx);
    let guard = ClosedOnDrop(state.clone());
    let first = futures::stream::once(async move { Ok::<_, std::io::Error>(head) });
    let rest = futures::stream::unfold((rx, guard), move |(mut rx, guard)| async move {
        let line = rx.recv().await?;
        let out = render(&chrono::Utc::now(), &line, timestamps);
        Some((Ok(out), (rx, guard)))
    });
    let body = axum::body::Body::from_stream(futures::StreamExt::chain(first, rest));
    (
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn start_kubelet() -> FakeKubelet {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let state = Arc::new(KubeletState::default());
    let app = axum::Router::new()
        .route(
            "/containerLogs/{ns}/{pod}/{container}",
            axum::routing::get(container_logs),
        )
        .with_state(state.clone());
    let listener = KubeletListener {
        tcp,
        acceptor: kubelet_tls(),
    };
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>()).await;
    });
    FakeKubelet { addr, state, task }
}

// ------------------------------------------------------------ cluster objects

async fn node(client: &kube::Client, name: &str, ip: &str, port: u16) {
    let nodes: Api<Node> = Api::all(client.clone());
    let n: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name},
        "status": {
            "addresses": [
                {"type": "Hostname", "address": name},
                {"type": "InternalIP", "address": ip},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        },
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
}

async fn pod(client: &kube::Client, name: &str, node: Option<&str>, containers: &[&str]) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": containers.iter().map(|c| json!({"name": c, "image": "x"})).collect::<Vec<_>>()},
    });
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    pods.create(&PostParams::default(), &serde_json::from_value(p).unwrap())
        .await
        .unwrap();
}

/// `GET path` on the test server: status and body.
async fn get(client: &kube::Client, path: &str) -> (u16, String) {
    let req = http::Request::get(path)
        .body(kube::client::Body::empty())
        .unwrap();
    let resp = client.send(req).await.unwrap();
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8_lossy(&body).into_owned())
}

async fn get_status(client: &kube::Client, path: &str) -> (u16, Value) {
    let (code, body) = get(client, path).await;
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (code, v)
}

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out =
        std::process::Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
            .env("KUBECONFIG", kubeconfig)
            .args(args)
            .output()
            .expect("kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn kubectl_async(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let kc = kubeconfig.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        kubectl(&kc, &refs)
    })
    .await
    .unwrap()
}

async fn server(rbac: bool) -> (kube::Client, ApiServerHandle) {
    start_with(Config {
        rbac,
        ..Default::default()
    })
    .await
    .unwrap()
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

// ------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_reads_the_kubelet_with_the_client_certificate() {
    let kubelet = start_kubelet().await;
    // HTTPS with a bearer token, so kubectl runs as it does against a real cluster
    let (client, server) = server(true).await;
    node(&client, "n1", "127.0.0.1", kubelet.addr.port()).await;
    pod(&client, "two", Some("n1"), &["a", "b"]).await;
    let kc = server.write_kubeconfig_tempfile().unwrap();

    let (ok, out, err) = kubectl_async(kc.path(), &["logs", "two", "-c", "b"]).await;
    assert!(ok, "{err}");
    let want: Vec<String> = (1..=10).map(|i| format!("b line {i}")).collect();
    assert_eq!(lines(&out), want);

    let (ok, out, err) = kubectl_async(kc.path(), &["logs", "two", "-c", "a", "--tail", "3"]).await;
    assert!(ok, "{err}");
    assert_eq!(lines(&out), ["a line 8", "a line 9", "a line 10"]);

    // kubectl picks the first container itself and says so
    let (ok, out, err) = kubectl_async(kc.path(), &["logs", "two", "--tail=1"]).await;
    assert!(ok, "{err}");
    assert_eq!(lines(&out), ["a line 10"]);
    assert!(
        err.contains("Defaulted container \"a\" out of: a, b"),
        "{err}"
    );

    let (ok, out, err) = kubectl_async(kc.path(), &["logs", "two", "-c", "b", "--since=5m"]).await;
    assert!(ok, "{err}");
    let want: Vec<String> = (6..=10).map(|i| format!("b line {i}")).collect();
    assert_eq!(lines(&out), want);

    let (ok, out, err) = kubectl_async(
        kc.path(),
        &["logs", "two", "-c", "b", "--timestamps", "--tail=2"],
    )
    .await;
    assert!(ok, "{err}");
    let got = lines(&out);
    assert_eq!(got.len(), 2, "{out}");
    for (l, n) in got.iter().zip([9, 10]) {
        let (ts, rest) = l.split_once(' ').unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{l}");
        assert_eq!(rest, format!("b line {n}"));
    }

    let (ok, _, err) = kubectl_async(kc.path(), &["logs", "two", "-c", "zz"]).await;
    assert!(!ok);
    assert!(
        err.contains("container zz is not valid for pod two"),
        "{err}"
    );

    let seen = kubelet.seen();
    let paths: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/containerLogs/default/two/b",
            "/containerLogs/default/two/a?tailLines=3",
            "/containerLogs/default/two/a?tailLines=1",
            "/containerLogs/default/two/b?sinceSeconds=300",
            "/containerLogs/default/two/b?tailLines=2&timestamps=true",
        ]
    );
    assert!(
        seen.iter().all(|(_, apiserver)| *apiserver),
        "every call presents the API server's kubelet client certificate"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_follow_streams_lines_and_closes_the_kubelet_stream() {
    let kubelet = start_kubelet().await;
    let (client, server) = server(false).await;
    node(&client, "n1", "127.0.0.1", kubelet.addr.port()).await;
    pod(&client, "solo", Some("n1"), &["app"]).await;
    let kc = server.write_kubeconfig_tempfile().unwrap();

    let mut child =
        tokio::process::Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
            .env("KUBECONFIG", kc.path())
            .args(["logs", "-f", "solo", "--tail=2"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("kubectl");
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(WAIT, out.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("kubectl still running")
    };
    assert_eq!(next().await, "app line 9");
    assert_eq!(next().await, "app line 10");
    // the next lines exist only once pushed: they arrive as the kubelet writes them
    assert!(wait_until(WAIT, || kubelet.followers() == 1).await);
    assert_eq!(kubelet.push("live 1"), 1);
    assert_eq!(next().await, "live 1");
    assert_eq!(kubelet.push("live 2"), 1);
    assert_eq!(next().await, "live 2");
    assert_eq!(
        kubelet.seen()[0].0,
        "/containerLogs/default/solo/app?follow=true&tailLines=2"
    );

    // kubectl goes away: the API server closes its kubelet stream
    child.kill().await.unwrap();
    assert!(
        wait_until(WAIT, || kubelet.state.closed.load(Ordering::SeqCst) == 1).await,
        "the kubelet's follow stream was not closed"
    );
    assert_eq!(kubelet.followers(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_log_errors_answer_as_kube_apiserver() {
    let kubelet = start_kubelet().await;
    let (client, server) = server(false).await;
    node(&client, "n1", "127.0.0.1", kubelet.addr.port()).await;
    pod(&client, "two", Some("n1"), &["a", "b"]).await;
    pod(&client, "pending", None, &["a"]).await;
    pod(&client, "orphan", Some("gone"), &["a"]).await;
    for p in ["p401", "p403", "p404", "p500", "p501"] {
        pod(&client, p, Some("n1"), &["a"]).await;
    }
    let base = "/api/v1/namespaces/default/pods";

    let (code, s) = get_status(&client, &format!("{base}/nope/log")).await;
    assert_eq!((code, s["reason"].as_str()), (404, Some("NotFound")));
    assert_eq!(s["message"], "pods \"nope\" not found");

    let (code, s) = get_status(&client, &format!("{base}/two/log")).await;
    assert_eq!((code, s["reason"].as_str()), (400, Some("BadRequest")));
    assert_eq!(
        s["message"],
        "a container name must be specified for pod two, choose one of: [a b]"
    );

    let (code, s) = get_status(&client, &format!("{base}/two/log?container=zz")).await;
    assert_eq!((code, s["reason"].as_str()), (400, Some("BadRequest")));
    assert_eq!(s["message"], "container zz is not valid for pod two");

    // not bound: upstream has no location to stream from and answers 204
    let (code, body) = get(&client, &format!("{base}/pending/log")).await;
    assert_eq!((code, body.as_str()), (204, ""));

    let (code, s) = get_status(
        &client,
        &format!("{base}/two/log?container=a&sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z"),
    )
    .await;
    assert_eq!((code, s["reason"].as_str()), (422, Some("Invalid")));
    assert_eq!(
        s["message"],
        "PodLogOptions \"two\" is invalid: : Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
    );
    assert_eq!(s["details"]["kind"], "PodLogOptions");

    let (code, s) = get_status(&client, &format!("{base}/two/log?container=a&tailLines=-1")).await;
    assert_eq!(code, 422);
    assert_eq!(
        s["message"],
        "PodLogOptions \"two\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"
    );

    let (code, s) = get_status(&client, &format!("{base}/two/log?container=a&tailLines=x")).await;
    assert_eq!((code, s["reason"].as_str()), (400, Some("BadRequest")));
    assert_eq!(
        s["message"],
        "strconv.ParseInt: parsing \"x\": invalid syntax"
    );

    let (code, s) = get_status(&client, &format!("{base}/orphan/log")).await;
    assert_eq!(
        (code, s["message"].as_str()),
        (404, Some("nodes \"gone\" not found"))
    );

    // kubelet error statuses, as the response checker maps them
    let cases: [(&str, u16, Option<&str>, &str); 5] = [
        (
            "p401",
            401,
            Some("Unauthorized"),
            "the server has asked for the client to provide credentials ( pods/log p401)",
        ),
        (
            "p403",
            403,
            Some("Forbidden"),
            "Forbidden (user=kube-apiserver-kubelet-client, verb=get, resource=nodes, subresource=proxy) ( pods/log p403)",
        ),
        (
            "p404",
            404,
            Some("NotFound"),
            "the server could not find the requested resource ( pods/log p404)",
        ),
        (
            "p500",
            500,
            Some("InternalError"),
            "Internal error occurred: agent unreachable",
        ),
        (
            "p501",
            501,
            Some("InternalError"),
            "an error on the server (\"not served\") has prevented the request from succeeding ( pods/log p501)",
        ),
    ];
    for (p, want_code, reason, message) in cases {
        let (code, s) = get_status(&client, &format!("{base}/{p}/log")).await;
        assert_eq!(code, want_code, "{p}: {s}");
        assert_eq!(s["code"], want_code, "{p}");
        assert_eq!(s["reason"].as_str(), reason, "{p}");
        assert_eq!(s["message"], message, "{p}");
    }

    // the kubelet's port closed: Go's dial error, 500 without a reason
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    node(&client, "down", "127.0.0.1", closed).await;
    pod(&client, "ondown", Some("down"), &["a"]).await;
    let (code, s) = get_status(&client, &format!("{base}/ondown/log?follow=true")).await;
    assert_eq!(code, 500);
    assert!(s.get("reason").is_none(), "{s}");
    assert_eq!(
        s["message"],
        format!(
            "Get \"https://127.0.0.1:{closed}/containerLogs/default/ondown/a?follow=true\": dial tcp 127.0.0.1:{closed}: connect: connection refused"
        )
    );

    // discovery lists the subresource
    let (_, list) = get_status(&client, "/api/v1").await;
    let log = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods/log")
        .expect("pods/log in discovery");
    assert_eq!(log["verbs"], json!(["get"]));
    assert_eq!(log["kind"], "Pod");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_override_and_client_certificates_the_kubelet_refuses() {
    let kubelet = start_kubelet().await;
    // the Node reports an address nobody listens on; the override reaches the kubelet
    let (client, server) = start_with(Config {
        kubelet: KubeletConfig {
            address_override: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    node(&client, "n1", "192.0.2.1", kubelet.addr.port()).await;
    pod(&client, "solo", Some("n1"), &["app"]).await;
    let (code, body) = get(
        &client,
        "/api/v1/namespaces/default/pods/solo/log?tailLines=1",
    )
    .await;
    assert_eq!((code, body.as_str()), (200, "app line 10\n"));
    server.shutdown().await;

    // an API server whose client certificate the kubelet's CA did not sign
    // for client auth (a serving certificate) is refused in the handshake
    let (client, server) = start_with(Config {
        kubelet: KubeletConfig {
            address_override: Some(kubelet.addr),
            client_cert_pem: KUBELET_SERVING_CERT_PEM.into(),
            client_key_pem: KUBELET_SERVING_KEY_PEM.into(),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    node(&client, "n1", "192.0.2.1", 10250).await;
    pod(&client, "solo", Some("n1"), &["app"]).await;
    let before = kubelet.seen().len();
    let (code, s) = get_status(&client, "/api/v1/namespaces/default/pods/solo/log").await;
    assert_eq!(code, 500, "{s}");
    let prefix = format!(
        "Get \"https://127.0.0.1:{}/containerLogs/default/solo/app\": ",
        kubelet.addr.port()
    );
    let message = s["message"].as_str().unwrap();
    assert!(message.starts_with(&prefix), "{s}");
    assert!(message.contains("received fatal alert"), "{s}");
    assert_eq!(kubelet.seen().len(), before, "no request got through");
    server.shutdown().await;

    // a kubelet serving certificate is verified when a CA is configured
    let (client, server) = start_with(Config {
        kubelet: KubeletConfig {
            certificate_authority_pem: Some(koupleless_kube_apiserver::tls::CA_PEM.into()),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    node(&client, "n1", "127.0.0.1", kubelet.addr.port()).await;
    pod(&client, "solo", Some("n1"), &["app"]).await;
    let (code, s) = get_status(&client, "/api/v1/namespaces/default/pods/solo/log").await;
    assert_eq!(
        code, 500,
        "the kubelet's certificate is not signed by that CA: {s}"
    );
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("invalid peer certificate: UnknownIssuer"),
        "{s}"
    );
    let (code, body) = get(
        &client,
        "/api/v1/namespaces/default/pods/solo/log?tailLines=1&insecureSkipTLSVerifyBackend=true",
    )
    .await;
    assert_eq!((code, body.as_str()), (200, "app line 10\n"));
    server.shutdown().await;
    let (client, server) = start_with(Config {
        kubelet: KubeletConfig {
            certificate_authority_pem: Some(KUBELET_CLIENT_CA_PEM.into()),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    node(&client, "n1", "127.0.0.1", kubelet.addr.port()).await;
    pod(&client, "solo", Some("n1"), &["app"]).await;
    let (code, body) = get(
        &client,
        "/api/v1/namespaces/default/pods/solo/log?tailLines=1",
    )
    .await;
    assert_eq!((code, body.as_str()), (200, "app line 10\n"));
    server.shutdown().await;
}

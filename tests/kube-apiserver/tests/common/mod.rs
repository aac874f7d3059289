//! Test harness: runs a scenario against the in-memory server or, with
//! `KOUPLELESS_REAL_CLUSTER=1`, against the cluster `KUBECONFIG` names.

#![allow(dead_code)]

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::Status;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::future::Future;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// What a scenario gets.
#[derive(Clone)]
pub struct Ctx {
    /// Client for the server under test.
    pub client: kube::Client,
    /// A namespace created for this scenario.
    pub ns: String,
    /// Kubeconfig file for kubectl.
    pub kubeconfig: PathBuf,
    /// Whether this is a real cluster.
    pub real: bool,
    /// Unique suffix for cluster-scoped names.
    pub suffix: String,
}

impl Ctx {
    /// A cluster-scoped name unique to this run.
    pub fn unique(&self, base: &str) -> String {
        format!("{base}-{}", self.suffix)
    }
}

/// Whether to run against a real cluster.
pub fn real_cluster() -> bool {
    std::env::var("KOUPLELESS_REAL_CLUSTER").is_ok_and(|v| v == "1")
}

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_string()
}

/// Runs `f` in a fresh namespace, then cleans up (even if it panics).
pub async fn run<F, Fut>(name: &str, f: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let suffix = suffix();
    let ns = {
        let base: String = name.replace('_', "-").chars().take(40).collect();
        format!("kk-{base}-{suffix}")
    };
    let (client, kubeconfig, server, _tmp) = if real_cluster() {
        koupleless_kube_apiserver::install_crypto_provider();
        let client = kube::Client::try_default()
            .await
            .expect("KUBECONFIG must point at a reachable cluster");
        let kc = std::env::var("KUBECONFIG")
            .ok()
            .and_then(|p| p.split(':').next().map(PathBuf::from))
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".kube/config")
            });
        (client, kc, None, None)
    } else {
        let (client, server) = koupleless_kube_apiserver::start()
            .await
            .expect("start the test API server");
        let tmp = server
            .write_kubeconfig_tempfile()
            .expect("write kubeconfig");
        (client, tmp.path().to_path_buf(), Some(server), Some(tmp))
    };
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": ns}})),
    )
    .await
    .expect("create namespace");
    let ctx = Ctx {
        client: client.clone(),
        ns: ns.clone(),
        kubeconfig,
        real: server.is_none(),
        suffix,
    };
    let res = tokio::spawn(f(ctx)).await;
    if real_cluster() {
        let _ = nss.delete(&ns, &DeleteParams::default()).await;
    }
    if let Some(s) = server {
        s.shutdown().await;
    }
    if let Err(e) = res {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A client for the scenario's server that does not retry 429/503/504.
/// kube-rs retries those by default (up to 15 times, backing off towards
/// minutes), which is right for a controller but turns a scenario that
/// expects a 429 (a refused eviction) into a minutes-long wait.
pub async fn no_retry_client(ctx: &Ctx) -> kube::Client {
    koupleless_kube_apiserver::install_crypto_provider();
    let kc = kube::config::Kubeconfig::read_from(&ctx.kubeconfig).expect("read kubeconfig");
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig is usable");
    cfg.default_retry = false;
    kube::Client::try_from(cfg).expect("build client")
}

/// Deserializes JSON into a typed object.
pub fn obj<K: DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).expect("valid object JSON")
}

/// The `Status` of an API error (panics on other errors).
pub fn status(e: kube::Error) -> Box<Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Asserts a result is an API error with `code` and `reason`.
pub fn expect_err<T: std::fmt::Debug>(
    r: Result<T, kube::Error>,
    code: u16,
    reason: &str,
) -> Box<Status> {
    match r {
        Ok(v) => panic!("expected {code} {reason}, got success: {v:?}"),
        Err(e) => {
            let s = status(e);
            assert_eq!(
                (s.code, s.reason.as_str()),
                (code, reason),
                "unexpected status: {s:?}"
            );
            s
        }
    }
}

/// resourceVersion as a number (etcd revisions are numbers; the API calls
/// them opaque, so only ordering is compared).
pub fn rv_of<K: kube::Resource>(o: &K) -> u64 {
    o.meta()
        .resource_version
        .as_deref()
        .unwrap_or("0")
        .parse()
        .expect("numeric resourceVersion")
}

/// Polls `f` until it returns Some or the timeout passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "condition not reached within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A minimal pod, optionally bound to a node.
pub fn pod(name: &str, labels: Value, node: Option<&str>) -> k8s_openapi::api::core::v1::Pod {
    let mut v = json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}
    });
    if let Some(n) = node {
        v["spec"]["nodeName"] = json!(n);
    }
    obj(v)
}

/// The kubectl binary (`$KUBECTL` or `kubectl` on PATH), if any.
pub fn kubectl_bin() -> Option<String> {
    let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    Command::new(&bin)
        .arg("version")
        .arg("--client")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| bin)
}

/// Runs kubectl against the server in the scenario's namespace.
pub fn kubectl(ctx: &Ctx, args: &[&str]) -> Output {
    kubectl_stdin(ctx, args, None)
}

/// Runs kubectl with `stdin`.
pub fn kubectl_stdin(ctx: &Ctx, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let bin = kubectl_bin().expect("kubectl available");
    let mut cmd = Command::new(bin);
    cmd.env("KUBECONFIG", &ctx.kubeconfig)
        .arg("-n")
        .arg(&ctx.ns)
        .args(args);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn kubectl");
    if let Some(s) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(s.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("kubectl output")
}

/// Runs kubectl and asserts success; returns stdout.
pub fn kubectl_ok(ctx: &Ctx, args: &[&str]) -> String {
    let out = kubectl(ctx, args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

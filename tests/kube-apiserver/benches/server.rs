//! Throughput and latency of the test API server through kube-rs.
//!
//! Run: `cargo bench -p koupleless-kube-apiserver --bench server`
//! (`BENCH_N` sets the number of objects, default 2000).

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use std::time::{Duration, Instant};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn row(name: &str, mut v: Vec<Duration>) {
    let n = v.len();
    let p50 = pct(&mut v, 0.5);
    let p99 = pct(&mut v, 0.99);
    println!(
        "| {name} | {n} | {:.1} µs | {:.1} µs |",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "bench", "idx": name}},
        "spec": {"nodeName": "vnode-bench", "containers": [{"name": "biz", "image": "biz:1.0.0"}]}
    }))
    .unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let (client, server) =
        koupleless_kube_apiserver::start_with(koupleless_kube_apiserver::Config {
            history: 100_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    println!("| operation | iterations | p50 | p99 |");
    println!("|---|---|---|---|");

    let mut t = Vec::new();
    for i in 0..n {
        let s = Instant::now();
        pods.create(&PostParams::default(), &pod(&format!("p{i}")))
            .await
            .unwrap();
        t.push(s.elapsed());
    }
    row("create pod", t);

    let mut t = Vec::new();
    for i in 0..n {
        let s = Instant::now();
        pods.get(&format!("p{i}")).await.unwrap();
        t.push(s.elapsed());
    }
    row("get pod", t);

    let mut t = Vec::new();
    for i in 0..n {
        let s = Instant::now();
        pods.patch_status(
            &format!("p{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "10.0.0.1"}})),
        )
        .await
        .unwrap();
        t.push(s.elapsed());
    }
    row("merge-patch pod status", t);

    let mut t = Vec::new();
    for i in 0..n {
        let s = Instant::now();
        pods.patch_status(
            &format!("p{i}"),
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            ),
        )
        .await
        .unwrap();
        t.push(s.elapsed());
    }
    row("strategic-merge-patch pod conditions", t);

    let mut t = Vec::new();
    for _ in 0..20 {
        let s = Instant::now();
        let l = pods.list(&ListParams::default()).await.unwrap();
        assert_eq!(l.items.len(), n);
        t.push(s.elapsed());
    }
    row(&format!("list {n} pods (one page)"), t);

    let mut t = Vec::new();
    for _ in 0..20 {
        let s = Instant::now();
        let l = pods
            .list(
                &ListParams::default()
                    .fields("spec.nodeName=vnode-bench")
                    .labels("idx=p7"),
            )
            .await
            .unwrap();
        assert_eq!(l.items.len(), 1);
        t.push(s.elapsed());
    }
    row(&format!("list with label+field selector over {n} pods"), t);

    // write-to-event latency seen by a watcher
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "vnode-bench"}})).unwrap(),
        )
        .await
        .unwrap();
    let rv = server.resource_version().to_string();
    let mut stream = Box::pin(
        pods.watch(&WatchParams::default().timeout(290), &rv)
            .await
            .unwrap(),
    );
    let mut t = Vec::new();
    for i in 0..n.min(1000) {
        let s = Instant::now();
        pods.patch(
            &format!("p{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"seq": i.to_string()}}})),
        )
        .await
        .unwrap();
        loop {
            if let Some(WatchEvent::Modified(_)) = stream.try_next().await.unwrap() {
                break;
            }
        }
        t.push(s.elapsed());
    }
    row("patch + its watch event delivered", t);

    let mut t = Vec::new();
    for i in 0..n.min(1000) {
        let s = Instant::now();
        nodes
            .patch_status(
                "vnode-bench",
                &PatchParams::apply("bench").force(),
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "vnode-bench"},
                    "status": {"conditions": [{"type": "Ready", "status": "True", "reason": format!("r{i}")}]}})),
            )
            .await
            .unwrap();
        t.push(s.elapsed());
    }
    row("server-side apply node status", t);
    server.shutdown().await;
}

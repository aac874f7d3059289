//! Watch semantics.

use crate::common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;
use std::time::Duration;

type Ev = WatchEvent<Pod>;

fn describe(e: &Ev) -> (String, String) {
    match e {
        WatchEvent::Added(p) => ("ADDED".into(), p.metadata.name.clone().unwrap_or_default()),
        WatchEvent::Modified(p) => (
            "MODIFIED".into(),
            p.metadata.name.clone().unwrap_or_default(),
        ),
        WatchEvent::Deleted(p) => (
            "DELETED".into(),
            p.metadata.name.clone().unwrap_or_default(),
        ),
        WatchEvent::Bookmark(_) => ("BOOKMARK".into(), String::new()),
        WatchEvent::Error(s) => ("ERROR".into(), s.code.to_string()),
    }
}

fn rv_of_event(e: &Ev) -> Option<u64> {
    match e {
        WatchEvent::Added(p) | WatchEvent::Modified(p) | WatchEvent::Deleted(p) => Some(rv_of(p)),
        _ => None,
    }
}

/// Collects `n` non-bookmark events (or fails after a timeout).
async fn collect(
    stream: impl futures::Stream<Item = Result<Ev, kube::Error>> + Send,
    n: usize,
) -> Vec<Ev> {
    let mut stream = Box::pin(stream);
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let ev = tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out after {:?}",
                    out.iter().map(describe).collect::<Vec<_>>()
                )
            })
            .expect("watch stream error")
            .expect("watch stream ended early");
        if !matches!(ev, WatchEvent::Bookmark(_)) {
            out.push(ev);
        }
    }
    out
}

pub async fn watch_order_and_types(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let list = pods.list(&ListParams::default()).await.unwrap();
    let start = list.metadata.resource_version.clone().unwrap();
    let stream = pods
        .watch(&WatchParams::default().timeout(20), &start)
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("w1", json!({}), None))
        .await
        .unwrap();
    pods.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
    )
    .await
    .unwrap();
    pods.create(&PostParams::default(), &pod("w2", json!({}), None))
        .await
        .unwrap();
    pods.delete("w1", &DeleteParams::default()).await.unwrap();
    let evs = collect(stream, 4).await;
    let got: Vec<(String, String)> = evs.iter().map(describe).collect();
    assert_eq!(
        got,
        vec![
            ("ADDED".into(), "w1".into()),
            ("MODIFIED".into(), "w1".into()),
            ("ADDED".into(), "w2".into()),
            ("DELETED".into(), "w1".into())
        ]
    );
    let rvs: Vec<u64> = evs.iter().filter_map(rv_of_event).collect();
    assert!(
        rvs.windows(2).all(|w| w[0] < w[1]),
        "resourceVersions increase: {rvs:?}"
    );
    assert!(rvs[0] > start.parse::<u64>().unwrap());
}

pub async fn watch_resume(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let a = pods
        .create(&PostParams::default(), &pod("r1", json!({}), None))
        .await
        .unwrap();
    let b = pods
        .patch(
            "r1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"s": "2"}}})),
        )
        .await
        .unwrap();
    let c = pods
        .patch(
            "r1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"s": "3"}}})),
        )
        .await
        .unwrap();
    // resuming from the first version replays the later changes only
    let stream = pods
        .watch(
            &WatchParams::default().timeout(20),
            a.metadata.resource_version.as_deref().unwrap(),
        )
        .await
        .unwrap();
    let evs = collect(stream, 2).await;
    let rvs: Vec<u64> = evs.iter().filter_map(rv_of_event).collect();
    assert_eq!(rvs, vec![rv_of(&b), rv_of(&c)]);
    assert!(evs.iter().all(|e| matches!(e, WatchEvent::Modified(_))));
    // a watch without resourceVersion starts with the current state
    let stream = pods
        .watch(&WatchParams::default().timeout(20), "0")
        .await
        .unwrap();
    let evs = collect(stream, 1).await;
    match &evs[0] {
        WatchEvent::Added(p) => assert_eq!(rv_of(p), rv_of(&c)),
        other => panic!("expected ADDED, got {:?}", describe(other)),
    }
}

pub async fn watch_too_old_is_410(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    pods.create(&PostParams::default(), &pod("old", json!({}), None))
        .await
        .unwrap();
    // resourceVersion 1 is long compacted on any real cluster and below the
    // test server's history
    match pods.watch(&WatchParams::default().timeout(10), "1").await {
        Err(e) => {
            let s = status(e);
            assert_eq!(s.code, 410, "{s:?}");
        }
        Ok(stream) => {
            let mut stream = Box::pin(stream);
            let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("an event")
                .expect("not the end")
                .expect("decodable");
            match ev {
                WatchEvent::Error(s) => {
                    assert_eq!(s.code, 410, "{s:?}");
                    assert_eq!(s.reason, "Expired");
                }
                other => panic!("expected a 410 ERROR event, got {:?}", describe(&other)),
            }
        }
    }
}

pub async fn watch_selector_transitions(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let start = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let stream = pods
        .watch(
            &WatchParams::default().labels("app=sel").timeout(20),
            &start,
        )
        .await
        .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("s1", json!({"app": "other"}), None),
    )
    .await
    .unwrap();
    // starts matching: ADDED
    pods.patch(
        "s1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "sel"}}})),
    )
    .await
    .unwrap();
    pods.patch(
        "s1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"a": "1"}}})),
    )
    .await
    .unwrap();
    // stops matching: DELETED (with the last matching state)
    let left = pods
        .patch(
            "s1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "gone"}}})),
        )
        .await
        .unwrap();
    let evs = collect(stream, 3).await;
    let got: Vec<String> = evs.iter().map(|e| describe(e).0).collect();
    assert_eq!(got, vec!["ADDED", "MODIFIED", "DELETED"]);
    match &evs[2] {
        WatchEvent::Deleted(p) => {
            assert_eq!(p.metadata.labels.as_ref().unwrap()["app"], "sel");
            assert_eq!(rv_of(p), rv_of(&left));
        }
        _ => unreachable!(),
    }
}

pub async fn watch_timeout_ends_stream(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let start = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let began = std::time::Instant::now();
    let stream = pods
        .watch(&WatchParams::default().timeout(1), &start)
        .await
        .unwrap();
    let events: Vec<_> = tokio::time::timeout(Duration::from_secs(15), stream.collect::<Vec<_>>())
        .await
        .expect("the watch ends");
    assert!(
        began.elapsed() >= Duration::from_millis(900),
        "ended too early: {:?}",
        began.elapsed()
    );
    for e in events {
        let e = e.expect("no stream error");
        assert!(
            matches!(e, WatchEvent::Bookmark(_)),
            "only bookmarks on an idle watch, got {:?}",
            describe(&e)
        );
    }
}

pub async fn watch_send_initial_events(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    pods.create(&PostParams::default(), &pod("i1", json!({}), None))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("i2", json!({}), None))
        .await
        .unwrap();
    let wp = WatchParams::streaming_lists().timeout(10);
    let stream = match pods.watch(&wp, "").await {
        Ok(s) => s,
        Err(e) if ctx.real => {
            eprintln!(
                "SKIP watch_send_initial_events: the cluster does not serve streaming lists: {e}"
            );
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let mut stream = Box::pin(stream);
    let mut added = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match ev {
            WatchEvent::Added(p) => added.push(p.metadata.name.unwrap()),
            WatchEvent::Bookmark(b) => {
                if b.metadata
                    .annotations
                    .get("k8s.io/initial-events-end")
                    .map(String::as_str)
                    == Some("true")
                {
                    assert!(!b.metadata.resource_version.is_empty());
                    break;
                }
            }
            other => panic!("unexpected {:?}", describe(&other)),
        }
    }
    added.sort();
    assert_eq!(added, vec!["i1", "i2"]);
    // then live events
    pods.create(&PostParams::default(), &pod("i3", json!({}), None))
        .await
        .unwrap();
    let evs = collect(stream, 1).await;
    assert_eq!(describe(&evs[0]), ("ADDED".into(), "i3".into()));
    // sendInitialEvents without resourceVersionMatch=NotOlderThan is invalid
    let req = http::Request::get(format!(
        "/api/v1/namespaces/{}/pods?watch=true&sendInitialEvents=true&allowWatchBookmarks=true",
        ctx.ns
    ))
    .body(vec![])
    .unwrap();
    let s = status(ctx.client.request_text(req).await.unwrap_err());
    assert_eq!(s.code, 422, "{s:?}");
}

pub async fn watch_field_selector_single_object(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    pods.create(&PostParams::default(), &pod("one", json!({}), None))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("two", json!({}), None))
        .await
        .unwrap();
    let stream = pods
        .watch(
            &WatchParams::default()
                .fields("metadata.name=two")
                .timeout(20),
            "0",
        )
        .await
        .unwrap();
    pods.patch(
        "one",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
    )
    .await
    .unwrap();
    pods.patch(
        "two",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "2"}}})),
    )
    .await
    .unwrap();
    let evs = collect(stream, 2).await;
    let got: Vec<(String, String)> = evs.iter().map(describe).collect();
    assert_eq!(
        got,
        vec![
            ("ADDED".into(), "two".into()),
            ("MODIFIED".into(), "two".into())
        ]
    );
}

//! kube-runtime on top of the server: watcher, reflector, Controller.

use crate::common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub async fn watcher_and_reflector(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    pods.create(
        &PostParams::default(),
        &pod("pre", json!({"app": "r"}), None),
    )
    .await
    .unwrap();
    for cfg in [
        watcher::Config::default(),
        watcher::Config::default().streaming_lists(),
    ] {
        if ctx.real && cfg.initial_list_strategy == watcher::InitialListStrategy::StreamingList {
            // streaming lists need the WatchList feature on the cluster
            continue;
        }
        let (reader, writer) = reflector::store::<Pod>();
        let stream = reflector::reflector(writer, watcher(pods.clone(), cfg.labels("app=r")))
            .applied_objects();
        let task = tokio::spawn(stream.for_each(|_| async {}));
        reader.wait_until_ready().await.unwrap();
        assert_eq!(reader.state().len(), 1);
        pods.create(
            &PostParams::default(),
            &pod("post", json!({"app": "r"}), None),
        )
        .await
        .unwrap();
        eventually(Duration::from_secs(10), || async {
            (reader.state().len() == 2).then_some(())
        })
        .await;
        pods.delete("post", &DeleteParams::default()).await.unwrap();
        eventually(Duration::from_secs(10), || async {
            (reader.state().len() == 1).then_some(())
        })
        .await;
        task.abort();
    }
}

pub async fn controller_reconciles(ctx: Ctx) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let count = Arc::new(AtomicUsize::new(0));
    let api = pods.clone();
    let handle = tokio::spawn(
        Controller::new(pods.clone(), watcher::Config::default())
            .run(
                |p: Arc<Pod>, c: Arc<(Api<Pod>, Arc<AtomicUsize>)>| async move {
                    c.1.fetch_add(1, Ordering::SeqCst);
                    // reconcile: stamp an annotation once
                    let name = p.metadata.name.clone().unwrap();
                    let has = p
                        .metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key("reconciled"));
                    if !has {
                        c.0.patch(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(
                                json!({"metadata": {"annotations": {"reconciled": "yes"}}}),
                            ),
                        )
                        .await?;
                    }
                    Ok::<_, kube::Error>(Action::await_change())
                },
                |_p, _e, _c| Action::requeue(Duration::from_millis(100)),
                Arc::new((api, count.clone())),
            )
            .for_each(|_| async {}),
    );
    pods.create(&PostParams::default(), &pod("ctl", json!({}), None))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), || async {
        pods.get("ctl")
            .await
            .unwrap()
            .metadata
            .annotations
            .unwrap_or_default()
            .get("reconciled")
            .map(|_| ())
    })
    .await;
    assert!(count.load(Ordering::SeqCst) >= 1);
    handle.abort();
}

pub async fn event_recorder(ctx: Ctx) {
    use k8s_openapi::api::events::v1::Event as EventV1;
    use kube::Resource;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let p = pods
        .create(&PostParams::default(), &pod("rec", json!({}), None))
        .await
        .unwrap();
    let recorder = Recorder::new(
        ctx.client.clone(),
        Reporter {
            controller: "koupleless-test".into(),
            instance: None,
        },
    );
    let ev = Event {
        type_: EventType::Normal,
        reason: "Tested".into(),
        note: Some("first".into()),
        action: "Test".into(),
        secondary: None,
    };
    recorder.publish(&ev, &p.object_ref(&())).await.unwrap();
    recorder.publish(&ev, &p.object_ref(&())).await.unwrap();
    let events: Api<EventV1> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let list = events
        .list(&kube::api::ListParams::default().fields("regarding.name=rec"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1, "the repeat is folded into a series");
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(
        list.items[0].reporting_controller.as_deref(),
        Some("koupleless-test")
    );
}

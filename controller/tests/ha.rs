//! Ownership by Lease across replicas, crashes, restarts, SIGTERM and broker restarts.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(15);

async fn holders(kube: &Kube, ids: &[String]) -> BTreeMap<String, Option<String>> {
    let mut m = BTreeMap::new();
    for id in ids {
        m.insert(id.clone(), kube.lease_holder(&vnode(id)).await);
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_split_bases_and_one_takes_over_after_the_other_crashes() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let a = Controller::start(&kube, settings("mc-a", Some(broker.port), false)).await;
    let b = Controller::start(&kube, settings("mc-b", Some(broker.port), false)).await;
    // Both replicas must hear the first heartbeats.
    assert!(eventually(T, || async { a.ready().await && b.ready().await }).await);
    let ids: Vec<String> = (0..6).map(|i| format!("base-{i}")).collect();
    let mut bases = Vec::new();
    for id in &ids {
        bases.push(MqttBase::start(broker.port, id).await);
    }

    // Every base is owned by exactly one replica, and its Node is Ready.
    assert!(
        eventually(T, || async {
            let h = holders(&kube, &ids).await;
            h.values()
                .all(|v| matches!(v.as_deref(), Some("mc-a" | "mc-b")))
        })
        .await,
        "all bases owned"
    );
    for id in &ids {
        let name = vnode(id);
        assert!(
            eventually(T, || async {
                kube.ready(&name).await.as_deref() == Some("True")
            })
            .await
        );
    }
    let owned = |who: &'static str| {
        let (a, b) = (&a, &b);
        async move {
            let c = if who == "a" { a } else { b };
            c.metric(r#"koupleless_controller_vnodes{state="ready"}"#)
                .await
                + c.metric(r#"koupleless_controller_vnodes{state="unreachable"}"#)
                    .await
        }
    };
    // Each replica serves what its Leases say, no more (the other one stands by).
    let h = holders(&kube, &ids).await;
    let by_a = h.values().filter(|v| v.as_deref() == Some("mc-a")).count() as f64;
    // The workload back-off spreads the bases over both replicas.
    assert!((1.0..=5.0).contains(&by_a), "split: {h:?}");
    assert!(
        eventually(T, || async {
            owned("a").await == by_a && owned("b").await == 6.0 - by_a
        })
        .await
    );

    // Replica a crashes: its Leases expire and b takes every base over; no Node is lost (a
    // delete-and-recreate would show as a new UID).
    let mut uids = BTreeMap::new();
    let mut a_owned = Vec::new();
    for id in &ids {
        let node = kube.node(&vnode(id)).await.unwrap();
        uids.insert(id.clone(), node.metadata.uid.unwrap());
        if kube.lease_holder(&vnode(id)).await.as_deref() == Some("mc-a") {
            a_owned.push(id.clone());
        }
    }
    a.crash().await;
    assert!(
        eventually(T, || async {
            holders(&kube, &ids)
                .await
                .values()
                .all(|v| v.as_deref() == Some("mc-b"))
        })
        .await,
        "b took over: {:?}",
        holders(&kube, &ids).await
    );
    for id in &ids {
        let name = vnode(id);
        assert!(
            eventually(T, || async {
                kube.ready(&name).await.as_deref() == Some("True")
            })
            .await
        );
    }
    for id in &ids {
        let node = kube.node(&vnode(id)).await.unwrap();
        assert_eq!(
            node.metadata.uid.as_ref(),
            uids.get(id),
            "{id}: Node recreated"
        );
        let transitions = kube
            .lease(&vnode(id))
            .await
            .unwrap()
            .spec
            .unwrap()
            .lease_transitions
            .unwrap_or(0);
        // A new Lease starts at 0; each takeover counts one more.
        let want = i32::from(a_owned.contains(id));
        assert!(
            transitions >= want,
            "{id}: {transitions} transitions, want >= {want}"
        );
    }
    assert!(!a_owned.is_empty(), "a owned something before it crashed");
    for base in bases {
        base.stop().await;
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_leases_so_the_other_replica_takes_over_at_once() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    // A long Lease: a takeover within seconds can only come from the release.
    let mut sa = settings("mc-a", Some(broker.port), false);
    sa.timings.lease_duration = Duration::from_secs(30);
    sa.timings.lease_renew_interval = Duration::from_secs(5);
    sa.timings.lease_renew_deadline = Duration::from_secs(20);
    let mut sb = sa.clone();
    sb.client_id = "mc-b".into();
    sb.mqtt.as_mut().unwrap().client_id = "koupleless@@@mc-b".into();
    let a = Controller::start(&kube, sa).await;
    let base = MqttBase::start(broker.port, "base-x").await;
    let name = vnode("base-x");
    assert!(
        eventually(T, || async {
            kube.lease_holder(&name).await.as_deref() == Some("mc-a")
        })
        .await
    );
    let b = Controller::start(&kube, sb).await;
    assert!(
        eventually(T, || async {
            b.metric(r#"koupleless_controller_vnodes{state="standby"}"#)
                .await
                == 1.0
        })
        .await
    );

    a.stop().await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            kube.lease_holder(&name).await.as_deref() == Some("mc-b")
        })
        .await,
        "b took over right after a released"
    );
    assert_eq!(kube.ready(&name).await.as_deref(), Some("True"));
    base.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_keeps_the_nodes_of_live_bases() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, settings("mc-1", Some(broker.port), false)).await;
    let live = MqttBase::start(broker.port, "live").await;
    let dying = MqttBase::start(broker.port, "dying").await;
    for id in ["live", "dying"] {
        let name = vnode(id);
        assert!(eventually(T, || async { kube.memory(&name).await.is_some() }).await);
    }
    ctl.crash().await;
    // While the controller is down, one base dies.
    dying.set(|s| {
        s.heartbeats = false;
        s.answers = false;
    });
    let uid = kube.node(&vnode("live")).await.unwrap().metadata.uid;

    // Same CLIENT_ID (pod name): the restarted replica resumes its own Leases.
    let ctl = Controller::start(&kube, settings("mc-1", Some(broker.port), false)).await;
    assert!(
        eventually(T, || async { kube.node(&vnode("dying")).await.is_none() }).await,
        "dead base cleaned up"
    );
    // The live base's Node was never deleted (same UID) and stays Ready.
    let live_node = kube.node(&vnode("live")).await.unwrap();
    assert_eq!(live_node.metadata.uid, uid);
    assert_eq!(kube.ready(&vnode("live")).await.as_deref(), Some("True"));
    assert_eq!(
        kube.lease_holder(&vnode("live")).await.as_deref(),
        Some("mc-1")
    );
    live.stop().await;
    dying.stop().await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_nothing() {
    init_logs();
    let mut broker = Broker::start().await;
    let kube = Kube::start().await;
    let mut s = settings("mc-1", Some(broker.port), false);
    // Survive an outage of a few seconds without declaring the base dead.
    s.timings.unreachable_after = Duration::from_secs(5);
    s.timings.dead_after = Duration::from_secs(20);
    let ctl = Controller::start(&kube, s).await;
    let base = MqttBase::start(broker.port, "base-r").await;
    let name = vnode("base-r");
    assert!(eventually(T, || async { kube.memory(&name).await.is_some() }).await);
    let uid = kube.node(&name).await.unwrap().metadata.uid;

    broker.restart().await;
    // Per-base subscriptions were restored: a new health report still reaches the Node.
    base.set(|s| s.max_metaspace = 300 << 20);
    assert!(
        eventually(Duration::from_secs(20), || async {
            kube.memory(&name).await.map(|m| m.0) == Some("307200Ki".into())
        })
        .await,
        "health flows after the broker restart"
    );
    assert_eq!(
        kube.node(&name).await.unwrap().metadata.uid,
        uid,
        "node kept"
    );
    assert_eq!(kube.ready(&name).await.as_deref(), Some("True"));
    assert!(
        ctl.metric("koupleless_controller_mqtt_connections_total")
            .await
            >= 2.0
    );
    base.stop().await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_answers_a_baseline_query() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    // A module Deployment for cluster "default".
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(kube.client.clone(), "default");
    let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "biz1", "labels": {"virtual-kubelet.koupleless.io/env": ENV}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "biz1"}},
            "template": {
                "metadata": {"labels": {"app": "biz1"}},
                "spec": {
                    "nodeSelector": {"base.koupleless.io/cluster-name": "default"},
                    "containers": [{"name": "biz1", "image": "https://repo/biz1.jar", "env": [{"name": "BIZ_VERSION", "value": "0.0.1"}]}]
                }
            }
        }
    }))
    .unwrap();
    deployments.create(&Default::default(), &d).await.unwrap();
    let a = Controller::start(&kube, settings("mc-a", Some(broker.port), false)).await;
    let b = Controller::start(&kube, settings("mc-b", Some(broker.port), false)).await;
    assert!(eventually(T, || async { a.ready().await && b.ready().await }).await);

    // The base asks before its first heartbeat, as Java does.
    let base = MqttBase::start(broker.port, "base-q").await;
    assert!(
        eventually(T, || async { !base.baselines().is_empty() }).await,
        "baseline answered"
    );
    let got = base.baselines();
    assert_eq!(got[0].len(), 1);
    assert_eq!(got[0][0].biz_name, "biz1");
    assert_eq!(got[0][0].biz_version, "0.0.1");
    assert_eq!(got[0][0].biz_url, "https://repo/biz1.jar");
    // Upstream: every replica answers. Here exactly one does.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(base.baselines().len(), 1, "one answer for two replicas");
    base.stop().await;
    a.stop().await;
    b.stop().await;
}

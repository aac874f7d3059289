//! Faults the controller must survive without deleting the Node of a live base (Kubernetes
//! would garbage-collect every module Pod on it) and without two replicas acting for one base:
//! takeover by a replica that could not hear the base, broker outages, mass silence, an API
//! partition of the owner, clock skew, lost one-off messages, and Node fields others own.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::SignedDuration;
use koupleless_controller::Timings;
use koupleless_testkit::proxy::{Link, Proxy};
use kube::api::{Patch, PatchParams};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(15);

/// What a poller saw of one Node.
#[derive(Clone, Debug, Default)]
struct Seen {
    /// Polls that found no Node.
    absent: usize,
    /// Distinct UIDs seen.
    uids: Vec<String>,
    /// Polls in total.
    polls: usize,
}

/// Polls a Node every 50 ms until stopped, to prove it was never deleted (a delete and
/// recreate between two polls shows as a second UID).
struct NodeWatch {
    seen: Arc<Mutex<Seen>>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl NodeWatch {
    fn start(kube: &Kube, name: &str) -> NodeWatch {
        let nodes: kube::Api<Node> = kube::Api::all(kube.client.clone());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let cancel = CancellationToken::new();
        let (s, c, name) = (seen.clone(), cancel.clone(), name.to_owned());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    () = c.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Ok(found) = nodes.get_opt(&name).await else {
                    continue;
                };
                let mut s = s.lock().unwrap();
                s.polls += 1;
                match found.and_then(|n| n.metadata.uid) {
                    None => s.absent += 1,
                    Some(uid) => {
                        if !s.uids.contains(&uid) {
                            s.uids.push(uid);
                        }
                    }
                }
            }
        });
        NodeWatch { seen, cancel, task }
    }

    async fn stop(self) -> Seen {
        self.cancel.cancel();
        let _ = self.task.await;
        let seen = self.seen.lock().unwrap();
        seen.clone()
    }
}

fn assert_never_deleted(seen: &Seen, what: &str) {
    assert!(seen.polls > 10, "{what}: too few polls ({seen:?})");
    assert_eq!(seen.absent, 0, "{what}: the Node was missing ({seen:?})");
    assert_eq!(
        seen.uids.len(),
        1,
        "{what}: the Node was recreated ({seen:?})"
    );
}

async fn uid(kube: &Kube, name: &str) -> String {
    kube.node(name).await.unwrap().metadata.uid.unwrap()
}

fn with_timings(
    mut s: koupleless_controller::Settings,
    t: Timings,
) -> koupleless_controller::Settings {
    s.timings = t;
    s
}

/// The upstream timings, with the test's short API timeout.
fn upstream() -> Timings {
    Timings::UPSTREAM
}

#[derive(Clone, Copy, Debug)]
enum Tun {
    Mqtt,
    Http,
}

/// Issue 11.1: replica a owns a live base whose heartbeats reach a only (HTTP: as a Service
/// routes them); replica b rediscovers the vnode as standby and hears nothing for longer than
/// the dead threshold; a gets SIGTERM and releases; b takes over. b must judge liveness from
/// its own observation (and poll the base at once), so the Node keeps its UID and stays Ready.
async fn takeover_after_release(tun: Tun, timings: Timings, heartbeat: Duration) {
    let broker = match tun {
        Tun::Mqtt => Some(Broker::start().await),
        Tun::Http => None,
    };
    let port = broker.as_ref().map(|b| b.port);
    let http = matches!(tun, Tun::Http);
    let kube = Kube::start().await;
    let a = Controller::start(&kube, with_timings(settings("mc-a", port, http), timings)).await;
    let id = format!("base-takeover-{tun:?}").to_lowercase();
    let name = vnode(&id);
    let state = BaseState::new(&id);
    enum Base {
        Mqtt(MqttBase),
        Http(HttpBase),
    }
    let base = match (tun, port) {
        (Tun::Mqtt, Some(p)) => Base::Mqtt(MqttBase::start_with(p, state, heartbeat).await),
        _ => Base::Http(HttpBase::start_with(a.http.unwrap(), state, heartbeat).await),
    };
    assert!(
        eventually(T, || async {
            kube.ready(&name).await.as_deref() == Some("True")
                && kube.lease_holder(&name).await.as_deref() == Some("mc-a")
        })
        .await,
        "{tun:?}: a owns a Ready Node"
    );
    let uid = uid(&kube, &name).await;
    let b = Controller::start(&kube, with_timings(settings("mc-b", port, http), timings)).await;
    assert!(
        eventually(T, || async {
            b.metric(r#"koupleless_controller_vnodes{state="standby"}"#)
                .await
                == 1.0
        })
        .await,
        "{tun:?}: b rediscovered the vnode as standby"
    );
    let watch = NodeWatch::start(&kube, &name);
    // The fault is the passage of time: b hears nothing (HTTP) for longer than the dead
    // threshold before it takes over.
    tokio::time::sleep(timings.dead_after + timings.dead_after / 4).await;

    a.stop().await;
    if let Base::Http(h) = &base {
        // The Service now routes the base's heartbeats to the remaining replica.
        h.set(|s| s.heartbeat_to = b.http);
    }
    assert!(
        eventually(T, || async {
            kube.lease_holder(&name).await.as_deref() == Some("mc-b")
        })
        .await,
        "{tun:?}: b took over"
    );
    // Ready within one heartbeat of reaching b (b polls the base at once; it never left Ready).
    assert!(
        eventually(heartbeat + Duration::from_secs(2), || async {
            kube.ready(&name).await.as_deref() == Some("True")
        })
        .await,
        "{tun:?}: Ready after the takeover"
    );
    // And it stays: a full dead window of b's own later than the takeover.
    tokio::time::sleep(timings.unreachable_after.min(Duration::from_secs(5))).await;
    let seen = watch.stop().await;
    assert_never_deleted(&seen, &format!("{tun:?} takeover"));
    assert_eq!(self::uid(&kube, &name).await, uid);
    assert_eq!(kube.ready(&name).await.as_deref(), Some("True"));
    assert_eq!(
        b.metric(r#"koupleless_controller_vnode_transitions_total{transition="dead"}"#)
            .await,
        0.0,
        "{tun:?}: b never declared the base dead"
    );
    match base {
        Base::Mqtt(m) => m.stop().await,
        Base::Http(h) => h.stop().await,
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_keeps_a_live_base_node_http() {
    init_logs();
    takeover_after_release(Tun::Http, fast_timings(), Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_keeps_a_live_base_node_mqtt() {
    init_logs();
    takeover_after_release(Tun::Mqtt, fast_timings(), Duration::from_millis(200)).await;
}

/// The same sequence with upstream's timings (dead after 60 s, Lease 40 s renewed every 10 s)
/// and heartbeat periods (HTTP 12 s, MQTT 10 s), both tunnels at once to share the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_keeps_a_live_base_node_with_upstream_timings() {
    init_logs();
    tokio::join!(
        takeover_after_release(Tun::Http, upstream(), Duration::from_secs(12)),
        takeover_after_release(Tun::Mqtt, upstream(), Duration::from_secs(10)),
    );
}

/// Issue 11.2: the broker is down for three times the dead threshold. Bases may turn Unknown
/// but no Node is deleted; all are Ready again right after the broker returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_deletes_no_node() {
    init_logs();
    let mut broker = Broker::start().await;
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, settings("mc-1", Some(broker.port), false)).await;
    let ids = ["out-1", "out-2"];
    let mut bases = Vec::new();
    for id in ids {
        bases.push(MqttBase::start(broker.port, id).await);
    }
    for id in ids {
        let name = vnode(id);
        assert!(
            eventually(T, || async {
                kube.ready(&name).await.as_deref() == Some("True")
            })
            .await
        );
    }
    let watches: Vec<_> = ids
        .iter()
        .map(|id| NodeWatch::start(&kube, &vnode(id)))
        .collect();
    let dead_after = fast_timings().dead_after;

    broker.stop();
    assert!(
        eventually(T, || async {
            ctl.metric("koupleless_controller_blind").await == 1.0
        })
        .await,
        "the controller knows it cannot hear"
    );
    // The outage itself: three dead thresholds without a broker.
    tokio::time::sleep(dead_after * 3).await;
    for id in ids {
        assert!(
            kube.node(&vnode(id)).await.is_some(),
            "{id} kept during the outage"
        );
        assert_eq!(
            kube.ready(&vnode(id)).await.as_deref(),
            Some("Unknown"),
            "{id}: honest about not hearing it"
        );
    }
    broker.restart().await;
    for id in ids {
        let name = vnode(id);
        assert!(
            eventually(T, || async {
                kube.ready(&name).await.as_deref() == Some("True")
            })
            .await,
            "{id} Ready again"
        );
    }
    for (w, id) in watches.into_iter().zip(ids) {
        assert_never_deleted(&w.stop().await, id);
    }
    assert_eq!(
        ctl.metric(r#"koupleless_controller_vnode_transitions_total{transition="dead"}"#)
            .await,
        0.0
    );
    for b in bases {
        b.stop().await;
    }
    ctl.stop().await;
}

/// Issue 11.2, the full-disruption rule over HTTP (no connection state to tell a partition):
/// one base dying alone is deleted; most bases going silent together are not, and come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_silence_is_a_partition_not_mass_death() {
    init_logs();
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, settings("mc-1", None, true)).await;
    let ids = ["ms-1", "ms-2", "ms-3", "ms-4"];
    let mut bases = Vec::new();
    for id in ids {
        bases.push(HttpBase::start(ctl.http.unwrap(), id).await);
    }
    for id in ids {
        let name = vnode(id);
        assert!(
            eventually(T, || async {
                kube.ready(&name).await.as_deref() == Some("True")
            })
            .await
        );
    }
    let silence = |b: &HttpBase, on: bool| {
        b.set(|s| {
            s.heartbeats = !on;
            s.answers = !on;
        })
    };
    // One of four dies: that is a dead base, deleted as upstream does.
    silence(&bases[0], true);
    assert!(
        eventually(T, || async { kube.node(&vnode(ids[0])).await.is_none() }).await,
        "a lone silent base is deleted"
    );
    // The other three go silent at once (this replica's partition, seen from inside).
    let watches: Vec<_> = ids[1..]
        .iter()
        .map(|id| NodeWatch::start(&kube, &vnode(id)))
        .collect();
    for b in &bases[1..] {
        silence(b, true);
    }
    assert!(
        eventually(T, || async {
            ctl.metric("koupleless_controller_blind").await == 1.0
        })
        .await,
        "mass silence detected"
    );
    tokio::time::sleep(fast_timings().dead_after * 3).await;
    for b in &bases[1..] {
        silence(b, false);
    }
    for id in &ids[1..] {
        let name = vnode(id);
        assert!(
            eventually(T, || async {
                kube.ready(&name).await.as_deref() == Some("True")
            })
            .await,
            "{id} Ready again"
        );
    }
    for (w, id) in watches.into_iter().zip(&ids[1..]) {
        assert_never_deleted(&w.stop().await, id);
    }
    assert!(
        eventually(T, || async {
            ctl.metric("koupleless_controller_blind").await == 0.0
        })
        .await
    );
    for b in bases {
        b.stop().await;
    }
    ctl.stop().await;
}

/// Issue 11.3: the owner is cut off from the API server. It stops acting for the base at its
/// renew deadline, before the other replica may take over, and sends the base nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_cut_off_from_the_api_server_fences_itself() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let proxy = Proxy::start(kube.server.addr()).await.unwrap();
    let via_proxy = koupleless_kube_apiserver::kubeconfig_yaml(&format!("http://{}", proxy.addr()));
    let a =
        Controller::start_with_kubeconfig(via_proxy, settings("mc-a", Some(broker.port), false))
            .await;
    let base = MqttBase::start(broker.port, "fenced").await;
    let name = vnode("fenced");
    assert!(
        eventually(T, || async {
            kube.lease_holder(&name).await.as_deref() == Some("mc-a")
                && kube.ready(&name).await.as_deref() == Some("True")
        })
        .await
    );
    let b = Controller::start(&kube, settings("mc-b", Some(broker.port), false)).await;
    assert!(
        eventually(T, || async {
            b.metric(r#"koupleless_controller_vnodes{state="standby"}"#)
                .await
                == 1.0
        })
        .await
    );
    let uid = uid(&kube, &name).await;
    let commands = "koupleless_controller_commands_total";
    assert!(
        a.metric_sum(commands).await > 0.0,
        "a polls the base while it owns it"
    );

    // Partition: a's packets to the API server vanish.
    proxy.set(Link::Blackhole);
    assert!(
        eventually(T, || async {
            a.metric(r#"koupleless_controller_vnode_transitions_total{transition="fenced"}"#)
                .await
                == 1.0
        })
        .await,
        "a fenced itself"
    );
    assert!(
        eventually(T, || async {
            kube.lease_holder(&name).await.as_deref() == Some("mc-b")
        })
        .await,
        "b took over"
    );
    let frozen = a.metric_sum(commands).await;
    let b_before = b.metric_sum(commands).await;
    // Long enough for several health and module polls, had a kept acting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        a.metric_sum(commands).await,
        frozen,
        "a sent nothing after fencing"
    );
    assert!(b.metric_sum(commands).await > b_before, "b serves the base");
    // The partition heals: a sees b's Lease and stays standby.
    proxy.set(Link::Pass);
    assert!(
        eventually(T, || async {
            a.metric(r#"koupleless_controller_vnodes{state="standby"}"#)
                .await
                == 1.0
        })
        .await
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        a.metric_sum(commands).await,
        frozen,
        "a still sends nothing"
    );
    assert_eq!(kube.lease_holder(&name).await.as_deref(), Some("mc-b"));
    assert_eq!(
        self::uid(&kube, &name).await,
        uid,
        "Node kept through the handover"
    );
    assert_eq!(kube.ready(&name).await.as_deref(), Some("True"));
    base.stop().await;
    b.stop().await;
    a.crash().await;
}

/// Issue 11.3: a replica whose clock is a minute off never takes over early (it judges the
/// holder by how long the Lease stays unchanged on its own clock), and still takes over a
/// crashed holder's Lease in about one Lease duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_causes_no_early_or_late_takeover() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let skewed = |id: &str, secs: i64| {
        let mut s = settings(id, Some(broker.port), false);
        s.clock_offset = SignedDuration::from_secs(secs);
        s
    };
    // The holder's clock is a minute behind, the standby's a minute ahead: by renewTime the
    // Lease looks two minutes stale to the standby.
    let a = Controller::start(&kube, skewed("mc-a", -60)).await;
    let base = MqttBase::start(broker.port, "skew").await;
    let name = vnode("skew");
    assert!(
        eventually(T, || async {
            kube.lease_holder(&name).await.as_deref() == Some("mc-a")
        })
        .await
    );
    let b = Controller::start(&kube, skewed("mc-b", 60)).await;
    assert!(
        eventually(T, || async {
            b.metric(r#"koupleless_controller_vnodes{state="standby"}"#)
                .await
                == 1.0
        })
        .await
    );
    let lease_duration = fast_timings().lease_duration;
    tokio::time::sleep(lease_duration * 4).await;
    assert_eq!(
        kube.lease_holder(&name).await.as_deref(),
        Some("mc-a"),
        "no early takeover"
    );
    assert_eq!(
        b.metric(r#"koupleless_controller_vnode_transitions_total{transition="acquired"}"#)
            .await,
        0.0
    );
    // Now the holder (clock behind) crashes; then the other way round: a holder whose clock is
    // ahead crashes and a standby whose clock is behind must not wait for that minute.
    a.crash().await;
    let crashed_at = tokio::time::Instant::now();
    assert!(
        eventually(T, || async {
            kube.lease_holder(&name).await.as_deref() == Some("mc-b")
        })
        .await
    );
    let took = crashed_at.elapsed();
    assert!(took < lease_duration * 3, "takeover after {took:?}");
    let c = Controller::start(&kube, skewed("mc-c", -60)).await;
    assert!(
        eventually(T, || async {
            c.metric(r#"koupleless_controller_vnodes{state="standby"}"#)
                .await
                == 1.0
        })
        .await
    );
    b.crash().await;
    let crashed_at = tokio::time::Instant::now();
    assert!(
        eventually(T, || async {
            kube.lease_holder(&name).await.as_deref() == Some("mc-c")
        })
        .await,
        "a standby whose clock is behind still takes over"
    );
    let took = crashed_at.elapsed();
    assert!(took < lease_duration * 3, "takeover after {took:?}");
    assert_eq!(kube.ready(&name).await.as_deref(), Some("True"));
    base.stop().await;
    c.stop().await;
}

/// Issue 11.5: a one-off DEACTIVATED heartbeat after a flood of messages is not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivation_after_a_flood_is_not_lost() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let mut s = settings("mc-1", Some(broker.port), false);
    // Only the deactivation may delete the Node within the test's time.
    s.timings.unreachable_after = Duration::from_secs(60);
    s.timings.dead_after = Duration::from_secs(120);
    let ctl = Controller::start(&kube, s).await;
    let base = MqttBase::start(broker.port, "flood").await;
    let name = vnode("flood");
    assert!(
        eventually(T, || async {
            kube.ready(&name).await.as_deref() == Some("True")
        })
        .await
    );
    let hb = {
        let st = base.state.lock().unwrap().clone();
        let e = koupleless_protocol::Envelope::new(
            st.status(0, koupleless_protocol::BizState::Activated),
            now_ms(),
        );
        String::from_utf8(koupleless_protocol::transport::encode(
            &e,
            koupleless_protocol::transport::Transport::Mqtt,
        ))
        .unwrap()
    };
    let health = format!(
        r#"{{"publishTimestamp":{},"data":{{"code":"SUCCESS","data":{{"healthData":{{}}}}}}}}"#,
        now_ms()
    );
    for _ in 0..500 {
        base.publish_raw("base/heart", &hb).await;
        base.publish_raw("base/health", &health).await;
    }
    base.deactivate().await;
    assert!(
        eventually(T, || async { kube.node(&name).await.is_none() }).await,
        "the deactivation deleted the Node"
    );
    base.stop().await;
    ctl.stop().await;
}

/// Issue 11.7: a cordon, a taint and a label added by others survive status writes and a
/// controller restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_fields_others_own_survive() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, settings("mc-1", Some(broker.port), false)).await;
    let base = MqttBase::start(broker.port, "owned-fields").await;
    let name = vnode("owned-fields");
    assert!(eventually(T, || async { kube.memory(&name).await.is_some() }).await);
    let node = kube.node(&name).await.unwrap();
    let mut taints = node
        .spec
        .as_ref()
        .unwrap()
        .taints
        .clone()
        .unwrap_or_default();
    taints.push(k8s_openapi::api::core::v1::Taint {
        key: "node.kubernetes.io/unreachable".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    });
    let patch = serde_json::json!({
        "metadata": {
            "labels": {"team.example.com/owner": "payments"},
            "resourceVersion": node.metadata.resource_version,
        },
        "spec": {"unschedulable": true, "taints": taints},
    });
    kube.nodes()
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let check = || async {
        let n = kube.node(&name).await.unwrap();
        let spec = n.spec.clone().unwrap();
        let labels = n.metadata.labels.clone().unwrap();
        let taints = spec.taints.clone().unwrap_or_default();
        spec.unschedulable == Some(true)
            && labels.get("team.example.com/owner").map(String::as_str) == Some("payments")
            && taints
                .iter()
                .any(|t| t.key == "node.kubernetes.io/unreachable")
            && taints
                .iter()
                .any(|t| t.key == "schedule.koupleless.io/virtual-node")
    };
    // Several status writes: the metaspace moves each time.
    for i in 1..=3 {
        let committed = (80 + i) << 20;
        base.set(|s| s.committed_metaspace = committed);
        let want = format!("{}Ki", ((256i64 << 20) - committed) / 1024);
        assert!(
            eventually(T, || async {
                kube.memory(&name).await.map(|m| m.1) == Some(want.clone())
            })
            .await
        );
        assert!(check().await, "after status write {i}");
    }
    ctl.stop().await;
    let ctl = Controller::start(&kube, settings("mc-1", Some(broker.port), false)).await;
    base.set(|s| s.committed_metaspace = 90 << 20);
    assert!(
        eventually(T, || async {
            kube.memory(&name).await.map(|m| m.1) == Some(format!("{}Ki", (166i64 << 20) / 1024))
        })
        .await,
        "the restarted controller writes status"
    );
    assert!(check().await, "after a controller restart");
    base.stop().await;
    ctl.stop().await;
}

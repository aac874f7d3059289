//! Simulated bases against the real controller and the API test server.

mod support;

use std::time::Duration;

use koupleless_controller::Timings;
use koupleless_kube_apiserver::requests::writes_between;
use koupleless_simulator::{Config, Fleet, Tunnel};
use support::{Broker, ENV, World, eventually, fast_timings, http_settings, settings};

fn mqtt_config(port: u16) -> Config {
    Config::new(
        ENV,
        Tunnel::Mqtt {
            host: "127.0.0.1".into(),
            port,
        },
    )
}

/// 50 bases with the Java defaults become 50 Ready Nodes under the controller's upstream
/// timings, and each asked for its baseline once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mqtt_bases_become_ready_nodes() {
    let broker = Broker::start().await;
    let world = World::start(settings(broker.port, Timings::UPSTREAM)).await;
    let fleet = Fleet::start(mqtt_config(broker.port), 50).await.unwrap();
    assert!(
        eventually(Duration::from_secs(60), || async {
            world.ready_nodes().await == 50
        })
        .await,
        "only {} of 50 Nodes Ready",
        world.ready_nodes().await
    );
    let stats = fleet.stats().snapshot();
    assert!(stats.contains(&("baseline_queries", 50)), "{stats:?}");
    // The controller polls health at once on taking a base over.
    assert!(
        eventually(Duration::from_secs(30), || async {
            fleet
                .stats()
                .commands
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 50
        })
        .await
    );
    fleet.shutdown().await;
    world.stop().await;
}

/// At steady state the controller writes nothing but Lease renewals: no Node status, no Node
/// metadata, no Events, although every base's JVM commits a little more metaspace before each
/// health report (drift below a megabyte waits for the 5-minute status report).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_writes_only_lease_renewals() {
    const BASES: usize = 30;
    let broker = Broker::start().await;
    let timings = fast_timings();
    let world = World::start(settings(broker.port, timings)).await;
    let mut config = mqtt_config(broker.port);
    config.heartbeat_interval = Duration::from_secs(1);
    config.metaspace_creep = 16 << 10;
    let fleet = Fleet::start(config, BASES).await.unwrap();
    assert!(
        eventually(Duration::from_secs(60), || async {
            world.ready_nodes().await == BASES
        })
        .await
    );
    // Past the first health reports and module lists.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let window = Duration::from_secs(12);
    let before = world.requests();
    tokio::time::sleep(window).await;
    let writes = writes_between(&before, &world.requests());
    eprintln!("writes in {window:?} with {BASES} bases: {writes:?}");
    let renewals = writes
        .get(&("update".into(), "leases.coordination.k8s.io".into()))
        .copied()
        .unwrap_or(0);
    // One renewal per base per second, give or take one at each end of the window; never
    // more (a write beyond the renewals is what this test is about), fewer only when a
    // loaded machine delays them.
    let expected = BASES as u64 * window.as_secs();
    assert!(
        renewals >= expected / 2 && renewals <= expected + 2 * BASES as u64,
        "{renewals} Lease renewals, expected about {expected}"
    );
    let others: Vec<_> = writes
        .iter()
        .filter(|((_, r), _)| r != "leases.coordination.k8s.io")
        .collect();
    assert!(
        others.is_empty(),
        "writes other than Lease renewals: {others:?}"
    );
    fleet.shutdown().await;
    world.stop().await;
}

/// Bases on the HTTP tunnel become Ready Nodes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bases_become_ready_nodes() {
    let world = World::start(http_settings(fast_timings())).await;
    let mut config = Config::new(
        ENV,
        Tunnel::Http {
            controller: world.http.unwrap(),
        },
    );
    config.heartbeat_interval = Duration::from_secs(1);
    let fleet = Fleet::start(config, 10).await.unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async {
            world.ready_nodes().await == 10
        })
        .await,
        "only {} of 10 Nodes Ready",
        world.ready_nodes().await
    );
    fleet.shutdown().await;
    world.stop().await;
}

/// Partition, restart and stop do to the controller what they do with real bases: a cut
/// base's Node turns Unknown and back to Ready when healed, a restarted base asks for its
/// baseline again, a stopped base's Node is deleted once it counts as dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_restart_and_stop() {
    let broker = Broker::start().await;
    let world = World::start(settings(broker.port, fast_timings())).await;
    let mut config = mqtt_config(broker.port);
    config.heartbeat_interval = Duration::from_secs(1);
    let mut fleet = Fleet::start(config.clone(), 3).await.unwrap();
    let t = Duration::from_secs(30);
    assert!(eventually(t, || async { world.ready_nodes().await == 3 }).await);

    let cut = config.node_name(0);
    fleet.partition(0, true);
    assert!(
        eventually(t, || async {
            world.ready(&cut).await.as_deref() == Some("Unknown")
        })
        .await,
        "a partitioned base's Node turns Unknown"
    );
    fleet.partition(0, false);
    assert!(
        eventually(t, || async {
            world.ready(&cut).await.as_deref() == Some("True")
        })
        .await,
        "a healed base's Node is Ready again"
    );

    fleet.restart(1).await.unwrap();
    assert!(
        eventually(t, || async {
            fleet
                .stats()
                .baseline_queries
                .load(std::sync::atomic::Ordering::Relaxed)
                == 4
        })
        .await,
        "a restarted base asks for its baseline again"
    );

    fleet.stop(2).await;
    assert!(!fleet.running(2));
    let gone = config.node_name(2);
    assert!(
        eventually(t, || async { world.ready(&gone).await.is_none() }).await,
        "a stopped base's Node is deleted"
    );
    assert_eq!(
        world.ready(&config.node_name(1)).await.as_deref(),
        Some("True")
    );
    fleet.shutdown().await;
    world.stop().await;
}

/// A module Pod bound to a simulated base is installed there after the install delay and
/// turns Running and Ready from the base's `bizOperation` and `simpleBiz` replies; deleting
/// it uninstalls the module.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_pod_installs_and_uninstalls_on_a_simulated_base() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::Api;
    use kube::api::{DeleteParams, PostParams};

    let broker = Broker::start().await;
    let world = World::start(settings(broker.port, fast_timings())).await;
    let mut config = mqtt_config(broker.port);
    config.heartbeat_interval = Duration::from_secs(1);
    config.install_delay = Duration::from_millis(200);
    let fleet = Fleet::start(config.clone(), 2).await.unwrap();
    let t = Duration::from_secs(30);
    assert!(eventually(t, || async { world.ready_nodes().await == 2 }).await);

    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "biz1", "namespace": "default",
            "labels": {"virtual-kubelet.koupleless.io/component": "module"}},
        "spec": {"nodeName": config.node_name(1), "containers": [{"name": "biz1",
                "image": "https://repo.example/biz1-0.0.1-ark-biz.jar",
                "env": [{"name": "BIZ_VERSION", "value": "0.0.1"}]}],
            "tolerations": [
                {"key": "schedule.koupleless.io/virtual-node", "operator": "Equal", "value": "True", "effect": "NoExecute"},
                {"key": "schedule.koupleless.io/node-env", "operator": "Equal", "value": ENV, "effect": "NoExecute"}]},
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), "default");
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let running = || async {
        pods.get_opt("biz1").await.ok().flatten().is_some_and(|p| {
            let st = p.status.unwrap_or_default();
            st.phase.as_deref() == Some("Running")
                && st
                    .conditions
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    };
    assert!(
        eventually(t, running).await,
        "the module Pod is Running and Ready"
    );
    assert_eq!(
        fleet.modules(1),
        [(
            "biz1:0.0.1".to_owned(),
            koupleless_protocol::BizState::Activated
        )]
    );
    assert!(fleet.modules(0).is_empty());

    pods.delete("biz1", &DeleteParams::default()).await.unwrap();
    assert!(
        eventually(t, || async { fleet.modules(1).is_empty() }).await,
        "deleting the Pod uninstalls the module"
    );
    fleet.shutdown().await;
    world.stop().await;
}

//! Simulated bases against the real controller and the API test server.

mod support;

use std::time::Duration;

use koupleless_controller::Timings;
use koupleless_kube_apiserver::requests::writes_between;
use koupleless_simulator::{Config, Fleet, Tunnel};
use support::{Broker, ENV, World, eventually, settings};

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
    // Upstream cadence, faster: heartbeat and health every second, Lease renewed every
    // second; the ratios between them are upstream's.
    let timings = Timings {
        unreachable_after: Duration::from_millis(2500),
        dead_after: Duration::from_secs(6),
        lease_duration: Duration::from_secs(4),
        lease_renew_interval: Duration::from_secs(1),
        lease_renew_deadline: Duration::from_secs(3),
        health_interval: Duration::from_secs(1),
        biz_interval: Duration::from_millis(1500),
        retry_interval: Duration::from_millis(200),
        retry_max: Duration::from_secs(6),
        baseline_wait: Duration::from_secs(3),
    };
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
    // One renewal per base per second, give or take one at each end of the window.
    let expected = BASES as u64 * window.as_secs();
    assert!(
        renewals >= expected - 2 * BASES as u64 && renewals <= expected + 2 * BASES as u64,
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

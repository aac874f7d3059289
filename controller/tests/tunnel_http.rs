//! The HTTP tunnel's Arklet client: operation results (uninstall included), timeouts and
//! per-base concurrency limits, against real HTTP servers on loopback.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use koupleless_controller::config::HttpTunnelSettings;
use koupleless_controller::metrics::Metrics;
use koupleless_controller::tunnel::{
    Command, Endpoint, HttpTunnel, Tunnel, TunnelError, TunnelEvent,
};
use koupleless_protocol::{BaseIdentity, BizSpec, BizState};
use tokio::sync::mpsc;

fn spec() -> BizSpec {
    BizSpec {
        biz_name: "biz1".into(),
        biz_version: "0.0.1".into(),
        biz_url: "file:///tmp/biz1.jar".into(),
    }
}

async fn next(rx: &mut mpsc::Receiver<TunnelEvent>) -> TunnelEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_timeouts_and_per_base_limits() {
    init_logs();
    let (tx, mut rx) = mpsc::channel(64);
    let settings = HttpTunnelSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        call_timeout: Duration::from_millis(300),
        operation_timeout: Duration::from_secs(2),
        max_calls_per_base: 1,
        ..HttpTunnelSettings::default()
    };
    let (tunnel, _driver) = HttpTunnel::new(
        settings,
        tx,
        Duration::from_secs(1),
        Arc::new(Metrics::new()),
    )
    .unwrap();

    // A responsive base. Heartbeats go nowhere here; the endpoint is given at attach.
    let unused = "127.0.0.1:9".parse().unwrap();
    let base = HttpBase::start(unused, "ok-base").await;
    base.set(|s| s.heartbeats = false);
    let ok: BaseIdentity = "ok-base".parse().unwrap();
    tunnel
        .attach(
            &ok,
            Some(Endpoint {
                host: "127.0.0.1".into(),
                port: base.port,
            }),
        )
        .await
        .unwrap();

    // Uninstall success is reported (upstream reports nothing), install too.
    tunnel.send(&ok, Command::Uninstall(spec())).await.unwrap();
    match next(&mut rx).await {
        TunnelEvent::Bizs {
            records, complete, ..
        } => {
            assert!(!complete);
            assert_eq!(records[0].state, BizState::Stopped);
            assert_eq!(records[0].reason, "biz1:0.0.1 uninstallBiz succeed");
        }
        other => panic!("{other:?}"),
    }
    tunnel.send(&ok, Command::Install(spec())).await.unwrap();
    match next(&mut rx).await {
        TunnelEvent::Bizs { records, .. } => assert_eq!(records[0].state, BizState::Activated),
        other => panic!("{other:?}"),
    }
    assert_eq!(base.state.lock().unwrap().installs.len(), 2);

    // A hung base: accepts connections, never answers.
    let hung_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_port = hung_listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = hung_listener.accept().await {
            conns.push(c);
        }
    });
    let hung: BaseIdentity = "hung-base".parse().unwrap();
    tunnel
        .attach(
            &hung,
            Some(Endpoint {
                host: "127.0.0.1".into(),
                port: hung_port,
            }),
        )
        .await
        .unwrap();
    tunnel.send(&hung, Command::Health).await.unwrap();
    // Its one permitted call is in flight: the next poll is skipped, not queued.
    assert!(matches!(
        tunnel.send(&hung, Command::Health).await,
        Err(TunnelError::Busy(_))
    ));
    // Other bases are not held up by it.
    tunnel.send(&ok, Command::Health).await.unwrap();
    match next(&mut rx).await {
        TunnelEvent::Health { base, data, .. } => {
            assert_eq!(base, ok);
            assert_eq!(data.jvm.unwrap().max_metaspace, Some(256 << 20));
        }
        other => panic!("{other:?}"),
    }
    // After the call timeout the permit is free again.
    assert!(
        eventually(Duration::from_secs(3), || async {
            tunnel.send(&hung, Command::QueryAllBiz).await.is_ok()
        })
        .await,
        "timed-out call released its permit"
    );
    // Unknown bases have no endpoint.
    let nobody: BaseIdentity = "nobody".parse().unwrap();
    assert!(matches!(
        tunnel.send(&nobody, Command::Health).await,
        Err(TunnelError::NoEndpoint(_))
    ));
    hold.abort();
    base.stop().await;
}

//! The HTTP tunnel does not trust a heartbeat's body (issue 11 item 4): `localIP` must be the
//! caller's address unless it has the shared token, a live base cannot be moved by someone
//! else's heartbeat, DEACTIVATED counts only from the base's own address, the controller sends
//! the Arklet token, and forgotten bases' addresses are pruned. Foreign callers are simulated
//! with a second loopback address (127.0.0.2); everything stays on 127.0.0.0/8.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use common::*;
use koupleless_controller::config::{BearerToken, HttpTunnelSettings};
use koupleless_controller::labels::BASE_TUNNEL_PORT;
use koupleless_controller::metrics::Metrics;
use koupleless_controller::tunnel::{
    Command, Endpoint, HttpTunnel, Tunnel, TunnelError, TunnelEvent,
};
use koupleless_protocol::transport::{self, Transport};
use koupleless_protocol::{BaseIdentity, BaseStatus, BizInfo, BizSpec, BizState, Response};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const FOREIGN: &str = "127.0.0.2";
const TOKEN: &str = "s3cret-token";

/// One request an Arklet stub received.
#[derive(Clone, Debug)]
struct Call {
    path: String,
    authorization: Option<String>,
}

/// A minimal Arklet on any loopback address: answers as `identity`, records every request
/// and, when it has a token, answers 401 to requests without it (as our agent's `--api-token`).
#[derive(Clone)]
struct Stub {
    identity: String,
    token: Option<String>,
    calls: Arc<Mutex<Vec<Call>>>,
}

async fn stub_arklet(
    State(s): State<Stub>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    s.calls.lock().unwrap().push(Call {
        path: uri.path().to_owned(),
        authorization: authorization.clone(),
    });
    if let Some(t) = &s.token
        && authorization.as_deref() != Some(format!("Bearer {t}").as_str())
    {
        return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
    }
    let json =
        |v: Vec<u8>| ([(axum::http::header::CONTENT_TYPE, "application/json")], v).into_response();
    match uri.path() {
        "/health" => json(transport::encode(
            &Response::success(s.identity.clone(), BaseState::new(&s.identity).health()),
            Transport::Http,
        )),
        "/queryAllBiz" => json(transport::encode(
            &Response::success(s.identity.clone(), Vec::<BizInfo>::new()),
            Transport::Http,
        )),
        "/installBiz" | "/uninstallBiz" => {
            let _ = serde_json::from_slice::<BizSpec>(&body);
            json(br#"{"code":"SUCCESS","data":{"code":"SUCCESS","message":"done"}}"#.to_vec())
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

impl Stub {
    async fn start(ip: &str, identity: &str, token: Option<&str>) -> (Stub, u16) {
        let stub = Stub {
            identity: identity.into(),
            token: token.map(str::to_owned),
            calls: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = Router::new().fallback(stub_arklet).with_state(stub.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (stub, port)
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

fn status(identity: &str, ip: &str, port: u16, state: BizState) -> BaseStatus {
    let mut s = BaseState::new(identity);
    s.ip = ip.into();
    s.status(port, state)
}

/// POSTs a heartbeat from the loopback address `from`.
async fn post_heartbeat(
    controller: SocketAddr,
    from: &str,
    status: &BaseStatus,
    token: Option<&str>,
) -> (StatusCode, String) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .local_address(from.parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let mut req = client
        .post(format!("http://{controller}/heartbeat"))
        .header("content-type", "application/json")
        .body(transport::encode(status, Transport::Mqtt));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let code = resp.status();
    (code, resp.text().await.unwrap())
}

fn reason(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["reason"].as_str().unwrap_or_default().to_owned()
}

/// The Node's InternalIP and tunnel-port label.
async fn node_endpoint(kube: &Kube, identity: &str) -> Option<(String, String)> {
    let n = kube.node(&vnode(identity)).await?;
    let ip = n
        .status?
        .addresses?
        .into_iter()
        .find(|a| a.type_ == "InternalIP")?
        .address;
    let port = n.metadata.labels?.get(BASE_TUNNEL_PORT)?.clone();
    Some((ip, port))
}

fn metric_name(kind: &str) -> String {
    format!(r#"koupleless_controller_tunnel_errors_total{{tunnel="http",kind="{kind}"}}"#)
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_local_ip_is_refused_and_creates_no_node() {
    init_logs();
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, settings("c1", None, true)).await;
    let addr = ctl.http.unwrap();

    // A foreign caller names 127.0.0.1 (where a real base could be) for a new identity.
    let (code, body) = post_heartbeat(
        addr,
        FOREIGN,
        &status("spoof-1", "127.0.0.1", 1238, BizState::Activated),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(reason(&body), "peer_mismatch", "{body}");
    assert!(body.contains("127.0.0.2"), "the answer says why: {body}");

    // The same heartbeat from the address it names is fine: the rule is not "refuse all".
    let (stub, port) = Stub::start("127.0.0.1", "legit-1", None).await;
    let (code, body) = post_heartbeat(
        addr,
        "127.0.0.1",
        &status("legit-1", "127.0.0.1", port, BizState::Activated),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(
        eventually(WAIT, || async {
            kube.node(&vnode("legit-1")).await.is_some()
        })
        .await,
        "the accepted heartbeat created its Node"
    );
    // The refused one, processed earlier, created nothing.
    assert!(kube.node(&vnode("spoof-1")).await.is_none());
    assert_eq!(
        ctl.metric(&metric_name("heartbeat_peer_mismatch")).await,
        1.0
    );
    assert!(
        !stub.calls().is_empty(),
        "the controller calls the real base"
    );
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_admits_a_base_behind_nat_and_is_sent_on_every_arklet_call() {
    init_logs();
    let kube = Kube::start().await;
    let mut s = settings("c1", None, true);
    s.http.as_mut().unwrap().api_token = BearerToken::new(TOKEN);
    let ctl = Controller::start(&kube, s).await;
    let addr = ctl.http.unwrap();
    // A secured agent on 127.0.0.2 whose heartbeats leave through 127.0.0.1 (NAT).
    let (stub, port) = Stub::start(FOREIGN, "natted-1", Some(TOKEN)).await;
    let hb = status("natted-1", FOREIGN, port, BizState::Activated);

    let (code, body) = post_heartbeat(addr, "127.0.0.1", &hb, None).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "no token, wrong peer: {body}");
    let (code, body) = post_heartbeat(addr, "127.0.0.1", &hb, Some("guess")).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(reason(&body), "bad_token", "{body}");
    assert_eq!(ctl.metric(&metric_name("heartbeat_bad_token")).await, 1.0);
    // A wrong token is refused even from the right address.
    let (code, _) = post_heartbeat(addr, FOREIGN, &hb, Some("guess")).await;
    assert_eq!(code, StatusCode::FORBIDDEN);

    let (code, body) = post_heartbeat(addr, "127.0.0.1", &hb, Some(TOKEN)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(
        eventually(WAIT, || async {
            kube.ready(&vnode("natted-1")).await.as_deref() == Some("True")
        })
        .await,
        "Node Ready"
    );
    assert!(
        eventually(WAIT, || async {
            stub.calls().iter().any(|c| c.path == "/health")
                && stub.calls().iter().any(|c| c.path == "/queryAllBiz")
        })
        .await,
        "health and queryAllBiz reached the secured agent: {:?}",
        stub.calls()
    );
    let calls = stub.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"))),
        "every Arklet call carries the token: {calls:?}"
    );
    assert_eq!(
        node_endpoint(&kube, "natted-1").await,
        Some((FOREIGN.into(), port.to_string()))
    );
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_base_cannot_be_moved_by_someone_else() {
    init_logs();
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, settings("c1", None, true)).await;
    let addr = ctl.http.unwrap();
    let base = HttpBase::start(addr, "live-1").await;
    let real = ("127.0.0.1".to_owned(), base.port.to_string());
    assert!(
        eventually(WAIT, || async {
            kube.ready(&vnode("live-1")).await.as_deref() == Some("True")
        })
        .await
    );
    assert_eq!(node_endpoint(&kube, "live-1").await, Some(real.clone()));

    // An impostor on 127.0.0.2 that answers as live-1 names itself as live-1's address.
    let (impostor, port) = Stub::start(FOREIGN, "live-1", None).await;
    let hb = status("live-1", FOREIGN, port, BizState::Activated);
    let (code, body) = post_heartbeat(addr, FOREIGN, &hb, None).await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert_eq!(reason(&body), "base_still_answers", "{body}");
    // Again, within the confirmation window: refused without asking the base again.
    let asked = base.state.lock().unwrap().health_requests;
    let (code, _) = post_heartbeat(addr, FOREIGN, &hb, None).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(
        ctl.metric(&metric_name("heartbeat_repoint_refused")).await,
        2.0
    );

    // The controller keeps calling the real base and never the impostor.
    assert!(
        eventually(WAIT, || async {
            base.state.lock().unwrap().health_requests >= asked + 5
        })
        .await,
        "health polls still reach the real base"
    );
    assert!(impostor.calls().is_empty(), "{:?}", impostor.calls());
    assert_eq!(node_endpoint(&kube, "live-1").await, Some(real));
    assert_eq!(kube.ready(&vnode("live-1")).await.as_deref(), Some("True"));
    base.stop().await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_whose_old_address_is_dead_may_move() {
    init_logs();
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, settings("c1", None, true)).await;
    let addr = ctl.http.unwrap();
    let old = HttpBase::start(addr, "mover-1").await;
    let old_port = old.port;
    assert!(
        eventually(WAIT, || async {
            kube.ready(&vnode("mover-1")).await.as_deref() == Some("True")
        })
        .await
    );
    let uid = kube.node(&vnode("mover-1")).await.unwrap().metadata.uid;
    // The base restarts on another port; nothing answers on the old one any more.
    old.stop().await;
    let new = HttpBase::start(addr, "mover-1").await;
    assert_ne!(new.port, old_port);
    assert!(
        eventually(WAIT, || async {
            node_endpoint(&kube, "mover-1").await
                == Some(("127.0.0.1".into(), new.port.to_string()))
        })
        .await,
        "the Node follows the base: {:?}",
        node_endpoint(&kube, "mover-1").await
    );
    let asked = new.state.lock().unwrap().health_requests;
    assert!(
        eventually(WAIT, || async {
            new.state.lock().unwrap().health_requests > asked
        })
        .await,
        "the controller calls the new address"
    );
    assert_eq!(
        kube.node(&vnode("mover-1")).await.unwrap().metadata.uid,
        uid
    );
    new.stop().await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_deactivation_does_not_remove_a_live_base() {
    init_logs();
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, settings("c1", None, true)).await;
    let addr = ctl.http.unwrap();
    let base = HttpBase::start(addr, "keep-1").await;
    assert!(
        eventually(WAIT, || async {
            kube.ready(&vnode("keep-1")).await.as_deref() == Some("True")
        })
        .await
    );
    let uid = kube.node(&vnode("keep-1")).await.unwrap().metadata.uid;

    // Naming the base's own address from elsewhere fails the peer check...
    let bye = status("keep-1", "127.0.0.1", base.port, BizState::Deactivated);
    let (code, body) = post_heartbeat(addr, FOREIGN, &bye, None).await;
    assert_eq!(
        (code, reason(&body).as_str()),
        (StatusCode::FORBIDDEN, "peer_mismatch")
    );
    // ...and naming the caller's own address is not the base's.
    let bye = status("keep-1", FOREIGN, base.port, BizState::Deactivated);
    let (code, body) = post_heartbeat(addr, FOREIGN, &bye, None).await;
    assert_eq!(
        (code, reason(&body).as_str()),
        (StatusCode::FORBIDDEN, "foreign_deactivation"),
        "{body}"
    );
    assert_eq!(
        ctl.metric(&metric_name("heartbeat_foreign_deactivation"))
            .await,
        1.0
    );
    // Long enough for a counted DEACTIVATED to have deleted the Node (dead after 2 s).
    let asked = base.state.lock().unwrap().health_requests;
    assert!(
        eventually(WAIT, || async {
            base.state.lock().unwrap().health_requests >= asked + 8
        })
        .await
    );
    let node = kube.node(&vnode("keep-1")).await.expect("Node kept");
    assert_eq!(node.metadata.uid, uid);
    assert_eq!(kube.ready(&vnode("keep-1")).await.as_deref(), Some("True"));

    // The base's own DEACTIVATED, from its address, still removes it at once.
    base.deactivate(addr).await;
    assert!(
        eventually(WAIT, || async {
            kube.node(&vnode("keep-1")).await.is_none()
        })
        .await,
        "the real goodbye counts"
    );
    base.stop().await;
    ctl.stop().await;
}

// ---------------------------------------------------------------------------------------
// The tunnel alone: its address map.

struct TunnelWorld {
    tunnel: HttpTunnel,
    addr: SocketAddr,
    events: mpsc::Receiver<TunnelEvent>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TunnelWorld {
    async fn start(endpoint_ttl: Duration) -> TunnelWorld {
        let (tx, events) = mpsc::channel(256);
        let settings = HttpTunnelSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            call_timeout: Duration::from_secs(1),
            operation_timeout: Duration::from_secs(2),
            max_calls_per_base: 2,
            api_token: None,
            endpoint_ttl,
        };
        let (tunnel, driver) = HttpTunnel::new(
            settings,
            tx,
            Duration::from_secs(1),
            Arc::new(Metrics::new()),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(driver.run(listener, cancel.clone()));
        TunnelWorld {
            tunnel,
            addr,
            events,
            cancel,
            task,
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn id(s: &str) -> BaseIdentity {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_move_leaves_installs_on_the_real_base() {
    init_logs();
    let mut w = TunnelWorld::start(Duration::from_secs(600)).await;
    let base = HttpBase::start("127.0.0.1:9".parse().unwrap(), "real-1").await;
    base.set(|s| s.heartbeats = false);
    let hb = status("real-1", "127.0.0.1", base.port, BizState::Activated);
    assert_eq!(post_heartbeat(w.addr, "127.0.0.1", &hb, None).await.0, 200);
    assert!(matches!(
        w.events.recv().await,
        Some(TunnelEvent::Heartbeat { .. })
    ));
    w.tunnel.attach(&id("real-1"), None).await.unwrap();

    let (impostor, port) = Stub::start(FOREIGN, "real-1", None).await;
    let spoof = status("real-1", FOREIGN, port, BizState::Activated);
    assert_eq!(
        post_heartbeat(w.addr, FOREIGN, &spoof, None).await.0,
        StatusCode::CONFLICT
    );
    // Not passed on as a sign of life.
    assert!(w.events.try_recv().is_err());
    assert_eq!(
        w.tunnel.endpoint(&id("real-1")),
        Some(Endpoint {
            host: "127.0.0.1".into(),
            port: base.port
        })
    );
    let spec = BizSpec {
        biz_name: "biz1".into(),
        biz_version: "0.0.1".into(),
        biz_url: "file:///tmp/biz1.jar".into(),
    };
    w.tunnel
        .send(&id("real-1"), Command::Install(spec.clone()))
        .await
        .unwrap();
    let ev = tokio::time::timeout(WAIT, w.events.recv()).await.unwrap();
    assert!(matches!(ev, Some(TunnelEvent::Bizs { .. })), "{ev:?}");
    assert_eq!(base.state.lock().unwrap().installs, vec![spec]);
    assert!(impostor.calls().is_empty(), "{:?}", impostor.calls());
    base.stop().await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_of_bases_that_left_or_never_became_nodes_are_pruned() {
    init_logs();
    let ttl = Duration::from_millis(1500);
    let mut w = TunnelWorld::start(ttl).await;
    // Many identities that never become Nodes here (nothing attaches them).
    for i in 0..20 {
        let hb = status(
            &format!("ghost-{i}"),
            "127.0.0.1",
            4000 + i,
            BizState::Activated,
        );
        assert_eq!(post_heartbeat(w.addr, "127.0.0.1", &hb, None).await.0, 200);
    }
    // One base this replica serves, and one that it served until it left.
    let (_stub, port) = Stub::start("127.0.0.1", "served-1", None).await;
    let served = Endpoint {
        host: "127.0.0.1".into(),
        port,
    };
    w.tunnel
        .attach(&id("served-1"), Some(served.clone()))
        .await
        .unwrap();
    w.tunnel
        .attach(&id("left-1"), Some(served.clone()))
        .await
        .unwrap();
    w.tunnel.detach(&id("left-1")).await.unwrap();
    assert_eq!(w.tunnel.known_bases(), 22);

    assert!(
        eventually(WAIT, || async { w.tunnel.known_bases() == 1 }).await,
        "only the served base is left: {}",
        w.tunnel.known_bases()
    );
    assert_eq!(w.tunnel.endpoint(&id("served-1")), Some(served));
    assert!(w.tunnel.endpoint(&id("ghost-0")).is_none());
    assert!(matches!(
        w.tunnel.send(&id("left-1"), Command::Health).await,
        Err(TunnelError::NoEndpoint(_))
    ));
    // A base still heartbeating is not pruned even when not served here.
    let hb = status("chatty-1", "127.0.0.1", 4100, BizState::Activated);
    for _ in 0..6 {
        assert_eq!(post_heartbeat(w.addr, "127.0.0.1", &hb, None).await.0, 200);
        tokio::time::sleep(ttl / 4).await;
        assert!(w.tunnel.endpoint(&id("chatty-1")).is_some());
    }
    while w.events.try_recv().is_ok() {}
    w.stop().await;
}

//! The HTTP tunnel end to end (spec protocol §6): the real agent, started from its command line,
//! and a tiny axum server playing the controller's `POST /heartbeat` and `POST /queryBaseline`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Parser;
use koupleless_agent::app::{self, Agent};
use koupleless_agent::config::Config;
use koupleless_protocol::BizState;
use koupleless_testkit::broker::Broker;
use koupleless_testkit::{BizJar, SMALL_JVM_ARGS, file_url, free_port, java_available};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const SOON: Duration = Duration::from_secs(10);

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    koupleless_testkit::wait_until(timeout, &mut cond).await
}

/// One request the fake controller received.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    content_type: Option<String>,
    authorization: Option<String>,
    body: Value,
}

#[derive(Default)]
struct Recorded {
    heartbeats: Vec<Seen>,
    baseline_queries: Vec<Seen>,
    /// Answer this many heartbeats with 503 first.
    fail_heartbeats: usize,
    /// Status and body of `/queryBaseline`.
    baseline: Option<(StatusCode, Value)>,
}

/// The controller side of the HTTP tunnel, as the Go controller serves it.
struct FakeController {
    addr: SocketAddr,
    state: Arc<Mutex<Recorded>>,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

fn seen(headers: &HeaderMap, body: &Bytes) -> Seen {
    Seen {
        at: Instant::now(),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
    }
}

async fn heartbeat(
    State(st): State<Arc<Mutex<Recorded>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = st.lock().unwrap();
    st.heartbeats.push(seen(&headers, &body));
    if st.fail_heartbeats > 0 {
        st.fail_heartbeats -= 1;
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    (StatusCode::OK, "SUCCESS").into_response()
}

async fn query_baseline(
    State(st): State<Arc<Mutex<Recorded>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = st.lock().unwrap();
    st.baseline_queries.push(seen(&headers, &body));
    let (status, list) = st.baseline.clone().unwrap_or((StatusCode::OK, json!([])));
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        list.to_string(),
    )
        .into_response()
}

impl FakeController {
    async fn start(port: u16, state: Recorded) -> FakeController {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(state));
        let app = Router::new()
            .route("/heartbeat", post(heartbeat))
            .route("/queryBaseline", post(query_baseline))
            .with_state(Arc::clone(&state));
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .unwrap();
        });
        FakeController {
            addr,
            state,
            stop,
            server,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn heartbeats(&self) -> Vec<Seen> {
        self.state.lock().unwrap().heartbeats.clone()
    }

    fn baseline_queries(&self) -> Vec<Seen> {
        self.state.lock().unwrap().baseline_queries.clone()
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.server.await;
    }
}

async fn start_agent(work: &std::path::Path, extra: &[&str]) -> Agent {
    let jvm_args = SMALL_JVM_ARGS.join(" ");
    let mut args = vec![
        "koupleless-agent",
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--base-identity",
        "10.0.2.1",
        "--base-name",
        "test-base",
        "--stop-grace",
        "3s",
        "--work-dir",
        work.to_str().unwrap(),
        "--module-jvm-arg",
        &jvm_args,
    ];
    args.extend_from_slice(extra);
    app::start(Config::parse_from(args))
        .await
        .expect("agent starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_posts_the_raw_base_status_with_the_real_port() {
    let ctl = FakeController::start(0, Recorded::default()).await;
    let work = tempfile::tempdir().unwrap();
    let endpoint = ctl.endpoint();
    let agent = start_agent(
        work.path(),
        &[
            "--koupleless.arklet.http.heartbeat.endpoint",
            &endpoint,
            "--http-heartbeat-interval",
            "200ms",
        ],
    )
    .await;
    assert!(
        eventually(SOON, || ctl.heartbeats().len() >= 4).await,
        "heartbeats arrive"
    );
    let beats = ctl.heartbeats();
    let first = &beats[0];
    assert_eq!(first.content_type.as_deref(), Some("application/json"));
    assert_eq!(first.authorization, None, "no token configured, none sent");
    let b = &first.body;
    // Un-enveloped (T18), the bound Arklet port (T21), lower-case state.
    assert!(
        b.get("data").is_none() && b.get("publishTimestamp").is_none(),
        "{b}"
    );
    assert_eq!(
        b["baseMetadata"],
        json!({"clusterName": "default", "identity": "10.0.2.1", "name": "test-base", "version": "1.0.0"})
    );
    assert_eq!(b["port"], agent.addr().port());
    assert_eq!(b["state"], "activated");
    assert!(b["localIP"].as_str().is_some_and(|s| !s.is_empty()), "{b}");
    assert!(
        b["localHostName"].as_str().is_some_and(|s| !s.is_empty()),
        "{b}"
    );
    let period = (beats[3].at - beats[0].at) / 3;
    eprintln!("measured HTTP heartbeat period: {period:?} (configured 200ms)");
    assert!(
        period >= Duration::from_millis(100) && period <= Duration::from_millis(600),
        "{period:?}"
    );

    agent.shutdown().await;
    let last = ctl.heartbeats().last().cloned().unwrap();
    assert_eq!(last.body["state"], "deactivated", "a goodbye on shutdown");
    let count = ctl.heartbeats().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ctl.heartbeats().len(), count, "no heartbeat after shutdown");
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_heartbeats_are_retried_and_a_late_controller_is_found() {
    // The controller is not there yet: nothing listens on its port.
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let work = tempfile::tempdir().unwrap();
    let period = Duration::from_millis(480);
    let agent = start_agent(
        work.path(),
        &[
            "--controller-endpoint",
            &endpoint,
            "--http-heartbeat-interval",
            "480ms",
            "--controller-timeout",
            "1s",
        ],
    )
    .await;
    tokio::time::sleep(period * 2).await;
    // It comes up, answering the first two heartbeats with 503.
    let ctl = FakeController::start(
        port,
        Recorded {
            fail_heartbeats: 2,
            ..Recorded::default()
        },
    )
    .await;
    assert!(
        eventually(SOON, || ctl.heartbeats().len() >= 4).await,
        "heartbeats resume"
    );
    let beats = ctl.heartbeats();
    // Two retries right after the failed beat, well before the next period.
    let retries = beats[2].at - beats[0].at;
    eprintln!("two retries took {retries:?} (period {period:?})");
    assert!(retries < period / 2, "{retries:?}");
    assert!(
        beats[3].at - beats[2].at > period / 2,
        "the fourth is the next scheduled beat"
    );
    agent.shutdown().await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baseline_is_fetched_and_installed_at_start() {
    assert!(
        java_available(),
        "these tests need java, javac and jar (JAVA_HOME or PATH)"
    );
    let jars = tempfile::tempdir().unwrap();
    let url = file_url(&BizJar::new("biz-b", "1.0.0").build(jars.path()));
    let ctl = FakeController::start(
        0,
        Recorded {
            baseline: Some((
                StatusCode::OK,
                json!([{"bizName": "biz-b", "bizVersion": "1.0.0", "bizUrl": url}]),
            )),
            ..Recorded::default()
        },
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let endpoint = ctl.endpoint();
    let agent = start_agent(
        work.path(),
        &[
            "--controller-endpoint",
            &endpoint,
            "--http-heartbeat-interval",
            "200ms",
            "--fetch-baseline-on-start",
        ],
    )
    .await;
    let installed = || {
        agent
            .service()
            .list()
            .iter()
            .any(|b| b.biz_name == "biz-b" && b.biz_state == BizState::Activated)
    };
    assert!(
        eventually(Duration::from_secs(60), installed).await,
        "the baseline module runs"
    );
    let queries = ctl.baseline_queries();
    assert_eq!(queries.len(), 1);
    assert_eq!(queries[0].content_type.as_deref(), Some("application/json"));
    // The body is the un-enveloped BaseMetadata.
    assert_eq!(
        queries[0].body,
        json!({"clusterName": "default", "identity": "10.0.2.1", "name": "test-base", "version": "1.0.0"})
    );
    agent.shutdown().await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_without_baseline_is_asked_once() {
    let ctl = FakeController::start(
        0,
        Recorded {
            baseline: Some((StatusCode::NOT_FOUND, json!({}))),
            ..Recorded::default()
        },
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let endpoint = ctl.endpoint();
    let agent = start_agent(
        work.path(),
        &[
            "--controller-endpoint",
            &endpoint,
            "--http-heartbeat-interval",
            "200ms",
            "--fetch-baseline-on-start",
        ],
    )
    .await;
    // Several heartbeats later (the first retry would come after 1 s), still one query.
    assert!(eventually(SOON, || ctl.heartbeats().len() >= 8).await);
    assert_eq!(ctl.baseline_queries().len(), 1);
    assert!(agent.service().list().is_empty());
    agent.shutdown().await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_tunnels_at_once() {
    let broker = Broker::embedded();
    let ctl = FakeController::start(0, Recorded::default()).await;
    // An MQTT client listening for this base's heartbeats.
    let (client, mut eventloop) = AsyncClient::new(
        MqttOptions::new("test-listener", broker.host(), broker.port()),
        16,
    );
    client
        .subscribe("koupleless_dev/10.0.2.1/base/heart", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mqtt_beats = Arc::new(Mutex::new(Vec::<Value>::new()));
    let (sub_tx, mut subscribed) = tokio::sync::watch::channel(false);
    let listener = {
        let beats = Arc::clone(&mqtt_beats);
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        let _ = sub_tx.send(true);
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        beats
                            .lock()
                            .unwrap()
                            .push(serde_json::from_slice(&p.payload).unwrap());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
    };
    tokio::time::timeout(SOON, subscribed.wait_for(|s| *s))
        .await
        .unwrap()
        .unwrap();

    let work = tempfile::tempdir().unwrap();
    let (endpoint, port) = (ctl.endpoint(), broker.port().to_string());
    let agent = start_agent(
        work.path(),
        &[
            "--controller-endpoint",
            &endpoint,
            "--http-heartbeat-interval",
            "200ms",
            "--mqtt-broker",
            "127.0.0.1",
            "--mqtt-port",
            &port,
            "--mqtt-heartbeat-interval",
            "200ms",
        ],
    )
    .await;
    assert!(
        eventually(SOON, || ctl.heartbeats().len() >= 2
            && mqtt_beats.lock().unwrap().len() >= 2)
        .await
    );
    let http = ctl.heartbeats()[0].body.clone();
    let mqtt = mqtt_beats.lock().unwrap()[0].clone();
    // The same base: the MQTT one says port 0 (T21), the HTTP one the Arklet port.
    assert_eq!(http["baseMetadata"], mqtt["data"]["baseMetadata"]);
    assert_eq!(
        (mqtt["data"]["port"].as_u64(), http["port"].as_u64()),
        (Some(0), Some(u64::from(agent.addr().port())))
    );
    agent.shutdown().await;
    assert_eq!(
        ctl.heartbeats().last().unwrap().body["state"],
        "deactivated"
    );
    assert!(
        eventually(SOON, || {
            mqtt_beats
                .lock()
                .unwrap()
                .last()
                .is_some_and(|v| v["data"]["state"] == "deactivated")
        })
        .await
    );
    listener.abort();
    ctl.stop().await;
}

/// An agent with `--api-token` proves itself to the controller with the same bearer token on
/// heartbeats, the goodbye and the baseline query (a controller configured with
/// `ARKLET_API_TOKEN` believes such a heartbeat whatever address it comes from).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_token_is_sent_to_the_controller() {
    let ctl = FakeController::start(0, Recorded::default()).await;
    let work = tempfile::tempdir().unwrap();
    let endpoint = ctl.endpoint();
    let agent = start_agent(
        work.path(),
        &[
            "--koupleless.arklet.http.heartbeat.endpoint",
            &endpoint,
            "--http-heartbeat-interval",
            "200ms",
            "--fetch-baseline-on-start",
            "--api-token",
            "s3cret-token",
        ],
    )
    .await;
    assert!(
        eventually(SOON, || ctl.heartbeats().len() >= 2
            && !ctl.baseline_queries().is_empty())
        .await,
        "heartbeats and the baseline query arrive"
    );
    agent.shutdown().await;
    let beats = ctl.heartbeats();
    assert_eq!(beats.last().unwrap().body["state"], "deactivated");
    for s in beats.iter().chain(ctl.baseline_queries().iter()) {
        assert_eq!(
            s.authorization.as_deref(),
            Some("Bearer s3cret-token"),
            "{:?}",
            s.body
        );
    }
    ctl.stop().await;
}

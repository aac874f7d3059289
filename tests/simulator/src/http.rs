//! A base on the HTTP tunnel (spec protocol §6): the Arklet HTTP API on its own port and
//! heartbeats POSTed to the controller's `/heartbeat`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::post;
use koupleless_protocol::transport::{self, Transport};
use koupleless_protocol::{BizSpec, BizState, Output, Response};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Shared, Stats, now_ms};

fn json<T: Serialize>(v: &T) -> axum::response::Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        transport::encode(v, Transport::Http),
    )
        .into_response()
}

/// The HTTP envelope of an Arklet output: `{baseIdentity, code, data, message}`.
fn envelope<T>(identity: &str, out: Output<T>) -> Response<T> {
    Response {
        base_identity: Some(identity.to_owned()),
        code: out.code,
        data: out.data,
        error_code: None,
        error_stack_trace: None,
        message: out.message,
    }
}

async fn arklet(State(sh): State<Arc<Shared>>, uri: Uri, body: Bytes) -> axum::response::Response {
    if sh.cut() {
        // Partitioned: the controller's call does not get through.
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    Stats::bump(&sh.stats.commands);
    let identity = sh.model().identity.clone();
    match uri.path() {
        "/health" => {
            let health = sh.model().report_health(sh.config.metaspace_creep);
            json(&Response::success(identity, health))
        }
        "/queryAllBiz" => json(&Response::success(identity, sh.model().biz_infos())),
        p @ ("/installBiz" | "/uninstallBiz") => {
            let Ok(spec) = serde_json::from_slice::<BizSpec>(&body) else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            let out = if p == "/installBiz" {
                tokio::time::sleep(sh.config.install_delay).await;
                let out = sh.model().install(&spec, sh.draw_failure(), now_ms());
                match out.code {
                    koupleless_protocol::ResponseCode::Success => {
                        Stats::bump(&sh.stats.installs_ok)
                    }
                    _ => Stats::bump(&sh.stats.installs_failed),
                }
                out
            } else {
                Stats::bump(&sh.stats.uninstalls);
                sh.model().uninstall(&spec)
            };
            json(&envelope(&identity, out))
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

pub(crate) async fn spawn(
    shared: Arc<Shared>,
    controller: SocketAddr,
    cancel: CancellationToken,
) -> std::io::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = Router::new()
        .route("/health", post(arklet))
        .route("/queryAllBiz", post(arklet))
        .route("/installBiz", post(arklet))
        .route("/uninstallBiz", post(arklet))
        .with_state(shared.clone());
    let period = shared.config.heartbeat_interval;
    Ok(tokio::spawn(async move {
        let server =
            axum::serve(listener, app).with_graceful_shutdown(cancel.clone().cancelled_owned());
        let heart = async {
            let client = reqwest::Client::new();
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if shared.cut() {
                    continue;
                }
                Stats::bump(&shared.stats.heartbeats);
                let body = transport::encode(
                    &shared.model().status(port, BizState::Activated),
                    Transport::Mqtt,
                );
                let _ = client
                    .post(format!("http://{controller}/heartbeat"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await;
            }
        };
        tokio::select! {
            _ = server => {}
            () = heart => {}
            () = cancel.cancelled() => {}
        }
    }))
}

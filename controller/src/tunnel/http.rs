//! HTTP tunnel (spec protocol §6): an axum server for `POST /heartbeat` and
//! `POST /queryBaseline`, and a client for the bases' Arklet API. Unlike upstream, every call
//! has a timeout, each base has its own concurrency limit (upstream uses one tunnel-wide lock
//! for queryAllBiz, so one hung base starves all), and uninstall results are reported.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use koupleless_protocol::transport::{self, Transport};
use koupleless_protocol::{BaseIdentity, BaseMetadata, BaseStatus, BizSpec};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::decode::{bizs_from_http, health_from_http, record_from_http_operation};
use super::{BaselineRequest, Command, Endpoint, Tunnel, TunnelError, TunnelEvent, TunnelKind};
use crate::config::HttpTunnelSettings;
use crate::labels::DEFAULT_ARKLET_PORT;
use crate::metrics::Metrics;

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
    endpoints: Mutex<HashMap<BaseIdentity, Endpoint>>,
    limits: Mutex<HashMap<BaseIdentity, Arc<Semaphore>>>,
    settings: HttpTunnelSettings,
    events: mpsc::Sender<TunnelEvent>,
    tasks: TaskTracker,
    cancel: CancellationToken,
    metrics: Arc<Metrics>,
    baseline_wait: Duration,
}

/// Cloneable handle: calls bases' Arklet API.
#[derive(Clone, Debug)]
pub struct HttpTunnel {
    inner: Arc<Inner>,
}

/// Serves `/heartbeat` and `/queryBaseline`; run it in its own task.
#[derive(Debug)]
pub struct HttpDriver {
    tunnel: HttpTunnel,
}

/// Why the HTTP tunnel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl HttpTunnel {
    /// Builds the handle and its driver; events (heartbeats, results) go to `events`.
    pub fn new(
        settings: HttpTunnelSettings,
        events: mpsc::Sender<TunnelEvent>,
        baseline_wait: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<(HttpTunnel, HttpDriver), HttpSetupError> {
        let client = reqwest::Client::builder()
            // Bases are reached directly on their pod IPs.
            .no_proxy()
            .connect_timeout(settings.call_timeout.min(Duration::from_secs(5)))
            .build()?;
        let tunnel = HttpTunnel {
            inner: Arc::new(Inner {
                client,
                endpoints: Mutex::default(),
                limits: Mutex::default(),
                settings,
                events,
                tasks: TaskTracker::new(),
                cancel: CancellationToken::new(),
                metrics,
                baseline_wait,
            }),
        };
        Ok((tunnel.clone(), HttpDriver { tunnel }))
    }

    fn endpoint(&self, base: &BaseIdentity) -> Option<Endpoint> {
        self.inner
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(base)
            .cloned()
    }

    fn remember(&self, base: &BaseIdentity, status: &BaseStatus) {
        let ep = Endpoint {
            host: if status.local_ip.is_empty() {
                "127.0.0.1".into()
            } else {
                status.local_ip.clone()
            },
            port: if status.port == 0 {
                DEFAULT_ARKLET_PORT
            } else {
                status.port
            },
        };
        self.inner
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(base.clone(), ep);
    }

    fn limit(&self, base: &BaseIdentity) -> Arc<Semaphore> {
        self.inner
            .limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(base.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.inner.settings.max_calls_per_base)))
            .clone()
    }

    async fn call<T: DeserializeOwned>(
        &self,
        ep: &Endpoint,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<T, String> {
        let url = format!("http://{}:{}/{path}", ep.host, ep.port);
        let resp = self
            .inner
            .client
            .post(&url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("POST {url}: HTTP {}", resp.status()));
        }
        let bytes = resp.bytes().await.map_err(|e| format!("POST {url}: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("POST {url}: bad response: {e}"))
    }

    async fn run_command(
        &self,
        base: BaseIdentity,
        ep: Endpoint,
        cmd: Command,
        permit: OwnedSemaphorePermit,
    ) {
        let s = &self.inner.settings;
        let tunnel = TunnelKind::Http;
        let event = match cmd {
            Command::Health => match self
                .call(&ep, "health", b"{}".to_vec(), s.call_timeout)
                .await
            {
                Ok(resp) => health_from_http(resp).map(|data| TunnelEvent::Health {
                    tunnel,
                    base,
                    data: Box::new(data),
                }),
                Err(e) => {
                    self.inner.metrics.tunnel_error(tunnel, "call_failed");
                    tracing::debug!(%base, error = %e, "health call failed");
                    None
                }
            },
            Command::QueryAllBiz => {
                match self
                    .call(&ep, "queryAllBiz", b"{}".to_vec(), s.call_timeout)
                    .await
                {
                    Ok(resp) => bizs_from_http(resp, now_ms()).map(|records| TunnelEvent::Bizs {
                        tunnel,
                        base,
                        records,
                        complete: true,
                    }),
                    Err(e) => {
                        self.inner.metrics.tunnel_error(tunnel, "call_failed");
                        tracing::debug!(%base, error = %e, "queryAllBiz call failed");
                        None
                    }
                }
            }
            Command::Install(spec) | Command::Uninstall(spec) if spec.biz_name.is_empty() => {
                tracing::warn!(%base, "command without module name ignored");
                None
            }
            Command::Install(spec) => Some(self.operation(base, &ep, spec, true).await),
            Command::Uninstall(spec) => Some(self.operation(base, &ep, spec, false).await),
        };
        // Free the slot before reporting, so a poll right after the result is not "busy".
        drop(permit);
        if let Some(ev) = event {
            let _ = self.inner.events.send(ev).await;
        }
    }

    async fn operation(
        &self,
        base: BaseIdentity,
        ep: &Endpoint,
        spec: BizSpec,
        install: bool,
    ) -> TunnelEvent {
        let path = if install {
            "installBiz"
        } else {
            "uninstallBiz"
        };
        let body = transport::encode(&spec, Transport::Http);
        let resp = self
            .call(ep, path, body, self.inner.settings.operation_timeout)
            .await;
        if resp.is_err() {
            self.inner
                .metrics
                .tunnel_error(TunnelKind::Http, "call_failed");
        }
        let record = record_from_http_operation(install, &spec, resp, now_ms());
        TunnelEvent::Bizs {
            tunnel: TunnelKind::Http,
            base,
            records: vec![record],
            complete: false,
        }
    }
}

impl Tunnel for HttpTunnel {
    fn kind(&self) -> TunnelKind {
        TunnelKind::Http
    }

    async fn send(&self, base: &BaseIdentity, cmd: Command) -> Result<(), TunnelError> {
        if self.inner.cancel.is_cancelled() {
            return Err(TunnelError::Closed);
        }
        let ep = self
            .endpoint(base)
            .ok_or_else(|| TunnelError::NoEndpoint(base.clone()))?;
        let limit = self.limit(base);
        // A poll finding the base busy is skipped (the next period asks again); operations
        // wait their turn.
        let permit = if cmd.is_poll() {
            Some(
                limit
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| TunnelError::Busy(base.clone()))?,
            )
        } else {
            None
        };
        let this = self.clone();
        let base = base.clone();
        let cancel = self.inner.cancel.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = async {
                    let permit = match permit {
                        Some(p) => p,
                        None => match limit.acquire_owned().await {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                    };
                    this.run_command(base, ep, cmd, permit).await;
                } => {}
            }
        });
        Ok(())
    }

    async fn attach(
        &self,
        base: &BaseIdentity,
        endpoint: Option<Endpoint>,
    ) -> Result<(), TunnelError> {
        if let Some(ep) = endpoint {
            self.inner
                .endpoints
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(base.clone())
                .or_insert(ep);
        }
        Ok(())
    }

    async fn detach(&self, base: &BaseIdentity) -> Result<(), TunnelError> {
        self.inner
            .limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(base);
        Ok(())
    }
}

fn bad_request(e: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, e.to_string()).into_response()
}

async fn heartbeat(State(t): State<HttpTunnel>, body: Bytes) -> Response {
    let status: BaseStatus = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return bad_request(e),
    };
    let base: BaseIdentity = match status.base_metadata.identity.parse() {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    t.remember(&base, &status);
    let ev = TunnelEvent::Heartbeat {
        tunnel: TunnelKind::Http,
        base,
        status,
    };
    match t.inner.events.send(ev).await {
        Ok(()) => (StatusCode::OK, "SUCCESS").into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn query_baseline(State(t): State<HttpTunnel>, body: Bytes) -> Response {
    let meta: BaseMetadata = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => return bad_request(e),
    };
    let base: BaseIdentity = match meta.identity.parse() {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let (reply, answer) = oneshot::channel();
    let ev = TunnelEvent::Baseline {
        tunnel: TunnelKind::Http,
        base,
        request: BaselineRequest { meta, reply },
    };
    if t.inner.events.send(ev).await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match tokio::time::timeout(t.inner.baseline_wait, answer).await {
        Ok(Ok(list)) => (
            StatusCode::OK,
            [(http::header::CONTENT_TYPE, "application/json")],
            transport::encode(&list, Transport::Http),
        )
            .into_response(),
        _ => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

impl HttpDriver {
    /// The handle this driver serves.
    pub fn tunnel(&self) -> &HttpTunnel {
        &self.tunnel
    }

    /// The `/heartbeat` + `/queryBaseline` router. Other methods get 405, as upstream.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/heartbeat", post(heartbeat))
            .route("/queryBaseline", post(query_baseline))
            .with_state(self.tunnel.clone())
    }

    /// Serves on `listener` until cancelled, then stops in-flight Arklet calls.
    pub async fn run(
        self,
        listener: TcpListener,
        cancel: CancellationToken,
    ) -> std::io::Result<()> {
        let result = axum::serve(listener, self.router())
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        self.tunnel.inner.cancel.cancel();
        self.tunnel.inner.tasks.close();
        self.tunnel.inner.tasks.wait().await;
        result
    }
}

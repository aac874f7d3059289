//! HTTP tunnel (spec protocol §6): an axum server for `POST /heartbeat` and
//! `POST /queryBaseline`, and a client for the bases' Arklet API. Unlike upstream, every call
//! has a timeout, each base has its own concurrency limit (upstream uses one tunnel-wide lock
//! for queryAllBiz, so one hung base starves all), uninstall results are reported, and a
//! heartbeat is believed only as far as [`super::trust`] allows.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use koupleless_protocol::transport::{self, Transport};
use koupleless_protocol::{BaseIdentity, BaseMetadata, BaseStatus, BizSpec, BizState};
use serde::de::{DeserializeOwned, IgnoredAny};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::decode::{bizs_from_http, health_from_http, record_from_http_operation};
use super::trust::{self, Claim, Probe, Refusal, Verdict};
use super::{BaselineRequest, Command, Endpoint, Tunnel, TunnelError, TunnelEvent, TunnelKind};
use crate::config::HttpTunnelSettings;
use crate::labels::DEFAULT_ARKLET_PORT;
use crate::metrics::Metrics;

/// After the known address of a base answered as that base, further claims of a new address
/// are refused without asking again for this long, so a stream of spoofed heartbeats does not
/// turn into a stream of calls to the base.
const CONFIRMED_FOR: Duration = Duration::from_secs(10);

/// What the tunnel knows about one base's Arklet address.
#[derive(Debug, Clone)]
struct Known {
    endpoint: Endpoint,
    /// Last accepted heartbeat (or attach).
    heard: Instant,
    /// A vnode of this replica serves the base.
    attached: bool,
    /// When the address last answered as this base to a verification.
    confirmed: Option<Instant>,
}

impl Known {
    fn new(endpoint: Endpoint, attached: bool) -> Known {
        Known {
            endpoint,
            heard: Instant::now(),
            attached,
            confirmed: None,
        }
    }
}

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
    endpoints: Mutex<HashMap<BaseIdentity, Known>>,
    /// Bases whose known address is being verified right now.
    verifying: Mutex<HashSet<BaseIdentity>>,
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
    /// The Arklet API token cannot be sent in an HTTP header.
    #[error("ARKLET_API_TOKEN is not a valid HTTP header value")]
    Token,
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
        let mut headers = http::HeaderMap::new();
        if let Some(token) = &settings.api_token {
            let mut value = http::HeaderValue::try_from(format!("Bearer {}", token.expose()))
                .map_err(|_| HttpSetupError::Token)?;
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            // Bases are reached directly on their pod IPs.
            .no_proxy()
            .default_headers(headers)
            .connect_timeout(settings.call_timeout.min(Duration::from_secs(5)))
            .build()?;
        let tunnel = HttpTunnel {
            inner: Arc::new(Inner {
                client,
                endpoints: Mutex::default(),
                verifying: Mutex::default(),
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

    fn endpoints(&self) -> std::sync::MutexGuard<'_, HashMap<BaseIdentity, Known>> {
        self.inner
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The Arklet address this tunnel calls for `base`, if it knows one.
    pub fn endpoint(&self, base: &BaseIdentity) -> Option<Endpoint> {
        self.endpoints().get(base).map(|k| k.endpoint.clone())
    }

    /// How many base addresses the tunnel remembers.
    pub fn known_bases(&self) -> usize {
        self.endpoints().len()
    }

    /// Forgets the addresses of bases that no vnode of this replica serves and that were not
    /// heard from for the endpoint TTL.
    pub fn prune(&self) {
        let ttl = self.inner.settings.endpoint_ttl;
        let now = Instant::now();
        self.endpoints().retain(|base, k| {
            let keep = !trust::prunable(k.attached, now.saturating_duration_since(k.heard), ttl);
            if !keep {
                tracing::debug!(%base, endpoint = ?k.endpoint, "forgetting the address of a silent base");
            }
            keep
        });
    }

    /// Judges a heartbeat and, when it is accepted, remembers its address, under one lock so
    /// two heartbeats for the same base cannot interleave.
    fn decide(
        &self,
        base: &BaseIdentity,
        endpoint: &Endpoint,
        peer: Option<std::net::IpAddr>,
        auth: trust::Auth,
        deactivated: bool,
    ) -> (Verdict, Option<Known>) {
        let mut map = self.endpoints();
        let known = map.get(base).cloned();
        let verdict = trust::judge(&Claim {
            peer,
            auth,
            endpoint,
            deactivated,
            known: known.as_ref().map(|k| &k.endpoint),
        });
        match verdict {
            Verdict::Accept => {
                map.entry(base.clone())
                    .and_modify(|k| k.heard = Instant::now())
                    .or_insert_with(|| Known::new(endpoint.clone(), false));
            }
            Verdict::ForwardOnly => {
                if let Some(k) = map.get_mut(base) {
                    k.heard = Instant::now();
                }
            }
            Verdict::Verify | Verdict::Refuse(_) => {}
        }
        (verdict, known)
    }

    /// Asks `current` whether it is still `base`, then moves the base to `claimed` only if it
    /// is not. Returns the refusal when the move is refused. Runs in the heartbeat's own
    /// request, holding no lock while it waits, so other bases' heartbeats go on.
    async fn verify_move(
        &self,
        base: &BaseIdentity,
        current: Known,
        claimed: &Endpoint,
    ) -> Result<(), Refusal> {
        let refused = || Refusal::StillAnswers {
            current: format!("{}:{}", current.endpoint.host, current.endpoint.port),
            claimed: format!("{}:{}", claimed.host, claimed.port),
        };
        if current
            .confirmed
            .is_some_and(|at| at.elapsed() < CONFIRMED_FOR)
        {
            return Err(refused());
        }
        let Some(_guard) = VerifyGuard::new(&self.inner, base) else {
            return Err(Refusal::Verifying);
        };
        let probe = self.probe(&current.endpoint).await;
        let alive = trust::still_there(&probe, base.as_str());
        tracing::debug!(%base, ?probe, alive, "verified the known address of a base");
        let mut map = self.endpoints();
        match map.get_mut(base) {
            Some(k) if k.endpoint == current.endpoint => {
                if alive {
                    k.confirmed = Some(Instant::now());
                    Err(refused())
                } else {
                    tracing::info!(%base, from = ?k.endpoint, to = ?claimed, "base moved: its old address no longer answers as it");
                    k.endpoint = claimed.clone();
                    k.heard = Instant::now();
                    k.confirmed = None;
                    Ok(())
                }
            }
            Some(k) if &k.endpoint == claimed => {
                k.heard = Instant::now();
                Ok(())
            }
            // Changed again while we asked: let the next heartbeat start over.
            Some(_) => Err(Refusal::Verifying),
            None => {
                map.insert(base.clone(), Known::new(claimed.clone(), false));
                Ok(())
            }
        }
    }

    async fn probe(&self, ep: &Endpoint) -> Probe {
        let timeout = self.inner.settings.call_timeout.min(Duration::from_secs(5));
        match self
            .call::<koupleless_protocol::Response<IgnoredAny>>(
                ep,
                "health",
                b"{}".to_vec(),
                timeout,
            )
            .await
        {
            Ok(resp) => Probe::Answered {
                base_identity: resp.base_identity,
            },
            Err(e) => {
                tracing::debug!(error = %e, "known address does not answer");
                Probe::NoAnswer
            }
        }
    }

    fn refuse(&self, base: &BaseIdentity, peer: Option<SocketAddr>, why: Refusal) -> Response {
        self.inner
            .metrics
            .tunnel_error(TunnelKind::Http, why.metric_label());
        if matches!(why, Refusal::Verifying) {
            tracing::debug!(%base, ?peer, reason = %why, "heartbeat refused");
        } else {
            tracing::warn!(%base, ?peer, reason = %why, "heartbeat refused");
        }
        let body = serde_json::json!({
            "code": "REFUSED",
            "reason": why.reason(),
            "message": why.to_string(),
        });
        (why.status(), axum::Json(body)).into_response()
    }

    async fn forward(&self, base: BaseIdentity, status: BaseStatus) -> Response {
        let ev = TunnelEvent::Heartbeat {
            tunnel: TunnelKind::Http,
            base,
            status,
        };
        match self.inner.events.send(ev).await {
            Ok(()) => (StatusCode::OK, "SUCCESS").into_response(),
            Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        }
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
        // An address learnt from a heartbeat wins over the Node's: it was checked.
        let mut map = self.endpoints();
        match (map.get_mut(base), endpoint) {
            (Some(k), _) => k.attached = true,
            (None, Some(ep)) => {
                map.insert(base.clone(), Known::new(ep, true));
            }
            (None, None) => {}
        }
        Ok(())
    }

    async fn detach(&self, base: &BaseIdentity) -> Result<(), TunnelError> {
        self.inner
            .limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(base);
        // Kept (a standby replica still recognises a move) until the TTL prunes it.
        if let Some(k) = self.endpoints().get_mut(base) {
            k.attached = false;
        }
        Ok(())
    }
}

/// Marks a base as being verified; the mark goes when the request ends, even if the caller
/// hangs up and the handler is dropped mid-call.
struct VerifyGuard {
    inner: Arc<Inner>,
    base: BaseIdentity,
}

impl VerifyGuard {
    fn new(inner: &Arc<Inner>, base: &BaseIdentity) -> Option<VerifyGuard> {
        let fresh = inner
            .verifying
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(base.clone());
        fresh.then(|| VerifyGuard {
            inner: inner.clone(),
            base: base.clone(),
        })
    }
}

impl Drop for VerifyGuard {
    fn drop(&mut self) {
        self.inner
            .verifying
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.base);
    }
}

/// The Arklet address a heartbeat names (empty `localIP` and port 0 mean upstream's defaults).
fn claimed_endpoint(status: &BaseStatus) -> Endpoint {
    Endpoint {
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
    }
}

fn bad_request(e: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, e.to_string()).into_response()
}

async fn heartbeat(
    State(t): State<HttpTunnel>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let status: BaseStatus = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return bad_request(e),
    };
    let base: BaseIdentity = match status.base_metadata.identity.parse() {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr);
    let auth = trust::bearer_auth(
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        t.inner.settings.api_token.as_ref().map(|k| k.expose()),
    );
    let claimed = claimed_endpoint(&status);
    let deactivated = status.state == BizState::Deactivated;
    let (verdict, known) = t.decide(&base, &claimed, peer.map(|a| a.ip()), auth, deactivated);
    match (verdict, known) {
        (Verdict::Accept | Verdict::ForwardOnly, _) => t.forward(base, status).await,
        (Verdict::Refuse(why), _) => t.refuse(&base, peer, why),
        (Verdict::Verify, Some(current)) => match t.verify_move(&base, current, &claimed).await {
            Ok(()) => t.forward(base, status).await,
            Err(why) => t.refuse(&base, peer, why),
        },
        // judge() asks for verification only for a known base.
        (Verdict::Verify, None) => t.refuse(&base, peer, Refusal::Verifying),
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
        let inner = &self.tunnel.inner;
        let sweeper = self.tunnel.clone();
        let stop = inner.cancel.clone();
        let period = (inner.settings.endpoint_ttl / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(60));
        inner.tasks.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => sweeper.prune(),
                }
            }
        });
        // The peer address is what a heartbeat's localIP is checked against.
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        self.tunnel.inner.cancel.cancel();
        self.tunnel.inner.tasks.close();
        self.tunnel.inner.tasks.wait().await;
        result
    }
}

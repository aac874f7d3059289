//! The Arklet HTTP API (`POST /<command>` on port 1238), plus `GET /healthz` and `/readyz`,
//! and each module's log on `GET /logs/{bizName}/{bizVersion}` (see [`crate::logs`]).
//!
//! Differences from the Java server, all on purpose (spec protocol §2.1): malformed JSON, a
//! JSON array and an oversized body get a JSON error promptly instead of a hang or a bare 413;
//! other methods get `405` with `Allow: POST`; responses carry `Content-Type` and
//! `Content-Length`. Every JSON outcome of a command is HTTP 200, as upstream.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use koupleless_protocol::ErrorCode;
use koupleless_protocol::transport::{Transport, encode};

use crate::backend::RuntimeBackend;
use crate::service::{CommandService, Outcome};

/// Largest accepted request body (Netty's `HttpObjectAggregator(1 MiB)` upstream).
pub const MAX_BODY: usize = 1 << 20;

/// Readiness of the base for `GET /readyz`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Readiness {
    /// Ready to take traffic.
    pub ready: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// Computes readiness on demand.
pub type ReadinessProbe = Arc<dyn Fn() -> Readiness + Send + Sync>;

/// What the HTTP handlers share.
pub struct HttpState<B> {
    /// The command service.
    pub service: CommandService<B>,
    /// Bearer token required on commands, if set.
    pub token: Option<String>,
    /// Readiness for `/readyz`.
    pub readiness: ReadinessProbe,
    /// The base's own log, served for modules whose backend has no log of their own
    /// (modules inside the base JVM share its output).
    pub base_log: Option<std::path::PathBuf>,
}

impl<B> Clone for HttpState<B> {
    fn clone(&self) -> Self {
        HttpState {
            service: self.service.clone(),
            token: self.token.clone(),
            readiness: Arc::clone(&self.readiness),
            base_log: self.base_log.clone(),
        }
    }
}

/// The router. Every path goes through one handler because the command id *is* the path,
/// matched exactly (`/health/` is not `health`), as upstream.
pub fn router<B: RuntimeBackend>(state: HttpState<B>) -> Router {
    Router::new()
        .route(
            "/logs/{name}/{version}",
            axum::routing::get(module_log::<B>),
        )
        .fallback(handle::<B>)
        .with_state(state)
}

/// Header saying whose output a log is: `module` (its own) or `base` (the whole base's,
/// shared by every module in it).
pub const LOG_SOURCE_HEADER: &str = "x-koupleless-log-source";

fn unauthorized(identity: &str) -> Response {
    let out = Outcome::Failed {
        message: "missing or wrong bearer token".into(),
        data: None,
        code: ErrorCode::InvalidRequest,
    };
    let mut resp = envelope(StatusCode::UNAUTHORIZED, out, identity);
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

fn log_error(status: StatusCode, message: String, identity: &str) -> Response {
    let out = Outcome::Failed {
        message,
        data: None,
        code: ErrorCode::InvalidRequest,
    };
    envelope(status, out, identity)
}

/// `GET /logs/{name}/{version}`: the module's log, streamed, with the kubelet's options.
async fn module_log<B: RuntimeBackend>(
    State(st): State<HttpState<B>>,
    axum::extract::Path((name, version)): axum::extract::Path<(String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
) -> Response {
    let identity = st.service.base_identity().to_owned();
    if !authorized(&headers, st.token.as_deref()) {
        return unauthorized(&identity);
    }
    let query = query.unwrap_or_default();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let q = match crate::logs::LogQuery::parse(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        std::time::SystemTime::now(),
    ) {
        Ok(q) => q,
        Err(e) => return log_error(StatusCode::BAD_REQUEST, e.to_string(), &identity),
    };
    let key = crate::backend::BizKey::new(&name, &version);
    let engine = st.service.engine().clone();
    let exists = move || engine.modules().iter().any(|m| m.key == key);
    if !exists() {
        return log_error(
            StatusCode::NOT_FOUND,
            format!("no module {name}:{version} on this base"),
            &identity,
        );
    }
    let key = crate::backend::BizKey::new(&name, &version);
    let source = st.service.engine().backend().log_source(&key).or_else(|| {
        st.base_log
            .clone()
            .map(|path| crate::logs::LogSource { path, shared: true })
    });
    let Some(source) = source else {
        return log_error(
            StatusCode::NOT_FOUND,
            format!(
                "no log for {name}:{version}: this backend keeps no log per module; \
                 give the agent --base-log-file to serve the base's"
            ),
            &identity,
        );
    };
    if let Err(e) = std::fs::metadata(&source.path) {
        return log_error(
            StatusCode::NOT_FOUND,
            format!("log {} of {name}:{version}: {e}", source.path.display()),
            &identity,
        );
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let path = source.path.clone();
    let biz = format!("{name}:{version}");
    // Blocking file reads (and the follow loop's waits) stay off the async workers; the
    // thread ends when the client goes (the channel closes) or the module does, so no
    // follower outlives its reader.
    let reader = tx.clone();
    let keep_following = move || !reader.is_closed() && exists();
    tokio::task::spawn_blocking(move || {
        let result =
            crate::logs::stream(&path, &q, |b| tx.blocking_send(b).is_ok(), keep_following);
        if let Err(e) = result {
            tracing::warn!(%biz, error = %e, "module log stream ended");
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(Bytes::from(b)), rx))
    });
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        LOG_SOURCE_HEADER,
        HeaderValue::from_static(if source.shared { "base" } else { "module" }),
    );
    resp
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn envelope(status: StatusCode, outcome: Outcome, identity: &str) -> Response {
    json_response(
        status,
        encode(&outcome.into_response(identity), Transport::Http),
    )
}

fn authorized(headers: &HeaderMap, token: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn handle<B: RuntimeBackend>(State(st): State<HttpState<B>>, req: Request) -> Response {
    let identity = st.service.base_identity().to_owned();
    let path = req.uri().path().to_owned();
    if req.method() == Method::GET || req.method() == Method::HEAD {
        match path.as_str() {
            "/healthz" => return (StatusCode::OK, "ok\n").into_response(),
            "/readyz" => {
                let r = (st.readiness)();
                let status = if r.ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                return json_response(status, serde_json::to_vec(&r).unwrap_or_default());
            }
            _ => {}
        }
    }
    if req.method() != Method::POST {
        let mut resp = (
            StatusCode::METHOD_NOT_ALLOWED,
            "POST http request only supported by arklet",
        )
            .into_response();
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    if !authorized(req.headers(), st.token.as_deref()) {
        return unauthorized(&identity);
    }
    let body: Bytes = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            let (status, message) = if too_large {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body larger than {MAX_BODY} bytes"),
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                )
            };
            return envelope(
                status,
                Outcome::Internal {
                    message,
                    code: ErrorCode::InvalidRequest,
                },
                &identity,
            );
        }
    };
    let command = path.strip_prefix('/').unwrap_or(&path).to_owned();
    // Run the command on its own task, owned by the engine's tracker: a client that hangs up
    // mid-install must not cancel the install half-way (the module would stay `resolved`),
    // and shutdown still waits for it.
    let service = st.service.clone();
    let run = service.engine().tasks().spawn({
        let service = service.clone();
        async move { service.execute(&command, &body).await }
    });
    let outcome = match run.await {
        Ok(o) => o,
        Err(e) => Outcome::Internal {
            message: format!("command task failed: {e}"),
            code: ErrorCode::UnknownError,
        },
    };
    envelope(StatusCode::OK, outcome, &identity)
}

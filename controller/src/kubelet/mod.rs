//! The kubelet API of the vnodes, for `kubectl logs` on module Pods (the API server calls
//! `GET /containerLogs/{namespace}/{pod}/{container}` on the port each vnode advertises in
//! `daemonEndpoints.kubeletEndpoint`).
//!
//! Better than upstream's kubelet proxy (spec controller §6.3), which answers with the whole
//! base Pod's log whatever the container, authenticates no one and needs a special Service:
//! here each container gets its own module's log from the agent beside the base
//! (`GET /logs/{name}/{version}`), the caller is authenticated as a kubelet authenticates it
//! ([`auth`]), and the other streaming calls (`exec`, `attach`, `portForward`) say plainly
//! that a module has no container for them (501).
//!
//! Any replica can answer for any module Pod: the Pod's `containerID` names the module the
//! controller installed, its `hostIP` is the base, and the Node says the agent's port.

pub mod auth;
pub mod route;
pub mod tls;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Method, Request, Response, StatusCode, header};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::PostParams;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::BearerToken;
use crate::labels;

/// How the kubelet API is served.
#[derive(Clone, Debug, Default)]
pub struct KubeletSettings {
    /// Serving certificate and key (PEM files); generated at start when `None`.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// CA whose client certificates are trusted (the API server's kubelet client CA).
    pub client_ca: Option<PathBuf>,
    /// Check bearer tokens with TokenReview and SubjectAccessReview.
    pub token_review: bool,
    /// The agents' API token (`ARKLET_API_TOKEN`), sent when fetching a module's log.
    pub arklet_token: Option<BearerToken>,
}

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect timeout towards an agent (a follow stream itself has no overall timeout).
const AGENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the handlers share.
pub struct KubeletApi {
    client: kube::Client,
    http: reqwest::Client,
    arklet_token: Option<BearerToken>,
    token_review: bool,
}

impl KubeletApi {
    /// The API over `client`.
    pub fn new(
        client: kube::Client,
        settings: &KubeletSettings,
    ) -> Result<KubeletApi, reqwest::Error> {
        Ok(KubeletApi {
            client,
            http: reqwest::Client::builder()
                .connect_timeout(AGENT_CONNECT_TIMEOUT)
                .build()?,
            arklet_token: settings.arklet_token.clone(),
            token_review: settings.token_review,
        })
    }
}

/// Serves the kubelet API on `listener` with `tls` until `cancel`; connections in flight (log
/// streams) are closed then.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    api: Arc<KubeletApi>,
    cancel: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let conns = TaskTracker::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving the kubelet API (kubectl logs)");
    }
    loop {
        let (tcp, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "kubelet API: accept failed");
                    continue;
                }
            },
        };
        let (acceptor, api, cancel) = (acceptor.clone(), api.clone(), cancel.clone());
        conns.spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "kubelet API: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let verified = stream
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty());
            let svc = hyper::service::service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(api.handle(req, verified).await) }
            });
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "kubelet API connection ended");
                },
                () = cancel.cancelled() => {}
            }
        });
    }
    conns.close();
    conns.wait().await;
}

fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut resp = Response::new(Body::from(message.into() + "\n"));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

impl KubeletApi {
    async fn handle<B>(&self, req: Request<B>, verified: bool) -> Response<Body> {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = match auth::first(auth::credential(verified, header), self.token_review) {
            auth::First::Allow => None,
            auth::First::Review(t) => Some(t),
            auth::First::Unauthorized(why) => {
                return text(StatusCode::UNAUTHORIZED, format!("Unauthorized: {why}"));
            }
        };
        let user = match &token {
            Some(t) => match self.review_token(t).await {
                Ok(Some(user)) => Some(user),
                Ok(None) => return text(StatusCode::UNAUTHORIZED, "Unauthorized"),
                Err(e) => {
                    tracing::warn!(error = %e, "kubelet API: TokenReview failed");
                    return text(StatusCode::UNAUTHORIZED, "Unauthorized");
                }
            },
            None => None,
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served");
        }
        let (namespace, pod, container) = match route::classify(req.uri().path()) {
            route::Call::Logs {
                namespace,
                pod,
                container,
            } => (namespace, pod, container),
            route::Call::Unsupported(what) => {
                return text(
                    StatusCode::NOT_IMPLEMENTED,
                    format!(
                        "{what} is not supported on a Koupleless virtual node: a module runs \
                         inside a base JVM and has no container of its own (kubectl logs works)"
                    ),
                );
            }
            route::Call::Unknown => return text(StatusCode::NOT_FOUND, "404 page not found"),
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let p = match pods.get_opt(&pod).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("pod {namespace}/{pod} not found"),
                );
            }
            Err(e) => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("reading pod {namespace}/{pod}: {e}"),
                );
            }
        };
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        if let Some(user) = &user
            && let Err(resp) = self.authorize(user, &node).await
        {
            return resp;
        }
        let target = match self.resolve(&p, &container, &node).await {
            Ok(t) => t,
            Err(resp) => return resp,
        };
        let query: Vec<(String, String)> = url_pairs(req.uri().query().unwrap_or_default());
        self.proxy(target, &route::agent_query(&query)).await
    }

    /// TokenReview: the user and groups of a token, `None` when it is not authenticated.
    async fn review_token(&self, token: &str) -> Result<Option<Reviewed>, kube::Error> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                ..TokenReviewSpec::default()
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let done = api.create(&PostParams::default(), &review).await?;
        let Some(status) = done.status.filter(|s| s.authenticated == Some(true)) else {
            return Ok(None);
        };
        let user = status.user.unwrap_or_default();
        Ok(Some(Reviewed {
            name: user.username.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
            uid: user.uid,
            extra: user.extra,
        }))
    }

    /// SubjectAccessReview: may `user` read logs through the vnode `node`?
    async fn authorize(&self, user: &Reviewed, node: &str) -> Result<(), Response<Body>> {
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        for sub in auth::LOG_SUBRESOURCES {
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(user.name.clone()),
                    groups: Some(user.groups.clone()),
                    uid: user.uid.clone(),
                    extra: user.extra.clone(),
                    resource_attributes: Some(ResourceAttributes {
                        verb: Some("get".into()),
                        resource: Some("nodes".into()),
                        subresource: Some(sub.into()),
                        name: Some(node.to_owned()),
                        ..ResourceAttributes::default()
                    }),
                    ..SubjectAccessReviewSpec::default()
                },
                ..SubjectAccessReview::default()
            };
            match api.create(&PostParams::default(), &review).await {
                Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => return Ok(()),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "kubelet API: SubjectAccessReview failed");
                    return Err(text(
                        StatusCode::FORBIDDEN,
                        format!("Forbidden (user={}): authorization failed", user.name),
                    ));
                }
            }
        }
        Err(text(
            StatusCode::FORBIDDEN,
            format!(
                "Forbidden (user={}, verb=get, resource=nodes, subresource=proxy)",
                user.name
            ),
        ))
    }

    /// Pod and container -> the agent's log endpoint of that module.
    async fn resolve(
        &self,
        p: &Pod,
        container: &str,
        node: &str,
    ) -> Result<Target, Response<Body>> {
        let name = p.metadata.name.clone().unwrap_or_default();
        let is_module = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::COMPONENT))
            .is_some_and(|v| v == crate::pod::reconciler::COMPONENT_MODULE);
        if !is_module {
            return Err(text(
                StatusCode::NOT_FOUND,
                format!("pod {name} is not a module Pod"),
            ));
        }
        let in_spec = p
            .spec
            .as_ref()
            .is_some_and(|s| s.containers.iter().any(|c| c.name == container));
        if !in_spec {
            return Err(text(
                StatusCode::NOT_FOUND,
                format!("container {container} is not valid for pod {name}"),
            ));
        }
        let status = p.status.clone().unwrap_or_default();
        let module = status
            .container_statuses
            .iter()
            .flatten()
            .find(|c| c.name == container)
            .and_then(|c| c.container_id.as_deref())
            .and_then(route::module_of_container_id);
        let Some((biz, version)) = module else {
            return Err(text(
                StatusCode::BAD_REQUEST,
                format!(
                    "container {container} in pod {name} is waiting to start: no module installed yet"
                ),
            ));
        };
        let nodes: Api<Node> = Api::all(self.client.clone());
        let n = nodes.get_opt(node).await.ok().flatten();
        let port = n
            .as_ref()
            .and_then(|n| n.metadata.labels.as_ref())
            .and_then(|l| l.get(labels::BASE_TUNNEL_PORT))
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(labels::DEFAULT_ARKLET_PORT);
        let ip = status.host_ip.filter(|ip| !ip.is_empty()).or_else(|| {
            n.as_ref()
                .and_then(|n| n.status.as_ref())
                .and_then(|s| s.addresses.as_ref())
                .and_then(|a| a.iter().rev().find(|a| a.type_ == "InternalIP"))
                .map(|a| a.address.clone())
        });
        let Some(ip) = ip else {
            return Err(text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the base of pod {name} has no address yet"),
            ));
        };
        Ok(Target {
            ip,
            port,
            biz,
            version,
        })
    }

    /// Streams the agent's answer back.
    async fn proxy(&self, t: Target, query: &[(String, String)]) -> Response<Body> {
        let host = if t.ip.contains(':') {
            format!("[{}]", t.ip)
        } else {
            t.ip.clone()
        };
        let mut url = match url::Url::parse(&format!("http://{host}:{}/logs/", t.port)) {
            Ok(u) => u,
            Err(e) => {
                return text(StatusCode::BAD_GATEWAY, format!("base address {host}: {e}"));
            }
        };
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().push(&t.biz).push(&t.version);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut req = self.http.get(url.clone());
        if let Some(token) = &self.arklet_token {
            req = req.bearer_auth(token.expose());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return text(
                    StatusCode::BAD_GATEWAY,
                    format!("the agent of this module's base cannot be reached at {url}: {e}"),
                );
            }
        };
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let code = match status.as_u16() {
                400 => StatusCode::BAD_REQUEST,
                404 => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_GATEWAY,
            };
            return text(code, format!("the agent answered {status}: {body}"));
        }
        let mut out = Response::new(Body::from_stream(resp.bytes_stream()));
        out.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        out
    }
}

/// A reviewed token's user.
struct Reviewed {
    name: String,
    groups: Vec<String>,
    uid: Option<String>,
    extra: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

/// Where a module's log is served.
struct Target {
    ip: String,
    port: u16,
    biz: String,
    version: String,
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

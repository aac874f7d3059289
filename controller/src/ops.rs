//! Operational endpoints: `/healthz`, `/readyz` (probes) and `/metrics` (Prometheus).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::registry::BaseRegistry;

/// Start-up milestones; `/readyz` succeeds once all are reached.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Every enabled tunnel is up (MQTT connected once, HTTP listening).
    pub tunnels: AtomicBool,
    /// Existing vnodes were listed and their supervisors started.
    pub nodes_synced: AtomicBool,
    /// The Lease cache is filled.
    pub leases_synced: AtomicBool,
}

impl Readiness {
    /// What is still missing (empty when ready).
    pub fn missing(&self) -> Vec<&'static str> {
        [
            (&self.tunnels, "tunnels"),
            (&self.nodes_synced, "nodes"),
            (&self.leases_synced, "leases"),
        ]
        .into_iter()
        .filter(|(flag, _)| !flag.load(Ordering::Acquire))
        .map(|(_, what)| what)
        .collect()
    }
}

/// State behind the endpoints.
#[derive(Clone, Debug)]
pub struct OpsState {
    /// Start-up milestones.
    pub readiness: Arc<Readiness>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Bases, for the vnode gauges.
    pub registry: BaseRegistry,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<OpsState>) -> impl IntoResponse {
    let missing = s.readiness.missing();
    if missing.is_empty() {
        (StatusCode::OK, "ok".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("waiting for: {}", missing.join(", ")),
        )
    }
}

async fn metrics(State(s): State<OpsState>) -> impl IntoResponse {
    s.metrics.refresh_vnodes(&s.registry);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// `/healthz` and `/readyz`.
pub fn probe_router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// `/metrics`.
pub fn metrics_router(state: OpsState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::Request;
    use tower::ServiceExt;

    async fn get_text(router: Router, path: &str) -> (StatusCode, String) {
        let resp = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn probes_and_metrics() {
        let state = OpsState {
            readiness: Arc::default(),
            metrics: Arc::new(Metrics::new()),
            registry: BaseRegistry::default(),
        };
        let probes = probe_router(state.clone());
        assert_eq!(get_text(probes.clone(), "/healthz").await.0, StatusCode::OK);
        let (code, text) = get_text(probes.clone(), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(text.contains("tunnels, nodes, leases"), "{text}");
        for f in [
            &state.readiness.tunnels,
            &state.readiness.nodes_synced,
            &state.readiness.leases_synced,
        ] {
            f.store(true, Ordering::Release);
        }
        assert_eq!(get_text(probes, "/readyz").await.0, StatusCode::OK);

        let name = "vnode.a.dev".parse().unwrap();
        state
            .registry
            .set_state(&name, crate::registry::VNodeState::Ready, None);
        let (code, text) = get_text(metrics_router(state), "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert!(
            text.contains(r#"koupleless_controller_vnodes{state="ready"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"koupleless_controller_vnodes{state="standby"} 0"#),
            "{text}"
        );
    }
}

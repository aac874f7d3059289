//! Koupleless module controller: bases become virtual Kubernetes Nodes.
//!
//! A Rust reimplementation of ModuleController V2 (spec `controller.md`), wire-compatible with
//! Java Arklet bases and with manifests written for the Go controller, with the liveness and
//! failover upstream lacks.
//!
//! ```text
//! MQTT tunnel ─┐                          ┌─ per-base supervisor ── lifecycle machine (pure)
//!              ├─ TunnelEvent ─▶ router ──┼─ per-base supervisor        │ effects
//! HTTP tunnel ─┘        ▲                 └─ ...                        ▼
//!                       └── Node / Lease watches       Node, Lease, Event writes (kube)
//! ```
//!
//! Layout:
//! - [`config`]: flags and upstream environment variables → [`config::Settings`].
//! - [`tunnel`]: MQTT and HTTP transports; [`tunnel::decode`] is the pure wire → event part.
//! - [`vnode`]: liveness, Lease ownership, lifecycle machine and desired Node (all pure), and
//!   the supervisor that drives them.
//! - [`router`]: routes events to supervisors, resumes existing vnodes at start-up.
//! - [`pod`]: module Pods → install/uninstall commands, module states → Pod status.
//! - [`baseline`]: which modules a base should run.
//! - [`app`]: wiring, task ownership and ordered shutdown.
//! - [`ops`], [`metrics`], [`events`], [`telemetry`]: probes, Prometheus, Kubernetes Events, logs.
//! - [`kube_client`]: the Kubernetes client with a configurable rate limit.

pub mod app;
pub mod baseline;
pub mod config;
pub mod error;
pub mod events;
pub mod kube_client;
pub mod kubelet;
pub mod labels;
pub mod metrics;
pub mod ops;
pub mod pod;
pub mod registry;
pub mod router;
pub mod telemetry;
pub mod tunnel;
pub mod vnode;

pub use app::{Listeners, run};
pub use config::{Args, Settings, Timings};
pub use error::Error;

/// Selects ring as the process-wide rustls provider. kube-client builds its TLS
/// configuration from the process default, which is ambiguous when (as in this workspace)
/// both ring and aws-lc-rs are linked. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

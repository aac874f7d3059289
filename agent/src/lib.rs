//! The Koupleless agent: an Arklet-compatible sidecar beside a Java base.
//!
//! One command service ([`service`]), two front doors ([`http`] and the controller
//! [`tunnel`]s), one lifecycle engine ([`engine`]) and one runtime backend ([`backend`]) chosen
//! at start-up; base JVM health is read from outside the JVM ([`health`]). [`app`] wires them
//! and owns every long-lived task.

/// Makes aws-lc-rs the process-wide rustls provider. rumqttc builds its TLS configuration
/// from the process default, which is ambiguous (and panics at connect time) when a build links
/// both ring and aws-lc-rs, as a workspace build with the controller does. Safe to call more
/// than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

pub mod app;
pub mod backend;
pub mod config;
pub mod engine;
pub mod health;
pub mod health_cmd;
pub mod http;
pub mod logs;
pub mod package;
pub mod restore;
pub mod service;
pub mod tunnel;
pub mod url_policy;

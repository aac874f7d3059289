//! The Koupleless agent: an Arklet-compatible sidecar beside a Java base.
//!
//! One command service ([`service`]), two front doors ([`http`] and the controller
//! [`tunnel`]s), one lifecycle engine ([`engine`]) and one runtime backend ([`backend`]) chosen
//! at start-up; base JVM health is read from outside the JVM ([`health`]). [`app`] wires them
//! and owns every long-lived task.

pub mod app;
pub mod backend;
pub mod config;
pub mod engine;
pub mod health;
pub mod health_cmd;
pub mod http;
pub mod package;
pub mod restore;
pub mod service;
pub mod tunnel;

//! The Koupleless agent: an Arklet-compatible sidecar beside a Java base.
pub mod backend;
pub mod package;
pub mod engine;
pub mod health_cmd;
pub mod service;
pub mod http;
pub mod config;
pub mod health;
pub mod tunnel;
pub mod app;
pub mod restore;

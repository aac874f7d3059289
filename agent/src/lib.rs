//! The Koupleless agent: an Arklet-compatible sidecar beside a Java base.
pub mod backend;
pub mod package;

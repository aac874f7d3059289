//! The Koupleless agent: an Arklet-compatible sidecar beside a Java base.

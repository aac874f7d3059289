//! Bases as virtual Nodes: one supervisor task per base drives a pure lifecycle machine.
//!
//! - [`liveness`]: is the base alive (pure).
//! - [`lease`]: who owns it (pure decision + Lease objects).
//! - [`lifecycle`]: the state machine (pure).
//! - [`facts`], [`node`]: what the Node should look like and what differs (pure).
//! - [`backoff`]: retry delays (pure).
//! - [`sight`]: whether this replica can hear its bases at all (tunnel down, mass silence).
//! - [`mailbox`]: a supervisor's coalescing inbox (latest state per kind, nothing lost).
//! - [`supervisor`]: the driver, the only place with Kubernetes and tunnel I/O per base.

pub mod backoff;
pub mod facts;
pub mod lease;
pub mod lifecycle;
pub mod liveness;
pub mod mailbox;
pub mod node;
pub mod sight;
pub mod supervisor;

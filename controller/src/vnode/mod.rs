//! Bases as virtual Nodes: one supervisor task per base drives a pure lifecycle machine.
//!
//! - [`liveness`]: is the base alive (pure).
//! - [`lease`]: who owns it (pure decision + Lease objects).
//! - [`lifecycle`]: the state machine (pure).
//! - [`facts`], [`node`]: what the Node should look like and what differs (pure).
//! - [`supervisor`]: the driver, the only place with Kubernetes and tunnel I/O per base.

pub mod facts;
pub mod lease;
pub mod lifecycle;
pub mod liveness;
pub mod node;
pub mod supervisor;

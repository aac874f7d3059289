//! Module Pods: every Pod labelled `virtual-kubelet.koupleless.io/component=module` and bound
//! to a vnode this replica owns becomes install and uninstall commands on that base, and what
//! the base reports becomes the Pod's status (spec controller §2).
//!
//! Same split as [`crate::vnode`]: pure decisions with table tests, and a thin driver.
//! - [`module`]: container → module (`BIZ_VERSION` from `value`, the Pod's fields or a
//!   ConfigMap; the image as package URL).
//! - [`plan`]: per base, from its Pods, its reported modules and what was sent, the commands
//!   to send, the terminating Pods to remove, and what each container shows.
//! - [`status`]: container views → Pod status, and the patch when something changed.
//! - [`queue`]: the per-base work queue (deduplicated, delayed retries, never dropped).
//! - [`reconciler`]: watches, workers, tunnel commands, API writes, Events.
//! - [`peer`]: peer module Deployments follow the number of Ready bases (opt-in).

pub mod module;
pub mod peer;
pub mod plan;
pub mod queue;
pub mod reconciler;
pub mod status;

use std::time::Duration;

pub use plan::OrphanPolicy;

/// Settings of the pod reconciler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodSettings {
    /// Modules no Pod asks for (`ORPHAN_MODULES`).
    pub orphans: OrphanPolicy,
    /// Concurrent reconciles (`VNODE_WORKER_NUM`); one base is never reconciled twice at once.
    pub workers: usize,
    /// First retry delay after a failed install.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How long to wait for a base's answer to a command before sending it again.
    pub reply_timeout: Duration,
    /// Peer Deployments follow the Ready bases (`ENABLE_MODULE_REPLICAS_SYNC_WITH_BASE`).
    pub peer_replicas: bool,
}

impl Default for PodSettings {
    fn default() -> Self {
        PodSettings {
            orphans: OrphanPolicy::default(),
            workers: 8,
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            reply_timeout: Duration::from_secs(60),
            peer_replicas: false,
        }
    }
}

//! Runtime backends: what actually runs a module. Backends do I/O; the lifecycle engine
//! (`crate::engine`) decides state, locking and records, and calls a backend only to act.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;

use crate::package::Package;

pub mod ark_telnet;
pub mod arklet;
pub mod process;

/// `name:version`, the identity of a module everywhere in the agent.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct BizKey {
    /// Module name (manifest `Ark-Biz-Name`).
    pub name: String,
    /// Module version (manifest `Ark-Biz-Version`).
    pub version: String,
}

impl BizKey {
    /// Builds a key.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        BizKey {
            name: name.into(),
            version: version.into(),
        }
    }
}

impl std::fmt::Display for BizKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.version)
    }
}

/// What to start.
#[derive(Clone, Debug)]
pub struct StartRequest {
    /// The fetched, validated package.
    pub package: Package,
    /// Arguments for the module's main method.
    pub args: Vec<String>,
    /// Start environment from the request (`envs`).
    pub envs: BTreeMap<String, String>,
}

/// What a backend reports about a module it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Started {
    /// Directory the module runs from (`bizTempWorkDir`).
    pub work_dir: Option<PathBuf>,
    /// Class path entries as URLs (`classPath`).
    pub class_path: Vec<String>,
    /// Main class actually used.
    pub main_class: String,
    /// Whether the runtime made this version the serving one, when the runtime decides that
    /// itself (a SOFAArk base applies its own activation policy). `None` lets the engine apply
    /// its configured policy (`--activation`).
    pub active: Option<bool>,
}

/// Something that happened to a module after it started, reported by the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendEvent {
    /// The module stopped on its own (process exit, removed from the base).
    Exited {
        /// Which module.
        key: BizKey,
        /// Human-readable cause, e.g. `exit code 1; last log lines: ...`.
        message: String,
    },
}

/// A module a backend found running at start-up (adopted, or left from a previous agent run).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    /// Which module.
    pub key: BizKey,
    /// Whether it is serving (`activated`) or a standby version (`deactivated`).
    pub active: bool,
    /// Main class, if known.
    pub main_class: Option<String>,
}

/// Why a backend could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The module's own start-up failed (exception, non-zero exit, readiness never reached).
    #[error("{message}")]
    StartFailed {
        /// What happened, with the module's log tail where there is one.
        message: String,
    },
    /// The operation did not finish in time.
    #[error("{op} of {key} timed out after {secs} s")]
    TimedOut {
        /// Operation name.
        op: &'static str,
        /// Module.
        key: BizKey,
        /// Deadline in seconds.
        secs: u64,
    },
    /// The backend does not know that module.
    #[error("module {0} is not running in the backend")]
    NotFound(BizKey),
    /// Stopping failed.
    #[error("stopping {key} failed: {message}")]
    StopFailed {
        /// Module.
        key: BizKey,
        /// Why.
        message: String,
    },
    /// The runtime (base JVM, command port) cannot be reached.
    #[error("runtime unavailable: {0}")]
    Unavailable(String),
    /// Local I/O failed (spawning, unpacking, writing state).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Runs modules. Chosen once at start-up; see the module docs for the split of duties.
pub trait RuntimeBackend: Send + Sync + 'static {
    /// Starts a module and resolves once it is up (activated) or has failed. On failure the
    /// backend leaves nothing running and removes what it unpacked.
    fn start(
        &self,
        req: StartRequest,
    ) -> impl Future<Output = Result<Started, BackendError>> + Send;

    /// Stops a module and removes its files; resolves when it is gone.
    fn stop(&self, key: &BizKey) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Makes `key` the serving version of its name (`switchBiz`). Backends where every
    /// version serves on its own (separate processes) have nothing to do.
    fn activate(&self, key: &BizKey) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Modules already running in the runtime when the agent starts.
    fn discover(&self) -> impl Future<Output = Result<Vec<Discovered>, BackendError>> + Send;

    /// Stops everything this backend started (agent shutdown). Adopted modules stay.
    fn shutdown(&self) -> impl Future<Output = ()> + Send;

    /// Where `key`'s log is, if this backend knows a log for it (served on
    /// `GET /logs/{name}/{version}`). Backends without one answer `None`.
    fn log_source(&self, key: &BizKey) -> Option<crate::logs::LogSource> {
        let _ = key;
        None
    }
}

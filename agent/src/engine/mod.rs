//! The module lifecycle engine: the one place module state changes.
//!
//! It owns the module table, the per-module command locks (`name:version`, upstream's
//! `BizOpsCommandCoordinator`), version activation, state records, async operation records
//! and the state file. Runtime backends only run things; transports only encode.

pub mod activation;
pub mod ops;
pub mod persist;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use koupleless_protocol::{
    BizHealthMeta, BizInfo, BizModel, BizState, CommandId, ErrorCode, StateChangeReason,
    StateRecord,
};
use tokio_util::task::TaskTracker;

use crate::backend::{BackendError, BackendEvent, BizKey, RuntimeBackend, StartRequest, Started};
use crate::package::{Package, PackageError, PackageStore};
use activation::{ActivationPolicy, Transition};
use ops::{OpsTable, Retention};
use persist::{Remembered, StateFile};

/// Wall clock in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Reported as `baseIdentity`.
    pub base_identity: String,
    /// Version activation policy.
    pub activation: ActivationPolicy,
    /// Keep a module whose start failed registered as `broken` (sofa-ark
    /// `sofa.ark.auto.uninstall.when.failed.enable=false`). Default: remove it.
    pub keep_failed: bool,
    /// Name of the base's own biz; uninstalling it is refused.
    pub master_biz_name: Option<String>,
    /// Async record retention.
    pub retention: Retention,
    /// Where installed modules are remembered; `None` disables persistence.
    pub state_file: Option<PathBuf>,
    /// Accept install `envs` that make the JVM or the dynamic loader load code
    /// ([`is_code_loading_env`]). Default: refuse them.
    pub allow_jvm_option_envs: bool,
}

/// Environment variables the JVM reads options from (`-javaagent:`, `-agentpath:`, `-cp` …).
pub const JVM_OPTION_ENVS: [&str; 3] = ["JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS"];

/// Whether an environment variable can make a module's JVM load code that no package
/// allow-list saw: the JVM option variables, and `LD_*` (`LD_PRELOAD`, `LD_LIBRARY_PATH`, …)
/// for the dynamic loader.
pub fn is_code_loading_env(name: &str) -> bool {
    JVM_OPTION_ENVS.contains(&name) || name.starts_with("LD_")
}

/// `envs` that name code-loading variables, refused (`--allow-jvm-option-envs` is off).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "envs {0:?} are refused: they make the module JVM or the dynamic loader load code that \
     the package allow-list never saw (start the agent with --allow-jvm-option-envs to accept \
     them)"
)]
pub struct RefusedEnvs(pub Vec<String>);

/// Refuses `envs` with code-loading variables unless `allow` (`--allow-jvm-option-envs`).
pub fn check_envs(envs: &BTreeMap<String, String>, allow: bool) -> Result<(), RefusedEnvs> {
    if allow {
        return Ok(());
    }
    let names: Vec<String> = envs
        .keys()
        .filter(|k| is_code_loading_env(k))
        .cloned()
        .collect();
    if names.is_empty() {
        Ok(())
    } else {
        Err(RefusedEnvs(names))
    }
}

/// Reads the base JVM's used metaspace in bytes (for `elapsedSpace`), if known.
pub type MetaspaceProbe = Arc<dyn Fn() -> Option<i64> + Send + Sync>;

/// One registered module.
#[derive(Clone, Debug)]
pub struct Module {
    /// Identity.
    pub key: BizKey,
    /// Current state.
    pub state: BizState,
    /// Full state history.
    pub records: Vec<StateRecord>,
    /// Manifest priority.
    pub priority: i32,
    /// Main class.
    pub main_class: Option<String>,
    /// Web context path.
    pub web_context_path: Option<String>,
    /// The package, for modules this agent installed.
    pub package: Option<Package>,
    /// What the backend reported on start.
    pub started: Option<Started>,
    /// Arguments it was started with.
    pub args: Vec<String>,
    /// Environment it was started with.
    pub envs: BTreeMap<String, String>,
    /// Found running in the base at start-up, not installed by this agent.
    pub external: bool,
    /// Stopped on its own (its process exited, or the base no longer lists it: the base JVM
    /// restarted): shown `broken` until a new install of the same key replaces it. The Java
    /// Arklet refuses that install while SOFAArk still holds the broken biz; here the runtime
    /// no longer has it, so refusing would only keep the module off the base for good.
    pub gone: bool,
}

impl Module {
    fn push(&mut self, record: StateRecord) {
        self.state = record.state;
        self.records.push(record);
    }

    /// The queryAllBiz view.
    pub fn info(&self) -> BizInfo {
        BizInfo {
            biz_name: self.key.name.clone(),
            biz_state: self.state,
            biz_state_records: self.records.clone(),
            biz_version: self.key.version.clone(),
            main_class: self.main_class.clone(),
            web_context_path: Some(self.web_context_path()),
        }
    }

    /// sofa-ark's `BizModel.setWebContextPath`: the manifest value, else the root path.
    fn web_context_path(&self) -> String {
        self.web_context_path
            .clone()
            .unwrap_or_else(|| "/".to_owned())
    }

    /// The health view.
    pub fn health(&self) -> BizHealthMeta {
        BizHealthMeta {
            biz_name: self.key.name.clone(),
            biz_state: self.state,
            biz_version: self.key.version.clone(),
            web_context_path: Some(self.web_context_path()),
        }
    }

    /// The sofa-ark `BizModel` view returned by installs, every property filled as upstream.
    pub fn model(&self) -> BizModel {
        let work_dir = self.started.as_ref().and_then(|s| s.work_dir.as_ref());
        BizModel {
            attributes: Some(BTreeMap::new()),
            biz_name: self.key.name.clone(),
            biz_state: Some(self.state),
            biz_state_records: Some(self.records.clone()),
            biz_temp_work_dir: work_dir.map(|d| d.display().to_string()),
            biz_url: work_dir.map(|d| format!("file:{}/", d.display())),
            biz_version: self.key.version.clone(),
            class_path: Some(
                self.started
                    .as_ref()
                    .map(|s| s.class_path.clone())
                    .unwrap_or_default(),
            ),
            declared_mode: Some(false),
            deny_import_classes: Some(vec![]),
            deny_import_package_nodes: Some(vec![]),
            deny_import_package_stems: Some(vec![]),
            deny_import_packages: Some(vec![]),
            deny_import_resources: Some(vec![]),
            deny_prefix_import_resource_stems: Some(vec![]),
            deny_suffix_import_resource_stems: Some(vec![]),
            identity: Some(self.key.to_string()),
            inject_export_packages: Some(vec![]),
            inject_plugin_dependencies: Some(vec![]),
            main_class: self.main_class.clone(),
            priority: Some(self.priority),
            web_context_path: Some(self.web_context_path()),
        }
    }
}

/// A minimal `BizModel` for an item that never became a module. The Go controller indexes
/// `bizInfos[0]` of every batch entry and crashes on an empty list (trap T15).
pub fn broken_model(name: &str, version: &str) -> BizModel {
    BizModel {
        biz_name: name.to_owned(),
        biz_state: Some(BizState::Broken),
        biz_version: version.to_owned(),
        identity: Some(format!("{name}:{version}")),
        ..BizModel::default()
    }
}

/// Why an install did not produce a running module.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The manifest identity is already registered (`REPEAT_BIZ`).
    #[error("Biz: {0} has been installed or registered.")]
    Repeat(BizKey),
    /// Fetching or validating the package failed.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// `envs` name variables that load code into the JVM, and the agent does not allow them.
    #[error(transparent)]
    RefusedEnvs(#[from] RefusedEnvs),
    /// The backend could not start it.
    #[error("install of {key} failed: {source}")]
    Start {
        /// Module.
        key: BizKey,
        /// Cause.
        source: BackendError,
    },
}

impl InstallError {
    /// Two-level error code.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            InstallError::Repeat(_) => ErrorCode::InstallBizFailed,
            InstallError::RefusedEnvs(_) => ErrorCode::InvalidParameter,
            InstallError::Package(e) => e.error_code(),
            InstallError::Start { source, .. } => backend_error_code(source, true),
        }
    }
}

/// Two-level code for a backend failure during install (`true`) or uninstall.
pub fn backend_error_code(e: &BackendError, install: bool) -> ErrorCode {
    match e {
        BackendError::StartFailed { .. } => ErrorCode::InstallBizUserError,
        BackendError::TimedOut { .. } if install => ErrorCode::InstallBizTimedOut,
        BackendError::Unavailable(_) => ErrorCode::NetworkError,
        BackendError::Io { .. } => ErrorCode::MachineMalfunction,
        _ if install => ErrorCode::InstallBizFailed,
        _ => ErrorCode::UninstallBizFailed,
    }
}

/// A successful install.
#[derive(Clone, Debug)]
pub struct Installed {
    /// The module as installed.
    pub model: BizModel,
    /// Wall time of the install in ms.
    pub cost_ms: u128,
    /// Local wall-clock start, `HH:mm:ss,SSS`.
    pub started_at: String,
}

/// Result of `uninstallBiz`.
#[derive(Debug)]
pub enum UninstallOutcome {
    /// Removed.
    Removed,
    /// Not registered (`NOT_FOUND_BIZ`).
    NotFound,
    /// The base's own biz.
    Master,
    /// The backend failed to stop it; it stays registered as `broken`.
    StopFailed(BackendError),
}

/// Result of `switchBiz`.
#[derive(Debug, PartialEq, Eq)]
pub enum SwitchOutcome {
    /// Target now active (or already was).
    Activated,
    /// Not registered.
    NotFound,
    /// In a state that cannot be switched to.
    IllegalState(BizState),
    /// The backend refused.
    Failed(String),
}

struct State {
    modules: BTreeMap<BizKey, Module>,
    locks: HashMap<String, CommandId>,
    /// Names locked as a whole (every version), by `uninstallThenInstall`.
    name_locks: HashMap<String, CommandId>,
    ops: OpsTable,
}

struct Shared<B> {
    backend: B,
    store: PackageStore,
    cfg: EngineConfig,
    state: Mutex<State>,
    metaspace: MetaspaceProbe,
    tasks: TaskTracker,
    worker_seq: AtomicU64,
    writer: Option<persist::Writer>,
}

/// The lifecycle engine. Cheap to clone.
pub struct Engine<B> {
    shared: Arc<Shared<B>>,
}

impl<B> Clone for Engine<B> {
    fn clone(&self) -> Self {
        Engine {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Holds a per-module command lock; releases it on drop.
pub struct LockGuard<B: RuntimeBackend> {
    engine: Engine<B>,
    key: String,
    whole_name: bool,
}

impl<B: RuntimeBackend> Drop for LockGuard<B> {
    fn drop(&mut self) {
        let mut st = self.engine.state();
        if self.whole_name {
            st.name_locks.remove(&self.key);
        } else {
            st.locks.remove(&self.key);
        }
    }
}

/// What a biz-ops command locks: upstream's `name:version` key, or every version of a name
/// (`uninstallThenInstall` removes them all, so a concurrent command on any version of that
/// name must wait).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockScope {
    /// The `name:version` key, also what a conflict message names.
    pub key: String,
    /// `Some(name)`: lock every version of `name`.
    pub whole_name: Option<String>,
}

impl LockScope {
    /// One `name:version`.
    pub fn key(key: String) -> Self {
        LockScope {
            key,
            whole_name: None,
        }
    }

    /// Every version of `name`; `key` is the request's `name:version`, for messages.
    pub fn name(name: String, key: String) -> Self {
        LockScope {
            key,
            whole_name: Some(name),
        }
    }
}

/// Whether lock key `key` (`name:version`) belongs to `name`. Compared as a prefix, so a name
/// containing `:` is never missed (at worst a lock is shared more widely than needed).
fn key_of_name(key: &str, name: &str) -> bool {
    key.strip_prefix(name)
        .is_some_and(|rest| rest.starts_with(':'))
}

/// Upstream's lock key: Java string concatenation, so a missing part is the literal `null`.
pub fn lock_key(name: Option<&str>, version: Option<&str>) -> String {
    format!("{}:{}", name.unwrap_or("null"), version.unwrap_or("null"))
}

impl<B: RuntimeBackend> Engine<B> {
    /// Builds an engine over a backend and a package store.
    pub fn new(
        backend: B,
        store: PackageStore,
        cfg: EngineConfig,
        metaspace: MetaspaceProbe,
    ) -> Self {
        let retention = cfg.retention;
        let writer = cfg.state_file.clone().and_then(|path| {
            persist::Writer::start(path)
                .inspect_err(|e| {
                    tracing::error!(error = %e, "cannot start the state file writer; installed modules will not be remembered");
                })
                .ok()
        });
        Engine {
            shared: Arc::new(Shared {
                backend,
                store,
                cfg,
                state: Mutex::new(State {
                    modules: BTreeMap::new(),
                    locks: HashMap::new(),
                    name_locks: HashMap::new(),
                    ops: OpsTable::new(retention),
                }),
                metaspace,
                tasks: TaskTracker::new(),
                worker_seq: AtomicU64::new(0),
                writer,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug; the table itself stays consistent
        // because every mutation is a single step, so keep serving.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Settings.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.cfg
    }

    /// The package store.
    pub fn store(&self) -> &PackageStore {
        &self.shared.store
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.shared.backend
    }

    /// The tracker that owns async operation tasks (awaited on shutdown).
    pub fn tasks(&self) -> &TaskTracker {
        &self.shared.tasks
    }

    /// Used metaspace of the base, 0 if unknown.
    pub fn metaspace_used(&self) -> i64 {
        (self.shared.metaspace)().unwrap_or(0)
    }

    /// Takes the lock `key` for `cmd`, or names the command holding it.
    pub fn try_lock(&self, key: String, cmd: CommandId) -> Result<LockGuard<B>, CommandId> {
        self.try_lock_scope(&LockScope::key(key), cmd)
    }

    /// Takes the lock `scope` for `cmd`, or names the command holding a conflicting one: a
    /// whole-name lock conflicts with every `name:version` lock of that name, and the reverse.
    pub fn try_lock_scope(
        &self,
        scope: &LockScope,
        cmd: CommandId,
    ) -> Result<LockGuard<B>, CommandId> {
        let mut st = self.state();
        match &scope.whole_name {
            None => {
                let key = &scope.key;
                if let Some(running) = st.locks.get(key).or_else(|| {
                    st.name_locks
                        .iter()
                        .find(|(n, _)| key_of_name(key, n))
                        .map(|(_, c)| c)
                }) {
                    return Err(*running);
                }
                st.locks.insert(key.clone(), cmd);
                Ok(LockGuard {
                    engine: self.clone(),
                    key: key.clone(),
                    whole_name: false,
                })
            }
            Some(name) => {
                if let Some(running) = st.name_locks.get(name).or_else(|| {
                    st.locks
                        .iter()
                        .find(|(k, _)| key_of_name(k, name))
                        .map(|(_, c)| c)
                }) {
                    return Err(*running);
                }
                st.name_locks.insert(name.clone(), cmd);
                Ok(LockGuard {
                    engine: self.clone(),
                    key: name.clone(),
                    whole_name: true,
                })
            }
        }
    }

    /// A fresh worker name for an async record (`threadName`).
    pub fn next_worker_name(&self) -> String {
        let n = self.shared.worker_seq.fetch_add(1, Ordering::Relaxed) + 1;
        format!("koupleless-agent-biz-ops-{n}")
    }

    /// Runs `f` on the async record table.
    pub fn with_ops<R>(&self, f: impl FnOnce(&mut OpsTable) -> R) -> R {
        f(&mut self.state().ops)
    }

    /// All modules, in listing order.
    pub fn modules(&self) -> Vec<Module> {
        let st = self.state();
        let mut v: Vec<Module> = st.modules.values().cloned().collect();
        v.sort_by_key(|m| activation::listing_order(m.priority, &m.key));
        v
    }

    /// One module.
    pub fn module(&self, key: &BizKey) -> Option<Module> {
        self.state().modules.get(key).cloned()
    }

    /// Keys of every registered version of `name`.
    pub fn versions_of(&self, name: &str) -> Vec<BizKey> {
        self.state()
            .modules
            .keys()
            .filter(|k| k.name == name)
            .cloned()
            .collect()
    }

    fn active_of(st: &State, name: &str, except: &BizKey) -> Option<BizKey> {
        st.modules
            .values()
            .find(|m| m.key.name == name && &m.key != except && m.state == BizState::Activated)
            .map(|m| m.key.clone())
    }

    fn apply(st: &mut State, transitions: Vec<Transition>) {
        for t in transitions {
            if let Some(m) = st.modules.get_mut(&t.key) {
                m.push(t.record);
            }
        }
    }

    /// Registers `pkg` as `resolved` (sofa-ark registers before starting). Fails with
    /// `REPEAT_BIZ` if the manifest identity is already registered.
    fn register(
        &self,
        pkg: &Package,
        args: &[String],
        envs: &BTreeMap<String, String>,
    ) -> Result<(), BizKey> {
        let mut st = self.state();
        if st.modules.get(&pkg.key).is_some_and(|m| !m.gone) {
            return Err(pkg.key.clone());
        }
        let mut m = Module {
            key: pkg.key.clone(),
            state: BizState::Resolved,
            records: Vec::new(),
            priority: pkg.priority,
            main_class: Some(pkg.main_class.clone()),
            web_context_path: pkg.web_context_path.clone(),
            package: Some(pkg.clone()),
            started: None,
            args: args.to_vec(),
            envs: envs.clone(),
            external: false,
            gone: false,
        };
        m.push(StateRecord {
            change_time: now_ms(),
            message: String::new(),
            reason: StateChangeReason::Created,
            state: BizState::Resolved,
        });
        st.modules.insert(pkg.key.clone(), m);
        Ok(())
    }

    /// Installs a fetched package: register, start, activate. On failure the package file is
    /// removed and (unless `keep_failed`) the module is unregistered.
    pub async fn install(
        &self,
        pkg: Package,
        args: Vec<String>,
        envs: BTreeMap<String, String>,
    ) -> Result<Installed, InstallError> {
        let begin = Instant::now();
        let started_at = chrono::Local::now().format("%H:%M:%S,%3f").to_string();
        // The service refuses these before fetching; checked again here because every path
        // that starts a module (restore included) passes through this function.
        if let Err(e) = check_envs(&envs, self.shared.cfg.allow_jvm_option_envs) {
            self.shared.store.remove(&pkg);
            return Err(e.into());
        }
        if let Err(key) = self.register(&pkg, &args, &envs) {
            self.shared.store.remove(&pkg);
            return Err(InstallError::Repeat(key));
        }
        let key = pkg.key.clone();
        tracing::info!(biz = %key, url = %pkg.url, "installing module");
        let req = StartRequest {
            package: pkg.clone(),
            args,
            envs,
        };
        match self.shared.backend.start(req).await {
            Ok(started) => {
                let model = {
                    let mut st = self.state();
                    let t = match started.active {
                        Some(observed) => activation::on_started_observed(&key, observed, now_ms()),
                        None => {
                            let active = Self::active_of(&st, &key.name, &key);
                            activation::on_started(
                                &key,
                                active.as_ref(),
                                self.shared.cfg.activation,
                                now_ms(),
                            )
                        }
                    };
                    if let Some(m) = st.modules.get_mut(&key) {
                        m.main_class = Some(started.main_class.clone());
                        m.started = Some(started);
                    }
                    Self::apply(&mut st, t);
                    st.modules.get(&key).map(Module::model)
                };
                self.persist().await;
                let model = model.unwrap_or_else(|| broken_model(&key.name, &key.version));
                tracing::info!(biz = %key, state = ?model.biz_state, "module installed");
                Ok(Installed {
                    model,
                    cost_ms: begin.elapsed().as_millis(),
                    started_at,
                })
            }
            Err(source) => {
                tracing::warn!(biz = %key, error = %source, "module failed to start");
                {
                    let mut st = self.state();
                    if let Some(m) = st.modules.get_mut(&key) {
                        m.push(StateRecord {
                            change_time: now_ms(),
                            message: source.to_string(),
                            reason: StateChangeReason::InstallFailed,
                            state: BizState::Broken,
                        });
                    }
                    if !self.shared.cfg.keep_failed {
                        st.modules.remove(&key);
                    }
                }
                self.shared.store.remove(&pkg);
                Err(InstallError::Start { key, source })
            }
        }
    }

    /// Uninstalls a module: `deactivated` (Killing) → backend stop → unregistered.
    pub async fn uninstall(&self, key: &BizKey) -> UninstallOutcome {
        if self.shared.cfg.master_biz_name.as_deref() == Some(key.name.as_str()) {
            return UninstallOutcome::Master;
        }
        {
            let mut st = self.state();
            let Some(m) = st.modules.get_mut(key) else {
                return UninstallOutcome::NotFound;
            };
            if m.state == BizState::Activated {
                m.push(StateRecord {
                    change_time: now_ms(),
                    message: String::new(),
                    reason: StateChangeReason::Killing,
                    state: BizState::Deactivated,
                });
            }
        }
        tracing::info!(biz = %key, "uninstalling module");
        match self.shared.backend.stop(key).await {
            // A module the backend no longer runs (it died, or was removed in the base) is
            // already gone: unregistering it is the whole job.
            Ok(()) | Err(BackendError::NotFound(_)) => {
                let removed = self.state().modules.remove(key);
                if let Some(pkg) = removed.and_then(|m| m.package) {
                    self.shared.store.remove(&pkg);
                }
                self.persist().await;
                UninstallOutcome::Removed
            }
            Err(e) => {
                if let Some(m) = self.state().modules.get_mut(key) {
                    m.push(StateRecord {
                        change_time: now_ms(),
                        message: e.to_string(),
                        reason: StateChangeReason::UninstallFailed,
                        state: BizState::Broken,
                    });
                }
                UninstallOutcome::StopFailed(e)
            }
        }
    }

    /// Makes `key` the serving version of its name.
    pub async fn switch(&self, key: &BizKey) -> SwitchOutcome {
        let (state, active) = {
            let st = self.state();
            let Some(m) = st.modules.get(key) else {
                return SwitchOutcome::NotFound;
            };
            (m.state, Self::active_of(&st, &key.name, key))
        };
        let transitions = match activation::on_switch(key, state, active.as_ref(), now_ms()) {
            Ok(t) if t.is_empty() => return SwitchOutcome::Activated,
            Ok(t) => t,
            Err(activation::SwitchRefused::IllegalState(s)) => {
                return SwitchOutcome::IllegalState(s);
            }
        };
        if let Err(e) = self.shared.backend.activate(key).await {
            return SwitchOutcome::Failed(e.to_string());
        }
        Self::apply(&mut self.state(), transitions);
        self.persist().await;
        SwitchOutcome::Activated
    }

    /// Applies something the backend observed.
    pub fn on_backend_event(&self, ev: BackendEvent) {
        match ev {
            BackendEvent::Exited { key, message } => {
                let mut st = self.state();
                if let Some(m) = st.modules.get_mut(&key)
                    && matches!(m.state, BizState::Activated | BizState::Deactivated)
                {
                    tracing::warn!(biz = %key, %message, "module stopped on its own");
                    m.gone = true;
                    m.push(StateRecord {
                        change_time: now_ms(),
                        message,
                        reason: StateChangeReason::Undefine,
                        state: BizState::Broken,
                    });
                }
            }
        }
    }

    /// Registers modules the backend found running (e.g. static merge deployment in a base).
    pub async fn adopt_discovered(&self) -> Result<usize, BackendError> {
        let found = self.shared.backend.discover().await?;
        let n = found.len();
        let mut st = self.state();
        for d in found {
            let now = now_ms();
            let state = if d.active {
                BizState::Activated
            } else {
                BizState::Deactivated
            };
            st.modules.entry(d.key.clone()).or_insert_with(|| Module {
                key: d.key.clone(),
                state,
                records: vec![StateRecord {
                    change_time: now,
                    message: "adopted: found running in the base at agent start-up".into(),
                    reason: StateChangeReason::Started,
                    state,
                }],
                priority: crate::package::DEFAULT_PRIORITY,
                main_class: d.main_class,
                web_context_path: None,
                package: None,
                started: None,
                args: Vec::new(),
                envs: BTreeMap::new(),
                external: true,
                gone: false,
            });
        }
        Ok(n)
    }

    /// Modules remembered from the previous run.
    pub fn remembered(&self) -> Vec<Remembered> {
        let Some(path) = &self.shared.cfg.state_file else {
            return Vec::new();
        };
        match persist::load(path) {
            Ok(s) => s.modules,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot read the state file; starting empty");
                Vec::new()
            }
        }
    }

    /// Records the current module table in the state file and waits until it is on disk, so
    /// a reply sent afterwards is never ahead of what a restart restores. The snapshot is
    /// taken and queued under the state lock, which orders concurrent callers; the one writer
    /// thread writes them in that order.
    async fn persist(&self) {
        let Some(writer) = &self.shared.writer else {
            return;
        };
        let seq = {
            let st = self.state();
            let modules = st
                .modules
                .values()
                .filter(|m| {
                    !m.external && matches!(m.state, BizState::Activated | BizState::Deactivated)
                })
                .filter_map(|m| {
                    let pkg = m.package.as_ref()?;
                    Some(Remembered {
                        key: m.key.clone(),
                        url: pkg.url.clone(),
                        jar: pkg.jar.clone(),
                        args: m.args.clone(),
                        envs: m.envs.clone(),
                        active: m.state == BizState::Activated,
                    })
                })
                .collect();
            writer.submit(StateFile {
                version: 1,
                modules,
            })
        };
        writer.written(seq).await;
    }

    /// Stops everything: waits for async operations, then stops the backend's modules.
    /// The state file keeps what was installed, so the next start runs it again.
    pub async fn shutdown(&self) {
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        self.shared.backend.shutdown().await;
    }
}

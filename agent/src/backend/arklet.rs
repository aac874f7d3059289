//! The `arklet` runtime backend: for bases that already embed a Java Arklet. The agent keeps
//! serving the Arklet HTTP API itself (health from outside the JVM, tunnels, bounded async
//! records, timeouts, error codes) and forwards module lifecycle commands to the inner Arklet
//! on another port (`koupleless.arklet.http.port`, e.g. 1239), translating its envelopes
//! (spec protocol §2.2–§2.4) into [`Started`] and [`BackendError`].
//!
//! # Commands
//!
//! * **start** → `POST /installBiz` (synchronous, as the inner Arklet answers only once the
//!   install is over) with the manifest identity, the `file:` URL of the package the agent has
//!   already fetched and validated (under [`ArkletConfig::package_dir_in_base`] if the base
//!   mounts the agent's package directory elsewhere), and the request's `args` and `envs`.
//!   `SUCCESS` gives the module's main class, work directory and class path from `bizInfos`.
//!   `CMD_PROCESS_INTERNAL_ERROR` (how the Java Arklet reports a start that threw, a download
//!   or a validation failure) and `FAILED` become [`BackendError::StartFailed`] with the inner
//!   message.
//! * **`REPEAT_BIZ`** from the inner Arklet means the base already runs this identity (the
//!   engine only installs identities it does not have: another client installed it). The
//!   backend then adopts the running module and reports success without installing again,
//!   as sofa-ark treats the identity as the contract; the ark-telnet backend decides the same.
//!   If the module is not started (yet), the install fails with that state.
//! * **stop** → `POST /uninstallBiz`; `NOT_FOUND_BIZ` is [`BackendError::NotFound`], which the
//!   engine treats as already gone. **activate** → `POST /switchBiz`.
//! * **discover** → `POST /queryAllBiz`, retried until the inner Arklet answers (no deadline;
//!   run it in the background). The inner Arklet already leaves the base's own biz out.
//!
//! Every request has a deadline ([`ArkletConfig::start_timeout`] for installs,
//! [`ArkletConfig::command_timeout`] otherwise). Arklet cannot cancel a command, and closing
//! the connection would only risk cancelling it half-way in an Arklet that reacts to that,
//! so a request that outlives its deadline is reported as timed out and left to finish in an
//! owned background task; an install that then succeeds is uninstalled again, since the engine
//! recorded it as failed. A monitor (every [`ArkletConfig::monitor_interval`]) reports modules
//! that vanish from the inner list as [`BackendEvent::Exited`]. Shutdown stops the monitor and
//! the background requests; modules stay in the base.

use std::collections::HashSet;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use koupleless_protocol::BizState;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ark_telnet::proto::{self, Entry, Listing};
use super::ark_telnet::watch;
use crate::backend::{
    BackendError, BackendEvent, BizKey, Discovered, RuntimeBackend, StartRequest, Started,
};

/// Settings of the arklet backend.
#[derive(Clone, Debug)]
pub struct ArkletConfig {
    /// Base URL of the inner Arklet, e.g. `http://127.0.0.1:1239`.
    pub url: String,
    /// The agent's package directory.
    pub package_dir: PathBuf,
    /// Where the base JVM sees [`Self::package_dir`], if mounted elsewhere (default: same).
    pub package_dir_in_base: Option<PathBuf>,
    /// The base's own biz name, left out of `discover` as well.
    pub base_name: Option<String>,
    /// TCP connect deadline (default 5 s).
    pub connect_timeout: Duration,
    /// Deadline of `installBiz` (default 120 s).
    pub start_timeout: Duration,
    /// Deadline of every other command (default 60 s; an uninstall waits for the module's
    /// shutdown).
    pub command_timeout: Duration,
    /// Interval of the inner `queryAllBiz` that notices modules disappearing (default 10 s).
    pub monitor_interval: Duration,
    /// Interval between attempts while waiting for the inner Arklet in `discover` (1 s).
    pub retry_interval: Duration,
}

impl ArkletConfig {
    /// Defaults (see each field) for an inner Arklet URL and the package directory.
    pub fn new(url: impl Into<String>, package_dir: impl Into<PathBuf>) -> Self {
        ArkletConfig {
            url: url.into().trim_end_matches('/').to_owned(),
            package_dir: package_dir.into(),
            package_dir_in_base: None,
            base_name: None,
            connect_timeout: Duration::from_secs(5),
            start_timeout: Duration::from_secs(120),
            command_timeout: Duration::from_secs(60),
            monitor_interval: Duration::from_secs(10),
            retry_interval: Duration::from_secs(1),
        }
    }
}

/// Command-line flags of the arklet backend (flattened into the agent's configuration).
#[derive(Clone, Debug, clap::Args)]
pub struct ArkletArgs {
    /// Base URL of the Arklet inside the base JVM (give it another port with
    /// `-Dkoupleless.arklet.http.port`).
    #[arg(
        long = "inner-arklet-url",
        env = "KOUPLELESS_AGENT_INNER_ARKLET_URL",
        default_value = "http://127.0.0.1:1239"
    )]
    pub inner_arklet_url: String,
    /// Deadline of inner commands other than installs (installs use `--start-timeout`).
    #[arg(long = "inner-arklet-timeout", env = "KOUPLELESS_AGENT_INNER_ARKLET_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s")]
    pub inner_arklet_timeout: Duration,
    /// Interval of the check for modules that disappeared from the inner Arklet.
    #[arg(long = "inner-arklet-monitor-interval", env = "KOUPLELESS_AGENT_INNER_ARKLET_MONITOR_INTERVAL", value_parser = humantime::parse_duration, default_value = "10s")]
    pub inner_arklet_monitor_interval: Duration,
}

impl ArkletArgs {
    /// The backend configuration: the agent's package directory and where the base sees it,
    /// the base's biz name, and the install deadline (`--start-timeout`).
    pub fn config(
        &self,
        package_dir: PathBuf,
        package_dir_in_base: Option<PathBuf>,
        base_name: Option<String>,
        start_timeout: Duration,
    ) -> ArkletConfig {
        let mut cfg = ArkletConfig::new(self.inner_arklet_url.clone(), package_dir);
        cfg.package_dir_in_base = package_dir_in_base;
        cfg.base_name = base_name;
        cfg.start_timeout = start_timeout;
        cfg.command_timeout = self.inner_arklet_timeout;
        cfg.monitor_interval = self.inner_arklet_monitor_interval;
        cfg
    }
}

/// The Java `Response` envelope, as much of it as the translation needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// `SUCCESS`, `FAILED`, `CMD_NOT_FOUND`, `CMD_PROCESS_INTERNAL_ERROR`.
    pub code: String,
    /// Failure text.
    pub message: Option<String>,
    /// Command output.
    pub data: Option<Value>,
}

/// Parses a response body (spec protocol §2.2).
pub fn parse_envelope(body: &str) -> Result<Envelope, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON ({e})"))?;
    let code = v
        .get("code")
        .and_then(Value::as_str)
        .ok_or("no envelope code")?
        .to_owned();
    Ok(Envelope {
        code,
        message: v.get("message").and_then(Value::as_str).map(str::to_owned),
        data: v.get("data").filter(|d| !d.is_null()).cloned(),
    })
}

impl Envelope {
    fn inner_code(&self) -> Option<&str> {
        self.data.as_ref()?.get("code")?.as_str()
    }

    /// The most specific failure text: the sofa-ark message, else the envelope's, without the
    /// `Internal Error: ` prefix (the engine adds its own).
    fn reason(&self) -> String {
        let inner = self
            .data
            .as_ref()
            .and_then(|d| d.get("message"))
            .and_then(Value::as_str);
        let text = inner.or(self.message.as_deref()).unwrap_or("no message");
        text.strip_prefix("Internal Error: ")
            .unwrap_or(text)
            .to_owned()
    }
}

/// What an `installBiz` answer means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstallReply {
    /// Installed; details from `bizInfos[0]` where present.
    Installed {
        /// `mainClass`.
        main_class: Option<String>,
        /// `bizTempWorkDir`.
        work_dir: Option<String>,
        /// `classPath`.
        class_path: Vec<String>,
    },
    /// `REPEAT_BIZ`: the identity is already registered in the base.
    AlreadyThere,
    /// The install ran and failed, or was refused.
    Failed(String),
    /// The inner server does not know the command (not an Arklet).
    Unsupported(String),
}

/// Translates an `installBiz` envelope (spec protocol §2.4.2).
pub fn translate_install(env: &Envelope) -> InstallReply {
    match env.code.as_str() {
        "SUCCESS" => {
            let model = env
                .data
                .as_ref()
                .and_then(|d| d.get("bizInfos"))
                .and_then(|b| b.get(0));
            let text = |k: &str| {
                model
                    .and_then(|m| m.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            InstallReply::Installed {
                main_class: text("mainClass"),
                work_dir: text("bizTempWorkDir"),
                class_path: model
                    .and_then(|m| m.get("classPath"))
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        }
        "FAILED" if env.inner_code() == Some("REPEAT_BIZ") => InstallReply::AlreadyThere,
        "CMD_NOT_FOUND" => InstallReply::Unsupported(env.reason()),
        _ => InstallReply::Failed(env.reason()),
    }
}

/// What an `uninstallBiz` or `switchBiz` answer means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpReply {
    /// Done.
    Done,
    /// `NOT_FOUND_BIZ`.
    NotFound,
    /// Ran and failed, or refused (`ILLEGAL_STATE_BIZ`, master biz, lock conflict).
    Failed(String),
    /// The inner server does not know the command.
    Unsupported(String),
}

/// Translates an `uninstallBiz`/`switchBiz` envelope (spec protocol §2.4.3, §2.4.4).
pub fn translate_op(env: &Envelope) -> OpReply {
    match env.code.as_str() {
        "SUCCESS" => OpReply::Done,
        "FAILED" if env.inner_code() == Some("NOT_FOUND_BIZ") => OpReply::NotFound,
        "CMD_NOT_FOUND" => OpReply::Unsupported(env.reason()),
        _ => OpReply::Failed(env.reason()),
    }
}

/// One inner `queryAllBiz` element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Identity.
    pub key: BizKey,
    /// State (case-insensitive parse).
    pub state: BizState,
    /// `mainClass`.
    pub main_class: Option<String>,
}

/// Translates a `queryAllBiz` envelope (spec protocol §2.4.5).
pub fn translate_list(env: &Envelope) -> Result<Vec<Listed>, String> {
    if env.code != "SUCCESS" {
        return Err(format!(
            "queryAllBiz answered {}: {}",
            env.code,
            env.reason()
        ));
    }
    let items = env
        .data
        .as_ref()
        .and_then(Value::as_array)
        .ok_or("queryAllBiz data is not a list")?;
    items
        .iter()
        .map(|b| {
            let text = |k: &str| b.get(k).and_then(Value::as_str);
            let name = text("bizName").ok_or("a listed biz has no bizName")?;
            let version = text("bizVersion").ok_or("a listed biz has no bizVersion")?;
            Ok(Listed {
                key: BizKey::new(name, version),
                state: BizState::parse(text("bizState").unwrap_or("")),
                main_class: text("mainClass").map(str::to_owned),
            })
        })
        .collect()
}

#[derive(Debug)]
struct Inner {
    cfg: ArkletConfig,
    http: reqwest::Client,
    /// Modules the backend believes are in the base (started or adopted).
    known: Mutex<HashSet<BizKey>>,
    events: mpsc::Sender<BackendEvent>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// Forwards lifecycle commands to an inner Java Arklet. See the [module docs](self).
#[derive(Debug)]
pub struct ArkletBackend {
    inner: Arc<Inner>,
}

/// A request to the inner Arklet that is still running: the body it will answer with.
type Pending = Pin<Box<dyn Future<Output = Result<Envelope, BackendError>> + Send>>;

/// Why a lifecycle call gave no envelope.
enum CallError {
    /// The deadline passed; the request is still open and the inner command still running.
    TimedOut(Pending),
    /// It failed.
    Other(BackendError),
}

impl ArkletBackend {
    /// Builds the client and starts the monitor (needs a tokio runtime).
    pub fn new(
        cfg: ArkletConfig,
        events: mpsc::Sender<BackendEvent>,
    ) -> Result<Self, BackendError> {
        match url::Url::parse(&cfg.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => {
                return Err(BackendError::Unavailable(format!(
                    "invalid inner Arklet URL {:?}: expected http://host:port",
                    cfg.url
                )));
            }
        }
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .build()
            .map_err(|e| BackendError::Io {
                context: "building the HTTP client".into(),
                source: std::io::Error::other(e),
            })?;
        let inner = Arc::new(Inner {
            cfg,
            http,
            known: Mutex::new(HashSet::new()),
            events,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let monitor = Arc::clone(&inner);
        inner.tasks.spawn(async move { monitor.monitor().await });
        Ok(ArkletBackend { inner })
    }

    /// The configuration in force.
    pub fn config(&self) -> &ArkletConfig {
        &self.inner.cfg
    }
}

impl Drop for ArkletBackend {
    fn drop(&mut self) {
        self.inner.cancel.cancel();
    }
}

impl Inner {
    fn known(&self) -> MutexGuard<'_, HashSet<BizKey>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One POST, as an owned future, without a deadline of its own.
    fn request(&self, cmd: &str, body: &Value) -> Pending {
        let url = format!("{}/{cmd}", self.cfg.url);
        let send = self.http.post(&url).json(body).send();
        Box::pin(async move {
            let read = async {
                let resp = send.await?;
                let status = resp.status();
                resp.text().await.map(|t| (status, t))
            };
            match read.await {
                Ok((status, text)) => parse_envelope(&text).map_err(|e| {
                    let shown: String = text.chars().take(200).collect();
                    BackendError::Unavailable(format!(
                        "inner Arklet {url} answered HTTP {}: {e}: {shown}",
                        status.as_u16()
                    ))
                }),
                Err(e) => Err(BackendError::Unavailable(format!(
                    "inner Arklet {url} unreachable: {}",
                    crate::package::error_chain(&e)
                ))),
            }
        })
    }

    /// A lifecycle command with a deadline. A request that outlives it is not dropped:
    /// closing the connection could cancel the command inside the base half-way (the Java
    /// Arklet finishes it anyway), so the caller gets it back to finish in the background.
    async fn call(
        &self,
        cmd: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Envelope, CallError> {
        let mut pending = self.request(cmd, body);
        tokio::select! {
            _ = self.cancel.cancelled() => Err(CallError::Other(BackendError::Unavailable("the arklet backend has shut down".into()))),
            r = tokio::time::timeout(timeout, &mut pending) => match r {
                Ok(r) => r.map_err(CallError::Other),
                Err(_) => Err(CallError::TimedOut(pending)),
            },
        }
    }

    /// Lets a timed-out request finish (owned, cancelled on shutdown), then runs `late` on
    /// its answer.
    fn finish_later<F, Fut>(self: &Arc<Self>, pending: Pending, late: F)
    where
        F: FnOnce(Arc<Inner>, Envelope) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let inner = Arc::clone(self);
        self.tasks.spawn(async move {
            let answer = tokio::select! {
                _ = inner.cancel.cancelled() => return,
                r = pending => r,
            };
            match answer {
                Ok(env) => late(inner, env).await,
                Err(e) => tracing::warn!(error = %e, "a timed-out inner Arklet request failed"),
            }
        });
    }

    async fn list(&self) -> Result<Vec<Listed>, BackendError> {
        // A read-only query: dropping it on timeout is harmless.
        match tokio::time::timeout(
            self.cfg.command_timeout,
            self.request("queryAllBiz", &json!({})),
        )
        .await
        {
            Ok(r) => translate_list(&r?).map_err(BackendError::Unavailable),
            Err(_) => Err(BackendError::Unavailable(format!(
                "inner Arklet queryAllBiz gave no answer within {} s",
                self.cfg.command_timeout.as_secs()
            ))),
        }
    }

    async fn start(self: &Arc<Self>, req: &StartRequest) -> Result<Started, BackendError> {
        let key = req.package.key.clone();
        let url = proto::base_file_url(
            &req.package.jar,
            &self.cfg.package_dir,
            self.cfg.package_dir_in_base.as_deref(),
        )
        .map_err(|e| BackendError::StartFailed {
            message: format!("cannot install {key}: {e}"),
        })?;
        let mut body = json!({"bizName": key.name, "bizVersion": key.version, "bizUrl": url});
        if !req.args.is_empty() {
            body["args"] = json!(req.args);
        }
        if !req.envs.is_empty() {
            body["envs"] = json!(req.envs);
        }
        let env = match self.call("installBiz", &body, self.cfg.start_timeout).await {
            Ok(env) => env,
            Err(CallError::TimedOut(pending)) => {
                tracing::warn!(biz = %key, "inner Arklet install timed out; if it still succeeds, the module is removed again");
                let late_key = key.clone();
                self.finish_later(pending, move |inner, env| async move {
                    // The engine recorded the install as failed: leave nothing running.
                    if matches!(translate_install(&env), InstallReply::Installed { .. }) {
                        tracing::info!(biz = %late_key, "removing a module whose install this agent gave up on");
                        if let Err(e) = inner.remove(&late_key).await {
                            tracing::warn!(biz = %late_key, error = %e, "could not remove the late module");
                        }
                    }
                });
                return Err(BackendError::TimedOut {
                    op: "install",
                    key,
                    secs: self.cfg.start_timeout.as_secs(),
                });
            }
            Err(CallError::Other(e)) => return Err(e),
        };
        let started = match translate_install(&env) {
            InstallReply::Installed {
                main_class,
                work_dir,
                class_path,
            } => Started {
                work_dir: work_dir.map(PathBuf::from),
                class_path,
                main_class: main_class.unwrap_or_else(|| req.package.main_class.clone()),
                active: None,
            },
            InstallReply::AlreadyThere => {
                let listed = self.list().await?;
                match listed
                    .iter()
                    .find(|l| l.key == key)
                    .map(|l| (l.state, l.main_class.clone()))
                {
                    Some((state @ (BizState::Activated | BizState::Deactivated), main)) => {
                        tracing::warn!(biz = %key, "module already runs in the base (installed by another client); adopting it instead of installing the package again");
                        Started {
                            work_dir: None,
                            class_path: Vec::new(),
                            main_class: main.unwrap_or_else(|| req.package.main_class.clone()),
                            active: Some(state == BizState::Activated),
                        }
                    }
                    Some((state, _)) => {
                        return Err(BackendError::StartFailed {
                            message: format!(
                                "Biz: {key} has been installed or registered by another client and is {state}"
                            ),
                        });
                    }
                    None => {
                        return Err(BackendError::StartFailed {
                            message: format!(
                                "the inner Arklet reported {key} as already installed (REPEAT_BIZ) but does not list it"
                            ),
                        });
                    }
                }
            }
            InstallReply::Failed(message) => return Err(BackendError::StartFailed { message }),
            InstallReply::Unsupported(m) => {
                return Err(BackendError::Unavailable(format!(
                    "{} is not an Arklet: {m}",
                    self.cfg.url
                )));
            }
        };
        self.known().insert(key);
        Ok(started)
    }

    async fn op(
        self: &Arc<Self>,
        cmd: &'static str,
        key: &BizKey,
    ) -> Result<OpReply, BackendError> {
        let body = json!({"bizName": key.name, "bizVersion": key.version});
        match self.call(cmd, &body, self.cfg.command_timeout).await {
            Ok(env) => Ok(translate_op(&env)),
            Err(CallError::TimedOut(pending)) => {
                let late_key = key.clone();
                self.finish_later(pending, move |_, env| async move {
                    tracing::info!(biz = %late_key, cmd, reply = ?translate_op(&env), "a timed-out inner command finished");
                });
                Err(BackendError::TimedOut {
                    op: if cmd == "switchBiz" {
                        "switch"
                    } else {
                        "uninstall"
                    },
                    key: key.clone(),
                    secs: self.cfg.command_timeout.as_secs(),
                })
            }
            Err(CallError::Other(e)) => Err(e),
        }
    }

    async fn remove(self: &Arc<Self>, key: &BizKey) -> Result<(), BackendError> {
        match self.op("uninstallBiz", key).await? {
            OpReply::Done => Ok(()),
            OpReply::NotFound => Err(BackendError::NotFound(key.clone())),
            OpReply::Failed(message) => Err(BackendError::StopFailed {
                key: key.clone(),
                message,
            }),
            OpReply::Unsupported(m) => Err(BackendError::Unavailable(format!(
                "{} is not an Arklet: {m}",
                self.cfg.url
            ))),
        }
    }

    async fn stop(self: &Arc<Self>, key: &BizKey) -> Result<(), BackendError> {
        // From here on its disappearance is expected, not an exit to report.
        self.known().remove(key);
        self.remove(key).await
    }

    async fn activate(self: &Arc<Self>, key: &BizKey) -> Result<(), BackendError> {
        match self.op("switchBiz", key).await? {
            OpReply::Done => Ok(()),
            OpReply::NotFound => Err(BackendError::NotFound(key.clone())),
            OpReply::Failed(message) => Err(BackendError::StartFailed { message }),
            OpReply::Unsupported(m) => Err(BackendError::Unavailable(format!(
                "{} is not an Arklet: {m}",
                self.cfg.url
            ))),
        }
    }

    async fn discover(&self) -> Result<Vec<Discovered>, BackendError> {
        let listed = loop {
            match self.list().await {
                Ok(l) => break l,
                Err(e) => {
                    tracing::debug!(error = %e, "waiting for the inner Arklet");
                    tokio::select! {
                        _ = self.cancel.cancelled() => return Err(e),
                        _ = tokio::time::sleep(self.cfg.retry_interval) => {}
                    }
                }
            }
        };
        let found: Vec<Discovered> = listed
            .into_iter()
            .filter(|l| self.cfg.base_name.as_deref() != Some(l.key.name.as_str()))
            .filter(|l| l.main_class.as_deref() != Some(proto::EMBED_MAIN))
            .filter_map(|l| match l.state {
                BizState::Activated | BizState::Deactivated => Some(Discovered {
                    key: l.key,
                    active: l.state == BizState::Activated,
                    main_class: l.main_class,
                }),
                other => {
                    tracing::warn!(biz = %l.key, state = %other, "not adopting a module that is not started");
                    None
                }
            })
            .collect();
        self.known().extend(found.iter().map(|d| d.key.clone()));
        Ok(found)
    }

    /// Reports known modules that vanished from the inner list.
    async fn monitor(&self) {
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(self.cfg.monitor_interval) => {}
            }
            if self.known().is_empty() {
                continue;
            }
            let Ok(listed) = self.list().await else {
                continue;
            };
            let listing = Listing {
                entries: listed
                    .into_iter()
                    .map(|l| Entry {
                        key: l.key,
                        state: l.state,
                    })
                    .collect(),
            };
            let gone = {
                let mut known = self.known();
                let gone = watch::vanished(&known, &listing);
                for k in &gone {
                    known.remove(k);
                }
                gone
            };
            for key in gone {
                tracing::warn!(biz = %key, "module no longer listed by the inner Arklet");
                let ev = BackendEvent::Exited {
                    key,
                    message: "no longer listed by the inner Arklet (uninstalled by another client, or the base JVM restarted)".into(),
                };
                tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    _ = self.events.send(ev) => {}
                }
            }
        }
    }
}

impl RuntimeBackend for ArkletBackend {
    async fn start(&self, req: StartRequest) -> Result<Started, BackendError> {
        self.inner.start(&req).await
    }

    async fn stop(&self, key: &BizKey) -> Result<(), BackendError> {
        self.inner.stop(key).await
    }

    async fn activate(&self, key: &BizKey) -> Result<(), BackendError> {
        self.inner.activate(key).await
    }

    async fn discover(&self) -> Result<Vec<Discovered>, BackendError> {
        self.inner.discover().await
    }

    async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(body: &str) -> Envelope {
        parse_envelope(body).unwrap()
    }

    #[test]
    fn envelope_parsing() {
        assert_eq!(
            env(r#"{"code":"CMD_NOT_FOUND","message":"please follow the doc"}"#),
            Envelope {
                code: "CMD_NOT_FOUND".into(),
                message: Some("please follow the doc".into()),
                data: None
            }
        );
        assert!(parse_envelope("POST http request only supported by arklet").is_err());
        assert!(parse_envelope(r#"{"message":"x"}"#).is_err());
    }

    #[test]
    fn install_translation_table() {
        // Envelopes from spec protocol §2.4.2.
        let cases = [
            (
                r#"{"baseIdentity":"10.0.0.5","code":"SUCCESS","data":{"bizInfos":[{"bizName":"biz1","bizState":"activated","bizTempWorkDir":"/tmp/sofa-ark8734/biz1-unpack","bizVersion":"0.0.1","classPath":["file:/tmp/sofa-ark8734/biz1-unpack/BOOT-INF/classes/"],"identity":"biz1:0.0.1","mainClass":"com.example.Biz1Application"}],"code":"SUCCESS","elapsedSpace":10485760,"message":"Install Biz: biz1:0.0.1 success, cost: 1092 ms, started at: 16:07:47,769"}}"#,
                InstallReply::Installed {
                    main_class: Some("com.example.Biz1Application".into()),
                    work_dir: Some("/tmp/sofa-ark8734/biz1-unpack".into()),
                    class_path: vec!["file:/tmp/sofa-ark8734/biz1-unpack/BOOT-INF/classes/".into()],
                },
            ),
            (
                r#"{"code":"SUCCESS","data":{"code":"SUCCESS","message":"ok"}}"#,
                InstallReply::Installed { main_class: None, work_dir: None, class_path: vec![] },
            ),
            (
                r#"{"baseIdentity":"10.0.0.5","code":"FAILED","data":{"code":"REPEAT_BIZ","elapsedSpace":2048,"message":"Biz: biz1:0.0.1 has been installed or registered."},"message":"install biz not success!"}"#,
                InstallReply::AlreadyThere,
            ),
            (
                r#"{"baseIdentity":"10.0.0.5","code":"FAILED","message":"FAILED:biz1:0.0.1 installBiz conflict, exist unfinished command(installBiz) for this biz"}"#,
                InstallReply::Failed("FAILED:biz1:0.0.1 installBiz conflict, exist unfinished command(installBiz) for this biz".into()),
            ),
            (
                r#"{"code":"CMD_PROCESS_INTERNAL_ERROR","errorStackTrace":"...","message":"Internal Error: java.lang.IllegalStateException: boom"}"#,
                InstallReply::Failed("java.lang.IllegalStateException: boom".into()),
            ),
            (
                r#"{"code":"CMD_NOT_FOUND","message":"please follow the doc"}"#,
                InstallReply::Unsupported("please follow the doc".into()),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(translate_install(&env(body)), want, "{body}");
        }
    }

    #[test]
    fn op_translation_table() {
        let cases = [
            (
                r#"{"baseIdentity":"10.0.0.5","code":"SUCCESS","data":{"code":"SUCCESS","message":"Uninstall biz: biz1:0.0.1 success."}}"#,
                OpReply::Done,
            ),
            (
                r#"{"baseIdentity":"10.0.0.5","code":"FAILED","data":{"code":"NOT_FOUND_BIZ","message":"Uninstall biz: biz1:0.0.1 not found."},"message":"uninstall biz not success!"}"#,
                OpReply::NotFound,
            ),
            (
                r#"{"code":"FAILED","data":{"code":"FAILED","message":"Master biz must not be uninstalled."},"message":"Master biz must not be uninstalled."}"#,
                OpReply::Failed("Master biz must not be uninstalled.".into()),
            ),
            (
                r#"{"code":"FAILED","data":{"code":"ILLEGAL_STATE_BIZ","message":"Switch Biz: a:1's state must not be resolved."},"message":"switch biz not success!"}"#,
                OpReply::Failed("Switch Biz: a:1's state must not be resolved.".into()),
            ),
            (
                r#"{"code":"FAILED","data":{"code":"NOT_FOUND_BIZ","message":"Switch biz: a:1 not found."},"message":"switch biz not success!"}"#,
                OpReply::NotFound,
            ),
            (
                r#"{"code":"CMD_PROCESS_INTERNAL_ERROR","message":"Internal Error: bizName should not be blank"}"#,
                OpReply::Failed("bizName should not be blank".into()),
            ),
            (
                r#"{"code":"CMD_NOT_FOUND","message":"please follow the doc"}"#,
                OpReply::Unsupported("please follow the doc".into()),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(translate_op(&env(body)), want, "{body}");
        }
    }

    #[test]
    fn list_translation() {
        let body = r#"{"baseIdentity":"10.0.0.5","code":"SUCCESS","data":[{"bizName":"biz1","bizState":"activated","bizStateRecords":[],"bizVersion":"0.0.1","mainClass":"com.example.Biz1Application","webContextPath":"biz1"},{"bizName":"biz2","bizState":"DEACTIVATED","bizVersion":"1"}]}"#;
        assert_eq!(
            translate_list(&env(body)).unwrap(),
            [
                Listed {
                    key: BizKey::new("biz1", "0.0.1"),
                    state: BizState::Activated,
                    main_class: Some("com.example.Biz1Application".into())
                },
                Listed {
                    key: BizKey::new("biz2", "1"),
                    state: BizState::Deactivated,
                    main_class: None
                },
            ]
        );
        assert!(translate_list(&env(r#"{"code":"SUCCESS","data":{}}"#)).is_err());
        assert!(
            translate_list(&env(
                r#"{"code":"SUCCESS","data":[{"bizState":"activated"}]}"#
            ))
            .is_err()
        );
        assert!(
            translate_list(&env(
                r#"{"code":"CMD_NOT_FOUND","message":"please follow the doc"}"#
            ))
            .is_err()
        );
    }
}

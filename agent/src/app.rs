//! Wiring: builds the backend, engine, command service, health sampler and HTTP server from a
//! [`Config`], owns every long-lived task, and shuts them down in order.

use std::net::SocketAddr;
use std::sync::Arc;

use koupleless_protocol::{BizHealthMeta, BizState};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::ark_telnet::ArkTelnetBackend;
use crate::backend::arklet::ArkletBackend;
use crate::backend::process::{ProcessBackend, ProcessBackendConfig};
use crate::backend::{BackendError, BackendEvent, RuntimeBackend};
use crate::config::{BackendKind, Config};
use crate::engine::ops::Retention;
use crate::engine::{Engine, EngineConfig};
use crate::health::{HealthConfig, HealthSampler};
use crate::health_cmd::{HealthSample, HealthSource};
use crate::http::{HttpState, Readiness};
use crate::package::{FetchConfig, PackageError, PackageStore};
use crate::service::CommandService;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The work directory or package store could not be prepared.
    #[error("package store: {0}")]
    Store(#[from] PackageError),
    /// The runtime backend could not start.
    #[error("runtime backend: {0}")]
    Backend(#[from] BackendError),
    /// The HTTP port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The controller tunnel flags are invalid (bad TLS files, env, identity).
    #[error("controller tunnel: {0}")]
    Tunnel(#[from] crate::tunnel::TunnelError),
}

/// The agent's health source: the JVM sampler, with the JVM part only when a base JVM is
/// expected (a pid or main-class pattern was configured, or the backend drives a base JVM).
struct SamplerSource {
    sampler: HealthSampler,
    jvm_expected: bool,
    base_name: String,
    base_version: String,
}

impl HealthSource for SamplerSource {
    fn sample(&self) -> HealthSample {
        // One sampler read for all three parts, so they describe the same instant.
        let data = self.sampler.health_data();
        if self.jvm_expected {
            return HealthSample {
                jvm: data.jvm,
                cpu: data.cpu,
                master: data
                    .master_biz_info
                    .unwrap_or_else(|| self.sampler.master_biz()),
            };
        }
        // Without a base JVM (modules run as the agent's own child JVMs) the agent *is* the
        // base: it is activated for as long as it answers.
        HealthSample {
            jvm: None,
            cpu: data.cpu,
            master: BizHealthMeta {
                biz_name: self.base_name.clone(),
                biz_state: BizState::Activated,
                biz_version: self.base_version.clone(),
                web_context_path: Some("/".into()),
            },
        }
    }
}

/// The runtime backend chosen by configuration.
pub enum AnyBackend {
    /// Modules as child JVMs.
    Process(ProcessBackend),
    /// Modules in the base JVM, through SOFAArk's telnet port.
    ArkTelnet(ArkTelnetBackend),
    /// Modules in the base JVM, through its own Arklet.
    Arklet(ArkletBackend),
}

impl RuntimeBackend for AnyBackend {
    async fn start(
        &self,
        req: crate::backend::StartRequest,
    ) -> Result<crate::backend::Started, BackendError> {
        match self {
            AnyBackend::Process(b) => b.start(req).await,
            AnyBackend::ArkTelnet(b) => b.start(req).await,
            AnyBackend::Arklet(b) => b.start(req).await,
        }
    }

    async fn stop(&self, key: &crate::backend::BizKey) -> Result<(), BackendError> {
        match self {
            AnyBackend::Process(b) => b.stop(key).await,
            AnyBackend::ArkTelnet(b) => b.stop(key).await,
            AnyBackend::Arklet(b) => b.stop(key).await,
        }
    }

    async fn activate(&self, key: &crate::backend::BizKey) -> Result<(), BackendError> {
        match self {
            AnyBackend::Process(b) => b.activate(key).await,
            AnyBackend::ArkTelnet(b) => b.activate(key).await,
            AnyBackend::Arklet(b) => b.activate(key).await,
        }
    }

    async fn discover(&self) -> Result<Vec<crate::backend::Discovered>, BackendError> {
        match self {
            AnyBackend::Process(b) => b.discover().await,
            AnyBackend::ArkTelnet(b) => b.discover().await,
            AnyBackend::Arklet(b) => b.discover().await,
        }
    }

    fn log_source(&self, key: &crate::backend::BizKey) -> Option<crate::logs::LogSource> {
        match self {
            AnyBackend::Process(b) => b.log_source(key),
            AnyBackend::ArkTelnet(b) => b.log_source(key),
            AnyBackend::Arklet(b) => b.log_source(key),
        }
    }

    async fn shutdown(&self) {
        match self {
            AnyBackend::Process(b) => b.shutdown().await,
            AnyBackend::ArkTelnet(b) => b.shutdown().await,
            AnyBackend::Arklet(b) => b.shutdown().await,
        }
    }
}

/// A running agent.
pub struct Agent {
    addr: SocketAddr,
    service: CommandService<AnyBackend>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Agent {
    /// The bound HTTP address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The command service (the same one the HTTP API uses).
    pub fn service(&self) -> &CommandService<AnyBackend> {
        &self.service
    }

    /// The token that stops the agent.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops the agent: HTTP server and tunnels first, then async operations, then every
    /// module process. Installed modules stay in the state file for the next start.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.service.engine().shutdown().await;
        tracing::info!("agent stopped");
    }
}

fn java_binary(cfg: &Config) -> std::path::PathBuf {
    if let Some(j) = &cfg.java {
        return j.clone();
    }
    std::env::var_os("JAVA_HOME")
        .map(|h| std::path::PathBuf::from(h).join("bin/java"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "java".into())
}

async fn adopt(engine: &Engine<AnyBackend>) {
    match engine.adopt_discovered().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(modules = n, "adopted modules already running in the base"),
        Err(e) => tracing::warn!(error = %e, "could not list modules already running in the base"),
    }
}

/// Starts the agent: every task is spawned on its tracker and stops on [`Agent::shutdown`].
pub async fn start(cfg: Config) -> Result<Agent, StartError> {
    crate::install_crypto_provider();
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let identity = cfg.identity();
    let tunnels = crate::tunnel::Tunnels::from_config(&cfg)?;
    tracing::info!(identity, port = cfg.port, work_dir = %cfg.work_dir.display(), backend = ?cfg.backend, "starting agent");

    let mut fetch = FetchConfig::new(cfg.work_dir.join("packages"));
    fetch.connect_timeout = cfg.fetch_connect_timeout;
    fetch.read_timeout = cfg.fetch_read_timeout;
    fetch.max_bytes = cfg.max_package_bytes;
    fetch.allowed_urls = crate::url_policy::parse_rules(&cfg.allow_url_prefixes)
        .map_err(|(rule, reason)| PackageError::BadAllowRule { rule, reason })?;
    fetch.deny_private_addresses = cfg.deny_private_addresses;
    fetch.allowed_file_dirs = cfg.allow_file_dirs.clone();
    if fetch.allowed_urls.is_empty() {
        tracing::warn!(
            deny_private_addresses = cfg.deny_private_addresses,
            "no --allow-url-prefix: packages are fetched from any http(s) URL"
        );
    }
    if fetch.allowed_file_dirs.is_empty() {
        tracing::warn!("no --allow-file-dir: packages are read from any file:// path");
    }
    let store = PackageStore::new(fetch)?;

    let (events_tx, mut events_rx) = mpsc::channel::<BackendEvent>(64);
    let backend = match cfg.backend {
        BackendKind::Process => {
            let mut pcfg = ProcessBackendConfig::new(cfg.work_dir.clone());
            pcfg.java = java_binary(&cfg);
            pcfg.stop_grace = cfg.stop_grace;
            pcfg.start_timeout = cfg.start_timeout;
            pcfg.jvm_args = cfg.module_jvm_args.clone();
            AnyBackend::Process(ProcessBackend::new(pcfg, events_tx)?)
        }
        BackendKind::ArkTelnet => {
            let tcfg = cfg.ark_telnet.config(
                cfg.work_dir.join("packages"),
                cfg.package_dir_in_base.clone(),
                Some(cfg.base_name.clone()),
                cfg.start_timeout,
            )?;
            AnyBackend::ArkTelnet(ArkTelnetBackend::new(tcfg, events_tx)?)
        }
        BackendKind::Arklet => {
            let acfg = cfg.arklet.config(
                cfg.work_dir.join("packages"),
                cfg.package_dir_in_base.clone(),
                Some(cfg.base_name.clone()),
                cfg.start_timeout,
            );
            AnyBackend::Arklet(ArkletBackend::new(acfg, events_tx)?)
        }
    };
    // These backends drive a base JVM that runs beside the agent.
    let base_jvm_backend = matches!(cfg.backend, BackendKind::ArkTelnet | BackendKind::Arklet);
    let jvm_expected = cfg.base_pid.is_some() || cfg.base_main_class.is_some() || base_jvm_backend;

    let health_cfg = HealthConfig {
        pid: cfg.base_pid,
        main_class_pattern: cfg.base_main_class.clone(),
        attach: !cfg.no_attach,
        base_name: cfg.base_name.clone(),
        base_version: cfg.base_version.clone(),
        // No base JVM expected: the agent is the base, and any JVM it could find (a module
        // process, an unrelated one on the host) must be neither read nor attached to.
        track_jvm: jvm_expected,
        down_grace: cfg.jvm_down_grace,
        ..HealthConfig::default()
    };
    let sampler = HealthSampler::new(health_cfg);
    {
        let (s, c) = (sampler.clone(), cancel.child_token());
        tasks.spawn(async move { s.run(c).await });
    }
    let source = Arc::new(SamplerSource {
        sampler: sampler.clone(),
        jvm_expected,
        base_name: cfg.base_name.clone(),
        base_version: cfg.base_version.clone(),
    });
    let probe_source = Arc::clone(&source);
    let engine = Engine::new(
        backend,
        store,
        EngineConfig {
            base_identity: identity.clone(),
            activation: cfg.activation.into(),
            keep_failed: cfg.keep_failed,
            master_biz_name: Some(cfg.base_name.clone()),
            retention: Retention {
                max_records: cfg.ops_max_records,
                max_age_ms: cfg.ops_max_age.as_millis() as i64,
            },
            state_file: Some(cfg.work_dir.join("state.json")),
            allow_jvm_option_envs: cfg.allow_jvm_option_envs,
        },
        Arc::new(move || probe_source.metaspace_used()),
    );
    let service = CommandService::new(engine.clone(), source.clone());

    {
        let (engine, c) = (engine.clone(), cancel.child_token());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = c.cancelled() => break,
                    ev = events_rx.recv() => match ev {
                        Some(ev) => engine.on_backend_event(ev),
                        None => break,
                    },
                }
            }
        });
    }

    if base_jvm_backend {
        // The base usually starts after the agent and takes a while: adopt its modules (and
        // then restore) in the background, so the API and health are served meanwhile.
        let (engine, c) = (engine.clone(), cancel.child_token());
        tasks.spawn(async move {
            tokio::select! {
                _ = c.cancelled() => {}
                _ = async {
                    adopt(&engine).await;
                    crate::restore::restore(&engine).await;
                } => {}
            }
        });
    } else {
        adopt(&engine).await;
        let engine = engine.clone();
        tasks.spawn(async move { crate::restore::restore(&engine).await });
    }

    let ready_with_all_biz = cfg.ready_with_all_biz;
    let ready_requires_jvm = cfg.ready_requires_jvm;
    let (ready_engine, ready_sampler) = (engine.clone(), sampler.clone());
    let readiness = Arc::new(move || {
        let mut reasons = Vec::new();
        if ready_requires_jvm {
            let h = ready_sampler.latest();
            // Found, alive and making progress: a hung JVM (clock counter stopped) serves
            // nothing either.
            if !h.healthy {
                reasons.push(h.problem.unwrap_or_else(|| "base JVM not found".into()));
            }
        }
        if ready_with_all_biz {
            for m in ready_engine.modules() {
                if m.state != BizState::Activated {
                    reasons.push(format!("module {} is {}", m.key, m.state));
                }
            }
        }
        Readiness {
            ready: reasons.is_empty(),
            reasons,
        }
    });
    let state = HttpState {
        service: service.clone(),
        token: cfg.api_token.clone(),
        readiness,
        base_log: cfg.base_log_file.clone(),
    };
    let addr = cfg.listen();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    {
        let c = cancel.child_token();
        let app = crate::http::router(state);
        tasks.spawn(async move {
            let res = axum::serve(listener, app)
                .with_graceful_shutdown(c.cancelled_owned())
                .await;
            if let Err(e) = res {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
    }
    tracing::info!(%addr, "Arklet HTTP API listening");
    tunnels.spawn(addr.port(), &service, &tasks, &cancel);
    Ok(Agent {
        addr,
        service,
        cancel,
        tasks,
    })
}

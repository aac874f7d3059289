//! The command service: the one place Arklet commands are decoded, validated, locked and run.
//! HTTP and MQTT are two front doors to it; they differ only in how they encode an
//! [`Outcome`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use koupleless_protocol::command::UnknownCommand;
use koupleless_protocol::lenient::{self, DecodeError, LenientRequest};
use koupleless_protocol::{
    ArkResultCode, BatchInstallBizRequest, BatchInstallResponse, BizInfo, BizOpRequest,
    ClientResponse, CommandId, CommandModel, ErrorCode, Health, HealthRequest, InstallBizRequest,
    InstallStrategy, ProcessRecord, QueryBizOpsRequest,
};
use serde::Serialize;

use crate::backend::{BizKey, RuntimeBackend};
use crate::engine::{
    self, Engine, InstallError, SwitchOutcome, UninstallOutcome, backend_error_code, broken_model,
    now_ms,
};
use crate::health_cmd::{self, HealthFailure, HealthInputs, HealthSource};
use crate::package::Package;

/// Command output data, serialized as the bare value.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Data {
    /// `help`.
    Commands(Vec<CommandModel>),
    /// install / uninstall / switch.
    Client(ClientResponse),
    /// batchInstallBiz.
    Batch(BatchInstallResponse),
    /// queryAllBiz.
    Bizs(Vec<BizInfo>),
    /// health.
    Health(Box<Health>),
    /// Async record.
    Record(Box<ProcessRecord>),
}

/// What a command produced, independent of the transport.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// `SUCCESS`.
    Success(Data),
    /// `FAILED`, with optional data.
    Failed {
        /// Envelope message.
        message: String,
        /// Data, if the command attached some.
        data: Option<Data>,
        /// Two-level code.
        code: ErrorCode,
    },
    /// `CMD_PROCESS_INTERNAL_ERROR`: validation failures and thrown errors.
    Internal {
        /// The text after `Internal Error: `.
        message: String,
        /// Two-level code.
        code: ErrorCode,
    },
    /// `CMD_NOT_FOUND`.
    NotFound(String),
}

impl Outcome {
    fn internal(message: impl Into<String>, code: ErrorCode) -> Outcome {
        Outcome::Internal {
            message: message.into(),
            code,
        }
    }

    fn invalid(message: impl Into<String>) -> Outcome {
        Outcome::internal(message, ErrorCode::InvalidParameter)
    }

    /// `true` for `SUCCESS`.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success(_))
    }
}

/// The conflict text upstream returns for a busy module, `FAILED:` prefix included.
pub fn conflict_message(key: &str, cmd: CommandId, running: CommandId) -> String {
    format!("FAILED:{key} {cmd} conflict, exist unfinished command({running}) for this biz")
}

/// Upstream's async-record conflict text.
pub const ASYNC_CONFLICT: &str = "command conflict, exist unfinished command for this biz";

fn blank(s: &Option<String>) -> bool {
    s.as_deref().is_none_or(|s| s.trim().is_empty())
}

/// `installBiz` validation, in upstream order (spec §2.4.2). Pure.
pub fn validate_install(req: &InstallBizRequest, check_async: bool) -> Result<(), &'static str> {
    if check_async && req.r#async && blank(&req.request_id) {
        return Err("requestId should not be blank when async is true");
    }
    if blank(&req.biz_url) {
        return Err("bizUrl should not be blank");
    }
    if blank(&req.biz_name) != blank(&req.biz_version) {
        return Err("bizName and bizVersion should be both blank or both not blank.");
    }
    Ok(())
}

/// `uninstallBiz`/`switchBiz` validation. Pure.
pub fn validate_biz_op(req: &BizOpRequest) -> Result<BizKey, &'static str> {
    if blank(&req.biz_name) {
        return Err("bizName should not be blank");
    }
    if blank(&req.biz_version) {
        return Err("bizVersion should not be blank");
    }
    if req.r#async && blank(&req.request_id) {
        return Err("requestId should not be blank when async is true");
    }
    Ok(BizKey::new(
        req.biz_name.clone().unwrap_or_default(),
        req.biz_version.clone().unwrap_or_default(),
    ))
}

/// A request body parsed once: `None` is the Java "null input" (empty body or `null`).
pub type Body = Option<serde_json::Value>;

/// Parses a raw body. Upstream parses every body before dispatch, so malformed JSON or a
/// non-object fails every command, `help` included (where upstream never answers, we do).
pub fn parse_body(body: &[u8]) -> Result<Body, Outcome> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        Outcome::internal(
            DecodeError::Syntax(e.to_string()).to_string(),
            ErrorCode::InvalidRequest,
        )
    })?;
    match v {
        serde_json::Value::Null => Ok(None),
        v @ serde_json::Value::Object(_) => Ok(Some(v)),
        other => {
            let kind = match other {
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Number(_) => "a number",
                _ => "a boolean",
            };
            Err(Outcome::internal(
                DecodeError::NotAnObject(kind).to_string(),
                ErrorCode::InvalidRequest,
            ))
        }
    }
}

/// Decodes a parsed body into a request type, mapping failures to upstream-shaped outcomes.
fn decode<T: LenientRequest>(body: &Body) -> Result<Option<T>, Outcome> {
    let Some(v) = body else { return Ok(None) };
    lenient::decode_value::<T>(v.clone()).map_err(|e| Outcome::invalid(e.to_string()))
}

/// The command service. Cheap to clone.
pub struct CommandService<B> {
    engine: Engine<B>,
    health: Arc<dyn HealthSource>,
}

impl<B> Clone for CommandService<B> {
    fn clone(&self) -> Self {
        CommandService {
            engine: self.engine.clone(),
            health: Arc::clone(&self.health),
        }
    }
}

impl<B: RuntimeBackend> CommandService<B> {
    /// Builds the service.
    pub fn new(engine: Engine<B>, health: Arc<dyn HealthSource>) -> Self {
        CommandService { engine, health }
    }

    /// The engine behind it.
    pub fn engine(&self) -> &Engine<B> {
        &self.engine
    }

    /// The health source.
    pub fn health_source(&self) -> &Arc<dyn HealthSource> {
        &self.health
    }

    /// The base identity reported in envelopes.
    pub fn base_identity(&self) -> &str {
        &self.engine.config().base_identity
    }

    /// Runs the command named `id` with a raw request body.
    pub async fn execute(&self, id: &str, body: &[u8]) -> Outcome {
        let cmd = match id.parse::<CommandId>() {
            Ok(cmd) => cmd,
            Err(UnknownCommand(id)) => return Outcome::NotFound(id),
        };
        self.run(cmd, body).await
    }

    /// Runs a known command with a raw request body.
    pub async fn run(&self, cmd: CommandId, body: &[u8]) -> Outcome {
        match parse_body(body) {
            Ok(body) => self.run_body(cmd, &body).await,
            Err(o) => o,
        }
    }

    /// Runs a known command with an already parsed body.
    #[tracing::instrument(skip_all, fields(cmd = %cmd))]
    pub async fn run_body(&self, cmd: CommandId, body: &Body) -> Outcome {
        let out = match cmd {
            CommandId::Help => Outcome::Success(Data::Commands(
                CommandId::ALL
                    .into_iter()
                    .map(|c| CommandModel {
                        desc: c.desc().into(),
                        id: c.as_str().into(),
                    })
                    .collect(),
            )),
            CommandId::QueryAllBiz => Outcome::Success(Data::Bizs(self.list())),
            CommandId::Health => self.health_cmd(body),
            CommandId::QueryBizOps => self.query_biz_ops(body),
            CommandId::InstallBiz => self.install_cmd(body).await,
            CommandId::UninstallBiz | CommandId::SwitchBiz => self.biz_op_cmd(cmd, body).await,
            CommandId::BatchInstallBiz => self.batch_cmd(body).await,
        };
        match &out {
            Outcome::Success(_) => tracing::debug!("command succeeded"),
            Outcome::Failed { message, .. } => tracing::info!(%message, "command failed"),
            Outcome::Internal { message, .. } => {
                tracing::warn!(%message, "command rejected or errored")
            }
            Outcome::NotFound(_) => {}
        }
        out
    }

    /// queryAllBiz data: every registered module except the base's own biz.
    pub fn list(&self) -> Vec<BizInfo> {
        let master = self.engine.config().master_biz_name.as_deref();
        self.engine
            .modules()
            .iter()
            .filter(|m| Some(m.key.name.as_str()) != master)
            .map(|m| m.info())
            .collect()
    }

    fn health_cmd(&self, body: &Body) -> Outcome {
        let req = match decode::<HealthRequest>(body) {
            Ok(r) => r.unwrap_or_default(),
            Err(o) => return o,
        };
        let sample = self.health.sample();
        let inputs = HealthInputs {
            jvm: sample.jvm,
            cpu: sample.cpu,
            master: sample.master,
            bizs: self.engine.modules().iter().map(|m| m.health()).collect(),
            plugins: Vec::new(),
        };
        match health_cmd::compose(&req, inputs) {
            Ok(health_data) => Outcome::Success(Data::Health(Box::new(Health { health_data }))),
            Err(HealthFailure::Invalid(m)) => Outcome::invalid(m),
            Err(HealthFailure::Failed(m)) => Outcome::Failed {
                message: m,
                data: None,
                code: ErrorCode::NoMatchedBiz,
            },
        }
    }

    fn query_biz_ops(&self, body: &Body) -> Outcome {
        let req = match decode::<QueryBizOpsRequest>(body) {
            Ok(Some(r)) => r,
            Ok(None) => return Outcome::invalid("request is null"),
            Err(o) => return o,
        };
        let Some(id) = req.request_id.filter(|s| !s.trim().is_empty()) else {
            return Outcome::invalid("requestId is blank");
        };
        match self.engine.with_ops(|t| t.get(&id, now_ms())) {
            Some(rec) => Outcome::Success(Data::Record(Box::new(rec))),
            None => Outcome::Failed {
                message: "Not found the corresponding ops record.".into(),
                data: None,
                code: ErrorCode::InvalidParameter,
            },
        }
    }

    /// Runs `work` under the lock `lock`, synchronously or as an async operation record.
    async fn biz_op<F, Fut>(
        &self,
        cmd: CommandId,
        lock: engine::LockScope,
        async_request: Option<(String, serde_json::Value)>,
        work: F,
    ) -> Outcome
    where
        F: FnOnce(CommandService<B>) -> Fut + Send + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let Some((rid, meta)) = async_request else {
            let _guard = match self.engine.try_lock_scope(&lock, cmd) {
                Ok(g) => g,
                Err(running) => {
                    return Outcome::Failed {
                        message: conflict_message(&lock.key, cmd, running),
                        data: None,
                        code: ErrorCode::InstallBizExecuting,
                    };
                }
            };
            return work(self.clone()).await;
        };
        let worker = self.engine.next_worker_name();
        let record = match self
            .engine
            .with_ops(|t| t.create(&rid, meta, worker, now_ms()))
        {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Failed {
                    message: e.to_string(),
                    data: None,
                    code: ErrorCode::InvalidRequest,
                };
            }
        };
        let svc = self.clone();
        self.engine.tasks().spawn(async move {
            let engine = svc.engine.clone();
            let guard = match engine.try_lock_scope(&lock, cmd) {
                Ok(g) => g,
                Err(_) => {
                    let err = (ASYNC_CONFLICT.to_owned(), ErrorCode::InstallBizExecuting);
                    engine.with_ops(|t| t.finish(&rid, Err(err), now_ms()));
                    return;
                }
            };
            engine.with_ops(|t| t.executing(&rid));
            let out = work(svc).await;
            drop(guard);
            let result = match out {
                Outcome::Success(_) => Ok(()),
                Outcome::Failed { message, code, .. } | Outcome::Internal { message, code } => {
                    Err((message, code))
                }
                Outcome::NotFound(id) => Err((id, ErrorCode::InvalidRequest)),
            };
            engine.with_ops(|t| t.finish(&rid, result, now_ms()));
        });
        Outcome::Success(Data::Record(Box::new(record)))
    }

    async fn install_cmd(&self, body: &Body) -> Outcome {
        let mut req = match decode::<InstallBizRequest>(body) {
            Ok(r) => r.unwrap_or_default(),
            Err(o) => return o,
        };
        if let Err(m) = validate_install(&req, true) {
            return Outcome::invalid(m);
        }
        if let Some(envs) = &req.envs
            && let Err(e) = engine::check_envs(envs, self.engine.config().allow_jvm_option_envs)
        {
            return Outcome::invalid(e.to_string());
        }
        // Without name/version the identity comes from the package, fetched once here and
        // reused for the install (upstream fetches up to three times).
        let mut prefetched = None;
        if blank(&req.biz_name) {
            let url = req.biz_url.clone().unwrap_or_default();
            match self.engine.store().fetch(&url).await {
                Ok(pkg) => {
                    tracing::warn!(url, biz = %pkg.key, "installBiz without bizName/bizVersion; using the package manifest");
                    req.biz_name = Some(pkg.key.name.clone());
                    req.biz_version = Some(pkg.key.version.clone());
                    prefetched = Some(pkg);
                }
                Err(e) => {
                    return Outcome::internal(
                        format!("refresh biz info from jar failed: {e}"),
                        e.error_code(),
                    );
                }
            }
        }
        let key = engine::lock_key(req.biz_name.as_deref(), req.biz_version.as_deref());
        // uninstallThenInstall removes every version of the name: lock them all.
        let lock = if req.strategy() == InstallStrategy::UninstallThenInstall {
            engine::LockScope::name(req.biz_name.clone().unwrap_or_default(), key)
        } else {
            engine::LockScope::key(key)
        };
        let async_request = req.r#async.then(|| {
            let mut meta = req.clone();
            meta.install_strategy = Some(req.strategy().as_str().into());
            (
                req.request_id.clone().unwrap_or_default(),
                serde_json::to_value(&meta).unwrap_or_default(),
            )
        });
        let store = self.engine.store().clone();
        let leftover = prefetched.clone();
        let out = self
            .biz_op(
                CommandId::InstallBiz,
                lock,
                async_request,
                move |svc| async move { svc.install_one(&req, prefetched).await },
            )
            .await;
        // A sync conflict or duplicate request id never reached the install: drop the
        // prefetched jar so nothing is left behind.
        if let (Some(pkg), Outcome::Failed { data: None, .. }) = (&leftover, &out) {
            store.remove(pkg);
        }
        out
    }

    /// One install, strategy included; the caller holds the lock. The package is fetched and
    /// validated first, so a bad URL or jar leaves every installed version running; only then
    /// does `uninstallThenInstall` remove the old versions.
    async fn install_one(&self, req: &InstallBizRequest, prefetched: Option<Package>) -> Outcome {
        let before = self.engine.metaspace_used();
        let pkg = match prefetched {
            Some(p) => p,
            None => match self
                .engine
                .store()
                .fetch(req.biz_url.as_deref().unwrap_or(""))
                .await
            {
                Ok(p) => p,
                Err(e) => return Outcome::internal(e.to_string(), e.error_code()),
            },
        };
        // The lock taken is the request's name:version (or name); installing the package
        // under another identity would escape it.
        if let Some(message) = identity_mismatch(req, &pkg) {
            self.engine.store().remove(&pkg);
            return Outcome::invalid(message);
        }
        if req.strategy() == InstallStrategy::UninstallThenInstall {
            for key in self.engine.versions_of(&pkg.key.name) {
                let outcome = self.engine.uninstall(&key).await;
                tracing::info!(biz = %key, ?outcome, "uninstallThenInstall: removed old version");
                if let UninstallOutcome::StopFailed(e) = outcome {
                    self.engine.store().remove(&pkg);
                    return Outcome::internal(
                        format!("uninstallThenInstall: uninstall of {key} failed: {e}"),
                        backend_error_code(&e, false),
                    );
                }
            }
        }
        let result = self
            .engine
            .install(
                pkg,
                req.args.clone().unwrap_or_default(),
                req.envs.clone().unwrap_or_default(),
            )
            .await;
        let elapsed_space = self.engine.metaspace_used() - before;
        match result {
            Ok(inst) => Outcome::Success(Data::Client(ClientResponse {
                message: format!(
                    "Install Biz: {} success, cost: {} ms, started at: {}",
                    inst.model.identity.clone().unwrap_or_default(),
                    inst.cost_ms,
                    inst.started_at
                ),
                biz_infos: Some(vec![inst.model]),
                code: ArkResultCode::Success,
                elapsed_space: Some(elapsed_space),
            })),
            Err(e @ InstallError::Repeat(_)) => Outcome::Failed {
                message: "install biz not success!".into(),
                data: Some(Data::Client(ClientResponse {
                    biz_infos: None,
                    code: ArkResultCode::RepeatBiz,
                    elapsed_space: Some(elapsed_space),
                    message: e.to_string(),
                })),
                code: ErrorCode::InstallBizFailed,
            },
            Err(e) => Outcome::internal(e.to_string(), e.error_code()),
        }
    }

    async fn biz_op_cmd(&self, cmd: CommandId, body: &Body) -> Outcome {
        let req = match decode::<BizOpRequest>(body) {
            Ok(r) => r.unwrap_or_default(),
            Err(o) => return o,
        };
        let key = match validate_biz_op(&req) {
            Ok(k) => k,
            Err(m) => return Outcome::invalid(m),
        };
        let lock = engine::LockScope::key(key.to_string());
        let async_request = req.r#async.then(|| {
            (
                req.request_id.clone().unwrap_or_default(),
                serde_json::to_value(&req).unwrap_or_default(),
            )
        });
        self.biz_op(cmd, lock, async_request, move |svc| async move {
            if cmd == CommandId::SwitchBiz {
                svc.switch_one(&key).await
            } else {
                svc.uninstall_one(&key).await
            }
        })
        .await
    }

    async fn uninstall_one(&self, key: &BizKey) -> Outcome {
        let failed =
            |code, message, ec| client_failed("uninstall biz not success!", code, message, ec);
        match self.engine.uninstall(key).await {
            UninstallOutcome::Removed => Outcome::Success(Data::Client(ClientResponse {
                biz_infos: None,
                code: ArkResultCode::Success,
                elapsed_space: None,
                message: format!("Uninstall biz: {key} success."),
            })),
            UninstallOutcome::NotFound => failed(
                ArkResultCode::NotFoundBiz,
                format!("Uninstall biz: {key} not found."),
                ErrorCode::NoMatchedBiz,
            ),
            UninstallOutcome::Master => failed(
                ArkResultCode::Failed,
                "Master biz must not be uninstalled.".into(),
                ErrorCode::UnInstallationRequirementNotMet,
            ),
            UninstallOutcome::StopFailed(e) => Outcome::internal(
                format!("uninstall of {key} failed: {e}"),
                backend_error_code(&e, false),
            ),
        }
    }

    async fn switch_one(&self, key: &BizKey) -> Outcome {
        let failed =
            |code, message, ec| client_failed("switch biz not success!", code, message, ec);
        match self.engine.switch(key).await {
            SwitchOutcome::Activated => Outcome::Success(Data::Client(ClientResponse {
                biz_infos: None,
                code: ArkResultCode::Success,
                elapsed_space: None,
                message: format!("Switch biz: {key} is activated."),
            })),
            SwitchOutcome::NotFound => failed(
                ArkResultCode::NotFoundBiz,
                format!("Switch biz: {key} not found."),
                ErrorCode::NoMatchedBiz,
            ),
            SwitchOutcome::IllegalState(s) => failed(
                ArkResultCode::IllegalStateBiz,
                format!("Switch Biz: {key}'s state must not be {s}."),
                ErrorCode::InvalidRequest,
            ),
            SwitchOutcome::Failed(m) => failed(ArkResultCode::Failed, m, ErrorCode::UnknownError),
        }
    }

    async fn batch_cmd(&self, body: &Body) -> Outcome {
        let req = match decode::<BatchInstallBizRequest>(body) {
            Ok(r) => r.unwrap_or_default(),
            Err(o) => return o,
        };
        if req.r#async && blank(&req.request_id) {
            return Outcome::invalid("requestId should not be blank when async is true");
        }
        let Some(items) = req.biz_list.clone() else {
            return Outcome::invalid("bizList is null");
        };
        for item in &items {
            if let Err(m) = validate_install(item, false) {
                return Outcome::invalid(m);
            }
            if let Some(envs) = &item.envs
                && let Err(e) = engine::check_envs(envs, self.engine.config().allow_jvm_option_envs)
            {
                return Outcome::invalid(e.to_string());
            }
        }
        let lock = engine::LockScope::key(engine::lock_key(
            req.biz_name.as_deref(),
            req.biz_version.as_deref(),
        ));
        let async_request = req.r#async.then(|| {
            (
                req.request_id.clone().unwrap_or_default(),
                serde_json::to_value(&req).unwrap_or_default(),
            )
        });
        self.biz_op(
            CommandId::BatchInstallBiz,
            lock,
            async_request,
            move |svc| async move { svc.batch_install(items).await },
        )
        .await
    }

    /// Batch install: fetch every package once, group by manifest priority ascending, run each
    /// group concurrently; a failure never stops later groups.
    pub async fn batch_install(&self, items: Vec<InstallBizRequest>) -> Outcome {
        let before = self.engine.metaspace_used();
        let store = self.engine.store().clone();
        let fetched = futures::future::join_all(items.into_iter().map(|item| {
            let store = store.clone();
            async move {
                let url = item.biz_url.clone().unwrap_or_default();
                let r = store.fetch(&url).await;
                (item, r)
            }
        }))
        .await;
        let mut responses: BTreeMap<String, ClientResponse> = BTreeMap::new();
        let mut groups: BTreeMap<i32, Vec<(InstallBizRequest, Package)>> = BTreeMap::new();
        for (item, r) in fetched {
            let url = item.biz_url.clone().unwrap_or_default();
            match r {
                Ok(pkg) => groups.entry(pkg.priority).or_default().push((item, pkg)),
                Err(e) => {
                    let name = item.biz_name.clone().unwrap_or_default();
                    let version = item.biz_version.clone().unwrap_or_default();
                    responses.insert(url, item_failure(&name, &version, &e.to_string()));
                }
            }
        }
        for (priority, group) in groups {
            tracing::info!(
                priority,
                items = group.len(),
                "batch install: starting group"
            );
            let results = futures::future::join_all(group.into_iter().map(|(item, pkg)| {
                let svc = self.clone();
                async move {
                    let url = item.biz_url.clone().unwrap_or_default();
                    (url, svc.batch_item(item, pkg).await)
                }
            }))
            .await;
            responses.extend(results);
        }
        let all_ok = responses.values().all(|r| r.code == ArkResultCode::Success);
        let data = BatchInstallResponse {
            biz_url_to_response: Some(responses),
            code: if all_ok {
                ArkResultCode::Success
            } else {
                ArkResultCode::Failed
            },
            elapsed_space: Some(self.engine.metaspace_used() - before),
            message: if all_ok {
                "batch install success"
            } else {
                "batch install failed"
            }
            .into(),
        };
        if all_ok {
            Outcome::Success(Data::Batch(data))
        } else {
            Outcome::Failed {
                message: "install biz not success!".into(),
                data: Some(Data::Batch(data)),
                code: ErrorCode::InstallBizFailed,
            }
        }
    }

    /// One batch item. Unlike upstream, items take their own module lock, and every
    /// non-success entry still carries a `bizInfos` element (trap T15): the module as it
    /// is for `REPEAT_BIZ`, a `broken` stand-in otherwise.
    async fn batch_item(&self, item: InstallBizRequest, pkg: Package) -> ClientResponse {
        let key = pkg.key.clone();
        let _guard = match self.engine.try_lock(key.to_string(), CommandId::InstallBiz) {
            Ok(g) => g,
            Err(running) => {
                self.engine.store().remove(&pkg);
                return item_failure(
                    &key.name,
                    &key.version,
                    &conflict_message(&key.to_string(), CommandId::BatchInstallBiz, running),
                );
            }
        };
        // Batch entries are plain sofa-ark `ClientResponse`s: the metaspace delta is reported
        // once for the whole batch.
        match self.install_one(&item, Some(pkg)).await {
            Outcome::Success(Data::Client(mut r)) => {
                r.elapsed_space = None;
                r
            }
            Outcome::Failed {
                data: Some(Data::Client(mut r)),
                ..
            } => {
                r.elapsed_space = None;
                let current = self.engine.module(&key).map(|m| m.model());
                r.biz_infos = Some(vec![
                    current.unwrap_or_else(|| broken_model(&key.name, &key.version)),
                ]);
                r
            }
            Outcome::Internal { message, .. } | Outcome::Failed { message, .. } => {
                item_failure(&key.name, &key.version, &message)
            }
            other => item_failure(&key.name, &key.version, &format!("{other:?}")),
        }
    }
}

/// Why a package may not be installed for `req`: the request names an identity
/// (`bizName`/`bizVersion`) other than the package manifest's (`Ark-Biz-Name`/
/// `Ark-Biz-Version`). The Java Arklet installs such a package under the manifest identity
/// while the controller tracks the requested one; we refuse it. `None` when they agree or
/// the request names none. Pure.
pub fn identity_mismatch(req: &InstallBizRequest, pkg: &Package) -> Option<String> {
    let (name, version) = (req.biz_name.as_deref()?, req.biz_version.as_deref()?);
    if name.trim().is_empty() || (name, version) == (&pkg.key.name[..], &pkg.key.version[..]) {
        return None;
    }
    Some(format!(
        "bizName:bizVersion {name}:{version} of the request does not match the package {} (Ark-Biz-Name:Ark-Biz-Version in its manifest is {})",
        pkg.url, pkg.key
    ))
}

/// `FAILED` with a sofa-ark `ClientResponse` as data (`{code, message}`), as uninstall and switch
/// report their refusals.
fn client_failed(
    envelope_message: &str,
    code: ArkResultCode,
    message: String,
    error_code: ErrorCode,
) -> Outcome {
    Outcome::Failed {
        message: envelope_message.into(),
        data: Some(Data::Client(ClientResponse {
            biz_infos: None,
            code,
            elapsed_space: None,
            message,
        })),
        code: error_code,
    }
}

fn item_failure(name: &str, version: &str, message: &str) -> ClientResponse {
    ClientResponse {
        biz_infos: Some(vec![broken_model(name, version)]),
        code: ArkResultCode::Failed,
        elapsed_space: None,
        message: format!("internal exception: {message}"),
    }
}

impl Outcome {
    /// The HTTP envelope (spec §2.2). Internal errors carry no `baseIdentity`; the stack trace
    /// field holds our error chain, since there is no Java stack to show.
    pub fn into_response(self, base_identity: &str) -> koupleless_protocol::Response<Data> {
        use koupleless_protocol::Response;
        match self {
            Outcome::Success(d) => Response::success(base_identity, d),
            Outcome::Failed {
                message,
                data,
                code,
            } => Response::failed(base_identity, message, data, code),
            Outcome::Internal { message, code } => {
                let stack = format!("koupleless-agent error ({code}): {message}");
                Response::internal_error(&message, code, stack)
            }
            Outcome::NotFound(_) => Response::not_found(),
        }
    }

    /// The Arklet `Output` as MQTT replies carry it (spec §5.6): an internal error becomes
    /// `FAILED` with `data = {code: FAILED, message: <detail>}`, as the Java tunnel publishes
    /// a thrown exception.
    pub fn into_output(self) -> koupleless_protocol::Output<Data> {
        use koupleless_protocol::{Output, ResponseCode};
        match self {
            Outcome::Success(d) => Output {
                code: ResponseCode::Success,
                data: Some(d),
                error_code: None,
                message: None,
            },
            Outcome::Failed {
                message,
                data,
                code,
            } => Output {
                code: ResponseCode::Failed,
                data,
                error_code: Some(code),
                message: Some(message),
            },
            Outcome::Internal { message, code } => Output {
                code: ResponseCode::Failed,
                data: Some(Data::Client(ClientResponse {
                    biz_infos: None,
                    code: ArkResultCode::Failed,
                    elapsed_space: None,
                    message: message.clone(),
                })),
                error_code: Some(code),
                message: Some(message),
            },
            Outcome::NotFound(id) => Output {
                code: ResponseCode::Failed,
                data: None,
                error_code: Some(ErrorCode::InvalidRequest),
                message: Some(format!("{id} not found handler")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(
        url: Option<&str>,
        name: Option<&str>,
        version: Option<&str>,
        is_async: bool,
        rid: Option<&str>,
    ) -> InstallBizRequest {
        InstallBizRequest {
            biz_url: url.map(Into::into),
            biz_name: name.map(Into::into),
            biz_version: version.map(Into::into),
            r#async: is_async,
            request_id: rid.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn install_validation_table() {
        let cases = [
            (
                install(Some("file:///a"), Some("a"), Some("1"), false, None),
                Ok(()),
            ),
            (install(Some("file:///a"), None, None, false, None), Ok(())),
            (
                install(Some("u"), Some("a"), Some("1"), true, None),
                Err("requestId should not be blank when async is true"),
            ),
            (
                install(None, Some("a"), Some("1"), true, None),
                Err("requestId should not be blank when async is true"),
            ),
            (
                install(Some(" "), Some("a"), Some("1"), false, None),
                Err("bizUrl should not be blank"),
            ),
            (
                install(Some("u"), Some("a"), None, false, None),
                Err("bizName and bizVersion should be both blank or both not blank."),
            ),
            (
                install(Some("u"), None, Some("1"), true, Some("r")),
                Err("bizName and bizVersion should be both blank or both not blank."),
            ),
        ];
        for (req, want) in cases {
            assert_eq!(validate_install(&req, true), want, "{req:?}");
        }
    }

    #[test]
    fn biz_op_validation_table() {
        let r = |n: Option<&str>, v: Option<&str>, a: bool| BizOpRequest {
            biz_name: n.map(Into::into),
            biz_version: v.map(Into::into),
            r#async: a,
            request_id: None,
        };
        assert_eq!(
            validate_biz_op(&r(Some("a"), Some("1"), false)),
            Ok(BizKey::new("a", "1"))
        );
        assert_eq!(
            validate_biz_op(&r(None, Some("1"), false)),
            Err("bizName should not be blank")
        );
        assert_eq!(
            validate_biz_op(&r(Some("a"), Some(""), false)),
            Err("bizVersion should not be blank")
        );
        assert_eq!(
            validate_biz_op(&r(Some("a"), Some("1"), true)),
            Err("requestId should not be blank when async is true")
        );
    }

    #[test]
    fn conflict_text_matches_upstream() {
        assert_eq!(
            conflict_message("biz1:0.0.1", CommandId::InstallBiz, CommandId::InstallBiz),
            "FAILED:biz1:0.0.1 installBiz conflict, exist unfinished command(installBiz) for this biz"
        );
        assert_eq!(engine::lock_key(None, None), "null:null");
    }
}

//! The `ark-telnet` runtime backend: drives SOFAArk's built-in telnet command port (default
//! 1234, prompt `sofa-ark>`), present in every Koupleless base, so modules are installed,
//! uninstalled, switched and listed with nothing added inside the base JVM. The protocol, its
//! traps and the client algorithm followed here are in spec `ark-telnet.md` (§ numbers below
//! refer to it).
//!
//! # What the port can and cannot say
//!
//! `biz -i`, `biz -u` and `biz -o` only acknowledge that a task was queued; `biz -a` is the
//! only feedback (§2.8, §4.8). Every operation is therefore: a pre-flight `biz -a`, the
//! command, then `biz -a` on a [`PollSchedule`] (first after [`ArkTelnetConfig::poll_first`],
//! growing up to [`ArkTelnetConfig::poll_interval`]) until the module is
//! `activated`/`deactivated` (done), `broken` or gone (failed), or a deadline passes (timed
//! out). Failure reasons exist only in the base's Ark logs (§4.9), so failures say exactly
//! what was observed and point there; nothing is invented.
//!
//! * **Install** sends `biz -i file:///…` for the package the agent has already fetched and
//!   validated (identity from its manifest, §4.4 step 1), under the path the base sees it
//!   ([`ArkTelnetConfig::package_dir_in_base`], for a shared volume mounted elsewhere). It
//!   must be listed within [`ArkTelnetConfig::register_timeout`] (else: download/unpack failed,
//!   the base cannot read the path, or the copy is slow; the port cannot tell) and started
//!   within [`ArkTelnetConfig::start_timeout`]. A `broken` module is followed until SOFAArk's
//!   auto-uninstall removes it, so the next install does not hit the gate (§4.4 step 6).
//! * **Already there.** If the identity is already started in the base (installed by another
//!   client), a second `biz -i` would be dropped silently (§2.5.2 step 5), so the backend
//!   *adopts* the running module and reports success without installing the package again:
//!   identity is SOFAArk's contract, as for its own `REPEAT_BIZ`. If it is starting, the
//!   backend waits for it.
//! * **Given up on.** SOFAArk cannot cancel a copy or a start (§4.4 step 6), so a module whose
//!   install timed out may still appear or finish later. The backend remembers it and removes
//!   it (`biz -u`) once it is listed in a state that allows that, since the engine has
//!   recorded the install as failed.
//! * **Uninstall** waits out `resolved` (a `-u` then is ignored, §2.6), sends `biz -u` and
//!   polls until the identity is gone; not listed at all is [`BackendError::NotFound`].
//! * **Switch** sends `biz -o` and polls until the target is `activated` (§4.6).
//!
//! # One operation at a time
//!
//! The port runs asynchronous commands in parallel and its install gate does not cover
//! downloads (§2.5.4), so the backend runs one operation at a time per base; the engine keeps
//! answering queries from its own state meanwhile. Operations wait for the base (connection,
//! start-up window B, another client's `resolved` module blocking the gate) up to
//! [`ArkTelnetConfig::base_wait`].
//!
//! # The connection
//!
//! One task owns one connection ([`driver`]). It connects only once the readiness gate
//! ([`ReadyGate`]) passes, because connecting in the instant after the port opens breaks it
//! until the JVM restarts (§1.7); it reconnects with backoff, and every read has a deadline
//! (some inputs get no reply at all). A port that accepts and closes without a greeting is
//! reported as broken at once, and retried only every [`ArkTelnetConfig::reconnect_max`].
//!
//! # Watching the base
//!
//! Every [`ArkTelnetConfig::monitor_interval`], when no operation runs, a `biz -a` checks the
//! modules this backend knows (started or adopted): one that is no longer listed (uninstalled
//! by another client, or the base JVM restarted) is reported as [`BackendEvent::Exited`].
//!
//! # Start-up and shutdown
//!
//! [`ArkTelnetBackend::discover`] waits for the base (no deadline: run it in the background)
//! and returns the modules it already runs (static merge deployment), the base's own biz left
//! out (main class `embed main`, §1.4, or the configured base name). [`ArkTelnetBackend::shutdown`]
//! stops the connection and the monitor and awaits them; it uninstalls nothing, because the
//! modules belong to the base JVM, which outlives the agent (an agent restart must not take
//! modules down).

pub mod conn;
pub mod driver;
pub mod gate;
pub mod proto;
pub mod watch;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use koupleless_protocol::BizState;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{
    BackendError, BackendEvent, BizKey, Discovered, RuntimeBackend, StartRequest, Started,
};
pub use conn::TelnetError;
use driver::{CommandFailure, DriverSettings, Request};
pub use gate::{GateParseError, ReadyGate};
use proto::{Ack, AsyncOp, ListError, Listing};
pub use watch::PollSchedule;
use watch::{
    InstallPre, InstallWatch, Observed, Orphan, OrphanAction, Stage, StopPre, SwitchPre, Verdict,
};

/// Settings of the ark-telnet backend. Every deadline is configurable so tests run in seconds.
#[derive(Clone, Debug)]
pub struct ArkTelnetConfig {
    /// `host:port` of the telnet port. Use `127.0.0.1`, not `localhost` (§4.2 step 2).
    pub addr: String,
    /// When the base is far enough into its start-up to connect (§1.7).
    pub ready: ReadyGate,
    /// The agent's package directory (where fetched jars are stored).
    pub package_dir: PathBuf,
    /// Where the base JVM sees [`Self::package_dir`], if mounted elsewhere (default: same).
    pub package_dir_in_base: Option<PathBuf>,
    /// The base's own biz name, left out of `discover` (besides `embed main`).
    pub base_name: Option<String>,
    /// TCP connect and readiness-check deadline (default 3 s).
    pub connect_timeout: Duration,
    /// Deadline for the `sofa-ark>` greeting (default 5 s, §4.2 step 3).
    pub greeting_timeout: Duration,
    /// Deadline for one reply (default 10 s, §4.2 step 4).
    pub command_timeout: Duration,
    /// Longest interval between `biz -a` polls during an operation (default 300 ms, §4.4
    /// step 6); polls start at [`Self::poll_first`] and grow towards it ([`PollSchedule`]).
    pub poll_interval: Duration,
    /// First poll after a command (default 3 ms).
    pub poll_first: Duration,
    /// From `biz -i` until the module is listed (default 60 s).
    pub register_timeout: Duration,
    /// From `biz -i` until it is started (default 120 s).
    pub start_timeout: Duration,
    /// From the start of an uninstall until the module is gone (default 120 s).
    pub stop_timeout: Duration,
    /// From `biz -o` until the target is activated (default 30 s).
    pub switch_timeout: Duration,
    /// How long an operation waits for the base to be reachable, ready and free of other
    /// clients' starting modules (default 120 s).
    pub base_wait: Duration,
    /// First reconnect delay and readiness-check interval (default 500 ms).
    pub reconnect_min: Duration,
    /// Longest reconnect delay (default 30 s).
    pub reconnect_max: Duration,
    /// Interval of the idle `biz -a` that notices modules disappearing (default 10 s).
    pub monitor_interval: Duration,
}

impl ArkTelnetConfig {
    /// Defaults (see each field) for a port, gate and package directory.
    pub fn new(addr: impl Into<String>, ready: ReadyGate, package_dir: impl Into<PathBuf>) -> Self {
        ArkTelnetConfig {
            addr: addr.into(),
            ready,
            package_dir: package_dir.into(),
            package_dir_in_base: None,
            base_name: None,
            connect_timeout: Duration::from_secs(3),
            greeting_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(300),
            poll_first: Duration::from_millis(3),
            register_timeout: Duration::from_secs(60),
            start_timeout: Duration::from_secs(120),
            stop_timeout: Duration::from_secs(120),
            switch_timeout: Duration::from_secs(30),
            base_wait: Duration::from_secs(120),
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            monitor_interval: Duration::from_secs(10),
        }
    }
}

/// Command-line flags of the ark-telnet backend (flattened into the agent's configuration).
#[derive(Clone, Debug, clap::Args)]
pub struct ArkTelnetArgs {
    /// `host:port` of the base's SOFAArk telnet port (pin it in the base with
    /// `-Dsofa.ark.telnet.port`). Use 127.0.0.1, not localhost.
    #[arg(
        long = "ark-telnet-addr",
        env = "KOUPLELESS_AGENT_ARK_TELNET_ADDR",
        default_value = "127.0.0.1:1234"
    )]
    pub telnet_addr: String,
    /// When the base is ready to be connected to: `http(s)://…` answering 2xx (its readiness
    /// probe), `tcp://host:port` (its web port), or `none` for a base that is always up before
    /// the agent. Required: connecting during the base's start-up breaks the port until the
    /// JVM restarts.
    #[arg(long = "ark-telnet-ready", env = "KOUPLELESS_AGENT_ARK_TELNET_READY")]
    pub telnet_ready: Option<String>,
    /// Deadline for the `sofa-ark>` greeting.
    #[arg(long = "ark-telnet-greeting-timeout", env = "KOUPLELESS_AGENT_ARK_TELNET_GREETING_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    pub telnet_greeting_timeout: Duration,
    /// Deadline for one command's reply.
    #[arg(long = "ark-telnet-command-timeout", env = "KOUPLELESS_AGENT_ARK_TELNET_COMMAND_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub telnet_command_timeout: Duration,
    /// Longest interval between `biz -a` polls while an operation runs (and the interval of
    /// retries while the base is busy). Polls after a command start at
    /// `--ark-telnet-poll-first` and grow by a quarter of the time waited so far up to this,
    /// so a quick module is seen within a few milliseconds and a slow one costs few polls.
    #[arg(long = "ark-telnet-poll-interval", env = "KOUPLELESS_AGENT_ARK_TELNET_POLL_INTERVAL", value_parser = humantime::parse_duration, default_value = "300ms")]
    pub telnet_poll_interval: Duration,
    /// First `biz -a` poll after a command (see `--ark-telnet-poll-interval`).
    #[arg(long = "ark-telnet-poll-first", env = "KOUPLELESS_AGENT_ARK_TELNET_POLL_FIRST", value_parser = humantime::parse_duration, default_value = "3ms")]
    pub telnet_poll_first: Duration,
    /// How long after `biz -i` the module must be listed (the start itself is bounded by
    /// `--start-timeout`).
    #[arg(long = "ark-telnet-register-timeout", env = "KOUPLELESS_AGENT_ARK_TELNET_REGISTER_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s")]
    pub telnet_register_timeout: Duration,
    /// How long an uninstall may take.
    #[arg(long = "ark-telnet-stop-timeout", env = "KOUPLELESS_AGENT_ARK_TELNET_STOP_TIMEOUT", value_parser = humantime::parse_duration, default_value = "120s")]
    pub telnet_stop_timeout: Duration,
    /// How long a switch may take.
    #[arg(long = "ark-telnet-switch-timeout", env = "KOUPLELESS_AGENT_ARK_TELNET_SWITCH_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub telnet_switch_timeout: Duration,
    /// How long an operation waits for the base to be reachable, ready and not blocked by
    /// another client's starting module.
    #[arg(long = "ark-telnet-base-wait", env = "KOUPLELESS_AGENT_ARK_TELNET_BASE_WAIT", value_parser = humantime::parse_duration, default_value = "120s")]
    pub telnet_base_wait: Duration,
    /// First reconnect delay, and the interval of readiness checks.
    #[arg(long = "ark-telnet-reconnect-min", env = "KOUPLELESS_AGENT_ARK_TELNET_RECONNECT_MIN", value_parser = humantime::parse_duration, default_value = "500ms")]
    pub telnet_reconnect_min: Duration,
    /// Longest reconnect delay (also used after finding the port broken).
    #[arg(long = "ark-telnet-reconnect-max", env = "KOUPLELESS_AGENT_ARK_TELNET_RECONNECT_MAX", value_parser = humantime::parse_duration, default_value = "30s")]
    pub telnet_reconnect_max: Duration,
    /// Interval of the idle check for modules that disappeared from the base.
    #[arg(long = "ark-telnet-monitor-interval", env = "KOUPLELESS_AGENT_ARK_TELNET_MONITOR_INTERVAL", value_parser = humantime::parse_duration, default_value = "10s")]
    pub telnet_monitor_interval: Duration,
}

impl ArkTelnetArgs {
    /// The backend configuration: the agent's package directory and where the base sees it,
    /// the base's biz name, and the module start deadline (`--start-timeout`).
    pub fn config(
        &self,
        package_dir: PathBuf,
        package_dir_in_base: Option<PathBuf>,
        base_name: Option<String>,
        start_timeout: Duration,
    ) -> Result<ArkTelnetConfig, BackendError> {
        let ready = self.telnet_ready.as_deref().ok_or_else(|| {
            unavailable("the ark-telnet backend needs --ark-telnet-ready (the base's readiness URL, tcp://host:port of its web port, or none): connecting while the base starts breaks its telnet port until the JVM restarts (spec ark-telnet §1.7)")
        })?;
        let mut cfg = ArkTelnetConfig::new(
            self.telnet_addr.clone(),
            ready.parse().map_err(unavailable)?,
            package_dir,
        );
        cfg.package_dir_in_base = package_dir_in_base;
        cfg.base_name = base_name;
        cfg.greeting_timeout = self.telnet_greeting_timeout;
        cfg.command_timeout = self.telnet_command_timeout;
        cfg.poll_interval = self.telnet_poll_interval;
        cfg.poll_first = self.telnet_poll_first;
        cfg.register_timeout = self.telnet_register_timeout;
        cfg.start_timeout = start_timeout;
        cfg.stop_timeout = self.telnet_stop_timeout;
        cfg.switch_timeout = self.telnet_switch_timeout;
        cfg.base_wait = self.telnet_base_wait;
        cfg.reconnect_min = self.telnet_reconnect_min;
        cfg.reconnect_max = self.telnet_reconnect_max;
        cfg.monitor_interval = self.telnet_monitor_interval;
        Ok(cfg)
    }
}

/// Modules the backend believes are in the base, and those it gave up on.
#[derive(Debug, Default)]
struct Tracked {
    known: HashSet<BizKey>,
    orphans: Vec<Orphan>,
}

#[derive(Debug)]
struct Inner {
    cfg: ArkTelnetConfig,
    requests: mpsc::Sender<Request>,
    /// Held for a whole operation: one at a time per base.
    op: tokio::sync::Mutex<()>,
    tracked: Mutex<Tracked>,
    events: mpsc::Sender<BackendEvent>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// Drives a base's SOFAArk telnet port. See the [module docs](self).
#[derive(Debug)]
pub struct ArkTelnetBackend {
    inner: Arc<Inner>,
}

/// Why one `biz -a` gave no listing.
enum ListFailure {
    /// Worth retrying (connection down, window B, no reply).
    Transient(String),
    /// Not worth retrying within an operation.
    Fatal(BackendError),
}

fn unavailable(e: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(e.to_string())
}

/// What the base ended up with: `active` is the state `biz -a` showed (the base applies its own
/// activation policy), so the engine records what really happened.
fn started(req: &StartRequest, active: bool) -> Started {
    Started {
        work_dir: None,
        class_path: Vec::new(),
        main_class: req.package.main_class.clone(),
        active: Some(active),
    }
}

impl ArkTelnetBackend {
    /// Starts the connection driver and the monitor (needs a tokio runtime); refuses a
    /// configuration that cannot work. Modules that vanish are reported on `events`.
    pub fn new(
        cfg: ArkTelnetConfig,
        events: mpsc::Sender<BackendEvent>,
    ) -> Result<Self, BackendError> {
        if cfg
            .addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(unavailable(format!(
                "invalid telnet address {:?}: expected host:port",
                cfg.addr
            )));
        }
        if cfg.ready == ReadyGate::None {
            tracing::warn!(addr = %cfg.addr, "no readiness check for the base: connecting to its telnet port at once, which breaks the port if the base is still starting (spec ark-telnet §1.7)");
        }
        let (requests, rx) = mpsc::channel(16);
        let inner = Arc::new(Inner {
            requests,
            op: tokio::sync::Mutex::new(()),
            tracked: Mutex::new(Tracked::default()),
            events,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            cfg,
        });
        let settings = DriverSettings {
            addr: inner.cfg.addr.clone(),
            gate: inner.cfg.ready.clone(),
            connect_timeout: inner.cfg.connect_timeout,
            greeting_timeout: inner.cfg.greeting_timeout,
            command_timeout: inner.cfg.command_timeout,
            reconnect_min: inner.cfg.reconnect_min,
            reconnect_max: inner.cfg.reconnect_max,
        };
        inner
            .tasks
            .spawn(driver::run(settings, rx, inner.cancel.child_token()));
        let monitor = Arc::clone(&inner);
        inner.tasks.spawn(async move { monitor.monitor().await });
        Ok(ArkTelnetBackend { inner })
    }

    /// The configuration in force.
    pub fn config(&self) -> &ArkTelnetConfig {
        &self.inner.cfg
    }
}

impl Drop for ArkTelnetBackend {
    fn drop(&mut self) {
        // Without `shutdown` (a panic unwinding), still end the tasks, which hold the inner
        // state alive.
        self.inner.cancel.cancel();
    }
}

impl Inner {
    fn tracked(&self) -> MutexGuard<'_, Tracked> {
        self.tracked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn command(&self, line: &str) -> Result<String, CommandFailure> {
        let (reply, rx) = oneshot::channel();
        let shut = || CommandFailure {
            error: TelnetError::ShutDown,
            sent: false,
        };
        self.requests
            .send(Request {
                line: line.to_owned(),
                reply,
            })
            .await
            .map_err(|_| shut())?;
        rx.await.map_err(|_| shut())?
    }

    /// The poll schedule for an operation whose command was just sent.
    fn schedule(&self) -> PollSchedule {
        PollSchedule::new(
            self.cfg.poll_first,
            self.cfg.poll_interval,
            Instant::now().into_std(),
        )
    }

    /// Sleeps, unless the backend shuts down first.
    async fn pause(&self, d: Duration) -> Result<(), BackendError> {
        tokio::select! {
            _ = self.cancel.cancelled() => Err(unavailable(TelnetError::ShutDown)),
            _ = tokio::time::sleep(d) => Ok(()),
        }
    }

    async fn list_once(&self) -> Result<Listing, ListFailure> {
        match self.command(proto::LIST).await {
            Ok(body) => match proto::parse_list(&body) {
                Ok(l) => Ok(l),
                Err(e @ ListError::NotReady) => Err(ListFailure::Transient(e.to_string())),
                Err(e @ ListError::Malformed(_)) => Err(ListFailure::Fatal(unavailable(e))),
            },
            Err(CommandFailure {
                error: e @ (TelnetError::Bricked { .. } | TelnetError::ShutDown),
                ..
            }) => Err(ListFailure::Fatal(unavailable(e))),
            Err(f) => Err(ListFailure::Transient(f.error.to_string())),
        }
    }

    /// Lists, retrying transient failures until `deadline` (`None`: until shutdown).
    async fn list_until(&self, deadline: Option<Instant>) -> Result<Listing, BackendError> {
        loop {
            let reason = match self.list_once().await {
                Ok(l) => return Ok(l),
                Err(ListFailure::Fatal(e)) => return Err(e),
                Err(ListFailure::Transient(r)) => r,
            };
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(unavailable(format!(
                    "SOFAArk's telnet port at {} gave no module list within {} s: {reason}",
                    self.cfg.addr,
                    self.cfg.base_wait.as_secs()
                )));
            }
            self.pause(self.cfg.poll_interval).await?;
        }
    }

    /// One poll for a watch; anything short of a listing is "unavailable this time".
    async fn observe(&self) -> Option<Listing> {
        self.list_once().await.ok()
    }

    /// Sends an asynchronous command. `Ok(None)`: sent, acknowledgement lost (the base may be
    /// acting on it); `Err(Ok(reason))`: not sent, worth retrying.
    async fn send_async(
        &self,
        op: AsyncOp,
        line: &str,
    ) -> Result<Option<Ack>, Result<String, BackendError>> {
        match self.command(line).await {
            Ok(body) => Ok(Some(proto::classify_ack(op, &body))),
            Err(CommandFailure { sent: true, error }) => {
                tracing::warn!(line, %error, "acknowledgement lost; watching the base for the outcome");
                Ok(None)
            }
            Err(CommandFailure {
                error: e @ (TelnetError::Bricked { .. } | TelnetError::ShutDown),
                ..
            }) => Err(Err(unavailable(e))),
            Err(f) => Err(Ok(f.error.to_string())),
        }
    }

    fn orphan(&self, key: &BizKey, seen: bool) {
        let mut t = self.tracked();
        t.orphans.retain(|o| &o.key != key);
        let expires =
            Instant::now().into_std() + self.cfg.start_timeout + self.cfg.register_timeout;
        t.orphans.push(Orphan {
            key: key.clone(),
            seen,
            expires,
        });
    }

    fn adopt(&self, key: &BizKey) {
        let mut t = self.tracked();
        t.orphans.retain(|o| &o.key != key);
        t.known.insert(key.clone());
    }

    async fn start(&self, req: &StartRequest) -> Result<Started, BackendError> {
        let key = req.package.key.clone();
        let cfg = &self.cfg;
        let url = proto::base_file_url(
            &req.package.jar,
            &cfg.package_dir,
            cfg.package_dir_in_base.as_deref(),
        );
        let line =
            url.and_then(|u| proto::install_line(&u))
                .map_err(|e| BackendError::StartFailed {
                    message: format!("cannot install {key} over telnet: {e}"),
                })?;
        if !req.args.is_empty() || !req.envs.is_empty() {
            // The port passes only the URL (spec §2.5.2 step 6); say so rather than pretend.
            tracing::warn!(biz = %key, "args and envs cannot be passed over SOFAArk's telnet port; ignored");
        }
        let _op = self.op.lock().await;
        let wait_by = Instant::now() + cfg.base_wait;
        let mut watch = loop {
            let listing = self.list_until(Some(wait_by)).await?;
            let retry = match watch::install_preflight(&listing, &key) {
                InstallPre::AlreadyThere { active } => {
                    tracing::warn!(biz = %key, active, "module already runs in the base (installed by another client); adopting it instead of installing the package again");
                    self.adopt(&key);
                    return Ok(started(req, active));
                }
                InstallPre::AlreadyStarting => {
                    tracing::warn!(biz = %key, "module is already starting in the base; waiting for it");
                    break InstallWatch::already_starting(
                        key.clone(),
                        Instant::now().into_std() + cfg.start_timeout,
                    );
                }
                InstallPre::RemoveBrokenFirst => {
                    tracing::warn!(biz = %key, "a broken instance of the module is listed; uninstalling it first");
                    match self.remove(&key, Instant::now() + cfg.stop_timeout).await {
                        Ok(()) | Err(BackendError::NotFound(_)) => continue,
                        Err(e) => return Err(e),
                    }
                }
                InstallPre::Blocked(other, state) => format!(
                    "SOFAArk refuses installs while {other} is {state} (spec ark-telnet §2.5.1)"
                ),
                InstallPre::Send => match self.send_async(AsyncOp::Install, &line).await {
                    Ok(Some(Ack::Queued) | None) => {
                        let now = Instant::now().into_std();
                        break InstallWatch::new(
                            key.clone(),
                            now + cfg.register_timeout,
                            now + cfg.start_timeout,
                        );
                    }
                    Ok(Some(Ack::Gate)) => proto::GATE_TEXT.to_owned(),
                    Ok(Some(Ack::SecurityMode)) => {
                        return Err(unavailable(
                            "the base's telnet port is in security mode (sofa.ark.telnet.security.enable=true), which refuses every install (spec ark-telnet §1.8)",
                        ));
                    }
                    Ok(Some(Ack::Unexpected(text))) => {
                        return Err(unavailable(format!("unexpected reply to biz -i: {text:?}")));
                    }
                    Err(Err(e)) => return Err(e),
                    Err(Ok(reason)) => reason,
                },
            };
            if Instant::now() >= wait_by {
                return Err(unavailable(format!(
                    "cannot install {key} within {} s: {retry}",
                    cfg.base_wait.as_secs()
                )));
            }
            self.pause(cfg.poll_interval).await?;
        };
        let polls = self.schedule();
        loop {
            self.pause(polls.next_delay(Instant::now().into_std()))
                .await?;
            let listing = self.observe().await;
            let obs = listing
                .as_ref()
                .map_or(Observed::Unavailable, Observed::Listed);
            match watch.observe(obs, Instant::now().into_std()) {
                Verdict::Wait => {}
                Verdict::Done { active } => {
                    tracing::info!(biz = %key, active, "module started in the base");
                    self.adopt(&key);
                    return Ok(started(req, active));
                }
                Verdict::Failed { message, leftover } => {
                    if leftover {
                        self.orphan(&key, true);
                    }
                    return Err(BackendError::StartFailed { message });
                }
                Verdict::TimedOut(stage) => {
                    let secs = match stage {
                        Stage::Register => {
                            tracing::warn!(biz = %key, %line, "the base never listed the module: download or unpack failed, the base cannot read the jar path, or the copy is slow; {}", watch::SEE_ARK_LOGS);
                            cfg.register_timeout.as_secs()
                        }
                        _ => {
                            tracing::warn!(biz = %key, "module still starting in the base at the deadline; SOFAArk cannot cancel a start, it will be removed once it ends");
                            cfg.start_timeout.as_secs()
                        }
                    };
                    self.orphan(&key, stage != Stage::Register);
                    return Err(BackendError::TimedOut {
                        op: "install",
                        key,
                        secs,
                    });
                }
            }
        }
    }

    /// The uninstall algorithm (§4.5); the caller holds the operation lock.
    async fn remove(&self, key: &BizKey, deadline: Instant) -> Result<(), BackendError> {
        let line = proto::uninstall_line(key).map_err(|e| BackendError::StopFailed {
            key: key.clone(),
            message: e.to_string(),
        })?;
        let timed_out = || BackendError::TimedOut {
            op: "uninstall",
            key: key.clone(),
            secs: self.cfg.stop_timeout.as_secs(),
        };
        loop {
            let listing = self.list_until(Some(deadline)).await?;
            let retry = match watch::stop_preflight(listing.state_of(key)) {
                StopPre::Absent => return Err(BackendError::NotFound(key.clone())),
                StopPre::WaitStarting => None,
                StopPre::Send => match self.send_async(AsyncOp::Uninstall, &line).await {
                    Ok(Some(Ack::Queued) | None) => break,
                    Ok(Some(Ack::SecurityMode)) => {
                        return Err(BackendError::StopFailed {
                            key: key.clone(),
                            message: "the base's telnet port is in security mode (sofa.ark.telnet.security.enable=true), which refuses every uninstall (spec ark-telnet §1.8)".into(),
                        });
                    }
                    Ok(Some(other)) => {
                        return Err(BackendError::StopFailed {
                            key: key.clone(),
                            message: format!("unexpected reply to biz -u: {other:?}"),
                        });
                    }
                    Err(Err(e)) => return Err(e),
                    Err(Ok(reason)) => Some(reason),
                },
            };
            if Instant::now() >= deadline {
                return Err(match retry {
                    Some(reason) => unavailable(reason),
                    None => timed_out(),
                });
            }
            self.pause(self.cfg.poll_interval).await?;
        }
        let polls = self.schedule();
        loop {
            self.pause(polls.next_delay(Instant::now().into_std()))
                .await?;
            let listing = self.observe().await;
            let obs = listing
                .as_ref()
                .map_or(Observed::Unavailable, Observed::Listed);
            match watch::stop_verdict(key, obs, Instant::now().into_std(), deadline.into_std()) {
                Verdict::Wait => {}
                Verdict::Done { .. } => return Ok(()),
                Verdict::Failed { message, .. } => {
                    return Err(BackendError::StopFailed {
                        key: key.clone(),
                        message,
                    });
                }
                Verdict::TimedOut(_) => return Err(timed_out()),
            }
        }
    }

    async fn stop(&self, key: &BizKey) -> Result<(), BackendError> {
        let _op = self.op.lock().await;
        {
            // From here on its disappearance is expected, not an exit to report.
            let mut t = self.tracked();
            t.known.remove(key);
            t.orphans.retain(|o| &o.key != key);
        }
        self.remove(key, Instant::now() + self.cfg.stop_timeout)
            .await
    }

    async fn activate(&self, key: &BizKey) -> Result<(), BackendError> {
        let line = proto::switch_line(key).map_err(|e| BackendError::StartFailed {
            message: e.to_string(),
        })?;
        let _op = self.op.lock().await;
        let listing = self
            .list_until(Some(Instant::now() + self.cfg.base_wait))
            .await?;
        match watch::switch_preflight(listing.state_of(key)) {
            SwitchPre::Absent => return Err(BackendError::NotFound(key.clone())),
            SwitchPre::AlreadyActive => return Ok(()),
            SwitchPre::Illegal(s) => {
                return Err(BackendError::StartFailed {
                    message: format!("Switch Biz: {key}'s state must not be {s}."),
                });
            }
            SwitchPre::Send => {}
        }
        match self.send_async(AsyncOp::Switch, &line).await {
            Ok(Some(Ack::Queued) | None) => {}
            Ok(Some(other)) => {
                return Err(unavailable(format!(
                    "unexpected reply to biz -o: {other:?}"
                )));
            }
            Err(Err(e)) => return Err(e),
            Err(Ok(reason)) => return Err(unavailable(reason)),
        }
        let deadline = Instant::now().into_std() + self.cfg.switch_timeout;
        let polls = self.schedule();
        loop {
            self.pause(polls.next_delay(Instant::now().into_std()))
                .await?;
            let listing = self.observe().await;
            let obs = listing
                .as_ref()
                .map_or(Observed::Unavailable, Observed::Listed);
            match watch::switch_verdict(key, obs, Instant::now().into_std(), deadline) {
                Verdict::Wait => {}
                Verdict::Done { .. } => return Ok(()),
                Verdict::Failed { message, .. } => {
                    return Err(BackendError::StartFailed { message });
                }
                Verdict::TimedOut(_) => {
                    return Err(BackendError::TimedOut {
                        op: "switch",
                        key: key.clone(),
                        secs: self.cfg.switch_timeout.as_secs(),
                    });
                }
            }
        }
    }

    async fn discover(&self) -> Result<Vec<Discovered>, BackendError> {
        // Waiting for the base happens outside the operation lock, so operations keep their
        // own deadlines meanwhile.
        self.list_until(None).await?;
        let _op = self.op.lock().await;
        let listing = self
            .list_until(Some(Instant::now() + self.cfg.base_wait))
            .await?;
        let metas = match self.command(proto::META_ALL).await {
            Ok(body) => proto::parse_meta(&body),
            Err(f) => {
                tracing::warn!(error = %f.error, "biz -m failed; main classes unknown, the base is recognised by name only");
                Vec::new()
            }
        };
        let main_of = |k: &BizKey| {
            metas
                .iter()
                .find(|m| &m.key == k)
                .map(|m| m.main_class.clone())
        };
        let mut found = Vec::new();
        for e in listing.entries {
            let main_class = main_of(&e.key);
            let is_base = main_class.as_deref() == Some(proto::EMBED_MAIN)
                || self.cfg.base_name.as_deref() == Some(e.key.name.as_str());
            if is_base {
                continue;
            }
            match e.state {
                BizState::Activated | BizState::Deactivated => found.push(Discovered {
                    key: e.key,
                    active: e.state == BizState::Activated,
                    main_class,
                }),
                other => {
                    tracing::warn!(biz = %e.key, state = %other, "not adopting a module that is not started")
                }
            }
        }
        let mut t = self.tracked();
        t.known.extend(found.iter().map(|d| d.key.clone()));
        Ok(found)
    }

    /// The idle watch: reports known modules that vanished and removes orphans.
    async fn monitor(&self) {
        loop {
            if self.pause(self.cfg.monitor_interval).await.is_err() {
                return;
            }
            let busy = {
                let t = self.tracked();
                !t.known.is_empty() || !t.orphans.is_empty()
            };
            if !busy {
                continue;
            }
            // An operation in progress is polling anyway; look again next time.
            let Ok(_op) = self.op.try_lock() else {
                continue;
            };
            let Ok(listing) = self.list_once().await else {
                continue;
            };
            let now = Instant::now();
            let (gone, to_remove) = {
                let mut t = self.tracked();
                let gone = watch::vanished(&t.known, &listing);
                for k in &gone {
                    t.known.remove(k);
                }
                let mut to_remove = Vec::new();
                t.orphans.retain_mut(|o| {
                    match watch::orphan_action(o, listing.state_of(&o.key), now.into_std()) {
                        OrphanAction::Keep => true,
                        OrphanAction::Drop => false,
                        OrphanAction::Uninstall => {
                            to_remove.push(o.key.clone());
                            true
                        }
                    }
                });
                (gone, to_remove)
            };
            for key in gone {
                tracing::warn!(biz = %key, "module no longer listed by the base");
                let ev = BackendEvent::Exited {
                    key,
                    message: "no longer listed by the base's telnet port (uninstalled by another client, or the base JVM restarted)".into(),
                };
                tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    _ = self.events.send(ev) => {}
                }
            }
            for key in to_remove {
                tracing::info!(biz = %key, "removing a module whose install this agent gave up on");
                match self
                    .remove(&key, Instant::now() + self.cfg.stop_timeout)
                    .await
                {
                    Ok(()) | Err(BackendError::NotFound(_)) => {
                        self.tracked().orphans.retain(|o| o.key != key)
                    }
                    Err(e) => {
                        tracing::warn!(biz = %key, error = %e, "could not remove it yet; trying again later")
                    }
                }
            }
        }
    }
}

impl RuntimeBackend for ArkTelnetBackend {
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

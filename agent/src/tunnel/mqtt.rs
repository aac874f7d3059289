//! The MQTT tunnel driver (spec protocol §5): owns the rumqttc event loop, hands every command
//! to its own task, publishes replies and heartbeats. Decisions live in [`super::dispatch`].
//!
//! Connection life cycle, as the Java base (§5.5) except where noted:
//!
//! - Client id `<prefix>@@@<identity>`, MQTT 3.1.1, clean session, keep-alive 60 s.
//! - On every (re)connect: subscribe `koupleless_<env>/<id>/+` and `.../base/baseline` (QoS 1).
//! - On the first connect: publish `queryBaseline`, then a heartbeat every 10 s. Unlike Java
//!   (T23) the heartbeat never stops: while the broker is away beats are skipped, and one is
//!   sent as soon as the connection is back.
//! - Ours: a last will (a `deactivated` heartbeat, see [`dispatch::WILL_TIMESTAMP`]) removes
//!   the base promptly if the agent dies; on graceful shutdown in-flight commands get a grace
//!   period, then a `deactivated` heartbeat and a clean DISCONNECT (which cancels the will).
//!   Caveat, seen with Mosquitto 2.0 and `persistence true`: Mosquitto saves the agent's
//!   session (will included) at shutdown and publishes that will after a *broker* restart, so a
//!   controller connected by then sees the base deactivated. The agent therefore queues an
//!   `activated` heartbeat first thing on every reconnect (in the tests it reached the
//!   controller about 55 ms after the will), which re-opens the base's liveness in the Go
//!   controller unless its 3-second liveness check falls inside that gap.
//! - Ours: the first connection is retried like any other (Java aborts start-up).
//!
//! Nothing slow runs in the event-loop task: each command runs in its own task through the
//! [`CommandService`], at most [`MqttTuning::max_concurrent`] at once, with at most
//! [`MqttTuning::max_queued`] admitted; commands for the same module run in arrival order
//! (see [`dispatch::ordering_key`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use koupleless_protocol::mqtt::ReplyKind;
use koupleless_protocol::{BizState, CommandId, Topic};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, LastWill, MqttOptions, Outgoing,
    Publish, QoS, SubscribeFilter, SubscribeReasonCode, TlsConfiguration,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::dispatch::{
    self, Admission, Echo, Ignored, Inbound, PayloadCheck, ReplayGuard, Route, check_payload, echo,
    ordering_key,
};
use super::{BaseInfo, Secret, TunnelError};
use crate::backend::RuntimeBackend;
use crate::engine::now_ms;
use crate::service::{CommandService, Outcome};

/// TLS material for the broker connection.
#[derive(Clone)]
pub struct MqttTls {
    /// PEM CA certificate(s) that sign the broker's certificate.
    pub ca: Vec<u8>,
    /// PEM client certificate chain and key, for mutual TLS.
    pub client: Option<(Vec<u8>, Secret)>,
}

impl fmt::Debug for MqttTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttTls")
            .field("ca_bytes", &self.ca.len())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

/// Limits and timings of the tunnel that are not on the command line.
#[derive(Clone, Debug)]
pub struct MqttTuning {
    /// Largest command payload read; larger ones are answered with an error unread. The same
    /// limit as the HTTP API's request body.
    pub max_payload: usize,
    /// Largest MQTT packet the client accepts or sends. A larger incoming packet makes rumqttc
    /// drop the connection, so this is well above `max_payload`.
    pub max_packet: usize,
    /// Commands running at once.
    pub max_concurrent: usize,
    /// Commands admitted (running or waiting); beyond this, commands are dropped with a warning.
    pub max_queued: usize,
    /// First delay before reconnecting; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest delay between reconnection attempts.
    pub reconnect_max: Duration,
    /// How long a reply may wait for room in the client's request queue.
    pub publish_timeout: Duration,
    /// On shutdown, how long running commands may still finish (and be answered).
    pub shutdown_grace: Duration,
    /// How long the goodbye (deactivated heartbeat + DISCONNECT) may take.
    pub goodbye_timeout: Duration,
    /// Send the real Arklet HTTP port in heartbeats (the Java base sends 0, T21), so a
    /// controller can reach this agent's HTTP API (module logs) without the HTTP tunnel.
    pub report_port: bool,
}

impl Default for MqttTuning {
    fn default() -> Self {
        MqttTuning {
            max_payload: crate::http::MAX_BODY,
            max_packet: 16 << 20,
            max_concurrent: 8,
            max_queued: 256,
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            goodbye_timeout: Duration::from_secs(3),
            report_port: false,
        }
    }
}

/// Validated MQTT settings (see [`super::TunnelArgs::mqtt`]).
#[derive(Clone, Debug)]
pub struct MqttSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Secret>,
    /// Client id prefix.
    pub client_prefix: String,
    /// TLS, when the broker needs it.
    pub tls: Option<MqttTls>,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Limits and timings.
    pub tuning: MqttTuning,
}

impl MqttSettings {
    /// The client id: `<prefix>@@@<identity>`.
    pub fn client_id(&self, base: &BaseInfo) -> String {
        format!("{}@@@{}", self.client_prefix, base.identity)
    }

    fn options(&self, base: &BaseInfo, will_topic: &str) -> MqttOptions {
        let mut o = MqttOptions::new(self.client_id(base), self.host.clone(), self.port);
        o.set_keep_alive(self.keep_alive)
            .set_clean_session(true)
            .set_max_packet_size(self.tuning.max_packet, self.tuning.max_packet)
            .set_last_will(LastWill::new(
                will_topic,
                dispatch::will_payload(base),
                QoS::AtLeastOnce,
                false,
            ));
        if let Some(user) = &self.username {
            o.set_credentials(
                user.clone(),
                self.password
                    .as_ref()
                    .map(Secret::expose)
                    .unwrap_or_default(),
            );
        }
        if let Some(tls) = &self.tls {
            crate::install_crypto_provider();
            o.set_transport(rumqttc::Transport::tls_with_config(
                TlsConfiguration::Simple {
                    ca: tls.ca.clone(),
                    alpn: None,
                    client_auth: tls
                        .client
                        .as_ref()
                        .map(|(crt, key)| (crt.clone(), key.expose().as_bytes().to_vec())),
                },
            ));
        }
        o
    }
}

/// Requests the event loop buffers between the tasks and the socket.
const REQUEST_CAPACITY: usize = 1024;

/// Topic strings of one base.
struct Topics {
    commands: String,
    baseline: String,
    heart: String,
    query_baseline: String,
    base: BaseInfo,
}

impl Topics {
    fn new(base: &BaseInfo) -> Topics {
        let (env, id) = (base.env.clone(), base.identity.clone());
        Topics {
            commands: Topic::command_filter(&env, &id),
            baseline: Topic::Baseline {
                env: env.clone(),
                base: id.clone(),
            }
            .to_string(),
            heart: Topic::Heartbeat {
                env: env.clone(),
                base: id.clone(),
            }
            .to_string(),
            query_baseline: Topic::QueryBaseline { env, base: id }.to_string(),
            base: base.clone(),
        }
    }

    fn reply(&self, kind: ReplyKind) -> String {
        Topic::Reply {
            env: self.base.env.clone(),
            base: self.base.identity.clone(),
            kind,
        }
        .to_string()
    }
}

/// What command tasks share.
struct Ctx<B> {
    service: CommandService<B>,
    client: AsyncClient,
    topics: Topics,
    tuning: MqttTuning,
    running: Arc<Semaphore>,
}

/// Runs the MQTT tunnel until `cancel` fires, then runs in-flight commands to completion (for
/// at most [`MqttTuning::shutdown_grace`]), publishes a `deactivated` heartbeat, disconnects
/// and returns. Connection failures are logged and retried, never returned.
pub async fn run_mqtt<B: RuntimeBackend>(
    cfg: MqttSettings,
    base: BaseInfo,
    service: CommandService<B>,
    cancel: CancellationToken,
) -> Result<(), TunnelError> {
    // The Java base says port 0 over MQTT (T21); the real one only when asked.
    let base = BaseInfo {
        http_port: if cfg.tuning.report_port {
            base.http_port
        } else {
            0
        },
        ..base
    };
    let topics = Topics::new(&base);
    let (client, mut eventloop) =
        AsyncClient::new(cfg.options(&base, &topics.heart), REQUEST_CAPACITY);
    // Small messages that should leave at once (a heartbeat right after a reconnect): no Nagle.
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    tracing::info!(
        broker = %format!("{}:{}", cfg.host, cfg.port),
        tls = cfg.tls.is_some(),
        client_id = %cfg.client_id(&base),
        topics = %topics.commands,
        "starting the MQTT tunnel"
    );
    let connected = Arc::new(AtomicBool::new(false));
    let kick = Arc::new(Notify::new());
    let heartbeat_stop = cancel.child_token();
    // Aborted with this future if it is dropped instead of run to its end.
    let heartbeat = AbortOnDropHandle::new(tokio::spawn(heartbeat_loop(
        client.clone(),
        Beat {
            topic: topics.heart.clone(),
            base: base.clone(),
            health: Arc::clone(service.health_source()),
        },
        cfg.heartbeat_interval,
        Arc::clone(&connected),
        Arc::clone(&kick),
        heartbeat_stop.clone(),
    )));
    let mut driver = Driver {
        ctx: Arc::new(Ctx {
            service,
            client,
            topics,
            running: Arc::new(Semaphore::new(cfg.tuning.max_concurrent.max(1))),
            tuning: cfg.tuning.clone(),
        }),
        eventloop,
        admitted: Arc::new(Semaphore::new(cfg.tuning.max_queued.max(1))),
        guard: ReplayGuard::default(),
        chains: HashMap::new(),
        tasks: JoinSet::new(),
        connected,
        kick,
        connects: 0,
        failures: 0,
    };
    driver.run(&cancel).await;
    heartbeat_stop.cancel();
    if let Err(e) = heartbeat.await {
        tracing::error!(error = %e, "MQTT heartbeat task failed");
    }
    driver.finish().await;
    Ok(())
}

struct Driver<B> {
    ctx: Arc<Ctx<B>>,
    eventloop: EventLoop,
    admitted: Arc<Semaphore>,
    guard: ReplayGuard,
    /// Per ordering key, the completion signal of the last command admitted with that key.
    chains: HashMap<String, oneshot::Receiver<()>>,
    tasks: JoinSet<()>,
    connected: Arc<AtomicBool>,
    kick: Arc<Notify>,
    connects: u64,
    failures: u32,
}

impl<B: RuntimeBackend> Driver<B> {
    async fn run(&mut self, cancel: &CancellationToken) {
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => reap(done),
                ev = self.eventloop.poll() => match ev {
                    Ok(ev) => self.on_event(ev),
                    Err(e) => {
                        let delay = self.on_error(&e);
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = sleep(delay) => {}
                        }
                    }
                },
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Incoming(Incoming::ConnAck(_)) => self.on_connected(),
            Event::Incoming(Incoming::Publish(p)) => self.dispatch(p),
            Event::Incoming(Incoming::SubAck(ack))
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure)) =>
            {
                tracing::error!(codes = ?ack.return_codes, "the broker refused a subscription; no commands will arrive");
            }
            _ => {}
        }
    }

    fn on_connected(&mut self) {
        self.connects += 1;
        self.failures = 0;
        self.connected.store(true, Ordering::SeqCst);
        let first = self.connects == 1;
        tracing::info!(reconnect = !first, "MQTT connected");
        let ctx = Arc::clone(&self.ctx);
        if !first {
            // A heartbeat at once, ahead of everything else queued: after a broker restart the
            // controller may just have received this base's will (Mosquitto restores sessions,
            // wills included), and must see the base activated before its next liveness check.
            let t = &ctx.topics;
            let state =
                super::heartbeat_state(ctx.service.health_source().sample().master.biz_state);
            let payload = dispatch::heartbeat_payload(&t.base, state, now_ms());
            if let Err(e) =
                ctx.client
                    .try_publish(t.heart.clone(), QoS::AtLeastOnce, false, payload)
            {
                tracing::warn!(error = %e, "could not queue the reconnect heartbeat");
            }
        }
        let kick = first.then(|| Arc::clone(&self.kick));
        // Through the request queue, so in order and without blocking the event loop: the
        // subscriptions, then (first time) queryBaseline and the start of the heartbeat.
        self.tasks.spawn(async move {
            let t = &ctx.topics;
            let filters = vec![
                SubscribeFilter::new(t.commands.clone(), QoS::AtLeastOnce),
                SubscribeFilter::new(t.baseline.clone(), QoS::AtLeastOnce),
            ];
            if let Err(e) = ctx.client.subscribe_many(filters).await {
                tracing::warn!(error = %e, "could not queue the subscriptions");
            }
            if let Some(kick) = kick {
                let payload = dispatch::query_baseline_payload(&t.base, now_ms());
                publish(&ctx, &t.query_baseline, payload).await;
                kick.notify_one();
            }
        });
    }

    /// Logs a connection error and says how long to wait before the next attempt.
    fn on_error(&mut self, e: &ConnectionError) -> Duration {
        let t = &self.ctx.tuning;
        if self.connected.swap(false, Ordering::SeqCst) {
            tracing::warn!(error = %e, "MQTT connection lost; reconnecting");
        } else if self.failures.is_multiple_of(30) {
            // The first failure, then about every five minutes at the longest delay: a
            // persistent problem (wrong credentials, untrusted certificate) stays visible.
            tracing::warn!(error = %e, attempts = self.failures + 1, "cannot connect to the MQTT broker; retrying");
        } else {
            tracing::debug!(error = %e, attempt = self.failures + 1, "MQTT connect attempt failed");
        }
        let delay = reconnect_delay(t.reconnect_min, t.reconnect_max, self.failures);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Decides about one inbound message and, if it is to run, spawns its task. Synchronous
    /// and bounded by the payload limit: this runs inside the event-loop task.
    fn dispatch(&mut self, p: Publish) {
        let t = &self.ctx.topics;
        let inbound = match dispatch::route(&p.topic, &t.base.env, &t.base.identity) {
            Route::Handle(i) => i,
            Route::Ignore(Ignored::Unknown(cmd)) => {
                tracing::info!(topic = %p.topic, command = %cmd, "ignoring an unknown command (no reply, as the Java base)");
                return;
            }
            Route::Ignore(why) => {
                tracing::debug!(topic = %p.topic, ?why, "ignoring a message that is not for this base");
                return;
            }
        };
        tracing::debug!(topic = %p.topic, bytes = p.payload.len(), retained = p.retain, "command received");
        let check = check_payload(&p.payload, self.ctx.tuning.max_payload);
        if check == PayloadCheck::Empty {
            tracing::debug!(topic = %p.topic, "retained message deleted; nothing to run");
            self.guard.forget(&p.topic);
            return;
        }
        let Ok(slot) = Arc::clone(&self.admitted).try_acquire_owned() else {
            tracing::warn!(topic = %p.topic, limit = self.ctx.tuning.max_queued, "too many commands waiting; dropping this one");
            return;
        };
        let replay = match self.guard.admit(inbound, &p.topic, p.retain, &p.payload) {
            Admission::Run { replay } => replay,
            Admission::SkipReplay => {
                tracing::info!(
                    command = inbound.name(),
                    "skipping the broker's replay of a command already handled"
                );
                return;
            }
        };
        let (check, echo) = match check {
            PayloadCheck::TooLarge { .. } if !inbound.takes_input() => {
                (PayloadCheck::Ok, Echo::default())
            }
            PayloadCheck::TooLarge { .. } => (check, Echo::default()),
            _ => (check, echo(&p.payload)),
        };
        let (prev, done) = match ordering_key(inbound, &echo) {
            Some(key) => {
                if self.chains.len() > 64 {
                    // Forget finished chains (their sender is gone) so the map stays small.
                    self.chains.retain(|_, rx| {
                        matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty))
                    });
                }
                let (tx, rx) = oneshot::channel();
                (self.chains.insert(key, rx), Some(tx))
            }
            None => (None, None),
        };
        let job = Job {
            inbound,
            payload: p.payload,
            check,
            echo,
            replay,
        };
        let ctx = Arc::clone(&self.ctx);
        self.tasks.spawn(async move {
            let _slot: OwnedSemaphorePermit = slot;
            if let Some(prev) = prev {
                // Either outcome means the predecessor finished (it never sends, only drops).
                let _ = prev.await;
            }
            let Ok(_running) = Arc::clone(&ctx.running).acquire_owned().await else {
                return;
            };
            job.run(&ctx).await;
            drop(done);
        });
    }

    /// Shutdown: lets running commands finish (and answer) for a while, then says goodbye.
    async fn finish(&mut self) {
        let grace = self.ctx.tuning.shutdown_grace;
        let deadline = Instant::now() + grace;
        if !self.tasks.is_empty() {
            tracing::info!(
                commands = self.tasks.len(),
                ?grace,
                "MQTT tunnel stopping; letting running commands finish"
            );
        }
        while !self.tasks.is_empty() {
            tokio::select! {
                _ = sleep_until(deadline) => {
                    tracing::warn!(commands = self.tasks.len(), "abandoning commands still running at shutdown");
                    self.tasks.abort_all();
                    break;
                }
                Some(done) = self.tasks.join_next() => reap(done),
                ev = self.eventloop.poll() => self.pump(ev).await,
            }
        }
        while let Some(done) = self.tasks.join_next().await {
            reap(done);
        }
        self.goodbye().await;
    }

    /// Keeps the connection going during shutdown without running new commands.
    async fn pump(&mut self, ev: Result<Event, ConnectionError>) {
        match ev {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                self.connected.store(true, Ordering::SeqCst);
                // Replies still to come need no subscription, but keep the next connection's
                // state right for the goodbye.
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                tracing::debug!(topic = %p.topic, "shutting down; not running this command");
            }
            Ok(_) => {}
            Err(e) => {
                let delay = self.on_error(&e);
                sleep(delay.min(self.ctx.tuning.reconnect_max)).await;
            }
        }
    }

    /// The `deactivated` heartbeat, then DISCONNECT (which tells the broker to drop the will).
    /// Both go through the request queue behind any replies still queued, and the broker reads
    /// them in that order.
    async fn goodbye(&mut self) {
        if !self.connected.load(Ordering::SeqCst) {
            tracing::warn!(
                "not connected at shutdown: no deactivated heartbeat; the controller relies on timeouts"
            );
            return;
        }
        let t = &self.ctx.topics;
        let payload = dispatch::heartbeat_payload(&t.base, BizState::Deactivated, now_ms());
        let queued = self
            .ctx
            .client
            .try_publish(t.heart.clone(), QoS::AtLeastOnce, false, payload)
            .and_then(|()| self.ctx.client.try_disconnect());
        if let Err(e) = queued {
            tracing::warn!(error = %e, "could not queue the deactivated heartbeat");
            return;
        }
        let deadline = Instant::now() + self.ctx.tuning.goodbye_timeout;
        loop {
            tokio::select! {
                _ = sleep_until(deadline) => {
                    tracing::warn!("the deactivated heartbeat did not go out in time");
                    return;
                }
                ev = self.eventloop.poll() => match ev {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                        tracing::info!("MQTT tunnel stopped: deactivated heartbeat sent, disconnected");
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "connection lost while saying goodbye");
                        return;
                    }
                },
            }
        }
    }
}

/// Delay before the next connection attempt after `failures` failed ones in a row: `min`
/// doubling up to `max`.
pub fn reconnect_delay(min: Duration, max: Duration, failures: u32) -> Duration {
    min.saturating_mul(1u32 << failures.min(16)).min(max)
}

fn reap(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(error = %e, "an MQTT command task panicked");
    }
}

/// One admitted message.
struct Job {
    inbound: Inbound,
    payload: Bytes,
    check: PayloadCheck,
    echo: Echo,
    replay: bool,
}

impl Job {
    #[tracing::instrument(skip_all, fields(command = self.inbound.name(), replay = self.replay))]
    async fn run<B: RuntimeBackend>(self, ctx: &Ctx<B>) {
        let started = Instant::now();
        let outcome = match self.check {
            PayloadCheck::TooLarge { len, max } => {
                tracing::warn!(len, max, "payload too large; refused unread");
                dispatch::too_large(len, max)
            }
            PayloadCheck::Ok | PayloadCheck::Empty => self.execute(&ctx.service).await,
        };
        let code = outcome_code(&outcome);
        if !dispatch::should_publish(self.inbound, self.replay, &outcome) {
            tracing::info!(
                code,
                "replayed command found the module already as wanted; not answering"
            );
            return;
        }
        let kind = self.inbound.reply_kind();
        let Some(payload) = dispatch::reply_payload(self.inbound, self.echo, outcome, now_ms())
        else {
            tracing::warn!(code, "no list to answer with; nothing published");
            return;
        };
        tracing::info!(
            code,
            elapsed_ms = started.elapsed().as_millis() as u64,
            reply = kind.as_str(),
            "command handled"
        );
        publish(ctx, &ctx.topics.reply(kind), payload).await;
    }

    async fn execute<B: RuntimeBackend>(&self, service: &CommandService<B>) -> Outcome {
        match self.inbound {
            Inbound::Command(CommandId::QueryAllBiz) => {
                service.execute(CommandId::QueryAllBiz.as_str(), b"").await
            }
            Inbound::Command(c) => service.execute(c.as_str(), &self.payload).await,
            Inbound::Baseline => match dispatch::baseline_request(&self.payload) {
                Ok(body) => {
                    service
                        .execute(CommandId::BatchInstallBiz.as_str(), &body)
                        .await
                }
                Err(message) => Outcome::Internal {
                    message,
                    code: koupleless_protocol::ErrorCode::InvalidRequest,
                },
            },
        }
    }
}

fn outcome_code(o: &Outcome) -> &'static str {
    match o {
        Outcome::Success(_) => "SUCCESS",
        Outcome::Failed { .. } => "FAILED",
        Outcome::Internal { .. } => "CMD_PROCESS_INTERNAL_ERROR",
        Outcome::NotFound(_) => "CMD_NOT_FOUND",
    }
}

/// Queues a QoS 1 publish, waiting at most `publish_timeout` for room in the request queue.
async fn publish<B>(ctx: &Ctx<B>, topic: &str, payload: Vec<u8>) {
    let queued = timeout(
        ctx.tuning.publish_timeout,
        ctx.client.publish(topic, QoS::AtLeastOnce, false, payload),
    )
    .await;
    match queued {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(topic, error = %e, "could not publish"),
        Err(_) => tracing::warn!(topic, "could not publish: the request queue stayed full"),
    }
}

/// What a periodic heartbeat is made of.
struct Beat {
    topic: String,
    base: BaseInfo,
    /// The base's state (see [`super::heartbeat_state`]).
    health: Arc<dyn crate::health_cmd::HealthSource>,
}

/// Heartbeats: the first after the first connection's `queryBaseline`, then every `period`;
/// skipped while disconnected (the driver sends one itself on every reconnect), never stopped
/// by a failure.
async fn heartbeat_loop(
    client: AsyncClient,
    beat: Beat,
    period: Duration,
    connected: Arc<AtomicBool>,
    kick: Arc<Notify>,
    cancel: CancellationToken,
) {
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = kick.notified() => {}
    }
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if !connected.load(Ordering::SeqCst) {
            tracing::debug!("not connected; heartbeat skipped");
            continue;
        }
        // Deactivated only once the base counts as gone (its JVM down past the grace).
        let state = super::heartbeat_state(beat.health.sample().master.biz_state);
        let payload = dispatch::heartbeat_payload(&beat.base, state, now_ms());
        // Never wait here: a heartbeat that cannot go now is stale by the next tick anyway.
        match client.try_publish(beat.topic.clone(), QoS::AtLeastOnce, false, payload) {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("heartbeats flowing again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "heartbeat not sent; will keep trying");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_backoff_doubles_up_to_the_cap() {
        let (min, max) = (Duration::from_millis(250), Duration::from_secs(10));
        let got: Vec<u64> = [0, 1, 2, 3, 4, 5, 6, 40, u32::MAX]
            .into_iter()
            .map(|f| reconnect_delay(min, max, f).as_millis() as u64)
            .collect();
        assert_eq!(
            got,
            [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]
        );
    }

    #[test]
    fn client_id_and_tls_debug() {
        let base = BaseInfo {
            identity: "10.0.0.5".parse().unwrap(),
            env: "dev".parse().unwrap(),
            metadata: Default::default(),
            local_ip: "10.0.0.5".into(),
            host_name: "h".into(),
            http_port: 0,
        };
        let s = MqttSettings {
            host: "b".into(),
            port: 1883,
            username: Some("u".into()),
            password: Some(Secret::new("hunter2")),
            client_prefix: "koupleless".into(),
            tls: Some(MqttTls {
                ca: b"-----BEGIN CERTIFICATE-----".to_vec(),
                client: Some((b"crt".to_vec(), Secret::new("KEY"))),
            }),
            keep_alive: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(10),
            tuning: MqttTuning::default(),
        };
        assert_eq!(s.client_id(&base), "koupleless@@@10.0.0.5");
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("hunter2") && !dbg.contains("KEY") && !dbg.contains("BEGIN"),
            "{dbg}"
        );
        let o = s.options(&base, "koupleless_dev/10.0.0.5/base/heart");
        assert_eq!(o.client_id(), "koupleless@@@10.0.0.5");
        assert!(o.clean_session());
        let will = o.last_will().expect("a last will");
        assert_eq!(will.topic, "koupleless_dev/10.0.0.5/base/heart");
        assert!(!will.retain);
    }
}

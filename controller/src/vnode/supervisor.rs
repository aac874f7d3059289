//! One task per known base: the driver of its [`Machine`]. It owns all state of the base
//! (facts, the Node and Lease as last written, pending baseline queries) and is the only place
//! where the machine's effects are carried out. Effects are idempotent ("make the Node look
//! like this"), so a failure is logged once and retried on the machine's schedule.

use std::collections::VecDeque;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use koupleless_protocol::{BaseIdentity, BaseStatus, BizState, HealthData, VNodeName};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::facts::BaseFacts;
use super::lease::{self, LeaseDecision, LeaseView};
use super::lifecycle::{DeleteOutcome, Effect, Input, LeaseOutcome, Machine, Phase, Transition};
use super::liveness::DeathCause;
use super::mailbox::Mailbox;
use super::node::{self, NodeTemplate, Readiness};
use super::sight::Sight;
use crate::baseline;
use crate::config::Settings;
use crate::events::{EventSink, NodeEvent};
use crate::labels;
use crate::metrics::{Metrics, TransitionLabels};
use crate::registry::{BaseRegistry, VNodeState};
use crate::tunnel::{BaselineRequest, BizRecord, Command, Endpoint, Tunnel, TunnelKind, Tunnels};

/// Everything supervisors share.
#[derive(Debug)]
pub struct Context {
    /// Configuration.
    pub settings: Settings,
    /// Per-controller Node parts.
    pub template: NodeTemplate,
    /// Nodes.
    pub nodes: Api<Node>,
    /// Leases in `kube-node-lease`.
    pub leases: Api<Lease>,
    /// Deployments in all namespaces (baseline).
    pub deployments: Api<Deployment>,
    /// Cache of this env's vnode Leases.
    pub lease_store: Store<Lease>,
    /// Running tunnels.
    pub tunnels: Tunnels,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Kubernetes Events.
    pub events: EventSink,
    /// Shared view of bases.
    pub registry: BaseRegistry,
    /// Short-lived tasks (baseline answers).
    pub tasks: TaskTracker,
    /// Whether this replica can hear its bases (see [`super::sight`]).
    pub sight: watch::Receiver<Sight>,
}

impl Context {
    /// The wall clock for timestamps this replica writes (see [`Settings::clock_offset`]).
    pub fn wall_now(&self) -> Timestamp {
        Timestamp::now()
            .checked_add(self.settings.clock_offset)
            .unwrap_or_else(|_| Timestamp::now())
    }

    /// Answers a baseline query in the background.
    pub fn answer_baseline(self: &Arc<Self>, base: BaseIdentity, req: BaselineRequest) {
        let ctx = self.clone();
        self.tasks.spawn(async move {
            let cluster = req.meta.cluster_name.clone();
            let fut = baseline::query(&ctx.deployments, &ctx.settings.env, &cluster, &ctx.metrics);
            match tokio::time::timeout(ctx.settings.api_timeout, fut).await {
                Ok(Ok(list)) => {
                    tracing::info!(%base, cluster, modules = list.len(), "answering baseline query");
                    let _ = req.reply.send(list);
                }
                Ok(Err(e)) => tracing::warn!(%base, error = %e, "baseline query failed"),
                Err(_) => tracing::warn!(%base, "baseline query timed out"),
            }
        });
    }
}

/// Messages from the router.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// A heartbeat.
    Heartbeat {
        /// Tunnel it came on.
        tunnel: TunnelKind,
        /// Body.
        status: Box<BaseStatus>,
    },
    /// A health report.
    Health(Box<HealthData>),
    /// Module states.
    Bizs {
        /// Records.
        records: Vec<BizRecord>,
        /// Complete list.
        complete: bool,
    },
    /// A baseline query to answer if this replica owns the base.
    Baseline(BaselineRequest),
    /// The Node as the watch saw it.
    NodeObserved(Box<Node>),
    /// The Node was deleted.
    NodeGone,
    /// The Lease changed.
    LeaseChanged,
}

/// Reported to the router when a supervisor ends, so it can forget it.
#[derive(Debug)]
pub struct Exited {
    /// The base.
    pub name: VNodeName,
    /// Which incarnation ended.
    pub generation: u64,
}

/// How many of our own write versions to remember, to recognise their watch echoes.
const OWN_VERSIONS: usize = 16;

/// The supervisor of one base.
#[derive(Debug)]
pub struct Supervisor {
    name: VNodeName,
    base: BaseIdentity,
    generation: u64,
    ctx: Arc<Context>,
    facts: BaseFacts,
    machine: Machine,
    tunnel: Option<TunnelKind>,
    attached_to: Option<TunnelKind>,
    observed: Option<Node>,
    own_versions: VecDeque<String>,
    lease: Option<Lease>,
    pending_baselines: Vec<(BaselineRequest, Instant)>,
    inbox: Arc<Mailbox>,
    exits: mpsc::UnboundedSender<Exited>,
    state: Option<VNodeState>,
    acting_until: Option<Instant>,
    /// The Lease record as last seen and when this replica first saw it (its own clock):
    /// another holder's Lease lapses by how long it stays unchanged, not by its renewTime.
    lease_seen: Option<(LeaseView, Instant)>,
    /// Sight as last fed to the machine.
    blind: Option<bool>,
    sight: watch::Receiver<Sight>,
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn version_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<String> {
    meta.resource_version.clone()
}

impl Supervisor {
    /// Delays the first Lease claim (workload back-off).
    #[must_use]
    pub fn with_claim_delay(mut self, delay: std::time::Duration) -> Supervisor {
        self.machine = self.machine.first_check_after(delay);
        self
    }

    /// A supervisor for a base heard from on `tunnel`.
    #[allow(clippy::too_many_arguments)]
    pub fn from_heartbeat(
        name: VNodeName,
        generation: u64,
        tunnel: TunnelKind,
        status: &BaseStatus,
        ctx: Arc<Context>,
        inbox: Arc<Mailbox>,
        exits: mpsc::UnboundedSender<Exited>,
        now: Instant,
    ) -> Supervisor {
        let facts = BaseFacts::from_heartbeat(status);
        Supervisor::new(
            name,
            generation,
            facts,
            Some(tunnel),
            None,
            ctx,
            inbox,
            exits,
            now,
        )
    }

    /// A supervisor for a Node found at start-up, before any heartbeat. Its base gets a
    /// grace period of the dead threshold to show up.
    pub fn from_node(
        name: VNodeName,
        generation: u64,
        node: Node,
        ctx: Arc<Context>,
        inbox: Arc<Mailbox>,
        exits: mpsc::UnboundedSender<Exited>,
        now: Instant,
    ) -> Supervisor {
        let facts = BaseFacts::from_node(&node);
        let tunnel = ctx.tunnels.for_rediscovered(facts.port != 0);
        Supervisor::new(
            name,
            generation,
            facts,
            tunnel,
            Some(node),
            ctx,
            inbox,
            exits,
            now,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        name: VNodeName,
        generation: u64,
        facts: BaseFacts,
        tunnel: Option<TunnelKind>,
        observed: Option<Node>,
        ctx: Arc<Context>,
        inbox: Arc<Mailbox>,
        exits: mpsc::UnboundedSender<Exited>,
        now: Instant,
    ) -> Supervisor {
        let machine = Machine::named(&name.to_string(), now, ctx.settings.timings);
        Supervisor {
            base: name.identity().clone(),
            name,
            generation,
            machine,
            sight: ctx.sight.clone(),
            ctx,
            facts,
            tunnel,
            attached_to: None,
            observed,
            own_versions: VecDeque::new(),
            lease: None,
            pending_baselines: Vec::new(),
            inbox,
            exits,
            state: None,
            acting_until: None,
            lease_seen: None,
            blind: None,
        }
    }

    /// Runs until the base is gone, or until cancelled (then the Lease is released).
    pub async fn run(mut self, cancel: CancellationToken) {
        let span = tracing::info_span!("vnode", node = %self.name);
        tracing::debug!(parent: &span, "supervisor started");
        let mut sight_open = true;
        loop {
            self.look(&span).await;
            let now = Instant::now();
            let wake = self.machine.next_wakeup(now);
            let mut inputs = Vec::new();
            tokio::select! {
                biased;
                () = cancel.cancelled() => inputs.push(Input::Shutdown),
                () = self.inbox.wait() => {
                    for m in self.inbox.take() {
                        inputs.extend(self.on_msg(m));
                    }
                }
                changed = self.sight.changed(), if sight_open => sight_open = changed.is_ok(),
                () = sleep_until(wake) => inputs.push(Input::Tick),
            }
            for input in inputs {
                self.step(input, &span).await;
                if self.machine.phase() == Phase::Done {
                    break;
                }
            }
            // A heartbeat may have moved the base to another tunnel, with another sight.
            self.look(&span).await;
            self.settle_baselines(Instant::now());
            self.publish_state();
            if self.machine.phase() == Phase::Done {
                break;
            }
        }
        self.inbox.close();
        tracing::debug!(parent: &span, "supervisor finished");
        self.ctx.registry.remove(&self.name);
        let _ = self.exits.send(Exited {
            name: self.name.clone(),
            generation: self.generation,
        });
    }

    /// Feeds the machine whether this replica can hear the base, when that changed.
    async fn look(&mut self, span: &tracing::Span) {
        if self.machine.phase() == Phase::Done {
            return;
        }
        let blind = self.sight.borrow_and_update().blind_for(self.tunnel);
        if self.blind != Some(blind) {
            if self.blind.is_some() || blind {
                tracing::info!(parent: span, blind, "sight changed");
            }
            self.blind = Some(blind);
            self.step(Input::Blind(blind), span).await;
        }
    }

    async fn step(&mut self, input: Input, span: &tracing::Span) {
        let mut queue: VecDeque<Effect> = self.machine.step(input, Instant::now()).into();
        while let Some(effect) = queue.pop_front() {
            if let Some(feedback) = self.execute(effect, span).await {
                queue.extend(self.machine.step(feedback, Instant::now()));
            }
        }
    }

    fn on_msg(&mut self, msg: SupervisorMsg) -> Option<Input> {
        match msg {
            SupervisorMsg::Heartbeat { tunnel, status } => {
                self.tunnel = Some(tunnel);
                self.facts.apply_heartbeat(&status);
                Some(Input::Heartbeat {
                    activated: status.state == BizState::Activated,
                })
            }
            SupervisorMsg::Health(data) => {
                self.facts
                    .apply_health(&data, self.ctx.settings.node.unbounded_metaspace_bytes);
                // Upstream: activated refreshes, any other non-empty state closes, no state
                // leaves liveness alone. Ours: BROKEN (the agent answers, its base JVM is
                // down) is a sign of life with the Node NotReady (see `BaseFacts::runtime_down`),
                // never a deletion: the JVM may be restarting.
                let activated = data
                    .master_biz_info
                    .as_ref()
                    .and_then(|m| match m.biz_state {
                        BizState::Activated | BizState::Broken => Some(true),
                        BizState::Unknown => None,
                        _ => Some(false),
                    });
                Some(Input::Health { activated })
            }
            SupervisorMsg::Bizs { records, complete } => {
                self.ctx.registry.record_bizs(&self.name, records, complete);
                None
            }
            SupervisorMsg::Baseline(req) => {
                self.pending_baselines.push((
                    req,
                    Instant::now() + self.ctx.settings.timings.baseline_wait,
                ));
                Some(Input::Tick)
            }
            SupervisorMsg::NodeObserved(node) => {
                let rv = version_of(&node.metadata);
                if rv.as_ref().is_some_and(|v| self.own_versions.contains(v)) {
                    return None;
                }
                self.observed = Some(*node);
                Some(Input::NodeChanged)
            }
            SupervisorMsg::NodeGone => {
                self.observed = None;
                Some(Input::NodeGone)
            }
            SupervisorMsg::LeaseChanged => Some(Input::LeaseChanged),
        }
    }

    /// Answers pending baseline queries once this replica owns the base; drops them when
    /// another replica does (only the owner answers, unlike upstream) or when they are old.
    fn settle_baselines(&mut self, now: Instant) {
        if self.pending_baselines.is_empty() {
            return;
        }
        match self.machine.phase() {
            Phase::Owner => {
                for (req, _) in self.pending_baselines.drain(..) {
                    self.ctx.answer_baseline(self.base.clone(), req);
                }
            }
            Phase::Standby if self.machine.lease_known() => self.pending_baselines.clear(),
            Phase::Standby => self
                .pending_baselines
                .retain(|(_, deadline)| *deadline > now),
            Phase::Deleting | Phase::Done => self.pending_baselines.clear(),
        }
    }

    fn publish_state(&mut self) {
        let state = match self.machine.phase() {
            Phase::Standby => VNodeState::Standby,
            // A base whose JVM is down holds its module work like an unreachable one: installs
            // wait for the JVM, and a JVM that comes back empty gets its modules again.
            Phase::Owner if self.machine.ready(Instant::now()) && !self.facts.runtime_down => {
                VNodeState::Ready
            }
            Phase::Owner => VNodeState::Unreachable,
            Phase::Deleting | Phase::Done => VNodeState::Deleting,
        };
        if self.state != Some(state) {
            self.state = Some(state);
            self.ctx.registry.set_state(&self.name, state, self.tunnel);
        }
        // Readers need both "owned" and an unexpired deadline to act, so the order of the two
        // writes never lets them act when they should not.
        let acting_until = self.machine.acting_until();
        if self.acting_until != acting_until {
            self.acting_until = acting_until;
            self.ctx.registry.set_acting_until(&self.name, acting_until);
        }
    }

    async fn execute(&mut self, effect: Effect, span: &tracing::Span) -> Option<Input> {
        match effect {
            Effect::CheckLease {
                renew_due,
                base_dead,
            } => Some(Input::Lease(
                self.check_lease(renew_due, base_dead, span).await,
            )),
            Effect::Attach => {
                self.attach(span).await;
                None
            }
            Effect::Detach => {
                self.detach(span).await;
                None
            }
            Effect::SyncNode => {
                let ok = match tokio::time::timeout(
                    self.ctx.settings.api_timeout,
                    self.sync_node(span),
                )
                .await
                {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        tracing::warn!(parent: span, error = %e, "could not update node; will retry");
                        false
                    }
                    Err(_) => {
                        tracing::warn!(parent: span, "node update timed out; will retry");
                        false
                    }
                };
                Some(Input::NodeSynced { ok })
            }
            Effect::PollHealth => {
                self.send(Command::Health, span).await;
                None
            }
            Effect::PollBiz => {
                self.send(Command::QueryAllBiz, span).await;
                None
            }
            Effect::Delete => Some(Input::Deleted(self.delete(span).await)),
            Effect::Release => {
                self.release(span).await;
                None
            }
            Effect::Record(t) => {
                self.record(t, span);
                None
            }
        }
    }

    fn tunnel(&self) -> Option<crate::tunnel::AnyTunnel> {
        self.ctx.tunnels.get(self.tunnel?)
    }

    async fn attach(&mut self, span: &tracing::Span) {
        let Some(t) = self.tunnel() else { return };
        let (host, port) = self.facts.arklet_endpoint();
        match t.attach(&self.base, Some(Endpoint { host, port })).await {
            Ok(()) => self.attached_to = Some(t.kind()),
            Err(e) => {
                // The MQTT tunnel still restores the subscription on its next reconnect.
                self.attached_to = Some(t.kind());
                self.ctx.metrics.tunnel_error(t.kind(), e.metric_label());
                tracing::warn!(parent: span, error = %e, "attach failed");
            }
        }
    }

    async fn detach(&mut self, span: &tracing::Span) {
        let Some(kind) = self.attached_to.take() else {
            return;
        };
        if let Some(t) = self.ctx.tunnels.get(kind)
            && let Err(e) = t.detach(&self.base).await
        {
            tracing::debug!(parent: span, error = %e, "detach failed");
        }
    }

    async fn send(&mut self, cmd: Command, span: &tracing::Span) {
        // A heartbeat may have moved the base to the other tunnel.
        if self.attached_to.is_some() && self.attached_to != self.tunnel {
            self.detach(span).await;
            self.attach(span).await;
        }
        let Some(t) = self.tunnel() else { return };
        let what = cmd.as_str();
        self.ctx.metrics.command(t.kind(), what);
        if let Err(e) = t.send(&self.base, cmd).await {
            self.ctx.metrics.tunnel_error(t.kind(), e.metric_label());
            tracing::debug!(parent: span, command = what, error = %e, "command not sent");
        }
    }

    fn lease_ref(&self) -> ObjectRef<Lease> {
        ObjectRef::new(&self.name.to_string()).within(labels::LEASE_NAMESPACE)
    }

    async fn get_lease(&self) -> Result<Option<Lease>, kube::Error> {
        let timer = self.ctx.metrics.api("lease", "get");
        match timer.done(self.ctx.leases.get(&self.name.to_string()).await) {
            Ok(l) => Ok(Some(l)),
            Err(e) if status_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn check_lease(
        &mut self,
        renew_due: bool,
        base_dead: bool,
        span: &tracing::Span,
    ) -> LeaseOutcome {
        let limit = self.ctx.settings.api_timeout;
        match tokio::time::timeout(limit, self.check_lease_inner(renew_due, base_dead)).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => {
                tracing::warn!(parent: span, error = %e, "lease check failed; will retry");
                LeaseOutcome::Failed
            }
            Err(_) => {
                tracing::warn!(parent: span, "lease check timed out; will retry");
                LeaseOutcome::Failed
            }
        }
    }

    async fn check_lease_inner(
        &mut self,
        renew_due: bool,
        base_dead: bool,
    ) -> Result<LeaseOutcome, kube::Error> {
        let me = self.ctx.settings.client_id.clone();
        let timings = self.ctx.settings.timings;
        let cached = self.ctx.lease_store.get(&self.lease_ref());
        let mut current: Option<Lease> = match &self.lease {
            // Our last write is the freshest copy unless the cache shows another holder, which
            // is confirmed with a read.
            Some(ours) => match cached.as_deref().map(LeaseView::of) {
                Some(v)
                    if v.holder().is_some_and(|h| h != me)
                        && cached
                            .as_ref()
                            .and_then(|c| c.metadata.resource_version.clone())
                            != ours.metadata.resource_version =>
                {
                    self.get_lease().await?
                }
                _ => Some(ours.clone()),
            },
            None => cached.map(|c| (*c).clone()),
        };
        for attempt in 0..2 {
            let now = self.ctx.wall_now();
            let view = current.as_ref().map(LeaseView::of);
            let unchanged_for = self.unchanged_for(view.as_ref());
            let decision = lease::decide(view.as_ref(), unchanged_for, &me, base_dead, renew_due);
            let write = match (&decision, &current) {
                (LeaseDecision::Keep, _) => return Ok(LeaseOutcome::Held { renewed: false }),
                (LeaseDecision::Standby { .. }, _) => {
                    self.lease = None;
                    return Ok(LeaseOutcome::HeldByOther);
                }
                (LeaseDecision::Absent, _) => {
                    self.lease = None;
                    return Ok(LeaseOutcome::Absent);
                }
                (LeaseDecision::Create, _) => {
                    let l = lease::new_lease(
                        &self.name,
                        &self.ctx.settings.env,
                        &me,
                        now,
                        timings.lease_duration,
                    );
                    let timer = self.ctx.metrics.api("lease", "create");
                    timer.done(self.ctx.leases.create(&PostParams::default(), &l).await)
                }
                (LeaseDecision::Renew, Some(cur)) => {
                    let l = lease::renewed(cur, &me, now, timings.lease_duration);
                    let timer = self.ctx.metrics.api("lease", "replace");
                    timer.done(
                        self.ctx
                            .leases
                            .replace(&self.name.to_string(), &PostParams::default(), &l)
                            .await,
                    )
                }
                (LeaseDecision::TakeOver, Some(cur)) => {
                    let l = lease::taken_over(cur, &me, now, timings.lease_duration);
                    let timer = self.ctx.metrics.api("lease", "replace");
                    timer.done(
                        self.ctx
                            .leases
                            .replace(&self.name.to_string(), &PostParams::default(), &l)
                            .await,
                    )
                }
                // Renew/TakeOver are only decided on an existing Lease.
                (LeaseDecision::Renew | LeaseDecision::TakeOver, None) => {
                    return Ok(LeaseOutcome::Failed);
                }
            };
            match write {
                Ok(l) => {
                    self.lease = Some(l);
                    return Ok(LeaseOutcome::Held { renewed: true });
                }
                // Someone wrote since we read (or the cache lagged): read and decide again.
                Err(e) if attempt == 0 && matches!(status_code(&e), Some(409)) => {
                    current = self.get_lease().await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(LeaseOutcome::Failed)
    }

    /// How long this replica has seen the Lease record unchanged, on its own clock.
    fn unchanged_for(&mut self, view: Option<&LeaseView>) -> std::time::Duration {
        let now = Instant::now();
        let Some(view) = view else {
            self.lease_seen = None;
            return std::time::Duration::ZERO;
        };
        match &self.lease_seen {
            Some((seen, at)) if seen == view => now.saturating_duration_since(*at),
            _ => {
                self.lease_seen = Some((view.clone(), now));
                std::time::Duration::ZERO
            }
        }
    }

    async fn release(&mut self, span: &tracing::Span) {
        let Some(l) = self.lease.take() else { return };
        let released = lease::released(&l, self.ctx.wall_now());
        let timer = self.ctx.metrics.api("lease", "replace");
        let name = self.name.to_string();
        let pp = PostParams::default();
        let fut = self.ctx.leases.replace(&name, &pp, &released);
        match tokio::time::timeout(self.ctx.settings.api_timeout, fut).await {
            Ok(r) => {
                if let Err(e) = timer.done(r) {
                    tracing::warn!(parent: span, error = %e, "could not release lease");
                } else {
                    tracing::info!(parent: span, "lease released");
                }
            }
            Err(_) => tracing::warn!(parent: span, "lease release timed out"),
        }
    }

    fn remember_version(&mut self, node: &Node) {
        if let Some(v) = version_of(&node.metadata) {
            if self.own_versions.len() == OWN_VERSIONS {
                self.own_versions.pop_front();
            }
            self.own_versions.push_back(v);
        }
    }

    async fn sync_node(&mut self, span: &tracing::Span) -> Result<(), kube::Error> {
        let name = self.name.to_string();
        let nodes = self.ctx.nodes.clone();
        let metrics = self.ctx.metrics.clone();
        if self.observed.is_none() {
            let found = match metrics.api("node", "get").done(nodes.get(&name).await) {
                Ok(n) => Some(n),
                Err(e) if status_code(&e) == Some(404) => None,
                Err(e) => return Err(e),
            };
            let node = match found {
                Some(n) => n,
                None => {
                    let fresh = node::new_node(&self.name, &self.facts, &self.ctx.template);
                    match metrics
                        .api("node", "create")
                        .done(nodes.create(&PostParams::default(), &fresh).await)
                    {
                        Ok(n) => {
                            tracing::info!(parent: span, "node created");
                            self.event(
                                false,
                                "RegisteredNode",
                                format!(
                                    "Node {name} registered by {}",
                                    self.ctx.settings.client_id
                                ),
                                n.metadata.uid.clone(),
                            );
                            n
                        }
                        Err(e) if status_code(&e) == Some(409) => {
                            metrics.api("node", "get").done(nodes.get(&name).await)?
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            self.remember_version(&node);
            self.observed = Some(node);
        }
        let Some(observed) = self.observed.as_ref() else {
            return Ok(());
        };

        if let Some(patch) = node::metadata_patch(observed, &self.facts, &self.ctx.settings.env) {
            let r = metrics.api("node", "patch").done(
                nodes
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await,
            );
            match r {
                Ok(n) => {
                    tracing::info!(parent: span, "node labels/taints updated");
                    self.remember_version(&n);
                    self.observed = Some(n);
                }
                Err(e) => {
                    // Gone or changed under us: read it again next time.
                    if matches!(status_code(&e), Some(404 | 409)) {
                        self.observed = None;
                    }
                    return Err(e);
                }
            }
        }

        let readiness = if self.machine.ready(Instant::now()) {
            Readiness::Ready
        } else {
            Readiness::Unreachable
        };
        let desired = node::desired_status(&self.facts, readiness, &self.ctx.template);
        let observed_status = self.observed.as_ref().and_then(|n| n.status.as_ref());
        match node::status_update(observed_status, desired, self.ctx.wall_now()) {
            None => {
                metrics.status_unchanged.inc();
            }
            Some(status) => {
                let patch = json!({ "status": status });
                let r = metrics.api("node_status", "patch").done(
                    nodes
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await,
                );
                match r {
                    Ok(n) => {
                        tracing::debug!(parent: span, ?readiness, "node status updated");
                        self.remember_version(&n);
                        self.observed = Some(n);
                    }
                    Err(e) => {
                        if matches!(status_code(&e), Some(404 | 409)) {
                            self.observed = None;
                        }
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    async fn delete(&mut self, span: &tracing::Span) -> DeleteOutcome {
        match tokio::time::timeout(self.ctx.settings.api_timeout, self.delete_inner()).await {
            Ok(Ok(outcome)) => {
                if outcome == DeleteOutcome::Deleted {
                    tracing::info!(parent: span, "node and lease deleted");
                }
                outcome
            }
            Ok(Err(e)) => {
                tracing::warn!(parent: span, error = %e, "could not delete node; will retry");
                DeleteOutcome::Failed
            }
            Err(_) => DeleteOutcome::Failed,
        }
    }

    async fn delete_inner(&mut self) -> Result<DeleteOutcome, kube::Error> {
        let me = &self.ctx.settings.client_id;
        let name = self.name.to_string();
        let fresh = self.get_lease().await?;
        if let Some(l) = &fresh
            && LeaseView::of(l).holder().is_some_and(|h| h != me)
        {
            // Another replica took over (it saw the base alive); the Node is theirs.
            self.lease = None;
            return Ok(DeleteOutcome::NotOwner);
        }
        let metrics = self.ctx.metrics.clone();
        match metrics
            .api("node", "delete")
            .done(self.ctx.nodes.delete(&name, &DeleteParams::default()).await)
        {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => return Err(e),
        }
        self.observed = None;
        if let Some(l) = fresh {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: l.metadata.resource_version.clone(),
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            match metrics
                .api("lease", "delete")
                .done(self.ctx.leases.delete(&name, &dp).await)
            {
                Ok(_) => {}
                Err(e) if matches!(status_code(&e), Some(404 | 409)) => {}
                Err(e) => return Err(e),
            }
        }
        self.lease = None;
        Ok(DeleteOutcome::Deleted)
    }

    fn event(&self, warning: bool, reason: &'static str, note: String, uid: Option<String>) {
        self.ctx.events.emit(NodeEvent {
            node: self.name.to_string(),
            uid: uid.or_else(|| self.observed.as_ref().and_then(|n| n.metadata.uid.clone())),
            warning,
            reason,
            note,
        });
    }

    fn record(&self, t: Transition, span: &tracing::Span) {
        let timings = &self.ctx.settings.timings;
        let me = &self.ctx.settings.client_id;
        let (label, warning, reason, note) = match t {
            Transition::Acquired => (
                "acquired",
                false,
                "LeaseAcquired",
                format!("{me} now serves this base"),
            ),
            Transition::Lost => (
                "lost",
                false,
                "LeaseLost",
                format!("{me} no longer serves this base"),
            ),
            Transition::Fenced => (
                "fenced",
                true,
                "LeaseRenewFailed",
                format!(
                    "{me} could not renew the Lease within {:?} and stopped acting for this \
                     base until it can",
                    timings.lease_renew_deadline
                ),
            ),
            Transition::Ready => (
                "ready",
                false,
                "NodeReady",
                "base is alive again".to_owned(),
            ),
            Transition::Unreachable => (
                "unreachable",
                true,
                "NodeNotReady",
                format!(
                    "no heartbeat or health report for more than {:?}",
                    timings.unreachable_after
                ),
            ),
            Transition::Gone(DeathCause::Deactivated) => (
                "deactivated",
                false,
                "BaseDeactivated",
                "base reported it is no longer activated; deleting the node".to_owned(),
            ),
            Transition::Gone(DeathCause::Silent) => (
                "dead",
                true,
                "BaseDead",
                format!(
                    "no heartbeat or health report for {:?}; deleting the node",
                    timings.dead_after
                ),
            ),
            Transition::Released => (
                "released",
                false,
                "LeaseReleased",
                format!("{me} is shutting down"),
            ),
        };
        self.ctx
            .metrics
            .transitions
            .get_or_create(&TransitionLabels { transition: label })
            .inc();
        tracing::info!(parent: span, transition = label, "{note}");
        self.event(warning, reason, note, None);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

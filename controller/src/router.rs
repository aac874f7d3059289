//! Routes tunnel events and Node/Lease watch events to per-base supervisors, starts a
//! supervisor for each newly heard base and, once at start-up, for each existing vnode of
//! this env (so a restarted controller resumes its bases instead of deleting them).
//!
//! The router never waits on a supervisor: each has a coalescing [`Mailbox`] that keeps the
//! latest state per kind of news, so nothing that happens once (a DEACTIVATED heartbeat, a
//! Node delete event) is lost to a busy supervisor. A supervisor that ended is replaced on
//! the next activated heartbeat.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use koupleless_protocol::{BaseIdentity, BizState, VNodeName};
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::labels;
use crate::ops::Readiness;
use crate::tunnel::{BaselineRequest, TunnelEvent, TunnelKind};
use crate::vnode::mailbox::Mailbox;
use crate::vnode::supervisor::{Context, Exited, Supervisor, SupervisorMsg};

#[derive(Debug)]
struct Handle {
    mailbox: Arc<Mailbox>,
    generation: u64,
}

/// The router task.
#[derive(Debug)]
pub struct Router {
    ctx: Arc<Context>,
    readiness: Arc<Readiness>,
    supervisors: HashMap<VNodeName, Handle>,
    next_generation: u64,
    exits_tx: mpsc::UnboundedSender<Exited>,
    exits_rx: mpsc::UnboundedReceiver<Exited>,
    /// Baseline queries from bases that have no supervisor yet (the Java base asks before
    /// its first heartbeat, trap T25).
    pending: HashMap<BaseIdentity, Vec<(BaselineRequest, Instant)>>,
    tasks: TaskTracker,
    supervisors_cancel: CancellationToken,
    rediscovered: bool,
    init_nodes: Vec<Node>,
}

impl Router {
    /// A router over `ctx`.
    pub fn new(ctx: Arc<Context>, readiness: Arc<Readiness>) -> Router {
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        Router {
            ctx,
            readiness,
            supervisors: HashMap::new(),
            next_generation: 0,
            exits_tx,
            exits_rx,
            pending: HashMap::new(),
            tasks: TaskTracker::new(),
            supervisors_cancel: CancellationToken::new(),
            rediscovered: false,
            init_nodes: Vec::new(),
        }
    }

    /// Runs until cancelled; then stops every supervisor (owners release their Leases) and
    /// waits for them, at most `drain`.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<TunnelEvent>,
        lease_writer: Writer<Lease>,
        cancel: CancellationToken,
        drain: Duration,
    ) {
        let env = self.ctx.settings.env.to_string();
        let nodes = watcher(
            self.ctx.nodes.clone(),
            watcher::Config::default().labels(&labels::vnode_selector(&env)),
        )
        .default_backoff();
        let leases = reflector(
            lease_writer,
            watcher(
                self.ctx.leases.clone(),
                watcher::Config::default().labels(&labels::lease_selector(&env)),
            ),
        )
        .default_backoff();
        let mut nodes = std::pin::pin!(nodes);
        let mut leases = std::pin::pin!(leases);
        let mut prune = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                Some(ev) = events.recv() => self.on_tunnel_event(ev),
                Some(ev) = nodes.next() => match ev {
                    Ok(ev) => self.on_node_event(ev),
                    Err(e) => tracing::warn!(error = %e, "node watch failed; retrying"),
                },
                Some(ev) = leases.next() => match ev {
                    Ok(ev) => self.on_lease_event(ev),
                    Err(e) => tracing::warn!(error = %e, "lease watch failed; retrying"),
                },
                Some(exit) = self.exits_rx.recv() => {
                    if self.supervisors.get(&exit.name).is_some_and(|h| h.generation == exit.generation) {
                        self.supervisors.remove(&exit.name);
                    }
                }
                _ = prune.tick() => {
                    let now = Instant::now();
                    self.pending.retain(|_, reqs| {
                        reqs.retain(|(_, deadline)| *deadline > now);
                        !reqs.is_empty()
                    });
                }
            }
        }
        tracing::info!(
            supervisors = self.supervisors.len(),
            "stopping vnode supervisors"
        );
        self.pending.clear();
        self.supervisors_cancel.cancel();
        self.tasks.close();
        if tokio::time::timeout(drain, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("supervisors did not stop in time");
        }
        // The watch streams are dropped only now, after the supervisors, which may still
        // read the Lease cache while releasing.
    }

    fn spawn(
        &mut self,
        name: VNodeName,
        make: impl FnOnce(u64, Arc<Mailbox>) -> Supervisor,
    ) -> Arc<Mailbox> {
        let mailbox = Arc::new(Mailbox::default());
        let generation = self.next_generation;
        self.next_generation += 1;
        let sup = make(generation, mailbox.clone());
        let span = tracing::debug_span!("supervisor", node = %name);
        self.tasks.spawn(
            sup.run(self.supervisors_cancel.child_token())
                .instrument(span),
        );
        self.supervisors.insert(
            name,
            Handle {
                mailbox: mailbox.clone(),
                generation,
            },
        );
        mailbox
    }

    /// Sends to a base's supervisor. `Err(msg)` when there is none (or it ended).
    fn forward(&mut self, name: &VNodeName, msg: SupervisorMsg) -> Result<(), SupervisorMsg> {
        let Some(h) = self.supervisors.get(name) else {
            return Err(msg);
        };
        let delivered = h.mailbox.put(msg);
        if delivered.is_err() {
            self.supervisors.remove(name);
        }
        delivered
    }

    fn name_of(&self, tunnel: TunnelKind, base: &BaseIdentity) -> Option<VNodeName> {
        match VNodeName::new(base.clone(), self.ctx.settings.env.clone()) {
            Ok(n) => Some(n),
            Err(e) => {
                self.ctx.metrics.tunnel_error(tunnel, "invalid_identity");
                tracing::debug!(%base, error = %e, "base identity cannot name a Node");
                None
            }
        }
    }

    fn on_tunnel_event(&mut self, ev: TunnelEvent) {
        let tunnel = ev.tunnel();
        match ev {
            TunnelEvent::Heartbeat { base, status, .. } => {
                self.ctx
                    .metrics
                    .heartbeats
                    .get_or_create(&crate::metrics::TunnelLabels {
                        tunnel: tunnel.into(),
                    })
                    .inc();
                let Some(name) = self.name_of(tunnel, &base) else {
                    return;
                };
                let activated = status.state == BizState::Activated;
                let msg = SupervisorMsg::Heartbeat {
                    tunnel,
                    status: Box::new(status.clone()),
                };
                if self.forward(&name, msg).is_ok() {
                    return;
                }
                if !activated {
                    // Upstream does nothing for a deactivated unknown base either.
                    tracing::debug!(node = %name, "deactivated heartbeat for an unknown base");
                    return;
                }
                tracing::info!(node = %name, %tunnel, "base discovered");
                let ctx = self.ctx.clone();
                let exits = self.exits_tx.clone();
                let n = name.clone();
                let first = status.clone();
                let owned = self.ctx.registry.owned().len();
                let delay = self.ctx.settings.workload.claim_delay(
                    owned,
                    self.supervisors.len(),
                    base.as_str(),
                    &self.ctx.settings.client_id,
                );
                let tx = self.spawn(name.clone(), move |generation, rx| {
                    Supervisor::from_heartbeat(
                        n,
                        generation,
                        tunnel,
                        &first,
                        ctx,
                        rx,
                        exits,
                        Instant::now(),
                    )
                    .with_claim_delay(delay)
                });
                let _ = tx.put(SupervisorMsg::Heartbeat {
                    tunnel,
                    status: Box::new(status),
                });
                for (req, _) in self.pending.remove(&base).unwrap_or_default() {
                    let _ = tx.put(SupervisorMsg::Baseline(req));
                }
            }
            TunnelEvent::Health { base, data, .. } => {
                if let Some(name) = self.name_of(tunnel, &base) {
                    let _ = self.forward(&name, SupervisorMsg::Health(data));
                }
            }
            TunnelEvent::Bizs {
                base,
                records,
                complete,
                ..
            } => {
                if let Some(name) = self.name_of(tunnel, &base) {
                    let _ = self.forward(&name, SupervisorMsg::Bizs { records, complete });
                }
            }
            TunnelEvent::Baseline { base, request, .. } => {
                if tunnel == TunnelKind::Http {
                    // One base, one POST, one answer: no duplicate replies to avoid.
                    self.ctx.answer_baseline(base, request);
                    return;
                }
                let Some(name) = self.name_of(tunnel, &base) else {
                    return;
                };
                if let Err(SupervisorMsg::Baseline(request)) =
                    self.forward(&name, SupervisorMsg::Baseline(request))
                {
                    let deadline = Instant::now() + self.ctx.settings.timings.baseline_wait;
                    self.pending
                        .entry(base)
                        .or_default()
                        .push((request, deadline));
                }
            }
        }
    }

    fn on_node_event(&mut self, ev: watcher::Event<Node>) {
        match ev {
            watcher::Event::Init => self.init_nodes.clear(),
            watcher::Event::InitApply(node) => self.init_nodes.push(node),
            watcher::Event::InitDone => {
                let nodes = std::mem::take(&mut self.init_nodes);
                let first = !self.rediscovered;
                for node in nodes {
                    let Some(name) = node
                        .metadata
                        .name
                        .as_deref()
                        .and_then(|n| n.parse::<VNodeName>().ok())
                    else {
                        continue;
                    };
                    if self.supervisors.contains_key(&name) {
                        let _ = self.forward(&name, SupervisorMsg::NodeObserved(Box::new(node)));
                    } else if first {
                        tracing::info!(node = %name, "resuming existing vnode");
                        let ctx = self.ctx.clone();
                        let exits = self.exits_tx.clone();
                        let n = name.clone();
                        self.spawn(name, move |generation, rx| {
                            Supervisor::from_node(
                                n,
                                generation,
                                node,
                                ctx,
                                rx,
                                exits,
                                Instant::now(),
                            )
                        });
                    }
                }
                self.rediscovered = true;
                self.readiness.nodes_synced.store(true, Ordering::Release);
            }
            watcher::Event::Apply(node) => {
                if let Some(name) = node
                    .metadata
                    .name
                    .as_deref()
                    .and_then(|n| n.parse::<VNodeName>().ok())
                {
                    let _ = self.forward(&name, SupervisorMsg::NodeObserved(Box::new(node)));
                }
            }
            watcher::Event::Delete(node) => {
                if let Some(name) = node
                    .metadata
                    .name
                    .as_deref()
                    .and_then(|n| n.parse::<VNodeName>().ok())
                {
                    let _ = self.forward(&name, SupervisorMsg::NodeGone);
                }
            }
        }
    }

    fn on_lease_event(&mut self, ev: watcher::Event<Lease>) {
        match ev {
            watcher::Event::InitDone => {
                self.readiness.leases_synced.store(true, Ordering::Release);
            }
            watcher::Event::Apply(l) | watcher::Event::Delete(l) => {
                if let Some(name) = l
                    .metadata
                    .name
                    .as_deref()
                    .and_then(|n| n.parse::<VNodeName>().ok())
                {
                    let _ = self.forward(&name, SupervisorMsg::LeaseChanged);
                }
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
    }
}

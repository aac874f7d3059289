//! The inbox of one supervisor: the latest state per kind of news, never a lossy queue.
//!
//! A bounded channel that drops on overflow loses exactly the messages that happen once (a
//! DEACTIVATED heartbeat, a Node delete event, an install outcome) when a base is busy. Here
//! the router never blocks and nothing that still matters is lost: each kind of news keeps
//! its latest value (a newer heartbeat supersedes an older one, a complete module list
//! supersedes earlier outcomes, a newer outcome of the same module supersedes the older one),
//! so the inbox stays bounded by the number of modules, not by the message rate.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::Node;
use koupleless_protocol::{BaseStatus, HealthData};
use tokio::sync::Notify;

use super::supervisor::SupervisorMsg;
use crate::tunnel::{BaselineRequest, BizRecord, TunnelKind};

/// Baseline queries kept per base; an older one beyond this is dropped unanswered (the base
/// gets the answer to its newest query, which is the same list).
const MAX_BASELINES: usize = 8;

#[derive(Debug)]
enum NodeNews {
    Observed(Box<Node>),
    Gone,
}

#[derive(Debug, Default)]
struct Pending {
    node: Option<NodeNews>,
    lease_changed: bool,
    heartbeat: Option<(TunnelKind, Box<BaseStatus>)>,
    health: Option<Box<HealthData>>,
    complete: Option<Vec<BizRecord>>,
    outcomes: BTreeMap<String, BizRecord>,
    baselines: Vec<BaselineRequest>,
}

impl Pending {
    fn put(&mut self, msg: SupervisorMsg) {
        match msg {
            SupervisorMsg::Heartbeat { tunnel, status } => self.heartbeat = Some((tunnel, status)),
            SupervisorMsg::Health(data) => self.health = Some(data),
            SupervisorMsg::Bizs { records, complete } => {
                if complete {
                    self.complete = Some(records);
                    self.outcomes.clear();
                } else {
                    for r in records {
                        self.outcomes.insert(r.key(), r);
                    }
                }
            }
            SupervisorMsg::Baseline(req) => {
                if self.baselines.len() == MAX_BASELINES {
                    self.baselines.remove(0);
                }
                self.baselines.push(req);
            }
            SupervisorMsg::NodeObserved(node) => self.node = Some(NodeNews::Observed(node)),
            SupervisorMsg::NodeGone => self.node = Some(NodeNews::Gone),
            SupervisorMsg::LeaseChanged => self.lease_changed = true,
        }
    }

    /// Everything pending, in the order the supervisor should see it: the Node and Lease
    /// first (ownership and what exists), then what the base said.
    fn drain(&mut self) -> Vec<SupervisorMsg> {
        let mut out = Vec::new();
        match self.node.take() {
            Some(NodeNews::Observed(n)) => out.push(SupervisorMsg::NodeObserved(n)),
            Some(NodeNews::Gone) => out.push(SupervisorMsg::NodeGone),
            None => {}
        }
        if std::mem::take(&mut self.lease_changed) {
            out.push(SupervisorMsg::LeaseChanged);
        }
        if let Some((tunnel, status)) = self.heartbeat.take() {
            out.push(SupervisorMsg::Heartbeat { tunnel, status });
        }
        if let Some(h) = self.health.take() {
            out.push(SupervisorMsg::Health(h));
        }
        if let Some(records) = self.complete.take() {
            out.push(SupervisorMsg::Bizs {
                records,
                complete: true,
            });
        }
        if !self.outcomes.is_empty() {
            out.push(SupervisorMsg::Bizs {
                records: std::mem::take(&mut self.outcomes).into_values().collect(),
                complete: false,
            });
        }
        out.extend(self.baselines.drain(..).map(SupervisorMsg::Baseline));
        out
    }
}

/// A coalescing inbox shared by the router (writer) and one supervisor (reader).
#[derive(Debug, Default)]
pub struct Mailbox {
    pending: Mutex<Pending>,
    notify: Notify,
    closed: AtomicBool,
}

impl Mailbox {
    /// Delivers `msg`; `Err(msg)` once the supervisor has finished.
    pub fn put(&self, msg: SupervisorMsg) -> Result<(), SupervisorMsg> {
        if self.is_closed() {
            return Err(msg);
        }
        self.lock().put(msg);
        // A stored permit: a message put while the supervisor is busy wakes its next wait.
        self.notify.notify_one();
        Ok(())
    }

    /// Takes everything pending.
    pub fn take(&self) -> Vec<SupervisorMsg> {
        self.lock().drain()
    }

    /// Waits until something was put since the last wait.
    pub async fn wait(&self) {
        self.notify.notified().await;
    }

    /// Marks the supervisor finished: later puts fail, so the router starts a new one.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether the supervisor has finished.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Plain data: a panic elsewhere leaves it usable.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use koupleless_protocol::{BaseMetadata, BizState};

    fn hb(state: BizState) -> SupervisorMsg {
        SupervisorMsg::Heartbeat {
            tunnel: TunnelKind::Mqtt,
            status: Box::new(BaseStatus {
                base_metadata: BaseMetadata::default(),
                local_host_name: String::new(),
                local_ip: String::new(),
                port: 0,
                state,
            }),
        }
    }

    fn rec(name: &str, state: BizState) -> BizRecord {
        BizRecord {
            name: name.into(),
            version: "1".into(),
            state,
            change_time_ms: 1,
            reason: String::new(),
            message: String::new(),
        }
    }

    fn kinds(msgs: &[SupervisorMsg]) -> Vec<String> {
        msgs.iter()
            .map(|m| match m {
                SupervisorMsg::Heartbeat { status, .. } => format!("hb:{:?}", status.state),
                SupervisorMsg::Health(_) => "health".into(),
                SupervisorMsg::Bizs { records, complete } => format!(
                    "bizs:{}:{}",
                    if *complete { "all" } else { "some" },
                    records
                        .iter()
                        .map(|r| format!("{}={:?}", r.name, r.state))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                SupervisorMsg::Baseline(_) => "baseline".into(),
                SupervisorMsg::NodeObserved(_) => "node".into(),
                SupervisorMsg::NodeGone => "node-gone".into(),
                SupervisorMsg::LeaseChanged => "lease".into(),
            })
            .collect()
    }

    #[test]
    fn coalescing_table() {
        use BizState::*;
        let bizs = |records, complete| SupervisorMsg::Bizs { records, complete };
        #[allow(clippy::type_complexity)]
        let cases: Vec<(Vec<SupervisorMsg>, Vec<&str>)> = vec![
            // A one-off DEACTIVATED heartbeat survives any number of messages before it...
            (
                (0..1000)
                    .map(|_| hb(Activated))
                    .chain([hb(Deactivated)])
                    .collect(),
                vec!["hb:Deactivated"],
            ),
            // ...and a Node delete event survives a flood of heartbeats after it.
            (
                [SupervisorMsg::NodeGone]
                    .into_iter()
                    .chain((0..1000).map(|_| hb(Activated)))
                    .collect(),
                vec!["node-gone", "hb:Activated"],
            ),
            // Outcomes coalesce per module, latest wins; a complete list replaces them.
            (
                vec![
                    bizs(vec![rec("a", Resolved)], false),
                    bizs(vec![rec("a", Activated), rec("b", Broken)], false),
                ],
                vec!["bizs:some:a=Activated,b=Broken"],
            ),
            (
                vec![
                    bizs(vec![rec("a", Resolved)], false),
                    bizs(vec![rec("c", Activated)], true),
                    bizs(vec![rec("d", Stopped)], false),
                ],
                vec!["bizs:all:c=Activated", "bizs:some:d=Stopped"],
            ),
            (
                vec![
                    SupervisorMsg::LeaseChanged,
                    SupervisorMsg::LeaseChanged,
                    SupervisorMsg::NodeGone,
                    SupervisorMsg::NodeObserved(Box::default()),
                ],
                vec!["node", "lease"],
            ),
        ];
        for (input, want) in cases {
            let mb = Mailbox::default();
            for m in input {
                mb.put(m).unwrap();
            }
            assert_eq!(kinds(&mb.take()), want);
            assert!(mb.take().is_empty(), "drained");
        }
    }

    #[test]
    fn baselines_are_bounded_and_closed_mailbox_refuses() {
        let mb = Mailbox::default();
        let mut receivers = Vec::new();
        for _ in 0..20 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            receivers.push(rx);
            mb.put(SupervisorMsg::Baseline(BaselineRequest {
                meta: BaseMetadata::default(),
                reply: tx,
            }))
            .unwrap();
        }
        let taken = mb.take();
        assert_eq!(taken.len(), MAX_BASELINES);
        // The dropped ones are the oldest: their reply channels are closed.
        assert!(receivers[0].try_recv().is_err());
        drop(taken);
        mb.close();
        assert!(mb.put(SupervisorMsg::LeaseChanged).is_err());
    }

    #[tokio::test]
    async fn a_put_while_busy_wakes_the_next_wait() {
        let mb = Mailbox::default();
        mb.put(SupervisorMsg::LeaseChanged).unwrap();
        // No waiter was registered when it was put: the permit is kept.
        tokio::time::timeout(std::time::Duration::from_secs(5), mb.wait())
            .await
            .expect("woken");
        assert_eq!(mb.take().len(), 1);
    }
}

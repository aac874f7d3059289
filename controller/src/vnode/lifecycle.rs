//! The lifecycle of one base's vnode as a pure state machine: inputs and `now` in, effects
//! out. The supervisor (`super::supervisor`) is its only driver and the only place the
//! effects are carried out.
//!
//! ```text
//!            lease acquired                     dead / deactivated
//!  Standby ───────────────────▶ Owner ─────────────────────────────▶ Deleting ──▶ Done
//!     ▲  │◀──── lease lost ──────┘ │ (Ready ⇄ Unreachable)               │
//!     │  └── no Lease, base dead ──┼──────────────────────────────────────┴──────▶ Done
//!     └────────────────────────────┘ shutdown: release Lease ─────────────────────▶ Done
//! ```
//!
//! Timers live here too (as deadlines compared with `now`), so the whole schedule — lease
//! renewals, polls, liveness transitions, retries — is covered by table tests.

use std::time::Duration;

use tokio::time::Instant;

use super::backoff::{self, Backoff};
use super::liveness::{Class, DeathCause, Liveness, Thresholds};
use crate::config::Timings;

/// The role of this replica for the base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not the owner: watch liveness and the Lease.
    Standby,
    /// Holder of the Lease: keeps the Node, polls the base.
    Owner,
    /// The base is gone; the Node and Lease are being deleted.
    Deleting,
    /// Finished; the supervisor exits.
    Done,
}

/// Outcome of a Lease check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// We hold the Lease (created, renewed, taken over, or already ours).
    Held {
        /// Whether this check wrote a new renew time.
        renewed: bool,
    },
    /// Another replica holds a valid Lease.
    HeldByOther,
    /// There is no Lease and the base is dead: nothing to do.
    Absent,
    /// The check or write failed; try again soon.
    Failed,
}

/// Outcome of deleting the Node and Lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Both are gone.
    Deleted,
    /// Another replica holds the Lease now; it is theirs to handle.
    NotOwner,
    /// Failed; try again.
    Failed,
}

/// Everything that can happen to a vnode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// A heartbeat; `activated` is false for DEACTIVATED (or any other) state.
    Heartbeat {
        /// Whether the base says it is activated.
        activated: bool,
    },
    /// A successful health report. `activated`: `Some(true)` when the master biz is
    /// activated, `Some(false)` when it reports another state, `None` when it says nothing.
    Health {
        /// Master biz state.
        activated: Option<bool>,
    },
    /// Time passed (a deadline was reached).
    Tick,
    /// The Lease may have changed (watch event): look at it now.
    LeaseChanged,
    /// Result of a Lease check.
    Lease(LeaseOutcome),
    /// Result of bringing the Node up to date.
    NodeSynced {
        /// Whether it worked.
        ok: bool,
    },
    /// Someone else changed the Node (labels, taints, status).
    NodeChanged,
    /// The Node was deleted by someone.
    NodeGone,
    /// Result of deleting the Node and Lease.
    Deleted(DeleteOutcome),
    /// This replica became unable (`true`) or able again (`false`) to hear the base: its
    /// tunnel disconnected or reconnected, or most of its bases went silent at once.
    Blind(bool),
    /// The controller is shutting down.
    Shutdown,
}

/// What happened, for Kubernetes Events and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// This replica became the owner.
    Acquired,
    /// Another replica took the base over.
    Lost,
    /// This replica could not renew the Lease within the renew deadline and stopped acting
    /// for the base, before anyone else could take it over.
    Fenced,
    /// Ready=True again.
    Ready,
    /// Ready=Unknown.
    Unreachable,
    /// The base is gone and its Node is being deleted.
    Gone(DeathCause),
    /// Shutting down: the Lease is released for another replica.
    Released,
}

/// A side effect for the supervisor to carry out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Read the Lease and act on [`super::lease::decide`]; report with [`Input::Lease`].
    CheckLease {
        /// Whether our renewal period has elapsed.
        renew_due: bool,
        /// Whether this replica thinks the base is dead.
        base_dead: bool,
    },
    /// Start receiving the base's per-base traffic (MQTT subscribe, HTTP endpoint).
    Attach,
    /// Stop receiving it.
    Detach,
    /// Bring the Node to the desired state (create if missing; write only differences);
    /// report with [`Input::NodeSynced`].
    SyncNode,
    /// Ask the base for a health report.
    PollHealth,
    /// Ask the base for its modules.
    PollBiz,
    /// Delete the Node, then the Lease; report with [`Input::Deleted`].
    Delete,
    /// Give the Lease up (shutdown).
    Release,
    /// Record a transition.
    Record(Transition),
}

/// The state of one vnode.
#[derive(Clone, Debug)]
pub struct Machine {
    phase: Phase,
    liveness: Liveness,
    thresholds: Thresholds,
    timings: Timings,
    /// Readiness last published on the Node (None: must publish).
    shown: Option<Class>,
    lease_at: Instant,
    renewed_at: Option<Instant>,
    health_at: Instant,
    biz_at: Instant,
    sync_retry_at: Option<Instant>,
    delete_retry_at: Option<Instant>,
    /// Consecutive failures, for backoff.
    sync_failures: u32,
    delete_failures: u32,
    lease_failures: u32,
    backoff: Backoff,
    /// Jitter seed (from the Node name), so bases failing together retry apart.
    seed: u64,
    /// Whether a Lease check has completed at least once.
    lease_known: bool,
    /// Whether per-base traffic is attached.
    attached: bool,
}

impl Machine {
    /// A standby vnode whose base counts as alive at `now` (just heard from, or a grace
    /// period for a Node rediscovered at start-up). The Lease is checked at once.
    pub fn new(now: Instant, timings: Timings) -> Machine {
        Machine::named("", now, timings)
    }

    /// Like [`Machine::new`], with retry jitter seeded from the base's Node name.
    pub fn named(name: &str, now: Instant, timings: Timings) -> Machine {
        Machine {
            phase: Phase::Standby,
            liveness: Liveness::new(now),
            thresholds: Thresholds {
                unreachable_after: timings.unreachable_after,
                dead_after: timings.dead_after,
            },
            timings,
            shown: None,
            lease_at: now,
            renewed_at: None,
            health_at: now,
            biz_at: now,
            sync_retry_at: None,
            delete_retry_at: None,
            sync_failures: 0,
            delete_failures: 0,
            lease_failures: 0,
            backoff: Backoff {
                base: timings.retry_interval,
                cap: timings.retry_max,
            },
            seed: backoff::seed(name),
            lease_known: false,
            attached: false,
        }
    }

    /// Delays the first Lease claim (workload back-off); a Lease held by someone else is
    /// still only learned then.
    #[must_use]
    pub fn first_check_after(mut self, delay: Duration) -> Machine {
        self.lease_at += delay;
        self
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Liveness class at `now`.
    pub fn class(&self, now: Instant) -> Class {
        self.liveness.classify(now, &self.thresholds)
    }

    /// Whether a Lease check has told us who owns the base.
    pub fn lease_known(&self) -> bool {
        self.lease_known
    }

    /// Readiness the Node should show.
    pub fn ready(&self, now: Instant) -> bool {
        self.class(now) == Class::Alive
    }

    /// Until when this replica may act for the base (send commands, write its Node and Pods):
    /// the renew deadline after the last successful renewal, while it is the owner. Readers
    /// outside the supervisor (the Pod reconciler) check this at the moment they act, so a
    /// replica whose renewals hang stops acting even before its supervisor gets to run.
    pub fn acting_until(&self) -> Option<Instant> {
        match self.phase {
            Phase::Owner => self
                .renewed_at
                .map(|at| at + self.timings.lease_renew_deadline),
            _ => None,
        }
    }

    fn retry_delay(&self, failures: u32) -> std::time::Duration {
        self.backoff.delay(failures, self.seed)
    }

    /// Feeds one input; returns the effects, in order.
    pub fn step(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        match input {
            Input::Heartbeat { activated } => self.sign_of_life(activated, now, &mut fx),
            Input::Health { activated } => {
                if let Some(a) = activated {
                    self.sign_of_life(a, now, &mut fx);
                } else if self.phase == Phase::Owner {
                    fx.push(Effect::SyncNode);
                }
            }
            Input::Tick => {}
            Input::LeaseChanged => {
                if matches!(self.phase, Phase::Standby | Phase::Owner) {
                    self.lease_at = now;
                }
            }
            Input::Lease(outcome) => self.on_lease(outcome, now, &mut fx),
            Input::NodeSynced { ok } => {
                if ok {
                    self.sync_failures = 0;
                    self.sync_retry_at = None;
                } else {
                    self.sync_failures = self.sync_failures.saturating_add(1);
                    self.sync_retry_at = Some(now + self.retry_delay(self.sync_failures));
                }
            }
            Input::NodeChanged => {
                if self.phase == Phase::Owner {
                    fx.push(Effect::SyncNode);
                }
            }
            Input::NodeGone => {
                if self.phase == Phase::Owner {
                    self.shown = None;
                }
            }
            Input::Deleted(outcome) => {
                if self.phase == Phase::Deleting {
                    match outcome {
                        DeleteOutcome::Deleted | DeleteOutcome::NotOwner => {
                            self.phase = Phase::Done;
                        }
                        DeleteOutcome::Failed => {
                            self.delete_failures = self.delete_failures.saturating_add(1);
                            self.delete_retry_at =
                                Some(now + self.retry_delay(self.delete_failures));
                        }
                    }
                }
            }
            Input::Blind(blind) => self.liveness.set_blind(blind, now),
            Input::Shutdown => {
                if self.phase == Phase::Owner {
                    self.detach(&mut fx);
                    fx.extend([Effect::Release, Effect::Record(Transition::Released)]);
                }
                self.phase = Phase::Done;
                return fx;
            }
        }
        self.evaluate(now, &mut fx);
        fx
    }

    fn sign_of_life(&mut self, activated: bool, now: Instant, fx: &mut Vec<Effect>) {
        if activated {
            self.liveness.refresh(now);
        } else {
            self.liveness.close();
            // Find out at once whether there is anything to clean up.
            self.lease_at = self.lease_at.min(now);
        }
        if activated && self.phase == Phase::Owner {
            // The heartbeat may carry new labels or addresses; the supervisor writes only
            // what differs. (A deactivation leads to deletion instead, in `evaluate`.)
            fx.push(Effect::SyncNode);
        }
    }

    fn detach(&mut self, fx: &mut Vec<Effect>) {
        if std::mem::take(&mut self.attached) {
            fx.push(Effect::Detach);
        }
    }

    fn on_lease(&mut self, outcome: LeaseOutcome, now: Instant, fx: &mut Vec<Effect>) {
        if !matches!(self.phase, Phase::Standby | Phase::Owner) {
            return;
        }
        let renew = self.timings.lease_renew_interval;
        if outcome != LeaseOutcome::Failed {
            self.lease_failures = 0;
        }
        match outcome {
            LeaseOutcome::Held { renewed } => {
                self.lease_known = true;
                if renewed {
                    self.renewed_at = Some(now);
                }
                self.lease_at = now + renew;
                if self.phase == Phase::Standby {
                    self.phase = Phase::Owner;
                    self.shown = None;
                    self.health_at = now;
                    self.biz_at = now;
                    self.sync_failures = 0;
                    self.sync_retry_at = None;
                    // Liveness is judged from this replica's own observation, starting now:
                    // silence it was in no position to hear (a standby on the HTTP tunnel hears
                    // nothing) is not evidence of death. The health poll below asks the base
                    // directly at once.
                    self.liveness.restart_observation(now);
                    // A dead base is only taken over to be cleaned up: no traffic needed.
                    if self.class(now) != Class::Dead {
                        self.attached = true;
                        fx.push(Effect::Attach);
                    }
                    fx.push(Effect::Record(Transition::Acquired));
                }
            }
            LeaseOutcome::HeldByOther => {
                self.lease_known = true;
                self.lease_at = now + renew;
                self.renewed_at = None;
                if self.phase == Phase::Owner {
                    self.phase = Phase::Standby;
                    self.shown = None;
                    self.detach(fx);
                    fx.push(Effect::Record(Transition::Lost));
                }
            }
            LeaseOutcome::Absent => {
                self.lease_known = true;
                self.phase = Phase::Done;
            }
            LeaseOutcome::Failed => {
                // Backed off, but never past a renewal period: the owner must keep trying
                // before its renew deadline.
                self.lease_failures = self.lease_failures.saturating_add(1);
                self.lease_at = now + self.retry_delay(self.lease_failures).min(renew);
            }
        }
    }

    /// Applies time-driven rules after every input.
    fn evaluate(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let class = self.class(now);
        match self.phase {
            Phase::Standby => {
                if now >= self.lease_at {
                    self.lease_at = now + self.timings.lease_renew_interval;
                    // A Lease that still names us (a restart, or after fencing) is renewed
                    // before we act on it again.
                    fx.push(Effect::CheckLease {
                        renew_due: true,
                        base_dead: class == Class::Dead,
                    });
                }
            }
            Phase::Owner => {
                if self.acting_until().is_some_and(|until| now >= until) {
                    // Self-fencing: we could not renew in time; another replica may take over
                    // as soon as our Lease lapses, so stop acting now.
                    self.phase = Phase::Standby;
                    self.shown = None;
                    self.renewed_at = None;
                    self.detach(fx);
                    fx.push(Effect::Record(Transition::Fenced));
                    self.lease_at = now;
                    self.evaluate(now, fx);
                    return;
                }
                if class == Class::Dead {
                    let cause = self
                        .liveness
                        .death_cause(now, &self.thresholds)
                        .unwrap_or(DeathCause::Silent);
                    self.phase = Phase::Deleting;
                    self.delete_retry_at = None;
                    self.detach(fx);
                    fx.extend([Effect::Record(Transition::Gone(cause)), Effect::Delete]);
                    return;
                }
                if self.shown != Some(class) {
                    let first = self.shown.is_none();
                    self.shown = Some(class);
                    self.sync_retry_at = None;
                    if !fx.contains(&Effect::SyncNode) {
                        fx.push(Effect::SyncNode);
                    }
                    if !first || class == Class::Unreachable {
                        fx.push(Effect::Record(match class {
                            Class::Alive => Transition::Ready,
                            _ => Transition::Unreachable,
                        }));
                    }
                } else if self.sync_retry_at.is_some_and(|at| now >= at) {
                    self.sync_retry_at = None;
                    if !fx.contains(&Effect::SyncNode) {
                        fx.push(Effect::SyncNode);
                    }
                }
                if now >= self.lease_at {
                    let renew = self.timings.lease_renew_interval;
                    let renew_due = self.renewed_at.is_none_or(|at| now >= at + renew);
                    self.lease_at = now + renew;
                    fx.push(Effect::CheckLease {
                        renew_due,
                        base_dead: false,
                    });
                }
                if now >= self.health_at {
                    self.health_at = now + self.timings.health_interval;
                    fx.push(Effect::PollHealth);
                }
                if now >= self.biz_at {
                    self.biz_at = now + self.timings.biz_interval;
                    fx.push(Effect::PollBiz);
                }
            }
            Phase::Deleting => {
                if self.delete_retry_at.is_some_and(|at| now >= at) {
                    self.delete_retry_at = None;
                    fx.push(Effect::Delete);
                }
            }
            Phase::Done => {}
        }
    }

    /// When the machine next needs a [`Input::Tick`]; `None` once done.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let live = self.liveness.next_change(now, &self.thresholds);
        let candidates: Vec<Option<Instant>> = match self.phase {
            Phase::Standby => vec![Some(self.lease_at), live],
            Phase::Owner => vec![
                self.acting_until(),
                Some(self.lease_at),
                Some(self.health_at),
                Some(self.biz_at),
                self.sync_retry_at,
                live,
            ],
            Phase::Deleting => vec![self.delete_retry_at],
            Phase::Done => vec![],
        };
        candidates.into_iter().flatten().min()
    }

    /// Time until the next wake-up, for logs.
    pub fn idle_for(&self, now: Instant) -> Option<Duration> {
        self.next_wakeup(now)
            .map(|t| t.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMINGS: Timings = Timings::UPSTREAM;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn owner(t0: Instant) -> Machine {
        let mut m = Machine::new(t0, TIMINGS);
        let fx = m.step(Input::Tick, t0);
        assert_eq!(
            fx,
            [Effect::CheckLease {
                renew_due: true,
                base_dead: false
            }]
        );
        let fx = m.step(Input::Lease(LeaseOutcome::Held { renewed: true }), t0);
        assert_eq!(
            fx,
            [
                Effect::Attach,
                Effect::Record(Transition::Acquired),
                Effect::SyncNode,
                Effect::PollHealth,
                Effect::PollBiz,
            ]
        );
        assert_eq!(m.phase(), Phase::Owner);
        m
    }

    #[test]
    fn standby_checks_the_lease_every_period() {
        let t0 = Instant::now();
        let mut m = Machine::new(t0, TIMINGS);
        assert_eq!(m.next_wakeup(t0), Some(t0));
        assert_eq!(m.step(Input::Tick, t0).len(), 1);
        assert_eq!(
            m.step(Input::Lease(LeaseOutcome::HeldByOther), t0),
            Vec::<Effect>::new()
        );
        assert!(m.lease_known());
        assert_eq!(m.next_wakeup(t0), Some(t0 + s(10)));
        assert_eq!(m.step(Input::Tick, t0 + s(5)), []);
        assert_eq!(
            m.step(Input::Tick, t0 + s(10)),
            [Effect::CheckLease {
                renew_due: true,
                base_dead: false
            }]
        );
        // A Lease watch event brings the check forward (released Lease → takeover at once).
        m.step(Input::Lease(LeaseOutcome::HeldByOther), t0 + s(10));
        assert_eq!(
            m.step(Input::LeaseChanged, t0 + s(11)),
            [Effect::CheckLease {
                renew_due: true,
                base_dead: false
            }]
        );
        // A failed check is retried after the retry interval, not a full period.
        m.step(Input::Lease(LeaseOutcome::Failed), t0 + s(11));
        let retry = m.next_wakeup(t0 + s(11)).unwrap() - (t0 + s(11));
        assert!(retry >= s(1) && retry < s(2), "{retry:?}");
    }

    #[test]
    fn workload_back_off_delays_the_first_claim() {
        let t0 = Instant::now();
        let mut m = Machine::new(t0, TIMINGS).first_check_after(Duration::from_millis(200));
        assert_eq!(m.next_wakeup(t0), Some(t0 + Duration::from_millis(200)));
        assert_eq!(m.step(Input::Tick, t0 + Duration::from_millis(100)), []);
        assert_eq!(
            m.step(Input::Tick, t0 + Duration::from_millis(200)).len(),
            1
        );
    }

    #[test]
    fn owner_schedule_table() {
        let t0 = Instant::now();
        let mut m = owner(t0);
        let renew = Effect::CheckLease {
            renew_due: true,
            base_dead: false,
        };
        #[rustfmt::skip]
        let script: Vec<(u64, Input, Vec<Effect>)> = vec![
            (3,  Input::Heartbeat { activated: true }, vec![Effect::SyncNode]),
            (10, Input::Tick, vec![renew, Effect::PollHealth]),
            (11, Input::Health { activated: Some(true) }, vec![Effect::SyncNode]),
            (11, Input::Health { activated: None }, vec![Effect::SyncNode]),
            (15, Input::Tick, vec![Effect::PollBiz]),
            (20, Input::Tick, vec![renew, Effect::PollHealth]),
        ];
        for (at, input, want) in script {
            assert_eq!(m.step(input, t0 + s(at)), want, "at {at}s: {input:?}");
        }
        m.step(
            Input::Lease(LeaseOutcome::Held { renewed: true }),
            t0 + s(20),
        );
        // Our own renewal shows up as a watch event: it must not renew again at once.
        assert_eq!(
            m.step(Input::LeaseChanged, t0 + s(20)),
            [Effect::CheckLease {
                renew_due: false,
                base_dead: false
            }]
        );
        m.step(
            Input::Lease(LeaseOutcome::Held { renewed: false }),
            t0 + s(20),
        );
        assert_eq!(m.step(Input::Tick, t0 + s(21)), []);
        assert_eq!(m.next_wakeup(t0 + s(21)), Some(t0 + s(30)));
    }

    #[test]
    fn unreachable_then_dead() {
        let t0 = Instant::now();
        let mut m = owner(t0);
        m.step(Input::Heartbeat { activated: true }, t0 + s(1));
        // 25 s of silence is still alive; just past it, Ready goes Unknown.
        let wake = m.next_wakeup(t0 + s(25)).unwrap();
        assert!(wake <= t0 + s(26));
        let fx = m.step(Input::Tick, t0 + s(26) + Duration::from_millis(1));
        assert!(fx.contains(&Effect::SyncNode));
        assert!(fx.contains(&Effect::Record(Transition::Unreachable)));
        assert!(!m.ready(t0 + s(27)));
        // (Renewals keep this replica the acting owner throughout.)
        let renew = |m: &mut Machine, at: u64| {
            m.step(
                Input::Lease(LeaseOutcome::Held { renewed: true }),
                t0 + s(at),
            );
        };
        renew(&mut m, 27);
        // A heartbeat brings it back.
        let fx = m.step(Input::Heartbeat { activated: true }, t0 + s(30));
        assert_eq!(
            fx[..2],
            [Effect::SyncNode, Effect::Record(Transition::Ready)]
        );
        renew(&mut m, 50);
        renew(&mut m, 75);
        // 60 s of silence: deleted.
        let fx = m.step(Input::Tick, t0 + s(90));
        assert_eq!(
            fx,
            [
                Effect::Detach,
                Effect::Record(Transition::Gone(DeathCause::Silent)),
                Effect::Delete
            ]
        );
        assert_eq!(m.phase(), Phase::Deleting);
        // Failure is retried; success finishes.
        m.step(Input::Deleted(DeleteOutcome::Failed), t0 + s(90));
        let retry = m.next_wakeup(t0 + s(90)).unwrap();
        assert!(retry >= t0 + s(91) && retry < t0 + s(92));
        assert_eq!(m.step(Input::Tick, retry - Duration::from_millis(1)), []);
        assert_eq!(m.step(Input::Tick, retry), [Effect::Delete]);
        m.step(Input::Deleted(DeleteOutcome::Deleted), t0 + s(92));
        assert_eq!(m.phase(), Phase::Done);
        assert_eq!(m.next_wakeup(t0 + s(92)), None);
    }

    #[test]
    fn deactivation_deletes_at_once() {
        for input in [
            Input::Heartbeat { activated: false },
            Input::Health {
                activated: Some(false),
            },
        ] {
            let t0 = Instant::now();
            let mut m = owner(t0);
            let fx = m.step(input, t0 + s(1));
            assert_eq!(
                fx,
                [
                    Effect::Detach,
                    Effect::Record(Transition::Gone(DeathCause::Deactivated)),
                    Effect::Delete
                ],
                "{input:?}"
            );
        }
    }

    #[test]
    fn standby_with_dead_base_exits_when_no_lease_remains() {
        let t0 = Instant::now();
        let mut m = Machine::new(t0, TIMINGS);
        m.step(Input::Tick, t0);
        m.step(Input::Lease(LeaseOutcome::HeldByOther), t0);
        // DEACTIVATED: the Lease is checked at once, telling it the base is dead.
        let fx = m.step(Input::Heartbeat { activated: false }, t0 + s(1));
        assert_eq!(
            fx,
            [Effect::CheckLease {
                renew_due: true,
                base_dead: true
            }]
        );
        // The owner still holds it: wait.
        m.step(Input::Lease(LeaseOutcome::HeldByOther), t0 + s(1));
        assert_eq!(m.phase(), Phase::Standby);
        // The owner deleted it: nothing left to do.
        m.step(Input::Lease(LeaseOutcome::Absent), t0 + s(11));
        assert_eq!(m.phase(), Phase::Done);
    }

    #[test]
    fn takeover_judges_liveness_from_its_own_window() {
        // Issue 11.1: a standby that heard nothing for longer than the dead threshold (HTTP:
        // heartbeats reach the other replica) takes over after a release. It must poll the
        // base and keep the Node, not delete it from silence it could not hear.
        let t0 = Instant::now();
        let mut m = Machine::new(t0, TIMINGS);
        m.step(Input::Tick, t0);
        m.step(Input::Lease(LeaseOutcome::HeldByOther), t0);
        let fx = m.step(Input::Tick, t0 + s(70));
        assert_eq!(
            fx,
            [Effect::CheckLease {
                renew_due: true,
                base_dead: true
            }]
        );
        let fx = m.step(
            Input::Lease(LeaseOutcome::Held { renewed: true }),
            t0 + s(70),
        );
        assert_eq!(
            fx,
            [
                Effect::Attach,
                Effect::Record(Transition::Acquired),
                Effect::SyncNode,
                Effect::PollHealth,
                Effect::PollBiz,
            ]
        );
        assert!(m.ready(t0 + s(70)), "Ready stays True");
        // The base answers the poll: alive, nothing deleted.
        m.step(
            Input::Health {
                activated: Some(true),
            },
            t0 + s(71),
        );
        assert_eq!(m.phase(), Phase::Owner);
        // A base that really died is deleted after a full window of our own silence.
        let mut t = 71;
        let mut deleted_at = None;
        while t < 200 {
            t += 1;
            let fx = m.step(Input::Tick, t0 + s(t));
            if fx.contains(&Effect::CheckLease {
                renew_due: true,
                base_dead: false,
            }) {
                m.step(
                    Input::Lease(LeaseOutcome::Held { renewed: true }),
                    t0 + s(t),
                );
            }
            if fx.contains(&Effect::Delete) {
                deleted_at = Some(t);
                break;
            }
        }
        assert_eq!(
            deleted_at,
            Some(131),
            "60 s after the last sign of life we heard"
        );
    }

    #[test]
    fn owner_fences_itself_when_renewals_fail_past_the_deadline() {
        let t0 = Instant::now();
        let mut m = owner(t0);
        assert_eq!(m.acting_until(), Some(t0 + s(30)));
        // Every renewal fails from now on (API server unreachable).
        let mut fenced_at = None;
        for t in 1..=40 {
            let fx = m.step(Input::Tick, t0 + s(t));
            if fx.iter().any(|e| matches!(e, Effect::CheckLease { .. })) {
                m.step(Input::Lease(LeaseOutcome::Failed), t0 + s(t));
            }
            if fx.contains(&Effect::Record(Transition::Fenced)) {
                assert!(fx.contains(&Effect::Detach), "{fx:?}");
                fenced_at = Some(t);
                break;
            }
        }
        assert_eq!(fenced_at, Some(30), "fenced at the renew deadline");
        assert_eq!(m.phase(), Phase::Standby);
        assert_eq!(m.acting_until(), None);
        // Fenced: no polls, no Node writes, whatever the base says.
        for t in 31..40 {
            let fx = m.step(
                Input::Health {
                    activated: Some(true),
                },
                t0 + s(t),
            );
            assert!(
                fx.iter().all(|e| matches!(
                    e,
                    Effect::CheckLease {
                        renew_due: true,
                        ..
                    }
                )),
                "{fx:?}"
            );
        }
        // The API server is back and the Lease still names us: renewed, owner again.
        let fx = m.step(
            Input::Lease(LeaseOutcome::Held { renewed: true }),
            t0 + s(41),
        );
        assert!(fx.contains(&Effect::Record(Transition::Acquired)), "{fx:?}");
        assert_eq!(m.acting_until(), Some(t0 + s(71)));
    }

    #[test]
    fn lease_retries_back_off_but_never_past_the_renew_period() {
        let t0 = Instant::now();
        let mut m = owner(t0);
        let mut at = t0 + s(10);
        let mut checks = Vec::new();
        while checks.len() < 5 {
            let fx = m.step(Input::Tick, at);
            if fx.iter().any(|e| matches!(e, Effect::CheckLease { .. })) {
                checks.push(at);
                m.step(Input::Lease(LeaseOutcome::Failed), at);
            }
            at = m.next_wakeup(at).unwrap();
        }
        let gaps: Vec<Duration> = checks.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps[0] >= s(1) && gaps[0] < s(2), "{gaps:?}");
        assert!(gaps[1] >= s(2) && gaps[1] < s(4), "{gaps:?}");
        assert!(gaps[2] >= s(4) && gaps[2] < s(8), "{gaps:?}");
        assert!(gaps.iter().all(|g| *g <= s(10)), "{gaps:?}");
    }

    #[test]
    fn blind_owner_never_deletes_for_silence() {
        // Issue 11.2: the tunnel is down (or most bases went silent at once) for three times
        // the dead threshold: the Node goes Unknown but is not deleted; when sight returns the
        // base gets a full window and is Ready again at its first heartbeat.
        let t0 = Instant::now();
        let mut m = owner(t0);
        m.step(Input::Blind(true), t0 + s(1));
        let mut t = 1;
        while t < 181 {
            t += 1;
            let fx = m.step(Input::Tick, t0 + s(t));
            if fx.iter().any(|e| matches!(e, Effect::CheckLease { .. })) {
                m.step(
                    Input::Lease(LeaseOutcome::Held { renewed: true }),
                    t0 + s(t),
                );
            }
            assert!(!fx.contains(&Effect::Delete), "deleted at {t}s while blind");
        }
        assert_eq!(m.class(t0 + s(181)), Class::Unreachable);
        m.step(Input::Blind(false), t0 + s(181));
        assert_eq!(m.class(t0 + s(240)), Class::Unreachable);
        let fx = m.step(Input::Heartbeat { activated: true }, t0 + s(182));
        assert!(fx.contains(&Effect::Record(Transition::Ready)), "{fx:?}");
        // Without a heartbeat after sight returned, death comes a full window later.
        let mut m = owner(t0);
        m.step(Input::Blind(true), t0 + s(1));
        m.step(Input::Blind(false), t0 + s(100));
        assert_eq!(m.class(t0 + s(159)), Class::Unreachable);
        assert_eq!(m.class(t0 + s(160)), Class::Dead);
    }

    #[test]
    fn lost_lease_and_node_gone() {
        let t0 = Instant::now();
        let mut m = owner(t0);
        assert_eq!(m.step(Input::NodeChanged, t0 + s(1)), [Effect::SyncNode]);
        assert_eq!(m.step(Input::NodeGone, t0 + s(1)), [Effect::SyncNode]);
        m.step(Input::NodeSynced { ok: false }, t0 + s(1));
        // A failed sync is retried after a backoff of about the retry interval.
        let retry = m.next_wakeup(t0 + s(1)).unwrap();
        assert!(retry >= t0 + s(2) && retry < t0 + s(3), "{:?}", retry - t0);
        assert_eq!(m.step(Input::Tick, retry - Duration::from_millis(1)), []);
        assert!(m.step(Input::Tick, retry).contains(&Effect::SyncNode));
        // A second failure waits about twice as long.
        m.step(Input::NodeSynced { ok: false }, retry);
        let again = m.next_wakeup(retry).unwrap() - retry;
        assert!(again >= s(2) && again < s(4), "{again:?}");
        m.step(Input::NodeSynced { ok: true }, retry + again);
        let fx = m.step(Input::Lease(LeaseOutcome::HeldByOther), t0 + s(4));
        assert_eq!(fx, [Effect::Detach, Effect::Record(Transition::Lost)]);
        assert_eq!(m.phase(), Phase::Standby);
        // Health reports no longer touch the Node.
        assert_eq!(
            m.step(
                Input::Health {
                    activated: Some(true)
                },
                t0 + s(5)
            ),
            []
        );
    }

    #[test]
    fn shutdown_releases_only_when_owner() {
        let t0 = Instant::now();
        let mut m = owner(t0);
        assert_eq!(
            m.step(Input::Shutdown, t0 + s(1)),
            [
                Effect::Detach,
                Effect::Release,
                Effect::Record(Transition::Released)
            ]
        );
        assert_eq!(m.phase(), Phase::Done);
        let mut sb = Machine::new(t0, TIMINGS);
        assert_eq!(sb.step(Input::Shutdown, t0), []);
    }
}

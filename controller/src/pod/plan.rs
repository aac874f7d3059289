//! What to do on one base, given its module Pods and what the base reports (spec controller
//! §2.3–§2.8, with the fixes of §9): which modules to install and uninstall, which
//! terminating Pods are finished, and what each container should show. Pure: the driver
//! passes the clock and carries out the actions.
//!
//! The plan is made per base, over all of its Pods at once, because modules are identified
//! on a base by `name:version` only: a terminating Pod's module is uninstalled only when no
//! live Pod on the same base wants the same `name:version` (upstream issue #405).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use koupleless_protocol::BizState;

use super::module::{ModuleSpec, SpecError};
use crate::tunnel::BizRecord;

/// What to do with modules on a base that no Pod asks for (`ORPHAN_MODULES`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OrphanPolicy {
    /// Leave every module alone.
    Keep,
    /// Uninstall modules this controller installed for a Pod that is gone; leave statically
    /// deployed and baseline-installed ones alone.
    #[default]
    UninstallOurs,
    /// Uninstall every module no Pod asks for (upstream's behaviour, spec controller §2.8).
    UninstallAll,
}

impl OrphanPolicy {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OrphanPolicy::Keep => "keep",
            OrphanPolicy::UninstallOurs => "uninstall-ours",
            OrphanPolicy::UninstallAll => "uninstall-all",
        }
    }
}

impl fmt::Display for OrphanPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrphanPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "keep" => Ok(OrphanPolicy::Keep),
            "uninstall-ours" => Ok(OrphanPolicy::UninstallOurs),
            "uninstall-all" => Ok(OrphanPolicy::UninstallAll),
            other => Err(format!(
                "{other:?} is not an orphan policy (keep, uninstall-ours, uninstall-all)"
            )),
        }
    }
}

/// Retry and policy knobs, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Orphan handling.
    pub orphans: OrphanPolicy,
    /// First retry delay after a failed install.
    pub retry_base_ms: i64,
    /// Longest retry delay.
    pub retry_max_ms: i64,
    /// How long to wait for the answer to a command before sending it again.
    pub reply_timeout_ms: i64,
}

impl Policy {
    /// Delay before attempt `attempts + 1`: base × 2^(attempts−1), capped.
    pub fn backoff_ms(&self, attempts: u32) -> i64 {
        let shift = attempts.saturating_sub(1).min(30);
        self.retry_base_ms
            .saturating_mul(1_i64 << shift)
            .min(self.retry_max_ms)
            .max(0)
    }
}

/// One module Pod bound to the base, distilled.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    /// UID.
    pub uid: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Creation time, epoch ms (the newest Pod owns a shared `name:version`).
    pub created_ms: i64,
    /// `deletionTimestamp` is set.
    pub deleting: bool,
    /// Containers in order, each as a module or why not.
    pub modules: Vec<(String, Result<ModuleSpec, SpecError>)>,
}

/// What the base reported.
#[derive(Clone, Copy, Debug)]
pub struct Reported<'a> {
    /// Module records by `name:version`.
    pub records: &'a BTreeMap<String, BizRecord>,
    /// Complete lists received so far; before the first one nothing is installed.
    pub lists: u64,
    /// Commands can be sent (owned and reachable).
    pub ready: bool,
}

/// A command or API write the driver carries out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Install a module, for these Pods (UIDs).
    Install {
        /// Module.
        spec: ModuleSpec,
        /// Pods that want it.
        pods: Vec<String>,
    },
    /// Uninstall a module; `pods` are the terminating Pods it is removed for (empty for an
    /// orphan or a replaced package).
    Uninstall {
        /// Module as last installed.
        spec: ModuleSpec,
        /// Pods it is removed for.
        pods: Vec<String>,
    },
    /// Every module of this terminating Pod is off the base: remove the Pod object.
    DeletePod {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// UID (delete precondition).
        uid: String,
    },
}

/// What one container's module looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// As the base reports it. `superseded_by` is the version of the same module that is
    /// active instead, when this one is deactivated.
    Reported {
        /// The record.
        record: BizRecord,
        /// Active version of the same name, if another.
        superseded_by: Option<String>,
    },
    /// Installed but left deactivated while an older Pod's version of the same name stays
    /// active: the base does not activate new versions, so a rollout cannot proceed.
    NotActivated {
        /// The record.
        record: BizRecord,
        /// The version that stays active.
        active: String,
    },
    /// Install sent or about to be sent; `unreachable` when the base cannot be told now.
    Installing {
        /// The base is not reachable.
        unreachable: bool,
    },
    /// The last install failed; it is retried with back-off.
    Failed {
        /// Base's reason.
        reason: String,
        /// Base's message.
        message: String,
    },
    /// The module was installed and is no longer on the base; it is installed again.
    Gone,
    /// Terminating Pod: the module is off the base (or stays for a newer Pod).
    Uninstalled,
    /// Not known yet: no complete list since this replica started or took the base over,
    /// so the container keeps what it shows (a restart or a takeover must not turn a
    /// Running module back to Installing).
    Unknown,
}

/// One container of a Pod in the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerView {
    /// Container name.
    pub name: String,
    /// Its module.
    pub spec: Result<ModuleSpec, SpecError>,
    /// What it shows; `None` for an invalid container.
    pub observed: Option<Observed>,
    /// Package URL of the module as installed, when known (differs from the spec's while an
    /// in-place image change is under way).
    pub installed: Option<String>,
}

/// The outcome of [`plan`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Commands and deletions, in order.
    pub actions: Vec<Action>,
    /// Containers of each Pod by UID.
    pub pods: BTreeMap<String, Vec<ContainerView>>,
    /// When to look again without news (retry or reply deadline), epoch ms.
    pub wake_at_ms: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Install,
    Uninstall,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending {
    op: Op,
    sent_ms: i64,
    /// The record when the command was sent: any other record is the answer, whatever the
    /// base's clock says.
    before: Option<BizRecord>,
}

/// What this controller remembers about one module on one base.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tracked {
    /// The module as last installed (or found).
    spec: ModuleSpec,
    /// This controller installed it for a Pod.
    ours: bool,
    pending: Option<Pending>,
    attempts: u32,
    not_before_ms: i64,
    /// Last complete list in which the base had it.
    seen_list: Option<u64>,
    /// Last record in which it was on the base.
    last: Option<BizRecord>,
    failure: Option<(String, String)>,
    gone: bool,
    /// An uninstall the base refused: not asked again.
    gave_up: bool,
    /// When this controller last sent its install, epoch ms: tells which of two Pods
    /// created within the same second (creation times have seconds only) came last.
    installed_ms: Option<i64>,
}

impl Tracked {
    fn new(spec: ModuleSpec) -> Tracked {
        Tracked {
            spec,
            ours: false,
            pending: None,
            attempts: 0,
            not_before_ms: 0,
            seen_list: None,
            last: None,
            failure: None,
            gone: false,
            gave_up: false,
            installed_ms: None,
        }
    }
}

/// Per-base memory carried between plans (commands in flight, back-off, what was seen).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeMemory {
    modules: BTreeMap<String, Tracked>,
}

impl NodeMemory {
    /// A command could not be handed to the tunnel: forget that it is in flight and retry
    /// after the back-off.
    pub fn send_failed(&mut self, key: &str, policy: &Policy, now_ms: i64) {
        if let Some(t) = self.modules.get_mut(key) {
            t.pending = None;
            t.not_before_ms = now_ms + policy.backoff_ms(t.attempts);
        }
    }

    /// Number of modules remembered.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }
}

/// On the base in some form (not uninstalled, not unknown).
fn present(r: &BizRecord) -> bool {
    !matches!(r.state, BizState::Stopped | BizState::Unresolved)
}

/// Installed and not failed.
fn installed(r: &BizRecord) -> bool {
    matches!(
        r.state,
        BizState::Activated | BizState::Deactivated | BizState::Resolved
    )
}

fn earliest(a: Option<i64>, b: i64) -> Option<i64> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Makes the plan for one base. `mem` is updated with what was sent.
pub fn plan(
    pods: &[PodView],
    base: &Reported<'_>,
    mem: &mut NodeMemory,
    policy: &Policy,
    now_ms: i64,
) -> Plan {
    let mut out = Plan::default();

    // Live Pods, oldest first, so that the newest owns a shared name:version.
    let mut live: Vec<&PodView> = pods.iter().filter(|p| !p.deleting).collect();
    live.sort_by(|a, b| (a.created_ms, &a.uid).cmp(&(b.created_ms, &b.uid)));
    let mut desired: BTreeMap<String, (ModuleSpec, Vec<String>)> = BTreeMap::new();
    for p in &live {
        for (_, m) in &p.modules {
            let Ok(m) = m else { continue };
            let e = desired
                .entry(m.key())
                .or_insert_with(|| (m.clone(), Vec::new()));
            e.0 = m.clone();
            e.1.push(p.uid.clone());
        }
    }
    // Creation time of the newest live Pod wanting each name:version.
    let created: BTreeMap<String, i64> = live
        .iter()
        .flat_map(|p| {
            p.modules
                .iter()
                .filter_map(|(_, m)| m.as_ref().ok())
                .map(|m| (m.key(), p.created_ms))
        })
        .collect();
    let mut released: BTreeMap<String, (ModuleSpec, Vec<String>)> = BTreeMap::new();
    for p in pods.iter().filter(|p| p.deleting) {
        for (_, m) in &p.modules {
            let Ok(m) = m else { continue };
            if desired.contains_key(&m.key()) {
                continue;
            }
            released
                .entry(m.key())
                .or_insert_with(|| (m.clone(), Vec::new()))
                .1
                .push(p.uid.clone());
        }
    }

    let mut observed: BTreeMap<String, Observed> = BTreeMap::new();
    for (key, (spec, uids)) in &desired {
        let rec = base.records.get(key);
        let t = mem
            .modules
            .entry(key.clone())
            .or_insert_with(|| Tracked::new(spec.clone()));
        let (action, obs, wake) = want(spec, uids, t, rec, base, policy, now_ms);
        if let Some(a) = action {
            out.actions.push(a);
        }
        if let Some(w) = wake {
            out.wake_at_ms = earliest(out.wake_at_ms, w);
        }
        observed.insert(
            key.clone(),
            with_superseded(obs, base.records, &created, &mem.modules),
        );
    }

    let mut done: BTreeSet<String> = BTreeSet::new();
    for (key, (spec, uids)) in &released {
        let rec = base.records.get(key);
        let t = mem.modules.entry(key.clone()).or_insert_with(|| {
            let mut t = Tracked::new(spec.clone());
            t.ours = true;
            t
        });
        let (action, finished, wake) = release(t, rec, base, policy, now_ms, uids);
        if let Some(a) = action {
            out.actions.push(a);
        }
        if let Some(w) = wake {
            out.wake_at_ms = earliest(out.wake_at_ms, w);
        }
        if finished {
            done.insert(key.clone());
            mem.modules.remove(key);
        }
        let obs = match rec {
            Some(r) if !finished => Observed::Reported {
                record: r.clone(),
                superseded_by: None,
            },
            _ => Observed::Uninstalled,
        };
        observed.insert(key.clone(), obs);
    }

    // Modules no Pod asks for.
    let others: BTreeSet<String> = base
        .records
        .keys()
        .chain(mem.modules.keys())
        .filter(|k| !desired.contains_key(*k) && !released.contains_key(*k))
        .cloned()
        .collect();
    for key in others {
        let rec = base.records.get(&key);
        let (action, forget, wake) = orphan(&key, rec, mem, base, policy, now_ms);
        if let Some(a) = action {
            out.actions.push(a);
        }
        if let Some(w) = wake {
            out.wake_at_ms = earliest(out.wake_at_ms, w);
        }
        if forget {
            mem.modules.remove(&key);
        }
    }

    for p in pods {
        let containers: Vec<ContainerView> = p
            .modules
            .iter()
            .map(|(name, m)| ContainerView {
                name: name.clone(),
                spec: m.clone(),
                installed: m
                    .as_ref()
                    .ok()
                    .and_then(|m| mem.modules.get(&m.key()))
                    .map(|t| t.spec.url.clone()),
                observed: m.as_ref().ok().map(|m| {
                    let key = m.key();
                    if p.deleting && !desired.contains_key(&key) {
                        observed.get(&key).cloned().unwrap_or(Observed::Uninstalled)
                    } else {
                        observed
                            .get(&key)
                            .cloned()
                            .unwrap_or(Observed::Installing { unreachable: true })
                    }
                }),
            })
            .collect();
        if p.deleting {
            let finished = p.modules.iter().all(|(_, m)| match m {
                Ok(m) => desired.contains_key(&m.key()) || done.contains(&m.key()),
                Err(_) => true,
            });
            if finished {
                out.actions.push(Action::DeletePod {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    uid: p.uid.clone(),
                });
            }
        }
        out.pods.insert(p.uid.clone(), containers);
    }
    out
}

/// Explains a deactivated module while another version of the same name is active: it was
/// superseded, unless the active one belongs to an older Pod (the base kept the old version
/// instead of activating the new one).
fn with_superseded(
    obs: Observed,
    records: &BTreeMap<String, BizRecord>,
    created: &BTreeMap<String, i64>,
    tracked: &BTreeMap<String, Tracked>,
) -> Observed {
    match obs {
        Observed::Reported {
            record,
            superseded_by: None,
        } if record.state == BizState::Deactivated => {
            let Some(active) = records.values().find(|r| {
                r.name == record.name
                    && r.version != record.version
                    && r.state == BizState::Activated
            }) else {
                return Observed::Reported {
                    record,
                    superseded_by: None,
                };
            };
            // Newer: created later, or in the same second and installed later.
            let age = |key: &str| {
                let sent = tracked.get(key).and_then(|t| t.installed_ms);
                created.get(key).map(|c| (*c, sent.unwrap_or(i64::MIN)))
            };
            let ours = age(&record.key());
            let theirs = age(&active.key());
            match (ours, theirs) {
                (Some(o), Some(t)) if o > t => Observed::NotActivated {
                    active: active.version.clone(),
                    record,
                },
                _ => Observed::Reported {
                    superseded_by: Some(active.version.clone()),
                    record,
                },
            }
        }
        other => other,
    }
}

fn send_install(
    t: &mut Tracked,
    spec: &ModuleSpec,
    uids: &[String],
    rec: Option<&BizRecord>,
    now_ms: i64,
) -> Action {
    t.spec = spec.clone();
    t.ours = true;
    t.installed_ms = Some(now_ms);
    t.attempts += 1;
    t.pending = Some(Pending {
        op: Op::Install,
        sent_ms: now_ms,
        before: rec.cloned(),
    });
    Action::Install {
        spec: spec.clone(),
        pods: uids.to_vec(),
    }
}

fn send_uninstall(
    t: &mut Tracked,
    rec: Option<&BizRecord>,
    now_ms: i64,
    uids: &[String],
) -> Action {
    t.pending = Some(Pending {
        op: Op::Uninstall,
        sent_ms: now_ms,
        before: rec.cloned(),
    });
    Action::Uninstall {
        spec: t.spec.clone(),
        pods: uids.to_vec(),
    }
}

/// A module a live Pod wants.
fn want(
    spec: &ModuleSpec,
    uids: &[String],
    t: &mut Tracked,
    rec: Option<&BizRecord>,
    base: &Reported<'_>,
    policy: &Policy,
    now: i64,
) -> (Option<Action>, Observed, Option<i64>) {
    // Settle the command in flight against what the base says now.
    if let Some(p) = t.pending.clone() {
        let answered = rec != p.before.as_ref();
        let expired = now >= p.sent_ms + policy.reply_timeout_ms;
        match p.op {
            Op::Install => match rec {
                Some(r) if answered && r.state == BizState::Broken => {
                    t.pending = None;
                    t.failure = Some((r.reason.clone(), r.message.clone()));
                    t.not_before_ms = now + policy.backoff_ms(t.attempts);
                }
                Some(r) if installed(r) => t.pending = None,
                _ if expired => {
                    t.pending = None;
                    t.failure = Some((
                        "NoAnswer".into(),
                        format!(
                            "the base did not answer the install of {} within {} ms",
                            spec.key(),
                            policy.reply_timeout_ms
                        ),
                    ));
                    t.not_before_ms = now + policy.backoff_ms(t.attempts);
                }
                _ => {}
            },
            Op::Uninstall => match rec {
                Some(r) if present(r) && !(answered && r.state == BizState::Broken) => {
                    if expired {
                        t.pending = None;
                    }
                }
                // Off the base, or the base refused: install the new package now.
                _ => {
                    t.pending = None;
                    t.seen_list = None;
                    t.last = None;
                    t.spec = spec.clone();
                }
            },
        }
    }
    let reply_deadline = t
        .pending
        .as_ref()
        .map(|p| p.sent_ms + policy.reply_timeout_ms);
    if t.pending.is_some() {
        let obs = match rec {
            Some(r) if present(r) => Observed::Reported {
                record: r.clone(),
                superseded_by: None,
            },
            _ => Observed::Installing { unreachable: false },
        };
        return (None, obs, reply_deadline);
    }

    match rec {
        Some(r) if installed(r) => {
            t.seen_list = Some(base.lists);
            t.last = Some(r.clone());
            t.gone = false;
            if r.state == BizState::Activated {
                t.attempts = 0;
                t.failure = None;
            }
            let obs = Observed::Reported {
                record: r.clone(),
                superseded_by: None,
            };
            // Same name:version, new package (an in-place image change): out with the old.
            if t.spec.url != spec.url && base.ready {
                let a = send_uninstall(t, rec, now, &[]);
                return (Some(a), obs, Some(now + policy.reply_timeout_ms));
            }
            (None, obs, None)
        }
        Some(r) if r.state == BizState::Broken => {
            let obs = Observed::Failed {
                reason: r.reason.clone(),
                message: r.message.clone(),
            };
            retry_install(spec, uids, t, rec, base, now, obs)
        }
        _ => {
            // Absent, stopped or unknown.
            if base.lists == 0 && t.seen_list.is_none() && t.failure.is_none() && !t.gone {
                // Absent from what little the base said so far: no complete list yet, so
                // nothing is installed (see `retry_install`) and nothing is claimed.
                return (None, Observed::Unknown, None);
            }
            if t.seen_list.is_some() && !t.gone {
                let stopped = rec.is_some_and(|r| r.state == BizState::Stopped);
                let confirmed = stopped || t.seen_list.is_some_and(|n| base.lists >= n + 2);
                if !confirmed {
                    // One list may have been taken before the install finished: wait for
                    // the next one before calling the module gone.
                    let obs = match &t.last {
                        Some(r) => Observed::Reported {
                            record: r.clone(),
                            superseded_by: None,
                        },
                        None => Observed::Installing { unreachable: false },
                    };
                    return (None, obs, None);
                }
                t.gone = true;
            }
            let obs = if t.gone {
                Observed::Gone
            } else if let Some((reason, message)) = &t.failure {
                Observed::Failed {
                    reason: reason.clone(),
                    message: message.clone(),
                }
            } else {
                Observed::Installing {
                    unreachable: !base.ready,
                }
            };
            retry_install(spec, uids, t, rec, base, now, obs)
        }
    }
}

fn retry_install(
    spec: &ModuleSpec,
    uids: &[String],
    t: &mut Tracked,
    rec: Option<&BizRecord>,
    base: &Reported<'_>,
    now: i64,
    obs: Observed,
) -> (Option<Action>, Observed, Option<i64>) {
    if !base.ready {
        return (None, obs, None);
    }
    if base.lists == 0 {
        // No complete list from the base yet (this replica just took it over or started):
        // the module may well be there; installing it again would fail or restart it.
        return (None, obs, None);
    }
    if t.spec.url != spec.url {
        // A new package is a new attempt, not a retry of the failed one.
        t.attempts = 0;
        t.not_before_ms = 0;
    }
    if now < t.not_before_ms {
        return (None, obs, Some(t.not_before_ms));
    }
    let a = send_install(t, spec, uids, rec, now);
    (Some(a), obs, None)
}

/// A module of terminating Pods that no live Pod wants. Returns whether it is off the base.
fn release(
    t: &mut Tracked,
    rec: Option<&BizRecord>,
    base: &Reported<'_>,
    policy: &Policy,
    now: i64,
    uids: &[String],
) -> (Option<Action>, bool, Option<i64>) {
    if base.lists == 0 {
        // Whether the module is on the base is not known yet.
        return (None, false, None);
    }
    if let Some(p) = t.pending.clone() {
        let answered = rec != p.before.as_ref();
        let expired = now >= p.sent_ms + policy.reply_timeout_ms;
        match p.op {
            // Let an install in flight finish first: a module that lands after the Pod is
            // gone would be left behind.
            Op::Install if !expired && !rec.is_some_and(|r| answered && present(r)) => {
                return (None, false, Some(p.sent_ms + policy.reply_timeout_ms));
            }
            Op::Install => t.pending = None,
            Op::Uninstall => match rec {
                Some(r) if answered && r.state == BizState::Broken => {
                    // The base cannot uninstall it (most often: it does not have it).
                    return (None, true, None);
                }
                Some(r) if present(r) && !expired => {
                    return (None, false, Some(p.sent_ms + policy.reply_timeout_ms));
                }
                _ => t.pending = None,
            },
        }
    }
    match rec {
        Some(r) if present(r) => {
            if !base.ready {
                return (None, false, None);
            }
            let a = send_uninstall(t, rec, now, uids);
            (Some(a), false, Some(now + policy.reply_timeout_ms))
        }
        _ => (None, true, None),
    }
}

/// A module no Pod wants. Returns the action, whether to forget it, and a wake-up.
fn orphan(
    key: &str,
    rec: Option<&BizRecord>,
    mem: &mut NodeMemory,
    base: &Reported<'_>,
    policy: &Policy,
    now: i64,
) -> (Option<Action>, bool, Option<i64>) {
    let on_base = rec.is_some_and(present);
    if let Some(t) = mem.modules.get_mut(key)
        && let Some(p) = t.pending.clone()
    {
        let answered = rec != p.before.as_ref();
        let expired = now >= p.sent_ms + policy.reply_timeout_ms;
        match p.op {
            // An install for a Pod that vanished: wait for its outcome, then judge.
            Op::Install if !expired && !answered => {
                return (None, false, Some(p.sent_ms + policy.reply_timeout_ms));
            }
            Op::Install => t.pending = None,
            Op::Uninstall => {
                if rec.is_some_and(|r| answered && r.state == BizState::Broken) {
                    t.pending = None;
                    t.gave_up = true;
                } else if on_base && !expired {
                    return (None, false, Some(p.sent_ms + policy.reply_timeout_ms));
                } else {
                    t.pending = None;
                }
            }
        }
    }
    let Some(r) = rec.filter(|r| present(r)) else {
        return (None, true, None);
    };
    let ours = mem.modules.get(key).is_some_and(|t| t.ours);
    let uninstall = match policy.orphans {
        OrphanPolicy::Keep => false,
        OrphanPolicy::UninstallOurs => ours,
        OrphanPolicy::UninstallAll => true,
    };
    if !uninstall {
        // Remember only what we installed; other modules are the base's business.
        return (None, !ours, None);
    }
    let t = mem.modules.entry(key.to_owned()).or_insert_with(|| {
        Tracked::new(ModuleSpec {
            name: r.name.clone(),
            version: r.version.clone(),
            url: String::new(),
        })
    });
    if t.gave_up || !base.ready {
        return (None, false, None);
    }
    let a = send_uninstall(t, rec, now, &[]);
    (Some(a), false, Some(now + policy.reply_timeout_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        orphans: OrphanPolicy::UninstallOurs,
        retry_base_ms: 1_000,
        retry_max_ms: 8_000,
        reply_timeout_ms: 10_000,
    };

    fn spec(name: &str, version: &str, url: &str) -> ModuleSpec {
        ModuleSpec {
            name: name.into(),
            version: version.into(),
            url: url.into(),
        }
    }

    fn pod(uid: &str, created: i64, deleting: bool, modules: &[ModuleSpec]) -> PodView {
        PodView {
            uid: uid.into(),
            namespace: "default".into(),
            name: format!("pod-{uid}"),
            created_ms: created,
            deleting,
            modules: modules
                .iter()
                .map(|m| (m.name.clone(), Ok(m.clone())))
                .collect(),
        }
    }

    fn rec(name: &str, version: &str, state: BizState, t: i64) -> BizRecord {
        BizRecord {
            name: name.into(),
            version: version.into(),
            state,
            change_time_ms: t,
            reason: String::new(),
            message: String::new(),
        }
    }

    struct World {
        records: BTreeMap<String, BizRecord>,
        lists: u64,
        ready: bool,
        mem: NodeMemory,
        policy: Policy,
    }

    impl World {
        fn new() -> World {
            World {
                records: BTreeMap::new(),
                lists: 1,
                ready: true,
                mem: NodeMemory::default(),
                policy: POLICY,
            }
        }
        fn set(&mut self, r: BizRecord) {
            self.records.insert(r.key(), r);
        }
        fn list(&mut self, rs: Vec<BizRecord>) {
            self.records = rs.into_iter().map(|r| (r.key(), r)).collect();
            self.lists += 1;
        }
        fn plan(&mut self, pods: &[PodView], now: i64) -> Plan {
            let base = Reported {
                records: &self.records,
                lists: self.lists,
                ready: self.ready,
            };
            plan(pods, &base, &mut self.mem, &self.policy, now)
        }
    }

    fn installs(p: &Plan) -> Vec<String> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::Install { spec, .. } => Some(format!("{}@{}", spec.key(), spec.url)),
                _ => None,
            })
            .collect()
    }

    fn uninstalls(p: &Plan) -> Vec<String> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::Uninstall { spec, .. } => Some(spec.key()),
                _ => None,
            })
            .collect()
    }

    fn deletes(p: &Plan) -> Vec<String> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::DeletePod { uid, .. } => Some(uid.clone()),
                _ => None,
            })
            .collect()
    }

    fn obs(p: &Plan, uid: &str) -> Vec<Observed> {
        p.pods[uid]
            .iter()
            .map(|c| c.observed.clone().unwrap())
            .collect()
    }

    #[test]
    fn install_once_then_running() {
        let mut w = World::new();
        let m = spec("biz1", "1", "https://r/1.jar");
        let pods = [pod("a", 1, false, std::slice::from_ref(&m))];
        let p = w.plan(&pods, 0);
        assert_eq!(installs(&p), ["biz1:1@https://r/1.jar"]);
        assert_eq!(obs(&p, "a"), [Observed::Installing { unreachable: false }]);
        // In flight: not sent again before the reply deadline.
        let p = w.plan(&pods, 5_000);
        assert!(p.actions.is_empty());
        assert_eq!(p.wake_at_ms, Some(10_000));
        w.set(rec("biz1", "1", BizState::Activated, 6_000));
        let p = w.plan(&pods, 6_000);
        assert!(p.actions.is_empty());
        assert!(
            matches!(&obs(&p, "a")[0], Observed::Reported { record, .. } if record.state == BizState::Activated)
        );
        assert_eq!(p.wake_at_ms, None);
    }

    #[test]
    fn no_answer_is_resent_after_the_reply_timeout_with_backoff() {
        let mut w = World::new();
        let pods = [pod("a", 1, false, &[spec("biz1", "1", "https://r/1.jar")])];
        assert_eq!(installs(&w.plan(&pods, 0)).len(), 1);
        let p = w.plan(&pods, 10_000);
        assert!(installs(&p).is_empty(), "back-off after the timeout");
        assert!(
            matches!(&obs(&p, "a")[0], Observed::Failed { reason, .. } if reason == "NoAnswer")
        );
        assert_eq!(p.wake_at_ms, Some(11_000));
        assert_eq!(installs(&w.plan(&pods, 11_000)).len(), 1);
    }

    #[test]
    fn failure_shows_the_base_message_and_retries_with_growing_backoff() {
        let mut w = World::new();
        let pods = [pod(
            "a",
            1,
            false,
            &[spec("biz1", "1", "https://r/bad.jar")],
        )];
        w.plan(&pods, 0);
        let mut failed = rec("biz1", "1", BizState::Broken, 100);
        failed.reason = "biz1:1 installBiz failed".into();
        failed.message = "download failed: 404".into();
        w.set(failed.clone());
        let p = w.plan(&pods, 100);
        assert!(p.actions.is_empty());
        assert_eq!(
            obs(&p, "a"),
            [Observed::Failed {
                reason: failed.reason.clone(),
                message: failed.message.clone()
            }]
        );
        assert_eq!(p.wake_at_ms, Some(1_100));
        // Retry 1 after 1 s, the next failure waits 2 s, then 4 s, capped at 8 s.
        let mut at = 1_100;
        for (n, delay) in [(2, 2_000), (3, 4_000), (4, 8_000), (5, 8_000)] {
            assert_eq!(installs(&w.plan(&pods, at)).len(), 1, "attempt {n}");
            let mut again = failed.clone();
            again.change_time_ms = at + 1;
            w.set(again);
            let p = w.plan(&pods, at + 1);
            assert_eq!(p.wake_at_ms, Some(at + 1 + delay), "attempt {n}");
            at += 1 + delay;
        }
        // The image is fixed: the new package is installed at once.
        let fixed = [pod(
            "a",
            1,
            false,
            &[spec("biz1", "1", "https://r/good.jar")],
        )];
        let p = w.plan(&fixed, at);
        assert_eq!(installs(&p), ["biz1:1@https://r/good.jar"]);
        w.set(rec("biz1", "1", BizState::Activated, at + 5));
        let p = w.plan(&fixed, at + 5);
        assert!(matches!(&obs(&p, "a")[0], Observed::Reported { .. }));
        assert!(p.actions.is_empty());
    }

    #[test]
    fn nothing_is_installed_before_the_first_module_list() {
        let mut w = World::new();
        w.lists = 0;
        let pods = [pod("a", 1, false, &[spec("biz1", "1", "https://r/1.jar")])];
        let p = w.plan(&pods, 0);
        assert!(p.actions.is_empty());
        // Not claimed Installing either: a restarted replica's Running Pod stays Running.
        assert_eq!(obs(&p, "a"), [Observed::Unknown]);
        // The list shows it installed: adopted, not installed again.
        w.list(vec![rec("biz1", "1", BizState::Activated, 1)]);
        let p = w.plan(&pods, 1);
        assert!(p.actions.is_empty());
        assert!(matches!(&obs(&p, "a")[0], Observed::Reported { .. }));
        // Nor is a terminating Pod removed before the base said whether it has the module.
        let mut w = World::new();
        w.lists = 0;
        let gone = [pod("b", 1, true, &[spec("biz1", "1", "https://r/1.jar")])];
        assert!(w.plan(&gone, 0).actions.is_empty());
        w.list(vec![rec("biz1", "1", BizState::Activated, 1)]);
        assert_eq!(uninstalls(&w.plan(&gone, 1)), ["biz1:1"]);
    }

    #[test]
    fn the_first_list_settles_unknown_modules() {
        let mut w = World::new();
        w.lists = 0;
        let pods = [pod("a", 1, false, &[spec("biz1", "1", "https://r/1.jar")])];
        assert_eq!(obs(&w.plan(&pods, 0), "a"), [Observed::Unknown]);
        // The first list lacks it: now it is installed, and the Pod says so.
        w.list(vec![]);
        let p = w.plan(&pods, 1);
        assert_eq!(installs(&p), ["biz1:1@https://r/1.jar"]);
        assert_eq!(obs(&p, "a"), [Observed::Installing { unreachable: false }]);
    }

    #[test]
    fn unreachable_base_keeps_the_work() {
        let mut w = World::new();
        w.ready = false;
        let pods = [pod("a", 1, false, &[spec("biz1", "1", "https://r/1.jar")])];
        let p = w.plan(&pods, 0);
        assert!(p.actions.is_empty());
        assert_eq!(obs(&p, "a"), [Observed::Installing { unreachable: true }]);
        w.ready = true;
        assert_eq!(installs(&w.plan(&pods, 1)).len(), 1);
    }

    #[test]
    fn delete_uninstalls_then_removes_the_pod() {
        let mut w = World::new();
        let m = spec("biz1", "1", "https://r/1.jar");
        w.list(vec![rec("biz1", "1", BizState::Activated, 1)]);
        let live = [pod("a", 1, false, std::slice::from_ref(&m))];
        assert!(w.plan(&live, 0).actions.is_empty());
        let gone = [pod("a", 1, true, std::slice::from_ref(&m))];
        let p = w.plan(&gone, 10);
        assert_eq!(uninstalls(&p), ["biz1:1"]);
        assert!(deletes(&p).is_empty(), "not before the base confirms");
        assert!(w.plan(&gone, 20).actions.is_empty(), "not sent twice");
        w.set(rec("biz1", "1", BizState::Stopped, 30));
        let p = w.plan(&gone, 30);
        assert_eq!(deletes(&p), ["a"]);
        assert_eq!(obs(&p, "a"), [Observed::Uninstalled]);
        assert!(w.mem.is_empty());
    }

    #[test]
    fn delete_waits_while_the_base_is_unreachable() {
        let mut w = World::new();
        let m = spec("biz1", "1", "https://r/1.jar");
        w.list(vec![rec("biz1", "1", BizState::Activated, 1)]);
        w.ready = false;
        let gone = [pod("a", 1, true, std::slice::from_ref(&m))];
        let p = w.plan(&gone, 0);
        assert!(p.actions.is_empty(), "stays terminating");
        w.ready = true;
        assert_eq!(uninstalls(&w.plan(&gone, 1)), ["biz1:1"]);
        w.list(vec![]);
        assert_eq!(deletes(&w.plan(&gone, 2)), ["a"]);
    }

    #[test]
    fn a_pod_whose_module_never_landed_is_removed_at_once() {
        let mut w = World::new();
        let gone = [pod("a", 1, true, &[spec("biz1", "1", "https://r/1.jar")])];
        let p = w.plan(&gone, 0);
        assert_eq!(deletes(&p), ["a"]);
        assert!(uninstalls(&p).is_empty());
    }

    #[test]
    fn issue_405_replacement_keeps_the_module() {
        let mut w = World::new();
        let m = spec("biz1", "1", "https://r/1.jar");
        w.list(vec![rec("biz1", "1", BizState::Activated, 1)]);
        let pods = [
            pod("old", 1, true, std::slice::from_ref(&m)),
            pod("new", 2, false, std::slice::from_ref(&m)),
        ];
        let p = w.plan(&pods, 10);
        assert!(uninstalls(&p).is_empty(), "the new Pod wants biz1:1");
        assert!(installs(&p).is_empty(), "it is already there");
        assert_eq!(deletes(&p), ["old"]);
        assert!(matches!(&obs(&p, "new")[0], Observed::Reported { .. }));
        // The old Pod is gone; nothing is uninstalled afterwards either.
        let p = w.plan(&pods[1..], 20);
        assert!(p.actions.is_empty());
    }

    #[test]
    fn in_place_image_change_replaces_the_package() {
        let mut w = World::new();
        let v1 = spec("biz1", "1", "https://r/1a.jar");
        let pods = [pod("a", 1, false, std::slice::from_ref(&v1))];
        w.plan(&pods, 0);
        w.set(rec("biz1", "1", BizState::Activated, 1));
        w.plan(&pods, 1);
        let v2 = spec("biz1", "1", "https://r/1b.jar");
        let changed = [pod("a", 1, false, std::slice::from_ref(&v2))];
        let p = w.plan(&changed, 2);
        assert_eq!(uninstalls(&p), ["biz1:1"]);
        assert!(installs(&p).is_empty());
        w.set(rec("biz1", "1", BizState::Stopped, 3));
        let p = w.plan(&changed, 3);
        assert_eq!(installs(&p), ["biz1:1@https://r/1b.jar"]);
        w.set(rec("biz1", "1", BizState::Activated, 4));
        let p = w.plan(&changed, 4);
        assert!(p.actions.is_empty());
        assert!(
            matches!(&obs(&p, "a")[0], Observed::Reported { record, .. } if record.change_time_ms == 4)
        );
    }

    #[test]
    fn vanished_module_is_gone_after_a_second_list_then_reinstalled() {
        let mut w = World::new();
        let pods = [pod("a", 1, false, &[spec("biz1", "1", "https://r/1.jar")])];
        w.plan(&pods, 0);
        w.set(rec("biz1", "1", BizState::Activated, 1));
        w.plan(&pods, 1);
        // A list that may have been taken before the install finished.
        w.list(vec![]);
        let p = w.plan(&pods, 2);
        assert!(p.actions.is_empty());
        assert!(matches!(&obs(&p, "a")[0], Observed::Reported { .. }));
        w.list(vec![]);
        let p = w.plan(&pods, 3);
        assert_eq!(obs(&p, "a"), [Observed::Gone]);
        assert_eq!(installs(&p).len(), 1);
        let p = w.plan(&pods, 4);
        assert_eq!(obs(&p, "a"), [Observed::Installing { unreachable: false }]);
        w.set(rec("biz1", "1", BizState::Activated, 5));
        assert!(matches!(
            &obs(&w.plan(&pods, 5), "a")[0],
            Observed::Reported { .. }
        ));
    }

    #[test]
    fn stopped_by_someone_else_is_gone_at_once() {
        let mut w = World::new();
        let pods = [pod("a", 1, false, &[spec("biz1", "1", "https://r/1.jar")])];
        w.list(vec![rec("biz1", "1", BizState::Activated, 1)]);
        w.plan(&pods, 1);
        w.set(rec("biz1", "1", BizState::Stopped, 2));
        let p = w.plan(&pods, 2);
        assert_eq!(obs(&p, "a"), [Observed::Gone]);
        assert_eq!(installs(&p).len(), 1);
    }

    #[test]
    fn superseded_version_is_marked() {
        let mut w = World::new();
        let v1 = [pod("a", 1, false, &[spec("biz1", "1", "https://r/1.jar")])];
        let v2 = pod("b", 2, false, &[spec("biz1", "2", "https://r/2.jar")]);
        w.list(vec![
            rec("biz1", "1", BizState::Deactivated, 5),
            rec("biz1", "2", BizState::Activated, 5),
        ]);
        let p = w.plan(&[v1[0].clone(), v2], 6);
        assert!(p.actions.is_empty());
        assert!(
            matches!(&obs(&p, "a")[0], Observed::Reported { superseded_by: Some(v), .. } if v == "2")
        );
        assert!(matches!(
            &obs(&p, "b")[0],
            Observed::Reported {
                superseded_by: None,
                ..
            }
        ));
    }

    #[test]
    fn a_new_version_the_base_leaves_deactivated_says_so() {
        let mut w = World::new();
        let v1 = pod("a", 1, false, &[spec("biz1", "1", "https://r/1.jar")]);
        let v2 = pod("b", 2, false, &[spec("biz1", "2", "https://r/2.jar")]);
        w.list(vec![
            rec("biz1", "1", BizState::Activated, 5),
            rec("biz1", "2", BizState::Deactivated, 6),
        ]);
        let p = w.plan(&[v1, v2], 7);
        assert!(matches!(&obs(&p, "b")[0], Observed::NotActivated { active, .. } if active == "1"));
        assert!(matches!(&obs(&p, "a")[0], Observed::Reported { .. }));
    }

    #[test]
    fn same_second_pods_are_ordered_by_install() {
        // Creation times have seconds only: two Pods of one second are told apart by which
        // module this controller installed last.
        let mut w = World::new();
        let v1 = pod("a", 1_000, false, &[spec("biz1", "1", "https://r/1.jar")]);
        let v2 = pod("b", 1_000, false, &[spec("biz1", "2", "https://r/2.jar")]);
        assert_eq!(installs(&w.plan(std::slice::from_ref(&v1), 10)).len(), 1);
        w.list(vec![rec("biz1", "1", BizState::Activated, 11)]);
        let both = [v1.clone(), v2.clone()];
        assert_eq!(installs(&w.plan(&both, 12)).len(), 1);
        w.list(vec![
            rec("biz1", "1", BizState::Activated, 11),
            rec("biz1", "2", BizState::Deactivated, 13),
        ]);
        let p = w.plan(&both, 14);
        assert!(matches!(&obs(&p, "b")[0], Observed::NotActivated { active, .. } if active == "1"));
        // The base activated the later install instead: version 1 was superseded.
        w.list(vec![
            rec("biz1", "1", BizState::Deactivated, 15),
            rec("biz1", "2", BizState::Activated, 15),
        ]);
        let p = w.plan(&both, 16);
        assert!(
            matches!(&obs(&p, "a")[0], Observed::Reported { superseded_by: Some(v), .. } if v == "2")
        );
    }

    #[test]
    fn orphan_policy_table() {
        let m = spec("biz1", "1", "https://r/1.jar");
        for (policy, ours_removed, static_removed) in [
            (OrphanPolicy::Keep, false, false),
            (OrphanPolicy::UninstallOurs, true, false),
            (OrphanPolicy::UninstallAll, true, true),
        ] {
            let mut w = World::new();
            w.policy.orphans = policy;
            let pods = [pod("a", 1, false, std::slice::from_ref(&m))];
            w.plan(&pods, 0);
            w.list(vec![
                rec("biz1", "1", BizState::Activated, 1),
                rec("static", "1", BizState::Activated, 1),
            ]);
            let at_once = uninstalls(&w.plan(&pods, 1));
            let want: Vec<&str> = if static_removed {
                vec!["static:1"]
            } else {
                vec![]
            };
            assert_eq!(at_once, want, "{policy}: modules no Pod backs");
            // The Pod disappears without going through deletion (force-deleted).
            let p = w.plan(&[], 2);
            let want: Vec<&str> = if ours_removed { vec!["biz1:1"] } else { vec![] };
            assert_eq!(uninstalls(&p), want, "{policy}");
            assert!(
                w.plan(&[], 3).actions.is_empty(),
                "{policy}: not sent twice"
            );
            w.list(vec![]);
            assert!(w.plan(&[], 4).actions.is_empty(), "{policy}");
            assert!(w.mem.is_empty(), "{policy}");
        }
    }

    #[test]
    fn baseline_modules_backing_no_pod_are_left_alone_by_default() {
        let mut w = World::new();
        w.list(vec![rec("base-installed", "1", BizState::Activated, 1)]);
        assert!(w.plan(&[], 0).actions.is_empty());
        assert!(w.mem.is_empty());
    }

    #[test]
    fn restarted_base_gets_its_modules_again() {
        let mut w = World::new();
        let pods = [pod("a", 1, false, &[spec("biz1", "1", "https://r/1.jar")])];
        w.list(vec![rec("biz1", "1", BizState::Activated, 1)]);
        w.plan(&pods, 1);
        w.list(vec![]);
        w.plan(&pods, 2);
        w.list(vec![]);
        assert_eq!(installs(&w.plan(&pods, 3)).len(), 1);
    }

    #[test]
    fn invalid_containers_are_never_sent_and_do_not_block_deletion() {
        let mut w = World::new();
        let mut p = pod("a", 1, false, &[]);
        p.modules.push((
            "web".into(),
            Err(SpecError::MissingVersion {
                container: "web".into(),
            }),
        ));
        let plan = w.plan(std::slice::from_ref(&p), 0);
        assert!(plan.actions.is_empty());
        assert_eq!(plan.pods["a"][0].observed, None);
        p.deleting = true;
        assert_eq!(deletes(&w.plan(&[p], 1)), ["a"]);
    }

    #[test]
    fn uninstall_refused_by_the_base_still_finishes_the_pod() {
        let mut w = World::new();
        w.list(vec![rec("biz1", "1", BizState::Broken, 1)]);
        let gone = [pod("a", 1, true, &[spec("biz1", "1", "https://r/1.jar")])];
        assert_eq!(uninstalls(&w.plan(&gone, 2)), ["biz1:1"]);
        w.set(rec("biz1", "1", BizState::Broken, 3));
        assert_eq!(deletes(&w.plan(&gone, 3)), ["a"]);
    }

    #[test]
    fn backoff_table() {
        for (n, want) in [
            (0, 1_000),
            (1, 1_000),
            (2, 2_000),
            (3, 4_000),
            (4, 8_000),
            (40, 8_000),
        ] {
            assert_eq!(POLICY.backoff_ms(n), want, "{n}");
        }
        assert_eq!("Uninstall-All".parse(), Ok(OrphanPolicy::UninstallAll));
        assert!("sometimes".parse::<OrphanPolicy>().is_err());
    }
}

//! Pure decisions of the telnet client algorithm (spec ark-telnet §4.4–§4.8): what a pre-flight
//! `biz -a` means for an operation, and, poll by poll, whether it is done, failed, still
//! running or out of time. No I/O and no clock: the caller passes `now`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use koupleless_protocol::BizState;

use super::proto::Listing;
use crate::backend::BizKey;

/// The hint every failure the port cannot explain carries (spec §4.9: reasons are in the
/// base's logs only).
pub const SEE_ARK_LOGS: &str =
    "the telnet port reports no reasons; see the base's Ark logs (sofa-ark/common-error.log)";

/// What a pre-flight listing means for an install (spec §4.4 step 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstallPre {
    /// Nothing in the way: send `biz -i`.
    Send,
    /// The identity is already started; a second `-i` would be silently dropped.
    AlreadyThere {
        /// `activated` (else `deactivated`).
        active: bool,
    },
    /// The identity is starting (`resolved`): wait for it instead of sending.
    AlreadyStarting,
    /// The identity is `broken`: uninstall it first.
    RemoveBrokenFirst,
    /// Another biz is `resolved` or `broken`, so SOFAArk's gate would refuse the install.
    Blocked(BizKey, BizState),
}

/// Decides the install pre-flight.
pub fn install_preflight(listing: &Listing, key: &BizKey) -> InstallPre {
    match listing.state_of(key) {
        Some(BizState::Activated) => return InstallPre::AlreadyThere { active: true },
        Some(BizState::Deactivated) => return InstallPre::AlreadyThere { active: false },
        Some(BizState::Resolved | BizState::Unresolved) => return InstallPre::AlreadyStarting,
        Some(BizState::Broken | BizState::Stopped | BizState::Unknown) => {
            return InstallPre::RemoveBrokenFirst;
        }
        None => {}
    }
    listing
        .entries
        .iter()
        .find(|e| !matches!(e.state, BizState::Activated | BizState::Deactivated))
        .map_or(InstallPre::Send, |e| {
            InstallPre::Blocked(e.key.clone(), e.state)
        })
}

/// One poll's view of the base.
#[derive(Clone, Copy, Debug)]
pub enum Observed<'a> {
    /// A complete `biz -a`.
    Listed(&'a Listing),
    /// No listing this time (connection down, not ready, no reply).
    Unavailable,
}

/// Which deadline passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The module never appeared: a download or unpack failure, a jar path the base cannot
    /// read, or a copy still running; the port cannot tell which (spec §4.4 step 6).
    Register,
    /// It stayed `resolved`: its start is still running and SOFAArk cannot cancel it.
    Start,
    /// Still listed after `biz -u`.
    Stop,
    /// Still not `activated` after `biz -o`.
    Switch,
}

/// The state of one watched operation after a poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep polling.
    Wait,
    /// Install: started; uninstall: gone; switch: activated.
    Done {
        /// Whether the module is `activated` (install and switch).
        active: bool,
    },
    /// Failed, with what the port showed.
    Failed {
        /// Human-readable reason.
        message: String,
        /// The module is still listed and must be removed (a `broken` leftover).
        leftover: bool,
    },
    /// A deadline passed.
    TimedOut(Stage),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    NotSeen,
    Starting,
    Broken,
}

/// Follows one install after its acknowledgement (spec §4.4 step 6).
#[derive(Clone, Debug)]
pub struct InstallWatch {
    key: BizKey,
    phase: Phase,
    register_by: Instant,
    finish_by: Instant,
}

impl InstallWatch {
    /// Starts watching: the module must be listed by `register_by` and started by `finish_by`.
    pub fn new(key: BizKey, register_by: Instant, finish_by: Instant) -> Self {
        InstallWatch {
            key,
            phase: Phase::NotSeen,
            register_by: register_by.min(finish_by),
            finish_by,
        }
    }

    /// Resumes an install someone already started (found `resolved` in the pre-flight).
    pub fn already_starting(key: BizKey, finish_by: Instant) -> Self {
        InstallWatch {
            key,
            phase: Phase::Starting,
            register_by: finish_by,
            finish_by,
        }
    }

    /// Takes one poll.
    pub fn observe(&mut self, obs: Observed<'_>, now: Instant) -> Verdict {
        let state = match obs {
            Observed::Listed(l) => Some(l.state_of(&self.key)),
            Observed::Unavailable => None,
        };
        match state {
            Some(Some(BizState::Activated)) => return Verdict::Done { active: true },
            Some(Some(BizState::Deactivated)) => return Verdict::Done { active: false },
            Some(Some(BizState::Resolved | BizState::Unresolved)) => self.phase = Phase::Starting,
            // `stopped` only shows in a race while the biz is being removed (spec §2.3).
            Some(Some(BizState::Broken | BizState::Stopped | BizState::Unknown)) => {
                self.phase = Phase::Broken;
            }
            Some(None) => match self.phase {
                Phase::NotSeen => {}
                Phase::Starting => {
                    return Verdict::Failed {
                        message: format!(
                            "the base registered it, then removed it before it started (its start failed, or the base restarted); {SEE_ARK_LOGS}"
                        ),
                        leftover: false,
                    };
                }
                Phase::Broken => {
                    return Verdict::Failed {
                        message: format!(
                            "its start failed (state broken) and the base removed it; {SEE_ARK_LOGS}"
                        ),
                        leftover: false,
                    };
                }
            },
            None => {}
        }
        match self.phase {
            Phase::NotSeen if now >= self.register_by => Verdict::TimedOut(Stage::Register),
            Phase::Starting if now >= self.finish_by => Verdict::TimedOut(Stage::Start),
            // A failed start stays `broken` while SOFAArk's automatic uninstall runs; waiting
            // for it to go keeps the next install from hitting the gate (spec §4.4 step 6).
            Phase::Broken if now >= self.finish_by => Verdict::Failed {
                message: format!(
                    "its start failed and it is still listed as broken (is sofa.ark.auto.uninstall.when.failed.enable=false?); the agent removes it; {SEE_ARK_LOGS}"
                ),
                leftover: true,
            },
            _ => Verdict::Wait,
        }
    }
}

/// What a pre-flight listing means for an uninstall (spec §4.5 step 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopPre {
    /// Not listed: nothing to do.
    Absent,
    /// `resolved`: a `-u` now would be logged and ignored; wait for the start to end.
    WaitStarting,
    /// Send `biz -u`.
    Send,
}

/// Decides the uninstall pre-flight from the module's listed state.
pub fn stop_preflight(state: Option<BizState>) -> StopPre {
    match state {
        None => StopPre::Absent,
        Some(BizState::Resolved | BizState::Unresolved) => StopPre::WaitStarting,
        Some(_) => StopPre::Send,
    }
}

/// One poll after `biz -u` (spec §4.5 step 3): gone is done; `deactivated` on the way is the
/// module shutting down.
pub fn stop_verdict(key: &BizKey, obs: Observed<'_>, now: Instant, deadline: Instant) -> Verdict {
    let state = match obs {
        Observed::Listed(l) => match l.state_of(key) {
            None => return Verdict::Done { active: false },
            s => s,
        },
        Observed::Unavailable => None,
    };
    if now < deadline {
        return Verdict::Wait;
    }
    match state {
        Some(BizState::Broken) => Verdict::Failed {
            message: format!(
                "its stop failed and it is still listed as broken in the base (is sofa.ark.remove.biz.instance.when.stop.failed.enable=false?); {SEE_ARK_LOGS}"
            ),
            leftover: true,
        },
        _ => Verdict::TimedOut(Stage::Stop),
    }
}

/// What a pre-flight listing means for a switch (spec §4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchPre {
    /// Not listed.
    Absent,
    /// Already the active version: nothing to send.
    AlreadyActive,
    /// `deactivated`: send `biz -o`.
    Send,
    /// In a state SOFAArk refuses to switch to.
    Illegal(BizState),
}

/// Decides the switch pre-flight.
pub fn switch_preflight(state: Option<BizState>) -> SwitchPre {
    match state {
        None => SwitchPre::Absent,
        Some(BizState::Activated) => SwitchPre::AlreadyActive,
        Some(BizState::Deactivated) => SwitchPre::Send,
        Some(s) => SwitchPre::Illegal(s),
    }
}

/// One poll after `biz -o`: done once the target is `activated`.
pub fn switch_verdict(key: &BizKey, obs: Observed<'_>, now: Instant, deadline: Instant) -> Verdict {
    if let Observed::Listed(l) = obs {
        match l.state_of(key) {
            Some(BizState::Activated) => return Verdict::Done { active: true },
            None => {
                return Verdict::Failed {
                    message: format!("switch to {key} failed: it is no longer listed by the base"),
                    leftover: false,
                };
            }
            Some(_) => {}
        }
    }
    if now >= deadline {
        Verdict::TimedOut(Stage::Switch)
    } else {
        Verdict::Wait
    }
}

/// A module whose install this backend gave up on, which may still appear or finish in the
/// base (SOFAArk cannot cancel a download or a start) and must then be removed, since the
/// engine has recorded it as failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    /// Identity.
    pub key: BizKey,
    /// Listed at least once since it became an orphan.
    pub seen: bool,
    /// If never listed by then, it is assumed never to come.
    pub expires: Instant,
}

/// What to do about an orphan after a listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrphanAction {
    /// Uninstall it now.
    Uninstall,
    /// Look again next time.
    Keep,
    /// Forget it: gone, or never came.
    Drop,
}

/// Decides an orphan's fate from its listed state.
pub fn orphan_action(orphan: &mut Orphan, state: Option<BizState>, now: Instant) -> OrphanAction {
    match state {
        Some(BizState::Resolved | BizState::Unresolved) => {
            orphan.seen = true;
            OrphanAction::Keep
        }
        Some(_) => {
            orphan.seen = true;
            OrphanAction::Uninstall
        }
        None if orphan.seen || now >= orphan.expires => OrphanAction::Drop,
        None => OrphanAction::Keep,
    }
}

/// Modules the backend believes are in the base but the listing no longer shows: removed by
/// another client, or the base JVM restarted (spec §4.8).
pub fn vanished(known: &HashSet<BizKey>, listing: &Listing) -> Vec<BizKey> {
    let present: HashSet<&BizKey> = listing.entries.iter().map(|e| &e.key).collect();
    let mut gone: Vec<BizKey> = known
        .iter()
        .filter(|k| !present.contains(k))
        .cloned()
        .collect();
    gone.sort();
    gone
}

/// The next reconnect delay: doubling from `min`, capped at `max`.
pub fn next_backoff(current: Duration, min: Duration, max: Duration) -> Duration {
    current.saturating_mul(2).clamp(min, max.max(min))
}

/// When to look at `biz -a` again while an operation runs: the first look after `first`, then
/// after a quarter of the time waited so far, never more than `max` apart. A module the base
/// finishes at time `t` is therefore seen by about `1.25 t + first` (plus one round trip),
/// whereas a fixed interval `max` costs up to `t + max`; and a slow one costs few polls (the
/// interval grows by a quarter per poll up to `max`). Doubling would be cheaper in polls but
/// could see a module finished at `t` only at `2 t`.
#[derive(Clone, Copy, Debug)]
pub struct PollSchedule {
    first: Duration,
    max: Duration,
    began: Instant,
}

impl PollSchedule {
    /// A schedule starting at `began` (when the command was sent).
    pub fn new(first: Duration, max: Duration, began: Instant) -> Self {
        PollSchedule {
            first: first.min(max),
            max,
            began,
        }
    }

    /// How long to wait before the next look, at `now`.
    pub fn next_delay(&self, now: Instant) -> Duration {
        let waited = now.saturating_duration_since(self.began);
        (waited / 4).clamp(self.first, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ark_telnet::proto::Entry;

    fn key(n: &str, v: &str) -> BizKey {
        BizKey::new(n, v)
    }

    fn listing(entries: &[(&str, &str, BizState)]) -> Listing {
        Listing {
            entries: entries
                .iter()
                .map(|(n, v, s)| Entry {
                    key: key(n, v),
                    state: *s,
                })
                .collect(),
        }
    }

    use BizState::*;

    #[test]
    fn install_preflight_table() {
        let k = key("mod1", "0.0.1");
        let base = ("base", "1.0.0", Activated);
        let cases = [
            (vec![base], InstallPre::Send),
            (vec![base, ("demo", "1", Deactivated)], InstallPre::Send),
            (
                vec![base, ("mod1", "0.0.1", Activated)],
                InstallPre::AlreadyThere { active: true },
            ),
            (
                vec![base, ("mod1", "0.0.1", Deactivated)],
                InstallPre::AlreadyThere { active: false },
            ),
            (
                vec![base, ("mod1", "0.0.1", Resolved)],
                InstallPre::AlreadyStarting,
            ),
            (
                vec![base, ("mod1", "0.0.1", Broken)],
                InstallPre::RemoveBrokenFirst,
            ),
            (
                vec![base, ("other", "2", Resolved)],
                InstallPre::Blocked(key("other", "2"), Resolved),
            ),
            (
                vec![base, ("other", "2", Broken)],
                InstallPre::Blocked(key("other", "2"), Broken),
            ),
            // The module's own state decides before the gate does.
            (
                vec![("other", "2", Broken), ("mod1", "0.0.1", Activated)],
                InstallPre::AlreadyThere { active: true },
            ),
        ];
        for (entries, want) in cases {
            assert_eq!(
                install_preflight(&listing(&entries), &k),
                want,
                "{entries:?}"
            );
        }
    }

    /// Runs a sequence of (observation, seconds since ack) through a fresh watch; returns the
    /// verdicts.
    fn run_install(steps: &[(Option<Option<BizState>>, u64)]) -> Vec<Verdict> {
        let t0 = Instant::now();
        let k = key("mod1", "0.0.1");
        let mut w = InstallWatch::new(
            k.clone(),
            t0 + Duration::from_secs(10),
            t0 + Duration::from_secs(60),
        );
        steps
            .iter()
            .map(|(obs, secs)| {
                let now = t0 + Duration::from_secs(*secs);
                match obs {
                    None => w.observe(Observed::Unavailable, now),
                    Some(state) => {
                        let mut e = vec![("base", "1.0.0", Activated)];
                        if let Some(s) = state {
                            e.push(("mod1", "0.0.1", *s));
                        }
                        w.observe(Observed::Listed(&listing(&e)), now)
                    }
                }
            })
            .collect()
    }

    #[test]
    fn install_watch_table() {
        let wait = Verdict::Wait;
        let failed = |v: &Verdict, leftover_want: bool| matches!(v, Verdict::Failed { leftover, message } if *leftover == leftover_want && message.contains("Ark logs"));
        // Spec §5.5: absent (copying), resolved, activated.
        assert_eq!(
            run_install(&[
                (Some(None), 0),
                (Some(Some(Resolved)), 1),
                (Some(Some(Activated)), 2)
            ]),
            [wait.clone(), wait.clone(), Verdict::Done { active: true }]
        );
        // A second version under the default policy ends deactivated.
        assert_eq!(
            run_install(&[(Some(Some(Deactivated)), 1)]),
            [Verdict::Done { active: false }]
        );
        // Spec §5.6: resolved, broken while auto-uninstall runs, then gone.
        let v = run_install(&[
            (Some(Some(Resolved)), 1),
            (Some(Some(Broken)), 2),
            (Some(None), 3),
        ]);
        assert_eq!(v[..2], [wait.clone(), wait.clone()]);
        assert!(failed(&v[2], false), "{v:?}");
        // Resolved, then gone without a broken sighting.
        let v = run_install(&[(Some(Some(Resolved)), 1), (Some(None), 2)]);
        assert!(failed(&v[1], false), "{v:?}");
        // Broken that stays until the deadline is a leftover to remove.
        let v = run_install(&[(Some(Some(Broken)), 1), (Some(Some(Broken)), 60)]);
        assert!(failed(&v[1], true), "{v:?}");
        // Never listed: register deadline (10 s), not the start deadline.
        assert_eq!(
            run_install(&[(Some(None), 9), (Some(None), 10)]),
            [wait.clone(), Verdict::TimedOut(Stage::Register)]
        );
        // Listed once: the start deadline applies, even across unavailable polls.
        assert_eq!(
            run_install(&[
                (Some(Some(Resolved)), 5),
                (None, 30),
                (Some(Some(Resolved)), 59),
                (None, 60)
            ]),
            [
                wait.clone(),
                wait.clone(),
                wait.clone(),
                Verdict::TimedOut(Stage::Start)
            ]
        );
        // The connection being down is not a disappearance.
        assert_eq!(
            run_install(&[
                (Some(Some(Resolved)), 1),
                (None, 2),
                (Some(Some(Activated)), 3)
            ])[1],
            wait
        );
        assert_eq!(
            run_install(&[(None, 10)]),
            [Verdict::TimedOut(Stage::Register)]
        );
    }

    #[test]
    fn already_starting_skips_registration() {
        let t0 = Instant::now();
        let k = key("m", "1");
        let mut w = InstallWatch::already_starting(k.clone(), t0 + Duration::from_secs(5));
        let gone = listing(&[("base", "1.0.0", Activated)]);
        assert!(matches!(
            w.observe(Observed::Listed(&gone), t0),
            Verdict::Failed { .. }
        ));
    }

    #[test]
    fn stop_table() {
        assert_eq!(stop_preflight(None), StopPre::Absent);
        assert_eq!(stop_preflight(Some(Resolved)), StopPre::WaitStarting);
        for s in [Activated, Deactivated, Broken] {
            assert_eq!(stop_preflight(Some(s)), StopPre::Send);
        }
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs(10);
        let k = key("mod1", "0.0.1");
        let with = |s| listing(&[("mod1", "0.0.1", s), ("base", "1.0.0", Activated)]);
        let gone = listing(&[("base", "1.0.0", Activated)]);
        assert_eq!(
            stop_verdict(&k, Observed::Listed(&with(Deactivated)), t0, end),
            Verdict::Wait
        );
        assert_eq!(
            stop_verdict(&k, Observed::Listed(&gone), t0, end),
            Verdict::Done { active: false }
        );
        assert_eq!(
            stop_verdict(&k, Observed::Unavailable, t0, end),
            Verdict::Wait
        );
        assert_eq!(
            stop_verdict(&k, Observed::Listed(&with(Deactivated)), end, end),
            Verdict::TimedOut(Stage::Stop)
        );
        assert_eq!(
            stop_verdict(&k, Observed::Unavailable, end, end),
            Verdict::TimedOut(Stage::Stop)
        );
        assert!(matches!(
            stop_verdict(&k, Observed::Listed(&with(Broken)), end, end),
            Verdict::Failed { leftover: true, .. }
        ));
    }

    #[test]
    fn switch_table() {
        assert_eq!(switch_preflight(None), SwitchPre::Absent);
        assert_eq!(switch_preflight(Some(Activated)), SwitchPre::AlreadyActive);
        assert_eq!(switch_preflight(Some(Deactivated)), SwitchPre::Send);
        assert_eq!(
            switch_preflight(Some(Resolved)),
            SwitchPre::Illegal(Resolved)
        );
        assert_eq!(switch_preflight(Some(Broken)), SwitchPre::Illegal(Broken));
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs(3);
        let k = key("demo", "2.0.0");
        let l = |s| listing(&[("demo", "2.0.0", s), ("demo", "1.0.0", Activated)]);
        assert_eq!(
            switch_verdict(&k, Observed::Listed(&l(Deactivated)), t0, end),
            Verdict::Wait
        );
        assert_eq!(
            switch_verdict(&k, Observed::Listed(&l(Activated)), t0, end),
            Verdict::Done { active: true }
        );
        assert_eq!(
            switch_verdict(&k, Observed::Listed(&l(Deactivated)), end, end),
            Verdict::TimedOut(Stage::Switch)
        );
        assert_eq!(
            switch_verdict(&k, Observed::Unavailable, end, end),
            Verdict::TimedOut(Stage::Switch)
        );
        assert!(matches!(
            switch_verdict(&k, Observed::Listed(&listing(&[])), t0, end),
            Verdict::Failed { .. }
        ));
    }

    #[test]
    fn orphan_table() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(100);
        let fresh = || Orphan {
            key: key("m", "1"),
            seen: false,
            expires: t0 + Duration::from_secs(50),
        };
        let cases = [
            (fresh(), Some(Resolved), t0, OrphanAction::Keep, true),
            (fresh(), Some(Activated), t0, OrphanAction::Uninstall, true),
            (
                fresh(),
                Some(Deactivated),
                t0,
                OrphanAction::Uninstall,
                true,
            ),
            (fresh(), Some(Broken), t0, OrphanAction::Uninstall, true),
            (fresh(), None, t0, OrphanAction::Keep, false),
            (fresh(), None, later, OrphanAction::Drop, false),
            (
                Orphan {
                    seen: true,
                    ..fresh()
                },
                None,
                t0,
                OrphanAction::Drop,
                true,
            ),
        ];
        for (mut o, state, now, want, seen) in cases {
            assert_eq!(orphan_action(&mut o, state, now), want, "{state:?}");
            assert_eq!(o.seen, seen, "{state:?}");
        }
    }

    #[test]
    fn vanished_and_backoff() {
        let known: HashSet<BizKey> = [key("a", "1"), key("b", "1"), key("c", "2")].into();
        let l = listing(&[("b", "1", Activated), ("base", "1.0.0", Activated)]);
        assert_eq!(vanished(&known, &l), [key("a", "1"), key("c", "2")]);
        assert!(vanished(&HashSet::new(), &l).is_empty());

        let (min, max) = (Duration::from_millis(500), Duration::from_secs(4));
        let mut d = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..6 {
            d = next_backoff(d, min, max);
            seen.push(d.as_millis());
        }
        assert_eq!(seen, [500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(
            next_backoff(Duration::from_secs(1), min, Duration::ZERO),
            min
        );
    }

    /// Looks happen soon after the base finishes (at most a quarter later, plus `first`),
    /// and a long operation costs few looks.
    #[test]
    fn poll_schedule_sees_quick_modules_soon_and_slow_ones_cheaply() {
        let t0 = Instant::now();
        let first = Duration::from_millis(5);
        let max = Duration::from_millis(300);
        let s = PollSchedule::new(first, max, t0);
        let looks = |until: Duration| {
            let mut at = t0;
            let mut v = vec![];
            while at - t0 < until {
                at += s.next_delay(at);
                v.push(at - t0);
            }
            v
        };
        for done_ms in [1u64, 20, 35, 57, 100, 1000, 5000] {
            let done = Duration::from_millis(done_ms);
            let seen = *looks(done).last().unwrap();
            assert!(
                seen <= done + done / 4 + first,
                "finished at {done:?}, seen at {seen:?}"
            );
        }
        assert_eq!(looks(Duration::from_millis(1))[0], first);
        // Two minutes of waiting: the fixed 300 ms interval alone would be 400 looks.
        let n = looks(Duration::from_secs(120)).len();
        assert!(n < 430, "{n} looks");
        assert!(looks(Duration::from_millis(60)).len() <= 10);
        assert_eq!(
            PollSchedule::new(first, max, t0).next_delay(t0 + Duration::from_secs(60)),
            max
        );
    }
}

//! Pure decisions about which version of a module serves, as sofa-ark makes them
//! (spec protocol §4.2): no I/O, no clock; the caller passes `now`.

use koupleless_protocol::{BizState, StateChangeReason, StateRecord};

use crate::backend::BizKey;

/// How a newly started version relates to an already active one of the same name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ActivationPolicy {
    /// sofa-ark default: the first version of a name activates; later ones start
    /// `deactivated` until `switchBiz`.
    #[default]
    FirstWins,
    /// `activate.new.module=true`: the new version takes over, the old one is deactivated.
    NewTakesOver,
    /// `sofa.ark.activate.multi.biz.version.enable=true`: every version is activated.
    AllActive,
}

/// A state change to apply to one module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Which module.
    pub key: BizKey,
    /// The record to append (it carries the new state).
    pub record: StateRecord,
}

fn rec(state: BizState, reason: StateChangeReason, message: String, now: i64) -> StateRecord {
    StateRecord {
        change_time: now,
        message,
        reason,
        state,
    }
}

/// Transitions after `new` started successfully, given the currently activated version of the
/// same name (if any).
pub fn on_started(
    new: &BizKey,
    active: Option<&BizKey>,
    policy: ActivationPolicy,
    now: i64,
) -> Vec<Transition> {
    let started = |state, message: String| Transition {
        key: new.clone(),
        record: rec(state, StateChangeReason::Started, message, now),
    };
    match (active, policy) {
        (None, _) | (Some(_), ActivationPolicy::AllActive) => {
            vec![started(BizState::Activated, String::new())]
        }
        (Some(_), ActivationPolicy::FirstWins) => {
            vec![started(
                BizState::Deactivated,
                "start but is deactivated".into(),
            )]
        }
        (Some(old), ActivationPolicy::NewTakesOver) => vec![
            Transition {
                key: old.clone(),
                record: rec(
                    BizState::Deactivated,
                    StateChangeReason::Switched,
                    format!("switch to new biz {new}"),
                    now,
                ),
            },
            started(BizState::Activated, format!("switch from old biz: {old}")),
        ],
    }
}

/// Transitions after `new` started in a runtime that chose its state itself (`observed`: it is
/// the serving version or not). The other versions are left as they are: the runtime reports
/// their changes through its own listing.
pub fn on_started_observed(new: &BizKey, observed: bool, now: i64) -> Vec<Transition> {
    let (state, message) = if observed {
        (BizState::Activated, String::new())
    } else {
        (BizState::Deactivated, "start but is deactivated".to_owned())
    };
    vec![Transition {
        key: new.clone(),
        record: rec(state, StateChangeReason::Started, message, now),
    }]
}

/// Why `switchBiz` cannot proceed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwitchRefused {
    /// The target is in a state other than activated/deactivated.
    IllegalState(BizState),
}

/// Transitions for `switchBiz` to `target` (in `target_state`), given the active version.
/// An already active target is a no-op.
pub fn on_switch(
    target: &BizKey,
    target_state: BizState,
    active: Option<&BizKey>,
    now: i64,
) -> Result<Vec<Transition>, SwitchRefused> {
    match target_state {
        BizState::Activated => Ok(Vec::new()),
        BizState::Deactivated => {
            let mut out = Vec::new();
            if let Some(old) = active.filter(|a| *a != target) {
                out.push(Transition {
                    key: old.clone(),
                    record: rec(
                        BizState::Deactivated,
                        StateChangeReason::Switched,
                        format!("switch to new version {target}"),
                        now,
                    ),
                });
            }
            let message = active
                .filter(|a| *a != target)
                .map(|old| format!("switch from old version: {old}"));
            out.push(Transition {
                key: target.clone(),
                record: rec(
                    BizState::Activated,
                    StateChangeReason::Switched,
                    message.unwrap_or_default(),
                    now,
                ),
            });
            Ok(out)
        }
        other => Err(SwitchRefused::IllegalState(other)),
    }
}

/// Sort key for listings: priority ascending, then name, then version descending — the order
/// the real base lists modules in (captured traffic shows `biz-a 2.0.0` before `1.0.0`).
pub fn listing_order(priority: i32, key: &BizKey) -> (i32, String, std::cmp::Reverse<String>) {
    (
        priority,
        key.name.clone(),
        std::cmp::Reverse(key.version.clone()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(v: &str) -> BizKey {
        BizKey::new("a", v)
    }

    #[test]
    fn started_table() {
        let cases = [
            (
                None,
                ActivationPolicy::FirstWins,
                vec![("2", BizState::Activated, "")],
            ),
            (
                Some(k("1")),
                ActivationPolicy::FirstWins,
                vec![("2", BizState::Deactivated, "start but is deactivated")],
            ),
            (
                Some(k("1")),
                ActivationPolicy::AllActive,
                vec![("2", BizState::Activated, "")],
            ),
            (
                Some(k("1")),
                ActivationPolicy::NewTakesOver,
                vec![
                    ("1", BizState::Deactivated, "switch to new biz a:2"),
                    ("2", BizState::Activated, "switch from old biz: a:1"),
                ],
            ),
        ];
        for (active, policy, want) in cases {
            let got = on_started(&k("2"), active.as_ref(), policy, 7);
            let got: Vec<_> = got
                .iter()
                .map(|t| {
                    (
                        t.key.version.as_str(),
                        t.record.state,
                        t.record.message.as_str(),
                    )
                })
                .collect();
            assert_eq!(got, want, "{active:?} {policy:?}");
        }
    }

    #[test]
    fn observed_state_wins_over_the_policy() {
        let on = on_started_observed(&k("2"), true, 5);
        assert_eq!(
            (on[0].record.state, on[0].record.message.as_str()),
            (BizState::Activated, "")
        );
        let off = on_started_observed(&k("2"), false, 5);
        assert_eq!(
            (off[0].record.state, off[0].record.message.as_str()),
            (BizState::Deactivated, "start but is deactivated")
        );
        assert_eq!(off.len(), 1);
    }

    #[test]
    fn switch_table() {
        assert_eq!(
            on_switch(&k("2"), BizState::Activated, Some(&k("2")), 1),
            Ok(vec![])
        );
        let t = on_switch(&k("2"), BizState::Deactivated, Some(&k("1")), 1).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].key, k("1"));
        assert_eq!(t[0].record.message, "switch to new version a:2");
        assert_eq!(t[1].record.message, "switch from old version: a:1");
        assert_eq!(t[1].record.reason, StateChangeReason::Switched);
        let lone = on_switch(&k("2"), BizState::Deactivated, None, 1).unwrap();
        assert_eq!(lone.len(), 1);
        assert_eq!(lone[0].record.message, "");
        assert_eq!(
            on_switch(&k("2"), BizState::Resolved, None, 1),
            Err(SwitchRefused::IllegalState(BizState::Resolved))
        );
    }

    #[test]
    fn listing_order_matches_the_real_base() {
        let mut v = [
            (100, k("1.0.0")),
            (100, k("2.0.0")),
            (50, BizKey::new("z", "1")),
        ];
        v.sort_by_key(|(p, key)| listing_order(*p, key));
        assert_eq!(v[0].1.name, "z");
        assert_eq!(v[1].1.version, "2.0.0");
    }
}

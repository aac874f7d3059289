//! Who owns a base: the per-node Lease in `kube-node-lease` (spec controller §1.15, §4.5).
//!
//! The decision is a pure function of the Lease as last seen, how long this replica has seen
//! it unchanged (its own monotonic clock, so wall-clock skew between replicas cannot cause an
//! early takeover) and this replica's identity. Unlike upstream, an expired or released Lease
//! is taken over, so a crashed replica no longer orphans its bases; writes carry the
//! `resourceVersion` read, so two replicas racing for the same Lease cannot both win. The
//! holder itself stops acting when it could not renew within the renew deadline
//! ([`crate::config::Timings::lease_renew_deadline`]), before anyone else may take over.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use koupleless_protocol::{Env, VNodeName};

use crate::labels;

/// The fields of a Lease that matter for ownership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// `holderIdentity`; `None` or empty means released.
    pub holder: Option<String>,
    /// `renewTime`.
    pub renew_time: Option<Timestamp>,
    /// `leaseDurationSeconds`.
    pub duration_seconds: Option<i32>,
}

impl LeaseView {
    /// Extracts the view from a Lease object.
    pub fn of(lease: &Lease) -> LeaseView {
        let spec = lease.spec.as_ref();
        LeaseView {
            holder: spec.and_then(|s| s.holder_identity.clone()),
            renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            duration_seconds: spec.and_then(|s| s.lease_duration_seconds),
        }
    }

    /// Whether another holder's Lease has lapsed, judged as client-go's leader election does:
    /// by how long *this replica* has seen the same record unchanged (`unchanged_for`, on its
    /// own monotonic clock), never by comparing the holder's `renewTime` with the local wall
    /// clock, which a skewed clock on either side would turn into an early takeover. A record
    /// without a duration never was valid.
    pub fn lapsed(&self, unchanged_for: Duration) -> bool {
        match self.duration_seconds {
            Some(secs) if secs > 0 => {
                unchanged_for > Duration::from_secs(secs.unsigned_abs().into())
            }
            _ => true,
        }
    }

    /// The holder, if the Lease is held by anyone.
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref().filter(|h| !h.is_empty())
    }
}

/// What to do about the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// No Lease and the base is not dead: create one naming us.
    Create,
    /// Ours and a renewal is due: renew (even if it lapsed; nobody else took it).
    Renew,
    /// Ours, not due yet: nothing to write.
    Keep,
    /// Someone else's and expired or released: take it over (also to clean up after a
    /// crashed owner whose base died).
    TakeOver,
    /// Someone else's and valid: stand by.
    Standby {
        /// The current holder.
        holder: String,
    },
    /// No Lease and the base is dead: nothing to own and nothing to clean up.
    Absent,
}

/// Decides, from the Lease as last seen and how long this replica has seen it unchanged
/// (see [`LeaseView::lapsed`]). `base_dead` is this replica's liveness view; `renew_due`
/// whether our renewal period has elapsed.
pub fn decide(
    current: Option<&LeaseView>,
    unchanged_for: Duration,
    me: &str,
    base_dead: bool,
    renew_due: bool,
) -> LeaseDecision {
    let Some(lease) = current else {
        return if base_dead {
            LeaseDecision::Absent
        } else {
            LeaseDecision::Create
        };
    };
    match lease.holder() {
        Some(h) if h == me => {
            if renew_due {
                LeaseDecision::Renew
            } else {
                LeaseDecision::Keep
            }
        }
        Some(h) if !lease.lapsed(unchanged_for) => LeaseDecision::Standby {
            holder: h.to_owned(),
        },
        _ => LeaseDecision::TakeOver,
    }
}

fn micro(t: Timestamp) -> MicroTime {
    MicroTime(t)
}

fn duration_seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// A fresh Lease naming `me`.
pub fn new_lease(name: &VNodeName, env: &Env, me: &str, now: Timestamp, dur: Duration) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(labels::LEASE_NAMESPACE.into()),
            labels: Some(BTreeMap::from([
                (labels::ENV.to_owned(), env.to_string()),
                (
                    labels::COMPONENT.to_owned(),
                    labels::COMPONENT_VNODE_LEASE.to_owned(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(me.into()),
            lease_duration_seconds: Some(duration_seconds(dur)),
            acquire_time: Some(micro(now)),
            renew_time: Some(micro(now)),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    }
}

/// `lease` renewed by its holder. Keeps `resourceVersion`, so the write fails if anyone
/// changed the Lease since it was read.
pub fn renewed(lease: &Lease, me: &str, now: Timestamp, dur: Duration) -> Lease {
    let mut l = lease.clone();
    let spec = l.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(me.into());
    spec.renew_time = Some(micro(now));
    spec.lease_duration_seconds = Some(duration_seconds(dur));
    l
}

/// `lease` taken over by `me`: new holder, acquire time, one more transition.
pub fn taken_over(lease: &Lease, me: &str, now: Timestamp, dur: Duration) -> Lease {
    let mut l = renewed(lease, me, now, dur);
    let spec = l.spec.get_or_insert_with(LeaseSpec::default);
    spec.acquire_time = Some(micro(now));
    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    l
}

/// `lease` released on shutdown: no holder, so a standby replica takes it over at once
/// instead of waiting for it to expire.
pub fn released(lease: &Lease, now: Timestamp) -> Lease {
    let mut l = lease.clone();
    let spec = l.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = None;
    spec.renew_time = Some(micro(now));
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;

    fn view(holder: Option<&str>, renew_secs_ago: Option<i64>, dur: Option<i32>) -> LeaseView {
        LeaseView {
            holder: holder.map(str::to_owned),
            renew_time: renew_secs_ago.map(|s| now() - SignedDuration::from_secs(s)),
            duration_seconds: dur,
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_750_000_000).unwrap()
    }

    #[test]
    fn decision_table() {
        use LeaseDecision::*;
        let standby = |h: &str| Standby { holder: h.into() };
        #[rustfmt::skip]
        let cases = [
            // (lease, seen unchanged for (s), base dead, renew due, decision)
            (None,                                   0,   false, false, Create),
            (None,                                   0,   true,  false, Absent),
            (Some(view(Some("me"), Some(5), Some(40))),   5,   false, true,  Renew),
            (Some(view(Some("me"), Some(5), Some(40))),   5,   false, false, Keep),
            // Our own lapsed Lease is renewed, not abandoned (upstream abandons it).
            (Some(view(Some("me"), Some(100), Some(40))), 100, false, true,  Renew),
            (Some(view(Some("b"), Some(5), Some(40))),    5,   false, true,  standby("b")),
            (Some(view(Some("b"), Some(40), Some(40))),   40,  false, true,  standby("b")),
            (Some(view(Some("b"), Some(41), Some(40))),   41,  false, false, TakeOver),
            // Clock skew: the holder's renewTime says an hour ago (its clock is behind, or
            // ours ahead), but we saw the record change 5 s ago: the holder is alive.
            (Some(view(Some("b"), Some(3600), Some(40))), 5,   false, false, standby("b")),
            // ...and a renewTime "in the future" does not keep a dead holder's Lease alive.
            (Some(view(Some("b"), Some(-3600), Some(40))), 41, false, false, TakeOver),
            // A dead base whose owner vanished: take over to delete the Node.
            (Some(view(Some("b"), Some(41), Some(40))),   41,  true,  false, TakeOver),
            (Some(view(None, Some(1), Some(40))),         1,   false, false, TakeOver),
            (Some(view(Some(""), Some(1), Some(40))),     1,   false, false, TakeOver),
            (Some(view(Some("b"), None, Some(40))),       1,   false, false, standby("b")),
            (Some(view(Some("b"), Some(1), None)),        1,   false, false, TakeOver),
        ];
        for (lease, seen, dead, due, want) in cases {
            assert_eq!(
                decide(lease.as_ref(), Duration::from_secs(seen), "me", dead, due),
                want,
                "{lease:?} seen={seen} dead={dead} due={due}"
            );
        }
    }

    #[test]
    fn builders() {
        let name: VNodeName = "vnode.b1.dev".parse().unwrap();
        let env: Env = "dev".parse().unwrap();
        let l = new_lease(&name, &env, "me", now(), Duration::from_secs(40));
        assert_eq!(l.metadata.namespace.as_deref(), Some("kube-node-lease"));
        assert_eq!(l.metadata.name.as_deref(), Some("vnode.b1.dev"));
        let lab = l.metadata.labels.as_ref().unwrap();
        assert_eq!(lab[labels::ENV], "dev");
        assert_eq!(lab[labels::COMPONENT], "vnode-lease");
        let v = LeaseView::of(&l);
        assert_eq!(v.holder(), Some("me"));
        assert_eq!(v.duration_seconds, Some(40));
        assert!(!v.lapsed(Duration::from_secs(40)));
        assert!(v.lapsed(Duration::from_secs(41)));

        let later = now() + SignedDuration::from_secs(100);
        let t = taken_over(&l, "other", later, Duration::from_secs(40));
        let s = t.spec.as_ref().unwrap();
        assert_eq!(s.holder_identity.as_deref(), Some("other"));
        assert_eq!(s.lease_transitions, Some(1));
        assert_eq!(s.acquire_time.as_ref().unwrap().0, later);

        let r = released(&t, later);
        assert_eq!(LeaseView::of(&r).holder(), None);
        assert_eq!(
            decide(Some(&LeaseView::of(&r)), Duration::ZERO, "me", false, false),
            LeaseDecision::TakeOver
        );
        let rn = renewed(
            &t,
            "other",
            later + SignedDuration::from_secs(5),
            Duration::from_secs(40),
        );
        assert_eq!(rn.spec.as_ref().unwrap().lease_transitions, Some(1));
    }
}

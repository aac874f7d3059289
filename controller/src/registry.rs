//! What this replica knows about each base, readable by everyone (metrics now, the pod
//! reconciler later). Each supervisor writes only its own entry; the lock is never held
//! across an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use koupleless_protocol::VNodeName;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::tunnel::{BizRecord, TunnelKind};

/// What this replica does for a base.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VNodeState {
    /// Another replica owns it (or ownership is not known yet).
    Standby,
    /// Owned here; Ready=True.
    Ready,
    /// Owned here; Ready=Unknown.
    Unreachable,
    /// Owned here; Node and Lease being deleted.
    Deleting,
}

impl VNodeState {
    /// Every state.
    pub const ALL: [VNodeState; 4] = [
        VNodeState::Standby,
        VNodeState::Ready,
        VNodeState::Unreachable,
        VNodeState::Deleting,
    ];

    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            VNodeState::Standby => "standby",
            VNodeState::Ready => "ready",
            VNodeState::Unreachable => "unreachable",
            VNodeState::Deleting => "deleting",
        }
    }

    /// Whether this replica owns the base.
    pub fn is_owned(self) -> bool {
        !matches!(self, VNodeState::Standby)
    }
}

/// One base as seen by this replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseView {
    /// Role and readiness.
    pub state: VNodeState,
    /// Tunnel the base talks through.
    pub tunnel: Option<TunnelKind>,
    /// Module states last reported, by `name:version`.
    pub bizs: BTreeMap<String, BizRecord>,
    /// How many complete module lists the base has sent, so a reader can tell a list that
    /// raced an operation from a later one.
    pub lists: u64,
    /// Until when this replica may act for the base (commands, Node and Pod writes): its
    /// Lease renew deadline. `None` when it does not own the base.
    pub acting_until: Option<Instant>,
}

impl BaseView {
    /// Whether this replica may act for the base at `now`: it owns the base and its last
    /// Lease renewal is within the renew deadline (a replica that cannot renew is fenced even
    /// before its supervisor notices).
    pub fn may_act(&self, now: Instant) -> bool {
        self.state.is_owned()
            && self.state != VNodeState::Deleting
            && self.acting_until.is_some_and(|until| now < until)
    }
}

/// Shared map of bases.
#[derive(Clone, Debug, Default)]
pub struct BaseRegistry {
    inner: Arc<RwLock<HashMap<VNodeName, BaseView>>>,
    changes: Changes,
}

impl BaseRegistry {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<VNodeName, BaseView>> {
        // A panic while holding the lock leaves plain data behind: keep serving it.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<VNodeName, BaseView>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets state and tunnel of a base, creating its entry.
    pub fn set_state(&self, name: &VNodeName, state: VNodeState, tunnel: Option<TunnelKind>) {
        let mut map = self.write();
        let e = map.entry(name.clone()).or_insert_with(|| BaseView {
            state,
            tunnel,
            bizs: BTreeMap::new(),
            lists: 0,
            acting_until: None,
        });
        e.state = state;
        e.tunnel = tunnel;
        drop(map);
        self.changes.notify(name);
    }

    /// Sets until when this replica may act for the base (see [`BaseView::may_act`]).
    pub fn set_acting_until(&self, name: &VNodeName, until: Option<Instant>) {
        let mut map = self.write();
        let Some(e) = map.get_mut(name) else {
            return;
        };
        let lost = e.acting_until.is_some() && until.is_none();
        e.acting_until = until;
        drop(map);
        if lost {
            self.changes.notify(name);
        }
    }

    /// Whether this replica may act for the base at `now` (see [`BaseView::may_act`]).
    pub fn may_act(&self, name: &VNodeName, now: Instant) -> bool {
        self.read().get(name).is_some_and(|v| v.may_act(now))
    }

    /// Records module states: a complete list replaces the known ones, outcomes update them.
    pub fn record_bizs(&self, name: &VNodeName, records: Vec<BizRecord>, complete: bool) {
        let mut map = self.write();
        let Some(e) = map.get_mut(name) else {
            return;
        };
        if complete {
            e.bizs.clear();
            e.lists += 1;
        }
        for r in records {
            e.bizs.insert(r.key(), r);
        }
        drop(map);
        self.changes.notify(name);
    }

    /// Forgets a base.
    pub fn remove(&self, name: &VNodeName) {
        self.write().remove(name);
        self.changes.notify(name);
    }

    /// A copy of one base's view.
    pub fn get(&self, name: &VNodeName) -> Option<BaseView> {
        self.read().get(name).cloned()
    }

    /// Number of bases per state.
    pub fn count_by_state(&self) -> BTreeMap<VNodeState, usize> {
        let mut counts = BTreeMap::new();
        for v in self.read().values() {
            *counts.entry(v.state).or_insert(0) += 1;
        }
        counts
    }

    /// Bases owned by this replica.
    pub fn owned(&self) -> Vec<VNodeName> {
        let mut v: Vec<_> = self
            .read()
            .iter()
            .filter(|(_, b)| b.state.is_owned())
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }
}

impl BaseRegistry {
    /// Names of bases whose state, tunnel or module list changed from now on. A receiver that
    /// lags behind gets `RecvError::Lagged` and should look at every base again.
    pub fn subscribe(&self) -> broadcast::Receiver<VNodeName> {
        self.changes.0.subscribe()
    }
}

/// Change notifications of the registry.
#[derive(Clone, Debug)]
struct Changes(broadcast::Sender<VNodeName>);

impl Default for Changes {
    fn default() -> Self {
        Changes(broadcast::channel(CHANGE_BACKLOG).0)
    }
}

impl Changes {
    fn notify(&self, name: &VNodeName) {
        // No subscriber is fine: nobody needs to know.
        let _ = self.0.send(name.clone());
    }
}

/// Change notifications buffered per subscriber before it lags.
const CHANGE_BACKLOG: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use koupleless_protocol::BizState;

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

    #[test]
    fn states_and_bizs() {
        let r = BaseRegistry::default();
        let a: VNodeName = "vnode.a.dev".parse().unwrap();
        let b: VNodeName = "vnode.b.dev".parse().unwrap();
        r.record_bizs(&a, vec![rec("x", BizState::Activated)], true);
        assert!(r.get(&a).is_none(), "records for unknown bases are dropped");
        r.set_state(&a, VNodeState::Ready, Some(TunnelKind::Mqtt));
        r.set_state(&b, VNodeState::Standby, None);
        r.record_bizs(
            &a,
            vec![rec("x", BizState::Activated), rec("y", BizState::Resolved)],
            true,
        );
        r.record_bizs(&a, vec![rec("y", BizState::Activated)], false);
        let v = r.get(&a).unwrap();
        assert_eq!(v.bizs.len(), 2);
        assert_eq!(v.bizs["y:1"].state, BizState::Activated);
        r.record_bizs(&a, vec![rec("z", BizState::Activated)], true);
        assert_eq!(r.get(&a).unwrap().bizs.keys().collect::<Vec<_>>(), ["z:1"]);
        assert_eq!(r.owned(), std::slice::from_ref(&a));
        let c = r.count_by_state();
        assert_eq!((c[&VNodeState::Ready], c[&VNodeState::Standby]), (1, 1));
        r.remove(&a);
        assert!(r.owned().is_empty());
    }

    #[test]
    fn changes_are_announced_and_lists_counted() {
        let r = BaseRegistry::default();
        let a: VNodeName = "vnode.a.dev".parse().unwrap();
        let mut rx = r.subscribe();
        r.set_state(&a, VNodeState::Ready, Some(TunnelKind::Http));
        r.record_bizs(&a, vec![rec("x", BizState::Activated)], false);
        assert_eq!(r.get(&a).unwrap().lists, 0, "an outcome is not a list");
        r.record_bizs(&a, vec![], true);
        assert_eq!(r.get(&a).unwrap().lists, 1);
        r.remove(&a);
        for _ in 0..4 {
            assert_eq!(rx.try_recv().unwrap(), a);
        }
        assert!(rx.try_recv().is_err());
    }
}

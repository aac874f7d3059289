//! The in-memory store: objects as JSON keyed by (storage, namespace, name),
//! one global resourceVersion counter, a bounded event history for watch
//! resume (older versions answer 410 Gone), and a notifier for live
//! watches.

use crate::resources::Storage;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// Store key.
pub type Key = (Storage, String, String);

/// Watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// ADDED
    Added,
    /// MODIFIED
    Modified,
    /// DELETED
    Deleted,
}

impl EventType {
    /// Wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history.
#[derive(Debug)]
pub struct Event {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// Which storage.
    pub storage: Storage,
    /// Namespace ("" for cluster-scoped).
    pub namespace: String,
    /// Type.
    pub etype: EventType,
    /// The object after the change (for DELETED: the last state, with the
    /// deletion's resourceVersion).
    pub object: Arc<Value>,
    /// The object before the change.
    pub prev: Option<Arc<Value>>,
}

/// A list snapshot held for `continue` tokens.
#[derive(Debug)]
pub struct Snapshot {
    /// resourceVersion of the list.
    pub rv: u64,
    /// Remaining items (already filtered).
    pub items: Arc<Vec<Arc<Value>>>,
    /// Whether selectors were used (remainingItemCount is then omitted).
    pub filtered: bool,
}

/// Mutable state behind the lock.
#[derive(Debug)]
pub struct State {
    /// The current (latest) resourceVersion.
    pub rv: u64,
    /// Objects (shared with the history and list snapshots).
    objects: BTreeMap<Key, Arc<Value>>,
    history: VecDeque<Arc<Event>>,
    history_cap: usize,
    /// Events at or below this resourceVersion are no longer available.
    pub compacted_rv: u64,
    /// Snapshots for continue tokens.
    pub snapshots: HashMap<u64, Snapshot>,
    snapshot_order: VecDeque<u64>,
    next_snapshot: u64,
    /// Next ClusterIP offset.
    pub next_cluster_ip: u32,
    /// Next NodePort.
    pub next_node_port: u32,
}

/// The store: state plus a notifier carrying the latest resourceVersion.
#[derive(Debug)]
pub struct Store {
    state: Mutex<State>,
    notify: tokio::sync::watch::Sender<u64>,
}

const MAX_SNAPSHOTS: usize = 64;

impl Store {
    /// New store whose history keeps `history_cap` events. The counter starts
    /// at `initial_rv`; every version below it counts as compacted.
    pub fn new(history_cap: usize, initial_rv: u64) -> Self {
        let (notify, _) = tokio::sync::watch::channel(initial_rv);
        Store {
            state: Mutex::new(State {
                rv: initial_rv,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                history_cap: history_cap.max(1),
                compacted_rv: initial_rv,
                snapshots: HashMap::new(),
                snapshot_order: VecDeque::new(),
                next_snapshot: 1,
                next_cluster_ip: 1,
                next_node_port: 30000,
            }),
            notify,
        }
    }

    /// Locks the state. Every write happens under this lock, so a
    /// read-modify-write is atomic.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes watchers after a write.
    pub fn notify(&self, rv: u64) {
        self.notify.send_replace(rv);
    }

    /// A receiver that changes on each write.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }
}

/// Why a watch cannot start (or continue) at a version.
#[derive(Debug)]
pub enum HistoryError {
    /// Older than the history.
    TooOld {
        /// The oldest version still available.
        oldest: u64,
    },
}

impl State {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, ev: Event) {
        self.history.push_back(Arc::new(ev));
        while self.history.len() > self.history_cap {
            if let Some(old) = self.history.pop_front() {
                self.compacted_rv = old.rv;
            }
        }
    }

    /// The object at `key` (a copy).
    pub fn get(&self, key: &Key) -> Option<Value> {
        self.objects.get(key).map(|v| (**v).clone())
    }

    /// The object at `key`, shared.
    pub fn get_ref(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key).map(|v| &**v)
    }

    /// Whether `key` exists.
    pub fn contains(&self, key: &Key) -> bool {
        self.objects.contains_key(key)
    }

    /// Keys of the namespaced objects in `ns`.
    pub fn keys_in_namespace(&self, ns: &str) -> Vec<Key> {
        self.objects
            .keys()
            .filter(|(s, n, _)| *s != Storage::Namespaces && *s != Storage::Nodes && n == ns)
            .cloned()
            .collect()
    }

    /// Stores `obj` (creating or replacing), assigning the next
    /// resourceVersion. Returns the stored object.
    pub fn put(&mut self, key: Key, mut obj: Value) -> Value {
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let stored = Arc::new(obj.clone());
        let prev = self.objects.insert(key.clone(), stored.clone());
        let etype = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(Event {
            rv,
            storage: key.0,
            namespace: key.1,
            etype,
            object: stored,
            prev,
        });
        obj
    }

    /// Removes an object, assigning the next resourceVersion to the
    /// deletion. Returns the last state with that resourceVersion.
    pub fn remove(&mut self, key: &Key) -> Option<Value> {
        let prev = self.objects.remove(key)?;
        let rv = self.next_rv();
        let mut obj = (*prev).clone();
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        self.record(Event {
            rv,
            storage: key.0,
            namespace: key.1.clone(),
            etype: EventType::Deleted,
            object: Arc::new(obj.clone()),
            prev: Some(prev),
        });
        Some(obj)
    }

    /// Events of `storage` newer than `after`, or an error when part of
    /// that range has left the history.
    pub fn events_since(&self, after: u64) -> Result<Vec<Arc<Event>>, HistoryError> {
        if after < self.compacted_rv {
            return Err(HistoryError::TooOld {
                oldest: self.compacted_rv + 1,
            });
        }
        let start = self.history.partition_point(|e| e.rv <= after);
        Ok(self.history.iter().skip(start).cloned().collect())
    }

    /// Objects of a storage (optionally in one namespace) that pass
    /// `keep`, in key order, shared.
    pub fn list(
        &self,
        storage: Storage,
        namespace: Option<&str>,
        keep: impl Fn(&Value) -> bool,
    ) -> Vec<Arc<Value>> {
        match namespace {
            Some(ns) => {
                let lo = (storage, ns.to_string(), String::new());
                self.objects
                    .range(lo..)
                    .take_while(|((s, n, _), _)| *s == storage && n == ns)
                    .filter(|(_, v)| keep(v))
                    .map(|(_, v)| v.clone())
                    .collect()
            }
            None => {
                let lo = (storage, String::new(), String::new());
                self.objects
                    .range(lo..)
                    .take_while(|((s, _, _), _)| *s == storage)
                    .filter(|(_, v)| keep(v))
                    .map(|(_, v)| v.clone())
                    .collect()
            }
        }
    }

    /// Whether any object of any namespaced storage remains in `ns`.
    pub fn namespace_has_content(&self, ns: &str) -> bool {
        self.objects
            .keys()
            .any(|(s, n, _)| *s != Storage::Namespaces && *s != Storage::Nodes && n == ns)
    }

    /// Saves a continue snapshot and returns its id.
    pub fn save_snapshot(&mut self, snap: Snapshot) -> u64 {
        let id = self.next_snapshot;
        self.next_snapshot += 1;
        self.snapshots.insert(id, snap);
        self.snapshot_order.push_back(id);
        while self.snapshot_order.len() > MAX_SNAPSHOTS {
            if let Some(old) = self.snapshot_order.pop_front() {
                self.snapshots.remove(&old);
            }
        }
        id
    }

    /// Drops the oldest events so that everything up to `rv` counts as
    /// compacted (used by tests to provoke 410 Gone).
    pub fn compact(&mut self, rv: u64) {
        while self.history.front().is_some_and(|e| e.rv <= rv) {
            self.history.pop_front();
        }
        self.compacted_rv = self.compacted_rv.max(rv.min(self.rv));
    }
}

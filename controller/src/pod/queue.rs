//! A work queue of base names, client-go style: a name is queued at most once, is never
//! worked on by two workers at once (a change that arrives while it is being worked on queues
//! it again afterwards), and can be scheduled for later. Nothing is ever dropped; a name that
//! keeps failing comes back on its own schedule and leaves the workers to the others.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<String>,
    queued: HashSet<String>,
    active: HashSet<String>,
    dirty: HashSet<String>,
    timers: BTreeMap<(Instant, u64), String>,
    due: HashMap<String, Instant>,
    seq: u64,
}

impl State {
    fn add(&mut self, name: String) {
        if self.active.contains(&name) {
            self.dirty.insert(name);
        } else if self.queued.insert(name.clone()) {
            self.ready.push_back(name);
        }
    }

    fn add_at(&mut self, name: String, at: Instant) {
        if self.due.get(&name).is_some_and(|d| *d <= at) {
            return;
        }
        self.seq += 1;
        self.due.insert(name.clone(), at);
        self.timers.insert((at, self.seq), name);
    }

    fn fire(&mut self, now: Instant) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((at, _), name) = entry.remove_entry();
            // A later, earlier-scheduled entry replaced this one: ignore the stale one.
            if self.due.get(&name) == Some(&at) {
                self.due.remove(&name);
                self.add(name);
            }
        }
    }
}

/// The queue.
#[derive(Debug, Default)]
pub struct Queue {
    state: Mutex<State>,
    notify: Notify,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `name` now.
    pub fn add(&self, name: impl Into<String>) {
        self.lock().add(name.into());
        self.notify.notify_waiters();
    }

    /// Queues `name` at `at` (or earlier, if already scheduled earlier).
    pub fn add_at(&self, name: impl Into<String>, at: Instant) {
        self.lock().add_at(name.into(), at);
        self.notify.notify_waiters();
    }

    /// The next name to work on; `None` once cancelled. Call [`Queue::done`] afterwards.
    pub async fn next(&self, cancel: &CancellationToken) -> Option<String> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wake = {
                let mut s = self.lock();
                s.fire(Instant::now());
                if let Some(name) = s.ready.pop_front() {
                    s.queued.remove(&name);
                    s.active.insert(name.clone());
                    return Some(name);
                }
                s.timers.first_key_value().map(|((at, _), _)| *at)
            };
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = &mut notified => {}
                () = sleep_until(wake) => {}
            }
        }
    }

    /// Finishes work on `name`; queues it again if it changed meanwhile, and at `again`.
    pub fn done(&self, name: &str, again: Option<Instant>) {
        {
            let mut s = self.lock();
            s.active.remove(name);
            if s.dirty.remove(name) {
                s.add(name.to_owned());
            }
            if let Some(at) = again {
                s.add_at(name.to_owned(), at);
            }
        }
        self.notify.notify_waiters();
    }

    /// Names queued or scheduled (for tests and metrics).
    pub fn len(&self) -> usize {
        let s = self.lock();
        s.ready.len() + s.due.len()
    }

    /// Whether nothing is queued or scheduled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn dedup_exclusive_and_delayed() {
        let q = Queue::default();
        let cancel = CancellationToken::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.next(&cancel).await.as_deref(), Some("a"));
        // "a" changes while being worked on: not handed out twice, queued again after.
        q.add("a");
        assert_eq!(q.next(&cancel).await.as_deref(), Some("b"));
        q.done("b", None);
        q.done("a", None);
        assert_eq!(q.next(&cancel).await.as_deref(), Some("a"));
        q.done("a", Some(Instant::now() + Duration::from_secs(5)));
        q.add_at("c", Instant::now() + Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(q.next(&cancel).await.as_deref(), Some("c"));
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(q.next(&cancel).await.as_deref(), Some("a"));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        q.done("a", None);
        q.done("c", None);
        assert!(q.is_empty());
        cancel.cancel();
        assert_eq!(q.next(&cancel).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn earlier_schedule_wins() {
        let q = Queue::default();
        let cancel = CancellationToken::new();
        let t0 = Instant::now();
        q.add_at("a", t0 + Duration::from_secs(10));
        q.add_at("a", t0 + Duration::from_secs(2));
        q.add_at("a", t0 + Duration::from_secs(7));
        assert_eq!(q.next(&cancel).await.as_deref(), Some("a"));
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        q.done("a", None);
        assert!(q.is_empty(), "the stale entries do not count");
    }
}

//! Is a base alive? A pure classification of the last sign of life against `now`
//! (spec controller §1.12).

use std::time::Duration;

use tokio::time::Instant;

/// How alive a base looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Heard from within the unreachable threshold: Ready=True.
    Alive,
    /// Silent for longer than the unreachable threshold: Ready=Unknown.
    Unreachable,
    /// Silent for the dead threshold, or closed by a deactivation: the Node goes away.
    Dead,
}

/// Why a base counts as dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeathCause {
    /// A DEACTIVATED heartbeat or a health report whose base state is not activated.
    Deactivated,
    /// No heartbeat or health for the dead threshold.
    Silent,
}

/// The liveness record of one base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    last_seen: Instant,
    closed: bool,
}

/// The two thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Unreachable strictly after this much silence (upstream 25 s).
    pub unreachable_after: Duration,
    /// Dead at this much silence (upstream 60 s).
    pub dead_after: Duration,
}

impl Liveness {
    /// A record that counts `now` as the last sign of life. Used for new bases and, as a grace
    /// period, for Nodes rediscovered at start-up before any heartbeat arrived (upstream starts
    /// them "dead" and may delete live bases' Nodes, spec controller §1.12).
    pub fn new(now: Instant) -> Liveness {
        Liveness {
            last_seen: now,
            closed: false,
        }
    }

    /// An activated heartbeat or health report.
    pub fn refresh(&mut self, now: Instant) {
        self.last_seen = self.last_seen.max(now);
        self.closed = false;
    }

    /// A deactivation: dead at once.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// When the base was last heard from.
    pub fn last_seen(&self) -> Instant {
        self.last_seen
    }

    /// Classifies at `now`. Boundaries follow upstream: unreachable after *more than* 25 s,
    /// dead at 60 s or more.
    pub fn classify(&self, now: Instant, t: &Thresholds) -> Class {
        if self.closed {
            return Class::Dead;
        }
        let silent = now.saturating_duration_since(self.last_seen);
        if silent >= t.dead_after {
            Class::Dead
        } else if silent > t.unreachable_after {
            Class::Unreachable
        } else {
            Class::Alive
        }
    }

    /// Why the base is dead, if it is.
    pub fn death_cause(&self, now: Instant, t: &Thresholds) -> Option<DeathCause> {
        match (self.closed, self.classify(now, t)) {
            (true, _) => Some(DeathCause::Deactivated),
            (false, Class::Dead) => Some(DeathCause::Silent),
            _ => None,
        }
    }

    /// The next instant at which [`Liveness::classify`] changes without new input.
    pub fn next_change(&self, now: Instant, t: &Thresholds) -> Option<Instant> {
        match self.classify(now, t) {
            // One nanosecond past the threshold, because the boundary itself is still Alive.
            Class::Alive => Some(self.last_seen + t.unreachable_after + Duration::from_nanos(1)),
            Class::Unreachable => Some(self.last_seen + t.dead_after),
            Class::Dead => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        unreachable_after: Duration::from_secs(25),
        dead_after: Duration::from_secs(60),
    };

    #[test]
    fn classification_table() {
        let t0 = Instant::now();
        let l = Liveness::new(t0);
        let s = Duration::from_secs;
        let cases = [
            (s(0), Class::Alive),
            (s(10), Class::Alive),
            (s(25), Class::Alive),
            (s(25) + Duration::from_millis(1), Class::Unreachable),
            (s(59), Class::Unreachable),
            (s(60), Class::Dead),
            (s(3600), Class::Dead),
        ];
        for (after, want) in cases {
            assert_eq!(l.classify(t0 + after, &T), want, "{after:?}");
        }
        // A clock reading before the last sign of life counts as no silence at all.
        let later = Liveness::new(t0 + s(5));
        assert_eq!(later.classify(t0, &T), Class::Alive);
    }

    #[test]
    fn refresh_and_close() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut l = Liveness::new(t0);
        l.close();
        assert_eq!(l.classify(t0, &T), Class::Dead);
        assert_eq!(l.death_cause(t0, &T), Some(DeathCause::Deactivated));
        l.refresh(t0 + s(1));
        assert_eq!(l.classify(t0 + s(1), &T), Class::Alive);
        assert_eq!(l.death_cause(t0 + s(61), &T), Some(DeathCause::Silent));
        // Out-of-order refreshes never move the last sign of life backwards.
        l.refresh(t0);
        assert_eq!(l.last_seen(), t0 + s(1));
    }

    #[test]
    fn next_change_points_at_the_following_class() {
        let t0 = Instant::now();
        let l = Liveness::new(t0);
        let n1 = l.next_change(t0, &T).unwrap();
        assert_eq!(l.classify(n1, &T), Class::Unreachable);
        assert_eq!(l.classify(n1 - Duration::from_nanos(1), &T), Class::Alive);
        let n2 = l.next_change(n1, &T).unwrap();
        assert_eq!(n2, t0 + T.dead_after);
        assert_eq!(l.classify(n2, &T), Class::Dead);
        assert_eq!(l.next_change(n2, &T), None);
    }
}

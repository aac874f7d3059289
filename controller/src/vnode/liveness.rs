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
///
/// Silence only counts towards death while this replica was in a position to hear the base:
/// the dead clock runs from the later of the last sign of life and the start of the current
/// observation window, and stops while this replica is blind (its tunnel is down, or most of
/// its bases went silent at once, which says more about this replica than about the bases).
/// A replica never concludes that a base died from silence it could not have heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    last_seen: Instant,
    closed: bool,
    /// Start of the current observation window (takeover, end of a blind spell).
    window_start: Instant,
    /// Whether this replica cannot hear the base right now.
    blind: bool,
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
            window_start: now,
            blind: false,
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

    /// Starts a new observation window at `now`, as when this replica takes a base over:
    /// what it did or did not hear before is not evidence (over the HTTP tunnel a standby
    /// replica hears nothing at all), so the base gets a full window, like a new one.
    pub fn restart_observation(&mut self, now: Instant) {
        self.last_seen = self.last_seen.max(now);
        self.window_start = self.window_start.max(now);
        self.closed = false;
    }

    /// This replica became unable (`true`) or able again (`false`) to hear the base. While
    /// blind the base can become Unreachable but never Dead; when sight returns, the dead
    /// clock starts again from that moment.
    pub fn set_blind(&mut self, blind: bool, now: Instant) {
        if self.blind && !blind {
            self.window_start = self.window_start.max(now);
        }
        self.blind = blind;
    }

    /// Whether this replica is blind.
    pub fn is_blind(&self) -> bool {
        self.blind
    }

    /// When the base was last heard from.
    pub fn last_seen(&self) -> Instant {
        self.last_seen
    }

    /// The instant silence towards death is counted from.
    fn dead_clock(&self) -> Instant {
        self.last_seen.max(self.window_start)
    }

    /// Classifies at `now`. Boundaries follow upstream: unreachable after *more than* 25 s,
    /// dead at 60 s or more (of silence this replica could have heard).
    pub fn classify(&self, now: Instant, t: &Thresholds) -> Class {
        if self.closed {
            return Class::Dead;
        }
        let silent = now.saturating_duration_since(self.last_seen);
        let heard_silence = now.saturating_duration_since(self.dead_clock());
        if !self.blind && heard_silence >= t.dead_after {
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
        let dead_at = (!self.blind).then(|| self.dead_clock() + t.dead_after);
        match self.classify(now, t) {
            // One nanosecond past the threshold, because the boundary itself is still Alive.
            // (Death always comes later: its clock never starts before the last sign of life.)
            Class::Alive => Some(self.last_seen + t.unreachable_after + Duration::from_nanos(1)),
            Class::Unreachable => dead_at,
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

    #[test]
    fn takeover_starts_a_new_observation_window() {
        // A standby that heard nothing for minutes (HTTP: heartbeats go to the owner) takes
        // the base over: it must not conclude the base is dead from that silence.
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut l = Liveness::new(t0);
        assert_eq!(l.classify(t0 + s(300), &T), Class::Dead);
        l.restart_observation(t0 + s(300));
        assert_eq!(l.classify(t0 + s(300), &T), Class::Alive);
        assert_eq!(l.classify(t0 + s(326), &T), Class::Unreachable);
        assert_eq!(l.classify(t0 + s(360), &T), Class::Dead);
        // A deactivation heard before the takeover is not carried over either.
        let mut closed = Liveness::new(t0);
        closed.close();
        closed.restart_observation(t0 + s(1));
        assert_eq!(closed.classify(t0 + s(1), &T), Class::Alive);
    }

    #[test]
    fn blindness_table() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // (blind from, sight back at, probe, want)
        #[rustfmt::skip]
        let cases: [(u64, Option<u64>, u64, Class); 8] = [
            (5,  None,      24,  Class::Alive),
            (5,  None,      26,  Class::Unreachable),
            // Blind: silence never becomes death, however long.
            (5,  None,      3600, Class::Unreachable),
            // Sight back at 100 s: the dead clock restarts there...
            (5,  Some(100), 101, Class::Unreachable),
            (5,  Some(100), 159, Class::Unreachable),
            // ...and runs its full length from it.
            (5,  Some(100), 160, Class::Dead),
            // Blind only after the base was already dead: still dead once sight is back
            // and a full window passed.
            (70, Some(80),  139, Class::Unreachable),
            (70, Some(80),  140, Class::Dead),
        ];
        for (from, back, probe, want) in cases {
            let mut l = Liveness::new(t0);
            l.set_blind(true, t0 + s(from));
            if let Some(b) = back {
                l.set_blind(false, t0 + s(b));
            }
            assert_eq!(
                l.classify(t0 + s(probe), &T),
                want,
                "blind {from}..{back:?} at {probe}"
            );
        }
        // A deactivation is news the base sent: it counts even while blind to silence.
        let mut l = Liveness::new(t0);
        l.set_blind(true, t0);
        l.close();
        assert_eq!(l.classify(t0, &T), Class::Dead);
    }

    #[test]
    fn next_change_while_blind_stops_at_unreachable() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut l = Liveness::new(t0);
        l.set_blind(true, t0);
        let n1 = l.next_change(t0, &T).unwrap();
        assert_eq!(l.classify(n1, &T), Class::Unreachable);
        assert_eq!(l.next_change(n1, &T), None);
        l.set_blind(false, t0 + s(100));
        assert_eq!(l.next_change(t0 + s(100), &T), Some(t0 + s(160)));
        // Right after a takeover the next change is the end of the fresh window.
        let mut m = Liveness::new(t0);
        m.restart_observation(t0 + s(300));
        assert_eq!(
            m.next_change(t0 + s(300), &T),
            Some(t0 + s(325) + Duration::from_nanos(1))
        );
    }
}

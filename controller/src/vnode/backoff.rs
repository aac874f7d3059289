//! Retry delays after failed Kubernetes calls: exponential per base, capped, with jitter, so
//! an API server brown-out is met with fewer requests rather than every base retrying on the
//! same fixed beat (upstream and our first version retried every 2 s, all bases at once).
//!
//! Pure: the jitter comes from a hash of the base's name and the attempt number, so the
//! delays of one base are reproducible in tests while different bases spread out.

use std::time::Duration;

/// Exponential backoff with a cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub base: Duration,
    /// Longest delay.
    pub cap: Duration,
}

impl Backoff {
    /// The delay after `failures` consecutive failures (1 = the first): `base · 2^(n-1)`,
    /// capped, then scaled by a jitter factor in [0.5, 1.0) derived from `seed` and `n`
    /// ("equal jitter": never less than half the nominal delay, so retries still back off).
    pub fn delay(&self, failures: u32, seed: u64) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let exp = failures.saturating_sub(1).min(30);
        let nominal = self
            .base
            .checked_mul(1u32 << exp)
            .unwrap_or(self.cap)
            .min(self.cap);
        let frac = jitter(seed, failures);
        nominal.mul_f64(0.5 + frac / 2.0)
    }
}

/// A number in [0, 1) from `seed` and `n` (FNV-1a; stable across processes).
fn jitter(seed: u64, n: u32) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in n.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Finalise (splitmix64) so nearby seeds give unrelated fractions.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A seed for [`Backoff::delay`] from a name.
pub fn seed(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        base: Duration::from_secs(2),
        cap: Duration::from_secs(60),
    };

    #[test]
    fn doubles_within_jitter_bounds_and_caps() {
        let s = Duration::from_secs;
        // (failures, nominal)
        let cases = [
            (1, s(2)),
            (2, s(4)),
            (3, s(8)),
            (4, s(16)),
            (5, s(32)),
            (6, s(60)),
            (7, s(60)),
            (40, s(60)),
            (u32::MAX, s(60)),
        ];
        for seed in [0, 1, seed("vnode.a.dev"), u64::MAX] {
            for (n, nominal) in cases {
                let d = B.delay(n, seed);
                assert!(
                    d >= nominal / 2 && d < nominal,
                    "n={n} seed={seed}: {d:?} vs {nominal:?}"
                );
            }
        }
        assert_eq!(B.delay(0, 7), Duration::ZERO);
    }

    #[test]
    fn deterministic_per_base_and_spread_across_bases() {
        assert_eq!(B.delay(3, seed("a")), B.delay(3, seed("a")));
        let delays: std::collections::BTreeSet<Duration> = (0..50)
            .map(|i| B.delay(3, seed(&format!("vnode.base-{i}.dev"))))
            .collect();
        // Fifty bases failing together do not come back on one beat.
        assert!(delays.len() > 40, "only {} distinct delays", delays.len());
        let spread = *delays.last().unwrap() - *delays.first().unwrap();
        assert!(spread > Duration::from_secs(2), "spread {spread:?}");
    }
}

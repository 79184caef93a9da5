//! When to poll again, for every source that polls: a fleet of agents that start
//! together (after a regional power cut) must not poll together. Each wait takes
//! a random factor `r` in `0.0..1.0` (from `fastrand` in the loops, fixed in
//! tests), so the phases of a fleet spread out within a round and stay spread.

use std::time::Duration;

/// The symmetric jitter of a poll interval: ±20 %. The mean stays the interval
/// the server or the config asked for; a one-sided jitter would only lengthen it
/// and keep a fleet's common phase for hours.
pub const JITTER: f64 = 0.2;

/// `mean` stretched or shrunk by up to [`JITTER`].
pub fn jittered(mean: Duration, r: f64) -> Duration {
    let factor = 1.0 - JITTER + 2.0 * JITTER * r.clamp(0.0, 1.0);
    Duration::try_from_secs_f64(mean.as_secs_f64() * factor).unwrap_or(mean)
}

/// A wait uniform over `0..window`: the first poll after start-up, so agents
/// that start in the same second spread over one interval.
pub fn spread(window: Duration, r: f64) -> Duration {
    Duration::try_from_secs_f64(window.as_secs_f64() * r.clamp(0.0, 1.0)).unwrap_or(window)
}

/// The wait after `failures` failed polls in a row: full jitter, uniform below
/// `base · 2^(failures-1)` capped at `max`, so a fleet that lost its server does
/// not come back in waves.
pub fn backoff(failures: u32, base: Duration, max: Duration, r: f64) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    spread(base.saturating_mul(factor).min(max), r)
}

/// A random factor for the waits above.
pub fn random() -> f64 {
    fastrand::f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_symmetric_around_the_mean() {
        let m = Duration::from_secs(100);
        assert_eq!(jittered(m, 0.0), Duration::from_secs(80));
        assert_eq!(jittered(m, 0.5), m);
        assert_eq!(jittered(m, 1.0), Duration::from_secs(120));
        assert_eq!(jittered(Duration::MAX, 1.0), Duration::MAX);
    }

    #[test]
    fn spread_covers_the_window() {
        let w = Duration::from_secs(60);
        assert_eq!(spread(w, 0.0), Duration::ZERO);
        assert_eq!(spread(w, 0.25), Duration::from_secs(15));
        assert_eq!(spread(w, 1.0), w);
    }

    #[test]
    fn backoff_is_full_jitter_under_a_capped_exponential() {
        let (base, max) = (Duration::from_secs(10), Duration::from_secs(600));
        let caps: Vec<u64> = (1..=8)
            .map(|n| backoff(n, base, max, 1.0).as_secs())
            .collect();
        assert_eq!(caps, vec![10, 20, 40, 80, 160, 320, 600, 600]);
        assert_eq!(backoff(3, base, max, 0.0), Duration::ZERO);
        assert_eq!(backoff(u32::MAX, base, max, 0.5), Duration::from_secs(300));
    }
}

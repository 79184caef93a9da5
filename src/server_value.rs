//! The one place where numbers a server sends are brought into a sane range
//! before use: a wait (hawkBit's `sleep`), a size (hawkBit's artifact `size`,
//! ThingsBoard's `fw_size`). A hostile or broken server could otherwise park the
//! agent forever, overflow arithmetic (`5120000000000000:00:00` once panicked
//! `Duration::mul_f64`), or announce exabytes. MCS push timestamps have their own
//! window check (`source::mcs::push`), `Retry-After` its own cap
//! (`download::retry::MAX_RETRY_AFTER`).

use std::ops::RangeInclusive;
use std::time::Duration;

/// The waits a server may ask for: a server asking for more is asked again
/// after a day.
pub const WAIT: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(24 * 3600);

/// The image sizes a server may announce; more is refused as not a size. No
/// gateway or device firmware comes near it, and `max_image_size` applies too.
pub const SIZE: RangeInclusive<u64> = 0..=(64 << 30);

/// `value` clamped into `range`.
pub fn clamp<T: Ord + Copy>(value: T, range: RangeInclusive<T>) -> T {
    value.clamp(*range.start(), *range.end())
}

/// A wait of `secs` seconds, clamped into [`WAIT`] (no overflow for any input).
pub fn wait_secs(secs: u64) -> Duration {
    clamp(Duration::from_secs(secs.min(WAIT.end().as_secs())), WAIT)
}

/// `value` when it is in [`SIZE`]: a size outside is refused, not clamped (a
/// clamped size would fail the download's length check later, less clearly).
pub fn size(value: u64) -> Option<u64> {
    SIZE.contains(&value).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_values_land_in_range() {
        assert_eq!(wait_secs(u64::MAX), Duration::from_secs(24 * 3600));
        assert_eq!(wait_secs(30), Duration::from_secs(30));
        assert_eq!(clamp(Duration::MAX, WAIT), *WAIT.end());
        assert_eq!(size(1 << 20), Some(1 << 20));
        assert_eq!(size(u64::MAX), None);
    }
}

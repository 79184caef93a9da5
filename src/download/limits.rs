//! The bounds a download never crosses, whatever the server does: the size
//! (`max_image_size`, the announced length, the expected size), the free space
//! left in the download folder, a minimum rate, and the time spent retrying.

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::DownloadError;

/// How often, in bytes received, the free space is checked while streaming.
pub const SPACE_CHECK_EVERY: u64 = 4 << 20;

/// Free bytes in `dir` for an unprivileged writer; `None` when it cannot be told.
fn available(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    // fsblkcnt_t and c_ulong are 32-bit on armhf gateways.
    #[allow(clippy::unnecessary_cast)]
    Some((stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64))
}

/// Refuses when writing `needed` more bytes into `dir` would leave less than
/// `reserve` free. Every path that writes an image calls it (HTTP downloads
/// before and while streaming, ThingsBoard chunks per chunk).
pub fn check_free_space(dir: &Path, needed: u64, reserve: u64) -> Result<(), DownloadError> {
    let Some(available) = available(dir) else {
        return Ok(());
    };
    if needed.saturating_add(reserve) > available {
        return Err(DownloadError::NoSpace {
            dir: dir.to_path_buf(),
            needed: needed.saturating_add(reserve),
            available,
        });
    }
    Ok(())
}

/// The most bytes a body may bring: the smallest of the file's announced or
/// expected total and `max_image_size`, with what each limit is called.
pub(super) fn ceiling(total: Option<u64>, max: Option<u64>) -> Option<(u64, &'static str)> {
    match (total, max) {
        (Some(t), Some(m)) if m < t => Some((m, "max_image_size")),
        (Some(t), _) => Some((t, "announced or expected size")),
        (None, Some(m)) => Some((m, "max_image_size")),
        (None, None) => None,
    }
}

/// Fails an attempt whose body arrives slower than `min_rate` over a window:
/// a server trickling a byte every few seconds never trips the stall timeout.
pub(super) struct RateCheck {
    min_rate: u64,
    window: Duration,
    started: Instant,
    at_start: u64,
}

impl RateCheck {
    pub fn new(min_rate: u64, window: Duration, received: u64) -> RateCheck {
        RateCheck {
            min_rate,
            window: window.max(Duration::from_millis(100)),
            started: Instant::now(),
            at_start: received,
        }
    }

    /// Checks at each chunk and at each stall-timer tick; starts a new window
    /// when one is over.
    pub fn check(&mut self, url: &str, received: u64) -> Result<(), DownloadError> {
        if self.min_rate == 0 || self.started.elapsed() < self.window {
            return Ok(());
        }
        let got = received - self.at_start;
        let wanted = (self.min_rate as f64 * self.window.as_secs_f64()) as u64;
        if got < wanted {
            return Err(DownloadError::TooSlow {
                url: url.to_string(),
                min_rate: self.min_rate,
                got,
                window: self.window,
                at: received,
            });
        }
        self.started = Instant::now();
        self.at_start = received;
        Ok(())
    }

    /// Time until the current window ends (so a silent body is checked too).
    pub fn until_due(&self) -> Duration {
        self.window.saturating_sub(self.started.elapsed())
    }
}

/// The time retries may still take: the budget, counted from the start or from
/// the last attempt that brought bytes.
pub(super) struct RetryBudget {
    budget: Duration,
    since: Instant,
}

impl RetryBudget {
    pub fn new(budget: Duration) -> RetryBudget {
        RetryBudget {
            budget,
            since: Instant::now(),
        }
    }

    pub fn progressed(&mut self) {
        self.since = Instant::now();
    }

    pub fn left(&self) -> Duration {
        self.budget.saturating_sub(self.since.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_limit_wins_and_is_named() {
        assert_eq!(ceiling(Some(10), Some(5)), Some((5, "max_image_size")));
        assert_eq!(
            ceiling(Some(5), Some(10)),
            Some((5, "announced or expected size"))
        );
        assert_eq!(ceiling(None, Some(7)), Some((7, "max_image_size")));
        assert_eq!(ceiling(None, None), None);
    }

    #[test]
    fn a_reserve_larger_than_the_disk_refuses() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_free_space(dir.path(), 1, 0).is_ok());
        let err = check_free_space(dir.path(), 1, u64::MAX / 2).unwrap_err();
        assert!(matches!(err, DownloadError::NoSpace { .. }), "{err}");
    }
}

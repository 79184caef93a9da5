//! Polling the controller base resource `{tenant}/controller/v1/{controllerId}`:
//! its `config.polling.sleep` (`HH:MM:SS`) says when to come back, and its links
//! say what the server wants (`deploymentBase`, `configData`, `cancelAction`).
//! The schedule (see [`crate::schedule`]) spreads the first poll over
//! `startup_spread`, honours the server's sleep with ±20 % jitter (so a fleet
//! does not poll in lockstep), backs off exponentially with full jitter after
//! errors, and never polls faster than `min_poll_interval`. Polls are
//! conditional (`If-None-Match` with the root's last `ETag`): a 304 means the
//! last answer still holds.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::HawkbitSource;
use super::wire::ControllerBase;
use crate::api::ApiError;
use crate::schedule;
use crate::source::EngineLink;

/// Longest wait after repeated errors.
const MAX_BACKOFF: Duration = Duration::from_secs(30 * 60);
/// The wait when the server gives no (or an unreadable) sleep.
const DEFAULT_SLEEP: Duration = Duration::from_secs(5 * 60);

/// The longest sleep obeyed: a server asking for more (even for
/// `5120000000000000:00:00`, which overflowed `Duration::mul_f64`) is polled
/// again after a day.
const MAX_SLEEP: Duration = Duration::from_secs(24 * 3600);

/// `HH:MM:SS` → duration, at most [`MAX_SLEEP`].
pub fn parse_sleep(s: &str) -> Option<Duration> {
    let mut parts = s.trim().split(':');
    let (h, m, sec) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let h: u64 = h.parse().ok()?;
    let m: u64 = m.parse().ok()?;
    let sec: u64 = sec.parse().ok()?;
    if m >= 60 || sec >= 60 {
        return None;
    }
    let secs = h.saturating_mul(3600).saturating_add(m * 60 + sec);
    Some(Duration::from_secs(secs).min(MAX_SLEEP))
}

/// The wait after a successful poll: the server's sleep (at most a day) with
/// the symmetric fleet jitter, never below `floor`.
pub fn after_success(sleep: Option<Duration>, floor: Duration, r: f64) -> Duration {
    let base = sleep.unwrap_or(DEFAULT_SLEEP).min(MAX_SLEEP);
    schedule::jittered(base, r).max(floor)
}

/// The wait after `failures` failed polls in a row: full jitter below `floor`
/// doubling per failure, up to 30 minutes (or `floor`, if larger); never below
/// `floor`.
pub fn after_failure(failures: u32, floor: Duration, r: f64) -> Duration {
    schedule::backoff(failures, floor, MAX_BACKOFF.max(floor), r).max(floor)
}

impl HawkbitSource {
    /// The controller base, by a conditional GET: the last answer again on 304.
    async fn root(&self) -> Result<ControllerBase, ApiError> {
        let held = self.lock().root.clone();
        let answer = self
            .api
            .get(self.api.base().as_str())
            .if_none_match(held.as_ref().map(|(etag, _)| etag.as_str()))
            .send()
            .await?;
        if answer.not_modified() {
            return match held {
                Some((_, base)) => Ok(base),
                None => Err(answer.unexpected("304 to an unconditional poll".into())),
            };
        }
        let base: ControllerBase = answer.json()?;
        self.lock().root = answer.etag.clone().map(|etag| (etag, base.clone()));
        Ok(base)
    }

    /// Polls until `shutdown`, on the server's schedule.
    pub(super) async fn poll_loop(&self, link: EngineLink, shutdown: CancellationToken) {
        let floor = self.config.min_poll_interval;
        let first = schedule::spread(self.config.startup_spread, schedule::random());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(first) => {}
        }
        let mut failures = 0u32;
        loop {
            let wait = match self.poll_once(Some(&link)).await {
                Ok(sleep) => {
                    failures = 0;
                    after_success(sleep, floor, schedule::random())
                }
                Err(e) => {
                    failures += 1;
                    let wait = after_failure(failures, floor, schedule::random());
                    tracing::warn!(source = "hawkbit", "poll failed: {e}; next try in {wait:?}");
                    wait
                }
            };
            self.flush().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One poll: reads the controller base and acts on its links. Returns the
    /// server's sleep.
    pub(super) async fn poll_once(
        &self,
        link: Option<&EngineLink>,
    ) -> Result<Option<Duration>, ApiError> {
        let base = self.root().await?;
        let sleep = base
            .config
            .as_ref()
            .and_then(|c| c.polling.as_ref())
            .and_then(|p| p.sleep.as_deref())
            .and_then(|s| {
                let parsed = parse_sleep(s);
                if parsed.is_none() {
                    tracing::warn!(source = "hawkbit", "unreadable polling sleep {s:?}");
                }
                parsed
            });
        if let Some(cancel) = &base.links.cancel_action {
            self.handle_cancel(&cancel.href, link).await?;
        }
        if let Some(deployment) = &base.links.deployment_base {
            self.handle_deployment(&deployment.href, link).await?;
        }
        if let Some(config) = &base.links.config_data {
            self.config_data_requested(&config.href).await;
        }
        Ok(sleep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hh_mm_ss() {
        assert_eq!(parse_sleep("00:01:00"), Some(Duration::from_secs(60)));
        assert_eq!(parse_sleep("12:00:05"), Some(Duration::from_secs(43205)));
        assert_eq!(parse_sleep("100:00:00"), Some(MAX_SLEEP));
        // A hostile sleep is clamped and never panics the poll loop.
        let huge = parse_sleep("5120000000000000:00:00");
        assert_eq!(huge, Some(MAX_SLEEP));
        assert!(after_success(huge, Duration::from_secs(30), 1.0) <= MAX_SLEEP.mul_f64(1.2));
        assert!(after_success(Some(Duration::MAX), Duration::ZERO, 1.0) <= MAX_SLEEP.mul_f64(1.2));
        for bad in ["", "1:2", "00:60:00", "a:b:c", "1:2:3:4", "-1:00:00"] {
            assert_eq!(parse_sleep(bad), None, "{bad}");
        }
    }

    #[test]
    fn honours_sleep_jitter_and_floor() {
        let min = Duration::from_secs(30);
        let s = Some(Duration::from_secs(300));
        assert_eq!(after_success(s, min, 0.5), Duration::from_secs(300));
        assert_eq!(after_success(s, min, 0.0), Duration::from_secs(240));
        assert_eq!(after_success(s, min, 1.0), Duration::from_secs(360));
        // A server asking for 1 s is not obeyed below the floor.
        assert_eq!(after_success(Some(Duration::from_secs(1)), min, 0.5), min);
        assert_eq!(after_success(None, min, 0.5), DEFAULT_SLEEP);
    }

    #[test]
    fn backs_off_exponentially_within_bounds() {
        let min = Duration::from_secs(30);
        let caps: Vec<u64> = (1..=8)
            .map(|n| after_failure(n, min, 1.0).as_secs())
            .collect();
        assert_eq!(caps, vec![30, 60, 120, 240, 480, 960, 1800, 1800]);
        assert_eq!(after_failure(1000, min, 1.0), MAX_BACKOFF);
        assert_eq!(after_failure(5, min, 0.0), min);
        let big = Duration::from_secs(3600);
        assert_eq!(after_failure(3, big, 1.0), big);
    }
}

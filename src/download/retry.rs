//! When to try a download again: exponential backoff with full jitter (AWS
//! architecture blog's "full jitter": a uniform random delay between zero and the
//! exponential cap), unless the server said when with `Retry-After`.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

/// The longest `Retry-After` honoured, by downloads and API calls alike; a
/// server asking for more gets retried then.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// The one rule for HTTP answers worth another attempt, for downloads and API
/// calls alike: a server error (5xx), 408 Request Timeout or 429 Too Many
/// Requests. Any other 4xx means the server will never accept this request.
pub fn retryable_status(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// The wait before attempt `attempt + 1` (attempt counts from 1): the one
/// full-jitter backoff of [`crate::schedule::backoff`].
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    crate::schedule::backoff(attempt, base, max, crate::schedule::random())
}

/// A `Retry-After` value: delta-seconds or an HTTP-date. Bounded by `max` so a
/// hostile server cannot park the agent for a day.
pub fn retry_after(value: &str, now: SystemTime, max: Duration) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_the_exponential_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for attempt in 1..40 {
            let cap = base
                .saturating_mul(1u32.checked_shl(attempt - 1).unwrap_or(u32::MAX))
                .min(max);
            for _ in 0..50 {
                assert!(backoff(attempt, base, max) <= cap);
            }
        }
    }

    #[test]
    fn retries_server_errors_timeouts_and_throttling_only() {
        let retryable = |s: u16| retryable_status(StatusCode::from_u16(s).unwrap());
        for s in [500, 502, 503, 504, 599, 408, 429] {
            assert!(retryable(s), "{s}");
        }
        for s in [200, 301, 400, 401, 403, 404, 409, 410, 413, 422] {
            assert!(!retryable(s), "{s}");
        }
    }

    #[test]
    fn parses_both_retry_after_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let max = Duration::from_secs(600);
        assert_eq!(retry_after("2", now, max), Some(Duration::from_secs(2)));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now, max),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now, max),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("99999", now, max), Some(max));
        assert_eq!(retry_after("soon", now, max), None);
    }
}

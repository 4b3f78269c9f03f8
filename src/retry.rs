//! Retrying outbound HTTP calls: exponential backoff with jitter, and reading a server's
//! `Retry-After`. Shared by the webhook deliveries and the remote generation engines.

use std::time::{Duration, SystemTime};

/// The delay before retry number `attempts` (1 after the first failure): `base · 2^(n-1)`
/// capped at `cap`, scaled by a random factor in [0.5, 1.0) so clients that fail together
/// do not come back together. The server's `Retry-After` wins when given (up to `cap`).
pub fn backoff(
    base: Duration,
    attempts: usize,
    retry_after: Option<Duration>,
    cap: Duration,
) -> Duration {
    if let Some(wait) = retry_after {
        return wait.min(cap);
    }
    let exponent = attempts.saturating_sub(1).min(20) as u32;
    let delay = base.saturating_mul(1 << exponent).min(cap);
    delay.mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        headers.insert(reqwest::header::RETRY_AFTER, later.parse().unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
        headers.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }
}

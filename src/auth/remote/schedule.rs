//! When to fetch next: the refresh interval from the IdP's
//! `Cache-Control: max-age` clamped into the configured bounds, and the
//! retry delay after failures (exponential backoff with "equal jitter": a
//! random point in the upper half of the exponential step, so retries from
//! many proxies spread out but never come sooner than half the step).

use std::time::Duration;

use http::header::CACHE_CONTROL;
use http::HeaderMap;

/// Refresh interval when the IdP sends no `max-age` (then clamped too).
pub(crate) const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// First retry delay after a failed fetch.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay, whatever `refresh_max_seconds` says.
pub(crate) const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// The delay until the next scheduled fetch after a good one.
pub(crate) fn refresh_delay(max_age: Option<u64>, min: Duration, max: Duration) -> Duration {
    max_age
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_REFRESH)
        .clamp(min, max.max(min))
}

/// The delay before retry number `failures + 1`; `unit` is a uniform random
/// number in `[0, 1)`. The result lies in `[step/2, step]` where
/// `step = min(cap, base * 2^failures)`.
pub(crate) fn backoff(failures: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let factor = 1u32 << failures.min(20);
    let step = base.saturating_mul(factor).min(cap);
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    step / 2 + (step / 2).mul_f64(unit)
}

/// `max-age` from the response's `Cache-Control` headers (`no-cache` and
/// `no-store` count as 0, i.e. "as soon as the lower bound allows").
pub(crate) fn max_age(headers: &HeaderMap) -> Option<u64> {
    let mut out = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(text) = value.to_str() else { continue };
        match parse_cache_control(text) {
            Some(0) => return Some(0),
            Some(n) => out = Some(out.map_or(n, |o: u64| o.min(n))),
            None => {}
        }
    }
    out
}

/// `max-age` of one `Cache-Control` value.
pub(crate) fn parse_cache_control(text: &str) -> Option<u64> {
    let mut out = None;
    for directive in text.split(',') {
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        let name = name.trim().to_ascii_lowercase();
        match name.as_str() {
            "no-cache" | "no-store" => return Some(0),
            "max-age" => {
                if let Ok(n) = value.trim().trim_matches('"').parse::<u64>() {
                    out = Some(n);
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn cache_control_parsing() {
        assert_eq!(parse_cache_control("max-age=600"), Some(600));
        assert_eq!(
            parse_cache_control("public, Max-Age=60, must-revalidate"),
            Some(60)
        );
        assert_eq!(parse_cache_control("max-age=\"30\""), Some(30));
        assert_eq!(parse_cache_control("public, max-age=60, no-cache"), Some(0));
        assert_eq!(parse_cache_control("no-store"), Some(0));
        assert_eq!(parse_cache_control("public"), None);
        assert_eq!(parse_cache_control("max-age=-5"), None);
        assert_eq!(parse_cache_control("max-age=abc"), None);
        assert_eq!(parse_cache_control("s-maxage=10"), None);
        let mut h = HeaderMap::new();
        assert_eq!(max_age(&h), None);
        h.append(CACHE_CONTROL, "max-age=100".parse().unwrap());
        h.append(CACHE_CONTROL, "max-age=50".parse().unwrap());
        assert_eq!(max_age(&h), Some(50));
    }

    #[test]
    fn refresh_is_clamped() {
        assert_eq!(refresh_delay(Some(1), S(60), S(3600)), S(60));
        assert_eq!(refresh_delay(Some(600), S(60), S(3600)), S(600));
        assert_eq!(refresh_delay(Some(u64::MAX), S(60), S(3600)), S(3600));
        assert_eq!(refresh_delay(None, S(60), S(3600)), DEFAULT_REFRESH);
        assert_eq!(refresh_delay(None, S(1), S(10)), S(10));
        assert_eq!(refresh_delay(Some(5), S(10), S(1)), S(10), "max below min");
    }

    #[test]
    fn backoff_grows_within_jitter_bounds() {
        let base = S(1);
        let cap = S(300);
        for failures in 0..40u32 {
            let step = base.saturating_mul(1 << failures.min(20)).min(cap);
            for unit in [0.0, 0.25, 0.5, 0.999_999, 1.0, f64::NAN, -3.0] {
                let d = backoff(failures, base, cap, unit);
                assert!(d >= step / 2 && d <= step, "{failures} {unit} {d:?}");
            }
        }
        assert_eq!(backoff(0, base, cap, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(3, base, cap, 0.999_999_999).as_secs(), 7);
        assert_eq!(backoff(30, base, cap, 0.0), S(150));
        assert!(backoff(30, base, cap, 0.99) <= cap);
        // Random units spread the delays.
        let a = backoff(5, base, cap, rand::random());
        assert!(a >= S(16) && a <= S(32));
    }
}

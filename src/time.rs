//! Time as the decision core sees it: Unix milliseconds (`Millis`), plus RFC 3339
//! parsing/formatting at the edges. The core never reads the clock; callers
//! pass `now` in.

use ::time::format_description::well_known::Rfc3339;
use ::time::OffsetDateTime;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// The wall clock, read only by the imperative shell.
pub fn now_millis() -> Millis {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// Parses an RFC 3339 timestamp into Unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<Millis> {
    let t = OffsetDateTime::parse(text.trim(), &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Formats Unix milliseconds as RFC 3339 UTC with millisecond precision
/// (`2026-11-29T12:00:00.123Z`).
pub fn format_rfc3339(ms: Millis) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
            format!(
                "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            )
        }
        Err(_) => "invalid-time".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ms = parse_rfc3339("2026-03-01T00:00:00Z").unwrap();
        assert_eq!(ms, 1_772_323_200_000);
        assert_eq!(format_rfc3339(ms), "2026-03-01T00:00:00.000Z");
        assert_eq!(parse_rfc3339("2026-03-01T01:00:00.5+01:00"), Some(ms + 500));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}

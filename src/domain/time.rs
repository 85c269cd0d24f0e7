//! Lenient timestamp parsing and formatting (milliseconds since the Unix epoch, UTC).

use chrono::{DateTime, SecondsFormat, Utc};

/// Parses an RFC 3339 timestamp with any fractional precision; `None` when it is not one.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
}

/// Formats milliseconds since the epoch as RFC 3339 UTC with millisecond precision.
pub fn format_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The current time in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_precision_and_offsets() {
        let a = parse_rfc3339_ms("2025-03-14T09:09:47.305118Z").unwrap();
        let b = parse_rfc3339_ms("2025-03-14T09:09:47.305Z").unwrap();
        let c = parse_rfc3339_ms("2025-03-14T10:09:47.305+01:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(format_ms(a), "2025-03-14T09:09:47.305Z");
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
        assert_eq!(parse_rfc3339_ms(""), None);
    }
}

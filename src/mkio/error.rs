//! `MkioError`: what a call to MK.IO can end in, parsed from MK.IO's standard error body
//! (`{"error":{"code","detail"},"status","ref"}`, MKIO.md E.2) and its older shapes.

use serde_json::Value;
use std::time::Duration;

/// The longest piece of a non-JSON error body kept as the detail.
const MAX_DETAIL: usize = 300;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MkioError {
    /// MK.IO answered with a non-success status other than 429.
    #[error("MK.IO answered {status} {code}: {detail} (ref {})", ref_or_none(.reference))]
    Api {
        status: u16,
        code: String,
        detail: String,
        reference: Option<String>,
    },
    /// 429: the scope is over MK.IO's rate limit.
    #[error("MK.IO answered 429 (rate limited{}) (ref {})", retry_text(.retry_after), ref_or_none(.reference))]
    Throttled {
        retry_after: Option<Duration>,
        reference: Option<String>,
    },
    /// No answer within `mkio.request_timeout`.
    #[error("MK.IO did not answer within the request timeout")]
    Timeout,
    /// The request could not be sent or its answer not read (connection refused, TLS, ...).
    #[error("cannot reach MK.IO: {0}")]
    Transport(String),
    /// The answer was not what the API describes.
    #[error("unexpected answer from MK.IO: {0}")]
    Decode(String),
    /// The client refused to follow where MK.IO pointed (a next link to another origin, too
    /// many pages); nothing was sent.
    #[error("refused: {0}")]
    Refused(String),
}

fn ref_or_none(reference: &Option<String>) -> &str {
    reference.as_deref().unwrap_or("none")
}

fn retry_text(retry_after: &Option<Duration>) -> String {
    retry_after
        .map(|d| format!(", retry after {}", humantime::format_duration(d)))
        .unwrap_or_default()
}

impl MkioError {
    /// The error for a non-success answer: `Throttled` for 429, `Api` otherwise.
    pub fn from_response(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Self {
        let parsed = serde_json::from_slice::<Value>(body).ok();
        let reference = parsed.as_ref().and_then(reference_of);
        if status == 429 {
            return MkioError::Throttled {
                retry_after,
                reference,
            };
        }
        let (code, detail) = match parsed.as_ref().map(|v| v.get("error")) {
            Some(Some(Value::Object(e))) => (
                text(e.get("code")),
                text(e.get("detail").or_else(|| e.get("message"))),
            ),
            Some(Some(Value::String(s))) => (String::new(), s.clone()),
            Some(_) => (
                String::new(),
                parsed
                    .as_ref()
                    .and_then(|v| v.get("message").or_else(|| v.get("detail")))
                    .map(|v| text(Some(v)))
                    .unwrap_or_default(),
            ),
            None => (String::new(), snippet(body)),
        };
        MkioError::Api {
            status,
            code,
            detail,
            reference,
        }
    }

    /// Worth retrying later: 429, 500, 502, 503, 504, timeouts and transport failures.
    pub fn is_transient(&self) -> bool {
        match self {
            MkioError::Api { status, .. } => matches!(status, 500 | 502 | 503 | 504),
            MkioError::Throttled { .. } | MkioError::Timeout | MkioError::Transport(_) => true,
            MkioError::Decode(_) | MkioError::Refused(_) => false,
        }
    }

    /// The HTTP status, when MK.IO answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            MkioError::Api { status, .. } => Some(*status),
            MkioError::Throttled { .. } => Some(429),
            _ => None,
        }
    }

    /// MK.IO's request reference (`ref`), which its support asks for.
    pub fn reference(&self) -> Option<&str> {
        match self {
            MkioError::Api { reference, .. } | MkioError::Throttled { reference, .. } => {
                reference.as_deref()
            }
            _ => None,
        }
    }

    /// MK.IO's `error.code`, empty when absent.
    pub fn code(&self) -> &str {
        match self {
            MkioError::Api { code, .. } => code,
            MkioError::Throttled { .. } => "TooManyRequests",
            _ => "",
        }
    }

    /// The `Retry-After` MK.IO sent with a 429.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            MkioError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

fn reference_of(body: &Value) -> Option<String> {
    body.get("ref")
        .or_else(|| body.get("error").and_then(|e| e.get("ref")))
        .and_then(|r| match r {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(MAX_DETAIL) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

/// A `Retry-After` value: delta-seconds or an HTTP date (a date in the past is zero).
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE_429: &str = include_str!("../../tests/fixtures/state-responses/error-429.json");

    #[test]
    fn the_429_fixture_is_throttled_with_its_ref() {
        let e = MkioError::from_response(429, Some(Duration::from_secs(7)), FIXTURE_429.as_bytes());
        assert_eq!(
            e,
            MkioError::Throttled {
                retry_after: Some(Duration::from_secs(7)),
                reference: Some("b7e4c2a9f05d4e6b8c31d2a7e9f04b15".into()),
            }
        );
        assert!(e.is_transient());
        assert_eq!(e.status(), Some(429));
        let shown = e.to_string();
        assert!(shown.contains("429") && shown.contains("b7e4c2a9f05d4e6b8c31d2a7e9f04b15"));
        assert!(shown.contains("retry after 7s"), "{shown}");
    }

    #[test]
    fn the_standard_body_gives_code_detail_and_ref() {
        let body = br#"{"error":{"code":"NotFound","detail":"no job j1","extraDetail":{}},"status":404,"ref":"r-1"}"#;
        let e = MkioError::from_response(404, None, body);
        assert_eq!(
            e,
            MkioError::Api {
                status: 404,
                code: "NotFound".into(),
                detail: "no job j1".into(),
                reference: Some("r-1".into()),
            }
        );
        assert!(!e.is_transient());
        assert_eq!(e.reference(), Some("r-1"));
        assert_eq!(
            e.to_string(),
            "MK.IO answered 404 NotFound: no job j1 (ref r-1)"
        );
    }

    #[test]
    fn error_as_a_plain_string_is_tolerated() {
        let e = MkioError::from_response(
            503,
            None,
            br#"{"error":"maintenance","status":503,"ref":"r-2"}"#,
        );
        assert_eq!(e.status(), Some(503));
        assert_eq!(e.code(), "");
        assert_eq!(e.reference(), Some("r-2"));
        assert!(e.is_transient());
        assert!(e.to_string().contains("maintenance"));
    }

    #[test]
    fn odd_or_missing_bodies_still_make_an_error() {
        let html = MkioError::from_response(502, None, b"<html>Bad Gateway</html>");
        assert!(
            matches!(&html, MkioError::Api { status: 502, detail, reference: None, .. } if detail.contains("Bad Gateway"))
        );
        assert!(html.is_transient());
        let empty = MkioError::from_response(500, None, b"");
        assert_eq!(empty.status(), Some(500));
        assert!(empty.to_string().contains("ref none"));
        let other = MkioError::from_response(400, None, br#"{"message":"bad $filter","ref":42}"#);
        assert!(
            matches!(&other, MkioError::Api { detail, reference: Some(r), .. } if detail == "bad $filter" && r == "42")
        );
        let array = MkioError::from_response(409, None, b"[1,2]");
        assert_eq!(array.status(), Some(409));
        assert!(!array.is_transient());
        let long = MkioError::from_response(500, None, "x".repeat(5000).as_bytes());
        assert!(long.to_string().len() < 400);
    }

    #[test]
    fn transient_statuses() {
        for (status, transient) in [
            (429, true),
            (500, true),
            (502, true),
            (503, true),
            (504, true),
            (400, false),
            (401, false),
            (403, false),
            (404, false),
            (409, false),
            (501, false),
        ] {
            let e = MkioError::from_response(status, None, b"{}");
            assert_eq!(e.is_transient(), transient, "{status}");
        }
        assert!(MkioError::Timeout.is_transient());
        assert!(MkioError::Transport("refused".into()).is_transient());
        assert!(!MkioError::Decode("x".into()).is_transient());
        assert_eq!(MkioError::Timeout.status(), None);
    }

    #[test]
    fn retry_after_as_seconds_or_http_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}

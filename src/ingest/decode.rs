//! Turns a webhook request (content type, headers, body) into validated CloudEvents, choosing
//! the content mode as MKIO.md G.1 prescribes.

use crate::domain::event::{null_data, CloudEvent, InvalidEvent};
use crate::domain::view::Raw;
use axum::http::HeaderMap;
use percent_encoding::percent_decode_str;
use serde_json::value::RawValue;
use serde_json::Value;

/// Why a body cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// 415: a media type mkio-relay does not read.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 400: not JSON, or not a valid CloudEvent.
    #[error("{0}")]
    Invalid(String),
}

impl From<InvalidEvent> for DecodeError {
    fn from(e: InvalidEvent) -> Self {
        Self::Invalid(e.0)
    }
}

/// A decoded event with the exact bytes it arrived as (the element of a batch, the whole body
/// of a structured event, the data of a binary-mode event).
pub type Decoded = (CloudEvent, Vec<u8>);

const ACCEPTED: &str =
    "send application/json, application/cloudevents+json or application/cloudevents-batch+json";

/// Decodes a request body. Every event is validated before any is returned, so one bad element
/// rejects a whole batch.
pub fn decode(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Decoded>, DecodeError> {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("<not text>"))
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence.starts_with("application/cloudevents-batch") {
        return batch(body);
    }
    if essence.starts_with("application/cloudevents") {
        return structured(body);
    }
    if essence != "application/json" && !essence.ends_with("+json") {
        let shown = if content_type.is_empty() {
            "none"
        } else {
            content_type
        };
        return Err(DecodeError::UnsupportedMediaType(format!(
            "unsupported content type `{shown}`; {ACCEPTED}"
        )));
    }
    match first_byte(body) {
        Some(b'[') => batch(body),
        Some(b'{') => {
            check_depth(body)?;
            let envelope = read_envelope(body, "the body")?;
            if envelope.specversion.is_some() {
                Ok(vec![(envelope.into_event()?, body.to_vec())])
            } else {
                not_structured(headers, parse(body)?, body)
            }
        }
        _ => not_structured(headers, parse(body)?, body),
    }
}

/// A JSON body that is not a structured event: binary mode when the headers say so.
fn not_structured(
    headers: &HeaderMap,
    value: Value,
    body: &[u8],
) -> Result<Vec<Decoded>, DecodeError> {
    match value {
        Value::Array(_) => batch(body),
        _ if headers.contains_key("ce-specversion") => binary(headers, value, body),
        _ => Err(DecodeError::Invalid(
            "the body is not a CloudEvent: no `specversion` field and no `ce-specversion` header"
                .into(),
        )),
    }
}

fn first_byte(body: &[u8]) -> Option<u8> {
    body.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// How deep arrays and objects may nest, as for a parsed `serde_json::Value`: a body read
/// without building a tree must meet the same limit, or the store would keep events whose
/// data could never be read back.
const MAX_DEPTH: usize = 128;

fn check_depth(json: &[u8]) -> Result<(), DecodeError> {
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&b) = json.get(at) {
        at += 1;
        match b {
            // Skip the string to its closing quote, a whole run of plain text at a time.
            b'"' => loop {
                // Past the end after an escape as the last byte: unterminated too.
                let rest = json.get(at..).unwrap_or_default();
                let Some(stop) = memchr::memchr2(b'"', b'\\', rest) else {
                    return Ok(()); // unterminated: the parser reports it
                };
                at += stop + 1;
                if json[at - 1] == b'"' {
                    break;
                }
                at += 1; // the escaped character
            },
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(DecodeError::Invalid(format!(
                        "the body nests arrays and objects more than {MAX_DEPTH} levels deep"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn parse(body: &[u8]) -> Result<Value, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Invalid("the body is empty".into()));
    }
    serde_json::from_slice(body)
        .map_err(|e| DecodeError::Invalid(format!("the body is not valid JSON: {e}")))
}

/// A structured event's attributes, borrowed from its text; `data` stays text.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    specversion: Raw<'a>,
    #[serde(borrow, default)]
    id: Raw<'a>,
    #[serde(borrow, default, rename = "type")]
    event_type: Raw<'a>,
    #[serde(borrow, default)]
    source: Raw<'a>,
    #[serde(borrow, default)]
    time: Raw<'a>,
    #[serde(borrow, default)]
    data: Raw<'a>,
}

/// Reads a JSON object's envelope; `what` names it in errors ("the body", "batch element 2").
fn read_envelope<'a>(text: &'a [u8], what: &str) -> Result<Envelope<'a>, DecodeError> {
    serde_json::from_slice(text).map_err(|e| {
        DecodeError::Invalid(match e.classify() {
            serde_json::error::Category::Data => format!("{what} is not a valid CloudEvent: {e}"),
            _ => format!("{what} is not valid JSON: {e}"),
        })
    })
}

fn attribute(raw: Raw<'_>, field: &str) -> Result<Option<String>, InvalidEvent> {
    raw.map(|r| {
        serde_json::from_str::<String>(r.get())
            .map_err(|_| InvalidEvent(format!("field `{field}` must be a string")))
    })
    .transpose()
}

fn required(raw: Raw<'_>, field: &str) -> Result<String, InvalidEvent> {
    match attribute(raw, field)? {
        None => Err(InvalidEvent(format!("field `{field}` is missing"))),
        Some(s) if s.is_empty() => Err(InvalidEvent(format!("field `{field}` is empty"))),
        Some(s) => Ok(s),
    }
}

impl Envelope<'_> {
    /// Validates the attributes (in the order `CloudEvent::from_json` does).
    fn into_event(self) -> Result<CloudEvent, InvalidEvent> {
        let specversion = required(self.specversion, "specversion")?;
        let time = attribute(self.time, "time")?;
        CloudEvent::with_raw_data(
            &specversion,
            required(self.id, "id")?,
            required(self.event_type, "type")?,
            required(self.source, "source")?,
            time,
            self.data.map_or_else(null_data, RawValue::to_owned),
        )
    }
}

fn structured(body: &[u8]) -> Result<Vec<Decoded>, DecodeError> {
    if first_byte(body) == Some(b'{') {
        check_depth(body)?;
        let event = read_envelope(body, "the body")?.into_event()?;
        return Ok(vec![(event, body.to_vec())]);
    }
    let value = parse(body)?;
    if value.is_array() {
        return Err(DecodeError::Invalid(
            "a JSON array is a batch; send it as application/cloudevents-batch+json or \
             application/json"
                .into(),
        ));
    }
    Ok(vec![(CloudEvent::from_json(value)?, body.to_vec())])
}

fn batch(body: &[u8]) -> Result<Vec<Decoded>, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Invalid("the body is empty".into()));
    }
    check_depth(body)?;
    let elements: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| {
        DecodeError::Invalid(format!("a batch must be a JSON array of CloudEvents: {e}"))
    })?;
    elements
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let text = raw.get().as_bytes();
            let event = if first_byte(text) == Some(b'{') {
                read_envelope(text, &format!("batch element {i}"))?.into_event()
            } else {
                let value: Value = serde_json::from_str(raw.get()).map_err(|e| {
                    DecodeError::Invalid(format!("batch element {i} is not valid JSON: {e}"))
                })?;
                CloudEvent::from_json(value)
            };
            let event =
                event.map_err(|e| DecodeError::Invalid(format!("batch element {i}: {e}")))?;
            Ok((event, text.to_vec()))
        })
        .collect()
}

/// Reads a `ce-*` header: surrounding quotes stripped, then percent-decoded exactly once.
fn ce_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, DecodeError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| DecodeError::Invalid(format!("header `{name}` is not ASCII text")))?;
    let unquoted = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    percent_decode_str(unquoted)
        .decode_utf8()
        .map(|s| Some(s.into_owned()))
        .map_err(|_| DecodeError::Invalid(format!("header `{name}` is not valid UTF-8")))
}

fn binary(headers: &HeaderMap, data: Value, body: &[u8]) -> Result<Vec<Decoded>, DecodeError> {
    let required = |name: &str| -> Result<String, DecodeError> {
        ce_header(headers, name)?
            .ok_or_else(|| DecodeError::Invalid(format!("header `{name}` is missing")))
    };
    let event = CloudEvent::new(
        &required("ce-specversion")?,
        required("ce-id")?,
        required("ce-type")?,
        required("ce-source")?,
        ce_header(headers, "ce-time")?,
        data,
    )?;
    Ok(vec![(event, body.to_vec())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const EVENT: &str =
        r#"{"specversion":"1.0","id":"1","type":"MediaKind.JobStarted","source":"/x","data":{}}"#;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn structured_under_every_json_type() {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "application/cloudevents+json",
            "Application/CloudEvents+JSON; charset=UTF-8",
        ] {
            let h = headers(&[("content-type", ct)]);
            let out = decode(&h, EVENT.as_bytes()).unwrap();
            assert_eq!(out.len(), 1, "{ct}");
            assert_eq!(out[0].1, EVENT.as_bytes());
        }
    }

    #[test]
    fn batch_keeps_each_element_raw() {
        let body = format!("[{EVENT}, {}]", EVENT.replace("\"1\"", "\"2\""));
        for ct in ["application/json", "application/cloudevents-batch+json"] {
            let out = decode(&headers(&[("content-type", ct)]), body.as_bytes()).unwrap();
            assert_eq!(out.len(), 2);
            assert_eq!(out[0].1, EVENT.as_bytes());
            assert_eq!(out[1].0.id, "2");
        }
        let empty = decode(
            &headers(&[("content-type", "application/cloudevents-batch+json")]),
            b"[]",
        );
        assert_eq!(empty.unwrap().len(), 0);
    }

    #[test]
    fn one_bad_batch_element_rejects_all() {
        let body = format!(r#"[{EVENT}, {{"specversion":"1.0","type":"t","source":"/s"}}]"#);
        let err = decode(
            &headers(&[("content-type", "application/json")]),
            body.as_bytes(),
        );
        assert_eq!(
            err.unwrap_err(),
            DecodeError::Invalid("batch element 1: field `id` is missing".into())
        );
    }

    #[test]
    fn binary_mode_reads_ce_headers() {
        let h = headers(&[
            ("content-type", "application/json"),
            ("ce-specversion", "1.0"),
            ("ce-id", "\"abc%20def\""),
            ("ce-type", "MediaKind.JobStarted"),
            ("ce-source", "/api/v1/projects/p/transforms/t/jobs/j"),
            ("ce-time", "2025-03-14T09:02:11Z"),
        ]);
        let out = decode(&h, br#"{"state":"Processing"}"#).unwrap();
        assert_eq!(out[0].0.id, "abc def");
        assert_eq!(out[0].0.data.get(), r#"{"state":"Processing"}"#);
        assert_eq!(out[0].0.time.as_deref(), Some("2025-03-14T09:02:11Z"));
    }

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(check_depth(nested(MAX_DEPTH).as_bytes()).is_ok());
        assert!(check_depth(nested(MAX_DEPTH + 1).as_bytes()).is_err());
        let in_string = format!(r#"{{"a": "{}\\\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert!(check_depth(in_string.as_bytes()).is_ok(), "{in_string}");
        // An escape as the very last byte (found by the property test): no panic.
        for unterminated in [&br#""\"#[..], br#"{"a": "xy\"#, br#"[""#] {
            assert!(check_depth(unterminated).is_ok());
        }
        let after_escapes = format!(r#"{{"a": "x\\\\", "b": {}}}"#, nested(MAX_DEPTH));
        assert!(
            check_depth(after_escapes.as_bytes()).is_err(),
            "{after_escapes}"
        );
    }

    #[test]
    fn an_envelope_that_repeats_an_attribute_is_refused() {
        let json = headers(&[("content-type", "application/json")]);
        let body = r#"{"specversion":"1.0","id":"1","id":"2","type":"t","source":"/s"}"#;
        let err = decode(&json, body.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Invalid(m) if m.contains("duplicate field `id`")),
            "{err:?}"
        );
    }

    #[test]
    fn media_types_and_garbage() {
        let form = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        assert!(matches!(
            decode(&form, b"a=b"),
            Err(DecodeError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            decode(&HeaderMap::new(), EVENT.as_bytes()),
            Err(DecodeError::UnsupportedMediaType(_))
        ));
        let json = headers(&[("content-type", "application/json")]);
        assert!(matches!(decode(&json, b""), Err(DecodeError::Invalid(_))));
        assert!(matches!(
            decode(&json, b"specversion=1.0"),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            decode(&json, b"{\"a\":1}"),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            decode(&json, b"\xff\xfe"),
            Err(DecodeError::Invalid(_))
        ));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            decode(&json, deep.as_bytes()),
            Err(DecodeError::Invalid(_))
        ));
    }
}

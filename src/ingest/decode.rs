//! Turns a webhook request (content type, headers, body) into validated CloudEvents, choosing
//! the content mode as MKIO.md G.1 prescribes.

use crate::domain::event::{null_data, Attributes, CloudEvent, InvalidEvent, NewEvent, Origin};
use crate::domain::view::{DataField, Raw};
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

const ACCEPTED: &str =
    "send application/json, application/cloudevents+json or application/cloudevents-batch+json";

/// Decodes a webhook request body received at `received_ms` into normalized events, each
/// keeping the exact bytes it arrived as (the element of a batch, the whole body of a
/// structured event, the data of a binary-mode event). Every event is validated before any is
/// returned, so one bad element rejects a whole batch.
pub fn decode(
    headers: &HeaderMap,
    body: &[u8],
    received_ms: i64,
) -> Result<Vec<NewEvent>, DecodeError> {
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
    let cloudevents = essence.starts_with("application/cloudevents");
    if !cloudevents && essence != "application/json" && !essence.ends_with("+json") {
        let shown = if content_type.is_empty() {
            "none"
        } else {
            content_type
        };
        return Err(DecodeError::UnsupportedMediaType(format!(
            "unsupported content type `{shown}`; {ACCEPTED}"
        )));
    }
    check_readable(body)?;
    if essence.starts_with("application/cloudevents-batch") {
        return batch(body, received_ms);
    }
    if cloudevents {
        return structured(body, received_ms);
    }
    match first_byte(body) {
        Some(b'[') => batch(body, received_ms),
        Some(b'{') => {
            if let Some(event) = one_pass(body, received_ms) {
                return Ok(vec![event?]);
            }
            let envelope = read_envelope(body, "the body")?;
            if envelope.specversion.is_some() {
                Ok(vec![normalized(envelope.into_event()?, body, received_ms)])
            } else {
                not_structured(headers, parse(body)?, body, received_ms)
            }
        }
        _ => not_structured(headers, parse(body)?, body, received_ms),
    }
}

fn normalized(event: CloudEvent, raw: &[u8], received_ms: i64) -> NewEvent {
    NewEvent::normalize(event, raw.to_vec(), received_ms, Origin::Webhook)
}

/// A JSON body that is not a structured event: binary mode when the headers say so.
fn not_structured(
    headers: &HeaderMap,
    value: Value,
    body: &[u8],
    received_ms: i64,
) -> Result<Vec<NewEvent>, DecodeError> {
    match value {
        Value::Array(_) => batch(body, received_ms),
        _ if headers.contains_key("ce-specversion") => binary(headers, value, body, received_ms),
        _ => Err(DecodeError::Invalid(
            "the body is not a CloudEvent: no `specversion` field and no `ce-specversion` header"
                .into(),
        )),
    }
}

fn first_byte(body: &[u8]) -> Option<u8> {
    body.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// How deep arrays and objects may nest, as for a parsed `serde_json::Value`.
const MAX_DEPTH: usize = 128;

/// Checks what the API needs to read a stored body back, and reading it without building a
/// tree (raw values, skipped fields) does not check: UTF-8 throughout, arrays and objects
/// nested at most [`MAX_DEPTH`] deep, and every `\u` escape a character (a UTF-16 surrogate
/// only as a high-low pair). The API parses stored bytes with serde_json's strict rules; an
/// event stored without them answered its readers 503 for as long as it was kept. Anything
/// else that is not JSON the parser reports.
fn check_readable(json: &[u8]) -> Result<(), DecodeError> {
    if let Err(e) = std::str::from_utf8(json) {
        return Err(DecodeError::Invalid(format!(
            "the body is not UTF-8 text: invalid byte at offset {}",
            e.valid_up_to()
        )));
    }
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
                // The escaped character, and a `\u` escape's four digits.
                at += 1;
                if json.get(at - 1) == Some(&b'u') {
                    at += unicode_escape(json, at)?;
                }
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

/// Four hex digits at `at`, as a UTF-16 code unit.
fn hex4(json: &[u8], at: usize) -> Option<u16> {
    let digits = std::str::from_utf8(json.get(at..at + 4)?).ok()?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(digits, 16).ok()
}

/// Checks the `\u` escape whose digits start at `at` and returns how many bytes it holds
/// after the `u`: a high surrogate must be followed at once by a `\u` low surrogate, and a
/// low surrogate must not stand alone. Digits that are not hex are the parser's to report.
fn unicode_escape(json: &[u8], at: usize) -> Result<usize, DecodeError> {
    let low = 0xDC00..=0xDFFF;
    let lone = |unit: u16| {
        DecodeError::Invalid(format!(
            "the body holds the escape \\u{unit:04x}, half of a UTF-16 surrogate pair without \
             its other half; it is not a character"
        ))
    };
    match hex4(json, at) {
        None => Ok(0),
        Some(unit) if low.contains(&unit) => Err(lone(unit)),
        Some(unit @ 0xD800..=0xDBFF) => {
            let paired = json.get(at + 4..at + 6) == Some(b"\\u")
                && hex4(json, at + 6).is_some_and(|next| low.contains(&next));
            if paired {
                Ok(10)
            } else {
                Err(lone(unit))
            }
        }
        Some(_) => Ok(4),
    }
}

fn parse(body: &[u8]) -> Result<Value, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Invalid("the body is empty".into()));
    }
    serde_json::from_slice(body)
        .map_err(|e| DecodeError::Invalid(format!("the body is not valid JSON: {e}")))
}

/// A structured event's attributes, borrowed from its text; `data` as `D`: its text
/// ([`Raw`]) or, read in the same pass, the view normalization needs ([`DataField`]).
#[derive(serde::Deserialize)]
struct Envelope<'a, D> {
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
    #[serde(default)]
    data: D,
}

/// Reads a JSON object's envelope; `what` names it in errors ("the body", "batch element 2").
fn read_envelope<'a>(text: &'a [u8], what: &str) -> Result<Envelope<'a, Raw<'a>>, DecodeError> {
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

impl<D> Envelope<'_, D> {
    /// The `specversion` and the attributes, each present and a string (in the order
    /// `CloudEvent::from_json` reads them).
    fn attributes(&self) -> Result<(String, Attributes), InvalidEvent> {
        let specversion = required(self.specversion, "specversion")?;
        let time = attribute(self.time, "time")?;
        let attributes = Attributes {
            id: required(self.id, "id")?,
            event_type: required(self.event_type, "type")?,
            source: required(self.source, "source")?,
            time,
        };
        Ok((specversion, attributes))
    }
}

impl<'a> Envelope<'a, Raw<'a>> {
    fn into_event(self) -> Result<CloudEvent, InvalidEvent> {
        let (specversion, a) = self.attributes()?;
        CloudEvent::with_raw_data(
            &specversion,
            a.id,
            a.event_type,
            a.source,
            a.time,
            self.data.map_or_else(null_data, RawValue::to_owned),
        )
    }
}

impl<'a> Envelope<'a, Option<DataField<'a>>> {
    fn into_new_event(self, raw: &[u8], received_ms: i64) -> Result<NewEvent, InvalidEvent> {
        let (specversion, attributes) = self.attributes()?;
        let data = self.data.unwrap_or_default();
        attributes.validate(&specversion, data.is_object)?;
        Ok(NewEvent::from_view(
            attributes,
            &data.view,
            raw.to_vec(),
            received_ms,
            Origin::Webhook,
        ))
    }
}

/// A structured event (an object's text, its nesting checked) validated and normalized in one
/// pass over the text: the attributes and the view of `data` read together, `data` neither
/// scanned twice nor copied. `None` when that pass refuses the text (it is not JSON, or an
/// object repeats a key) or finds no `specversion`: the caller then reads the envelope first
/// and `data` after, whose errors and leniency stay the reference, so the two ways accept and
/// refuse the same bodies and store the same events.
fn one_pass(text: &[u8], received_ms: i64) -> Option<Result<NewEvent, InvalidEvent>> {
    let envelope: Envelope<'_, Option<DataField<'_>>> = serde_json::from_slice(text).ok()?;
    envelope.specversion?;
    Some(envelope.into_new_event(text, received_ms))
}

fn structured(body: &[u8], received_ms: i64) -> Result<Vec<NewEvent>, DecodeError> {
    if first_byte(body) == Some(b'{') {
        if let Some(event) = one_pass(body, received_ms) {
            return Ok(vec![event?]);
        }
        let event = read_envelope(body, "the body")?.into_event()?;
        return Ok(vec![normalized(event, body, received_ms)]);
    }
    let value = parse(body)?;
    if value.is_array() {
        return Err(DecodeError::Invalid(
            "a JSON array is a batch; send it as application/cloudevents-batch+json or \
             application/json"
                .into(),
        ));
    }
    Ok(vec![normalized(
        CloudEvent::from_json(value)?,
        body,
        received_ms,
    )])
}

fn batch(body: &[u8], received_ms: i64) -> Result<Vec<NewEvent>, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Invalid("the body is empty".into()));
    }
    let elements: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| {
        DecodeError::Invalid(format!("a batch must be a JSON array of CloudEvents: {e}"))
    })?;
    elements
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let text = raw.get().as_bytes();
            let event = if first_byte(text) == Some(b'{') {
                match one_pass(text, received_ms) {
                    Some(event) => event,
                    None => read_envelope(text, &format!("batch element {i}"))?
                        .into_event()
                        .map(|event| normalized(event, text, received_ms)),
                }
            } else {
                let value: Value = serde_json::from_str(raw.get()).map_err(|e| {
                    DecodeError::Invalid(format!("batch element {i} is not valid JSON: {e}"))
                })?;
                CloudEvent::from_json(value).map(|event| normalized(event, text, received_ms))
            };
            event.map_err(|e| DecodeError::Invalid(format!("batch element {i}: {e}")))
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

fn binary(
    headers: &HeaderMap,
    data: Value,
    body: &[u8],
    received_ms: i64,
) -> Result<Vec<NewEvent>, DecodeError> {
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
    Ok(vec![normalized(event, body, received_ms)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const EVENT: &str =
        r#"{"specversion":"1.0","id":"1","type":"MediaKind.JobStarted","source":"/x","data":{}}"#;
    const MS: i64 = 1_741_950_000_000;

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
            let out = decode(&h, EVENT.as_bytes(), MS).unwrap();
            assert_eq!(out.len(), 1, "{ct}");
            assert_eq!(out[0].raw, EVENT.as_bytes());
        }
    }

    #[test]
    fn batch_keeps_each_element_raw() {
        let body = format!("[{EVENT}, {}]", EVENT.replace("\"1\"", "\"2\""));
        for ct in ["application/json", "application/cloudevents-batch+json"] {
            let out = decode(&headers(&[("content-type", ct)]), body.as_bytes(), MS).unwrap();
            assert_eq!(out.len(), 2);
            assert_eq!(out[0].raw, EVENT.as_bytes());
            assert_eq!(out[1].id, "2");
        }
        let empty = decode(
            &headers(&[("content-type", "application/cloudevents-batch+json")]),
            b"[]",
            MS,
        );
        assert_eq!(empty.unwrap().len(), 0);
    }

    #[test]
    fn one_bad_batch_element_rejects_all() {
        let body = format!(r#"[{EVENT}, {{"specversion":"1.0","type":"t","source":"/s"}}]"#);
        let err = decode(
            &headers(&[("content-type", "application/json")]),
            body.as_bytes(),
            MS,
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
        let out = decode(&h, br#"{"state":"Processing"}"#, MS).unwrap();
        assert_eq!(out[0].id, "abc def");
        assert_eq!(out[0].raw, br#"{"state":"Processing"}"#);
        assert_eq!(out[0].state.as_deref(), Some("Processing"));
        assert_eq!(out[0].time.as_deref(), Some("2025-03-14T09:02:11Z"));
    }

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(check_readable(nested(MAX_DEPTH).as_bytes()).is_ok());
        assert!(check_readable(nested(MAX_DEPTH + 1).as_bytes()).is_err());
        let in_string = format!(r#"{{"a": "{}\\\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert!(check_readable(in_string.as_bytes()).is_ok(), "{in_string}");
        // An escape as the very last byte (found by the property test): no panic.
        for unterminated in [&br#""\"#[..], br#"{"a": "xy\"#, br#"[""#] {
            assert!(check_readable(unterminated).is_ok());
        }
        let after_escapes = format!(r#"{{"a": "x\\\\", "b": {}}}"#, nested(MAX_DEPTH));
        assert!(
            check_readable(after_escapes.as_bytes()).is_err(),
            "{after_escapes}"
        );
    }

    #[test]
    fn only_text_a_strict_parser_reads_back_is_readable() {
        for ok in [
            r#"{"a": "\u00e9 \ud83d\ude00 \\ud800 \"\\"}"#,
            r#"{"a": "\uzzzz"}"#, // not hex: the parser's to report
        ] {
            assert!(check_readable(ok.as_bytes()).is_ok(), "{ok}");
        }
        for bad in [
            r#"{"a": "\ud800"}"#,
            r#"{"a": "\udc00x"}"#,
            r#"{"a": "\ud800\u0041"}"#,
            r#"{"a": "\ud800\ud800"}"#,
            r#"{"a": "x\uDBFF"#,
            r#"{"a": "\ud83d\ude0"#,
        ] {
            let err = check_readable(bad.as_bytes()).unwrap_err().to_string();
            assert!(err.contains("surrogate"), "{bad}: {err}");
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad}");
        }
        let err = check_readable(b"{\"a\": \"\xff\"}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the body is not UTF-8 text: invalid byte at offset 7"
        );
        // Refused before anything reads it, in every content mode.
        for ct in ["application/json", "application/cloudevents-batch+json"] {
            let body = EVENT.replace("\"1\"", r#""\udc00""#);
            let body = if ct.contains("batch") {
                format!("[{body}]")
            } else {
                body
            };
            let err = decode(&headers(&[("content-type", ct)]), body.as_bytes(), MS);
            assert!(matches!(err, Err(DecodeError::Invalid(_))), "{ct}");
        }
    }

    #[test]
    fn an_envelope_that_repeats_an_attribute_is_refused() {
        let json = headers(&[("content-type", "application/json")]);
        let body = r#"{"specversion":"1.0","id":"1","id":"2","type":"t","source":"/s"}"#;
        let err = decode(&json, body.as_bytes(), MS).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Invalid(m) if m.contains("duplicate field `id`")),
            "{err:?}"
        );
    }

    /// The envelope read first and `data` after: what [`one_pass`] must agree with.
    fn two_pass(text: &[u8]) -> Result<NewEvent, String> {
        let event = read_envelope(text, "the body")
            .map_err(|e| e.to_string())?
            .into_event()
            .map_err(|e| e.to_string())?;
        Ok(normalized(event, text, MS))
    }

    fn agree(text: &[u8]) {
        let shown = String::from_utf8_lossy(text);
        match one_pass(text, MS) {
            Some(fast) => assert_eq!(fast.map_err(|e| e.to_string()), two_pass(text), "{shown}"),
            None => panic!("one pass refused {shown}"),
        }
    }

    #[test]
    fn one_pass_stores_what_two_passes_store() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read(path).unwrap();
            match first_byte(&text) {
                Some(b'{') if read_envelope(&text, "x").is_ok_and(|e| e.specversion.is_some()) => {
                    agree(&text);
                    seen += 1;
                }
                Some(b'[') => {
                    for element in serde_json::from_slice::<Vec<&RawValue>>(&text).unwrap() {
                        agree(element.get().as_bytes());
                        seen += 1;
                    }
                }
                _ => {}
            }
        }
        assert!(seen >= 10, "only {seen} fixture events");
        let job = "/api/v1/projects/p/transforms/t/jobs/j";
        for data in [
            "",
            r#","data":null"#,
            r#","data":"text""#,
            r#","data":[1,{"state":"Finished"}]"#,
            r#","data":{"state":7,"resource":[]}"#,
            r#","data":{"resource":{"properties":{"state":"Processing","outputs":{}}}}"#,
        ] {
            for ty in ["MediaKind.JobFinished", "Other.Type"] {
                let text = format!(
                    r#"{{"specversion":"1.0","id":"1","type":"{ty}","source":"{job}"{data}}}"#
                );
                agree(text.as_bytes());
            }
        }
    }

    #[test]
    fn data_that_repeats_a_key_is_stored_without_a_state_either_way() {
        let text = br#"{"specversion":"1.0","id":"1","type":"MediaKind.JobFinished",
            "source":"/api/v1/projects/p/transforms/t/jobs/j",
            "data":{"state":"Processing","state":"Finished"}}"#;
        assert!(one_pass(text, MS).is_none());
        let json = headers(&[("content-type", "application/json")]);
        let out = decode(&json, text, MS).unwrap();
        assert_eq!(out[0].state, None);
        assert_eq!(out[0].raw, text);
    }

    #[test]
    fn media_types_and_garbage() {
        let form = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        assert!(matches!(
            decode(&form, b"a=b", MS),
            Err(DecodeError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            decode(&HeaderMap::new(), EVENT.as_bytes(), MS),
            Err(DecodeError::UnsupportedMediaType(_))
        ));
        let json = headers(&[("content-type", "application/json")]);
        assert!(matches!(
            decode(&json, b"", MS),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            decode(&json, b"specversion=1.0", MS),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            decode(&json, b"{\"a\":1}", MS),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            decode(&json, b"\xff\xfe", MS),
            Err(DecodeError::Invalid(_))
        ));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            decode(&json, deep.as_bytes(), MS),
            Err(DecodeError::Invalid(_))
        ));
    }
}

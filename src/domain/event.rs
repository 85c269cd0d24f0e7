//! CloudEvent envelopes: validation, and normalization into the event mkio-relay stores.

use super::resource::{parse_source, ResourceKey, ResourceKind};
use super::time::parse_rfc3339_ms;
use super::view::{self, DataView, OutputView, Raw};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The MK.IO event types (MKIO.md A.2). Any other type is stored with kind `unknown` and never
/// changes a resource's state.
pub const KNOWN_TYPES: [&str; 11] = [
    "MediaKind.JobStarted",
    "MediaKind.JobFinished",
    "MediaKind.StreamingLocatorCreated",
    "MediaKind.ChannelInstanceStarted",
    "MediaKind.ChannelInstanceStopped",
    "MediaKind.ChannelInstanceError",
    "MediaKind.ScheduledOperationAccepted",
    "MediaKind.ScheduledOperationOngoing",
    "MediaKind.ScheduledOperationCompleted",
    "MediaKind.ScheduledOperationError",
    super::polled::POLLED_TYPE,
];

/// Why a body is not a valid CloudEvent. The message names the field and is safe to return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidEvent(pub String);

/// Where an event came from: an MK.IO webhook delivery or mkio-relay's own `/state` polling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Webhook,
    Poll,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Poll => "poll",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "webhook" => Some(Self::Webhook),
            "poll" => Some(Self::Poll),
            _ => None,
        }
    }
}

/// A validated CloudEvent 1.0 envelope (required attributes checked, `data` kept as its JSON
/// text: normalization reads the few fields it needs straight from it, see `view`).
#[derive(Clone, Debug)]
pub struct CloudEvent {
    pub id: String,
    pub event_type: String,
    pub source: String,
    pub time: Option<String>,
    /// `data` as JSON text; `null` when the event has none.
    pub data: Box<RawValue>,
}

/// `data`'s text for an event without data.
pub fn null_data() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is JSON")
}

fn required_string(obj: &Map<String, Value>, field: &str) -> Result<String, InvalidEvent> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(InvalidEvent(format!("field `{field}` is missing"))),
        Some(Value::String(s)) if s.is_empty() => {
            Err(InvalidEvent(format!("field `{field}` is empty")))
        }
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(InvalidEvent(format!("field `{field}` must be a string"))),
    }
}

impl CloudEvent {
    /// Validates a structured-mode event (a JSON value that must be an object).
    pub fn from_json(value: Value) -> Result<Self, InvalidEvent> {
        let Value::Object(mut obj) = value else {
            return Err(InvalidEvent("a CloudEvent must be a JSON object".into()));
        };
        let specversion = required_string(&obj, "specversion")?;
        let time = match obj.get("time") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(InvalidEvent("field `time` must be a string".into())),
        };
        let data = obj.remove("data").unwrap_or(Value::Null);
        Self::new(
            &specversion,
            required_string(&obj, "id")?,
            required_string(&obj, "type")?,
            required_string(&obj, "source")?,
            time,
            data,
        )
    }

    /// Validates the attributes common to every content mode, `data` given as a JSON value.
    pub fn new(
        specversion: &str,
        id: String,
        event_type: String,
        source: String,
        time: Option<String>,
        data: Value,
    ) -> Result<Self, InvalidEvent> {
        let data = serde_json::value::to_raw_value(&data)
            .map_err(|e| InvalidEvent(format!("field `data` cannot be kept: {e}")))?;
        Self::with_raw_data(specversion, id, event_type, source, time, data)
    }

    /// Validates the attributes common to every content mode, `data` given as JSON text.
    pub fn with_raw_data(
        specversion: &str,
        id: String,
        event_type: String,
        source: String,
        time: Option<String>,
        data: Box<RawValue>,
    ) -> Result<Self, InvalidEvent> {
        let attributes = Attributes {
            id,
            event_type,
            source,
            time,
        };
        attributes.validate(specversion, data.get().trim_start().starts_with('{'))?;
        let Attributes {
            id,
            event_type,
            source,
            time,
        } = attributes;
        Ok(Self {
            id,
            event_type,
            source,
            time,
            data,
        })
    }
}

/// A CloudEvent's attributes without its `data`.
#[derive(Clone, Debug)]
pub struct Attributes {
    pub id: String,
    pub event_type: String,
    pub source: String,
    pub time: Option<String>,
}

impl Attributes {
    /// The checks every content mode shares, in this order: `specversion` is 1.0; `id`, `type`
    /// and `source` are not blank and, like `time`, hold no control characters; a MediaKind
    /// event's `data` is a JSON object (`data_is_object`).
    pub fn validate(&self, specversion: &str, data_is_object: bool) -> Result<(), InvalidEvent> {
        if specversion != "1.0" {
            return Err(InvalidEvent(format!(
                "field `specversion` must be \"1.0\", got {specversion:?}"
            )));
        }
        for (field, value) in [
            ("id", &self.id),
            ("type", &self.event_type),
            ("source", &self.source),
        ] {
            if value.trim().is_empty() {
                return Err(InvalidEvent(format!("field `{field}` is empty")));
            }
            if value.chars().any(char::is_control) {
                return Err(InvalidEvent(format!(
                    "field `{field}` must not contain control characters"
                )));
            }
        }
        if self
            .time
            .as_deref()
            .is_some_and(|t| t.chars().any(char::is_control))
        {
            return Err(InvalidEvent(
                "field `time` must not contain control characters".into(),
            ));
        }
        if self.event_type.starts_with("MediaKind.") && !data_is_object {
            return Err(InvalidEvent(format!(
                "field `data` must be a JSON object for {} events",
                self.event_type
            )));
        }
        Ok(())
    }
}

/// An event ready to store: the envelope, its resource, and what it says about that resource.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub id: String,
    pub event_type: String,
    /// The canonical object path; `(source, id)` is the deduplication key.
    pub source: String,
    /// The `time` attribute verbatim, when present.
    pub time: Option<String>,
    /// Event time in ms, or the receive time when `time` is missing or unparsable.
    pub event_ms: i64,
    /// Ordering time: a job's `properties.lastModified` when present, otherwise `event_ms`.
    pub version_ms: i64,
    pub received_ms: i64,
    /// `unknown` for event types MK.IO has not documented, otherwise the resource's kind.
    pub kind: ResourceKind,
    pub key: ResourceKey,
    pub previous_state: Option<String>,
    pub state: Option<String>,
    /// What the resource row keeps when this event sets its state (outputs, correlation, ...),
    /// as JSON text: serialized in the request handler rather than in the serial writer, and
    /// the parsed `data` is not kept, so the writer neither copies nor frees any JSON value.
    pub details_text: String,
    /// The bytes as received: a structured event's whole envelope (a batch element's own
    /// bytes), or a binary-mode event's data. The store keeps only these and reads `data`
    /// back from them, so a producer of events (the poller too) must follow the same rule.
    pub raw: Vec<u8>,
    pub origin: Origin,
}

impl NewEvent {
    /// Normalizes a validated CloudEvent received at `received_ms` with its raw bytes.
    pub fn normalize(event: CloudEvent, raw: Vec<u8>, received_ms: i64, origin: Origin) -> Self {
        let CloudEvent {
            id,
            event_type,
            source,
            time,
            data,
        } = event;
        let view = DataView::read(data.get()).unwrap_or_else(|| {
            // Only an object that repeats a key gets here (the text was checked as JSON).
            tracing::warn!(
                id = %id,
                source = %source,
                "event data repeats a key; stored without reading a state from it"
            );
            DataView::default()
        });
        let attributes = Attributes {
            id,
            event_type,
            source,
            time,
        };
        Self::from_view(attributes, &view, raw, received_ms, origin)
    }

    /// Normalizes validated attributes and the view of their `data`, as [`Self::normalize`]
    /// does once it has read the view: for a decoder that read the view in the same pass as
    /// the attributes.
    pub fn from_view(
        event: Attributes,
        data: &DataView<'_>,
        raw: Vec<u8>,
        received_ms: i64,
        origin: Origin,
    ) -> Self {
        let parsed = parse_source(&event.source);
        let mut key = parsed.key;
        let resource = &data.resource.0;
        let props = &resource.properties.0;
        if key.project.is_empty() {
            if let Some(p) = view::text(data.project_name) {
                key.project = text_column(&p);
            }
        }
        let known = KNOWN_TYPES.contains(&event.event_type.as_str());
        let kind = if known {
            key.kind
        } else {
            ResourceKind::Unknown
        };
        let event_ms = event
            .time
            .as_deref()
            .and_then(parse_rfc3339_ms)
            .unwrap_or(received_ms);
        let version_ms = match key.kind {
            ResourceKind::Job => view::text(props.last_modified)
                .and_then(|t| parse_rfc3339_ms(&t))
                .unwrap_or(event_ms),
            _ => event_ms,
        };
        let state = view::text(data.state)
            .or_else(|| view::text(props.state))
            .or_else(|| view::text(resource.status.0.state))
            .or_else(|| view::text(props.resource_state))
            .map(|s| text_column(&s));
        let previous_state = view::text(data.previous_state).map(|s| text_column(&s));
        let details_text = resource_details(&key, data);
        Self {
            id: event.id,
            event_type: event.event_type,
            source: parsed.canonical,
            time: event.time,
            event_ms,
            version_ms,
            received_ms,
            kind,
            key,
            previous_state,
            state,
            details_text,
            raw,
            origin,
        }
    }

    /// Whether this event may set its resource's state: a documented type, a recognised
    /// resource, and a state string.
    pub fn sets_state(&self) -> bool {
        self.kind != ResourceKind::Unknown && self.state.is_some()
    }
}

/// A free string from `data`, made safe for a database text column (Postgres rejects NUL).
fn text_column(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

#[derive(Serialize)]
struct JobDetails<'a> {
    outputs: &'a [view::Object<OutputView<'a>>],
    error: Raw<'a>,
    correlation_data: Raw<'a>,
    priority: Raw<'a>,
    created: Raw<'a>,
    last_modified: Raw<'a>,
    start_time: Raw<'a>,
    end_time: Raw<'a>,
}

#[derive(Serialize)]
struct ParentDetails<'a> {
    kind: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
struct OperationDetails<'a> {
    parent: ParentDetails<'a>,
    operation_type: Raw<'a>,
    correlation_data: Raw<'a>,
}

#[derive(Serialize)]
struct LiveDetails<'a> {
    desired_state: Raw<'a>,
    info: Raw<'a>,
}

/// The per-kind facts a resource row keeps from the resource body of the event that set it,
/// as JSON text, written from the event's own text: no value is copied or rebuilt.
fn resource_details(key: &ResourceKey, data: &DataView<'_>) -> String {
    let resource = &data.resource.0;
    let text = match key.kind {
        ResourceKind::Job => {
            let props = &resource.properties.0;
            let outputs = &props.outputs.0;
            let error = outputs.iter().find_map(|o| o.0.error).or(props.error);
            serde_json::to_string(&JobDetails {
                outputs,
                error,
                correlation_data: props.correlation_data,
                priority: props.priority,
                created: props.created,
                last_modified: props.last_modified,
                start_time: props.start_time,
                end_time: props.end_time,
            })
        }
        ResourceKind::ScheduledOperation => {
            let (kind, name) = key.parent.split_once('/').unwrap_or(("", ""));
            let spec = &resource.spec.0;
            serde_json::to_string(&OperationDetails {
                parent: ParentDetails { kind, name },
                operation_type: spec.operation_type,
                correlation_data: spec.correlation_data,
            })
        }
        ResourceKind::LiveChannel
        | ResourceKind::LiveEvent
        | ResourceKind::StaticMultiviewChannel
        | ResourceKind::StaticMultiviewEvent => serde_json::to_string(&LiveDetails {
            desired_state: resource.spec.0.state,
            info: resource.status.0.info,
        }),
        _ => return "{}".to_owned(),
    };
    // Raw JSON text and plain strings always serialize.
    text.unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job_event(state: &str) -> Value {
        json!({
            "specversion": "1.0", "id": "e1", "type": "MediaKind.JobFinished",
            "source": "/api/v1/projects/p/transforms/t/jobs/j",
            "time": "2025-03-14T09:09:47.305118Z",
            "data": {"projectName": "p", "previousState": "Processing", "state": state,
                     "resource": {"properties": {"lastModified": "2025-03-14T09:09:48Z",
                        "correlationData": {"k": "v"},
                        "outputs": [{"label": "a", "assetName": "x", "state": state, "progress": 5,
                                     "error": {"code": "ContentMalformed"}}]}}}
        })
    }

    #[test]
    fn validates_required_attributes() {
        let mut e = job_event("Finished");
        e.as_object_mut().unwrap().remove("id");
        assert_eq!(
            CloudEvent::from_json(e).unwrap_err().0,
            "field `id` is missing"
        );
        let mut e = job_event("Finished");
        e["specversion"] = json!("0.3");
        assert!(CloudEvent::from_json(e)
            .unwrap_err()
            .0
            .contains("specversion"));
        let mut e = job_event("Finished");
        e["type"] = json!("");
        assert_eq!(
            CloudEvent::from_json(e).unwrap_err().0,
            "field `type` is empty"
        );
        let mut e = job_event("Finished");
        e["source"] = json!(7);
        assert_eq!(
            CloudEvent::from_json(e).unwrap_err().0,
            "field `source` must be a string"
        );
        let mut e = job_event("Finished");
        e["data"] = json!("Finished");
        assert!(CloudEvent::from_json(e)
            .unwrap_err()
            .0
            .contains("`data` must be a JSON object"));
        assert!(CloudEvent::from_json(json!([1])).is_err());
        let mut e = job_event("Finished");
        e["type"] = json!("MediaKind.Job\nFinished");
        assert!(CloudEvent::from_json(e)
            .unwrap_err()
            .0
            .contains("control characters"));
        let mut e = job_event("Finished");
        e["id"] = json!("a\u{0}b");
        assert!(CloudEvent::from_json(e)
            .unwrap_err()
            .0
            .contains("control characters"));
    }

    #[test]
    fn unknown_types_may_carry_any_data() {
        let e = json!({"specversion": "1.0", "id": "1", "type": "com.example.x", "source": "/x", "data": 5});
        assert!(CloudEvent::from_json(e).is_ok());
    }

    #[test]
    fn normalizes_a_job_event() {
        let ce = CloudEvent::from_json(job_event("Error")).unwrap();
        let ev = NewEvent::normalize(ce, b"{}".to_vec(), 1, Origin::Webhook);
        assert_eq!(ev.kind, ResourceKind::Job);
        assert_eq!(ev.state.as_deref(), Some("Error"));
        assert_eq!(ev.previous_state.as_deref(), Some("Processing"));
        assert_eq!(
            ev.version_ms,
            parse_rfc3339_ms("2025-03-14T09:09:48Z").unwrap()
        );
        let details: Value = serde_json::from_str(&ev.details_text).unwrap();
        assert_eq!(details["correlation_data"]["k"], "v");
        assert_eq!(details["error"]["code"], "ContentMalformed");
        assert_eq!(details["outputs"][0]["asset_name"], "x");
        assert!(ev.sets_state());
    }

    #[test]
    fn unknown_type_never_sets_state_and_missing_time_uses_receive_time() {
        let ce = CloudEvent::from_json(json!({
            "specversion": "1.0", "id": "1", "type": "MediaKind.SomethingNew",
            "source": "/api/v1/projects/p/media/assets/a", "time": "not a time",
            "data": {"state": "Ready"}
        }))
        .unwrap();
        let ev = NewEvent::normalize(ce, vec![], 42, Origin::Webhook);
        assert_eq!(ev.kind, ResourceKind::Unknown);
        assert_eq!(ev.key.kind, ResourceKind::Asset);
        assert_eq!(ev.event_ms, 42);
        assert_eq!(ev.time.as_deref(), Some("not a time"));
        assert!(!ev.sets_state());
    }
}

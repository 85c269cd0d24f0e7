//! What polling MK.IO means for a resource: the event a polled state change becomes, and how
//! soon to look again (adaptive intervals). Pure functions; the poller does the I/O.

use super::event::{CloudEvent, NewEvent, Origin};
use super::resource::{parse_source, ResourceKind};
use super::time::format_ms;
use serde_json::{json, Value};
use std::time::Duration;

/// The CloudEvent type of a state change the relay saw by polling (origin `poll`).
pub const POLLED_TYPE: &str = "MkioRelay.StatePolled";

/// The event for a state `state` observed at `observed_ms` on the resource at `path`, which
/// the store last knew in `previous` (if at all). `resource` is what MK.IO answered (the
/// `/state` body, or the full resource for a job that ended). Like a webhook, the event is
/// kept as its structured envelope's bytes.
pub fn polled_event(
    path: &str,
    state: &str,
    previous: Option<&str>,
    resource: Value,
    observed_ms: i64,
    received_ms: i64,
) -> NewEvent {
    use rand::Rng;
    let id = format!("poll-{observed_ms}-{:08x}", rand::thread_rng().gen::<u32>());
    let data = json!({
        "state": state,
        "previousState": previous,
        "resource": resource,
        "observedAt": format_ms(observed_ms),
    });
    let envelope = json!({
        "specversion": "1.0",
        "id": id,
        "type": POLLED_TYPE,
        "source": path,
        "time": format_ms(observed_ms),
        "datacontenttype": "application/json",
        "data": data,
    });
    let raw = envelope.to_string().into_bytes();
    let event = CloudEvent {
        id,
        event_type: POLLED_TYPE.to_owned(),
        source: path.to_owned(),
        time: Some(format_ms(observed_ms)),
        data: serde_json::value::to_raw_value(&envelope["data"])
            .unwrap_or_else(|_| super::event::null_data()),
    };
    NewEvent::normalize(event, raw, received_ms, Origin::Poll)
}

/// The states after which a resource of `kind` never changes on its own: polling stops there
/// unless the watch names its own `until` states.
pub fn final_states(kind: ResourceKind) -> &'static [&'static str] {
    match kind {
        ResourceKind::Job => &["Finished", "Error", "Canceled"],
        ResourceKind::StreamingLocator => &["Created"],
        ResourceKind::Asset => &["Ready"],
        _ => &["Deleted"],
    }
}

/// Whether `state` is on its way somewhere else, so worth watching closely.
pub fn is_transitional(state: &str) -> bool {
    matches!(
        state,
        "" | "Queued"
            | "Scheduled"
            | "Processing"
            | "Canceling"
            | "Pending"
            | "Allocating"
            | "Starting"
            | "Stopping"
            | "Scaling"
            | "Creating"
            | "Updating"
            | "Deleting"
            | "InProgress"
    )
}

/// Whether a watch ends at `state`: one of its `until` states, or the kind's final states.
pub fn watch_ends(kind: ResourceKind, until: Option<&str>, state: &str) -> bool {
    match until {
        Some(list) => list.split(',').map(str::trim).any(|s| s == state),
        None => final_states(kind).contains(&state),
    }
}

/// Interval settings (from `[poll]`).
#[derive(Clone, Copy, Debug)]
pub struct Intervals {
    pub fast: Duration,
    pub slow: Duration,
    /// A safety-net job check doubles its interval from `fast` up to this.
    pub job_max: Duration,
}

/// How a watch paces its polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Fast while transitional, slow while stable (discovered resources).
    Adaptive,
    /// Waiting for a named state (`until`): fast while transitional; while stable, from fast
    /// doubling up to slow, since whoever asked expects a change soon (say, a start they are
    /// about to request).
    Expecting,
    /// A job webhooks should have reported: from fast doubling up to `job_max`.
    SafetyNet,
}

/// How long until the next poll of a resource now in `state`, `previous` being the last
/// interval used.
pub fn next_interval(
    state: &str,
    pace: Pace,
    previous: Duration,
    intervals: &Intervals,
) -> Duration {
    let doubled = previous.saturating_mul(2).max(intervals.fast);
    match pace {
        Pace::SafetyNet => doubled.min(intervals.job_max),
        _ if is_transitional(state) => intervals.fast,
        Pace::Expecting => doubled.min(intervals.slow),
        Pace::Adaptive => intervals.slow,
    }
}

/// `interval` with up to +-20% random jitter, so watches created together drift apart.
pub fn jittered(interval: Duration) -> Duration {
    use rand::Rng;
    interval.mul_f64(rand::thread_rng().gen_range(0.8..=1.2))
}

/// The resource kind a polled path names (`unknown` when it is not an MK.IO resource path).
pub fn kind_of(path: &str) -> ResourceKind {
    parse_source(path).key.kind
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::resource::ResourceKind;

    const INTERVALS: Intervals = Intervals {
        fast: Duration::from_secs(5),
        slow: Duration::from_secs(300),
        job_max: Duration::from_secs(3600),
    };

    #[test]
    fn polled_event_sets_state_and_keeps_its_envelope() {
        let path = "/api/v1/projects/p/media/streamingEndpoints/se1";
        let e = polled_event(path, "Running", Some("Starting"), json!({}), 1_000, 2_000);
        assert_eq!(e.origin, Origin::Poll);
        assert_eq!(e.kind, ResourceKind::StreamingEndpoint);
        assert_eq!(e.state.as_deref(), Some("Running"));
        assert_eq!(e.previous_state.as_deref(), Some("Starting"));
        assert_eq!(e.event_ms, 1_000);
        assert!(e.sets_state());
        let raw: Value = serde_json::from_slice(&e.raw).unwrap();
        assert_eq!(raw["type"], POLLED_TYPE);
        assert_eq!(raw["data"]["state"], "Running");
        assert_eq!(raw["source"], path);
    }

    #[test]
    fn intervals_adapt_to_the_state() {
        let five = Duration::from_secs(5);
        assert_eq!(
            next_interval("Starting", Pace::Adaptive, five, &INTERVALS),
            five
        );
        assert_eq!(
            next_interval("Running", Pace::Adaptive, five, &INTERVALS),
            INTERVALS.slow
        );
        let series = |state: &str, pace: Pace| {
            let mut i = Duration::ZERO;
            (0..12)
                .map(|_| {
                    i = next_interval(state, pace, i, &INTERVALS);
                    i.as_secs()
                })
                .collect::<Vec<_>>()
        };
        let net = series("Processing", Pace::SafetyNet);
        assert_eq!(&net[..4], &[5, 10, 20, 40]);
        assert_eq!(*net.last().unwrap(), 3600);
        let expecting = series("Stopped", Pace::Expecting);
        assert_eq!(&expecting[..4], &[5, 10, 20, 40]);
        assert_eq!(*expecting.last().unwrap(), 300);
        assert_eq!(series("Starting", Pace::Expecting), vec![5; 12]);
    }

    #[test]
    fn watches_end_at_until_or_final_states() {
        assert!(watch_ends(ResourceKind::Job, None, "Finished"));
        assert!(!watch_ends(ResourceKind::Job, None, "Processing"));
        assert!(!watch_ends(
            ResourceKind::StreamingEndpoint,
            None,
            "Running"
        ));
        assert!(watch_ends(
            ResourceKind::StreamingEndpoint,
            Some("Running,Stopped"),
            "Running"
        ));
        let j = jittered(Duration::from_secs(100));
        assert!(j >= Duration::from_secs(80) && j <= Duration::from_secs(120));
    }
}

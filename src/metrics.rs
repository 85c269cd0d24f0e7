//! Prometheus metrics: the process-global recorder, the names of mkio-relay's own metrics, and
//! the small helpers that record them. Hot paths hold cached handles (atomic updates only);
//! label values are `&'static str` or come from a bounded set.

use crate::domain::event::KNOWN_TYPES;
use metrics::{describe_counter, describe_gauge, describe_histogram, Counter, Gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

pub const INGEST_REQUESTS: &str = "mkio_relay_ingest_requests_total";
pub const INGEST_DURATION: &str = "mkio_relay_ingest_duration_seconds";
pub const COMMIT_BATCH_EVENTS: &str = "mkio_relay_commit_batch_events";
pub const COMMIT_DURATION: &str = "mkio_relay_commit_duration_seconds";
pub const EVENTS: &str = "mkio_relay_events_total";
pub const LAST_WEBHOOK: &str = "mkio_relay_last_webhook_timestamp_seconds";
pub const DELIVERIES: &str = "mkio_relay_deliveries_total";
pub const DELIVERY_DURATION: &str = "mkio_relay_delivery_duration_seconds";
pub const DELIVERY_QUEUE: &str = "mkio_relay_delivery_queue_depth";
pub const DEAD_LETTERS: &str = "mkio_relay_dead_letters";
pub const SSE_CLIENTS: &str = "mkio_relay_sse_clients";
pub const WAITERS: &str = "mkio_relay_waiters";

/// Latency buckets (seconds) for ingest, commits and deliveries.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Events per group commit.
const BATCH_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The `type` label for an event type outside [`KNOWN_TYPES`]: unbounded input stays one series.
pub const OTHER_TYPE: &str = "other";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as the process's global `metrics` recorder, once; later
/// calls (several servers in one test process) return the same handle. Every metric emitted
/// through the `metrics` facade, by any module, shows up in [`render`].
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = buckets(PrometheusBuilder::new()).build_recorder();
        let handle = recorder.handle();
        if let Err(err) = metrics::set_global_recorder(recorder) {
            // Someone else (an embedding program) installed one: ours renders nothing.
            tracing::warn!(error = %err, "a metrics recorder is already installed");
        }
        describe();
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("mkio-metrics".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            });
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "cannot start metrics upkeep; /metrics does it instead");
        }
        handle
    })
}

fn buckets(builder: PrometheusBuilder) -> PrometheusBuilder {
    let latency = [INGEST_DURATION, COMMIT_DURATION, DELIVERY_DURATION];
    let mut builder = builder;
    for name in latency {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.into()), &LATENCY_BUCKETS)
            .expect("bucket list is not empty");
    }
    builder
        .set_buckets_for_metric(Matcher::Full(COMMIT_BATCH_EVENTS.into()), &BATCH_BUCKETS)
        .expect("bucket list is not empty")
}

fn describe() {
    describe_counter!(
        INGEST_REQUESTS,
        "Webhook requests by outcome: accepted, duplicate, or the error status"
    );
    describe_histogram!(
        INGEST_DURATION,
        Unit::Seconds,
        "Webhook request handling time, commit included"
    );
    describe_histogram!(COMMIT_BATCH_EVENTS, "Events per group commit");
    describe_histogram!(COMMIT_DURATION, Unit::Seconds, "Group commit time");
    describe_counter!(
        EVENTS,
        "Events stored, by MK.IO type (other types as \"other\")"
    );
    describe_gauge!(
        LAST_WEBHOOK,
        Unit::Seconds,
        "Unix time the last webhook event for a project was received"
    );
    describe_counter!(DELIVERIES, "Outbound delivery attempts by outcome");
    describe_histogram!(
        DELIVERY_DURATION,
        Unit::Seconds,
        "Outbound delivery attempt time"
    );
    describe_gauge!(DELIVERY_QUEUE, "Pending outbound deliveries");
    describe_gauge!(DEAD_LETTERS, "Dead-lettered outbound deliveries");
    describe_gauge!(SSE_CLIENTS, "Connected /v1/events/stream clients");
    describe_gauge!(WAITERS, "Long-polls in progress (events, jobs, resources)");
}

/// The Prometheus text exposition of every metric recorded so far.
pub fn render() -> String {
    install().render()
}

/// The `outcome` label of an ingest request that failed with `status`.
pub fn status_label(status: u16) -> &'static str {
    match status {
        400 => "400",
        401 => "401",
        404 => "404",
        408 => "408",
        413 => "413",
        415 => "415",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}

/// One finished webhook request.
pub fn ingest_request(outcome: &'static str, elapsed: Duration) {
    metrics::counter!(INGEST_REQUESTS, "outcome" => outcome).increment(1);
    metrics::histogram!(INGEST_DURATION).record(elapsed.as_secs_f64());
}

/// The `type` label of an event type: a known MK.IO type verbatim, anything else `other`.
pub fn type_label(event_type: &str) -> &'static str {
    KNOWN_TYPES
        .iter()
        .find(|t| **t == event_type)
        .copied()
        .unwrap_or(OTHER_TYPE)
}

/// The writer's handles, resolved once: recording a batch is a few atomic updates.
pub struct WriterMetrics {
    by_type: Vec<(&'static str, Counter)>,
    other: Counter,
    batch: metrics::Histogram,
    commit: metrics::Histogram,
    /// Per project; projects are the operator's own, a bounded set. Only the writer task
    /// touches this map, so it needs no lock.
    last_webhook: std::collections::HashMap<String, Gauge>,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WriterMetrics {
    pub fn new() -> Self {
        Self {
            by_type: KNOWN_TYPES
                .iter()
                .map(|t| (*t, metrics::counter!(EVENTS, "type" => *t)))
                .collect(),
            other: metrics::counter!(EVENTS, "type" => OTHER_TYPE),
            batch: metrics::histogram!(COMMIT_BATCH_EVENTS),
            commit: metrics::histogram!(COMMIT_DURATION),
            last_webhook: std::collections::HashMap::new(),
        }
    }

    pub fn batch(&self, events: usize, elapsed: Duration) {
        self.batch.record(events as f64);
        self.commit.record(elapsed.as_secs_f64());
    }

    /// One newly stored event.
    pub fn stored(&self, event_type: &str) {
        match self.by_type.iter().find(|(t, _)| *t == event_type) {
            Some((_, counter)) => counter.increment(1),
            None => self.other.increment(1),
        }
    }

    /// A webhook event (new or duplicate) about `project`, received at `received_ms`.
    pub fn webhook(&mut self, project: &str, received_ms: i64) {
        let seconds = received_ms as f64 / 1000.0;
        match self.last_webhook.get(project) {
            Some(gauge) => gauge.set(seconds),
            None => {
                let gauge = metrics::gauge!(LAST_WEBHOOK, "project" => project.to_owned());
                gauge.set(seconds);
                self.last_webhook.insert(project.to_owned(), gauge);
            }
        }
    }
}

/// The `outcome` label of a finished delivery attempt.
pub fn delivery(outcome: &'static str, elapsed: Duration) {
    metrics::counter!(DELIVERIES, "outcome" => outcome).increment(1);
    metrics::histogram!(DELIVERY_DURATION).record(elapsed.as_secs_f64());
}

/// The outbox's pending and dead-lettered deliveries, as last counted.
pub fn outbox(pending: u64, dead: u64) {
    metrics::gauge!(DELIVERY_QUEUE).set(pending as f64);
    metrics::gauge!(DEAD_LETTERS).set(dead as f64);
}

/// Counts one connected client in a gauge for as long as it lives.
pub struct Connected(Gauge);

impl Connected {
    pub fn sse_client() -> Self {
        Self::on(metrics::gauge!(SSE_CLIENTS))
    }

    pub fn waiter() -> Self {
        Self::on(metrics::gauge!(WAITERS))
    }

    fn on(gauge: Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_types_share_one_label() {
        assert_eq!(type_label("MediaKind.JobFinished"), "MediaKind.JobFinished");
        assert_eq!(type_label("MediaKind.SomethingNew"), OTHER_TYPE);
        assert_eq!(type_label("mediakind.jobfinished"), OTHER_TYPE);
    }

    #[test]
    fn status_labels_are_bounded() {
        assert_eq!(status_label(413), "413");
        assert_eq!(status_label(418), "other");
    }
}

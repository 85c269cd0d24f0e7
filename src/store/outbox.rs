//! Rows of the outbound side: subscriptions, deliveries (the outbox), and delivery attempts.

use crate::domain::subscription::Filter;
use std::time::Duration;

/// A subscription as stored. `secret` is the signing secret (`whsec_...`); while
/// `previous_secret` is set and `previous_secret_until_ms` is in the future, both sign.
#[derive(Clone, PartialEq)]
pub struct Subscription {
    pub id: String,
    pub url: String,
    pub filter: Filter,
    pub enabled: bool,
    /// `None`: the configured default schedule.
    pub retry_schedule: Option<Vec<Duration>>,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until_ms: Option<i64>,
    pub disabled_reason: Option<String>,
    /// `api` or `config`.
    pub origin: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("filter", &self.filter)
            .field("enabled", &self.enabled)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// A delivery a dispatcher has claimed: its lease is the token that lets it record the result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    pub id: i64,
    pub subscription_id: String,
    pub seq: i64,
    pub attempts: i64,
    pub schedule_pos: i64,
    pub lease_until_ms: i64,
}

/// One HTTP attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    pub started_ms: i64,
    /// `None` when no HTTP answer came (timeout, connection refused, ...).
    pub status: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// What an attempt leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Try again at this time.
    Retry {
        at_ms: i64,
    },
    /// The schedule is exhausted: dead-lettered.
    Dead,
    /// The receiver answered 410: the subscription is disabled, the delivery waits for it.
    Gone,
}

/// One finished attempt, to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptResult {
    pub claimed: Claimed,
    pub attempt: AttemptRecord,
    pub outcome: AttemptOutcome,
}

/// A delivery with its attempts, for inspection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRow {
    pub id: i64,
    pub subscription_id: String,
    pub seq: i64,
    pub resource: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub attempt_log: Vec<AttemptRow>,
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AttemptRow {
    pub delivery_id: i64,
    pub attempt: i64,
    pub started_ms: i64,
    pub status: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// Which events a replay re-sends: after a sequence number and/or from an event time on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayRange {
    pub after_seq: i64,
    pub since_ms: Option<i64>,
}

//! The outbox SQL both backends share (see `sql.rs` for how): subscriptions, enqueueing
//! deliveries inside the append transaction, claiming them in per-resource order, recording
//! attempts. `outbox_ops!` takes the backend's row-lock clause for claims (Postgres: `FOR UPDATE
//! SKIP LOCKED`, so replicas never claim the same delivery; SQLite: none, one process writes).

use super::outbox::Subscription;
use super::{parse_json, StoreError};
use crate::domain::subscription::Filter;
use sqlx::FromRow;
use std::time::Duration;

pub(super) const UPSERT_SUBSCRIPTION: &str = "INSERT INTO subscriptions (id, url, filter, \
     enabled, retry_schedule, secret, previous_secret, previous_secret_until_ms, disabled_reason, \
     origin, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (id) DO UPDATE SET url = excluded.url, filter = excluded.filter, enabled = \
     excluded.enabled, retry_schedule = excluded.retry_schedule, secret = excluded.secret, \
     previous_secret = excluded.previous_secret, previous_secret_until_ms = \
     excluded.previous_secret_until_ms, disabled_reason = excluded.disabled_reason, origin = \
     excluded.origin, updated_ms = excluded.updated_ms";

pub(super) const INSERT_DELIVERY: &str = "INSERT INTO deliveries (subscription_id, seq, resource, \
     state, attempts, schedule_pos, next_attempt_ms, lease_until_ms, created_ms, updated_ms) \
     VALUES ($1, $2, $3, 'pending', 0, 0, $4, 0, $4, $4)";

/// Followed by `VALUES (sub, seq, resource, 'pending', 0, 0, now, 0, now, now), ...`.
pub(super) const INSERT_DELIVERIES_HEAD: &str = "INSERT INTO deliveries (subscription_id, seq, \
     resource, state, attempts, schedule_pos, next_attempt_ms, lease_until_ms, created_ms, \
     updated_ms) ";

/// A pending delivery is due when its time has come, no dispatcher holds it, its subscription
/// is enabled, and no earlier delivery of the same subscription and resource is still pending.
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE deliveries SET lease_until_ms = $1, updated_ms = $2 WHERE id IN (",
            "SELECT d.id FROM deliveries d WHERE d.state = 'pending' ",
            "AND d.next_attempt_ms <= $2 AND d.lease_until_ms <= $2 ",
            "AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = d.subscription_id AND s.enabled) ",
            "AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.subscription_id = d.subscription_id ",
            "AND e.resource = d.resource AND e.state = 'pending' ",
            "AND (e.seq < d.seq OR (e.seq = d.seq AND e.id < d.id))) ",
            "ORDER BY d.id LIMIT $3 ",
            $lock,
            ") RETURNING id, subscription_id, seq, attempts, schedule_pos, lease_until_ms"
        )
    };
}
pub(super) use claim_sql;

pub(super) const NEXT_DUE: &str = "SELECT MIN(d.next_attempt_ms) FROM deliveries d \
     WHERE d.state = 'pending' AND d.lease_until_ms <= $1 AND EXISTS (SELECT 1 FROM \
     subscriptions s WHERE s.id = d.subscription_id AND s.enabled)";

pub(super) const FINISH_DELIVERY: &str =
    "UPDATE deliveries SET state = $1, attempts = attempts + 1, \
     schedule_pos = $2, next_attempt_ms = $3, lease_until_ms = 0, last_status = $4, \
     last_error = $5, updated_ms = $6 WHERE id = $7 AND lease_until_ms = $8";

pub(super) const INSERT_ATTEMPT: &str = "INSERT INTO delivery_attempts (delivery_id, attempt, \
     started_ms, status, latency_ms, error) VALUES ($1, $2, $3, $4, $5, $6)";

pub(super) const SELECT_DELIVERIES: &str = "SELECT id, subscription_id, seq, resource, state, \
     attempts, next_attempt_ms, last_status, last_error, created_ms, updated_ms FROM deliveries \
     WHERE subscription_id = $1 AND ($2 IS NULL OR state = $2) AND id > $3 ORDER BY id LIMIT $4";

pub(super) const SELECT_ATTEMPTS: &str = "SELECT a.delivery_id, a.attempt, a.started_ms, \
     a.status, a.latency_ms, a.error FROM delivery_attempts a JOIN deliveries d ON d.id = \
     a.delivery_id WHERE d.subscription_id = $1 AND a.delivery_id >= $2 AND a.delivery_id <= $3 \
     ORDER BY a.delivery_id, a.attempt";

#[derive(FromRow)]
pub struct SubscriptionDbRow {
    pub(super) id: String,
    pub(super) url: String,
    pub(super) filter: String,
    pub(super) enabled: bool,
    pub(super) retry_schedule: Option<String>,
    pub(super) secret: String,
    pub(super) previous_secret: Option<String>,
    pub(super) previous_secret_until_ms: Option<i64>,
    pub(super) disabled_reason: Option<String>,
    pub(super) origin: String,
    pub(super) created_ms: i64,
    pub(super) updated_ms: i64,
}

impl TryFrom<SubscriptionDbRow> for Subscription {
    type Error = StoreError;

    fn try_from(r: SubscriptionDbRow) -> Result<Self, StoreError> {
        let filter: Filter = serde_json::from_value(parse_json(Some(r.filter), "filter")?)
            .map_err(|e| StoreError::Corrupt(format!("subscription filter: {e}")))?;
        let retry_schedule = match parse_json(r.retry_schedule, "retry schedule")? {
            serde_json::Value::Null => None,
            v => Some(
                serde_json::from_value::<Vec<u64>>(v)
                    .map_err(|e| StoreError::Corrupt(format!("retry schedule: {e}")))?
                    .into_iter()
                    .map(Duration::from_millis)
                    .collect(),
            ),
        };
        Ok(Self {
            id: r.id,
            url: r.url,
            filter,
            enabled: r.enabled,
            retry_schedule,
            secret: r.secret,
            previous_secret: r.previous_secret,
            previous_secret_until_ms: r.previous_secret_until_ms,
            disabled_reason: r.disabled_reason,
            origin: r.origin,
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
        })
    }
}

/// The stored form of a subscription's filter and schedule.
pub(super) fn encode(sub: &Subscription) -> (String, Option<String>) {
    let filter = serde_json::to_string(&sub.filter).unwrap_or_else(|_| "{}".into());
    let schedule = sub.retry_schedule.as_ref().map(|s| {
        let ms: Vec<u64> = s.iter().map(|d| d.as_millis() as u64).collect();
        serde_json::to_string(&ms).unwrap_or_else(|_| "[]".into())
    });
    (filter, schedule)
}

#[derive(FromRow)]
pub struct ClaimedDbRow {
    pub id: i64,
    pub subscription_id: String,
    pub seq: i64,
    pub attempts: i64,
    pub schedule_pos: i64,
    pub lease_until_ms: i64,
}

#[derive(FromRow)]
pub struct DeliveryDbRow {
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
}

/// Defines the outbox operations for one backend's connection type, in the invoking module.
macro_rules! outbox_ops {
    ($conn:ty, $lock:literal) => {
        use $crate::store::outbox::{
            AttemptOutcome, AttemptRecord, AttemptRow, Claimed, DeliveryRow, ReplayRange,
            Subscription,
        };
        use $crate::store::outbox_sql as q;

        pub async fn put_subscription(
            conn: &mut $conn,
            sub: &Subscription,
        ) -> Result<(), $crate::store::StoreError> {
            let (filter, schedule) = q::encode(sub);
            sqlx::query(q::UPSERT_SUBSCRIPTION)
                .bind(sub.id.as_str())
                .bind(sub.url.as_str())
                .bind(filter.as_str())
                .bind(sub.enabled)
                .bind(schedule.as_deref())
                .bind(sub.secret.as_str())
                .bind(sub.previous_secret.as_deref())
                .bind(sub.previous_secret_until_ms)
                .bind(sub.disabled_reason.as_deref())
                .bind(sub.origin.as_str())
                .bind(sub.created_ms)
                .bind(sub.updated_ms)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        pub async fn subscriptions(
            conn: &mut $conn,
            id: Option<&str>,
        ) -> Result<Vec<Subscription>, $crate::store::StoreError> {
            let rows: Vec<q::SubscriptionDbRow> = sqlx::query_as(concat!(
                "SELECT id, url, filter, enabled, retry_schedule, secret, previous_secret, ",
                "previous_secret_until_ms, disabled_reason, origin, created_ms, updated_ms ",
                "FROM subscriptions WHERE ($1 IS NULL OR id = $1) ORDER BY created_ms, id"
            ))
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
            rows.into_iter().map(Subscription::try_from).collect()
        }

        pub async fn delete_subscription(
            conn: &mut $conn,
            id: &str,
        ) -> Result<bool, $crate::store::StoreError> {
            sqlx::query(
                "DELETE FROM delivery_attempts WHERE delivery_id IN \
                 (SELECT id FROM deliveries WHERE subscription_id = $1)",
            )
            .bind(id)
            .execute(&mut *conn)
            .await?;
            sqlx::query("DELETE FROM deliveries WHERE subscription_id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
            let done = sqlx::query("DELETE FROM subscriptions WHERE id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
            Ok(done.rows_affected() > 0)
        }

        pub async fn claim(
            conn: &mut $conn,
            now_ms: i64,
            lease_until_ms: i64,
            limit: i64,
        ) -> Result<Vec<Claimed>, $crate::store::StoreError> {
            let rows: Vec<q::ClaimedDbRow> = sqlx::query_as(q::claim_sql!($lock))
                .bind(lease_until_ms)
                .bind(now_ms)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?;
            let mut claimed: Vec<Claimed> = rows
                .into_iter()
                .map(|r| Claimed {
                    id: r.id,
                    subscription_id: r.subscription_id,
                    seq: r.seq,
                    attempts: r.attempts,
                    schedule_pos: r.schedule_pos,
                    lease_until_ms: r.lease_until_ms,
                })
                .collect();
            claimed.sort_by_key(|c| c.id);
            Ok(claimed)
        }

        pub async fn next_due(
            conn: &mut $conn,
            now_ms: i64,
        ) -> Result<Option<i64>, $crate::store::StoreError> {
            Ok(sqlx::query_scalar(q::NEXT_DUE).bind(now_ms).fetch_one(&mut *conn).await?)
        }

        /// Records an attempt and its outcome. `false` when the lease was lost meanwhile (another
        /// dispatcher has the delivery now): nothing is written.
        pub async fn finish(
            conn: &mut $conn,
            claimed: &Claimed,
            attempt: &AttemptRecord,
            outcome: &AttemptOutcome,
            now_ms: i64,
        ) -> Result<bool, $crate::store::StoreError> {
            let (state, schedule_pos, next_ms) = match outcome {
                AttemptOutcome::Delivered => ("delivered", claimed.schedule_pos + 1, now_ms),
                AttemptOutcome::Retry { at_ms } => ("pending", claimed.schedule_pos + 1, *at_ms),
                AttemptOutcome::Dead => ("dead", claimed.schedule_pos + 1, now_ms),
                AttemptOutcome::Gone => ("pending", claimed.schedule_pos, now_ms),
            };
            let updated = sqlx::query(q::FINISH_DELIVERY)
                .bind(state)
                .bind(schedule_pos)
                .bind(next_ms)
                .bind(attempt.status)
                .bind(attempt.error.as_deref())
                .bind(now_ms)
                .bind(claimed.id)
                .bind(claimed.lease_until_ms)
                .execute(&mut *conn)
                .await?;
            if updated.rows_affected() == 0 {
                return Ok(false);
            }
            sqlx::query(q::INSERT_ATTEMPT)
                .bind(claimed.id)
                .bind(claimed.attempts + 1)
                .bind(attempt.started_ms)
                .bind(attempt.status)
                .bind(attempt.latency_ms)
                .bind(attempt.error.as_deref())
                .execute(&mut *conn)
                .await?;
            if *outcome == AttemptOutcome::Gone {
                sqlx::query(
                    "UPDATE subscriptions SET enabled = $1, disabled_reason = $2, \
                     updated_ms = $3 WHERE id = $4",
                )
                .bind(false)
                .bind("the endpoint answered 410 Gone")
                .bind(now_ms)
                .bind(claimed.subscription_id.as_str())
                .execute(&mut *conn)
                .await?;
            }
            Ok(true)
        }

        pub async fn deliveries(
            conn: &mut $conn,
            subscription_id: &str,
            state: Option<&str>,
            after_id: i64,
            limit: i64,
        ) -> Result<Vec<DeliveryRow>, $crate::store::StoreError> {
            let rows: Vec<q::DeliveryDbRow> = sqlx::query_as(q::SELECT_DELIVERIES)
                .bind(subscription_id)
                .bind(state)
                .bind(after_id)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?;
            let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
                return Ok(Vec::new());
            };
            let attempts: Vec<AttemptRow> = sqlx::query_as(q::SELECT_ATTEMPTS)
                .bind(subscription_id)
                .bind(first.id)
                .bind(last.id)
                .fetch_all(&mut *conn)
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| DeliveryRow {
                    attempt_log: attempts.iter().filter(|a| a.delivery_id == r.id).cloned().collect(),
                    id: r.id,
                    subscription_id: r.subscription_id,
                    seq: r.seq,
                    resource: r.resource,
                    state: r.state,
                    attempts: r.attempts,
                    next_attempt_ms: r.next_attempt_ms,
                    last_status: r.last_status,
                    last_error: r.last_error,
                    created_ms: r.created_ms,
                    updated_ms: r.updated_ms,
                })
                .collect())
        }

        /// Puts a delivery back in the queue with a fresh schedule; `false` when unknown.
        pub async fn retry_delivery(
            conn: &mut $conn,
            id: i64,
            now_ms: i64,
        ) -> Result<bool, $crate::store::StoreError> {
            let done = sqlx::query(
                "UPDATE deliveries SET state = 'pending', schedule_pos = 0, next_attempt_ms = $1, \
                 updated_ms = $1 WHERE id = $2",
            )
            .bind(now_ms)
            .bind(id)
            .execute(&mut *conn)
            .await?;
            Ok(done.rows_affected() > 0)
        }

        /// Queues new deliveries of the stored events in `range` that match `sub`'s filter.
        pub async fn replay(
            conn: &mut $conn,
            sub: &Subscription,
            range: &ReplayRange,
            now_ms: i64,
        ) -> Result<u64, $crate::store::StoreError> {
            const PAGE: i64 = 1000;
            let mut after = range.after_seq;
            let mut queued = 0;
            loop {
                let rows: Vec<(i64, String, String, String, Option<String>, String, String, String, i64)> =
                    sqlx::query_as(
                        "SELECT seq, type, project, kind, state, resource_kind, parent, name, \
                         event_ms FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
                    )
                    .bind(after)
                    .bind(PAGE)
                    .fetch_all(&mut *conn)
                    .await?;
                let Some(last) = rows.last().map(|r| r.0) else {
                    return Ok(queued);
                };
                for (seq, event_type, project, kind, state, resource_kind, parent, name, event_ms) in &rows {
                    if range.since_ms.is_some_and(|since| *event_ms < since) {
                        continue;
                    }
                    let facts = $crate::domain::subscription::EventFacts {
                        event_type,
                        project,
                        kind,
                        state: state.as_deref(),
                    };
                    if sub.filter.matches(&facts) {
                        let resource = format!("{resource_kind}/{project}/{parent}/{name}");
                        sqlx::query(q::INSERT_DELIVERY)
                            .bind(sub.id.as_str())
                            .bind(*seq)
                            .bind(resource.as_str())
                            .bind(now_ms)
                            .execute(&mut *conn)
                            .await?;
                        queued += 1;
                    }
                }
                after = last;
            }
        }

        /// The event a delivery carries, with its raw bytes (`None` once pruned).
        pub async fn delivery_event(
            conn: &mut $conn,
            seq: i64,
        ) -> Result<Option<($crate::store::StoredEvent, Option<Vec<u8>>)>, $crate::store::StoreError> {
            let raw: Option<(Option<Vec<u8>>,)> = sqlx::query_as("SELECT raw FROM events WHERE seq = $1")
                .bind(seq)
                .fetch_optional(&mut *conn)
                .await?;
            let Some((raw,)) = raw else { return Ok(None) };
            let mut events = events(
                conn,
                &$crate::store::EventQuery { after: seq - 1, limit: 1, ..Default::default() },
            )
            .await?;
            Ok(events.pop().filter(|e| e.seq == seq).map(|e| (e, raw)))
        }
    };
}
pub(super) use outbox_ops;

//! The SQL both backends share. SQLite and Postgres accept the same statements here (`$N`
//! parameters, `ON CONFLICT`, `RETURNING`, row-value comparison), so each operation is written
//! once, in `shared_ops!`, which each backend instantiates for its own sqlx connection type
//! (concrete code, no trait-bound maze); the backends add only connection setup and locking.

use super::{parse_json, parse_kind, ResourceRow, StoreError, StoredEvent};
use sqlx::FromRow;

macro_rules! event_columns {
    () => {
        "seq, event_id, source, type, time, event_ms, received_ms, project, kind, resource_kind, \
         parent, name, previous_state, state, applied, origin, data, raw"
    };
}

macro_rules! resource_columns {
    () => {
        "kind, project, parent, name, state, previous_state, version_ms, event_ms, last_seq, \
         created_ms, updated_ms, details, origin"
    };
}

/// `VALUES (source, id), ...` go between head and tail: which of them are stored.
pub(super) const SEEN_HEAD: &str = "SELECT e.source, e.event_id FROM (";
pub(super) const SEEN_TAIL: &str =
    ") AS v JOIN events e ON e.source = v.column1 AND e.event_id = v.column2";

/// `VALUES (kind, project, parent, name), ...` go between head and tail: their current rows.
pub(super) const CURRENT_HEAD: &str = concat!("SELECT ", resource_columns!(), " FROM (");
pub(super) const CURRENT_TAIL: &str = ") AS v JOIN resources r ON r.kind = v.column1 AND \
     r.project = v.column2 AND r.parent = v.column3 AND r.name = v.column4";

// Optional filters bind NULL to mean "any", so each statement's text is fixed and cached.
pub(super) const SELECT_EVENTS: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE seq > $1 AND ($2 IS NULL OR type = $2) \
     AND ($3 IS NULL OR project = $3) AND ($4 IS NULL OR kind = $4) ORDER BY seq LIMIT $5"
);

pub(super) const SELECT_RESOURCES: &str = concat!(
    "SELECT ",
    resource_columns!(),
    " FROM resources WHERE ($1 IS NULL OR kind = $1) AND ($2 IS NULL OR project = $2) \
     AND ($3 IS NULL OR parent = $3) AND ($4 IS NULL OR name = $4) \
     AND ($5 IS NULL OR state = $5) \
     AND ($6 IS NULL OR (kind, project, parent, name) > ($6, $7, $8, $9)) \
     ORDER BY kind, project, parent, name LIMIT $10"
);

/// The same filters with the kind given, so the scan starts at that kind's rows.
pub(super) const SELECT_RESOURCES_OF_KIND: &str = concat!(
    "SELECT ",
    resource_columns!(),
    " FROM resources WHERE kind = $1 AND ($2 IS NULL OR project = $2) \
     AND ($3 IS NULL OR parent = $3) AND ($4 IS NULL OR name = $4) \
     AND ($5 IS NULL OR state = $5) \
     AND ($6 IS NULL OR (kind, project, parent, name) > ($6, $7, $8, $9)) \
     ORDER BY kind, project, parent, name LIMIT $10"
);

/// One resource by kind, project and name, the parent optional. The keys come from the
/// covering index `resources_name` in a subquery: asked directly, SQLite's planner (without
/// table statistics) walks the primary key over every resource of the project instead, which
/// made each waiter's lookup cost milliseconds once a project held thousands of jobs.
pub(super) const SELECT_RESOURCES_BY_NAME: &str = concat!(
    "SELECT ",
    resource_columns!(),
    " FROM resources WHERE (kind, project, parent, name) IN (SELECT kind, project, parent, \
     name FROM resources WHERE kind = $1 AND project = $2 AND name = $4) \
     AND ($3 IS NULL OR parent = $3) AND ($5 IS NULL OR state = $5) \
     AND ($6 IS NULL OR (kind, project, parent, name) > ($6, $7, $8, $9)) \
     ORDER BY kind, project, parent, name LIMIT $10"
);

/// Followed by `VALUES (...), ...` and the conflict clause.
pub(super) const INSERT_EVENTS: &str = "INSERT INTO events (event_id, source, type, time, \
     event_ms, received_ms, project, kind, resource_kind, parent, name, previous_state, state, \
     applied, origin, data, raw) ";

pub(super) const INSERT_EVENTS_TAIL: &str =
    " ON CONFLICT (source, event_id) DO NOTHING RETURNING seq, source, event_id";

/// `VALUES (...), ...` go between head and tail.
pub(super) const UPSERT_RESOURCES_HEAD: &str = "INSERT INTO resources (kind, project, parent, \
     name, state, previous_state, version_ms, event_ms, last_seq, created_ms, updated_ms, \
     details, origin) ";

pub(super) const UPSERT_RESOURCES_TAIL: &str = " ON CONFLICT (kind, project, parent, name) DO \
     UPDATE SET state = excluded.state, previous_state = excluded.previous_state, version_ms = \
     excluded.version_ms, event_ms = excluded.event_ms, last_seq = excluded.last_seq, \
     updated_ms = excluded.updated_ms, details = excluded.details, origin = excluded.origin";

/// An event's `data`, from the bytes it arrived as: the `data` member of a structured
/// envelope, or the whole body of a binary-mode event (whose body can never be an object with
/// `specversion`: decoding would have read it as structured). Null once pruned.
fn data_from_raw(raw: Option<&[u8]>) -> Result<serde_json::Value, StoreError> {
    let Some(raw) = raw else {
        return Ok(serde_json::Value::Null);
    };
    let mut value: serde_json::Value = serde_json::from_slice(raw)
        .map_err(|e| StoreError::Corrupt(format!("raw event is not JSON: {e}")))?;
    match value.get_mut("specversion") {
        Some(_) => Ok(value
            .get_mut("data")
            .map(serde_json::Value::take)
            .unwrap_or_default()),
        None => Ok(value),
    }
}

#[derive(FromRow)]
pub struct EventDbRow {
    seq: i64,
    event_id: String,
    source: String,
    #[sqlx(rename = "type")]
    event_type: String,
    time: Option<String>,
    event_ms: i64,
    received_ms: i64,
    project: String,
    kind: String,
    resource_kind: String,
    parent: String,
    name: String,
    previous_state: Option<String>,
    state: Option<String>,
    applied: bool,
    origin: String,
    data: Option<String>,
    raw: Option<Vec<u8>>,
}

impl TryFrom<EventDbRow> for StoredEvent {
    type Error = StoreError;

    fn try_from(r: EventDbRow) -> Result<Self, StoreError> {
        Ok(Self {
            seq: r.seq,
            id: r.event_id,
            source: r.source,
            event_type: r.event_type,
            time: r.time,
            event_ms: r.event_ms,
            received_ms: r.received_ms,
            project: r.project,
            kind: r.kind,
            resource_kind: r.resource_kind,
            parent: r.parent,
            name: r.name,
            previous_state: r.previous_state,
            state: r.state,
            applied: r.applied,
            origin: r.origin,
            data: match r.data {
                Some(text) => parse_json(Some(text), "event data")?,
                None => data_from_raw(r.raw.as_deref())?,
            },
        })
    }
}

#[derive(FromRow)]
pub struct ResourceDbRow {
    pub(super) kind: String,
    pub(super) project: String,
    pub(super) parent: String,
    pub(super) name: String,
    pub(super) state: String,
    pub(super) previous_state: Option<String>,
    pub(super) version_ms: i64,
    pub(super) event_ms: i64,
    pub(super) last_seq: i64,
    pub(super) created_ms: i64,
    pub(super) updated_ms: i64,
    pub(super) details: String,
    pub(super) origin: String,
}

impl TryFrom<ResourceDbRow> for ResourceRow {
    type Error = StoreError;

    fn try_from(r: ResourceDbRow) -> Result<Self, StoreError> {
        Ok(Self {
            kind: parse_kind(&r.kind)?,
            project: r.project,
            parent: r.parent,
            name: r.name,
            state: r.state,
            previous_state: r.previous_state,
            version_ms: r.version_ms,
            event_ms: r.event_ms,
            last_seq: r.last_seq,
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
            details: parse_json(Some(r.details), "resource details")?,
            origin: super::parse_origin(&r.origin)?,
        })
    }
}

/// Defines the shared operations for one backend's connection type `$conn`, inside the module
/// that invokes it.
macro_rules! shared_ops {
    ($conn:ty) => {
        /// A page of the event log.
        pub async fn events(
            conn: &mut $conn,
            q: &$crate::store::EventQuery,
        ) -> Result<Vec<$crate::store::StoredEvent>, $crate::store::StoreError> {
            let rows: Vec<$crate::store::sql::EventDbRow> =
                sqlx::query_as($crate::store::sql::SELECT_EVENTS)
                    .bind(q.after)
                    .bind(q.event_type.as_deref())
                    .bind(q.project.as_deref())
                    .bind(q.kind.map(|k| k.as_str()))
                    .bind(i64::from(q.limit))
                    .fetch_all(&mut *conn)
                    .await?;
            rows.into_iter()
                .map($crate::store::StoredEvent::try_from)
                .collect()
        }

        /// A filtered page of resources in key order.
        pub async fn resources(
            conn: &mut $conn,
            q: &$crate::store::ResourceQuery,
        ) -> Result<Vec<$crate::store::ResourceRow>, $crate::store::StoreError> {
            use $crate::store::sql::{
                SELECT_RESOURCES, SELECT_RESOURCES_BY_NAME, SELECT_RESOURCES_OF_KIND,
            };
            let after = q.after.as_ref();
            // A fixed statement per shape of query, so each is planned with its index.
            let sql = match (q.kind, &q.project, &q.name) {
                (Some(_), Some(_), Some(_)) => SELECT_RESOURCES_BY_NAME,
                (Some(_), _, _) => SELECT_RESOURCES_OF_KIND,
                _ => SELECT_RESOURCES,
            };
            let rows: Vec<$crate::store::sql::ResourceDbRow> = sqlx::query_as(sql)
                .bind(q.kind.map(|k| k.as_str()))
                .bind(q.project.as_deref())
                .bind(q.parent.as_deref())
                .bind(q.name.as_deref())
                .bind(q.state.as_deref())
                .bind(after.map(|c| c.kind.as_str()))
                .bind(after.map(|c| c.project.as_str()))
                .bind(after.map(|c| c.parent.as_str()))
                .bind(after.map(|c| c.name.as_str()))
                .bind(i64::from(q.limit))
                .fetch_all(&mut *conn)
                .await?;
            rows.into_iter()
                .map($crate::store::ResourceRow::try_from)
                .collect()
        }

        /// The highest sequence number in the log.
        pub async fn last_seq(conn: &mut $conn) -> Result<i64, $crate::store::StoreError> {
            let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events")
                .fetch_one(&mut *conn)
                .await?;
            Ok(seq.unwrap_or(0))
        }
    };
}
pub(super) use shared_ops;

/// Defines `append` through sqlx for one backend (Postgres; SQLite appends through
/// `sqlite_append` instead), in the invoking module, next to `shared_ops!`'s functions.
macro_rules! append_ops {
    ($conn:ty, $db:ty) => {
        use $crate::store::outbox::Subscription as SubscriptionRow;
        use $crate::store::outbox_sql as outbox_q;

        /// Enabled subscriptions, for matching events as they are appended.
        pub async fn enabled_subscriptions(
            conn: &mut $conn,
        ) -> Result<Vec<SubscriptionRow>, $crate::store::StoreError> {
            let rows: Vec<outbox_q::SubscriptionDbRow> = sqlx::query_as(concat!(
                "SELECT id, url, filter, enabled, retry_schedule, secret, previous_secret, ",
                "previous_secret_until_ms, disabled_reason, origin, created_ms, updated_ms ",
                "FROM subscriptions WHERE enabled"
            ))
            .fetch_all(&mut *conn)
            .await?;
            rows.into_iter().map(SubscriptionRow::try_from).collect()
        }

        /// Appends a batch inside the caller's transaction (see [`super::Store::append`]), in a
        /// constant number of statements: look up stored `(source, id)` pairs and the touched
        /// resources, decide in memory (`batch`), then insert events, upsert resources and
        /// queue deliveries with multi-row statements.
        pub async fn append(
            conn: &mut $conn,
            events: &[$crate::domain::event::NewEvent],
        ) -> Result<Vec<$crate::store::Appended>, $crate::store::StoreError> {
            use std::collections::{HashMap, HashSet};
            use $crate::store::batch::{self, CHUNK_EVENTS, CHUNK_KEYS};
            type Qb<'a> = sqlx::QueryBuilder<'a, $db>;

            if events.is_empty() {
                return Ok(Vec::new());
            }
            let subscriptions = enabled_subscriptions(conn).await?;
            let mut stored: HashSet<batch::EventKey> = HashSet::new();
            let pairs: Vec<(&str, &str)> = events
                .iter()
                .map(|e| (e.source.as_str(), e.id.as_str()))
                .collect();
            for chunk in batch::sized_chunks(&pairs, CHUNK_KEYS) {
                let mut qb = Qb::new($crate::store::sql::SEEN_HEAD);
                qb.push_values(chunk, |mut b, (source, id)| {
                    b.push_bind(*source).push_bind(*id);
                });
                qb.push($crate::store::sql::SEEN_TAIL);
                let found: Vec<batch::EventKey> = qb.build_query_as().fetch_all(&mut *conn).await?;
                stored.extend(found);
            }
            let mut current = Vec::new();
            for chunk in batch::sized_chunks(&batch::state_keys(events), CHUNK_KEYS) {
                let mut qb = Qb::new($crate::store::sql::CURRENT_HEAD);
                qb.push_values(chunk, |mut b, k| {
                    b.push_bind(k.kind.as_str())
                        .push_bind(k.project.as_str())
                        .push_bind(k.parent.as_str())
                        .push_bind(k.name.as_str());
                });
                qb.push($crate::store::sql::CURRENT_TAIL);
                let rows: Vec<$crate::store::sql::ResourceDbRow> =
                    qb.build_query_as().fetch_all(&mut *conn).await?;
                for row in rows {
                    current.push($crate::store::ResourceRow::try_from(row)?);
                }
            }

            let plan = batch::plan(events, stored, current);

            let mut seqs: HashMap<batch::EventKey, i64> = HashMap::with_capacity(plan.fresh.len());
            for chunk in batch::sized_chunks(&plan.fresh, CHUNK_EVENTS) {
                let mut qb = Qb::new($crate::store::sql::INSERT_EVENTS);
                qb.push_values(chunk, |mut b, (i, applied, _)| {
                    let e = &events[*i];
                    b.push_bind(e.id.as_str())
                        .push_bind(e.source.as_str())
                        .push_bind(e.event_type.as_str())
                        .push_bind(e.time.as_deref())
                        .push_bind(e.event_ms)
                        .push_bind(e.received_ms)
                        .push_bind(e.key.project.as_str())
                        .push_bind(e.kind.as_str())
                        .push_bind(e.key.kind.as_str())
                        .push_bind(e.key.parent.as_str())
                        .push_bind(e.key.name.as_str())
                        .push_bind(e.previous_state.as_deref())
                        .push_bind(e.state.as_deref())
                        .push_bind(*applied)
                        .push_bind(e.origin.as_str())
                        // `data` stays NULL: it is read back from `raw` (see data_from_raw),
                        // so the payload is written once, not twice.
                        .push_bind(None::<&str>)
                        .push_bind(e.raw.as_slice());
                });
                qb.push($crate::store::sql::INSERT_EVENTS_TAIL);
                let rows: Vec<(i64, String, String)> =
                    qb.build_query_as().fetch_all(&mut *conn).await?;
                for (seq, source, id) in rows {
                    seqs.insert((source, id), seq);
                }
            }
            let done = plan.finish(events, &seqs, &subscriptions)?;

            for chunk in batch::sized_chunks(&done.changed, CHUNK_KEYS / 4) {
                let mut qb = Qb::new($crate::store::sql::UPSERT_RESOURCES_HEAD);
                qb.push_values(chunk, |mut b, (r, details)| {
                    b.push_bind(r.kind.as_str())
                        .push_bind(r.project.as_str())
                        .push_bind(r.parent.as_str())
                        .push_bind(r.name.as_str())
                        .push_bind(r.state.as_str())
                        .push_bind(r.previous_state.as_deref())
                        .push_bind(r.version_ms)
                        .push_bind(r.event_ms)
                        .push_bind(r.last_seq)
                        .push_bind(r.created_ms)
                        .push_bind(r.updated_ms)
                        .push_bind(*details)
                        .push_bind(r.origin.as_str());
                });
                qb.push($crate::store::sql::UPSERT_RESOURCES_TAIL);
                qb.build().execute(&mut *conn).await?;
            }
            for chunk in batch::sized_chunks(&done.deliveries, CHUNK_KEYS) {
                let mut qb = Qb::new($crate::store::outbox_sql::INSERT_DELIVERIES_HEAD);
                qb.push_values(chunk, |mut b, (sub, seq, resource, now)| {
                    b.push_bind(sub.as_str())
                        .push_bind(*seq)
                        .push_bind(resource.as_str())
                        .push("'pending', 0, 0")
                        .push_bind(*now)
                        .push("0")
                        .push_bind(*now)
                        .push_bind(*now);
                });
                qb.build().execute(&mut *conn).await?;
            }
            Ok(done.outcomes)
        }
    };
}
pub(super) use append_ops;

#[cfg(test)]
mod tests {
    use super::SELECT_RESOURCES_BY_NAME;
    use crate::store::{DEAD_DELIVERIES, PENDING_DELIVERIES};

    /// An in-memory database with every migration applied, in order, so a later one that
    /// changes the indexes is checked too.
    fn migrated() -> rusqlite::Connection {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|f| f.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no migrations in {dir}");
        for file in files {
            db.execute_batch(&std::fs::read_to_string(&file).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
        db
    }

    /// The steps of SQLite's plan for `sql`, every parameter bound to NULL.
    fn plan(db: &rusqlite::Connection, sql: &str) -> Vec<String> {
        let mut plan = db.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let nulls = vec![rusqlite::types::Null; plan.parameter_count()];
        plan.query_map(rusqlite::params_from_iter(nulls), |row| row.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A waiter's lookup of one job is planned on the name index, not as a walk over every
    /// resource of the project (SQLite plans these statements without table statistics).
    #[test]
    fn one_resource_by_name_is_found_through_the_name_index() {
        let steps = plan(&migrated(), SELECT_RESOURCES_BY_NAME);
        assert!(
            steps
                .iter()
                .any(|s| s.contains("INDEX resources_name (kind=? AND project=? AND name=?)")),
            "{steps:#?}"
        );
        assert!(
            !steps
                .iter()
                .any(|s| s.contains("PRIMARY KEY (kind=? AND project=?)")),
            "{steps:#?}"
        );
    }

    /// Readiness counts pending and dead deliveries from their partial indexes, never by
    /// reading every delivery kept.
    #[test]
    fn outbox_counts_read_only_their_partial_indexes() {
        let db = migrated();
        for (sql, index) in [
            (PENDING_DELIVERIES, "deliveries_pending"),
            (DEAD_DELIVERIES, "deliveries_dead"),
        ] {
            let steps = plan(&db, sql);
            // A prefix: either pending index (by id or by due time) holds only pending rows.
            let scan = format!("SCAN deliveries USING COVERING INDEX {index}");
            assert!(
                steps.len() == 1 && steps[0].starts_with(&scan),
                "{sql}: {steps:#?}"
            );
        }
    }
}

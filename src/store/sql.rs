//! The SQL both backends share. SQLite and Postgres accept the same statements here (`$N`
//! parameters, `ON CONFLICT`, `RETURNING`, row-value comparison), so each operation is written
//! once, in `shared_ops!`, which each backend instantiates for its own sqlx connection type
//! (concrete code, no trait-bound maze); the backends add only connection setup and locking.

use super::{parse_json, parse_kind, ResourceRow, StoreError, StoredEvent};
use sqlx::FromRow;

macro_rules! event_columns {
    () => {
        "seq, event_id, source, type, time, event_ms, received_ms, project, kind, resource_kind, \
         parent, name, previous_state, state, applied, origin, data"
    };
}

macro_rules! resource_columns {
    () => {
        "kind, project, parent, name, state, previous_state, version_ms, event_ms, last_seq, \
         created_ms, updated_ms, details"
    };
}

pub(super) const SELECT_RESOURCE: &str = concat!(
    "SELECT ",
    resource_columns!(),
    " FROM resources WHERE kind = $1 AND project = $2 AND parent = $3 AND name = $4"
);

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

pub(super) const INSERT_EVENT: &str =
    "INSERT INTO events (event_id, source, type, time, event_ms, \
     received_ms, project, kind, resource_kind, parent, name, previous_state, state, applied, \
     origin, data, raw) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
     $16, $17) ON CONFLICT (source, event_id) DO NOTHING RETURNING seq";

pub(super) const UPSERT_RESOURCE: &str =
    "INSERT INTO resources (kind, project, parent, name, state, \
     previous_state, version_ms, event_ms, last_seq, created_ms, updated_ms, details) VALUES ($1, \
     $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (kind, project, parent, name) DO \
     UPDATE SET state = excluded.state, previous_state = excluded.previous_state, version_ms = \
     excluded.version_ms, event_ms = excluded.event_ms, last_seq = excluded.last_seq, \
     updated_ms = excluded.updated_ms, details = excluded.details";

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
            data: parse_json(r.data, "event data")?,
        })
    }
}

#[derive(FromRow)]
pub struct ResourceDbRow {
    kind: String,
    project: String,
    parent: String,
    name: String,
    state: String,
    previous_state: Option<String>,
    version_ms: i64,
    event_ms: i64,
    last_seq: i64,
    created_ms: i64,
    updated_ms: i64,
    details: String,
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
        })
    }
}

/// Defines the shared operations for one backend's connection type `$conn`, inside the module
/// that invokes it.
macro_rules! shared_ops {
    ($conn:ty) => {
        async fn load_resource(
            conn: &mut $conn,
            key: &$crate::domain::resource::ResourceKey,
        ) -> Result<Option<$crate::store::ResourceRow>, $crate::store::StoreError> {
            let row: Option<$crate::store::sql::ResourceDbRow> =
                sqlx::query_as($crate::store::sql::SELECT_RESOURCE)
                    .bind(key.kind.as_str())
                    .bind(key.project.as_str())
                    .bind(key.parent.as_str())
                    .bind(key.name.as_str())
                    .fetch_optional(&mut *conn)
                    .await?;
            row.map($crate::store::ResourceRow::try_from).transpose()
        }

        /// Appends a batch inside the caller's transaction (see [`super::Store::append`]).
        pub async fn append(
            conn: &mut $conn,
            events: &[$crate::domain::event::NewEvent],
        ) -> Result<Vec<$crate::store::Appended>, $crate::store::StoreError> {
            let mut projection = $crate::store::projection::Projection::default();
            let mut outcomes = Vec::with_capacity(events.len());
            // The outbox: deliveries commit in the same transaction as their event.
            let subscriptions = enabled_subscriptions(conn).await?;
            for event in events {
                let sets_state = event.sets_state();
                if sets_state && projection.needs(&event.key) {
                    let row = load_resource(conn, &event.key).await?;
                    projection.load(event.key.clone(), row);
                }
                let applied = sets_state && projection.would_apply(event);
                let data = event.data.to_string();
                let seq: Option<i64> = sqlx::query_scalar($crate::store::sql::INSERT_EVENT)
                    .bind(event.id.as_str())
                    .bind(event.source.as_str())
                    .bind(event.event_type.as_str())
                    .bind(event.time.as_deref())
                    .bind(event.event_ms)
                    .bind(event.received_ms)
                    .bind(event.key.project.as_str())
                    .bind(event.kind.as_str())
                    .bind(event.key.kind.as_str())
                    .bind(event.key.parent.as_str())
                    .bind(event.key.name.as_str())
                    .bind(event.previous_state.as_deref())
                    .bind(event.state.as_deref())
                    .bind(applied)
                    .bind(event.origin.as_str())
                    .bind(data.as_str())
                    .bind(event.raw.as_slice())
                    .fetch_optional(&mut *conn)
                    .await?;
                outcomes.push(match seq {
                    None => $crate::store::Appended::Duplicate,
                    Some(seq) => {
                        if applied {
                            projection.apply(event, seq);
                        }
                        if !subscriptions.is_empty() {
                            let facts = $crate::domain::subscription::EventFacts {
                                event_type: &event.event_type,
                                project: &event.key.project,
                                kind: event.kind.as_str(),
                                state: event.state.as_deref(),
                            };
                            let k = &event.key;
                            let resource =
                                format!("{}/{}/{}/{}", k.kind, k.project, k.parent, k.name);
                            enqueue(
                                conn,
                                &subscriptions,
                                &facts,
                                seq,
                                &resource,
                                event.received_ms,
                            )
                            .await?;
                        }
                        $crate::store::Appended::Stored { seq, applied }
                    }
                });
            }
            for row in projection.changed() {
                let details = row.details.to_string();
                sqlx::query($crate::store::sql::UPSERT_RESOURCE)
                    .bind(row.kind.as_str())
                    .bind(row.project.as_str())
                    .bind(row.parent.as_str())
                    .bind(row.name.as_str())
                    .bind(row.state.as_str())
                    .bind(row.previous_state.as_deref())
                    .bind(row.version_ms)
                    .bind(row.event_ms)
                    .bind(row.last_seq)
                    .bind(row.created_ms)
                    .bind(row.updated_ms)
                    .bind(details.as_str())
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(outcomes)
        }

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
            let after = q.after.as_ref();
            let rows: Vec<$crate::store::sql::ResourceDbRow> =
                sqlx::query_as($crate::store::sql::SELECT_RESOURCES)
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

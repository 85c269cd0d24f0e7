//! SQLite appends without hand-offs: the whole batch transaction runs synchronously on the
//! calling thread through one rusqlite connection.
//!
//! sqlx runs each SQLite statement on a worker thread and hands it over twice per statement;
//! on a busy two-core machine each hand-off waited for the scheduler, so a batch of seven
//! statements spent more time waking threads than in SQLite. The statements and the in-memory
//! decisions (`batch`) are the same as the sqlx path's; only the driver differs. Everything
//! else the SQLite store does stays on sqlx.

use super::batch::{self, EventKey, CHUNK_EVENTS, CHUNK_KEYS};
use super::outbox::Subscription;
use super::outbox_sql::{SubscriptionDbRow, INSERT_DELIVERIES_HEAD};
use super::sql::{
    ResourceDbRow, CURRENT_HEAD, CURRENT_TAIL, INSERT_EVENTS, INSERT_EVENTS_TAIL, SEEN_HEAD,
    SEEN_TAIL, UPSERT_RESOURCES_HEAD, UPSERT_RESOURCES_TAIL,
};
use super::{Appended, ResourceRow, StoreError};
use crate::domain::event::NewEvent;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params_from_iter, Connection, OpenFlags, TransactionBehavior};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// Prepared statements kept per connection (multi-row statements differ by row count).
const STATEMENT_CACHE: usize = 256;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Corrupt(format!("sqlite: {e}"))
    }
}

pub(super) struct Appender {
    conn: Mutex<Connection>,
}

fn text(s: &str) -> ToSqlOutput<'_> {
    ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))
}

fn opt_text(s: Option<&str>) -> ToSqlOutput<'_> {
    s.map_or(ToSqlOutput::Borrowed(ValueRef::Null), text)
}

fn int(i: i64) -> ToSqlOutput<'static> {
    ToSqlOutput::Borrowed(ValueRef::Integer(i))
}

/// `VALUES (?, ...), ...`: `rows` groups of `group`.
fn values(rows: usize, group: &str) -> String {
    let mut sql = String::with_capacity(7 + rows * (group.len() + 1));
    sql.push_str("VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(group);
    }
    sql
}

fn placeholders(n: usize) -> String {
    format!("({})", vec!["?"; n].join(", "))
}

impl Appender {
    /// Opens the database file (which the sqlx pools created) for appends.
    pub fn open(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(busy_timeout)?;
        // The same durability as the sqlx connections: a commit is on disk when it returns.
        conn.pragma_update(None, "journal_mode", "wal")?;
        conn.pragma_update(None, "synchronous", "full")?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // A multi-row statement keeps a statement journal (the pages it changes, to undo it
        // alone on a constraint error); past 64 KiB SQLite spills it to a temporary file,
        // created, written and unlinked inside the commit, in whatever temporary folder is
        // writable (66 of 554 commits under the ingest benchmark). In memory it is a few MiB
        // at most (`ingest.batch_max_events` rows).
        conn.pragma_update(None, "temp_store", "memory")?;
        conn.pragma_update(
            None,
            "journal_size_limit",
            super::sqlite::JOURNAL_SIZE_LIMIT,
        )?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// Appends a batch in one transaction, blocking the calling thread until it commits.
    pub fn append(&self, events: &[NewEvent]) -> Result<Vec<Appended>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let subscriptions = enabled_subscriptions(&tx)?;

        let mut stored: HashSet<EventKey> = HashSet::new();
        for chunk in batch::sized_chunks(events, CHUNK_KEYS) {
            let sql = format!("{SEEN_HEAD}{}{SEEN_TAIL}", values(chunk.len(), "(?, ?)"));
            let params = chunk.iter().flat_map(|e| [text(&e.source), text(&e.id)]);
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(params), |r| Ok((r.get(0)?, r.get(1)?)))?;
            for row in rows {
                stored.insert(row?);
            }
        }

        let mut current = Vec::new();
        for chunk in batch::sized_chunks(&batch::state_keys(events), CHUNK_KEYS) {
            let sql = format!(
                "{CURRENT_HEAD}{}{CURRENT_TAIL}",
                values(chunk.len(), "(?, ?, ?, ?)")
            );
            let params = chunk.iter().flat_map(|k| {
                [
                    text(k.kind.as_str()),
                    text(&k.project),
                    text(&k.parent),
                    text(&k.name),
                ]
            });
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(params), |r| {
                Ok(ResourceDbRow {
                    kind: r.get(0)?,
                    project: r.get(1)?,
                    parent: r.get(2)?,
                    name: r.get(3)?,
                    state: r.get(4)?,
                    previous_state: r.get(5)?,
                    version_ms: r.get(6)?,
                    event_ms: r.get(7)?,
                    last_seq: r.get(8)?,
                    created_ms: r.get(9)?,
                    updated_ms: r.get(10)?,
                    details: r.get(11)?,
                    origin: r.get(12)?,
                })
            })?;
            for row in rows {
                current.push(ResourceRow::try_from(row?)?);
            }
        }

        let plan = batch::plan(events, stored, current);

        let event_group = placeholders(17);
        let mut seqs: HashMap<EventKey, i64> = HashMap::with_capacity(plan.fresh.len());
        for chunk in batch::sized_chunks(&plan.fresh, CHUNK_EVENTS) {
            let sql = format!(
                "{INSERT_EVENTS}{}{INSERT_EVENTS_TAIL}",
                values(chunk.len(), &event_group)
            );
            let params = chunk.iter().flat_map(|(i, applied, _)| {
                let e = &events[*i];
                [
                    text(&e.id),
                    text(&e.source),
                    text(&e.event_type),
                    opt_text(e.time.as_deref()),
                    int(e.event_ms),
                    int(e.received_ms),
                    text(&e.key.project),
                    text(e.kind.as_str()),
                    text(e.key.kind.as_str()),
                    text(&e.key.parent),
                    text(&e.key.name),
                    opt_text(e.previous_state.as_deref()),
                    opt_text(e.state.as_deref()),
                    int(i64::from(*applied)),
                    text(e.origin.as_str()),
                    // `data` stays NULL: it is read back from `raw`.
                    ToSqlOutput::Borrowed(ValueRef::Null),
                    ToSqlOutput::Borrowed(ValueRef::Blob(&e.raw)),
                ]
            });
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(params), |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            for row in rows {
                let (seq, source, id) = row?;
                seqs.insert((source, id), seq);
            }
        }
        let done = plan.finish(events, &seqs, &subscriptions)?;

        let resource_group = placeholders(13);
        for chunk in batch::sized_chunks(&done.changed, CHUNK_KEYS / 4) {
            let sql = format!(
                "{UPSERT_RESOURCES_HEAD}{}{UPSERT_RESOURCES_TAIL}",
                values(chunk.len(), &resource_group)
            );
            let params = chunk.iter().flat_map(|(r, details)| {
                [
                    text(r.kind.as_str()),
                    text(&r.project),
                    text(&r.parent),
                    text(&r.name),
                    text(&r.state),
                    opt_text(r.previous_state.as_deref()),
                    int(r.version_ms),
                    int(r.event_ms),
                    int(r.last_seq),
                    int(r.created_ms),
                    int(r.updated_ms),
                    text(details),
                    text(r.origin.as_str()),
                ]
            });
            tx.prepare_cached(&sql)?.execute(params_from_iter(params))?;
        }
        for chunk in batch::sized_chunks(&done.deliveries, CHUNK_KEYS) {
            let sql = format!(
                "{INSERT_DELIVERIES_HEAD}{}",
                values(chunk.len(), "(?, ?, ?, 'pending', 0, 0, ?, 0, ?, ?)")
            );
            let params = chunk.iter().flat_map(|(sub, seq, resource, now)| {
                [
                    text(sub),
                    int(*seq),
                    text(resource),
                    int(*now),
                    int(*now),
                    int(*now),
                ]
            });
            tx.prepare_cached(&sql)?.execute(params_from_iter(params))?;
        }
        tx.commit()?;
        Ok(done.outcomes)
    }
}

fn enabled_subscriptions(tx: &rusqlite::Transaction<'_>) -> Result<Vec<Subscription>, StoreError> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, url, filter, enabled, retry_schedule, secret, previous_secret, \
         previous_secret_until_ms, disabled_reason, origin, created_ms, updated_ms \
         FROM subscriptions WHERE enabled",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(SubscriptionDbRow {
            id: r.get(0)?,
            url: r.get(1)?,
            filter: r.get(2)?,
            enabled: r.get(3)?,
            retry_schedule: r.get(4)?,
            secret: r.get(5)?,
            previous_secret: r.get(6)?,
            previous_secret_until_ms: r.get(7)?,
            disabled_reason: r.get(8)?,
            origin: r.get(9)?,
            created_ms: r.get(10)?,
            updated_ms: r.get(11)?,
        })
    })?;
    rows.map(|row| Subscription::try_from(row?)).collect()
}

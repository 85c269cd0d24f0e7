//! The `Store` trait: the use-case operations mkio-relay needs from a database, with SQLite and
//! Postgres implementations chosen at run time from the database URL.

mod batch;
pub mod outbox;
mod outbox_sql;
mod postgres;
mod projection;
pub mod retention;
mod sql;
mod sqlite;
mod sqlite_append;
pub mod watches;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::domain::event::{NewEvent, Origin};
use crate::domain::resource::ResourceKind;
use async_trait::async_trait;
use outbox::{AttemptResult, Claimed, DeliveryRow, ReplayRange, Subscription};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use watches::{OnExisting, PollRecord, WatchQuery, WatchRow};

/// Why a store operation failed. Every variant means "not stored": callers answer 503.
/// The message includes the cause (which is therefore not also exposed as `source()`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("stored row is unreadable: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(e)
    }
}

/// The outcome of appending one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Newly stored at `seq`; `applied` when it became its resource's current state;
    /// `queued` when it queued at least one outbound delivery.
    Stored {
        seq: i64,
        applied: bool,
        queued: bool,
    },
    /// `(source, id)` was already stored; nothing was written.
    Duplicate,
}

/// One row of the event log.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub seq: i64,
    pub id: String,
    pub event_type: String,
    pub source: String,
    pub time: Option<String>,
    pub event_ms: i64,
    pub received_ms: i64,
    pub project: String,
    pub kind: String,
    pub resource_kind: String,
    pub parent: String,
    pub name: String,
    pub previous_state: Option<String>,
    pub state: Option<String>,
    pub applied: bool,
    pub origin: String,
    pub data: Value,
}

/// The current state of one resource.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceRow {
    pub kind: ResourceKind,
    pub project: String,
    pub parent: String,
    pub name: String,
    pub state: String,
    pub previous_state: Option<String>,
    pub version_ms: i64,
    pub event_ms: i64,
    pub last_seq: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub details: Value,
    /// Where the current state came from: a webhook, or the relay's own polling.
    pub origin: Origin,
}

/// A page of the event log: events with `seq > after`, oldest first.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    pub after: i64,
    pub limit: u32,
    pub event_type: Option<String>,
    pub project: Option<String>,
    pub kind: Option<ResourceKind>,
}

impl EventQuery {
    /// Whether `event` passes this query's filters (the same test the SQL applies).
    pub fn matches(&self, event: &StoredEvent) -> bool {
        self.event_type
            .as_ref()
            .is_none_or(|t| *t == event.event_type)
            && self.project.as_ref().is_none_or(|p| *p == event.project)
            && self.kind.is_none_or(|k| k.as_str() == event.kind)
    }
}

/// The position of a resource in listing order, for keyset pagination.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResourceCursor {
    pub kind: String,
    pub project: String,
    pub parent: String,
    pub name: String,
}

/// A filtered page of resources, ordered by (kind, project, parent, name).
#[derive(Clone, Debug, Default)]
pub struct ResourceQuery {
    pub kind: Option<ResourceKind>,
    pub project: Option<String>,
    pub parent: Option<String>,
    pub name: Option<String>,
    pub state: Option<String>,
    pub after: Option<ResourceCursor>,
    pub limit: u32,
}

/// Database-specific tuning that callers choose.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Connections for readers (the writer has its own).
    pub max_connections: u32,
    /// How long to wait for a connection or a lock before failing.
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Appends events in one transaction: deduplicates on `(source, id)`, assigns strictly
    /// increasing sequence numbers, and projects resource state. All or nothing.
    async fn append(&self, events: &[NewEvent]) -> Result<Vec<Appended>, StoreError>;
    async fn events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError>;
    async fn resources(&self, query: &ResourceQuery) -> Result<Vec<ResourceRow>, StoreError>;
    /// The highest sequence number stored, 0 when the log is empty.
    async fn last_seq(&self) -> Result<i64, StoreError>;
    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Compares the applied migrations with this binary's and counts the outbox, for
    /// readiness and metrics. Both backends implement it; the default (for test doubles)
    /// only checks that the database answers.
    async fn status(&self) -> Result<StoreStatus, StoreError> {
        self.ping().await?;
        Ok(StoreStatus::default())
    }
    /// Creates or replaces a subscription.
    async fn put_subscription(&self, sub: &Subscription) -> Result<(), StoreError>;
    /// Every subscription, or the one with `id`.
    async fn subscriptions(&self, id: Option<&str>) -> Result<Vec<Subscription>, StoreError>;
    /// Deletes a subscription with its deliveries; `false` when it did not exist.
    async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError>;
    /// Claims up to `limit` due deliveries until `lease_until_ms`, oldest first, at most one
    /// per subscription and resource at a time.
    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<Claimed>, StoreError>;
    /// When the earliest pending delivery that no dispatcher holds is (or was) due, enabled
    /// subscriptions only; `None` when there is none.
    async fn next_delivery_due(&self, now_ms: i64) -> Result<Option<i64>, StoreError>;
    /// Records finished attempts in one transaction; for each, `false` when its claim had
    /// expired and nothing was written for it.
    async fn finish_deliveries(
        &self,
        results: &[AttemptResult],
        now_ms: i64,
    ) -> Result<Vec<bool>, StoreError>;
    /// A subscription's deliveries with their attempts, by id after `after_id`.
    async fn deliveries(
        &self,
        subscription_id: &str,
        state: Option<&str>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError>;
    /// Requeues a delivery with a fresh schedule; `false` when unknown.
    async fn retry_delivery(&self, id: i64, now_ms: i64) -> Result<bool, StoreError>;
    /// Queues deliveries of stored events in `range` that match the subscription's filter.
    async fn replay(
        &self,
        sub: &Subscription,
        range: &ReplayRange,
        now_ms: i64,
    ) -> Result<u64, StoreError>;
    /// The event a delivery carries, with its raw bytes.
    async fn delivery_event(
        &self,
        seq: i64,
    ) -> Result<Option<(StoredEvent, Option<Vec<u8>>)>, StoreError>;
    /// Adds a watch, or returns the one on the same path (see [`OnExisting`]).
    async fn add_watch(
        &self,
        watch: &WatchRow,
        on_existing: OnExisting,
    ) -> Result<WatchRow, StoreError>;
    /// A page of watches in id order.
    async fn watches(&self, query: &WatchQuery) -> Result<Vec<WatchRow>, StoreError>;
    /// Active watches of `project` due by `until_ms`, soonest first.
    async fn due_watches(
        &self,
        project: &str,
        until_ms: i64,
        limit: i64,
    ) -> Result<Vec<WatchRow>, StoreError>;
    /// When the next active watch of `project` is due.
    async fn next_watch_due(&self, project: &str) -> Result<Option<i64>, StoreError>;
    /// Writes a poll's outcome back to an active watch.
    async fn record_poll(&self, id: &str, record: &PollRecord) -> Result<(), StoreError>;
    async fn delete_watch(&self, id: &str) -> Result<bool, StoreError>;
    /// Takes or renews the lease `name` for `ttl_ms`; false while another holder has it.
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError>;
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;
    /// Jobs of `project` with no terminal state and no event since `updated_before_ms`, not
    /// watched yet.
    async fn stale_jobs(
        &self,
        project: &str,
        updated_before_ms: i64,
        limit: i64,
    ) -> Result<Vec<ResourceRow>, StoreError>;

    /// One bounded step of retention (see [`retention`]): acts on the rows after `cursor`
    /// that are older than `before_ms`, at most `batch` of them, in one short transaction.
    async fn prune(
        &self,
        what: retention::Prune,
        cursor: i64,
        before_ms: i64,
        batch: i64,
    ) -> Result<retention::PruneStep, StoreError>;

    /// Periodic upkeep the database needs from its client (SQLite: WAL checkpoints, which
    /// are kept off the commit path). Called every [`MAINTAIN_EVERY`].
    async fn maintain(&self) -> Result<(), StoreError>;
    /// Calls `on_commit` whenever another process sharing this database commits events, until
    /// `cancel`. Returns at once for a database only this process writes (SQLite).
    async fn listen_commits(
        &self,
        on_commit: Arc<tokio::sync::Notify>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<(), StoreError>;
    /// Whether `append` runs synchronously on the calling thread (SQLite), so the group-commit
    /// writer should have a thread of its own.
    fn append_blocks(&self) -> bool {
        false
    }
    /// Which backend this is (`sqlite` or `postgres`), for logs.
    fn backend(&self) -> &'static str;
}

/// What [`Store::status`] reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStatus {
    /// Migrations this binary embeds that are not (successfully) applied.
    pub missing_migrations: Vec<i64>,
    /// Applied migrations this binary does not know: a newer relay migrated the database.
    pub unknown_migrations: Vec<i64>,
    pub pending_deliveries: u64,
    pub dead_deliveries: u64,
}

impl StoreStatus {
    pub fn schema_current(&self) -> bool {
        self.missing_migrations.is_empty() && self.unknown_migrations.is_empty()
    }
}

/// The statements behind [`Store::status`], the same on both databases.
const APPLIED_MIGRATIONS: &str = "SELECT version, success FROM _sqlx_migrations";
const PENDING_DELIVERIES: &str = "SELECT COUNT(*) FROM deliveries WHERE state = 'pending'";
const DEAD_DELIVERIES: &str = "SELECT COUNT(*) FROM deliveries WHERE state = 'dead'";

/// Builds a [`StoreStatus`] from the `(version, success)` rows of `_sqlx_migrations`.
fn status_of(
    embedded: &sqlx::migrate::Migrator,
    applied: &[(i64, bool)],
    pending: i64,
    dead: i64,
) -> StoreStatus {
    let known: Vec<i64> = embedded
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| m.version)
        .collect();
    StoreStatus {
        missing_migrations: known
            .iter()
            .copied()
            .filter(|v| !applied.contains(&(*v, true)))
            .collect(),
        unknown_migrations: applied
            .iter()
            .map(|(v, _)| *v)
            .filter(|v| !known.contains(v))
            .collect(),
        pending_deliveries: pending.max(0) as u64,
        dead_deliveries: dead.max(0) as u64,
    }
}

/// How often [`Store::maintain`] runs. Often, so that each SQLite checkpoint has little to
/// write back (see `SqliteStore::maintain`); a pass with nothing to copy costs one query.
pub const MAINTAIN_EVERY: Duration = Duration::from_millis(100);

/// Which database a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Picks the backend from the URL scheme; `None` for anything else.
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// Opens (creating a SQLite file and its folder when needed) the store a URL names. Does not
/// migrate: call [`Store::migrate`].
pub async fn open(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    match Backend::of_url(url) {
        Some(Backend::Sqlite) => Ok(Arc::new(SqliteStore::open(url, options).await?)),
        Some(Backend::Postgres) => Ok(Arc::new(PgStore::open(url, options).await?)),
        None => Err(StoreError::Database(sqlx::Error::Configuration(
            format!("unsupported database URL scheme in {url:?}").into(),
        ))),
    }
}

fn parse_json(text: Option<String>, what: &str) -> Result<Value, StoreError> {
    match text {
        None => Ok(Value::Null),
        Some(t) => serde_json::from_str(&t)
            .map_err(|e| StoreError::Corrupt(format!("{what} is not JSON: {e}"))),
    }
}

fn parse_origin(origin: &str) -> Result<Origin, StoreError> {
    Origin::parse(origin).ok_or_else(|| StoreError::Corrupt(format!("unknown origin {origin:?}")))
}

fn parse_kind(kind: &str) -> Result<ResourceKind, StoreError> {
    kind.parse()
        .map_err(|e: crate::domain::resource::UnknownKind| StoreError::Corrupt(e.to_string()))
}

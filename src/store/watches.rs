//! Watches (resources the poller checks) and leases (work one replica does at a time): rows and
//! the SQL both backends share, instantiated per connection type by `watch_ops!`.

use sqlx::FromRow;

/// One watched resource.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct WatchRow {
    pub id: String,
    /// The canonical MK.IO object path (`/api/v1/projects/{p}/media/streamingEndpoints/{n}`).
    pub path: String,
    pub project: String,
    /// `api`, `config`, `safety_net` or `reconcile`.
    pub source: String,
    /// Comma-separated states that end the watch; `None`: the kind's final states.
    pub until_states: Option<String>,
    /// `active`, `done` (reached its state), `gone` (MK.IO answered 404) or `failed`.
    pub status: String,
    pub last_state: Option<String>,
    pub interval_ms: i64,
    pub next_poll_ms: i64,
    pub last_polled_ms: Option<i64>,
    pub polls: i64,
    pub error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl WatchRow {
    /// A new active watch, first due at `next_poll_ms`, with a fresh id.
    pub fn new(
        path: String,
        project: String,
        source: &str,
        until_states: Option<String>,
        interval_ms: i64,
        next_poll_ms: i64,
    ) -> Self {
        let now = crate::domain::time::now_ms();
        Self {
            id: new_watch_id(),
            path,
            project,
            source: source.to_owned(),
            until_states,
            status: "active".into(),
            last_state: None,
            interval_ms,
            next_poll_ms,
            last_polled_ms: None,
            polls: 0,
            error: None,
            created_ms: now,
            updated_ms: now,
        }
    }
}

/// What happens when a watch on the same path exists already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExisting {
    /// Keep the existing watch as it is.
    Keep,
    /// Start it again if MK.IO had answered 404 (the resource was created again).
    ReviveGone,
    /// Start it again (with the new `until`) unless it is active.
    ReviveInactive,
}

/// The outcome of one poll, written back to the watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollRecord {
    pub status: String,
    pub last_state: Option<String>,
    pub interval_ms: i64,
    pub next_poll_ms: i64,
    pub polled_ms: i64,
    pub error: Option<String>,
}

const INSERT_WATCH: &str = "INSERT INTO watches (id, path, project, source, until_states, \
     status, last_state, interval_ms, next_poll_ms, last_polled_ms, polls, error, created_ms, \
     updated_ms) VALUES ($1, $2, $3, $4, $5, 'active', NULL, $6, $7, NULL, 0, NULL, $8, $8) \
     ON CONFLICT (path) ";

const REVIVE: &str = "DO UPDATE SET status = 'active', source = excluded.source, until_states \
     = excluded.until_states, interval_ms = excluded.interval_ms, next_poll_ms = \
     excluded.next_poll_ms, error = NULL, updated_ms = excluded.updated_ms";

/// The insert statement for `on_existing`.
pub(super) fn insert_watch_sql(on_existing: OnExisting) -> String {
    match on_existing {
        OnExisting::Keep => format!("{INSERT_WATCH}DO NOTHING"),
        OnExisting::ReviveGone => format!("{INSERT_WATCH}{REVIVE} WHERE watches.status = 'gone'"),
        OnExisting::ReviveInactive => {
            format!("{INSERT_WATCH}{REVIVE} WHERE watches.status <> 'active'")
        }
    }
}

pub(super) const SELECT_WATCH_BY_PATH: &str = "SELECT id, path, project, source, until_states, \
     status, last_state, interval_ms, next_poll_ms, last_polled_ms, polls, error, created_ms, \
     updated_ms FROM watches WHERE path = $1";

pub(super) const SELECT_WATCHES: &str = "SELECT id, path, project, source, until_states, status, \
     last_state, interval_ms, next_poll_ms, last_polled_ms, polls, error, created_ms, updated_ms \
     FROM watches WHERE ($1 IS NULL OR id = $1) AND ($2 IS NULL OR project = $2) \
     AND ($3 IS NULL OR status = $3) AND id > $4 ORDER BY id LIMIT $5";

pub(super) const SELECT_DUE_WATCHES: &str = "SELECT id, path, project, source, until_states, \
     status, last_state, interval_ms, next_poll_ms, last_polled_ms, polls, error, created_ms, \
     updated_ms FROM watches WHERE status = 'active' AND project = $1 AND next_poll_ms <= $2 \
     ORDER BY next_poll_ms LIMIT $3";

pub(super) const NEXT_WATCH_DUE: &str =
    "SELECT MIN(next_poll_ms) FROM watches WHERE status = 'active' AND project = $1";

pub(super) const RECORD_POLL: &str = "UPDATE watches SET status = $2, last_state = $3, \
     interval_ms = $4, next_poll_ms = $5, last_polled_ms = $6, polls = polls + 1, error = $7, \
     updated_ms = $6 WHERE id = $1 AND status = 'active'";

pub(super) const DELETE_WATCH: &str = "DELETE FROM watches WHERE id = $1";

/// Takes or renews a lease: granted when free, expired, or already held by `holder`.
pub(super) const TAKE_LEASE: &str = "INSERT INTO leases (name, holder, expires_ms) VALUES ($1, \
     $2, $3) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = \
     excluded.expires_ms WHERE leases.holder = excluded.holder OR leases.expires_ms < $4";

pub(super) const RELEASE_LEASE: &str = "DELETE FROM leases WHERE name = $1 AND holder = $2";

/// Jobs of project `$3` with no terminal state and no event since `$1`, not watched yet,
/// oldest first.
pub(super) const STALE_JOBS: &str =
    "SELECT kind, project, parent, name, state, previous_state, version_ms, event_ms, last_seq, \
     created_ms, updated_ms, details, origin FROM resources r WHERE kind = 'job' \
     AND project = $3 AND state NOT IN ('Finished', 'Error', 'Canceled') AND updated_ms < $1 \
     AND NOT EXISTS (SELECT 1 FROM watches w WHERE w.path = '/api/v1/projects/' || r.project \
     || '/media/transforms/' || r.parent || '/jobs/' || r.name) ORDER BY updated_ms LIMIT $2";

/// Query of the watch list.
#[derive(Clone, Debug, Default)]
pub struct WatchQuery {
    pub id: Option<String>,
    pub project: Option<String>,
    pub status: Option<String>,
    pub after_id: String,
    pub limit: i64,
}

/// Defines the watch and lease operations for one backend's connection type.
macro_rules! watch_ops {
    ($conn:ty) => {
        pub async fn add_watch(
            conn: &mut $conn,
            w: &$crate::store::watches::WatchRow,
            on_existing: $crate::store::watches::OnExisting,
        ) -> Result<$crate::store::watches::WatchRow, $crate::store::StoreError> {
            sqlx::query(&$crate::store::watches::insert_watch_sql(on_existing))
                .bind(&w.id)
                .bind(&w.path)
                .bind(&w.project)
                .bind(&w.source)
                .bind(w.until_states.as_deref())
                .bind(w.interval_ms)
                .bind(w.next_poll_ms)
                .bind(w.created_ms)
                .execute(&mut *conn)
                .await?;
            Ok(sqlx::query_as($crate::store::watches::SELECT_WATCH_BY_PATH)
                .bind(&w.path)
                .fetch_one(&mut *conn)
                .await?)
        }

        pub async fn watches(
            conn: &mut $conn,
            q: &$crate::store::watches::WatchQuery,
        ) -> Result<Vec<$crate::store::watches::WatchRow>, $crate::store::StoreError> {
            Ok(sqlx::query_as($crate::store::watches::SELECT_WATCHES)
                .bind(q.id.as_deref())
                .bind(q.project.as_deref())
                .bind(q.status.as_deref())
                .bind(&q.after_id)
                .bind(q.limit)
                .fetch_all(&mut *conn)
                .await?)
        }

        pub async fn due_watches(
            conn: &mut $conn,
            project: &str,
            until_ms: i64,
            limit: i64,
        ) -> Result<Vec<$crate::store::watches::WatchRow>, $crate::store::StoreError> {
            Ok(sqlx::query_as($crate::store::watches::SELECT_DUE_WATCHES)
                .bind(project)
                .bind(until_ms)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?)
        }

        pub async fn next_watch_due(
            conn: &mut $conn,
            project: &str,
        ) -> Result<Option<i64>, $crate::store::StoreError> {
            let (due,): (Option<i64>,) = sqlx::query_as($crate::store::watches::NEXT_WATCH_DUE)
                .bind(project)
                .fetch_one(&mut *conn)
                .await?;
            Ok(due)
        }

        pub async fn record_poll(
            conn: &mut $conn,
            id: &str,
            r: &$crate::store::watches::PollRecord,
        ) -> Result<(), $crate::store::StoreError> {
            sqlx::query($crate::store::watches::RECORD_POLL)
                .bind(id)
                .bind(&r.status)
                .bind(r.last_state.as_deref())
                .bind(r.interval_ms)
                .bind(r.next_poll_ms)
                .bind(r.polled_ms)
                .bind(r.error.as_deref())
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        pub async fn delete_watch(
            conn: &mut $conn,
            id: &str,
        ) -> Result<bool, $crate::store::StoreError> {
            let done = sqlx::query($crate::store::watches::DELETE_WATCH)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            Ok(done.rows_affected() > 0)
        }

        pub async fn take_lease(
            conn: &mut $conn,
            name: &str,
            holder: &str,
            now_ms: i64,
            ttl_ms: i64,
        ) -> Result<bool, $crate::store::StoreError> {
            let done = sqlx::query($crate::store::watches::TAKE_LEASE)
                .bind(name)
                .bind(holder)
                .bind(now_ms + ttl_ms)
                .bind(now_ms)
                .execute(&mut *conn)
                .await?;
            Ok(done.rows_affected() > 0)
        }

        pub async fn release_lease(
            conn: &mut $conn,
            name: &str,
            holder: &str,
        ) -> Result<(), $crate::store::StoreError> {
            sqlx::query($crate::store::watches::RELEASE_LEASE)
                .bind(name)
                .bind(holder)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        pub async fn stale_jobs(
            conn: &mut $conn,
            project: &str,
            updated_before_ms: i64,
            limit: i64,
        ) -> Result<Vec<$crate::store::ResourceRow>, $crate::store::StoreError> {
            let rows: Vec<$crate::store::sql::ResourceDbRow> =
                sqlx::query_as($crate::store::watches::STALE_JOBS)
                    .bind(updated_before_ms)
                    .bind(limit)
                    .bind(project)
                    .fetch_all(&mut *conn)
                    .await?;
            rows.into_iter()
                .map($crate::store::ResourceRow::try_from)
                .collect()
        }
    };
}
pub(super) use watch_ops;

/// A watch id that is new: `w_` and 16 random hex digits.
pub fn new_watch_id() -> String {
    use rand::Rng;
    format!("w_{:016x}", rand::thread_rng().gen::<u64>())
}

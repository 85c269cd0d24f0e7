//! SQLite store: WAL, synchronous=FULL, one writer connection and a pool of read-only readers.

use super::outbox::{AttemptResult, Claimed, DeliveryRow, ReplayRange, Subscription};
use super::sqlite_append::Appender;
use super::watches::{OnExisting, PollRecord, WatchQuery, WatchRow};
use super::{
    Appended, EventQuery, ResourceQuery, ResourceRow, Store, StoreError, StoreOptions, StoreStatus,
    StoredEvent,
};
use crate::domain::event::NewEvent;
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

mod ops {
    super::super::sql::shared_ops!(sqlx::SqliteConnection);
    super::super::outbox_sql::outbox_ops!(sqlx::SqliteConnection, "");
    super::super::watches::watch_ops!(sqlx::SqliteConnection);
    super::super::retention::retention_ops!(sqlx::SqliteConnection);
}

/// Cap on the WAL file's size once checkpointed (bytes), on every connection: the one that
/// starts the WAL over (the appender, after `maintain`) is the one that truncates it.
pub(super) const JOURNAL_SIZE_LIMIT: u64 = 64 << 20;

/// A WAL this many frames long (about 16 MiB of 4 KiB pages) is restarted by `maintain`.
const WAL_RESTART_FRAMES: i64 = 4096;

pub struct SqliteStore {
    /// Taken around every write, on either connection: two writers meeting in SQLite's own
    /// busy handler would sleep in steps of up to 100 ms however soon the lock frees.
    write_lock: tokio::sync::Mutex<()>,
    appender: Appender,
    writer: SqlitePool,
    readers: SqlitePool,
    checkpointer: SqlitePool,
    /// The database file, synced after each checkpoint (`checkpoint_and_sync`).
    file: Arc<std::fs::File>,
    /// The checkpointed-frame count of the last pass that synced the database file.
    synced_frames: AtomicI64,
    /// The WAL's length when a RESTART last completed (-1: none yet). Until the next commit
    /// starts the WAL over, a PASSIVE pass keeps reporting that length, and restarting again
    /// would only repeat the work, every pass, for as long as the relay stays idle.
    restarted_at: AtomicI64,
}

impl SqliteStore {
    /// Opens the database file a `sqlite:PATH` URL names, creating it and its folder.
    pub async fn open(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before the writer acknowledges it, even on power loss.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true)
            // Checkpoints run in `maintain`, off the commit path (see WAL_CHECKPOINT_PAGES).
            .pragma("wal_autocheckpoint", "0")
            .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT.to_string());
        let path = connect.get_filename().to_path_buf();
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Database(sqlx::Error::Configuration(
                        format!("cannot create database folder {}: {e}", dir.display()).into(),
                    ))
                })?;
            }
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // A local file: no connection goes stale, and a ping per batch costs a hand-off.
            .test_before_acquire(false)
            .acquire_timeout(options.busy_timeout)
            .connect_with(connect.clone())
            .await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .test_before_acquire(false)
            .acquire_timeout(options.busy_timeout)
            .connect_with(connect.clone().read_only(true))
            .await?;
        // Checkpoints need a writable connection, apart from the writer so they never delay it.
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(connect)
            .await?;
        let appender = Appender::open(&path, options.busy_timeout)?;
        let file = std::fs::File::open(&path).map_err(sqlx::Error::Io)?;
        Ok(Self {
            file: Arc::new(file),
            synced_frames: AtomicI64::new(0),
            restarted_at: AtomicI64::new(-1),
            write_lock: tokio::sync::Mutex::new(()),
            appender,
            writer,
            readers,
            checkpointer,
        })
    }

    /// A PASSIVE checkpoint (it copies what it can without waiting for, or blocking, the
    /// writer or readers), then, if it copied anything, an fdatasync of the database file.
    /// Returns the WAL's length in frames.
    async fn checkpoint_and_sync(&self) -> Result<i64, StoreError> {
        let started = std::time::Instant::now();
        let (_busy, frames, copied): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&self.checkpointer)
                .await?;
        // `copied` counts the frames copied since the WAL last started over (by RESTART, or
        // by SQLite itself after a pass that copied everything): a new count means new pages.
        if copied > 0 && copied != self.synced_frames.load(Ordering::Relaxed) {
            let checkpointed = started.elapsed();
            let file = self.file.clone();
            tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .map_err(std::io::Error::other)
                .and_then(|synced| synced)
                .map_err(sqlx::Error::Io)?;
            self.synced_frames.store(copied, Ordering::Relaxed);
            tracing::debug!(
                frames,
                copied,
                checkpoint_micros = checkpointed.as_micros() as u64,
                micros = started.elapsed().as_micros() as u64,
                "checkpointed and synced"
            );
        }
        Ok(frames)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn append(&self, events: &[NewEvent]) -> Result<Vec<Appended>, StoreError> {
        // Synchronous on purpose (see sqlite_append): the group-commit writer calls this from
        // its own thread. Anywhere else on a multi-thread runtime, step aside first.
        let appender = &self.appender;
        let _write = self.write_lock.lock().await;
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| appender.append(events))
            }
            _ => appender.append(events),
        }
    }

    async fn events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        ops::events(&mut *self.readers.acquire().await?, query).await
    }

    async fn resources(&self, query: &ResourceQuery) -> Result<Vec<ResourceRow>, StoreError> {
        ops::resources(&mut *self.readers.acquire().await?, query).await
    }

    async fn last_seq(&self) -> Result<i64, StoreError> {
        ops::last_seq(&mut *self.readers.acquire().await?).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("migrations/sqlite")
            .run(&self.writer)
            .await?;
        Ok(())
    }

    async fn status(&self) -> Result<StoreStatus, StoreError> {
        let mut conn = self.readers.acquire().await?;
        let applied: Vec<(i64, bool)> = sqlx::query_as(super::APPLIED_MIGRATIONS)
            .fetch_all(&mut *conn)
            .await?;
        let (pending,): (i64,) = sqlx::query_as(super::PENDING_DELIVERIES)
            .fetch_one(&mut *conn)
            .await?;
        let (dead,): (i64,) = sqlx::query_as(super::DEAD_DELIVERIES)
            .fetch_one(&mut *conn)
            .await?;
        Ok(super::status_of(
            &sqlx::migrate!("migrations/sqlite"),
            &applied,
            pending,
            dead,
        ))
    }

    async fn put_subscription(&self, sub: &Subscription) -> Result<(), StoreError> {
        let _write = self.write_lock.lock().await;
        ops::put_subscription(&mut *self.writer.acquire().await?, sub).await
    }

    async fn subscriptions(&self, id: Option<&str>) -> Result<Vec<Subscription>, StoreError> {
        ops::subscriptions(&mut *self.readers.acquire().await?, id).await
    }

    async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError> {
        let _write = self.write_lock.lock().await;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let deleted = ops::delete_subscription(&mut tx, id).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let _write = self.write_lock.lock().await;
        let mut conn = self.writer.acquire().await?;
        relaxed_sync(&mut conn, true).await?;
        let result = ops::claim(&mut conn, now_ms, lease_until_ms, limit).await;
        relaxed_sync(&mut conn, false).await?;
        result
    }

    async fn next_delivery_due(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        ops::next_due(&mut *self.readers.acquire().await?, now_ms).await
    }

    async fn finish_deliveries(
        &self,
        results: &[AttemptResult],
        now_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let _write = self.write_lock.lock().await;
        let mut conn = self.writer.acquire().await?;
        relaxed_sync(&mut conn, true).await?;
        let result = async {
            let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
            let mut done = Vec::with_capacity(results.len());
            for r in results {
                done.push(ops::finish(&mut tx, &r.claimed, &r.attempt, &r.outcome, now_ms).await?);
            }
            tx.commit().await?;
            Ok(done)
        }
        .await;
        relaxed_sync(&mut conn, false).await?;
        result
    }

    async fn deliveries(
        &self,
        subscription_id: &str,
        state: Option<&str>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let mut conn = self.readers.acquire().await?;
        ops::deliveries(&mut conn, subscription_id, state, after_id, limit).await
    }

    async fn retry_delivery(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let _write = self.write_lock.lock().await;
        ops::retry_delivery(&mut *self.writer.acquire().await?, id, now_ms).await
    }

    async fn replay(
        &self,
        sub: &Subscription,
        range: &ReplayRange,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let _write = self.write_lock.lock().await;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let queued = ops::replay(&mut tx, sub, range, now_ms).await?;
        tx.commit().await?;
        Ok(queued)
    }

    async fn delivery_event(
        &self,
        seq: i64,
    ) -> Result<Option<(StoredEvent, Option<Vec<u8>>)>, StoreError> {
        ops::delivery_event(&mut *self.readers.acquire().await?, seq).await
    }

    async fn add_watch(
        &self,
        watch: &WatchRow,
        on_existing: OnExisting,
    ) -> Result<WatchRow, StoreError> {
        let _write = self.write_lock.lock().await;
        let mut conn = self.writer.acquire().await?;
        ops::add_watch(&mut conn, watch, on_existing).await
    }

    async fn watches(&self, query: &WatchQuery) -> Result<Vec<WatchRow>, StoreError> {
        ops::watches(&mut *self.readers.acquire().await?, query).await
    }

    async fn due_watches(
        &self,
        project: &str,
        until_ms: i64,
        limit: i64,
    ) -> Result<Vec<WatchRow>, StoreError> {
        ops::due_watches(
            &mut *self.readers.acquire().await?,
            project,
            until_ms,
            limit,
        )
        .await
    }

    async fn next_watch_due(&self, project: &str) -> Result<Option<i64>, StoreError> {
        ops::next_watch_due(&mut *self.readers.acquire().await?, project).await
    }

    async fn record_poll(&self, id: &str, record: &PollRecord) -> Result<(), StoreError> {
        let _write = self.write_lock.lock().await;
        let mut conn = self.writer.acquire().await?;
        ops::record_poll(&mut conn, id, record).await
    }

    async fn delete_watch(&self, id: &str) -> Result<bool, StoreError> {
        let _write = self.write_lock.lock().await;
        let mut conn = self.writer.acquire().await?;
        ops::delete_watch(&mut conn, id).await
    }

    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let _write = self.write_lock.lock().await;
        let mut conn = self.writer.acquire().await?;
        ops::take_lease(&mut conn, name, holder, now_ms, ttl_ms).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let _write = self.write_lock.lock().await;
        let mut conn = self.writer.acquire().await?;
        ops::release_lease(&mut conn, name, holder).await
    }

    async fn stale_jobs(
        &self,
        project: &str,
        updated_before_ms: i64,
        limit: i64,
    ) -> Result<Vec<ResourceRow>, StoreError> {
        let mut conn = self.readers.acquire().await?;
        ops::stale_jobs(&mut conn, project, updated_before_ms, limit).await
    }

    async fn prune(
        &self,
        what: super::retention::Prune,
        cursor: i64,
        before_ms: i64,
        batch: i64,
    ) -> Result<super::retention::PruneStep, StoreError> {
        let _write = self.write_lock.lock().await;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let step = ops::prune(&mut tx, what, cursor, before_ms, batch).await?;
        tx.commit().await?;
        Ok(step)
    }

    async fn maintain(&self) -> Result<(), StoreError> {
        // A PASSIVE checkpoint copies pages into the database file's page cache, and SQLite
        // fdatasyncs the file only in the RESTART below: that sync wrote back everything
        // copied since the WAL last started over (30-50 ms for half a second of the ingest
        // benchmark) with appends held off, and the commits after it queued their own WAL
        // fdatasync behind the write-back (the benchmark's p99: 45-50 ms). Syncing after each
        // pass writes the same pages back in steps of MAINTAIN_EVERY, with appends running.
        let frames = self.checkpoint_and_sync().await?;
        if frames >= WAL_RESTART_FRAMES && frames != self.restarted_at.load(Ordering::Relaxed) {
            // Under steady load a commit always lands between a PASSIVE checkpoint and the next
            // transaction, so the WAL never starts over and grows without end (900 MB in 8 s of
            // the ingest benchmark), every commit extending the file: new blocks to zero and a
            // size change for each fdatasync to journal. RESTART copies the frames written
            // since the last pass (one more pass first leaves it a few milliseconds' worth)
            // with appends held off (the write lock, so the appender never meets it in
            // SQLite's sleeping busy handler), and the next commit writes from the start of
            // the WAL again, over blocks already allocated.
            self.checkpoint_and_sync().await?;
            let started = std::time::Instant::now();
            let _write = self.write_lock.lock().await;
            let (busy, frames, copied): (i64, i64, i64) =
                sqlx::query_as("PRAGMA wal_checkpoint(RESTART)")
                    .fetch_one(&self.checkpointer)
                    .await?;
            // RESTART synced the database file itself.
            self.synced_frames.store(copied, Ordering::Relaxed);
            let done = busy == 0 && copied == frames;
            self.restarted_at
                .store(if done { frames } else { -1 }, Ordering::Relaxed);
            tracing::debug!(
                busy,
                frames,
                copied,
                micros = started.elapsed().as_micros() as u64,
                "WAL restarted"
            );
        }
        Ok(())
    }

    async fn listen_commits(
        &self,
        _on_commit: Arc<Notify>,
        _cancel: CancellationToken,
    ) -> Result<(), StoreError> {
        // One process writes a SQLite file: its own writer announces every commit.
        Ok(())
    }

    fn append_blocks(&self) -> bool {
        true
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

/// Switches the writer connection to `synchronous = NORMAL` (`relaxed`) or back to FULL.
/// NORMAL is for delivery bookkeeping only (claims, attempt results): a commit lost to a power
/// cut costs a repeated delivery, which at-least-once allows, and the next event append (a FULL
/// commit into the same WAL) makes it durable anyway. Events are never written relaxed; callers
/// switch back before the connection returns to the pool, whatever the operation's outcome.
async fn relaxed_sync(conn: &mut sqlx::SqliteConnection, relaxed: bool) -> Result<(), StoreError> {
    let pragma = if relaxed {
        "PRAGMA synchronous = NORMAL"
    } else {
        "PRAGMA synchronous = FULL"
    };
    sqlx::query(pragma).execute(&mut *conn).await?;
    Ok(())
}

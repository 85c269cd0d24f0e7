//! Postgres store, for several replicas sharing one database.

use super::outbox::{AttemptResult, Claimed, DeliveryRow, ReplayRange, Subscription};
use super::watches::{OnExisting, PollRecord, WatchQuery, WatchRow};
use super::{
    Appended, EventQuery, ResourceQuery, ResourceRow, Store, StoreError, StoreOptions, StoreStatus,
    StoredEvent,
};
use crate::domain::event::NewEvent;
use async_trait::async_trait;
use sqlx::postgres::{PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::Connection;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

mod ops {
    super::super::sql::shared_ops!(sqlx::PgConnection);
    super::super::sql::append_ops!(sqlx::PgConnection, sqlx::Postgres);
    super::super::outbox_sql::outbox_ops!(sqlx::PgConnection, "FOR UPDATE SKIP LOCKED");
    super::super::watches::watch_ops!(sqlx::PgConnection);
    super::super::retention::retention_ops!(sqlx::PgConnection);
}

/// The transaction-level advisory lock every append takes. Replicas append one at a time, so
/// sequence numbers become visible in order and a reader paging by `seq` never skips an event
/// that commits late with a smaller number.
const APPEND_LOCK_KEY: i64 = 0x6d6b_696f_7265_6c61; // "mkiorela"

/// The LISTEN/NOTIFY channel that announces commits to every replica.
const COMMIT_CHANNEL: &str = "mkio_relay_commits";

/// How long to wait before listening again after the listener connection failed.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn open(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        // One direct connection first: a pool would hide why it failed behind a time-out.
        PgConnection::connect(url).await?.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(options.busy_timeout)
            .connect(url)
            .await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Store for PgStore {
    async fn append(&self, events: &[NewEvent]) -> Result<Vec<Appended>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(APPEND_LOCK_KEY)
            .execute(&mut *tx)
            .await?;
        let outcomes = ops::append(&mut tx, events).await?;
        if outcomes
            .iter()
            .any(|o| matches!(o, Appended::Stored { .. }))
        {
            // Delivered to listeners when (and only if) the transaction commits.
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(COMMIT_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        ops::events(&mut *self.pool.acquire().await?, query).await
    }

    async fn resources(&self, query: &ResourceQuery) -> Result<Vec<ResourceRow>, StoreError> {
        ops::resources(&mut *self.pool.acquire().await?, query).await
    }

    async fn last_seq(&self) -> Result<i64, StoreError> {
        ops::last_seq(&mut *self.pool.acquire().await?).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn status(&self) -> Result<StoreStatus, StoreError> {
        let mut conn = self.pool.acquire().await?;
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
            &sqlx::migrate!("migrations/postgres"),
            &applied,
            pending,
            dead,
        ))
    }

    async fn put_subscription(&self, sub: &Subscription) -> Result<(), StoreError> {
        ops::put_subscription(&mut *self.pool.acquire().await?, sub).await
    }

    async fn subscriptions(&self, id: Option<&str>) -> Result<Vec<Subscription>, StoreError> {
        ops::subscriptions(&mut *self.pool.acquire().await?, id).await
    }

    async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
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
        ops::claim(
            &mut *self.pool.acquire().await?,
            now_ms,
            lease_until_ms,
            limit,
        )
        .await
    }

    async fn next_delivery_due(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        ops::next_due(&mut *self.pool.acquire().await?, now_ms).await
    }

    async fn finish_deliveries(
        &self,
        results: &[AttemptResult],
        now_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut done = Vec::with_capacity(results.len());
        for r in results {
            done.push(ops::finish(&mut tx, &r.claimed, &r.attempt, &r.outcome, now_ms).await?);
        }
        tx.commit().await?;
        Ok(done)
    }

    async fn deliveries(
        &self,
        subscription_id: &str,
        state: Option<&str>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        ops::deliveries(&mut conn, subscription_id, state, after_id, limit).await
    }

    async fn retry_delivery(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        ops::retry_delivery(&mut *self.pool.acquire().await?, id, now_ms).await
    }

    async fn replay(
        &self,
        sub: &Subscription,
        range: &ReplayRange,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let queued = ops::replay(&mut tx, sub, range, now_ms).await?;
        tx.commit().await?;
        Ok(queued)
    }

    async fn delivery_event(
        &self,
        seq: i64,
    ) -> Result<Option<(StoredEvent, Option<Vec<u8>>)>, StoreError> {
        ops::delivery_event(&mut *self.pool.acquire().await?, seq).await
    }

    async fn add_watch(
        &self,
        watch: &WatchRow,
        on_existing: OnExisting,
    ) -> Result<WatchRow, StoreError> {
        let mut conn = self.pool.acquire().await?;
        ops::add_watch(&mut conn, watch, on_existing).await
    }

    async fn watches(&self, query: &WatchQuery) -> Result<Vec<WatchRow>, StoreError> {
        ops::watches(&mut *self.pool.acquire().await?, query).await
    }

    async fn due_watches(
        &self,
        project: &str,
        until_ms: i64,
        limit: i64,
    ) -> Result<Vec<WatchRow>, StoreError> {
        ops::due_watches(&mut *self.pool.acquire().await?, project, until_ms, limit).await
    }

    async fn next_watch_due(&self, project: &str) -> Result<Option<i64>, StoreError> {
        ops::next_watch_due(&mut *self.pool.acquire().await?, project).await
    }

    async fn record_poll(&self, id: &str, record: &PollRecord) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        ops::record_poll(&mut conn, id, record).await
    }

    async fn delete_watch(&self, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        ops::delete_watch(&mut conn, id).await
    }

    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        ops::take_lease(&mut conn, name, holder, now_ms, ttl_ms).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        ops::release_lease(&mut conn, name, holder).await
    }

    async fn stale_jobs(
        &self,
        project: &str,
        updated_before_ms: i64,
        limit: i64,
    ) -> Result<Vec<ResourceRow>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        ops::stale_jobs(&mut conn, project, updated_before_ms, limit).await
    }

    async fn prune(
        &self,
        what: super::retention::Prune,
        cursor: i64,
        before_ms: i64,
        batch: i64,
    ) -> Result<super::retention::PruneStep, StoreError> {
        let mut tx = self.pool.begin().await?;
        let step = ops::prune(&mut tx, what, cursor, before_ms, batch).await?;
        tx.commit().await?;
        Ok(step)
    }

    async fn maintain(&self) -> Result<(), StoreError> {
        // Postgres vacuums and checkpoints by itself.
        Ok(())
    }

    async fn listen_commits(
        &self,
        on_commit: Arc<Notify>,
        cancel: CancellationToken,
    ) -> Result<(), StoreError> {
        while !cancel.is_cancelled() {
            let mut listener = match PgListener::connect_with(&self.pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot LISTEN for other replicas' commits; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(LISTEN_RETRY) => continue,
                    }
                }
            };
            listener.listen(COMMIT_CHANNEL).await?;
            // Whatever committed while we were not listening.
            on_commit.notify_one();
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    received = listener.try_recv() => match received {
                        Ok(Some(_)) => on_commit.notify_one(),
                        // The connection dropped; notifications may be lost, so wake once.
                        Ok(None) => on_commit.notify_one(),
                        Err(e) => {
                            tracing::warn!(error = %e, "LISTEN connection failed; reconnecting");
                            break;
                        }
                    },
                }
            }
        }
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

//! Postgres store, for several replicas sharing one database.

use super::{
    Appended, EventQuery, ResourceQuery, ResourceRow, Store, StoreError, StoreOptions, StoredEvent,
};
use crate::domain::event::NewEvent;
use async_trait::async_trait;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::Connection;

mod ops {
    super::super::sql::shared_ops!(sqlx::PgConnection);
}

/// The transaction-level advisory lock every append takes. Replicas append one at a time, so
/// sequence numbers become visible in order and a reader paging by `seq` never skips an event
/// that commits late with a smaller number.
const APPEND_LOCK_KEY: i64 = 0x6d6b_696f_7265_6c61; // "mkiorela"

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

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

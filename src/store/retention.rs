//! Retention: pruning event payloads, old event rows (the deduplication ledger) and finished
//! deliveries, a bounded window of rows per call so pruning never holds the writer for long.
//! Each call looks at the next `batch` rows in key order from a cursor and acts on the prefix
//! that is older than the cutoff, so it never scans the young end of a table.

/// What to prune.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prune {
    /// Clear `data` and `raw` of events received before the cutoff; the rows stay.
    Payloads,
    /// Delete events received before the cutoff (their `(source, id)` stops deduplicating).
    Events,
    /// Delete delivered and dead-lettered deliveries, and their attempts, last changed before
    /// the cutoff. Pending ones stay, however old.
    Deliveries,
}

/// One call's result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneStep {
    /// Rows changed or removed.
    pub removed: u64,
    /// Where the next call starts (exclusive).
    pub cursor: i64,
    /// Whether the whole window was older than the cutoff (call again).
    pub more: bool,
}

pub(super) const EVENT_WINDOW: &str =
    "SELECT seq, received_ms FROM events WHERE seq > $1 ORDER BY seq LIMIT $2";
pub(super) const CLEAR_PAYLOADS: &str = "UPDATE events SET data = NULL, raw = NULL \
     WHERE seq > $1 AND seq <= $2 AND (raw IS NOT NULL OR data IS NOT NULL)";
pub(super) const DELETE_EVENTS: &str = "DELETE FROM events WHERE seq > $1 AND seq <= $2";
pub(super) const DELIVERY_WINDOW: &str =
    "SELECT id, updated_ms FROM deliveries WHERE id > $1 ORDER BY id LIMIT $2";
pub(super) const DELETE_ATTEMPTS: &str = "DELETE FROM delivery_attempts WHERE delivery_id IN \
     (SELECT id FROM deliveries WHERE id > $1 AND id <= $2 AND state <> 'pending')";
pub(super) const DELETE_DELIVERIES: &str =
    "DELETE FROM deliveries WHERE id > $1 AND id <= $2 AND state <> 'pending'";

/// The last key of the window's prefix older than `before_ms`, and whether the whole window
/// was that old. `window` is `(key, time)` in key order.
pub(super) fn old_prefix(window: &[(i64, i64)], before_ms: i64) -> (Option<i64>, bool) {
    let old = window.iter().take_while(|(_, t)| *t < before_ms).count();
    let last = old.checked_sub(1).map(|i| window[i].0);
    (last, old == window.len() && !window.is_empty())
}

/// Defines `prune` for one backend's connection type; run it inside a transaction.
macro_rules! retention_ops {
    ($conn:ty) => {
        pub async fn prune(
            conn: &mut $conn,
            what: $crate::store::retention::Prune,
            cursor: i64,
            before_ms: i64,
            batch: i64,
        ) -> Result<$crate::store::retention::PruneStep, $crate::store::StoreError> {
            use $crate::store::retention::{self as r, Prune};
            let window_sql = match what {
                Prune::Payloads | Prune::Events => r::EVENT_WINDOW,
                Prune::Deliveries => r::DELIVERY_WINDOW,
            };
            let window: Vec<(i64, i64)> = sqlx::query_as(window_sql)
                .bind(cursor)
                .bind(batch)
                .fetch_all(&mut *conn)
                .await?;
            let (last, more) = r::old_prefix(&window, before_ms);
            let Some(last) = last else {
                return Ok(r::PruneStep {
                    removed: 0,
                    cursor,
                    more: false,
                });
            };
            let removed = match what {
                Prune::Payloads => sqlx::query(r::CLEAR_PAYLOADS)
                    .bind(cursor)
                    .bind(last)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected(),
                Prune::Events => sqlx::query(r::DELETE_EVENTS)
                    .bind(cursor)
                    .bind(last)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected(),
                Prune::Deliveries => {
                    sqlx::query(r::DELETE_ATTEMPTS)
                        .bind(cursor)
                        .bind(last)
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query(r::DELETE_DELIVERIES)
                        .bind(cursor)
                        .bind(last)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected()
                }
            };
            Ok(r::PruneStep {
                removed,
                cursor: last,
                more,
            })
        }
    };
}
pub(super) use retention_ops;

#[cfg(test)]
mod tests {
    use super::old_prefix;

    #[test]
    fn the_prefix_stops_at_the_first_young_row() {
        assert_eq!(old_prefix(&[], 10), (None, false));
        assert_eq!(old_prefix(&[(1, 5), (2, 6)], 10), (Some(2), true));
        assert_eq!(old_prefix(&[(1, 5), (2, 12), (3, 6)], 10), (Some(1), false));
        assert_eq!(old_prefix(&[(4, 11)], 10), (None, false));
    }
}

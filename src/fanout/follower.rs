//! A gap-free, duplicate-free cursor over the event log: it reads the store until it has caught
//! up, then follows the feed, and goes back to the store whenever it falls behind.

use super::feed::FeedHandle;
use crate::store::{EventQuery, Store, StoreError, StoredEvent};
use std::sync::Arc;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

pub struct Follower {
    store: Arc<dyn Store>,
    live: broadcast::Receiver<Arc<StoredEvent>>,
    query: EventQuery,
    catching_up: bool,
}

impl Follower {
    /// Follows events after `query.after` that match `query`'s filters, `query.limit` at a time.
    pub fn new(store: Arc<dyn Store>, feed: &FeedHandle, query: EventQuery) -> Self {
        // Subscribe before the first store read: anything that read misses arrives here.
        Self {
            store,
            live: feed.subscribe(),
            query,
            catching_up: true,
        }
    }

    /// The sequence number of the last event returned (or the starting point).
    pub fn position(&self) -> i64 {
        self.query.after
    }

    /// The next events, oldest first: at once when some are stored, otherwise as soon as one
    /// is published, or empty at `deadline`. An error means the store could not be read.
    pub async fn next(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Vec<Arc<StoredEvent>>, StoreError> {
        loop {
            if self.catching_up {
                let page = self.store.events(&self.query).await?;
                if let Some(last) = page.last() {
                    self.query.after = last.seq;
                    return Ok(page.into_iter().map(Arc::new).collect());
                }
                self.catching_up = false;
            }
            let received = match deadline {
                Some(at) => match tokio::time::timeout_at(at, self.live.recv()).await {
                    Ok(r) => r,
                    Err(_) => return Ok(Vec::new()),
                },
                None => self.live.recv().await,
            };
            let mut batch = Vec::new();
            match received {
                Ok(event) => self.take(event, &mut batch),
                Err(RecvError::Lagged(_)) => {
                    // Too slow for the feed's buffer: read what was missed from the store.
                    self.catching_up = true;
                    continue;
                }
                Err(RecvError::Closed) => return Ok(Vec::new()),
            }
            while batch.len() < self.query.limit as usize {
                match self.live.try_recv() {
                    Ok(event) => self.take(event, &mut batch),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {
                        self.catching_up = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
    }

    fn take(&mut self, event: Arc<StoredEvent>, batch: &mut Vec<Arc<StoredEvent>>) {
        if event.seq <= self.query.after {
            return;
        }
        // Every published event advances the cursor, matched or not, so a filtered follower
        // never re-reads what it has already passed.
        self.query.after = event.seq;
        if self.query.matches(&event) {
            batch.push(event);
        }
    }
}

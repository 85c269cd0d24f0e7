//! The feed: after each commit (this process's writer, or another replica's NOTIFY), reads the
//! new events from the store in sequence order and publishes them to followers and waiters.
//! One store read per commit per process, however many clients are listening.

use super::waiters::Waiters;
use crate::domain::resource::ResourceKind;
use crate::store::{EventQuery, Store, StoredEvent};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch, Notify};
use tokio_util::sync::CancellationToken;

/// Events read from the store per query while catching up.
const PAGE: u32 = 500;

/// A safety net: the feed looks at the store this often even without a wake-up (a NOTIFY can
/// be lost while a Postgres listener reconnects).
const SAFETY_TICK: Duration = Duration::from_secs(1);

/// What consumers hold to follow the feed.
#[derive(Clone)]
pub struct FeedHandle {
    events: broadcast::Sender<Arc<StoredEvent>>,
    head: watch::Receiver<i64>,
    pub waiters: Arc<Waiters>,
}

impl FeedHandle {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.events.subscribe()
    }

    /// The highest sequence number published so far.
    pub fn head(&self) -> watch::Receiver<i64> {
        self.head.clone()
    }
}

pub struct Feed {
    store: Arc<dyn Store>,
    events: broadcast::Sender<Arc<StoredEvent>>,
    head: watch::Sender<i64>,
    waiters: Arc<Waiters>,
}

impl Feed {
    /// A feed that publishes events after `start` (the log's head at start-up), keeping up to
    /// `capacity` events for followers that are briefly behind.
    pub fn new(store: Arc<dyn Store>, start: i64, capacity: usize) -> (Self, FeedHandle) {
        let (events, _) = broadcast::channel(capacity.max(16));
        let (head, head_rx) = watch::channel(start);
        let waiters = Arc::new(Waiters::default());
        let handle = FeedHandle {
            events: events.clone(),
            head: head_rx,
            waiters: waiters.clone(),
        };
        (
            Self {
                store,
                events,
                head,
                waiters,
            },
            handle,
        )
    }

    /// Publishes until `cancel`, waking on local commits, remote commits and a safety tick.
    pub async fn run(
        self,
        mut local: watch::Receiver<i64>,
        remote: Arc<Notify>,
        cancel: CancellationToken,
    ) {
        let mut top = None;
        loop {
            if let Err(err) = self.run_once(top).await {
                tracing::warn!(error = %err, "feed cannot read new events; will retry");
            }
            top = None;
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = local.changed() => if changed.is_err() {
                    // The writer has stopped: publish what it committed last, then stop.
                    let _ = self.run_once(None).await;
                    return;
                } else {
                    // This process's own commit: its sequence number is known without a read.
                    top = Some(*local.borrow_and_update());
                },
                () = remote.notified() => {}
                () = tokio::time::sleep(SAFETY_TICK) => {}
            }
        }
    }

    /// Publishes every committed event after the current head, in order. With nobody
    /// following or waiting it only moves the head: a follower that arrives later reads the
    /// store from its own position anyway. `known_top` is the end of the log when the caller
    /// knows it (a local commit); otherwise the store is asked.
    pub async fn run_once(&self, known_top: Option<i64>) -> Result<(), crate::store::StoreError> {
        // Read the log's end first, then look for listeners: one that arrives after the check
        // reads the store after this read, so it sees everything up to `top` itself, and
        // events after `top` are published normally since it is now listening.
        let top = match known_top {
            Some(top) => top,
            None => self.store.last_seq().await?,
        };
        if self.events.receiver_count() == 0 && self.waiters.is_empty() {
            self.head.send_if_modified(|head| {
                let newer = top > *head;
                *head = (*head).max(top);
                newer
            });
            return Ok(());
        }
        loop {
            let after = *self.head.borrow();
            let page = self
                .store
                .events(&EventQuery {
                    after,
                    limit: PAGE,
                    ..EventQuery::default()
                })
                .await?;
            let Some(last) = page.last().map(|e| e.seq) else {
                return Ok(());
            };
            let full = page.len() == PAGE as usize;
            for event in page {
                if event.applied {
                    let kind = event.resource_kind.parse().unwrap_or(ResourceKind::Unknown);
                    self.waiters.wake(kind, &event.project, &event.name);
                }
                // No receivers is fine: nobody is following right now.
                let _ = self.events.send(Arc::new(event));
            }
            self.head.send_replace(last);
            if !full {
                return Ok(());
            }
        }
    }
}

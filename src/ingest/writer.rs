//! The single writer: batches concurrently submitted events into one transaction (group commit)
//! and answers each submitter only after its batch has committed.

use crate::domain::event::{NewEvent, Origin};
use crate::metrics::WriterMetrics;
use crate::store::{Appended, Store, StoreError};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch, Notify};

/// Why a submission was not stored. Every variant means nothing was committed for it.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the write queue is full")]
    Busy,
    #[error("the writer has stopped")]
    Closed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Job {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<Appended>, SubmitError>>,
}

/// The submitting side of the writer; cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    jobs: mpsc::Sender<Job>,
    committed: watch::Receiver<i64>,
    queued: Arc<Notify>,
}

impl WriterHandle {
    /// Stores `events` atomically and returns their outcomes once committed. Never waits for
    /// queue space: when the queue is full it fails at once with [`SubmitError::Busy`].
    pub async fn submit(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, SubmitError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .try_send(Job { events, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SubmitError::Busy,
                mpsc::error::TrySendError::Closed(_) => SubmitError::Closed,
            })?;
        answer.await.map_err(|_| SubmitError::Closed)?
    }

    /// The highest sequence number committed so far; changes after every commit that stored
    /// something. Waiters subscribe here instead of polling the database.
    pub fn committed(&self) -> watch::Receiver<i64> {
        self.committed.clone()
    }

    /// Notified after each commit that queued outbound deliveries: what wakes the dispatcher
    /// (the other commits, most of them when no subscription matches, leave it asleep).
    pub fn queued(&self) -> Arc<Notify> {
        self.queued.clone()
    }

    /// Whether the writer task is still running.
    pub fn is_running(&self) -> bool {
        !self.jobs.is_closed()
    }
}

/// The writer task's side.
pub struct Writer {
    store: Arc<dyn Store>,
    jobs: mpsc::Receiver<Job>,
    committed: watch::Sender<i64>,
    queued: Arc<Notify>,
    max_batch_events: usize,
    metrics: WriterMetrics,
}

impl Writer {
    /// Creates a writer whose queue holds `capacity` submissions, starting from `last_seq`.
    pub fn new(
        store: Arc<dyn Store>,
        capacity: usize,
        max_batch_events: usize,
        last_seq: i64,
    ) -> (Self, WriterHandle) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (committed_tx, committed_rx) = watch::channel(last_seq);
        let queued = Arc::new(Notify::new());
        (
            Self {
                store,
                jobs: rx,
                committed: committed_tx,
                queued: queued.clone(),
                max_batch_events: max_batch_events.max(1),
                metrics: WriterMetrics::new(),
            },
            WriterHandle {
                jobs: tx,
                committed: committed_rx,
                queued,
            },
        )
    }

    /// Starts the writer and returns what completes when it has drained and stopped.
    ///
    /// With `own_thread` it runs on a thread of its own (a current-thread runtime): for a store
    /// whose append blocks its thread (SQLite, see `Store::append_blocks`). A Postgres
    /// connection's socket belongs to the runtime that opened it, so Postgres appends stay on
    /// the shared runtime.
    pub fn spawn(self, own_thread: bool) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
        let (done, stopped) = tokio::sync::oneshot::channel();
        if own_thread {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::thread::Builder::new()
                .name("mkio-writer".into())
                .spawn(move || {
                    runtime.block_on(self.run());
                    let _ = done.send(());
                })?;
        } else {
            tokio::spawn(async move {
                self.run().await;
                let _ = done.send(());
            });
        }
        Ok(stopped)
    }

    /// Commits batches until every handle is dropped and the queue is drained, so nothing that
    /// was accepted into the queue is abandoned at shutdown.
    pub async fn run(mut self) {
        while let Some(first) = self.jobs.recv().await {
            let mut jobs = vec![first];
            let mut count = jobs[0].events.len();
            // Everything that queued while the previous transaction ran joins this one.
            while count < self.max_batch_events {
                match self.jobs.try_recv() {
                    Ok(job) => {
                        count += job.events.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.run_once(jobs).await;
        }
    }

    /// Commits one batch and answers its submitters.
    async fn run_once(&mut self, mut jobs: Vec<Job>) {
        let sizes: Vec<usize> = jobs.iter().map(|j| j.events.len()).collect();
        let events: Vec<NewEvent> = jobs.iter_mut().flat_map(|j| j.events.drain(..)).collect();
        let started = std::time::Instant::now();
        let result = self.store.append(&events).await;
        self.metrics.batch(events.len(), started.elapsed());
        tracing::debug!(
            events = events.len(),
            submissions = jobs.len(),
            micros = started.elapsed().as_micros() as u64,
            "batch committed"
        );
        match result {
            Ok(outcomes) => {
                self.publish(&outcomes);
                self.observe(&events, &outcomes);
                let mut rest = outcomes.into_iter();
                for (job, size) in jobs.into_iter().zip(sizes) {
                    let _ = job.reply.send(Ok(rest.by_ref().take(size).collect()));
                }
            }
            Err(err) if jobs.len() == 1 => {
                tracing::error!(error = %err, events = events.len(), "append failed");
                let _ = jobs.remove(0).reply.send(Err(err.into()));
            }
            Err(err) => {
                // One submission may be what the database refuses: retry each on its own, so
                // the others still commit and only the bad one is answered with an error.
                tracing::warn!(error = %err, submissions = jobs.len(), "batch append failed; retrying one by one");
                let mut events = events.into_iter();
                for (job, size) in jobs.into_iter().zip(sizes) {
                    let own: Vec<NewEvent> = events.by_ref().take(size).collect();
                    let result = self.store.append(&own).await;
                    match &result {
                        Ok(outcomes) => {
                            self.publish(outcomes);
                            self.observe(&own, outcomes);
                        }
                        Err(err) => {
                            tracing::error!(error = %err, events = own.len(), "append failed")
                        }
                    }
                    let _ = job.reply.send(result.map_err(Into::into));
                }
            }
        }
    }

    /// Counts committed events by type and notes each project's latest webhook.
    fn observe(&mut self, events: &[NewEvent], outcomes: &[Appended]) {
        for (event, outcome) in events.iter().zip(outcomes) {
            if matches!(outcome, Appended::Stored { .. }) {
                self.metrics.stored(&event.event_type);
            }
            if event.origin == Origin::Webhook {
                self.metrics.webhook(&event.key.project, event.received_ms);
            }
        }
    }

    fn publish(&self, outcomes: &[Appended]) {
        if outcomes
            .iter()
            .any(|o| matches!(o, Appended::Stored { queued: true, .. }))
        {
            self.queued.notify_one();
        }
        let top = outcomes
            .iter()
            .filter_map(|o| match o {
                Appended::Stored { seq, .. } => Some(*seq),
                Appended::Duplicate => None,
            })
            .max();
        if let Some(top) = top {
            self.committed.send_if_modified(|cur| {
                let newer = top > *cur;
                if newer {
                    *cur = top;
                }
                newer
            });
        }
    }
}

//! Retention as a worker: every `retention.interval`, prunes event payloads, old event rows
//! and finished deliveries in small steps (see `store::retention`), each kind from where its
//! last step stopped.

use crate::config::RetentionConfig;
use crate::domain::time::now_ms;
use crate::store::retention::Prune;
use crate::store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Longest a round keeps stepping before it yields until the next interval.
const ROUND_BUDGET: Duration = Duration::from_secs(2);

/// The cutoff age of each kind; zero keeps it forever.
fn ages(config: &RetentionConfig) -> [(Prune, Duration); 3] {
    [
        (Prune::Payloads, config.payloads),
        (Prune::Events, config.dedupe),
        (Prune::Deliveries, config.deliveries),
    ]
}

pub struct Retention {
    store: Arc<dyn Store>,
    config: RetentionConfig,
    /// Per kind, where the next step starts.
    cursors: [i64; 3],
}

impl Retention {
    pub fn new(store: Arc<dyn Store>, config: RetentionConfig) -> Self {
        Self {
            store,
            config,
            cursors: [0; 3],
        }
    }

    /// One round: steps each kind until it is done or the round's budget is spent. Returns the
    /// rows pruned per kind.
    pub async fn run_once(&mut self) -> [u64; 3] {
        let started = Instant::now();
        let mut removed = [0u64; 3];
        for (i, (what, age)) in ages(&self.config).into_iter().enumerate() {
            if age.is_zero() {
                continue;
            }
            let before = now_ms() - age.as_millis() as i64;
            loop {
                let step = match self
                    .store
                    .prune(
                        what,
                        self.cursors[i],
                        before,
                        i64::from(self.config.batch_size),
                    )
                    .await
                {
                    Ok(step) => step,
                    Err(e) => {
                        tracing::warn!(error = %e, ?what, "retention step failed; will retry");
                        break;
                    }
                };
                self.cursors[i] = step.cursor;
                removed[i] += step.removed;
                if !step.more || started.elapsed() > ROUND_BUDGET {
                    break;
                }
            }
        }
        if removed.iter().any(|n| *n > 0) {
            tracing::info!(
                payloads = removed[0],
                events = removed[1],
                deliveries = removed[2],
                "retention pruned old rows"
            );
        }
        removed
    }

    /// Runs rounds every `retention.interval` until `cancel`.
    pub async fn run(mut self, cancel: CancellationToken) {
        if ages(&self.config).iter().all(|(_, age)| age.is_zero()) {
            return;
        }
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.config.interval) => {}
            }
            self.run_once().await;
        }
    }
}

//! Polling MK.IO for what webhooks do not cover, within the request budget: one loop per
//! managed project, run by whichever replica holds that project's lease. Each loop discovers
//! the configured kinds, checks jobs that stayed non-terminal too long, reconciles the webhook
//! rule's failed deliveries, and polls due watches at adaptive intervals. A polled change goes
//! through the same writer as a webhook, so it reaches the log, state, stream and subscribers.

mod discover;
mod repair;
pub mod source;

pub use discover::DISCOVERABLE;

use crate::config::PollConfig;
use crate::domain::polled::{
    jittered, kind_of, next_interval, polled_event, watch_ends, Intervals, Pace,
};
use crate::domain::resource::{parse_source, ResourceKind};
use crate::domain::time::now_ms;
use crate::ingest::writer::WriterHandle;
use crate::store::watches::{PollRecord, WatchRow};
use crate::store::{ResourceQuery, Store};
use futures_util::StreamExt;
use serde_json::json;
use source::{MkioSource, PollError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// Polls in flight at once per project; the budget paces them anyway.
const CONCURRENCY: usize = 4;
/// Due watches read per round.
const ROUND: i64 = 32;

/// The managed projects, each with the signal that wakes its loop when a watch is added.
#[derive(Default)]
pub struct Projects(HashMap<String, Notify>);

impl Projects {
    pub fn new(names: &[String]) -> Self {
        Self(names.iter().map(|n| (n.clone(), Notify::new())).collect())
    }

    pub fn contains(&self, project: &str) -> bool {
        self.0.contains_key(project)
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.0.keys().cloned().collect();
        names.sort();
        names
    }

    /// Wakes `project`'s loop (a permit is kept if it is busy, so nothing is missed).
    pub fn wake(&self, project: &str) {
        if let Some(n) = self.0.get(project) {
            n.notify_one();
        }
    }

    async fn woken(&self, project: &str) {
        match self.0.get(project) {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    }
}

pub struct Poller {
    store: Arc<dyn Store>,
    mkio: Arc<dyn MkioSource>,
    writer: WriterHandle,
    config: PollConfig,
    rule_name: String,
    /// This process, as a lease holder.
    holder: String,
    /// The managed projects; the API wakes a project's loop when it adds a watch.
    projects: Arc<Projects>,
}

impl Poller {
    pub fn new(
        store: Arc<dyn Store>,
        mkio: Arc<dyn MkioSource>,
        writer: WriterHandle,
        config: PollConfig,
        rule_name: String,
        projects: Arc<Projects>,
    ) -> Self {
        use rand::Rng;
        let holder = format!(
            "{}-{}-{:08x}",
            hostname(),
            std::process::id(),
            rand::thread_rng().gen::<u32>()
        );
        Self {
            store,
            mkio,
            writer,
            config,
            rule_name,
            holder,
            projects,
        }
    }

    fn intervals(&self) -> Intervals {
        Intervals {
            fast: self.config.fast_interval,
            slow: self.config.slow_interval,
            job_max: self.config.job_max_interval,
        }
    }

    /// Runs one loop per managed project until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let tasks: Vec<_> = self
            .projects
            .names()
            .into_iter()
            .map(|p| tokio::spawn(self.clone().run_project(p, cancel.clone())))
            .collect();
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a poll loop panicked");
            }
        }
    }

    async fn run_project(self: Arc<Self>, project: String, cancel: CancellationToken) {
        let (held_tx, mut held) = watch::channel(false);
        let lease = tokio::spawn(
            self.clone()
                .keep_lease(project.clone(), held_tx, cancel.clone()),
        );
        let mut chores = repair::Chores::new(&self.config);
        // A round may wait long for the budget (a scope paused by backoff): shutdown drops it.
        // Nothing is lost: a poll is a GET, and an unrecorded one is simply made again.
        while !cancel.is_cancelled() {
            if !*held.borrow() {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    r = held.changed() => if r.is_err() { break } else { continue },
                }
            }
            let next_chore = tokio::select! {
                () = cancel.cancelled() => break,
                next = chores.run_due(&self, &project) => next,
            };
            let round = tokio::select! {
                () = cancel.cancelled() => break,
                round = self.poll_due(&project) => round,
            };
            let next_watch = match round {
                Ok(true) => continue, // a full round: there may be more due now
                Ok(false) => self.store.next_watch_due(&project).await.ok().flatten(),
                Err(e) => {
                    tracing::warn!(project, error = %e, "cannot read due watches");
                    Some(now_ms() + 1_000)
                }
            };
            let until = next_watch.map_or(next_chore, |w| w.min(next_chore));
            let sleep = Duration::from_millis((until - now_ms()).clamp(0, 60_000) as u64);
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(sleep) => {}
                () = self.projects.woken(&project) => {}
                _ = held.changed() => {}
            }
        }
        let _ = lease.await;
    }

    /// Takes and renews `poll:{project}` every third of its time to live; another replica takes
    /// over within `lease_ttl` when this one dies.
    async fn keep_lease(
        self: Arc<Self>,
        project: String,
        held: watch::Sender<bool>,
        cancel: CancellationToken,
    ) {
        let name = format!("poll:{project}");
        let ttl = self.config.lease_ttl.as_millis() as i64;
        loop {
            let got = match self
                .store
                .take_lease(&name, &self.holder, now_ms(), ttl)
                .await
            {
                Ok(got) => got,
                Err(e) => {
                    tracing::warn!(project, error = %e, "cannot renew the poll lease");
                    false
                }
            };
            if got != *held.borrow() {
                if got {
                    tracing::info!(project, holder = %self.holder, "polling this project");
                } else {
                    tracing::info!(project, "another replica polls this project");
                }
                held.send_replace(got);
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(self.config.lease_ttl / 3) => {}
            }
        }
        if *held.borrow() {
            let _ = self.store.release_lease(&name, &self.holder).await;
        }
    }

    /// Polls the watches due now; true when a whole round was due (look again at once).
    async fn poll_due(&self, project: &str) -> Result<bool, crate::store::StoreError> {
        let due = self.store.due_watches(project, now_ms(), ROUND).await?;
        let full = due.len() as i64 == ROUND;
        futures_util::stream::iter(due)
            .for_each_concurrent(CONCURRENCY, |w| self.poll_one(w))
            .await;
        Ok(full)
    }

    /// Polls one watch, records a change as an event, and schedules the next poll.
    pub async fn poll_one(&self, w: WatchRow) {
        let kind = kind_of(&w.path);
        let started = now_ms();
        let previous = Duration::from_millis(w.interval_ms.max(0) as u64);
        let record = match self.mkio.state(&w.path).await {
            Ok(state) => match self.observe(&w.path, kind, &state, started).await {
                Ok(()) => {
                    let ends = w.source == "reconcile"
                        || watch_ends(kind, w.until_states.as_deref(), &state);
                    let pace = if w.source == "safety_net" {
                        Pace::SafetyNet
                    } else if w.until_states.is_some() {
                        Pace::Expecting
                    } else {
                        Pace::Adaptive
                    };
                    let interval = next_interval(&state, pace, previous, &self.intervals());
                    PollRecord {
                        status: if ends { "done" } else { "active" }.into(),
                        last_state: Some(state),
                        interval_ms: interval.as_millis() as i64,
                        next_poll_ms: now_ms() + jittered(interval).as_millis() as i64,
                        polled_ms: started,
                        error: None,
                    }
                }
                Err(e) => self.retry_record(&w, started, e),
            },
            Err(PollError::NotFound) => PollRecord {
                status: "gone".into(),
                last_state: w.last_state.clone(),
                interval_ms: w.interval_ms,
                next_poll_ms: i64::MAX,
                polled_ms: started,
                error: Some(PollError::NotFound.to_string()),
            },
            Err(PollError::Failed(e)) => self.retry_record(&w, started, e),
        };
        if let Err(e) = self.store.record_poll(&w.id, &record).await {
            tracing::warn!(watch = %w.id, error = %e, "cannot record a poll");
        }
    }

    fn retry_record(&self, w: &WatchRow, started: i64, error: String) -> PollRecord {
        tracing::debug!(watch = %w.id, path = %w.path, %error, "poll failed; trying again later");
        PollRecord {
            status: "active".into(),
            last_state: w.last_state.clone(),
            interval_ms: w.interval_ms,
            next_poll_ms: now_ms() + jittered(self.config.fast_interval).as_millis() as i64,
            polled_ms: started,
            error: Some(error),
        }
    }

    /// Records `state`, seen at `observed_ms`, unless the store already holds it as the
    /// resource's current state (a webhook or an earlier poll reported it: no second event).
    pub async fn observe(
        &self,
        path: &str,
        kind: ResourceKind,
        state: &str,
        observed_ms: i64,
    ) -> Result<(), String> {
        let key = parse_source(path).key;
        let rows = self
            .store
            .resources(&ResourceQuery {
                kind: Some(key.kind),
                project: Some(key.project.clone()),
                parent: Some(key.parent.clone()),
                name: Some(key.name.clone()),
                limit: 1,
                ..ResourceQuery::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let current = rows.first().map(|r| r.state.as_str());
        if current == Some(state) {
            return Ok(());
        }
        // A job that ended: its /state lacks outputs and errors, so fetch the whole job.
        let resource = if kind == ResourceKind::Job && watch_ends(kind, None, state) {
            match self.mkio.get(path).await {
                Ok(full) => full,
                Err(_) => json!({"status": {"state": state}}),
            }
        } else {
            json!({"status": {"state": state}})
        };
        let event = polled_event(path, state, current, resource, observed_ms, now_ms());
        self.writer
            .submit(vec![event])
            .await
            .map_err(|e| format!("cannot store the polled state: {e}"))?;
        tracing::info!(path, state, previous = ?current, "state change found by polling");
        Ok(())
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "relay".to_owned())
}

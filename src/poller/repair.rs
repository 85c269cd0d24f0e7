//! The chores beside polling watches, each on its own period: discovery, the safety net for
//! jobs whose webhooks never came, and reconciliation of the webhook rule's failed deliveries.

use super::Poller;
use crate::config::PollConfig;
use crate::domain::resource::{parse_source, ResourceKind};
use crate::domain::time::now_ms;
use crate::store::watches::{OnExisting, WatchRow};
use std::collections::HashSet;
use std::time::Duration;

/// Stale jobs taken per safety-net pass.
const STALE_BATCH: i64 = 200;

pub(super) struct Chores {
    next_discovery: i64,
    next_safety_net: i64,
    next_reconcile: i64,
    safety_net_period: i64,
    /// History entries already acted on (created, source, status).
    reconciled: HashSet<(String, String, String)>,
    /// Projects whose missing rule was reported (once each).
    rule_missing_reported: HashSet<String>,
}

impl Chores {
    pub fn new(config: &PollConfig) -> Self {
        let now = now_ms();
        let period = (config.job_safety_net_age / 4).min(Duration::from_secs(60));
        Self {
            next_discovery: now,
            next_safety_net: now,
            next_reconcile: now,
            safety_net_period: period.as_millis().max(100) as i64,
            reconciled: HashSet::new(),
            rule_missing_reported: HashSet::new(),
        }
    }

    /// Runs the chores that are due; returns when the next one is.
    pub async fn run_due(&mut self, poller: &Poller, project: &str) -> i64 {
        let now = now_ms();
        if now >= self.next_discovery {
            poller.discover(project).await;
            self.next_discovery = now_ms() + poller.config.discovery_interval.as_millis() as i64;
        }
        if now >= self.next_safety_net {
            self.safety_net(poller, project).await;
            self.next_safety_net = now_ms() + self.safety_net_period;
        }
        if now >= self.next_reconcile {
            self.reconcile(poller, project).await;
            self.next_reconcile = now_ms() + poller.config.reconcile_interval.as_millis() as i64;
        }
        self.next_discovery
            .min(self.next_safety_net)
            .min(self.next_reconcile)
    }

    /// Watches jobs of `project` that have had no event for `job_safety_net_age` and no
    /// terminal state: their JobFinished webhook may be lost.
    async fn safety_net(&self, poller: &Poller, project: &str) {
        let cutoff = now_ms() - poller.config.job_safety_net_age.as_millis() as i64;
        let stale = match poller.store.stale_jobs(project, cutoff, STALE_BATCH).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read stale jobs");
                return;
            }
        };
        for job in &stale {
            let path = format!(
                "/api/v1/projects/{}/media/transforms/{}/jobs/{}",
                job.project, job.parent, job.name
            );
            tracing::info!(%path, state = %job.state, "job has stayed non-terminal; checking it");
            add(poller, project, path, "safety_net", OnExisting::Keep, 0).await;
        }
    }

    /// Reads the rule's delivery history; each Failed or Retrying delivery's resource is
    /// fetched again (the history has no payload to replay).
    async fn reconcile(&mut self, poller: &Poller, project: &str) {
        let records = match poller.mkio.deliveries(project).await {
            Ok(records) => records,
            Err(super::source::PollError::NotFound) => {
                if self.rule_missing_reported.insert(project.to_owned()) {
                    tracing::warn!(project, rule = %poller.rule_name,
                        "the webhook rule does not exist in this project, so MK.IO sends no \
                         webhooks here; run `mkio-relay rules apply`");
                }
                return;
            }
            Err(e) => {
                tracing::warn!(project, rule = %poller.rule_name, error = %e,
                    "cannot read the webhook rule's delivery history");
                return;
            }
        };
        for r in records {
            if r.status != "Failed" && r.status != "Retrying" {
                continue;
            }
            let key = (r.created.clone(), r.source.clone(), r.status.clone());
            if !self.reconciled.insert(key) {
                continue;
            }
            let parsed = parse_source(&r.source);
            if parsed.key.kind == ResourceKind::Unknown || parsed.key.project != project {
                continue;
            }
            tracing::info!(source = %r.source, status = %r.status, event_type = %r.event_type,
                "MK.IO could not deliver a webhook; fetching the resource");
            add(
                poller,
                project,
                parsed.canonical,
                "reconcile",
                OnExisting::ReviveInactive,
                0,
            )
            .await;
        }
    }
}

/// Adds a watch due `delay_ms` from now.
async fn add(
    poller: &Poller,
    project: &str,
    path: String,
    source: &str,
    on_existing: OnExisting,
    delay_ms: i64,
) {
    let watch = WatchRow::new(
        path,
        project.to_owned(),
        source,
        None,
        0,
        now_ms() + delay_ms,
    );
    match poller.store.add_watch(&watch, on_existing).await {
        Ok(_) => poller.projects.wake(project),
        Err(e) => tracing::warn!(path = %watch.path, error = %e, "cannot store a watch"),
    }
}

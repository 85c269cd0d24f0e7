//! The state engine: creates resources, applies state changes (timed or forced), schedules the
//! next timed transition, and hands reportable changes to webhook delivery.

use super::deliver::{self, Emission};
use super::error::ApiError;
use super::kinds::{Kind, Outcome, Timing};
use super::paths::{self, ItemRef};
use super::render::render;
use super::world::Resource;
use super::{ids, lock, Shared, SimStats};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

impl Shared {
    pub fn stats(&self) -> SimStats {
        SimStats {
            scopes: lock(&self.limiter).stats(),
            webhooks: lock(&self.webhook_stats).clone(),
        }
    }

    pub fn add_drops(&self, n: usize) {
        self.drops.fetch_add(n, Ordering::SeqCst);
    }

    /// The fault in force now, clearing it once it has expired.
    pub fn active_fault(&self) -> Option<super::Fault> {
        let mut f = lock(&self.fault);
        if f.as_ref()
            .and_then(|f| f.until)
            .is_some_and(|u| u <= Instant::now())
        {
            *f = None;
        }
        f.clone()
    }

    fn delay(&self, t: Timing) -> Duration {
        match t {
            Timing::Queued => self.config.job_queued_for,
            Timing::Processing => self.config.job_processing_for,
            Timing::Live => self.config.live_transition,
        }
    }

    /// `set_state`: any path spelling, any state string.
    pub fn force_state(self: &Arc<Self>, path: &str, state: &str) -> bool {
        self.apply(&paths::canonical(path), state, None)
    }

    /// Moves a resource to `to`. With `expect`, only if nothing changed it since the timer was
    /// set. Emits the webhook MK.IO would send and schedules the next timed step.
    pub fn apply(self: &Arc<Self>, path: &str, to: &str, expect: Option<u64>) -> bool {
        let now = SystemTime::now();
        let (emission, next) = {
            let mut w = lock(&self.world);
            match w.resources.get(path) {
                Some(r) if expect.is_none_or(|g| g == r.generation) => {}
                _ => return false,
            }
            let Some(from) = w.set_state(path, to, now) else {
                return false;
            };
            let r = &w.resources[path];
            (self.emission(r, &from, now), self.next_step(r))
        };
        if let Some(e) = emission {
            deliver::dispatch(self, e);
        }
        if let Some((delay, to, generation)) = next {
            self.schedule(path.to_string(), generation, delay, to);
        }
        true
    }

    fn emission(&self, r: &Resource, from: &str, at: SystemTime) -> Option<Emission> {
        let ty = r.kind().event_type(from, &r.state)?;
        Some(Emission {
            event_type: ty,
            project: r.item.project.clone(),
            source: paths::event_source(&r.item),
            from: from.to_string(),
            to: r.state.clone(),
            resource: render(r, self.config.job_processing_for, true),
            at,
        })
    }

    fn next_step(&self, r: &Resource) -> Option<(Duration, &'static str, u64)> {
        let (timing, to) = r.kind().follow_up(&r.state, r.fail)?;
        Some((self.delay(timing), to, r.generation))
    }

    fn schedule(
        self: &Arc<Self>,
        path: String,
        generation: u64,
        delay: Duration,
        to: &'static str,
    ) {
        let sh = self.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = sh.cancel.cancelled() => {}
                _ = tokio::time::sleep(delay) => {
                    sh.apply(&path, to, Some(generation));
                }
            }
        });
    }

    /// PUT: creates the resource (true) or replaces its client-given fields (false).
    pub fn put(self: &Arc<Self>, item: ItemRef, body: Value) -> Result<bool, ApiError> {
        let labels = labels_of(&body)?;
        let desired = match item.kind {
            Kind::Live(_) => Some(desired_state(&body)?.unwrap_or("Stopped").to_string()),
            _ => None,
        };
        let now = SystemTime::now();
        let path = item.path.clone();
        let created = {
            let mut w = lock(&self.world);
            if item.kind == Kind::LiveOutput {
                let parent = path.rsplitn(3, '/').nth(2).unwrap_or_default();
                if !w.resources.contains_key(parent) {
                    return Err(ApiError::not_found(format!(
                        "live event {parent} does not exist"
                    )));
                }
            }
            if let Some(r) = w.resources.get_mut(&path) {
                r.body = body;
                r.labels = labels;
                r.modified = now;
                false
            } else {
                let fail = item.kind == Kind::Job
                    && body
                        .pointer("/properties/description")
                        .and_then(Value::as_str)
                        .is_some_and(|d| d.eq_ignore_ascii_case("fail"));
                let resource = Resource {
                    id: ids::uuid_v4(),
                    state: String::new(),
                    item,
                    body,
                    labels,
                    generation: 0,
                    created: now,
                    modified: now,
                    started: None,
                    ended: None,
                    processing_since: None,
                    fail,
                };
                let initial = resource.kind().initial_state();
                w.resources.insert(path.clone(), resource);
                w.set_state(&path, initial, now);
                let next = self.next_step(&w.resources[&path]);
                drop(w);
                if let Some((delay, to, generation)) = next {
                    self.schedule(path.clone(), generation, delay, to);
                }
                true
            }
        };
        if let Some(desired) = desired {
            self.desire(&path, &desired)?;
        }
        Ok(created)
    }

    /// A Live API `spec.state` change.
    pub fn desire(self: &Arc<Self>, path: &str, desired: &str) -> Result<(), ApiError> {
        let (kind, state) = self.kind_and_state(path)?;
        match kind.desire(desired, &state) {
            Outcome::Move(to) => {
                self.apply(path, to, None);
                Ok(())
            }
            Outcome::NoOp => Ok(()),
            _ => Err(ApiError::bad_request(format!(
                "spec.state must be Running or Stopped, not {desired}"
            ))),
        }
    }

    /// A POST action such as `start` or `cancelJob`.
    pub fn act(self: &Arc<Self>, path: &str, action: &str) -> Result<(), ApiError> {
        let (kind, state) = self.kind_and_state(path)?;
        match kind.action(action, &state) {
            Outcome::Move(to) => {
                self.apply(path, to, None);
                Ok(())
            }
            Outcome::NoOp => Ok(()),
            Outcome::Conflict => Err(ApiError::conflict(format!(
                "cannot {action} while the resource is {state}"
            ))),
            Outcome::Unknown => Err(ApiError::not_found(format!("no action {action} here"))),
        }
    }

    fn kind_and_state(&self, path: &str) -> Result<(Kind, String), ApiError> {
        let w = lock(&self.world);
        let r = w
            .resources
            .get(path)
            .ok_or_else(|| ApiError::not_found(format!("{path} does not exist")))?;
        Ok((r.kind(), r.state.clone()))
    }
}

/// A Live API body's `spec.state`, checked before anything is stored.
fn desired_state(body: &Value) -> Result<Option<&str>, ApiError> {
    match body.pointer("/spec/state") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "Running" || s == "Stopped" => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(
            "spec.state must be Running or Stopped",
        )),
    }
}

/// Labels from `labels`, `tags` or `metadata.labels`: string-to-string maps.
fn labels_of(body: &Value) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for ptr in ["/labels", "/tags", "/metadata/labels"] {
        match body.pointer(ptr) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let v = v.as_str().ok_or_else(|| {
                        ApiError::bad_request(format!("label {k} must have a string value"))
                    })?;
                    out.insert(k.clone(), v.to_string());
                }
            }
            Some(_) => return Err(ApiError::bad_request(format!("{ptr} must be an object"))),
        }
    }
    Ok(out)
}

//! Per-resource wake-ups: a waiter on one resource is woken only by events about it.

use crate::domain::resource::ResourceKind;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Notify;

/// Waiters are keyed without the parent: `/v1/resources/{kind}/{project}/{name}` may not name
/// it, and a spurious wake-up only costs one re-check.
type WaitKey = (ResourceKind, String, String);

/// How many registrations between sweeps of entries whose waiters have all gone.
const SWEEP_EVERY: usize = 1024;

#[derive(Default)]
pub struct Waiters {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_key: HashMap<WaitKey, Weak<Notify>>,
    since_sweep: usize,
}

impl Waiters {
    /// The `Notify` that fires when an event about this resource is published. Keep the `Arc`
    /// for as long as the wait lasts.
    pub fn register(&self, kind: ResourceKind, project: &str, name: &str) -> Arc<Notify> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.since_sweep += 1;
        if inner.since_sweep >= SWEEP_EVERY {
            inner.since_sweep = 0;
            inner.by_key.retain(|_, w| w.strong_count() > 0);
        }
        let key = (kind, project.to_owned(), name.to_owned());
        if let Some(existing) = inner.by_key.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        let notify = Arc::new(Notify::new());
        inner.by_key.insert(key, Arc::downgrade(&notify));
        notify
    }

    /// Wakes everyone waiting on this resource.
    pub fn wake(&self, kind: ResourceKind, project: &str, name: &str) {
        let key = (kind, project.to_owned(), name.to_owned());
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let found = inner.by_key.get(&key).and_then(Weak::upgrade);
        drop(inner);
        if let Some(notify) = found {
            notify.notify_waiters();
        }
    }

    /// Whether nobody waits at all (stops at the first live waiter).
    pub fn is_empty(&self) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        !inner.by_key.values().any(|w| w.strong_count() > 0)
    }
}

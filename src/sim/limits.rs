//! Rate limits (MKIO.md E.3) per scope and class over a sliding 60-second window, and the
//! request statistics that tests and benchmarks read back.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The sliding window MK.IO's per-minute limits are counted over.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// GET (and HEAD) versus POST, PUT, PATCH and DELETE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Class {
    Get,
    Write,
}

/// Counters for one scope and class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassStats {
    /// Every request received, 429s and 401s included.
    pub total: u64,
    /// Requests by the status they were answered with.
    pub by_status: BTreeMap<u16, u64>,
    /// Requests answered 429 by the rate limiter (not injected faults).
    pub rate_limited: u64,
    /// The most requests received in any 60 s window (exact, sliding; 429s included).
    pub max_in_any_60s_window: u64,
}

/// Counters for one scope: a project name, or `organization`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeStats {
    pub get: ClassStats,
    pub write: ClassStats,
}

/// Webhook delivery counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookStats {
    /// HTTP attempts made (a retried delivery counts once per attempt).
    pub attempted: u64,
    /// Deliveries that got a 2xx (history `Sent`).
    pub succeeded: u64,
    /// Deliveries that ran out of retries (history `Failed`), dropped ones excluded.
    pub failed: u64,
    /// Deliveries never sent because of `drop_webhooks` (history `Failed` too).
    pub dropped: u64,
}

/// What `SimHandle::stats` and `GET /_sim/stats` return.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    pub scopes: BTreeMap<String, ScopeStats>,
    pub webhooks: WebhookStats,
}

#[derive(Debug, Default)]
struct Window {
    /// Arrivals in the last 60 s, for the max-window statistic.
    all: VecDeque<Instant>,
    /// Admitted requests in the last 60 s, which is what the limit counts.
    admitted: VecDeque<Instant>,
}

fn trim(q: &mut VecDeque<Instant>, now: Instant) {
    while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
        q.pop_front();
    }
}

/// The limiter and the statistics, updated together under one lock.
#[derive(Debug)]
pub(crate) struct Limiter {
    get_limit: u32,
    write_limit: u32,
    windows: HashMap<(String, Class), Window>,
    stats: BTreeMap<String, ScopeStats>,
}

impl Limiter {
    pub fn new(get_limit: u32, write_limit: u32) -> Self {
        Self {
            get_limit,
            write_limit,
            windows: HashMap::new(),
            stats: BTreeMap::new(),
        }
    }

    fn class_stats(&mut self, scope: &str, class: Class) -> &mut ClassStats {
        let s = self.stats.entry(scope.to_string()).or_default();
        match class {
            Class::Get => &mut s.get,
            Class::Write => &mut s.write,
        }
    }

    /// Records a request's arrival (every request, whatever its answer).
    pub fn arrive(&mut self, scope: &str, class: Class, now: Instant) {
        let w = self.windows.entry((scope.to_string(), class)).or_default();
        trim(&mut w.all, now);
        w.all.push_back(now);
        let in_window = w.all.len() as u64;
        let s = self.class_stats(scope, class);
        s.total += 1;
        s.max_in_any_60s_window = s.max_in_any_60s_window.max(in_window);
    }

    /// Whether the request is within the limit; a refused one does not use up budget.
    pub fn admit(&mut self, scope: &str, class: Class, now: Instant) -> bool {
        let limit = match class {
            Class::Get => self.get_limit,
            Class::Write => self.write_limit,
        } as usize;
        let w = self.windows.entry((scope.to_string(), class)).or_default();
        trim(&mut w.admitted, now);
        if w.admitted.len() >= limit {
            self.class_stats(scope, class).rate_limited += 1;
            return false;
        }
        w.admitted.push_back(now);
        true
    }

    /// Records the status a request was answered with.
    pub fn finish(&mut self, scope: &str, class: Class, status: u16) {
        *self
            .class_stats(scope, class)
            .by_status
            .entry(status)
            .or_default() += 1;
    }

    pub fn stats(&self) -> BTreeMap<String, ScopeStats> {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_scope_and_class_and_refusals_do_not_use_budget() {
        let mut l = Limiter::new(2, 1);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.arrive("p", Class::Get, t0);
        }
        assert!(l.admit("p", Class::Get, t0));
        assert!(l.admit("p", Class::Get, t0));
        assert!(!l.admit("p", Class::Get, t0));
        assert!(
            l.admit("q", Class::Get, t0),
            "another scope has its own budget"
        );
        assert!(
            l.admit("p", Class::Write, t0),
            "writes have their own budget"
        );
        assert!(!l.admit("p", Class::Write, t0 + Duration::from_secs(59)));
        assert!(l.admit("p", Class::Write, t0 + WINDOW), "the window slides");
        let s = &l.stats()["p"];
        assert_eq!(
            (s.get.total, s.get.rate_limited, s.get.max_in_any_60s_window),
            (3, 1, 3)
        );
        l.arrive("p", Class::Get, t0 + WINDOW);
        assert_eq!(l.stats()["p"].get.max_in_any_60s_window, 3);
    }
}

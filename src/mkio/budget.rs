//! The per-scope request budget: a sliding-window limit with even spacing per (scope, class),
//! and a backoff pause per scope after throttling, server errors and timeouts.
//!
//! MK.IO counts requests per project on `/api/v1/projects/{p}/` paths and per organization
//! otherwise, with separate limits for GET and for writes (MKIO.md E.3). For each
//! (scope, class) the budget keeps the times of the last `limit` grants, so no window
//! `[t, t + 60s)` ever holds more than `limit` grants, and it spaces grants at least
//! `60s / limit` apart, so a crowd of callers never bursts. The pure logic takes the time as a
//! parameter (`*_at` methods); [`Budget::acquire`] only adds waiting.

use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The window MK.IO's limits are counted over.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The first backoff step; it doubles with each consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);

/// What MK.IO counts a request against.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Project(String),
    Organization,
}

impl fmt::Display for Scope {
    /// The metric label: the project name, or `organization`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Project(p) => f.write_str(p),
            Scope::Organization => f.write_str("organization"),
        }
    }
}

/// The scope of a request path (a query string or an absolute URL is allowed).
pub fn scope_of(path: &str) -> Scope {
    const PREFIX: &str = "/api/v1/projects/";
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if let Some(at) = path.find(PREFIX) {
        if let Some((project, _)) = path[at + PREFIX.len()..].split_once('/') {
            if !project.is_empty() {
                return Scope::Project(project.to_owned());
            }
        }
    }
    Scope::Organization
}

/// GET requests and writes have separate limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Read,
    Write,
}

impl Class {
    pub fn of_method(method: &str) -> Self {
        if method.eq_ignore_ascii_case("GET") {
            Class::Read
        } else {
            Class::Write
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
        }
    }
}

/// How a request went, as far as the budget cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Throttled { retry_after: Option<Duration> },
    ServerError { retry_after: Option<Duration> },
    Timeout,
}

/// The grants of one (scope, class) and its FIFO queue of waiting callers.
#[derive(Debug)]
struct Window {
    grants: VecDeque<Instant>,
    queue: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Default)]
struct ScopeState {
    windows: HashMap<Class, Window>,
    failures: u32,
    paused_until: Option<Instant>,
}

#[derive(Debug)]
pub struct Budget {
    read_per_min: u32,
    write_per_min: u32,
    max_backoff: Duration,
    scopes: Mutex<HashMap<Scope, ScopeState>>,
}

impl Budget {
    /// Limits per minute and per scope (zero is treated as one).
    pub fn new(read_per_min: u32, write_per_min: u32, max_backoff: Duration) -> Self {
        Self {
            read_per_min: read_per_min.max(1),
            write_per_min: write_per_min.max(1),
            max_backoff,
            scopes: Mutex::new(HashMap::new()),
        }
    }

    pub fn limit(&self, class: Class) -> u32 {
        match class {
            Class::Read => self.read_per_min,
            Class::Write => self.write_per_min,
        }
    }

    /// The least time between two grants of one (scope, class).
    pub fn spacing(&self, class: Class) -> Duration {
        WINDOW / self.limit(class)
    }

    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// Waits for a slot and for the end of any pause of `scope`. Callers of one
    /// (scope, class) are served in arrival order; dropping the future gives up the place in
    /// line without consuming a slot.
    pub async fn acquire(&self, scope: &Scope, class: Class) {
        let queue = self.queue(scope, class);
        let _turn = queue.lock().await;
        loop {
            let now = now();
            match self.try_acquire_at(scope, class, now) {
                Ok(()) => return,
                Err(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
            }
        }
    }

    /// Takes a slot at `now` if one is free and the scope is not paused; otherwise returns
    /// the earliest time worth trying again. Does not look at the queue: callers of
    /// [`Budget::acquire`] hold their turn while calling this.
    pub fn try_acquire_at(&self, scope: &Scope, class: Class, now: Instant) -> Result<(), Instant> {
        let (limit, spacing) = (self.limit(class) as usize, self.spacing(class));
        let mut scopes = self.lock();
        let state = scopes.entry(scope.clone()).or_default();
        let mut earliest = now;
        if let Some(until) = state.paused_until {
            earliest = earliest.max(until);
        }
        let window = window(state, class);
        if let Some(last) = window.grants.back() {
            earliest = earliest.max(*last + spacing);
        }
        if window.grants.len() >= limit {
            earliest = earliest.max(window.grants[window.grants.len() - limit] + WINDOW);
        }
        if earliest > now {
            return Err(earliest);
        }
        window.grants.push_back(now);
        while window.grants.len() > limit {
            window.grants.pop_front();
        }
        Ok(())
    }

    /// Records how a request of `scope` went; failures pause the scope (see [`backoff`]).
    pub fn report(&self, scope: &Scope, outcome: Outcome) {
        let jitter = rand::thread_rng().gen_range(0.0..=1.0);
        self.report_at(scope, outcome, now(), jitter);
    }

    /// [`Budget::report`] with the time and the jitter fraction (0..=1) given.
    pub fn report_at(&self, scope: &Scope, outcome: Outcome, now: Instant, jitter: f64) {
        let mut scopes = self.lock();
        let state = scopes.entry(scope.clone()).or_default();
        let retry_after = match outcome {
            Outcome::Success => {
                state.failures = 0;
                return;
            }
            Outcome::Throttled { retry_after } | Outcome::ServerError { retry_after } => {
                retry_after
            }
            Outcome::Timeout => None,
        };
        state.failures = state.failures.saturating_add(1);
        let pause = backoff(state.failures, retry_after, self.max_backoff, jitter);
        let until = now + pause;
        state.paused_until = Some(state.paused_until.map_or(until, |p| p.max(until)));
    }

    /// Slots left in the 60-second window ending now.
    pub fn remaining(&self, scope: &Scope, class: Class) -> u32 {
        self.remaining_at(scope, class, now())
    }

    pub fn remaining_at(&self, scope: &Scope, class: Class, now: Instant) -> u32 {
        let limit = self.limit(class);
        let scopes = self.lock();
        let used = scopes
            .get(scope)
            .and_then(|s| s.windows.get(&class))
            .map_or(0, |w| {
                w.grants
                    .iter()
                    .filter(|t| now.saturating_duration_since(**t) < WINDOW && **t <= now)
                    .count()
            });
        limit.saturating_sub(used as u32)
    }

    /// The end of the scope's current backoff pause, if it has not passed yet.
    pub fn paused_until(&self, scope: &Scope) -> Option<Instant> {
        let now = now();
        self.lock()
            .get(scope)
            .and_then(|s| s.paused_until)
            .filter(|until| *until > now)
    }

    /// Consecutive failures reported for the scope since its last success.
    pub fn failures(&self, scope: &Scope) -> u32 {
        self.lock().get(scope).map_or(0, |s| s.failures)
    }

    fn queue(&self, scope: &Scope, class: Class) -> Arc<tokio::sync::Mutex<()>> {
        let mut scopes = self.lock();
        let state = scopes.entry(scope.clone()).or_default();
        window(state, class).queue.clone()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Scope, ScopeState>> {
        // The state stays consistent even if a holder panicked: every update is one step.
        self.scopes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn window(state: &mut ScopeState, class: Class) -> &mut Window {
    state.windows.entry(class).or_insert_with(|| Window {
        grants: VecDeque::new(),
        queue: Arc::new(tokio::sync::Mutex::new(())),
    })
}

/// The pause after the `failures`-th consecutive failure: full jitter over
/// `min(base * 2^(failures-1), max)`, or `retry_after` (capped at `max`) if that is longer.
pub fn backoff(
    failures: u32,
    retry_after: Option<Duration>,
    max: Duration,
    jitter: f64,
) -> Duration {
    let exp = failures.saturating_sub(1).min(31);
    let ceiling = BACKOFF_BASE.saturating_mul(1u32 << exp).min(max);
    let jittered = ceiling.mul_f64(jitter.clamp(0.0, 1.0));
    jittered.max(retry_after.unwrap_or_default().min(max))
}

/// The clock: tokio's, so paused test time applies when a test enables it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    /// Serves `arrivals` (sorted) in order the way `acquire` does, with an explicit clock.
    fn simulate(budget: &Budget, scope: &Scope, arrivals: &[Instant]) -> Vec<Instant> {
        let mut grants = Vec::with_capacity(arrivals.len());
        let mut now = arrivals[0];
        for arrival in arrivals {
            now = now.max(*arrival);
            loop {
                match budget.try_acquire_at(scope, Class::Read, now) {
                    Ok(()) => break,
                    Err(at) => {
                        assert!(at > now, "a retry time is in the future");
                        now = at;
                    }
                }
            }
            grants.push(now);
        }
        grants
    }

    /// The most grants in any half-open window `[t, t + 60s)`.
    fn max_per_window(grants: &[Instant]) -> usize {
        let mut best = 0;
        let mut start = 0;
        for end in 0..grants.len() {
            while grants[end] - grants[start] >= MIN {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    #[test]
    fn a_burst_of_5000_never_gets_more_than_500_in_any_minute_and_is_spaced() {
        let budget = Budget::new(500, 250, Duration::from_secs(300));
        let scope = Scope::Project("studio-prod".into());
        let t0 = Instant::now();
        let grants = simulate(&budget, &scope, &vec![t0; 5000]);
        assert_eq!(grants.len(), 5000);
        assert_eq!(max_per_window(&grants), 500);
        let spacing = budget.spacing(Class::Read);
        assert_eq!(spacing, Duration::from_millis(120));
        assert!(grants.windows(2).all(|w| w[1] - w[0] >= spacing));
        // Nobody waits longer than the limit requires.
        assert_eq!(grants[4999] - t0, spacing * 4999);
    }

    #[test]
    fn irregular_arrivals_still_respect_the_window() {
        let budget = Budget::new(50, 50, Duration::from_secs(300));
        let scope = Scope::Organization;
        let t0 = Instant::now();
        let mut rng = rand::thread_rng();
        let mut at = t0;
        let mut arrivals = Vec::new();
        for _ in 0..2000 {
            // Bursts of simultaneous callers separated by quiet gaps of up to 3 minutes.
            if rng.gen_bool(0.05) {
                at += Duration::from_millis(rng.gen_range(0..180_000));
            }
            arrivals.push(at);
        }
        let grants = simulate(&budget, &scope, &arrivals);
        assert!(max_per_window(&grants) <= 50);
        assert!(grants
            .windows(2)
            .all(|w| w[1] - w[0] >= budget.spacing(Class::Read)));
    }

    #[test]
    fn grants_are_spaced_even_with_room_in_the_window() {
        let budget = Budget::new(600, 60, Duration::from_secs(300));
        let scope = Scope::Organization;
        let t0 = Instant::now();
        assert_eq!(budget.try_acquire_at(&scope, Class::Read, t0), Ok(()));
        let next = t0 + Duration::from_millis(100);
        assert_eq!(budget.try_acquire_at(&scope, Class::Read, t0), Err(next));
        // Writes have their own window and spacing.
        assert_eq!(budget.try_acquire_at(&scope, Class::Write, t0), Ok(()));
        assert_eq!(
            budget.try_acquire_at(&scope, Class::Write, t0),
            Err(t0 + Duration::from_secs(1))
        );
        assert_eq!(budget.try_acquire_at(&scope, Class::Read, next), Ok(()));
        assert_eq!(budget.remaining_at(&scope, Class::Read, next), 598);
        assert_eq!(budget.remaining_at(&scope, Class::Read, t0 + MIN), 599);
        assert_eq!(
            budget.remaining_at(&scope, Class::Read, next + MIN),
            600,
            "grants older than a minute no longer count"
        );
    }

    #[test]
    fn a_throttle_pauses_the_whole_scope_for_retry_after_capped_at_max_backoff() {
        let budget = Budget::new(600, 600, Duration::from_secs(300));
        let (p, other) = (Scope::Project("p".into()), Scope::Project("q".into()));
        let t0 = Instant::now();
        let throttled = Outcome::Throttled {
            retry_after: Some(Duration::from_secs(30)),
        };
        budget.report_at(&p, throttled, t0, 1.0);
        let until = t0 + Duration::from_secs(30);
        for class in [Class::Read, Class::Write] {
            assert_eq!(budget.try_acquire_at(&p, class, t0), Err(until));
        }
        assert_eq!(budget.try_acquire_at(&other, Class::Read, t0), Ok(()));
        assert_eq!(budget.try_acquire_at(&p, Class::Read, until), Ok(()));

        let long = Outcome::ServerError {
            retry_after: Some(Duration::from_secs(3600)),
        };
        budget.report_at(&other, long, t0, 0.0);
        assert_eq!(
            budget.try_acquire_at(&other, Class::Write, t0),
            Err(t0 + Duration::from_secs(300))
        );
    }

    #[test]
    fn backoff_doubles_with_full_jitter_up_to_the_cap() {
        let max = Duration::from_secs(300);
        let full: Vec<u64> = (1..=10)
            .map(|n| backoff(n, None, max, 1.0).as_secs())
            .collect();
        assert_eq!(full, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert_eq!(backoff(u32::MAX, None, max, 1.0), max);
        assert_eq!(backoff(5, None, max, 0.0), Duration::ZERO);
        assert_eq!(backoff(5, None, max, 0.5), Duration::from_secs(8));
        // Retry-After wins when it is longer than the jittered backoff, not otherwise.
        let ra = Some(Duration::from_secs(3));
        assert_eq!(backoff(1, ra, max, 1.0), Duration::from_secs(3));
        assert_eq!(backoff(4, ra, max, 1.0), Duration::from_secs(8));
    }

    #[test]
    fn success_resets_the_failure_count() {
        let budget = Budget::new(600, 600, Duration::from_secs(300));
        let scope = Scope::Organization;
        let t0 = Instant::now();
        for _ in 0..3 {
            budget.report_at(&scope, Outcome::Timeout, t0, 1.0);
        }
        assert_eq!(budget.failures(&scope), 3);
        assert_eq!(
            budget.try_acquire_at(&scope, Class::Read, t0),
            Err(t0 + Duration::from_secs(4))
        );
        budget.report_at(&scope, Outcome::Success, t0, 1.0);
        assert_eq!(budget.failures(&scope), 0);
        let t1 = t0 + Duration::from_secs(10);
        budget.report_at(&scope, Outcome::Timeout, t1, 1.0);
        assert_eq!(
            budget.try_acquire_at(&scope, Class::Read, t1),
            Err(t1 + Duration::from_secs(1)),
            "the first failure after a success starts again at the base"
        );
    }

    #[test]
    fn scope_of_recognises_project_paths() {
        let p = |s: &str| Scope::Project(s.into());
        assert_eq!(
            scope_of("/api/v1/projects/studio/media/assets"),
            p("studio")
        );
        assert_eq!(
            scope_of("/api/v1/projects/studio/webhook/rules?$top=1"),
            p("studio")
        );
        assert_eq!(
            scope_of("https://app.mk.io/api/v1/projects/x/media/jobs"),
            p("x")
        );
        assert_eq!(scope_of("/api/v1/projects/studio"), Scope::Organization);
        assert_eq!(
            scope_of("/api/v1/projects?x=/api/v1/projects/a/"),
            Scope::Organization
        );
        assert_eq!(scope_of("/api/v1/user/tokens"), Scope::Organization);
        assert_eq!(scope_of("/api/v1/projects//media"), Scope::Organization);
        assert_eq!(Class::of_method("GET"), Class::Read);
        assert_eq!(Class::of_method("PUT"), Class::Write);
        assert_eq!(Class::of_method("DELETE"), Class::Write);
    }

    #[tokio::test]
    async fn acquire_serves_callers_in_order_and_spaces_them() {
        // 1200 a minute: 50 ms apart.
        let budget = Arc::new(Budget::new(1200, 1200, Duration::from_secs(1)));
        let scope = Scope::Organization;
        let started = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (budget, scope, tx) = (budget.clone(), scope.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                budget.acquire(&scope, Class::Read).await;
                tx.send((i, Instant::now())).unwrap();
            }));
            // Let the task take its place in line before the next one arrives.
            tokio::task::yield_now().await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        drop(tx);
        let mut served = Vec::new();
        while let Some(x) = rx.recv().await {
            served.push(x);
        }
        assert_eq!(
            served.iter().map(|x| x.0).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(budget.remaining(&scope, Class::Read), 1195);
    }

    #[tokio::test]
    async fn a_cancelled_acquire_takes_no_slot() {
        let budget = Budget::new(60, 60, Duration::from_secs(1));
        let scope = Scope::Project("p".into());
        budget.acquire(&scope, Class::Write).await;
        let waited = tokio::time::timeout(
            Duration::from_millis(20),
            budget.acquire(&scope, Class::Write),
        )
        .await;
        assert!(waited.is_err(), "the second grant is a second away");
        assert_eq!(budget.remaining(&scope, Class::Write), 59);
        // The line is free again: the next caller is not stuck behind the cancelled one.
        let queue = budget.queue(&scope, Class::Write);
        assert!(queue.try_lock().is_ok());
    }

    #[tokio::test]
    async fn acquire_waits_out_a_pause() {
        let budget = Budget::new(6000, 6000, Duration::from_millis(80));
        let scope = Scope::Organization;
        budget.report(
            &scope,
            Outcome::Throttled {
                retry_after: Some(Duration::from_secs(60)),
            },
        );
        let until = budget.paused_until(&scope).expect("paused");
        budget.acquire(&scope, Class::Read).await;
        assert!(Instant::now() >= until);
        assert!(budget.paused_until(&scope).is_none());
    }
}

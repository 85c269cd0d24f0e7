//! mkio-sim: an in-memory MK.IO for tests, benchmarks and local trials. It serves the jobs,
//! live, streaming and webhook-rule APIs with timed state machines, rate limits, injected
//! faults and real webhook deliveries. `docs/SIMULATOR.md` describes it from the outside.

mod api;
mod control;
mod deliver;
mod engine;
mod error;
mod gate;
mod ids;
mod kinds;
mod limits;
mod lists;
mod paths;
mod render;
mod rules;
mod world;

pub use limits::{ClassStats, ScopeStats, SimStats, WebhookStats};
pub use world::StateChange;

use anyhow::Context;
use axum::routing::any;
use axum::Router;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How the simulated MK.IO behaves. Its `Debug` hides the token.
#[derive(Clone)]
pub struct SimConfig {
    /// Projects that exist; any other project answers 404.
    pub projects: Vec<String>,
    /// When set, every `/api` request needs `Authorization: Bearer <token>`, else 401.
    pub token: Option<String>,
    /// GET requests per sliding minute, per scope (project, or `organization`).
    pub get_limit_per_minute: u32,
    /// POST, PUT, PATCH and DELETE requests per sliding minute, per scope.
    pub write_limit_per_minute: u32,
    /// Sent as `Retry-After` (whole seconds, rounded up) on a 429 when set.
    pub retry_after: Option<Duration>,
    /// Jobs go Queued -> Processing after this.
    pub job_queued_for: Duration,
    /// Jobs go Processing -> Finished (or Error) after this.
    pub job_processing_for: Duration,
    /// Every other timed transition: Starting, Stopping, Scaling, Creating, Canceling, Pending.
    pub live_transition: Duration,
    /// Delays between delivery attempts; after the last failed retry the delivery is Failed.
    pub webhook_retry_schedule: Vec<Duration>,
    /// Per delivery attempt; a timeout counts as a failed attempt.
    pub webhook_timeout: Duration,
    /// `@odata.nextLink` as an absolute URL (true) or a path (false).
    pub absolute_next_links: bool,
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("projects", &self.projects)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("get_limit_per_minute", &self.get_limit_per_minute)
            .field("write_limit_per_minute", &self.write_limit_per_minute)
            .field("retry_after", &self.retry_after)
            .field("job_queued_for", &self.job_queued_for)
            .field("job_processing_for", &self.job_processing_for)
            .field("live_transition", &self.live_transition)
            .field("webhook_retry_schedule", &self.webhook_retry_schedule)
            .field("webhook_timeout", &self.webhook_timeout)
            .field("absolute_next_links", &self.absolute_next_links)
            .finish()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            projects: vec!["studio-prod".to_string()],
            token: None,
            get_limit_per_minute: 2000,
            write_limit_per_minute: 1000,
            retry_after: None,
            job_queued_for: Duration::from_secs(1),
            job_processing_for: Duration::from_secs(2),
            live_transition: Duration::from_secs(1),
            webhook_retry_schedule: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
            ],
            webhook_timeout: Duration::from_secs(10),
            absolute_next_links: true,
        }
    }
}

/// An injected fault: every `/api` request waits `delay`, then answers `status` if set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fault {
    pub status: Option<u16>,
    pub delay: Option<Duration>,
    /// The fault ends by itself at this instant; `None` keeps it until cleared.
    pub until: Option<Instant>,
}

/// State shared by the server, its timers and its delivery tasks.
pub(crate) struct Shared {
    pub config: SimConfig,
    pub base_url: String,
    pub world: Mutex<world::World>,
    pub limiter: Mutex<limits::Limiter>,
    pub fault: Mutex<Option<Fault>>,
    pub drops: AtomicUsize,
    pub webhook_stats: Mutex<WebhookStats>,
    pub client: reqwest::Client,
    pub tasks: TaskTracker,
    pub cancel: CancellationToken,
}

/// Locks a mutex, carrying on after a panic elsewhere: the data stays usable for a simulator.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running simulator. Dropping it stops the server without waiting; `shutdown` waits.
pub struct SimHandle {
    pub addr: SocketAddr,
    /// `http://{addr}`, with no trailing slash.
    pub base_url: String,
    shared: Arc<Shared>,
}

/// Binds `listen` (port 0 picks a free port) and serves in the background.
pub async fn start(config: SimConfig, listen: SocketAddr) -> anyhow::Result<SimHandle> {
    anyhow::ensure!(
        !config.projects.is_empty(),
        "at least one project is needed"
    );
    anyhow::ensure!(
        config.get_limit_per_minute > 0 && config.write_limit_per_minute > 0,
        "rate limits must be positive"
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let client = reqwest::Client::builder()
        .timeout(config.webhook_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("cannot build the webhook HTTP client")?;
    let shared = Arc::new(Shared {
        limiter: Mutex::new(limits::Limiter::new(
            config.get_limit_per_minute,
            config.write_limit_per_minute,
        )),
        config,
        base_url: format!("http://{addr}"),
        world: Mutex::default(),
        fault: Mutex::default(),
        drops: AtomicUsize::new(0),
        webhook_stats: Mutex::default(),
        client,
        tasks: TaskTracker::new(),
        cancel: CancellationToken::new(),
    });
    let api = Router::new()
        .route("/api/{*rest}", any(api::dispatch))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            gate::gate,
        ));
    let app = Router::new()
        .nest("/_sim", control::router())
        .merge(api)
        .fallback(api::unknown_path)
        .with_state(shared.clone());
    let cancel = shared.cancel.clone();
    shared.tasks.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "mkio-sim server stopped");
        }
    });
    tracing::info!(%addr, "mkio-sim listening");
    Ok(SimHandle {
        addr,
        base_url: shared.base_url.clone(),
        shared,
    })
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

impl SimHandle {
    /// Request and webhook statistics so far.
    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// Sets or clears the injected fault.
    pub fn set_fault(&self, fault: Option<Fault>) {
        *lock(&self.shared.fault) = fault;
    }

    /// The next `n` webhook deliveries are never sent; their history entries end `Failed`.
    pub fn drop_webhooks(&self, n: usize) {
        self.shared.add_drops(n);
    }

    /// Forces a resource's state now, emitting the webhook MK.IO would; false if no such path.
    pub fn set_state(&self, path: &str, state: &str) -> bool {
        self.shared.force_state(path, state)
    }

    /// Every state change so far, oldest first.
    pub fn changes(&self) -> Vec<StateChange> {
        lock(&self.shared.world).changes.clone()
    }

    /// Stops serving, cancels timers and pending retries, and waits for them.
    pub async fn shutdown(self) {
        self.shared.cancel.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }
}

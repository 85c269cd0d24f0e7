//! Fan-out benchmark: how fast a committed event reaches local consumers, and how many of them
//! one daemon holds. A program that prints numbers, not a test: see docs/BENCHMARKS.md.
//!
//! Part A (latency): JobStarted/JobFinished webhooks are posted at a steady `--rate` for
//! `--seconds`. From the moment each POST is acknowledged it times (1) the long-poll waiter
//! that was already waiting on that job, (2) an SSE client on `/v1/events/stream` and (3) the
//! first delivery attempt to a subscription's receiver, which this program serves itself.
//!
//! Part B (capacity): `--sse-clients` event streams and `--waiters` long-polls on distinct
//! unknown jobs are held open at once; the daemon's resident memory is read before and after
//! they connect; then `--broadcast-events` JobFinished events (for a sample of the waited
//! jobs) are posted, and every stream and sampled waiter is checked for them.
//!
//! ```text
//! cargo build --release
//! ulimit -n 65536   # part B needs sse-clients + waiters sockets, here and in the daemon
//! cargo run --release --example bench_fanout -- [--rate 500] [--seconds 20]
//!     [--sse-clients 10000] [--waiters 10000] [--postgres postgres://...]
//! ```
//!
//! The daemon is a child process (`target/release/mkio-relay`, a fresh database per part,
//! stopped by its PID). Every client, the load generator and the receiver live in this
//! process, so one monotonic clock times both ends of each measurement.

mod support;

use anyhow::{bail, ensure, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Connection;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use support::*;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

/// The shared secret the relay is started with and every webhook presents.
const SECRET: &str = "bench-secret-7d2e4b";
const WEBHOOK_PATH: &str = "/webhooks/mkio";
const STREAM_PATH: &str = "/v1/events/stream";
const RECEIVER_PATH: &str = "/hook";
/// Project and transform of every job (as in tests/common/mod.rs `job_event`).
const PROJECT: &str = "p";
const TRANSFORM: &str = "t";
/// Bound on one webhook POST, one connect, and waiting for a stream's response headers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Part A: a job's JobFinished is posted this many jobs after its JobStarted, so its waiter
/// (opened with the JobStarted) has been waiting for about 200 ms at 500 events/s.
const FINISH_LAG_JOBS: u64 = 50;
/// Part A waiters ask for this wait, and give up a little after it.
const LATENCY_WAIT: &str = "60s";
const LATENCY_WAITER_TIMEOUT: Duration = Duration::from_secs(70);
/// Part A: how long after the last POST the waiters, the stream and the receiver may take to
/// see everything.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// Part B waiters ask for the longest wait the daemon allows (`api.max_wait`).
const CAPACITY_WAIT: &str = "5m";
/// Bound on opening all of part B's connections.
const CONNECT_PHASE_TIMEOUT: Duration = Duration::from_secs(180);
/// Bound on the daemon showing all of part B's sockets, and the pause before reading its
/// memory so that every request has been handled.
const SOCKETS_TIMEOUT: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(2);
/// File descriptors kept for everything but part B's connections (stdio, listeners, the
/// database, the runtime), in this process and in the daemon.
const FD_MARGIN: u64 = 128;
/// Ephemeral ports left unused per source address.
const PORT_MARGIN: u64 = 1000;
/// Bound on client tasks finishing once they are cancelled.
const TASK_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Part A also reports each latency's p99 per slice of this length (at most 12 slices).
const SLICE: Duration = Duration::from_secs(5);
/// Latency histogram range in microseconds (1 µs to 10 min, 3 significant digits).
const HIST_MAX_US: u64 = 600_000_000;
const HIST_SIGFIG: u8 = 3;
/// The targets this benchmark reports against (docs/BENCHMARKS.md), p99 and resident memory.
const TARGET_WAITER_P99_MS: f64 = 50.0;
const TARGET_STREAM_P99_MS: f64 = 50.0;
const TARGET_DELIVERY_P99_MS: f64 = 100.0;
const TARGET_RSS_MIB: f64 = 300.0;

#[derive(Debug, Parser)]
#[command(about = "Fan-out benchmark: waiter, stream and delivery latency; connection capacity")]
struct Opts {
    /// Part A: webhooks posted per second (half JobStarted, half JobFinished).
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Part A: seconds of load.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Part B: event stream clients held open at once.
    #[arg(long, default_value_t = 10_000)]
    sse_clients: u64,
    /// Part B: long-poll waiters (distinct unknown jobs) held open at once.
    #[arg(long, default_value_t = 10_000)]
    waiters: u64,
    /// Part B: events posted once everyone is connected (JobFinished for a sample of the
    /// waited jobs).
    #[arg(long, default_value_t = 100)]
    broadcast_events: u64,
    /// Part B: how long the streams and sampled waiters get to receive those events.
    #[arg(long, default_value_t = 60)]
    receive_seconds: u64,
    /// Part B: connections being opened at once. The daemon listens with a backlog of 128
    /// (what tokio's `TcpListener::bind` asks for): more than that at once overflows its accept
    /// queue and the kernel drops SYNs, which cost a 1 s retransmit each.
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
    /// Worker threads of this program's runtime (clients, load generator, receiver).
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Also bench mkio-relay on Postgres: an admin URL (a fresh database is created beside it
    /// per part and dropped after), e.g. postgres://postgres@127.0.0.1:5432/postgres.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// Skip SQLite (for example to bench Postgres alone).
    #[arg(long)]
    skip_sqlite: bool,
    /// Skip part A (latency).
    #[arg(long)]
    skip_latency: bool,
    /// Skip part B (capacity).
    #[arg(long)]
    skip_capacity: bool,
    /// Part A without the subscription (to see what outbound deliveries cost the rest).
    #[arg(long)]
    skip_subscription: bool,
    /// The mkio-relay binary; default: `mkio-relay` beside this example's directory, i.e.
    /// target/release/mkio-relay.
    #[arg(long, value_name = "PATH")]
    relay_bin: Option<PathBuf>,
    /// Extra environment for the daemon, `KEY=VALUE`, repeatable (for experiments, e.g.
    /// `--relay-env MKIO_RELAY_DELIVERY_CONCURRENCY=64`).
    #[arg(long, value_name = "KEY=VALUE")]
    relay_env: Vec<String>,
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.client_threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the benchmark's runtime")
        .and_then(|rt| rt.block_on(run(&opts)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_fanout: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Orchestration

enum Backend {
    Sqlite,
    Postgres(String),
}

async fn run(opts: &Opts) -> anyhow::Result<()> {
    ensure!(opts.rate > 0, "--rate must be at least 1");
    ensure!(opts.seconds > 0, "--seconds must be at least 1");
    let relay_bin = match &opts.relay_bin {
        Some(path) => path.clone(),
        None => default_relay_bin()?,
    };
    ensure!(
        relay_bin.is_file(),
        "mkio-relay binary not found at {}; build it first with `cargo build --release` \
         (or pass --relay-bin PATH)",
        relay_bin.display()
    );
    let sources = if opts.skip_capacity {
        Vec::new()
    } else {
        check_capacity_limits(opts)?
    };
    println!(
        "bench_fanout: part A {} events/s for {} s; part B {} streams + {} waiters, {} events; \
         {} client thread(s), {} CPUs",
        opts.rate,
        opts.seconds,
        opts.sse_clients,
        opts.waiters,
        opts.broadcast_events,
        opts.client_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!("relay binary: {}", relay_bin.display());

    let mut backends = Vec::new();
    if !opts.skip_sqlite {
        backends.push(("sqlite", Backend::Sqlite));
    }
    if let Some(url) = &opts.postgres {
        backends.push(("postgres", Backend::Postgres(url.clone())));
    }
    let mut latency = Vec::new();
    let mut capacity = Vec::new();
    for (name, backend) in &backends {
        if !opts.skip_latency {
            let label = format!("mkio-relay {name}");
            let db = BenchDb::create(backend, "a").await?;
            let report = bench_latency(opts, &relay_bin, &label, &db).await;
            db.drop_database().await;
            let report = report.with_context(|| format!("part A on {name}"))?;
            print_latency(&report);
            latency.push(report);
        }
        if !opts.skip_capacity {
            let label = format!("mkio-relay {name}");
            let db = BenchDb::create(backend, "b").await?;
            let report = bench_capacity(opts, &relay_bin, &label, &db, &sources).await;
            db.drop_database().await;
            let report = report.with_context(|| format!("part B on {name}"))?;
            print_capacity(&report);
            capacity.push(report);
        }
    }
    print_summary(&latency, &capacity);
    Ok(())
}

/// `target/release/mkio-relay` when this example runs as `target/release/examples/bench_fanout`.
fn default_relay_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate this executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("this executable has no grandparent directory")?;
    Ok(profile_dir.join(format!("mkio-relay{}", std::env::consts::EXE_SUFFIX)))
}

/// Part B holds one socket per client here and one in the daemon (which inherits this
/// process's limit): checks RLIMIT_NOFILE and the ephemeral port range before anything starts,
/// and returns the source addresses to connect from (empty: the default, 127.0.0.1).
fn check_capacity_limits(opts: &Opts) -> anyhow::Result<Vec<IpAddr>> {
    let connections = opts.sse_clients + opts.waiters;
    let (soft, hard) = open_file_limit()?;
    let needed = connections + FD_MARGIN;
    if soft < needed {
        let hint = if hard >= needed {
            format!("run `ulimit -n {hard}` (or at least {needed}) in this shell first")
        } else {
            format!(
                "the hard limit here is {hard}: raise it (as root with CAP_SYS_RESOURCE, \
                 e.g. `ulimit -Hn 65536`, or in limits.conf / the container's settings), or \
                 lower --sse-clients and --waiters to at most {} in total",
                hard.saturating_sub(FD_MARGIN)
            )
        };
        bail!(
            "part B holds {connections} connections ({} streams + {} waiters): this process \
             and the daemon each need RLIMIT_NOFILE >= {needed}, but it is {soft}; {hint}; or \
             pass --skip-capacity",
            opts.sse_clients,
            opts.waiters
        );
    }
    let (low, high) = ephemeral_ports()?;
    let per_source = (high + 1)
        .saturating_sub(low)
        .saturating_sub(PORT_MARGIN)
        .max(1);
    let count = connections.div_ceil(per_source);
    if count <= 1 {
        return Ok(Vec::new());
    }
    ensure!(
        count < 250,
        "{connections} connections need {count} loopback source addresses"
    );
    println!(
        "ephemeral ports {low}-{high}: {connections} connections from {count} source addresses \
         127.0.0.1-127.0.0.{count}"
    );
    Ok((1..=count as u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect())
}

/// (soft, hard) "Max open files" of this process, from /proc/self/limits.
fn open_file_limit() -> anyhow::Result<(u64, u64)> {
    let limits =
        std::fs::read_to_string("/proc/self/limits").context("cannot read /proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no `Max open files` in /proc/self/limits")?;
    let fields: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    let value = |i: usize| -> u64 {
        match fields.get(i) {
            Some(&"unlimited") => u64::MAX,
            Some(v) => v.parse().unwrap_or(0),
            None => 0,
        }
    };
    Ok((value(0), value(1)))
}

fn ephemeral_ports() -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .context("cannot read /proc/sys/net/ipv4/ip_local_port_range")?;
    let mut it = text.split_whitespace().map(str::parse::<u64>);
    match (it.next(), it.next()) {
        (Some(Ok(low)), Some(Ok(high))) if high >= low => Ok((low, high)),
        _ => bail!("cannot parse ip_local_port_range {text:?}"),
    }
}

/// The database of one part: a file in a temporary directory, or a fresh Postgres database
/// beside the admin URL's (dropped by [`BenchDb::drop_database`]).
struct BenchDb {
    url: String,
    dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl BenchDb {
    async fn create(backend: &Backend, part: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        match backend {
            Backend::Sqlite => Ok(Self {
                url: format!("sqlite:{}", dir.path().join("bench.db").display()),
                dir,
                postgres: None,
            }),
            Backend::Postgres(admin_url) => {
                let name = format!("bench_fanout_{}_{part}", std::process::id());
                let mut url = url::Url::parse(admin_url).context("--postgres is not a URL")?;
                url.set_path(&name);
                let mut admin = sqlx::PgConnection::connect(admin_url)
                    .await
                    .with_context(|| format!("cannot connect to {admin_url}"))?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .with_context(|| format!("cannot create database {name}"))?;
                Ok(Self {
                    url: url.to_string(),
                    dir,
                    postgres: Some((admin_url.clone(), name)),
                })
            }
        }
    }

    /// Drops the Postgres database (the daemon has stopped; FORCE ends any backend left).
    async fn drop_database(self) {
        let Some((admin_url, name)) = &self.postgres else {
            return;
        };
        let dropped = async {
            let mut admin = sqlx::PgConnection::connect(admin_url).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await
        };
        if let Err(e) = dropped.await {
            eprintln!("bench_fanout: could not drop database {name}: {e}");
        }
    }
}

/// A running daemon and its two listeners.
struct Relay {
    server: ChildGuard,
    ingest: SocketAddr,
    api: SocketAddr,
}

async fn start_relay(
    opts: &Opts,
    relay_bin: &Path,
    label: &str,
    db: &BenchDb,
) -> anyhow::Result<Relay> {
    let ingest = free_addr()?;
    let api = free_addr()?;
    let mut cmd = Command::new(relay_bin);
    // Only what is set here configures the daemon.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MKIO_RELAY_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(db.dir.path())
        .env("MKIO_RELAY_DATABASE_URL", &db.url)
        .env("MKIO_RELAY_WEBHOOK_SECRETS", SECRET)
        .env("MKIO_RELAY_INGEST_LISTEN", ingest.to_string())
        .env("MKIO_RELAY_API_LISTEN", api.to_string())
        .env("MKIO_RELAY_LOG_LEVEL", "warn");
    for pair in &opts.relay_env {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--relay-env {pair:?} is not KEY=VALUE"))?;
        cmd.env(key, value);
    }
    let mut server = ChildGuard::spawn(label, cmd)?;
    wait_ready(&mut server, ingest).await?;
    Ok(Relay {
        server,
        ingest,
        api,
    })
}

// ---------------------------------------------------------------------------------------------
// Part A: latency at a steady rate

/// What part A measured.
struct LatencyReport {
    label: String,
    rate: u64,
    window: Duration,
    posted: u64,
    acked: u64,
    post_errors: BTreeMap<String, u64>,
    ack: Lat,
    /// How far the load generator fell behind its schedule at worst.
    generator_lag: Duration,
    /// Shortest time a waiter had been sent before its job's JobFinished was.
    min_waiter_lead: Option<Duration>,
    waiter: Lat,
    stream: Lat,
    delivery: Lat,
    /// Delivery attempts the receiver got, and how many distinct events they carried.
    delivery_attempts: u64,
    cpu: CpuUse,
    memory: Memory,
}

/// A latency distribution plus the checks around it.
struct Lat {
    hist: Histogram<u64>,
    /// How many measurements were expected (events acknowledged, waiters started, ...).
    expected: u64,
    /// Arrivals seen before the bench had processed the matching acknowledgement (counted as 0).
    before_ack: u64,
    /// Everything that went wrong, by kind: missing, duplicate, out of order, HTTP errors.
    problems: BTreeMap<String, u64>,
    /// The same latencies split by when the event was acknowledged: (start, slice length,
    /// one histogram per slice). Shows a queue that grows from a latency that is merely high.
    slices: Option<(Instant, Duration, Vec<Histogram<u64>>)>,
}

impl Lat {
    fn new(expected: u64) -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIG)
                .expect("valid histogram bounds"),
            expected,
            before_ack: 0,
            problems: BTreeMap::new(),
            slices: None,
        }
    }

    /// Also keeps one histogram per [`SLICE`] of the window that starts at `start`.
    fn sliced(mut self, start: Instant, window: Duration) -> Self {
        let n = (window.as_secs_f64() / SLICE.as_secs_f64())
            .ceil()
            .clamp(1.0, 12.0) as usize;
        let hists = (0..n).map(|_| Lat::new(0).hist).collect();
        self.slices = Some((start, window.div_f64(n as f64), hists));
        self
    }

    fn record(&mut self, ack: Instant, arrived: Instant) {
        let us = match arrived.checked_duration_since(ack) {
            Some(d) => d.as_micros() as u64,
            None => {
                self.before_ack += 1;
                0
            }
        };
        self.hist.saturating_record(us.max(1));
        if let Some((start, len, hists)) = self.slices.as_mut() {
            let offset = ack.saturating_duration_since(*start).as_secs_f64();
            let i = ((offset / len.as_secs_f64()) as usize).min(hists.len() - 1);
            hists[i].saturating_record(us.max(1));
        }
    }

    /// p99 per slice, oldest first.
    fn slice_line(&self) -> Option<String> {
        let (_, len, hists) = self.slices.as_ref()?;
        let cells: Vec<String> = hists
            .iter()
            .map(|h| match h.len() {
                0 => "-".to_owned(),
                _ => format!("{:.1}", h.value_at_quantile(0.99) as f64 / 1000.0),
            })
            .collect();
        Some(format!(
            "p99 per {:.0} s of load, ms: {}",
            len.as_secs_f64(),
            cells.join(" / ")
        ))
    }

    fn problem(&mut self, kind: impl Into<String>) {
        *self.problems.entry(kind.into()).or_default() += 1;
    }

    fn count(&self) -> u64 {
        self.hist.len()
    }

    fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    fn max_ms(&self) -> f64 {
        self.hist.max() as f64 / 1000.0
    }

    fn line(&self) -> String {
        if self.count() == 0 {
            return format!("no measurement (expected {})", self.expected);
        }
        format!(
            "p50 {:.2} ms   p99 {:.2} ms   p99.9 {:.2} ms   max {:.2} ms   ({} of {})",
            self.ms(0.50),
            self.ms(0.99),
            self.ms(0.999),
            self.max_ms(),
            self.count(),
            self.expected
        )
    }
}

#[derive(Clone, Copy)]
enum Action {
    Start(u64),
    Finish(u64),
}

/// JobStarted for each job, and its JobFinished [`FINISH_LAG_JOBS`] jobs later: one event per
/// tick, every job's waiter opened with its JobStarted.
fn schedule(jobs: u64) -> Vec<Action> {
    let mut out = Vec::with_capacity(2 * jobs as usize);
    for step in 0..jobs + FINISH_LAG_JOBS {
        if step < jobs {
            out.push(Action::Start(step));
        }
        if step >= FINISH_LAG_JOBS && step - FINISH_LAG_JOBS < jobs {
            out.push(Action::Finish(step - FINISH_LAG_JOBS));
        }
    }
    out
}

/// Names and bodies of the events and jobs of one run (unique per benchmark process).
struct Names {
    tag: String,
}

impl Names {
    fn new() -> Self {
        Self {
            tag: format!("{:08x}", std::process::id()),
        }
    }

    fn job(&self, prefix: &str, n: u64) -> String {
        format!("{prefix}-{}-{n:06}", self.tag)
    }

    fn event_id(&self, prefix: &str, n: u64) -> String {
        format!("{prefix}-{}-{n:07}", self.tag)
    }
}

/// A JobStarted (`Processing`) or JobFinished CloudEvent, shaped as tests/common `job_event`.
fn job_event(id: &str, job: &str, finished: bool) -> String {
    let (event_type, previous, state) = if finished {
        ("MediaKind.JobFinished", "Processing", "Finished")
    } else {
        ("MediaKind.JobStarted", "Queued", "Processing")
    };
    json!({
        "specversion": "1.0", "id": id, "type": event_type,
        "source": format!("/api/v1/projects/{PROJECT}/transforms/{TRANSFORM}/jobs/{job}"),
        "time": "2025-03-14T09:09:47Z",
        "data": {"projectName": PROJECT, "previousState": previous, "state": state,
                 "resource": {"name": job, "properties": {"state": state}}}
    })
    .to_string()
}

/// One webhook POST: when it was sent and acknowledged, and the `seq` it was stored under.
struct Posted {
    id: String,
    action: Action,
    sent: Instant,
    acked: Option<Instant>,
    seq: Option<i64>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct IngestAnswer {
    events: Vec<AnsweredEvent>,
}

#[derive(Deserialize)]
struct AnsweredEvent {
    seq: Option<i64>,
}

async fn post_event(
    client: reqwest::Client,
    ingest: SocketAddr,
    id: String,
    job: String,
    action: Action,
) -> Posted {
    let finished = matches!(action, Action::Finish(_));
    let body = job_event(&id, &job, finished);
    let sent = Instant::now();
    let result = async {
        let resp = client
            .post(format!("http://{ingest}{WEBHOOK_PATH}"))
            .bearer_auth(SECRET)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| transport_error(&e))?;
        let acked = Instant::now();
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        let answer: IngestAnswer =
            serde_json::from_slice(&bytes).map_err(|_| "unreadable answer".to_owned())?;
        let seq = answer.events.first().and_then(|e| e.seq);
        Ok((acked, seq))
    }
    .await;
    let (acked, seq, error) = match result {
        Ok((acked, seq)) => (Some(acked), seq, None),
        Err(e) => (None, None, Some(e)),
    };
    Posted {
        id,
        action,
        sent,
        acked,
        seq,
        error,
    }
}

fn transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

/// One part A waiter: when it was sent and answered, and what the answer said.
struct Waited {
    job: u64,
    sent: Instant,
    answered: Instant,
    outcome: Result<(), String>,
}

async fn wait_job(client: reqwest::Client, api: SocketAddr, job: u64, name: String) -> Waited {
    let url = format!("http://{api}/v1/jobs/{PROJECT}/{TRANSFORM}/{name}?wait={LATENCY_WAIT}");
    let sent = Instant::now();
    let result = async {
        let resp = client
            .get(&url)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| transport_error(&e))?;
        let answered = Instant::now();
        if !status.is_success() {
            return Ok((answered, Err(format!("HTTP {}", status.as_u16()))));
        }
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let verdict = if body["condition_met"] != json!(true) {
            Err("condition_met not true".to_owned())
        } else if body["state"] != json!("Finished") {
            Err(format!("state {}", body["state"]))
        } else {
            Ok(())
        };
        Ok((answered, verdict))
    }
    .await;
    match result {
        Ok((answered, outcome)) => Waited {
            job,
            sent,
            answered,
            outcome,
        },
        Err(e) => Waited {
            job,
            sent,
            answered: Instant::now(),
            outcome: Err(e),
        },
    }
}

/// What the part A stream client saw: the arrival of each CloudEvent id, with its seq.
#[derive(Default)]
struct StreamLog {
    arrivals: HashMap<String, (i64, Instant)>,
    duplicates: u64,
    out_of_order: u64,
    unreadable: u64,
    ended: Option<String>,
}

async fn follow_stream(
    sender: SendRequest<Empty<Bytes>>,
    mut body: Incoming,
    cancel: CancellationToken,
    seen: Arc<AtomicU64>,
) -> StreamLog {
    let mut log = StreamLog::default();
    let mut parser = SseParser::new(true);
    let mut last_seq = 0;
    loop {
        let frame = tokio::select! {
            () = cancel.cancelled() => break,
            frame = body.frame() => frame,
        };
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                log.ended = Some(format!("stream error: {e}"));
                break;
            }
            None => {
                log.ended = Some("stream ended".into());
                break;
            }
        };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let now = Instant::now();
        parser.feed(data, |seq, data| {
            let id = serde_json::from_str::<Value>(data)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_owned));
            let (Some(seq), Some(id)) = (seq, id) else {
                log.unreadable += 1;
                return;
            };
            if seq <= last_seq {
                log.out_of_order += 1;
            }
            last_seq = last_seq.max(seq);
            if log.arrivals.insert(id, (seq, now)).is_some() {
                log.duplicates += 1;
            } else {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    drop(sender);
    log
}

async fn bench_latency(
    opts: &Opts,
    relay_bin: &Path,
    label: &str,
    db: &BenchDb,
) -> anyhow::Result<LatencyReport> {
    let receiver = Receiver::start().await?;
    let relay = start_relay(opts, relay_bin, label, db).await?;
    let result = run_latency(opts, label, &relay, &receiver).await;
    drop(relay);
    receiver.cancel.cancel();
    result
}

async fn run_latency(
    opts: &Opts,
    label: &str,
    relay: &Relay,
    receiver: &Receiver,
) -> anyhow::Result<LatencyReport> {
    let names = Names::new();
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let waiting = reqwest::Client::builder()
        .timeout(LATENCY_WAITER_TIMEOUT)
        .build()?;
    if !opts.skip_subscription {
        let created = http
            .post(format!("http://{}/v1/subscriptions", relay.api))
            .json(&json!({"url": format!("http://{}{RECEIVER_PATH}", receiver.addr)}))
            .send()
            .await
            .context("POST /v1/subscriptions")?;
        ensure!(
            created.status().as_u16() == 201,
            "POST /v1/subscriptions answered {}",
            created.status()
        );
    }
    let (sender, body) = open_stream(relay.api, None)
        .await
        .context("cannot open the event stream")?;
    let cancel = CancellationToken::new();
    let seen = Arc::new(AtomicU64::new(0));
    let stream_task = tokio::spawn(follow_stream(sender, body, cancel.clone(), seen.clone()));

    let actions = schedule(opts.rate * opts.seconds / 2);
    let period = Duration::from_secs_f64(1.0 / opts.rate as f64);
    let pid = relay.server.pid().to_string();
    println!(
        "\n[{label}] part A: {} events at {}/s, waiters {LATENCY_WAIT}, 1 stream, {} subscription",
        actions.len(),
        opts.rate,
        if opts.skip_subscription { 0 } else { 1 }
    );
    let mut posts: Vec<JoinHandle<Posted>> = Vec::with_capacity(actions.len());
    let mut waiters: Vec<JoinHandle<Waited>> = Vec::new();
    let mut generator_lag = Duration::ZERO;
    let begin = tokio::time::Instant::now() + Duration::from_millis(100);
    sleep_until(begin).await;
    let cpu_before = CpuUse::sample(&pid);
    let started = Instant::now();
    for (n, action) in actions.iter().enumerate() {
        let due = begin + period.mul_f64(n as f64);
        sleep_until(due).await;
        generator_lag = generator_lag.max(tokio::time::Instant::now() - due);
        let job = match *action {
            Action::Start(job) | Action::Finish(job) => job,
        };
        let job_name = names.job("fj", job);
        if let Action::Start(_) = action {
            waiters.push(tokio::spawn(wait_job(
                waiting.clone(),
                relay.api,
                job,
                job_name.clone(),
            )));
        }
        posts.push(tokio::spawn(post_event(
            http.clone(),
            relay.ingest,
            names.event_id("fe", n as u64),
            job_name,
            *action,
        )));
    }
    let window = started.elapsed();
    let cpu = CpuUse::between(cpu_before, CpuUse::sample(&pid), window.as_secs_f64());

    // Every POST is bounded by REQUEST_TIMEOUT; then the consumers get DRAIN_TIMEOUT.
    let mut posted = Vec::with_capacity(posts.len());
    for p in posts {
        posted.push(p.await.context("a POST task panicked")?);
    }
    let acked = posted.iter().filter(|p| p.acked.is_some()).count() as u64;
    let drain_deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while tokio::time::Instant::now() < drain_deadline
        && (seen.load(Ordering::Relaxed) < acked
            || (!opts.skip_subscription && receiver.log.unique.load(Ordering::Relaxed) < acked)
            || waiters.iter().any(|w| !w.is_finished()))
    {
        sleep(DRAIN_POLL).await;
    }
    let memory = Memory::read(relay.server.pid())?;
    let mut waited = Vec::with_capacity(waiters.len());
    let mut unfinished_waiters = 0;
    for w in waiters {
        if w.is_finished() {
            waited.push(w.await.context("a waiter task panicked")?);
        } else {
            w.abort();
            unfinished_waiters += 1;
        }
    }
    cancel.cancel();
    let stream = timeout(TASK_STOP_TIMEOUT, stream_task)
        .await
        .context("the stream client did not stop")?
        .context("the stream client panicked")?;

    let mut post_errors = BTreeMap::new();
    let mut ack = Lat::new(posted.len() as u64).sliced(started, window);
    let mut finished_ack: HashMap<u64, (Instant, Instant)> = HashMap::new();
    for p in &posted {
        if let Some(e) = &p.error {
            *post_errors.entry(e.clone()).or_default() += 1;
        }
        if let Some(at) = p.acked {
            ack.record(p.sent, at);
            if let Action::Finish(job) = p.action {
                finished_ack.insert(job, (p.sent, at));
            }
        }
    }

    let mut waiter = Lat::new(waited.len() as u64 + unfinished_waiters).sliced(started, window);
    for _ in 0..unfinished_waiters {
        waiter.problem(format!(
            "no answer within {DRAIN_TIMEOUT:?} of the last POST"
        ));
    }
    let mut min_waiter_lead: Option<Duration> = None;
    for w in &waited {
        if let Err(e) = &w.outcome {
            waiter.problem(e.clone());
            continue;
        }
        let Some(&(finish_sent, finish_acked)) = finished_ack.get(&w.job) else {
            waiter.problem("its JobFinished was not acknowledged");
            continue;
        };
        let lead = finish_sent.saturating_duration_since(w.sent);
        min_waiter_lead = Some(min_waiter_lead.map_or(lead, |m| m.min(lead)));
        waiter.record(finish_acked, w.answered);
    }

    let mut stream_lat = Lat::new(acked).sliced(started, window);
    let mut delivery =
        Lat::new(if opts.skip_subscription { 0 } else { acked }).sliced(started, window);
    let mut acked_ids = HashSet::new();
    let first_attempts = receiver.log.first.lock().expect("receiver log").clone();
    for p in &posted {
        let Some(at) = p.acked else { continue };
        acked_ids.insert(p.id.as_str());
        match stream.arrivals.get(&p.id) {
            Some(&(seq, arrived)) => {
                if Some(seq) != p.seq {
                    stream_lat.problem("seq differs from the POST's answer");
                }
                stream_lat.record(at, arrived);
            }
            None => stream_lat.problem("missing from the stream"),
        }
        match p.seq.and_then(|seq| first_attempts.get(&seq)) {
            Some(&arrived) => delivery.record(at, arrived),
            None if opts.skip_subscription => {}
            None => delivery.problem("never delivered"),
        }
    }
    for _ in 0..stream.duplicates {
        stream_lat.problem("duplicate");
    }
    for _ in 0..stream.out_of_order {
        stream_lat.problem("out of seq order");
    }
    for _ in 0..stream.unreadable {
        stream_lat.problem("unreadable message");
    }
    let extra = stream
        .arrivals
        .keys()
        .filter(|id| !acked_ids.contains(id.as_str()))
        .count();
    for _ in 0..extra {
        stream_lat.problem("not one of the acknowledged events");
    }
    if let Some(ended) = stream.ended {
        stream_lat.problem(ended);
    }
    let delivery_attempts = receiver.log.attempts.load(Ordering::Relaxed);
    let unique = first_attempts.len() as u64;
    if delivery_attempts > unique {
        for _ in 0..delivery_attempts - unique {
            delivery.problem("repeated attempt");
        }
    }
    Ok(LatencyReport {
        label: label.into(),
        rate: opts.rate,
        window,
        posted: posted.len() as u64,
        acked,
        post_errors,
        ack,
        generator_lag,
        min_waiter_lead,
        waiter,
        stream: stream_lat,
        delivery,
        delivery_attempts,
        cpu,
        memory,
    })
}

/// The subscription's receiver, served by this process: answers 200 and notes the first
/// arrival of each `webhook-id` (`msg_mkio_relay_{seq}`).
struct Receiver {
    addr: SocketAddr,
    log: Arc<ReceiverLog>,
    cancel: CancellationToken,
}

#[derive(Default)]
struct ReceiverLog {
    first: Mutex<HashMap<i64, Instant>>,
    attempts: AtomicU64,
    unique: AtomicU64,
}

impl Receiver {
    async fn start() -> anyhow::Result<Self> {
        async fn hook(State(log): State<Arc<ReceiverLog>>, headers: HeaderMap, _body: Bytes) {
            let now = Instant::now();
            log.attempts.fetch_add(1, Ordering::Relaxed);
            let seq = headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("msg_mkio_relay_"))
                .and_then(|v| v.parse::<i64>().ok());
            if let Some(seq) = seq {
                let mut first = log.first.lock().expect("receiver log");
                // Keep the first attempt's time.
                if let Entry::Vacant(slot) = first.entry(seq) {
                    slot.insert(now);
                    log.unique.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let log = Arc::new(ReceiverLog::default());
        let app = Router::new()
            .route(RECEIVER_PATH, post(hook))
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("the receiver cannot listen")?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                eprintln!("bench_fanout: the receiver stopped: {e}");
            }
        });
        Ok(Self { addr, log, cancel })
    }
}

// ---------------------------------------------------------------------------------------------
// Part B: capacity

/// What part B measured.
struct CapacityReport {
    label: String,
    idle: Memory,
    idle_sockets: u64,
    connected: Memory,
    connected_sockets: u64,
    after: Memory,
    sse_asked: u64,
    sse_open: u64,
    sse_connect_time: Duration,
    sse_connect: Lat,
    waiters_asked: u64,
    waiters_open: u64,
    waiter_connect_time: Duration,
    errors: BTreeMap<String, u64>,
    events: u64,
    posted_in: Duration,
    /// Streams that received every broadcast event, some, none.
    streams_complete: u64,
    streams_partial: u64,
    streams_none: u64,
    stream_problems: BTreeMap<String, u64>,
    stream: Lat,
    /// From the first broadcast POST until the last stream had every event.
    fanout_done: Option<Duration>,
    waiter: Lat,
    daemon_cpu_connect: Option<f64>,
    daemon_cpu_broadcast: Option<f64>,
    /// Cores busy from the first broadcast POST until everyone had everything (or the window
    /// ended): tells a saturated machine from a slow daemon.
    broadcast_cpu: CpuUse,
}

/// State shared by part B's client tasks.
struct Capacity {
    api: SocketAddr,
    sources: Vec<IpAddr>,
    cancel: CancellationToken,
    slots: Semaphore,
    sse_open: AtomicU64,
    sse_failed: AtomicU64,
    waiters_open: AtomicU64,
    waiters_failed: AtomicU64,
    /// Stream messages received, all clients together.
    received: AtomicU64,
    connect_us: Mutex<Histogram<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Per waiter: when its answer arrived, and whether it said `condition_met: true`.
    answers: Vec<OnceLock<(Instant, Result<(), String>)>>,
}

impl Capacity {
    fn source(&self, i: u64) -> Option<IpAddr> {
        if self.sources.is_empty() {
            None
        } else {
            Some(self.sources[i as usize % self.sources.len()])
        }
    }

    fn error(&self, kind: String) {
        *self
            .errors
            .lock()
            .expect("error tally")
            .entry(kind)
            .or_default() += 1;
    }
}

async fn capacity_stream(shared: Arc<Capacity>, i: u64) -> Vec<(i64, Instant)> {
    let mut got = Vec::new();
    let opened = {
        let Ok(_permit) = shared.slots.acquire().await else {
            return got;
        };
        let started = Instant::now();
        let opened = tokio::select! {
            () = shared.cancel.cancelled() => return got,
            opened = open_stream(shared.api, shared.source(i)) => opened,
        };
        if opened.is_ok() {
            let us = started.elapsed().as_micros() as u64;
            let mut h = shared.connect_us.lock().expect("connect histogram");
            h.saturating_record(us.max(1));
        }
        opened
    };
    let (sender, mut body) = match opened {
        Ok(opened) => {
            shared.sse_open.fetch_add(1, Ordering::Relaxed);
            opened
        }
        Err(e) => {
            shared.sse_failed.fetch_add(1, Ordering::Relaxed);
            shared.error(format!("stream open: {e:#}"));
            return got;
        }
    };
    let mut parser = SseParser::new(false);
    loop {
        let frame = tokio::select! {
            () = shared.cancel.cancelled() => break,
            frame = body.frame() => frame,
        };
        match frame {
            Some(Ok(frame)) => {
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                let now = Instant::now();
                parser.feed(data, |seq, _| {
                    if let Some(seq) = seq {
                        got.push((seq, now));
                        shared.received.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            Some(Err(e)) => {
                shared.error(format!("stream read: {e}"));
                break;
            }
            None => {
                shared.error("stream ended by the daemon".into());
                break;
            }
        }
    }
    drop(sender);
    got
}

async fn capacity_waiter(shared: Arc<Capacity>, i: u64, job: String) {
    let path = format!("/v1/jobs/{PROJECT}/{TRANSFORM}/{job}?wait={CAPACITY_WAIT}");
    let sent = {
        let Ok(_permit) = shared.slots.acquire().await else {
            return;
        };
        let connected = tokio::select! {
            () = shared.cancel.cancelled() => return,
            c = connect(shared.api, shared.source(i)) => c,
        };
        let mut sender = match connected {
            Ok(sender) => sender,
            Err(e) => {
                shared.waiters_failed.fetch_add(1, Ordering::Relaxed);
                shared.error(format!("waiter connect: {e:#}"));
                return;
            }
        };
        if let Err(e) = sender.ready().await {
            shared.waiters_failed.fetch_add(1, Ordering::Relaxed);
            shared.error(format!("waiter connect: {e}"));
            return;
        }
        // Queued on the connection at once; its task writes it.
        let response = sender.send_request(get_request(shared.api, &path));
        shared.waiters_open.fetch_add(1, Ordering::Relaxed);
        (sender, response)
    };
    let (sender, response) = sent;
    let answered = async {
        let response = response.await.map_err(|e| format!("waiter: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("waiter body: {e}"))?
            .to_bytes();
        let at = Instant::now();
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let verdict = if !status.is_success() {
            Err(format!("HTTP {}", status.as_u16()))
        } else if value["condition_met"] != json!(true) {
            Err("condition_met not true".to_owned())
        } else {
            Ok(())
        };
        Ok::<_, String>((at, verdict))
    };
    let outcome = tokio::select! {
        () = shared.cancel.cancelled() => return,
        outcome = answered => outcome,
    };
    match outcome {
        Ok(answer) => {
            let _ = shared.answers[i as usize].set(answer);
        }
        Err(e) => {
            let _ = shared.answers[i as usize].set((Instant::now(), Err(e.clone())));
            shared.error(e);
        }
    }
    drop(sender);
}

/// Polls `done` until it holds or `limit` passes; returns how long it took, `None` on time-out.
async fn wait_for(limit: Duration, done: impl Fn() -> bool) -> Option<Duration> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if done() {
            return Some(started.elapsed());
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        sleep(DRAIN_POLL).await;
    }
}

async fn bench_capacity(
    opts: &Opts,
    relay_bin: &Path,
    label: &str,
    db: &BenchDb,
    sources: &[IpAddr],
) -> anyhow::Result<CapacityReport> {
    let relay = start_relay(opts, relay_bin, label, db).await?;
    let pid = relay.server.pid();
    // The daemon and this process both inherit the same limit: check what they hold already.
    let (soft, _) = open_file_limit()?;
    let daemon_fds = open_fds(&pid.to_string());
    let own_fds = open_fds("self");
    let needed = opts.sse_clients + opts.waiters + daemon_fds.max(own_fds) + 16;
    ensure!(
        needed <= soft,
        "RLIMIT_NOFILE {soft} is too low: the daemon already has {daemon_fds} files open and \
         this process {own_fds}, plus {} connections",
        opts.sse_clients + opts.waiters
    );
    let names = Names::new();
    let shared = Arc::new(Capacity {
        api: relay.api,
        sources: sources.to_vec(),
        cancel: CancellationToken::new(),
        slots: Semaphore::new(opts.connect_concurrency.max(1)),
        sse_open: AtomicU64::new(0),
        sse_failed: AtomicU64::new(0),
        waiters_open: AtomicU64::new(0),
        waiters_failed: AtomicU64::new(0),
        received: AtomicU64::new(0),
        connect_us: Mutex::new(
            Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIG).expect("valid bounds"),
        ),
        errors: Mutex::new(BTreeMap::new()),
        answers: (0..opts.waiters).map(|_| OnceLock::new()).collect(),
    });
    let result = run_capacity(opts, label, &relay, &names, shared.clone()).await;
    // Close every client connection before stopping the daemon.
    shared.cancel.cancel();
    drop(relay);
    result
}

async fn run_capacity(
    opts: &Opts,
    label: &str,
    relay: &Relay,
    names: &Names,
    shared: Arc<Capacity>,
) -> anyhow::Result<CapacityReport> {
    let pid = relay.server.pid();
    let pid_text = pid.to_string();
    println!(
        "\n[{label}] part B: {} waiters, {} streams, then {} events",
        opts.waiters, opts.sse_clients, opts.broadcast_events
    );
    sleep(SETTLE).await;
    let idle = Memory::read(pid)?;
    let idle_sockets = socket_fds(&pid_text);
    let cpu_before_connect = process_cpu_seconds(&pid_text);

    let waiter_tasks: Vec<JoinHandle<()>> = (0..opts.waiters)
        .map(|i| tokio::spawn(capacity_waiter(shared.clone(), i, names.job("cw", i))))
        .collect();
    let waiter_connect_time = wait_for(CONNECT_PHASE_TIMEOUT, || {
        shared.waiters_open.load(Ordering::Relaxed) + shared.waiters_failed.load(Ordering::Relaxed)
            >= opts.waiters
    })
    .await
    .with_context(|| format!("waiters not all connected within {CONNECT_PHASE_TIMEOUT:?}"))?;
    println!(
        "  waiters: {} open, {} failed, in {:.1} s",
        shared.waiters_open.load(Ordering::Relaxed),
        shared.waiters_failed.load(Ordering::Relaxed),
        waiter_connect_time.as_secs_f64()
    );
    let stream_tasks: Vec<JoinHandle<Vec<(i64, Instant)>>> = (0..opts.sse_clients)
        .map(|i| tokio::spawn(capacity_stream(shared.clone(), opts.waiters + i)))
        .collect();
    let sse_connect_time = wait_for(CONNECT_PHASE_TIMEOUT, || {
        shared.sse_open.load(Ordering::Relaxed) + shared.sse_failed.load(Ordering::Relaxed)
            >= opts.sse_clients
    })
    .await
    .with_context(|| format!("streams not all opened within {CONNECT_PHASE_TIMEOUT:?}"))?;
    let sse_open = shared.sse_open.load(Ordering::Relaxed);
    let waiters_open = shared.waiters_open.load(Ordering::Relaxed);
    println!(
        "  streams: {sse_open} open (200 + headers), {} failed, in {:.1} s",
        shared.sse_failed.load(Ordering::Relaxed),
        sse_connect_time.as_secs_f64()
    );
    // Every client socket shows up as a socket of the daemon once accepted.
    let expected_sockets = idle_sockets + sse_open + waiters_open;
    let sockets_seen = wait_for(SOCKETS_TIMEOUT, || {
        socket_fds(&pid_text) >= expected_sockets
    })
    .await;
    if sockets_seen.is_none() {
        println!(
            "  the daemon shows {} sockets, expected {expected_sockets}",
            socket_fds(&pid_text)
        );
    }
    sleep(SETTLE).await;
    let connected = Memory::read(pid)?;
    let connected_sockets = socket_fds(&pid_text);
    let cpu_after_connect = process_cpu_seconds(&pid_text);
    println!(
        "  daemon: {connected_sockets} sockets, RSS {:.1} MiB, peak {:.1} MiB",
        mib(connected.current_kib),
        mib(connected.peak_kib)
    );

    // Broadcast: JobFinished for waited jobs spread over the whole range (first and last
    // included), or for fresh jobs once every waiter has one.
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let events = opts.broadcast_events;
    let targets: Vec<(Option<u64>, String)> = (0..events)
        .map(|k| {
            if k < opts.waiters && events <= opts.waiters {
                let i = if events > 1 {
                    k * (opts.waiters - 1) / (events - 1)
                } else {
                    0
                };
                (Some(i), names.job("cw", i))
            } else {
                (None, names.job("cx", k))
            }
        })
        .collect();
    let received_before = shared.received.load(Ordering::Relaxed);
    let cpu_before_broadcast = process_cpu_seconds(&pid_text);
    let cores_before_broadcast = CpuUse::sample(&pid_text);
    let broadcast_start = Instant::now();
    let mut acks: HashMap<i64, Instant> = HashMap::new();
    let mut waiter_acks: Vec<(u64, Instant)> = Vec::new();
    let mut post_errors = 0;
    for (k, (waiter, job)) in targets.iter().enumerate() {
        let posted = post_event(
            http.clone(),
            relay.ingest,
            names.event_id("ce", k as u64),
            job.clone(),
            Action::Finish(k as u64),
        )
        .await;
        match (posted.acked, posted.seq) {
            (Some(at), Some(seq)) => {
                acks.insert(seq, at);
                if let Some(i) = waiter {
                    waiter_acks.push((*i, at));
                }
            }
            _ => {
                post_errors += 1;
                shared.error(format!(
                    "broadcast POST: {}",
                    posted.error.unwrap_or_else(|| "no seq".into())
                ));
            }
        }
    }
    let posted_in = broadcast_start.elapsed();
    let expected_messages = received_before + sse_open * acks.len() as u64;
    let window = Duration::from_secs(opts.receive_seconds);
    let fanout_done = wait_for(window, || {
        shared.received.load(Ordering::Relaxed) >= expected_messages
            && waiter_acks
                .iter()
                .all(|(i, _)| shared.answers[*i as usize].get().is_some())
    })
    .await
    .map(|_| broadcast_start.elapsed());
    let cpu_after_broadcast = process_cpu_seconds(&pid_text);
    let broadcast_cpu = CpuUse::between(
        cores_before_broadcast,
        CpuUse::sample(&pid_text),
        broadcast_start.elapsed().as_secs_f64(),
    );
    let after = Memory::read(pid)?;
    println!(
        "  broadcast: {} events posted in {:.2} s ({post_errors} failed); {} of {} stream \
         messages within {} s",
        acks.len(),
        posted_in.as_secs_f64(),
        shared.received.load(Ordering::Relaxed) - received_before,
        sse_open * acks.len() as u64,
        opts.receive_seconds
    );

    // Stop the clients and collect what the streams saw.
    shared.cancel.cancel();
    let mut stream_lat = Lat::new(sse_open * acks.len() as u64);
    let mut problems = BTreeMap::new();
    let (mut complete, mut partial, mut none) = (0, 0, 0);
    let stop_deadline = tokio::time::Instant::now() + TASK_STOP_TIMEOUT;
    for task in stream_tasks {
        let got = match tokio::time::timeout_at(stop_deadline, task).await {
            Ok(Ok(got)) => got,
            Ok(Err(e)) => {
                *problems.entry(format!("task failed: {e}")).or_default() += 1;
                continue;
            }
            Err(_) => {
                *problems.entry("task did not stop".to_owned()).or_default() += 1;
                continue;
            }
        };
        let mut seen = HashSet::new();
        let mut last = 0;
        for (seq, at) in got {
            if seq <= last {
                *problems.entry("out of seq order".to_owned()).or_default() += 1;
            }
            last = last.max(seq);
            match acks.get(&seq) {
                Some(&ack) if seen.insert(seq) => stream_lat.record(ack, at),
                Some(_) => *problems.entry("duplicate".to_owned()).or_default() += 1,
                None => *problems.entry("unexpected event".to_owned()).or_default() += 1,
            }
        }
        match seen.len() {
            n if n == acks.len() => complete += 1,
            0 => none += 1,
            _ => partial += 1,
        }
    }
    for task in waiter_tasks {
        if timeout(TASK_STOP_TIMEOUT, task).await.is_err() {
            *problems
                .entry("waiter task did not stop".to_owned())
                .or_default() += 1;
        }
    }
    let mut waiter = Lat::new(waiter_acks.len() as u64);
    for (i, ack) in &waiter_acks {
        match shared.answers[*i as usize].get() {
            Some((at, Ok(()))) => waiter.record(*ack, *at),
            Some((_, Err(e))) => waiter.problem(e.clone()),
            None => waiter.problem(format!("no answer within {} s", opts.receive_seconds)),
        }
    }
    // Waiters that answered without their job being finished (time-outs, errors).
    let unexpected = shared
        .answers
        .iter()
        .enumerate()
        .filter(|(i, a)| a.get().is_some() && !waiter_acks.iter().any(|(w, _)| *w == *i as u64))
        .count();
    for _ in 0..unexpected {
        waiter.problem("an unsampled waiter answered");
    }
    let mut sse_connect = Lat::new(opts.sse_clients);
    sse_connect.hist = shared.connect_us.lock().expect("connect histogram").clone();
    let errors = shared.errors.lock().expect("error tally").clone();
    let cores = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    Ok(CapacityReport {
        label: label.into(),
        idle,
        idle_sockets,
        connected,
        connected_sockets,
        after,
        sse_asked: opts.sse_clients,
        sse_open,
        sse_connect_time,
        sse_connect,
        waiters_asked: opts.waiters,
        waiters_open,
        waiter_connect_time,
        errors,
        events: acks.len() as u64,
        posted_in,
        streams_complete: complete,
        streams_partial: partial,
        streams_none: none,
        stream_problems: problems,
        stream: stream_lat,
        fanout_done,
        waiter,
        daemon_cpu_connect: cores(cpu_before_connect, cpu_after_connect),
        daemon_cpu_broadcast: cores(cpu_before_broadcast, cpu_after_broadcast),
        broadcast_cpu,
    })
}

// ---------------------------------------------------------------------------------------------
// HTTP client pieces

/// One keep-alive HTTP/1.1 connection, optionally from a given loopback source address.
async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let stream = timeout(REQUEST_TIMEOUT, async {
        match source {
            None => TcpStream::connect(addr).await,
            Some(ip) => {
                let socket = TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(addr).await
            }
        }
    })
    .await
    .context("connect timed out")?
    .context("connect")?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Ends by itself when the sender and the response body are dropped.
    tokio::spawn(connection);
    Ok(sender)
}

fn get_request(addr: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header(HOST, addr.to_string())
        .body(Empty::new())
        .expect("a valid request")
}

/// Opens `/v1/events/stream` (from now): returns once the 200 and its headers have arrived.
async fn open_stream(
    api: SocketAddr,
    source: Option<IpAddr>,
) -> anyhow::Result<(SendRequest<Empty<Bytes>>, Incoming)> {
    let mut sender = connect(api, source).await?;
    let response = timeout(
        REQUEST_TIMEOUT,
        sender.send_request(get_request(api, STREAM_PATH)),
    )
    .await
    .context("no response headers in time")??;
    ensure!(response.status() == 200, "HTTP {}", response.status());
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ensure!(
        content_type.starts_with("text/event-stream"),
        "content-type {content_type:?}"
    );
    Ok((sender, response.into_body()))
}

/// A minimal server-sent events parser: calls back with each message's `id` (a seq) and, when
/// asked to keep it, its `data`.
struct SseParser {
    buf: Vec<u8>,
    id: Option<i64>,
    data: String,
    keep_data: bool,
    any: bool,
}

impl SseParser {
    fn new(keep_data: bool) -> Self {
        Self {
            buf: Vec::new(),
            id: None,
            data: String::new(),
            keep_data,
            any: false,
        }
    }

    fn feed(&mut self, chunk: &[u8], mut on_message: impl FnMut(Option<i64>, &str)) {
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(nl) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let line = &self.buf[start..start + nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                if self.any {
                    on_message(self.id.take(), &self.data);
                }
                self.id = None;
                self.data.clear();
                self.any = false;
            } else if let Some(value) = line.strip_prefix(b"id:") {
                self.id = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok());
                self.any = true;
            } else if let Some(value) = line.strip_prefix(b"data:") {
                self.any = true;
                if self.keep_data {
                    let value = value.strip_prefix(b" ").unwrap_or(value);
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(&String::from_utf8_lossy(value));
                }
            }
            start += nl + 1;
        }
        self.buf.drain(..start);
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

/// Open file descriptors of a process (`self` or a PID).
fn open_fds(pid: &str) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

/// Open sockets of a process: accepted connections, listeners, database connections.
fn socket_fds(pid: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
        })
        .count() as u64
}

// ---------------------------------------------------------------------------------------------
// Output

fn print_problems(problems: &BTreeMap<String, u64>) {
    for (kind, n) in problems {
        println!("      {n:>8} x {kind}");
    }
}

fn print_lat(name: &str, lat: &Lat) {
    println!("  {name:<23}{}", lat.line());
    if let Some(line) = lat.slice_line() {
        println!("      {line}");
    }
    if lat.before_ack > 0 {
        println!(
            "      {:>8} arrived before this program had read the POST's answer (counted as 0)",
            lat.before_ack
        );
    }
    print_problems(&lat.problems);
}

fn print_latency(r: &LatencyReport) {
    println!("\n== part A, latency: {} ==", r.label);
    println!(
        "  load                  {} of {} events acknowledged in {:.1} s ({:.0}/s, target {}/s); \
         generator at most {:.1} ms behind schedule",
        r.acked,
        r.posted,
        r.window.as_secs_f64(),
        r.acked as f64 / r.window.as_secs_f64(),
        r.rate,
        r.generator_lag.as_secs_f64() * 1000.0
    );
    print_problems(&r.post_errors);
    print_lat("POST ack", &r.ack);
    print_lat("waiter (ack -> answer)", &r.waiter);
    if let Some(lead) = r.min_waiter_lead {
        println!(
            "      every waiter was sent at least {:.0} ms before its JobFinished",
            lead.as_secs_f64() * 1000.0
        );
    }
    print_lat("stream (ack -> SSE)", &r.stream);
    print_lat("delivery (1st attempt)", &r.delivery);
    println!(
        "      {} attempts received for {} events",
        r.delivery_attempts,
        r.delivery.count()
    );
    println!(
        "  cpu (cores)           daemon {}   bench {}   whole machine {} (+{} stolen)",
        cores(r.cpu.server),
        cores(r.cpu.bench),
        cores(r.cpu.machine_busy),
        cores(r.cpu.machine_steal)
    );
    println!(
        "  daemon RSS            peak (VmHWM) {:.1} MiB   current (VmRSS) {:.1} MiB",
        mib(r.memory.peak_kib),
        mib(r.memory.current_kib)
    );
}

fn print_capacity(r: &CapacityReport) {
    println!("\n== part B, capacity: {} ==", r.label);
    println!(
        "  idle daemon           RSS {:.1} MiB (peak {:.1}), {} sockets",
        mib(r.idle.current_kib),
        mib(r.idle.peak_kib),
        r.idle_sockets
    );
    println!(
        "  waiters               {} of {} open in {:.1} s",
        r.waiters_open,
        r.waiters_asked,
        r.waiter_connect_time.as_secs_f64()
    );
    println!(
        "  streams               {} of {} open in {:.1} s",
        r.sse_open,
        r.sse_asked,
        r.sse_connect_time.as_secs_f64()
    );
    print_lat("stream open (->200)", &r.sse_connect);
    println!(
        "  all connected         RSS {:.1} MiB (peak {:.1}), {} sockets; {:.0} KiB per \
         connection over idle; daemon CPU {} s while connecting",
        mib(r.connected.current_kib),
        mib(r.connected.peak_kib),
        r.connected_sockets,
        (r.connected.current_kib.saturating_sub(r.idle.current_kib)) as f64
            / (r.sse_open + r.waiters_open).max(1) as f64,
        cores(r.daemon_cpu_connect)
    );
    print_problems(&r.errors);
    println!(
        "  broadcast             {} events posted in {:.2} s; everyone had everything {}; \
         daemon CPU {} s",
        r.events,
        r.posted_in.as_secs_f64(),
        r.fanout_done
            .map_or("NOT within the window".into(), |d| format!(
                "{:.2} s after the first POST",
                d.as_secs_f64()
            )),
        cores(r.daemon_cpu_broadcast)
    );
    println!(
        "  cpu (cores)           daemon {}   bench {}   whole machine {} (+{} stolen), \
         during the broadcast",
        cores(r.broadcast_cpu.server),
        cores(r.broadcast_cpu.bench),
        cores(r.broadcast_cpu.machine_busy),
        cores(r.broadcast_cpu.machine_steal)
    );
    println!(
        "  streams               {} got all {} events, {} some, {} none",
        r.streams_complete, r.events, r.streams_partial, r.streams_none
    );
    print_problems(&r.stream_problems);
    print_lat("stream (ack -> SSE)", &r.stream);
    print_lat("sampled waiters", &r.waiter);
    println!(
        "  after broadcast       RSS {:.1} MiB, peak (VmHWM) {:.1} MiB",
        mib(r.after.current_kib),
        mib(r.after.peak_kib)
    );
}

fn print_summary(latency: &[LatencyReport], capacity: &[CapacityReport]) {
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    let clean = |lat: &Lat| lat.problems.is_empty() && lat.count() == lat.expected;
    if !latency.is_empty() {
        println!(
            "\n| part A | events/s | waiter p50 / p99 / max ms | stream p50 / p99 / max ms \
             | delivery p50 / p99 / max ms | problems | daemon cores | peak RSS MiB |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for r in latency {
            let trio =
                |l: &Lat| format!("{:.2} / {:.2} / {:.2}", l.ms(0.5), l.ms(0.99), l.max_ms());
            let problems: u64 = [&r.waiter, &r.stream, &r.delivery]
                .iter()
                .map(|l| l.problems.values().sum::<u64>())
                .sum::<u64>()
                + r.post_errors.values().sum::<u64>();
            println!(
                "| {} | {:.0} | {} | {} | {} | {} | {} | {:.1} |",
                r.label,
                r.acked as f64 / r.window.as_secs_f64(),
                trio(&r.waiter),
                trio(&r.stream),
                trio(&r.delivery),
                problems,
                cores(r.cpu.server),
                mib(r.memory.peak_kib)
            );
        }
        for r in latency {
            println!("\ntargets for {} (part A):", r.label);
            let targets = [
                ("waiter", &r.waiter, TARGET_WAITER_P99_MS),
                ("stream", &r.stream, TARGET_STREAM_P99_MS),
                (
                    "first delivery attempt",
                    &r.delivery,
                    TARGET_DELIVERY_P99_MS,
                ),
            ];
            for (name, lat, target) in targets {
                if lat.expected == 0 {
                    continue;
                }
                println!(
                    "  {name} p99 <= {target} ms: {:.2} ms, {} of {} measured -> {}",
                    lat.ms(0.99),
                    lat.count(),
                    lat.expected,
                    verdict(lat.ms(0.99) <= target && clean(lat))
                );
            }
        }
    }
    if !capacity.is_empty() {
        println!(
            "\n| part B | streams + waiters open | idle RSS MiB | connected RSS MiB | peak RSS MiB \
             | streams with every event | stream p50 / p99 / max ms | waiters answered \
             | everything delivered after s |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in capacity {
            println!(
                "| {} | {} + {} | {:.1} | {:.1} | {:.1} | {} of {} | {:.0} / {:.0} / {:.0} \
                 | {} of {} | {} |",
                r.label,
                r.sse_open,
                r.waiters_open,
                mib(r.idle.current_kib),
                mib(r.connected.current_kib),
                mib(r.after.peak_kib),
                r.streams_complete,
                r.sse_open,
                r.stream.ms(0.5),
                r.stream.ms(0.99),
                r.stream.max_ms(),
                r.waiter.count(),
                r.waiter.expected,
                r.fanout_done
                    .map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64())),
            );
        }
    }
    for r in capacity {
        println!("\ntargets for {} (part B):", r.label);
        let peak = mib(r.after.peak_kib);
        println!(
            "  {} streams + {} waiters open (asked {} + {}), peak RSS < {TARGET_RSS_MIB} MiB: \
             {peak:.1} MiB (idle {:.1}) -> {}",
            r.sse_open,
            r.waiters_open,
            r.sse_asked,
            r.waiters_asked,
            mib(r.idle.current_kib),
            verdict(
                peak < TARGET_RSS_MIB
                    && r.sse_open == r.sse_asked
                    && r.waiters_open == r.waiters_asked
            )
        );
        println!(
            "  every stream got every event: {} of {} -> {}",
            r.streams_complete,
            r.sse_open,
            verdict(r.streams_complete == r.sse_open && r.stream_problems.is_empty())
        );
        println!(
            "  every sampled waiter answered: {} of {} -> {}",
            r.waiter.count(),
            r.waiter.expected,
            verdict(clean(&r.waiter))
        );
    }
}

//! Ingest benchmark: drives authenticated `MediaKind.JobFinished` webhooks over keep-alive
//! connections at (a) a no-storage axum baseline, (b) mkio-relay on SQLite and, with
//! `--postgres URL`, (c) mkio-relay on Postgres, and prints requests/s, latency percentiles,
//! errors, CPU use, the daemon's memory and a durability check. A program that prints numbers,
//! not a test: see docs/BENCHMARKS.md.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example bench_ingest -- [--connections 64] [--seconds 10]
//!     [--warmup 2] [--rounds 1] [--postgres postgres://postgres@127.0.0.1:5432/postgres]
//! ```
//!
//! With `--rounds N` the targets run one after the other N times (baseline, relay, baseline,
//! relay, ...), each round's ratio is taken against that round's baseline, and the throughput
//! target is judged on the median ratio: on a shared machine the baseline alone moves by a
//! third between consecutive runs, so one pair says little.
//!
//! Every server runs in its own child process (the baseline is this program re-executed with
//! `--serve-baseline ADDR`), so the load generator never shares a runtime with what it loads.

mod support;

use anyhow::{ensure, Context};
use axum::body::Bytes;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Connection;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tokio::net::TcpStream;
use tokio::time::{sleep, sleep_until, timeout};

/// The shared secret the relay is started with and every request presents.
const SECRET: &str = "bench-secret-4f1c9a";
const WEBHOOK_PATH: &str = "/webhooks/mkio";
/// A request (or a connect) slower than this is counted as an error, and the connection is
/// replaced.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// Bound on the whole durability check (it pages through the event log).
const VERIFY_TIMEOUT: Duration = Duration::from_secs(120);
const VERIFY_PAGE: u32 = 1000;
/// Latency histogram range in microseconds (1 µs to 60 s, 3 significant digits).
const HIST_MAX_US: u64 = 60_000_000;
const HIST_SIGFIG: u8 = 3;
/// The targets this benchmark reports against (docs/BENCHMARKS.md).
const TARGET_RATIO: f64 = 0.25;
const TARGET_P99_MS: f64 = 25.0;
const TARGET_RSS_MIB: f64 = 100.0;

/// A realistic JobFinished CloudEvent (after tests/fixtures/job-finished.json), about 1.5 KB
/// once compacted. `@ID@` and `@JOB@` are replaced per request so each is a new event about a
/// new job.
const EVENT_TEMPLATE: &str = r##"{
  "specversion": "1.0",
  "id": "@ID@",
  "type": "MediaKind.JobFinished",
  "source": "/api/v1/projects/studio-prod/transforms/h264-ladder/jobs/@JOB@",
  "time": "2025-03-14T09:09:47.305118Z",
  "datacontenttype": "application/json",
  "data": {
    "projectName": "studio-prod",
    "previousState": "Processing",
    "state": "Finished",
    "resource": {
      "name": "@JOB@",
      "id": "/subscriptions/0f3d2b7e-51a4-4c9e-a6d3-93b1e84f27c5/resourceGroups/default/providers/Microsoft.Media/mediaservices/studio-prod/transforms/h264-ladder/jobs/@JOB@",
      "type": "Microsoft.Media/mediaservices/transforms/jobs",
      "properties": {
        "created": "2025-03-14T09:00:05.412377Z",
        "description": "H.264 ladder for episode 117",
        "lastModified": "2025-03-14T09:09:47.290455Z",
        "priority": "Normal",
        "state": "Finished",
        "correlationData": {"orderId": "ORD-20250314-0117", "workflow": "vod-publish"},
        "input": {"@odata.type": "#Microsoft.Media.JobInputAsset", "assetName": "src-ep117-master"},
        "outputs": [
          {
            "@odata.type": "#Microsoft.Media.JobOutputAsset",
            "label": "ladder",
            "assetName": "@JOB@-ladder",
            "state": "Finished",
            "progress": 100,
            "startTime": "2025-03-14T09:02:11.000000Z",
            "endTime": "2025-03-14T09:09:46.000000Z"
          },
          {
            "@odata.type": "#Microsoft.Media.JobOutputAsset",
            "label": "thumbnails",
            "assetName": "@JOB@-thumbnails",
            "state": "Finished",
            "progress": 100
          }
        ],
        "startTime": "2025-03-14T09:02:11.000000Z",
        "endTime": "2025-03-14T09:09:46.000000Z"
      },
      "systemData": {
        "createdBy": "vod-pipeline@example.com",
        "createdAt": "2025-03-14T09:00:05.412377Z",
        "lastModifiedAt": "2025-03-14T09:09:47.290455Z"
      }
    }
  }
}"##;

#[derive(Debug, Parser)]
#[command(about = "Ingest benchmark: no-storage baseline vs mkio-relay (SQLite, Postgres)")]
struct Opts {
    /// Concurrent keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured seconds per target.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds per target, loaded but not counted.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Rounds of every target, interleaved; the throughput target is judged on the median of
    /// the rounds' ratios (each against the baseline of its own round).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Also bench mkio-relay on Postgres: an admin URL (a fresh database is created beside it
    /// and dropped after), e.g. postgres://postgres@127.0.0.1:5432/postgres.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// Skip the SQLite target (for example to bench Postgres alone).
    #[arg(long)]
    skip_sqlite: bool,
    /// The mkio-relay binary; default: `mkio-relay` beside this example's directory, i.e.
    /// target/release/mkio-relay.
    #[arg(long, value_name = "PATH")]
    relay_bin: Option<PathBuf>,
    /// Extra environment for the daemon, `KEY=VALUE`, repeatable (for experiments, e.g.
    /// `--relay-env RUST_LOG=mkio_relay::ingest::writer=debug`).
    #[arg(long, value_name = "KEY=VALUE")]
    relay_env: Vec<String>,
    /// Internal: serve the no-storage baseline on ADDR (what the benchmark re-executes itself
    /// with).
    #[arg(long, hide = true, value_name = "ADDR")]
    serve_baseline: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    let result = match opts.serve_baseline {
        Some(addr) => serve_baseline(addr),
        None => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.client_threads.max(1))
            .enable_all()
            .build()
            .context("cannot start the load generator's runtime")
            .and_then(|rt| rt.block_on(run(&opts))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_ingest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The baseline server (child process)

/// A POST handler that reads the body and answers a small JSON, on a default multi-thread
/// runtime like the daemon's.
fn serve_baseline(addr: SocketAddr) -> anyhow::Result<()> {
    async fn receive(body: Bytes) -> Json<Value> {
        Json(json!({"accepted": 1, "duplicates": 0, "bytes": body.len()}))
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let app = Router::new()
            .route(WEBHOOK_PATH, post(receive))
            .route(READY_PATH, get(|| async { "ready" }));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("baseline cannot listen on {addr}"))?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Orchestration

/// What one target measured.
struct Report {
    label: String,
    load: LoadResult,
    memory: Memory,
    durability: Option<String>,
}

async fn run(opts: &Opts) -> anyhow::Result<()> {
    ensure!(opts.connections > 0, "--connections must be at least 1");
    ensure!(opts.seconds > 0, "--seconds must be at least 1");
    ensure!(opts.rounds > 0, "--rounds must be at least 1");
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
    println!(
        "bench_ingest: {} connections, {} s warm-up + {} s measured per target, \
         {}-byte JobFinished webhooks, load generator on {} thread(s), {} CPUs",
        opts.connections,
        opts.warmup,
        opts.seconds,
        Payloads::new().body(0).len(),
        opts.client_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!("relay binary: {}", relay_bin.display());

    let mut rounds = Vec::with_capacity(opts.rounds);
    for round in 1..=opts.rounds {
        if opts.rounds > 1 {
            println!("\n## round {round} of {}", opts.rounds);
        }
        let mut reports = Vec::new();
        reports.push(bench_baseline(opts).await?);
        if !opts.skip_sqlite {
            let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
            let url = format!("sqlite:{}", dir.path().join("bench.db").display());
            reports
                .push(bench_relay(opts, &relay_bin, "mkio-relay sqlite", &url, dir.path()).await?);
        }
        if let Some(admin_url) = &opts.postgres {
            reports.push(bench_postgres(opts, &relay_bin, admin_url).await?);
        }
        print_table(&reports);
        rounds.push(reports);
    }
    print_targets(&rounds);
    Ok(())
}

/// `target/release/mkio-relay` when this example runs as `target/release/examples/bench_ingest`.
fn default_relay_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate this executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("this executable has no grandparent directory")?;
    Ok(profile_dir.join(format!("mkio-relay{}", std::env::consts::EXE_SUFFIX)))
}

async fn bench_baseline(opts: &Opts) -> anyhow::Result<Report> {
    let label = "baseline (axum, no storage)";
    let addr = free_addr()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--serve-baseline").arg(addr.to_string());
    let mut server = ChildGuard::spawn(label, cmd)?;
    wait_ready(&mut server, addr).await?;
    let load = run_load(opts, addr, server.pid()).await;
    let memory = Memory::read(server.pid())?;
    server.stop();
    let report = Report {
        label: label.into(),
        load,
        memory,
        durability: None,
    };
    print_report(&report);
    Ok(report)
}

async fn bench_relay(
    opts: &Opts,
    relay_bin: &Path,
    label: &str,
    database_url: &str,
    work_dir: &Path,
) -> anyhow::Result<Report> {
    let ingest = free_addr()?;
    let api = free_addr()?;
    let mut cmd = Command::new(relay_bin);
    // Only what is set here configures the daemon.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MKIO_RELAY_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(work_dir)
        .env("MKIO_RELAY_DATABASE_URL", database_url)
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
    let load = run_load(opts, ingest, server.pid()).await;
    let memory = Memory::read(server.pid())?;
    let durability = match timeout(VERIFY_TIMEOUT, check_durability(api, &load.tally)).await {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(e)) => format!("FAILED: {e:#}"),
        Err(_) => format!("FAILED: not finished within {VERIFY_TIMEOUT:?}"),
    };
    server.stop();
    let report = Report {
        label: label.into(),
        load,
        memory,
        durability: Some(durability),
    };
    print_report(&report);
    Ok(report)
}

/// Creates `bench_<pid>` beside the admin URL's database, benches the relay on it, drops it.
async fn bench_postgres(opts: &Opts, relay_bin: &Path, admin_url: &str) -> anyhow::Result<Report> {
    let db_name = format!("bench_{}", std::process::id());
    let mut url = url::Url::parse(admin_url).context("--postgres is not a URL")?;
    url.set_path(&db_name);
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("cannot connect to {admin_url}"))?;
    sqlx::query(&format!("CREATE DATABASE {db_name}"))
        .execute(&mut admin)
        .await
        .with_context(|| format!("cannot create database {db_name}"))?;
    let work_dir = tempfile::tempdir()?;
    let result = bench_relay(
        opts,
        relay_bin,
        "mkio-relay postgres",
        url.as_str(),
        work_dir.path(),
    )
    .await;
    // The daemon has stopped; FORCE also ends any backend the kill left behind.
    let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
        .execute(&mut admin)
        .await;
    if let Err(e) = dropped {
        eprintln!("bench_ingest: could not drop database {db_name}: {e}");
    }
    result
}

// ---------------------------------------------------------------------------------------------
// Load generation

/// Request bodies: the compacted template, with a unique event id and job name per request.
struct Payloads {
    template: String,
    tag: String,
}

impl Payloads {
    fn new() -> Self {
        let value: Value = serde_json::from_str(EVENT_TEMPLATE).expect("the template is JSON");
        Self {
            template: value.to_string(),
            tag: format!("{:08x}", std::process::id()),
        }
    }

    fn body(&self, n: u64) -> String {
        self.template
            .replace("@ID@", &format!("bench-{}-{n:012}", self.tag))
            .replace("@JOB@", &format!("job-{n:09}"))
    }
}

/// What the connections saw, merged.
struct Tally {
    /// Latency of 2xx answers completed inside the measured window, in µs.
    latency_us: Histogram<u64>,
    measured_ok: u64,
    measured_errors: u64,
    /// Every 2xx answer, warm-up included: each acknowledged one stored event.
    total_ok: u64,
    /// Sum of `accepted` and highest `seq` in the relay's answers.
    accepted: u64,
    max_seq: i64,
    /// Every failure of the whole run by kind: `HTTP 503`, `timeout`, `connect: ...`.
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIG)
                .expect("valid histogram bounds"),
            measured_ok: 0,
            measured_errors: 0,
            total_ok: 0,
            accepted: 0,
            max_seq: 0,
            errors: BTreeMap::new(),
        }
    }

    fn error(&mut self, kind: String, measured: bool) {
        *self.errors.entry(kind).or_default() += 1;
        if measured {
            self.measured_errors += 1;
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms with the same bounds");
        self.measured_ok += other.measured_ok;
        self.measured_errors += other.measured_errors;
        self.total_ok += other.total_ok;
        self.accepted += other.accepted;
        self.max_seq = self.max_seq.max(other.max_seq);
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
    }

    fn total_errors(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The part of an ingest answer the benchmark reads (the baseline's has no `events`).
#[derive(Deserialize, Default)]
#[serde(default)]
struct IngestAnswer {
    accepted: u64,
    events: Vec<AnsweredEvent>,
}

#[derive(Deserialize)]
struct AnsweredEvent {
    seq: Option<i64>,
}

struct LoadPlan {
    addr: SocketAddr,
    payloads: Payloads,
    next: AtomicU64,
    measure_from: tokio::time::Instant,
    end: tokio::time::Instant,
}

struct LoadResult {
    tally: Tally,
    window: Duration,
    cpu: CpuUse,
}

impl LoadResult {
    fn rps(&self) -> f64 {
        self.tally.measured_ok as f64 / self.window.as_secs_f64()
    }

    fn percentile_ms(&self, q: f64) -> f64 {
        self.tally.latency_us.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs `connections` workers against `addr` for warm-up + measured seconds, then waits for
/// their last requests (each bounded by [`REQUEST_TIMEOUT`]).
async fn run_load(opts: &Opts, addr: SocketAddr, server_pid: u32) -> LoadResult {
    let now = tokio::time::Instant::now();
    let measure_from = now + Duration::from_secs(opts.warmup);
    let window = Duration::from_secs(opts.seconds);
    let plan = Arc::new(LoadPlan {
        addr,
        payloads: Payloads::new(),
        next: AtomicU64::new(0),
        measure_from,
        end: measure_from + window,
    });
    let workers: Vec<_> = (0..opts.connections)
        .map(|_| tokio::spawn(connection_worker(plan.clone())))
        .collect();
    let cpu = sample_cpu(&plan, server_pid).await;
    let mut tally = Tally::new();
    for worker in workers {
        match worker.await {
            Ok(t) => tally.merge(t),
            Err(e) => tally.error(format!("worker failed: {e}"), true),
        }
    }
    LoadResult { tally, window, cpu }
}

/// CPU used by the server, by this process and by the whole machine during the measured
/// window: tells a saturated machine from a server that waits on itself.
async fn sample_cpu(plan: &LoadPlan, server_pid: u32) -> CpuUse {
    let server_pid = server_pid.to_string();
    sleep_until(plan.measure_from).await;
    let started = Instant::now();
    let before = CpuUse::sample(&server_pid);
    sleep_until(plan.end).await;
    let after = CpuUse::sample(&server_pid);
    CpuUse::between(before, after, started.elapsed().as_secs_f64())
}

/// One keep-alive connection with one request in flight at a time, until the plan's end.
async fn connection_worker(plan: Arc<LoadPlan>) -> Tally {
    let mut tally = Tally::new();
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    while tokio::time::Instant::now() < plan.end {
        let sender = match conn.as_mut() {
            Some(sender) => sender,
            None => match connect(plan.addr).await {
                Ok(sender) => conn.insert(sender),
                Err(e) => {
                    let measured = tokio::time::Instant::now() >= plan.measure_from;
                    tally.error(format!("connect: {e:#}"), measured);
                    sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            },
        };
        let n = plan.next.fetch_add(1, Ordering::Relaxed);
        let request = webhook_request(plan.addr, plan.payloads.body(n));
        let started = tokio::time::Instant::now();
        let outcome = timeout(REQUEST_TIMEOUT, exchange(sender, request)).await;
        let done = tokio::time::Instant::now();
        let measured = done >= plan.measure_from && done <= plan.end;
        match outcome {
            Ok(Ok((status, body))) if status.is_success() => {
                tally.total_ok += 1;
                let answer: IngestAnswer = serde_json::from_slice(&body).unwrap_or_default();
                tally.accepted += answer.accepted;
                let top = answer.events.iter().filter_map(|e| e.seq).max();
                tally.max_seq = tally.max_seq.max(top.unwrap_or(0));
                if measured {
                    tally.measured_ok += 1;
                    let us = (done - started).as_micros() as u64;
                    tally.latency_us.saturating_record(us.max(1));
                }
            }
            Ok(Ok((status, _))) => tally.error(format!("HTTP {}", status.as_u16()), measured),
            Ok(Err(e)) => {
                tally.error(format!("transport: {e}"), measured);
                conn = None;
            }
            Err(_) => {
                tally.error(format!("timeout after {REQUEST_TIMEOUT:?}"), measured);
                conn = None;
            }
        }
    }
    tally
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = timeout(REQUEST_TIMEOUT, TcpStream::connect(addr))
        .await
        .context("timed out")??;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Ends by itself when the sender is dropped or the server closes the connection.
    tokio::spawn(connection);
    Ok(sender)
}

fn webhook_request(addr: SocketAddr, body: String) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri(WEBHOOK_PATH)
        .header(HOST, addr.to_string())
        .header(AUTHORIZATION, format!("Bearer {SECRET}"))
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request")
}

async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<(hyper::StatusCode, Bytes), hyper::Error> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

// ---------------------------------------------------------------------------------------------
// Durability check

#[derive(Deserialize)]
struct EventsPage {
    events: Vec<PagedEvent>,
    next_after: i64,
}

#[derive(Deserialize)]
struct PagedEvent {
    seq: i64,
}

/// After the run, with the daemon still up: the API lists events, the log holds exactly one
/// event per 2xx answer, and nothing beyond the highest acknowledged `seq`.
async fn check_durability(api: SocketAddr, tally: &Tally) -> anyhow::Result<String> {
    let client = reqwest::Client::builder().timeout(VERIFY_TIMEOUT).build()?;
    let page = |after: i64, limit: u32| {
        let client = client.clone();
        async move {
            let url = format!("http://{api}/v1/events?after={after}&limit={limit}");
            let resp = client.get(&url).send().await?;
            ensure!(resp.status().is_success(), "GET {url}: {}", resp.status());
            Ok::<_, anyhow::Error>(resp.json::<EventsPage>().await?)
        }
    };
    let first = page(0, 1).await.context("GET /v1/events?after=0&limit=1")?;
    ensure!(
        first.events.len() == 1,
        "GET /v1/events?after=0&limit=1 returned {} events",
        first.events.len()
    );
    let mut stored: u64 = 0;
    let mut highest = 0;
    let mut after = 0;
    loop {
        let p = page(after, VERIFY_PAGE).await?;
        if p.events.is_empty() {
            break;
        }
        stored += p.events.len() as u64;
        highest = p.events.iter().map(|e| e.seq).max().unwrap_or(highest);
        after = p.next_after;
    }
    let ok =
        stored == tally.total_ok && tally.accepted == tally.total_ok && highest == tally.max_seq;
    Ok(format!(
        "{}: {} events stored (highest seq {}), {} 2xx answers (accepted {}, highest seq {})",
        if ok { "OK" } else { "MISMATCH" },
        stored,
        highest,
        tally.total_ok,
        tally.accepted,
        tally.max_seq,
    ))
}

// ---------------------------------------------------------------------------------------------
// Output

fn print_report(r: &Report) {
    let l = &r.load;
    let t = &l.tally;
    println!("\n== {} ==", r.label);
    println!(
        "  requests/s   {:.0}  ({} 2xx in {:.1} s)",
        l.rps(),
        t.measured_ok,
        l.window.as_secs_f64()
    );
    println!(
        "  latency      p50 {:.2} ms   p99 {:.2} ms   p99.9 {:.2} ms   max {:.2} ms",
        l.percentile_ms(0.50),
        l.percentile_ms(0.99),
        l.percentile_ms(0.999),
        t.latency_us.max() as f64 / 1000.0
    );
    println!(
        "  errors       {} in the measured window, {} in the whole run",
        t.measured_errors,
        t.total_errors()
    );
    for (kind, n) in &t.errors {
        println!("    {n:>8} x {kind}");
    }
    println!(
        "  cpu (cores)  server {}   load generator {}   whole machine {} (+{} stolen)",
        cores(l.cpu.server),
        cores(l.cpu.bench),
        cores(l.cpu.machine_busy),
        cores(l.cpu.machine_steal),
    );
    println!(
        "  server RSS   peak (VmHWM) {:.1} MiB   current (VmRSS) {:.1} MiB",
        mib(r.memory.peak_kib),
        mib(r.memory.current_kib)
    );
    if let Some(d) = &r.durability {
        println!("  durability   {d}");
    }
}

fn print_table(reports: &[Report]) {
    let baseline_rps = reports.first().map_or(0.0, |r| r.load.rps());
    println!(
        "\n| target | req/s | vs baseline | p50 ms | p99 ms | errors | peak RSS MiB | RSS MiB \
         | server cores | machine cores |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in reports {
        println!(
            "| {} | {:.0} | {:.1}% | {:.2} | {:.2} | {} | {:.1} | {:.1} | {} | {} |",
            r.label,
            r.load.rps(),
            100.0 * r.load.rps() / baseline_rps,
            r.load.percentile_ms(0.50),
            r.load.percentile_ms(0.99),
            r.load.tally.total_errors(),
            mib(r.memory.peak_kib),
            mib(r.memory.current_kib),
            cores(r.load.cpu.server),
            cores(r.load.cpu.machine_busy),
        );
    }
}

/// The middle value (the mean of the two middle values for an even count); `values` non-empty.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// Each relay target against the targets, over every round: throughput on the median of the
/// rounds' ratios (each against its own round's baseline), latency and memory on the worst
/// round, errors and durability over all rounds.
fn print_targets(rounds: &[Vec<Report>]) {
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    let targets = rounds.first().map_or(0, Vec::len);
    for t in 1..targets {
        let mut ratios = Vec::new();
        let mut p99s = Vec::new();
        let mut peaks = Vec::new();
        let mut errors = 0;
        let mut durable = 0;
        for reports in rounds {
            let (baseline, r) = (&reports[0], &reports[t]);
            ratios.push(r.load.rps() / baseline.load.rps());
            p99s.push(r.load.percentile_ms(0.99));
            peaks.push(mib(r.memory.peak_kib));
            errors += r.load.tally.total_errors();
            durable += usize::from(r.durability.as_deref().is_some_and(|d| d.starts_with("OK")));
        }
        let ratio = median(&ratios);
        let p99 = p99s.iter().copied().fold(0.0, f64::max);
        let peak = peaks.iter().copied().fold(0.0, f64::max);
        println!("\ntargets for {}:", rounds[0][t].label);
        if rounds.len() > 1 {
            let shown: Vec<String> = ratios
                .iter()
                .map(|r| format!("{:.1}%", r * 100.0))
                .collect();
            println!(
                "  ratio to baseline by round: {} (min {:.1}%, max {:.1}%)",
                shown.join(", "),
                ratios.iter().copied().fold(f64::INFINITY, f64::min) * 100.0,
                ratios.iter().copied().fold(0.0, f64::max) * 100.0,
            );
        }
        println!(
            "  throughput >= {:.0}% of baseline{}: {:.1}% -> {}",
            TARGET_RATIO * 100.0,
            if rounds.len() > 1 {
                " (median of rounds)"
            } else {
                ""
            },
            ratio * 100.0,
            verdict(ratio >= TARGET_RATIO)
        );
        println!(
            "  p99 < {TARGET_P99_MS} ms{}: {p99:.2} ms -> {}",
            if rounds.len() > 1 {
                " (worst round)"
            } else {
                ""
            },
            verdict(p99 < TARGET_P99_MS)
        );
        println!(
            "  peak RSS < {TARGET_RSS_MIB} MiB: {peak:.1} MiB -> {}",
            verdict(peak < TARGET_RSS_MIB)
        );
        println!("  no errors: {errors} -> {}", verdict(errors == 0));
        println!(
            "  durability check OK in {durable} of {} rounds -> {}",
            rounds.len(),
            verdict(durable == rounds.len())
        );
    }
}

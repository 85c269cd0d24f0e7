//! What the benchmark programs share: the daemon as a child process stopped by its PID,
//! free ports, readiness, and CPU and memory read from /proc.
#![allow(dead_code)]

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::time::sleep;

pub const READY_PATH: &str = "/readyz";
/// How long a started daemon may take to answer `/readyz`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
pub const READY_POLL: Duration = Duration::from_millis(50);
/// How long a child gets after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// USER_HZ: /proc's CPU times are in these ticks.
pub const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// A server child process, stopped by its PID (SIGTERM, then SIGKILL) when dropped, so an
/// error anywhere in the benchmark never leaves it running.
pub struct ChildGuard {
    pub label: String,
    pub child: Option<Child>,
}

impl ChildGuard {
    pub fn spawn(label: &str, mut cmd: Command) -> anyhow::Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {label}: {cmd:?}"))?;
        Ok(Self {
            label: label.into(),
            child: Some(child),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// An error when the child has already exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                bail!("{} exited early with {status}", self.label);
            }
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Graceful first: the daemon drains its writer, answers waiters, ends streams.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(READY_POLL);
        }
        eprintln!("{} ignored SIGTERM; killing it", self.label);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port; a tiny race with other programs until the child binds it.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Polls `GET /readyz` until it answers 200, the child exits, or [`READY_TIMEOUT`] passes.
pub async fn wait_ready(server: &mut ChildGuard, addr: SocketAddr) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(READY_POLL * 20)
        .build()?;
    let url = format!("http://{addr}{READY_PATH}");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        server.check_alive()?;
        if let Ok(resp) = client.get(&url).send().await {
            if resp.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not answer {url} with 200 within {READY_TIMEOUT:?}",
                server.label
            );
        }
        sleep(READY_POLL).await;
    }
}

/// Resident memory of a process from /proc/PID/status, in KiB.
#[derive(Clone, Copy)]
pub struct Memory {
    pub peak_kib: u64,
    pub current_kib: u64,
}

impl Memory {
    pub fn read(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("cannot read /proc/{pid}/status"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
                .with_context(|| format!("no {name} in /proc/{pid}/status"))
        };
        Ok(Self {
            peak_kib: field("VmHWM:")?,
            current_kib: field("VmRSS:")?,
        })
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn cores(c: Option<f64>) -> String {
    c.map_or("n/a".into(), |c| format!("{c:.2}"))
}

/// User + system CPU seconds a process has used so far (all its threads).
pub fn process_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS_PER_SEC)
}

/// Machine-wide CPU seconds so far, from /proc/stat: (busy, stolen by the hypervisor).
pub fn machine_cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0.0);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6);
    Some((busy / CLOCK_TICKS_PER_SEC, at(7) / CLOCK_TICKS_PER_SEC))
}

/// Cores in use during a window.
pub struct CpuUse {
    pub server: Option<f64>,
    pub bench: Option<f64>,
    pub machine_busy: Option<f64>,
    pub machine_steal: Option<f64>,
}

impl CpuUse {
    pub fn sample(server_pid: &str) -> [Option<f64>; 4] {
        let machine = machine_cpu_seconds();
        [
            process_cpu_seconds(server_pid),
            process_cpu_seconds("self"),
            machine.map(|m| m.0),
            machine.map(|m| m.1),
        ]
    }

    pub fn between(before: [Option<f64>; 4], after: [Option<f64>; 4], secs: f64) -> Self {
        let cores = |i: usize| Some((after[i]? - before[i]?) / secs);
        Self {
            server: cores(0),
            bench: cores(1),
            machine_busy: cores(2),
            machine_steal: cores(3),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The proof harness (examples/crash_suite.rs, db_fault.rs, hostile_flood.rs and tests/crash.rs,
// which includes this file): the real daemon restarted on one database, a load generator that
// remembers which events were acknowledged, and the check that each of them is stored once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The shared secret the proof suites start the daemon with.
pub const PROOF_SECRET: &str = "proof-secret-7d2e";
/// A load request slower than this counts as a timeout; above the daemon's 5 s database
/// wait, so an outage is answered (503) rather than timed out.
pub const LOAD_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause after a connection error, so a stopped daemon is not spun on.
pub const LOAD_RECONNECT_PAUSE: Duration = Duration::from_millis(20);
/// Distinct jobs the load spreads its events over, so projections are updated concurrently.
pub const LOAD_JOBS: u64 = 64;
/// Page size when reading the event log back.
pub const VERIFY_PAGE_LIMIT: u32 = 1000;

/// `target/<profile>/mkio-relay` beside the running example (examples live one level down).
pub fn relay_bin_beside_exe() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe().context("cannot locate this executable")?;
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .context("this executable has no grandparent directory")?;
    let bin = profile_dir.join(format!("mkio-relay{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        bin.is_file(),
        "mkio-relay binary not found at {}; build it first (`cargo build --release`) or pass \
         --relay-bin PATH",
        bin.display()
    );
    Ok(bin)
}

/// The daemon on fixed loopback ports and one database, so it can be killed and restarted
/// while the load keeps its URLs.
#[derive(Clone)]
pub struct Relay {
    pub bin: std::path::PathBuf,
    pub database_url: String,
    pub ingest: SocketAddr,
    pub api: SocketAddr,
    pub env: Vec<(String, String)>,
}

impl Relay {
    pub fn new(
        bin: impl Into<std::path::PathBuf>,
        database_url: &str,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Ok(Self {
            bin: bin.into(),
            database_url: database_url.to_owned(),
            ingest: free_addr()?,
            api: free_addr()?,
            env: extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    /// `mkio-relay serve` with no inherited MKIO_RELAY_* variables.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve");
        for (k, _) in std::env::vars() {
            if k.starts_with("MKIO_RELAY_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("MKIO_RELAY_DATABASE_URL", &self.database_url)
            .env("MKIO_RELAY_WEBHOOK_SECRETS", PROOF_SECRET)
            .env("MKIO_RELAY_INGEST_LISTEN", self.ingest.to_string())
            .env("MKIO_RELAY_API_LISTEN", self.api.to_string())
            .env("MKIO_RELAY_LOG_LEVEL", "error");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Starts the daemon and waits until `/readyz` answers 200.
    pub async fn start(&self) -> anyhow::Result<ChildGuard> {
        let mut guard = ChildGuard::spawn("mkio-relay", self.command())?;
        wait_ready(&mut guard, self.ingest).await?;
        Ok(guard)
    }

    pub async fn ready(&self) -> bool {
        let url = format!("http://{}{READY_PATH}", self.ingest);
        match reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    /// Every event id in the log, in log order (pages of [`VERIFY_PAGE_LIMIT`]).
    pub async fn stored_ids(&self) -> anyhow::Result<Vec<String>> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut ids = Vec::new();
        let mut after = 0i64;
        loop {
            let url = format!(
                "http://{}/v1/events?after={after}&limit={VERIFY_PAGE_LIMIT}",
                self.api
            );
            let resp = client.get(&url).send().await?;
            anyhow::ensure!(resp.status().is_success(), "{url}: {}", resp.status());
            let body: serde_json::Value = resp.json().await?;
            let page = body["events"]
                .as_array()
                .context("no `events` array in /v1/events")?;
            if page.is_empty() {
                return Ok(ids);
            }
            for e in page {
                ids.push(e["id"].as_str().context("event without id")?.to_owned());
            }
            after = body["next_after"].as_i64().context("no next_after")?;
        }
    }
}

impl ChildGuard {
    /// SIGKILL now (`Child::kill`), and reap.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM only, then waits up to `limit` for the exit; `None` if it did not exit (the
    /// child is then killed when the guard drops).
    pub fn terminate_and_wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

/// A small job CloudEvent with a unique `id`.
pub fn load_event(id: &str, n: u64) -> String {
    let job = format!("job-{}", n % LOAD_JOBS);
    let state = ["Queued", "Scheduled", "Processing", "Finished"][(n / LOAD_JOBS % 4) as usize];
    serde_json::json!({
        "specversion": "1.0", "id": id,
        "type": if state == "Finished" { "MediaKind.JobFinished" } else { "MediaKind.JobStarted" },
        "source": format!("/api/v1/projects/proof/transforms/t/jobs/{job}"),
        "time": "2025-03-14T09:09:47Z",
        "data": {"projectName": "proof", "previousState": "Queued", "state": state,
                 "resource": {"name": job, "properties": {"state": state}}}
    })
    .to_string()
}

/// What the load saw, and which ids were sent and acknowledged (2xx).
#[derive(Default)]
pub struct LoadTally {
    pub sent: Vec<String>,
    pub acked: Vec<String>,
    /// Non-2xx answers by status (503s while the daemon or its database is down).
    pub statuses: BTreeMap<u16, u64>,
    pub connection_errors: u64,
    pub timeouts: u64,
}

impl LoadTally {
    pub fn non_2xx(&self) -> u64 {
        self.statuses.values().sum()
    }
}

struct LoadShared {
    stop: AtomicBool,
    next: AtomicU64,
    acked: AtomicU64,
    tally: Mutex<LoadTally>,
}

/// Concurrent senders of unique events to the ingest port, each over its own keep-alive client.
pub struct Load {
    shared: Arc<LoadShared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(ingest: SocketAddr, connections: usize, prefix: &str) -> Self {
        let shared = Arc::new(LoadShared {
            stop: AtomicBool::new(false),
            next: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            tally: Mutex::new(LoadTally::default()),
        });
        let url = format!("http://{ingest}/webhooks/mkio");
        let tasks = (0..connections.max(1))
            .map(|_| {
                let (shared, url, prefix) = (shared.clone(), url.clone(), prefix.to_owned());
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .timeout(LOAD_REQUEST_TIMEOUT)
                        .pool_max_idle_per_host(1)
                        .build()
                        .expect("HTTP client");
                    while !shared.stop.load(Ordering::Relaxed) {
                        let n = shared.next.fetch_add(1, Ordering::Relaxed);
                        let id = format!("{prefix}-{n}");
                        let body = load_event(&id, n);
                        shared.tally.lock().unwrap().sent.push(id.clone());
                        let result = client
                            .post(&url)
                            .bearer_auth(PROOF_SECRET)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await;
                        let failed = {
                            let mut t = shared.tally.lock().unwrap();
                            match result {
                                // The status line is the acknowledgement: the body may be cut
                                // by a kill, but a 2xx was only sent after the commit.
                                Ok(r) if r.status().is_success() => {
                                    t.acked.push(id);
                                    shared.acked.fetch_add(1, Ordering::Relaxed);
                                    false
                                }
                                Ok(r) => {
                                    *t.statuses.entry(r.status().as_u16()).or_default() += 1;
                                    false
                                }
                                Err(e) if e.is_timeout() => {
                                    t.timeouts += 1;
                                    true
                                }
                                Err(_) => {
                                    t.connection_errors += 1;
                                    true
                                }
                            }
                        };
                        if failed {
                            tokio::time::sleep(LOAD_RECONNECT_PAUSE).await;
                        }
                    }
                })
            })
            .collect();
        Self { shared, tasks }
    }

    /// 2xx answers so far.
    pub fn acked(&self) -> u64 {
        self.shared.acked.load(Ordering::Relaxed)
    }

    /// A copy of the non-2xx counters so far.
    pub fn statuses(&self) -> BTreeMap<u16, u64> {
        self.shared.tally.lock().unwrap().statuses.clone()
    }

    /// Waits until `more` further events were acknowledged, or `limit` passes.
    pub async fn wait_acked(&self, more: u64, limit: Duration) -> anyhow::Result<()> {
        let target = self.acked() + more;
        let deadline = Instant::now() + limit;
        while self.acked() < target {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {target} acknowledgements within {limit:?}",
                    self.acked()
                );
            }
            sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Stops every sender after its current request and returns the tally.
    pub async fn stop(self) -> LoadTally {
        self.shared.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        std::mem::take(&mut *self.shared.tally.lock().unwrap())
    }
}

/// The durability verdict: acknowledged ids missing from the log, ids stored more than once,
/// and stored ids that were never sent.
pub struct Verdict {
    pub found: usize,
    pub lost: Vec<String>,
    pub duplicates: Vec<String>,
    pub unknown: Vec<String>,
}

impl Verdict {
    pub fn of(tally: &LoadTally, stored: &[String]) -> Self {
        let mut count: HashMap<&str, u32> = HashMap::new();
        for id in stored {
            *count.entry(id.as_str()).or_default() += 1;
        }
        let sent: HashSet<&str> = tally.sent.iter().map(String::as_str).collect();
        Self {
            found: count.len(),
            lost: tally
                .acked
                .iter()
                .filter(|id| !count.contains_key(id.as_str()))
                .cloned()
                .collect(),
            duplicates: count
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(id, _)| id.to_string())
                .collect(),
            unknown: count
                .keys()
                .filter(|id| !sent.contains(*id))
                .map(|id| id.to_string())
                .collect(),
        }
    }

    pub fn is_clean(&self) -> bool {
        self.lost.is_empty() && self.duplicates.is_empty() && self.unknown.is_empty()
    }
}

/// One line of figures.
pub fn figures(label: &str, kills: u32, tally: &LoadTally, verdict: &Verdict) -> String {
    format!(
        "{label}: kills {kills}, sent {}, acknowledged {}, non-2xx {:?}, connection errors {}, \
         timeouts {}, found {}, lost {}, duplicates {}, unknown {}",
        tally.sent.len(),
        tally.acked.len(),
        tally.statuses,
        tally.connection_errors,
        tally.timeouts,
        verdict.found,
        verdict.lost.len(),
        verdict.duplicates.len(),
        verdict.unknown.len()
    )
}

/// Runs the load against `relay` and SIGKILLs the daemon `kills` times, each time after at
/// least `acks_per_life` acknowledgements and a random further 0..`jitter`, restarting it on
/// the same database; then stops the load on a live daemon and reads the log back.
pub async fn crash_cycle(
    relay: &Relay,
    kills: u32,
    connections: usize,
    acks_per_life: u64,
    jitter: Duration,
    life_limit: Duration,
) -> anyhow::Result<(LoadTally, Verdict)> {
    use rand::Rng;
    let mut daemon = relay.start().await?;
    let load = Load::start(relay.ingest, connections, "crash");
    for _ in 0..kills {
        load.wait_acked(acks_per_life, life_limit).await?;
        let extra = rand::thread_rng().gen_range(0..=jitter.as_millis() as u64);
        sleep(Duration::from_millis(extra)).await;
        daemon.check_alive()?;
        daemon.kill_hard();
        daemon = relay.start().await?;
    }
    load.wait_acked(acks_per_life, life_limit).await?;
    let tally = load.stop().await;
    let stored = relay.stored_ids().await?;
    let verdict = Verdict::of(&tally, &stored);
    daemon.stop();
    Ok((tally, verdict))
}

/// What one database outage showed.
pub struct Outage {
    /// 2xx answers between the outage's start (plus a settle time for answers already on their
    /// way) and its end: must be 0.
    pub acked_during: u64,
    /// Non-2xx answers during the outage, by status.
    pub statuses_during: BTreeMap<u16, u64>,
    /// From re-allowing connections to the next 2xx, and to `/readyz` 200.
    pub first_ack_after: Duration,
    pub ready_after: Duration,
}

/// Time for the answers to requests that committed just before the outage to arrive.
pub const OUTAGE_SETTLE: Duration = Duration::from_millis(500);

/// Makes `database` unavailable on the Postgres server behind `admin_url` for `length` (no
/// new connections, every existing one terminated), re-allows it, and measures the recovery
/// of the daemon, which keeps running.
pub async fn database_outage(
    relay: &Relay,
    load: &Load,
    admin_url: &str,
    database: &str,
    length: Duration,
    recover_limit: Duration,
) -> anyhow::Result<Outage> {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::query(&format!(
        "ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS false"
    ))
    .execute(&mut admin)
    .await?;
    let terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1";
    sqlx::query(terminate)
        .bind(database)
        .execute(&mut admin)
        .await?;
    sleep(OUTAGE_SETTLE.min(length)).await;
    let (acked_before, statuses_before) = (load.acked(), load.statuses());
    sleep(length.saturating_sub(OUTAGE_SETTLE)).await;
    let (acked_after, statuses_after) = (load.acked(), load.statuses());
    sqlx::query(&format!(
        "ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS true"
    ))
    .execute(&mut admin)
    .await?;
    let back = Instant::now();
    let statuses_during = statuses_after
        .iter()
        .map(|(s, n)| (*s, n - statuses_before.get(s).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    load.wait_acked(1, recover_limit)
        .await
        .context("the daemon did not acknowledge again after the database came back")?;
    let first_ack_after = back.elapsed();
    while !relay.ready().await {
        if back.elapsed() > recover_limit {
            bail!("/readyz not 200 within {recover_limit:?} of the database coming back");
        }
        sleep(Duration::from_millis(20)).await;
    }
    Ok(Outage {
        acked_during: acked_after - acked_before,
        statuses_during,
        first_ack_after,
        ready_after: back.elapsed(),
    })
}

/// The database name in a Postgres URL.
pub fn database_name(url: &str) -> anyhow::Result<String> {
    let parsed = url::Url::parse(url).context("database URL")?;
    let name = parsed.path().trim_start_matches('/');
    anyhow::ensure!(!name.is_empty(), "no database name in {url}");
    Ok(name.to_owned())
}

/// `url` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let mut parsed = url::Url::parse(url).context("database URL")?;
    parsed.set_path(&format!("/{name}"));
    Ok(parsed.to_string())
}

/// A fresh Postgres database beside `admin_url`'s, dropped (`WITH (FORCE)`) by [`drop_database`].
pub async fn create_database(admin_url: &str, prefix: &str) -> anyhow::Result<(String, String)> {
    use sqlx::Connection;
    let name = format!("{prefix}_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("cannot connect to {admin_url}"))?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await?;
    Ok((with_database(admin_url, &name)?, name))
}

pub async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    Ok(())
}

/// Runs `run` on a two-thread runtime; on failure prints `name: error` and exits non-zero.
pub fn run_main(
    name: &str,
    run: impl std::future::Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("runtime")
        .and_then(|rt| rt.block_on(run));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The relay binary given on the command line, or the one beside this example.
pub fn relay_bin(given: &Option<std::path::PathBuf>) -> anyhow::Result<std::path::PathBuf> {
    match given {
        Some(p) => Ok(p.clone()),
        None => relay_bin_beside_exe(),
    }
}

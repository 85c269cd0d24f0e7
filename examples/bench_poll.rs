//! Polling benchmark against mkio-sim (in this process, with the relay's `app::run`). A
//! program that prints figures, not a test: see docs/BENCHMARKS.md.
//!
//! Part A (budget): `--watches` streaming endpoints on one project, discovered and polled at a
//! fast interval that alone would need far more than the budget; the simulator enforces
//! MK.IO's 2,000 GET/min and reports the most requests it saw in any 60-second window, which
//! must stay within the relay's budget (25%: 500), with no 429. Then the simulator answers every
//! request with 429 or 500 for `--fault-seconds`; afterwards a state change must still be seen.
//!
//! Part B (request count): 50 jobs and 10 live resources over one simulated hour, run
//! `--scale` times faster (the relay's intervals and the simulator's timings divided alike).
//! Jobs are reported by webhooks; the live resources change state four times each. Prints the
//! relay's MK.IO requests against a naive client polling each resource once a (simulated)
//! second, and how long each change on a live resource took to reach the relay's state.
//!
//! ```text
//! cargo run --release --example bench_poll -- [--watches 1000] [--run-seconds 75]
//!     [--fault-seconds 60] [--scale 60]
//! ```

use anyhow::{ensure, Context};
use clap::Parser;
use mkio_relay::app::{self, Listeners};
use mkio_relay::config::Config;
use mkio_relay::sim::{self, Fault, SimConfig, SimHandle};
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    watches: usize,
    #[arg(long, default_value_t = 75)]
    run_seconds: u64,
    #[arg(long, default_value_t = 60)]
    fault_seconds: u64,
    #[arg(long, default_value_t = 60)]
    scale: u32,
    /// Skip part A or B.
    #[arg(long)]
    only: Option<char>,
}

const TOKEN: &str = "bench-token";
const SECRET: &str = "bench-secret";

struct Relay {
    api: String,
    ingest: String,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start_relay(sim: &SimHandle, vars: &[(&str, &str)]) -> anyhow::Result<Relay> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite:{}", dir.path().join("relay.db").display());
    let mut all = vec![
        ("MKIO_RELAY_DATABASE_URL", url.as_str()),
        ("MKIO_RELAY_WEBHOOK_SECRETS", SECRET),
        ("MKIO_RELAY_LOG_LEVEL", "warn"),
        ("MKIO_RELAY_MKIO_BASE_URL", sim.base_url.as_str()),
        ("MKIO_RELAY_MKIO_TOKEN", TOKEN),
        ("MKIO_RELAY_MKIO_PROJECTS", "p"),
    ];
    all.extend_from_slice(vars);
    let config = Config::load_with_env(None, &all)?;
    mkio_relay::telemetry::init(&config.log);
    let ingest = TcpListener::bind("127.0.0.1:0").await?;
    let api = TcpListener::bind("127.0.0.1:0").await?;
    let relay = Relay {
        api: format!("http://{}", api.local_addr()?),
        ingest: format!("http://{}", ingest.local_addr()?),
        cancel: CancellationToken::new(),
        task: tokio::spawn(async { Ok(()) }),
        _dir: dir,
    };
    let task = tokio::spawn(app::run(
        config,
        Listeners { ingest, api },
        relay.cancel.clone(),
    ));
    Ok(Relay { task, ..relay })
}

impl Relay {
    async fn stop(self) -> anyhow::Result<()> {
        self.cancel.cancel();
        self.task.await??;
        Ok(())
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(reqwest::get(format!("{}{path}", self.api))
            .await?
            .json()
            .await?)
    }
}

async fn control(sim: &SimHandle, path: &str, body: Value) -> anyhow::Result<()> {
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/{path}", sim.base_url))
        .json(&body)
        .send()
        .await?;
    ensure!(r.status().is_success(), "{path}: {}", r.status());
    Ok(())
}

async fn part_a(args: &Args) -> anyhow::Result<()> {
    println!(
        "== Part A: {} watches, MK.IO limit 2000 GET/min, relay budget 25%",
        args.watches
    );
    let sim = sim::start(
        SimConfig {
            projects: vec!["p".into()],
            token: Some(TOKEN.into()),
            live_transition: Duration::from_millis(500),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let names: Vec<String> = (0..args.watches).map(|i| format!("se{i:04}")).collect();
    control(
        &sim,
        "seed",
        json!({"project": "p", "streaming_endpoints": names}),
    )
    .await?;
    let relay = start_relay(
        &sim,
        &[
            ("MKIO_RELAY_POLL_KINDS", "streaming_endpoint"),
            ("MKIO_RELAY_POLL_FAST_INTERVAL", "5s"),
            ("MKIO_RELAY_POLL_SLOW_INTERVAL", "10s"),
            ("MKIO_RELAY_MKIO_MAX_BACKOFF", "20s"),
        ],
    )
    .await?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.run_seconds)).await;
    let stats = sim.stats();
    let get = &stats
        .scopes
        .get("p")
        .context("no requests on project p")?
        .get;
    let watches = relay.get("/v1/watches?limit=1000").await?;
    println!(
        "run {:.0} s: GET requests {}, max in any 60 s window {} (budget 500, MK.IO limit 2000), \
         429 answers {}, watches {}",
        started.elapsed().as_secs_f64(),
        get.total,
        get.max_in_any_60s_window,
        get.rate_limited,
        watches["watches"].as_array().map_or(0, Vec::len),
    );
    let within = get.max_in_any_60s_window <= 500 && get.rate_limited == 0;

    // A minute of nothing but 429s and 500s.
    let before = get.total;
    let fault_end = Instant::now() + Duration::from_secs(args.fault_seconds);
    let half = Duration::from_secs(args.fault_seconds / 2);
    sim.set_fault(Some(Fault {
        status: Some(429),
        delay: None,
        until: Some(Instant::now() + half),
    }));
    tokio::time::sleep(half).await;
    sim.set_fault(Some(Fault {
        status: Some(500),
        delay: None,
        until: Some(fault_end),
    }));
    tokio::time::sleep(fault_end.saturating_duration_since(Instant::now())).await;
    sim.set_fault(None);
    let during = sim.stats().scopes["p"].get.total - before;
    // After the fault: a change must still be seen.
    let changed_at = Instant::now();
    sim.set_state(
        "/api/v1/projects/p/media/streamingEndpoints/se0007",
        "Running",
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let seen = loop {
        let r = relay
            .get("/v1/resources/streaming_endpoint/p/se0007")
            .await?;
        if r["state"] == "Running" {
            break Some(changed_at.elapsed());
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let health = reqwest::get(format!("{}/healthz", relay.ingest))
        .await?
        .status();
    println!(
        "fault {} s (429 then 500): requests during it {during}; afterwards the change was seen \
         after {:?}; relay /healthz {health}",
        args.fault_seconds, seen
    );
    relay.stop().await?;
    sim.shutdown().await;
    ensure!(within, "budget exceeded or 429s received");
    ensure!(seen.is_some(), "no change seen after the fault");
    Ok(())
}

async fn part_b(args: &Args) -> anyhow::Result<()> {
    let scale = args.scale;
    let s = |secs: u64| Duration::from_millis(secs * 1000 / u64::from(scale));
    let hour = s(3600);
    println!("== Part B: 50 jobs + 10 live resources over one simulated hour ({hour:?} real, scale {scale})");
    let sim = sim::start(
        SimConfig {
            projects: vec!["p".into()],
            token: Some(TOKEN.into()),
            get_limit_per_minute: 1_000_000,
            write_limit_per_minute: 1_000_000,
            job_queued_for: s(60),
            job_processing_for: s(600),
            live_transition: s(30),
            webhook_retry_schedule: vec![s(5)],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let live: Vec<String> = (0..5).map(|i| format!("se{i}")).collect();
    let events: Vec<String> = (0..5).map(|i| format!("le{i}")).collect();
    control(
        &sim,
        "seed",
        json!({"project": "p", "streaming_endpoints": live, "media_live_events": events}),
    )
    .await?;
    let ms = |d: Duration| format!("{}ms", d.as_millis().max(1));
    let (fast, slow, disc, rec, age) = (ms(s(5)), ms(s(300)), ms(s(600)), ms(s(300)), ms(s(900)));
    let relay = start_relay(
        &sim,
        &[
            (
                "MKIO_RELAY_POLL_KINDS",
                "streaming_endpoint,media_live_event",
            ),
            ("MKIO_RELAY_POLL_FAST_INTERVAL", fast.as_str()),
            ("MKIO_RELAY_POLL_SLOW_INTERVAL", slow.as_str()),
            ("MKIO_RELAY_POLL_DISCOVERY_INTERVAL", disc.as_str()),
            ("MKIO_RELAY_POLL_RECONCILE_INTERVAL", rec.as_str()),
            ("MKIO_RELAY_POLL_JOB_SAFETY_NET_AGE", age.as_str()),
            ("MKIO_RELAY_MKIO_BUDGET_FRACTION", "1"),
        ],
    )
    .await?;
    let http = reqwest::Client::new();
    let rule = json!({"spec": {"url": format!("{}/webhooks/mkio", relay.ingest), "enabled": true,
        "events": ["MediaKind.JobStarted", "MediaKind.JobFinished"],
        "authentication": {"headers": {"Authorization": format!("Bearer {SECRET}")}}}});
    http.put(format!(
        "{}/api/v1/projects/p/webhook/rules/mkio-relay",
        sim.base_url
    ))
    .bearer_auth(TOKEN)
    .json(&rule)
    .send()
    .await?
    .error_for_status()?;
    let setup_requests = sim
        .stats()
        .scopes
        .get("p")
        .map_or(0, |s| s.get.total + s.write.total);
    let start = Instant::now();
    // 50 jobs spread over the first 40 simulated minutes; 4 state changes per live resource.
    let mut plan: Vec<(Duration, String, Option<&str>)> = Vec::new();
    for j in 0..50u64 {
        plan.push((
            s(j * 48),
            format!("/api/v1/projects/p/media/transforms/t/jobs/job{j}"),
            None,
        ));
    }
    let all_live: Vec<String> = (0..5)
        .map(|i| format!("/api/v1/projects/p/media/streamingEndpoints/se{i}"))
        .chain((0..5).map(|i| format!("/api/v1/projects/p/media/liveEvents/le{i}")))
        .collect();
    for (i, path) in all_live.iter().enumerate() {
        for (k, state) in ["Running", "Stopped", "Running", "Stopped"]
            .iter()
            .enumerate()
        {
            let at = s(300 + i as u64 * 37 + k as u64 * 800);
            plan.push((at, path.clone(), Some(*state)));
        }
    }
    plan.sort_by_key(|p| p.0);
    let mut forced: Vec<(String, String, SystemTime)> = Vec::new();
    for (at, path, state) in plan {
        tokio::time::sleep(at.saturating_sub(start.elapsed())).await;
        match state {
            None => {
                let body = json!({"properties": {"input": {"@odata.type": "#Microsoft.Media.JobInputAsset", "assetName": "in"},
                    "outputs": [{"@odata.type": "#Microsoft.Media.JobOutputAsset", "assetName": "out"}]}});
                http.put(format!("{}{path}", sim.base_url))
                    .bearer_auth(TOKEN)
                    .json(&body)
                    .send()
                    .await?;
            }
            Some(state) => {
                sim.set_state(&path, state);
                forced.push((path, state.to_owned(), SystemTime::now()));
            }
        }
    }
    tokio::time::sleep(hour.saturating_sub(start.elapsed())).await;
    let stats = sim.stats();
    let p = &stats.scopes["p"];
    // Job creations are the application's own writes, not the relay's.
    let relay_requests = p.get.total + p.write.total - setup_requests - 50;
    let naive = 60 * 3600;
    // Detection: the first event after each forced change carrying its state.
    let events = relay.get("/v1/events?limit=1000").await?;
    let events = events["events"].as_array().cloned().unwrap_or_default();
    let mut delays = Vec::new();
    for (path, state, at) in &forced {
        let seen = events.iter().find(|e| {
            e["source"] == path.as_str()
                && e["state"] == state.as_str()
                && chrono::DateTime::parse_from_rfc3339(e["received_at"].as_str().unwrap_or(""))
                    .map(|t| SystemTime::from(t) >= *at)
                    .unwrap_or(false)
        });
        if let Some(e) = seen {
            let t = chrono::DateTime::parse_from_rfc3339(e["received_at"].as_str().unwrap())?;
            delays.push(SystemTime::from(t).duration_since(*at).unwrap_or_default());
        }
    }
    delays.sort();
    let jobs_finished = relay.get("/v1/jobs?state=Finished&limit=100").await?["jobs"]
        .as_array()
        .map_or(0, Vec::len);
    let slow_real = s(300);
    println!(
        "relay requests to MK.IO: {relay_requests} (GET {}, writes {}) vs naive {naive}: {:.2}% \
         (target <= 2%); jobs finished in the relay {jobs_finished}/50",
        p.get.total,
        p.write.total,
        relay_requests as f64 * 100.0 / naive as f64
    );
    println!(
        "live changes seen {}/{}; detection delay max {:?}, median {:?} (real time; the stable \
         poll interval is {slow_real:?} real = 5 min simulated, target <= interval + 1 s)",
        delays.len(),
        forced.len(),
        delays.last().copied().unwrap_or_default(),
        delays.get(delays.len() / 2).copied().unwrap_or_default(),
    );
    relay.stop().await?;
    sim.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.only != Some('b') {
        part_a(&args).await?;
    }
    if args.only != Some('a') {
        part_b(&args).await?;
    }
    Ok(())
}

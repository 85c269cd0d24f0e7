//! Hostile flood: the real daemon (on a temporary SQLite database) flooded with a mix of
//! hostile requests for a while, its resident memory sampled every few seconds and printed, to
//! show it stays flat; every hostile request must get its 4xx, and the valid events mixed in
//! must all be stored. The quick CI checks of each kind of request are tests/bad_input.rs.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example hostile_flood -- [--seconds 300] [--sample-secs 5]
//!     [--connections 32]
//! ```
//!
//! Default run time: 5 minutes (`--seconds 300`), then it stops by itself. Exits non-zero when
//! a hostile request is answered 2xx (or a valid one is not), or the daemon is unhealthy after.

mod support;

use anyhow::ensure;
use clap::Parser;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The daemon's body timeout in this run: stalled uploads are answered 408 after it.
const BODY_TIMEOUT_SECS: u64 = 2;
/// Bound on any one hostile exchange.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(15);
const NESTING: usize = 10_000;
const MALFORMED: [&[u8]; 6] = [
    include_bytes!("../tests/fixtures/malformed/data-not-object.json"),
    include_bytes!("../tests/fixtures/malformed/deeply-nested.json"),
    include_bytes!("../tests/fixtures/malformed/empty.json"),
    include_bytes!("../tests/fixtures/malformed/missing-id.json"),
    include_bytes!("../tests/fixtures/malformed/not-json.txt"),
    include_bytes!("../tests/fixtures/malformed/wrong-specversion.json"),
];

#[derive(Debug, Parser)]
#[command(about = "Flood mkio-relay with hostile requests and print its memory over time")]
struct Opts {
    /// How long to flood (default 5 minutes).
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    /// Memory sampling period.
    #[arg(long, default_value_t = 5)]
    sample_secs: u64,
    /// Concurrent hostile clients.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Default: `mkio-relay` beside this example's directory (target/release/mkio-relay).
    #[arg(long, value_name = "PATH")]
    relay_bin: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    WrongSecret,
    Malformed,
    RandomBytes,
    InvalidUtf8,
    DeepNesting,
    HugeHeader,
    HeaderFlood,
    StalledBody,
    Oversized,
    Valid,
}

const KINDS: [Kind; 10] = [
    Kind::WrongSecret,
    Kind::Malformed,
    Kind::RandomBytes,
    Kind::InvalidUtf8,
    Kind::DeepNesting,
    Kind::HugeHeader,
    Kind::HeaderFlood,
    Kind::StalledBody,
    Kind::Oversized,
    Kind::Valid,
];

/// Answers by kind and status (0: no answer).
type Answers = BTreeMap<(Kind, u16), u64>;

fn main() -> ExitCode {
    let opts = Opts::parse();
    run_main("hostile_flood", run(&opts))
}

async fn run(opts: &Opts) -> anyhow::Result<()> {
    let bin = relay_bin(&opts.relay_bin)?;
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite:{}", dir.path().join("flood.db").display());
    let timeout = format!("{BODY_TIMEOUT_SECS}s");
    let relay = Relay::new(
        &bin,
        &url,
        &[
            ("MKIO_RELAY_INGEST_BODY_TIMEOUT", &timeout),
            ("MKIO_RELAY_LOG_LEVEL", "off"),
        ],
    )?;
    let mut daemon = relay.start().await?;
    let pid = daemon.pid();
    println!(
        "hostile_flood: {} s, {} clients, body_timeout {BODY_TIMEOUT_SECS} s, RSS every {} s; \
         relay {} (pid {pid})",
        opts.seconds,
        opts.connections,
        opts.sample_secs,
        bin.display()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Answers::new()));
    let valid_acked = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..opts.connections)
        .map(|c| {
            let (stop, answers, valid_acked, requests, relay) = (
                stop.clone(),
                answers.clone(),
                valid_acked.clone(),
                requests.clone(),
                relay.clone(),
            );
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(EXCHANGE_LIMIT)
                    .build()
                    .expect("client");
                let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
                let mut n = c;
                while !stop.load(Ordering::Relaxed) {
                    let kind = KINDS[n % KINDS.len()];
                    n += 1;
                    let id = format!("flood-{c}-{n}");
                    let status = hostile(&client, &relay, kind, &id, &mut rng).await;
                    requests.fetch_add(1, Ordering::Relaxed);
                    if kind == Kind::Valid && (200..300).contains(&status) {
                        valid_acked.fetch_add(1, Ordering::Relaxed);
                    }
                    *answers.lock().unwrap().entry((kind, status)).or_default() += 1;
                }
            })
        })
        .collect();

    let started = Instant::now();
    let mut samples = Vec::new();
    println!(
        "{:>7} {:>10} {:>9} {:>9}",
        "t s", "requests", "RSS MiB", "peak MiB"
    );
    while started.elapsed() < Duration::from_secs(opts.seconds) {
        daemon.check_alive()?;
        let m = Memory::read(pid)?;
        let t = started.elapsed().as_secs_f64();
        println!(
            "{t:>7.0} {:>10} {:>9.1} {:>9.1}",
            requests.load(Ordering::Relaxed),
            mib(m.current_kib),
            mib(m.peak_kib)
        );
        samples.push(m);
        let left = Duration::from_secs(opts.seconds).saturating_sub(started.elapsed());
        tokio::time::sleep(Duration::from_secs(opts.sample_secs).min(left)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    let after = Memory::read(pid)?;
    samples.push(after);

    let answers = answers.lock().unwrap().clone();
    println!("answers by kind and status (0: no answer before the connection ended):");
    let mut wrong = 0;
    for ((kind, status), count) in &answers {
        let ok = match kind {
            Kind::Valid => (200..300).contains(status),
            Kind::HeaderFlood => *status == 431,
            Kind::StalledBody => *status == 408,
            _ => (400..500).contains(status),
        };
        if !ok {
            wrong += count;
        }
        println!(
            "  {kind:?} {status}: {count}{}",
            if ok { "" } else { "  <- unexpected" }
        );
    }
    let stored = relay.stored_ids().await?.len() as u64;
    let healthy = reqwest::get(format!("http://{}/healthz", relay.ingest))
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false);
    let rss: Vec<f64> = samples.iter().map(|m| mib(m.current_kib)).collect();
    let warm = rss[rss.len().min(2) - 1];
    println!(
        "RSS MiB: first {:.1}, after warm-up {warm:.1}, last {:.1}, max {:.1}; peak (VmHWM) {:.1}",
        rss[0],
        rss[rss.len() - 1],
        rss.iter().cloned().fold(0.0, f64::max),
        mib(after.peak_kib)
    );
    println!(
        "requests {}, valid acknowledged {}, events stored {stored}, /healthz {}",
        requests.load(Ordering::Relaxed),
        valid_acked.load(Ordering::Relaxed),
        if healthy { "200" } else { "FAILED" }
    );
    daemon.stop();
    ensure!(wrong == 0, "{wrong} unexpected answers");
    ensure!(healthy, "the daemon is not healthy after the flood");
    ensure!(
        stored == valid_acked.load(Ordering::Relaxed),
        "stored {stored} events, but {} valid ones were acknowledged (and nothing else may be)",
        valid_acked.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Sends one request of `kind` and returns its status (0: no answer).
async fn hostile(
    client: &reqwest::Client,
    relay: &Relay,
    kind: Kind,
    id: &str,
    rng: &mut rand::rngs::StdRng,
) -> u16 {
    let url = format!("http://{}/webhooks/mkio", relay.ingest);
    // One Authorization header per request: the valid secret, or (for the two credential
    // attacks) a wrong one.
    let post_as = |secret: String, body: Vec<u8>| {
        client
            .post(&url)
            .bearer_auth(secret)
            .header("content-type", "application/json")
            .body(body)
    };
    let post = |body: Vec<u8>| post_as(PROOF_SECRET.to_owned(), body);
    let valid = load_event(id, rng.gen_range(0..1000)).into_bytes();
    let req = match kind {
        Kind::WrongSecret => post_as(format!("{PROOF_SECRET}-{}", rng.gen::<u32>()), valid),
        Kind::Malformed => post(MALFORMED[rng.gen_range(0..MALFORMED.len())].to_vec()),
        Kind::RandomBytes => {
            let len = rng.gen_range(1..4096);
            post((0..len).map(|_| rng.gen()).collect())
        }
        Kind::InvalidUtf8 => {
            let mut bytes = valid;
            let at = rng.gen_range(0..bytes.len());
            bytes.insert(at, 0xff);
            post(bytes)
        }
        Kind::DeepNesting => {
            post(format!("{}{}", "[".repeat(NESTING), "]".repeat(NESTING)).into_bytes())
        }
        // 100 KiB in the Authorization header.
        Kind::HugeHeader => post_as(format!("{PROOF_SECRET}{}", "j".repeat(100 * 1024)), valid),
        Kind::Valid => post(valid),
        Kind::HeaderFlood => {
            let junk = format!("x-junk: {}\r\n", "y".repeat(8 * 1024)).repeat(128);
            return raw(
                relay,
                format!("POST /webhooks/mkio HTTP/1.1\r\nhost: x\r\n{junk}\r\n"),
                None,
            )
            .await;
        }
        Kind::StalledBody => {
            let head = format!(
                "POST /webhooks/mkio HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {PROOF_SECRET}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                valid.len()
            );
            return raw(relay, head, Some(valid[..valid.len() / 2].to_vec())).await;
        }
        Kind::Oversized => {
            let head = format!(
                "POST /webhooks/mkio HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {PROOF_SECRET}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                64 * 1024 * 1024
            );
            return raw(relay, head, None).await;
        }
    };
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let _ = r.bytes().await;
            status
        }
        Err(_) => 0,
    }
}

/// A raw exchange: writes `head` (and `body`), reads the answer until the server closes.
async fn raw(relay: &Relay, head: String, body: Option<Vec<u8>>) -> u16 {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(relay.ingest).await.ok()?;
        // The server may answer and close while we still write.
        let _ = tcp.write_all(head.as_bytes()).await;
        if let Some(body) = body {
            let _ = tcp.write_all(&body).await;
        }
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        let text = String::from_utf8_lossy(&answer);
        text.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(EXCHANGE_LIMIT, exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

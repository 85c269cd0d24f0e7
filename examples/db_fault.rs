//! Database faults: the daemon under load while its Postgres database is made unavailable
//! again and again (`ALTER DATABASE ... ALLOW_CONNECTIONS false` and every backend terminated,
//! from an admin connection; the shared server keeps running), then re-allowed. Expected: 503
//! (never 2xx) while the database is away, recovery without a restart (2xx again, `/readyz`
//! 200), and no acknowledged event lost. The quick CI version is in tests/crash.rs.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example db_fault -- [--postgres postgres://postgres@127.0.0.1:5432/postgres]
//!     [--outages 5] [--outage-secs 5] [--between-secs 3] [--connections 16]
//! ```
//!
//! Bounded: about outages x (outage + between) seconds, each recovery waited for at most
//! `--recover-limit-secs` (30). Exits non-zero on a lost event, a 2xx during an outage, or
//! a daemon that does not recover.

mod support;

use anyhow::{ensure, Context};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use support::*;

#[derive(Debug, Parser)]
#[command(about = "Take mkio-relay's Postgres database away under load and check it recovers")]
struct Opts {
    /// Admin URL of the Postgres server; a fresh database is created beside it and dropped.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
    #[arg(long, default_value_t = 5)]
    outages: u32,
    #[arg(long, default_value_t = 5)]
    outage_secs: u64,
    /// Load with the database available between outages.
    #[arg(long, default_value_t = 3)]
    between_secs: u64,
    #[arg(long, default_value_t = 16)]
    connections: usize,
    #[arg(long, default_value_t = 30)]
    recover_limit_secs: u64,
    /// Default: `mkio-relay` beside this example's directory (target/release/mkio-relay).
    #[arg(long, value_name = "PATH")]
    relay_bin: Option<PathBuf>,
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    run_main("db_fault", run(&opts))
}

async fn run(opts: &Opts) -> anyhow::Result<()> {
    let bin = relay_bin(&opts.relay_bin)?;
    let (url, name) = create_database(&opts.postgres, "mkio_relay_fault").await?;
    let result = faults(opts, &bin, &url, &name).await;
    drop_database(&opts.postgres, &name).await?;
    result
}

async fn faults(opts: &Opts, bin: &std::path::Path, url: &str, name: &str) -> anyhow::Result<()> {
    // The daemon's own error lines during an outage are expected; keep them out of the figures.
    let relay = Relay::new(bin, url, &[("MKIO_RELAY_LOG_LEVEL", "off")])?;
    let mut daemon = relay.start().await?;
    let load = Load::start(relay.ingest, opts.connections, "fault");
    println!(
        "db_fault: {} outages of {} s, {} s of load between, {} connections",
        opts.outages, opts.outage_secs, opts.between_secs, opts.connections
    );
    let mut bad = 0;
    for i in 0..opts.outages {
        tokio::time::sleep(Duration::from_secs(opts.between_secs)).await;
        let acked_before = load.acked();
        let o = database_outage(
            &relay,
            &load,
            &opts.postgres,
            name,
            Duration::from_secs(opts.outage_secs),
            Duration::from_secs(opts.recover_limit_secs),
        )
        .await?;
        daemon
            .check_alive()
            .context("the daemon died during an outage")?;
        println!(
            "outage {i}: acknowledged before {acked_before}; during: 2xx {}, other {:?}; \
             after the database came back: first 2xx in {} ms, /readyz 200 in {} ms",
            o.acked_during,
            o.statuses_during,
            o.first_ack_after.as_millis(),
            o.ready_after.as_millis()
        );
        if o.acked_during > 0 || !o.statuses_during.keys().all(|s| *s >= 500) {
            bad += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs(opts.between_secs)).await;
    let tally = load.stop().await;
    let verdict = Verdict::of(&tally, &relay.stored_ids().await?);
    daemon.check_alive()?;
    daemon.stop();
    println!("{}", figures("postgres outages", 0, &tally, &verdict));
    ensure!(
        bad == 0,
        "{bad} outage(s) acknowledged events or answered other than 5xx"
    );
    ensure!(
        verdict.is_clean(),
        "an acknowledged event was lost or stored twice"
    );
    Ok(())
}

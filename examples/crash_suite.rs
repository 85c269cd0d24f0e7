//! Crash suite: the real daemon under load, killed with SIGKILL again and again and restarted
//! on the same database; at the end every acknowledged (2xx) event must be stored, once. The
//! quick CI version is tests/crash.rs; this one runs as long and as hard as asked and prints
//! the figures (docs/PROOF.md).
//!
//! ```text
//! cargo build --release
//! cargo run --release --example crash_suite -- [--kills 20] [--connections 16]
//!     [--acks-per-life 200] [--jitter-ms 1000]
//!     [--postgres postgres://postgres@127.0.0.1:5432/postgres] [--skip-sqlite]
//! ```
//!
//! Bounded: each life of the daemon waits at most `--life-limit-secs` (30) for its
//! acknowledgements, so a run takes at most kills x (life limit + jitter + start-up).
//! Exits non-zero when an acknowledged event is lost, stored twice, or never sent.

mod support;

use anyhow::ensure;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use support::*;

#[derive(Debug, Parser)]
#[command(
    about = "SIGKILL mkio-relay under load, restart it, and check no acknowledged event is lost"
)]
struct Opts {
    /// SIGKILLs per backend.
    #[arg(long, default_value_t = 20)]
    kills: u32,
    /// Concurrent senders.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Acknowledgements each life of the daemon must see before it may be killed.
    #[arg(long, default_value_t = 200)]
    acks_per_life: u64,
    /// Then a random further wait of 0..this many ms before the kill.
    #[arg(long, default_value_t = 1000)]
    jitter_ms: u64,
    /// Bound on each life's wait for its acknowledgements.
    #[arg(long, default_value_t = 30)]
    life_limit_secs: u64,
    /// Also run on Postgres: an admin URL; a fresh database is created beside it and dropped.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    #[arg(long)]
    skip_sqlite: bool,
    /// Default: `mkio-relay` beside this example's directory (target/release/mkio-relay).
    #[arg(long, value_name = "PATH")]
    relay_bin: Option<PathBuf>,
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    run_main("crash_suite", run(&opts))
}

async fn run(opts: &Opts) -> anyhow::Result<()> {
    let bin = relay_bin(&opts.relay_bin)?;
    println!(
        "crash_suite: {} kills per backend, {} connections, >= {} acknowledgements per life + \
         0..{} ms; relay {}",
        opts.kills,
        opts.connections,
        opts.acks_per_life,
        opts.jitter_ms,
        bin.display()
    );
    let mut clean = true;
    if !opts.skip_sqlite {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite:{}", dir.path().join("crash.db").display());
        clean &= one_backend(opts, &bin, "sqlite", &url).await?;
    }
    if let Some(admin) = &opts.postgres {
        let (url, name) = create_database(admin, "mkio_relay_crash").await?;
        let result = one_backend(opts, &bin, "postgres", &url).await;
        drop_database(admin, &name).await?;
        clean &= result?;
    }
    ensure!(clean, "an acknowledged event was lost or stored twice");
    Ok(())
}

async fn one_backend(
    opts: &Opts,
    bin: &std::path::Path,
    label: &str,
    url: &str,
) -> anyhow::Result<bool> {
    let relay = Relay::new(bin, url, &[])?;
    let started = Instant::now();
    let (tally, verdict) = crash_cycle(
        &relay,
        opts.kills,
        opts.connections,
        opts.acks_per_life,
        Duration::from_millis(opts.jitter_ms),
        Duration::from_secs(opts.life_limit_secs),
    )
    .await?;
    println!(
        "{} in {:.1} s; committed but not acknowledged (in flight at a kill): {}",
        figures(label, opts.kills, &tally, &verdict),
        started.elapsed().as_secs_f64(),
        verdict.found.saturating_sub(tally.acked.len())
    );
    for id in verdict.lost.iter().take(10) {
        println!("  LOST {id}");
    }
    for id in verdict.duplicates.iter().take(10) {
        println!("  TWICE {id}");
    }
    Ok(verdict.is_clean())
}

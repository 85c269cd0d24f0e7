//! The `mkio-sim` binary: an in-memory MK.IO on a port, driven over `/_sim` (docs/SIMULATOR.md).

use clap::Parser;
use mkio_relay::sim::{self, SimConfig};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Simulates the MK.IO API: jobs, live resources, webhook rules and deliveries.
#[derive(Debug, Parser)]
#[command(name = "mkio-sim", version)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "MKIO_SIM_LISTEN", default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// Projects that exist (repeat the flag or separate with commas).
    #[arg(
        long = "project",
        env = "MKIO_SIM_PROJECTS",
        value_delimiter = ',',
        default_value = "studio-prod"
    )]
    projects: Vec<String>,
    /// Require `Authorization: Bearer <token>` on every /api request.
    #[arg(long, env = "MKIO_SIM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// GET requests per sliding minute, per project (or organization).
    #[arg(long, env = "MKIO_SIM_GET_LIMIT", default_value_t = 2000)]
    get_limit: u32,
    /// POST/PUT/PATCH/DELETE requests per sliding minute, per project (or organization).
    #[arg(long, env = "MKIO_SIM_WRITE_LIMIT", default_value_t = 1000)]
    write_limit: u32,
    /// Send `Retry-After` on 429 answers, e.g. `30s` (none by default, as MK.IO documents none).
    #[arg(long, env = "MKIO_SIM_RETRY_AFTER", value_parser = humantime::parse_duration)]
    retry_after: Option<Duration>,
    /// Time a job stays Queued.
    #[arg(long, env = "MKIO_SIM_JOB_QUEUED_FOR", default_value = "2s", value_parser = humantime::parse_duration)]
    job_queued_for: Duration,
    /// Time a job stays Processing.
    #[arg(long, env = "MKIO_SIM_JOB_PROCESSING_FOR", default_value = "10s", value_parser = humantime::parse_duration)]
    job_processing_for: Duration,
    /// Time of every other transition (Starting, Stopping, Scaling, Creating, Canceling, Pending).
    #[arg(long, env = "MKIO_SIM_LIVE_TRANSITION", default_value = "5s", value_parser = humantime::parse_duration)]
    live_transition: Duration,
    /// Delays between webhook delivery attempts, comma-separated; empty for no retries.
    #[arg(long, env = "MKIO_SIM_WEBHOOK_RETRY", default_value = "1s,5s,30s", value_parser = parse_schedule)]
    webhook_retry: Schedule,
    /// Timeout of one webhook delivery attempt.
    #[arg(long, env = "MKIO_SIM_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    webhook_timeout: Duration,
    /// Give `@odata.nextLink` as a path instead of an absolute URL.
    #[arg(long, env = "MKIO_SIM_RELATIVE_NEXT_LINKS")]
    relative_next_links: bool,
}

/// A comma-separated list of durations.
#[derive(Debug, Clone)]
struct Schedule(Vec<Duration>);

fn parse_schedule(s: &str) -> Result<Schedule, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| humantime::parse_duration(p).map_err(|e| format!("{p}: {e}")))
        .collect::<Result<_, _>>()
        .map(Schedule)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let config = SimConfig {
        projects: args.projects,
        token: args.token,
        get_limit_per_minute: args.get_limit,
        write_limit_per_minute: args.write_limit,
        retry_after: args.retry_after,
        job_queued_for: args.job_queued_for,
        job_processing_for: args.job_processing_for,
        live_transition: args.live_transition,
        webhook_retry_schedule: args.webhook_retry.0,
        webhook_timeout: args.webhook_timeout,
        absolute_next_links: !args.relative_next_links,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mkio-sim: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let handle = sim::start(config, args.listen).await?;
        let token = CancellationToken::new();
        tokio::spawn(mkio_relay::shutdown::cancel_on_signal(token.clone()));
        token.cancelled().await;
        tracing::info!("mkio-sim stopping");
        handle.shutdown().await;
        tracing::info!("mkio-sim stopped");
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkio-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

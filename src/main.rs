//! The `mkio-relay` binary: parse the command line, load config, init telemetry, call the app.

use clap::Parser;
use mkio_relay::app::{self, Listeners};
use mkio_relay::cli::{Cli, Command};
use mkio_relay::config::Config;
use mkio_relay::{shutdown, telemetry};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// jemalloc instead of glibc's malloc: under ingest load glibc's allocator (arena locks, free-list
/// consolidation) took about a fifth of the request handlers' CPU (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("mkio-relay: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::CheckConfig) = cli.command {
        println!("configuration is valid:\n{config:#?}");
        return ExitCode::SUCCESS;
    }
    telemetry::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mkio-relay: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Migrate => {
                let store = app::open_store(&config).await?;
                println!("database migrated ({})", store.backend());
                Ok(())
            }
            Command::Healthcheck => mkio_relay::healthcheck::check(config.ingest.listen).await,
            Command::Rules { command } => mkio_relay::cli::rules(&config, &command).await,
            Command::Serve | Command::CheckConfig => {
                let listeners = Listeners::bind(&config).await?;
                let token = CancellationToken::new();
                tokio::spawn(shutdown::cancel_on_signal(token.clone()));
                app::run(config, listeners, token).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkio-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

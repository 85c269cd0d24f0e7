//! Command line: `serve` (the default), `migrate`, `check-config`, `healthcheck`, and
//! `rules apply|show|history`, whose output is printed here.

use crate::config::Config;
use crate::mkio::rules::{self, Applied, RuleSettings};
use crate::mkio::MkioClient;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "mkio-relay",
    version,
    about = "Durable MK.IO webhook receiver and local state API"
)]
pub struct Cli {
    /// A TOML file layered over the built-in defaults (environment variables still win).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Serve,
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Validate the configuration, print it with secrets masked, then exit.
    CheckConfig,
    /// Exit 0 when the local daemon's /readyz (on ingest.listen) answers 200; for HEALTHCHECK.
    Healthcheck,
    /// Register or inspect this relay's webhook rule in MK.IO (mkio.rule_*).
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Create or replace the rule, whole, in each project of mkio.projects.
    Apply {
        /// Only this project.
        #[arg(long)]
        project: Option<String>,
    },
    /// Print the rule as MK.IO has it (MK.IO masks its secret).
    Show {
        /// Only this project.
        #[arg(long)]
        project: Option<String>,
    },
    /// Print the rule's recent deliveries and a count per status.
    History {
        /// Only this project.
        #[arg(long)]
        project: Option<String>,
        /// The most entries read per project.
        #[arg(long, default_value_t = DEFAULT_HISTORY_LIMIT)]
        limit: usize,
    },
}

/// Entries `rules history` reads per project unless `--limit` says otherwise.
pub const DEFAULT_HISTORY_LIMIT: usize = 50;
/// Attempts per MK.IO call from the command line (the daemon's poller reschedules instead).
pub const CLI_ATTEMPTS: u32 = 4;

impl RulesCommand {
    fn project(&self) -> Option<&str> {
        match self {
            RulesCommand::Apply { project }
            | RulesCommand::Show { project }
            | RulesCommand::History { project, .. } => project.as_deref(),
        }
    }
}

/// A rules command once its settings are checked.
enum RulesAction {
    Apply(RuleSettings),
    Show,
    History(usize),
}

/// Runs a `rules` command, printing one block per project; fails if any project failed.
pub async fn rules(config: &Config, command: &RulesCommand) -> anyhow::Result<()> {
    let projects = rules::projects(&config.mkio, command.project())?;
    let action = match command {
        RulesCommand::Apply { .. } => RulesAction::Apply(RuleSettings::from_config(config)?),
        RulesCommand::Show { .. } => RulesAction::Show,
        RulesCommand::History { limit, .. } => RulesAction::History(*limit),
    };
    let client = MkioClient::new(&config.mkio)?.with_max_attempts(CLI_ATTEMPTS);
    let name = &config.mkio.rule_name;
    let mut failed = 0;
    for project in &projects {
        let result = match &action {
            RulesAction::Apply(settings) => {
                rules::apply(&client, project, settings)
                    .await
                    .map(|applied| {
                        let what = match applied {
                            Applied::Created => "created (201)".to_owned(),
                            Applied::Replaced => "replaced (200)".to_owned(),
                            Applied::Other(status) => format!("accepted ({status})"),
                        };
                        println!("{project}: rule {name} {what} -> {}", settings.url);
                    })
            }
            RulesAction::Show => rules::show(&client, project, name)
                .await
                .map(|rule| match rule {
                    Some(rule) => println!(
                        "{project}: rule {name}\n{}",
                        serde_json::to_string_pretty(&rule).unwrap_or_default()
                    ),
                    None => println!("{project}: no rule named {name}"),
                }),
            RulesAction::History(limit) => rules::history(&client, project, name, *limit)
                .await
                .map(|entries| print_history(project, name, &entries)),
        };
        if let Err(e) = result {
            eprintln!("mkio-relay: {project}: {e}");
            failed += 1;
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} projects failed", projects.len());
    }
    Ok(())
}

fn print_history(project: &str, name: &str, entries: &[rules::HistoryEntry]) {
    println!("{project}: rule {name}, {} deliveries", entries.len());
    for e in entries {
        println!(
            "  {}  {:<8}  {}  {}",
            e.created, e.status, e.r#type, e.source
        );
    }
    let counts: Vec<String> = rules::count_by_status(entries)
        .iter()
        .map(|(status, n)| format!("{status}: {n}"))
        .collect();
    println!(
        "  summary: {}",
        if counts.is_empty() {
            "none".to_owned()
        } else {
            counts.join(", ")
        }
    );
}

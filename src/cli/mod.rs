//! The command line: argument definitions and one thin file per command.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub mod check;
pub mod jobs;
pub mod sim;

/// Where `-c/--config` points when neither the flag nor `JOBWATCH_CONFIG` is given.
pub const DEFAULT_CONFIG: &str = "/etc/jobwatch/jobwatch.toml";

#[derive(Debug, Parser)]
#[command(
    name = "jobwatch",
    version,
    about = "Watches Huawei Cloud Workspace sub-jobs and delivers every status transition"
)]
pub struct Cli {
    /// The configuration file.
    #[arg(short, long, global = true, env = "JOBWATCH_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Whether `--config` was left at its default (so a missing file there
    /// may be fine for commands that can run on environment alone).
    pub fn config_is_default(&self) -> bool {
        self.config.as_os_str() == DEFAULT_CONFIG
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration and print it with every secret redacted.
    Check,
    /// List sub-jobs straight from the API, every page.
    Jobs(jobs::JobsArgs),
    /// The embedded Workspace API simulator.
    Sim(sim::SimArgs),
}

/// How a command prints what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Check => check::run(&cli).await,
        Command::Jobs(args) => jobs::run(&cli, args).await,
        Command::Sim(args) => sim::run(args).await,
    }
}

/// A usage or configuration error: exit code 2 (SPEC §2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Maps an error to the exit code SPEC §2 gives: 2 for usage and
/// configuration errors, 1 for everything else.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error
        .chain()
        .any(|e| e.is::<UsageError>() || e.is::<crate::config::ConfigError>())
    {
        2
    } else {
        1
    }
}

//! The command line: argument definitions and one thin file per command.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

pub mod check;
pub mod completions;
pub mod demo;
pub mod history;
pub mod jobs;
pub mod logging;
pub mod notify_test;
pub mod once;
pub mod routes;
pub mod run;
pub mod silence;
pub mod sim;
pub mod state;

/// Where `-c/--config` points when neither the flag nor `JOBWATCH_CONFIG` is given.
pub const DEFAULT_CONFIG: &str = "/etc/jobwatch/jobwatch.toml";

/// `--version`: the release, the commit it was built from and that
/// commit's date (see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BUILT_FROM_COMMIT"),
    ", ",
    env!("BUILT_FROM_DATE"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "jobwatch",
    version = VERSION,
    about = "Watches Huawei Cloud Workspace sub-jobs and delivers every status transition"
)]
pub struct Cli {
    /// The configuration file (also accepted after the commands that
    /// read one: `jobwatch run -c FILE`).
    #[arg(short, long, env = "JOBWATCH_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,

    /// The log level or filter, over `log.level` and `RUST_LOG`
    /// (e.g. `debug`, `info,jobwatch=trace`).
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// The log format, over `log.format`.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<crate::config::LogFormat>,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Starts logging with the config's `[log]` under the command line's
    /// `--log-level` and `--log-format`.
    pub fn init_logging(&self, log: &crate::config::LogConfig) {
        let mut log = log.clone();
        if let Some(format) = self.log_format {
            log.format = format;
        }
        logging::init(&log, self.log_level.as_deref());
    }

    /// The configuration file: the command's own `-c`, else the one before
    /// the command, `JOBWATCH_CONFIG` or the default.
    pub fn config_path(&self) -> &Path {
        let own = match &self.command {
            Command::Run(c) | Command::Check(c) => c,
            Command::Once(a) => &a.config,
            Command::Jobs(a) => &a.config,
            Command::NotifyTest(a) => &a.config,
            Command::State(a) => &a.config,
            Command::History(a) => &a.config,
            Command::Silence(a) => &a.config,
            Command::Routes(a) => &a.config,
            Command::Sim(_) | Command::Demo(_) | Command::Completions(_) | Command::Manpage => {
                &ConfigArg { config: None }
            }
        };
        own.config.as_deref().unwrap_or(&self.config)
    }

    /// Whether the configuration file was left at its default (so a
    /// missing file there may be fine for commands that can run on
    /// environment alone).
    pub fn config_is_default(&self) -> bool {
        self.config_path().as_os_str() == DEFAULT_CONFIG
    }
}

/// `-c/--config` of a command that reads the configuration; `sim`,
/// `demo` and `completions` have none, as they read none.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArg {
    /// The configuration file [default: /etc/jobwatch/jobwatch.toml, or
    /// JOBWATCH_CONFIG].
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: poll every target, deliver every transition.
    Run(ConfigArg),
    /// One poll cycle over every target: diff, persist, deliver, print.
    Once(once::OnceArgs),
    /// Validate the configuration and print it with every secret redacted.
    Check(ConfigArg),
    /// List sub-jobs straight from the API, every page.
    Jobs(jobs::JobsArgs),
    /// Send a sample event to the named notifiers (all if none).
    NotifyTest(notify_test::NotifyTestArgs),
    /// What is tracked, the outbox backlog, dead letters.
    State(state::StateArgs),
    /// Every event kept, where it went and how each delivery went.
    History(history::HistoryArgs),
    /// Hold matching events for a while: add, list, expire.
    Silence(silence::SilenceArgs),
    /// Where an event would go: `routes test --job-type … --to …`.
    Routes(routes::RoutesArgs),
    /// The embedded Workspace API simulator.
    Sim(sim::SimArgs),
    /// Zero-config demo: simulator, daemon, log and a local receiver.
    Demo(demo::DemoArgs),
    /// Print the completion script for a shell (bash, zsh, fish, …).
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff) to stdout.
    #[command(hide = true)]
    Manpage,
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
        Command::Run(_) => run::run(&cli).await,
        Command::Once(args) => once::run(&cli, args).await,
        Command::Check(_) => check::run(&cli).await,
        Command::Jobs(args) => jobs::run(&cli, args).await,
        Command::NotifyTest(args) => notify_test::run(&cli, args).await,
        Command::State(args) => state::run(&cli, args).await,
        Command::History(args) => history::run(&cli, args).await,
        Command::Silence(args) => silence::run(&cli, args).await,
        Command::Routes(args) => routes::run(&cli, args).await,
        Command::Sim(args) => sim::run(args).await,
        Command::Demo(args) => demo::run(&cli, args).await,
        Command::Completions(args) => completions::completions(args),
        Command::Manpage => completions::manpage(),
    }
}

/// Loads the config named by `-c` (a missing default file is fine when
/// `must_exist` is false: everything may come from the environment).
pub fn load_config(
    cli: &Cli,
    must_exist: bool,
) -> Result<crate::config::Loaded, crate::config::ConfigError> {
    crate::config::Config::load_optional(cli.config_path(), must_exist || !cli.config_is_default())
}

/// The cloud client for `jobs`: the config file if there is one, the
/// environment, and `--endpoint`. With an endpoint given and no
/// credentials anywhere, requests go unauthenticated (a simulator).
pub fn client_from_config(
    cli: &Cli,
    account: Option<&str>,
    endpoint: Option<&str>,
) -> anyhow::Result<crate::cloud::Client> {
    let account = account.unwrap_or(crate::watch::DEFAULT_ACCOUNT);
    let named = account != crate::watch::DEFAULT_ACCOUNT;
    let (api, auth) = if named {
        (
            format!("accounts.{account}"),
            format!("accounts.{account}.auth"),
        )
    } else {
        ("api".to_owned(), "auth".to_owned())
    };
    use crate::config::{Config, EnvVars};
    use figment::providers::Serialized;
    let must_exist = !cli.config_is_default();
    let path = (must_exist || cli.config_path().exists()).then_some(cli.config_path());
    if let Some(path) = path
        && !path.exists()
    {
        return Err(crate::config::ConfigError::new(
            "",
            format!("config file {} does not exist", path.display()),
        )
        .into());
    }
    let env = EnvVars::from_process();
    let has_sdk_keys = std::env::var_os("HUAWEICLOUD_SDK_AK").is_some();
    let mut figment = Config::figment(path, env);
    // `--endpoint` must not make up an account that is not configured.
    if named && figment.find_value(&api).is_err() {
        let written = figment
            .find_value("accounts")
            .ok()
            .and_then(|v| v.into_dict())
            .map(|d| d.into_keys().collect::<Vec<_>>())
            .unwrap_or_default();
        let known: Vec<&str> = std::iter::once(crate::watch::DEFAULT_ACCOUNT)
            .chain(written.iter().map(String::as_str))
            .collect();
        return Err(UsageError(format!(
            "no account {account:?}{}; configured: {} (add an [accounts.{account}] table)",
            crate::config::check::did_you_mean(account, known.iter().copied()),
            known.join(", ")
        ))
        .into());
    }
    if let Some(endpoint) = endpoint {
        figment = figment.merge(Serialized::default(&format!("{api}.endpoint"), endpoint));
        if figment.find_value(&format!("{auth}.method")).is_err()
            && figment.find_value(&format!("{auth}.ak")).is_err()
            && (named || !has_sdk_keys)
        {
            figment = figment.merge(Serialized::default(&format!("{auth}.method"), "none"));
        }
    }
    let loaded = Config::from_figment(figment)?;
    // Validation keeps every account whose table is there.
    let chosen = loaded.config.account(account).ok_or_else(|| {
        anyhow::anyhow!("account {account:?} is not in the validated configuration")
    })?;
    crate::daemon::wiring::account_client(chosen)
}

/// A table for a person to read: no rule between rows, and one line per
/// row as wide as the terminal (long cells cut with `…`). Off a terminal
/// it is as wide as `COLUMNS` says, or else every cell is whole (for
/// `grep` and files). Rows go in with [`row`].
pub fn table(header: &[&str]) -> comfy_table::Table {
    use std::io::IsTerminal;
    let mut table = comfy_table::Table::new();
    table
        .load_style(comfy_table::presets::ASCII_FULL_CONDENSED)
        .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
        .set_truncation_indicator("…")
        .set_header(header.iter().copied());
    if !std::io::stdout().is_terminal()
        && let Some(width) = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.trim().parse::<u16>().ok())
    {
        table.set_width(width);
    }
    table
}

/// Adds a row of [`table`]: one line, whatever its cells hold.
pub fn row(table: &mut comfy_table::Table, cells: impl IntoIterator<Item = String>) {
    let mut row = comfy_table::Row::from(cells);
    row.max_height(1);
    table.add_row(row);
}

/// Parses a human duration (`30s`, `1h 30m`) for flags.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let span: jiff::Span = text
        .parse()
        .map_err(|e| format!("invalid duration {text:?}: {e}"))?;
    let signed = jiff::SignedDuration::try_from(span)
        .map_err(|e| format!("invalid duration {text:?}: {e}"))?;
    std::time::Duration::try_from(signed).map_err(|e| format!("invalid duration {text:?}: {e}"))
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

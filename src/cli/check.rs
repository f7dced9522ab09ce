//! `jobwatch check`: validate the configuration, print it redacted.

use anyhow::Context;

use super::Cli;
use crate::config::Config;

/// Loads `-c` (which must exist: checking a file that is not there is a
/// mistake worth exit code 2), prints warnings to stderr and the effective
/// config as TOML to stdout. Secrets print as `***` because `Secret` and
/// `SecretUrl` serialise redacted; nothing here has to remember to redact.
pub async fn run(cli: &Cli) -> anyhow::Result<()> {
    let loaded = Config::load(&cli.config)?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    let text = toml::to_string_pretty(&loaded.config)
        .context("cannot print the effective configuration")?;
    print!("{text}");
    Ok(())
}

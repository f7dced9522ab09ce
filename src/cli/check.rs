//! `jobwatch check`: validate the configuration, print it redacted.

use super::Cli;

pub async fn run(_cli: &Cli) -> anyhow::Result<()> {
    anyhow::bail!("check: not yet implemented")
}

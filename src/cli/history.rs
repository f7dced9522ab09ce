//! `jobwatch history`: every event kept (`state.keep_history`), where its
//! routes sent it, and how each delivery went.

use std::io::Write;

use anyhow::Context;

use super::{Cli, Format};
use crate::storage::{HistoryQuery, OpenMode, Storage};

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// One sub-job's events.
    #[arg(long, value_name = "ID", conflicts_with = "job")]
    pub sub_job: Option<String>,
    /// One parent job's events (all its sub-jobs).
    #[arg(long, value_name = "ID")]
    pub job: Option<String>,
    /// Only events observed within this long (`1h`, `2d`).
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// At most this many events, the newest.
    #[arg(long, default_value_t = 200)]
    pub limit: usize,
    /// `json`: an array of events, each with its routes and deliveries.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub async fn run(cli: &Cli, args: &HistoryArgs) -> anyhow::Result<()> {
    let loaded = super::load_config(cli, true)?;
    let state = &loaded.config.state;
    if state.url.is_none() && !state.path.exists() {
        anyhow::bail!(
            "no state file at {} yet (state.path); run `jobwatch run` or `jobwatch once` first",
            state.path.display()
        );
    }
    let store = Storage::open(state, OpenMode::ReadOnly)
        .await
        .with_context(|| format!("opening {}", state.shown()))?;
    let since = match args.since {
        Some(d) => Some(
            jiff::Timestamp::now()
                .checked_sub(jiff::SignedDuration::try_from(d)?)
                .context("--since reaches before the year -9999")?,
        ),
        None => None,
    };
    let entries = store
        .history(HistoryQuery {
            sub_job_id: args.sub_job.clone(),
            job_id: args.job.clone(),
            since,
            limit: args.limit,
        })
        .await?;
    let mut out = std::io::stdout().lock();
    if args.format == Format::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&entries)?)?;
        return Ok(());
    }
    if entries.is_empty() {
        writeln!(
            out,
            "no events kept{} (the history keeps {} of them: state.keep_history)",
            if args.sub_job.is_some() || args.job.is_some() || args.since.is_some() {
                " that match"
            } else {
                ""
            },
            crate::config::dur::human(loaded.config.state.keep_history)
        )?;
        return Ok(());
    }
    let tz = &loaded.config.delivery.timezone;
    let mut table = super::table(&[
        "OBSERVED", "TARGET", "SUB-JOB", "EVENT", "ERROR", "NOTIFIER", "OUTCOME",
    ]);
    for entry in &entries {
        for (notifier, outcome) in entry.outcomes() {
            let e = &entry.event;
            super::row(
                &mut table,
                [
                    crate::notify::text::format_time(e.observed_at, tz),
                    e.target_name().into_owned(),
                    e.sub_job_id.clone(),
                    entry.transition(),
                    e.error_code.clone().unwrap_or_default(),
                    notifier,
                    outcome,
                ],
            );
        }
    }
    writeln!(out, "{table}")?;
    Ok(())
}

//! `jobwatch state`: what is tracked, the outbox backlog, dead letters.

use std::io::Write;

use anyhow::Context;
use comfy_table::Table;

use super::Cli;
use crate::storage::{OpenMode, Storage};
use crate::watch::Target;

#[derive(Debug, clap::Args)]
pub struct StateArgs {
    #[command(subcommand)]
    pub command: Option<StateCommand>,
}

#[derive(Debug, clap::Subcommand)]
pub enum StateCommand {
    /// Tracked targets and the outbox backlog (the default).
    Show,
    /// Dead letters, with the receiver's last answer.
    Dead,
    /// Requeue dead letters (all, or the given ids) for delivery now.
    Retry { ids: Vec<i64> },
    /// Drop a target's snapshot (its next scan is a new silent baseline).
    ForgetTarget {
        #[arg(long)]
        project: String,
        #[arg(long)]
        job_type: String,
    },
}

pub async fn run(cli: &Cli, args: &StateArgs) -> anyhow::Result<()> {
    let loaded = super::load_config(cli, true)?;
    let path = loaded.config.state.path.clone();
    if !path.exists() {
        anyhow::bail!(
            "no state file at {} yet (state.path); run `jobwatch run` or `jobwatch once` first",
            path.display()
        );
    }
    let command = args.command.as_ref().unwrap_or(&StateCommand::Show);
    // Looking needs no write access: it works on a read-only file.
    let mode = match command {
        StateCommand::Show | StateCommand::Dead => OpenMode::ReadOnly,
        StateCommand::Retry { .. } | StateCommand::ForgetTarget { .. } => OpenMode::ReadWrite,
    };
    let store = Storage::open(&loaded.config.state, mode)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let mut out = std::io::stdout().lock();
    match command {
        StateCommand::Show => {
            let mut table = Table::new();
            table.set_header(["TARGET", "BASELINED", "TRACKED", "ACTIVE", "UPDATED"]);
            for t in store.targets().await? {
                table.add_row([
                    t.target.to_string(),
                    if t.baselined { "yes" } else { "no" }.to_owned(),
                    t.tracked.to_string(),
                    t.active.to_string(),
                    t.updated_at.to_string(),
                ]);
            }
            writeln!(out, "{table}")?;
            let counts = store.outbox_counts().await?;
            writeln!(
                out,
                "outbox: {} pending, {} dead",
                counts.pending, counts.dead
            )?;
        }
        StateCommand::Dead => {
            let dead = store.dead_letters().await?;
            if dead.is_empty() {
                writeln!(out, "no dead letters")?;
                return Ok(());
            }
            let mut table = Table::new();
            table.set_header([
                "ID",
                "NOTIFIER",
                "TARGET",
                "SUB-JOB",
                "KIND",
                "ATTEMPTS",
                "DIED",
                "LAST ANSWER",
            ]);
            for row in dead {
                table.add_row([
                    row.id.to_string(),
                    row.notifier,
                    row.target.to_string(),
                    row.sub_job_id,
                    row.kind,
                    row.attempts.to_string(),
                    row.finished_at.map(|t| t.to_string()).unwrap_or_default(),
                    row.last_error.unwrap_or_default(),
                ]);
            }
            writeln!(out, "{table}")?;
        }
        StateCommand::Retry { ids } => {
            // Ids that name no dead letter are a mistake worth an exit code.
            let dead: std::collections::BTreeSet<i64> =
                store.dead_letters().await?.iter().map(|r| r.id).collect();
            let unknown: Vec<String> = ids
                .iter()
                .filter(|id| !dead.contains(id))
                .map(i64::to_string)
                .collect();
            let n = store
                .requeue_dead(ids.clone(), jiff::Timestamp::now())
                .await?;
            writeln!(
                out,
                "requeued {n} dead letter(s); a running daemon delivers them within a second"
            )?;
            if !unknown.is_empty() {
                anyhow::bail!(
                    "no dead letter with id {} (see `jobwatch state dead`)",
                    unknown.join(", ")
                );
            }
        }
        StateCommand::ForgetTarget { project, job_type } => {
            let target = Target::new(project.clone(), job_type.as_str());
            let n = store.forget_target(&target).await?;
            writeln!(out, "forgot {target}: {n} tracked sub-job(s) dropped")?;
        }
    }
    Ok(())
}

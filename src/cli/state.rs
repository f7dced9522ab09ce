//! `jobwatch state`: what is tracked, the outbox backlog, dead letters.

use std::io::Write;

use anyhow::Context;

use super::{Cli, Format};
use crate::storage::{OpenMode, Storage};
use crate::watch::Target;

#[derive(Debug, clap::Args)]
pub struct StateArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// `json`: `show` prints one object, `dead` an array, for scripts.
    #[arg(long, value_enum, default_value_t, global = true)]
    pub format: Format,
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
    /// Delete dead letters that died longer ago than `--older-than`.
    Purge {
        /// Dead letters (the only rows kept until purged).
        #[arg(long, required = true)]
        dead: bool,
        /// e.g. `30d`, `12h`.
        #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
        older_than: std::time::Duration,
    },
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
    if loaded.config.state.url.is_none() && !path.exists() {
        anyhow::bail!(
            "no state file at {} yet (state.path); run `jobwatch run` or `jobwatch once` first",
            path.display()
        );
    }
    let command = args.command.as_ref().unwrap_or(&StateCommand::Show);
    // Looking needs no write access: it works on a read-only file.
    let mode = match command {
        StateCommand::Show | StateCommand::Dead => OpenMode::ReadOnly,
        StateCommand::Retry { .. }
        | StateCommand::Purge { .. }
        | StateCommand::ForgetTarget { .. } => OpenMode::ReadWrite,
    };
    let store = Storage::open(&loaded.config.state, mode)
        .await
        .with_context(|| format!("opening {}", loaded.config.state.shown()))?;
    let mut out = std::io::stdout().lock();
    match command {
        StateCommand::Show => {
            let names = names(&loaded.config);
            let targets = store.targets().await?;
            let counts = store.outbox_counts().await?;
            let name = |t: &Target| names.get(t).cloned().unwrap_or_else(|| t.to_string());
            if args.format == Format::Json {
                let targets: Vec<serde_json::Value> = targets
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "target": name(&t.target),
                            "project_id": t.target.project_id,
                            "job_type": t.target.job_type.as_str(),
                            "baselined": t.baselined,
                            "tracked": t.tracked,
                            "active": t.active,
                            "updated_at": t.updated_at,
                        })
                    })
                    .collect();
                let doc = serde_json::json!({
                    "targets": targets,
                    "outbox": {"pending": counts.pending, "dead": counts.dead},
                });
                writeln!(out, "{doc}")?;
                return Ok(());
            }
            let mut table = super::table(&[
                "TARGET",
                "PROJECT/JOB TYPE",
                "BASELINED",
                "TRACKED",
                "ACTIVE",
                "UPDATED",
            ]);
            for t in targets {
                super::row(
                    &mut table,
                    [
                        name(&t.target),
                        Target::default_name(&t.target.project_id, &t.target.job_type),
                        if t.baselined { "yes" } else { "no" }.to_owned(),
                        t.tracked.to_string(),
                        t.active.to_string(),
                        t.updated_at.to_string(),
                    ],
                );
            }
            writeln!(out, "{table}")?;
            writeln!(
                out,
                "outbox: {} pending, {} dead",
                counts.pending, counts.dead
            )?;
        }
        StateCommand::Dead => {
            let dead = store.dead_letters().await?;
            if args.format == Format::Json {
                let rows: Vec<serde_json::Value> = dead
                    .iter()
                    .map(|row| {
                        serde_json::json!({
                            "id": row.id,
                            "notifier": row.notifier,
                            "project_id": row.target.project_id,
                            "job_type": row.target.job_type.as_str(),
                            "sub_job_id": row.sub_job_id,
                            "event_id": row.event_id,
                            "kind": row.kind,
                            "attempts": row.attempts,
                            "died_at": row.finished_at,
                            "last_answer": row.last_error,
                            "event": serde_json::from_str::<serde_json::Value>(&row.payload_json).ok(),
                        })
                    })
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(rows))?;
                return Ok(());
            }
            if dead.is_empty() {
                writeln!(out, "no dead letters")?;
                return Ok(());
            }
            let mut table = super::table(&[
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
                super::row(
                    &mut table,
                    [
                        row.id.to_string(),
                        row.notifier,
                        row.target.to_string(),
                        row.sub_job_id,
                        row.kind,
                        row.attempts.to_string(),
                        row.finished_at.map(|t| t.to_string()).unwrap_or_default(),
                        row.last_error.unwrap_or_default(),
                    ],
                );
            }
            writeln!(out, "{table}")?;
        }
        StateCommand::Purge {
            dead: _,
            older_than,
        } => {
            let before = jiff::Timestamp::now()
                - jiff::SignedDuration::try_from(*older_than).unwrap_or(jiff::SignedDuration::MAX);
            let n = store.purge_dead(before).await?;
            writeln!(
                out,
                "purged {n} dead letter(s) that died more than {} ago",
                crate::config::dur::human(*older_than)
            )?;
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

/// The configured name of each target the config watches, by identity.
fn names(config: &crate::config::Config) -> std::collections::HashMap<Target, String> {
    config
        .watched()
        .into_iter()
        .map(|t| {
            let name = t.name.to_string();
            (t, name)
        })
        .collect()
}

//! `jobwatch state`: what is tracked, the outbox backlog, dead letters.

use std::io::Write;

use anyhow::Context;

use super::{Cli, Format};
use crate::storage::{LeaseRow, MemberRow, OpenMode, Storage};
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
    /// The replicas sharing a PostgreSQL state, and which targets each
    /// polls since when.
    Cluster,
    /// Copy this SQLite state (snapshots, outbox, dead letters, history, silences)
    /// into an empty PostgreSQL database, so a cluster starts from it: no
    /// new baseline, nothing lost. Stop the daemon first.
    Migrate {
        /// The database, `postgres://USER[:PASSWORD]@HOST:PORT/DB`.
        #[arg(
            long,
            value_name = "URL",
            required_unless_present = "to_file",
            conflicts_with = "to_file"
        )]
        to: Option<String>,
        /// A file holding the URL (keeps a password out of the process list).
        #[arg(long, value_name = "PATH")]
        to_file: Option<std::path::PathBuf>,
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
    if let Some(StateCommand::Migrate { to, to_file }) = &args.command {
        return migrate(&loaded.config, to.as_deref(), to_file.as_deref()).await;
    }
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
        StateCommand::Show | StateCommand::Dead | StateCommand::Cluster => OpenMode::ReadOnly,
        StateCommand::Migrate { .. } => unreachable!("handled above"),
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
        StateCommand::Cluster => {
            let Some(cluster) = store.cluster() else {
                anyhow::bail!(
                    "state cluster: the state is one SQLite file ({}), which one daemon owns; \
                     replicas share a PostgreSQL state (state.url)",
                    loaded.config.state.shown()
                );
            };
            let lease = loaded.config.cluster.lease;
            let members = cluster.members(lease).await?;
            let leases = cluster.leases().await?;
            let names = names(&loaded.config);
            print_cluster(&mut out, args.format, &members, &leases, &names)?;
        }
        StateCommand::Migrate { .. } => unreachable!("handled above"),
    }
    Ok(())
}

fn time(t: std::time::SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
        .unwrap_or_default()
}

fn print_cluster(
    out: &mut impl Write,
    format: Format,
    members: &[MemberRow],
    leases: &[LeaseRow],
    names: &std::collections::HashMap<Target, String>,
) -> anyhow::Result<()> {
    let name = |l: &LeaseRow| {
        let target = Target::new(l.project_id.clone(), l.job_type.as_str());
        names
            .get(&target)
            .cloned()
            .unwrap_or_else(|| target.to_string())
    };
    let held = |member: &str| {
        leases
            .iter()
            .filter(|l| l.live && l.owner.as_deref() == Some(member))
            .count()
    };
    if format == Format::Json {
        let members: Vec<serde_json::Value> = members
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.id, "host": m.host, "pid": m.pid,
                    "started_at": time(m.started_at), "seen_at": time(m.seen_at),
                    "live": m.live, "targets": held(&m.id),
                })
            })
            .collect();
        let leases: Vec<serde_json::Value> = leases
            .iter()
            .map(|l| {
                serde_json::json!({
                    "target": name(l), "project_id": l.project_id, "job_type": l.job_type,
                    "owner": l.owner, "generation": l.generation,
                    "since": time(l.since), "expires_at": time(l.expires_at), "live": l.live,
                })
            })
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::json!({"members": members, "leases": leases})
        )?;
        return Ok(());
    }
    let mut table = super::table(&[
        "MEMBER",
        "HOST",
        "PID",
        "STARTED",
        "LAST SEEN",
        "STATE",
        "TARGETS",
    ]);
    for m in members {
        super::row(
            &mut table,
            [
                m.id.clone(),
                m.host.clone(),
                m.pid.to_string(),
                time(m.started_at),
                time(m.seen_at),
                if m.live { "live" } else { "gone" }.to_owned(),
                held(&m.id).to_string(),
            ],
        );
    }
    writeln!(out, "{table}")?;
    let mut table = super::table(&["TARGET", "HELD BY", "SINCE", "EXPIRES", "GENERATION"]);
    for l in leases {
        let holder = match (&l.owner, l.live) {
            (Some(owner), true) => owner.clone(),
            (Some(owner), false) => format!("{owner} (ran out)"),
            (None, _) => "nobody".to_owned(),
        };
        super::row(
            &mut table,
            [
                name(l),
                holder,
                time(l.since),
                time(l.expires_at),
                l.generation.to_string(),
            ],
        );
    }
    writeln!(out, "{table}")?;
    Ok(())
}

/// `state migrate`: the configured SQLite state, whole, into an empty
/// PostgreSQL database.
async fn migrate(
    config: &crate::config::Config,
    to: Option<&str>,
    to_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if config.state.url.is_some() {
        anyhow::bail!(
            "state migrate copies an SQLite state file (state.path) into PostgreSQL; \
             this config's state is already a database ({})",
            config.state.shown()
        );
    }
    let text = match (to, to_file) {
        (Some(url), _) => url.to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("--to-file {}", path.display()))?
            .trim()
            .to_owned(),
        (None, None) => anyhow::bail!("state migrate: give --to URL or --to-file PATH"),
    };
    let url: crate::config::PgUrl = text
        .parse()
        .map_err(|e| anyhow::anyhow!("--to: {e} (the value is not shown)"))?;
    let path = &config.state.path;
    if !path.exists() {
        anyhow::bail!(
            "no state file at {} (state.path): nothing to migrate",
            path.display()
        );
    }
    // Exclusive: a daemon still running on the file would go on writing
    // what the copy no longer sees.
    let source = Storage::open(&config.state, OpenMode::Exclusive)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let target = Storage::open(
        &crate::config::StateConfig::postgres(url.clone()),
        OpenMode::ReadWrite,
    )
    .await
    .with_context(|| format!("opening {}", url.shown()))?;
    if !target.is_empty().await? {
        anyhow::bail!(
            "{} already holds a state (targets or outbox rows); migrate into an empty database",
            url.shown()
        );
    }
    let export = source.export().await?;
    target.import(&export).await?;
    let counts = target.outbox_counts().await?;
    let delivered = export
        .outbox
        .iter()
        .filter(|r| r.state == crate::storage::OutboxState::Delivered)
        .count();
    println!(
        "copied {} target(s) with {} tracked sub-job(s), and {} outbox row(s) ({} pending, {} dead, \
         {delivered} delivered), {} event(s) of history with {} attempt(s), and {} silence(s) from {} into {}",
        export.targets.len(),
        export.snapshot.len(),
        export.outbox.len(),
        counts.pending,
        counts.dead,
        export.events.len(),
        export.attempts.len(),
        export.silences.len(),
        path.display(),
        url.shown()
    );
    println!(
        "next: set state.url (or state.url_file) to this database in place of state.path, and \
         start the replicas; the file is left as it was"
    );
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

//! `jobwatch silence`: hold events that match, for a while, in the state
//! every daemon (and replica) reads when it routes.

use std::io::Write;

use anyhow::Context;

use super::{Cli, Format, UsageError};
use crate::silence::{NewSilence, Silence};
use crate::storage::{OpenMode, Storage};

#[derive(Debug, clap::Args)]
pub struct SilenceArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// `json`: `add` and `expire` print the silence, `list` an array.
    #[arg(long, value_enum, default_value_t, global = true)]
    pub format: Format,
    #[command(subcommand)]
    pub command: SilenceCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum SilenceCommand {
    /// Hold every event all the matchers match, from now for `--for`.
    Add {
        /// `FIELD=VALUE`, `FIELD!=VALUE`, `FIELD=~REGEX` or `FIELD!~REGEX`
        /// (a regex matches the whole value); fields: target, account,
        /// project, job_type, to, kind, error_code. Repeat for more: all
        /// must match.
        #[arg(long = "match", value_name = "MATCHER", required = true)]
        matchers: Vec<String>,
        /// How long it holds (`2h`, `30m`).
        #[arg(long = "for", value_name = "DURATION", value_parser = super::parse_duration)]
        duration: std::time::Duration,
        /// Why (shown beside it everywhere).
        #[arg(long)]
        comment: String,
        /// Who adds it [default: USER@HOST].
        #[arg(long)]
        author: Option<String>,
    },
    /// Silences that are active or pending; `--all`: expired ones too.
    List {
        #[arg(long)]
        all: bool,
    },
    /// End silences now; what they held stays unsent.
    Expire {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
}

pub async fn run(cli: &Cli, args: &SilenceArgs) -> anyhow::Result<()> {
    let loaded = super::load_config(cli, true)?;
    let state = &loaded.config.state;
    let now = jiff::Timestamp::now();
    let adding = matches!(args.command, SilenceCommand::Add { .. });
    if !adding && state.url.is_none() && !state.path.exists() {
        anyhow::bail!(
            "no state file at {} yet (state.path); run `jobwatch run` or `jobwatch once` first",
            state.path.display()
        );
    }
    // A silence may be added before the daemon first ran: it makes the state.
    let mode = match args.command {
        SilenceCommand::List { .. } => OpenMode::ReadOnly,
        _ => OpenMode::ReadWrite,
    };
    let open = || async {
        Storage::open(state, mode)
            .await
            .with_context(|| format!("opening {}", state.shown()))
    };
    let mut out = std::io::stdout().lock();
    match &args.command {
        SilenceCommand::Add {
            matchers,
            duration,
            comment,
            author,
        } => {
            let new = NewSilence::build(
                matchers,
                *duration,
                comment,
                author.clone().unwrap_or_else(default_author),
                now,
            )
            .map_err(UsageError)?;
            let silence = open().await?.add_silence(new, now).await?;
            if args.format == Format::Json {
                writeln!(out, "{}", serde_json::to_string(&silence)?)?;
            } else {
                writeln!(
                    out,
                    "silence {} holds {} until {}",
                    silence.id,
                    matchers_text(&silence),
                    silence.ends_at
                )?;
            }
        }
        SilenceCommand::List { all } => {
            let silences: Vec<Silence> = open()
                .await?
                .silences()
                .await?
                .into_iter()
                .filter(|s| *all || s.ends_at > now)
                .collect();
            if args.format == Format::Json {
                writeln!(out, "{}", serde_json::to_string_pretty(&silences)?)?;
                return Ok(());
            }
            if silences.is_empty() {
                writeln!(
                    out,
                    "no silences{}",
                    if *all { "" } else { " active or pending" }
                )?;
                return Ok(());
            }
            let mut table =
                super::table(&["ID", "STATE", "MATCHERS", "STARTS", "ENDS", "BY", "COMMENT"]);
            for s in &silences {
                super::row(
                    &mut table,
                    [
                        s.id.to_string(),
                        s.state(now).to_owned(),
                        matchers_text(s),
                        s.starts_at.to_string(),
                        s.ends_at.to_string(),
                        s.created_by.clone(),
                        s.comment.clone(),
                    ],
                );
            }
            writeln!(out, "{table}")?;
        }
        SilenceCommand::Expire { ids } => {
            let store = open().await?;
            let mut missing = Vec::new();
            for id in ids {
                match store.expire_silence(*id, now).await? {
                    Some(s) if args.format == Format::Json => {
                        writeln!(out, "{}", serde_json::to_string(&s)?)?
                    }
                    Some(s) => writeln!(out, "silence {} ended at {}", s.id, s.ends_at)?,
                    None => missing.push(id.to_string()),
                }
            }
            if !missing.is_empty() {
                return Err(UsageError(format!("no silence {}", missing.join(", "))).into());
            }
        }
    }
    Ok(())
}

fn default_author() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}

pub fn matchers_text(s: &Silence) -> String {
    s.matchers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

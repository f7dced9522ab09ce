//! `jobwatch routes test`: where an event would go — which notifiers,
//! grouped how — and which silence or maintenance window would hold it.

use std::io::Write;

use anyhow::Context;

use super::{Cli, Format, UsageError};
use crate::cloud::model::{JobType, Status};
use crate::storage::{OpenMode, Storage};
use crate::watch::{Event, EventKind};

#[derive(Debug, clap::Args)]
pub struct RoutesArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
    #[command(subcommand)]
    pub command: RoutesCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum RoutesCommand {
    /// Route a made-up event through the configured routes, the state's
    /// silences and the maintenance windows, and say where it would go.
    Test(TestArgs),
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    #[arg(long, value_name = "JOB_TYPE")]
    pub job_type: String,
    /// The status entered (none: a `vanished` event).
    #[arg(long, value_name = "STATUS")]
    pub to: Option<String>,
    #[arg(long, value_name = "STATUS", default_value = "RUNNING")]
    pub from: String,
    #[arg(long, value_name = "KIND", default_value = "changed")]
    pub kind: String,
    #[arg(long, value_name = "CODE")]
    pub error_code: Option<String>,
    /// A watched target's name [default: the first target watching the
    /// job type].
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
    /// When it happens [default: now]: maintenance windows and silences
    /// are checked at this time.
    #[arg(long, value_name = "TIME")]
    pub at: Option<jiff::Timestamp>,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub async fn run(cli: &Cli, args: &RoutesArgs) -> anyhow::Result<()> {
    let RoutesCommand::Test(args) = &args.command;
    let loaded = super::load_config(cli, true)?;
    let config = &loaded.config;
    let job_type = JobType::from(args.job_type.trim());
    let watched = config.watched();
    let target = match &args.target {
        Some(name) => watched
            .iter()
            .find(|t| &*t.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = watched.iter().map(|t| &*t.name).collect();
                UsageError(format!(
                    "no target {name:?} is watched{}; watched: {}",
                    crate::config::check::did_you_mean(name, names.iter().copied()),
                    names.join(", ")
                ))
            })?
            .clone(),
        None => watched
            .iter()
            .find(|t| t.job_type == job_type)
            .or(watched.first())
            .cloned()
            .ok_or_else(|| UsageError("no [[targets]] are configured".to_owned()))?,
    };
    let kind: EventKind = args
        .kind
        .parse()
        .map_err(|e: crate::watch::event::UnknownKind| UsageError(e.to_string()))?;
    let now = args.at.unwrap_or_else(jiff::Timestamp::now);
    let event = Event {
        event_id: "routes-test".to_owned(),
        kind,
        target: target.name.to_string(),
        account: target.account.to_string(),
        project_id: target.project_id.clone(),
        job_type: job_type.clone(),
        sub_job_id: "routes-test".to_owned(),
        job_id: Some("routes-test-job".to_owned()),
        resource_id: None,
        resource_name: None,
        from: (kind != EventKind::Appeared).then(|| Status::from(args.from.trim())),
        to: args.to.as_deref().map(|s| Status::from(s.trim())),
        error_code: args.error_code.clone(),
        error_message: None,
        begin_time: None,
        end_time: None,
        observed_at: now,
    };
    // The state's silences, where there is a state to read.
    let state = &config.state;
    let (silences, silence_note) = if state.url.is_none() && !state.path.exists() {
        (Vec::new(), Some("no state file yet, so no silences"))
    } else {
        let store = Storage::open(state, OpenMode::ReadOnly)
            .await
            .with_context(|| format!("opening {}", state.shown()))?;
        (store.active_silences(now).await?, None)
    };
    let router = crate::daemon::wiring::router(config);
    let routed = router.route(&event, now, &silences);
    let mut out = std::io::stdout().lock();
    if args.format == Format::Json {
        let rows: Vec<serde_json::Value> = routed
            .iter()
            .map(|r| {
                serde_json::json!({
                    "notifier": r.notifier,
                    "route": r.route,
                    "group_key": r.group.as_ref().map(|g| g.key.to_string()),
                    "group_window": r.group.as_ref().map(|g| crate::config::dur::human(g.window)),
                    "held": r.held,
                })
            })
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::json!({"target": event.target, "at": now, "deliveries": rows})
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "{} {} on target {} ({}) at {}:",
        event.kind,
        crate::storage::records::transition_text(&event),
        event.target,
        event.project_id,
        now
    )?;
    if routed.is_empty() {
        writeln!(out, "  no route takes it: nothing would be sent")?;
    }
    for r in &routed {
        let route = &router.routes()[r.route];
        let grouping = match &r.group {
            Some(g) => format!(
                "grouped by {} for {} (key {})",
                match route.group_by {
                    crate::route::GroupBy::Route => "route",
                    crate::route::GroupBy::JobId => "job_id",
                },
                crate::config::dur::human(g.window),
                g.key
            ),
            None => "sent alone, at once".to_owned(),
        };
        let verdict = match &r.held {
            Some(hold) => format!("HELD by {hold}: recorded, not sent"),
            None => "sent".to_owned(),
        };
        writeln!(
            out,
            "  {} (routes[{}]): {verdict}; {grouping}",
            r.notifier, r.route
        )?;
    }
    if let Some(note) = silence_note {
        writeln!(out, "  ({note})")?;
    }
    Ok(())
}

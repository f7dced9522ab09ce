//! `jobwatch once`: one poll cycle over every target, persist, deliver,
//! print the events. `--dry-run` writes nothing and sends nothing.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use comfy_table::Table;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::{Cli, Format};
use crate::daemon::wiring;
use crate::metrics::Metrics;
use crate::notify::dispatch::Dispatcher;
use crate::storage::{OpenMode, Storage};
use crate::watch::event::Event;
use crate::watch::poller::{CycleError, TargetState, cycle};
use crate::watch::strategy::ScanPlan;

#[derive(Debug, clap::Args)]
pub struct OnceArgs {
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Scan and diff only: write nothing, send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long to wait for the outbox to drain after the cycle.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    pub drain_timeout: Duration,
}

pub async fn run(cli: &Cli, args: &OnceArgs) -> anyhow::Result<()> {
    let loaded = super::load_config(cli, true)?.require_targets()?;
    let config = loaded.config;
    cli.init_logging(&config.log);
    for warning in &loaded.warnings {
        tracing::warn!("config: {warning}");
    }
    let dry_run = args.dry_run;
    // A dry run must not even create the state file.
    let mode = if dry_run {
        OpenMode::DryRun
    } else {
        OpenMode::Exclusive
    };
    let store = Storage::open(&config.state, mode).await?;
    let metrics = Arc::new(Metrics::new());
    let contexts = wiring::cycle_contexts(&config, &store, &metrics, dry_run)?;

    let mut events: Vec<Event> = Vec::new();
    let mut failed = 0;
    for target in config.watched() {
        let ctx = &contexts[&*target.account];
        // One cycle per run: a reconciliation that is due runs now.
        let mut state = TargetState::new(ScanPlan::one_shot(ctx.strategy, ctx.full_scan_every));
        match cycle(ctx, &target, &mut state).await {
            Ok(report) => events.extend(report.events),
            Err(e) => {
                failed += 1;
                eprintln!("jobwatch: {e:#}");
                if let CycleError::Api { partial, .. } = e
                    && let Some(report) = *partial
                {
                    events.extend(report.events);
                }
            }
        }
    }

    let mut pending_left = 0;
    if !dry_run {
        let dispatcher = Arc::new(Dispatcher::new(
            store.clone(),
            wiring::notifiers(&config)?,
            wiring::dispatch_settings(&config),
            metrics,
        ));
        pending_left = drain(&dispatcher, &store, args.drain_timeout).await;
    }

    print_events(&events, args.format)?;
    if pending_left > 0 {
        eprintln!(
            "jobwatch: {pending_left} deliveries still pending (they will be retried by `jobwatch run` or the next `once`)"
        );
    }
    if failed > 0 {
        anyhow::bail!("{failed} target(s) could not be polled");
    }
    Ok(())
}

/// Delivers what is due until nothing is due and nothing is in flight, or
/// the timeout; returns how many rows are still pending.
async fn drain(dispatcher: &Arc<Dispatcher>, store: &Storage, timeout: Duration) -> u64 {
    let tracker = TaskTracker::new();
    let deadline = Instant::now() + timeout;
    loop {
        let launched = dispatcher.launch_due(&tracker).await;
        if launched == 0 && dispatcher.in_flight() == 0 {
            break;
        }
        let wait = tokio::time::sleep(Duration::from_millis(100));
        tokio::select! {
            _ = wait => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    tracker.close();
    let _ = tokio::time::timeout_at(deadline, tracker.wait()).await;
    store.outbox_counts().await.map_or(0, |c| c.pending)
}

fn print_events(events: &[Event], format: Format) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            for event in events {
                writeln!(out, "{}", serde_json::to_string(event)?)?;
            }
        }
        Format::Table => {
            if events.is_empty() {
                writeln!(out, "no transitions")?;
                return Ok(());
            }
            let mut table = Table::new();
            table.set_header([
                "KIND", "TARGET", "SUB-JOB", "FROM", "TO", "ERROR", "RESOURCE",
            ]);
            let text = |s: Option<String>| s.unwrap_or_else(|| "-".into());
            for e in events {
                table.add_row([
                    e.kind.as_str().to_owned(),
                    e.target_name().into_owned(),
                    e.sub_job_id.clone(),
                    text(e.from.as_ref().map(ToString::to_string)),
                    text(e.to.as_ref().map(ToString::to_string)),
                    text(e.error_code.clone()),
                    text(e.resource_name.clone()),
                ]);
            }
            writeln!(out, "{table}")?;
        }
    }
    Ok(())
}

//! `jobwatch once`: one poll cycle over every target, persist, deliver,
//! print the events. `--dry-run` writes nothing and sends nothing.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::{Cli, Format};
use crate::daemon::wiring;
use crate::metrics::Metrics;
use crate::notify::dispatch::Dispatcher;
use crate::storage::{OpenMode, PendingOutlook, Storage};
use crate::watch::Target;
use crate::watch::event::Event;
use crate::watch::poller::{CycleError, TargetState, cycle};
use crate::watch::strategy::ScanPlan;

#[derive(Debug, clap::Args)]
pub struct OnceArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Scan and diff only: write nothing, send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long to wait for deliveries after the cycle: those due now,
    /// group windows (`group_window`) that close meanwhile, and retries
    /// that come due meanwhile.
    #[arg(long, alias = "drain-timeout", value_name = "DURATION", default_value = "30s", value_parser = super::parse_duration)]
    pub wait: Duration,
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
    let mut baselines: Vec<(Target, usize)> = Vec::new();
    let mut failed = 0;
    for target in config.watched() {
        let ctx = &contexts[&*target.account];
        // One cycle per run: a reconciliation that is due runs now.
        let mut state = TargetState::new(ScanPlan::one_shot(ctx.strategy, ctx.full_scan_every));
        match cycle(ctx, &target, &mut state).await {
            Ok(report) => {
                if report.baselined_now {
                    baselines.push((target.clone(), report.tracked));
                }
                events.extend(report.events);
            }
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

    let mut left = PendingOutlook::default();
    if !dry_run {
        let dispatcher = Arc::new(Dispatcher::new(
            store.clone(),
            wiring::notifiers(&config)?,
            wiring::dispatch_settings(&config),
            metrics,
        ));
        left = drain(&dispatcher, &store, args.wait).await;
    }

    for (target, tracked) in &baselines {
        let silent = if config.poll.notify_existing {
            ""
        } else {
            ": no alerts for what already existed, only for what changes from now on"
        };
        eprintln!("jobwatch: {target}: recorded a baseline of {tracked} sub-jobs{silent}");
    }
    print_events(&events, args.format, !baselines.is_empty())?;
    let tz = &config.delivery.timezone;
    let at = |t: Option<jiff::Timestamp>| {
        t.map(|t| crate::notify::text::format_time(t, tz))
            .unwrap_or_default()
    };
    if left.untried > 0 {
        eprintln!(
            "jobwatch: {} deliveries wait for a group window that closes at {}, after --wait {}; \
             the next `once` after that (or `jobwatch run`) sends them",
            left.untried,
            at(left.untried_next),
            crate::config::dur::human(args.wait),
        );
    }
    if left.retrying > 0 {
        eprintln!(
            "jobwatch: {} deliveries failed and are retried from {} by the next `once` or `jobwatch run` \
             (`jobwatch state` shows why)",
            left.retrying,
            at(left.retrying_next),
        );
    }
    if failed > 0 {
        anyhow::bail!("{failed} target(s) could not be polled");
    }
    Ok(())
}

/// Delivers until nothing is in flight and no pending row comes due
/// before `wait` is up (due now, a group window closing, a retry), or
/// until it is up; returns what is still pending.
async fn drain(dispatcher: &Arc<Dispatcher>, store: &Storage, wait: Duration) -> PendingOutlook {
    let tracker = TaskTracker::new();
    let deadline = Instant::now() + wait;
    let wall_deadline = jiff::Timestamp::now()
        + jiff::SignedDuration::try_from(wait).unwrap_or(jiff::SignedDuration::MAX);
    loop {
        let launched = dispatcher.launch_due(&tracker).await;
        if launched == 0 && dispatcher.in_flight() == 0 {
            let Ok(outlook) = store.pending_outlook().await else {
                break;
            };
            let next = [outlook.untried_next, outlook.retrying_next]
                .into_iter()
                .flatten()
                .min();
            if next.is_none_or(|next| next > wall_deadline) {
                break;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    tracker.close();
    let _ = tokio::time::timeout_at(deadline, tracker.wait()).await;
    store.pending_outlook().await.unwrap_or_default()
}

/// The events, as a table or JSON lines. An empty table says why it is
/// empty: nothing changed, or only baselines were recorded (stderr has
/// them).
fn print_events(events: &[Event], format: Format, baselined: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            for event in events {
                writeln!(out, "{}", serde_json::to_string(event)?)?;
            }
        }
        Format::Table => {
            if events.is_empty() {
                if baselined {
                    writeln!(out, "no transitions (baseline recorded)")?;
                } else {
                    writeln!(out, "no transitions")?;
                }
                return Ok(());
            }
            let mut table = super::table(&[
                "KIND", "TARGET", "SUB-JOB", "FROM", "TO", "ERROR", "RESOURCE",
            ]);
            let text = |s: Option<String>| s.unwrap_or_else(|| "-".into());
            for e in events {
                super::row(
                    &mut table,
                    [
                        e.kind.as_str().to_owned(),
                        e.target_name().into_owned(),
                        e.sub_job_id.clone(),
                        text(e.from.as_ref().map(ToString::to_string)),
                        text(e.to.as_ref().map(ToString::to_string)),
                        text(e.error_code.clone()),
                        text(e.resource_name.clone()),
                    ],
                );
            }
            writeln!(out, "{table}")?;
        }
    }
    Ok(())
}

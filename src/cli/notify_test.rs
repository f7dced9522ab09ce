//! `jobwatch notify-test [NAME…]`: sends a realistic sample event to each
//! named notifier (all if none) with the same code the daemon delivers
//! with, and prints one line each: ok, or the receiver's own words. Every
//! kind marks it as a test (title, subject, `"test": true`), so nobody is
//! paged by it.

use std::io::Write;

use crate::daemon::wiring;
use crate::notify::sample_message;

use super::Cli;

#[derive(Debug, clap::Args)]
pub struct NotifyTestArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// Notifier names (default: every configured notifier).
    pub names: Vec<String>,
}

pub async fn run(cli: &Cli, args: &NotifyTestArgs) -> anyhow::Result<()> {
    let loaded = super::load_config(cli, true)?;
    cli.init_logging(&loaded.config.log);
    let notifiers = wiring::notifiers(&loaded.config)?;
    for name in &args.names {
        if !notifiers.contains_key(name) {
            let known: Vec<&str> = notifiers.keys().map(String::as_str).collect();
            return Err(super::UsageError(format!(
                "no notifier named {name:?}; configured: {}",
                known.join(", ")
            ))
            .into());
        }
    }
    let mut names: Vec<&String> = if args.names.is_empty() {
        notifiers.keys().collect()
    } else {
        args.names.iter().collect()
    };
    names.sort();
    let mut message = sample_message();
    message.test = true;
    // Unique per run: receivers that de-duplicate must not drop a second test.
    message.id = format!("notify-test-{}", jiff::Timestamp::now().as_millisecond());
    let mut failed = 0;
    for name in names {
        let slot = &notifiers[name];
        slot.limiter.acquire().await;
        let attempt = slot.notifier.send(&message).await;
        let mut out = std::io::stdout().lock();
        match attempt.verdict {
            crate::retry::Verdict::Success => writeln!(out, "{name}: ok")?,
            _ => {
                failed += 1;
                writeln!(out, "{name}: FAILED: {}", attempt.answer)?;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} notifier(s) failed");
    }
    Ok(())
}

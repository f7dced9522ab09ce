//! `jobwatch run`: the daemon, with signals wired to shutdown and reload.

use anyhow::Context;
use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio::sync::{mpsc, oneshot};

use super::Cli;
use crate::daemon::{self, ReloadSource};

pub async fn run(cli: &Cli) -> anyhow::Result<()> {
    let loaded = super::load_config(cli, true)?.require_targets()?;
    cli.init_logging(&loaded.config.log);
    for warning in &loaded.warnings {
        tracing::warn!("config: {warning}");
    }
    let (reload_tx, reload_rx) = mpsc::channel(4);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).context("installing signal handlers")?;
    let handle = signals.handle();
    // Lives as long as the process: it is what turns signals into the
    // shutdown future and reload messages, and a second SIGTERM/SIGINT
    // must still end the process while the daemon drains.
    let listener = tokio::spawn(async move {
        let mut signals = signals;
        let mut stop_tx = Some(stop_tx);
        while let Some(signal) = signals.next().await {
            match signal {
                SIGHUP => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let _ = reload_tx.try_send(());
                }
                _ => match stop_tx.take() {
                    Some(tx) => {
                        tracing::info!(
                            "stop signal received; finishing deliveries under way (again to stop at once)"
                        );
                        let _ = tx.send(());
                    }
                    None => {
                        eprintln!("jobwatch: second stop signal; exiting now");
                        std::process::exit(1);
                    }
                },
            }
        }
    });
    let source = ReloadSource {
        path: cli.config_path().to_owned(),
        must_exist: true,
    };
    let result = daemon::run(
        loaded.config,
        Some(source),
        daemon::systemd::Systemd::from_env(),
        async move {
            let _ = stop_rx.await;
        },
        reload_rx,
    )
    .await;
    handle.close();
    listener.abort();
    result
}

//! `jobwatch sim`: run the embedded Workspace API simulator (docs/simulator.md).

#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Address to listen on; port 0 picks one. The first stdout line is
    /// `listening on http://ADDR`.
    #[arg(long, default_value = "127.0.0.1:18080")]
    pub listen: std::net::SocketAddr,
    /// Seed for the generated data and lifecycle.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Comma-separated project ids (default: one project, `demo`).
    #[arg(long, value_delimiter = ',')]
    pub projects: Vec<String>,
    /// Terminal sub-jobs pre-made per project × job type.
    #[arg(long, default_value_t = 0)]
    pub history: u32,
    /// Only these job types get the history (comma-separated; default:
    /// every known one), for a large history of one type.
    #[arg(long, value_delimiter = ',')]
    pub history_job_type: Vec<String>,
    /// New parent jobs per second (0 = none).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Sub-jobs per parent job.
    #[arg(long, default_value_t = 3)]
    pub fanout: u32,
    /// Milliseconds between a sub-job's status steps.
    #[arg(long, default_value_t = 2000)]
    pub step_ms: u64,
    /// Share of sub-jobs that end FAILED (0..=1).
    #[arg(long, default_value_t = 0.2)]
    pub fail_ratio: f64,
    /// Require SDK-HMAC-SHA256 signatures made with this access key…
    #[arg(long, requires = "sk")]
    pub ak: Option<String>,
    /// …and this secret key.
    #[arg(long, requires = "ak")]
    pub sk: Option<String>,
    /// Require `X-Auth-Token` to equal this.
    #[arg(long)]
    pub token: Option<String>,
    /// Serve `POST /v3/auth/tokens` for this IAM user…
    #[arg(long, requires = "iam_password")]
    pub iam_user: Option<String>,
    /// …with this password.
    #[arg(long, requires = "iam_user")]
    pub iam_password: Option<String>,
    /// List sub-jobs oldest first, as an API that breaks the documented
    /// order would (jobwatch then falls back to full scans).
    #[arg(long)]
    pub oldest_first: bool,
}

pub async fn run(args: &SimArgs) -> anyhow::Result<()> {
    use crate::cloud::model::JobType;
    use std::io::Write;

    use crate::secret::Secret;
    use anyhow::Context;

    let opts = crate::sim::SimOptions {
        listen: args.listen,
        seed: args.seed,
        projects: args.projects.clone(),
        history: args.history,
        history_job_types: args
            .history_job_type
            .iter()
            .map(|t| JobType::from(t.as_str()))
            .collect(),
        rate: args.rate,
        fanout: args.fanout,
        step_ms: args.step_ms,
        fail_ratio: args.fail_ratio,
        ak: args.ak.clone(),
        sk: args.sk.clone().map(Secret::new),
        token: args.token.clone().map(Secret::new),
        iam_user: args.iam_user.clone(),
        iam_password: args.iam_password.clone().map(Secret::new),
        oldest_first: args.oldest_first,
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let sim = match crate::sim::start(opts, shutdown.clone()).await {
        Ok(sim) => sim,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            return Err(super::UsageError(format!("sim: {e}")).into());
        }
        Err(e) => return Err(e).with_context(|| format!("sim: cannot listen on {}", args.listen)),
    };
    // Handlers first, then the address: whoever reads the first line may
    // send SIGTERM at once and must get a clean exit, not the default death.
    let signals = Signals::install()?;
    // The first line is the contract: scripts read the address from it.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", sim.url()).context("sim: writing to stdout")?;
    stdout.flush().context("sim: writing to stdout")?;
    drop(stdout);
    signals.recv().await;
    shutdown.cancel();
    sim.wait().await;
    Ok(())
}

/// Ctrl-C or SIGTERM, registered before they are awaited.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use anyhow::Context;
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt()).context("sim: cannot handle SIGINT")?,
                terminate: signal(SignalKind::terminate()).context("sim: cannot handle SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

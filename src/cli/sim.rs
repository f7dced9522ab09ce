//! `jobwatch sim`: run the embedded Workspace API simulator (SPEC §7).

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
}

pub async fn run(_args: &SimArgs) -> anyhow::Result<()> {
    anyhow::bail!("sim: not yet implemented")
}

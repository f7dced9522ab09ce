//! `jobwatch jobs`: list sub-jobs straight from the API, every page.

use super::{Cli, Format};

#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// The project to list.
    #[arg(long, env = "HUAWEICLOUD_SDK_PROJECT_ID")]
    pub project: String,
    /// The job type (required by the API), e.g. CREATE_SERVER.
    #[arg(long)]
    pub job_type: String,
    /// Only sub-jobs in this status.
    #[arg(long)]
    pub status: Option<String>,
    /// Only sub-jobs of this parent job.
    #[arg(long)]
    pub job_id: Option<String>,
    /// Overrides `api.endpoint`, e.g. a simulator's `http://127.0.0.1:18080`.
    #[arg(long)]
    pub endpoint: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub async fn run(_cli: &Cli, _args: &JobsArgs) -> anyhow::Result<()> {
    anyhow::bail!("jobs: not yet implemented")
}

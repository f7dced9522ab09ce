//! `jobwatch jobs`: list sub-jobs straight from the API, every page.

use std::io::{IsTerminal, Write};

use anyhow::Context;
use comfy_table::Table;
use indicatif::{ProgressBar, ProgressStyle};

use super::{Cli, Format};
use crate::cloud::model::{JobType, Status, SubJob};
use crate::cloud::{Client, Filter};

#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
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
    /// Overrides the account's endpoint, e.g. a simulator's `http://127.0.0.1:18080`.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The account to list with (`[accounts.NAME]`; default: `[api]` and `[auth]`).
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub async fn run(cli: &Cli, args: &JobsArgs) -> anyhow::Result<()> {
    let client = super::client_from_config(cli, args.account.as_deref(), args.endpoint.as_deref())?;
    let items = list(&client, args).await?;
    // Buffered: a locked stdout alone flushes at every newline.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.format {
        Format::Json => {
            let body = Listing {
                count: items.len(),
                items: &items,
            };
            serde_json::to_writer(&mut out, &body)?;
            writeln!(out)?;
        }
        Format::Table => writeln!(out, "{}", table(&items))?,
    }
    out.flush()?;
    Ok(())
}

/// `--format json`: the API's own page shape, with every item.
#[derive(serde::Serialize)]
struct Listing<'a> {
    count: usize,
    items: &'a [SubJob],
}

async fn list(client: &Client, args: &JobsArgs) -> anyhow::Result<Vec<SubJob>> {
    let job_type = JobType::from(args.job_type.as_str());
    let filter = Filter {
        status: args.status.as_deref().map(Status::from),
        job_id: args.job_id.clone(),
    };
    // Progress only where someone watches; pipes and files stay clean.
    let bar = std::io::stdout().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {pos}/{len} sub-jobs {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let scan = client
        .scan(&args.project, &job_type, &filter, |p| {
            if let Some(bar) = &bar {
                bar.set_length(p.total);
                bar.set_position(p.fetched);
            }
        })
        .await
        .with_context(|| format!("listing {job_type} sub-jobs of project {}", args.project))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(reason) = &scan.incomplete_reason {
        eprintln!("warning: the listing may be incomplete: {reason}");
    }
    for rejected in &scan.rejected {
        eprintln!(
            "warning: item {} could not be read: {}",
            rejected.index, rejected.reason
        );
    }
    Ok(scan.items)
}

fn table(items: &[SubJob]) -> Table {
    let mut table = super::table(&["ID", "JOB", "STATUS", "BEGIN", "END", "RESOURCE", "ERROR"]);
    let text = |s: Option<&str>| s.unwrap_or("").to_owned();
    for job in items {
        let error = match (&job.error_code, &job.error_message) {
            (Some(code), Some(msg)) => format!("{code}: {msg}"),
            (Some(code), None) => code.clone(),
            (None, Some(msg)) => msg.clone(),
            (None, None) => String::new(),
        };
        super::row(
            &mut table,
            [
                job.id.clone(),
                text(job.job_id.as_deref()),
                job.status
                    .as_ref()
                    .map(Status::to_string)
                    .unwrap_or_default(),
                job.begin_time
                    .as_ref()
                    .map(|t| t.raw.clone())
                    .unwrap_or_default(),
                job.end_time
                    .as_ref()
                    .map(|t| t.raw.clone())
                    .unwrap_or_default(),
                text(job.resource_name().or(job.resource_id())),
                error,
            ],
        );
    }
    table
}

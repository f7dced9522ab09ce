use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    jobwatch::install_crypto_provider();
    let cli = jobwatch::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jobwatch: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(jobwatch::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jobwatch: {e:#}");
            ExitCode::from(jobwatch::cli::exit_code(&e))
        }
    }
}

//! `jobwatch completions SHELL` and `jobwatch manpage`: the shell
//! completion scripts and the roff man page, made from the command line's
//! own definition (the .deb ships both; see `.ci/deb`). Neither reads a
//! config or starts logging.

use std::io::Write;

use clap::CommandFactory;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to print the completion script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Prints the completion script for `args.shell` to stdout.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut command = super::Cli::command();
    let name = command.get_name().to_owned();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, name, &mut out);
    write_stdout(&out)
}

/// Prints the man page, `jobwatch.1`, to stdout.
pub fn manpage() -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(super::Cli::command()).render(&mut out)?;
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()?;
    Ok(())
}

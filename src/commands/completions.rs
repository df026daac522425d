use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};
use crate::error::ExitCode;

pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    clap_complete::generate(
        args.shell,
        &mut Cli::command(),
        "deployctl",
        &mut std::io::stdout(),
    );
    Ok(ExitCode::Ok)
}

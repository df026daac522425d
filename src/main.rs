//! The `deployctl` binary: parses the command line, runs `commands::run` on a tokio runtime, and
//! turns the result into the exit code.

use clap::Parser;

use deployctl::cli::Cli;
use deployctl::commands;
use deployctl::output::Output;

fn main() {
    let cli = Cli::parse();
    let out = Output::new(
        cli.global.output,
        cli.global.color,
        cli.global.quiet,
        cli.global.verbose,
    );
    out.init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(commands::run(cli, &out)) {
        Ok(code) => code as i32,
        Err(err) => out.error(&err),
    };
    // In-flight exec streams must not delay the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}

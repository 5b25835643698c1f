//! The `ckm` command: Collaborative Key Management for Bitcoin. A thin shell over the `ckm`
//! library: argument parsing, output (human or `--json`) and error reporting.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    if !cli::sets_up_own_logging(&args) {
        cli::init_logging(args.global.verbose, ckm::ops::config::LogFormat::Text);
    }
    let json = args.global.json;
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                let msg = serde_json::json!({ "error": format!("{e:#}") });
                eprintln!("{msg}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

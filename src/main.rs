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
            let hint = cli::hints::hint(&e);
            if json {
                let mut msg = serde_json::json!({ "error": format!("{e:#}") });
                if let Some(hint) = hint {
                    msg["hint"] = serde_json::Value::String(hint);
                }
                eprintln!("{msg}");
            } else {
                eprintln!("error: {e:#}");
                if let Some(hint) = hint {
                    eprintln!("hint: {hint}");
                }
            }
            ExitCode::FAILURE
        }
    }
}

//! `mantissa`: the command line of mantissa.
//!
//! Today it trains, scores and evaluates the learned triage
//! (`mantissa triage …`) and serves the whole stack behind an
//! OpenAI-compatible endpoint (`mantissa gateway --config FILE`).
//!
//! Run `mantissa --help` or `mantissa triage <command> --help`.

#![forbid(unsafe_code)]

mod gateway;
mod triage;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mantissa: tower middleware for LLM agent services, from the command line.
#[derive(Debug, Parser)]
#[command(name = "mantissa", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train, score and evaluate the learned triage, which predicts from a
    /// prompt how much a stronger (more expensive) tier is needed.
    #[command(subcommand)]
    Triage(triage::TriageCommand),
    /// Serve the whole stack behind an OpenAI-compatible HTTP endpoint.
    Gateway(gateway::GatewayArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Triage(cmd) => triage::run(cmd),
        Command::Gateway(args) => gateway::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mantissa: error: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `outrigger-operator`: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;
use outrigger_operator::Cli;

fn main() -> ExitCode {
    outrigger_operator::main(Cli::parse())
}

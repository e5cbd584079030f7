//! One module per command; [`dispatch`] routes a parsed command line to it.

pub mod bench;
pub mod check;
pub mod devices;
pub mod eval;
pub mod fuzz;
pub mod logits;
pub mod quantize;
pub mod repro;
pub mod schemes;
pub mod tokenize;
pub mod worker;

use crate::cli::{Cli, Command};
use crate::Exit;

/// Run a parsed command line.
pub fn dispatch(cli: Cli, out: &mut dyn std::io::Write) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Schemes { json } => schemes::run(json, out),
        Command::Quantize { scheme, input, json } => quantize::run(&scheme, &input, json, out),
        Command::Devices { json } => devices::run(json, out),
        Command::Check(cli) => check::run(&check::CheckArgs::from_cli(cli), out),
        Command::Fuzz(args) => fuzz::run(args, out),
        Command::Repro(args) => repro::run(args, out),
        Command::Eval(args) => eval::run(&args, out),
        Command::Bench(args) => bench::run(&args, out),
        Command::Tokenize(args) => tokenize::run(&args, out),
        Command::Logits(args) => logits::run(&args, out),
        Command::Worker(args) => worker::run(args),
    }
}

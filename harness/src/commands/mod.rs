//! One module per command; [`dispatch`] routes a parsed command line to it.

pub mod quantize;
pub mod schemes;

use crate::cli::{Cli, Command};
use crate::Exit;

/// Run a parsed command line.
pub fn dispatch(cli: Cli, out: &mut dyn std::io::Write) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Schemes { json } => schemes::run(json, out),
        Command::Quantize { scheme, input, json } => quantize::run(&scheme, &input, json, out),
    }
}

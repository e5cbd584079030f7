//! One module per command; [`dispatch`] routes a parsed command line to it.

pub mod check;
pub mod devices;
pub mod quantize;
pub mod schemes;

use crate::cli::{Cli, Command};
use crate::Exit;

/// Run a parsed command line.
pub fn dispatch(cli: Cli, out: &mut dyn std::io::Write) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Schemes { json } => schemes::run(json, out),
        Command::Quantize { scheme, input, json } => quantize::run(&scheme, &input, json, out),
        Command::Devices { json } => devices::run(json, out),
        Command::Check { devices, schemes, ops, cases, seed, out: dir, inject, storage, workgroup_size } => {
            let args = check::CheckArgs {
                devices,
                schemes,
                ops,
                cases,
                seed,
                out: dir,
                inject,
                storage: storage
                    .into_iter()
                    .map(|s| match s {
                        crate::cli::StorageArg::Buffer => ::devices::Storage::Buffer,
                        crate::cli::StorageArg::Texture => ::devices::Storage::Texture,
                    })
                    .collect(),
                workgroup_size,
                command: std::env::args().collect::<Vec<_>>().join(" "),
            };
            check::run(&args, out)
        }
    }
}

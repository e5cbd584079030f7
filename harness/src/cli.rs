//! The command-line grammar (clap derive). Names and flags follow cli.md exactly.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// qdiff: differential numerics and device benchmark harness for quantized ML inference.
#[derive(Debug, Parser)]
#[command(name = "qdiff", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// qdiff's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every scheme family of the catalogue with its parameters.
    Schemes {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Quantize one tensor with the reference and print codes, stored qparams and the dequantized tensor.
    Quantize {
        /// Scheme name (see `qdiff schemes`), e.g. w4g32-sym-ao, q4_0, pal4-pcs-col@f16.
        #[arg(long)]
        scheme: String,
        /// TENSOR.json: {"shape": [rows, cols], "data": [f32, ...]} (optionally "bits" instead of
        /// "data", and "lut" for palettized schemes).
        #[arg(long)]
        input: PathBuf,
        /// Print the full JSON result (cli.md "qdiff quantize").
        #[arg(long)]
        json: bool,
    },
}

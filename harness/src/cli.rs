//! The command-line grammar (clap derive). Names and flags follow cli.md exactly.

use clap::{Parser, Subcommand, ValueEnum};
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
    /// List the devices this machine has (ref, cpu, every GPU adapter), with capabilities.
    Devices {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run seeded op cases on devices and compare them with the reference; exit 1 on any mismatch.
    Check(crate::commands::check::CheckCli),
    /// Generate cases until a time or case budget is spent; shrink each distinct failure to a
    /// minimal case file; exit 1 when anything failed.
    Fuzz(crate::commands::fuzz::FuzzArgs),
    /// Replay a case file on devices (default: the one it was found on), show expected vs found
    /// for the worst elements, exit 1 while it still fails.
    Repro(crate::commands::repro::ReproArgs),
    /// Evaluate a model with schemes applied on devices against the fp32 oracle (teacher-forced
    /// top-1, top-5, KLD, greedy rollouts); write results.json and card.md.
    Eval(crate::commands::eval::EvalArgs),
    /// Benchmark kernels (dequantize, decode and prefill linears, act_quant, embedding, model
    /// forwards) on devices, with each device's measured bandwidth and FMA peaks; table on stdout,
    /// bench_results in results.json.
    Bench(crate::commands::bench::BenchArgs),
    /// Print a model tokenizer's ids for a text.
    Tokenize(crate::commands::tokenize::TokenizeArgs),
    /// Print the top-K logits per position for a token sequence (the oracle, or a scheme on a device).
    Logits(crate::commands::logits::LogitsArgs),
    /// Run device work for a parent qdiff (crash isolation): op cases in on stdin, outputs out on
    /// stdout, one JSON line each. Not for people.
    #[command(hide = true)]
    Worker(crate::commands::worker::WorkerArgs),
}

/// `--storage` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageArg {
    /// Storage buffers.
    Buffer,
    /// Textures (qparams and weights), as mobile GPU backends keep them.
    Texture,
}

impl From<StorageArg> for devices::Storage {
    fn from(s: StorageArg) -> Self {
        match s {
            StorageArg::Buffer => devices::Storage::Buffer,
            StorageArg::Texture => devices::Storage::Texture,
        }
    }
}

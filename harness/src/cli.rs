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
    Check {
        /// Device id (ref, cpu, vulkan, vulkan:N, metal, metal:N); repeatable. Default: cpu and every GPU.
        #[arg(long = "device")]
        devices: Vec<String>,
        /// Scheme name; repeatable. Default: every example of every catalogue family.
        #[arg(long = "scheme")]
        schemes: Vec<String>,
        /// Op (quantize, dequantize, linear, embedding, act_quant, regroup); repeatable. Default: all.
        #[arg(long = "op")]
        ops: Vec<String>,
        /// Cases per (op, scheme, storage variant).
        #[arg(long, default_value_t = 5)]
        cases: usize,
        /// Run seed: the same seed gives the same cases on any machine.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output folder for results.json and cases/.
        #[arg(long, default_value = "qdiff-out")]
        out: PathBuf,
        /// Inject a deliberate fault into every device but ref: zp-bind-int8, zp-bind-f16,
        /// nibble-swap, scale-transpose, drop-last-group.
        #[arg(long)]
        inject: Option<String>,
        /// Where weights and qparams live on the device; repeatable (default buffer).
        #[arg(long, value_enum)]
        storage: Vec<StorageArg>,
        /// Workgroup size of GPU kernels (default: the runner's).
        #[arg(long)]
        workgroup_size: Option<u32>,
    },
}

/// `--storage` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageArg {
    /// Storage buffers.
    Buffer,
    /// Textures (qparams and weights), as mobile GPU backends keep them.
    Texture,
}

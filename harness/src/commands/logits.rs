//! `qdiff logits --model PATH --tokens ID,... [--device ID] [--scheme NAME] [--top K] [--full P,...] [--json]`.

use crate::Exit;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `qdiff logits`.
#[derive(Debug, Clone, Args)]
pub struct LogitsArgs {
    /// A GGUF file, or a safetensors folder (default: the built-in synthetic model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Comma-separated token ids.
    #[arg(long, value_delimiter = ',', required = true)]
    pub tokens: Vec<u32>,
    /// Device (default `ref`).
    #[arg(long, default_value = "ref")]
    pub device: String,
    /// Scheme applied to the linear weights (default: none, the fp32 oracle).
    #[arg(long)]
    pub scheme: Option<String>,
    /// Scheme for the head (default fp32).
    #[arg(long)]
    pub head_scheme: Option<String>,
    /// Scheme for the embedding table (default fp32).
    #[arg(long)]
    pub embed_scheme: Option<String>,
    /// How many of the highest logits to print per position.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Positions whose whole logit row is printed (`"full": {"P": [...]}`).
    #[arg(long, value_delimiter = ',')]
    pub full: Vec<usize>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run it.
pub fn run(args: &LogitsArgs, out: &mut dyn std::io::Write) -> anyhow::Result<Exit> {
    let _ = (args, out);
    anyhow::bail!("qdiff logits is being written")
}

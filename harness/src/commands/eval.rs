//! `qdiff eval`. (being written)

use crate::Exit;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `qdiff eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// A GGUF file, or a safetensors folder (default: the built-in synthetic model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Schemes for the linear weights (repeatable; default w8g32-sym-ao, w4g32-sym-ao, q4_0).
    #[arg(long)]
    pub scheme: Vec<String>,
    /// Scheme for the head (default fp32).
    #[arg(long)]
    pub head_scheme: Option<String>,
    /// Scheme for the embedding table (default fp32).
    #[arg(long)]
    pub embed_scheme: Option<String>,
    /// Devices (repeatable; default cpu and every GPU).
    #[arg(long)]
    pub device: Vec<String>,
    /// A text file to teacher-force (default: the built-in text set).
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Teacher-forced positions.
    #[arg(long, default_value_t = 512)]
    pub positions: usize,
    /// Output folder.
    #[arg(long, default_value = "qdiff-out")]
    pub out: PathBuf,
}

/// Run it.
pub fn run(args: &EvalArgs, out: &mut dyn std::io::Write) -> anyhow::Result<Exit> {
    let _ = (args, out);
    anyhow::bail!("qdiff eval is being written")
}

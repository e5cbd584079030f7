//! `qdiff tokenize --model PATH --text TEXT [--bos] [--no-special] [--json]`. (being written)

use crate::Exit;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `qdiff tokenize`.
#[derive(Debug, Clone, Args)]
pub struct TokenizeArgs {
    /// A GGUF file, or a folder with tokenizer.json.
    #[arg(long)]
    pub model: PathBuf,
    /// The text to tokenize.
    #[arg(long)]
    pub text: String,
    /// Prepend the model's BOS token.
    #[arg(long)]
    pub bos: bool,
    /// Treat special tokens written in the text (`<|im_start|>`) as plain text.
    #[arg(long)]
    pub no_special: bool,
    /// Print `{"tokens": [...]}`.
    #[arg(long)]
    pub json: bool,
}

/// Run it.
pub fn run(args: &TokenizeArgs, out: &mut dyn std::io::Write) -> anyhow::Result<Exit> {
    let _ = (args, out);
    anyhow::bail!("qdiff tokenize is being written")
}

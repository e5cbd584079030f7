//! `qdiff tokenize --model PATH --text TEXT [--bos] [--no-special] [--json]`: a model tokenizer's
//! ids for a text (cli.md). The tokenizer is the GGUF file's embedded one, or a folder's
//! `tokenizer.json`; no BOS unless `--bos`; special tokens written in the text become their ids
//! unless `--no-special`.

use crate::Exit;
use anyhow::{anyhow, bail};
use clap::Args;
use models::tokenizer::{load_for, Tokenizer};
use std::fmt::Write as _;
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

/// The ids of `args.text` under `tok`, BOS first when asked for.
pub fn token_ids(tok: &Tokenizer, args: &TokenizeArgs) -> anyhow::Result<Vec<u32>> {
    let mut ids = Vec::new();
    if args.bos {
        match tok.bos() {
            Some(b) => ids.push(b),
            None => bail!("{}: --bos: the tokenizer has no BOS token", args.model.display()),
        }
    }
    ids.extend(tok.encode(&args.text, !args.no_special).map_err(|e| anyhow!("{}: {e}", args.model.display()))?);
    Ok(ids)
}

/// `bytes` as a quoted string where whitespace, control characters and bytes that are not
/// UTF-8 are visible: `" the"`, `"\n\n"`, `"\xF0\x9F"`.
pub fn escape_piece(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => s.push_str("\\\""),
                '\\' => s.push_str("\\\\"),
                '\n' => s.push_str("\\n"),
                '\r' => s.push_str("\\r"),
                '\t' => s.push_str("\\t"),
                ' ' => s.push(' '),
                c if c.is_control() || c.is_whitespace() || c == '\u{200d}' || c == '\u{feff}' => {
                    let _ = write!(s, "\\u{{{:x}}}", c as u32);
                }
                c => s.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(s, "\\x{b:02X}");
        }
    }
    s.push('"');
    s
}

/// Run the command.
pub fn run(args: &TokenizeArgs, out: &mut dyn std::io::Write) -> anyhow::Result<Exit> {
    let tok = load_for(&args.model)?;
    let ids = token_ids(&tok, args)?;
    if args.json {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "{{\"tokens\": [{}]}}", list.join(", "))?;
        return Ok(Exit::Clean);
    }
    writeln!(out, "{:>5}  {:>7}  {:<24}  piece", "index", "id", "text")?;
    for (i, &id) in ids.iter().enumerate() {
        let text = escape_piece(&tok.token_bytes(id).unwrap_or_default());
        let piece = tok.token_str(id).unwrap_or_default();
        writeln!(out, "{i:>5}  {id:>7}  {text:<24}  {}", escape_piece(piece.as_bytes()))?;
    }
    let bos = if args.bos { ", BOS first" } else { "" };
    let special = if args.no_special { "special tokens as text" } else { "special tokens parsed" };
    writeln!(
        out,
        "{} token{} ({}, vocabulary {}, {special}{bos})",
        ids.len(),
        if ids.len() == 1 { "" } else { "s" },
        tok.kind(),
        tok.vocab_size()
    )?;
    Ok(Exit::Clean)
}

//! `qdiff logits --model PATH --tokens ID,... [--device ID] [--scheme NAME] [--top K] [--full P,...]
//! [--json]`: the top-K logits of every position of a token sequence, from the fp32 oracle (the
//! default) or a scheme on a device. For people debugging a port: compare these rows with theirs.

use crate::commands::eval::scheme_opt;
use crate::modeleval;
use crate::Exit;
use anyhow::{anyhow, bail};
use clap::Args;
use models::metrics::top_k;
use models::{QModel, QuantPlan};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `qdiff logits`.
#[derive(Debug, Clone, Args)]
pub struct LogitsArgs {
    /// A GGUF file, or a safetensors folder (default: the built-in synthetic model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Comma-separated token ids (`qdiff tokenize --json` gives them).
    #[arg(long, value_delimiter = ',', required = true)]
    pub tokens: Vec<u32>,
    /// Device (default `ref`: with no scheme, the fp32 oracle).
    #[arg(long, default_value = "ref")]
    pub device: String,
    /// Scheme applied to the linear weights (default: none).
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
    /// Print JSON (cli.md).
    #[arg(long)]
    pub json: bool,
}

/// One position of the output.
#[derive(Debug, Serialize)]
struct Position {
    top_ids: Vec<u32>,
    top_logits: Vec<f32>,
}

/// The `--json` output.
#[derive(Debug, Serialize)]
struct Output {
    positions: Vec<Position>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    full: BTreeMap<String, Vec<f32>>,
}

/// Run it.
pub fn run(args: &LogitsArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    if args.tokens.is_empty() {
        bail!("--tokens: give at least one token id");
    }
    if args.top == 0 {
        bail!("--top must be at least 1");
    }
    if let Some(p) = args.full.iter().find(|&&p| p >= args.tokens.len()) {
        bail!("--full {p}: there are only {} positions (0..{})", args.tokens.len(), args.tokens.len());
    }
    let plan = QuantPlan {
        linear: scheme_opt("scheme", &args.scheme)?,
        head: scheme_opt("head-scheme", &args.head_scheme)?,
        embed: scheme_opt("embed-scheme", &args.embed_scheme)?,
    };
    let mut dev = devices::open(&args.device).map_err(|e| anyhow!("{e}"))?;
    let model = modeleval::load_model(args.model.as_deref())?;
    modeleval::check_plan(&model, &plan)?;
    models::forward::check_tokens(&model.config, 0, &args.tokens).map_err(|e| anyhow!("--tokens: {e}"))?;
    let q = QModel::quantize(&model, &plan)?;
    drop(model);
    let mut session = dev.load_model(&q).map_err(|e| anyhow!("{e}"))?;
    drop(q);
    let logits = session.forward(&args.tokens).map_err(|e| anyhow!("{e}"))?;
    let positions: Vec<Position> = (0..logits.rows)
        .map(|p| {
            let row = logits.row(p);
            let ids = top_k(row, args.top);
            Position { top_logits: ids.iter().map(|&i| row[i as usize]).collect(), top_ids: ids }
        })
        .collect();
    let full: BTreeMap<String, Vec<f32>> = args.full.iter().map(|&p| (p.to_string(), logits.row(p).to_vec())).collect();
    if args.json {
        serde_json::to_writer(&mut *out, &Output { positions, full })?;
        writeln!(out)?;
        return Ok(Exit::Clean);
    }
    writeln!(out, "{} on {} ({} positions, top {}):", plan.label(), args.device, logits.rows, args.top)?;
    for (p, pos) in positions.iter().enumerate() {
        let pairs: Vec<String> = pos.top_ids.iter().zip(&pos.top_logits).map(|(i, l)| format!("{i}:{l:.4}")).collect();
        writeln!(out, "{p:>5} token {:>6} -> {}", args.tokens[p], pairs.join("  "))?;
    }
    for (p, row) in &full {
        writeln!(out, "full row {p}: {} values (use --json to get them)", row.len())?;
    }
    Ok(Exit::Clean)
}

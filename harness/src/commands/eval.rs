//! `qdiff eval [--model PATH] [--scheme NAME]... [--head-scheme S] [--embed-scheme S] [--device ID]...
//! [--text FILE] [--positions N] [--greedy N] [--out DIR]`: a model with each scheme applied, on
//! each device, against the fp32 oracle; `results.json` and `card.md` in `--out`.

use crate::meta;
use crate::modeleval::{self, EvalSpec};
use crate::Exit;
use anyhow::{anyhow, bail, Context};
use clap::Args;
use models::QuantPlan;
use reports::{ModelResult, Results};
use std::io::Write;
use std::path::PathBuf;

/// The schemes evaluated when none is given: 8, 4 bits with torchao groups of 32, and ggml q4_0.
pub const DEFAULT_SCHEMES: [&str; 3] = ["w8g32-sym-ao", "w4g32-sym-ao", "q4_0"];

/// Arguments of `qdiff eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// A GGUF file, or a folder with config.json, *.safetensors and tokenizer.json (default: the
    /// built-in synthetic model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Scheme for the linear weights (repeatable; default w8g32-sym-ao, w4g32-sym-ao, q4_0).
    /// `fp32` evaluates the unquantized weights on the devices.
    #[arg(long)]
    pub scheme: Vec<String>,
    /// Scheme for the head (lm_head), applied with every --scheme (default: fp32).
    #[arg(long)]
    pub head_scheme: Option<String>,
    /// Scheme for the embedding table, applied with every --scheme (default: fp32).
    #[arg(long)]
    pub embed_scheme: Option<String>,
    /// Devices (repeatable; default: cpu and every GPU adapter).
    #[arg(long)]
    pub device: Vec<String>,
    /// A text file to teacher-force instead of the built-in texts (parts separated by two blank
    /// lines are separate sequences).
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Teacher-forced positions in total.
    #[arg(long, default_value_t = 512)]
    pub positions: usize,
    /// Greedy-rollout tokens compared token by token.
    #[arg(long, default_value_t = 32)]
    pub greedy: usize,
    /// Output folder (results.json, card.md).
    #[arg(long, default_value = "qdiff-out")]
    pub out: PathBuf,
}

/// A scheme option (`fp32` or absent: none); `flag` names it in errors.
pub fn scheme_opt(flag: &str, name: &Option<String>) -> anyhow::Result<Option<kernels_ref::scheme::Scheme>> {
    match name.as_deref() {
        None | Some("fp32") => Ok(None),
        Some(n) => n.parse().map(Some).map_err(|e| anyhow!("--{flag} {n}: {e}")),
    }
}

/// The plans of a command line: one per `--scheme`, each with the head and embedding schemes.
pub fn plans(schemes: &[String], head: &Option<String>, embed: &Option<String>) -> anyhow::Result<Vec<QuantPlan>> {
    let names: Vec<String> =
        if schemes.is_empty() { DEFAULT_SCHEMES.iter().map(|s| s.to_string()).collect() } else { schemes.to_vec() };
    let (head, embed) = (scheme_opt("head-scheme", head)?, scheme_opt("embed-scheme", embed)?);
    names.iter().map(|n| Ok(QuantPlan { linear: scheme_opt("scheme", &Some(n.clone()))?, head, embed })).collect()
}

/// Run it.
pub fn run(args: &EvalArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let started_at = meta::now_rfc3339();
    if args.positions < 2 {
        bail!("--positions must be at least 2");
    }
    let plans = plans(&args.scheme, &args.head_scheme, &args.embed_scheme)?;
    let texts = match &args.text {
        Some(p) => {
            let content = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let name = p.file_name().map_or("text".into(), |n| n.to_string_lossy().to_string());
            let t = models::texts::from_file_text(&name, &content);
            if t.is_empty() {
                bail!("{}: no text in it", p.display());
            }
            t
        }
        None => models::texts::DEFAULT.iter().map(|t| (t.name.to_string(), t.text.to_string())).collect(),
    };
    let spec = EvalSpec {
        positions: args.positions,
        greedy_tokens: args.greedy,
        rollout_prompt: modeleval::ROLLOUT_PROMPT.into(),
        texts,
    };
    let device_ids = if args.device.is_empty() { meta::default_devices() } else { args.device.clone() };
    let mut devs = Vec::new();
    for id in &device_ids {
        devs.push(devices::open(id).map_err(|e| anyhow!("{e}"))?);
    }
    let model = modeleval::load_model(args.model.as_deref())?;
    for p in &plans {
        modeleval::check_plan(&model, p)?;
    }
    let seqs = modeleval::tokenize(&model, &spec)?;
    eprintln!(
        "eval: {} ({} texts, {} positions, greedy {} tokens); oracle...",
        model.source.name,
        seqs.texts.len(),
        seqs.positions(),
        spec.greedy_tokens
    );
    let t0 = std::time::Instant::now();
    let oracle = modeleval::oracle(&model, &seqs, spec.greedy_tokens)?;
    eprintln!("eval: oracle done in {:.1} s", t0.elapsed().as_secs_f64());
    let mut results: Vec<ModelResult> = Vec::new();
    for plan in &plans {
        let mut progress = |r: &ModelResult| {
            if r.status == "ok" {
                eprintln!(
                    "eval: {} on {}: top-1 {}/{}, KLD mean {:.4}, greedy {}/{}",
                    r.scheme,
                    r.device,
                    r.top1_agree,
                    r.positions,
                    r.kld_mean,
                    r.greedy_identical_prefix,
                    r.greedy_tokens
                );
            } else {
                eprintln!("eval: {} on {}: {}: {}", r.scheme, r.device, r.status, r.note.as_deref().unwrap_or(""));
            }
        };
        results.extend(modeleval::evaluate_plan(
            &model,
            plan,
            &mut devs,
            &seqs,
            &oracle,
            spec.greedy_tokens,
            &mut progress,
        )?);
    }
    let info = modeleval::model_info(&model, &seqs, &spec.rollout_prompt, &oracle);
    let failed = results.iter().any(|r| r.status == "error");
    let res = Results {
        model_results: results,
        models: vec![info],
        ..Results::new(meta::run_info(started_at, 0, None), devs.iter().map(|d| meta::device_entry(d.info())).collect())
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let card = reports::card_markdown(&res);
    res.write(&args.out.join("results.json"))?;
    reports::write_atomic(&args.out.join("card.md"), card.as_bytes())?;
    writeln!(out, "{card}")?;
    writeln!(out, "wrote {} and {}", args.out.join("results.json").display(), args.out.join("card.md").display())?;
    Ok(if failed { Exit::FellShort } else { Exit::Clean })
}

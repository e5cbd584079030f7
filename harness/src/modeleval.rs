//! Model evaluation: a model with scheme plans applied, run on devices, measured against the fp32
//! oracle teacher-forced (top-1 with its standard error, top-5, KLD, Δp) and by greedy rollouts
//! (identical prefix against the oracle and between devices). `qdiff eval` and `qdiff run` use it.
//!
//! The oracle is the `ref` device with no scheme: kernels-ref's exact ops over the checkpoint's
//! weights as stored (GGUF blocks dequantized exactly). Every device gets the same token sequences
//! (the texts tokenized once, each text its own KV cache), so the comparison is position by
//! position.

use anyhow::{anyhow, bail, Context};
use devices::{Device, DeviceError, ModelSession};
use kernels_ref::scheme::Scheme;
use kernels_ref::tensor::Matrix;
use models::metrics::{compare_row, identical_prefix, summarize, top_k, PositionStats};
use models::{Model, QModel, QuantPlan};
use reports::{Flip, ModelInfo, ModelResult};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// The default greedy-rollout prompt (ChatML, as SmolLM2 and Qwen chat models expect).
pub const ROLLOUT_PROMPT: &str =
    "<|im_start|>user\nWrite three sentences about the sea.<|im_end|>\n<|im_start|>assistant\n";

/// At most this many flips are kept per result.
const MAX_FLIPS: usize = 32;

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalSpec {
    /// Teacher-forced positions, at most (texts are fed in order until this many).
    pub positions: usize,
    /// Greedy-rollout tokens.
    pub greedy_tokens: usize,
    /// The rollout prompt.
    pub rollout_prompt: String,
    /// `(name, text)` in feeding order.
    pub texts: Vec<(String, String)>,
}

/// The token sequences every device is fed.
#[derive(Debug, Clone)]
pub struct Sequences {
    /// `(text name, tokens)`.
    pub texts: Vec<(String, Vec<u32>)>,
    /// The rollout prompt's tokens.
    pub prompt: Vec<u32>,
}

impl Sequences {
    /// Positions in all texts.
    pub fn positions(&self) -> usize {
        self.texts.iter().map(|(_, t)| t.len()).sum()
    }
}

/// Load the model at `path`, or the built-in synthetic model (written to and read back from a
/// GGUF file in the temp folder).
pub fn load_model(path: Option<&Path>) -> anyhow::Result<Model> {
    match path {
        Some(p) => models::load::load(p).map_err(|e| anyhow!("{e}")),
        None => models::synthetic::load().map_err(|e| anyhow!("the built-in synthetic model: {e}")),
    }
}

/// Tokenize the texts (specials parsed, BOS first when the tokenizer adds one) and cut them to
/// `spec.positions` in total; texts that would be shorter than 2 tokens are dropped.
pub fn tokenize(model: &Model, spec: &EvalSpec) -> anyhow::Result<Sequences> {
    let tok = model
        .tokenizer
        .as_ref()
        .ok_or_else(|| anyhow!("{}: the model has no tokenizer, so texts cannot be fed", model.source.path))?;
    let with_bos = |mut ids: Vec<u32>| {
        if let (true, Some(b)) = (tok.add_bos(), tok.bos()) {
            ids.insert(0, b);
        }
        ids
    };
    let mut left = spec.positions;
    let mut texts = Vec::new();
    for (name, text) in &spec.texts {
        if left < 2 {
            break;
        }
        let mut ids = with_bos(tok.encode(text, true).map_err(|e| anyhow!("text {name}: {e}"))?);
        ids.truncate(left);
        if ids.len() >= 2 {
            left -= ids.len();
            texts.push((name.clone(), ids));
        }
    }
    if texts.is_empty() {
        bail!("no text gives at least 2 tokens to teacher-force (positions = {})", spec.positions);
    }
    let prompt = with_bos(tok.encode(&spec.rollout_prompt, true).map_err(|e| anyhow!("rollout prompt: {e}"))?);
    if prompt.is_empty() {
        bail!("the rollout prompt tokenizes to nothing");
    }
    let max = model.config.max_positions;
    if let Some((n, t)) = texts.iter().find(|(_, t)| t.len() > max) {
        bail!("text {n} has {} tokens, more than the model's context of {max}", t.len());
    }
    if prompt.len() + spec.greedy_tokens > max {
        bail!("the rollout ({} + {} tokens) exceeds the model's context of {max}", prompt.len(), spec.greedy_tokens);
    }
    Ok(Sequences { texts, prompt })
}

/// Checks up front that every scheme of `plan` fits the model's weights (group sizes divide the
/// widths; no activation-only scheme for weights), so a bad plan is exit 2 before any work.
pub fn check_plan(model: &Model, plan: &QuantPlan) -> anyhow::Result<()> {
    let c = &model.config;
    let check = |s: Option<Scheme>, what: &str, widths: &[(&str, usize)]| -> anyhow::Result<()> {
        let Some(s) = s else { return Ok(()) };
        if s.is_activation() {
            bail!("--{what} {s}: an activation-only scheme cannot quantize weights");
        }
        for (name, k) in widths {
            s.granularity()
                .check(&s.to_string(), *k)
                .map_err(|e| anyhow!("--{what} {s} does not fit {} ({name} has {k} inputs): {e}", model.source.name))?;
        }
        Ok(())
    };
    check(
        plan.linear,
        "scheme",
        &[("q/k/v/gate/up", c.hidden_size), ("wo", c.q_width()), ("w_down", c.intermediate_size)],
    )?;
    check(plan.head, "head-scheme", &[("the head", c.hidden_size)])?;
    check(plan.embed, "embed-scheme", &[("the embedding table", c.hidden_size)])
}

/// The oracle's outputs: teacher-forced logits per text and its greedy rollout.
#[derive(Debug)]
pub struct Oracle {
    /// Logits `[T, V]` per text.
    pub logits: Vec<Matrix>,
    /// The greedy tokens after the prompt.
    pub greedy: Vec<u32>,
}

/// What one device gave for one plan.
#[derive(Debug)]
struct DeviceRun {
    stats: Vec<PositionStats>,
    flips: Vec<Flip>,
    greedy: Vec<u32>,
    prefill_s: f64,
    decode_s: f64,
}

fn argmax(row: &[f32]) -> u32 {
    top_k(row, 1).first().copied().unwrap_or(0)
}

/// Greedy decoding from `prompt`: `n` tokens, one forward per token after the prompt's prefill.
/// Returns the tokens and the seconds spent in the one-token steps.
pub fn greedy(session: &mut dyn ModelSession, prompt: &[u32], n: usize) -> Result<(Vec<u32>, f64), DeviceError> {
    session.reset();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return Ok((out, 0.0));
    }
    let logits = session.forward(prompt)?;
    let mut next = argmax(logits.row(logits.rows - 1));
    out.push(next);
    let t0 = Instant::now();
    while out.len() < n {
        let l = session.forward(&[next])?;
        next = argmax(l.row(0));
        out.push(next);
    }
    Ok((out, t0.elapsed().as_secs_f64()))
}

/// Run the oracle (the `ref` device, no scheme).
pub fn oracle(model: &Model, seqs: &Sequences, greedy_tokens: usize) -> anyhow::Result<Oracle> {
    let mut dev = devices::open("ref")?;
    let q = QModel::quantize(model, &QuantPlan::default())?;
    let mut s = dev.load_model(&q)?;
    drop(q);
    let mut logits = Vec::new();
    for (_, t) in &seqs.texts {
        s.reset();
        logits.push(s.forward(t)?);
    }
    let (greedy, _) = greedy(s.as_mut(), &seqs.prompt, greedy_tokens)?;
    Ok(Oracle { logits, greedy })
}

fn run_device(
    id: &str,
    session: &mut dyn ModelSession,
    seqs: &Sequences,
    oracle: &Oracle,
    greedy_tokens: usize,
) -> Result<DeviceRun, DeviceError> {
    let mut stats = Vec::new();
    let mut flips = Vec::new();
    let mut prefill_s = 0.0;
    for ((name, t), ol) in seqs.texts.iter().zip(&oracle.logits) {
        session.reset();
        let t0 = Instant::now();
        let l = session.forward(t)?;
        prefill_s += t0.elapsed().as_secs_f64();
        if l.rows != t.len() || l.cols != ol.cols {
            return Err(DeviceError::Failed {
                device: id.to_string(),
                detail: format!("logits are [{}, {}], expected [{}, {}]", l.rows, l.cols, t.len(), ol.cols),
            });
        }
        for p in 0..t.len() {
            let s = compare_row(ol.row(p), l.row(p));
            if s.oracle_top1 != s.device_top1 && flips.len() < MAX_FLIPS {
                flips.push(Flip { text: name.clone(), position: p, oracle: s.oracle_top1, device: s.device_top1 });
            }
            stats.push(s);
        }
    }
    let (greedy, decode_s) = greedy(session, &seqs.prompt, greedy_tokens)?;
    Ok(DeviceRun { stats, flips, greedy, prefill_s, decode_s })
}

/// A one-line description of a model for cards and results.
pub fn model_info(model: &Model, seqs: &Sequences, rollout_prompt: &str, oracle: &Oracle) -> ModelInfo {
    let c = &model.config;
    ModelInfo {
        name: model.source.name.clone(),
        path: model.source.path.clone(),
        sha256: model.source.sha256.clone(),
        description: format!(
            "{}, {:.1}M parameters, {} layers, width {}, {}/{} heads of {}, FFN {}, vocabulary {}, {} embeddings",
            c.arch.name(),
            c.parameters() as f64 / 1e6,
            c.n_layers,
            c.hidden_size,
            c.n_heads,
            c.n_kv_heads,
            c.head_dim,
            c.intermediate_size,
            c.vocab_size,
            if c.tied_embeddings { "tied" } else { "untied" },
        ),
        storage: model.source.storage.clone(),
        tokenizer: model.tokenizer.as_ref().map_or("none".into(), |t| t.kind()),
        texts: seqs.texts.iter().map(|(n, t)| (n.clone(), t.len())).collect(),
        rollout_prompt: rollout_prompt.to_string(),
        oracle_greedy: oracle.greedy.clone(),
        oracle_greedy_text: model.tokenizer.as_ref().and_then(|t| t.decode(&oracle.greedy).ok()).unwrap_or_default(),
    }
}

fn empty_result(model: &Model, plan: &QuantPlan, device: &str, status: &str, note: String) -> ModelResult {
    ModelResult {
        model: model.source.name.clone(),
        scheme: plan.linear_name(),
        head_scheme: plan.head_name(),
        embed_scheme: plan.embed_name(),
        device: device.to_string(),
        status: status.into(),
        note: Some(note),
        positions: 0,
        top1_agree: 0,
        top1_agreement: 0.0,
        top1_stderr: 0.0,
        top5_overlap: 0.0,
        kld_mean: 0.0,
        kld_median: 0.0,
        kld_p99: 0.0,
        kld_max: 0.0,
        delta_p_rms: 0.0,
        greedy_tokens: 0,
        greedy_identical_prefix: 0,
        greedy_vs_devices: BTreeMap::new(),
        tokens_per_s: 0.0,
        decode_tokens_per_s: 0.0,
        flips: Vec::new(),
        greedy: Vec::new(),
    }
}

/// Evaluate `plan` on every device in `devs`. A device that does not support the plan gives an
/// `unsupported` result, one that fails an `error` result; neither stops the others.
/// `progress` receives one line per device.
pub fn evaluate_plan(
    model: &Model,
    plan: &QuantPlan,
    devs: &mut [Box<dyn Device>],
    seqs: &Sequences,
    oracle: &Oracle,
    greedy_tokens: usize,
    progress: &mut dyn FnMut(&ModelResult),
) -> anyhow::Result<Vec<ModelResult>> {
    let q = QModel::quantize(model, plan).with_context(|| format!("applying {}", plan.label()))?;
    let mut results = Vec::new();
    for dev in devs.iter_mut() {
        let id = dev.info().id.clone();
        let r = match dev.load_model(&q) {
            Err(DeviceError::Unsupported { reason, .. }) => empty_result(model, plan, &id, "unsupported", reason),
            Err(e) => empty_result(model, plan, &id, "error", e.to_string()),
            Ok(mut session) => match run_device(&id, session.as_mut(), seqs, oracle, greedy_tokens) {
                Err(e) => empty_result(model, plan, &id, "error", e.to_string()),
                Ok(run) => {
                    let a = summarize(&run.stats);
                    ModelResult {
                        model: model.source.name.clone(),
                        scheme: plan.linear_name(),
                        head_scheme: plan.head_name(),
                        embed_scheme: plan.embed_name(),
                        device: id.clone(),
                        status: "ok".into(),
                        note: None,
                        positions: a.positions,
                        top1_agree: a.top1_agree,
                        top1_agreement: a.top1_agreement,
                        top1_stderr: a.top1_stderr,
                        top5_overlap: a.top5_overlap,
                        kld_mean: a.kld_mean,
                        kld_median: a.kld_median,
                        kld_p99: a.kld_p99,
                        kld_max: a.kld_max,
                        delta_p_rms: a.delta_p_rms,
                        greedy_tokens: run.greedy.len(),
                        greedy_identical_prefix: identical_prefix(&run.greedy, &oracle.greedy),
                        greedy_vs_devices: BTreeMap::new(),
                        tokens_per_s: rate(a.positions, run.prefill_s),
                        decode_tokens_per_s: rate(run.greedy.len().saturating_sub(1), run.decode_s),
                        flips: run.flips,
                        greedy: run.greedy,
                    }
                }
            },
        };
        progress(&r);
        results.push(r);
    }
    // Device against device: identical prefix of their greedy rollouts.
    let rollouts: Vec<(String, Vec<u32>)> =
        results.iter().filter(|r| r.status == "ok").map(|r| (r.device.clone(), r.greedy.clone())).collect();
    for r in results.iter_mut().filter(|r| r.status == "ok") {
        for (other, g) in &rollouts {
            if *other != r.device {
                r.greedy_vs_devices.insert(other.clone(), identical_prefix(&r.greedy, g));
            }
        }
    }
    Ok(results)
}

fn rate(n: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

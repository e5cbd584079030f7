//! Loading a model from a GGUF file or a safetensors folder.
//!
//! [`load`] dispatches on what the path is: a folder is a Hugging Face checkpoint
//! ([`crate::safetensors`]), a file must be GGUF. From GGUF, the config comes from the
//! `{arch}.*` metadata ([`config_from_gguf`]), the weights from llama.cpp's tensor names
//! (`token_embd.weight`, `blk.N.attn_q.weight`, ...), dequantized exactly to fp32 in parallel
//! ([`model_from_gguf_weights`]), and the tokenizer from the `tokenizer.ggml.*` metadata.
//!
//! Both formats meet in `assemble`: the canonical slots of a Llama-family model, each looked up
//! under the format's name, checked present, converted in parallel, and validated against the
//! config.

use crate::config::{Arch, LlamaConfig};
use crate::gguf::GgufFile;
use crate::meta::MetaValue;
use crate::tokenizer::Tokenizer;
use crate::weights::{LayerWeights, Model, Source};
use crate::{ModelError, Result};
use kernels_ref::ops::{RopeScaling, RopeStyle};
use kernels_ref::tensor::Matrix;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;

/// Load a model: a `.gguf` file, or a folder with `config.json`, `*.safetensors` and `tokenizer.json`.
///
/// # Errors
/// [`ModelError::Io`] when the path cannot be read; [`ModelError::Malformed`] for a file that is
/// not GGUF or a broken checkpoint; [`ModelError::Unsupported`] for another architecture or
/// tensor type; the tokenizer's error when the embedded tokenizer is refused.
pub fn load(path: &Path) -> Result<Model> {
    let label = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| ModelError::Io { path: label.clone(), error: e })?;
    if meta.is_dir() {
        return crate::safetensors::load_folder(path);
    }
    let mut magic = [0u8; 4];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| ModelError::Io { path: label.clone(), error: e })?;
        let mut n = 0;
        while n < 4 {
            match f.read(&mut magic[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ModelError::Io { path: label, error: e }),
            }
        }
        n
    };
    if n < 4 || magic != crate::gguf::GGUF_MAGIC {
        return Err(ModelError::malformed(
            label,
            "offset 0",
            "not a GGUF file (no \"GGUF\" magic); qdiff loads .gguf files and Hugging Face safetensors folders",
        ));
    }
    load_gguf(path)
}

/// Load a GGUF file: [`config_from_gguf`], [`tokenizer_from_gguf`], [`model_from_gguf_weights`].
///
/// # Errors
/// As [`load`].
pub fn load_gguf(path: &Path) -> Result<Model> {
    let g = GgufFile::open(path)?;
    config_from_gguf(&g)?;
    let tokenizer = tokenizer_from_gguf(&g)?;
    let mut model = model_from_gguf_weights(&g)?;
    model.tokenizer = tokenizer;
    Ok(model)
}

/// The embedded tokenizer: `Some` when the metadata has `tokenizer.ggml.model`, `None` otherwise.
///
/// # Errors
/// The tokenizer's own error (a broken embedded tokenizer is a broken file).
pub fn tokenizer_from_gguf(g: &GgufFile) -> Result<Option<Tokenizer>> {
    if g.metadata.contains_key("tokenizer.ggml.model") {
        Ok(Some(Tokenizer::from_gguf(&g.metadata, &g.path)?))
    } else {
        Ok(None)
    }
}

/// The weights of a GGUF file as a [`Model`] (without its tokenizer: `tokenizer` is `None`),
/// with its [`Source`] (file name, path, sha256 of the file, storage summary), validated.
///
/// # Errors
/// As [`config_from_gguf`]; [`ModelError::Malformed`] for a missing tensor or one whose shape
/// disagrees with the config.
pub fn model_from_gguf_weights(g: &GgufFile) -> Result<Model> {
    let config = config_from_gguf(g)?;
    let source = Source {
        name: Path::new(&g.path).file_name().map_or_else(|| g.path.clone(), |n| n.to_string_lossy().into_owned()),
        path: g.path.clone(),
        sha256: String::new(),
        storage: g.storage_summary(),
    };
    // Hashing the file takes about as long as dequantizing it: do both at once.
    let (sha256, model) = rayon::join(
        || g.sha256(),
        || assemble(&g.path, config, gguf_name, |n| g.tensor(n).is_some(), |n| g.tensor_f32(n), source),
    );
    let mut model = model?;
    model.source.sha256 = sha256;
    Ok(model)
}

/// llama.cpp's name of a slot.
fn gguf_name(slot: Slot) -> String {
    let blk = |i: usize, s: &str| format!("blk.{i}.{s}.weight");
    let bias = |i: usize, s: &str| format!("blk.{i}.{s}.bias");
    match slot {
        Slot::Embed => "token_embd.weight".into(),
        Slot::FinalNorm => "output_norm.weight".into(),
        Slot::Head => "output.weight".into(),
        Slot::AttnNorm(i) => blk(i, "attn_norm"),
        Slot::Wq(i) => blk(i, "attn_q"),
        Slot::Wk(i) => blk(i, "attn_k"),
        Slot::Wv(i) => blk(i, "attn_v"),
        Slot::Bq(i) => bias(i, "attn_q"),
        Slot::Bk(i) => bias(i, "attn_k"),
        Slot::Bv(i) => bias(i, "attn_v"),
        Slot::QNorm(i) => blk(i, "attn_q_norm"),
        Slot::KNorm(i) => blk(i, "attn_k_norm"),
        Slot::Wo(i) => blk(i, "attn_output"),
        Slot::FfnNorm(i) => blk(i, "ffn_norm"),
        Slot::Gate(i) => blk(i, "ffn_gate"),
        Slot::Up(i) => blk(i, "ffn_up"),
        Slot::Down(i) => blk(i, "ffn_down"),
    }
}

/// A metadata value as a count (an unsigned integer that fits `usize`); `None` when absent.
fn meta_count(g: &GgufFile, key: &str) -> Result<Option<usize>> {
    match g.get(key) {
        None => Ok(None),
        Some(MetaValue::Array(_)) => {
            Err(ModelError::unsupported(&g.path, format!("{key} is an array (per-layer values are not supported)")))
        }
        Some(v) => match v.as_u64().and_then(|x| usize::try_from(x).ok()) {
            Some(x) => Ok(Some(x)),
            None => Err(ModelError::malformed(&g.path, format!("key {key}"), format!("{v:?} is not a count"))),
        },
    }
}

fn meta_count_req(g: &GgufFile, key: &str) -> Result<usize> {
    meta_count(g, key)?.ok_or_else(|| ModelError::malformed(&g.path, format!("key {key}"), "missing"))
}

/// A metadata value as a number; `None` when absent.
fn meta_f64(g: &GgufFile, key: &str) -> Result<Option<f64>> {
    match g.get(key) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) => Ok(Some(x)),
            None => Err(ModelError::malformed(&g.path, format!("key {key}"), format!("{v:?} is not a number"))),
        },
    }
}

/// The [`LlamaConfig`] of a GGUF file from its `general.architecture` and `{arch}.*` keys.
///
/// Required: `block_count`, `embedding_length`, `feed_forward_length`, `attention.head_count`,
/// `attention.layer_norm_rms_epsilon`, `context_length`. Defaults: `attention.head_count_kv` =
/// heads, `rope.freq_base` = 10000, head_dim = `attention.key_length`, else
/// `rope.dimension_count`, else D/H; vocab = `{arch}.vocab_size`, else the token list's length,
/// else `token_embd.weight`'s rows. RoPE scaling: `rope.scaling.type` `linear` (with
/// `rope.scaling.factor`) or the older `rope.scale_linear`; other types, and a `rope_freqs.weight`
/// tensor (Llama 3.1-style per-frequency factors), are refused.
///
/// # Errors
/// [`ModelError::Unsupported`] for another architecture, MoE, partial rotary or unsupported RoPE
/// scaling; [`ModelError::Malformed`] for missing or mistyped keys.
pub fn config_from_gguf(g: &GgufFile) -> Result<LlamaConfig> {
    let p = &g.path;
    let arch_name = match g.get("general.architecture") {
        Some(MetaValue::String(s)) => s.as_str(),
        Some(v) => return Err(ModelError::malformed(p, "key general.architecture", format!("{v:?} is not a string"))),
        None => return Err(ModelError::malformed(p, "key general.architecture", "missing")),
    };
    let arch = match arch_name {
        "llama" => Arch::Llama,
        "qwen2" => Arch::Qwen2,
        "qwen3" => Arch::Qwen3,
        other => {
            return Err(ModelError::unsupported(
                p,
                format!("architecture `{other}`: qdiff runs llama, qwen2 and qwen3 decoders"),
            ))
        }
    };
    let k = |s: &str| format!("{arch_name}.{s}");
    if meta_count(g, &k("expert_count"))?.unwrap_or(0) > 0 {
        return Err(ModelError::unsupported(p, "mixture-of-experts models (expert_count > 0) are not supported"));
    }
    let n_layers = meta_count_req(g, &k("block_count"))?;
    let hidden_size = meta_count_req(g, &k("embedding_length"))?;
    let intermediate_size = meta_count_req(g, &k("feed_forward_length"))?;
    let n_heads = meta_count_req(g, &k("attention.head_count"))?;
    let n_kv_heads = meta_count(g, &k("attention.head_count_kv"))?.unwrap_or(n_heads);
    let max_positions = meta_count_req(g, &k("context_length"))?;
    let key_len = meta_count(g, &k("attention.key_length"))?;
    let value_len = meta_count(g, &k("attention.value_length"))?;
    let rot = meta_count(g, &k("rope.dimension_count"))?;
    let head_dim = match (key_len, rot) {
        (Some(kl), _) => kl,
        (None, Some(r)) => r,
        (None, None) => {
            if n_heads == 0 || hidden_size % n_heads != 0 {
                return Err(ModelError::malformed(
                    p,
                    format!("key {}", k("attention.head_count")),
                    format!("{n_heads} heads do not divide the width {hidden_size}"),
                ));
            }
            hidden_size / n_heads
        }
    };
    if let Some(r) = rot.filter(|&r| r != head_dim) {
        return Err(ModelError::unsupported(
            p,
            format!("partial rotary embeddings (rope.dimension_count {r} < head_dim {head_dim})"),
        ));
    }
    if let Some(v) = value_len.filter(|&v| v != head_dim) {
        return Err(ModelError::unsupported(p, format!("value heads of {v} differ from key heads of {head_dim}")));
    }
    let rms_eps = meta_f64(g, &k("attention.layer_norm_rms_epsilon"))?
        .ok_or_else(|| ModelError::malformed(p, format!("key {}", k("attention.layer_norm_rms_epsilon")), "missing"))?
        as f32;
    let rope_theta = meta_f64(g, &k("rope.freq_base"))?.unwrap_or(10000.0);
    let rope_scaling = gguf_rope_scaling(g, arch_name)?;
    let vocab_size = match meta_count(g, &k("vocab_size"))? {
        Some(v) => v,
        None => match g.get("tokenizer.ggml.tokens").and_then(MetaValue::as_array) {
            Some(t) => t.len(),
            None => match g.tensor("token_embd.weight").and_then(|t| t.matrix_shape()) {
                Some([rows, _]) => rows,
                None => {
                    return Err(ModelError::malformed(
                        p,
                        format!("key {}", k("vocab_size")),
                        "missing, and there is no token list or token_embd.weight to take it from",
                    ))
                }
            },
        },
    };
    let token = |key: &str| -> Result<Option<u32>> {
        match meta_count(g, key)? {
            None => Ok(None),
            Some(t) if t < vocab_size => Ok(Some(t as u32)),
            Some(t) => Err(ModelError::malformed(
                p,
                format!("key {key}"),
                format!("token {t} is outside the vocabulary of {vocab_size}"),
            )),
        }
    };
    let config = LlamaConfig {
        arch,
        vocab_size,
        hidden_size,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim,
        intermediate_size,
        rms_eps,
        rope_theta,
        rope_scaling,
        rope_style: match arch {
            // llama.cpp's convert script permutes q/k rows for ggml's "normal" (interleaved) rope.
            Arch::Llama => RopeStyle::Interleaved,
            Arch::Qwen2 | Arch::Qwen3 => RopeStyle::Half,
        },
        tied_embeddings: g.tensor("output.weight").is_none(),
        max_positions,
        bos_token: token("tokenizer.ggml.bos_token_id")?,
        eos_token: token("tokenizer.ggml.eos_token_id")?,
    };
    config.validate(p)?;
    check_rope(&config, p)?;
    Ok(config)
}

/// Refuse RoPE parameters the reference would refuse at run time (scaling factors <= 0, ...), so
/// that a checkpoint fails when it is loaded rather than at its first token.
pub(crate) fn check_rope(config: &LlamaConfig, what: &str) -> Result<()> {
    kernels_ref::ops::rope_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling.as_ref())
        .map(|_| ())
        .map_err(|e| ModelError::unsupported(what, e.to_string()))
}

fn gguf_rope_scaling(g: &GgufFile, arch: &str) -> Result<Option<RopeScaling>> {
    let p = &g.path;
    if g.tensor("rope_freqs.weight").is_some() {
        return Err(ModelError::unsupported(
            p,
            "tensor rope_freqs.weight: per-frequency RoPE factors (Llama 3.1-style rope scaling) are not applied; \
             refusing rather than running a different model",
        ));
    }
    let ty_key = format!("{arch}.rope.scaling.type");
    let factor_key = format!("{arch}.rope.scaling.factor");
    let linear = |factor: f64, key: &str| -> Result<Option<RopeScaling>> {
        if factor.is_finite() && factor > 0.0 {
            Ok(Some(RopeScaling::Linear { factor }))
        } else {
            Err(ModelError::malformed(
                p,
                format!("key {key}"),
                format!("scaling factor {factor} must be finite and > 0"),
            ))
        }
    };
    match g.get(&ty_key) {
        Some(MetaValue::String(t)) if t == "none" => Ok(None),
        Some(MetaValue::String(t)) if t == "linear" => match meta_f64(g, &factor_key)? {
            Some(f) => linear(f, &factor_key),
            None => {
                Err(ModelError::malformed(p, format!("key {factor_key}"), "missing (linear rope scaling needs it)"))
            }
        },
        Some(MetaValue::String(t)) => {
            Err(ModelError::unsupported(p, format!("rope scaling `{t}` (qdiff applies none and linear)")))
        }
        Some(v) => Err(ModelError::malformed(p, format!("key {ty_key}"), format!("{v:?} is not a string"))),
        None => {
            let legacy = format!("{arch}.rope.scale_linear");
            match meta_f64(g, &legacy)? {
                Some(f) if f != 1.0 => linear(f, &legacy),
                _ => Ok(None),
            }
        }
    }
}

/// A canonical weight of a Llama-family model (layer index inside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Slot {
    Embed,
    FinalNorm,
    Head,
    AttnNorm(usize),
    Wq(usize),
    Wk(usize),
    Wv(usize),
    Bq(usize),
    Bk(usize),
    Bv(usize),
    QNorm(usize),
    KNorm(usize),
    Wo(usize),
    FfnNorm(usize),
    Gate(usize),
    Up(usize),
    Down(usize),
}

/// Build a [`Model`] from a format: `name` maps each slot to the format's tensor name, `has` says
/// whether a tensor is present, `fetch` reads one as fp32 (called in parallel). The tensors the
/// config needs must all be present; the result is validated against the config.
pub(crate) fn assemble(
    what: &str,
    config: LlamaConfig,
    name: impl Fn(Slot) -> String,
    has: impl Fn(&str) -> bool,
    fetch: impl Fn(&str) -> Result<Matrix> + Sync,
    source: Source,
) -> Result<Model> {
    let mut slots = vec![Slot::Embed, Slot::FinalNorm];
    if !config.tied_embeddings {
        slots.push(Slot::Head);
    }
    for i in 0..config.n_layers {
        slots.extend([
            Slot::AttnNorm(i),
            Slot::Wq(i),
            Slot::Wk(i),
            Slot::Wv(i),
            Slot::Wo(i),
            Slot::FfnNorm(i),
            Slot::Gate(i),
            Slot::Up(i),
            Slot::Down(i),
        ]);
        if config.qkv_bias() {
            slots.extend([Slot::Bq(i), Slot::Bk(i), Slot::Bv(i)]);
        }
        if config.qk_norm() {
            slots.extend([Slot::QNorm(i), Slot::KNorm(i)]);
        }
    }
    let named: Vec<(Slot, String)> = slots.into_iter().map(|s| (s, name(s))).collect();
    if let Some((_, n)) = named.iter().find(|(_, n)| !has(n)) {
        return Err(ModelError::malformed(
            what,
            format!("tensor {n}"),
            format!("missing (a {} model with {} layers needs it)", config.arch.name(), config.n_layers),
        ));
    }
    let mut got: HashMap<Slot, Matrix> =
        named.par_iter().map(|(s, n)| fetch(n).map(|m| (*s, m))).collect::<Result<HashMap<_, _>>>()?;
    let mut take = |s: Slot| -> Result<Matrix> {
        got.remove(&s).ok_or_else(|| ModelError::malformed(what, format!("tensor {}", name(s)), "missing"))
    };
    let embed = take(Slot::Embed)?;
    let final_norm = take(Slot::FinalNorm)?.data;
    let head = if config.tied_embeddings { None } else { Some(take(Slot::Head)?) };
    let mut layers = Vec::with_capacity(config.n_layers);
    for i in 0..config.n_layers {
        let (bq, bk, bv) = if config.qkv_bias() {
            (Some(take(Slot::Bq(i))?.data), Some(take(Slot::Bk(i))?.data), Some(take(Slot::Bv(i))?.data))
        } else {
            (None, None, None)
        };
        let (q_norm, k_norm) = if config.qk_norm() {
            (Some(take(Slot::QNorm(i))?.data), Some(take(Slot::KNorm(i))?.data))
        } else {
            (None, None)
        };
        layers.push(LayerWeights {
            attn_norm: take(Slot::AttnNorm(i))?.data,
            wq: take(Slot::Wq(i))?,
            wk: take(Slot::Wk(i))?,
            wv: take(Slot::Wv(i))?,
            bq,
            bk,
            bv,
            q_norm,
            k_norm,
            wo: take(Slot::Wo(i))?,
            ffn_norm: take(Slot::FfnNorm(i))?.data,
            w_gate: take(Slot::Gate(i))?,
            w_up: take(Slot::Up(i))?,
            w_down: take(Slot::Down(i))?,
        });
    }
    let model = Model { config, embed, layers, final_norm, head, tokenizer: None, source };
    model.validate(what)?;
    Ok(model)
}

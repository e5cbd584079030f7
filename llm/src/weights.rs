//! A checkpoint's weights in fp32 under canonical names, with where they came from.

use crate::config::LlamaConfig;
use crate::tokenizer::Tokenizer;
use kernels_ref::tensor::Matrix;

/// One decoder layer's weights. Linear weights are `[out, in]` (PyTorch's layout); for GGUF
/// llama checkpoints `wq` and `wk` keep llama.cpp's permutation (and the config says
/// [`RopeStyle::Interleaved`](kernels_ref::ops::RopeStyle::Interleaved)).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerWeights {
    /// RMSNorm weight before attention `[D]`.
    pub attn_norm: Vec<f32>,
    /// Query projection `[Hq * Dh, D]`.
    pub wq: Matrix,
    /// Key projection `[Hkv * Dh, D]`.
    pub wk: Matrix,
    /// Value projection `[Hkv * Dh, D]`.
    pub wv: Matrix,
    /// Biases of q, k, v (Qwen2), `[Hq * Dh]`, `[Hkv * Dh]`, `[Hkv * Dh]`.
    pub bq: Option<Vec<f32>>,
    /// See `bq`.
    pub bk: Option<Vec<f32>>,
    /// See `bq`.
    pub bv: Option<Vec<f32>>,
    /// Per-head RMSNorm weights of q and k (Qwen3), `[Dh]` each.
    pub q_norm: Option<Vec<f32>>,
    /// See `q_norm`.
    pub k_norm: Option<Vec<f32>>,
    /// Output projection `[D, Hq * Dh]`.
    pub wo: Matrix,
    /// RMSNorm weight before the FFN `[D]`.
    pub ffn_norm: Vec<f32>,
    /// Gate projection `[F, D]`.
    pub w_gate: Matrix,
    /// Up projection `[F, D]`.
    pub w_up: Matrix,
    /// Down projection `[D, F]`.
    pub w_down: Matrix,
}

/// Where a model came from: shown in results and under every card.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Source {
    /// A short name (the file name, or `synthetic-llama-s{seed}`).
    pub name: String,
    /// The file or folder it was read from.
    pub path: String,
    /// sha256 of the GGUF file (of `model.safetensors` / the index for folders), hex.
    pub sha256: String,
    /// What the weights were stored as (`Q4_1 x210, F32 x61, Q8_0 x1`).
    pub storage: String,
}

/// A Llama-family model with fp32 weights: the oracle's view of a checkpoint (quantized GGUF
/// tensors are dequantized exactly, so the oracle is the model as stored).
#[derive(Debug, Clone)]
pub struct Model {
    /// Shapes and constants.
    pub config: LlamaConfig,
    /// Token embedding table `[V, D]`.
    pub embed: Matrix,
    /// The decoder layers.
    pub layers: Vec<LayerWeights>,
    /// Final RMSNorm weight `[D]`.
    pub final_norm: Vec<f32>,
    /// The head `[V, D]`; `None` when tied to `embed`.
    pub head: Option<Matrix>,
    /// The tokenizer that came with the checkpoint, if any.
    pub tokenizer: Option<Tokenizer>,
    /// Provenance.
    pub source: Source,
}

impl Model {
    /// The head matrix (the embedding table when tied).
    pub fn head(&self) -> &Matrix {
        self.head.as_ref().unwrap_or(&self.embed)
    }

    /// Checks every tensor has the shape the config says; `what` names the source in errors.
    pub fn validate(&self, what: &str) -> crate::Result<()> {
        let c = &self.config;
        c.validate(what)?;
        let (d, f, qw, kw, v) = (c.hidden_size, c.intermediate_size, c.q_width(), c.kv_width(), c.vocab_size);
        let want = |name: &str, m: &Matrix, r: usize, cc: usize| -> crate::Result<()> {
            if m.rows != r || m.cols != cc {
                return Err(crate::ModelError::malformed(
                    what,
                    format!("tensor {name}"),
                    format!("shape [{}, {}], the config needs [{r}, {cc}]", m.rows, m.cols),
                ));
            }
            Ok(())
        };
        let vec_len = |name: &str, x: &[f32], n: usize| -> crate::Result<()> {
            if x.len() != n {
                return Err(crate::ModelError::malformed(
                    what,
                    format!("tensor {name}"),
                    format!("{} values, the config needs {n}", x.len()),
                ));
            }
            Ok(())
        };
        want("embed", &self.embed, v, d)?;
        if let Some(h) = &self.head {
            want("head", h, v, d)?;
        }
        vec_len("final_norm", &self.final_norm, d)?;
        if self.layers.len() != c.n_layers {
            return Err(crate::ModelError::malformed(
                what,
                "layers",
                format!("{} layers, the config says {}", self.layers.len(), c.n_layers),
            ));
        }
        for (i, l) in self.layers.iter().enumerate() {
            let n = |s: &str| format!("layer {i} {s}");
            vec_len(&n("attn_norm"), &l.attn_norm, d)?;
            vec_len(&n("ffn_norm"), &l.ffn_norm, d)?;
            want(&n("wq"), &l.wq, qw, d)?;
            want(&n("wk"), &l.wk, kw, d)?;
            want(&n("wv"), &l.wv, kw, d)?;
            want(&n("wo"), &l.wo, d, qw)?;
            want(&n("w_gate"), &l.w_gate, f, d)?;
            want(&n("w_up"), &l.w_up, f, d)?;
            want(&n("w_down"), &l.w_down, d, f)?;
            for (name, b, len) in [("bq", &l.bq, qw), ("bk", &l.bk, kw), ("bv", &l.bv, kw)] {
                match b {
                    Some(b) => vec_len(&n(name), b, len)?,
                    None if c.qkv_bias() => {
                        return Err(crate::ModelError::malformed(what, n(name), "missing (qwen2 has q/k/v biases)"))
                    }
                    None => {}
                }
            }
            for (name, b) in [("q_norm", &l.q_norm), ("k_norm", &l.k_norm)] {
                match b {
                    Some(b) => vec_len(&n(name), b, c.head_dim)?,
                    None if c.qk_norm() => {
                        return Err(crate::ModelError::malformed(what, n(name), "missing (qwen3 normalizes q and k)"))
                    }
                    None => {}
                }
            }
        }
        Ok(())
    }
}

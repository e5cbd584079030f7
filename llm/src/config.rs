//! The architecture parameters of a Llama-family decoder.

use kernels_ref::ops::{RopeScaling, RopeStyle};
use serde::{Deserialize, Serialize};

/// Which member of the family: the differences are small and listed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// Llama 1/2/3, SmolLM, SmolLM2, Mistral-like dense decoders.
    Llama,
    /// Qwen2 / Qwen2.5: biases on q, k and v.
    Qwen2,
    /// Qwen3: RMSNorm on each head of q and k (before RoPE), no biases.
    Qwen3,
}

impl Arch {
    /// The GGUF `general.architecture` / lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }
}

/// Everything the forward pass needs to know about the shapes and constants of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// The family member.
    pub arch: Arch,
    /// Vocabulary size (rows of the embedding table and of the head).
    pub vocab_size: usize,
    /// Model width D.
    pub hidden_size: usize,
    /// Number of decoder layers.
    pub n_layers: usize,
    /// Query heads Hq.
    pub n_heads: usize,
    /// Key/value heads Hkv (GQA when < Hq).
    pub n_kv_heads: usize,
    /// Per-head width Dh (`hidden_size / n_heads` unless the checkpoint says otherwise).
    pub head_dim: usize,
    /// FFN inner width F.
    pub intermediate_size: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE frequency scaling from the config, if any.
    pub rope_scaling: Option<RopeScaling>,
    /// How RoPE pairs elements: GGUF llama checkpoints have q/k permuted for the interleaved
    /// layout; HF checkpoints and GGUF qwen2/qwen3 use the half (neox) layout.
    pub rope_style: RopeStyle,
    /// Whether the head reuses the embedding table.
    pub tied_embeddings: bool,
    /// The context length the model was trained for.
    pub max_positions: usize,
    /// Beginning-of-sequence token, if the tokenizer has one.
    pub bos_token: Option<u32>,
    /// End-of-sequence token, if any.
    pub eos_token: Option<u32>,
}

impl LlamaConfig {
    /// Width of q (`Hq * Dh`).
    pub fn q_width(&self) -> usize {
        self.n_heads * self.head_dim
    }
    /// Width of k and v (`Hkv * Dh`).
    pub fn kv_width(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
    /// Whether q, k and v carry biases (Qwen2).
    pub fn qkv_bias(&self) -> bool {
        self.arch == Arch::Qwen2
    }
    /// Whether q and k are RMS-normalized per head (Qwen3).
    pub fn qk_norm(&self) -> bool {
        self.arch == Arch::Qwen3
    }
    /// The attention scale `1 / sqrt(Dh)` (rounded to f32 from f64).
    pub fn attn_scale(&self) -> f32 {
        (1.0 / (self.head_dim as f64).sqrt()) as f32
    }
    /// Parameter count of the weights (embedding and head counted once when tied).
    pub fn parameters(&self) -> usize {
        let d = self.hidden_size;
        let per_layer = 2 * d
            + d * self.q_width()
            + 2 * d * self.kv_width()
            + self.q_width() * d
            + 3 * d * self.intermediate_size
            + if self.qkv_bias() { self.q_width() + 2 * self.kv_width() } else { 0 }
            + if self.qk_norm() { 2 * self.head_dim } else { 0 };
        let head = if self.tied_embeddings { 0 } else { self.vocab_size * d };
        self.vocab_size * d + self.n_layers * per_layer + d + head
    }
    /// Checks the shapes fit together (heads divide, widths non-zero); `what` names the source.
    pub fn validate(&self, what: &str) -> crate::Result<()> {
        let bad = |d: String| Err(crate::ModelError::unsupported(what, d));
        if self.vocab_size == 0 || self.hidden_size == 0 || self.n_layers == 0 || self.intermediate_size == 0 {
            return bad(format!("a zero dimension in {self:?}"));
        }
        if self.n_heads == 0 || self.n_kv_heads == 0 || self.n_heads % self.n_kv_heads != 0 {
            return bad(format!("{} query heads are not a multiple of {} kv heads", self.n_heads, self.n_kv_heads));
        }
        if self.head_dim == 0 || self.head_dim % 2 != 0 {
            return bad(format!("head_dim {} must be even and > 0", self.head_dim));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0 && self.rms_eps.is_finite() && self.rms_eps >= 0.0) {
            return bad(format!("rope_theta {} / rms_eps {} out of range", self.rope_theta, self.rms_eps));
        }
        Ok(())
    }
}

//! The built-in synthetic Llama: tiny, seeded, generated in code.
//!
//! It is the default model when none is given, so every model path of qdiff (GGUF writing and
//! reading, tokenizer, executor, devices, metrics) runs without a download. [`model`] builds the
//! weights in memory; [`write_gguf`] writes them (and a byte-level BPE tokenizer trained on the
//! default texts) as a GGUF file, and [`load`] writes and reads it back through the real GGUF path.
//!
//! Shapes: vocabulary 512, width 256, 2 layers, 4 query heads and 2 kv heads of 64 (GQA), FFN 512,
//! so that every catalogue group size up to 256 (q4_K's super-block) divides every input width.
//! Weights are seeded normal values with a 1/sqrt(fan-in) scale; norms are near 1 with a seeded
//! spread, so logits are peaked enough for top-1 agreement to mean something.

use crate::config::{Arch, LlamaConfig};
use crate::weights::{LayerWeights, Model, Source};
use kernels_ref::ops::RopeStyle;
use kernels_ref::tensor::Matrix;

/// The default seed.
pub const SEED: u64 = 0x5eed_11a3;

/// The synthetic model's shapes and constants.
pub fn config() -> LlamaConfig {
    LlamaConfig {
        arch: Arch::Llama,
        vocab_size: 512,
        hidden_size: 256,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 64,
        intermediate_size: 512,
        rms_eps: 1e-5,
        rope_theta: 10000.0,
        rope_scaling: None,
        rope_style: RopeStyle::Interleaved,
        tied_embeddings: true,
        max_positions: 4096,
        bos_token: None,
        eos_token: None,
    }
}

/// SplitMix64: a tiny seeded generator whose stream is fixed forever (it defines the weights).
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller with `libm`, so the values are the same on every machine).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        libm::sqrt(-2.0 * libm::log(u)) * libm::cos(std::f64::consts::TAU * v)
    }
    fn matrix(&mut self, rows: usize, cols: usize, std: f64) -> Matrix {
        let data = (0..rows * cols).map(|_| (self.normal() * std) as f32).collect();
        Matrix { rows, cols, data }
    }
    fn norm(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| (1.0 + 0.1 * self.normal()) as f32).collect()
    }
}

/// The synthetic model's weights for `seed`, in memory (no tokenizer; see [`load`] for the
/// model as the GGUF path gives it).
pub fn model(seed: u64) -> Model {
    model_with(config(), seed)
}

/// Seeded weights for any Llama-family `config` (tests use other shapes and archs).
pub fn model_with(config: LlamaConfig, seed: u64) -> Model {
    let mut r = SplitMix(seed);
    let c = &config;
    let (d, f, qw, kw) = (c.hidden_size, c.intermediate_size, c.q_width(), c.kv_width());
    let s = |fan_in: usize| 1.0 / (fan_in as f64).sqrt();
    let embed = r.matrix(c.vocab_size, d, 1.0);
    let layers = (0..c.n_layers)
        .map(|_| LayerWeights {
            attn_norm: r.norm(d),
            wq: r.matrix(qw, d, s(d)),
            wk: r.matrix(kw, d, s(d)),
            wv: r.matrix(kw, d, s(d)),
            bq: c.qkv_bias().then(|| r.norm(qw).iter().map(|v| v - 1.0).collect()),
            bk: c.qkv_bias().then(|| r.norm(kw).iter().map(|v| v - 1.0).collect()),
            bv: c.qkv_bias().then(|| r.norm(kw).iter().map(|v| v - 1.0).collect()),
            q_norm: c.qk_norm().then(|| r.norm(c.head_dim)),
            k_norm: c.qk_norm().then(|| r.norm(c.head_dim)),
            wo: r.matrix(d, qw, s(qw)),
            ffn_norm: r.norm(d),
            w_gate: r.matrix(f, d, s(d)),
            w_up: r.matrix(f, d, s(d)),
            w_down: r.matrix(d, f, s(f)),
        })
        .collect();
    let final_norm = r.norm(d);
    let head = (!c.tied_embeddings).then(|| r.matrix(c.vocab_size, d, s(d)));
    Model {
        config,
        embed,
        layers,
        final_norm,
        head,
        tokenizer: None,
        source: Source {
            name: format!("synthetic-llama-s{seed}"),
            path: "(built in)".into(),
            sha256: String::new(),
            storage: "F32".into(),
        },
    }
}

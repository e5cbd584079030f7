//! The built-in synthetic Llama: tiny, seeded, generated in code.
//!
//! It is the default model when none is given, so every model path of qdiff (GGUF writing and
//! reading, tokenizer, executor, devices, metrics) runs without a download. [`model`] builds the
//! weights in memory; [`write_gguf`] writes them (and a byte-level BPE tokenizer trained on the
//! default texts) as a GGUF file, and [`load`] writes and reads it back through the real GGUF path.
//!
//! Shapes: vocabulary 512, width 256, 2 layers, 4 query heads and 2 kv heads of 64 (GQA), FFN 512,
//! an untied head,
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
        tied_embeddings: false,
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
    // An untied head with logits of standard deviation ~3: peaked next-token distributions that
    // depend on the context (a tied head would mostly echo the input token).
    let head = (!c.tied_embeddings).then(|| r.matrix(c.vocab_size, d, 3.0 * s(d)));
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

/// Merges learned for the synthetic tokenizer (vocabulary = 256 bytes + merges + 3 specials = 512).
const MERGES: usize = 253;

/// The special tokens of the synthetic tokenizer (ChatML, as the default texts use).
pub const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// The synthetic model's GGUF image: `general.*` and `llama.*` metadata, a byte-level BPE
/// tokenizer trained on the default texts, and every weight as F32.
pub fn write_gguf(path: &std::path::Path, seed: u64) -> crate::Result<()> {
    use crate::gguf::{f32_bytes, GgmlType};
    use crate::meta::MetaValue as M;
    let texts: Vec<&str> = crate::texts::DEFAULT.iter().map(|t| t.text).collect();
    let vocab = crate::tokenizer::GgufVocab::train_byte_level(&texts, MERGES, &SPECIALS);
    let mut cfg = config();
    cfg.vocab_size = vocab.tokens.len();
    let m = model_with(cfg, seed);
    let c = &m.config;
    let u32_ = |v: usize| M::U32(v as u32);
    let mut meta: Vec<(String, M)> = vec![
        ("general.architecture".into(), M::String("llama".into())),
        ("general.name".into(), M::String(format!("synthetic-llama-s{seed}"))),
        ("general.alignment".into(), M::U32(32)),
        ("llama.block_count".into(), u32_(c.n_layers)),
        ("llama.context_length".into(), u32_(c.max_positions)),
        ("llama.embedding_length".into(), u32_(c.hidden_size)),
        ("llama.feed_forward_length".into(), u32_(c.intermediate_size)),
        ("llama.attention.head_count".into(), u32_(c.n_heads)),
        ("llama.attention.head_count_kv".into(), u32_(c.n_kv_heads)),
        ("llama.rope.freq_base".into(), M::F32(c.rope_theta as f32)),
        ("llama.rope.dimension_count".into(), u32_(c.head_dim)),
        ("llama.attention.layer_norm_rms_epsilon".into(), M::F32(c.rms_eps)),
        ("llama.vocab_size".into(), u32_(c.vocab_size)),
    ];
    meta.extend(vocab.metadata());
    // ggml dims are fastest first: a [rows, cols] matrix is [cols, rows].
    let mat = |name: String, x: &Matrix| (name, vec![x.cols as u64, x.rows as u64], GgmlType::F32, f32_bytes(&x.data));
    let vec1 = |name: String, x: &[f32]| (name, vec![x.len() as u64], GgmlType::F32, f32_bytes(x));
    let mut tensors = vec![mat("token_embd.weight".into(), &m.embed), vec1("output_norm.weight".into(), &m.final_norm)];
    for (i, l) in m.layers.iter().enumerate() {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        tensors.push(vec1(n("attn_norm"), &l.attn_norm));
        tensors.push(mat(n("attn_q"), &l.wq));
        tensors.push(mat(n("attn_k"), &l.wk));
        tensors.push(mat(n("attn_v"), &l.wv));
        tensors.push(mat(n("attn_output"), &l.wo));
        tensors.push(vec1(n("ffn_norm"), &l.ffn_norm));
        tensors.push(mat(n("ffn_gate"), &l.w_gate));
        tensors.push(mat(n("ffn_up"), &l.w_up));
        tensors.push(mat(n("ffn_down"), &l.w_down));
    }
    if let Some(h) = &m.head {
        tensors.push(mat("output.weight".into(), h));
    }
    crate::gguf::write(path, &meta, &tensors)
}

/// The synthetic model as qdiff uses it: written to a GGUF file in the temp folder, read back
/// through [`load`](crate::load::load) (loader and tokenizer included), and the file removed.
pub fn load() -> crate::Result<Model> {
    load_seed(SEED)
}

/// [`load`] for another seed.
pub fn load_seed(seed: u64) -> crate::Result<Model> {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("qdiff-synthetic-{}-{seed}.gguf", std::process::id()));
    let written = write_gguf(&path, seed);
    let loaded = written.and_then(|()| crate::load::load(&path));
    let _ = std::fs::remove_file(&path);
    let mut m = loaded?;
    m.source.name = format!("synthetic-llama-s{seed}");
    m.source.path = format!("(built in: qdiff's synthetic Llama, seed {seed})");
    Ok(m)
}

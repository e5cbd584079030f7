//! Loading models from GGUF: tiny llama / qwen2 / qwen3 files written with the GGUF writer and
//! read back through `load`, every refusal the loader makes, and the real SmolLM2 file (config,
//! source, timing).

mod common;

use common::{expect_malformed, expect_unsupported, seeded, unique, TempDir};

use kernels_ref::ops::{RopeScaling, RopeStyle};
use kernels_ref::pack::{pack, Packing};
use kernels_ref::scheme::Scheme;
use kernels_ref::tensor::Matrix;
use models::config::Arch;
use models::gguf::{self, GgmlType, GgufFile};
use models::load::{config_from_gguf, load, model_from_gguf_weights, tokenizer_from_gguf};
use models::meta::MetaValue;
use models::{Model, ModelError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

const MODEL: &str = models::EXAMPLE_MODEL;

/// The example model, or `None` with the skip message (a failure under `QDIFF_REQUIRE_MODEL=1`).
fn model_path() -> Option<PathBuf> {
    models::example_model_for_tests()
}

type Tensors = Vec<gguf::RawTensor>;

/// A tiny model in GGUF form and the fp32 values each tensor should read back as.
struct Tiny {
    arch: &'static str,
    meta: Vec<(String, MetaValue)>,
    tensors: Tensors,
    expect: HashMap<String, Matrix>,
}

const D: usize = 64;
const F: usize = 96;
const V: usize = 40;
const LAYERS: usize = 2;

impl Tiny {
    /// `heads` x `head_dim` query width (qwen3 may differ from D), 2 kv heads.
    fn new(arch: &'static str, heads: usize, head_dim: usize, tied: bool) -> Tiny {
        let kv = 2;
        let k = |s: &str| format!("{arch}.{s}");
        let meta = vec![
            ("general.architecture".to_string(), MetaValue::String(arch.into())),
            ("general.name".to_string(), MetaValue::String("tiny".into())),
            (k("block_count"), MetaValue::U32(LAYERS as u32)),
            (k("context_length"), MetaValue::U32(256)),
            (k("embedding_length"), MetaValue::U32(D as u32)),
            (k("feed_forward_length"), MetaValue::U32(F as u32)),
            (k("attention.head_count"), MetaValue::U32(heads as u32)),
            (k("attention.head_count_kv"), MetaValue::U32(kv as u32)),
            (k("attention.key_length"), MetaValue::U32(head_dim as u32)),
            (k("attention.value_length"), MetaValue::U32(head_dim as u32)),
            (k("rope.freq_base"), MetaValue::F32(50000.0)),
            (k("attention.layer_norm_rms_epsilon"), MetaValue::F32(1e-6)),
            (k("vocab_size"), MetaValue::U32(V as u32)),
            ("tokenizer.ggml.bos_token_id".to_string(), MetaValue::U32(1)),
            ("tokenizer.ggml.eos_token_id".to_string(), MetaValue::U32(2)),
        ];
        let mut t = Tiny { arch, meta, tensors: Vec::new(), expect: HashMap::new() };
        let (qw, kw) = (heads * head_dim, kv * head_dim);
        let mut seed = 100;
        let mut f32_tensor = |t: &mut Tiny, name: String, rows: usize, cols: usize| {
            seed += 1;
            t.add_f32(&name, rows, cols, seed);
        };
        f32_tensor(&mut t, "token_embd.weight".into(), V, D);
        f32_tensor(&mut t, "output_norm.weight".into(), 1, D);
        if !tied {
            f32_tensor(&mut t, "output.weight".into(), V, D);
        }
        for i in 0..LAYERS {
            let b = |s: &str| format!("blk.{i}.{s}");
            f32_tensor(&mut t, b("attn_norm.weight"), 1, D);
            f32_tensor(&mut t, b("attn_k.weight"), kw, D);
            f32_tensor(&mut t, b("attn_v.weight"), kw, D);
            f32_tensor(&mut t, b("attn_output.weight"), D, qw);
            f32_tensor(&mut t, b("ffn_norm.weight"), 1, D);
            f32_tensor(&mut t, b("ffn_gate.weight"), F, D);
            f32_tensor(&mut t, b("ffn_up.weight"), F, D);
            f32_tensor(&mut t, b("ffn_down.weight"), D, F);
            if arch == "qwen2" {
                f32_tensor(&mut t, b("attn_q.bias"), 1, qw);
                f32_tensor(&mut t, b("attn_k.bias"), 1, kw);
                f32_tensor(&mut t, b("attn_v.bias"), 1, kw);
            }
            if arch == "qwen3" {
                f32_tensor(&mut t, b("attn_q_norm.weight"), 1, head_dim);
                f32_tensor(&mut t, b("attn_k_norm.weight"), 1, head_dim);
            }
            // q through the catalogue's Q8_0: the loader must read the stored blocks exactly.
            t.add_q8_0(&b("attn_q.weight"), qw, D, 7 + i as u64);
        }
        t
    }

    fn add_f32(&mut self, name: &str, rows: usize, cols: usize, seed: u64) {
        let data = seeded(rows * cols, seed, 1.0);
        let dims = if rows == 1 { vec![cols as u64] } else { vec![cols as u64, rows as u64] };
        self.tensors.push((name.into(), dims, GgmlType::F32, gguf::f32_bytes(&data)));
        self.expect.insert(name.into(), Matrix::new(rows, cols, data).unwrap());
    }

    fn add_q8_0(&mut self, name: &str, rows: usize, cols: usize, seed: u64) {
        let s: Scheme = "q8_0".parse().unwrap();
        let q = s.quantize(&Matrix::new(rows, cols, seeded(rows * cols, seed, 0.5)).unwrap()).unwrap();
        let bytes = pack(Packing::GgmlQ8_0, &q).unwrap();
        self.tensors.push((name.into(), vec![cols as u64, rows as u64], GgmlType::Q8_0, bytes));
        self.expect.insert(name.into(), Matrix::new(rows, cols, s.dequantize(&q).unwrap()).unwrap());
    }

    fn set(mut self, key: &str, v: MetaValue) -> Tiny {
        let key = key.replace("{arch}", self.arch);
        self.meta.retain(|(k, _)| *k != key);
        self.meta.push((key, v));
        self
    }

    fn unset(mut self, key: &str) -> Tiny {
        let key = key.replace("{arch}", self.arch);
        self.meta.retain(|(k, _)| *k != key);
        self
    }

    fn drop_tensor(mut self, name: &str) -> Tiny {
        self.tensors.retain(|t| t.0 != name);
        self
    }

    fn write(&self, dir: &TempDir) -> PathBuf {
        let p = dir.path(&format!("{}-{}.gguf", self.arch, unique()));
        gguf::write(&p, &self.meta, &self.tensors).expect("write tiny model");
        p
    }

    fn open(&self, dir: &TempDir) -> GgufFile {
        GgufFile::open(&self.write(dir)).expect("open tiny model")
    }

    /// Every weight of `m` equals what was written, bit for bit.
    fn check_weights(&self, m: &Model) {
        let e = |n: &str| self.expect.get(n).unwrap_or_else(|| panic!("{n} not written"));
        let same = |n: &str, got: &Matrix| {
            let want = e(n);
            assert_eq!(got.shape(), want.shape(), "{n}");
            assert!(got.data.iter().zip(&want.data).all(|(a, b)| a.to_bits() == b.to_bits()), "{n}");
        };
        let same_vec = |n: &str, got: &[f32]| {
            assert_eq!(bits(got), bits(&e(n).data), "{n}");
        };
        same("token_embd.weight", &m.embed);
        same_vec("output_norm.weight", &m.final_norm);
        match &m.head {
            Some(h) => same("output.weight", h),
            None => assert!(!self.expect.contains_key("output.weight")),
        }
        assert_eq!(m.layers.len(), LAYERS);
        for (i, l) in m.layers.iter().enumerate() {
            let b = |s: &str| format!("blk.{i}.{s}");
            same_vec(&b("attn_norm.weight"), &l.attn_norm);
            same(&b("attn_q.weight"), &l.wq);
            same(&b("attn_k.weight"), &l.wk);
            same(&b("attn_v.weight"), &l.wv);
            same(&b("attn_output.weight"), &l.wo);
            same_vec(&b("ffn_norm.weight"), &l.ffn_norm);
            same(&b("ffn_gate.weight"), &l.w_gate);
            same(&b("ffn_up.weight"), &l.w_up);
            same(&b("ffn_down.weight"), &l.w_down);
            for (name, v) in [("attn_q.bias", &l.bq), ("attn_k.bias", &l.bk), ("attn_v.bias", &l.bv)] {
                match v {
                    Some(v) => same_vec(&b(name), v),
                    None => assert!(!self.expect.contains_key(&b(name))),
                }
            }
            for (name, v) in [("attn_q_norm.weight", &l.q_norm), ("attn_k_norm.weight", &l.k_norm)] {
                match v {
                    Some(v) => same_vec(&b(name), v),
                    None => assert!(!self.expect.contains_key(&b(name))),
                }
            }
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn sha256_file(p: &Path) -> String {
    Sha256::digest(std::fs::read(p).unwrap()).iter().map(|b| format!("{b:02x}")).collect()
}

fn err_of(r: Result<impl std::fmt::Debug, ModelError>) -> ModelError {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------
// Tiny models, every architecture
// ---------------------------------------------------------------------------------------------

#[test]
fn tiny_llama_loads_through_load() {
    let dir = TempDir::new("llama");
    let tiny = Tiny::new("llama", 4, 16, true);
    let p = tiny.write(&dir);
    let m = load(&p).expect("load");
    let c = &m.config;
    assert_eq!(c.arch, Arch::Llama);
    assert_eq!((c.vocab_size, c.hidden_size, c.n_layers, c.intermediate_size), (V, D, LAYERS, F));
    assert_eq!((c.n_heads, c.n_kv_heads, c.head_dim), (4, 2, 16));
    assert_eq!(c.rms_eps, 1e-6f32);
    assert_eq!(c.rope_theta, 50000.0);
    assert_eq!(c.rope_scaling, None);
    assert_eq!(c.rope_style, RopeStyle::Interleaved);
    assert!(c.tied_embeddings);
    assert_eq!(c.max_positions, 256);
    assert_eq!((c.bos_token, c.eos_token), (Some(1), Some(2)));
    assert!(m.head.is_none());
    assert!(m.tokenizer.is_none(), "no tokenizer.ggml.model, no tokenizer");
    tiny.check_weights(&m);
    assert_eq!(m.source.name, p.file_name().unwrap().to_string_lossy());
    assert_eq!(m.source.path, p.display().to_string());
    assert_eq!(m.source.sha256, sha256_file(&p));
    assert_eq!(m.source.storage, format!("F32 x{}, Q8_0 x{LAYERS}", 2 + 8 * LAYERS));
}

#[test]
fn tiny_qwen2_has_biases_an_untied_head_and_half_rope() {
    let dir = TempDir::new("qwen2");
    let tiny = Tiny::new("qwen2", 4, 16, false);
    let m = load(&tiny.write(&dir)).expect("load");
    assert_eq!(m.config.arch, Arch::Qwen2);
    assert_eq!(m.config.rope_style, RopeStyle::Half);
    assert!(!m.config.tied_embeddings);
    assert!(m.head.is_some());
    assert!(m.layers.iter().all(|l| l.bq.is_some() && l.bk.is_some() && l.bv.is_some()));
    tiny.check_weights(&m);
}

#[test]
fn tiny_qwen3_has_qk_norms_and_a_head_dim_of_its_own() {
    let dir = TempDir::new("qwen3");
    // 4 heads of 32: q is 128 wide while the model is 64 wide.
    let tiny = Tiny::new("qwen3", 4, 32, true);
    let m = load(&tiny.write(&dir)).expect("load");
    assert_eq!(m.config.arch, Arch::Qwen3);
    assert_eq!(m.config.head_dim, 32);
    assert_eq!(m.config.q_width(), 128);
    assert_eq!(m.layers[0].wq.shape(), [128, D]);
    assert_eq!(m.config.rope_style, RopeStyle::Half);
    tiny.check_weights(&m);
}

#[test]
fn head_dim_and_vocab_fallbacks() {
    let dir = TempDir::new("fallbacks");
    // No key_length: rope.dimension_count, else D / H.
    let t = Tiny::new("llama", 4, 16, true).unset("{arch}.attention.key_length").unset("{arch}.attention.value_length");
    assert_eq!(config_from_gguf(&t.open(&dir)).unwrap().head_dim, 16);
    let t = t.set("{arch}.rope.dimension_count", MetaValue::U32(16));
    assert_eq!(config_from_gguf(&t.open(&dir)).unwrap().head_dim, 16);
    // No vocab_size: the token list's length, else token_embd's rows.
    let t = Tiny::new("llama", 4, 16, true).unset("{arch}.vocab_size");
    assert_eq!(config_from_gguf(&t.open(&dir)).unwrap().vocab_size, V);
    let tokens = MetaValue::Array((0..V).map(|i| MetaValue::String(format!("t{i}"))).collect());
    let t = t.set("tokenizer.ggml.tokens", tokens);
    assert_eq!(config_from_gguf(&t.open(&dir)).unwrap().vocab_size, V);
    // Defaults: kv heads = heads, theta 10000.
    let t = Tiny::new("llama", 2, 16, true)
        .unset("{arch}.attention.head_count_kv")
        .unset("{arch}.rope.freq_base")
        .unset("tokenizer.ggml.bos_token_id");
    let c = config_from_gguf(&t.open(&dir)).unwrap();
    assert_eq!((c.n_heads, c.n_kv_heads, c.rope_theta, c.bos_token), (2, 2, 10000.0, None));
}

#[test]
fn rope_scaling_from_metadata() {
    let dir = TempDir::new("rope");
    let t = Tiny::new("llama", 4, 16, true)
        .set("{arch}.rope.scaling.type", MetaValue::String("linear".into()))
        .set("{arch}.rope.scaling.factor", MetaValue::F32(4.0));
    assert_eq!(config_from_gguf(&t.open(&dir)).unwrap().rope_scaling, Some(RopeScaling::Linear { factor: 4.0 }));
    let t = Tiny::new("llama", 4, 16, true).set("{arch}.rope.scale_linear", MetaValue::F32(2.0));
    assert_eq!(config_from_gguf(&t.open(&dir)).unwrap().rope_scaling, Some(RopeScaling::Linear { factor: 2.0 }));
    let t = Tiny::new("llama", 4, 16, true).set("{arch}.rope.scaling.type", MetaValue::String("none".into()));
    assert_eq!(config_from_gguf(&t.open(&dir)).unwrap().rope_scaling, None);
}

// ---------------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------------

#[test]
fn unsupported_models_are_refused_by_name() {
    let dir = TempDir::new("unsupported");
    let open = |t: Tiny| err_of(model_from_gguf_weights(&t.open(&dir)));
    let t = Tiny::new("llama", 4, 16, true).set("general.architecture", MetaValue::String("gemma".into()));
    expect_unsupported(open(t), "`gemma`");
    let t = Tiny::new("llama", 4, 16, true).set("{arch}.expert_count", MetaValue::U32(8));
    expect_unsupported(open(t), "mixture-of-experts");
    let mut t = Tiny::new("llama", 4, 16, true);
    t.add_f32("rope_freqs.weight", 1, 8, 1);
    expect_unsupported(open(t), "rope_freqs.weight");
    let t = Tiny::new("llama", 4, 16, true).set("{arch}.rope.scaling.type", MetaValue::String("yarn".into()));
    expect_unsupported(open(t), "`yarn`");
    let t = Tiny::new("llama", 4, 16, true).set("{arch}.rope.dimension_count", MetaValue::U32(8));
    expect_unsupported(open(t), "partial rotary");
    let t = Tiny::new("llama", 4, 16, true).set("{arch}.attention.head_count", MetaValue::Array(vec![]));
    expect_unsupported(open(t), "array");
}

#[test]
fn broken_models_are_refused_with_where() {
    let dir = TempDir::new("broken");
    let open = |t: Tiny| err_of(model_from_gguf_weights(&t.open(&dir)));
    let t = Tiny::new("llama", 4, 16, true).unset("{arch}.block_count");
    expect_malformed(open(t), "key llama.block_count", "missing");
    let t = Tiny::new("llama", 4, 16, true).set("{arch}.block_count", MetaValue::String("2".into()));
    expect_malformed(open(t), "key llama.block_count", "not a count");
    let t = Tiny::new("llama", 4, 16, true).unset("{arch}.attention.layer_norm_rms_epsilon");
    expect_malformed(open(t), "key llama.attention.layer_norm_rms_epsilon", "missing");
    let t = Tiny::new("llama", 4, 16, true).unset("general.architecture");
    expect_malformed(open(t), "key general.architecture", "missing");
    let t = Tiny::new("llama", 4, 16, true).set("tokenizer.ggml.eos_token_id", MetaValue::U32(V as u32));
    expect_malformed(open(t), "key tokenizer.ggml.eos_token_id", "outside the vocabulary");
    let t = Tiny::new("llama", 4, 16, true).set("{arch}.rope.scaling.type", MetaValue::String("linear".into()));
    expect_malformed(open(t), "key llama.rope.scaling.factor", "missing");
    let t = Tiny::new("llama", 4, 16, true).drop_tensor("blk.1.ffn_up.weight");
    expect_malformed(open(t), "tensor blk.1.ffn_up.weight", "missing");
    let t = Tiny::new("qwen2", 4, 16, true).drop_tensor("blk.0.attn_k.bias");
    expect_malformed(open(t), "tensor blk.0.attn_k.bias", "missing");
    let t = Tiny::new("qwen3", 4, 16, true).drop_tensor("blk.1.attn_q_norm.weight");
    expect_malformed(open(t), "tensor blk.1.attn_q_norm.weight", "missing");
    // A shape that disagrees with the config: 3 layers' worth of FFN width declared, 96 stored.
    let t = Tiny::new("llama", 4, 16, true).set("{arch}.feed_forward_length", MetaValue::U32(64));
    expect_malformed(open(t), "tensor layer 0 w_gate", "shape [96, 64]");
    // 3 heads do not divide 2 kv heads.
    let t = Tiny::new("llama", 3, 16, true);
    assert!(matches!(open(t), ModelError::Unsupported { .. }));
}

#[test]
fn load_dispatches_and_refuses_what_it_cannot_read() {
    let dir = TempDir::new("dispatch");
    match err_of(load(&dir.path("absent.gguf"))) {
        ModelError::Io { path, .. } => assert!(path.ends_with("absent.gguf")),
        e => panic!("{e}"),
    }
    let p = dir.path("model.bin");
    std::fs::write(&p, b"PK\x03\x04 not a gguf").unwrap();
    expect_malformed(err_of(load(&p)), "offset 0", "not a GGUF file");
    std::fs::write(&p, b"GG").unwrap();
    expect_malformed(err_of(load(&p)), "offset 0", "not a GGUF file");
    // A folder goes to the safetensors loader, which wants config.json.
    let folder = dir.path("hf");
    std::fs::create_dir(&folder).unwrap();
    match err_of(load(&folder)) {
        ModelError::Io { path, .. } => assert!(path.ends_with("config.json"), "{path}"),
        e => panic!("{e}"),
    }
    // A truncated GGUF is malformed, not a panic.
    let good = std::fs::read(Tiny::new("llama", 4, 16, true).write(&dir)).unwrap();
    std::fs::write(&p, &good[..good.len() / 2]).unwrap();
    assert!(matches!(err_of(load(&p)), ModelError::Malformed { .. }));
}

#[test]
fn an_embedded_tokenizer_is_loaded_or_its_error_propagated() {
    let dir = TempDir::new("tok");
    let tokens = MetaValue::Array((0..V).map(|i| MetaValue::String(format!("t{i}"))).collect());
    let t = Tiny::new("llama", 4, 16, true)
        .set("tokenizer.ggml.model", MetaValue::String("gpt2".into()))
        .set("tokenizer.ggml.tokens", tokens)
        .set("tokenizer.ggml.merges", MetaValue::Array(vec![MetaValue::String("t 1".into())]));
    let p = t.write(&dir);
    let g = GgufFile::open(&p).unwrap();
    match (load(&p), tokenizer_from_gguf(&g)) {
        (Ok(m), Ok(tok)) => {
            assert!(m.tokenizer.is_some() && tok.is_some());
            t.check_weights(&m);
        }
        (Err(e), Err(direct)) => {
            assert_eq!(e.to_string(), direct.to_string(), "load must pass the tokenizer's error on")
        }
        (a, b) => panic!("load and tokenizer_from_gguf disagree: {:?} / {:?}", a.map(|_| ()), b.map(|_| ())),
    }
    // The weights alone load regardless of the tokenizer.
    t.check_weights(&model_from_gguf_weights(&g).unwrap());
}

// ---------------------------------------------------------------------------------------------
// The real model
// ---------------------------------------------------------------------------------------------

#[test]
fn smollm2_loads_with_the_right_config_and_source() {
    let Some(path) = model_path() else { return };
    let t0 = Instant::now();
    let g = GgufFile::open(&path).expect("open");
    let t_open = t0.elapsed();
    let c = config_from_gguf(&g).expect("config");
    assert_eq!(c.arch, Arch::Llama);
    assert_eq!((c.n_layers, c.hidden_size, c.n_heads, c.n_kv_heads), (30, 576, 9, 3));
    assert_eq!((c.head_dim, c.intermediate_size, c.vocab_size), (64, 1536, 49152));
    assert_eq!(c.rope_theta, 100000.0);
    assert_eq!(c.rms_eps, 1e-5f32);
    assert_eq!(c.rope_scaling, None);
    assert_eq!(c.rope_style, RopeStyle::Interleaved);
    assert!(c.tied_embeddings);
    assert_eq!(c.max_positions, 8192);
    assert_eq!((c.bos_token, c.eos_token), (Some(1), Some(2)));

    let t1 = Instant::now();
    let m = model_from_gguf_weights(&g).expect("weights");
    let t_weights = t1.elapsed();
    println!(
        "SmolLM2 ({} MB): open {:.3} s, weights (dequantize + sha256 + validate) {:.3} s",
        g.len() >> 20,
        t_open.as_secs_f64(),
        t_weights.as_secs_f64()
    );
    assert_eq!(m.config, c);
    assert!(m.head.is_none());
    assert_eq!(m.layers.len(), 30);
    assert_eq!(m.config.parameters(), 134_515_008);
    assert_eq!(m.source.name, MODEL);
    assert_eq!(m.source.sha256, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53");
    assert_eq!(m.source.storage, "Q4_1 x210, F32 x61, Q8_0 x1");
    assert_eq!(bits(&m.embed.data), bits(&g.tensor_f32("token_embd.weight").unwrap().data));
    assert_eq!(bits(&m.layers[29].w_down.data), bits(&g.tensor_f32("blk.29.ffn_down.weight").unwrap().data));
    assert_eq!(m.layers[7].w_down.shape(), [576, 1536]);

    // Through `load`: the tokenizer comes along, or its error is the load's error.
    let t2 = Instant::now();
    let r = load(&path);
    println!(
        "SmolLM2: load() {:.3} s ({})",
        t2.elapsed().as_secs_f64(),
        if r.is_ok() { "ok" } else { "tokenizer error" }
    );
    match (r, tokenizer_from_gguf(&g)) {
        (Ok(full), Ok(Some(_))) => {
            assert!(full.tokenizer.is_some());
            assert_eq!(full.source, m.source);
        }
        (Err(e), Err(direct)) => assert_eq!(e.to_string(), direct.to_string()),
        (a, b) => panic!("load and tokenizer_from_gguf disagree: {:?} / {:?}", a.map(|_| ()), b.map(|_| ())),
    }
}

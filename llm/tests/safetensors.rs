//! Hugging Face folders: tiny Llama / Qwen2 / Qwen3 checkpoints written with the `safetensors`
//! crate (single file and sharded), `config.json` parsing and defaults, refusals, and corrupted
//! files that must never panic.

mod common;

use common::{expect_malformed, expect_unsupported, seeded, TempDir};

use kernels_ref::dtype::{bf16_bits_to_f32, f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits};
use kernels_ref::ops::{RopeScaling, RopeStyle};
use models::config::Arch;
use models::safetensors::{config_from_hf_json, load_folder, SafetensorsFiles};
use models::{Model, ModelError, Tokenizer};
use proptest::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

const D: usize = 64;
const F: usize = 96;
const V: usize = 40;
const LAYERS: usize = 2;

/// Tensors by name: dtype, shape, bytes.
type Stored = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

/// A tiny HF checkpoint: config, tensors (name -> dtype, shape, bytes) and the fp32 values each
/// should read back as.
struct Hf {
    config: Value,
    tensors: Stored,
    expect: BTreeMap<String, Vec<f32>>,
}

impl Hf {
    fn new(model_type: &str, heads: usize, head_dim: usize, tied: bool, dtype: Dtype) -> Hf {
        let kv = 2;
        let config = json!({
            "architectures": [match model_type { "llama" => "LlamaForCausalLM", "qwen2" => "Qwen2ForCausalLM", _ => "Qwen3ForCausalLM" }],
            "model_type": model_type,
            "hidden_size": D,
            "intermediate_size": F,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "head_dim": head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0,
            "rope_scaling": null,
            "tie_word_embeddings": tied,
            "vocab_size": V,
            "max_position_embeddings": 512,
            "bos_token_id": 1,
            "eos_token_id": [2, 3],
            "torch_dtype": "bfloat16",
        });
        let mut h = Hf { config, tensors: BTreeMap::new(), expect: BTreeMap::new() };
        let (qw, kw) = (heads * head_dim, kv * head_dim);
        let mut seed = 0;
        let mut add = |h: &mut Hf, name: String, shape: &[usize]| {
            seed += 1;
            h.add(&name, shape, dtype, seed);
        };
        add(&mut h, "model.embed_tokens.weight".into(), &[V, D]);
        add(&mut h, "model.norm.weight".into(), &[D]);
        if !tied {
            add(&mut h, "lm_head.weight".into(), &[V, D]);
        }
        for i in 0..LAYERS {
            let l = |s: &str| format!("model.layers.{i}.{s}");
            add(&mut h, l("input_layernorm.weight"), &[D]);
            add(&mut h, l("self_attn.q_proj.weight"), &[qw, D]);
            add(&mut h, l("self_attn.k_proj.weight"), &[kw, D]);
            add(&mut h, l("self_attn.v_proj.weight"), &[kw, D]);
            add(&mut h, l("self_attn.o_proj.weight"), &[D, qw]);
            add(&mut h, l("post_attention_layernorm.weight"), &[D]);
            add(&mut h, l("mlp.gate_proj.weight"), &[F, D]);
            add(&mut h, l("mlp.up_proj.weight"), &[F, D]);
            add(&mut h, l("mlp.down_proj.weight"), &[D, F]);
            if model_type == "qwen2" {
                add(&mut h, l("self_attn.q_proj.bias"), &[qw]);
                add(&mut h, l("self_attn.k_proj.bias"), &[kw]);
                add(&mut h, l("self_attn.v_proj.bias"), &[kw]);
            }
            if model_type == "qwen3" {
                add(&mut h, l("self_attn.q_norm.weight"), &[head_dim]);
                add(&mut h, l("self_attn.k_norm.weight"), &[head_dim]);
            }
        }
        h
    }

    fn add(&mut self, name: &str, shape: &[usize], dtype: Dtype, seed: u64) {
        let x = seeded(shape.iter().product(), seed, 2.0);
        let (bytes, want): (Vec<u8>, Vec<f32>) = match dtype {
            Dtype::F32 => (x.iter().flat_map(|v| v.to_le_bytes()).collect(), x.clone()),
            Dtype::F16 => (
                x.iter().flat_map(|&v| f32_to_f16_bits(v).to_le_bytes()).collect(),
                x.iter().map(|&v| f16_bits_to_f32(f32_to_f16_bits(v))).collect(),
            ),
            Dtype::BF16 => (
                x.iter().flat_map(|&v| f32_to_bf16_bits(v).to_le_bytes()).collect(),
                x.iter().map(|&v| bf16_bits_to_f32(f32_to_bf16_bits(v))).collect(),
            ),
            other => panic!("test helper: {other}"),
        };
        self.tensors.insert(name.into(), (dtype, shape.to_vec(), bytes));
        self.expect.insert(name.into(), want);
    }

    fn serialize(tensors: &Stored) -> Vec<u8> {
        let views: Vec<(String, TensorView<'_>)> =
            tensors.iter().map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
        safetensors::serialize(views, None).unwrap()
    }

    /// Write `config.json` and `model.safetensors` (or `shards` shards with an index).
    fn write(&self, dir: &Path, shards: usize) {
        std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&self.config).unwrap()).unwrap();
        if shards <= 1 {
            std::fs::write(dir.join("model.safetensors"), Self::serialize(&self.tensors)).unwrap();
            return;
        }
        let mut parts: Vec<Stored> = vec![BTreeMap::new(); shards];
        let mut weight_map = serde_json::Map::new();
        for (i, (n, t)) in self.tensors.iter().enumerate() {
            let s = i % shards;
            parts[s].insert(n.clone(), t.clone());
            weight_map.insert(n.clone(), json!(format!("model-{:05}-of-{shards:05}.safetensors", s + 1)));
        }
        for (s, part) in parts.iter().enumerate() {
            std::fs::write(dir.join(format!("model-{:05}-of-{shards:05}.safetensors", s + 1)), Self::serialize(part))
                .unwrap();
        }
        let index = json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }

    fn check_weights(&self, m: &Model) {
        let e = |n: &str| self.expect.get(n).unwrap_or_else(|| panic!("{n} not written"));
        let same = |n: &str, got: &[f32]| assert_eq!(bits(got), bits(e(n)), "{n}");
        same("model.embed_tokens.weight", &m.embed.data);
        same("model.norm.weight", &m.final_norm);
        let tied = self.config["tie_word_embeddings"].as_bool().unwrap();
        assert_eq!(m.head.is_none(), tied);
        if let Some(h) = &m.head {
            same("lm_head.weight", &h.data);
        }
        for (i, l) in m.layers.iter().enumerate() {
            let n = |s: &str| format!("model.layers.{i}.{s}");
            same(&n("input_layernorm.weight"), &l.attn_norm);
            same(&n("self_attn.q_proj.weight"), &l.wq.data);
            same(&n("self_attn.k_proj.weight"), &l.wk.data);
            same(&n("self_attn.v_proj.weight"), &l.wv.data);
            same(&n("self_attn.o_proj.weight"), &l.wo.data);
            same(&n("post_attention_layernorm.weight"), &l.ffn_norm);
            same(&n("mlp.gate_proj.weight"), &l.w_gate.data);
            same(&n("mlp.up_proj.weight"), &l.w_up.data);
            same(&n("mlp.down_proj.weight"), &l.w_down.data);
            assert_eq!(l.w_down.shape(), [D, F]);
            for (s, v) in
                [("self_attn.q_proj.bias", &l.bq), ("self_attn.k_proj.bias", &l.bk), ("self_attn.v_proj.bias", &l.bv)]
            {
                assert_eq!(v.is_some(), self.expect.contains_key(&n(s)), "{s}");
                if let Some(v) = v {
                    same(&n(s), v);
                }
            }
            for (s, v) in [("self_attn.q_norm.weight", &l.q_norm), ("self_attn.k_norm.weight", &l.k_norm)] {
                assert_eq!(v.is_some(), self.expect.contains_key(&n(s)), "{s}");
                if let Some(v) = v {
                    same(&n(s), v);
                }
            }
        }
    }
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

fn err_of(r: Result<impl std::fmt::Debug, ModelError>) -> ModelError {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

#[test]
fn llama_f32_single_file() {
    let dir = TempDir::new("llama");
    let hf = Hf::new("llama", 4, 16, true, Dtype::F32);
    hf.write(&dir.0, 1);
    let m = load_folder(&dir.0).unwrap();
    let c = &m.config;
    assert_eq!(c.arch, Arch::Llama);
    assert_eq!((c.vocab_size, c.hidden_size, c.n_layers, c.intermediate_size), (V, D, LAYERS, F));
    assert_eq!((c.n_heads, c.n_kv_heads, c.head_dim), (4, 2, 16));
    assert_eq!(c.rms_eps, 1e-5f32);
    assert_eq!(c.rope_theta, 500000.0);
    assert_eq!(c.rope_scaling, None);
    assert_eq!(c.rope_style, RopeStyle::Half);
    assert!(c.tied_embeddings);
    assert_eq!(c.max_positions, 512);
    assert_eq!((c.bos_token, c.eos_token), (Some(1), Some(2)));
    assert!(m.tokenizer.is_none());
    hf.check_weights(&m);
    assert_eq!(m.source.sha256, sha256_hex(&std::fs::read(dir.path("model.safetensors")).unwrap()));
    assert_eq!(m.source.storage, format!("F32 x{}", 2 + 9 * LAYERS));
    assert_eq!(m.source.path, dir.0.display().to_string());
    // And through the format-agnostic entry point.
    let m2 = models::load::load(&dir.0).unwrap();
    assert_eq!(bits(&m2.embed.data), bits(&m.embed.data));
}

#[test]
fn qwen2_bf16_untied_with_biases() {
    let dir = TempDir::new("qwen2");
    let hf = Hf::new("qwen2", 4, 16, false, Dtype::BF16);
    hf.write(&dir.0, 1);
    let m = load_folder(&dir.0).unwrap();
    assert_eq!(m.config.arch, Arch::Qwen2);
    assert!(m.head.is_some());
    hf.check_weights(&m);
    assert_eq!(m.source.storage, format!("BF16 x{}", 3 + 12 * LAYERS));
}

#[test]
fn qwen3_f16_sharded_with_a_saved_but_tied_head() {
    let dir = TempDir::new("qwen3");
    let mut hf = Hf::new("qwen3", 4, 32, true, Dtype::F16);
    // Saved anyway, as some tied checkpoints do: ignored.
    hf.add("lm_head.weight", &[V, D], Dtype::F16, 999);
    hf.write(&dir.0, 3);
    let m = load_folder(&dir.0).unwrap();
    assert_eq!(m.config.arch, Arch::Qwen3);
    assert_eq!(m.config.q_width(), 128);
    assert!(m.head.is_none());
    hf.check_weights(&m);
    let index = std::fs::read(dir.path("model.safetensors.index.json")).unwrap();
    assert_eq!(m.source.sha256, sha256_hex(&index));
    let files = SafetensorsFiles::open(&dir.0).unwrap();
    assert_eq!(files.names().count(), hf.tensors.len());
    assert_eq!(files.info("model.norm.weight"), Some(("F16".to_string(), vec![D])));
}

#[test]
fn a_tokenizer_json_is_loaded_or_its_error_propagated() {
    let dir = TempDir::new("tok");
    let hf = Hf::new("llama", 4, 16, true, Dtype::F32);
    hf.write(&dir.0, 1);
    std::fs::write(dir.path("tokenizer.json"), "{ this is not a tokenizer").unwrap();
    let direct = Tokenizer::from_file(&dir.path("tokenizer.json")).map(|_| ());
    let e = err_of(direct);
    assert_eq!(err_of(load_folder(&dir.0)).to_string(), e.to_string());
}

// ---------------------------------------------------------------------------------------------
// config.json
// ---------------------------------------------------------------------------------------------

fn base_config() -> Value {
    json!({"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
           "num_attention_heads": 4, "vocab_size": 40})
}

fn with(mut v: Value, key: &str, x: Value) -> Value {
    v[key] = x;
    v
}

fn cfg(v: &Value) -> Result<models::LlamaConfig, ModelError> {
    config_from_hf_json(&v.to_string(), "config.json")
}

#[test]
fn config_defaults_follow_transformers() {
    let c = cfg(&base_config()).unwrap();
    assert_eq!((c.n_kv_heads, c.head_dim, c.rope_theta, c.rms_eps), (4, 16, 10000.0, 1e-6f32));
    assert!(!c.tied_embeddings);
    assert_eq!((c.max_positions, c.bos_token, c.eos_token), (2048, None, None));
    let q3 = cfg(&with(with(base_config(), "model_type", json!("qwen3")), "num_key_value_heads", json!(2))).unwrap();
    assert_eq!((q3.arch, q3.head_dim, q3.max_positions), (Arch::Qwen3, 128, 32768));
    // No model_type: the architectures entry.
    let mut v = base_config();
    v.as_object_mut().unwrap().remove("model_type");
    v["architectures"] = json!(["Qwen2ForCausalLM"]);
    assert_eq!(cfg(&v).unwrap().arch, Arch::Qwen2);
    // Nulls are absent values; eos lists give their first id.
    let v = with(with(base_config(), "num_key_value_heads", Value::Null), "eos_token_id", json!([7, 8]));
    let c = cfg(&v).unwrap();
    assert_eq!((c.n_kv_heads, c.eos_token), (4, Some(7)));
    // transformers v5 rope_parameters.
    let v = with(base_config(), "rope_parameters", json!({"rope_type": "default", "rope_theta": 1e6}));
    assert_eq!(cfg(&v).unwrap().rope_theta, 1e6);
}

#[test]
fn config_rope_scaling() {
    let v = with(base_config(), "rope_scaling", json!({"type": "linear", "factor": 2.0}));
    assert_eq!(cfg(&v).unwrap().rope_scaling, Some(RopeScaling::Linear { factor: 2.0 }));
    let v = with(
        base_config(),
        "rope_scaling",
        json!({"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}),
    );
    assert_eq!(
        cfg(&v).unwrap().rope_scaling,
        Some(RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192
        })
    );
    let v = with(base_config(), "rope_scaling", json!({"rope_type": "default"}));
    assert_eq!(cfg(&v).unwrap().rope_scaling, None);
    let v = with(base_config(), "rope_scaling", json!({"rope_type": "yarn", "factor": 4.0}));
    expect_unsupported(err_of(cfg(&v)), "`yarn`");
    let v = with(base_config(), "rope_scaling", json!({"rope_type": "llama3", "factor": 8.0}));
    expect_malformed(err_of(cfg(&v)), "key rope_scaling", "original_max_position_embeddings");
    let v = with(base_config(), "rope_scaling", json!({"rope_type": "linear", "factor": -1.0}));
    expect_unsupported(err_of(cfg(&v)), "factor");
}

#[test]
fn config_refusals() {
    expect_unsupported(err_of(cfg(&with(base_config(), "model_type", json!("mistral")))), "mistral");
    expect_unsupported(err_of(cfg(&with(base_config(), "hidden_act", json!("gelu")))), "gelu");
    expect_unsupported(err_of(cfg(&with(base_config(), "attention_bias", json!(true)))), "attention_bias");
    expect_unsupported(err_of(cfg(&with(base_config(), "mlp_bias", json!(true)))), "mlp_bias");
    expect_unsupported(err_of(cfg(&with(base_config(), "use_sliding_window", json!(true)))), "sliding");
    let mut v = base_config();
    v.as_object_mut().unwrap().remove("hidden_size");
    expect_malformed(err_of(cfg(&v)), "key hidden_size", "missing");
    expect_malformed(err_of(cfg(&with(base_config(), "vocab_size", json!(-1)))), "key vocab_size", "-1");
    expect_malformed(err_of(cfg(&with(base_config(), "rms_norm_eps", json!("small")))), "key rms_norm_eps", "number");
    expect_malformed(err_of(config_from_hf_json("[1, 2]", "config.json")), "offset 0", "object");
    expect_malformed(err_of(config_from_hf_json("{", "config.json")), "offset 0", "not JSON");
    // Qwen2 always has q/k/v biases: attention_bias does not apply to it.
    assert!(cfg(&with(with(base_config(), "model_type", json!("qwen2")), "attention_bias", json!(true))).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Refusals of folders
// ---------------------------------------------------------------------------------------------

#[test]
fn folder_refusals() {
    // Another dtype, named with its tensor.
    let dir = TempDir::new("dtype");
    let mut hf = Hf::new("llama", 4, 16, true, Dtype::F32);
    let t = hf.tensors.get_mut("model.layers.1.mlp.up_proj.weight").unwrap();
    t.0 = Dtype::I32;
    hf.write(&dir.0, 1);
    expect_unsupported(err_of(load_folder(&dir.0)), "model.layers.1.mlp.up_proj.weight: dtype I32");

    // A missing tensor.
    let dir = TempDir::new("missing");
    let mut hf = Hf::new("llama", 4, 16, false, Dtype::F32);
    hf.tensors.remove("lm_head.weight");
    hf.write(&dir.0, 1);
    expect_malformed(err_of(load_folder(&dir.0)), "tensor lm_head.weight", "missing");

    // A shape that disagrees with the config.
    let dir = TempDir::new("shape");
    let hf = Hf::new("llama", 4, 16, true, Dtype::F32);
    let mut hf2 = Hf { config: hf.config.clone(), tensors: hf.tensors.clone(), expect: BTreeMap::new() };
    hf2.config["intermediate_size"] = json!(32);
    hf2.write(&dir.0, 1);
    expect_malformed(err_of(load_folder(&dir.0)), "tensor layer 0 w_gate", "shape");

    // No weights at all.
    let dir = TempDir::new("noweights");
    std::fs::write(dir.path("config.json"), base_config().to_string()).unwrap();
    assert!(matches!(err_of(load_folder(&dir.0)), ModelError::Io { .. }));

    // Index naming a shard outside the folder, or the wrong shard.
    let dir = TempDir::new("index");
    let hf = Hf::new("llama", 4, 16, true, Dtype::F32);
    hf.write(&dir.0, 2);
    let ipath = dir.path("model.safetensors.index.json");
    let good: Value = serde_json::from_str(&std::fs::read_to_string(&ipath).unwrap()).unwrap();
    let mut bad = good.clone();
    bad["weight_map"]["model.norm.weight"] = json!("../model-00001-of-00002.safetensors");
    std::fs::write(&ipath, bad.to_string()).unwrap();
    expect_malformed(err_of(load_folder(&dir.0)), "tensor model.norm.weight", "plain file name");
    let mut bad = good.clone();
    let right = good["weight_map"]["model.norm.weight"].as_str().unwrap().to_string();
    let wrong = if right.contains("00001-of") {
        "model-00002-of-00002.safetensors"
    } else {
        "model-00001-of-00002.safetensors"
    };
    bad["weight_map"]["model.norm.weight"] = json!(wrong);
    std::fs::write(&ipath, bad.to_string()).unwrap();
    expect_malformed(err_of(load_folder(&dir.0)), "tensor model.norm.weight", "does not hold it");
    std::fs::write(&ipath, "{\"weight_map\": 3}").unwrap();
    expect_malformed(err_of(load_folder(&dir.0)), "key weight_map", "missing");
    std::fs::write(&ipath, good.to_string()).unwrap();
    assert!(load_folder(&dir.0).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Corrupted files
// ---------------------------------------------------------------------------------------------

/// A header claiming tensors whose sizes add up to nearly 2^64: refused by the bounds check, not
/// summed into an overflow.
#[test]
fn offsets_summing_past_usize_are_refused() {
    let dir = TempDir::new("overflow");
    std::fs::write(dir.path("config.json"), base_config().to_string()).unwrap();
    let n: u64 = (1 << 61) - 1;
    let mut header = serde_json::Map::new();
    for i in 0..8u64 {
        header.insert(format!("t{i}"), json!({"dtype": "U8", "shape": [n], "data_offsets": [i * n, (i + 1) * n]}));
    }
    let h = Value::Object(header).to_string();
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend(h.as_bytes());
    bytes.extend([0u8; 16]);
    std::fs::write(dir.path("model.safetensors"), &bytes).unwrap();
    match err_of(load_folder(&dir.0)) {
        ModelError::Malformed { at, detail, .. } => {
            assert!(at.starts_with("tensor t"), "{at}");
            assert!(detail.contains("data_offsets"), "{detail}");
        }
        e => panic!("{e}"),
    }
}

#[test]
fn header_length_past_the_end_is_refused() {
    let dir = TempDir::new("hlen");
    let hf = Hf::new("llama", 4, 16, true, Dtype::F32);
    hf.write(&dir.0, 1);
    let p = dir.path("model.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    b[0..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    expect_malformed(err_of(load_folder(&dir.0)), "offset 0", "header length");
    std::fs::write(&p, [1u8, 2, 3]).unwrap();
    expect_malformed(err_of(load_folder(&dir.0)), "offset 0", "truncated");
}

fn sample() -> (Hf, Vec<u8>) {
    let mut hf = Hf::new("llama", 4, 16, true, Dtype::BF16);
    // Fewer, smaller tensors keep each case fast; the folder no longer makes a model, but every
    // corruption goes through the header and tensor reading first.
    hf.tensors.retain(|n, _| !n.starts_with("model.layers.1."));
    let bytes = Hf::serialize(&hf.tensors);
    (hf, bytes)
}

/// Write corrupted bytes as the checkpoint and read them every way: Err or Ok, never a panic.
fn read_corrupted(hf: &Hf, bytes: &[u8]) {
    let dir = TempDir::new("fuzz");
    std::fs::write(dir.path("config.json"), hf.config.to_string()).unwrap();
    std::fs::write(dir.path("model.safetensors"), bytes).unwrap();
    if let Ok(files) = SafetensorsFiles::open(&dir.0) {
        let names: Vec<String> = files.names().map(String::from).collect();
        for n in names {
            let _ = files.tensor_f32(&n);
        }
    }
    let _ = load_folder(&dir.0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn truncated_checkpoints_never_panic(cut in any::<usize>()) {
        let (hf, bytes) = sample();
        read_corrupted(&hf, &bytes[..cut % bytes.len()]);
    }

    #[test]
    fn flipped_checkpoints_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let (hf, mut bytes) = sample();
        // Mostly in the header, where the structure is.
        let hlen = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize + 8;
        for (i, (at, x)) in flips.into_iter().enumerate() {
            let at = if i % 2 == 0 { at % hlen } else { at % bytes.len() };
            bytes[at] ^= x | 1;
        }
        read_corrupted(&hf, &bytes);
    }

    #[test]
    fn crafted_headers_never_panic(
        entries in proptest::collection::vec(
            (
                "[a-z]{1,3}",
                prop_oneof![Just("F32"), Just("BF16"), Just("F16"), Just("I64"), Just("U8"), Just("F4"), Just("XX")],
                proptest::collection::vec(prop_oneof![0u64..70, Just(1u64 << 40), Just(u64::MAX / 3)], 0..3),
                prop_oneof![0u64..300, any::<u64>()],
                prop_oneof![0u64..300, any::<u64>()],
            ),
            0..5,
        ),
        extra in 0usize..300,
        bad_len in prop_oneof![Just(None), any::<u64>().prop_map(Some)],
    ) {
        let (hf, _) = sample();
        let mut header = serde_json::Map::new();
        for (name, dtype, shape, s, e) in entries {
            header.insert(name, json!({"dtype": dtype, "shape": shape, "data_offsets": [s, e]}));
        }
        let h = Value::Object(header).to_string();
        let mut bytes = bad_len.unwrap_or(h.len() as u64).to_le_bytes().to_vec();
        bytes.extend(h.as_bytes());
        bytes.extend(std::iter::repeat_n(0x3fu8, extra));
        read_corrupted(&hf, &bytes);
    }
}

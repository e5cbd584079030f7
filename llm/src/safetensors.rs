//! Hugging Face safetensors folders: `config.json` (LlamaForCausalLM, Qwen2ForCausalLM,
//! Qwen3ForCausalLM), `model.safetensors` or `model.safetensors.index.json` + shards
//! (memory-mapped), and `tokenizer.json`.
//!
//! Headers are read with the `safetensors` crate, after a check of qdiff's own that every data
//! offset lies inside the file (so no sum in the crate's validation can overflow on a crafted
//! header). Tensors may be F32, F16 or BF16; they are converted to fp32 exactly. HF checkpoints
//! keep q/k unpermuted, so the config's rope style is [`RopeStyle::Half`].

use crate::config::{Arch, LlamaConfig};
use crate::gguf::{dequantize, GgmlType};
use crate::load::{assemble, Slot};
use crate::tokenizer::Tokenizer;
use crate::weights::{Model, Source};
use crate::{ModelError, Result};
use kernels_ref::ops::{RopeScaling, RopeStyle};
use kernels_ref::tensor::Matrix;
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata};
use safetensors::SafeTensors;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// One memory-mapped `.safetensors` file with its parsed header.
struct Shard {
    path: String,
    map: Mmap,
    /// Where the data section starts (8 + header length).
    data_start: usize,
    metadata: Metadata,
}

/// Where a tensor lives.
#[derive(Debug, Clone)]
struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range inside the shard's data section.
    range: (usize, usize),
}

/// An open safetensors checkpoint: one file or an index with its shards, every tensor located
/// and checked to lie inside its file.
pub struct SafetensorsFiles {
    /// The folder (or file) it was opened from, for messages.
    pub path: String,
    shards: Vec<Shard>,
    index: BTreeMap<String, Entry>,
}

impl fmt::Debug for SafetensorsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafetensorsFiles")
            .field("path", &self.path)
            .field("shards", &self.shards.iter().map(|s| s.path.as_str()).collect::<Vec<_>>())
            .field("tensors", &self.index.len())
            .finish()
    }
}

/// Map a file and read its header: qdiff's own bounds check first, then the crate's parser.
fn open_shard(path: &Path) -> Result<Shard> {
    let label = path.display().to_string();
    let io = |e: std::io::Error| ModelError::Io { path: label.clone(), error: e };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len < 8 {
        return Err(ModelError::malformed(
            &label,
            "offset 0",
            format!("truncated: {len} bytes, the header length alone takes 8"),
        ));
    }
    // SAFETY: read-only private map; as with any mapped reader, the file must not be truncated or
    // rewritten by another process while it is open.
    let map = unsafe { Mmap::map(&file) }.map_err(io)?;
    let (data_start, metadata) = parse_header(&label, &map)?;
    Ok(Shard { path: label, map, data_start, metadata })
}

/// Validate and parse a safetensors header: `(data start, metadata)`.
fn parse_header(label: &str, buf: &[u8]) -> Result<(usize, Metadata)> {
    let bad = |at: &str, d: String| ModelError::malformed(label, at, d);
    let len = buf.len() as u64;
    let Some(n_bytes) = buf.get(0..8) else {
        return Err(bad("offset 0", format!("truncated: {len} bytes, the header length alone takes 8")));
    };
    let mut n = [0u8; 8];
    n.copy_from_slice(n_bytes);
    let n = u64::from_le_bytes(n);
    if n > len - 8 {
        return Err(bad("offset 0", format!("header length {n} runs past the end of the file ({len} bytes)")));
    }
    let data_start = 8 + n as usize;
    let header = buf.get(8..data_start).ok_or_else(|| bad("offset 8", "header out of bounds".into()))?;
    let data_len = len - 8 - n;
    // Our own check of the offsets before the crate sums them.
    let raw: BTreeMap<String, Value> =
        serde_json::from_slice(header).map_err(|e| bad("offset 8", format!("header is not a JSON object: {e}")))?;
    for (name, v) in &raw {
        if name == "__metadata__" {
            continue;
        }
        let offs = v.get("data_offsets").and_then(Value::as_array);
        let ends: Option<Vec<u64>> = offs.map(|a| a.iter().filter_map(Value::as_u64).collect());
        match ends.as_deref() {
            Some(&[s, e]) if s <= e && e <= data_len => {}
            _ => {
                return Err(bad(
                    &format!("tensor {name}"),
                    format!(
                        "data_offsets {} are not [start, end] within the {data_len} data bytes",
                        v.get("data_offsets").map_or("(missing)".into(), |o| o.to_string())
                    ),
                ))
            }
        }
    }
    let (_, metadata) = SafeTensors::read_metadata(buf).map_err(|e| bad("offset 8", format!("bad header: {e}")))?;
    Ok((data_start, metadata))
}

impl SafetensorsFiles {
    /// Open `model.safetensors`, or `model.safetensors.index.json` and the shards its
    /// `weight_map` names, in `dir`.
    ///
    /// # Errors
    /// [`ModelError::Io`] when neither exists or a file cannot be read; [`ModelError::Malformed`]
    /// for a broken header or index, a shard name that leaves the folder, a tensor in two shards,
    /// or a `weight_map` entry that is not in its shard.
    pub fn open(dir: &Path) -> Result<SafetensorsFiles> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let label = dir.display().to_string();
        if single.is_file() {
            let shard = open_shard(&single)?;
            let mut index = BTreeMap::new();
            add_entries(&mut index, &shard, 0)?;
            return Ok(SafetensorsFiles { path: label, shards: vec![shard], index });
        }
        if !index_path.is_file() {
            return Err(ModelError::Io {
                path: label,
                error: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "neither model.safetensors nor model.safetensors.index.json is here",
                ),
            });
        }
        let ilabel = index_path.display().to_string();
        let text =
            std::fs::read_to_string(&index_path).map_err(|e| ModelError::Io { path: ilabel.clone(), error: e })?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::malformed(&ilabel, "offset 0", format!("not JSON: {e}")))?;
        let Some(map) = json.get("weight_map").and_then(Value::as_object) else {
            return Err(ModelError::malformed(&ilabel, "key weight_map", "missing, or not an object"));
        };
        let mut files: Vec<&str> = Vec::new();
        let mut wanted: Vec<(&str, &str)> = Vec::with_capacity(map.len());
        for (tensor, file) in map {
            let Some(file) = file.as_str() else {
                return Err(ModelError::malformed(&ilabel, format!("tensor {tensor}"), "shard name is not a string"));
            };
            let plain = Path::new(file).file_name().and_then(|f| f.to_str()) == Some(file)
                && !file.contains(['/', '\\'])
                && file != ".."
                && file != ".";
            if !plain {
                return Err(ModelError::malformed(
                    &ilabel,
                    format!("tensor {tensor}"),
                    format!("shard `{file}` is not a plain file name in the folder"),
                ));
            }
            if !files.contains(&file) {
                files.push(file);
            }
            wanted.push((tensor, file));
        }
        let mut shards = Vec::with_capacity(files.len());
        let mut index = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            let shard = open_shard(&dir.join(f))?;
            add_entries(&mut index, &shard, i)?;
            shards.push(shard);
        }
        for (tensor, file) in wanted {
            let ok = index.get(tensor).is_some_and(|e: &Entry| files.get(e.shard) == Some(&file));
            if !ok {
                return Err(ModelError::malformed(
                    &ilabel,
                    format!("tensor {tensor}"),
                    format!("the weight_map puts it in {file}, which does not hold it"),
                ));
            }
        }
        Ok(SafetensorsFiles { path: label, shards, index })
    }

    /// Whether a tensor is present.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// A tensor's dtype name (`BF16`, ...) and shape.
    pub fn info(&self, name: &str) -> Option<(String, Vec<usize>)> {
        self.index.get(name).map(|e| (e.dtype.to_string(), e.shape.clone()))
    }

    /// What the tensors are stored as, most frequent first: `BF16 x272`.
    pub fn storage_summary(&self) -> String {
        let names: Vec<String> = self.index.values().map(|e| e.dtype.to_string()).collect();
        crate::gguf::storage_summary(names.iter().map(String::as_str))
    }

    /// A tensor as fp32 `[rows, cols]`: the last dim is the row, the others multiply into rows (a
    /// 1-D tensor is one row, a scalar `[1, 1]`).
    ///
    /// # Errors
    /// [`ModelError::Unsupported`] for a missing tensor or a dtype other than F32/F16/BF16.
    pub fn tensor_f32(&self, name: &str) -> Result<Matrix> {
        let e = self
            .index
            .get(name)
            .ok_or_else(|| ModelError::unsupported(&self.path, format!("no tensor named {name}")))?;
        let shard = self.shards.get(e.shard).ok_or_else(|| ModelError::unsupported(&self.path, "shard index"))?;
        let at = format!("tensor {name}");
        let ty = match e.dtype {
            Dtype::F32 => GgmlType::F32,
            Dtype::F16 => GgmlType::F16,
            Dtype::BF16 => GgmlType::BF16,
            other => {
                return Err(ModelError::unsupported(
                    &shard.path,
                    format!("tensor {name}: dtype {other} (qdiff reads F32, F16 and BF16)"),
                ))
            }
        };
        let cols = e.shape.last().copied().unwrap_or(1);
        let rows = e.shape.iter().rev().skip(1).try_fold(1usize, |a, &d| a.checked_mul(d));
        let Some(rows) = rows else {
            return Err(ModelError::malformed(&shard.path, at, format!("shape {:?} overflows", e.shape)));
        };
        let (s, t) = (shard.data_start.checked_add(e.range.0), shard.data_start.checked_add(e.range.1));
        let bytes = match (s, t) {
            (Some(s), Some(t)) => shard.map.get(s..t),
            _ => None,
        }
        .ok_or_else(|| ModelError::malformed(&shard.path, &at, "data out of bounds"))?;
        let data = dequantize(ty, bytes, rows, cols)
            .map_err(|err| ModelError::malformed(&shard.path, &at, err.to_string()))?;
        Ok(Matrix { rows, cols, data })
    }

    /// sha256 of `model.safetensors`, or of the index for a sharded checkpoint, hex.
    pub fn sha256(&self) -> Result<String> {
        if let [shard] = self.shards.as_slice() {
            return Ok(crate::gguf::sha256_hex(&shard.map));
        }
        let p = Path::new(&self.path).join("model.safetensors.index.json");
        let bytes = std::fs::read(&p).map_err(|e| ModelError::Io { path: p.display().to_string(), error: e })?;
        Ok(crate::gguf::sha256_hex(&bytes))
    }
}

fn add_entries(index: &mut BTreeMap<String, Entry>, shard: &Shard, i: usize) -> Result<()> {
    for (name, info) in shard.metadata.tensors() {
        let entry = Entry { shard: i, dtype: info.dtype, shape: info.shape.clone(), range: info.data_offsets };
        if index.insert(name.clone(), entry).is_some() {
            return Err(ModelError::malformed(&shard.path, format!("tensor {name}"), "also in another shard"));
        }
    }
    Ok(())
}

/// Load a Hugging Face folder: [`config_from_hf_json`] of `config.json`, the weights, and
/// `tokenizer.json` when present.
///
/// # Errors
/// As [`SafetensorsFiles::open`] and [`config_from_hf_json`]; [`ModelError::Malformed`] for a
/// missing tensor or a shape that disagrees with the config; the tokenizer's error when
/// `tokenizer.json` is present but refused.
pub fn load_folder(dir: &Path) -> Result<Model> {
    let cfg_path = dir.join("config.json");
    let cfg_label = cfg_path.display().to_string();
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::Io { path: cfg_label.clone(), error: e })?;
    let config = config_from_hf_json(&text, &cfg_label)?;
    let files = SafetensorsFiles::open(dir)?;
    let tok_path = dir.join("tokenizer.json");
    let tokenizer = if tok_path.exists() { Some(Tokenizer::from_file(&tok_path)?) } else { None };
    let mut model = model_from_safetensors(&files, config)?;
    model.tokenizer = tokenizer;
    Ok(model)
}

/// The weights of an open checkpoint as a [`Model`] for `config` (tokenizer `None`), with its
/// [`Source`], validated. A tied checkpoint's `lm_head.weight`, if saved anyway, is ignored.
///
/// # Errors
/// [`ModelError::Malformed`] for a missing tensor or a shape that disagrees with the config;
/// [`ModelError::Unsupported`] for a dtype other than F32/F16/BF16.
pub fn model_from_safetensors(files: &SafetensorsFiles, config: LlamaConfig) -> Result<Model> {
    let name =
        Path::new(&files.path).file_name().map_or_else(|| files.path.clone(), |n| n.to_string_lossy().into_owned());
    let source = Source { name, path: files.path.clone(), sha256: String::new(), storage: files.storage_summary() };
    let (sha256, model) = rayon::join(
        || files.sha256(),
        || assemble(&files.path, config, hf_name, |n| files.contains(n), |n| files.tensor_f32(n), source),
    );
    let mut model = model?;
    model.source.sha256 = sha256?;
    Ok(model)
}

/// Hugging Face transformers' name of a slot.
fn hf_name(slot: Slot) -> String {
    let l = |i: usize, s: &str| format!("model.layers.{i}.{s}");
    match slot {
        Slot::Embed => "model.embed_tokens.weight".into(),
        Slot::FinalNorm => "model.norm.weight".into(),
        Slot::Head => "lm_head.weight".into(),
        Slot::AttnNorm(i) => l(i, "input_layernorm.weight"),
        Slot::Wq(i) => l(i, "self_attn.q_proj.weight"),
        Slot::Wk(i) => l(i, "self_attn.k_proj.weight"),
        Slot::Wv(i) => l(i, "self_attn.v_proj.weight"),
        Slot::Bq(i) => l(i, "self_attn.q_proj.bias"),
        Slot::Bk(i) => l(i, "self_attn.k_proj.bias"),
        Slot::Bv(i) => l(i, "self_attn.v_proj.bias"),
        Slot::QNorm(i) => l(i, "self_attn.q_norm.weight"),
        Slot::KNorm(i) => l(i, "self_attn.k_norm.weight"),
        Slot::Wo(i) => l(i, "self_attn.o_proj.weight"),
        Slot::FfnNorm(i) => l(i, "post_attention_layernorm.weight"),
        Slot::Gate(i) => l(i, "mlp.gate_proj.weight"),
        Slot::Up(i) => l(i, "mlp.up_proj.weight"),
        Slot::Down(i) => l(i, "mlp.down_proj.weight"),
    }
}

/// Reads typed fields of a `config.json` object, naming the key in errors.
struct Fields<'a> {
    obj: &'a serde_json::Map<String, Value>,
    path: &'a str,
}

impl Fields<'_> {
    fn bad(&self, key: &str, detail: impl Into<String>) -> ModelError {
        ModelError::malformed(self.path, format!("key {key}"), detail)
    }
    /// A present, non-null value.
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }
    fn count(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64().and_then(|x| usize::try_from(x).ok()) {
                Some(x) => Ok(Some(x)),
                None => Err(self.bad(key, format!("{v} is not a non-negative integer"))),
            },
        }
    }
    fn count_req(&self, key: &str) -> Result<usize> {
        self.count(key)?.ok_or_else(|| self.bad(key, "missing"))
    }
    fn number(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.bad(key, format!("{v} is not a number"))),
        }
    }
    fn boolean(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| self.bad(key, format!("{v} is not a bool"))),
        }
    }
    fn string(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.bad(key, format!("{v} is not a string"))),
        }
    }
    /// A token id: an integer, or a list whose first element is taken.
    fn token(&self, key: &str) -> Result<Option<u32>> {
        let v = match self.get(key) {
            None => return Ok(None),
            Some(Value::Array(a)) => match a.first() {
                None => return Ok(None),
                Some(v) => v,
            },
            Some(v) => v,
        };
        match v.as_u64().and_then(|x| u32::try_from(x).ok()) {
            Some(t) => Ok(Some(t)),
            None => Err(self.bad(key, format!("{v} is not a token id"))),
        }
    }
}

/// The [`LlamaConfig`] of a Hugging Face `config.json` (`model_type` `llama`, `qwen2`, `qwen3`, or
/// the matching `architectures` entry), with transformers' defaults for absent keys:
/// `num_key_value_heads` = heads, `head_dim` = D/H (Qwen3: 128), `rms_norm_eps` 1e-6,
/// `rope_theta` 10000, `tie_word_embeddings` false, `max_position_embeddings` 2048 (Llama) or
/// 32768 (Qwen). `rope_scaling` may be absent/null, `default`, `linear` or `llama3`.
///
/// # Errors
/// [`ModelError::Unsupported`] for another architecture, an activation other than SiLU, Llama
/// attention/MLP biases, sliding-window attention or another RoPE scaling;
/// [`ModelError::Malformed`] (naming the key) for missing or mistyped values.
pub fn config_from_hf_json(text: &str, path: &str) -> Result<LlamaConfig> {
    let json: Value =
        serde_json::from_str(text).map_err(|e| ModelError::malformed(path, "offset 0", format!("not JSON: {e}")))?;
    let Some(obj) = json.as_object() else {
        return Err(ModelError::malformed(path, "offset 0", "config.json is not a JSON object"));
    };
    let f = Fields { obj, path };
    let model_type = f.string("model_type")?;
    let first_arch = f.get("architectures").and_then(Value::as_array).and_then(|a| a.first()).and_then(Value::as_str);
    let arch = match (model_type, first_arch) {
        (Some("llama"), _) | (None, Some("LlamaForCausalLM")) => Arch::Llama,
        (Some("qwen2"), _) | (None, Some("Qwen2ForCausalLM")) => Arch::Qwen2,
        (Some("qwen3"), _) | (None, Some("Qwen3ForCausalLM")) => Arch::Qwen3,
        (m, a) => {
            return Err(ModelError::unsupported(
                path,
                format!(
                    "model_type {:?} / architectures {:?}: qdiff runs LlamaForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM",
                    m.unwrap_or("(none)"),
                    a.unwrap_or("(none)")
                ),
            ))
        }
    };
    if let Some(act) = f.string("hidden_act")? {
        if act != "silu" {
            return Err(ModelError::unsupported(path, format!("hidden_act `{act}` (the Llama family uses silu)")));
        }
    }
    if arch != Arch::Qwen2 && f.boolean("attention_bias")?.unwrap_or(false) {
        return Err(ModelError::unsupported(path, "attention_bias = true (biases on q/k/v/o) is not supported"));
    }
    if f.boolean("mlp_bias")?.unwrap_or(false) {
        return Err(ModelError::unsupported(path, "mlp_bias = true is not supported"));
    }
    if f.boolean("use_sliding_window")?.unwrap_or(false) {
        return Err(ModelError::unsupported(
            path,
            "sliding-window attention (use_sliding_window = true) is not supported",
        ));
    }
    let hidden_size = f.count_req("hidden_size")?;
    let n_heads = f.count_req("num_attention_heads")?;
    if n_heads == 0 {
        return Err(f.bad("num_attention_heads", "0 heads"));
    }
    let head_dim = match f.count("head_dim")? {
        Some(d) => d,
        None if arch == Arch::Qwen3 => 128,
        None => hidden_size / n_heads,
    };
    let rope_params = f.get("rope_parameters").and_then(Value::as_object);
    let rope_theta = match f.number("rope_theta")? {
        Some(t) => t,
        None => match rope_params.and_then(|p| p.get("rope_theta")) {
            Some(v) => v.as_f64().ok_or_else(|| f.bad("rope_parameters", format!("rope_theta {v} is not a number")))?,
            None => 10000.0,
        },
    };
    let rope_scaling = match f.get("rope_scaling") {
        Some(v) => hf_rope_scaling(&f, "rope_scaling", v)?,
        None => match f.get("rope_parameters") {
            Some(v) => hf_rope_scaling(&f, "rope_parameters", v)?,
            None => None,
        },
    };
    let config = LlamaConfig {
        arch,
        vocab_size: f.count_req("vocab_size")?,
        hidden_size,
        n_layers: f.count_req("num_hidden_layers")?,
        n_heads,
        n_kv_heads: f.count("num_key_value_heads")?.unwrap_or(n_heads),
        head_dim,
        intermediate_size: f.count_req("intermediate_size")?,
        rms_eps: f.number("rms_norm_eps")?.unwrap_or(1e-6) as f32,
        rope_theta,
        rope_scaling,
        rope_style: RopeStyle::Half,
        tied_embeddings: f.boolean("tie_word_embeddings")?.unwrap_or(false),
        max_positions: f.count("max_position_embeddings")?.unwrap_or(if arch == Arch::Llama { 2048 } else { 32768 }),
        bos_token: f.token("bos_token_id")?,
        eos_token: f.token("eos_token_id")?,
    };
    config.validate(path)?;
    crate::load::check_rope(&config, path)?;
    Ok(config)
}

/// transformers' `rope_scaling` (or v5 `rope_parameters`): `rope_type` (or the older `type`)
/// `default`, `linear` or `llama3`.
fn hf_rope_scaling(f: &Fields<'_>, key: &str, v: &Value) -> Result<Option<RopeScaling>> {
    let Some(o) = v.as_object() else {
        return Err(f.bad(key, format!("{v} is not an object")));
    };
    let ty = o.get("rope_type").or_else(|| o.get("type")).and_then(Value::as_str).unwrap_or("default");
    let num = |k: &str| -> Result<f64> {
        o.get(k).and_then(Value::as_f64).ok_or_else(|| f.bad(key, format!("{ty} scaling needs a number `{k}`")))
    };
    match ty {
        "default" => Ok(None),
        "linear" => Ok(Some(RopeScaling::Linear { factor: num("factor")? })),
        "llama3" => {
            let old = o
                .get("original_max_position_embeddings")
                .and_then(Value::as_u64)
                .and_then(|x| usize::try_from(x).ok())
                .ok_or_else(|| f.bad(key, "llama3 scaling needs an integer `original_max_position_embeddings`"))?;
            Ok(Some(RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: old,
            }))
        }
        other => Err(ModelError::unsupported(
            f.path,
            format!("{key} type `{other}` (qdiff applies default, linear and llama3)"),
        )),
    }
}

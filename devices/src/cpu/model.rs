//! A whole Llama-family model on the `cpu` device: [`CpuSession`], what
//! [`CpuDevice::load_model`](super::CpuDevice) returns.
//!
//! At load every quantized weight is packed once into its scheme's storage ([`PackedWeights`],
//! the layout the op path uses) and stays packed: the linears decode a tile of rows at a time
//! inside the kernel ([`linear_rows`]) with the framework's accumulation (fp32 for the torchao,
//! ggml and Core ML families, T for MLX), or run the 8da4w integer GEMM on per-token quantized
//! activations ([`linear_8da4w_values`]). fp32 weights (by default the head and the embedding
//! table) go through the same blocked fp32 GEMM, read in place.
//!
//! The graph is the one `models::forward` documents; everything outside the linears is the cpu
//! device's own f32 arithmetic, the way llama.cpp's CPU backend computes it, not kernels-ref's
//! exact ops:
//!
//! - embedding: a row copy (fp32) or the scheme's dequantization of the row (quantized table);
//! - RMSNorm (also per head of q and k for Qwen3): squares in f32 summed in f64 (ggml's
//!   `ggml_float`), `scale = 1/sqrtf(mean + eps)` in f32, `y = (x·scale)·w`;
//! - biases (Qwen2) and residuals: one f32 add each;
//! - RoPE: cos/sin tables from `kernels_ref::ops::rope_inv_freq` (f64 angles rounded to f32
//!   once, positions added as the cache grows), the rotation `(x0·c − x1·s, x0·s + x1·c)` in f32;
//! - causal GQA attention over the KV cache with the query offset: scores by 8-lane f32 dot
//!   products times the scale, `expf(s − max)`, the sum in f64, probabilities times `1/sum`, the
//!   output `Σ_j p_j·v_j` in f32 with `j` ascending;
//! - SwiGLU: `silu(g)·u` with `silu(g) = g / (1 + expf(−g))` in f32.
//!
//! With a dynamic activation scheme (8da4w) every linear's input is quantized per token: an 8da4w
//! weight runs the integer GEMM on the codes; any other weight (an fp32 head) gets the
//! quantizer's dequantized activations, as the reference fake-quantizes them. A `@f16`/`@bf16`
//! scheme rounds its linears' inputs and outputs to T (the op path's semantics); the rest of the
//! graph stays f32.
//!
//! Every op splits its output over rows, (token, head) units or tiles of weight rows, each output
//! computed whole by one task in a fixed order, so the logits' bits do not depend on the number of
//! threads.

use super::act;
use super::dequant::dequant_row;
use super::faults::{Faults, ZpBinding};
use super::linear::{dot_block, has_avx2, linear_8da4w_values, linear_rows, Accum, Rows};
use super::num::Arith;
use super::par::for_chunks;
use super::storage::PackedWeights;
use super::weight_only_accum;
use crate::case::Op;
use crate::device::{DeviceError, ModelSession, Support};
use kernels_ref::ops::{rope_inv_freq, RopeStyle};
use kernels_ref::scheme::{Family, Scheme, W8da4wFlavor};
use kernels_ref::tensor::Matrix;
use models::forward::check_tokens;
use models::quant::QLayer;
use models::{LlamaConfig, ModelError, QModel, QTensor};

/// The device id, in errors.
const DEVICE: &str = "cpu";

/// A weight `[rows, cols]` (`[out, in]`) ready for the linear kernels.
#[derive(Debug)]
struct Linear {
    /// Output features.
    rows: usize,
    /// Input features.
    cols: usize,
    /// How the weight is stored and multiplied.
    kind: LinearKind,
    /// The activation scheme whose quantizer fake-quantizes this linear's input first (8da4w
    /// plans, for weights that do not take the integer path).
    fake_quant: Option<Scheme>,
    /// The tensor's name, for errors.
    name: String,
}

/// How a linear's weight is stored.
#[derive(Debug)]
enum LinearKind {
    /// fp32 rows, multiplied by the blocked fp32 GEMM.
    F32(Vec<f32>),
    /// A weight-only scheme's packed storage: decoded in the kernel, accumulated as the
    /// framework does.
    WeightOnly { packed: PackedWeights, accum: Accum },
    /// 8da4w: int4 codes times the per-token int8 activation codes.
    W8da4w { packed: PackedWeights, flavor: W8da4wFlavor, act: Scheme },
}

impl Linear {
    /// Prepare `w` (named `name`) for a session whose plan quantizes activations with `act`.
    fn new(w: &QTensor, act: Option<Scheme>, name: String) -> Result<Linear, DeviceError> {
        let [rows, cols] = w.shape();
        let kind = match w {
            QTensor::F32(m) => LinearKind::F32(m.data.clone()),
            QTensor::Quant(q) => {
                let packed = PackedWeights::from_quantized(q).map_err(|e| DeviceError::BadCase {
                    op: Op::Linear,
                    scheme: q.scheme.to_string(),
                    detail: format!("{name}: {e}"),
                })?;
                match (q.scheme.family, act) {
                    // The integer path needs the activations quantized the way this weight's
                    // scheme says; under another plan the codes are only dequantized.
                    (Family::W8da4w { flavor, .. }, Some(a)) if q.scheme.activation_scheme() == Some(a) => {
                        LinearKind::W8da4w { packed, flavor, act: a }
                    }
                    _ => LinearKind::WeightOnly { packed, accum: weight_only_accum(&q.scheme) },
                }
            }
        };
        let fake_quant = if matches!(kind, LinearKind::W8da4w { .. }) { None } else { act };
        Ok(Linear { rows, cols, kind, fake_quant, name })
    }

    /// `x · Ŵᵀ (+ bias)` for `m` tokens of `x` (`[m, cols]` row-major); returns `[m, rows]`.
    fn forward(&self, x: &[f32], m: usize, bias: Option<&[f32]>) -> Result<Vec<f32>, DeviceError> {
        let failed = |e: String| DeviceError::Failed { device: DEVICE.into(), detail: format!("{}: {e}", self.name) };
        let quantized;
        let x = match &self.fake_quant {
            Some(a) => {
                let xm = Matrix { rows: m, cols: self.cols, data: x.to_vec() };
                quantized = act::quantize(a, &xm, ZpBinding::Exact).map_err(failed)?.dequantize();
                &quantized[..]
            }
            None => x,
        };
        let mut y = match &self.kind {
            LinearKind::F32(w) => {
                linear_rows(x, m, self.cols, Rows::F32(w), self.rows, Accum::F32, Arith(kernels_ref::dtype::DType::F32))
            }
            LinearKind::WeightOnly { packed, accum } => {
                linear_rows(x, m, self.cols, Rows::Packed(packed), self.rows, *accum, packed.t)
            }
            LinearKind::W8da4w { packed, flavor, act } => {
                let xm = Matrix { rows: m, cols: self.cols, data: x.to_vec() };
                linear_8da4w_values(packed, &xm, *flavor, act).map_err(failed)?
            }
        };
        if let (Some(b), true) = (bias, self.rows > 0) {
            for row in y.chunks_exact_mut(self.rows) {
                row.iter_mut().zip(b).for_each(|(y, &b)| *y += b);
            }
        }
        Ok(y)
    }
}

/// The embedding table.
#[derive(Debug)]
enum Table {
    /// fp32 rows `[V, D]`.
    F32(Matrix),
    /// A scheme's packed storage; a row is dequantized when a token needs it.
    Packed(PackedWeights),
}

/// One decoder layer as the session keeps it.
#[derive(Debug)]
struct Layer {
    attn_norm: Vec<f32>,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    wo: Linear,
    ffn_norm: Vec<f32>,
    w_gate: Linear,
    w_up: Linear,
    w_down: Linear,
}

/// RoPE's host tables: `cos`/`sin` of `pos · inv_freq_i`, `[positions, Dh/2]`, grown on demand.
#[derive(Debug)]
struct RopeTables {
    inv_freq: Vec<f64>,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTables {
    /// Positions covered.
    fn len(&self) -> usize {
        self.cos.len() / self.inv_freq.len().max(1)
    }

    /// Extend the tables to cover positions `0..n` (f64 angles and cos/sin, rounded once).
    fn cover(&mut self, n: usize) {
        for p in self.len()..n {
            for &f in &self.inv_freq {
                let a = p as f64 * f;
                self.cos.push(a.cos() as f32);
                self.sin.push(a.sin() as f32);
            }
        }
    }
}

/// A model loaded on the cpu device (see the module docs).
#[derive(Debug)]
pub(crate) struct CpuSession {
    config: LlamaConfig,
    embed: Table,
    layers: Vec<Layer>,
    final_norm: Vec<f32>,
    head: Linear,
    rope: RopeTables,
    /// Keys per layer, `[len, Hkv·Dh]` row-major.
    k_cache: Vec<Vec<f32>>,
    /// Values per layer, like `k_cache`.
    v_cache: Vec<Vec<f32>>,
    len: usize,
}

/// `Malformed` for a tensor whose shape or presence does not fit the config.
fn malformed(at: String, detail: String) -> DeviceError {
    DeviceError::Model(ModelError::malformed("(model)", at, detail))
}

fn want_len(name: &str, v: &[f32], n: usize) -> Result<(), DeviceError> {
    if v.len() == n {
        Ok(())
    } else {
        Err(malformed(name.into(), format!("{} values, the config needs {n}", v.len())))
    }
}

fn want_shape(name: &str, w: &QTensor, shape: [usize; 2]) -> Result<(), DeviceError> {
    if w.shape() == shape {
        Ok(())
    } else {
        Err(malformed(name.into(), format!("shape {:?}, the config needs {shape:?}", w.shape())))
    }
}

/// An optional per-layer vector: used whenever present (as the reference does), required when the
/// architecture has it (`need`).
fn want_opt(name: &str, v: &Option<Vec<f32>>, need: bool, n: usize) -> Result<Option<Vec<f32>>, DeviceError> {
    match (v, need) {
        (Some(v), _) => want_len(name, v, n).map(|_| Some(v.clone())),
        (None, false) => Ok(None),
        (None, true) => Err(malformed(name.into(), "missing, the architecture needs it".into())),
    }
}

impl CpuSession {
    /// Check `q`'s shapes against its config, check every scheme with `supports`, and pack every
    /// weight once.
    ///
    /// # Errors
    /// [`DeviceError::Unsupported`] for a scheme the cpu runner does not run (with the reason),
    /// [`DeviceError::Model`] for shapes that do not fit the config, [`DeviceError::BadCase`]
    /// for quantized weights whose stored values do not fit their scheme.
    pub(crate) fn new(q: &QModel, supports: impl Fn(Op, &Scheme) -> Support) -> Result<CpuSession, DeviceError> {
        let c = &q.config;
        c.validate("(model)")?;
        let check = |op: Op, t: &QTensor| -> Result<(), DeviceError> {
            match t.scheme().map(|s| (s, supports(op, s))) {
                Some((s, Support::Unsupported(reason))) => {
                    Err(DeviceError::Unsupported { device: DEVICE.into(), op, scheme: s.to_string(), reason })
                }
                _ => Ok(()),
            }
        };
        let (d, f, qw, kw, v) = (c.hidden_size, c.intermediate_size, c.q_width(), c.kv_width(), c.vocab_size);
        want_shape("embed", &q.embed, [v, d])?;
        want_shape("head", &q.head, [v, d])?;
        want_len("final_norm", &q.final_norm, d)?;
        check(Op::Embedding, &q.embed)?;
        check(Op::Linear, &q.head)?;
        if q.layers.len() != c.n_layers {
            return Err(malformed(
                "layers".into(),
                format!("{} layers, the config says {}", q.layers.len(), c.n_layers),
            ));
        }
        let act = q.plan.activation();
        let layers = q
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| Self::layer(c, i, l, act, &check, [d, f, qw, kw]))
            .collect::<Result<Vec<_>, _>>()?;
        let embed = match &q.embed {
            QTensor::F32(m) => Table::F32(m.clone()),
            QTensor::Quant(t) => Table::Packed(PackedWeights::from_quantized(t).map_err(|e| DeviceError::BadCase {
                op: Op::Embedding,
                scheme: t.scheme.to_string(),
                detail: format!("the embedding table: {e}"),
            })?),
        };
        let head = Linear::new(&q.head, act, "the head".into())?;
        let inv_freq = rope_inv_freq(c.head_dim, c.rope_theta, c.rope_scaling.as_ref())?;
        Ok(CpuSession {
            config: c.clone(),
            embed,
            layers,
            final_norm: q.final_norm.clone(),
            head,
            rope: RopeTables { inv_freq, cos: Vec::new(), sin: Vec::new() },
            k_cache: vec![Vec::new(); c.n_layers],
            v_cache: vec![Vec::new(); c.n_layers],
            len: 0,
        })
    }

    fn layer(
        c: &LlamaConfig,
        i: usize,
        l: &QLayer,
        act: Option<Scheme>,
        check: &impl Fn(Op, &QTensor) -> Result<(), DeviceError>,
        [d, f, qw, kw]: [usize; 4],
    ) -> Result<Layer, DeviceError> {
        let n = |s: &str| format!("layer {i} {s}");
        for (name, w) in l.linears() {
            let shape = match name {
                "wq" => [qw, d],
                "wk" | "wv" => [kw, d],
                "wo" => [d, qw],
                "w_gate" | "w_up" => [f, d],
                _ => [d, f],
            };
            want_shape(&n(name), w, shape)?;
            check(Op::Linear, w)?;
        }
        want_len(&n("attn_norm"), &l.attn_norm, d)?;
        want_len(&n("ffn_norm"), &l.ffn_norm, d)?;
        let lin = |w: &QTensor, s: &str| Linear::new(w, act, n(s));
        Ok(Layer {
            attn_norm: l.attn_norm.clone(),
            wq: lin(&l.wq, "wq")?,
            wk: lin(&l.wk, "wk")?,
            wv: lin(&l.wv, "wv")?,
            bq: want_opt(&n("bq"), &l.bq, c.qkv_bias(), qw)?,
            bk: want_opt(&n("bk"), &l.bk, c.qkv_bias(), kw)?,
            bv: want_opt(&n("bv"), &l.bv, c.qkv_bias(), kw)?,
            q_norm: want_opt(&n("q_norm"), &l.q_norm, c.qk_norm(), c.head_dim)?,
            k_norm: want_opt(&n("k_norm"), &l.k_norm, c.qk_norm(), c.head_dim)?,
            wo: lin(&l.wo, "wo")?,
            ffn_norm: l.ffn_norm.clone(),
            w_gate: lin(&l.w_gate, "w_gate")?,
            w_up: lin(&l.w_up, "w_up")?,
            w_down: lin(&l.w_down, "w_down")?,
        })
    }

    /// The embedding rows of `tokens`, `[T, D]` (ids already checked).
    fn embed(&self, tokens: &[u32]) -> Vec<f32> {
        let d = self.config.hidden_size;
        let mut x = vec![0f32; tokens.len() * d];
        match &self.embed {
            Table::F32(m) => {
                for (row, &id) in x.chunks_exact_mut(d).zip(tokens) {
                    row.copy_from_slice(m.row(id as usize));
                }
            }
            Table::Packed(p) => {
                for_chunks(
                    &mut x,
                    d,
                    d,
                    || vec![0i32; d],
                    |codes, i, row| dequant_row(p, tokens[i] as usize, &Faults::NONE, codes, row),
                );
            }
        }
        x
    }

    /// Everything of [`ModelSession::forward`] but the cache bookkeeping on failure.
    fn run(&mut self, tokens: &[u32]) -> Result<Matrix, DeviceError> {
        let c = &self.config;
        let (t, d, dh, eps) = (tokens.len(), c.hidden_size, c.head_dim, c.rms_eps);
        let start = self.len;
        self.rope.cover(start + t);
        let mut x = self.embed(tokens);
        for (li, l) in self.layers.iter().enumerate() {
            let h = rmsnorm(&x, d, &l.attn_norm, eps);
            let mut q = l.wq.forward(&h, t, l.bq.as_deref())?;
            let mut k = l.wk.forward(&h, t, l.bk.as_deref())?;
            let v = l.wv.forward(&h, t, l.bv.as_deref())?;
            if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                q = rmsnorm(&q, dh, qn, eps);
                k = rmsnorm(&k, dh, kn, eps);
            }
            rope(&mut q, c.q_width(), dh, start, c.rope_style, &self.rope);
            rope(&mut k, c.kv_width(), dh, start, c.rope_style, &self.rope);
            self.k_cache[li].extend_from_slice(&k);
            self.v_cache[li].extend_from_slice(&v);
            let a = attention(&Attn {
                q: &q,
                k: &self.k_cache[li],
                v: &self.v_cache[li],
                dh,
                n_heads: c.n_heads,
                n_kv_heads: c.n_kv_heads,
                start,
                t,
                scale: c.attn_scale(),
            });
            let o = l.wo.forward(&a, t, None)?;
            add_into(&mut x, &o);
            let h = rmsnorm(&x, d, &l.ffn_norm, eps);
            let mut g = l.w_gate.forward(&h, t, None)?;
            let u = l.w_up.forward(&h, t, None)?;
            swiglu_into(&mut g, &u);
            let down = l.w_down.forward(&g, t, None)?;
            add_into(&mut x, &down);
        }
        let h = rmsnorm(&x, d, &self.final_norm, eps);
        let logits = self.head.forward(&h, t, None)?;
        Ok(Matrix { rows: t, cols: c.vocab_size, data: logits })
    }
}

impl ModelSession for CpuSession {
    fn forward(&mut self, tokens: &[u32]) -> Result<Matrix, DeviceError> {
        check_tokens(&self.config, self.len, tokens)?;
        if tokens.is_empty() {
            return Ok(Matrix { rows: 0, cols: self.config.vocab_size, data: Vec::new() });
        }
        let kept = self.len * self.config.kv_width();
        match self.run(tokens) {
            Ok(logits) => {
                self.len += tokens.len();
                Ok(logits)
            }
            Err(e) => {
                // A failed forward leaves the cache as it was.
                for c in self.k_cache.iter_mut().chain(self.v_cache.iter_mut()) {
                    c.truncate(kept);
                }
                Err(e)
            }
        }
    }

    fn reset(&mut self) {
        for c in self.k_cache.iter_mut().chain(self.v_cache.iter_mut()) {
            c.clear();
        }
        self.len = 0;
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// RMSNorm of each `d`-wide row of `x` (also each head, for q/k norms) with weight `w`, the way
/// ggml computes it: squares in f32 summed in f64 in index order, `mean` rounded to f32,
/// `scale = 1/sqrtf(mean + eps)`, then `(x·scale)·w` (ggml's separate `mul` by the weight).
fn rmsnorm(x: &[f32], d: usize, w: &[f32], eps: f32) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    if d == 0 {
        return y;
    }
    for_chunks(
        &mut y,
        d,
        d,
        || (),
        |_, r, yr| {
            let xr = &x[r * d..(r + 1) * d];
            let ss: f64 = xr.iter().map(|&v| (v * v) as f64).sum();
            let mean = (ss / d as f64) as f32;
            let scale = 1.0f32 / (mean + eps).sqrt();
            for ((y, &v), &wv) in yr.iter_mut().zip(xr).zip(w) {
                *y = (v * scale) * wv;
            }
        },
    );
    y
}

/// Rotate every head of every row of `x` (`[T, width]`, row `t` at position `start + t`) in
/// place with the host tables, pairing elements as `style` says.
fn rope(x: &mut [f32], width: usize, dh: usize, start: usize, style: RopeStyle, tables: &RopeTables) {
    let half = dh / 2;
    if width == 0 || half == 0 {
        return;
    }
    for_chunks(
        x,
        width,
        width,
        || (),
        |_, t, row| {
            let at = (start + t) * half;
            let (cos, sin) = (&tables.cos[at..at + half], &tables.sin[at..at + half]);
            for head in row.chunks_exact_mut(dh) {
                for i in 0..half {
                    let (i0, i1) = match style {
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        RopeStyle::Half => (i, i + half),
                    };
                    let (x0, x1, c, s) = (head[i0], head[i1], cos[i], sin[i]);
                    head[i0] = x0 * c - x1 * s;
                    head[i1] = x0 * s + x1 * c;
                }
            }
        },
    );
}

/// What the attention of one forward reads.
#[derive(Debug, Clone, Copy)]
struct Attn<'a> {
    /// Queries `[T, Hq·Dh]`, after RoPE.
    q: &'a [f32],
    /// The layer's keys `[start + T, Hkv·Dh]`, this forward's included.
    k: &'a [f32],
    /// The layer's values, like `k`.
    v: &'a [f32],
    dh: usize,
    n_heads: usize,
    n_kv_heads: usize,
    /// Position of the first query (the cache length before this forward).
    start: usize,
    /// Queries.
    t: usize,
    scale: f32,
}

/// Causal GQA attention: `[T, Hq·Dh]`, one task per (query row, kv head) unit, which computes
/// the `Hq/Hkv` query heads sharing that kv head together (each key and value row is loaded once
/// for all of them; every output is still computed on its own, in the same order).
fn attention(a: &Attn<'_>) -> Vec<f32> {
    let group = a.n_heads / a.n_kv_heads;
    let mut out = vec![0f32; a.t * a.n_heads * a.dh];
    if a.dh == 0 {
        return out;
    }
    let keys = a.start + a.t;
    let work = keys * a.dh * 2 * group;
    for_chunks(&mut out, group * a.dh, work, Vec::new, |scores, unit, y| attention_unit(a, unit, scores, y));
    out
}

/// Runs [`attention_unit_body`] through its AVX2 instance where the CPU has AVX2.
fn attention_unit(a: &Attn<'_>, unit: usize, scores: &mut Vec<f32>, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: `attention_unit_avx2` only requires AVX2, which the CPU has just been
            // checked for.
            return unsafe { attention_unit_avx2(a, unit, scores, y) };
        }
    }
    attention_unit_body(a, unit, scores, y)
}

/// [`attention_unit_body`] compiled with AVX2 (no fusing: the baseline instance's bits).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn attention_unit_avx2(a: &Attn<'_>, unit: usize, scores: &mut Vec<f32>, y: &mut [f32]) {
    attention_unit_body(a, unit, scores, y)
}

/// The outputs `y` (`group · Dh` values) of query row `t` for the query heads of kv head `g`,
/// where `unit = t·Hkv + g`. Per head: scores `q·k_j` (8-lane dot products) times the scale,
/// `p_j = expf(s_j − max) · (1/Σ_j)` with the sum in f64, and `y_d = Σ_j p_j·v_jd` in f32 with
/// `j` ascending.
#[inline(always)]
fn attention_unit_body(a: &Attn<'_>, unit: usize, scores: &mut Vec<f32>, y: &mut [f32]) {
    let (dh, group) = (a.dh, a.n_heads / a.n_kv_heads);
    let (t, g) = (unit / a.n_kv_heads, unit % a.n_kv_heads);
    let (qw, kw) = (a.n_heads * dh, a.n_kv_heads * dh);
    let visible = a.start + t + 1;
    let q = &a.q[t * qw + g * group * dh..][..group * dh];
    scores.clear();
    scores.resize(group * visible, 0.0);
    match group {
        1 => head_scores::<1, 4>(a, g, q, visible, scores),
        2 => head_scores::<2, 4>(a, g, q, visible, scores),
        3 => head_scores::<3, 2>(a, g, q, visible, scores),
        4 => head_scores::<4, 2>(a, g, q, visible, scores),
        _ => {
            for (qh, sh) in q.chunks_exact(dh).zip(scores.chunks_exact_mut(visible)) {
                head_scores::<1, 4>(a, g, qh, visible, sh);
            }
        }
    }
    for sh in scores.chunks_exact_mut(visible) {
        let mut max = f32::NEG_INFINITY;
        for s in sh.iter_mut() {
            *s *= a.scale;
            max = max.max(*s);
        }
        let mut sum = 0f64;
        for s in sh.iter_mut() {
            *s = (*s - max).exp();
            sum += *s as f64;
        }
        let inv = (1.0 / sum) as f32;
        sh.iter_mut().for_each(|s| *s *= inv);
    }
    let v = &a.v[g * dh..];
    for (yh, ph) in y.chunks_exact_mut(dh).zip(scores.chunks_exact(visible)) {
        let mut c = 0;
        while c + 64 <= dh {
            weighted_sum::<64>(ph, &v[c..], kw, &mut yh[c..c + 64]);
            c += 64;
        }
        while c + 8 <= dh {
            weighted_sum::<8>(ph, &v[c..], kw, &mut yh[c..c + 8]);
            c += 8;
        }
        for (d, o) in yh.iter_mut().enumerate().skip(c) {
            *o = ph.iter().enumerate().fold(0f32, |acc, (j, &p)| acc + p * v[j * kw + d]);
        }
    }
}

/// Scores `q_h·k_j` of the `G` query heads in `q` (`[G, Dh]`) against the `visible` keys of kv
/// head `g`, into `scores` (`[G, visible]`), `NR` keys per block.
#[inline(always)]
fn head_scores<const G: usize, const NR: usize>(a: &Attn<'_>, g: usize, q: &[f32], visible: usize, scores: &mut [f32]) {
    let (dh, kw) = (a.dh, a.n_kv_heads * a.dh);
    let qs: [&[f32]; G] = std::array::from_fn(|i| &q[i * dh..(i + 1) * dh]);
    let key = |j: usize| &a.k[j * kw + g * dh..][..dh];
    let full = visible - visible % NR;
    for j in (0..full).step_by(NR) {
        let s = dot_block::<G, NR>(qs, std::array::from_fn(|r| key(j + r)));
        for (i, si) in s.iter().enumerate() {
            scores[i * visible + j..i * visible + j + NR].copy_from_slice(si);
        }
    }
    for j in full..visible {
        let s = dot_block::<G, 1>(qs, [key(j)]);
        for (i, si) in s.iter().enumerate() {
            scores[i * visible + j] = si[0];
        }
    }
}

/// `y = Σ_j p_j · v_j[..W]` for value rows `kw` apart starting at `v`, the `W` accumulators
/// kept in registers while `j` runs ascending.
#[inline(always)]
fn weighted_sum<const W: usize>(p: &[f32], v: &[f32], kw: usize, y: &mut [f32]) {
    let mut acc = [0f32; W];
    for (j, &pj) in p.iter().enumerate() {
        let row: &[f32; W] = v[j * kw..j * kw + W].try_into().expect("W values");
        for d in 0..W {
            acc[d] += pj * row[d];
        }
    }
    y.copy_from_slice(&acc);
}

/// `g ← silu(g)·u` elementwise, `silu(g) = g / (1 + expf(−g))` in f32 (ggml's swiglu).
fn swiglu_into(g: &mut [f32], u: &[f32]) {
    const CHUNK: usize = 4096;
    for_chunks(
        g,
        CHUNK,
        CHUNK * 8,
        || (),
        |_, i, gc| {
            for (gv, &uv) in gc.iter_mut().zip(&u[i * CHUNK..]) {
                *gv = *gv / (1.0 + (-*gv).exp()) * uv;
            }
        },
    );
}

/// The residual add `x ← x + y` (one f32 add each).
fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// This thread's CPU time in ns (`/proc/thread-self/schedstat`), or wall time where there is
    /// no such file.
    fn cpu_ns() -> f64 {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
        s.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as f64)
    }

    /// `RAYON_NUM_THREADS=1 cargo test --release -p qdiff-devices --lib -- --ignored --nocapture attention_speed`
    #[test]
    #[ignore]
    fn attention_speed() {
        let (t, hq, hkv, dh) = (512, 9, 3, 64);
        let q: Vec<f32> = (0..t * hq * dh).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let k: Vec<f32> = (0..t * hkv * dh).map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5).collect();
        let a = Attn { q: &q, k: &k, v: &k, dh, n_heads: hq, n_kv_heads: hkv, start: 0, t, scale: 0.125 };
        let t0 = cpu_ns();
        let reps = 5;
        for _ in 0..reps {
            std::hint::black_box(attention(&a));
        }
        let secs = (cpu_ns() - t0) / 1e9 / reps as f64;
        let flops = 2.0 * 2.0 * (t * (t + 1) / 2 * hq * dh) as f64;
        println!("attention T=S=512: {:.1} ms per layer, {:.1} GFLOP/s", secs * 1e3, flops / secs / 1e9);
    }
}

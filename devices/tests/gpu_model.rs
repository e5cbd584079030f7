//! The GPU runner's model forward (`GpuDevice::load_model`) against the `ref` device's session:
//! the synthetic Llama and a Qwen2-like and a Qwen3-like model (`RopeStyle::Half`), with no
//! quantization, weight-only schemes and 8da4w-vk; prefill against token-by-token decoding;
//! `reset`; refusals.
//!
//! # Tolerance
//!
//! Both sides compute the same network: the reference exactly (f64) with each op's output
//! rounded once to f32, the GPU in f32 with the op path's weights (its dequantization is bit
//! exact against the reference's, see `gpu.rs`). Their logits differ only by rounding errors,
//! and, under 8da4w, by activation codes those errors can move across a rounding boundary.
//!
//! A strict component-wise bound (inputs' bounds through `|Jacobian|`, local errors at their
//! worst case `γ_K·Σ|x_k·w_k|`) is correct but useless here: it assumes every error of a dot
//! product has the same sign, and through the ~10 chained linears of a forward, each amplifying by
//! its row's ℓ1 norm (≈ 13 for these random weights), it reaches ~10⁸ on logits of ~10. So
//! [`bound`] follows probabilistic rounding error analysis (Higham & Mary, "A new approach to
//! probabilistic rounding error analysis", SISC 2019): rounding errors are independent, of mean
//! zero, at most `u = 2⁻²⁴` relatively. It runs the network in f64 beside an error scale `e` per
//! element (a standard deviation, bounding `gpu − exact` and `ref − exact` together):
//!
//! - propagation, to first order (`O(e²)` terms are far below `e`): an op's input errors through
//!   its Jacobian in quadrature (a linear: `√(Σ_k w_nk²·e_k²)`; RMSNorm, RoPE, attention, SwiGLU,
//!   the residual adds alike);
//! - the linear's own accumulation (sequential, as the GPU's is: each product and each partial
//!   sum `S_k` rounded once): `u·√(Σ_k (x_k·w_k)² + Σ_k S_k²)`;
//! - every other op at its worst case under Vulkan's precision requirements (SPIR-V environment,
//!   "Precision and Operation of SPIR-V Instructions": `x / y` 2.5 ulp, `sqrt` as
//!   `1 / inversesqrt` (2 ulp + a division), `exp(x)` `3 + 2·|x|` ulp; an ulp is at most `2u`
//!   relatively): RMSNorm's sum of squares, mean, `+ eps`, sqrt, product and quotient; RoPE's
//!   cos and sin rounded to f32, two products and a sum (`4u·(|x₀c| + |x₁s|)`); attention's scores
//!   (`scale·√Dh·u·Σ|q·k|`) and its online softmax, where weight `j`, rescaled at every new running
//!   maximum, is off by at most `ρ_j = (8·S + 8 + 4·(m − s_j))·u` relatively (S keys including the
//!   masked ones a workgroup steps over, m the maximum) and moves the output by
//!   `Σ_j p_j·ρ_j·(|v_j| + |o|)`, score errors by `Σ_j p_j·δs_j·(v_j − o)`; SwiGLU's exp damped by
//!   `E/(1+E)`, an add, a division and a product; and each op's output rounded by the reference
//!   (`u·|y|`);
//! - 8da4w: an activation at distance `d` from its rounding boundary crosses it with probability at
//!   most `2·exp(−d²/2σ²)` (Gaussian tail; `σ` its error scale and the per-token scale's,
//!   `2·max e / 255`), and then its code is one step `s` off, on either side.
//!
//! A logit may differ by `λ·e` with `λ = 8` (a Gaussian exceeds 8σ with probability ~10⁻¹⁵). On
//! lavapipe the fp32 and weight-only differences stay below 1.1 % of that (the worst-case local
//! terms dominate `e`): an error at fp16's level would fail. Under 8da4w the bound is loose
//! (~2 on logits of ~12): the error scale makes a few code flips per row probable, each worth a
//! quantization step, though the measured difference stays at the rounding level (no code flips).
//!
//! The assertions: every logit within its bound; the argmax equal wherever the reference's top-2
//! margin exceeds the two bounds (implied, asserted for the report); prefill, token-by-token decode
//! and a two-chunk prefill within twice the bound of each other (each lies within it of the exact
//! logits; in practice they are bit-identical, every output's arithmetic being the same in all
//! three); `reset` reproduces the first forward bit for bit (no atomics, no order that depends on
//! scheduling).
//!
//! No adapter: with `QDIFF_REQUIRE_VULKAN=1` the tests fail; otherwise they print why and pass.

// The bound's loops index several arrays with the formulas of the ops they mirror.
#![allow(clippy::needless_range_loop)]

use devices::device::{Device, DeviceError, ModelSession};
use devices::gpu::{self, GpuDevice};
use kernels_ref::ops::RopeStyle;
use kernels_ref::scheme::Scheme;
use kernels_ref::tensor::Matrix;
use models::{Arch, LlamaConfig, Model, QModel, QuantPlan};
use std::sync::{Mutex, OnceLock};

/// The first GPU adapter, opened once for the whole test binary (`None`: skip).
fn device() -> Option<&'static Mutex<GpuDevice>> {
    static DEVICE: OnceLock<Option<Mutex<GpuDevice>>> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let kind = if cfg!(target_vendor = "apple") {
                devices::device::DeviceKind::Metal
            } else {
                devices::device::DeviceKind::Vulkan
            };
            let opened = gpu::open(kind, 0).ok().map(Mutex::new);
            if opened.is_none() {
                let note = gpu::missing_gpu_note();
                if std::env::var("QDIFF_REQUIRE_VULKAN").is_ok_and(|v| v == "1") {
                    panic!("QDIFF_REQUIRE_VULKAN=1 but {note}");
                }
                eprintln!("skipping GPU model tests: {note}");
            }
            opened
        })
        .as_ref()
}

fn lock(m: &Mutex<GpuDevice>) -> std::sync::MutexGuard<'_, GpuDevice> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The error scale, propagated beside an f64 forward.

const U: f64 = 1.0 / (1u64 << 24) as f64;
/// How many error scales `e` (standard deviations) a logit may be off (see the module doc).
const LAMBDA: f64 = 8.0;
/// Vulkan's `x / y`: 2.5 ulp.
const DIV: f64 = 5.0 * U;
/// Vulkan's `sqrt`: `1 / inversesqrt(x)`, 2 ulp and a division.
const SQRT: f64 = 9.0 * U;

/// Vulkan's `exp(x)`: `3 + 2·|x|` ulp.
fn exp_err(x: f64) -> f64 {
    (6.0 + 4.0 * x.abs()) * U
}

/// Exact values (f64) of a `[rows, cols]` intermediate with the error scale of each element.
#[derive(Clone)]
struct Bounded {
    v: Vec<f64>,
    e: Vec<f64>,
    cols: usize,
}

impl Bounded {
    fn rows(&self) -> usize {
        self.v.len() / self.cols
    }
}

fn norm_b(x: &Bounded, w: &[f32], eps: f32) -> Bounded {
    let d = x.cols;
    let mut out = Bounded { v: vec![0.0; x.v.len()], e: vec![0.0; x.v.len()], cols: d };
    for r in 0..x.rows() {
        let xs = &x.v[r * d..(r + 1) * d];
        let es = &x.e[r * d..(r + 1) * d];
        let ss: f64 = xs.iter().map(|v| v * v).sum();
        let rms = (ss / d as f64 + eps as f64).sqrt();
        let rel_rms = 0.5 * ((d as f64).sqrt() * U + DIV + U) + SQRT;
        let mixed: f64 = xs.iter().zip(es).map(|(v, e)| (v * e).powi(2)).sum::<f64>().sqrt();
        for i in 0..d {
            let wi = w[i] as f64;
            let y = xs[i] * wi / rms;
            let local = y.abs() * (U + DIV + rel_rms) + U * y.abs();
            let prop = wi.abs() / rms * es[i] + (xs[i] * wi).abs() / (d as f64 * rms.powi(3)) * mixed;
            out.v[r * d + i] = y;
            out.e[r * d + i] = local + prop;
        }
    }
    out
}

fn linear_b(x: &Bounded, w: &Matrix, b: Option<&[f32]>, act_rounded: bool) -> Bounded {
    let (n, k) = (w.rows, w.cols);
    let t = x.rows();
    let mut out = Bounded { v: vec![0.0; t * n], e: vec![0.0; t * n], cols: n };
    for m in 0..t {
        let xs = &x.v[m * k..(m + 1) * k];
        let es = &x.e[m * k..(m + 1) * k];
        for j in 0..n {
            let ws = &w.data[j * k..(j + 1) * k];
            // The accumulation `y ← y + x_k·w_k` rounds the product and the partial sum S_k:
            // variance u²·(Σ_k (x_k·w_k)² + Σ_k S_k²).
            let (mut y, mut rounding, mut prop) = (0.0, 0.0, 0.0);
            for i in 0..k {
                let wi = ws[i] as f64;
                y += xs[i] * wi;
                rounding += (xs[i] * wi).powi(2) + y * y;
                prop += (wi * es[i]).powi(2);
            }
            if let Some(b) = b {
                y += b[j] as f64;
                rounding += y * y;
            }
            // The reference's own rounding of y, and of a dequantized activation (8da4w).
            let act_rounding = if act_rounded { rounding } else { 0.0 };
            out.v[m * n + j] = y;
            out.e[m * n + j] = U * (rounding + act_rounding).sqrt() + U * y.abs() + prop.sqrt();
        }
    }
    out
}

fn add_b(x: &Bounded, y: &Bounded) -> Bounded {
    let v: Vec<f64> = x.v.iter().zip(&y.v).map(|(a, b)| a + b).collect();
    let e = x.e.iter().zip(&y.e).zip(&v).map(|((a, b), s)| a.hypot(*b) + 2.0 * U * s.abs()).collect();
    Bounded { v, e, cols: x.cols }
}

fn rope_b(x: &Bounded, c: &LlamaConfig) -> Bounded {
    let dh = c.head_dim;
    let inv = kernels_ref::ops::rope_inv_freq(dh, c.rope_theta, c.rope_scaling.as_ref()).expect("rope frequencies");
    let mut out = x.clone();
    for t in 0..x.rows() {
        for h in 0..x.cols / dh {
            let base = t * x.cols + h * dh;
            for (i, f) in inv.iter().enumerate() {
                let (cs, sn) = ((t as f64 * f).cos(), (t as f64 * f).sin());
                let (i0, i1) = match c.rope_style {
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    RopeStyle::Half => (i, i + dh / 2),
                };
                let (x0, x1, e0, e1) = (x.v[base + i0], x.v[base + i1], x.e[base + i0], x.e[base + i1]);
                let local = 4.0 * U * ((x0 * cs).abs() + (x1 * sn).abs());
                let (y0, y1) = (x0 * cs - x1 * sn, x0 * sn + x1 * cs);
                out.v[base + i0] = y0;
                out.v[base + i1] = y1;
                out.e[base + i0] = local + U * y0.abs() + (cs * e0).hypot(sn * e1);
                out.e[base + i1] = local + U * y1.abs() + (sn * e0).hypot(cs * e1);
            }
        }
    }
    out
}

fn head_norm_b(x: &Bounded, w: &[f32], dh: usize, eps: f32) -> Bounded {
    let heads = Bounded { v: x.v.clone(), e: x.e.clone(), cols: dh };
    let n = norm_b(&heads, w, eps);
    Bounded { v: n.v, e: n.e, cols: x.cols }
}

/// Causal attention from position 0, keys and values the rows of `k`, `v`.
fn attention_b(q: &Bounded, k: &Bounded, v: &Bounded, c: &LlamaConfig) -> Bounded {
    let (dh, hq, hkv) = (c.head_dim, c.n_heads, c.n_kv_heads);
    let scale = c.attn_scale() as f64;
    let t_len = q.rows();
    let mut out = Bounded { v: vec![0.0; q.v.len()], e: vec![0.0; q.v.len()], cols: q.cols };
    for t in 0..t_len {
        for h in 0..hq {
            let g = h / (hq / hkv);
            let qo = t * q.cols + h * dh;
            let keys = t + 1;
            let mut s = vec![0.0; keys];
            let mut es = vec![0.0; keys];
            for j in 0..keys {
                let ko = j * k.cols + g * dh;
                let (mut dot, mut abs, mut prop) = (0.0, 0.0, 0.0);
                for d in 0..dh {
                    let (qd, kd) = (q.v[qo + d], k.v[ko + d]);
                    dot += qd * kd;
                    abs += (qd * kd).abs();
                    prop += (kd * q.e[qo + d]).powi(2) + (qd * k.e[ko + d]).powi(2);
                }
                s[j] = scale * dot;
                es[j] = scale * ((dh as f64).sqrt() * U * abs + prop.sqrt()) + U * s[j].abs();
            }
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
            let p: Vec<f64> = s.iter().map(|x| (x - m).exp() / z).collect();
            // Keys a workgroup of 16 queries steps over past this query's own (masked) ones.
            let steps = (keys + 16) as f64;
            for d in 0..dh {
                let vo = |j: usize| j * v.cols + g * dh + d;
                let o: f64 = (0..keys).map(|j| p[j] * v.v[vo(j)]).sum();
                let (mut local, mut from_s, mut from_v) = ((DIV + U) * o.abs(), 0.0, 0.0);
                for j in 0..keys {
                    let vj = v.v[vo(j)];
                    let rho = (8.0 * steps + 8.0 + 4.0 * (m - s[j])) * U;
                    local += p[j] * rho * (vj.abs() + o.abs());
                    from_s += (p[j] * es[j] * (vj - o)).powi(2);
                    from_v += (p[j] * v.e[vo(j)]).powi(2);
                }
                let e = local + from_s.sqrt() + from_v.sqrt();
                out.v[qo + d] = o;
                out.e[qo + d] = e;
            }
        }
    }
    out
}

fn swiglu_b(g: &Bounded, u: &Bounded) -> Bounded {
    let mut out = g.clone();
    for i in 0..g.v.len() {
        let (gv, uv) = (g.v[i], u.v[i]);
        let ex = (-gv).exp();
        let sig = 1.0 / (1.0 + ex);
        let y = gv * sig * uv;
        let local = y.abs() * (exp_err(gv) * ex / (1.0 + ex) + U + DIV + U) + U * y.abs();
        let dg = (uv * sig * (1.0 + gv * (1.0 - sig))).abs();
        out.v[i] = y;
        out.e[i] = local + (dg * g.e[i]).hypot(gv * sig * u.e[i]);
    }
    out
}

/// Per-token fake quantization by the activation scheme `a` (see the module doc).
fn act_b(x: &Bounded, a: &Scheme) -> Bounded {
    let (rows, cols) = (x.rows(), x.cols);
    let xm = Matrix::new(rows, cols, x.v.iter().map(|&v| v as f32).collect()).expect("matrix");
    let q = a.quantize(&xm).expect("activation quantize");
    let xh = a.dequantize(&q).expect("activation dequantize");
    let mut out = Bounded { v: xh.iter().map(|&v| v as f64).collect(), e: vec![0.0; x.v.len()], cols };
    for r in 0..rows {
        let s = q.scales[r] as f64;
        let zp = q.zero_points.as_ref().map_or(0.0, |z| z[r] as f64);
        let es = &x.e[r * cols..(r + 1) * cols];
        let emax = es.iter().cloned().fold(0.0, f64::max);
        let ds = 2.0 * emax / 255.0 + 4.0 * U * s;
        for i in 0..cols {
            let idx = r * cols + i;
            let t = x.v[idx] / s;
            let to_boundary = (t - (t.floor() + 0.5)).abs() * s;
            let code = q.q[idx] as f64;
            // The chance that an error of scale e_i (and of the scale, t·ds) moves x across the
            // rounding boundary (Gaussian tail bound), on either side: then a code is one step off.
            let spread = es[i] + t.abs() * ds;
            let flip = if spread > 0.0 { (2.0 * (-0.5 * (to_boundary / spread).powi(2)).exp()).min(1.0) } else { 0.0 };
            out.e[idx] = (2.0 * flip).sqrt() * s + (code - zp).abs() * ds;
        }
    }
    out
}

/// The logits of `tokens` fed from position 0 and their error scales (see the module doc).
fn bound(q: &QModel, tokens: &[u32]) -> Bounded {
    let m: Model = q.dequantized().expect("dequantize");
    let c = &m.config;
    let act = q.plan.activation();
    let lin = |x: &Bounded, w: &Matrix, b: Option<&[f32]>| match &act {
        Some(a) => linear_b(&act_b(x, a), w, b, true),
        None => linear_b(x, w, b, false),
    };
    let d = c.hidden_size;
    let mut x = Bounded { v: Vec::new(), e: vec![0.0; tokens.len() * d], cols: d };
    for &t in tokens {
        x.v.extend(m.embed.data[t as usize * d..(t as usize + 1) * d].iter().map(|&v| v as f64));
    }
    for l in &m.layers {
        let h = norm_b(&x, &l.attn_norm, c.rms_eps);
        let mut qv = lin(&h, &l.wq, l.bq.as_deref());
        let mut kv = lin(&h, &l.wk, l.bk.as_deref());
        let vv = lin(&h, &l.wv, l.bv.as_deref());
        if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
            qv = head_norm_b(&qv, qn, c.head_dim, c.rms_eps);
            kv = head_norm_b(&kv, kn, c.head_dim, c.rms_eps);
        }
        let a = attention_b(&rope_b(&qv, c), &rope_b(&kv, c), &vv, c);
        x = add_b(&x, &lin(&a, &l.wo, None));
        let h = norm_b(&x, &l.ffn_norm, c.rms_eps);
        let gu = swiglu_b(&lin(&h, &l.w_gate, None), &lin(&h, &l.w_up, None));
        x = add_b(&x, &lin(&gu, &l.w_down, None));
    }
    lin(&norm_b(&x, &m.final_norm, c.rms_eps), m.head(), None)
}

// ---------------------------------------------------------------------------------------------
// The comparison.

fn tokens(vocab: usize, n: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 131 + 7) % vocab) as u32).collect()
}

/// What one comparison found, for the report line.
struct Found {
    max_err: f64,
    max_bound: f64,
    worst_ratio: f64,
    argmax_checked: usize,
}

fn check_within(label: &str, got: &Matrix, want: &Matrix, b: &Bounded, factor: f64) -> Found {
    assert_eq!((got.rows, got.cols), (want.rows, want.cols), "{label}: shape");
    let mut f = Found { max_err: 0.0, max_bound: 0.0, worst_ratio: 0.0, argmax_checked: 0 };
    for (i, ((&g, &w), &e)) in got.data.iter().zip(&want.data).zip(&b.e).enumerate() {
        let err = (g as f64 - w as f64).abs();
        let allowed = factor * LAMBDA * e + f64::from(f32::MIN_POSITIVE);
        assert!(
            err <= allowed,
            "{label}: logit {} of token {}: gpu {g} vs ref {w}, |Δ| = {err:e} > bound {allowed:e}",
            i % got.cols,
            i / got.cols
        );
        f.max_err = f.max_err.max(err);
        f.max_bound = f.max_bound.max(factor * LAMBDA * e);
        f.worst_ratio = f.worst_ratio.max(err / allowed);
    }
    for r in 0..want.rows {
        let row = |m: &Matrix| m.data[r * m.cols..(r + 1) * m.cols].to_vec();
        let (wr, gr) = (row(want), row(got));
        let mut order: Vec<usize> = (0..wr.len()).collect();
        order.sort_by(|&a, &c| wr[c].total_cmp(&wr[a]));
        let (top, second) = (order[0], order[1]);
        let margin = (wr[top] - wr[second]) as f64;
        if margin > factor * LAMBDA * (b.e[r * b.cols + top] + b.e[r * b.cols + second]) {
            let garg = (0..gr.len()).max_by(|&a, &c| gr[a].total_cmp(&gr[c])).unwrap_or(0);
            assert_eq!(garg, top, "{label}: token {r}: argmax differs with a top-2 margin of {margin}");
            f.argmax_checked += 1;
        }
    }
    f
}

/// Compare the GPU session with the reference on `model` under `plan`: prefill, decode,
/// chunked prefill, reset.
fn compare(model: &Model, plan: QuantPlan, label: &str) {
    let Some(dev) = device() else { return };
    let q = QModel::quantize(model, &plan).expect("quantize");
    let toks = tokens(model.config.vocab_size, 12);
    let want = devices::open("ref").expect("ref").load_model(&q).expect("ref load").forward(&toks).expect("ref");
    let b = bound(&q, &toks);
    let mut dev = lock(dev);
    let mut s = dev.load_model(&q).unwrap_or_else(|e| panic!("{label}: load: {e}"));
    let got = s.forward(&toks).unwrap_or_else(|e| panic!("{label}: forward: {e}"));
    assert_eq!(s.len(), toks.len());
    let f = check_within(label, &got, &want, &b, 1.0);
    eprintln!(
        "{label}: max |gpu − ref| {:.3e}, max bound {:.3e}, worst |Δ|/bound {:.3}, argmax checked on {}/{} tokens",
        f.max_err,
        f.max_bound,
        f.worst_ratio,
        f.argmax_checked,
        toks.len()
    );

    // `reset` empties the cache: the same prefill again gives the same bits.
    s.reset();
    assert!(s.is_empty());
    let again = s.forward(&toks).expect("forward after reset");
    assert!(got.data.iter().zip(&again.data).all(|(a, b)| a.to_bits() == b.to_bits()), "{label}: reset");

    // Token by token, and in two chunks, at the same positions.
    s.reset();
    let mut steps = Vec::new();
    for t in &toks {
        let l = s.forward(std::slice::from_ref(t)).expect("decode");
        assert_eq!((l.rows, l.cols), (1, model.config.vocab_size));
        steps.extend(l.data);
    }
    let steps = Matrix::new(toks.len(), model.config.vocab_size, steps).expect("matrix");
    check_within(&format!("{label} decode vs prefill"), &steps, &got, &b, 2.0);
    s.reset();
    let mut chunks = s.forward(&toks[..5]).expect("chunk 1").data;
    chunks.extend(s.forward(&toks[5..]).expect("chunk 2").data);
    let chunks = Matrix::new(toks.len(), model.config.vocab_size, chunks).expect("matrix");
    check_within(&format!("{label} chunked vs prefill"), &chunks, &got, &b, 2.0);
    let identical = steps.data.iter().zip(&got.data).all(|(a, b)| a.to_bits() == b.to_bits());
    eprintln!("{label}: decode {} prefill", if identical { "bit-identical to" } else { "within 2× the bound of" });
}

fn scheme(s: &str) -> Scheme {
    s.parse().expect("catalogue scheme")
}

fn synthetic() -> Model {
    models::synthetic::model(models::synthetic::SEED)
}

fn qwen(arch: Arch, seed: u64) -> Model {
    let mut c = models::synthetic::config();
    c.arch = arch;
    c.rope_style = RopeStyle::Half;
    c.tied_embeddings = false;
    c.rope_theta = 1_000_000.0;
    models::synthetic::model_with(c, seed)
}

#[test]
fn llama_fp32_matches_ref() {
    compare(&synthetic(), QuantPlan::default(), "llama fp32");
}

#[test]
fn llama_weight_only_matches_ref() {
    let m = synthetic();
    for s in ["w4g32-sym-ao", "q4_0", "w4g64-mlx-gpu"] {
        compare(&m, QuantPlan::linear(scheme(s)), &format!("llama {s}"));
    }
}

#[test]
fn llama_8da4w_vk_matches_ref() {
    compare(&synthetic(), QuantPlan::linear(scheme("8da4w-vk")), "llama 8da4w-vk");
}

#[test]
fn quantized_head_and_embedding_match_ref() {
    let plan = QuantPlan { linear: Some(scheme("q4_0")), head: Some(scheme("q8_0")), embed: Some(scheme("q4_0")) };
    compare(&synthetic(), plan, "llama q4_0 +head:q8_0 +embed:q4_0");
}

#[test]
fn qwen2_matches_ref() {
    let m = qwen(Arch::Qwen2, 2);
    compare(&m, QuantPlan::default(), "qwen2 fp32");
    compare(&m, QuantPlan::linear(scheme("w4g32-sym-ao")), "qwen2 w4g32-sym-ao");
}

#[test]
fn qwen3_matches_ref() {
    let m = qwen(Arch::Qwen3, 3);
    compare(&m, QuantPlan::default(), "qwen3 fp32");
    compare(&m, QuantPlan::linear(scheme("8da4w-vk")), "qwen3 8da4w-vk");
}

#[test]
fn refusals_are_errors() {
    let Some(dev) = device() else { return };
    let mut dev = lock(dev);
    // A scheme the op path's linear refuses is refused with the op path's reason.
    let f64_scheme = scheme("w4g32-sym-ao").with_dtype(kernels_ref::dtype::DType::F64);
    let q = QModel::quantize(&synthetic(), &QuantPlan::linear(f64_scheme)).expect("quantize");
    match dev.load_model(&q) {
        Err(DeviceError::Unsupported { reason, .. }) => assert!(reason.contains("f64"), "{reason}"),
        Err(e) => panic!("expected Unsupported, got {e}"),
        Ok(_) => panic!("expected Unsupported, got a session"),
    }
    // Bad tokens are input errors, and leave the session usable.
    let q = QModel::quantize(&synthetic(), &QuantPlan::default()).expect("quantize");
    let mut s = dev.load_model(&q).expect("load");
    assert!(matches!(s.forward(&[9999]), Err(DeviceError::Model(_))));
    assert!(s.is_empty());
    assert_eq!(s.forward(&[]).expect("empty forward").rows, 0);
    assert_eq!(s.forward(&[1, 2]).expect("forward").rows, 2);
}

// ---------------------------------------------------------------------------------------------
// Throughput (run by hand: `cargo test -p qdiff-devices --test gpu_model -- --ignored --nocapture`).

/// SmolLM2-135M's shapes.
fn smollm2_config() -> LlamaConfig {
    LlamaConfig {
        arch: Arch::Llama,
        vocab_size: 49152,
        hidden_size: 576,
        n_layers: 30,
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
        intermediate_size: 1536,
        rms_eps: 1e-5,
        rope_theta: 100_000.0,
        rope_scaling: None,
        rope_style: RopeStyle::Interleaved,
        tied_embeddings: true,
        max_positions: 8192,
        bos_token: None,
        eos_token: None,
    }
}

#[test]
#[ignore = "minutes on lavapipe; prints tokens/s"]
fn smollm2_throughput() {
    let Some(dev) = device() else { return };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let model = match models::load::load(&path) {
        Ok(m) => {
            eprintln!("model: {}", path.display());
            m
        }
        Err(e) => {
            eprintln!("{}: {e}; timing a SmolLM2-shaped synthetic model", path.display());
            models::synthetic::model_with(smollm2_config(), 1)
        }
    };
    let plans: Vec<(String, QuantPlan)> = std::env::var("QDIFF_PLANS")
        .unwrap_or_else(|_| "fp32,q4_1".into())
        .split(',')
        .map(|p| (p.to_string(), if p == "fp32" { QuantPlan::default() } else { QuantPlan::linear(scheme(p)) }))
        .collect();
    let mut dev = lock(dev);
    eprintln!("device: {} ({})", dev.info().name, dev.info().driver);
    for (label, plan) in plans {
        let q = QModel::quantize(&model, &plan).expect("quantize");
        let t0 = std::time::Instant::now();
        let mut s = dev.load_gpu_model(&q).expect("load");
        eprintln!(
            "{label}: load {:.1} s, weights {:.1} MiB",
            t0.elapsed().as_secs_f64(),
            s.weight_bytes() as f64 / 1048576.0
        );
        // Warm-up: drivers compile pipelines at first use.
        s.forward(&tokens(q.config.vocab_size, 8)).expect("warm-up");
        s.forward(&[1]).expect("warm-up");
        for n in [128usize, 512] {
            s.reset();
            let toks = tokens(q.config.vocab_size, n);
            let t = std::time::Instant::now();
            s.forward(&toks).expect("prefill");
            let dt = t.elapsed().as_secs_f64();
            eprintln!("{label}: prefill {n}: {dt:.2} s, {:.1} tokens/s", n as f64 / dt);
        }
        // Decode after a short context and after a 512-token one (attention over the cache).
        let steps = 8;
        for ctx in [8usize, 512] {
            s.reset();
            s.forward(&tokens(q.config.vocab_size, ctx)).expect("context");
            let t = std::time::Instant::now();
            for i in 0..steps {
                s.forward(&[(i * 7 + 3) as u32]).expect("decode");
            }
            let dt = t.elapsed().as_secs_f64() / steps as f64;
            eprintln!("{label}: decode after {ctx} tokens: {dt:.3} s/token, {:.2} tokens/s", 1.0 / dt);
        }
        eprintln!("{label}: device memory {:.1} MiB", s.device_bytes() as f64 / 1048576.0);
    }
}

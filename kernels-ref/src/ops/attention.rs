//! `attention`: scaled dot-product attention with grouped-query heads, causal masking and a
//! query offset for KV-cache decoding.
//!
//! For each (query row, head) everything stays in f64 until the output is rounded once:
//! - the score of key `j` is `Σ_d f64(q_d) · f64(k_jd)` (each product exact, `d` ascending),
//!   times `f64(scale)`;
//! - the probabilities are the f64 softmax of the visible scores (maximum, `libm::exp`, sum with
//!   `j` ascending, divide), shared with [`softmax`](super::softmax());
//! - the output is `Σ_j p_j · f64(v_jd)` with `j` ascending, each product rounded to f64 and
//!   then added (multiply-then-add, never fused, so every target gives the same bits).
//!
//! (query row, head) pairs are independent and spread over rayon threads; SIMD runs across
//! keys (scores, read from a transposed copy of K) or across `d` (output), never across a sum's
//! own index. On x86_64 the per-pair body also has an AVX2 instance: wider vectors, the same
//! unfused operations, the same bits.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use super::round_f32;
use super::softmax::softmax_row;
use crate::error::{RefError, Result};

/// Attention of `q` (`[T, Hq * D]`) over `k`, `v` (`[S, Hkv * D]`): query head `h` attends with
/// key/value head `h / (Hq / Hkv)` (grouped-query attention; `Hq == Hkv` is multi-head,
/// `Hkv == 1` multi-query). Returns `[T, Hq * D]`, heads laid out like `q`'s.
///
/// Query row `t` is at absolute position `q_offset + t`; key row `j` at position `j`. With
/// `causal`, row `t` sees keys `0 ..= q_offset + t` only (so `q_offset = S - T` is decoding with
/// a KV cache of `S - T` earlier positions); without it, all `S` keys.
///
/// Scores are `scale · q·k` (pass `1 / sqrt(D)` for the usual scaling), the softmax and the
/// weighted sum of `v` are f64, and each output is rounded once to f32.
///
/// # Errors
/// [`RefError::Shape`] when a head count is zero, `Hq` is not a multiple of `Hkv`, the widths
/// are not `Hq * D` / `Hkv * D`, `k` and `v` have different lengths, there is no key, or (with
/// `causal`) the last query's own position `q_offset + T - 1` is not among the keys.
#[allow(clippy::too_many_arguments)] // the signature mirrors the op's parameters one to one
pub fn attention(
    q: ArrayView2<'_, f32>,
    k: ArrayView2<'_, f32>,
    v: ArrayView2<'_, f32>,
    n_heads: usize,
    n_kv_heads: usize,
    causal: bool,
    q_offset: usize,
    scale: f32,
) -> Result<Array2<f32>> {
    let (t_len, q_width) = q.dim();
    let (s_len, k_width) = k.dim();
    let (v_len, v_width) = v.dim();
    let shapes = format!(
        "q [{t_len}, {q_width}], k [{s_len}, {k_width}], v [{v_len}, {v_width}], \
         n_heads {n_heads}, n_kv_heads {n_kv_heads}"
    );
    let err = |why: String| Err(RefError::shape("attention", format!("{why} ({shapes})")));
    if n_heads == 0 || n_kv_heads == 0 {
        return err("head counts must be > 0".into());
    }
    if n_heads % n_kv_heads != 0 {
        return err(format!("n_heads = {n_heads} is not a multiple of n_kv_heads = {n_kv_heads}"));
    }
    if q_width % n_heads != 0 {
        return err(format!("q's width {q_width} is not a multiple of n_heads = {n_heads}"));
    }
    let d = q_width / n_heads;
    if k_width != n_kv_heads * d || v_width != n_kv_heads * d {
        return err(format!("k and v must be {n_kv_heads} * D = {} wide (D = {d})", n_kv_heads * d));
    }
    if s_len != v_len {
        return err(format!("k has {s_len} rows but v has {v_len}"));
    }
    if t_len > 0 && s_len == 0 {
        return err("there are no keys to attend to".into());
    }
    if causal && t_len > 0 && q_offset.saturating_add(t_len) > s_len {
        return err(format!(
            "causal: the last query is at position q_offset + T - 1 = {} but keys stop at {}",
            q_offset.saturating_add(t_len - 1),
            s_len as isize - 1
        ));
    }

    let group = n_heads / n_kv_heads;
    let scale = f64::from(scale);
    let (q, k, v) = (q.as_standard_layout(), k.as_standard_layout(), v.as_standard_layout());
    let q = q.as_slice().expect("standard layout is contiguous");
    let k = k.as_slice().expect("standard layout is contiguous");
    let v = v.as_slice().expect("standard layout is contiguous");
    let kv_width = n_kv_heads * d;
    // K transposed per kv head (`kt[(g * D + i) * S + j] = k[j, g * D + i]`), so that the scores
    // of all keys are computed together, vectorised across keys, each still summed over `i`
    // ascending.
    let mut kt = vec![0f32; n_kv_heads * d * s_len];
    for (j, row) in k.chunks_exact(kv_width.max(1)).enumerate().take(s_len) {
        for (c, &x) in row.iter().enumerate() {
            kt[c * s_len + j] = x;
        }
    }

    let ctx = Ctx { q, kt: &kt, v, d, s_len, q_width, kv_width, n_heads, group, causal, q_offset, scale };
    let mut out = vec![0f32; t_len * q_width];
    if d > 0 {
        // One chunk of `d` outputs per (query row t, head h), in row-major order.
        out.par_chunks_mut(d).enumerate().for_each(|(unit, y)| unit_dispatch(&ctx, unit, y));
    }
    Ok(Array2::from_shape_vec((t_len, q_width), out).expect("T * Hq * D values"))
}

/// Everything one (query row, head) unit reads.
#[derive(Debug)]
struct Ctx<'a> {
    q: &'a [f32],
    /// K transposed per kv head: `kt[(g * D + i) * S + j] = k[j, g * D + i]`.
    kt: &'a [f32],
    v: &'a [f32],
    d: usize,
    s_len: usize,
    q_width: usize,
    kv_width: usize,
    n_heads: usize,
    group: usize,
    causal: bool,
    q_offset: usize,
    scale: f64,
}

/// Runs [`unit`] through its AVX2 instance where the CPU has AVX2 (wider vectors for the same
/// operations: no fusing, so the same bits), through the baseline one elsewhere.
fn unit_dispatch(ctx: &Ctx<'_>, unit_index: usize, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: `unit_avx2` only requires the avx2 target feature, which the CPU has
            // just been checked to support.
            return unsafe { unit_avx2(ctx, unit_index, y) };
        }
    }
    unit(ctx, unit_index, y)
}

/// [`unit`] compiled with AVX2 enabled (Rust never contracts `a * b + c` into an FMA, so the
/// arithmetic is the same as the baseline instance's).
///
/// # Safety
/// The CPU must support the `avx2` feature.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn unit_avx2(ctx: &Ctx<'_>, unit_index: usize, y: &mut [f32]) {
    unit(ctx, unit_index, y)
}

/// The outputs `y` (`D` values) of query row `t`, head `h`, where `unit_index = t * Hq + h`.
#[inline(always)]
fn unit(ctx: &Ctx<'_>, unit_index: usize, y: &mut [f32]) {
    let d = ctx.d;
    let (t, h) = (unit_index / ctx.n_heads, unit_index % ctx.n_heads);
    let g = h / ctx.group;
    let visible = if ctx.causal { ctx.q_offset + t + 1 } else { ctx.s_len };
    let qh = &ctx.q[t * ctx.q_width + h * d..][..d];

    // scores[j] = Σ_i f64(q_i) · f64(k_ji), i ascending (each product exact), then times the
    // scale. Vectorised across keys j.
    let mut scores = vec![0f64; visible];
    for (i, &qi) in qh.iter().enumerate() {
        let qi = f64::from(qi);
        let keys_i = &ctx.kt[(g * d + i) * ctx.s_len..][..visible];
        for (s, &kv) in scores.iter_mut().zip(keys_i) {
            *s += qi * f64::from(kv);
        }
    }
    for s in scores.iter_mut() {
        *s *= ctx.scale;
    }

    let mut p = vec![0f64; visible];
    softmax_row(scores.iter().copied(), &mut p);

    // out_i = Σ_j p_j · f64(v_ji), j ascending, product rounded then added. Vectorised across i.
    let mut acc = vec![0f64; d];
    for (j, &pj) in p.iter().enumerate() {
        let vj = &ctx.v[j * ctx.kv_width + g * d..][..d];
        for (a, &x) in acc.iter_mut().zip(vj) {
            *a += pj * f64::from(x);
        }
    }
    for (y, &a) in y.iter_mut().zip(&acc) {
        *y = round_f32(a);
    }
}

//! `attention`: scaled dot-product attention with grouped-query heads, causal masking and a
//! query offset for KV-cache decoding.
//!
//! For each (query row, head) everything stays in f64 until the output is rounded once:
//! - the score of key `j` is `Σ_d f64(q_d) · f64(k_jd)` (each product exact, `d` ascending),
//!   times `f64(scale)`;
//! - the probabilities are the f64 softmax of the visible scores (maximum, `libm::exp`, sum with
//!   `j` ascending, divide), shared with [`softmax`](super::softmax);
//! - the output is `Σ_j p_j · f64(v_jd)` with `j` ascending, each product rounded to f64 and
//!   then added (multiply-then-add, never fused, so every target gives the same bits).
//!
//! (query row, head) pairs are independent and spread over rayon threads; SIMD runs across
//! keys (scores) or across `d` (output), never across a sum's own index.

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
    if causal && t_len > 0 && q_offset + t_len > s_len {
        return err(format!(
            "causal: the last query is at position q_offset + T - 1 = {} but keys stop at {}",
            q_offset + t_len - 1,
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

    let mut out = vec![0f32; t_len * q_width];
    if d > 0 {
        // One chunk of `d` outputs per (query row t, head h), in row-major order.
        out.par_chunks_mut(d).enumerate().for_each(|(unit, y)| {
            let (t, h) = (unit / n_heads, unit % n_heads);
            let g = h / group;
            let visible = if causal { q_offset + t + 1 } else { s_len };
            let qh: Vec<f64> = q[t * q_width + h * d..][..d].iter().map(|&x| f64::from(x)).collect();
            let key = |j: usize| &k[j * kv_width + g * d..][..d];

            let mut scores = vec![0f64; visible];
            let mut blocks = scores.chunks_exact_mut(4);
            let mut j = 0;
            for s in &mut blocks {
                let [s0, s1, s2, s3] = dot4(&qh, [key(j), key(j + 1), key(j + 2), key(j + 3)]);
                s.copy_from_slice(&[s0 * scale, s1 * scale, s2 * scale, s3 * scale]);
                j += 4;
            }
            for s in blocks.into_remainder() {
                *s = dot(&qh, key(j)) * scale;
                j += 1;
            }

            let mut p = vec![0f64; visible];
            softmax_row(scores.iter().copied(), &mut p);

            let mut acc = vec![0f64; d];
            for (j, &pj) in p.iter().enumerate() {
                let vj = &v[j * kv_width + g * d..][..d];
                for (a, &x) in acc.iter_mut().zip(vj) {
                    *a += pj * f64::from(x);
                }
            }
            for (y, &a) in y.iter_mut().zip(&acc) {
                *y = round_f32(a);
            }
        });
    }
    Ok(Array2::from_shape_vec((t_len, q_width), out).expect("T * Hq * D values"))
}

/// `Σ_d q_d · f64(k_d)`, `d` ascending.
#[inline]
fn dot(q: &[f64], k: &[f32]) -> f64 {
    let mut acc = 0.0f64;
    for (&a, &b) in q.iter().zip(k) {
        acc += a * f64::from(b);
    }
    acc
}

/// Four independent [`dot`]s at once (four accumulators, each `d` ascending), for
/// instruction-level parallelism; bit-identical to four calls of `dot`.
#[inline]
fn dot4(q: &[f64], k: [&[f32]; 4]) -> [f64; 4] {
    let mut acc = [0.0f64; 4];
    for (i, &a) in q.iter().enumerate() {
        for (c, kr) in acc.iter_mut().zip(&k) {
            *c += a * f64::from(kr[i]);
        }
    }
    acc
}

//! ggml's block formats (schemes.md §4): `q4_0`, `q4_1`, `q8_0`, `q4_K` as the `*_ref` quantizers of
//! `ggml-quants.c` (and gguf-py) write them, and the activation Q8_0 variants of the CPU backend.
//!
//! All arithmetic is fp32, operation by operation in the source order (Rust never contracts
//! `a*b + c`). Scales are stored as fp16 but the codes are computed with the fp32 `d`. The
//! `-fused` variants of Q4_0/Q4_1 model a build that contracts `x*id + 8.5f` (resp.
//! `(x - min)*id + 0.5f`) into one fma; for Q4_K the contraction pattern of a whole
//! least-squares loop depends on the compiler and is not offered.
//!
//! Note on schemes.md §4.4: `make_qkx2_quants` clamps `min` to `≤ 0` *before* the `max == min`
//! early exit (read from ggml-quants.c); the doc lists them the other way round. A constant
//! positive sub-block therefore takes the full search, not the early exit.

use super::{Family, Q8Flavor, Quantized, Scheme};
use crate::dtype::DType;
use crate::error::Result;
use crate::round::{nearest_int, rhaz, rne};
use crate::tensor::Matrix;

/// Elements per Q4_0/Q4_1/Q8_0 block.
pub const QK: usize = 32;
/// Elements per Q4_K super-block.
pub const QK_K: usize = 256;

fn fp16(x: f32) -> f32 {
    DType::F16.round_f32(x as f64)
}

/// Raw Q4_K storage of one tensor: fp16 `d`/`dmin` per super-block (as f32) and the 6-bit
/// `sc`/`m` per 32-element sub-block. `d`/`dmin` overflow fp16 to ±inf for value ranges above
/// about 6e7; JSON has no infinity, so those are written as the strings `"Infinity"` /
/// `"-Infinity"` (and `"NaN"`) and read back exactly.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Q4KRaw {
    /// Super-block scale `d` (fp16 value as f32), one per 256 elements.
    #[serde(with = "nonfinite_f32")]
    pub d: Vec<f32>,
    /// Super-block min scale `dmin` (fp16 value as f32).
    #[serde(with = "nonfinite_f32")]
    pub dmin: Vec<f32>,
    /// 6-bit sub-block scales, one per 32 elements.
    pub sc: Vec<u8>,
    /// 6-bit sub-block mins, one per 32 elements.
    pub m: Vec<u8>,
}

/// Serde for `Vec<f32>` that keeps ±inf and NaN (as strings), which plain JSON numbers cannot.
mod nonfinite_f32 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum F {
        Num(f32),
        Text(String),
    }

    pub fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
        let items: Vec<F> = v
            .iter()
            .map(|&x| match x {
                x if x.is_finite() => F::Num(x),
                x if x.is_nan() => F::Text("NaN".into()),
                x if x > 0.0 => F::Text("Infinity".into()),
                _ => F::Text("-Infinity".into()),
            })
            .collect();
        items.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        Vec::<F>::deserialize(d)?
            .into_iter()
            .map(|f| match f {
                F::Num(x) => Ok(x),
                F::Text(t) => match t.as_str() {
                    "Infinity" => Ok(f32::INFINITY),
                    "-Infinity" => Ok(f32::NEG_INFINITY),
                    "NaN" => Ok(f32::NAN),
                    other => Err(serde::de::Error::custom(format!("`{other}` is not an f32"))),
                },
            })
            .collect()
    }
}

/// Quantize with a ggml block format.
pub fn quantize(s: &Scheme, x: &Matrix) -> Result<Quantized> {
    // ggml quantizes from f32; an `@f16` scheme means the weights were f16 before.
    let data: Vec<f32> = x.data.iter().map(|&v| s.dtype.round_f32(v as f64)).collect();
    let n = data.len();
    let mut q = vec![0i32; n];
    let nblocks = n / QK;
    let mut scales = vec![0f32; nblocks];
    let mut qscales = vec![0f64; nblocks];
    let mut zps: Option<Vec<f32>> = None;
    let mut extra = None;
    match s.family {
        Family::Q4_0 { fused, gguf_py } => {
            for (b, blk) in data.chunks_exact(QK).enumerate() {
                let (d, codes) = q4_0_block(blk, fused, gguf_py);
                scales[b] = fp16(d);
                qscales[b] = d as f64;
                q[b * QK..(b + 1) * QK].copy_from_slice(&codes);
            }
        }
        Family::Q4_1 { fused } => {
            let mut mins = vec![0f32; nblocks];
            for (b, blk) in data.chunks_exact(QK).enumerate() {
                let (d, min, codes) = q4_1_block(blk, fused);
                scales[b] = fp16(d);
                qscales[b] = d as f64;
                mins[b] = fp16(min);
                q[b * QK..(b + 1) * QK].copy_from_slice(&codes);
            }
            zps = Some(mins);
        }
        Family::Q8_0 => {
            for (b, blk) in data.chunks_exact(QK).enumerate() {
                let (d, codes) = q8_0_block(blk, Q8Flavor::Ref);
                scales[b] = fp16(d);
                qscales[b] = d as f64;
                q[b * QK..(b + 1) * QK].copy_from_slice(&codes);
            }
        }
        Family::ActQ8_0 { flavor } => {
            for (b, blk) in data.chunks_exact(QK).enumerate() {
                let (d, codes) = q8_0_block(blk, flavor);
                scales[b] = fp16(d);
                qscales[b] = d as f64;
                q[b * QK..(b + 1) * QK].copy_from_slice(&codes);
            }
        }
        Family::Q4K { .. } => {
            let nsb = n / QK_K;
            let mut raw = Q4KRaw { d: vec![0.0; nsb], dmin: vec![0.0; nsb], sc: vec![0; nsb * 8], m: vec![0; nsb * 8] };
            let mut mins = vec![0f32; nblocks];
            for (b, blk) in data.chunks_exact(QK_K).enumerate() {
                let (d, dmin, sc, m, codes) = q4_k_superblock(blk);
                raw.d[b] = d;
                raw.dmin[b] = dmin;
                raw.sc[b * 8..(b + 1) * 8].copy_from_slice(&sc);
                raw.m[b * 8..(b + 1) * 8].copy_from_slice(&m);
                for j in 0..8 {
                    // Exact in f32: an 11-bit fp16 significand times a 6-bit integer.
                    scales[b * 8 + j] = d * sc[j] as f32;
                    mins[b * 8 + j] = dmin * m[j] as f32;
                }
                q[b * QK_K..(b + 1) * QK_K].copy_from_slice(&codes);
            }
            zps = Some(mins);
            extra = Some(serde_json::to_value(&raw).expect("Q4KRaw serializes"));
            qscales.clear();
        }
        _ => unreachable!("ggml::quantize on {s}"),
    }
    let per_row = x.cols / if matches!(s.family, Family::Q4K { .. }) { QK_K / 8 } else { QK };
    let shape = [x.rows, per_row];
    let differs = !qscales.is_empty() && qscales.iter().zip(&scales).any(|(a, b)| *a != *b as f64);
    Ok(Quantized {
        scheme: *s,
        shape: x.shape(),
        q,
        scales,
        scale_shape: shape,
        zero_point_shape: zps.as_ref().map(|_| shape),
        zero_points: zps,
        lut: None,
        lut_shape: None,
        quantize_scales: differs.then_some(qscales),
        extra,
    })
}

/// `quantize_row_q4_0_ref` for one block: `(fp32 d, codes q = u − 8)`. With `gguf_py`, the signed
/// max is gguf-py's `x[argmax |x|]`, which is `x[0]` (possibly −0.0) for an all-zero block where C
/// keeps its initial +0.0.
pub fn q4_0_block(x: &[f32], fused: bool, gguf_py: bool) -> (f32, [i32; QK]) {
    let (mut amax, mut max) = if gguf_py { (x[0].abs(), x[0]) } else { (0f32, 0f32) };
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0i32; QK];
    for (j, &v) in x.iter().enumerate() {
        let t = if fused { v.mul_add(id, 8.5) } else { v * id + 8.5 };
        // (int8_t) truncates toward zero; t is in [0, 16.5] so no overflow.
        let u = (t.trunc() as i32).min(15);
        q[j] = u - 8;
    }
    (d, q)
}

/// `quantize_row_q4_1_ref` for one block: `(fp32 d, fp32 min, codes u ∈ 0..=15)`.
pub fn q4_1_block(x: &[f32], fused: bool) -> (f32, f32, [i32; QK]) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0i32; QK];
    for (j, &v) in x.iter().enumerate() {
        let t = if fused { (v - min).mul_add(id, 0.5) } else { (v - min) * id + 0.5 };
        q[j] = (t.trunc() as i32).min(15);
    }
    (d, min, q)
}

/// Q8_0 for one block with the given quantizer flavour: `(fp32 d, codes in [-127, 127])`.
pub fn q8_0_block(x: &[f32], flavor: Q8Flavor) -> (f32, [i32; QK]) {
    let amax = x.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = match flavor {
        Q8Flavor::Avx => {
            if amax != 0.0 {
                127.0 / amax
            } else {
                0.0
            }
        }
        Q8Flavor::Ref | Q8Flavor::Neon => {
            if d != 0.0 {
                1.0 / d
            } else {
                0.0
            }
        }
    };
    let mut q = [0i32; QK];
    for (j, &v) in x.iter().enumerate() {
        let p = (v * id) as f64;
        q[j] = match flavor {
            Q8Flavor::Ref => rhaz(p),
            Q8Flavor::Avx | Q8Flavor::Neon => rne(p),
        } as i32;
    }
    (d, q)
}

/// `make_qkx2_quants` (n = 32, unfused): returns `(scale, the_min = −min ≥ 0, codes)`.
pub fn make_qkx2_quants(
    x: &[f32],
    weights: &[f32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32, Vec<u8>) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        return (0.0, -min, vec![0; n]);
    }
    let clampl = |l: i32| l.clamp(0, nmax) as u8;
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best = 0f32;
    let mut l_best = vec![0u8; n];
    for i in 0..n {
        let l = clampl(nearest_int(iscale * (x[i] - min)));
        l_best[i] = l;
        let diff = scale * l as f32 + min - x[i];
        best += weights[i] * (diff * diff);
    }
    if nstep < 1 {
        return (scale, -min, l_best);
    }
    let mut laux = vec![0u8; n];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = clampl(nearest_int(iscale * (x[i] - min)));
            laux[i] = l;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let dd = sum_w * sum_l2 - sum_l * sum_l;
        if dd > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / dd;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / dd;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut err = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                err += weights[i] * (diff * diff);
            }
            if err < best {
                l_best.copy_from_slice(&laux);
                best = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min, l_best)
}

/// `quantize_row_q4_K_ref` for one super-block: `(fp16 d, fp16 dmin, sc[8], m[8], codes[256])`.
pub fn q4_k_superblock(x: &[f32]) -> (f32, f32, [u8; 8], [u8; 8], Vec<i32>) {
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut l_all = vec![0u8; QK_K];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    let mut weights = [0f32; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * (j + 1)];
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (sc, mn, l) = make_qkx2_quants(xs, &weights, 15, -1.0, 0.1, 20);
        scales[j] = sc;
        mins[j] = mn;
        l_all[32 * j..32 * (j + 1)].copy_from_slice(&l);
        if sc > max_scale {
            max_scale = sc;
        }
        if mn > max_min {
            max_min = mn;
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        // C stores nearest_int's int into a uint8_t (modular), then MIN(63, ·).
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let d = fp16(max_scale / 63.0);
    let dmin = fp16(max_min / 63.0);
    for j in 0..8 {
        let dd = d * ls[j] as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = dmin * lm[j] as f32;
        for ii in 0..32 {
            let l = nearest_int((x[32 * j + ii] + dm) / dd);
            l_all[32 * j + ii] = l.clamp(0, 15) as u8;
        }
    }
    (d, dmin, ls, lm, l_all.into_iter().map(i32::from).collect())
}

/// Dequantize a ggml format from stored values.
pub fn dequantize(s: &Scheme, q: &Quantized) -> Vec<f32> {
    let n = q.q.len();
    let mut out = vec![0f32; n];
    match s.family {
        Family::Q4_0 { .. } | Family::Q8_0 | Family::ActQ8_0 { .. } => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = q.q[i] as f32 * q.scales[i / QK];
            }
        }
        Family::Q4_1 { .. } => {
            let m = q.zero_points.as_deref().unwrap_or(&[]);
            for (i, o) in out.iter_mut().enumerate() {
                // u*d is exact in f32 (4-bit × fp16), so fused or not this is one rounding.
                *o = q.q[i] as f32 * q.scales[i / QK] + m.get(i / QK).copied().unwrap_or(0.0);
            }
        }
        Family::Q4K { .. } => {
            let m = q.zero_points.as_deref().unwrap_or(&[]);
            for (i, o) in out.iter_mut().enumerate() {
                *o = q.scales[i / 32] * q.q[i] as f32 - m.get(i / 32).copied().unwrap_or(0.0);
            }
        }
        _ => unreachable!("ggml::dequantize on {s}"),
    }
    out
}

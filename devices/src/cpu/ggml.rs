//! ggml's export-time block quantizers as `ggml-quants.c` (`quantize_row_*_ref`) and gguf-py
//! write them: `q4_0` (incl. the fma-contracted `-fused` build and gguf-py's `-py`), `q4_1`
//! (`-fused`), `q8_0` and `q4_K` (`make_qkx2_quants`). All arithmetic is fp32 in the C source's
//! order of operations (Rust never contracts `a*b + c`; `mul_add` is written where a build
//! fuses). Scales are stored as fp16, but the codes are computed with the fp32 `d`.

use super::num::fp16;
use super::par::for_chunks;
use kernels_ref::round::nearest_int;
use kernels_ref::scheme::ggml::Q4KRaw;
use kernels_ref::scheme::{Family, Quantized, Scheme};
use kernels_ref::tensor::Matrix;

/// Elements per Q4_0/Q4_1/Q8_0 block.
const QK: usize = 32;
/// Elements per Q4_K super-block.
const QK_K: usize = 256;

/// What one block stores besides its codes.
#[derive(Debug, Clone, Copy, Default)]
struct BlockMeta {
    d: f32,
    m: f32,
}

/// Quantize `x` (cols a multiple of the block, checked by the caller) with a ggml weight format.
/// The input is first cast to the compute dtype (an `@f16` scheme means f16 weights were given to
/// the converter).
pub(crate) fn quantize(scheme: &Scheme, x: &Matrix) -> Quantized {
    let t = super::num::Arith(scheme.dtype);
    let data: Vec<f32> = x.data.iter().map(|&v| t.round(v)).collect();
    let n = data.len();
    let mut q = vec![0i32; n];
    let shape = [x.rows, x.cols / QK];
    let mut out = Quantized {
        scheme: *scheme,
        shape: x.shape(),
        q: Vec::new(),
        scales: Vec::new(),
        scale_shape: shape,
        zero_points: None,
        zero_point_shape: None,
        lut: None,
        lut_shape: None,
        quantize_scales: None,
        extra: None,
    };
    if let Family::Q4K { .. } = scheme.family {
        let nsb = n / QK_K;
        // A super-block is ~21 least-squares passes over its 256 values: weigh it as such.
        let sub = for_chunks(
            &mut q,
            QK_K,
            QK_K * 24,
            || (),
            |_, b, codes| q4_k_superblock(&data[b * QK_K..(b + 1) * QK_K], codes),
        );
        let mut raw = Q4KRaw { d: vec![0.0; nsb], dmin: vec![0.0; nsb], sc: vec![0; nsb * 8], m: vec![0; nsb * 8] };
        let (mut scales, mut mins) = (vec![0f32; nsb * 8], vec![0f32; nsb * 8]);
        for (b, (d, dmin, sc, m)) in sub.into_iter().enumerate() {
            raw.d[b] = d;
            raw.dmin[b] = dmin;
            raw.sc[b * 8..(b + 1) * 8].copy_from_slice(&sc);
            raw.m[b * 8..(b + 1) * 8].copy_from_slice(&m);
            for j in 0..8 {
                // Exact in fp32: an fp16 significand times a 6-bit integer.
                scales[b * 8 + j] = d * sc[j] as f32;
                mins[b * 8 + j] = dmin * m[j] as f32;
            }
        }
        out.q = q;
        out.scales = scales;
        out.zero_points = Some(mins);
        out.zero_point_shape = Some(shape);
        // Q4KRaw is plain data (f32 vectors and bytes): it always serializes.
        out.extra = serde_json::to_value(&raw).ok();
        return out;
    }
    let meta = for_chunks(
        &mut q,
        QK,
        QK,
        || (),
        |_, b, codes| {
            let blk = &data[b * QK..(b + 1) * QK];
            match scheme.family {
                Family::Q4_0 { fused, gguf_py } => q4_0_block(blk, fused, gguf_py, codes),
                Family::Q4_1 { fused } => q4_1_block(blk, fused, codes),
                _ => q8_0_block(blk, codes),
            }
        },
    );
    out.q = q;
    out.scales = meta.iter().map(|b| fp16(b.d)).collect();
    if let Family::Q4_1 { .. } = scheme.family {
        out.zero_points = Some(meta.iter().map(|b| fp16(b.m)).collect());
        out.zero_point_shape = Some(shape);
    }
    out
}

/// `quantize_row_q4_0_ref`: `d = max / −8` keyed on the signed value of the first max-|x|
/// element, codes `min(15, (int8_t)(x·id + 8.5f)) − 8`. gguf-py starts from `x[0]` (its
/// `argmax |x|`), which differs only for an all-zero block starting with −0.0.
fn q4_0_block(x: &[f32], fused: bool, gguf_py: bool, codes: &mut [i32]) -> BlockMeta {
    let (mut amax, mut max) = if gguf_py { (x[0].abs(), x[0]) } else { (0f32, 0f32) };
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (c, &v) in codes.iter_mut().zip(x) {
        let y = if fused { v.mul_add(id, 8.5) } else { v * id + 8.5 };
        // (int8_t) truncates toward zero; y is in [0.5, 16.5].
        *c = (y.trunc() as i32).min(15) - 8;
    }
    BlockMeta { d, m: 0.0 }
}

/// `quantize_row_q4_1_ref`: true min/max, `d = (max − min)/15`, `u = min(15, (int8_t)((x − min)·id + 0.5f))`.
fn q4_1_block(x: &[f32], fused: bool, codes: &mut [i32]) -> BlockMeta {
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
    for (c, &v) in codes.iter_mut().zip(x) {
        let y = if fused { (v - min).mul_add(id, 0.5) } else { (v - min) * id + 0.5 };
        *c = (y.trunc() as i32).min(15);
    }
    BlockMeta { d, m: min }
}

/// `quantize_row_q8_0_ref`: `d = amax/127`, `q = roundf(x·(1/d))` (ties away from zero).
fn q8_0_block(x: &[f32], codes: &mut [i32]) -> BlockMeta {
    let amax = x.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = (v * id).round() as i32;
    }
    BlockMeta { d, m: 0.0 }
}

/// `make_qkx2_quants` (n = 32): weighted least squares over 21 trial scales. Returns
/// `(scale, −min)` and writes the codes to `l_out`. Every sum is an fp32 accumulation in element
/// order, as in the C.
fn make_qkx2_quants(
    x: &[f32],
    w: &[f32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    l_out: &mut [u8],
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    // ggml clamps min before the early exit (the doc lists them the other way round).
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.iter_mut().for_each(|l| *l = 0);
        return (0.0, -min);
    }
    let quant = |iscale: f32, v: f32, min: f32| nearest_int(iscale * (v - min)).clamp(0, nmax) as u8;
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = quant(iscale, x[i], min);
        l_out[i] = l;
        let diff = scale * l as f32 + min - x[i];
        best_error += w[i] * (diff * diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; 32];
    let laux = &mut laux[..n.min(32)];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = quant(iscale, x[i], min);
            laux[i] = l;
            let lf = l as f32;
            sum_l += w[i] * lf;
            sum_l2 += w[i] * lf * lf;
            sum_xl += w[i] * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut err = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                err += w[i] * (diff * diff);
            }
            if err < best_error {
                l_out.copy_from_slice(laux);
                best_error = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// `quantize_row_q4_K_ref` for one super-block: `(fp16 d, fp16 dmin, sc[8], m[8])`, codes
/// `0..=15` written to `codes`.
fn q4_k_superblock(x: &[f32], codes: &mut [i32]) -> (f32, f32, [u8; 8], [u8; 8]) {
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut l = [0u8; QK_K];
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
        let (sc, mn) = make_qkx2_quants(xs, &weights, 15, -1.0, 0.1, 20, &mut l[32 * j..32 * (j + 1)]);
        scales[j] = sc;
        mins[j] = mn;
        if sc > max_scale {
            max_scale = sc;
        }
        if mn > max_min {
            max_min = mn;
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        // C stores nearest_int's int into a uint8_t (modular), then MIN(63, ·).
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let d = fp16(max_scale / 63.0);
    let dmin = fp16(max_min / 63.0);
    // Requantize with the stored (fp16 d × 6-bit) scales, by division.
    for j in 0..8 {
        let dd = d * ls[j] as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = dmin * lm[j] as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dd).clamp(0, 15) as u8;
        }
    }
    for (c, &v) in codes.iter_mut().zip(l.iter()) {
        *c = v as i32;
    }
    (d, dmin, ls, lm)
}

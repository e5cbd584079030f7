//! The export-time weight quantizers, run on the CPU the way each framework's converter runs
//! them: torchao `choose_qparams_affine` + `quantize_affine` in the weight dtype (fp16/bf16 op by
//! op), coremltools' `linear_symmetric` / `linear` in the numpy dtype, coreai-opt's clipping
//! mode, fbgemm's `int4_row_quantize` and `int4_row_quantize_zp` in fp32, the 8da4w weight
//! export (XNNPACK's bf16 scale cast), MLX's affine `quantize` (cpu and Metal flavours),
//! coremltools' uniform palettization, and ggml's blocks ([`super::ggml`]). Groups run in
//! parallel; each group is one task, so the bits do not depend on the thread count.
//!
//! Palettization with k-means is not here: the LUT is built offline by the framework's k-means,
//! which is not reproducible across library versions, and a device only looks it up.

use super::bad_case;
use super::ggml;
use super::num::{min_max, rne, smallest_normal, to_code, Arith};
use super::par::for_chunks;
use crate::case::OpCase;
use crate::device::DeviceError;
use kernels_ref::dtype::DType;
use kernels_ref::scheme::{
    AoMapping, ClipFlavor, Family, Granularity, LutGranularity, LutMode, PcsAxis, Quantized, Scheme, W8da4wFlavor,
};
use kernels_ref::tensor::Matrix;

/// One group's stored qparams.
#[derive(Debug, Clone, Copy, Default)]
struct GroupQ {
    /// Stored scale (in its storage dtype, widened).
    scale: f32,
    /// Integer zero-point (as a float) or float offset.
    zero: f32,
}

/// Quantize the float weights `w` with `case.scheme` (a weight scheme the cpu supports).
pub(crate) fn quantize(case: &OpCase, w: &Matrix) -> Result<Quantized, DeviceError> {
    let s = case.scheme;
    if let Some((i, v)) = w.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(bad_case(case, format!("w[{i}] = {v}: quantizers reject NaN and ±Inf")));
    }
    if w.data.len() != w.rows * w.cols {
        return Err(bad_case(case, format!("w is [{}, {}] but holds {} values", w.rows, w.cols, w.data.len())));
    }
    s.granularity().check(&s.to_string(), w.cols).map_err(DeviceError::Ref)?;
    let t = Arith(s.dtype);
    match s.family {
        Family::Torchao { bits, mapping, .. } => {
            let eps = smallest_normal(s.dtype);
            Ok(affine(&s, w, mapping == AoMapping::Asym, |x, c| torchao(t, bits, mapping, eps, x, c)))
        }
        Family::W8da4w { flavor, .. } => {
            let eps = smallest_normal(s.dtype);
            Ok(affine(&s, w, false, |x, c| {
                let mut g = torchao(t, 4, AoMapping::Sym, eps, x, c);
                if flavor == W8da4wFlavor::Xnn {
                    // ExecuTorch's XNNPACK serializer casts the group scales to bf16 after
                    // torchao quantized the codes with the T scale.
                    g.scale = Arith(DType::BF16).round(g.scale);
                }
                g
            }))
        }
        Family::SymClip { bits, flavor: ClipFlavor::Coreml, .. } => {
            Ok(affine(&s, w, false, |x, c| coreml_symmetric(t, bits, x, c)))
        }
        Family::SymClip { bits, flavor: ClipFlavor::Coreai, .. } => {
            Ok(affine(&s, w, false, |x, c| coreai_clipping(t, bits, x, c)))
        }
        Family::CoremlAsym { bits, .. } => Ok(affine(&s, w, true, |x, c| coreml_linear(t, bits, x, c))),
        Family::Sym8 { .. } => Ok(affine(&s, w, false, |x, c| fbgemm_sym8(t, x, c))),
        Family::Fzp { .. } => Ok(affine(&s, w, true, |x, c| fbgemm_float_zero(t, x, c))),
        Family::Mlx { bits, gpu, .. } => Ok(affine(&s, w, true, |x, c| mlx(t, bits, gpu, x, c))),
        Family::Q4_0 { .. } | Family::Q4_1 { .. } | Family::Q8_0 | Family::Q4K { .. } => Ok(ggml::quantize(&s, w)),
        Family::Pal { bits, lut, pcs, mode: LutMode::Uniform } => pal_uniform(case, bits, lut, pcs, w),
        Family::Pal { mode: LutMode::Kmeans, .. } | Family::Act { .. } | Family::ActQ8_0 { .. } => {
            Err(bad_case(case, format!("{s} has no export-time quantizer on the cpu")))
        }
    }
}

/// Run a group quantizer over the scheme's qparam grid (groups along rows, whole rows, or the
/// whole tensor) on the input cast to T.
fn affine(s: &Scheme, w: &Matrix, has_zero: bool, group: impl Fn(&[f32], &mut [i32]) -> GroupQ + Sync) -> Quantized {
    let t = Arith(s.dtype);
    let x: Vec<f32> = w.data.iter().map(|&v| t.round(v)).collect();
    let gran = s.granularity();
    let [qr, qc] = gran.qparam_shape(w.rows, w.cols);
    let n_groups = qr * qc;
    let glen = match gran {
        Granularity::Group(g) => g,
        Granularity::Channel => w.cols,
        Granularity::Tensor => w.rows * w.cols,
    };
    let mut q = vec![0i32; x.len()];
    let groups: Vec<GroupQ> = if glen == 0 {
        // Empty groups still get qparams (from the reductions' starting values).
        (0..n_groups).map(|_| group(&[], &mut [])).collect()
    } else {
        for_chunks(&mut q, glen, glen, || (), |_, i, c| group(&x[i * glen..(i + 1) * glen], c))
    };
    Quantized {
        scheme: *s,
        shape: w.shape(),
        q,
        scales: groups.iter().map(|g| g.scale).collect(),
        scale_shape: [qr, qc],
        zero_points: has_zero.then(|| groups.iter().map(|g| g.zero).collect()),
        zero_point_shape: has_zero.then_some([qr, qc]),
        lut: None,
        lut_shape: None,
        quantize_scales: None,
        extra: None,
    }
}

/// Signed `[qmin, qmax]` of a bit width, as floats.
fn signed_range(bits: u8) -> (f32, f32) {
    (-((1i32 << (bits - 1)) as f32), ((1i32 << (bits - 1)) - 1) as f32)
}

/// torchao `choose_qparams_affine` + `quantize_affine` (ZeroPointDomain.INT) for one group, every
/// operation in T: the scale from the zero-including range, clamped to eps, the asymmetric zp
/// from the min by division, codes by reciprocal-multiply, rounded before the zp is added.
fn torchao(t: Arith, bits: u8, mapping: AoMapping, eps: f32, x: &[f32], codes: &mut [i32]) -> GroupQ {
    let (qmin, qmax) = signed_range(bits);
    let (lo, hi) = min_max(x);
    let (mn, mx) = (lo.min(0.0), hi.max(0.0));
    let s = match mapping {
        AoMapping::Sym => t.div((-mn).max(mx), (qmax - qmin) / 2.0),
        AoMapping::SymNce => {
            let (smin, smax) = (t.div(mn, qmin), t.div(mx, qmax));
            if smin > smax {
                smin
            } else {
                smax
            }
        }
        AoMapping::Asym => t.div(t.sub(mx, mn), qmax - qmin),
    };
    let s = s.max(t.round(eps));
    let zp = match mapping {
        AoMapping::Asym => (qmin - rne(t.div(mn, s))).clamp(qmin, qmax),
        _ => 0.0,
    };
    let inv = t.div(1.0, s);
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = to_code((rne(t.mul(v, inv)) + zp).clamp(qmin, qmax));
    }
    // An integer zero-point has no sign of zero.
    GroupQ { scale: s, zero: zp + 0.0 }
}

/// coremltools `linear_symmetric`: `a = max(|min|, |max|)`, `s = 2a/(qmax − qmin)` on
/// `[−qmax, qmax]`, codes `rne(w ⊘ s)`, all in the numpy dtype, no eps (an all-zero block is
/// `0/0 = NaN`, which `astype(int8)` turns into 0).
fn coreml_symmetric(t: Arith, bits: u8, x: &[f32], codes: &mut [i32]) -> GroupQ {
    let qmax = ((1i32 << (bits - 1)) - 1) as f32;
    let (lo, hi) = min_max(x);
    let a = lo.abs().max(hi.abs());
    let s = t.div(t.sub(a, -a), 2.0 * qmax);
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = to_code((rne(t.div(v, s)) + 0.0).clamp(-qmax, qmax));
    }
    GroupQ { scale: s, zero: 0.0 }
}

/// coreai-opt `symmetric_with_clipping` through torchao's formula: `amax/qmax` on `[−qmax, qmax]`,
/// eps `finfo(f32).eps`, codes by division, in T.
fn coreai_clipping(t: Arith, bits: u8, x: &[f32], codes: &mut [i32]) -> GroupQ {
    let qmax = ((1i32 << (bits - 1)) - 1) as f32;
    let (lo, hi) = min_max(x);
    let (mn, mx) = (lo.min(0.0), hi.max(0.0));
    let s = t.div(mn.abs().max(mx.abs()), qmax).max(t.round(f32::EPSILON));
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = to_code((rne(t.div(v, s)) + 0.0).clamp(-qmax, qmax));
    }
    GroupQ { scale: s, zero: 0.0 }
}

/// coremltools `linear` (asymmetric): zero-including range, `s = (max − min)/(qmax − qmin)`,
/// `zp = clip(rne((qmin·max − qmax·min)/(max − min)))`, codes `rne(w ⊘ s) + zp`, in the numpy dtype.
fn coreml_linear(t: Arith, bits: u8, x: &[f32], codes: &mut [i32]) -> GroupQ {
    let (qmin, qmax) = signed_range(bits);
    let (lo, hi) = min_max(x);
    let (mn, mx) = (lo.min(0.0), hi.max(0.0));
    let s = t.div(t.sub(mx, mn), qmax - qmin);
    let num = t.sub(t.mul(qmin, mx), t.mul(qmax, mn));
    let z = rne(t.div(num, t.sub(mx, mn)));
    // 0/0 for an all-zero block: NaN survives np.clip and becomes 0 in astype(int8).
    let zp = if z.is_nan() { 0.0 } else { z.clamp(qmin, qmax) };
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = to_code((rne(t.div(v, s)) + zp).clamp(qmin, qmax));
    }
    GroupQ { scale: s, zero: zp + 0.0 }
}

/// fbgemm/mslk `int4_row_quantize`: fp32, `s = max(amax, 1e-6)/8`, codes `rne(x/s)` on `[−8, 7]`;
/// the scale is stored in the weight dtype.
fn fbgemm_sym8(t: Arith, x: &[f32], codes: &mut [i32]) -> GroupQ {
    let (lo, hi) = min_max(x);
    let s = lo.abs().max(hi.abs()).max(1e-6) / 8.0;
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = to_code((rne(v / s) + 0.0).clamp(-8.0, 7.0));
    }
    GroupQ { scale: t.round(s), zero: 0.0 }
}

/// fbgemm/mslk `int4_row_quantize_zp` (torchao `Int4Tensor`): fp32 over the true min/max,
/// `s = max(max − min, 1e-6)/15`, `u = rne((x − min)/s)` in `[0, 15]`, `q = u − 8`, zero
/// `min + 8s`; scale and zero stored in the weight dtype.
fn fbgemm_float_zero(t: Arith, x: &[f32], codes: &mut [i32]) -> GroupQ {
    let (lo, hi) = min_max(x);
    let s = (hi - lo).max(1e-6) / 15.0;
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = to_code(rne((v - lo) / s).clamp(0.0, 15.0)) - 8;
    }
    GroupQ { scale: t.round(s), zero: t.round(lo + s * 8.0) }
}

/// MLX affine `quantize` in fp32: a nudged scale (negative when the max side dominates) that
/// makes zero exact, codes `(w − bias)/scale` in `[0, 2^b − 1]`; the Metal kernel starts `w_max`
/// at 0 and rounds ties away with no lower clamp. Scale and bias stored in T.
fn mlx(t: Arith, bits: u8, gpu: bool, x: &[f32], codes: &mut [i32]) -> GroupQ {
    let n_bins = ((1u32 << bits) - 1) as f32;
    let round = |v: f32| if gpu { v.round() } else { rne(v) };
    let (mut w_min, mut w_max) = if gpu { (f32::MAX, 0.0f32) } else { (f32::INFINITY, f32::NEG_INFINITY) };
    for &v in x {
        w_min = w_min.min(v);
        w_max = w_max.max(v);
    }
    let side = w_min.abs() > w_max.abs();
    let mut scale = ((w_max - w_min) / n_bins).max(1e-7);
    if !side {
        scale = -scale;
    }
    let edge = if side { w_min } else { w_max };
    let q0 = round(edge / scale);
    let (scale, bias) = if q0 != 0.0 { (edge / q0, edge) } else { (scale, 0.0) };
    for (c, &v) in codes.iter_mut().zip(x) {
        // CPU clamps to [0, n]; the Metal kernel only clamps above and the uint8 conversion saturates.
        *c = round((v - bias) / scale).min(n_bins).max(0.0) as i32;
    }
    GroupQ { scale: t.round(scale), zero: t.round(bias) }
}

/// coremltools uniform palettization: per LUT group `s = (vmax − vmin)/(2^n − 1)` in the weight
/// dtype, `lut[i] = i·s + vmin` in float64 (NumPy ≥ 2 promotion) cast to the weight dtype,
/// `idx = rne(((w − vmin)/(vmax − vmin))·(2^n − 1))` in the weight dtype; with a per-channel
/// scale the weights are first divided (in place, in the weight dtype) by `max |W|` over the
/// other axis.
fn pal_uniform(
    case: &OpCase,
    bits: u8,
    lg: LutGranularity,
    pcs: Option<PcsAxis>,
    w: &Matrix,
) -> Result<Quantized, DeviceError> {
    let t = Arith(case.scheme.dtype);
    let levels = 1usize << bits;
    let steps = (levels - 1) as f32;
    let (rows, cols) = (w.rows, w.cols);
    let mut x: Vec<f32> = w.data.iter().map(|&v| t.round(v)).collect();
    let (scales, scale_shape) = match pcs {
        None => (Vec::new(), [0, 0]),
        Some(axis) => {
            let along = |r: usize, c: usize| if axis == PcsAxis::Col { c } else { r };
            let mut sc = vec![0f32; if axis == PcsAxis::Col { cols } else { rows }];
            for r in 0..rows {
                for c in 0..cols {
                    let i = along(r, c);
                    sc[i] = sc[i].max(x[r * cols + c].abs());
                }
            }
            sc.iter_mut().filter(|v| **v == 0.0).for_each(|v| *v = 1.0);
            for r in 0..rows {
                for c in 0..cols {
                    x[r * cols + c] = t.div(x[r * cols + c], sc[along(r, c)]);
                }
            }
            let shape = if axis == PcsAxis::Col { [1, cols] } else { [rows, 1] };
            (sc, shape)
        }
    };
    let rows_per_lut = match lg {
        LutGranularity::Tensor => rows,
        LutGranularity::GroupedChannels(c) => {
            if c == 0 || rows % c != 0 {
                return Err(bad_case(case, format!("{rows} rows do not split into LUT groups of {c} channels")));
            }
            c
        }
    };
    let n_luts = rows / rows_per_lut.max(1);
    let span = rows_per_lut * cols;
    let mut q = vec![0i32; x.len()];
    let luts: Vec<f32> = for_chunks(
        &mut q,
        span,
        span,
        || (),
        |_, g, codes| {
            let vals = &x[g * span..(g + 1) * span];
            let (vmin, vmax) = min_max(vals);
            let s = t.div(t.sub(vmax, vmin), steps);
            for (c, &v) in codes.iter_mut().zip(vals) {
                let y = rne(t.mul(t.div(t.sub(v, vmin), t.sub(vmax, vmin)), steps));
                // A constant group is 0/0: NaN indices, and every LUT entry is vmin anyway.
                *c = if y.is_nan() { 0 } else { y.clamp(0.0, steps) as i32 };
            }
            (0..levels).map(|i| t.round64(i as f64 * s as f64 + vmin as f64)).collect::<Vec<f32>>()
        },
    )
    .concat();
    Ok(Quantized {
        scheme: case.scheme,
        shape: w.shape(),
        q,
        scales,
        scale_shape,
        zero_points: None,
        zero_point_shape: None,
        lut: Some(luts),
        lut_shape: Some([n_luts, levels]),
        quantize_scales: None,
        extra: None,
    })
}

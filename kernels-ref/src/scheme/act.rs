//! Dynamic per-token asymmetric int8 activation quantization (schemes.md §1.5, §1.9–§1.11, §5.2–5.3):
//! `a8-pt-asym-{ao,ao-i8w,decomp,etport,xnn,vk}`.
//!
//! All map a row (token) to int8 `[-128, 127]` with a zero-point, and all dequantize an all-zero
//! row to zero, but they store different `(scale, zp)` pairs, choose the zero-point differently
//! ("from min" vs "nudged"), compute in different dtypes (T, f64, f32) and round at different
//! points. `ao` and `ao-i8w` go through the torchao engine of [`super::affine`]; the others are
//! written out here in their sources' order.

use super::{Family, Quantized, Scheme};
use crate::dtype::DType;
use crate::error::Result;
use crate::round::{rglsl, rne, Ties};
use crate::tensor::Matrix;
use serde::{Deserialize, Serialize};

/// Which framework's per-token activation quantizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActFlavor {
    /// torchao `_apply_int8_act_asym_per_token_quant_dequant` (IntxWeight path): ASYMMETRIC in T.
    Ao,
    /// torchao `Int8Tensor.from_hp`: eps 2^-23, fp32 scale.
    AoI8w,
    /// PyTorch `quantized_decomposed` per-token ops: nudged zp in T, quantize in double, round after +zp.
    Decomp,
    /// ExecuTorch portable `choose_qparams_per_token_asymmetric` + `quantize_per_token`.
    EtPort,
    /// XNNPACK qd8: the multiplier `255/(max−min)`.
    Xnn,
    /// ExecuTorch Vulkan `choose_qparams_per_row.glsl` + `quantize_and_pack`, GLSL `round` ties given.
    Vk(Ties),
}

const QMIN: f64 = -128.0;
const QMAX: f64 = 127.0;
/// ExecuTorch's `SMALL_SCALE_THRESHOLD` (a float literal).
const SMALL_SCALE: f32 = 6.1e-5;

/// One row's qparams: the stored scale (as the framework stores it), the scale the codes use,
/// the zero-point, and the per-element codes.
struct RowQ {
    stored_scale: f64,
    zp: f64,
    codes: Vec<i32>,
}

/// ExecuTorch's nudged zero-point with the small-scale amplification, in double (portable) or
/// float (Vulkan). Returns `(scale, initial zp before rounding/clamping)`.
fn et_scale_zp(mn: f32, mx: f32, in_double: bool) -> (f64, f64) {
    let span = (QMAX - QMIN) as f32;
    let mut scale: f64 = if in_double { (mx as f64 - mn as f64) / (QMAX - QMIN) } else { ((mx - mn) / span) as f64 };
    let (mut mn, mut mx) = (mn, mx);
    let sf = scale as f32;
    if sf == 0.0 || (1.0f32 / sf).is_infinite() {
        scale = 0.1;
        if !in_double {
            scale = 0.1f32 as f64;
        }
    }
    if scale < SMALL_SCALE as f64 {
        let org = scale as f32;
        scale = SMALL_SCALE as f64;
        if mn == 0.0 {
            mx = SMALL_SCALE * span;
        } else if mx == 0.0 {
            mn = -SMALL_SCALE * span;
        } else {
            let amp = SMALL_SCALE / org;
            mn *= amp;
            mx *= amp;
        }
    }
    let (zmin, zmax, emin, emax) = if in_double {
        let (a, b) = (mn as f64 / scale, mx as f64 / scale);
        (QMIN - a, QMAX - b, QMIN.abs() - a.abs(), QMAX.abs() - b.abs())
    } else {
        let s = scale as f32;
        let (a, b) = (mn / s, mx / s);
        let q = |v: f32| v as f64;
        (q(QMIN as f32 - a), q(QMAX as f32 - b), q(128.0 - a.abs()), q(127.0 - b.abs()))
    };
    (scale, if emin < emax { zmin } else { zmax })
}

fn quantize_row(flavor: ActFlavor, t: DType, x: &[f64]) -> RowQ {
    let (lo, hi) = x.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let (mn, mx) = (lo.min(0.0), hi.max(0.0));
    match flavor {
        ActFlavor::Decomp => {
            let eps = t.round(DType::F32.epsilon());
            let s = t.div(t.sub(mx, mn), QMAX - QMIN).max(eps);
            let dmin = t.div(mn, s);
            let dmax = t.div(mx, s);
            let pick_min = t.add(t.add(QMIN, dmin), t.add(QMAX, dmax)) > 0.0;
            let z = if pick_min { t.sub(QMIN, dmin) } else { t.sub(QMAX, dmax) };
            let zp = rne(t.round(z.clamp(QMIN, QMAX)));
            // The scale goes to float64; 1.0/s, x·inv and +zp are double operations.
            let inv = 1.0 / s;
            let codes = x.iter().map(|&v| rne(v * inv + zp).clamp(QMIN, QMAX) as i32).collect();
            RowQ { stored_scale: s, zp, codes }
        }
        ActFlavor::EtPort => {
            let (scale, init) = et_scale_zp(mn as f32, mx as f32, true);
            let zp = if init < QMIN {
                QMIN
            } else if init > QMAX {
                QMAX
            } else {
                rne(init as f32 as f64)
            };
            let inv = 1.0f32 / scale as f32;
            let codes = x.iter().map(|&v| (zp + rne((inv * v as f32) as f64)).clamp(QMIN, QMAX) as i32).collect();
            RowQ { stored_scale: scale, zp, codes }
        }
        ActFlavor::Xnn => {
            let (rmin, rmax) = (mn as f32, mx as f32);
            let m = if rmin == rmax { 1.0f32 } else { 255.0 / (rmax - rmin) };
            let (dmin, dmax) = (rmin * m, rmax * m);
            let z = if (-128.0 + dmin) + (127.0 + dmax) > 0.0 { -128.0 - dmin } else { 127.0 - dmax };
            let zp = rne(z.clamp(-128.0, 127.0) as f64);
            let scale = 1.0f32 / m;
            // The convert kernel is handed `1/scale`: fl(1/fl(1/m)).
            let mq = 1.0f32 / scale;
            let codes = x.iter().map(|&v| (rne((v as f32 * mq) as f64) + zp).clamp(QMIN, QMAX) as i32).collect();
            RowQ { stored_scale: scale as f64, zp, codes }
        }
        ActFlavor::Vk(ties) => {
            let (scale, init) = et_scale_zp(mn as f32, mx as f32, false);
            let zp = if init < QMIN {
                QMIN
            } else if init > QMAX {
                QMAX
            } else {
                rglsl(init, ties)
            };
            // Stored in DTYPE (fp16 in half mode); the shader quantizes with 1/float(stored).
            let stored = t.round(scale);
            let inv = 1.0f32 / stored as f32;
            let codes =
                x.iter().map(|&v| (rglsl((v as f32 * inv) as f64, ties) + zp).clamp(QMIN, QMAX) as i32).collect();
            RowQ { stored_scale: stored, zp, codes }
        }
        ActFlavor::Ao | ActFlavor::AoI8w => unreachable!("torchao activations go through the affine engine"),
    }
}

/// Quantize activations row by row (one row = one token).
pub fn quantize(s: &Scheme, x: &Matrix) -> Result<Quantized> {
    let Family::Act { flavor, .. } = s.family else { unreachable!("act::quantize on {s}") };
    if matches!(flavor, ActFlavor::Ao | ActFlavor::AoI8w) {
        return super::affine::AffineParams::for_scheme(s)?.quantize(s, x);
    }
    let t = s.dtype;
    let mut q = Vec::with_capacity(x.data.len());
    let (mut scales, mut zps, mut exact) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..x.rows {
        let row: Vec<f64> = x.row(r).iter().map(|&v| t.round(v as f64)).collect();
        let rq = quantize_row(flavor, t, &row);
        q.extend(rq.codes);
        scales.push(rq.stored_scale as f32);
        exact.push(rq.stored_scale);
        zps.push((rq.zp + 0.0) as f32); // integer zero-points carry no sign of zero
    }
    // ExecuTorch portable keeps a double scale; report its f32 rounding and keep the double.
    let differs = exact.iter().zip(&scales).any(|(a, b)| *a != *b as f64);
    Ok(Quantized {
        scheme: *s,
        shape: x.shape(),
        q,
        scales,
        scale_shape: [x.rows, 1],
        zero_points: Some(zps),
        zero_point_shape: Some([x.rows, 1]),
        lut: None,
        lut_shape: None,
        quantize_scales: differs.then_some(exact),
        extra: None,
    })
}

/// `(q − zp)·s` rounded once to T (the product of a 9-bit integer and the stored scale is exact in
/// f64, so this is each framework's single rounding).
pub fn dequantize(s: &Scheme, q: &Quantized) -> Result<Vec<f32>> {
    let Family::Act { flavor, .. } = s.family else { unreachable!("act::dequantize on {s}") };
    if matches!(flavor, ActFlavor::Ao | ActFlavor::AoI8w) {
        return Ok(super::affine::AffineParams::for_scheme(s)?.dequantize(q));
    }
    let t = s.dtype;
    let cols = q.shape[1];
    let zps = q.zero_points.as_deref().unwrap_or(&[]);
    Ok(q.q
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let r = i / cols;
            let sc = q.quantize_scales.as_ref().map_or(q.scales[r] as f64, |e| e[r]);
            let z = zps.get(r).copied().unwrap_or(0.0) as f64;
            t.round((c as f64 - z) * sc) as f32
        })
        .collect())
}

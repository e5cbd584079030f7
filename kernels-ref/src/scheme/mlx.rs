//! MLX affine quantization (schemes.md §3.1): `w{b}g{G}-mlx-cpu` and `w{b}g{G}-mlx-gpu`.
//!
//! Both compute in fp32 with a "nudged" scale that makes zero exactly representable and a
//! possibly negative scale, and store `scale`, `bias` in the input dtype T while quantizing with the
//! fp32 values. They differ in two ways the GPU kernel (Metal and CUDA alike) is written:
//! `w_max` starts at 0, so an all-negative group is quantized over `[min, 0]`; and `round` is
//! Metal's ties-away-from-zero where the CPU uses `rint`. The GPU also has no lower clamp
//! (`uint8_t(min(round(..), n))`); a negative value there is undefined in MSL, and qdiff takes the
//! saturating conversion (to 0), which is what `as u8` does and what every code path we could
//! check gives. Codes are unsigned `0..=2^b-1`, dequantized as `scale·q + bias` in T.

use super::{group_indices, Family, Granularity, Quantized, Scheme};
use crate::error::Result;
use crate::round::{rhaz, rne};
use crate::tensor::Matrix;

/// MLX's `eps` for the scale floor.
pub const EPS: f32 = 1e-7;

/// `(fp32 scale, fp32 bias)` of one group as MLX computes them.
pub fn choose_qparams(group: &[f32], bits: u8, gpu: bool) -> (f32, f32) {
    let n_bins = ((1u32 << bits) - 1) as f32;
    let (mut w_min, mut w_max) = if gpu { (f32::MAX, 0.0f32) } else { (f32::INFINITY, f32::NEG_INFINITY) };
    for &v in group {
        w_min = w_min.min(v);
        w_max = w_max.max(v);
    }
    let round = |x: f32| if gpu { rhaz(x as f64) as f32 } else { rne(x as f64) as f32 };
    let side = w_min.abs() > w_max.abs();
    let mut scale = ((w_max - w_min) / n_bins).max(EPS);
    if !side {
        scale = -scale;
    }
    let edge = if side { w_min } else { w_max };
    let q0 = round(edge / scale);
    if q0 != 0.0 {
        (edge / q0, edge)
    } else {
        (scale, 0.0)
    }
}

/// Quantize with the MLX affine scheme.
pub fn quantize(s: &Scheme, x: &Matrix) -> Result<Quantized> {
    let Family::Mlx { bits, group, gpu } = s.family else { unreachable!("mlx::quantize on {s}") };
    let t = s.dtype;
    let gran = Granularity::Group(group);
    let [qr, qc] = gran.qparam_shape(x.rows, x.cols);
    let n_bins = ((1u32 << bits) - 1) as f32;
    let mut q = vec![0i32; x.data.len()];
    let (mut scales, mut biases, mut qscales) = (vec![0f32; qr * qc], vec![0f32; qr * qc], vec![0f64; qr * qc]);
    let mut buf = Vec::with_capacity(group);
    for (gi, range, _) in group_indices(gran, x.rows, x.cols) {
        buf.clear();
        buf.extend(x.data[range.clone()].iter().map(|&v| t.round_f32(v as f64)));
        let (scale, bias) = choose_qparams(&buf, bits, gpu);
        for (k, &v) in buf.iter().enumerate() {
            let y = (v - bias) / scale;
            let r = if gpu { rhaz(y as f64) } else { rne(y as f64) };
            // CPU clamps to [0, n]; the GPU only clamps above and converts with saturation.
            q[range.start + k] = (r as f32).min(n_bins).max(0.0) as i32;
        }
        scales[gi] = t.round_f32(scale as f64);
        biases[gi] = t.round_f32(bias as f64);
        qscales[gi] = scale as f64;
    }
    let differs = qscales.iter().zip(&scales).any(|(a, b)| *a != *b as f64);
    Ok(Quantized {
        scheme: *s,
        shape: x.shape(),
        q,
        scales,
        scale_shape: [qr, qc],
        zero_points: Some(biases),
        zero_point_shape: Some([qr, qc]),
        lut: None,
        lut_shape: None,
        quantize_scales: differs.then_some(qscales),
        extra: None,
    })
}

/// `scale·q + bias` in T (MLX's `affine_dequantize`: a multiply then an add, each rounded to T).
pub fn dequantize(s: &Scheme, q: &Quantized) -> Vec<f32> {
    let Family::Mlx { group, .. } = s.family else { unreachable!("mlx::dequantize on {s}") };
    let t = s.dtype;
    let [rows, cols] = q.shape;
    let zps = q.zero_points.as_deref().unwrap_or(&[]);
    let mut out = vec![0f32; rows * cols];
    for (gi, range, _) in group_indices(Granularity::Group(group), rows, cols) {
        let (sc, b) = (q.scales[gi] as f64, zps.get(gi).copied().unwrap_or(0.0) as f64);
        for i in range {
            out[i] = t.add(t.mul(sc, q.q[i] as f64), b) as f32;
        }
    }
    out
}

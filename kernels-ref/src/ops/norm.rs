//! `rmsnorm`: root-mean-square normalisation of each row, as Llama-family decoders use it.
//!
//! Per row, in f64: the sum of squares (each square of an f32 is exact in f64) accumulated with
//! the index ascending, divided by `D`, plus `eps`, square root (IEEE `sqrt` is correctly
//! rounded everywhere), then `y = (x * w) / rms` with `x * w` exact, and one rounding to f32.
//! Rows are independent, so they are spread over rayon threads without changing any bit.

use ndarray::{Array2, ArrayView1, ArrayView2};
use rayon::prelude::*;

use super::round_f32;
use crate::error::{RefError, Result};

/// RMSNorm of each row of `x` (`[M, D]`) with per-channel `weight` (`[D]`):
/// `y[m,d] = x[m,d] * w[d] / sqrt(mean_d(x[m,d]²) + eps)`, all in f64, rounded once to f32.
///
/// The weight multiplies `x` directly (Llama / Qwen convention); a Gemma-style `(1 + w)` weight
/// must be passed as `1 + w`.
///
/// # Errors
/// [`RefError::Shape`] when `weight` is not `[D]`.
pub fn rmsnorm(x: ArrayView2<'_, f32>, weight: ArrayView1<'_, f32>, eps: f32) -> Result<Array2<f32>> {
    let (m, d) = x.dim();
    if weight.len() != d {
        return Err(RefError::shape(
            "rmsnorm",
            format!("x is [{m}, {d}] but weight has {} values, not D = {d}", weight.len()),
        ));
    }
    let eps = f64::from(eps);
    let x = x.as_standard_layout();
    let x = x.as_slice().expect("standard layout is contiguous");
    let w: Vec<f64> = weight.iter().map(|&w| f64::from(w)).collect();
    let mut out = vec![0f32; m * d];
    if d > 0 {
        out.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(y, x)| {
            let mut ss = 0.0f64;
            for &v in x {
                let v = f64::from(v);
                ss += v * v;
            }
            let rms = (ss / d as f64 + eps).sqrt();
            for ((y, &x), &w) in y.iter_mut().zip(x).zip(&w) {
                *y = round_f32(f64::from(x) * w / rms);
            }
        });
    }
    Ok(Array2::from_shape_vec((m, d), out).expect("M * D values"))
}

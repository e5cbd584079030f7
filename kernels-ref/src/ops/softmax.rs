//! `softmax`: row-wise softmax.
//!
//! Per row, in f64: the maximum, `e_i = libm::exp(x_i - max)`, their sum with `i` ascending,
//! `e_i / sum`, then one rounding to f32. Subtracting the maximum changes nothing in exact
//! arithmetic and keeps `exp` finite. Rows are independent and spread over rayon threads
//! without changing any bit.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use super::round_f32;
use crate::error::Result;

/// Softmax along each row of `x` (`[M, N]`): `y[m,n] = exp(x[m,n] - max_m) / Σ_j exp(x[m,j] -
/// max_m)`, in f64 (`libm::exp`, sum with `j` ascending), rounded once to f32.
///
/// A row containing NaN, or made only of `-inf`, comes out all NaN (as in PyTorch).
///
/// # Errors
/// None today; the `Result` keeps the signature uniform with the other ops.
pub fn softmax(x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
    let (m, n) = x.dim();
    let x = x.as_standard_layout();
    let x = x.as_slice().expect("standard layout is contiguous");
    let mut out = vec![0f32; m * n];
    if n > 0 {
        out.par_chunks_mut(n).zip(x.par_chunks(n)).for_each(|(y, x)| {
            let mut e = vec![0f64; n];
            softmax_row(x.iter().map(|&v| f64::from(v)), &mut e);
            for (y, &p) in y.iter_mut().zip(&e) {
                *y = round_f32(p);
            }
        });
    }
    Ok(Array2::from_shape_vec((m, n), out).expect("M * N values"))
}

/// The f64 softmax of `x` into `p` (same length): maximum, `exp(x - max)` with `libm`, sum in
/// ascending order, divide. Shared with `attention`, which feeds it unrounded f64 scores.
#[inline]
pub(crate) fn softmax_row(x: impl Iterator<Item = f64> + Clone, p: &mut [f64]) {
    // NaN-propagating maximum: a NaN anywhere makes the whole row NaN below.
    let max = x.clone().fold(f64::NEG_INFINITY, |m, v| if v > m || v.is_nan() { v } else { m });
    let mut sum = 0.0f64;
    for (p, v) in p.iter_mut().zip(x) {
        *p = libm::exp(v - max);
        sum += *p;
    }
    for p in p.iter_mut() {
        *p /= sum;
    }
}

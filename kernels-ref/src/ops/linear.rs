//! `linear` (`x · wᵀ + b`, PyTorch's weight layout) and `matmul` (`a · b`): the exact
//! matrix products.
//!
//! Both are defined by the naive loop: for each output element one f64 accumulator, `k`
//! ascending from 0 to K-1 (`acc += f64(x) * f64(w)`, each product exact), then `+ f64(bias)`,
//! then one rounding to f32. The blocked, vectorised, multi-threaded engine in
//! `gemm.rs` computes exactly that, so the result bits depend on the inputs alone.
//! This file only checks shapes and hands contiguous slices to the engine.

use std::borrow::Cow;

use ndarray::{Array2, ArrayView1, ArrayView2};

use super::gemm::{self, Problem, RhsLayout};
use crate::error::{RefError, Result};

/// `x · wᵀ + bias`: `x` is `[M, K]`, `w` is `[N, K]` (PyTorch's `nn.Linear` layout), `bias`
/// is `[N]`; returns `[M, N]`.
///
/// Each output element is `round_f32(Σ_k f64(x[m,k]) · f64(w[n,k]) + f64(bias[n]))` with the
/// sum taken in f64, `k` ascending, and rounded once (round to nearest even). Any strides are
/// accepted; non-contiguous views are copied once.
///
/// # Errors
/// [`RefError::Shape`] when the inner dimensions differ or `bias` is not `[N]`.
pub fn linear(
    x: ArrayView2<'_, f32>,
    w: ArrayView2<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
) -> Result<Array2<f32>> {
    let (m, k) = x.dim();
    let (n, kw) = w.dim();
    if k != kw {
        return Err(RefError::shape("linear", format!("x is [{m}, {k}] but w is [{n}, {kw}]: w must be [N, {k}]")));
    }
    if let Some(b) = &bias {
        if b.len() != n {
            return Err(RefError::shape("linear", format!("bias has {} values, w has N = {n} rows", b.len())));
        }
    }
    let bias_c = bias.as_ref().map(|b| b.as_standard_layout());
    // w is [N, K]; if it is a transposed view of a [K, N] matrix, read it in that layout.
    let (b, b_layout) = rhs_storage(w.t());
    let x = x.as_standard_layout();
    let out = gemm::run(&Problem {
        a: contiguous(&x),
        b: &b,
        b_layout,
        m,
        n,
        k,
        bias: bias_c.as_ref().map(|b| b.as_slice().expect("standard layout is contiguous")),
    });
    Ok(Array2::from_shape_vec((m, n), out).expect("the engine returns M * N values"))
}

/// `a · b`: `a` is `[M, K]`, `b` is `[K, N]`; returns `[M, N]`.
///
/// Each output element is `round_f32(Σ_k f64(a[m,k]) · f64(b[k,n]))`, the sum in f64 with `k`
/// ascending, rounded once: the same order as [`linear`], so `matmul(a, w.t())` and
/// `linear(a, w, None)` agree bit for bit.
///
/// # Errors
/// [`RefError::Shape`] when the inner dimensions differ.
pub fn matmul(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
    let (m, k) = a.dim();
    let (kb, n) = b.dim();
    if k != kb {
        return Err(RefError::shape("matmul", format!("a is [{m}, {k}] but b is [{kb}, {n}]: b must be [{k}, N]")));
    }
    let (b, b_layout) = rhs_storage(b);
    let a = a.as_standard_layout();
    let out = gemm::run(&Problem { a: contiguous(&a), b: &b, b_layout, m, n, k, bias: None });
    Ok(Array2::from_shape_vec((m, n), out).expect("the engine returns M * N values"))
}

/// The right-hand operand `b` (`[K, N]`) as one contiguous slice, with the layout it is in:
/// borrowed when `b` is row-major (`KN`) or the transpose of a row-major `[N, K]` (`NK`),
/// copied to row-major otherwise.
fn rhs_storage<'a>(b: ArrayView2<'a, f32>) -> (Cow<'a, [f32]>, RhsLayout) {
    if let Some(s) = b.to_slice() {
        return (Cow::Borrowed(s), RhsLayout::KN);
    }
    if let Some(s) = b.reversed_axes().to_slice() {
        return (Cow::Borrowed(s), RhsLayout::NK);
    }
    (Cow::Owned(b.iter().copied().collect()), RhsLayout::KN)
}

/// The data of a standard-layout array as a slice.
fn contiguous<'a>(x: &'a ndarray::CowArray<'_, f32, ndarray::Ix2>) -> &'a [f32] {
    x.as_slice().expect("standard layout is contiguous")
}

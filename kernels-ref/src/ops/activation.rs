//! Elementwise activations: `silu` and `swiglu`.
//!
//! `silu(x) = x / (1 + exp(-x))`, evaluated in f64 with the pure-Rust `libm::exp` and rounded
//! once to f32; `swiglu(gate, up) = silu(gate) * up` keeps the whole expression in f64 and
//! rounds once (so it can differ by at most one ulp from rounding `silu` first).

use ndarray::{Array, ArrayView, Dimension, Zip};

use super::round_f32;
use crate::error::{RefError, Result};

/// `silu(x) = x / (1 + exp(-x))` in f64, before the final rounding.
#[inline(always)]
fn silu_f64(x: f32) -> f64 {
    let x = f64::from(x);
    x / (1.0 + libm::exp(-x))
}

/// SiLU (swish) elementwise: `x / (1 + exp(-x))`, computed in f64 (`libm::exp`) and rounded
/// once to f32. `silu(0) = 0`; `silu(-inf)` is NaN, as in PyTorch's formula.
pub fn silu<D: Dimension>(x: ArrayView<'_, f32, D>) -> Array<f32, D> {
    x.mapv(|v| round_f32(silu_f64(v)))
}

/// SwiGLU's gating product elementwise: `silu(gate) * up`, the whole expression in f64 and
/// rounded once to f32.
///
/// # Errors
/// [`RefError::Shape`] when `gate` and `up` have different shapes.
pub fn swiglu<D: Dimension>(gate: ArrayView<'_, f32, D>, up: ArrayView<'_, f32, D>) -> Result<Array<f32, D>> {
    if gate.shape() != up.shape() {
        return Err(RefError::shape("swiglu", format!("gate is {:?} but up is {:?}", gate.shape(), up.shape())));
    }
    Ok(Zip::from(&gate).and(&up).map_collect(|&g, &u| round_f32(silu_f64(g) * f64::from(u))))
}

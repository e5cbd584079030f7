//! Exact fp32 ops: the ground truth for the ops a quantized model runs.
//!
//! Every op takes and returns fp32 (ndarray views in, owned arrays out) and is computed "as if
//! exact, rounded once":
//! - products of two f32 values are formed in f64, where they are exact;
//! - sums are accumulated in f64 in a fixed order that the code defines (ascending index),
//!   never one that depends on the thread count, the SIMD width or the machine;
//! - transcendental functions (`exp`, `sin`, `cos`, `pow`) come from the pure-Rust `libm`
//!   crate in f64, never from the platform's libm, whose last bits differ between systems;
//! - the result is rounded once to f32 (round to nearest, ties to even), and a NaN result is
//!   written as the canonical quiet NaN, so that even NaN bits depend on the inputs alone.
//!
//! What lives where:
//! - [`linear`](linear()) / [`matmul`] in `linear.rs`, backed by the blocked engine in
//!   `gemm.rs` (the only speed-tuned code; bit-identical to the naive loop);
//! - [`embedding`](embedding()) in `embedding.rs`;
//! - [`rmsnorm`](rmsnorm()) in `norm.rs`;
//! - [`rope`](rope()), [`rope_with_scaling`], [`rope_inv_freq`], [`RopeStyle`], [`RopeScaling`] in
//!   `rope.rs`;
//! - [`softmax`](softmax()) in `softmax.rs`;
//! - [`attention`](attention()) in `attention.rs`;
//! - [`silu`], [`swiglu`] in `activation.rs`.
//!
//! Bad shapes are reported as [`RefError`](crate::error::RefError) values naming the op and the
//! shapes; no op panics on bad input.

mod activation;
mod attention;
mod embedding;
mod gemm;
mod linear;
mod norm;
mod rope;
mod softmax;

pub use activation::{silu, swiglu};
pub use attention::attention;
pub use embedding::embedding;
pub use linear::{linear, matmul};
pub use norm::rmsnorm;
pub use rope::{rope, rope_inv_freq, rope_with_scaling, RopeScaling, RopeStyle};
pub use softmax::softmax;

/// Rounds an f64 result to f32 once (round to nearest, ties to even), writing any NaN as the
/// canonical quiet NaN so that NaN payloads do not depend on which instructions produced them.
#[inline(always)]
pub(crate) fn round_f32(v: f64) -> f32 {
    if v.is_nan() {
        f32::NAN
    } else {
        v as f32
    }
}

//! qdiff's reference: the ground truth every device is compared against.
//!
//! - [`dtype`]: fp16 / bf16 / fp32 / fp64 conversion (round to nearest even) and op-by-op emulated
//!   arithmetic in each of them.
//! - [`round`]: the rounding-to-integer primitives of schemes.md §0.1 (`rne`, `rhaz`, `rhup`,
//!   `rglsl`, `nearest_int`) and the reciprocal-multiply vs divide forms.
//! - [`scheme`]: the scheme catalogue of schemes.md §7, parsed from and printed to its names, each a
//!   `(choose_qparams, quantize, dequantize, pack, unpack)`.
//! - [`pack`]: the packed storage layouts (nibbles, bitstreams, MLX words, ggml blocks).
//! - [`regroup`]: moving quantized weights between group sizes, exactly or not at all.
//! - [`ops`]: exact fp32 ops (linear, embedding, rmsnorm, rope, softmax, attention, silu/swiglu):
//!   products and sums in f64 in a fixed order, rounded once to fp32, so the bits depend on the
//!   inputs alone.

pub mod dtype;
pub mod error;
pub mod ops;
pub mod pack;
pub mod regroup;
pub mod round;
pub mod scheme;
pub mod tensor;

pub use error::RefError;

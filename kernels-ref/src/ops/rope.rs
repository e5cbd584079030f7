//! Rotary position embeddings (RoPE), in both pairings that checkpoints use, with the
//! frequency scalings of Hugging Face transformers (linear and Llama 3).
//!
//! Everything is f64 until the single final rounding: `inv_freq_i = theta^(-2i/Dh)` with
//! `libm::pow`, then the optional scaling, the angle `pos * inv_freq_i`, its `libm::cos` and
//! `libm::sin`, and the rotation `(x0 c - x1 s, x0 s + x1 c)`. `libm` is pure Rust, so the
//! angles' cosines and sines, hence the output bits, are the same on every platform.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::round_f32;
use crate::error::{RefError, Result};

/// Which elements of a head are rotated together by frequency `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeStyle {
    /// Pairs `(2i, 2i + 1)`: GGUF / llama.cpp's llama layout ("normal" rope).
    Interleaved,
    /// Pairs `(i, i + Dh/2)`: Hugging Face Llama / Qwen's `rotate_half` ("neox" rope).
    Half,
}

/// A rescaling of the rotary frequencies for longer contexts, applied to `inv_freq` the way
/// Hugging Face transformers' `ROPE_INIT_FUNCTIONS` do.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "snake_case")]
pub enum RopeScaling {
    /// `rope_type = "linear"`: every `inv_freq` divided by `factor`.
    Linear {
        /// The divisor (> 0).
        factor: f64,
    },
    /// `rope_type = "llama3"`: long wavelengths divided by `factor`, short ones kept, and the
    /// band between them interpolated smoothly.
    Llama3 {
        /// The divisor for long wavelengths (> 0).
        factor: f64,
        /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are scaled.
        low_freq_factor: f64,
        /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context length the model was trained with.
        original_max_position_embeddings: usize,
    },
}

/// The `head_dim / 2` rotary frequencies `inv_freq_i = theta^(-2i / head_dim)` (f64,
/// `libm::pow`), with `scaling` applied as Hugging Face transformers applies it.
///
/// # Errors
/// [`RefError::Unsupported`] when `head_dim` is zero or odd, `theta` is not finite and > 0, or
/// a scaling parameter is out of range (factor <= 0, `low_freq_factor == high_freq_factor`,
/// zero original context).
pub fn rope_inv_freq(head_dim: usize, theta: f64, scaling: Option<&RopeScaling>) -> Result<Vec<f64>> {
    if head_dim == 0 || head_dim % 2 != 0 {
        return Err(RefError::unsupported("rope", format!("head_dim must be even and > 0, got {head_dim}")));
    }
    if !(theta.is_finite() && theta > 0.0) {
        return Err(RefError::unsupported("rope", format!("theta must be finite and > 0, got {theta}")));
    }
    let dh = head_dim as f64;
    let base: Vec<f64> = (0..head_dim / 2).map(|i| libm::pow(theta, -((2 * i) as f64) / dh)).collect();
    match scaling {
        None => Ok(base),
        Some(&RopeScaling::Linear { factor }) => {
            check_factor(factor)?;
            Ok(base.into_iter().map(|f| f / factor).collect())
        }
        Some(&RopeScaling::Llama3 {
            factor,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max_position_embeddings: old,
        }) => {
            check_factor(factor)?;
            if !(low.is_finite() && high.is_finite() && low > 0.0 && high > 0.0 && low != high) || old == 0 {
                return Err(RefError::unsupported(
                    "rope",
                    format!(
                        "llama3 scaling needs finite low_freq_factor, high_freq_factor > 0 that differ \
                         and original_max_position_embeddings > 0; got {low}, {high}, {old}"
                    ),
                ));
            }
            let old = old as f64;
            let low_freq_wavelen = old / low;
            let high_freq_wavelen = old / high;
            Ok(base
                .into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_freq_wavelen {
                        f
                    } else if wavelen > low_freq_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect())
        }
    }
}

fn check_factor(factor: f64) -> Result<()> {
    if factor.is_finite() && factor > 0.0 {
        Ok(())
    } else {
        Err(RefError::unsupported("rope", format!("scaling factor must be finite and > 0, got {factor}")))
    }
}

/// RoPE without frequency scaling; see [`rope_with_scaling`].
///
/// # Errors
/// As [`rope_with_scaling`].
pub fn rope(
    x: ArrayView2<'_, f32>,
    positions: &[usize],
    head_dim: usize,
    theta: f64,
    style: RopeStyle,
) -> Result<Array2<f32>> {
    rope_with_scaling(x, positions, head_dim, theta, style, None)
}

/// Rotates each head of each row of `x` (`[T, H * head_dim]`): row `t` is at position
/// `positions[t]`, and the pair `(x0, x1)` of frequency `i` (chosen by `style`) becomes
/// `(x0 cos a - x1 sin a, x0 sin a + x1 cos a)` with `a = positions[t] * inv_freq_i`
/// ([`rope_inv_freq`]). All in f64, rounded once to f32.
///
/// # Errors
/// [`RefError::Shape`] when the row width is not a multiple of `head_dim` or `positions` does
/// not have one entry per row; [`RefError::Unsupported`] as [`rope_inv_freq`].
pub fn rope_with_scaling(
    x: ArrayView2<'_, f32>,
    positions: &[usize],
    head_dim: usize,
    theta: f64,
    style: RopeStyle,
    scaling: Option<RopeScaling>,
) -> Result<Array2<f32>> {
    let inv_freq = rope_inv_freq(head_dim, theta, scaling.as_ref())?;
    let (t, width) = x.dim();
    if width % head_dim != 0 {
        return Err(RefError::shape(
            "rope",
            format!("x is [{t}, {width}], and {width} is not a multiple of head_dim = {head_dim}"),
        ));
    }
    if positions.len() != t {
        return Err(RefError::shape(
            "rope",
            format!("x has T = {t} rows but positions has {} entries", positions.len()),
        ));
    }
    let half = head_dim / 2;
    let x = x.as_standard_layout();
    let x = x.as_slice().expect("standard layout is contiguous");
    let mut out = vec![0f32; t * width];
    if width > 0 {
        out.par_chunks_mut(width).zip(x.par_chunks(width)).zip(positions.par_iter()).for_each(|((y, x), &pos)| {
            let cs: Vec<(f64, f64)> = inv_freq
                .iter()
                .map(|&f| {
                    let a = pos as f64 * f;
                    (libm::cos(a), libm::sin(a))
                })
                .collect();
            for (yh, xh) in y.chunks_exact_mut(head_dim).zip(x.chunks_exact(head_dim)) {
                for (i, &(c, s)) in cs.iter().enumerate() {
                    let (i0, i1) = match style {
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        RopeStyle::Half => (i, i + half),
                    };
                    let (x0, x1) = (f64::from(xh[i0]), f64::from(xh[i1]));
                    yh[i0] = round_f32(x0 * c - x1 * s);
                    yh[i1] = round_f32(x0 * s + x1 * c);
                }
            }
        });
    }
    Ok(Array2::from_shape_vec((t, width), out).expect("T * width values"))
}

//! Rounding-to-integer primitives (schemes.md §0.1) and the reciprocal-multiply vs divide forms.
//!
//! Frameworks disagree on ties: torch/numpy/MLX-CPU use ties-to-even, C `roundf`/Metal `round`
//! ties away from zero, ggml's `(int8_t)(x + 8.5f)` rounds toward +∞ after an fp32 add, and GLSL
//! `round()` leaves the tie direction to the implementation. Each scheme names the one it uses.

use crate::dtype::DType;
use serde::{Deserialize, Serialize};
use std::fmt;

/// `rne(x)`: nearest, ties to even (torch.round, np.round, rint, GLSL roundEven).
#[inline]
pub fn rne(x: f64) -> f64 {
    x.round_ties_even()
}

/// `rhaz(x)`: nearest, ties away from zero (C roundf, Metal/CUDA round, Rust `f64::round`).
#[inline]
pub fn rhaz(x: f64) -> f64 {
    x.round()
}

/// ggml's `(int8_t)(x + c)`: add `c` in fp32 (one rounding), then truncate toward zero.
/// With `c = 8.5` or `0.5` this rounds half up, after whatever the fp32 add itself rounded.
/// `fused` models a build that contracts the preceding `x*id + c` into one fma; pass the
/// unrounded product as `x` (an f64) in that case.
#[inline]
pub fn rhup(x: f64, c: f32) -> f64 {
    ((x + c as f64) as f32).trunc() as f64
}

/// Which way GLSL `round()` breaks ties on a given implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ties {
    /// Like `roundEven` (what many drivers do).
    Even,
    /// Away from zero (like C `roundf`).
    Away,
}

/// `rglsl(x)`: GLSL `round()` with the given tie behaviour.
#[inline]
pub fn rglsl(x: f64, ties: Ties) -> f64 {
    match ties {
        Ties::Even => rne(x),
        Ties::Away => rhaz(x),
    }
}

/// ggml's `nearest_int`: the magic-number trick `bits(x + 12582912.f) & 0x7fffff - 0x400000`.
/// Equal to RNE of the fp32 value for `|x| <= 4194303` (ggml asserts that range).
#[inline]
pub fn nearest_int(x: f32) -> i32 {
    let val = x + 12582912.0f32;
    let i = val.to_bits() as i32;
    (i & 0x007f_ffff) - 0x0040_0000
}

/// A rounding-to-integer mode a scheme can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundMode {
    /// Ties to even.
    Rne,
    /// Ties away from zero.
    Rhaz,
    /// GLSL `round`, tie direction given.
    Rglsl(Ties),
}

impl RoundMode {
    /// Apply the mode to a value.
    #[inline]
    pub fn apply(self, x: f64) -> f64 {
        match self {
            RoundMode::Rne => rne(x),
            RoundMode::Rhaz => rhaz(x),
            RoundMode::Rglsl(t) => rglsl(x, t),
        }
    }
}

impl fmt::Display for RoundMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoundMode::Rne => f.write_str("rne"),
            RoundMode::Rhaz => f.write_str("rhaz"),
            RoundMode::Rglsl(Ties::Even) => f.write_str("rglsl-even"),
            RoundMode::Rglsl(Ties::Away) => f.write_str("rglsl-away"),
        }
    }
}

/// How `x / s` is formed before rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpForm {
    /// `x ⊗ (1 ⊘ s)`: the reciprocal rounded first (torchao, PyTorch decomposed, ET, Vulkan, ggml).
    RecipMul,
    /// `x ⊘ s` (coremltools, MLX, fbgemm, Q4_K requant).
    Div,
}

impl OpForm {
    /// `x / s` in dtype `t` the way this form computes it (each operation rounded to `t`).
    #[inline]
    pub fn apply(self, t: DType, x: f64, s: f64) -> f64 {
        match self {
            OpForm::RecipMul => t.mul(x, t.div(1.0, s)),
            OpForm::Div => t.div(x, s),
        }
    }
}

impl fmt::Display for OpForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpForm::RecipMul => "recip_mul",
            OpForm::Div => "div",
        })
    }
}

/// Saturating conversion of an already-rounded float to an integer code, mapping NaN to 0 as
/// numpy 2.x's `astype(int8)` does on x86-64 (and Rust's `as` does).
#[inline]
pub fn to_code(x: f64) -> i32 {
    if x.is_nan() {
        0
    } else {
        x.clamp(i32::MIN as f64, i32::MAX as f64) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tie_behaviours_differ_where_they_should() {
        for (x, e, a) in [(0.5, 0.0, 1.0), (1.5, 2.0, 2.0), (2.5, 2.0, 3.0), (-0.5, -0.0, -1.0), (-2.5, -2.0, -3.0)] {
            assert_eq!(rne(x), e, "rne({x})");
            assert_eq!(rhaz(x), a, "rhaz({x})");
            assert_eq!(rglsl(x, Ties::Even), e);
            assert_eq!(rglsl(x, Ties::Away), a);
        }
        // ggml rounds ties toward +inf: -0.5 + 8.5 = 8 -> code 8, i.e. q = 0; 0.5 + 8.5 = 9.
        assert_eq!(rhup(-0.5, 8.5), 8.0);
        assert_eq!(rhup(0.5, 8.5), 9.0);
        assert_eq!(rhup(-1.5, 8.5), 7.0);
    }

    #[test]
    fn nearest_int_is_rne_in_range() {
        let mut s = 11u64;
        for _ in 0..200_000 {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
            let x = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8_000_000.0;
            assert_eq!(nearest_int(x) as f64, rne(x as f64), "x = {x}");
        }
        for x in [0.5f32, 1.5, 2.5, -0.5, -1.5, 4194303.0, -4194303.0] {
            assert_eq!(nearest_int(x) as f64, rne(x as f64));
        }
    }

    #[test]
    fn recip_mul_and_div_differ_near_ties() {
        // schemes.md §0.1: x*(1/s) vs x/s flip a code near a tie. Find one such pair to prove
        // the forms are really distinct in the emulation.
        let t = DType::F32;
        let mut found = false;
        for i in 1..10_000 {
            let s = t.round(0.01 + i as f64 * 1.37e-6);
            let x = t.round(7.5 * s);
            if rne(OpForm::RecipMul.apply(t, x, s)) != rne(OpForm::Div.apply(t, x, s)) {
                found = true;
                break;
            }
        }
        assert!(found);
    }
}

//! Floating-point dtypes and op-by-op emulated arithmetic in each.
//!
//! Every value is carried as an `f64` that is exactly representable in its dtype. An operation in
//! dtype `T` computes the exact-ish `f64` result and rounds it once to `T` with round-to-nearest-even.
//! For `+ − × ÷ sqrt` of two `T` values this equals the IEEE operation in `T` itself, because the
//! `f64` result is rounded from the exact one and `53 ≥ 2p + 2` for every `p ∈ {8, 11, 24}` (double
//! rounding is innocuous). That is how the reference emulates torchao's bf16 qparams, coremltools'
//! fp16 arithmetic and Vulkan's half mode bit for bit.
//!
//! The rounding to a format is written here from first principles ([`round_to_format`]) rather than
//! borrowed, and checked against the `half` crate in the tests.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A floating-point dtype the reference can compute or store in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// IEEE binary16: 11-bit significand, normal exponents -14..=15.
    F16,
    /// bfloat16: 8-bit significand, fp32's exponent range.
    BF16,
    /// IEEE binary32.
    F32,
    /// IEEE binary64 (ExecuTorch portable and PyTorch's decomposed ops compute in double).
    F64,
}

/// Precision (significand bits incl. the implicit one), minimum normal exponent and maximum
/// exponent of a binary format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// Significand bits including the implicit leading bit.
    pub precision: i32,
    /// Exponent of the smallest normal number.
    pub emin: i32,
    /// Exponent of the largest finite number.
    pub emax: i32,
}

impl DType {
    /// Every dtype, narrowest first.
    pub const ALL: [DType; 4] = [DType::F16, DType::BF16, DType::F32, DType::F64];

    /// The binary format of this dtype.
    pub const fn format(self) -> Format {
        match self {
            DType::F16 => Format { precision: 11, emin: -14, emax: 15 },
            DType::BF16 => Format { precision: 8, emin: -126, emax: 127 },
            DType::F32 => Format { precision: 24, emin: -126, emax: 127 },
            DType::F64 => Format { precision: 53, emin: -1022, emax: 1023 },
        }
    }

    /// The short name used in scheme suffixes (`@f16`) and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }

    /// Round an `f64` to this dtype (RNE, subnormals kept, overflow to ±inf), returned as `f64`.
    #[inline]
    pub fn round(self, x: f64) -> f64 {
        match self {
            DType::F64 => x,
            DType::F32 => x as f32 as f64,
            _ => round_to_format(x, self.format()),
        }
    }

    /// Round to this dtype and return the value as `f32` (every dtype but f64 fits exactly).
    #[inline]
    pub fn round_f32(self, x: f64) -> f32 {
        self.round(x) as f32
    }

    /// `a + b` in this dtype (one rounding).
    #[inline]
    pub fn add(self, a: f64, b: f64) -> f64 {
        self.round(a + b)
    }
    /// `a - b` in this dtype.
    #[inline]
    pub fn sub(self, a: f64, b: f64) -> f64 {
        self.round(a - b)
    }
    /// `a * b` in this dtype.
    #[inline]
    pub fn mul(self, a: f64, b: f64) -> f64 {
        self.round(a * b)
    }
    /// `a / b` in this dtype.
    #[inline]
    pub fn div(self, a: f64, b: f64) -> f64 {
        self.round(a / b)
    }
    /// `fma(a, b, c)` in this dtype: one rounding of the exact `a*b + c`.
    ///
    /// For f16/bf16/f32 operands the `f64` product is exact, so `f64::mul_add` followed by one
    /// rounding is a single rounding of the exact result except in double-rounding corner cases
    /// that cannot occur for the narrower formats (`53 ≥ 2p + 2`). For f64 it is the hardware fma.
    #[inline]
    pub fn fma(self, a: f64, b: f64, c: f64) -> f64 {
        self.round(a.mul_add(b, c))
    }

    /// `finfo(T).eps`: the distance from 1.0 to the next value.
    pub fn epsilon(self) -> f64 {
        pow2(1 - self.format().precision)
    }
    /// `finfo(T).smallest_normal` (`tiny`).
    pub fn smallest_normal(self) -> f64 {
        pow2(self.format().emin)
    }
    /// The largest finite value.
    pub fn max_finite(self) -> f64 {
        let f = self.format();
        (2.0 - pow2(1 - f.precision)) * pow2(f.emax)
    }
    /// Whether `x` is exactly representable in this dtype (NaN counts as representable).
    pub fn represents(self, x: f64) -> bool {
        x.is_nan() || self.round(x) == x
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f16" | "fp16" | "float16" | "half" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            "f32" | "fp32" | "float32" | "float" => Ok(DType::F32),
            "f64" | "fp64" | "float64" | "double" => Ok(DType::F64),
            other => Err(format!("unknown dtype `{other}` (expected f16, bf16, f32 or f64)")),
        }
    }
}

/// `2^k` as an `f64`, exact for `-1074 <= k <= 1023`.
#[inline]
pub fn pow2(k: i32) -> f64 {
    if k >= -1022 {
        f64::from_bits(((k + 1023) as u64) << 52)
    } else {
        // Subnormal f64: only 2^-1074 ..= 2^-1023.
        f64::from_bits(1u64 << (k + 1074))
    }
}

/// Round `x` to the binary format `f` with round-to-nearest-even, keeping subnormals and sending
/// values at or beyond `max + ulp/2` to ±infinity (IEEE overflow under RNE).
///
/// Works for any format whose subnormal quantum is a normal f64 (every format here). NaN and ±0
/// pass through with their sign.
pub fn round_to_format(x: f64, f: Format) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let a = x.abs();
    // floor(log2 |x|) from the f64 exponent; f64 subnormals are far below every narrower format's
    // smallest subnormal, so they round to zero through the same path.
    let bits = a.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let e = if biased == 0 { -1023 } else { biased - 1023 };
    // The quantum (ulp) of the target format at this magnitude.
    let q = e.max(f.emin) - (f.precision - 1);
    // Scaling by a power of two is exact here: q >= emin - p + 1 >= -1074 + 53 for our formats.
    let scaled = a * pow2(-q);
    let r = scaled.round_ties_even() * pow2(q);
    let limit = pow2(f.emax + 1); // first magnitude that is no longer finite after rounding
    let r = if r >= limit { f64::INFINITY } else { r };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

/// fp32 -> fp16 bits (RNE), via [`round_to_format`]; NaN becomes the canonical quiet NaN 0x7e00.
pub fn f32_to_f16_bits(x: f32) -> u16 {
    half::f16::from_f64(DType::F16.round(x as f64)).to_bits()
}

/// fp16 bits -> fp32 value (exact).
pub fn f16_bits_to_f32(b: u16) -> f32 {
    half::f16::from_bits(b).to_f32()
}

/// fp32 -> bf16 bits with the integer RNE formula PyTorch's c10 and MLX use
/// (`(u + 0x7FFF + ((u >> 16) & 1)) >> 16`; NaN becomes 0x7FC0).
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7fc0;
    }
    let u = x.to_bits();
    ((u + 0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// bf16 bits -> fp32 value (exact).
pub fn bf16_bits_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(state: &mut u64) -> u64 {
        *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *state
    }

    #[test]
    fn f16_rounding_matches_half_on_random_and_edge_bits() {
        // `half`'s f32->f16 is RNE (software path and F16C alike); our first-principles rounding
        // must agree with it on every f32 we try, including ties, subnormals and overflow.
        let mut s = 1u64;
        let mut checked = 0;
        for i in 0..2_000_000u32 {
            let bits = if i < 65536 {
                // every f16 value widened, and the f32 midpoints just around them
                let h = half::f16::from_bits(i as u16).to_f32().to_bits();
                h.wrapping_add((i % 3) << 12)
            } else {
                (lcg(&mut s) >> 32) as u32
            };
            let x = f32::from_bits(bits);
            if x.is_nan() {
                continue;
            }
            let ours = DType::F16.round(x as f64) as f32;
            let theirs = half::f16::from_f32(x).to_f32();
            assert_eq!(ours.to_bits(), theirs.to_bits(), "x = {x:e} ({bits:#010x})");
            checked += 1;
        }
        assert!(checked > 1_900_000);
    }

    #[test]
    fn bf16_rounding_matches_integer_formula() {
        let mut s = 7u64;
        for _ in 0..1_000_000 {
            let x = f32::from_bits((lcg(&mut s) >> 32) as u32);
            if x.is_nan() {
                continue;
            }
            let ours = DType::BF16.round(x as f64) as f32;
            let theirs = bf16_bits_to_f32(f32_to_bf16_bits(x));
            assert_eq!(ours.to_bits(), theirs.to_bits(), "x = {x:e}");
        }
    }

    #[test]
    fn f32_rounding_is_the_cast() {
        let mut s = 3u64;
        for _ in 0..100_000 {
            let x = f64::from_bits(lcg(&mut s));
            if x.is_nan() {
                continue;
            }
            assert_eq!(round_to_format(x, DType::F32.format()).to_bits(), (x as f32 as f64).to_bits());
        }
    }

    #[test]
    fn format_constants() {
        assert_eq!(DType::F16.max_finite(), 65504.0);
        assert_eq!(DType::F16.smallest_normal(), 6.103515625e-05);
        assert_eq!(DType::F16.epsilon(), 0.0009765625);
        assert_eq!(DType::BF16.epsilon(), 0.0078125);
        assert_eq!(DType::F32.epsilon(), f32::EPSILON as f64);
        assert_eq!(DType::F32.smallest_normal(), f32::MIN_POSITIVE as f64);
        assert_eq!(DType::F16.round(65520.0), f64::INFINITY); // max + ulp/2 overflows under RNE
        assert_eq!(DType::F16.round(65519.99), 65504.0);
        assert_eq!(DType::F16.round(-0.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(DType::F16.round(2f64.powi(-25)), 0.0); // half the smallest subnormal: tie to even 0
        assert_eq!(DType::F16.round(2f64.powi(-25) * 1.5), 2f64.powi(-24));
    }

    #[test]
    fn emulated_f16_ops_round_once() {
        // 101.47 / 1.0 in fp16 is 101.5: the coremltools double-rounding example of schemes.md §2.2
        let x = DType::F16.round(101.47);
        assert_eq!(x, 101.5);
        assert_eq!(DType::F16.add(2048.0, 1.0), 2048.0); // 2049 is a tie between 2048 and 2050 -> even
        assert_eq!(DType::F16.add(2048.0, 3.0), 2052.0);
    }
}

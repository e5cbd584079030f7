//! Arithmetic in a scheme's compute dtype, the way a CPU framework without native fp16/bf16 ALUs
//! does it: each operation in fp32, the result rounded to T (round to nearest even).
//!
//! One fp32 operation followed by one rounding to fp16/bf16 equals the operation done natively in
//! fp16/bf16 for `+ − × ÷`, because fp32 carries at least `2p + 2` significand bits for both
//! (p = 11, 8), so the double rounding is innocuous. That is how torchao's bf16 qparams,
//! coremltools' fp16 numpy arithmetic and MLX's `float16_t` accumulation come out bit for bit.

use half::{bf16, f16};
use kernels_ref::dtype::DType;

/// Arithmetic in one compute dtype (`f32`, `f16` or `bf16`); values are carried as `f32` that
/// are exactly representable in the dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arith(pub DType);

impl Arith {
    /// Round an fp32 value to the dtype (RNE, subnormals kept, overflow to ±inf).
    #[inline]
    pub fn round(self, x: f32) -> f32 {
        match self.0 {
            DType::F16 => round_f16(x),
            DType::BF16 => round_bf16(x),
            DType::F32 | DType::F64 => x,
        }
    }

    /// Round an f64 value to the dtype once (frameworks that compute in double, then cast).
    #[inline]
    pub fn round64(self, x: f64) -> f32 {
        self.0.round_f32(x)
    }

    /// `a + b` in the dtype.
    #[inline]
    pub fn add(self, a: f32, b: f32) -> f32 {
        self.round(a + b)
    }

    /// `a − b` in the dtype.
    #[inline]
    pub fn sub(self, a: f32, b: f32) -> f32 {
        self.round(a - b)
    }

    /// `a × b` in the dtype.
    #[inline]
    pub fn mul(self, a: f32, b: f32) -> f32 {
        self.round(a * b)
    }

    /// `a ÷ b` in the dtype.
    #[inline]
    pub fn div(self, a: f32, b: f32) -> f32 {
        self.round(a / b)
    }

    /// `fma(a, b, c)` in the dtype. The f64 fma of fp32 operands is exact in the product and
    /// rounds the sum once; the second rounding to T is what a half-precision `fma` with an
    /// fp32-wide datapath does.
    #[inline]
    pub fn fma(self, a: f32, b: f32, c: f32) -> f32 {
        match self.0 {
            DType::F32 | DType::F64 => a.mul_add(b, c),
            _ => self.round64((a as f64).mul_add(b as f64, c as f64)),
        }
    }
}

/// fp32 → fp16 → fp32 with round-to-nearest-even. In fp16's normal range this drops the low 13
/// significand bits with an integer RNE on the fp32 bits (a carry into the exponent is the right
/// answer); subnormals, overflow and non-finite values take `half`'s conversion.
#[inline(always)]
pub(crate) fn round_f16(x: f32) -> f32 {
    let a = x.abs();
    // [2^-14, 65520): normal in fp16 and below the overflow threshold (max + ulp/2).
    if (6.103_515_6e-5..65520.0).contains(&a) {
        let b = x.to_bits();
        f32::from_bits((b + 0x0FFF + ((b >> 13) & 1)) & !0x1FFF)
    } else if a == 0.0 {
        x
    } else {
        f16::from_f32(x).to_f32()
    }
}

/// fp32 → bf16 → fp32 with round-to-nearest-even: the integer formula of PyTorch's c10 and MLX
/// on the fp32 bits (an overflow carries into infinity); NaN takes `half`'s conversion.
#[inline(always)]
pub(crate) fn round_bf16(x: f32) -> f32 {
    if x.is_nan() {
        return bf16::from_f32(x).to_f32();
    }
    let b = x.to_bits();
    f32::from_bits((b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF_0000)
}

/// Round half to even (`torch.round`, `np.round`, `rint`, `vcvtnq_s32_f32`).
#[inline]
pub(crate) fn rne(x: f32) -> f32 {
    x.round_ties_even()
}

/// A rounded float to an integer code: saturating, NaN to 0 (numpy 2.x `astype(int8)` on x86-64,
/// and what every reference path does with the `0/0` of an all-zero coremltools block).
#[inline]
pub(crate) fn to_code(x: f32) -> i32 {
    if x.is_nan() {
        0
    } else {
        x as i32
    }
}

/// fp32 → fp16 value (RNE), as ggml's `GGML_FP32_TO_FP16` stores scales.
#[inline]
pub(crate) fn fp16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// The value of fp16 bits.
#[inline]
pub(crate) fn f16_value(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

/// The value of bf16 bits.
#[inline]
pub(crate) fn bf16_value(bits: u16) -> f32 {
    bf16::from_bits(bits).to_f32()
}

/// `(min, max)` of a slice folded from `(+inf, −inf)` in element order, the way the frameworks'
/// reductions start (an empty slice gives the starting values back).
#[inline]
pub(crate) fn min_max(v: &[f32]) -> (f32, f32) {
    v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

/// `finfo(T).smallest_normal` as an f32: torchao's default eps since 2026-06-26 (#4534).
#[inline]
pub(crate) fn smallest_normal(t: DType) -> f32 {
    match t {
        DType::F16 => f16::MIN_POSITIVE.to_f32(),
        // bf16 shares fp32's exponent range.
        _ => f32::MIN_POSITIVE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 4099th fp32 bit pattern plus the neighbourhoods of every fp16 value (ties, subnormals,
    /// the overflow threshold): the fast roundings must equal `half`'s.
    #[test]
    fn fast_roundings_agree_with_half() {
        let mut checked = 0u64;
        let mut check = |bits: u32| {
            let x = f32::from_bits(bits);
            if x.is_nan() {
                return;
            }
            assert_eq!(round_f16(x).to_bits(), f16::from_f32(x).to_f32().to_bits(), "f16 of {x:e} ({bits:#010x})");
            assert_eq!(round_bf16(x).to_bits(), bf16::from_f32(x).to_f32().to_bits(), "bf16 of {x:e} ({bits:#010x})");
            checked += 1;
        };
        for bits in (0..=u32::MAX).step_by(4099) {
            check(bits);
        }
        for h in 0..=u16::MAX {
            let c = f16::from_bits(h).to_f32().to_bits();
            for d in [0u32, 1, 0xFFF, 0x1000, 0x1001, 0x1FFF, 0x7FFF, 0x8000, 0x8001] {
                check(c.wrapping_add(d));
                check(c.wrapping_sub(d));
            }
        }
        assert!(checked > 2_000_000);
    }
}

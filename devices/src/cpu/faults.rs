//! The deliberate bugs the cpu runner commits on request (`case.inject`), each where the real bug
//! lives: in the read of a packed byte, of the scale grid, of a group, or of the activation
//! zero-point. A fault that cannot bite this (op, scheme) (`Fault::applies` is `Err`) is not
//! committed: the case runs normally.

use crate::case::{Fault, OpCase};

/// How the kernel reads the per-token activation zero-point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ZpBinding {
    /// As written.
    Exact,
    /// Written as fp32, read as an int8: the low byte of the fp32 bits (`zp-bind-int8`), what an
    /// `rgba8i` fetch of an `r32f` texel returns in `.r`.
    Int8OfF32Bits,
    /// Written through an fp16 binding: the fp16 bit pattern as an i16, saturated to int8 when it
    /// is stored (`zp-bind-f16`), so any nonzero zero-point becomes 127 or −128.
    F16BitsSaturated,
}

impl ZpBinding {
    /// The zero-point the kernel sees when `zp` was written.
    #[inline]
    pub fn read(self, zp: i32) -> i32 {
        match self {
            ZpBinding::Exact => zp,
            ZpBinding::Int8OfF32Bits => (zp as f32).to_bits() as u8 as i8 as i32,
            ZpBinding::F16BitsSaturated => {
                let bits = half::f16::from_f32(zp as f32).to_bits() as i16 as i32;
                bits.clamp(-128, 127)
            }
        }
    }
}

/// The faults in force for one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Faults {
    /// Swap the high and low nibble of every packed byte of 4-bit codes before decoding.
    pub nibble_swap: bool,
    /// Read the weight scale of `(n, g)` at `g·N + n` of the `[N, G]` grid.
    pub scale_transpose: bool,
    /// The last group of every weight row contributes nothing (dequantizes to +0).
    pub drop_last_group: bool,
    /// How the activation zero-point is read.
    pub zp: ZpBinding,
}

impl Faults {
    /// No fault.
    pub const NONE: Faults =
        Faults { nibble_swap: false, scale_transpose: false, drop_last_group: false, zp: ZpBinding::Exact };

    /// The faults a case asks for that can bite its (op, scheme).
    pub fn for_case(case: &OpCase) -> Faults {
        let mut f = Faults::NONE;
        if let Some(fault) = case.inject {
            if fault.applies(case.op, &case.scheme).is_ok() {
                match fault {
                    Fault::ZpBindInt8 => f.zp = ZpBinding::Int8OfF32Bits,
                    Fault::ZpBindF16 => f.zp = ZpBinding::F16BitsSaturated,
                    Fault::NibbleSwap => f.nibble_swap = true,
                    Fault::ScaleTranspose => f.scale_transpose = true,
                    Fault::DropLastGroup => f.drop_last_group = true,
                    // Committed by the isolated worker process around the device, never by a
                    // runner inside the harness's own process.
                    Fault::Crash | Fault::Hang => {}
                }
            }
        }
        f
    }

    /// The grid cell the scale of `(n, g)` is read from, for a `[rows, groups]` grid.
    #[inline]
    pub fn scale_cell(&self, n: usize, g: usize, rows: usize, groups: usize) -> (usize, usize) {
        if self.scale_transpose {
            let flat = g * rows + n;
            (flat / groups, flat % groups)
        } else {
            (n, g)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_point_bindings() {
        // Small integers have zero low mantissa bytes in fp32: the int8 view reads 0.
        assert_eq!(ZpBinding::Int8OfF32Bits.read(-37), 0);
        assert_eq!(ZpBinding::Int8OfF32Bits.read(0), 0);
        assert_eq!(ZpBinding::F16BitsSaturated.read(1), 127);
        assert_eq!(ZpBinding::F16BitsSaturated.read(-1), -128);
        assert_eq!(ZpBinding::F16BitsSaturated.read(0), 0);
        assert_eq!(ZpBinding::Exact.read(-5), -5);
    }

    #[test]
    fn transposed_cells_stay_in_the_grid() {
        let f = Faults { scale_transpose: true, ..Faults::NONE };
        for (rows, groups) in [(3, 5), (5, 3), (4, 4), (1, 7)] {
            for n in 0..rows {
                for g in 0..groups {
                    let (a, b) = f.scale_cell(n, g, rows, groups);
                    assert!(a < rows && b < groups);
                }
            }
        }
    }
}

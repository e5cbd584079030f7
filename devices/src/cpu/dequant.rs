//! The dequantization kernel: one weight row from packed bytes to values in the compute dtype,
//! with each framework's own arithmetic ([`Formula`]), and the `dequantize` and `embedding` ops
//! built on it (rows in parallel; each row is computed by one task, so the bits do not depend on
//! the thread count).

use super::bad_case;
use super::faults::Faults;
use super::par::for_chunks;
use super::storage::{Formula, PackedWeights};
use crate::case::OpCase;
use crate::device::DeviceError;

/// Dequantize row `n` of `w` into `out` (`cols` long), using `codes` (`cols` long) as scratch.
///
/// The faults bite here: nibble-swap in the decode, scale-transpose in the scale read, and
/// drop-last-group zeroes the row's last group (it dequantizes to +0, so a GEMM over the row
/// gets nothing from it).
pub(crate) fn dequant_row(w: &PackedWeights, n: usize, faults: &Faults, codes: &mut [i32], out: &mut [f32]) {
    w.decode_row(n, faults.nibble_swap, codes);
    let t = w.t;
    let gl = w.group_len;
    match w.formula {
        Formula::IntZp => {
            for g in 0..w.groups {
                let (s, z) = (w.scale(n, g, faults), w.int_zero(n, g));
                for k in g * gl..(g + 1) * gl {
                    // (q − zp) is a small integer, exact in every dtype; the fp32 product is
                    // PyTorch's promote(T, scale) product, then the cast to T.
                    out[k] = t.round((codes[k] - z) as f32 * s);
                }
            }
        }
        Formula::MulAdd => {
            for g in 0..w.groups {
                let (s, z) = (w.scale(n, g, faults), w.zero(n, g));
                for k in g * gl..(g + 1) * gl {
                    out[k] = t.add(t.mul(s, codes[k] as f32), z);
                }
            }
        }
        Formula::GgmlScale | Formula::GgmlScaleMin | Formula::GgmlK => {
            for g in 0..w.groups {
                let (d, m) = w.ggml_params(n, g, faults);
                let (c, o) = (&codes[g * 32..(g + 1) * 32], &mut out[g * 32..(g + 1) * 32]);
                match w.formula {
                    Formula::GgmlScale => o.iter_mut().zip(c).for_each(|(o, &q)| *o = q as f32 * d),
                    // ggml's dequantize_row_q4_1: `x*d + m`; the product of a 4-bit code and an
                    // fp16 d is exact, so a contracting compiler gets the same bits.
                    Formula::GgmlScaleMin => o.iter_mut().zip(c).for_each(|(o, &q)| *o = q as f32 * d + m),
                    _ => o.iter_mut().zip(c).for_each(|(o, &q)| *o = d * q as f32 - m),
                }
            }
        }
        Formula::Lut => {
            for (c, (o, &idx)) in out.iter_mut().zip(codes.iter()).enumerate() {
                *o = w.lut_value(n, c, idx);
            }
        }
    }
    if faults.drop_last_group && w.groups > 0 {
        out[(w.groups - 1) * gl..].iter_mut().for_each(|v| *v = 0.0);
    }
}

/// The `dequantize` op: every row of `w`, `[rows, cols]` row-major.
pub(crate) fn dequantize(w: &PackedWeights, faults: &Faults) -> Vec<f32> {
    let mut out = vec![0f32; w.rows * w.cols];
    dequantize_into(w, faults, &mut out);
    out
}

/// [`dequantize`] into `out` (`rows * cols` values): a caller that keeps its buffer (a benchmark
/// sample, a kernel writing a preallocated tensor) pays no allocation or page faults.
pub(crate) fn dequantize_into(w: &PackedWeights, faults: &Faults, out: &mut [f32]) {
    let cols = w.cols;
    debug_assert_eq!(out.len(), w.rows * cols);
    if cols == 0 {
        return;
    }
    for_chunks(out, cols, cols, || vec![0i32; cols], |codes, n, row| row_values(w, n, faults, codes, row));
}

/// Row `n` of `w` into `out`: the fused one-pass decode when there is no fault and the layout
/// has one (the same bits: `fused_decode_equals_dequant_row`), else [`dequant_row`].
fn row_values(w: &PackedWeights, n: usize, faults: &Faults, codes: &mut [i32], out: &mut [f32]) {
    if *faults != Faults::NONE || !w.dequant_row_fused(n, out) {
        dequant_row(w, n, faults, codes, out);
    }
}

/// The `embedding` op: rows `ids` of the quantized table `w`, each dequantized on its own.
pub(crate) fn embedding(
    case: &OpCase,
    w: &PackedWeights,
    ids: &[u32],
    faults: &Faults,
) -> Result<Vec<f32>, DeviceError> {
    if let Some((i, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= w.rows) {
        return Err(bad_case(case, format!("ids[{i}] = {id} is past the table's {} rows", w.rows)));
    }
    let d = w.cols;
    let mut out = vec![0f32; ids.len() * d];
    if d == 0 {
        return Ok(out);
    }
    for_chunks(&mut out, d, d, || vec![0i32; d], |codes, i, row| row_values(w, ids[i] as usize, faults, codes, row));
    Ok(out)
}

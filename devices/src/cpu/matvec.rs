//! The decode-shape weight-only linear (one token, fp32): decode and dot product fused in one
//! AVX2 pass over the packed weights, for the layouts LLM decoding is bound by: ggml Q4_0 and
//! Q4_1 blocks and torchao's unpacked int8 codes with int zero-points (`w{b}…-ao`,
//! coremltools, fbgemm `sym8`).
//!
//! It is the op path's arithmetic exactly (`dequant_row` then [`dot_f32`](super::linear)): each
//! weight is dequantized by its framework's formula into an fp32 value, multiplied by the
//! activation (rounded), and added (rounded; never fused) into lane `k mod 8` of one 8-lane
//! accumulator per row, the lanes reduced pairwise at the end, then `+ 0.0` (the tail of an
//! 8-divisible row). So the bits are the same as the portable path's; what changes is that no
//! weight row is ever written to memory: the packed bytes are read once, in order, and four rows
//! are walked together so that four independent add chains hide the add latency.
//!
//! The decode in the kernel:
//! - Q4_0: `(u − 8) · d` with `d` the block's fp16 scale (exact: a 4-bit integer times an fp16
//!   value fits in fp32's significand).
//! - Q4_1: `u · d + m`, one rounding (the product is exact, so a fused multiply-add gives the bits
//!   of ggml's `x*d + m`).
//! - unpacked int8 / uint8: `f32(c − zp) · s` with `s` the stored scale widened to fp32: one
//!   rounding, as PyTorch's `(q - zp) * scale` in fp32.

use super::linear::dot_f32;
use super::par::for_chunks;
use super::storage::{Formula, PackedWeights};
use kernels_ref::dtype::DType;
use kernels_ref::pack::Packing;

/// Rows walked together by one pass.
const ROWS: usize = 4;
/// Output rows per task: 64 rows of a 4096-wide Q4_0 matrix are 144 KiB of weights, enough to
/// amortize a task and small enough to balance the threads.
const TASK_ROWS: usize = 64;

/// `y = x · Ŵᵀ` for one fp32 token `x` (`K` values), or `None` where this kernel does not apply
/// (another layout or dtype, no AVX2): the caller then takes the general path, whose bits are
/// the same.
pub(crate) fn matvec(w: &PackedWeights, x: &[f32]) -> Option<Vec<f32>> {
    let layout = Layout::of(w)?;
    if x.len() != w.cols || !kernel_available() {
        return None;
    }
    let mut y = vec![0f32; w.rows];
    for_chunks(
        &mut y,
        TASK_ROWS,
        TASK_ROWS * w.cols,
        || (Vec::new(), Vec::new()),
        |(scales, zeros), task, out| {
            let first = task * TASK_ROWS;
            for (i, quad) in out.chunks_mut(ROWS).enumerate() {
                let n0 = first + i * ROWS;
                match rows(w, layout, x, n0, quad.len(), scales, zeros) {
                    Some(sums) => quad.copy_from_slice(&sums[..quad.len()]),
                    None => {
                        // A non-finite Q4_0 scale: the rows take the two-step path.
                        let mut row = vec![0f32; w.cols];
                        for (r, y) in quad.iter_mut().enumerate() {
                            let fused = w.dequant_row_fused(n0 + r, &mut row);
                            debug_assert!(fused, "every layout here has a one-pass decode");
                            *y = dot_f32(x, &row);
                        }
                    }
                }
            }
        },
    );
    Some(y)
}

/// The packed layouts the fused kernel decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// ggml Q4_0: 18-byte blocks (fp16 `d`, 16 bytes of nibbles).
    Q4_0,
    /// ggml Q4_1: 20-byte blocks (fp16 `d`, fp16 `m`, 16 bytes of nibbles).
    Q4_1,
    /// One byte per code, `signed` or not, `f32(c − zp) · s` per group of `group_len` (a multiple
    /// of 8).
    Unpacked { signed: bool },
}

impl Layout {
    fn of(w: &PackedWeights) -> Option<Layout> {
        if w.t.0 != DType::F32 || w.cols == 0 {
            return None;
        }
        match (w.packing(), w.formula) {
            (Packing::GgmlQ4_0, Formula::GgmlScale) => Some(Layout::Q4_0),
            (Packing::GgmlQ4_1, Formula::GgmlScaleMin) => Some(Layout::Q4_1),
            (Packing::Unpacked { signed, .. }, Formula::IntZp)
                if w.group_len > 0 && w.group_len % 8 == 0 && w.cols % w.group_len == 0 =>
            {
                Some(Layout::Unpacked { signed })
            }
            _ => None,
        }
    }
}

fn kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::linear::has_avx2() && std::is_x86_feature_detected!("fma") && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The sums of rows `n0..n0 + count` (`count <= ROWS`; the rest of the array is unused), or
/// `None` where the fused decode would not give the op path's bits (a Q4_0 block whose fp16
/// scale is infinite or NaN: `u·d − 8·d` is then NaN where `(u − 8)·d` is not).
#[allow(unused_variables)]
fn rows(
    w: &PackedWeights,
    layout: Layout,
    x: &[f32],
    n0: usize,
    count: usize,
    scales: &mut Vec<f32>,
    zeros: &mut Vec<i32>,
) -> Option<[f32; ROWS]> {
    #[cfg(target_arch = "x86_64")]
    {
        // The rows past `count` are computed on row `n0` again (in range) and dropped.
        let idx: [usize; ROWS] = std::array::from_fn(|r| if r < count { n0 + r } else { n0 });
        let bytes = w.packed_bytes();
        // The next pass's rows, prefetched in order while this one computes (see `prefetch`).
        let row_bytes = bytes.len() / w.rows;
        let ahead = bytes.get((n0 + ROWS) * row_bytes..).unwrap_or(&[]);
        let ahead = &ahead[..ahead.len().min(ROWS * row_bytes)];
        // SAFETY: `matvec` checked AVX2, FMA and F16C (`kernel_available`); every row index is
        // below `w.rows`, and the layouts' byte counts are the packing's (checked by the callees'
        // slicing before any pointer is read).
        unsafe {
            match layout {
                Layout::Q4_0 => match x86::ggml_rows::<false>(bytes, w.cols, idx, x, ahead) {
                    (sums, false) => Some(sums),
                    (_, true) => None,
                },
                Layout::Q4_1 => Some(x86::ggml_rows::<true>(bytes, w.cols, idx, x, ahead).0),
                Layout::Unpacked { signed } => {
                    scales.clear();
                    zeros.clear();
                    let mut has_zp = false;
                    for &n in &idx {
                        has_zp |= w.row_qparams(n, scales, zeros);
                    }
                    let sym = !has_zp || zeros.iter().all(|&z| z == 0);
                    Some(match (signed, sym) {
                        (true, true) => {
                            x86::unpacked_rows::<true, false>(bytes, w.cols, w.group_len, idx, x, scales, zeros, ahead)
                        }
                        (true, false) => {
                            x86::unpacked_rows::<true, true>(bytes, w.cols, w.group_len, idx, x, scales, zeros, ahead)
                        }
                        (false, true) => {
                            x86::unpacked_rows::<false, false>(bytes, w.cols, w.group_len, idx, x, scales, zeros, ahead)
                        }
                        (false, false) => {
                            x86::unpacked_rows::<false, true>(bytes, w.cols, w.group_len, idx, x, scales, zeros, ahead)
                        }
                    })
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        unreachable!("matvec returns None where there is no kernel")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::ROWS;
    use std::arch::x86_64::*;

    /// `((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7)) + 0.0`: `dot_f32`'s reduction.
    #[inline(always)]
    unsafe fn reduce(v: __m256) -> f32 {
        unsafe {
            let mut l = [0f32; 8];
            _mm256_storeu_ps(l.as_mut_ptr(), v);
            ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7])) + 0.0
        }
    }

    /// Step `i` of `n` of prefetching `ahead` (the next pass's rows, contiguous): the bytes
    /// `[i·per, (i+1)·per)` with `per = ⌈len/n⌉` (`per` is computed once per pass: no division
    /// here). One sequential sweep per pass instead of leaving the hardware prefetcher four
    /// interleaved streams to find: the rows of a pass arrive while the previous pass computes.
    #[inline(always)]
    fn prefetch(ahead: &[u8], per: usize, i: usize) {
        let (first, last) = (i * per, (i * per + per).min(ahead.len()));
        if first < last {
            // SAFETY: every address is in `[first, last)`, inside `ahead`; a prefetch never faults and
            // reads nothing architecturally.
            unsafe {
                let mut at = first;
                while at < last {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.as_ptr().add(at) as *const i8);
                    at += 64;
                }
                _mm_prefetch::<_MM_HINT_T0>(ahead.as_ptr().add(last - 1) as *const i8);
            }
        }
    }

    /// ggml Q4_0 (`MIN = false`) or Q4_1 rows `idx`, `k` columns; `true` when some Q4_0 scale
    /// was infinite or NaN (the sums are then not the op path's).
    ///
    /// # Safety
    /// AVX2, FMA and F16C; `bytes` holds whole rows of `k / 32` blocks and every `idx` is a row.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn ggml_rows<const MIN: bool>(
        bytes: &[u8],
        k: usize,
        idx: [usize; ROWS],
        x: &[f32],
        ahead: &[u8],
    ) -> ([f32; ROWS], bool) {
        unsafe {
            let bb = if MIN { 20 } else { 18 };
            let qs_at = if MIN { 4 } else { 2 };
            let nb = k / 32;
            let row_bytes = nb * bb;
            let rows: [&[u8]; ROWS] = std::array::from_fn(|r| &bytes[idx[r] * row_bytes..(idx[r] + 1) * row_bytes]);
            let x = &x[..nb * 32];
            let mask = _mm256_set1_epi8(0x0F);
            // Byte j of a 16-byte half into dword j (bytes 0..4 in the low 128-bit lane, 4..8 in
            // the high one, as `vpshufb` works within lanes); 0x80 writes a zero byte.
            let spread = |first: i8| {
                let b = |i: i8| [first + i, -128, -128, -128];
                let lane = |o: i8| [b(o), b(o + 1), b(o + 2), b(o + 3)].concat();
                let v: Vec<i8> = [lane(0), lane(4)].concat();
                _mm256_loadu_si256(v.as_ptr() as *const __m256i)
            };
            let (c_lo, c_hi) = (spread(0), spread(8));
            let minus8 = _mm256_set1_ps(-8.0);
            let mut acc = [_mm256_setzero_ps(); ROWS];
            let mut nonfinite = false;
            let per = ahead.len().div_ceil(nb.max(1));
            for b in 0..nb {
                prefetch(ahead, per, b);
                let xp = x.as_ptr().add(32 * b);
                let xv = [
                    _mm256_loadu_ps(xp),
                    _mm256_loadu_ps(xp.add(8)),
                    _mm256_loadu_ps(xp.add(16)),
                    _mm256_loadu_ps(xp.add(24)),
                ];
                for r in 0..ROWS {
                    let blk = rows[r].as_ptr().add(b * bb);
                    // fp16 exponent bits all ones (the high byte's bits 6..2): an infinite or
                    // NaN scale. A byte load of its own, so the broadcast below still reads memory.
                    nonfinite |= *blk.add(1) & 0x7C == 0x7C;
                    let d = _mm256_cvtph_ps(_mm_set1_epi16(std::ptr::read_unaligned(blk as *const i16)));
                    // Q4_0: (u − 8)·d = u·d + (−8·d), all exact, so one fused multiply-add.
                    let m = if MIN {
                        _mm256_cvtph_ps(_mm_set1_epi16(std::ptr::read_unaligned(blk.add(2) as *const i16)))
                    } else {
                        _mm256_mul_ps(d, minus8)
                    };
                    let qs = _mm256_broadcastsi128_si256(_mm_loadu_si128(blk.add(qs_at) as *const __m128i));
                    let lo = _mm256_and_si256(qs, mask);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(qs, 4), mask);
                    // Elements 0..16 are the low nibbles of bytes 0..16, 16..32 the high nibbles.
                    let ints = [
                        _mm256_shuffle_epi8(lo, c_lo),
                        _mm256_shuffle_epi8(lo, c_hi),
                        _mm256_shuffle_epi8(hi, c_lo),
                        _mm256_shuffle_epi8(hi, c_hi),
                    ];
                    for j in 0..4 {
                        let wv = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ints[j]), d, m);
                        acc[r] = _mm256_add_ps(acc[r], _mm256_mul_ps(xv[j], wv));
                    }
                }
            }
            (std::array::from_fn(|r| reduce(acc[r])), !MIN && nonfinite)
        }
    }

    /// Unpacked one-byte codes (`SIGNED` int8 or uint8), rows `idx`, `k` columns in groups of
    /// `gl`; `scales` and `zeros` hold `k / gl` values per row, rows in `idx` order (`ZP = false`
    /// when every zero-point is 0: the subtraction is then skipped).
    ///
    /// # Safety
    /// AVX2; `bytes` holds `k` bytes per row and every `idx` is a row; `gl` divides `k` and is a
    /// multiple of 8.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn unpacked_rows<const SIGNED: bool, const ZP: bool>(
        bytes: &[u8],
        k: usize,
        gl: usize,
        idx: [usize; ROWS],
        x: &[f32],
        scales: &[f32],
        zeros: &[i32],
        ahead: &[u8],
    ) -> [f32; ROWS] {
        unsafe {
            let groups = k / gl;
            let rows: [&[u8]; ROWS] = std::array::from_fn(|r| &bytes[idx[r] * k..(idx[r] + 1) * k]);
            let x = &x[..k];
            let (scales, zeros) = (&scales[..ROWS * groups], &zeros[..ROWS * groups]);
            let mut acc = [_mm256_setzero_ps(); ROWS];
            let per = ahead.len().div_ceil(groups.max(1));
            for g in 0..groups {
                prefetch(ahead, per, g);
                let s: [__m256; ROWS] = std::array::from_fn(|r| _mm256_set1_ps(scales[r * groups + g]));
                let z: [__m256i; ROWS] = std::array::from_fn(|r| _mm256_set1_epi32(zeros[r * groups + g]));
                for c in (g * gl..(g + 1) * gl).step_by(8) {
                    let xv = _mm256_loadu_ps(x.as_ptr().add(c));
                    for r in 0..ROWS {
                        let raw = _mm_loadl_epi64(rows[r].as_ptr().add(c) as *const __m128i);
                        let mut ints = if SIGNED { _mm256_cvtepi8_epi32(raw) } else { _mm256_cvtepu8_epi32(raw) };
                        if ZP {
                            ints = _mm256_sub_epi32(ints, z[r]);
                        }
                        let wv = _mm256_mul_ps(_mm256_cvtepi32_ps(ints), s[r]);
                        acc[r] = _mm256_add_ps(acc[r], _mm256_mul_ps(xv, wv));
                    }
                }
            }
            std::array::from_fn(|r| reduce(acc[r]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::dequant::dequant_row;
    use crate::cpu::faults::Faults;
    use kernels_ref::scheme::Scheme;
    use kernels_ref::tensor::Matrix;
    use proptest::prelude::*;

    /// The op path's definition: dequantize the row, then `dot_f32`.
    fn reference(p: &PackedWeights, x: &[f32]) -> Vec<f32> {
        let (mut codes, mut row) = (vec![0i32; p.cols], vec![0f32; p.cols]);
        (0..p.rows)
            .map(|r| {
                dequant_row(p, r, &Faults::NONE, &mut codes, &mut row);
                dot_f32(x, &row)
            })
            .collect()
    }

    const SCHEMES: [&str; 8] = [
        "q4_0",
        "q4_1",
        "w4g32-sym-ao",
        "w4g32-asym-ao",
        "w8g64-sym-ao",
        "w8pc-asym-ao",
        "w4g32-asym-coreml",
        "w4pc-symclip",
    ];

    fn values(seed: u64, len: usize, special: bool) -> Vec<f32> {
        let mut s = seed | 1;
        (0..len)
            .map(|i| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
                match (special, s % 29) {
                    (true, 0) => 0.0,
                    (true, 1) => -0.0,
                    (true, 2) => 300.0 * u,
                    _ if special && i % 7 == 0 => 1e-3 * u,
                    _ => u,
                }
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The fused kernel gives the op path's bits (or declines) for every layout, any row
        /// count (tails of the 4-row passes and of the 64-row tasks) and K.
        #[test]
        fn matvec_equals_dequant_then_dot(
            scheme in 0..SCHEMES.len(), n in 1usize..140, kb in 1usize..10, seed in any::<u64>(), zero_row in any::<bool>(),
        ) {
            let k = 32 * kb;
            let mut data = values(seed, n * k, true);
            if zero_row {
                data[..k].iter_mut().for_each(|v| *v = 0.0);
            }
            let w = Matrix { rows: n, cols: k, data };
            let s: Scheme = SCHEMES[scheme].parse().unwrap();
            let Ok(q) = s.quantize(&w) else { return Ok(()) };
            let p = PackedWeights::from_quantized(&q).unwrap();
            let x = values(seed ^ 0xabcd, k, true);
            if let Some(y) = matvec(&p, &x) {
                let want = reference(&p, &x);
                for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                    prop_assert_eq!(a.to_bits(), b.to_bits(), "{} n={} k={} row {}: {} vs {}", SCHEMES[scheme], n, k, i, a, b);
                }
            } else {
                prop_assert!(!kernel_available() || Layout::of(&p).is_none(), "{} declined", SCHEMES[scheme]);
            }
        }
    }

    /// An infinite or NaN Q4_0 scale (an fp16 overflow in a checkpoint) sends its rows to the
    /// two-step path: `(u − 8)·∞` is ±∞ (NaN for u = 8) where the fused `u·d − 8·d` is NaN.
    #[test]
    fn nonfinite_q4_0_scales_keep_the_op_path_bits() {
        let (n, k) = (9, 64);
        let w = Matrix { rows: n, cols: k, data: values(7, n * k, false) };
        let mut q = "q4_0".parse::<Scheme>().unwrap().quantize(&w).unwrap();
        q.scales[2] = f32::INFINITY;
        q.scales[7] = f32::NEG_INFINITY;
        q.scales[9] = f32::NAN;
        let p = PackedWeights::from_quantized(&q).unwrap();
        let x = values(8, k, false);
        let Some(y) = matvec(&p, &x) else { return };
        let want = reference(&p, &x);
        for (i, (a, b)) in y.iter().zip(&want).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "row {i}: {a} vs {b}");
        }
        assert!(y[1].is_infinite() || y[1].is_nan(), "row 1 has an infinite scale: {}", y[1]);
    }
}

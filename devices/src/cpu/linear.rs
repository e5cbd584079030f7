//! `y = x · Ŵᵀ` on packed weights: the weight-only GEMM (dequantize a tile of weight rows in the
//! kernel, then dot products with the framework's accumulation), and the 8da4w integer GEMM
//! (int8 activation codes × int4 weight codes, i32 accumulators per group, a float correction
//! per group).
//!
//! Work is split over tiles of [`TILE_N`] output channels; every output element is computed by
//! one task in a fixed order, so the result does not depend on the number of threads.
//!
//! Whole models ([`linear_rows`], [`linear_8da4w_values`]) use the same arithmetic, blocked for
//! prompts: L2-sized tiles of weight rows decoded once per call (fp32 rows read in place), a
//! register-blocked 4 tokens × 2 rows dot-product kernel ([`dot_block`], with an AVX2 instance of
//! the same unfused operations), and outputs assembled token-major without a transpose.

use super::act::{self, Tokens};
use super::bad_case;
use super::dequant::dequant_row;
use super::faults::{Faults, ZpBinding};
use super::num::Arith;
use super::par::{for_chunks, map_tasks};
use super::storage::PackedWeights;
use crate::case::{OpCase, Outputs};
use crate::device::DeviceError;
use kernels_ref::scheme::{Scheme, W8da4wFlavor};
use kernels_ref::tensor::Matrix;

/// Output channels (weight rows) per task.
pub(crate) const TILE_N: usize = 8;

/// How a dot product accumulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accum {
    /// fp32 in 8 lanes (k mod 8), reduced pairwise, then one rounding to T: PyTorch's opmath
    /// for fp16/bf16 `linear`, and every fp32 GEMM.
    F32,
    /// In T, one product and one add at a time, k ascending: MLX's CPU `_qmm` (`sum += x·w` in
    /// `float16_t` / `bfloat16_t`).
    InT,
}

/// The weight-only linear: `y[m, n] = Σ_k T(x[m, k]) · ŵ[n, k]`, `[M, N]` row-major.
pub(crate) fn linear(w: &PackedWeights, x: &Matrix, accum: Accum, faults: &Faults) -> Vec<f32> {
    let (m, k, n) = (x.rows, x.cols, w.rows);
    if *faults == Faults::NONE {
        // Without faults, a model's kernels compute exactly these bits, faster.
        return linear_rows(&x.data, m, k, Rows::Packed(w), n, accum, w.t);
    }
    let t = w.t;
    let xt: Vec<f32> = x.data.iter().map(|&v| t.round(v)).collect();
    let mut yt = vec![0f32; n * m];
    let init = || (vec![0i32; k], vec![0f32; TILE_N * k]);
    for_chunks(&mut yt, TILE_N * m, TILE_N * m * k, init, |(codes, tile), ti, ychunk| {
        let rows = ychunk.len() / m;
        for r in 0..rows {
            dequant_row(w, ti * TILE_N + r, faults, codes, &mut tile[r * k..(r + 1) * k]);
        }
        for (r, yrow) in ychunk.chunks_mut(m).enumerate() {
            let wr = &tile[r * k..(r + 1) * k];
            let xr = |mi: usize| &xt[mi * k..(mi + 1) * k];
            match accum {
                Accum::F32 => {
                    for (mi, y) in yrow.iter_mut().enumerate() {
                        *y = t.round(dot_f32(xr(mi), wr));
                    }
                }
                Accum::InT => {
                    // Four tokens at a time: four independent rounding chains in flight, each
                    // in its own k order, so the bits are those of one token at a time.
                    let mut ys = yrow.chunks_exact_mut(4);
                    for (i, y4) in (&mut ys).enumerate() {
                        let mi = 4 * i;
                        y4.copy_from_slice(&dot_in4(t, [xr(mi), xr(mi + 1), xr(mi + 2), xr(mi + 3)], wr));
                    }
                    let done = m - m % 4;
                    for (j, y) in ys.into_remainder().iter_mut().enumerate() {
                        *y = dot_in(t, xr(done + j), wr);
                    }
                }
            }
        }
    });
    transpose(&yt, n, m)
}

/// fp32 dot product in 8 lanes (what a vectorized kernel does), lanes reduced pairwise.
#[inline]
pub(super) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for j in 0..8 {
            lanes[j] += x[j] * y[j];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ar.iter().zip(br) {
        tail += x * y;
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7])) + tail
}

/// Dot product accumulated in T, one rounding per product and per add.
#[inline]
fn dot_in(t: Arith, a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |acc, (&x, &y)| t.add(acc, t.mul(x, y)))
}

/// [`dot_in`] for four activation rows against one weight row.
#[inline]
fn dot_in4(t: Arith, x: [&[f32]; 4], w: &[f32]) -> [f32; 4] {
    let mut acc = [0f32; 4];
    for (k, &wk) in w.iter().enumerate() {
        for j in 0..4 {
            acc[j] = t.add(acc[j], t.mul(x[j][k], wk));
        }
    }
    acc
}

/// `[rows, cols]` row-major to `[cols, rows]`.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

/// The 8da4w linear: quantize the activations per token with the flavour's quantizer, then
/// `acc[m, n, g] = Σ_{k∈g} (a_k − zp_m)·q_k` in i32 (as the raw `Σ a·q` minus `zp·Σ q`, the
/// weight group sums being precomputed per tile), and the float correction per group:
///
/// - `ao`, `xnn`: `y = T(s_a · Σ_g fma(acc_g, s_w[g]))` in fp32 (XNNPACK's qd8-f32-qb4w order; a
///   production torchao CPU kernel is this integer one, not the eager fake-quant).
/// - `vk`: `out = fma(T(acc_g), T(s_a·s_w[g]), out)` in T, groups ascending
///   (`linear_dq8ca_q4gsw`, fp16 accumulation in half mode).
///
/// Outputs `values` = y, `ints` `act_q`, `act_zp`, `acc`, `floats` `act_scales`.
pub(crate) fn linear_8da4w(
    case: &OpCase,
    w: &PackedWeights,
    x: &Matrix,
    flavor: W8da4wFlavor,
    faults: &Faults,
) -> Result<Outputs, DeviceError> {
    let act_scheme =
        case.scheme.activation_scheme().ok_or_else(|| bad_case(case, "8da4w without an activation scheme".into()))?;
    let tok = act::quantize(&act_scheme, x, faults.zp).map_err(|e| bad_case(case, e))?;
    let (m, n, g) = (x.rows, w.rows, w.groups);
    let (yt, acct) = gemm_8da4w(w, &tok, m, flavor, faults, true);
    let values = transpose(&yt, n, m);
    let mut acc = vec![0i64; m * n * g];
    for ni in 0..n {
        for mi in 0..m {
            let src = &acct[(ni * m + mi) * g..(ni * m + mi + 1) * g];
            acc[(mi * n + ni) * g..(mi * n + ni + 1) * g].copy_from_slice(src);
        }
    }
    let mut out = Outputs { values, shape: vec![m, n], ..Outputs::default() };
    out.ints.insert("act_q".into(), tok.q.iter().map(|&v| v as i64).collect());
    out.ints.insert("act_zp".into(), tok.zp.as_deref().unwrap_or(&[]).iter().map(|&v| v as i64).collect());
    out.ints.insert("acc".into(), acc);
    out.floats.insert("act_scales".into(), tok.scales.clone());
    Ok(out)
}

/// The 8da4w linear of a model (no faults, no per-group accumulators kept): `x` `[M, K]`
/// row-major is quantized per token with `act_scheme` (the 8da4w scheme's activation scheme),
/// then the integer GEMM of [`linear_8da4w`]. Returns `[M, N]` row-major; the error says why the
/// activation quantizer refused `x` (a NaN or an infinity).
pub(crate) fn linear_8da4w_values(
    w: &PackedWeights,
    x: &Matrix,
    flavor: W8da4wFlavor,
    act_scheme: &Scheme,
) -> Result<Vec<f32>, String> {
    let tok = act::quantize(act_scheme, x, ZpBinding::Exact)?;
    let (yt, _) = gemm_8da4w(w, &tok, x.rows, flavor, &Faults::NONE, false);
    Ok(transpose_blocked(&yt, w.rows, x.rows))
}

/// The integer GEMM of [`linear_8da4w`] over quantized tokens: `y` as `[N, M]` and, when
/// `keep_acc`, the per-group accumulators as `[N, M, G]`.
fn gemm_8da4w(
    w: &PackedWeights,
    tok: &Tokens,
    m: usize,
    flavor: W8da4wFlavor,
    faults: &Faults,
    keep_acc: bool,
) -> (Vec<f32>, Vec<i64>) {
    let (k, n, g) = (tok.cols, w.rows, w.groups);
    let t = w.t;
    let mut yt = vec![0f32; n * m];
    let kernel = Kernel8da4w { w, tok, flavor, faults, t };
    let init = || Tile8da4w {
        codes: vec![0i32; k],
        q: vec![0i8; TILE_N * k],
        wsum: vec![0i32; TILE_N * g],
        acc: vec![0i64; g],
        sw: vec![0f32; TILE_N * g],
        row_sw: Vec::with_capacity(g),
        row_zp: Vec::with_capacity(g),
    };
    // Each tile returns its `[rows, M, G]` block of accumulators with its outputs.
    let acct = for_chunks(&mut yt, TILE_N * m, TILE_N * m * k, init, |buf, ti, ychunk| {
        tile_8da4w(&kernel, ti, m, buf, ychunk, keep_acc)
    })
    .concat();
    (yt, acct)
}

/// Per-task scratch of the 8da4w GEMM.
struct Tile8da4w {
    codes: Vec<i32>,
    /// The tile's int4 weight codes as i8, `[TILE_N, K]`.
    q: Vec<i8>,
    /// Their per-group sums, `[TILE_N, G]`.
    wsum: Vec<i32>,
    /// One output's accumulators when they are not kept.
    acc: Vec<i64>,
    /// The tile's weight scales, `[TILE_N, G]`, read through the faults once per tile.
    sw: Vec<f32>,
    /// One row's scales and zero-points as `PackedWeights::row_qparams` reads them.
    row_sw: Vec<f32>,
    row_zp: Vec<i32>,
}

/// One tile of [`gemm_8da4w`]: decode `TILE_N` weight rows, then every output of them; returns
/// the accumulators when `keep_acc`. Runs an AVX2+FMA instance where the CPU has both (integer
/// sums are exact and `fma` is one rounding either way: the same bits).
fn tile_8da4w(k: &Kernel8da4w<'_>, ti: usize, m: usize, b: &mut Tile8da4w, y: &mut [f32], keep: bool) -> Vec<i64> {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() && std::is_x86_feature_detected!("fma") {
            // SAFETY: `tile_8da4w_avx2` requires AVX2 and FMA, which the CPU has just been
            // checked for.
            return unsafe { tile_8da4w_avx2(k, ti, m, b, y, keep) };
        }
    }
    tile_8da4w_body(k, ti, m, b, y, keep)
}

/// [`tile_8da4w_body`] compiled with AVX2 and FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_8da4w_avx2(
    k: &Kernel8da4w<'_>,
    ti: usize,
    m: usize,
    b: &mut Tile8da4w,
    y: &mut [f32],
    keep: bool,
) -> Vec<i64> {
    tile_8da4w_body(k, ti, m, b, y, keep)
}

#[inline(always)]
fn tile_8da4w_body(
    kernel: &Kernel8da4w<'_>,
    ti: usize,
    m: usize,
    b: &mut Tile8da4w,
    ychunk: &mut [f32],
    keep_acc: bool,
) -> Vec<i64> {
    let (w, k, g, gl) = (kernel.w, kernel.tok.cols, kernel.w.groups, kernel.w.group_len);
    let rows = ychunk.len() / m;
    for r in 0..rows {
        let q = &mut b.q[r * k..(r + 1) * k];
        if kernel.faults.nibble_swap || !w.decode_row_i8(ti * TILE_N + r, q) {
            w.decode_row(ti * TILE_N + r, kernel.faults.nibble_swap, &mut b.codes);
            for (d, &c) in q.iter_mut().zip(b.codes.iter()) {
                *d = c as i8;
            }
        }
        for gi in 0..g {
            b.wsum[r * g + gi] = q[gi * gl..(gi + 1) * gl].iter().map(|&v| v as i32).sum();
        }
        let n = ti * TILE_N + r;
        if kernel.faults.scale_transpose {
            for gi in 0..g {
                b.sw[r * g + gi] = w.scale(n, gi, kernel.faults);
            }
        } else {
            // A row's scales in one pass (8da4w weights are symmetric: no zero-points to read).
            let (mut sw, mut zs) = (std::mem::take(&mut b.row_sw), std::mem::take(&mut b.row_zp));
            sw.clear();
            zs.clear();
            w.row_qparams(n, &mut sw, &mut zs);
            b.sw[r * g..(r + 1) * g].copy_from_slice(&sw[..g]);
            (b.row_sw, b.row_zp) = (sw, zs);
        }
    }
    let mut achunk = if keep_acc { vec![0i64; rows * m * g] } else { Vec::new() };
    for r in 0..rows {
        let q = &b.q[r * k..(r + 1) * k];
        for mi in 0..m {
            let acc = if keep_acc { &mut achunk[(r * m + mi) * g..(r * m + mi + 1) * g] } else { &mut b.acc[..] };
            ychunk[r * m + mi] = kernel.output(mi, q, &b.wsum[r * g..(r + 1) * g], &b.sw[r * g..(r + 1) * g], acc);
        }
    }
    achunk
}

/// What one 8da4w output needs besides its weight tile.
struct Kernel8da4w<'a> {
    w: &'a PackedWeights,
    tok: &'a Tokens,
    flavor: W8da4wFlavor,
    faults: &'a Faults,
    t: Arith,
}

impl Kernel8da4w<'_> {
    /// `y[mi, n]` from weight row `n`'s codes `q`, their group sums and the row's scales `sw`
    /// (read through the faults); writes the per-group `acc`.
    #[inline(always)]
    fn output(&self, mi: usize, q: &[i8], wsum: &[i32], sw: &[f32], acc: &mut [i64]) -> f32 {
        let (k, g, gl) = (self.tok.cols, self.w.groups, self.w.group_len);
        let a = &self.tok.q[mi * k..(mi + 1) * k];
        let zp = self.tok.zp.as_ref().map_or(0, |z| z[mi]);
        let sa = self.tok.scales[mi];
        let t = self.t;
        let mut out = 0f32;
        for gi in 0..g {
            if self.faults.drop_last_group && gi + 1 == g {
                acc[gi] = 0;
                continue;
            }
            let range = gi * gl..(gi + 1) * gl;
            // An int8 × int4 product fits in i16 (|·| ≤ 1024): the widening multiply-add form.
            let raw: i32 = a[range.clone()].iter().zip(&q[range]).map(|(&x, &y)| (x as i16 * y as i16) as i32).sum();
            let adj = raw - zp * wsum[gi];
            acc[gi] = adj as i64;
            let sw = sw[gi];
            out = match self.flavor {
                W8da4wFlavor::Ao | W8da4wFlavor::Xnn => (adj as f32).mul_add(sw, out),
                W8da4wFlavor::Vk => t.fma(t.round(adj as f32), t.mul(sa, sw), out),
            };
        }
        match self.flavor {
            W8da4wFlavor::Ao | W8da4wFlavor::Xnn => t.round(out * sa),
            W8da4wFlavor::Vk => out,
        }
    }
}

/// Where the weight rows of a model's linear come from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rows<'a> {
    /// fp32 rows, `[N, K]` row-major (PyTorch's layout), read in place.
    F32(&'a [f32]),
    /// A scheme's packed storage, decoded a tile of rows at a time inside the kernel.
    Packed(&'a PackedWeights),
}

/// fp32 lanes of the blocked dot products: one 256-bit vector.
const LANES: usize = 8;

/// Bytes of decoded weight rows one task of [`linear_rows`] keeps (an L2-sized tile: every
/// block of tokens passes over it, so each row is decoded once per call).
const TILE_BYTES: usize = 128 * 1024;

/// The linear of a model on weight rows `w` (`N` rows of `K`): `y[M, N] = T(x)[M, K] · Ŵᵀ`,
/// returned row-major `[M, N]`, with the arithmetic of [`linear`] (`x` rounded to T, each dot
/// product accumulated as `accum` says, rounded to T) but blocked for whole prompts:
///
/// - the weight rows are cut into tiles of about [`TILE_BYTES`]; one task decodes its tile once
///   (packed weights, the scheme's own dequantization) or reads it in place (fp32), then every
///   token passes over it, so a weight is never decoded twice in one call;
/// - the fp32 accumulation is register-blocked over 4 tokens × 2 rows (1 × 4 for a single
///   token), each output still the 8-lane `k mod 8` sum of [`dot_f32`] reduced pairwise, so the
///   bits equal the op path's and do not depend on the blocking, the SIMD width (an AVX2
///   instance runs where the CPU has it: the same unfused operations) or the thread count.
pub(crate) fn linear_rows(x: &[f32], m: usize, k: usize, w: Rows<'_>, n: usize, accum: Accum, t: Arith) -> Vec<f32> {
    debug_assert_eq!(x.len(), m * k);
    if m == 0 || n == 0 {
        return Vec::new();
    }
    if let (Rows::Packed(p), 1, Accum::F32) = (w, m, accum) {
        // One fp32 token: the fused decode-and-dot pass where the layout has one (same bits).
        if let Some(y) = super::matvec::matvec(p, x) {
            return y;
        }
    }
    let rounded;
    let x = if t == Arith(kernels_ref::dtype::DType::F32) {
        x
    } else {
        rounded = x.iter().map(|&v| t.round(v)).collect::<Vec<f32>>();
        &rounded
    };
    let tile = (TILE_BYTES / (4 * k.max(1))).clamp(4, 64) / 4 * 4;
    // A token or three decode 4 rows at a time (kept in L1), a prompt the whole tile.
    let scratch = match w {
        Rows::F32(_) => 0,
        Rows::Packed(_) if m < 4 && accum == Accum::F32 => 4 * k,
        Rows::Packed(_) => tile * k,
    };
    // Each task returns its tile's outputs token-major, `[M, rows]`, so that assembling `[M, N]`
    // copies runs of `rows` values.
    let tiles = map_tasks(
        n.div_ceil(tile),
        tile * m * k,
        || (),
        |_, ti| {
            let first = ti * tile;
            let rows = tile.min(n - first);
            DECODE_SCRATCH.with(|cell| {
                let (codes, buf) = &mut *cell.borrow_mut();
                if buf.len() < scratch {
                    buf.resize(scratch, 0.0);
                }
                if codes.len() < k {
                    codes.resize(k, 0);
                }
                tile_outputs(x, m, k, w, accum, t, first, rows, &mut codes[..k], buf)
            })
        },
    );
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for y in &tiles {
            let rows = y.len() / m;
            out.extend_from_slice(&y[i * rows..(i + 1) * rows]);
        }
    }
    out
}

thread_local! {
    /// Per-thread scratch of [`linear_rows`]: integer codes and decoded weight rows. Kept between
    /// calls, so a task never pays for zeroing a fresh tile buffer.
    static DECODE_SCRATCH: std::cell::RefCell<(Vec<i32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// One task of [`linear_rows`]: the outputs of weight rows `first..first + rows` for every
/// token, token-major `[m, rows]`.
#[allow(clippy::too_many_arguments)] // one task's view of linear_rows' arguments
fn tile_outputs(
    x: &[f32],
    m: usize,
    k: usize,
    w: Rows<'_>,
    accum: Accum,
    t: Arith,
    first: usize,
    rows: usize,
    codes: &mut [i32],
    buf: &mut [f32],
) -> Vec<f32> {
    let mut y = vec![0f32; m * rows];
    match (w, accum) {
        // A token or three: decode 4 rows at a time into L1 and use them at once.
        (Rows::Packed(p), Accum::F32) if m < 4 => {
            for r0 in (0..rows).step_by(4) {
                let rr = 4.min(rows - r0);
                decode_tile(p, first + r0, &mut buf[..rr * k], codes);
                tile_f32(x, m, k, &buf[..rr * k], rr, &mut y[r0..], rows);
            }
        }
        _ => {
            let wt: &[f32] = match w {
                Rows::F32(data) => &data[first * k..(first + rows) * k],
                Rows::Packed(p) => {
                    decode_tile(p, first, &mut buf[..rows * k], codes);
                    &buf[..rows * k]
                }
            };
            match accum {
                Accum::F32 => tile_f32(x, m, k, wt, rows, &mut y, rows),
                Accum::InT => tile_in_t(t, x, m, k, wt, rows, &mut y),
            }
        }
    }
    if accum == Accum::F32 && t != Arith(kernels_ref::dtype::DType::F32) {
        y.iter_mut().for_each(|v| *v = t.round(*v));
    }
    y
}

/// `out[i, r]` = the dot product of token `i` and weight row `r` accumulated in T (MLX), for a
/// tile of `rows` weight rows; `out` is `[m, rows]`. Four tokens at a time: four independent
/// rounding chains, each in its own k order, so the bits are those of one token at a time.
fn tile_in_t(t: Arith, x: &[f32], m: usize, k: usize, wt: &[f32], rows: usize, out: &mut [f32]) {
    let xr = |mi: usize| &x[mi * k..(mi + 1) * k];
    let m4 = m - m % 4;
    for r in 0..rows {
        let wr = &wt[r * k..(r + 1) * k];
        for mi in (0..m4).step_by(4) {
            let y4 = dot_in4(t, [xr(mi), xr(mi + 1), xr(mi + 2), xr(mi + 3)], wr);
            for (j, v) in y4.into_iter().enumerate() {
                out[(mi + j) * rows + r] = v;
            }
        }
        for mi in m4..m {
            out[mi * rows + r] = dot_in(t, xr(mi), wr);
        }
    }
}

/// Dequantize rows `first..` of `p` into `tile` (`K` values each): the fused one-pass decode
/// where the layout has one, else the op path's `dequant_row` (the same values either way).
fn decode_tile(p: &PackedWeights, first: usize, tile: &mut [f32], codes: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: `decode_tile_avx2` only requires AVX2, which the CPU has just been checked for.
            return unsafe { decode_tile_avx2(p, first, tile, codes) };
        }
    }
    decode_tile_body(p, first, tile, codes)
}

/// [`decode_tile_body`] compiled with AVX2 (integer-to-float conversions and products, exact
/// or correctly rounded either way: the same values).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn decode_tile_avx2(p: &PackedWeights, first: usize, tile: &mut [f32], codes: &mut [i32]) {
    decode_tile_body(p, first, tile, codes)
}

#[inline(always)]
fn decode_tile_body(p: &PackedWeights, first: usize, tile: &mut [f32], codes: &mut [i32]) {
    for (r, row) in tile.chunks_exact_mut(p.cols).enumerate() {
        if !p.dequant_row_fused(first + r, row) {
            dequant_row(p, first + r, &Faults::NONE, codes, row);
        }
    }
}

/// Whether the AVX2 instances of the kernels can run (checked once; the answer is cached by std).
#[inline]
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[i·stride + r] = dot_f32(x[i], wt[r])` for a tile of weight rows `wt` (`[rows, K]`) and
/// all `m` tokens of `x`. Blocks of 4 tokens × 2 rows (1 × 4 for the tokens left
/// over, as a single decoded token is).
fn tile_f32(x: &[f32], m: usize, k: usize, wt: &[f32], rows: usize, out: &mut [f32], stride: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: `tile_f32_avx2` only requires AVX2, which the CPU has just been checked for.
            return unsafe { tile_f32_avx2(x, m, k, wt, rows, out, stride) };
        }
    }
    tile_f32_body(x, m, k, wt, rows, out, stride)
}

/// [`tile_f32_body`] compiled with AVX2, so that [`dot_block`]'s AVX2 instance is inlined into
/// the loops (the same operations: the same bits).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_f32_avx2(x: &[f32], m: usize, k: usize, wt: &[f32], rows: usize, out: &mut [f32], stride: usize) {
    tile_f32_body(x, m, k, wt, rows, out, stride)
}

#[inline(always)]
fn tile_f32_body(x: &[f32], m: usize, k: usize, wt: &[f32], rows: usize, out: &mut [f32], stride: usize) {
    let xr = |i: usize| &x[i * k..(i + 1) * k];
    let wr = |r: usize| &wt[r * k..(r + 1) * k];
    let m4 = m - m % 4;
    if m4 > 0 {
        let r2 = rows - rows % 2;
        for i0 in (0..m4).step_by(4) {
            let xs = [xr(i0), xr(i0 + 1), xr(i0 + 2), xr(i0 + 3)];
            for r0 in (0..r2).step_by(2) {
                let y = dot_block::<4, 2>(xs, [wr(r0), wr(r0 + 1)]);
                for (i, yi) in y.iter().enumerate() {
                    out[(i0 + i) * stride + r0..(i0 + i) * stride + r0 + 2].copy_from_slice(yi);
                }
            }
            if r2 < rows {
                let y = dot_block::<4, 1>(xs, [wr(r2)]);
                for (i, yi) in y.iter().enumerate() {
                    out[(i0 + i) * stride + r2] = yi[0];
                }
            }
        }
    }
    let r4 = rows - rows % 4;
    for i in m4..m {
        let xs = [xr(i)];
        for r0 in (0..r4).step_by(4) {
            let y = dot_block::<1, 4>(xs, [wr(r0), wr(r0 + 1), wr(r0 + 2), wr(r0 + 3)]);
            out[i * stride + r0..i * stride + r0 + 4].copy_from_slice(&y[0]);
        }
        for r in r4..rows {
            out[i * stride + r] = dot_block::<1, 1>(xs, [wr(r)])[0][0];
        }
    }
}

/// `MR × NR` dot products of `K`-long rows, each exactly [`dot_f32`]'s arithmetic (8 lanes over
/// `k mod 8`, the tail sequential, the lanes reduced pairwise, plus the tail), with all
/// `MR · NR` lane accumulators in registers so every loaded vector is used `NR` or `MR` times.
/// Runs the AVX2 instance where the CPU has it, the portable twin elsewhere: the same unfused
/// multiplies and adds lane by lane, so the same bits.
///
/// # Panics
/// If the rows do not all have the same length (a caller bug, never an input error).
#[inline(always)]
pub(crate) fn dot_block<const MR: usize, const NR: usize>(xs: [&[f32]; MR], ws: [&[f32]; NR]) -> [[f32; NR]; MR] {
    let k = ws[0].len();
    assert!(xs.iter().chain(&ws).all(|r| r.len() == k), "dot_block: rows of different lengths");
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: the CPU has AVX2 (just checked) and every row holds `k` values (asserted).
            let sums = unsafe { simd::dots_avx2(xs, ws) };
            return add_tails(sums, xs, ws);
        }
    }
    reduce(lanes_portable(xs, ws), xs, ws)
}

/// `sums` (the reduced lanes) plus the sequential tail past the last multiple of 8.
#[inline(always)]
fn add_tails<const MR: usize, const NR: usize>(
    mut sums: [[f32; NR]; MR],
    xs: [&[f32]; MR],
    ws: [&[f32]; NR],
) -> [[f32; NR]; MR] {
    let k = ws[0].len();
    let k8 = k / LANES * LANES;
    for i in 0..MR {
        for j in 0..NR {
            // Added even when empty: `−0 + +0` is `+0`, as in `dot_f32`.
            let mut tail = 0f32;
            for (x, w) in xs[i][k8..].iter().zip(&ws[j][k8..k]) {
                tail += x * w;
            }
            sums[i][j] += tail;
        }
    }
    sums
}

/// The 8-lane accumulators of [`dot_block`] over the whole multiple-of-8 part of `K`.
#[inline(always)]
fn lanes_portable<const MR: usize, const NR: usize>(xs: [&[f32]; MR], ws: [&[f32]; NR]) -> [[[f32; LANES]; NR]; MR] {
    let k8 = ws[0].len() / LANES * LANES;
    let mut acc = [[[0f32; LANES]; NR]; MR];
    for c in (0..k8).step_by(LANES) {
        for i in 0..MR {
            let xv = &xs[i][c..c + LANES];
            for j in 0..NR {
                let wv = &ws[j][c..c + LANES];
                for l in 0..LANES {
                    acc[i][j][l] += xv[l] * wv[l];
                }
            }
        }
    }
    acc
}

/// Lanes reduced pairwise as [`dot_f32`] does, plus the sequential tail past the last 8.
#[inline(always)]
fn reduce<const MR: usize, const NR: usize>(
    acc: [[[f32; LANES]; NR]; MR],
    xs: [&[f32]; MR],
    ws: [&[f32]; NR],
) -> [[f32; NR]; MR] {
    let k = ws[0].len();
    let k8 = k / LANES * LANES;
    let mut out = [[0f32; NR]; MR];
    for i in 0..MR {
        for j in 0..NR {
            let a = &acc[i][j];
            let mut tail = 0f32;
            for (x, w) in xs[i][k8..].iter().zip(&ws[j][k8..k]) {
                tail += x * w;
            }
            out[i][j] = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + tail;
        }
    }
    out
}

/// The AVX2 instance of the lane accumulation (explicit intrinsics: the accumulators stay in
/// registers and the loads carry no bounds checks).
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::LANES;
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_loadu_ps, _mm256_mul_ps,
        _mm256_setzero_ps, _mm_add_ps, _mm_cvtss_f32, _mm_hadd_ps,
    };

    /// [`super::lanes_portable`] and [`super::reduce`]'s pairwise reduction with 256-bit vectors
    /// (`acc += x · w` as a multiply then an add), without the tail.
    ///
    /// # Safety
    /// The CPU must support AVX2, and every row must hold at least `ws[0].len()` values.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dots_avx2<const MR: usize, const NR: usize>(
        xs: [&[f32]; MR],
        ws: [&[f32]; NR],
    ) -> [[f32; NR]; MR] {
        let k8 = ws[0].len() / LANES * LANES;
        let mut acc = [[_mm256_setzero_ps(); NR]; MR];
        let mut wv = [_mm256_setzero_ps(); NR];
        let mut c = 0;
        while c < k8 {
            for j in 0..NR {
                // SAFETY: c + 8 <= k8 <= the row's length (the caller's contract).
                wv[j] = unsafe { _mm256_loadu_ps(ws[j].as_ptr().add(c)) };
            }
            for i in 0..MR {
                // SAFETY: as above.
                let xv: __m256 = unsafe { _mm256_loadu_ps(xs[i].as_ptr().add(c)) };
                for j in 0..NR {
                    acc[i][j] = _mm256_add_ps(acc[i][j], _mm256_mul_ps(xv, wv[j]));
                }
            }
            c += LANES;
        }
        // ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7)), as `reduce` adds them: the halves
        // added lane by lane, then two horizontal adds.
        let mut out = [[0f32; NR]; MR];
        for i in 0..MR {
            for j in 0..NR {
                let a = acc[i][j];
                let h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
                let h = _mm_hadd_ps(h, h);
                out[i][j] = _mm_cvtss_f32(_mm_hadd_ps(h, h));
            }
        }
        out
    }
}

/// `[rows, cols]` row-major to `[cols, rows]`, in 32 × 32 blocks (both sides stay in cache).
pub(crate) fn transpose_blocked(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const B: usize = 32;
    let mut out = vec![0f32; v.len()];
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    out[c * rows + r] = v[r * cols + c];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocked kernel computes every output with the op path's `dot_f32` bits, for every
    /// remainder of tokens (M mod 4), rows (mod 2, mod 4) and K (mod 8).
    #[test]
    fn blocked_dots_equal_dot_f32() {
        let mut s = 0x1234_5678_u64;
        let mut next = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for (m, n, k) in [(1, 7, 37), (5, 9, 64), (4, 4, 8), (7, 3, 101), (2, 6, 3)] {
            let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
            let y = linear_rows(&x, m, k, Rows::F32(&w), n, Accum::F32, Arith(kernels_ref::dtype::DType::F32));
            for i in 0..m {
                for j in 0..n {
                    let want = dot_f32(&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
                    assert_eq!(y[i * n + j].to_bits(), want.to_bits(), "m={m} n={n} k={k} ({i}, {j})");
                    let xs = [&x[i * k..(i + 1) * k]];
                    let ws = [&w[j * k..(j + 1) * k]];
                    let portable = reduce(lanes_portable(xs, ws), xs, ws)[0][0];
                    assert_eq!(portable.to_bits(), want.to_bits(), "portable twin, m={m} n={n} k={k} ({i}, {j})");
                }
            }
        }
    }
}

#[cfg(test)]
mod fused {
    use super::*;
    use kernels_ref::scheme::Scheme;

    /// The fused one-pass decode gives `dequant_row`'s bits for every layout it covers (and
    /// declines the others), on rows with zeros, ties and outliers.
    #[test]
    fn fused_decode_equals_dequant_row() {
        let (n, k) = (12, 512);
        let mut s = 99u64;
        let data: Vec<f32> = (0..n * k)
            .map(|i| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
                match (i / k) % 4 {
                    0 => 0.0,
                    1 if i % 97 == 0 => 30.0,
                    _ => u,
                }
            })
            .collect();
        let w = Matrix { rows: n, cols: k, data };
        let mut covered = 0;
        for name in [
            "w4g32-sym-ao",
            "w4g128-sym-ao@bf16",
            "w8pc-sym-ao",
            "w4g32-asym-ao",
            "q4_0",
            "q4_1",
            "q8_0",
            "q4_K",
            "w4g64-mlx-cpu",
            "w4g32-mlx-cpu@f16",
            "w4g32-sym8",
            "8da4w-ao",
            "pal4-pt",
        ] {
            let scheme: Scheme = name.parse().unwrap();
            let q = scheme.quantize(&w).unwrap();
            let p = PackedWeights::from_quantized(&q).unwrap();
            let (mut codes, mut want, mut got) = (vec![0i32; k], vec![0f32; k], vec![f32::NAN; k]);
            for r in 0..n {
                dequant_row(&p, r, &Faults::NONE, &mut codes, &mut want);
                if !p.dequant_row_fused(r, &mut got) {
                    assert!(got.iter().all(|v| v.is_nan()), "{name}: declined but wrote");
                    continue;
                }
                covered += 1;
                for c in 0..k {
                    assert_eq!(got[c].to_bits(), want[c].to_bits(), "{name} row {r} col {c}");
                }
            }
        }
        assert!(covered >= 9 * n, "the fused decode covered {covered} rows");
    }

    /// The one-pass i8 decode gives `decode_row`'s codes for the layouts 8da4w weights use.
    #[test]
    fn i8_decode_equals_decode_row() {
        let mut compared = 0;
        for (rows, k) in [(6, 64), (3, 33)] {
            let w = Matrix { rows, cols: k, data: (0..rows * k).map(|i| ((i * 37) % 19) as f32 - 9.3).collect() };
            for name in ["8da4w-xnn", "8da4w-ao", "8da4wg32-xnn", "w4g32-sym8", "w8pc-sym-ao", "w4pc-asym-ao"] {
                let Ok(q) = name.parse::<Scheme>().unwrap().quantize(&w) else { continue };
                let p = PackedWeights::from_quantized(&q).unwrap();
                let (mut codes, mut got) = (vec![0i32; k], vec![0i8; k]);
                for r in 0..rows {
                    p.decode_row(r, false, &mut codes);
                    if p.decode_row_i8(r, &mut got) {
                        let want: Vec<i8> = codes.iter().map(|&c| c as i8).collect();
                        assert_eq!(got, want, "{name} [{rows}, {k}] row {r}");
                        compared += 1;
                    }
                }
            }
        }
        assert!(compared >= 30, "compared {compared} rows");
    }

    /// The model linear on packed weights equals `dot_f32` over the dequantized rows, for a
    /// single token (the 4-row L1 path), a few tokens, and a prompt (the tile path).
    #[test]
    fn packed_linear_equals_dot_f32_of_dequantized_rows() {
        let (n, k) = (70, 256);
        let mut s = 5u64;
        let mut next = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let w = Matrix { rows: n, cols: k, data: (0..n * k).map(|_| next()).collect() };
        for name in ["q4_0", "w4g32-sym-ao", "pal4-pt"] {
            let q = name.parse::<Scheme>().unwrap().quantize(&w).unwrap();
            let p = PackedWeights::from_quantized(&q).unwrap();
            let deq = super::super::dequant::dequantize(&p, &Faults::NONE);
            for m in [1, 3, 9] {
                let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
                let y = linear_rows(&x, m, k, Rows::Packed(&p), n, Accum::F32, p.t);
                for i in 0..m {
                    for j in 0..n {
                        let want = dot_f32(&x[i * k..(i + 1) * k], &deq[j * k..(j + 1) * k]);
                        assert_eq!(y[i * n + j].to_bits(), want.to_bits(), "{name} m={m} ({i}, {j})");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod speed {
    //! `RAYON_NUM_THREADS=1 cargo test --release -p qdiff-devices --lib -- --ignored --nocapture speed`:
    //! kernel throughput in this thread's CPU time (`/proc/thread-self/schedstat`), so a loaded
    //! machine does not skew it.
    use super::*;
    use kernels_ref::scheme::Scheme;

    /// This thread's CPU time in ns (`/proc/thread-self/schedstat`), or wall time where there is
    /// no such file.
    fn cpu_ns() -> f64 {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
        s.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as f64)
    }

    /// Seconds of CPU per call of `f`, over at least 0.3 s.
    fn per_call(mut f: impl FnMut()) -> f64 {
        let (t0, mut n) = (cpu_ns(), 0);
        while cpu_ns() - t0 < 3e8 {
            f();
            n += 1;
        }
        (cpu_ns() - t0) / n as f64 / 1e9
    }

    #[test]
    #[ignore]
    fn dequant_and_gemm_speed() {
        let (n, k) = (1536, 576);
        let mut s = 7u64;
        let data: Vec<f32> = (0..n * k)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        let w = Matrix { rows: n, cols: k, data: data.clone() };
        for name in ["w4g32-sym-ao", "q4_0", "w4g64-mlx-cpu"] {
            let scheme: Scheme = name.parse().unwrap();
            let q = scheme.quantize(&w).unwrap();
            let p = PackedWeights::from_quantized(&q).unwrap();
            let (mut codes, mut out, mut tile) = (vec![0i32; k], vec![0f32; k], vec![0f32; 32 * k]);
            let t = per_call(|| {
                for r in 0..n {
                    dequant_row(&p, r, &Faults::NONE, &mut codes, &mut out);
                }
            });
            let f = per_call(|| {
                for r in (0..n).step_by(32) {
                    decode_tile(&p, r, &mut tile, &mut codes);
                }
            });
            println!(
                "{name}: dequant_row {:.2} ns/weight, fused tile decode {:.2} ns/weight",
                t / (n * k) as f64 * 1e9,
                f / (n * k) as f64 * 1e9
            );
        }
        for m in [1usize, 4, 128] {
            let x: Vec<f32> = data[..m * k].to_vec();
            let f32_ = Arith(kernels_ref::dtype::DType::F32);
            let secs = per_call(|| {
                std::hint::black_box(linear_rows(&x, m, k, Rows::F32(&data), n, Accum::F32, f32_));
            });
            println!("f32 linear {n}x{k}, m={m}: {:.2} GFLOP/s", 2.0 * (m * n * k) as f64 / secs / 1e9);
        }
    }
}

//! `y = x · Ŵᵀ` on packed weights: the weight-only GEMM (dequantize a tile of weight rows in the
//! kernel, then dot products with the framework's accumulation), and the 8da4w integer GEMM
//! (int8 activation codes × int4 weight codes, i32 accumulators per group, a float correction
//! per group).
//!
//! Work is split over tiles of [`TILE_N`] output channels; every output element is computed by
//! one task in a fixed order, so the result does not depend on the number of threads.

use super::act::{self, Tokens};
use super::bad_case;
use super::dequant::dequant_row;
use super::faults::Faults;
use super::num::Arith;
use super::par::for_chunks;
use super::storage::PackedWeights;
use crate::case::{OpCase, Outputs};
use crate::device::DeviceError;
use kernels_ref::scheme::W8da4wFlavor;
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
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
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
    let (m, k, n, g) = (x.rows, x.cols, w.rows, w.groups);
    let gl = w.group_len;
    let t = w.t;
    let mut yt = vec![0f32; n * m];
    let kernel = Kernel8da4w { w, tok: &tok, flavor, faults, t };
    let init = || (vec![0i32; k], vec![0i8; TILE_N * k], vec![0i32; TILE_N * g]);
    // Each tile returns its `[rows, M, G]` block of accumulators with its outputs.
    let acct = for_chunks(&mut yt, TILE_N * m, TILE_N * m * k, init, |(codes, qtile, wsum), ti, ychunk| {
        let rows = ychunk.len() / m;
        for r in 0..rows {
            w.decode_row(ti * TILE_N + r, faults.nibble_swap, codes);
            let q = &mut qtile[r * k..(r + 1) * k];
            for (d, &c) in q.iter_mut().zip(codes.iter()) {
                *d = c as i8;
            }
            for gi in 0..g {
                wsum[r * g + gi] = q[gi * gl..(gi + 1) * gl].iter().map(|&v| v as i32).sum();
            }
        }
        let mut achunk = vec![0i64; rows * m * g];
        for r in 0..rows {
            let q = &qtile[r * k..(r + 1) * k];
            let nrow = ti * TILE_N + r;
            for mi in 0..m {
                let acc = &mut achunk[(r * m + mi) * g..(r * m + mi + 1) * g];
                ychunk[r * m + mi] = kernel.output(nrow, mi, q, &wsum[r * g..(r + 1) * g], acc);
            }
        }
        achunk
    })
    .concat();
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

/// What one 8da4w output needs besides its weight tile.
struct Kernel8da4w<'a> {
    w: &'a PackedWeights,
    tok: &'a Tokens,
    flavor: W8da4wFlavor,
    faults: &'a Faults,
    t: Arith,
}

impl Kernel8da4w<'_> {
    /// `y[mi, n]` from weight row codes `q` and their group sums; writes the per-group `acc`.
    #[inline]
    fn output(&self, n: usize, mi: usize, q: &[i8], wsum: &[i32], acc: &mut [i64]) -> f32 {
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
            let sw = self.w.scale(n, gi, self.faults);
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

//! The blocked f64 GEMM engine behind [`linear`](super::linear) and [`matmul`](super::matmul).
//!
//! It lives apart from the public ops because it is the only code in the reference that is
//! tuned for speed, and its one job is to be *fast while giving exactly the bits of the naive
//! loop*:
//!
//! ```text
//! for each (i, j): acc = 0.0_f64; for k in 0..K { acc += f64(a[i,k]) * f64(b[k,j]) }; (+ bias); as f32
//! ```
//!
//! How it keeps those bits:
//! - every product of two f32 values is exact in f64 (24 + 24 significant bits <= 53), so a
//!   fused multiply-add `fma(a, b, acc)` and `acc + a * b` round identically: the hardware FMA
//!   path and the portable path agree bit for bit;
//! - each output element owns one f64 accumulator, and K is walked in ascending order in one
//!   logical pass. The K loop is cut into chunks of [`KC`] to keep the packed panels in cache,
//!   but the accumulators are stored to a per-tile f64 buffer between chunks and reloaded, so
//!   each element's sum continues exactly where it stopped: no partial sums are ever added
//!   together;
//! - SIMD lanes run across output columns (`n`), never across `k`, so vector width does not
//!   change any element's order;
//! - rayon splits the output into independent `MC x NC` tiles; no tile touches another's
//!   elements, so the thread count does not change any element's order either.
//!
//! Layout: operands are converted to f64 once per tile while packing (A as `MR`-row micro-panels,
//! B as `NR`-column micro-panels), then an `MR x NR` register-blocked microkernel broadcasts one
//! A value per row and multiplies it into `NR` B values (the vectorised direction).
//!
//! On x86_64 the tile routine is compiled twice from the same generic, `#[inline(always)]` body:
//! once with `avx2,fma` enabled (chosen at run time by `is_x86_feature_detected!`), once for the
//! baseline target. aarch64 has FMA in its baseline; other targets use the mul-then-add form.

use rayon::prelude::*;

/// Rows of A per tile (a multiple of every `MR` used below).
const MC: usize = 72;
/// Columns of B per tile (a multiple of every `NR` used below).
const NC: usize = 128;
/// Length of one chunk of the K loop (the packed panels are `MR x KC` and `KC x NR`).
const KC: usize = 256;

/// How the right-hand operand is stored. The engine computes `A[M,K] * B[K,N]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RhsLayout {
    /// Row-major `[K, N]`: `B(k, n) = data[k * N + n]` (the `matmul` layout).
    KN,
    /// Row-major `[N, K]`: `B(k, n) = data[n * K + k]` (PyTorch's `linear` weight layout).
    NK,
}

/// One product to compute: `out[M,N] = A[M,K] * B[K,N] (+ bias[N])`, rounded once to f32.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Problem<'a> {
    /// A, row-major `[M, K]`.
    pub a: &'a [f32],
    /// B, stored as `b_layout` says.
    pub b: &'a [f32],
    /// The storage order of `b`.
    pub b_layout: RhsLayout,
    /// Rows of A and of the output.
    pub m: usize,
    /// Columns of B and of the output.
    pub n: usize,
    /// The reduced dimension.
    pub k: usize,
    /// Optional bias of length N, added once after the whole K sum.
    pub bias: Option<&'a [f32]>,
}

/// At most this many rows of A take the small-M paths ([`Path::Strip`], [`Path::Rows`]).
const SMALL_M: usize = 4;
/// Columns per block of the [`Path::Strip`] path (its accumulators stay in L1).
const STRIP_N: usize = 512;
/// Columns (rows of `w`) per block of the [`Path::Rows`] path.
const ROWS_N: usize = 64;
/// Rows of `w` walked together by the [`Path::Rows`] path (independent accumulator chains).
const ROWS_G: usize = 8;

/// How a block of the output is computed. All paths compute every element with the same
/// sequential-k f64 sum; they differ only in how they walk memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// Packed panels and the register-blocked microkernel (any shape).
    Tiled,
    /// Few rows of A, `B` row-major `[K, N]`: stream whole row segments of B, accumulators for a
    /// strip of columns in L1 (a gemv that never packs B).
    Strip,
    /// Few rows of A, `B` stored `[N, K]`: dot products of A's rows with `ROWS_G` rows of `w`
    /// at a time, each row read sequentially.
    Rows,
}

/// A rectangle of the output: rows `ic..ic + mc`, columns `jc..jc + nc`.
#[derive(Clone, Copy, Debug)]
struct Block {
    ic: usize,
    mc: usize,
    jc: usize,
    nc: usize,
}

/// Computes `p` and returns the row-major `[M, N]` result.
///
/// The caller has checked that the slices have the lengths the shapes say.
pub(crate) fn run(p: &Problem<'_>) -> Vec<f32> {
    let (m, n) = (p.m, p.n);
    let mut out = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return out;
    }
    let (path, bm, bn) = match p.b_layout {
        _ if m > SMALL_M || p.k == 0 => (Path::Tiled, MC, NC),
        RhsLayout::KN => (Path::Strip, m, STRIP_N),
        RhsLayout::NK => (Path::Rows, m, ROWS_N),
    };
    let blocks: Vec<Block> = (0..m)
        .step_by(bm)
        .flat_map(|ic| {
            (0..n).step_by(bn).map(move |jc| Block { ic, mc: bm.min(m - ic), jc, nc: bn.min(n - jc) })
        })
        .collect();
    // Blocks are independent: each computes its own elements start to finish, so the split (and
    // hence the thread count) cannot change any bit. `collect` keeps the block order.
    let results: Vec<Vec<f32>> = if blocks.len() == 1 {
        vec![block_dispatch(p, path, blocks[0])]
    } else {
        blocks.par_iter().map(|&b| block_dispatch(p, path, b)).collect()
    };
    for (b, t) in blocks.iter().zip(&results) {
        for (r, row) in t.chunks_exact(b.nc).enumerate() {
            out[(b.ic + r) * n + b.jc..][..b.nc].copy_from_slice(row);
        }
    }
    out
}

/// The multiply-add used by the microkernel. Both forms give the same bits on the engine's
/// inputs (f64 values that are widened f32s), because their product is exact.
trait MulAdd {
    /// `c + a * b`.
    fn mul_add(a: f64, b: f64, c: f64) -> f64;
}

/// Fused multiply-add (one instruction where the target has FMA).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
struct Fused;
impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f64, b: f64, c: f64) -> f64 {
        a.mul_add(b, c)
    }
}

/// Multiply then add (two roundings in general; here the product is exact, so one).
#[cfg_attr(target_arch = "aarch64", allow(dead_code))]
struct Separate;
impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add(a: f64, b: f64, c: f64) -> f64 {
        c + a * b
    }
}

/// Computes one block with the best instance of the block body for this CPU.
fn block_dispatch(p: &Problem<'_>, path: Path, blk: Block) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: `block_avx2` only requires the avx2 and fma target features, and the CPU
            // has just been checked to support both.
            return unsafe { block_avx2(p, path, blk) };
        }
        block::<Separate>(p, path, blk)
    }
    #[cfg(target_arch = "aarch64")]
    {
        block::<Fused>(p, path, blk)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        block::<Separate>(p, path, blk)
    }
}

/// The block body compiled with AVX2 and FMA enabled.
///
/// # Safety
/// The CPU must support the `avx2` and `fma` features.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(p: &Problem<'_>, path: Path, blk: Block) -> Vec<f32> {
    block::<Fused>(p, path, blk)
}

/// The block body, generic over the multiply-add form; returns the block row-major.
#[inline(always)]
fn block<F: MulAdd>(p: &Problem<'_>, path: Path, blk: Block) -> Vec<f32> {
    match (path, blk.mc) {
        (Path::Tiled, _) => tile_shape::<F>(p, blk),
        (Path::Strip, 1) => strip::<F, 1>(p, blk),
        (Path::Strip, 2) => strip::<F, 2>(p, blk),
        (Path::Strip, 3) => strip::<F, 3>(p, blk),
        (Path::Strip, _) => strip::<F, SMALL_M>(p, blk),
        (Path::Rows, 1) => rows::<F, 1>(p, blk),
        (Path::Rows, 2) => rows::<F, 2>(p, blk),
        (Path::Rows, 3) => rows::<F, 3>(p, blk),
        (Path::Rows, _) => rows::<F, SMALL_M>(p, blk),
    }
}

/// Writes a block's f64 sums (row-major, `nc` wide) as f32, adding the bias first.
#[inline(always)]
fn finish(p: &Problem<'_>, blk: Block, acc: impl Fn(usize, usize) -> f64) -> Vec<f32> {
    let mut out = vec![0f32; blk.mc * blk.nc];
    for (i, row) in out.chunks_exact_mut(blk.nc).enumerate() {
        for (j, o) in row.iter_mut().enumerate() {
            let mut v = acc(i, j);
            if let Some(bias) = p.bias {
                v += f64::from(bias[blk.jc + j]);
            }
            *o = super::round_f32(v);
        }
    }
    out
}

/// [`Path::Strip`]: `R = M` rows of A against row-major B, one strip of columns. For each `k`
/// (ascending) the row segment `B[k, jc..jc + nc]` is read once and multiplied into the `R`
/// rows of accumulators.
#[inline(always)]
fn strip<F: MulAdd, const R: usize>(p: &Problem<'_>, blk: Block) -> Vec<f32> {
    let (k, nc) = (p.k, blk.nc);
    let a: Vec<f64> = p.a[blk.ic * k..][..R * k].iter().map(|&x| f64::from(x)).collect();
    let mut acc = vec![0f64; R * nc];
    for kk in 0..k {
        let brow = &p.b[kk * p.n + blk.jc..][..nc];
        for (i, acc_i) in acc.chunks_exact_mut(nc).enumerate() {
            let ai = a[i * k + kk];
            for (c, &bv) in acc_i.iter_mut().zip(brow) {
                *c = F::mul_add(ai, f64::from(bv), *c);
            }
        }
    }
    finish(p, blk, |i, j| acc[i * nc + j])
}

/// [`Path::Rows`]: `R = M` rows of A against the `[N, K]` rows `jc..jc + nc` of `w`, `ROWS_G`
/// rows of `w` at a time, each read sequentially with `k` ascending.
#[inline(always)]
fn rows<F: MulAdd, const R: usize>(p: &Problem<'_>, blk: Block) -> Vec<f32> {
    let (k, nc) = (p.k, blk.nc);
    let a: Vec<f64> = p.a[blk.ic * k..][..R * k].iter().map(|&x| f64::from(x)).collect();
    let a: [&[f64]; R] = std::array::from_fn(|i| &a[i * k..][..k]);
    let mut acc = vec![0f64; R * nc];
    let mut j = 0;
    while j < nc {
        let g = ROWS_G.min(nc - j);
        if g == ROWS_G {
            let w: [&[f32]; ROWS_G] = std::array::from_fn(|r| &p.b[(blk.jc + j + r) * k..][..k]);
            let mut s = [[0f64; ROWS_G]; R];
            for kk in 0..k {
                let wk: [f64; ROWS_G] = std::array::from_fn(|r| f64::from(w[r][kk]));
                for (s_i, a_i) in s.iter_mut().zip(&a) {
                    let ai = a_i[kk];
                    for (c, &wv) in s_i.iter_mut().zip(&wk) {
                        *c = F::mul_add(ai, wv, *c);
                    }
                }
            }
            for (i, s_i) in s.iter().enumerate() {
                acc[i * nc + j..][..ROWS_G].copy_from_slice(s_i);
            }
        } else {
            for r in 0..g {
                let w = &p.b[(blk.jc + j + r) * k..][..k];
                for (i, a_i) in a.iter().enumerate() {
                    let mut c = 0f64;
                    for (&ai, &wv) in a_i.iter().zip(w) {
                        c = F::mul_add(ai, f64::from(wv), c);
                    }
                    acc[i * nc + j + r] = c;
                }
            }
        }
        j += g;
    }
    finish(p, blk, |i, j| acc[i * nc + j])
}

/// Picks the register block for the tile: few rows get wider column blocks so the microkernel
/// still has enough independent accumulators (8 vectors of 4 lanes) to hide FMA latency.
#[inline(always)]
fn tile_shape<F: MulAdd>(p: &Problem<'_>, blk: Block) -> Vec<f32> {
    match blk.mc {
        1 => tile::<F, 1, 32>(p, blk),
        2..=3 => tile::<F, 3, 16>(p, blk),
        _ => tile::<F, 6, 8>(p, blk),
    }
}

/// Computes the tile whose top-left output element is `(ic, jc)`; returns it row-major
/// (`min(MC, M - ic)` rows of `min(NC, N - jc)` values).
#[inline(always)]
fn tile<F: MulAdd, const MR: usize, const NR: usize>(
    p: &Problem<'_>,
    blk: Block,
) -> Vec<f32> {
    let Block { ic, mc, jc, nc } = blk;
    let m_panels = mc.div_ceil(MR);
    let n_panels = nc.div_ceil(NR);
    // The accumulators of the tile, one `MR x NR` block per (column panel, row panel).
    let mut acc = vec![0f64; n_panels * m_panels * MR * NR];
    let mut apack = vec![0f64; mc * KC.min(p.k)];
    let mut bpack = vec![0f64; n_panels * NR * KC.min(p.k)];

    let mut pc = 0;
    while pc < p.k {
        let kc = KC.min(p.k - pc);
        pack_a(p, ic, mc, pc, kc, &mut apack);
        pack_b::<NR>(p, jc, nc, pc, kc, &mut bpack);
        for jp in 0..n_panels {
            let b = &bpack[jp * NR * kc..][..NR * kc];
            for ip in 0..m_panels {
                let mr = MR.min(mc - ip * MR);
                let a = &apack[ip * MR * kc..][..mr * kc];
                let c = &mut acc[(jp * m_panels + ip) * MR * NR..][..MR * NR];
                // Full panels take the MR arm; only the last row panel of a tile can be short.
                match mr {
                    1 => kernel::<F, 1, NR>(kc, a, b, c),
                    2 => kernel::<F, 2, NR>(kc, a, b, c),
                    3 => kernel::<F, 3, NR>(kc, a, b, c),
                    4 => kernel::<F, 4, NR>(kc, a, b, c),
                    5 => kernel::<F, 5, NR>(kc, a, b, c),
                    _ => kernel::<F, MR, NR>(kc, a, b, c),
                }
            }
        }
        pc += kc;
    }

    finish(p, blk, |i, j| acc[(j / NR * m_panels + i / MR) * MR * NR + i % MR * NR + j % NR])
}

/// Packs rows `ic..ic + mc`, columns `pc..pc + kc` of A into f64, row-major with row stride
/// `kc` (a plain contiguous conversion: the microkernel broadcasts from each row directly).
#[inline(always)]
fn pack_a(p: &Problem<'_>, ic: usize, mc: usize, pc: usize, kc: usize, apack: &mut [f64]) {
    for (r, dst) in apack.chunks_exact_mut(kc).take(mc).enumerate() {
        let src = &p.a[(ic + r) * p.k + pc..][..kc];
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = f64::from(s);
        }
    }
}

/// Packs columns `jc..jc + nc`, rows `pc..pc + kc` of B into f64 micro-panels: panel `jp`
/// starts at `jp * NR * kc` and holds columns `jc + jp * NR ..` laid out `[k][j]`, `NR` wide,
/// the last one zero-padded. The source is read along its contiguous axis (whole row segments
/// for `KN`, 16-value runs of each row for `NK`) so that large strides do not thrash the cache.
#[inline(always)]
fn pack_b<const NR: usize>(
    p: &Problem<'_>,
    jc: usize,
    nc: usize,
    pc: usize,
    kc: usize,
    bpack: &mut [f64],
) {
    let n_panels = nc.div_ceil(NR);
    let bpack = &mut bpack[..n_panels * NR * kc];
    match p.b_layout {
        RhsLayout::KN => {
            for kk in 0..kc {
                let src = &p.b[(pc + kk) * p.n + jc..][..nc];
                for (jp, chunk) in src.chunks(NR).enumerate() {
                    let dst = &mut bpack[jp * NR * kc + kk * NR..][..NR];
                    for (d, &s) in dst.iter_mut().zip(chunk) {
                        *d = f64::from(s);
                    }
                    dst[chunk.len()..].fill(0.0);
                }
            }
        }
        RhsLayout::NK => {
            const RUN: usize = 16;
            for (jp, panel) in bpack.chunks_exact_mut(NR * kc).enumerate() {
                let j0 = jc + jp * NR;
                let nr = NR.min(jc + nc - j0);
                for k0 in (0..kc).step_by(RUN) {
                    let run = RUN.min(kc - k0);
                    let block = &mut panel[k0 * NR..][..run * NR];
                    for j in 0..NR {
                        let dst = block[j..].iter_mut().step_by(NR);
                        if j < nr {
                            let src = &p.b[(j0 + j) * p.k + pc + k0..][..run];
                            for (d, &s) in dst.zip(src) {
                                *d = f64::from(s);
                            }
                        } else {
                            dst.for_each(|d| *d = 0.0);
                        }
                    }
                }
            }
        }
    }
}

/// The microkernel: continues the `R x NR` accumulators in `c` (row-major, `NR` wide) over one
/// K chunk of length `kc`, `k` ascending. `a` holds `R` rows of `kc` values (row-major), `b` an
/// `NR`-column micro-panel laid out `[k][j]`.
#[inline(always)]
fn kernel<F: MulAdd, const R: usize, const NR: usize>(kc: usize, a: &[f64], b: &[f64], c: &mut [f64]) {
    let rows: [&[f64]; R] = std::array::from_fn(|i| &a[i * kc..][..kc]);
    let b = &b[..kc * NR];
    let mut acc = [[0f64; NR]; R];
    for (i, row) in acc.iter_mut().enumerate() {
        row.copy_from_slice(&c[i * NR..][..NR]);
    }
    for (k, bk) in b.chunks_exact(NR).enumerate() {
        let bk: &[f64; NR] = bk.try_into().expect("chunks_exact yields NR values");
        for (row, ar) in acc.iter_mut().zip(&rows) {
            let ai = ar[k];
            for (cij, &bj) in row.iter_mut().zip(bk) {
                *cij = F::mul_add(ai, bj, *cij);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        c[i * NR..][..NR].copy_from_slice(row);
    }
}

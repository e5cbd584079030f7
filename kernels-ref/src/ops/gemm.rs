//! The blocked f64 GEMM engine behind [`linear`](super::linear()) and [`matmul`](super::matmul).
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
//! - rayon splits the output into independent rectangular blocks; no block touches another's
//!   elements, so the thread count does not change any element's order either.
//!
//! Layout ([`Path::Tiled`]): per `MC x NC` tile and K chunk, A's rows are converted to f64
//! (row-major; the microkernel broadcasts from each row directly) and B is converted to f64
//! `NR`-column micro-panels laid out `[k][j]`; an `MR x NR` register-blocked microkernel then
//! broadcasts one A value per row and multiplies it into `NR` B values (the vectorised
//! direction). For a handful of rows (decode-like shapes) two unpacked paths stream B once
//! instead ([`Path::Strip`], [`Path::Rows`]).
//!
//! On x86_64 the block routine is compiled twice from the same generic, `#[inline(always)]` body:
//! once with `avx2,fma` enabled (chosen at run time by `is_x86_feature_detected!`), once for the
//! baseline target. aarch64 has FMA in its baseline; other targets use the mul-then-add form.

use std::cell::Cell;
#[cfg(target_arch = "x86_64")]
use std::sync::OnceLock;

use rayon::prelude::*;

/// Rows of A per tile (a multiple of every `MR` used below).
const MC: usize = 120;
/// Columns of B per tile (a multiple of every `NR` used below).
const NC: usize = 256;
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
/// Accumulators per block of the [`Path::Strip`] path (16 KiB of f64: they stay in L1). The
/// strip is as wide as that allows, or narrower to give every rayon thread a block: long strips
/// mean long contiguous reads of B's rows.
const STRIP_ACC: usize = 2048;
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
    /// Few rows of A, `B` row-major `[K, N]`: a gemv-like pass that never packs B, reading it
    /// eight rows at a time with register-blocked accumulators per group of columns.
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
    if p.k == 0 {
        // Empty sums: the result is the bias (rounded from f32 to f64 and back: unchanged).
        if let Some(bias) = p.bias {
            for row in out.chunks_exact_mut(n) {
                row.copy_from_slice(bias);
            }
        }
        return out;
    }
    let (path, bm, bn) = match p.b_layout {
        _ if m > SMALL_M => (Path::Tiled, MC, NC),
        RhsLayout::KN => (Path::Strip, m, (STRIP_ACC / m).min(n.div_ceil(rayon::current_num_threads())).max(64)),
        RhsLayout::NK => (Path::Rows, m, ROWS_N),
    };
    let blocks: Vec<Block> = (0..m)
        .step_by(bm)
        .flat_map(|ic| (0..n).step_by(bn).map(move |jc| Block { ic, mc: bm.min(m - ic), jc, nc: bn.min(n - jc) }))
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
///
/// Every call must inline into [`block_avx2`]: behind a closure or a function that is not
/// `#[inline(always)]` it would be compiled without the `fma` feature, and `f64::mul_add` would
/// become a call to a software `fma` (the same bits, about 50 times slower).
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
        if use_avx2_fma() {
            // SAFETY: `block_avx2` only requires the avx2 and fma target features, and
            // `use_avx2_fma` has checked that the CPU supports both.
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

/// Whether to use the AVX2 + FMA instance: the CPU has both features and the environment
/// variable `QDIFF_REF_PORTABLE` is not set. Setting it forces the portable instance, which
/// gives the same bits (slower); the tests use it to check exactly that.
#[cfg(target_arch = "x86_64")]
fn use_avx2_fma() -> bool {
    static USE: OnceLock<bool> = OnceLock::new();
    *USE.get_or_init(|| {
        std::env::var_os("QDIFF_REF_PORTABLE").is_none()
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
    })
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

/// [`Path::Strip`]: `R = M` rows of A against row-major B, one strip of columns. B is read
/// eight rows at a time (eight sequential streams for the prefetchers); for each group of
/// columns the accumulators stay in registers across those eight rows, `k` ascending.
#[inline(always)]
fn strip<F: MulAdd, const R: usize>(p: &Problem<'_>, blk: Block) -> Vec<f32> {
    // Column groups sized so that the `R x CW` accumulators fill 8 vector registers.
    match R {
        1 => strip_cw::<F, R, 32>(p, blk),
        2 => strip_cw::<F, R, 16>(p, blk),
        _ => strip_cw::<F, R, 8>(p, blk),
    }
}

/// [`strip`] with `CW`-column register groups.
#[inline(always)]
fn strip_cw<F: MulAdd, const R: usize, const CW: usize>(p: &Problem<'_>, blk: Block) -> Vec<f32> {
    const ROWS: usize = 8;
    let (k, nc) = (p.k, blk.nc);
    let a: Vec<f64> = p.a[blk.ic * k..][..R * k].iter().map(|&x| f64::from(x)).collect();
    let a: [&[f64]; R] = std::array::from_fn(|i| &a[i * k..][..k]);
    let mut acc = vec![0f64; R * nc];
    let full = nc / CW * CW;
    for k0 in (0..k).step_by(ROWS) {
        let k1 = (k0 + ROWS).min(k);
        for j in (0..full).step_by(CW) {
            let mut c = [[0f64; CW]; R];
            for (i, ci) in c.iter_mut().enumerate() {
                ci.copy_from_slice(&acc[i * nc + j..][..CW]);
            }
            for kk in k0..k1 {
                let brow: &[f32; CW] = p.b[kk * p.n + blk.jc + j..][..CW].try_into().expect("CW values");
                for (ci, ai) in c.iter_mut().zip(&a) {
                    let ai = ai[kk];
                    for (cv, &bv) in ci.iter_mut().zip(brow) {
                        *cv = F::mul_add(ai, f64::from(bv), *cv);
                    }
                }
            }
            for (i, ci) in c.iter().enumerate() {
                acc[i * nc + j..][..CW].copy_from_slice(ci);
            }
        }
        for j in full..nc {
            for (i, ai) in a.iter().enumerate() {
                let mut v = acc[i * nc + j];
                for kk in k0..k1 {
                    v = F::mul_add(ai[kk], f64::from(p.b[kk * p.n + blk.jc + j]), v);
                }
                acc[i * nc + j] = v;
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
fn tile<F: MulAdd, const MR: usize, const NR: usize>(p: &Problem<'_>, blk: Block) -> Vec<f32> {
    let Block { ic, mc, jc, nc } = blk;
    let m_panels = mc.div_ceil(MR);
    let n_panels = nc.div_ceil(NR);
    let kc_max = KC.min(p.k);
    let (acc_len, a_len, b_len) = (n_panels * m_panels * MR * NR, mc * kc_max, n_panels * panel_stride::<NR>(kc_max));
    // The accumulators of the tile, one `MR x NR` block per (column panel, row panel), and the
    // packed operands of the current K chunk. Every element is written before it is read (the
    // first chunk's kernels start from zero), so stale scratch contents do not matter.
    // (No closure around the hot loops: they must inline into the `target_feature` instance.)
    let mut scratch = take_scratch(acc_len + a_len + b_len);
    let ws = &mut scratch[..acc_len + a_len + b_len];
    let (acc, ws) = ws.split_at_mut(acc_len);
    let (apack, bpack) = ws.split_at_mut(a_len);
    let mut pc = 0;
    while pc < p.k {
        let kc = KC.min(p.k - pc);
        let first = pc == 0;
        pack_a(p, ic, mc, pc, kc, apack);
        pack_b::<NR>(p, jc, nc, pc, kc, bpack);
        for jp in 0..n_panels {
            let b = &bpack[jp * panel_stride::<NR>(kc)..][..NR * kc];
            for ip in 0..m_panels {
                let mr = MR.min(mc - ip * MR);
                let a = &apack[ip * MR * kc..][..mr * kc];
                let c = &mut acc[(jp * m_panels + ip) * MR * NR..][..MR * NR];
                // Full panels take the MR arm; only the last row panel of a tile is short.
                match mr {
                    1 => kernel::<F, 1, NR>(first, kc, a, b, c),
                    2 => kernel::<F, 2, NR>(first, kc, a, b, c),
                    3 => kernel::<F, 3, NR>(first, kc, a, b, c),
                    4 => kernel::<F, 4, NR>(first, kc, a, b, c),
                    5 => kernel::<F, 5, NR>(first, kc, a, b, c),
                    _ => kernel::<F, MR, NR>(first, kc, a, b, c),
                }
            }
        }
        pc += kc;
    }

    // Round out panel by panel: each accumulator row of a micro-tile is `NR` consecutive
    // outputs.
    let mut out = vec![0f32; mc * nc];
    for jp in 0..n_panels {
        let (j0, nr) = (jp * NR, NR.min(nc - jp * NR));
        let bias = p.bias.map(|b| &b[jc + j0..][..nr]);
        for ip in 0..m_panels {
            let c = &acc[(jp * m_panels + ip) * MR * NR..][..MR * NR];
            for r in 0..MR.min(mc - ip * MR) {
                let dst = &mut out[(ip * MR + r) * nc + j0..][..nr];
                round_row(&c[r * NR..][..nr], bias, dst);
            }
        }
    }
    return_scratch(scratch);
    out
}

/// `dst[j] = round_f32(acc[j] + bias[j])` (no bias: `round_f32(acc[j])`).
#[inline(always)]
fn round_row(acc: &[f64], bias: Option<&[f32]>, dst: &mut [f32]) {
    match bias {
        Some(bias) => {
            for ((d, &a), &b) in dst.iter_mut().zip(acc).zip(bias) {
                *d = super::round_f32(a + f64::from(b));
            }
        }
        None => {
            for (d, &a) in dst.iter_mut().zip(acc) {
                *d = super::round_f32(a);
            }
        }
    }
}

thread_local! {
    /// Per-thread scratch for the tiled path (accumulators and packed panels), reused across
    /// calls so that each tile does not allocate, fault in and zero half a megabyte.
    static SCRATCH: Cell<Vec<f64>> = const { Cell::new(Vec::new()) };
}

/// Takes this thread's scratch, grown to at least `len` values (contents unspecified).
fn take_scratch(len: usize) -> Vec<f64> {
    let mut v = SCRATCH.with(Cell::take);
    if v.len() < len {
        v.resize(len, 0.0);
    }
    v
}

/// Gives the scratch back for the next tile on this thread.
fn return_scratch(v: Vec<f64>) {
    SCRATCH.with(|s| s.set(v));
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

/// Distance between consecutive packed B micro-panels: `NR * kc` plus one cache line, so that
/// the panels (written one row of B at a time) do not all map to the same cache sets when
/// `NR * kc * 8` is a multiple of 4 KiB.
#[inline(always)]
const fn panel_stride<const NR: usize>(kc: usize) -> usize {
    NR * kc + 8
}

/// Packs columns `jc..jc + nc`, rows `pc..pc + kc` of B into f64 micro-panels: panel `jp`
/// starts at `jp * panel_stride::<NR>(kc)` and holds columns `jc + jp * NR ..` laid out `[k][j]`, `NR` wide,
/// the last one zero-padded. The source is read along its contiguous axis (whole row segments
/// for `KN`, 16-value runs of each row for `NK`) so that large strides do not thrash the cache.
#[inline(always)]
fn pack_b<const NR: usize>(p: &Problem<'_>, jc: usize, nc: usize, pc: usize, kc: usize, bpack: &mut [f64]) {
    let n_panels = nc.div_ceil(NR);
    let stride = panel_stride::<NR>(kc);
    let bpack = &mut bpack[..n_panels * stride];
    match p.b_layout {
        RhsLayout::KN => {
            // Eight rows of B at a time, each advancing `NR` values per panel: eight sequential
            // streams that the hardware prefetchers follow, instead of one row at a time, whose
            // every start would wait on memory.
            const ROWS: usize = 8;
            for k0 in (0..kc).step_by(ROWS) {
                for (jp, panel) in bpack.chunks_mut(stride).enumerate() {
                    let j0 = jc + jp * NR;
                    let nr = NR.min(jc + nc - j0);
                    for kk in k0..(k0 + ROWS).min(kc) {
                        let src = &p.b[(pc + kk) * p.n + j0..][..nr];
                        let dst = &mut panel[kk * NR..][..NR];
                        for (d, &s) in dst.iter_mut().zip(src) {
                            *d = f64::from(s);
                        }
                        dst[nr..].fill(0.0);
                    }
                }
            }
        }
        RhsLayout::NK => {
            const RUN: usize = 16;
            for (jp, panel) in bpack.chunks_mut(stride).enumerate() {
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
/// K chunk of length `kc`, `k` ascending, starting them from zero instead on the `first`
/// chunk. `a` holds `R` rows of `kc` values (row-major), `b` an `NR`-column micro-panel laid
/// out `[k][j]`.
#[inline(always)]
fn kernel<F: MulAdd, const R: usize, const NR: usize>(first: bool, kc: usize, a: &[f64], b: &[f64], c: &mut [f64]) {
    let rows: [&[f64]; R] = std::array::from_fn(|i| &a[i * kc..][..kc]);
    let b = &b[..kc * NR];
    let mut acc = [[0f64; NR]; R];
    if !first {
        for (i, row) in acc.iter_mut().enumerate() {
            row.copy_from_slice(&c[i * NR..][..NR]);
        }
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

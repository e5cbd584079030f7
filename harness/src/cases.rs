//! Seeded op cases for `qdiff check`: shapes that fit the scheme, values from a handful of
//! distributions that hit the schemes' edge cases (schemes.md §7 "Fuzzer knobs": zero and constant
//! groups, one-signed groups, outliers, values on rounding ties, negative zeros), and the inputs
//! each op needs. The same (seed, op, scheme, variant, index) gives the same case on any machine.

use devices::case::{Fault, Op, OpCase, Variant};
use kernels_ref::scheme::{Family, Granularity, LutGranularity, Scheme};
use kernels_ref::tensor::Matrix;

/// SplitMix64: a tiny, well-mixed, portable generator (the same stream on every machine).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, n)`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    /// One element of a slice.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// FNV-1a over a string: the stable per-case seed of `qdiff check` (independent of Rust's hasher).
pub fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The value distributions cases draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dist {
    /// Normal with a random scale.
    Normal,
    /// Uniform in ±a.
    Uniform,
    /// Normal with one large outlier per row.
    Outlier,
    /// Multiples of 1/8 in a small range: codes land on rounding ties often.
    Ties,
    /// Normal with one all-zero and one constant run of 32 per row, and negative zeros.
    Degenerate,
    /// All positive (or all negative) values.
    OneSigned,
}

const DISTS: [Dist; 6] = [Dist::Normal, Dist::Uniform, Dist::Outlier, Dist::Ties, Dist::Degenerate, Dist::OneSigned];

/// A `[rows, cols]` matrix of values from `dist`.
pub fn fill(rng: &mut Rng, dist: Dist, rows: usize, cols: usize) -> Matrix {
    let scale = *rng.pick(&[0.02, 0.1, 1.0, 3.0]);
    let mut data = Vec::with_capacity(rows * cols);
    let negative = rng.below(2) == 0;
    for _ in 0..rows {
        let outlier_at = rng.below(cols);
        let zero_run = rng.below(cols.div_ceil(32).max(1)) * 32;
        let const_run = rng.below(cols.div_ceil(32).max(1)) * 32;
        let c = rng.normal() * scale;
        for j in 0..cols {
            let v = match dist {
                Dist::Normal => rng.normal() * scale,
                Dist::Uniform => (rng.unit() * 2.0 - 1.0) * scale,
                Dist::Outlier => {
                    if j == outlier_at {
                        scale * 40.0 * if rng.below(2) == 0 { 1.0 } else { -1.0 }
                    } else {
                        rng.normal() * scale
                    }
                }
                Dist::Ties => (rng.below(33) as f64 - 16.0) / 8.0,
                Dist::Degenerate => {
                    if (zero_run..zero_run + 32).contains(&j) {
                        if rng.below(3) == 0 {
                            -0.0
                        } else {
                            0.0
                        }
                    } else if (const_run..const_run + 32).contains(&j) && const_run != zero_run {
                        c
                    } else {
                        rng.normal() * scale
                    }
                }
                Dist::OneSigned => {
                    let m = rng.unit() * scale + scale * 0.01;
                    if negative {
                        -m
                    } else {
                        m
                    }
                }
            };
            data.push(v as f32);
        }
    }
    Matrix { rows, cols, data }
}

/// A K (row length) that the scheme's grouping accepts, with at least two groups when `min_groups`.
fn pick_k(rng: &mut Rng, scheme: &Scheme, min_groups: usize) -> usize {
    match scheme.granularity() {
        Granularity::Group(g) => {
            let max_groups = if g >= 128 { 2 } else { 3 };
            g * (min_groups.max(1) + rng.below(max_groups + 1 - min_groups.clamp(1, max_groups)))
        }
        Granularity::Channel | Granularity::Tensor => *rng.pick(&[16, 20, 24, 32, 40, 64]),
    }
}

/// A row count (N or V) that the scheme accepts (grouped LUTs need a multiple of the group).
fn pick_n(rng: &mut Rng, scheme: &Scheme) -> usize {
    let n = 1 + rng.below(12);
    match scheme.family {
        Family::Pal { lut: LutGranularity::GroupedChannels(c), .. } => c * (1 + rng.below(2)),
        _ => n,
    }
}

/// Round every value to the scheme's compute dtype, as a framework holding a tensor of that dtype sees it.
fn in_dtype(scheme: &Scheme, mut m: Matrix) -> Matrix {
    for v in &mut m.data {
        *v = scheme.dtype.round_f32(*v as f64);
    }
    m
}

/// Build case `seed` of `op` on `scheme`. The reference quantizes the weights of weight ops, as a
/// checkpoint would hold them.
pub fn make_case(
    op: Op,
    scheme: Scheme,
    variant: &Variant,
    inject: Option<Fault>,
    seed: u64,
) -> anyhow::Result<OpCase> {
    let mut rng = Rng::new(seed);
    let dist = *rng.pick(&DISTS);
    // Faults that act on groups need at least two of them to show.
    let min_groups = if matches!(inject, Some(Fault::ScaleTranspose | Fault::DropLastGroup)) { 2 } else { 1 };
    let k = pick_k(&mut rng, &scheme, min_groups);
    let mut n = pick_n(&mut rng, &scheme);
    if inject == Some(Fault::ScaleTranspose) && n == k / scheme.granularity().group_len(k) {
        n += 1; // a square scale grid read transposed is still wrong, but keep the shapes distinct
    }
    let m = 1 + rng.below(4);
    let mut case = OpCase { op, scheme, variant: variant.clone(), inject, w: None, wq: None, x: None, ids: None };
    match op {
        Op::Quantize => case.w = Some(in_dtype(&scheme, fill(&mut rng, dist, n, k))),
        Op::Dequantize | Op::Embedding | Op::Linear => {
            let w = in_dtype(&scheme, fill(&mut rng, dist, n, k));
            case.wq = Some(scheme.quantize(&w)?);
            case.w = Some(w);
            if op == Op::Embedding {
                case.ids = Some((0..m + 1).map(|_| rng.below(n) as u32).collect());
            }
            if op == Op::Linear {
                let xd = *rng.pick(&DISTS);
                case.x = Some(in_dtype(&scheme, fill(&mut rng, xd, m, k)));
            }
        }
        Op::ActQuant => case.x = Some(in_dtype(&scheme, fill(&mut rng, dist, m, k))),
        Op::Regroup => {}
    }
    Ok(case)
}

/// The main shape of a case for results: `[N, K]`, `[M, N, K]` for linear, `[M, K]` for act_quant,
/// `[ids, V, D]` for embedding.
pub fn case_shape(case: &OpCase) -> Vec<usize> {
    let w = case.w.as_ref().map(|w| [w.rows, w.cols]);
    let x = case.x.as_ref().map(|x| [x.rows, x.cols]);
    match (case.op, w, x) {
        (Op::Linear, Some([n, k]), Some([m, _])) => vec![m, n, k],
        (Op::ActQuant, _, Some([m, k])) => vec![m, k],
        (Op::Embedding, Some([v, d]), _) => vec![case.ids.as_ref().map_or(0, Vec::len), v, d],
        (_, Some([n, k]), _) => vec![n, k],
        _ => Vec::new(),
    }
}

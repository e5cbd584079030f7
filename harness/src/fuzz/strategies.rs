//! proptest strategies for `qdiff fuzz`: one per (op, scheme), drawing shapes, value
//! distributions, embedding ids and device variants, usable at run time through a
//! [`proptest::test_runner::TestRunner`] as well as in `#[test]`s.
//!
//! A draw is a small [`CaseParams`] (shape, two value generators, a seed, a variant) that
//! [`CaseParams::build`] turns into a [`CaseSpec`] with explicit float values. The values are a
//! pure function of (seed, tensor, row, column), so the same draw gives the same case on every
//! machine. A [`CaseSpec`] becomes an [`OpCase`] through [`CaseSpec::op_case`], where the
//! reference quantizes the weights (`wq`) from `w`, as a checkpoint would hold them; a group size
//! that does not divide K is refused there with [`RefError::GroupSize`], never a panic
//! ([`non_dividing_strategy`] draws exactly such cases).
//!
//! Shapes and distributions reach every "Fuzzer knob" of schemes.md §7 that a case (rather than a
//! scheme name) carries: K not a multiple of 8 and N not a multiple of 4 where the grouping
//! allows, zero / constant / one-signed groups, single outliers, heavy tails, f32 and fp16
//! denormals, magnitudes near the fp16 max, exact rounding ties `(k+½)·2^e`, negative zeros. The
//! knobs that live in the scheme name (bits, group size, mapping, dtypes, zero-point dtype) are
//! reached by the scheme list `qdiff fuzz` runs over.

use crate::fuzz::shrink::CaseTree;
use devices::case::{Fault, Op, OpCase, Storage, Variant};
use kernels_ref::error::RefError;
use kernels_ref::scheme::{Family, Granularity, LutGranularity, Scheme};
use kernels_ref::tensor::Matrix;
use proptest::prelude::*;
use proptest::strategy::{NewTree, ValueTree};
use proptest::test_runner::TestRunner;

/// How the values of one tensor are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dist {
    /// Standard normal times the magnitude.
    Normal,
    /// Uniform in ±magnitude.
    Uniform,
    /// Cauchy-like heavy tails (clamped at 10^4 × the magnitude, so values stay finite).
    HeavyTail,
    /// Normal with a single large outlier (±40× or more) per row.
    Outlier,
    /// Every other group constant (min == max ≠ 0).
    ConstantGroups,
    /// Every other group all zero.
    ZeroGroups,
    /// Every group all negative (MLX CPU and GPU disagree there).
    NegativeGroups,
    /// Every group all positive.
    PositiveGroups,
    /// Mostly f32 subnormals (below 2^-126).
    F32Denormals,
    /// Mostly fp16 subnormals (multiples of 2^-24 below 2^-14), exact in fp16.
    F16Denormals,
    /// Magnitudes within 2048 of the fp16 max (65504), both signs.
    NearF16Max,
    /// Values on exact rounding ties `(k+½)·2^e`, each group holding its amax `L·2^e` for a level
    /// count `L` of some scheme (7.5, 7, 8, 127.5, 127, 15/2 ...), so that the scale is `2^e`.
    Ties,
    /// Negative zeros: all-zero groups that start with −0.0, and −0.0 scattered in normal groups.
    NegativeZeros,
    /// Each group from one of the distributions above.
    Mixed,
}

impl Dist {
    /// Every distribution.
    pub const ALL: [Dist; 14] = [
        Dist::Normal,
        Dist::Uniform,
        Dist::HeavyTail,
        Dist::Outlier,
        Dist::ConstantGroups,
        Dist::ZeroGroups,
        Dist::NegativeGroups,
        Dist::PositiveGroups,
        Dist::F32Denormals,
        Dist::F16Denormals,
        Dist::NearF16Max,
        Dist::Ties,
        Dist::NegativeZeros,
        Dist::Mixed,
    ];
}

/// One tensor's value generator: a distribution, a magnitude `2^exp` and a seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ValueGen {
    /// The distribution.
    pub dist: Dist,
    /// The magnitude, as a power of two (ignored by the denormal and near-fp16-max distributions).
    pub exp: i32,
    /// The seed the values are hashed from.
    pub seed: u64,
}

/// What a strategy draws: everything a case is built from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CaseParams {
    /// Weight rows N (table rows V for embedding; token rows M for act_quant).
    pub rows: usize,
    /// Activation rows M of linear; the number of ids of embedding.
    pub m: usize,
    /// Row length K (D for embedding).
    pub k: usize,
    /// The weights' (or act_quant's activations') values.
    pub w_values: ValueGen,
    /// The activations' values of linear.
    pub x_values: ValueGen,
    /// Seed of the embedding ids (and the provenance seed of the case).
    pub seed: u64,
    /// Device-side choices.
    pub variant: Variant,
    /// A given palettization LUT (palettized schemes only; `None`: the scheme builds its own).
    #[serde(default)]
    pub lut: Option<LutGen>,
}

/// What a given palettization LUT looks like (schemes.md §7 knob "LUT contents").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum LutKind {
    /// Random entries, sorted ascending (what k-means produces).
    Sorted,
    /// Random entries in no order (indices then do not follow magnitude).
    Unsorted,
    /// Only three distinct values, repeated (ties between equally near entries).
    Duplicates,
    /// Zero, negative zero, the dtype's smallest subnormal, ±1 and values near the dtype's largest.
    Extreme,
}

/// A LUT generator: its kind, magnitude `2^exp` and seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct LutGen {
    /// The kind.
    pub kind: LutKind,
    /// Magnitude of random entries, as a power of two.
    pub exp: i32,
    /// Seed the entries are hashed from.
    pub seed: u64,
}

impl LutGen {
    /// LUT number `block` (`2^bits` entries), each rounded to the scheme's compute dtype. For a
    /// `linear` case the "near the largest" entries stay 2^8 above the random ones instead, so
    /// that a sum cannot overflow to ±inf and turn order-dependent (inf − inf).
    pub fn lut(&self, scheme: &Scheme, bits: u8, block: usize, for_linear: bool) -> Vec<f32> {
        let t = scheme.dtype;
        let levels = 1usize << bits;
        let scale = (2f64).powi(self.exp);
        let rnd = |i: usize| unit(hash(self.seed, &[11, block as u64, i as u64])) * 2.0 - 1.0;
        let mut v: Vec<f64> = match self.kind {
            LutKind::Sorted | LutKind::Unsorted => (0..levels).map(|i| rnd(i) * scale).collect(),
            LutKind::Duplicates => {
                let three = [rnd(0) * scale, rnd(1) * scale, rnd(2) * scale];
                (0..levels).map(|i| three[i % 3]).collect()
            }
            LutKind::Extreme => {
                let tiny = t.smallest_normal() * t.epsilon();
                let big = if for_linear { scale * 256.0 } else { t.max_finite() / 2.0 };
                let pool = [0.0, -0.0, tiny, -tiny, 1.0, -1.0, big, -big];
                (0..levels).map(|i| if i < pool.len() { pool[i] } else { rnd(i) * scale }).collect()
            }
        };
        if self.kind == LutKind::Sorted {
            v.sort_by(f64::total_cmp);
        }
        v.into_iter().map(|x| t.round_f32(x)).collect()
    }
}

/// A case with explicit values: what the shrinker works on, and what [`CaseSpec::op_case`]
/// turns into an [`OpCase`].
#[derive(Debug, Clone, PartialEq)]
pub struct CaseSpec {
    /// The op.
    pub op: Op,
    /// The scheme.
    pub scheme: Scheme,
    /// Device-side choices.
    pub variant: Variant,
    /// The injected fault, if any.
    pub inject: Option<Fault>,
    /// Float weights `[N, K]` (`[V, D]` for embedding), already in the scheme's compute dtype.
    pub w: Option<Matrix>,
    /// Activations `[M, K]` of linear and act_quant, in the compute dtype.
    pub x: Option<Matrix>,
    /// Embedding ids.
    pub ids: Option<Vec<u32>>,
    /// The seed the case was drawn from (provenance; the values are explicit).
    pub seed: u64,
    /// The fewest groups per row the case may have: 2 for faults that act between groups
    /// (scale-transpose, drop-last-group), so that a minimal case still shows them as such.
    pub min_groups: usize,
    /// Given palettization LUTs, one per block of rows that shares a LUT (`None`: the scheme
    /// builds its own from the weights).
    pub lut: Option<Vec<Vec<f32>>>,
}

impl CaseSpec {
    /// The op case: the reference quantizes `w` into `wq` for weight ops. A group size that does
    /// not divide K is [`RefError::GroupSize`]; a non-finite value [`RefError::BadValue`].
    pub fn op_case(&self) -> Result<OpCase, RefError> {
        let k = self.x.as_ref().or(self.w.as_ref()).map_or(0, |m| m.cols);
        self.scheme.granularity().check(&self.scheme.to_string(), k)?;
        let wq = match (self.op, &self.w, &self.lut) {
            (Op::Dequantize | Op::Linear | Op::Embedding, Some(w), Some(luts))
                if matches!(self.scheme.family, Family::Pal { .. }) =>
            {
                let flat: Vec<f32> = luts.iter().flatten().copied().collect();
                kernels_ref::scheme::check_finite(&self.scheme, w)?;
                Some(kernels_ref::scheme::pal::quantize(&self.scheme, w, Some(&flat))?)
            }
            (Op::Dequantize | Op::Linear | Op::Embedding, Some(w), _) => Some(self.scheme.quantize(w)?),
            _ => None,
        };
        Ok(OpCase {
            op: self.op,
            scheme: self.scheme,
            variant: self.variant.clone(),
            inject: self.inject,
            w: self.w.clone(),
            wq,
            x: self.x.clone(),
            ids: self.ids.clone(),
        })
    }

    /// The row length K (D for embedding).
    pub fn k(&self) -> usize {
        self.w.as_ref().or(self.x.as_ref()).map_or(0, |m| m.cols)
    }

    /// Groups per row (1 for per-channel and per-tensor schemes).
    pub fn groups(&self) -> usize {
        let k = self.k();
        match self.scheme.granularity() {
            Granularity::Group(g) if g > 0 => k / g,
            _ => 1,
        }
    }

    /// The main shape, as results record it (see [`crate::cases::case_shape`]).
    pub fn shape(&self) -> Vec<usize> {
        let w = self.w.as_ref().map(|w| [w.rows, w.cols]);
        let x = self.x.as_ref().map(|x| [x.rows, x.cols]);
        match (self.op, w, x) {
            (Op::Linear, Some([n, k]), Some([m, _])) => vec![m, n, k],
            (Op::ActQuant, _, Some([m, k])) => vec![m, k],
            (Op::Embedding, Some([v, d]), _) => vec![self.ids.as_ref().map_or(0, Vec::len), v, d],
            (_, Some([n, k]), _) => vec![n, k],
            _ => Vec::new(),
        }
    }
}

/// The fewest groups per row a case with this fault needs for the fault to show as itself.
pub fn min_groups(inject: Option<Fault>) -> usize {
    if matches!(inject, Some(Fault::ScaleTranspose | Fault::DropLastGroup)) {
        2
    } else {
        1
    }
}

/// The multiple weight rows must come in: a grouped-channel LUT needs whole groups of rows.
pub fn row_unit(scheme: &Scheme) -> usize {
    match scheme.family {
        Family::Pal { lut: LutGranularity::GroupedChannels(c), .. } => c.max(1),
        _ => 1,
    }
}

/// SplitMix64 finalizer: a well-mixed, portable hash of a 64-bit word.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A hash of a seed and some coordinates: positional, so removing rows or groups while shrinking
/// never changes the values of what is kept, and the values never depend on draw order.
fn hash(seed: u64, parts: &[u64]) -> u64 {
    parts.iter().fold(mix(seed), |h, &p| mix(h ^ p.wrapping_mul(0xD6E8_FEB8_6659_FD93)))
}

/// Uniform in `[0, 1)` from a hash.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A standard normal from two hashes (Box–Muller).
fn normal(h1: u64, h2: u64) -> f64 {
    let u1 = unit(h1).max(f64::MIN_POSITIVE);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * unit(h2)).cos()
}

/// `2^e` exactly.
fn pow2(e: i32) -> f64 {
    (2f64).powi(e)
}

/// Level counts `L` with `scale = amax / L` for some scheme: 4-bit sym-ao, symclip, sym8, 8-bit
/// sym-ao and symclip, and the half-ranges `(2^b − 1)/2` of the asymmetric b-bit schemes.
const TIE_LEVELS: [f64; 9] = [7.5, 7.0, 8.0, 127.5, 127.0, 1.5, 3.5, 15.5, 31.5];

/// The distributions `Mixed` picks per group: every one but `Mixed` itself (the last).
const GROUP_DISTS: &[Dist] = Dist::ALL.split_last().expect("Dist::ALL is not empty").1;

/// `[rows, cols]` values of `g`, with groups of `group_len` along each row, rounded to the
/// scheme's compute dtype (clamped to its largest finite value first: values stay finite).
pub fn fill(g: &ValueGen, tensor: u64, rows: usize, cols: usize, group_len: usize, scheme: &Scheme) -> Matrix {
    let gl = group_len.max(1);
    let s = pow2(g.exp);
    let t = scheme.dtype;
    let max = t.max_finite().min(f32::MAX as f64);
    let mut data = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let row_h = hash(g.seed, &[tensor, r as u64]);
        let outlier_col = (row_h % cols.max(1) as u64) as usize;
        for c in 0..cols {
            let gi = c / gl;
            let gh = hash(g.seed, &[tensor, r as u64, gi as u64, 0x0067_726f_7570]);
            let dist = match g.dist {
                Dist::Mixed => GROUP_DISTS[(gh % GROUP_DISTS.len() as u64) as usize],
                d => d,
            };
            let h = hash(g.seed, &[tensor, r as u64, c as u64]);
            let h2 = mix(h ^ 0x5555);
            let sign = if h2 & 1 == 0 { 1.0 } else { -1.0 };
            let group_sign = if (gh >> 7) & 1 == 0 { 1.0 } else { -1.0 };
            let every_other = (gh >> 9) & 1 == 0;
            let v: f64 = match dist {
                Dist::Normal | Dist::Mixed => normal(h, h2) * s,
                Dist::Uniform => (unit(h) * 2.0 - 1.0) * s,
                Dist::HeavyTail => {
                    let c = (std::f64::consts::PI * (unit(h) - 0.5)).tan();
                    c.clamp(-1e4, 1e4) * s
                }
                Dist::Outlier => {
                    if c == outlier_col {
                        40.0 * s * (1.0 + unit(h)) * sign
                    } else {
                        normal(h, h2) * s
                    }
                }
                Dist::ConstantGroups => {
                    if every_other {
                        normal(gh, mix(gh)) * s
                    } else {
                        normal(h, h2) * s
                    }
                }
                Dist::ZeroGroups => {
                    if every_other {
                        0.0
                    } else {
                        normal(h, h2) * s
                    }
                }
                Dist::NegativeGroups => -(normal(h, h2).abs() + 0.01) * s,
                Dist::PositiveGroups => (normal(h, h2).abs() + 0.01) * s,
                Dist::F32Denormals => {
                    if h % 4 == 0 {
                        normal(h, h2) * s
                    } else {
                        sign * f32::from_bits(1 + (h2 >> 8) as u32 % 0x007f_ffff) as f64
                    }
                }
                Dist::F16Denormals => {
                    if h % 4 == 0 {
                        normal(h, h2) * pow2(-16)
                    } else {
                        sign * (1 + (h2 >> 8) % 1023) as f64 * pow2(-24)
                    }
                }
                Dist::NearF16Max => sign * (65504.0 - 32.0 * ((h2 >> 8) % 64) as f64),
                Dist::Ties => {
                    let level = TIE_LEVELS[(gh % TIE_LEVELS.len() as u64) as usize];
                    let amax_at = ((gh >> 16) % gl as u64) as usize;
                    if c % gl == amax_at {
                        group_sign * level * s
                    } else {
                        // (k+½)·s with |k+½| ≤ level: on a tie of the scale s = amax/level = 2^exp.
                        let span = level.floor() as i64;
                        let k = (h2 % (2 * span as u64 + 1)) as i64 - span;
                        let x = (k as f64 + 0.5) * s;
                        if x.abs() > level * s {
                            (k as f64 - 0.5) * s
                        } else {
                            x
                        }
                    }
                }
                Dist::NegativeZeros => {
                    if every_other {
                        if c % gl == 0 || h % 3 == 0 {
                            -0.0
                        } else {
                            0.0
                        }
                    } else if h % 4 == 0 {
                        -0.0
                    } else {
                        normal(h, h2) * s
                    }
                }
            };
            let v = if v.is_finite() { v.clamp(-max, max) } else { 0.0 };
            let r = t.round_f32(v);
            data.push(if r.is_finite() { r } else { (max as f32).copysign(r) });
        }
    }
    Matrix { rows, cols, data }
}

/// Keep `K·max|x|·max|w|` well below the compute dtype's largest value for linear, by scaling `x`
/// by a power of two (exact): an accumulation that overflows to ±Inf, or to NaN through
/// `Inf − Inf`, depends on the summation order and says nothing about the kernel.
pub fn guard_linear_overflow(scheme: &Scheme, w: &Matrix, x: &mut Matrix) {
    let amax = |m: &Matrix| m.data.iter().fold(0f64, |a, &v| a.max((v as f64).abs()));
    let (wm, xm) = (amax(w), amax(x));
    let limit = scheme.dtype.max_finite().min(f32::MAX as f64) / 16.0;
    let bound = x.cols.max(1) as f64 * wm * xm;
    if bound > limit && xm > 0.0 {
        let shift = (bound / limit).log2().ceil() as i32;
        let f = pow2(-shift);
        for v in &mut x.data {
            *v = scheme.dtype.round_f32(*v as f64 * f);
        }
    }
}

impl CaseParams {
    /// The case these parameters describe, deterministically.
    pub fn build(&self, op: Op, scheme: &Scheme, inject: Option<Fault>) -> CaseSpec {
        let gl = scheme.granularity().group_len(self.k.max(1));
        let mut spec = CaseSpec {
            op,
            scheme: *scheme,
            variant: self.variant.clone(),
            inject,
            w: None,
            x: None,
            ids: None,
            seed: self.seed,
            min_groups: min_groups(inject),
            lut: None,
        };
        if let (Family::Pal { bits, .. }, Some(g), true) =
            (scheme.family, self.lut, matches!(op, Op::Dequantize | Op::Linear | Op::Embedding))
        {
            let blocks = (self.rows / row_unit(scheme)).max(1);
            spec.lut = Some((0..blocks).map(|b| g.lut(scheme, bits, b, op == Op::Linear)).collect());
        }
        match op {
            Op::Quantize | Op::Dequantize => spec.w = Some(fill(&self.w_values, 0, self.rows, self.k, gl, scheme)),
            Op::Embedding => {
                spec.w = Some(fill(&self.w_values, 0, self.rows, self.k, gl, scheme));
                let v = self.rows.max(1) as u64;
                spec.ids = Some((0..self.m.max(1)).map(|i| (hash(self.seed, &[3, i as u64]) % v) as u32).collect());
            }
            Op::Linear => {
                let w = fill(&self.w_values, 0, self.rows, self.k, gl, scheme);
                let mut x = fill(&self.x_values, 1, self.m, self.k, gl, scheme);
                guard_linear_overflow(scheme, &w, &mut x);
                spec.w = Some(w);
                spec.x = Some(x);
            }
            Op::ActQuant => spec.x = Some(fill(&self.w_values, 0, self.rows, self.k, gl, scheme)),
            Op::Regroup => {}
        }
        spec
    }
}

/// Device variants a strategy draws from: storages × workgroup sizes (`None` = the runner's).
pub fn variants(storages: &[Storage], workgroup_sizes: &[Option<u32>]) -> Vec<Variant> {
    let mut out = Vec::new();
    for &storage in storages {
        for &workgroup_size in workgroup_sizes {
            out.push(Variant { storage, workgroup_size, ..Variant::default() });
        }
    }
    out
}

/// The workgroup sizes fuzzing draws from: the runner's default and {32, 64, 128, 256}.
pub const WORKGROUP_SIZES: [Option<u32>; 5] = [None, Some(32), Some(64), Some(128), Some(256)];

/// A value generator.
fn lut_gen() -> impl Strategy<Value = LutGen> {
    (
        prop::sample::select(vec![LutKind::Sorted, LutKind::Unsorted, LutKind::Duplicates, LutKind::Extreme]),
        -6i32..=3,
        any::<u64>(),
    )
        .prop_map(|(kind, exp, seed)| LutGen { kind, exp, seed })
}

fn value_gen() -> impl Strategy<Value = ValueGen> {
    (prop::sample::select(Dist::ALL.to_vec()), -8i32..=4, any::<u64>()).prop_map(|(dist, exp, seed)| ValueGen {
        dist,
        exp,
        seed,
    })
}

/// Row lengths for per-channel, per-tensor and per-token schemes: any length, with the multiples
/// and near-multiples of 8 that vectorized kernels special-case drawn often.
fn free_k() -> BoxedStrategy<usize> {
    prop_oneof![1usize..=96, prop::sample::select(vec![8usize, 13, 16, 20, 24, 31, 32, 33, 40, 64, 96])].boxed()
}

/// Row lengths for a grouped scheme: `groups × G` with `min_groups ≤ groups`, fewer groups for
/// large G so cases stay quick.
fn grouped_k(g: usize, min_groups: usize) -> BoxedStrategy<usize> {
    let max_groups: usize = match g {
        0..=32 => 4,
        33..=64 => 3,
        _ => 2,
    };
    let lo = min_groups.max(1);
    (lo..=max_groups.max(lo)).prop_map(move |n| n * g).boxed()
}

/// Row counts: any in 1..=16 (N not a multiple of 4 is common), times the scheme's row unit.
fn row_count(unit: usize) -> BoxedStrategy<usize> {
    if unit > 1 {
        (1usize..=2).prop_map(move |n| n * unit).boxed()
    } else {
        prop_oneof![1usize..=16, prop::sample::select(vec![1usize, 2, 3, 4, 5, 7, 8, 9, 12])].boxed()
    }
}

/// The parameters of cases of `op` on `scheme`, with the variant drawn from `variants` (the
/// device's supported ones; never empty).
pub fn params_strategy(
    op: Op,
    scheme: Scheme,
    inject: Option<Fault>,
    variants: Vec<Variant>,
) -> BoxedStrategy<CaseParams> {
    let k = match scheme.granularity() {
        Granularity::Group(g) => grouped_k(g, min_groups(inject)),
        Granularity::Channel | Granularity::Tensor => free_k(),
    };
    let variants = if variants.is_empty() { vec![Variant::default()] } else { variants };
    let rows = if op == Op::ActQuant { (1usize..=6).boxed() } else { row_count(row_unit(&scheme)) };
    let lut = if matches!(scheme.family, Family::Pal { .. }) {
        prop::option::of(lut_gen()).boxed()
    } else {
        Just(None).boxed()
    };
    (rows, 1usize..=5, k, value_gen(), value_gen(), any::<u64>(), prop::sample::select(variants), lut)
        .prop_map(|(rows, m, k, w_values, x_values, seed, variant, lut)| CaseParams {
            rows,
            m,
            k,
            w_values,
            x_values,
            seed,
            variant,
            lut,
        })
        .boxed()
}

/// The strategy of cases of one (op, scheme): draws [`CaseParams`], builds the [`CaseSpec`], and
/// shrinks it with [`CaseTree`] (rows, K, groups, the variant, magnitudes, then values).
#[derive(Debug)]
pub struct CaseStrategy {
    op: Op,
    scheme: Scheme,
    inject: Option<Fault>,
    params: BoxedStrategy<CaseParams>,
}

/// The case strategy of `op` on `scheme` with `inject`, drawing variants from `variants`.
pub fn case_strategy(op: Op, scheme: Scheme, inject: Option<Fault>, variants: Vec<Variant>) -> CaseStrategy {
    CaseStrategy { op, scheme, inject, params: params_strategy(op, scheme, inject, variants) }
}

impl Strategy for CaseStrategy {
    type Tree = CaseTree;
    type Value = CaseSpec;
    fn new_tree(&self, runner: &mut TestRunner) -> NewTree<Self> {
        let p = self.params.new_tree(runner)?.current();
        Ok(CaseTree::new(p.build(self.op, &self.scheme, self.inject)))
    }
}

/// Cases of `op` on a grouped `scheme` whose K is NOT a multiple of the group size (`groups·G + r`,
/// `0 < r < G`): [`CaseSpec::op_case`] must refuse each with [`RefError::GroupSize`]. `None` for a
/// scheme without groups (any K is fine there).
pub fn non_dividing_strategy(op: Op, scheme: Scheme) -> Option<BoxedStrategy<CaseSpec>> {
    let Granularity::Group(g) = scheme.granularity() else { return None };
    if g < 2 {
        return None;
    }
    let k = (0usize..=2, 1..g).prop_map(move |(n, r)| n * g + r);
    Some(
        (params_strategy(op, scheme, None, vec![Variant::default()]), k)
            .prop_map(move |(mut p, k)| {
                p.k = k;
                p.build(op, &scheme, None)
            })
            .boxed(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(rows: usize, lut: Option<LutGen>) -> CaseParams {
        let g = ValueGen { dist: Dist::ALL[0], exp: 0, seed: 5 };
        CaseParams { rows, m: 1, k: 32, w_values: g, x_values: g, seed: 9, variant: Variant::default(), lut }
    }

    #[test]
    fn a_given_lut_is_the_one_the_weights_are_palettized_with() {
        let scheme: Scheme = "pal4g16".parse().unwrap();
        let g = LutGen { kind: LutKind::Extreme, exp: 0, seed: 3 };
        let spec = params(32, Some(g)).build(Op::Dequantize, &scheme, None);
        let luts = spec.lut.clone().expect("a palettized weight op carries the LUTs");
        assert_eq!(luts.len(), 2, "one LUT per 16 rows");
        let wq = spec.op_case().unwrap().wq.unwrap();
        let flat: Vec<u32> = luts.iter().flatten().map(|v| v.to_bits()).collect();
        assert_eq!(wq.lut.unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>(), flat);
        // The extreme LUT holds both zeros and the smallest f32 subnormal.
        assert!(flat.contains(&0x8000_0000) && flat.contains(&0) && flat.contains(&1));
        // No LUT drawn: the scheme builds its own.
        assert!(params(32, None).build(Op::Dequantize, &scheme, None).lut.is_none());
    }

    #[test]
    fn lut_kinds_are_what_they_say() {
        let s: Scheme = "pal4-pt@f16".parse().unwrap();
        let gen = |kind| LutGen { kind, exp: 1, seed: 11 }.lut(&s, 4, 0, false);
        let sorted = gen(LutKind::Sorted);
        assert!(sorted.windows(2).all(|w| w[0] <= w[1]));
        let dup = gen(LutKind::Duplicates);
        let mut distinct: Vec<u32> = dup.iter().map(|v| v.to_bits()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() <= 3);
        let extreme = gen(LutKind::Extreme);
        assert!(extreme.contains(&32752.0), "near the fp16 max: {extreme:?}");
        assert!(extreme.iter().all(|v| v.is_finite() && (*v as f64) == s.dtype.round(*v as f64)));
    }
}

//! Shrinking a failing case to a minimal one that fails the same way.
//!
//! [`CaseTree`] is a proptest [`ValueTree`] over a [`CaseSpec`] with explicit values. Its
//! candidates come in phases, each simpler than the accepted case: fewer activation rows or ids,
//! fewer weight rows, fewer groups (or columns, where the scheme has no groups), the default
//! device variant, magnitudes brought to about 1, whole groups set to zero, and then each value
//! made simpler (zero, one significant bit, two, four, ±1, an exponent nearer 0). Shapes go first because every later
//! phase is cheaper on a smaller case.
//!
//! The protocol is proptest's: after a candidate still fails, [`ValueTree::simplify`] accepts it
//! and moves to the next candidate; after one that no longer fails, [`ValueTree::complicate`]
//! goes back to the accepted case and tries the next. Both return `false` once no candidate is
//! left. [`shrink`] drives it with the caller's predicate and a step budget, so it works the same
//! inside `qdiff fuzz` (the predicate runs the device) and in tests. Removing rows or groups never
//! changes the values kept, so a minimal case shows data that was really drawn.

use crate::fuzz::strategies::{guard_linear_overflow, row_unit, CaseSpec};
use devices::case::{Op, Variant};
use kernels_ref::scheme::Granularity;
use kernels_ref::tensor::Matrix;
use proptest::strategy::ValueTree;
use std::time::Instant;

/// How many passes over all phases shrinking makes at most (a later pass only runs when the one
/// before accepted something: a smaller case can unlock simplifications that failed before).
const MAX_PASSES: usize = 3;

/// The phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Activation rows of linear; ids of embedding.
    ActRows,
    /// Weight rows (table rows; token rows of act_quant).
    Rows,
    /// Groups along K (columns for per-channel / per-tensor / per-token schemes).
    Groups,
    /// The default device variant.
    Variant,
    /// Magnitudes normalised to [1, 2).
    Magnitude,
    /// Whole groups set to zero.
    ZeroGroups,
    /// Values one at a time, and ids to 0.
    Values,
}

const PHASES: [Phase; 7] =
    [Phase::ActRows, Phase::Rows, Phase::Groups, Phase::Variant, Phase::Magnitude, Phase::ZeroGroups, Phase::Values];

/// Simpler versions of one value tried in the value phase, per value.
const VALUE_CANDIDATES: usize = 6;

/// What the candidate function gives for one (phase, index).
enum Candidate {
    /// The phase has no candidate at this index or beyond.
    End,
    /// No candidate at this index (it would change nothing, or break a shape rule).
    Skip,
    /// A simpler case.
    Case(Box<CaseSpec>),
}

/// A shrinkable case: proptest's [`ValueTree`] with qdiff's own simplification order.
#[derive(Debug, Clone)]
pub struct CaseTree {
    accepted: CaseSpec,
    current: CaseSpec,
    phase: usize,
    index: usize,
    pass: usize,
    progressed: bool,
    pending: bool,
}

impl CaseTree {
    /// A tree whose current value is `spec`.
    pub fn new(spec: CaseSpec) -> Self {
        CaseTree {
            accepted: spec.clone(),
            current: spec,
            phase: 0,
            index: 0,
            pass: 0,
            progressed: false,
            pending: false,
        }
    }

    /// Move to the next candidate from the accepted case; `false` when none is left.
    fn next_candidate(&mut self) -> bool {
        loop {
            if self.phase >= PHASES.len() {
                if self.progressed && self.pass + 1 < MAX_PASSES {
                    self.pass += 1;
                    self.phase = 0;
                    self.index = 0;
                    self.progressed = false;
                } else {
                    self.current = self.accepted.clone();
                    self.pending = false;
                    return false;
                }
            }
            match candidate(&self.accepted, PHASES[self.phase], self.index) {
                Candidate::End => {
                    self.phase += 1;
                    self.index = 0;
                }
                Candidate::Skip => self.index += 1,
                Candidate::Case(c) if same_bits(&c, &self.accepted) => self.index += 1,
                Candidate::Case(c) => {
                    self.current = *c;
                    self.pending = true;
                    return true;
                }
            }
        }
    }
}

impl ValueTree for CaseTree {
    type Value = CaseSpec;

    fn current(&self) -> CaseSpec {
        self.current.clone()
    }

    /// The current case still fails: accept it and try the next candidate.
    fn simplify(&mut self) -> bool {
        if self.pending {
            self.accepted = self.current.clone();
            self.progressed = true;
            // Shape phases restart over the smaller shape; value phases move on.
            match PHASES[self.phase] {
                Phase::ActRows | Phase::Rows | Phase::Groups => self.index = 0,
                _ => self.index += 1,
            }
        }
        self.next_candidate()
    }

    /// The current case no longer fails: go back to the accepted one and try the next candidate.
    fn complicate(&mut self) -> bool {
        if !self.pending {
            return false;
        }
        self.current = self.accepted.clone();
        self.index += 1;
        self.next_candidate()
    }
}

/// Whether two cases are the same bit for bit (`==` on floats calls −0.0 and +0.0 equal, and
/// turning one into the other is a real simplification).
fn same_bits(a: &CaseSpec, b: &CaseSpec) -> bool {
    let m = |x: &Option<Matrix>, y: &Option<Matrix>| match (x, y) {
        (None, None) => true,
        (Some(x), Some(y)) => {
            (x.rows, x.cols) == (y.rows, y.cols) && x.data.iter().zip(&y.data).all(|(p, q)| p.to_bits() == q.to_bits())
        }
        _ => false,
    };
    let luts = |x: &Option<Vec<Vec<f32>>>, y: &Option<Vec<Vec<f32>>>| match (x, y) {
        (None, None) => true,
        (Some(x), Some(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(p, q)| p.len() == q.len() && p.iter().zip(q).all(|(a, b)| a.to_bits() == b.to_bits()))
        }
        _ => false,
    };
    a.variant == b.variant && a.ids == b.ids && m(&a.w, &b.w) && m(&a.x, &b.x) && luts(&a.lut, &b.lut)
}

/// What a shrink came to.
#[derive(Debug, Clone)]
pub struct Shrunk {
    /// The smallest case that still failed the same way.
    pub spec: CaseSpec,
    /// How many candidates were tried.
    pub steps: usize,
    /// How many of them were accepted.
    pub accepted: usize,
    /// Whether shrinking stopped at the step or time budget rather than running out of candidates.
    pub budget_hit: bool,
}

/// Shrink `tree` (whose current value fails) while `still_fails` holds, trying at most
/// `max_steps` candidates and stopping at `deadline`.
pub fn shrink(
    tree: &mut CaseTree,
    max_steps: usize,
    deadline: Option<Instant>,
    mut still_fails: impl FnMut(&CaseSpec) -> bool,
) -> Shrunk {
    let mut best = tree.current();
    let (mut steps, mut accepted) = (0, 0);
    let mut more = tree.simplify();
    let mut budget_hit = false;
    while more {
        if steps >= max_steps || deadline.is_some_and(|d| Instant::now() >= d) {
            budget_hit = true;
            break;
        }
        steps += 1;
        let candidate = tree.current();
        if still_fails(&candidate) {
            best = candidate;
            accepted += 1;
            more = tree.simplify();
        } else {
            more = tree.complicate();
        }
    }
    Shrunk { spec: best, steps, accepted, budget_hit }
}

/// Rows `keep` of a matrix, in order.
fn keep_rows(m: &Matrix, keep: &[usize]) -> Matrix {
    let mut data = Vec::with_capacity(keep.len() * m.cols);
    for &r in keep {
        data.extend_from_slice(&m.data[r * m.cols..(r + 1) * m.cols]);
    }
    Matrix { rows: keep.len(), cols: m.cols, data }
}

/// Columns `keep` of a matrix, in order.
fn keep_cols(m: &Matrix, keep: &[usize]) -> Matrix {
    let mut data = Vec::with_capacity(m.rows * keep.len());
    for r in 0..m.rows {
        data.extend(keep.iter().map(|&c| m.data[r * m.cols + c]));
    }
    Matrix { rows: m.rows, cols: keep.len(), data }
}

/// Index lists for "keep only unit i" (i < n) and then "remove unit i" (n ≤ i < 2n) over `n`
/// units, with at least `min` units kept; each unit spans `width` consecutive indices.
fn unit_selection(n: usize, min: usize, width: usize, index: usize) -> Option<Option<Vec<usize>>> {
    let min = min.max(1);
    if n <= min {
        return None;
    }
    let units: Vec<usize> = if index < n {
        // Keep a window of `min` units starting at unit `index` (one unit when min = 1).
        if index + min > n {
            return Some(None);
        }
        (index..index + min).collect()
    } else if index < 2 * n {
        let drop = index - n;
        (0..n).filter(|&u| u != drop).collect()
    } else {
        return None;
    };
    Some(Some(units.iter().flat_map(|&u| u * width..(u + 1) * width).collect()))
}

/// How complex a value is, for shrinking: zero first, then fewer significant bits, then an
/// exponent nearer 0 (1.0 is the simplest non-zero value), and a positive value before its negative.
fn complexity(v: f32) -> (bool, u32, u32, bool) {
    if v == 0.0 {
        return (false, 0, 0, v.is_sign_negative());
    }
    let a = (v as f64).abs();
    let e = a.log2().floor() as i32;
    // Significant bits: the mantissa (53-bit f64 view of the f32) without its trailing zeros.
    let m = (a / (2f64).powi(e)) * (1u64 << 52) as f64;
    let bits = 53 - (m as u64).trailing_zeros().min(52);
    (true, bits, e.unsigned_abs(), v.is_sign_negative())
}

/// A simpler version of a value, candidate `which` of [`VALUE_CANDIDATES`]: zero, a power of
/// two, two or four significant bits, ±1, the exponent one step nearer 0. Only strictly simpler
/// ones (by [`complexity`]) are offered.
fn simpler_value(v: f32, which: usize) -> Option<f32> {
    let a = (v as f64).abs();
    let sign = if v.is_sign_negative() { -1.0 } else { 1.0 };
    let e = if a == 0.0 { 0 } else { a.log2().floor() as i32 };
    let sig_bits = |bits: i32| -> f64 {
        if a == 0.0 {
            return 0.0;
        }
        let q = (2f64).powi(e - bits + 1);
        (a / q).round() * q * sign
    };
    let c = match which {
        0 => 0.0,
        1 => sig_bits(1),
        2 => sig_bits(2),
        3 => sig_bits(4),
        4 => sign,
        5 => v as f64 * if e > 0 { 0.5 } else { 2.0 },
        _ => return None,
    };
    let c = c as f32;
    (c.is_finite() && complexity(c) < complexity(v)).then_some(c)
}

/// Scale a matrix by a power of two so its largest magnitude lands in [1, 2).
fn normalise(m: &Matrix, spec: &CaseSpec) -> Option<Matrix> {
    let amax = m.data.iter().fold(0f64, |a, &v| a.max((v as f64).abs()));
    if amax == 0.0 {
        return None;
    }
    let e = amax.log2().floor() as i32;
    if e == 0 {
        return None;
    }
    let f = (2f64).powi(-e);
    let data = m.data.iter().map(|&v| spec.scheme.dtype.round_f32(v as f64 * f)).collect();
    Some(Matrix { rows: m.rows, cols: m.cols, data })
}

/// Candidate `index` of `phase` from `s`.
fn candidate(s: &CaseSpec, phase: Phase, index: usize) -> Candidate {
    let mut c = s.clone();
    match phase {
        Phase::ActRows => match (s.op, &s.x, &s.ids) {
            (Op::Linear, Some(x), _) => match unit_selection(x.rows, 1, 1, index) {
                None => Candidate::End,
                Some(None) => Candidate::Skip,
                Some(Some(keep)) => {
                    c.x = Some(keep_rows(x, &keep));
                    Candidate::Case(Box::new(c))
                }
            },
            (Op::Embedding, _, Some(ids)) => match unit_selection(ids.len(), 1, 1, index) {
                None => Candidate::End,
                Some(None) => Candidate::Skip,
                Some(Some(keep)) => {
                    c.ids = Some(keep.iter().map(|&i| ids[i]).collect());
                    Candidate::Case(Box::new(c))
                }
            },
            _ => Candidate::End,
        },
        Phase::Rows => {
            let target = if s.op == Op::ActQuant { &s.x } else { &s.w };
            let Some(m) = target else { return Candidate::End };
            let unit = if s.op == Op::ActQuant { 1 } else { row_unit(&s.scheme) };
            let Some(sel) = unit_selection(m.rows / unit, 1, unit, index) else { return Candidate::End };
            let Some(keep) = sel else { return Candidate::Skip };
            let kept = keep_rows(m, &keep);
            if s.op == Op::ActQuant {
                c.x = Some(kept);
            } else {
                c.w = Some(kept);
            }
            if let Some(luts) = &s.lut {
                // A given LUT per block of rows: the kept rows keep their blocks' LUTs.
                if luts.len() > 1 {
                    c.lut =
                        Some(keep.chunks(unit).map(|ch| luts[(ch[0] / unit).min(luts.len() - 1)].clone()).collect());
                }
            }
            if let (Op::Embedding, Some(ids)) = (s.op, &s.ids) {
                // Ids follow their rows; ids of removed rows go, and at least one id stays.
                let new_ids: Vec<u32> = ids
                    .iter()
                    .filter_map(|&id| keep.iter().position(|&r| r == id as usize).map(|p| p as u32))
                    .collect();
                c.ids = Some(if new_ids.is_empty() { vec![0] } else { new_ids });
            }
            Candidate::Case(Box::new(c))
        }
        Phase::Groups => {
            let k = s.k();
            let (n, width, min) = match s.scheme.granularity() {
                Granularity::Group(g) if g > 0 => (k / g, g, s.min_groups),
                _ => (k, 1, 1),
            };
            let per_channel = width == 1;
            // Per-channel rows shrink by halves first, then a column at a time.
            if per_channel && k >= 2 && index < 2 {
                let half = k / 2;
                let keep: Vec<usize> = if index == 0 { (0..half).collect() } else { (half..k).collect() };
                return with_cols(s, &keep);
            }
            let index = if per_channel { index.saturating_sub(2) } else { index };
            match unit_selection(n, min, width, index) {
                None => Candidate::End,
                Some(None) => Candidate::Skip,
                Some(Some(keep)) => with_cols(s, &keep),
            }
        }
        Phase::Variant => {
            let default = Variant::default();
            match index {
                0 if s.variant.workgroup_size.is_some() => c.variant.workgroup_size = None,
                1 if s.variant.storage != default.storage => c.variant.storage = default.storage,
                2 if !s.variant.texel_formats.is_empty() => c.variant.texel_formats.clear(),
                0..=2 => return Candidate::Skip,
                _ => return Candidate::End,
            }
            Candidate::Case(Box::new(c))
        }
        Phase::Magnitude => {
            let m = match index {
                0 => s.w.as_ref(),
                1 => s.x.as_ref(),
                _ => return Candidate::End,
            };
            let Some(n) = m.and_then(|m| normalise(m, s)) else { return Candidate::Skip };
            if index == 0 {
                c.w = Some(n);
            } else {
                c.x = Some(n);
            }
            if let (Op::Linear, Some(w), Some(x)) = (s.op, &c.w, &mut c.x) {
                guard_linear_overflow(&s.scheme, w, x);
            }
            Candidate::Case(Box::new(c))
        }
        Phase::ZeroGroups => {
            let gl = s.scheme.granularity().group_len(s.k().max(1)).max(1);
            let tensors = [s.w.as_ref(), s.x.as_ref()];
            let mut i = index;
            for (t, m) in tensors.iter().enumerate() {
                let Some(m) = m else { continue };
                let groups = m.rows * m.cols.div_ceil(gl);
                if i < groups {
                    let per_row = m.cols.div_ceil(gl);
                    let (r, g) = (i / per_row, i % per_row);
                    let range = r * m.cols + g * gl..r * m.cols + ((g + 1) * gl).min(m.cols);
                    if m.data[range.clone()].iter().all(|v| v.to_bits() == 0) {
                        return Candidate::Skip;
                    }
                    let target = if t == 0 { c.w.as_mut() } else { c.x.as_mut() };
                    if let Some(tm) = target {
                        tm.data[range].iter_mut().for_each(|v| *v = 0.0);
                    }
                    return Candidate::Case(Box::new(c));
                }
                i -= groups;
            }
            Candidate::End
        }
        Phase::Values => {
            let (elem, which) = (index / VALUE_CANDIDATES, index % VALUE_CANDIDATES);
            let nw = s.w.as_ref().map_or(0, |m| m.data.len());
            let nx = s.x.as_ref().map_or(0, |m| m.data.len());
            let nids = s.ids.as_ref().map_or(0, Vec::len);
            if elem < nw + nx {
                let (m, at) = if elem < nw { (c.w.as_mut(), elem) } else { (c.x.as_mut(), elem - nw) };
                let Some(m) = m else { return Candidate::Skip };
                let Some(v) = simpler_value(m.data[at], which) else { return Candidate::Skip };
                m.data[at] = s.scheme.dtype.round_f32(v as f64);
                if !m.data[at].is_finite() {
                    return Candidate::Skip;
                }
                Candidate::Case(Box::new(c))
            } else if elem < nw + nx + nids {
                let at = elem - nw - nx;
                match (which, c.ids.as_mut()) {
                    (0, Some(ids)) if ids[at] != 0 => {
                        ids[at] = 0;
                        Candidate::Case(Box::new(c))
                    }
                    _ => Candidate::Skip,
                }
            } else {
                Candidate::End
            }
        }
    }
}

/// `s` with only columns `keep` of both `w` and `x`.
fn with_cols(s: &CaseSpec, keep: &[usize]) -> Candidate {
    let mut c = s.clone();
    c.w = s.w.as_ref().map(|m| keep_cols(m, keep));
    c.x = s.x.as_ref().map(|m| keep_cols(m, keep));
    Candidate::Case(Box::new(c))
}

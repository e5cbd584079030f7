//! The worst elements of a failing case, for people: where each one is (row, column, group;
//! `[m, n, g]` for an 8da4w accumulator), expected vs found, how far off, and the integer code,
//! scale and zero-point involved, so a repro names the quantization parameters a bug touched
//! rather than a flat index.
//!
//! Ranking follows the verdict rules of `compare`: any integer difference is worse than any float
//! one (a wrong code or zero-point is a wrong program, not a rounding), then float side outputs
//! (stored scales, zero-points, LUTs must match bit for bit), then values by how many tolerances
//! they are off.

use crate::casefile::WorstElement;
use crate::compare::{tolerances, ulp};
use devices::case::{Op, OpCase, Outputs};
use kernels_ref::scheme::{Family, Granularity};

/// How far one element is off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Delta {
    /// An integer output: found − expected.
    Int(i128),
    /// A float side output (compared bit for bit): the distance in ulps of the compute dtype at
    /// the expected value (infinite for NaN or infinities).
    Side {
        /// Distance in ulps.
        ulps: f64,
    },
    /// A float value: the distance in ulps, the tolerance and `|found − expected| / tolerance`
    /// (infinite where the tolerance is 0 and the values differ numerically).
    Value {
        /// Distance in ulps of the compute dtype.
        ulps: f64,
        /// The absolute tolerance of this element.
        tolerance: f64,
        /// `|found − expected| / tolerance`; above 1 is a mismatch.
        ratio: f64,
    },
    /// The device returned no such output, or one of another length.
    Missing,
}

/// One element with how far off it is, in rank order.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// The element as a case file records it.
    pub element: WorstElement,
    /// How far off.
    pub delta: Delta,
}

/// The `n` worst differing elements of `found` against `expected` for `case`, worst first.
pub fn worst_elements(case: &OpCase, expected: &Outputs, found: &Outputs, n: usize) -> Vec<WorstElement> {
    ranked(case, expected, found, n).into_iter().map(|r| r.element).collect()
}

/// A candidate before its position and context are worked out (only the `n` kept get them).
struct Candidate {
    /// 0 integer or missing, 1 side output, 2 value.
    tier: u8,
    /// Within integers, upstream first: a wrong zero-point makes every code of its token wrong,
    /// and wrong codes make every accumulator wrong, so the cause is listed before its effects.
    stage: u8,
    /// Larger is worse.
    severity: f64,
    /// `|found − expected|`, to order elements equally far beyond tolerance (all of a
    /// zero-tolerance op's mismatches are infinitely so) by how far they are off.
    abs_diff: f64,
    output: String,
    index: usize,
    delta: Delta,
    expected: serde_json::Value,
    found: serde_json::Value,
    context: Option<String>,
}

/// [`worst_elements`] with the distance of each element.
pub fn ranked(case: &OpCase, expected: &Outputs, found: &Outputs, n: usize) -> Vec<Ranked> {
    let t = case.scheme.dtype;
    let geo = Geometry::new(case, expected);
    let mut cands: Vec<Candidate> = Vec::new();
    let missing = |name: &str, want: usize, got: Option<usize>| Candidate {
        tier: 0,
        stage: 0,
        severity: f64::INFINITY,
        abs_diff: 0.0,
        output: name.to_string(),
        index: 0,
        delta: Delta::Missing,
        expected: format!("{want} values").into(),
        found: got.map_or("absent".to_string(), |g| format!("{g} values")).into(),
        context: Some(match got {
            None => format!("the device returned no `{name}`"),
            Some(g) => format!("`{name}` has {g} values, expected {want}"),
        }),
    };

    for (name, want) in &expected.ints {
        match found.ints.get(name) {
            Some(got) if got.len() == want.len() => {
                for (i, (&e, &f)) in want.iter().zip(got).enumerate() {
                    if e != f {
                        let d = f as i128 - e as i128;
                        cands.push(Candidate {
                            tier: 0,
                            stage: int_stage(name),
                            severity: d.unsigned_abs() as f64,
                            abs_diff: d.unsigned_abs() as f64,
                            output: name.clone(),
                            index: i,
                            delta: Delta::Int(d),
                            expected: e.into(),
                            found: f.into(),
                            context: None,
                        });
                    }
                }
            }
            got => cands.push(missing(name, want.len(), got.map(Vec::len))),
        }
    }
    for (name, want) in &expected.floats {
        match found.floats.get(name) {
            Some(got) if got.len() == want.len() => {
                for (i, (&e, &f)) in want.iter().zip(got).enumerate() {
                    if !same_bits(e, f) {
                        let ulps = ulps_off(t, e, f);
                        cands.push(Candidate {
                            tier: 1,
                            stage: 0,
                            severity: ulps,
                            abs_diff: abs_diff(e, f),
                            output: name.clone(),
                            index: i,
                            delta: Delta::Side { ulps },
                            expected: float_json(e),
                            found: float_json(f),
                            context: None,
                        });
                    }
                }
            }
            got => cands.push(missing(name, want.len(), got.map(Vec::len))),
        }
    }
    if found.values.len() != expected.values.len() || found.shape != expected.shape {
        let mut c = missing("values", expected.values.len(), Some(found.values.len()));
        c.context = Some(format!(
            "values have shape {:?} ({} values), expected {:?} ({})",
            found.shape,
            found.values.len(),
            expected.shape,
            expected.values.len()
        ));
        cands.push(c);
    } else {
        // Without a derivable tolerance every difference counts fully, as in `compare`.
        let tol = tolerances(case, expected).unwrap_or_else(|_| vec![0.0; expected.values.len()]);
        for (i, (&e, &f)) in expected.values.iter().zip(&found.values).enumerate() {
            if same_bits(e, f) {
                continue;
            }
            let diff = (e as f64 - f as f64).abs();
            let tolerance = tol.get(i).copied().unwrap_or(0.0);
            let ratio = if !diff.is_finite() {
                f64::INFINITY
            } else if tolerance == 0.0 {
                // -0.0 against +0.0 is not bit-exact but no numeric error either.
                if diff == 0.0 {
                    0.0
                } else {
                    f64::INFINITY
                }
            } else {
                diff / tolerance
            };
            let ulps = ulps_off(t, e, f);
            cands.push(Candidate {
                tier: 2,
                stage: 0,
                severity: ratio,
                abs_diff: abs_diff(e, f),
                output: "values".into(),
                index: i,
                delta: Delta::Value { ulps, tolerance, ratio },
                expected: float_json(e),
                found: float_json(f),
                context: None,
            });
        }
    }

    // Worst first; ties broken by the distance, then by position so the order is reproducible.
    cands.sort_by(|a, b| {
        a.tier
            .cmp(&b.tier)
            .then(a.stage.cmp(&b.stage))
            .then(b.severity.total_cmp(&a.severity))
            .then(b.abs_diff.total_cmp(&a.abs_diff))
            .then(a.output.cmp(&b.output))
            .then(a.index.cmp(&b.index))
    });
    cands.truncate(n);
    cands
        .into_iter()
        .map(|c| {
            let (at, context) =
                if c.delta == Delta::Missing { (Vec::new(), c.context) } else { geo.locate(&c.output, c.index) };
            Ranked {
                element: WorstElement {
                    output: c.output,
                    index: c.index,
                    at,
                    expected: c.expected,
                    found: c.found,
                    context,
                },
                delta: c.delta,
            }
        })
        .collect()
}

/// Where an integer output sits in the pipeline: zero-points, then codes, then accumulators.
fn int_stage(name: &str) -> u8 {
    match name {
        "zp" | "act_zp" => 0,
        "acc" => 2,
        _ => 1,
    }
}

/// Same bits (NaN equal to NaN whatever its payload), as `compare` judges.
fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// `|found − expected|`, infinite where either is not finite.
fn abs_diff(e: f32, f: f32) -> f64 {
    let d = (e as f64 - f as f64).abs();
    if d.is_nan() {
        f64::INFINITY
    } else {
        d
    }
}

/// `|found − expected|` in ulps of `t` at the expected value.
fn ulps_off(t: kernels_ref::dtype::DType, e: f32, f: f32) -> f64 {
    let diff = (e as f64 - f as f64).abs();
    if diff.is_finite() {
        diff / ulp(t, e as f64)
    } else {
        f64::INFINITY
    }
}

/// A float as JSON: the shortest decimal that reads back as the same f32 (so `0.0123`, not
/// `0.012299999594688416`), non-finite values as strings.
pub fn float_json(v: f32) -> serde_json::Value {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    format!("{v:e}")
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or_else(|| serde_json::Value::from(v), serde_json::Value::Number)
}

/// A float for people: plain where that is short, with an exponent otherwise.
pub fn fmt_f32(v: f32) -> String {
    let a = v.abs();
    if a == 0.0 || (1e-4..1e7).contains(&a) || !a.is_finite() {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

/// A qparam tensor viewed as a `[rows, cols]` grid over a `[rows, cols]` weight (or token) tensor.
struct Grid<'a> {
    data: &'a [f32],
    shape: [usize; 2],
}

impl Grid<'_> {
    /// The grid cell covering element `(r, c)` of a `rows × cols` tensor.
    fn cell(&self, r: usize, c: usize, rows: usize, cols: usize) -> Option<(usize, usize, f32)> {
        let [a, b] = self.shape;
        let ri = if a == 1 { 0 } else { r * a / rows.max(1) };
        let ci = if b == 1 { 0 } else { c * b / cols.max(1) };
        let v = *self.data.get(ri * b + ci)?;
        Some((ri, ci, v))
    }
}

/// The shape of a qparam output of `len` values over a `rows × cols` tensor: `preferred` when it
/// fits, else per-row groups, per-column, or flat.
fn grid_shape(len: usize, rows: usize, cols: usize, preferred: Option<[usize; 2]>) -> [usize; 2] {
    if let Some(p) = preferred.filter(|p| p[0] * p[1] == len && len > 0) {
        return p;
    }
    if rows > 0 && len % rows == 0 && len / rows > 0 && cols % (len / rows) == 0 {
        [rows, len / rows]
    } else if len == cols {
        [1, cols]
    } else {
        [1, len.max(1)]
    }
}

/// What positions and contexts are computed from: the weights (or activations) the outputs index.
struct Geometry<'a> {
    case: &'a OpCase,
    expected: &'a Outputs,
    /// `[rows, cols]` of the weight tensor (stored or to be quantized).
    w_shape: Option<[usize; 2]>,
    /// Integer codes of the weights: the case's stored ones, or the reference's for `quantize`.
    codes: Option<Vec<i64>>,
    scales: Option<Grid<'a>>,
    zps: Option<Grid<'a>>,
    lut: Option<Grid<'a>>,
    /// Whether the weights have groups along a row (worth a coordinate of their own).
    grouped: bool,
}

impl<'a> Geometry<'a> {
    fn new(case: &'a OpCase, expected: &'a Outputs) -> Self {
        let s = case.scheme;
        let grouped = matches!(s.granularity(), Granularity::Group(_)) && !matches!(s.family, Family::Pal { .. });
        let mut g =
            Geometry { case, expected, w_shape: None, codes: None, scales: None, zps: None, lut: None, grouped };
        if let Some(wq) = &case.wq {
            g.w_shape = Some(wq.shape);
            g.codes = Some(wq.q.iter().map(|&q| q as i64).collect());
            g.scales = Some(Grid { data: &wq.scales, shape: wq.scale_shape });
            g.zps =
                wq.zero_points.as_ref().map(|z| Grid { data: z, shape: wq.zero_point_shape.unwrap_or(wq.scale_shape) });
            g.lut = wq.lut.as_ref().map(|l| Grid { data: l, shape: wq.lut_shape.unwrap_or([1, l.len()]) });
        } else if case.op == Op::Quantize {
            // What the reference chose: the context of a quantize mismatch is the expected qparams.
            if let Some(w) = &case.w {
                let (rows, cols) = (w.rows, w.cols);
                g.w_shape = Some([rows, cols]);
                g.codes = expected.ints.get("q").cloned();
                let preferred = match s.family {
                    Family::Pal { .. } => None,
                    _ => Some(s.granularity().qparam_shape(rows, cols)),
                };
                g.scales = expected
                    .floats
                    .get("scales")
                    .map(|v| Grid { data: v, shape: grid_shape(v.len(), rows, cols, preferred) });
                g.zps = expected
                    .floats
                    .get("zero_points")
                    .map(|v| Grid { data: v, shape: grid_shape(v.len(), rows, cols, preferred) });
                g.lut = expected.floats.get("lut").map(|v| {
                    let levels = match s.family {
                        Family::Pal { bits, .. } => 1usize << bits,
                        _ => v.len().max(1),
                    };
                    Grid { data: v, shape: [(v.len() / levels).max(1), levels] }
                });
            }
        }
        g
    }

    /// `[m, k]` of the activations, where the case has them.
    fn x_shape(&self) -> Option<[usize; 2]> {
        self.case.x.as_ref().map(|x| [x.rows, x.cols])
    }

    /// The position and the context of element `index` of output `name`.
    fn locate(&self, name: &str, index: usize) -> (Vec<usize>, Option<String>) {
        let op = self.case.op;
        match (op, name) {
            (Op::Dequantize | Op::Quantize, "values" | "q") => self.weight_at(index, index),
            (Op::Embedding, "values") => self.embedding_at(index),
            (Op::Quantize, "scales" | "zero_points") => self.qparam_at(name, index),
            (Op::Quantize, "lut") => {
                let Some(l) = &self.lut else { return (vec![index], None) };
                let [_, levels] = l.shape;
                (vec![index / levels.max(1), index % levels.max(1)], None)
            }
            (Op::ActQuant, "values" | "q") | (Op::Linear, "act_q") => self.act_at(index),
            (Op::ActQuant, "zp" | "scales") | (Op::Linear, "act_zp" | "act_scales") => self.token_at(name, index),
            (Op::Linear, "acc") => self.acc_at(index),
            (Op::Linear, "values") => self.linear_at(index),
            _ => (vec![index], None),
        }
    }

    /// A weight element `(r, c)` at flat `index` of a `[rows, cols]` output whose row `row_of`
    /// the codes are taken from (`index` itself except for embedding).
    fn weight_at(&self, index: usize, w_index: usize) -> (Vec<usize>, Option<String>) {
        let Some([rows, cols]) = self.w_shape.filter(|s| s[1] > 0) else { return (vec![index], None) };
        let (r, c) = (w_index / cols, w_index % cols);
        let mut at = vec![r, c];
        if self.grouped {
            if let Some((_, g, _)) = self.scales.as_ref().and_then(|s| s.cell(r, c, rows, cols)) {
                at.push(g);
            }
        }
        (at, Some(self.weight_context(r, c)))
    }

    /// `w[r,c] code q, group g scale s zp z` (and the LUT entry the code selects), or for
    /// `quantize` the input value and the qparams the reference chose.
    fn weight_context(&self, r: usize, c: usize) -> String {
        let Some([rows, cols]) = self.w_shape else { return String::new() };
        let mut parts = Vec::new();
        let code = self.codes.as_ref().and_then(|q| q.get(r * cols + c)).copied();
        if self.case.op == Op::Quantize {
            let v = self.case.w.as_ref().and_then(|w| w.data.get(r * cols + c)).copied();
            parts.push(format!("w[{r},{c}] = {}", v.map_or("?".into(), fmt_f32)));
            if let Some(q) = code {
                parts.push(format!("expected code {q}"));
            }
        } else if let Some(q) = code {
            parts.push(format!("w[{r},{c}] code {q}"));
        } else {
            parts.push(format!("w[{r},{c}]"));
        }
        if let Some((ri, ci, s)) = self.scales.as_ref().and_then(|g| g.cell(r, c, rows, cols)) {
            let [a, b] = self.scales.as_ref().map_or([1, 1], |g| g.shape);
            let which = match (a, b) {
                (1, 1) => "tensor".to_string(),
                (_, 1) => format!("row {ri}"),
                (1, _) if b == cols => format!("column {ci}"),
                _ => format!("group {ci}"),
            };
            let mut p = format!("{which} scale {}", fmt_f32(s));
            if let Some((_, _, z)) = self.zps.as_ref().and_then(|g| g.cell(r, c, rows, cols)) {
                p.push_str(&format!(" zp {}", fmt_f32(z)));
            }
            parts.push(p);
        }
        if let (Some(l), Some(q)) = (&self.lut, code) {
            let [n_luts, levels] = l.shape;
            let li = if n_luts <= 1 { 0 } else { r * n_luts / rows.max(1) };
            if let Some(v) = usize::try_from(q).ok().filter(|&q| q < levels).and_then(|q| l.data.get(li * levels + q)) {
                parts.push(format!("lut[{li}][{q}] {}", fmt_f32(*v)));
            }
        }
        parts.join(", ")
    }

    fn embedding_at(&self, index: usize) -> (Vec<usize>, Option<String>) {
        let Some([_, cols]) = self.w_shape.filter(|s| s[1] > 0) else { return (vec![index], None) };
        let (i, c) = (index / cols, index % cols);
        let Some(&row) = self.case.ids.as_ref().and_then(|ids| ids.get(i)) else { return (vec![i, c], None) };
        let (mut at, ctx) = self.weight_at(index, row as usize * cols + c);
        at[0] = i;
        (at, ctx.map(|c| format!("ids[{i}] = {row}: {c}")))
    }

    /// A stored scale / zero-point of `quantize`: `[row, group]` of the qparam grid.
    fn qparam_at(&self, name: &str, index: usize) -> (Vec<usize>, Option<String>) {
        let grid = if name == "scales" { &self.scales } else { &self.zps };
        let (Some(g), Some([rows, cols])) = (grid, self.w_shape) else { return (vec![index], None) };
        let [a, b] = g.shape;
        let (ri, ci) = (index / b.max(1), index % b.max(1));
        // The elements the cell covers, and their range: what the qparams were chosen from.
        let (rh, cw) = ((rows / a.max(1)).max(1), (cols / b.max(1)).max(1));
        let (r0, c0) = (ri * rh, ci * cw);
        let ctx = self.case.w.as_ref().map(|w| {
            let vals: Vec<f32> = (r0..(r0 + rh).min(w.rows))
                .flat_map(|r| (c0..(c0 + cw).min(w.cols)).map(move |c| w.data[r * w.cols + c]))
                .collect();
            let (lo, hi) = minmax(&vals);
            format!("w[{r0}..{}, {c0}..{}] min {} max {}", r0 + rh, c0 + cw, fmt_f32(lo), fmt_f32(hi))
        });
        (vec![ri, ci], ctx)
    }

    /// The expected per-token zero-point and scale of token `m` (`act_quant` or 8da4w linear).
    fn token_qparams(&self, m: usize, k: usize, cols: usize) -> String {
        let (zp, sc) = match self.case.op {
            Op::Linear => ("act_zp", "act_scales"),
            _ => ("zp", "scales"),
        };
        let mut p = Vec::new();
        if let Some(s) = self.expected.floats.get(sc) {
            let rows = self.x_shape().map_or(1, |x| x[0]);
            let shape = grid_shape(s.len(), rows, cols, None);
            let g = Grid { data: s, shape };
            if let Some((_, ci, v)) = g.cell(m, k, rows, cols) {
                if shape[1] > 1 {
                    p.push(format!("block {ci} scale {}", fmt_f32(v)));
                } else {
                    p.push(format!("token {m} scale {}", fmt_f32(v)));
                }
            }
        }
        if let Some(z) = self.expected.ints.get(zp).and_then(|z| z.get(m)) {
            p.push(format!("zp {z}"));
        }
        p.join(" ")
    }

    /// An activation element `[m, k]` (dequantized value or code).
    fn act_at(&self, index: usize) -> (Vec<usize>, Option<String>) {
        let Some([_, k]) = self.x_shape().filter(|s| s[1] > 0) else { return (vec![index], None) };
        let (m, kk) = (index / k, index % k);
        let x = self.case.x.as_ref().and_then(|x| x.data.get(index)).copied();
        let ctx = format!("x[{m},{kk}] = {}, {}", x.map_or("?".into(), fmt_f32), self.token_qparams(m, kk, k));
        (vec![m, kk], Some(ctx))
    }

    /// A per-token qparam (`zp`, `scales`, `act_zp`, `act_scales`): the token's range.
    fn token_at(&self, name: &str, index: usize) -> (Vec<usize>, Option<String>) {
        let Some(x) = self.case.x.as_ref().filter(|x| x.cols > 0 && x.rows > 0) else { return (vec![index], None) };
        let per_token = self.expected.floats.get(name).is_none_or(|v| v.len() == x.rows)
            && self.expected.ints.get(name).is_none_or(|v| v.len() == x.rows);
        let (m, range) = if per_token {
            (index, 0..x.cols)
        } else {
            // Per-block scales (Q8_0 activations): `[m, block]`.
            let len = self.expected.floats.get(name).map_or(x.rows, Vec::len);
            let blocks = (len / x.rows).max(1);
            let bl = (x.cols / blocks).max(1);
            let (m, b) = (index / blocks, index % blocks);
            let row = &x.data[m.min(x.rows - 1) * x.cols..][..x.cols];
            let (lo, hi) = minmax(&row[(b * bl).min(x.cols)..((b + 1) * bl).min(x.cols)]);
            let ctx = format!("x[{m},{}..{}] min {} max {}", b * bl, (b + 1) * bl, fmt_f32(lo), fmt_f32(hi));
            return (vec![m, b], Some(ctx));
        };
        let Some(row) = x.data.get(m * x.cols..(m + 1) * x.cols) else { return (vec![m], None) };
        let (lo, hi) = minmax(&row[range]);
        (vec![m], Some(format!("token {m}: x[{m},:] min {} max {}", fmt_f32(lo), fmt_f32(hi))))
    }

    /// An 8da4w accumulator `acc[m, n, g]`.
    fn acc_at(&self, index: usize) -> (Vec<usize>, Option<String>) {
        let (Some([m_rows, k]), Some([n_rows, _])) = (self.x_shape(), self.w_shape) else {
            return (vec![index], None);
        };
        let len = self.expected.ints.get("acc").map_or(0, Vec::len);
        let g = (len / (m_rows * n_rows).max(1)).max(1);
        let (m, n, gi) = (index / (n_rows * g), (index / g) % n_rows, index % g);
        let gl = k / g;
        let mut ctx = format!(
            "Σ_k∈[{}, {}) (act_q[{m},k] − zp)·w[{n},k]; {}",
            gi * gl,
            (gi + 1) * gl,
            self.token_qparams(m, gi * gl, k)
        );
        if let Some((_, _, s)) = self.scales.as_ref().and_then(|sg| sg.cell(n, gi * gl, n_rows, k)) {
            ctx.push_str(&format!("; w row {n} group {gi} scale {}", fmt_f32(s)));
        }
        (vec![m, n, gi], Some(ctx))
    }

    /// A linear output `y[m, n]`.
    fn linear_at(&self, index: usize) -> (Vec<usize>, Option<String>) {
        let n_rows = self.w_shape.map_or(self.expected.shape.last().copied().unwrap_or(1), |s| s[0]).max(1);
        let (m, n) = (index / n_rows, index % n_rows);
        let k = self.x_shape().map_or(0, |x| x[1]);
        let groups = self.scales.as_ref().map_or(1, |s| s.shape[1]);
        let mut ctx = format!("y[{m},{n}] = Σ_k x[{m},k]·ŵ[{n},k] over K = {k} ({groups} qparam group(s) per row)");
        if matches!(self.case.scheme.family, Family::W8da4w { .. }) {
            ctx.push_str(&format!("; {}", self.token_qparams(m, 0, k.max(1))));
        }
        (vec![m, n], Some(ctx))
    }
}

fn minmax(v: &[f32]) -> (f32, f32) {
    v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::case::Variant;
    use devices::reference::RefDevice;
    use devices::Device;
    use kernels_ref::scheme::Scheme;
    use kernels_ref::tensor::Matrix;

    fn weights(rows: usize, cols: usize) -> Matrix {
        Matrix::new(rows, cols, (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect()).unwrap()
    }

    fn case(op: Op, scheme: &str, rows: usize, cols: usize) -> OpCase {
        let s: Scheme = scheme.parse().unwrap();
        let w = weights(rows, cols);
        let mut c = OpCase {
            op,
            scheme: s,
            variant: Variant::default(),
            inject: None,
            wq: None,
            w: Some(w.clone()),
            x: None,
            ids: None,
        };
        match op {
            Op::Quantize => {}
            Op::ActQuant => {
                c.w = None;
                c.x = Some(w);
            }
            Op::Linear => {
                c.wq = Some(s.quantize(&w).unwrap());
                c.x = Some(weights(2, cols));
            }
            _ => c.wq = Some(s.quantize(&w).unwrap()),
        }
        c
    }

    #[test]
    fn identical_outputs_have_no_worst_elements() {
        let c = case(Op::Dequantize, "w4g32-sym-ao", 4, 64);
        let exp = RefDevice::new().run(&c).unwrap();
        assert!(worst_elements(&c, &exp, &exp, 10).is_empty());
    }

    #[test]
    fn dequantize_elements_name_row_column_group_code_scale_and_zero_point() {
        let c = case(Op::Dequantize, "w4g32-asym-ao", 4, 64);
        let exp = RefDevice::new().run(&c).unwrap();
        let mut got = exp.clone();
        // One far off at [3, 40] (group 1), one a single ulp off at [0, 1].
        got.values[3 * 64 + 40] += 1.0;
        got.values[1] = f32::from_bits(got.values[1].to_bits() ^ 1);
        let w = ranked(&c, &exp, &got, 10);
        assert_eq!(w.len(), 2);
        let e = &w[0].element;
        assert_eq!((e.output.as_str(), e.index, e.at.clone()), ("values", 3 * 64 + 40, vec![3, 40, 1]));
        let wq = c.wq.as_ref().unwrap();
        let ctx = e.context.clone().unwrap();
        let code = wq.q[3 * 64 + 40];
        let scale = wq.scales[3 * 2 + 1];
        let zp = wq.zero_points.as_ref().unwrap()[3 * 2 + 1];
        assert_eq!(ctx, format!("w[3,40] code {code}, group 1 scale {} zp {}", fmt_f32(scale), fmt_f32(zp)));
        assert!(matches!(w[0].delta, Delta::Value { ratio, .. } if ratio.is_infinite()));
        assert!(matches!(w[1].delta, Delta::Value { ulps, .. } if (ulps - 1.0).abs() < 1e-9 || ulps < 2.0));
        // Expected / found are the shortest decimals of the f32s.
        assert_eq!(e.expected.as_f64().unwrap() as f32, exp.values[3 * 64 + 40]);
        assert_eq!(e.found.as_f64().unwrap() as f32, got.values[3 * 64 + 40]);
    }

    #[test]
    fn integer_outputs_rank_before_floats_and_acc_has_m_n_g() {
        let c = case(Op::Linear, "8da4w-vk", 3, 64);
        let exp = RefDevice::new().run(&c).unwrap();
        let mut got = exp.clone();
        got.values[0] *= 4.0;
        got.values[0] += 1.0;
        let s = &mut got.floats.get_mut("act_scales").unwrap()[1];
        *s = f32::from_bits(s.to_bits() + 3);
        let acc = got.ints.get_mut("acc").unwrap();
        let g = acc.len() / (2 * 3);
        // acc[1, 2, g-1] off by one.
        let at = (3 + 2) * g + (g - 1);
        acc[at] -= 1;
        let w = ranked(&c, &exp, &got, 10);
        assert_eq!(w.len(), 3, "{w:#?}");
        assert_eq!(w[0].element.output, "acc");
        assert_eq!(w[0].element.at, vec![1, 2, g - 1]);
        assert_eq!(w[0].delta, Delta::Int(-1));
        let ctx = w[0].element.context.clone().unwrap();
        assert!(ctx.contains("zp") && ctx.contains(&format!("group {}", g - 1)), "{ctx}");
        assert_eq!(w[1].element.output, "act_scales");
        assert_eq!(w[1].element.at, vec![1]);
        assert!(w[1].element.context.clone().unwrap().starts_with("token 1: x[1,:] min"));
        assert_eq!(w[2].element.output, "values");
        assert_eq!(w[2].element.at, vec![0, 0]);
        // n limits the list, keeping the worst.
        let one = worst_elements(&c, &exp, &got, 1);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].output, "acc");
    }

    #[test]
    fn a_wrong_zero_point_is_listed_before_the_codes_and_sums_it_spoils() {
        let c = case(Op::Linear, "8da4w-vk", 3, 64);
        let exp = RefDevice::new().run(&c).unwrap();
        let mut got = exp.clone();
        got.ints.get_mut("acc").unwrap()[0] += 1000;
        got.ints.get_mut("act_q").unwrap()[5] += 100;
        got.ints.get_mut("act_zp").unwrap()[1] += 1;
        let names: Vec<String> = worst_elements(&c, &exp, &got, 10).into_iter().map(|e| e.output).collect();
        assert_eq!(names, ["act_zp", "act_q", "acc"]);
    }

    #[test]
    fn a_missing_output_is_reported_first() {
        let c = case(Op::ActQuant, "a8-pt-asym-ao", 2, 16);
        let exp = RefDevice::new().run(&c).unwrap();
        let mut got = exp.clone();
        got.ints.remove("zp");
        got.ints.get_mut("q").unwrap()[17] += 2;
        let w = ranked(&c, &exp, &got, 10);
        assert_eq!(w[0].delta, Delta::Missing);
        assert!(w[0].element.context.clone().unwrap().contains("no `zp`"));
        assert_eq!(w[1].element.output, "q");
        assert_eq!(w[1].element.at, vec![1, 1]);
        let ctx = w[1].element.context.clone().unwrap();
        assert!(ctx.starts_with("x[1,1] = ") && ctx.contains("token 1 scale"), "{ctx}");
    }

    #[test]
    fn quantize_contexts_use_the_reference_qparams() {
        let c = case(Op::Quantize, "w4g32-sym-ao", 2, 64);
        let exp = RefDevice::new().run(&c).unwrap();
        let mut got = exp.clone();
        got.ints.get_mut("q").unwrap()[64 + 33] += 1;
        got.floats.get_mut("scales").unwrap()[3] *= 2.0;
        let w = ranked(&c, &exp, &got, 10);
        assert_eq!(w[0].element.at, vec![1, 33, 1]);
        let ctx = w[0].element.context.clone().unwrap();
        let s = exp.floats["scales"][3];
        assert!(ctx.starts_with("w[1,33] = ") && ctx.contains(&format!("group 1 scale {}", fmt_f32(s))), "{ctx}");
        assert_eq!(w[1].element.output, "scales");
        assert_eq!(w[1].element.at, vec![1, 1]);
        assert!(w[1].element.context.clone().unwrap().starts_with("w[1..2, 32..64] min"));
    }

    #[test]
    fn embedding_positions_follow_the_ids() {
        let mut c = case(Op::Embedding, "q4_0", 5, 64);
        c.ids = Some(vec![4, 0]);
        let exp = RefDevice::new().run(&c).unwrap();
        let mut got = exp.clone();
        got.values[5] = -got.values[5] - 1.0;
        let w = worst_elements(&c, &exp, &got, 3);
        assert_eq!(w[0].at, vec![0, 5, 0]);
        assert!(w[0].context.clone().unwrap().starts_with("ids[0] = 4: w[4,5] code "));
    }

    #[test]
    fn floats_print_short() {
        assert_eq!(float_json(0.0123).to_string(), "0.0123");
        assert_eq!(float_json(f32::NAN), serde_json::json!("NaN"));
        assert_eq!(fmt_f32(1.5e-8), "1.5e-8");
        assert_eq!(fmt_f32(-2.5), "-2.5");
    }
}

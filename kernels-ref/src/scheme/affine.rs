//! One affine-quantization engine parameterized as schemes.md §9 recommends, and the parameter
//! sets of the torchao, coremltools, coreai-opt and fbgemm/mslk schemes (schemes.md §1–§2, §7).
//!
//! Rather than hard-coding "the" symmetric int4, every choice that differs between frameworks is a
//! field: the range rule (is zero included, symmetric abs-max), the scale rule, the eps rule and
//! where it applies, the zero-point rule, the arithmetic dtype of choose_qparams and of quantize,
//! reciprocal-multiply vs divide, the rounding mode, rounding before or after the zero-point, the
//! stored scale dtype, and whether codes use the stored or the quantize-time scale.

use super::{group_indices, AoMapping, ClipFlavor, Family, Granularity, Quantized, Scheme, W8da4wFlavor};
use crate::dtype::DType;
use crate::error::Result;
use crate::round::{rne, to_code, OpForm, RoundMode};
use crate::scheme::act::ActFlavor;
use crate::tensor::Matrix;
use serde::Serialize;

/// Which extremes of a group the scale is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RangeRule {
    /// `mn = min(min, 0)`, `mx = max(max, 0)`: zero is always inside (torchao, coremltools linear).
    IncludeZero,
    /// The true min and max (tinygemm / Int4Tensor).
    TrueMinMax,
    /// `a = max(|min|, |max|)`, `mn = −a`, `mx = a` (coremltools linear_symmetric).
    SymAbs,
}

/// How the scale follows from `(mn, mx)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleRule {
    /// torchao SYMMETRIC: `max(−mn, mx) ⊘ ((qmax − qmin)/2)`.
    HalfRange,
    /// torchao SYMMETRIC_NO_CLIPPING_ERR: `max(mn ⊘ qmin, mx ⊘ qmax)`.
    NoClipErr,
    /// `(mx ⊖ mn) ⊘ (qmax − qmin)` (torchao ASYMMETRIC, coremltools, tinygemm).
    Span,
    /// `max(|mn|, |mx|) ⊘ d` (fbgemm `int4_row_quantize`: d = 8; coreai clipping: d = qmax).
    AbsMaxOver(f64),
}

/// Where an eps floor applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EpsAt {
    /// `s = max(s, eps)` after the scale is formed (torchao).
    Scale,
    /// The range (amax or max − min) is clamped before dividing (fbgemm/mslk: `clamp(min=1e-6)`).
    Range,
}

/// How the zero-point (or float offset) is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ZpRule {
    /// Symmetric: no zero-point.
    None,
    /// torchao: `zp = clamp(qmin − rne(mn ⊘ s), qmin, qmax)` with the pre-cast scale.
    FromMin,
    /// coremltools linear: `clip(rne((qmin·mx − qmax·mn) ⊘ (mx − mn)), qmin, qmax)` in W dtype.
    CoremlLinear,
    /// Float zero (Int4Tensor / tinygemm): codes `u = rne((x ⊖ mn) ⊘ s)` in `[0, 2·mid − 1]`,
    /// `q = u − mid`, stored `z = mn ⊕ s ⊗ mid`, dequant `q·s + z`.
    FloatMin {
        /// The mid code (8 for 4 bits).
        mid: i32,
    },
}

/// How codes and stored qparams become values again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DequantRule {
    /// `T(q − zp) ⊗ s` in `promote(T, scale dtype)`, then to T (torchao, coremltools' decompress).
    IntZp,
    /// `(T(q) ⊗ s) ⊕ z` in T (float zero-point).
    FloatZp,
}

/// The full §9 parameterization of an affine scheme.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AffineParams {
    /// Smallest code.
    pub qmin: i32,
    /// Largest code.
    pub qmax: i32,
    /// Granularity of the qparams.
    pub gran: Granularity,
    /// Dtype of choose_qparams (the input is cast to it first).
    pub arith: DType,
    /// Range rule.
    pub range: RangeRule,
    /// Scale rule.
    pub scale_rule: ScaleRule,
    /// Eps floor value, if any.
    pub eps: Option<f64>,
    /// Where the eps floor applies.
    pub eps_at: EpsAt,
    /// A label for the eps rule (`smallest_normal(bf16)`, `1e-6`, ...).
    #[serde(skip)]
    pub eps_label: &'static str,
    /// Zero-point rule.
    pub zp_rule: ZpRule,
    /// Dtype the code computation `x·(1/s)` or `x/s` happens in.
    pub quant_arith: DType,
    /// Reciprocal-multiply or divide.
    pub op_form: OpForm,
    /// Rounding of codes.
    pub round: RoundMode,
    /// Round before adding the zero-point (torchao, coremltools) or after (PyTorch decomposed).
    pub round_before_zp: bool,
    /// Dtype the scales are stored in.
    pub stored_scale: DType,
    /// Whether the codes are computed with the stored scale (torchao's `weight_scale_dtype`
    /// requantization) or the quantize-time one (XNNPACK's bf16 cast after quantization).
    pub quantize_with_stored_scale: bool,
    /// Dequantization formula.
    pub dequant: DequantRule,
}

fn signed_range(bits: u8) -> (i32, i32) {
    (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
}

impl AffineParams {
    /// The parameters of an affine-family scheme (torchao, symclip, sym8, fzp, coreml asym, the
    /// torchao activation flavors and the 8da4w weights).
    pub fn for_scheme(s: &Scheme) -> Result<AffineParams> {
        let t = s.dtype;
        let ao = |bits: u8, gran: Granularity, mapping: AoMapping, eps: f64, label: &'static str| {
            let (qmin, qmax) = signed_range(bits);
            let (scale_rule, zp_rule) = match mapping {
                AoMapping::Sym => (ScaleRule::HalfRange, ZpRule::None),
                AoMapping::SymNce => (ScaleRule::NoClipErr, ZpRule::None),
                AoMapping::Asym => (ScaleRule::Span, ZpRule::FromMin),
            };
            AffineParams {
                qmin,
                qmax,
                gran,
                arith: t,
                range: RangeRule::IncludeZero,
                scale_rule,
                eps: Some(eps),
                eps_at: EpsAt::Scale,
                eps_label: label,
                zp_rule,
                quant_arith: t,
                op_form: OpForm::RecipMul,
                round: RoundMode::Rne,
                round_before_zp: true,
                stored_scale: t,
                quantize_with_stored_scale: true,
                dequant: DequantRule::IntZp,
            }
        };
        // coremltools `linear_quantize_weights`: `(vmax − vmin)/(qmax − qmin)` and `rne(W ⊘ s)` in the
        // weight dtype, no eps (an all-zero block stores scale 0, codes 0, zp 0).
        let coreml = |qmin: i32, qmax: i32, gran: Granularity, range: RangeRule, zp_rule: ZpRule| AffineParams {
            qmin,
            qmax,
            gran,
            arith: t,
            range,
            scale_rule: ScaleRule::Span,
            eps: None,
            eps_at: EpsAt::Scale,
            eps_label: "none (an all-zero block stores scale 0, codes 0, zp 0)",
            zp_rule,
            quant_arith: t,
            op_form: OpForm::Div,
            round: RoundMode::Rne,
            round_before_zp: true,
            stored_scale: t,
            quantize_with_stored_scale: false,
            dequant: DequantRule::IntZp,
        };
        Ok(match s.family {
            Family::Torchao { bits, gran, mapping } => {
                ao(bits, gran, mapping, t.smallest_normal(), "smallest_normal(T)")
            }
            Family::W8da4w { flavor, group, .. } => {
                let mut p = ao(4, Granularity::Group(group), AoMapping::Sym, t.smallest_normal(), "smallest_normal(T)");
                if flavor == W8da4wFlavor::Xnn {
                    // ExecuTorch's XNNPACK serializer casts the group scales to bf16 after torchao
                    // quantized the codes with the T-dtype scale (schemes.md §1.7).
                    p.stored_scale = DType::BF16;
                    p.quantize_with_stored_scale = false;
                }
                p
            }
            Family::Act { flavor: ActFlavor::Ao, .. } => {
                ao(8, Granularity::Channel, AoMapping::Asym, t.smallest_normal(), "smallest_normal(T)")
            }
            Family::Act { flavor: ActFlavor::AoI8w, .. } => {
                let mut p =
                    ao(8, Granularity::Channel, AoMapping::Asym, DType::F32.epsilon(), "finfo(f32).eps = 2^-23");
                p.stored_scale = DType::F32;
                p
            }
            Family::SymClip { bits, gran, flavor } => {
                let qmax = (1 << (bits - 1)) - 1;
                match flavor {
                    ClipFlavor::Coreml => coreml(-qmax, qmax, gran, RangeRule::SymAbs, ZpRule::None),
                    ClipFlavor::Coreai => AffineParams {
                        qmin: -qmax,
                        qmax,
                        scale_rule: ScaleRule::AbsMaxOver(qmax as f64),
                        op_form: OpForm::Div,
                        ..ao(bits, gran, AoMapping::Sym, DType::F32.epsilon(), "finfo(f32).eps = 2^-23")
                    },
                }
            }
            Family::CoremlAsym { bits, gran } => {
                let (qmin, qmax) = signed_range(bits);
                coreml(qmin, qmax, gran, RangeRule::IncludeZero, ZpRule::CoremlLinear)
            }
            Family::Sym8 { group } => AffineParams {
                qmin: -8,
                qmax: 7,
                gran: Granularity::Group(group),
                arith: DType::F32,
                range: RangeRule::SymAbs,
                scale_rule: ScaleRule::AbsMaxOver(8.0),
                eps: Some(DType::F32.round(1e-6)),
                eps_at: EpsAt::Range,
                eps_label: "amax clamped to f32(1e-6)",
                zp_rule: ZpRule::None,
                quant_arith: DType::F32,
                op_form: OpForm::Div,
                round: RoundMode::Rne,
                round_before_zp: true,
                stored_scale: t,
                quantize_with_stored_scale: false,
                dequant: DequantRule::IntZp,
            },
            Family::Fzp { group } => AffineParams {
                qmin: 0,
                qmax: 15,
                gran: Granularity::Group(group),
                arith: DType::F32,
                range: RangeRule::TrueMinMax,
                scale_rule: ScaleRule::Span,
                eps: Some(DType::F32.round(1e-6)),
                eps_at: EpsAt::Range,
                eps_label: "max - min clamped to f32(1e-6)",
                zp_rule: ZpRule::FloatMin { mid: 8 },
                quant_arith: DType::F32,
                op_form: OpForm::Div,
                round: RoundMode::Rne,
                round_before_zp: true,
                stored_scale: t,
                quantize_with_stored_scale: false,
                dequant: DequantRule::FloatZp,
            },
            _ => {
                return Err(crate::error::RefError::unsupported(
                    s.to_string(),
                    "not an affine-engine scheme (internal dispatch error)",
                ))
            }
        })
    }

    /// Choose `(quantize-time scale, zero-point or float offset)` for one group of values that are
    /// already in the arithmetic dtype.
    pub fn choose_qparams(&self, group: &[f64]) -> (f64, f64) {
        let t = self.arith;
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for &v in group {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        let (mn, mx) = match self.range {
            RangeRule::IncludeZero => (lo.min(0.0), hi.max(0.0)),
            RangeRule::TrueMinMax => (lo, hi),
            RangeRule::SymAbs => {
                let a = lo.abs().max(hi.abs());
                (-a, a)
            }
        };
        let (qmin, qmax) = (self.qmin as f64, self.qmax as f64);
        let floor_range = |r: f64| match (self.eps, self.eps_at) {
            (Some(e), EpsAt::Range) => r.max(e),
            _ => r,
        };
        let mut s = match self.scale_rule {
            ScaleRule::HalfRange => t.div((-mn).max(mx), (qmax - qmin) / 2.0),
            ScaleRule::NoClipErr => {
                let smin = t.div(mn, qmin);
                let smax = t.div(mx, qmax);
                if smin > smax {
                    smin
                } else {
                    smax
                }
            }
            ScaleRule::Span => t.div(floor_range(t.sub(mx, mn)), qmax - qmin),
            ScaleRule::AbsMaxOver(d) => t.div(floor_range(mn.abs().max(mx.abs())), d),
        };
        if let (Some(e), EpsAt::Scale) = (self.eps, self.eps_at) {
            // torch.clamp(scale, min=eps): the python-float eps is taken in T first.
            s = s.max(t.round(e));
        }
        let zp = match self.zp_rule {
            ZpRule::None => 0.0,
            ZpRule::FromMin => (qmin - rne(t.div(mn, s))).clamp(qmin, qmax),
            ZpRule::CoremlLinear => {
                let num = t.sub(t.mul(qmin, mx), t.mul(qmax, mn));
                let z = rne(t.div(num, t.sub(mx, mn)));
                // 0/0 for an all-zero block: NaN survives np.clip and becomes 0 in astype(int8).
                if z.is_nan() {
                    0.0
                } else {
                    z.clamp(qmin, qmax)
                }
            }
            ZpRule::FloatMin { .. } => mn,
        };
        (s, zp)
    }

    /// Quantize a tensor (the input is cast to the scheme dtype, then to the arithmetic dtype).
    pub fn quantize(&self, scheme: &Scheme, x: &Matrix) -> Result<Quantized> {
        let [qr, qc] = self.gran.qparam_shape(x.rows, x.cols);
        let mut q = vec![0i32; x.data.len()];
        let mut scales = vec![0f32; qr * qc];
        let mut qscales = vec![0f64; qr * qc];
        let mut zps = vec![0f32; qr * qc];
        let t = scheme.dtype;
        let mut group = Vec::new();
        for (gi, range, _) in group_indices(self.gran, x.rows, x.cols) {
            group.clear();
            group.extend(x.data[range.clone()].iter().map(|&v| self.arith.round(t.round(v as f64))));
            let (s, zp) = self.choose_qparams(&group);
            let stored = self.stored_scale.round(s);
            let sq = if self.quantize_with_stored_scale { stored } else { s };
            let qa = self.quant_arith;
            for (k, &v) in group.iter().enumerate() {
                let code = match self.zp_rule {
                    ZpRule::FloatMin { mid } => {
                        let y = self.op_form.apply(qa, qa.sub(v, zp), sq);
                        to_code(self.round.apply(y).clamp(self.qmin as f64, self.qmax as f64)) - mid
                    }
                    _ => {
                        // torchao's `1.0 / scale` is computed in the scale's dtype, the product in
                        // promote(T, scale dtype): with both in `qa` that is `op_form.apply`.
                        let y = self.op_form.apply(qa, v, sq);
                        let r = if self.round_before_zp {
                            self.round.apply(y) + zp
                        } else {
                            self.round.apply(qa.add(y, zp))
                        };
                        to_code(r.clamp(self.qmin as f64, self.qmax as f64))
                    }
                };
                q[range.start + k] = code;
            }
            scales[gi] = stored as f32;
            qscales[gi] = s;
            zps[gi] = match self.zp_rule {
                ZpRule::FloatMin { mid } => {
                    let z = self.arith.add(zp, self.arith.mul(s, mid as f64));
                    self.stored_scale.round(z) as f32
                }
                // An integer zero-point has no sign of zero (rne(-0.3) is -0.0 in float).
                _ => (zp + 0.0) as f32,
            };
        }
        let has_zp = self.zp_rule != ZpRule::None;
        let differs = qscales.iter().zip(&scales).any(|(a, b)| *a != *b as f64);
        Ok(Quantized {
            scheme: *scheme,
            shape: x.shape(),
            q,
            scales,
            scale_shape: [qr, qc],
            zero_points: has_zp.then_some(zps),
            zero_point_shape: has_zp.then_some([qr, qc]),
            lut: None,
            lut_shape: None,
            quantize_scales: differs.then_some(qscales),
            extra: None,
        })
    }

    /// Dequantize from codes and stored qparams, in the scheme dtype.
    pub fn dequantize(&self, q: &Quantized) -> Vec<f32> {
        let t = q.scheme.dtype;
        let [rows, cols] = q.shape;
        let mut out = vec![0f32; rows * cols];
        // The product happens in promote(T, stored scale dtype), then is cast to T.
        let pt = promote(t, self.stored_scale);
        for (gi, range, _) in group_indices(self.gran, rows, cols) {
            let s = q.scales[gi] as f64;
            let zp = q.zero_points.as_ref().map_or(0.0, |z| z[gi] as f64);
            for i in range {
                let code = q.q[i] as f64;
                let v = match self.dequant {
                    DequantRule::IntZp => t.round(pt.mul(pt.round(code - zp), s)),
                    DequantRule::FloatZp => t.add(t.mul(t.round(code), s), zp),
                };
                out[i] = v as f32;
            }
        }
        out
    }
}

/// PyTorch type promotion between two float dtypes: the wider one (f16 with bf16 gives f32).
pub fn promote(a: DType, b: DType) -> DType {
    match (a, b) {
        (x, y) if x == y => x,
        (DType::F16, DType::BF16) | (DType::BF16, DType::F16) => DType::F32,
        (x, y) => x.max(y),
    }
}

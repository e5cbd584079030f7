//! Comparing a device's outputs with the exact emulation of the scheme (is the kernel right?) and
//! with the fp32 truth (what does the scheme cost?), and the verdict that follows.
//!
//! Rules (DESIGN.md "Cases, comparison, verdicts"):
//! - Integer outputs (codes, zero-points, integer accumulators) must match exactly, always.
//! - Float side outputs (stored scales, float zero-points, LUTs) must match bit for bit: they are
//!   what a checkpoint stores.
//! - Float values must lie within a tolerance derived from the numerics of the op ([`tolerances`]):
//!   zero for single-rounding formulas, one unit in the last place of the compute dtype where the
//!   formula is a multiply followed by an add (which SPIR-V, WGSL and MSL allow a compiler to
//!   contract into one fused multiply-add), and the classical accumulation bound for `linear`.
//! - Bit-identical everything is `exact`; exact integers and side outputs with values within
//!   tolerance is `within_tolerance`; anything else is `mismatch`.

use devices::case::{Op, OpCase, Outputs};
use kernels_ref::dtype::DType;
use kernels_ref::scheme::{Family, Scheme};
use reports::{Metrics, Verdict};

/// A comparison's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The verdict.
    pub verdict: Verdict,
    /// The metrics.
    pub metrics: Metrics,
    /// What went wrong first, for a mismatch (which output, which element, expected vs found).
    pub note: Option<String>,
}

/// Unit roundoff `u = 2^-p` of a dtype (half an ulp of 1): 2^-24 for f32, 2^-11 for f16, 2^-8 for bf16.
pub fn unit_roundoff(t: DType) -> f64 {
    t.epsilon() / 2.0
}

/// The spacing of dtype `t` at `|v|` (one ulp): `2^(e − p + 1)` for a normal `v` with exponent `e`,
/// the subnormal spacing below the normal range.
pub fn ulp(t: DType, v: f64) -> f64 {
    let min_spacing = t.smallest_normal() * t.epsilon();
    let a = v.abs();
    if !a.is_finite() || a < t.smallest_normal() {
        return min_spacing;
    }
    let e = ((a.to_bits() >> 52) & 0x7ff) as i64 - 1023;
    (2f64).powi(e as i32) * t.epsilon()
}

/// Whether the scheme's dequantization is a multiply followed by an add rounded twice (MLX
/// `scale·q + bias`, the float-zero `-fzp` `q·s + z`, ggml Q4_K `d·sc·q − dmin·m`), so that a
/// contracted fma may change the last bit.
fn dequant_has_mul_add(s: &Scheme) -> bool {
    matches!(s.family, Family::Mlx { .. } | Family::Fzp { .. } | Family::Q4K { .. })
}

/// The absolute tolerance of every float value of `expected`, from the numerics of the case:
///
/// - `quantize`, `dequantize`, `embedding`, `act_quant`: 0 (one rounding of an exact expression,
///   which any correct kernel reproduces), or `ulp_T(v)` where the formula is a multiply then an
///   add that a GPU compiler may contract into one fma.
/// - `linear`: the forward error bound of a sum of K products accumulated in dtype T in any order
///   (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1: `|ŝ − s| ≤ γ_K Σ|x_k w_k|`
///   with `γ_K ≈ K·u`), widened by 4 roundings for the products, the dequantized weight and
///   activation (each within `u` relatively) and the per-group scale product of the integer
///   paths, plus half an ulp of T for the final rounding of the exact value:
///   `tol = (K + 4)·u_T·Σ_k |x̂_k·ŵ_k| + (K + 4)·η_T/2 + ulp_T(y)/2`, where `η_T` is the smallest
///   subnormal of T: a product or sum that lands in T's subnormal range errs by up to `η_T/2`
///   absolutely, not relatively (Higham's bound with underflow). The 8da4w integer paths add
///   `Σ_g |acc_g|·η_T/2` for a per-group scale product `s_a·s_w[g]` that is subnormal in T (fp16
///   scales of ~1e-3 × ~1e-2 are). For `@f16` this is the bound of fp16
///   accumulation (ExecuTorch Vulkan half mode, MLX CPU), the loosest a framework of that scheme
///   uses.
///
/// Returns `Err` when the case lacks what the bound needs.
pub fn tolerances(case: &OpCase, expected: &Outputs) -> anyhow::Result<Vec<f64>> {
    let s = case.scheme;
    let t = s.dtype;
    match case.op {
        Op::Linear => {
            let sums = linear_abs_sums(case)?;
            let k = case.x.as_ref().map_or(0, |x| x.cols) as f64;
            let u = unit_roundoff(t);
            let eta = t.smallest_normal() * t.epsilon();
            // The integer paths scale each group's accumulator by `s_a·s_w[g]` computed in T; when
            // that product is subnormal in T it errs by up to η_T/2 absolutely, and the error is
            // multiplied by the accumulator: Σ_g |acc_g|·η_T/2 more.
            let n_out = expected.values.len().max(1);
            let acc_term = |i: usize| -> f64 {
                expected.ints.get("acc").map_or(0.0, |acc| {
                    let g = acc.len() / n_out;
                    acc[i * g..(i + 1) * g].iter().map(|a| a.unsigned_abs() as f64).sum::<f64>() * eta / 2.0
                })
            };
            Ok(expected
                .values
                .iter()
                .zip(&sums)
                .enumerate()
                .map(|(i, (&y, &a))| (k + 4.0) * (u * a + eta / 2.0) + acc_term(i) + ulp(t, y as f64) / 2.0)
                .collect())
        }
        Op::ActQuant => Ok(vec![0.0; expected.values.len()]),
        _ => {
            let mul_add = dequant_has_mul_add(&s);
            Ok(expected.values.iter().map(|&v| if mul_add { ulp(t, v as f64) } else { 0.0 }).collect())
        }
    }
}

/// `Σ_k |x̂_k · ŵ_k|` for every output of a linear case, with `x̂` the activations as the scheme
/// sees them (rounded to T, or dequantized per token for 8da4w) and `ŵ` the reference dequantization.
fn linear_abs_sums(case: &OpCase) -> anyhow::Result<Vec<f64>> {
    let s = case.scheme;
    let x = case.x.as_ref().ok_or_else(|| anyhow::anyhow!("linear case without x"))?;
    let wq = case.wq.as_ref().ok_or_else(|| anyhow::anyhow!("linear case without wq"))?;
    let xh: Vec<f64> = match s.family {
        Family::W8da4w { .. } => {
            let a = s.activation_scheme().expect("8da4w has an activation scheme");
            a.dequantize(&a.quantize(x)?)?.into_iter().map(f64::from).collect()
        }
        _ => x.data.iter().map(|&v| s.dtype.round(v as f64)).collect(),
    };
    let w: Vec<f64> = s.dequantize(wq)?.into_iter().map(f64::from).collect();
    let (m, k, n) = (x.rows, x.cols, wq.shape[0]);
    let mut out = Vec::with_capacity(m * n);
    for mi in 0..m {
        for ni in 0..n {
            out.push((0..k).map(|kk| (xh[mi * k + kk] * w[ni * k + kk]).abs()).sum());
        }
    }
    // The integer flavours (-xnn, -vk) compute Σ_g s_a·s_w[g]·acc_g: the same real number as
    // Σ_k x̂_k·ŵ_k before x̂ and ŵ are rounded, so the same bound covers them.
    Ok(out)
}

/// Same value, bit for bit (NaN equal to NaN whatever its payload).
fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Compare `found` with `expected` (the ref device's outputs for the same case) and with the fp32
/// `truth`.
pub fn compare(case: &OpCase, expected: &Outputs, found: &Outputs, truth: Option<&[f32]>) -> Comparison {
    let t = case.scheme.dtype;
    let mut notes: Vec<String> = Vec::new();
    let mut metrics = Metrics::default();

    // Integer outputs: every name the reference gives must come back, equal.
    for (name, want) in &expected.ints {
        match found.ints.get(name) {
            None => {
                metrics.int_mismatches += want.len() as u64;
                notes.push(format!("the device returned no `{name}`"));
            }
            Some(got) if got.len() != want.len() => {
                metrics.int_mismatches += want.len().max(got.len()) as u64;
                notes.push(format!("`{name}` has {} values, expected {}", got.len(), want.len()));
            }
            Some(got) => {
                let bad: Vec<usize> = (0..want.len()).filter(|&i| got[i] != want[i]).collect();
                metrics.int_mismatches += bad.len() as u64;
                if let Some(&i) = bad.first() {
                    notes.push(format!(
                        "{} of {} `{name}` differ; first at [{i}]: expected {}, found {}",
                        bad.len(),
                        want.len(),
                        want[i],
                        got[i]
                    ));
                }
            }
        }
    }
    // Float side outputs: bit for bit.
    for (name, want) in &expected.floats {
        match found.floats.get(name) {
            None => {
                metrics.side_mismatches += want.len() as u64;
                notes.push(format!("the device returned no `{name}`"));
            }
            Some(got) if got.len() != want.len() => {
                metrics.side_mismatches += want.len().max(got.len()) as u64;
                notes.push(format!("`{name}` has {} values, expected {}", got.len(), want.len()));
            }
            Some(got) => {
                let bad: Vec<usize> = (0..want.len()).filter(|&i| !same_bits(got[i], want[i])).collect();
                metrics.side_mismatches += bad.len() as u64;
                if let Some(&i) = bad.first() {
                    notes.push(format!(
                        "{} of {} `{name}` differ; first at [{i}]: expected {:e}, found {:e}",
                        bad.len(),
                        want.len(),
                        want[i],
                        got[i]
                    ));
                }
            }
        }
    }

    // Float values against the exact emulation.
    let mut values_ok = true;
    if found.values.len() != expected.values.len() || found.shape != expected.shape {
        values_ok = false;
        notes.push(format!(
            "values have shape {:?} ({} values), expected {:?} ({})",
            found.shape,
            found.values.len(),
            expected.shape,
            expected.values.len()
        ));
    } else {
        let tol = match tolerances(case, expected) {
            Ok(t) => t,
            Err(e) => {
                notes.push(format!("no tolerance could be derived ({e:#}); values judged bit for bit"));
                vec![0.0; expected.values.len()]
            }
        };
        let n = expected.values.len();
        let (mut exact, mut worst_ratio, mut worst_at) = (0usize, 0f64, None);
        for (i, (&e, &f)) in expected.values.iter().zip(&found.values).enumerate() {
            if same_bits(e, f) {
                exact += 1;
                continue;
            }
            let diff = (e as f64 - f as f64).abs();
            let ratio = if diff.is_nan() || diff.is_infinite() {
                f64::INFINITY
            } else if tol[i] == 0.0 {
                // -0.0 vs +0.0 is not a numeric error but is not bit-exact either.
                if diff == 0.0 {
                    0.0
                } else {
                    f64::INFINITY
                }
            } else {
                diff / tol[i]
            };
            let u = if diff.is_finite() { diff / ulp(t, e as f64) } else { f64::INFINITY };
            metrics.max_ulp = metrics.max_ulp.max(u);
            if ratio > worst_ratio || worst_at.is_none() {
                worst_ratio = ratio;
                worst_at = Some(i);
            }
        }
        metrics.bit_exact_fraction = if n == 0 { 1.0 } else { exact as f64 / n as f64 };
        metrics.tolerance_ratio = worst_ratio;
        if worst_ratio > 1.0 {
            values_ok = false;
            let i = worst_at.expect("a worst element exists when the ratio is positive");
            let cols = expected.shape.last().copied().unwrap_or(1).max(1);
            notes.push(format!(
                "values beyond tolerance: worst at [{}, {}]: expected {:e}, found {:e} ({:.3}× the tolerance {:e})",
                i / cols,
                i % cols,
                expected.values[i],
                found.values[i],
                worst_ratio,
                tol[i]
            ));
        }
    }

    // Against the fp32 truth: what the scheme (and the device) cost.
    if let Some(truth) = truth.filter(|t| t.len() == found.values.len()) {
        let (mut se, mut ss, mut dot, mut nf, mut nt) = (0f64, 0f64, 0f64, 0f64, 0f64);
        for (&f, &r) in found.values.iter().zip(truth) {
            let (f, r) = (f as f64, r as f64);
            metrics.max_abs_err = metrics.max_abs_err.max((f - r).abs());
            se += (f - r) * (f - r);
            ss += r * r;
            dot += f * r;
            nf += f * f;
            nt += r * r;
        }
        metrics.nmse = if ss > 0.0 {
            se / ss
        } else if se == 0.0 {
            0.0
        } else {
            f64::INFINITY
        };
        metrics.cosine = if nf > 0.0 && nt > 0.0 {
            dot / (nf.sqrt() * nt.sqrt())
        } else if nf == nt {
            1.0
        } else {
            0.0
        };
    }

    let ints_ok = metrics.int_mismatches == 0 && metrics.side_mismatches == 0;
    let verdict = if !ints_ok || !values_ok {
        Verdict::Mismatch
    } else if metrics.bit_exact_fraction == 1.0 {
        Verdict::Exact
    } else {
        Verdict::WithinTolerance
    };
    Comparison { verdict, metrics, note: (!notes.is_empty()).then(|| notes.join("; ")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::case::Variant;
    use devices::reference::RefDevice;
    use devices::Device;
    use kernels_ref::tensor::Matrix;

    fn linear_case(scheme: &str) -> OpCase {
        linear_case_k(scheme, 64)
    }

    fn linear_case_k(scheme: &str, k: usize) -> OpCase {
        let s: Scheme = scheme.parse().unwrap();
        let (m, n) = (2, 3);
        let w = Matrix::new(n, k, (0..n * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect()).unwrap();
        let x = Matrix::new(m, k, (0..m * k).map(|i| ((i * 53 % 89) as f32 - 44.0) / 30.0).collect()).unwrap();
        OpCase {
            op: Op::Linear,
            scheme: s,
            variant: Variant::default(),
            inject: None,
            wq: Some(s.quantize(&w).unwrap()),
            w: Some(w),
            x: Some(x),
            ids: None,
        }
    }

    #[test]
    fn ulp_of_known_values() {
        assert_eq!(ulp(DType::F32, 1.0), 2f64.powi(-23));
        assert_eq!(ulp(DType::F32, 1.5), 2f64.powi(-23));
        assert_eq!(ulp(DType::F32, 2.0), 2f64.powi(-22));
        assert_eq!(ulp(DType::F16, 1.0), 2f64.powi(-10));
        assert_eq!(ulp(DType::BF16, -3.0), 2f64.powi(-6));
        // Below the normal range the spacing is the subnormal one.
        assert_eq!(ulp(DType::F16, 1e-7), 2f64.powi(-24));
        assert_eq!(ulp(DType::F32, 0.0), 2f64.powi(-149));
        assert_eq!(unit_roundoff(DType::F32), 2f64.powi(-24));
    }

    #[test]
    fn the_reference_against_itself_is_exact() {
        for scheme in ["w4g32-sym-ao", "8da4w-vk", "q4_K", "w4g32-mlx-gpu@f16"] {
            let case = linear_case_k(scheme, if scheme == "q4_K" { 256 } else { 64 });
            let exp = RefDevice::new().run(&case).unwrap();
            let c = compare(&case, &exp, &exp, None);
            assert_eq!(c.verdict, Verdict::Exact, "{scheme}: {:?}", c.note);
            assert_eq!(c.metrics.bit_exact_fraction, 1.0);
        }
    }

    #[test]
    fn linear_one_ulp_off_is_within_tolerance_and_far_off_is_a_mismatch() {
        let case = linear_case("w4g32-sym-ao");
        let exp = RefDevice::new().run(&case).unwrap();
        let mut near = exp.clone();
        near.values[0] = f32::from_bits(near.values[0].to_bits() + 1);
        let c = compare(&case, &exp, &near, None);
        assert_eq!(c.verdict, Verdict::WithinTolerance, "{:?}", c.note);
        assert!(c.metrics.max_ulp >= 1.0 && c.metrics.tolerance_ratio <= 1.0);

        // Past the accumulation bound: (K + 4)·u·Σ|x̂ŵ| is far below 1e-3 relative for K = 64.
        let tol = tolerances(&case, &exp).unwrap();
        let mut far = exp.clone();
        far.values[1] += (tol[1] * 1.5) as f32 + f32::EPSILON * far.values[1].abs();
        let c = compare(&case, &exp, &far, None);
        assert_eq!(c.verdict, Verdict::Mismatch);
        assert!(c.note.unwrap().contains("beyond tolerance"));
    }

    #[test]
    fn the_linear_bound_is_the_accumulation_bound() {
        let case = linear_case("w8pc-sym-ao@f16");
        let exp = RefDevice::new().run(&case).unwrap();
        let tol = tolerances(&case, &exp).unwrap();
        let sums = linear_abs_sums(&case).unwrap();
        for i in 0..tol.len() {
            let eta = 2f64.powi(-24); // the smallest fp16 subnormal
            let want = 68.0 * (2f64.powi(-11) * sums[i] + eta / 2.0) + ulp(DType::F16, exp.values[i] as f64) / 2.0;
            assert_eq!(tol[i], want);
        }
    }

    #[test]
    fn any_integer_difference_is_a_mismatch() {
        let case = linear_case("8da4w-vk");
        let exp = RefDevice::new().run(&case).unwrap();
        for name in ["acc", "act_q", "act_zp"] {
            let mut bad = exp.clone();
            bad.ints.get_mut(name).unwrap()[0] += 1;
            let c = compare(&case, &exp, &bad, None);
            assert_eq!(c.verdict, Verdict::Mismatch, "{name}");
            assert_eq!(c.metrics.int_mismatches, 1);
            let mut missing = exp.clone();
            missing.ints.remove(name);
            assert_eq!(compare(&case, &exp, &missing, None).verdict, Verdict::Mismatch);
        }
        let mut bad = exp.clone();
        let s = &mut bad.floats.get_mut("act_scales").unwrap()[0];
        *s = f32::from_bits(s.to_bits() + 1);
        let c = compare(&case, &exp, &bad, None);
        assert_eq!(c.verdict, Verdict::Mismatch);
        assert_eq!(c.metrics.side_mismatches, 1);
    }

    #[test]
    fn single_rounding_ops_allow_nothing_and_mul_add_ops_one_ulp() {
        let w = Matrix::new(2, 64, (0..128).map(|i| ((i * 29 % 97) as f32 - 48.0) / 17.0).collect()).unwrap();
        for (scheme, allowed) in
            [("w4g32-sym-ao", false), ("w4g32-mlx-gpu", true), ("q4_0", false), ("w4g32-fzp", true)]
        {
            let s: Scheme = scheme.parse().unwrap();
            let case = OpCase {
                op: Op::Dequantize,
                scheme: s,
                variant: Variant::default(),
                inject: None,
                wq: Some(s.quantize(&w).unwrap()),
                w: Some(w.clone()),
                x: None,
                ids: None,
            };
            let exp = RefDevice::new().run(&case).unwrap();
            let i = exp.values.iter().position(|v| *v != 0.0).unwrap();
            let mut one = exp.clone();
            one.values[i] = f32::from_bits(one.values[i].to_bits() + 1);
            let v = compare(&case, &exp, &one, Some(&w.data)).verdict;
            assert_eq!(v, if allowed { Verdict::WithinTolerance } else { Verdict::Mismatch }, "{scheme}");
        }
    }

    #[test]
    fn truth_metrics_measure_the_scheme() {
        let case = linear_case("w4g32-sym-ao");
        let exp = RefDevice::new().run(&case).unwrap();
        let truth = devices::reference::truth(&case).unwrap();
        let c = compare(&case, &exp, &exp, Some(&truth));
        assert!(c.metrics.nmse > 0.0 && c.metrics.nmse < 0.05, "int4 g32 costs a little: {}", c.metrics.nmse);
        assert!(c.metrics.cosine > 0.97 && c.metrics.cosine <= 1.0);
        let c = compare(&case, &exp, &Outputs { values: truth.clone(), ..exp.clone() }, Some(&truth));
        assert_eq!((c.metrics.nmse, c.metrics.max_abs_err), (0.0, 0.0));
    }

    #[test]
    fn wrong_shape_is_a_mismatch() {
        let case = linear_case("w4g32-sym-ao");
        let exp = RefDevice::new().run(&case).unwrap();
        let mut bad = exp.clone();
        bad.values.pop();
        assert_eq!(compare(&case, &exp, &bad, None).verdict, Verdict::Mismatch);
    }
}

//! The `ref` device: the exact emulation of each scheme on kernels-ref, what every other device's
//! outputs are compared against, and the fp32 truth each case is measured against.
//!
//! - `quantize`, `dequantize`, `embedding`, `act_quant` are the reference quantizer and dequantizer
//!   of the scheme (bit-exact with the frameworks' golden vectors).
//! - `linear` is the exact product rounded once to the compute dtype T: for weight-only schemes
//!   `round_T(Σ_k x_k·ŵ_k)` with `x` in T and `ŵ` the reference dequantization; for `8da4w-ao`
//!   (torchao's fake quant) `round_T(Σ_k x̂_k·ŵ_k)` with `x̂` the dequantized activations; for the
//!   integer flavours (`-xnn`, `-vk`) `round_T(Σ_g s_a·s_w[g]·acc_g)` with `acc_g` the exact integer
//!   `Σ_{k∈g} (a_k − zp_a)·q_k`. Sums are taken in f64 with `k` (or `g`) ascending; that is the
//!   value a device's result is measured from, within the accumulation bound the comparison derives.

use crate::bench::{BenchPlan, Peaks, Samples};
use crate::case::{Op, OpCase, Outputs, Variant};
use crate::device::{need, Device, DeviceError, DeviceInfo, DeviceKind, Support};
use kernels_ref::dtype::DType;
use kernels_ref::scheme::{Family, Quantized, Scheme, W8da4wFlavor};
use kernels_ref::tensor::Matrix;
use std::collections::BTreeMap;

/// The reference as a device.
#[derive(Debug)]
pub struct RefDevice {
    info: DeviceInfo,
}

impl RefDevice {
    /// The `ref` device.
    pub fn new() -> Self {
        let mut features = BTreeMap::new();
        features.insert("arithmetic".into(), serde_json::json!("exact: f64 sums in a fixed order, one rounding"));
        RefDevice {
            info: DeviceInfo {
                id: "ref".into(),
                kind: DeviceKind::Ref,
                name: "qdiff reference (kernels-ref)".into(),
                driver: format!("qdiff {}", env!("CARGO_PKG_VERSION")),
                backend: "native".into(),
                features,
            },
        }
    }
}

impl Default for RefDevice {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `op` makes sense for `scheme` at all, on any device; the reason when not. Runners start
/// their own `supports` from this.
pub fn op_applies(op: Op, scheme: &Scheme) -> Support {
    let act_only = scheme.is_activation();
    match op {
        Op::Regroup => Support::no(
            "regroup is a host-side transform of stored weights (kernels-ref `regroup`), checked exactly by its own tests; no device kernel runs it",
        ),
        Op::Quantize if act_only => {
            Support::no("activation schemes are quantized at run time, per token: use the act_quant op")
        }
        Op::Dequantize | Op::Embedding | Op::Linear if act_only => {
            Support::no("an activation scheme has no stored weights: it is checked by the act_quant op")
        }
        Op::ActQuant if scheme.activation_scheme().is_none() => {
            Support::no("a weight-only scheme does not quantize activations")
        }
        _ => Support::Supported,
    }
}

impl Device for RefDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn load_model(&mut self, model: &models::QModel) -> Result<Box<dyn crate::device::ModelSession + '_>, DeviceError> {
        Ok(Box::new(crate::reference_model::RefSession::new(model)?))
    }

    fn supports(&self, op: Op, scheme: &Scheme, _variant: &Variant) -> Support {
        op_applies(op, scheme)
    }

    /// The reference has nothing to prepare (it is the definition, dequantization included):
    /// each sample is one whole `run`, by wall clock.
    fn bench(&mut self, case: &OpCase, plan: &BenchPlan) -> Result<Samples, DeviceError> {
        self.run(case)?;
        crate::bench::sample(plan, crate::cpu::peaks::flush_caches, || {
            let (out, timing) = crate::bench::wall(|| self.run(case));
            std::hint::black_box(out?);
            Ok(timing)
        })
    }

    /// The reference runs on the host CPU: its peaks are the host's.
    fn peaks(&mut self, plan: &BenchPlan) -> Result<Peaks, DeviceError> {
        Ok(crate::cpu::peaks::measure(plan))
    }

    fn run(&mut self, case: &OpCase) -> Result<Outputs, DeviceError> {
        if let Support::Unsupported(reason) = op_applies(case.op, &case.scheme) {
            return Err(DeviceError::Unsupported {
                device: "ref".into(),
                op: case.op,
                scheme: case.scheme.to_string(),
                reason,
            });
        }
        let s = case.scheme;
        match case.op {
            Op::Quantize => {
                let w = need(case, &case.w, "w")?;
                let q = s.quantize(w)?;
                let values = s.dequantize(&q)?;
                Ok(quantized_outputs(&q, values))
            }
            Op::Dequantize => {
                let wq = need(case, &case.wq, "wq")?;
                Ok(Outputs { values: s.dequantize(wq)?, shape: wq.shape.to_vec(), ..Outputs::default() })
            }
            Op::Embedding => {
                let wq = need(case, &case.wq, "wq")?;
                let ids = need(case, &case.ids, "ids")?;
                let table = s.dequantize(wq)?;
                Ok(Outputs {
                    values: gather_rows(case, &table, wq.shape, ids)?,
                    shape: vec![ids.len(), wq.shape[1]],
                    ..Outputs::default()
                })
            }
            Op::ActQuant => {
                let x = need(case, &case.x, "x")?;
                let a = s.activation_scheme().expect("op_applies checked");
                let aq = a.quantize(x)?;
                let values = a.dequantize(&aq)?;
                let mut out = Outputs { values, shape: vec![x.rows, x.cols], ..Outputs::default() };
                out.ints.insert("q".into(), aq.q.iter().map(|&v| v as i64).collect());
                out.floats.insert("scales".into(), aq.scales.clone());
                if matches!(a.family, Family::Act { .. }) {
                    let zp = aq.zero_points.as_ref().expect("per-token schemes carry zero-points");
                    out.ints.insert("zp".into(), zp.iter().map(|&v| v as i64).collect());
                }
                Ok(out)
            }
            Op::Linear => {
                let x = need(case, &case.x, "x")?;
                let wq = need(case, &case.wq, "wq")?;
                check_linear_shapes(case, x, wq)?;
                match s.family {
                    Family::W8da4w { flavor, .. } => linear_8da4w(&s, flavor, x, wq),
                    _ => {
                        let t = s.dtype;
                        let xt: Vec<f64> = x.data.iter().map(|&v| t.round(v as f64)).collect();
                        let w: Vec<f64> = s.dequantize(wq)?.into_iter().map(f64::from).collect();
                        let values = exact_linear(t, &xt, &w, x.rows, wq.shape[0], x.cols);
                        Ok(Outputs { values, shape: vec![x.rows, wq.shape[0]], ..Outputs::default() })
                    }
                }
            }
            Op::Regroup => unreachable!("op_applies refuses regroup"),
        }
    }
}

/// The outputs of a quantize op from a reference [`Quantized`] and its dequantization.
pub fn quantized_outputs(q: &Quantized, values: Vec<f32>) -> Outputs {
    let mut out = Outputs { values, shape: q.shape.to_vec(), ..Outputs::default() };
    out.ints.insert("q".into(), q.q.iter().map(|&v| v as i64).collect());
    out.floats.insert("scales".into(), q.scales.clone());
    if let Some(zp) = &q.zero_points {
        out.floats.insert("zero_points".into(), zp.clone());
    }
    if let Some(lut) = &q.lut {
        out.floats.insert("lut".into(), lut.clone());
    }
    out
}

/// Rows `ids` of a row-major `[V, D]` table; an id past the table is a bad case.
pub fn gather_rows(case: &OpCase, table: &[f32], shape: [usize; 2], ids: &[u32]) -> Result<Vec<f32>, DeviceError> {
    let [v, d] = shape;
    let mut out = Vec::with_capacity(ids.len() * d);
    for (i, &id) in ids.iter().enumerate() {
        let id = id as usize;
        if id >= v {
            return Err(DeviceError::BadCase {
                op: case.op,
                scheme: case.scheme.to_string(),
                detail: format!("ids[{i}] = {id} is past the table's {v} rows"),
            });
        }
        out.extend_from_slice(&table[id * d..(id + 1) * d]);
    }
    Ok(out)
}

/// `x` `[M, K]` and `wq` `[N, K]` agree on K.
pub fn check_linear_shapes(case: &OpCase, x: &Matrix, wq: &Quantized) -> Result<(), DeviceError> {
    if x.cols != wq.shape[1] {
        return Err(DeviceError::BadCase {
            op: case.op,
            scheme: case.scheme.to_string(),
            detail: format!("x is [{}, {}] but the weights are [{}, {}]", x.rows, x.cols, wq.shape[0], wq.shape[1]),
        });
    }
    Ok(())
}

/// `round_T(Σ_k x[m,k]·w[n,k])` with the sum in f64, `k` ascending.
fn exact_linear(t: DType, x: &[f64], w: &[f64], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut y = Vec::with_capacity(m * n);
    for mi in 0..m {
        let xr = &x[mi * k..(mi + 1) * k];
        for ni in 0..n {
            let wr = &w[ni * k..(ni + 1) * k];
            let acc: f64 = xr.iter().zip(wr).fold(0.0, |acc, (a, b)| acc + a * b);
            y.push(t.round_f32(acc));
        }
    }
    y
}

/// The 8da4w linear: activation codes, zero-points, scales, per-group integer accumulators, and `y`.
fn linear_8da4w(s: &Scheme, flavor: W8da4wFlavor, x: &Matrix, wq: &Quantized) -> Result<Outputs, DeviceError> {
    let a = s.activation_scheme().expect("8da4w has an activation scheme");
    let aq = a.quantize(x)?;
    let (m, k, n) = (x.rows, x.cols, wq.shape[0]);
    let g = wq.groups_per_row();
    let glen = k / g;
    let zp: Vec<i64> = aq.zero_points.as_ref().expect("per-token zero-points").iter().map(|&v| v as i64).collect();
    let mut acc = vec![0i64; m * n * g];
    for mi in 0..m {
        for ni in 0..n {
            for gi in 0..g {
                let mut sum = 0i64;
                for kk in gi * glen..(gi + 1) * glen {
                    sum += (aq.q[mi * k + kk] as i64 - zp[mi]) * wq.q[ni * k + kk] as i64;
                }
                acc[(mi * n + ni) * g + gi] = sum;
            }
        }
    }
    let t = s.dtype;
    let values = match flavor {
        W8da4wFlavor::Ao => {
            let xh: Vec<f64> = a.dequantize(&aq)?.into_iter().map(f64::from).collect();
            let w: Vec<f64> = s.dequantize(wq)?.into_iter().map(f64::from).collect();
            exact_linear(t, &xh, &w, m, n, k)
        }
        W8da4wFlavor::Xnn | W8da4wFlavor::Vk => {
            let mut y = Vec::with_capacity(m * n);
            for mi in 0..m {
                let sa = aq.quantize_scales.as_ref().map_or(aq.scales[mi] as f64, |e| e[mi]);
                for ni in 0..n {
                    let mut sum = 0f64;
                    for gi in 0..g {
                        sum += sa * wq.scales[ni * g + gi] as f64 * acc[(mi * n + ni) * g + gi] as f64;
                    }
                    y.push(t.round_f32(sum));
                }
            }
            y
        }
    };
    let mut out = Outputs { values, shape: vec![m, n], ..Outputs::default() };
    out.ints.insert("act_q".into(), aq.q.iter().map(|&v| v as i64).collect());
    out.ints.insert("act_zp".into(), zp);
    out.ints.insert("acc".into(), acc);
    out.floats.insert("act_scales".into(), aq.scales.clone());
    Ok(out)
}

/// The fp32 truth of a case: what the op would give with no quantization at all (the unquantized
/// weights `w`, the unquantized activations `x`, and an exactly rounded product). `None` when the
/// case carries no truth (no `w` for a weight op).
pub fn truth(case: &OpCase) -> Option<Vec<f32>> {
    match case.op {
        Op::Quantize | Op::Dequantize => case.w.as_ref().map(|w| w.data.clone()),
        Op::Embedding => {
            let w = case.w.as_ref()?;
            let ids = case.ids.as_ref()?;
            gather_rows(case, &w.data, w.shape(), ids).ok()
        }
        Op::ActQuant => case.x.as_ref().map(|x| x.data.clone()),
        Op::Linear => {
            let (w, x) = (case.w.as_ref()?, case.x.as_ref()?);
            if w.cols != x.cols {
                return None;
            }
            let xf: Vec<f64> = x.data.iter().map(|&v| v as f64).collect();
            let wf: Vec<f64> = w.data.iter().map(|&v| v as f64).collect();
            Some(exact_linear(DType::F32, &xf, &wf, x.rows, w.rows, x.cols))
        }
        Op::Regroup => None,
    }
}

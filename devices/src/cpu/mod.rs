//! The `cpu` runner: qdiff's production-like quantized CPU kernels, deliberately not the
//! reference's arithmetic.
//!
//! Weights are packed once per case into the scheme's own storage layout and decoded inside
//! the kernels (`storage`); each framework's dequantization (`dequant`), export-time
//! quantizer (`quantize`, `ggml`) and dynamic activation quantizer (`act`) runs in its own
//! dtypes and order of operations, in fp32 with a rounding to fp16/bf16 after every operation
//! where the framework computes in half precision (`num`); the GEMMs (`linear`) accumulate
//! the way the framework does (fp32, T, or i32 per group for 8da4w). Work is split with rayon
//! over rows, groups or tiles of output channels, each output computed by one task in a fixed
//! order, so the bits never depend on the thread count. The deliberate faults a case can ask
//! for live in `faults`; the device's self-description in `info`; how work is split in `par`;
//! whole models (weights packed once, a KV cache, the f32 ops between the linears) in `model`.

mod act;
mod dequant;
mod faults;
mod ggml;
mod info;
mod linear;
mod matvec;
mod model;
mod num;
mod par;
pub mod peaks;
mod quantize;
mod storage;

use crate::bench::{BenchPlan, Peaks, Samples};
use crate::case::{Op, OpCase, Outputs, Storage, Variant};
use crate::device::{need, Device, DeviceError, DeviceInfo, ModelSession, Support};
use crate::reference::{check_linear_shapes, op_applies, quantized_outputs};
use faults::Faults;
use kernels_ref::dtype::DType;
use kernels_ref::scheme::{Family, LutMode, Scheme};
use kernels_ref::tensor::Matrix;
use linear::Accum;
use models::QModel;
use storage::PackedWeights;

/// The device id.
const DEVICE: &str = "cpu";

/// qdiff's production-like CPU kernels (see the module docs).
#[derive(Debug)]
pub struct CpuDevice {
    info: DeviceInfo,
}

impl CpuDevice {
    /// The cpu device, with the CPU model, thread count and SIMD features probed.
    pub fn new() -> Self {
        CpuDevice { info: info::probe() }
    }
}

impl Default for CpuDevice {
    fn default() -> Self {
        Self::new()
    }
}

/// A [`DeviceError::BadCase`] for `case`.
pub(crate) fn bad_case(case: &OpCase, detail: String) -> DeviceError {
    DeviceError::BadCase { op: case.op, scheme: case.scheme.to_string(), detail }
}

/// The accumulation of the weight-only linear of a scheme: MLX's CPU kernels accumulate in T,
/// everything else in fp32 (PyTorch opmath for torchao and fbgemm tensors; ggml's float path;
/// the Core ML runtime is closed source, so its CPU path is taken to be fp32 as well).
fn weight_only_accum(scheme: &Scheme) -> Accum {
    match scheme.family {
        Family::Mlx { .. } => Accum::InT,
        _ => Accum::F32,
    }
}

impl Device for CpuDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn supports(&self, op: Op, scheme: &Scheme, variant: &Variant) -> Support {
        let applies = op_applies(op, scheme);
        if !applies.is_supported() {
            return applies;
        }
        if variant.storage == Storage::Texture {
            return Support::no(
                "texture storage is a GPU notion (sampled/storage images); the cpu keeps weights and qparams in host memory buffers",
            );
        }
        if !variant.texel_formats.is_empty() {
            return Support::no("texel formats describe GPU texture bindings; the cpu binds no textures");
        }
        if scheme.dtype == DType::F64 {
            return Support::no(
                "no framework computes these schemes in f64; the cpu kernels compute in f32, f16 or bf16",
            );
        }
        if let (Op::Quantize, Family::Pal { mode: LutMode::Kmeans, .. }) = (op, scheme.family) {
            return Support::no(
                "the LUT is built offline by the framework's k-means (sklearn k-means++ or kmeans1d, not reproducible across versions); a device only looks it up (dequantize, linear and embedding take the LUT as given)",
            );
        }
        Support::Supported
    }

    /// Packs every quantized weight once into its scheme's storage (see `model`); a scheme the
    /// cpu linear does not run is [`DeviceError::Unsupported`] with the reason.
    fn load_model(&mut self, model: &QModel) -> Result<Box<dyn ModelSession + '_>, DeviceError> {
        let session = model::CpuSession::new(model, |op, scheme| self.supports(op, scheme, &Variant::default()))?;
        Ok(Box::new(session))
    }

    fn run(&mut self, case: &OpCase) -> Result<Outputs, DeviceError> {
        let prepared = self.prepare(case)?;
        let faults = Faults::for_case(case);
        let (out, timing) = crate::bench::wall(|| execute(case, &prepared, &faults));
        let mut out = out?;
        out.timing = Some(timing);
        Ok(out)
    }

    /// Packs the weights once; each sample runs the kernel alone (wall clock: a CPU has no
    /// device timer), faults included as `run` applies them.
    fn bench(&mut self, case: &OpCase, plan: &BenchPlan) -> Result<Samples, DeviceError> {
        let prepared = self.prepare(case)?;
        let faults = Faults::for_case(case);
        execute(case, &prepared, &faults)?;
        let mut scratch = Vec::new();
        crate::bench::sample(plan, peaks::flush_caches, || {
            let (out, timing) = crate::bench::wall(|| kernel(case, &prepared, &faults, &mut scratch));
            out?;
            Ok(timing)
        })
    }

    fn peaks(&mut self, plan: &BenchPlan) -> Result<Peaks, DeviceError> {
        Ok(peaks::measure(plan))
    }
}

/// Bytes the quantized weights of `case` (`wq`) occupy in their scheme's storage (packed codes,
/// qparams in their storage dtypes; see the `storage` module): what reading them all moves.
///
/// # Errors
/// The case has no `wq`, or its weights do not pack (shapes, codes out of range).
pub fn stored_weight_bytes(case: &OpCase) -> Result<u64, DeviceError> {
    Ok(PackedWeights::new(case, need(case, &case.wq, "wq")?)?.stored_bytes())
}

/// A case with its weights packed, ready to run any number of times.
enum Prepared<'c> {
    /// Quantize: the whole op (quantize, pack, dequantize) is the kernel.
    Quantize(&'c Matrix),
    /// Dequantize the packed weights.
    Dequantize(PackedWeights),
    /// Gather rows of the packed table.
    Embedding(PackedWeights, &'c [u32]),
    /// Quantize activations per token.
    ActQuant(Scheme, &'c Matrix),
    /// The linear on packed weights.
    Linear(PackedWeights, &'c Matrix),
}

impl CpuDevice {
    /// Checks `case` (support, inputs, shapes) and packs its weights.
    fn prepare<'c>(&self, case: &'c OpCase) -> Result<Prepared<'c>, DeviceError> {
        if let Support::Unsupported(reason) = self.supports(case.op, &case.scheme, &case.variant) {
            return Err(DeviceError::Unsupported {
                device: DEVICE.into(),
                op: case.op,
                scheme: case.scheme.to_string(),
                reason,
            });
        }
        Ok(match case.op {
            Op::Quantize => Prepared::Quantize(need(case, &case.w, "w")?),
            Op::Dequantize => Prepared::Dequantize(PackedWeights::new(case, need(case, &case.wq, "wq")?)?),
            Op::Embedding => Prepared::Embedding(
                PackedWeights::new(case, need(case, &case.wq, "wq")?)?,
                need(case, &case.ids, "ids")?,
            ),
            Op::ActQuant => {
                let x = need(case, &case.x, "x")?;
                let scheme = case
                    .scheme
                    .activation_scheme()
                    .ok_or_else(|| bad_case(case, "a weight-only scheme has no activation quantizer".into()))?;
                Prepared::ActQuant(scheme, x)
            }
            Op::Linear => {
                let x = need(case, &case.x, "x")?;
                let wq = need(case, &case.wq, "wq")?;
                check_linear_shapes(case, x, wq)?;
                if x.data.len() != x.rows * x.cols {
                    return Err(bad_case(
                        case,
                        format!("x is [{}, {}] but holds {} values", x.rows, x.cols, x.data.len()),
                    ));
                }
                Prepared::Linear(PackedWeights::new(case, wq)?, x)
            }
            Op::Regroup => {
                return Err(DeviceError::Unsupported {
                    device: DEVICE.into(),
                    op: case.op,
                    scheme: case.scheme.to_string(),
                    reason: "regroup is a host-side transform".into(),
                })
            }
        })
    }
}

/// Runs the kernel of a prepared case once, for timing: what a framework's kernel computes, not
/// the extra outputs `run` returns for checking. `dequantize` writes into `out`, kept between
/// samples. The activation quantizer stops at its codes and
/// qparams (no dequantized copy, no widening to i64), and the 8da4w linear keeps no per-group
/// accumulators (the model path: the same `y` bits). Faulted cases run the whole op.
fn kernel(case: &OpCase, prepared: &Prepared<'_>, faults: &Faults, out: &mut Vec<f32>) -> Result<(), DeviceError> {
    match prepared {
        Prepared::Dequantize(packed) => {
            // The output buffer is kept between samples, as a framework's preallocated tensor.
            out.resize(packed.rows * packed.cols, 0.0);
            dequant::dequantize_into(packed, faults, out);
            std::hint::black_box(&out);
        }
        Prepared::ActQuant(scheme, x) => {
            std::hint::black_box(act::quantize(scheme, x, faults.zp).map_err(|e| bad_case(case, e))?);
        }
        Prepared::Linear(packed, x) if *faults == Faults::NONE => match case.scheme.family {
            Family::W8da4w { flavor, .. } => {
                let act = case
                    .scheme
                    .activation_scheme()
                    .ok_or_else(|| bad_case(case, "8da4w without an activation scheme".into()))?;
                let y = linear::linear_8da4w_values(packed, x, flavor, &act).map_err(|e| bad_case(case, e))?;
                std::hint::black_box(y);
            }
            _ => {
                std::hint::black_box(execute(case, prepared, faults)?);
            }
        },
        _ => {
            std::hint::black_box(execute(case, prepared, faults)?);
        }
    }
    Ok(())
}

/// Runs a prepared case once.
fn execute(case: &OpCase, prepared: &Prepared<'_>, faults: &Faults) -> Result<Outputs, DeviceError> {
    Ok(match prepared {
        Prepared::Quantize(w) => {
            let q = quantize::quantize(case, w)?;
            // The dequantized tensor goes through the same packed path a checkpoint would.
            let packed = PackedWeights::new(case, &q)?;
            quantized_outputs(&q, dequant::dequantize(&packed, &Faults::NONE))
        }
        Prepared::Dequantize(packed) => {
            let values = dequant::dequantize(packed, faults);
            Outputs { values, shape: vec![packed.rows, packed.cols], ..Outputs::default() }
        }
        Prepared::Embedding(packed, ids) => {
            let values = dequant::embedding(case, packed, ids, faults)?;
            Outputs { values, shape: vec![ids.len(), packed.cols], ..Outputs::default() }
        }
        Prepared::ActQuant(scheme, x) => {
            let tok = act::quantize(scheme, x, faults.zp).map_err(|e| bad_case(case, e))?;
            let mut out = Outputs { values: tok.dequantize(), shape: vec![x.rows, x.cols], ..Outputs::default() };
            out.ints.insert("q".into(), tok.q.iter().map(|&v| v as i64).collect());
            if let Some(zp) = &tok.zp {
                out.ints.insert("zp".into(), zp.iter().map(|&v| v as i64).collect());
            }
            out.floats.insert("scales".into(), tok.scales);
            out
        }
        Prepared::Linear(packed, x) => match case.scheme.family {
            Family::W8da4w { flavor, .. } => linear::linear_8da4w(case, packed, x, flavor, faults)?,
            _ => {
                let values = linear::linear(packed, x, weight_only_accum(&case.scheme), faults);
                Outputs { values, shape: vec![x.rows, packed.rows], ..Outputs::default() }
            }
        },
    })
}

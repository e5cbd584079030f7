//! Benchmarks: each device × kernel × scheme at its shape, timed by the device's own bench path
//! (weights packed or uploaded once, the kernel alone timed), with the device's measured peaks
//! from the same run, so every figure is also a fraction of what the machine can do.
//!
//! Kernels and shapes:
//! - `dequantize` `[N, K]` = `[4096, 4096]`: the whole tensor to the compute dtype.
//! - `linear` decode `[1, N, K]`: K = 4096 and N chosen so that the stored weights are at least
//!   twice the host's last-level cache and 64 MiB (a GPU's L2 is at most 50 MB today): the
//!   weights stream from DRAM every call, as in LLM decoding.
//! - `linear` prefill `[128, 2048, 2048]` (a 1B-class model's projection; software Vulkan
//!   drivers take seconds per run already).
//! - `act_quant` `[128, 4096]`, for schemes with an activation quantizer (8da4w, `a8-*`).
//! - `embedding` `[256 ids, 32768 rows, 1024]`.
//! - `model_prefill` / `model_decode` with `--model`: a 128-token prompt, and one-token steps.
//!
//! Inputs are seeded and deterministic; weight tensors are quantized by the reference on a block
//! of rows and the block repeated to the full height (the kernels' speed does not depend on the
//! values, and quantizing 10^8 weights would take longer than measuring them).

use anyhow::{anyhow, bail};
use devices::case::{Op, OpCase, Variant};
use devices::{BenchPlan, Device, DeviceError, Samples, TimingMethod};
use kernels_ref::dtype::DType;
use kernels_ref::scheme::{Quantized, Scheme};
use kernels_ref::tensor::Matrix;
use models::{Model, QModel, QTensor, QuantPlan};
use reports::{BenchResult, DevicePeaks};
use std::sync::Arc;
use std::time::Instant;

/// A benchmarked kernel (the `--kernel` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kernel {
    /// Dequantize a whole tensor.
    Dequantize,
    /// The linear at a decode shape (M = 1).
    LinearDecode,
    /// The linear at a prefill shape (M = 128).
    LinearPrefill,
    /// Dynamic per-token activation quantization.
    ActQuant,
    /// Embedding lookup.
    Embedding,
    /// A model's batched prefill (needs `--model`).
    ModelPrefill,
    /// A model's one-token decode step (needs `--model`).
    ModelDecode,
}

impl Kernel {
    /// Every kernel, in table order.
    pub const ALL: [Kernel; 7] = [
        Kernel::Dequantize,
        Kernel::LinearDecode,
        Kernel::LinearPrefill,
        Kernel::ActQuant,
        Kernel::Embedding,
        Kernel::ModelPrefill,
        Kernel::ModelDecode,
    ];

    /// The `--kernel` name.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Dequantize => "dequantize",
            Kernel::LinearDecode => "linear-decode",
            Kernel::LinearPrefill => "linear-prefill",
            Kernel::ActQuant => "act_quant",
            Kernel::Embedding => "embedding",
            Kernel::ModelPrefill => "model-prefill",
            Kernel::ModelDecode => "model-decode",
        }
    }

    /// The `kernel` field of a result (cli.md: the op name; the shape tells decode from prefill).
    pub fn result_name(self) -> &'static str {
        match self {
            Kernel::Dequantize => "dequantize",
            Kernel::LinearDecode | Kernel::LinearPrefill => "linear",
            Kernel::ActQuant => "act_quant",
            Kernel::Embedding => "embedding",
            Kernel::ModelPrefill => "model_prefill",
            Kernel::ModelDecode => "model_decode",
        }
    }

    /// Whether the kernel runs a model.
    pub fn is_model(self) -> bool {
        matches!(self, Kernel::ModelPrefill | Kernel::ModelDecode)
    }
}

impl std::str::FromStr for Kernel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Kernel::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Kernel::ALL.iter().map(|k| k.name()).collect();
            format!("unknown kernel `{s}` (kernels: {})", names.join(", "))
        })
    }
}

/// The op-kernel shapes (see the module docs); `quick` shrinks them for tests and smoke runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shapes {
    /// `[N, K]` of `dequantize`.
    pub dequant: [usize; 2],
    /// K of the decode linear (N follows from the stored size wanted).
    pub decode_k: usize,
    /// Stored weight bytes the decode linear's weights must reach at least.
    pub decode_bytes: u64,
    /// `[M, N, K]` of the prefill linear.
    pub prefill: [usize; 3],
    /// `[M, K]` of `act_quant`.
    pub act: [usize; 2],
    /// `[ids, rows, D]` of `embedding`.
    pub embedding: [usize; 3],
    /// Prompt tokens of `model_prefill`.
    pub model_prompt: usize,
}

impl Shapes {
    /// The shapes of a real run: decode weights at least twice the host's last-level cache and
    /// 64 MiB.
    pub fn full() -> Shapes {
        let llc = devices::cpu::peaks::llc_bytes() as u64;
        Shapes {
            dequant: [4096, 4096],
            decode_k: 4096,
            decode_bytes: (2 * llc).max(64 << 20),
            prefill: [128, 2048, 2048],
            act: [128, 4096],
            embedding: [256, 32768, 1024],
            model_prompt: 128,
        }
    }

    /// Small shapes (seconds in all on lavapipe): for tests and smoke suites. Decode weights still
    /// exceed the host's L2 but not its last-level cache, so these figures flatter DRAM-bound
    /// kernels; the report says `quick`.
    pub fn quick() -> Shapes {
        Shapes {
            dequant: [256, 1024],
            decode_k: 1024,
            decode_bytes: 2 << 20,
            prefill: [16, 256, 1024],
            act: [16, 1024],
            embedding: [16, 1024, 256],
            model_prompt: 16,
        }
    }
}

/// What to benchmark.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    /// Weight schemes (activation-only schemes run `act_quant` alone).
    pub schemes: Vec<Scheme>,
    /// Kernels (model kernels need `model`).
    pub kernels: Vec<Kernel>,
    /// Sampling.
    pub plan: BenchPlan,
    /// Sampling of the peak kernels.
    pub peaks_plan: BenchPlan,
    /// Shapes.
    pub shapes: Shapes,
    /// Seed of the inputs.
    pub seed: u64,
}

/// A unit of work: one kernel of one scheme (the case, or the model plan), to run on each device.
#[derive(Debug)]
pub struct Job {
    /// The kernel.
    pub kernel: Kernel,
    /// The scheme as named in results.
    pub scheme: Scheme,
    /// The result shape.
    pub shape: Vec<usize>,
    /// Bytes one run moves (see `reports::BenchResult::bytes`).
    pub bytes: u64,
    /// FLOPs of one run.
    pub flops: u64,
    /// What runs.
    pub work: Work,
}

/// What a job runs.
#[derive(Debug)]
pub enum Work {
    /// An op case through `Device::bench`.
    Case(Box<OpCase>),
    /// A quantized model and the prompt it is fed.
    Model { model: Arc<QModel>, prompt: Arc<[u32]> },
}

/// Deterministic values in [-1, 1) from `seed` (a 64-bit LCG, top bits).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn matrix(rows: usize, cols: usize, seed: u64) -> Matrix {
    Matrix::new(rows, cols, values(rows * cols, seed)).expect("rows * cols values")
}

/// Rows quantized by the reference at once; taller tensors repeat this block.
const BLOCK_ROWS: usize = 256;

/// `[rows, cols]` weights quantized with `scheme`: always the quantization of a seeded block of
/// [`BLOCK_ROWS`] rows repeated to `rows`. Where every qparam is per row, that is the block's
/// quantization repeated (fast); schemes with shared qparams (per tensor, per column, shared
/// LUTs, ggml's raw extras) quantize the tall matrix itself.
pub fn weights(scheme: &Scheme, rows: usize, cols: usize, seed: u64) -> anyhow::Result<Quantized> {
    let block = BLOCK_ROWS.min(rows);
    let values = matrix(block, cols, seed);
    let q = scheme.quantize(&values).map_err(|e| anyhow!("{scheme}: {e}"))?;
    let per_row = |shape: Option<[usize; 2]>| shape.is_none_or(|s| s[0] == block);
    let repeatable = rows % block == 0
        && q.extra.is_none()
        && q.scale_shape[0] == block
        && per_row(q.zero_point_shape)
        && per_row(q.lut_shape);
    if rows == block {
        return Ok(q);
    }
    if !repeatable {
        let data: Vec<f32> = values.data.iter().copied().cycle().take(rows * cols).collect();
        let tall = Matrix::new(rows, cols, data).expect("rows * cols values");
        return scheme.quantize(&tall).map_err(|e| anyhow!("{scheme}: {e}"));
    }
    let times = rows / block;
    let rep = |v: &Vec<f32>| v.repeat(times);
    Ok(Quantized {
        shape: [rows, cols],
        q: q.q.repeat(times),
        scales: rep(&q.scales),
        scale_shape: [rows, q.scale_shape[1]],
        zero_points: q.zero_points.as_ref().map(rep),
        zero_point_shape: q.zero_point_shape.map(|s| [rows, s[1]]),
        lut: q.lut.as_ref().map(rep),
        lut_shape: q.lut_shape.map(|s| [rows, s[1]]),
        quantize_scales: q.quantize_scales.as_ref().map(|v| v.repeat(times)),
        ..q
    })
}

/// Bytes of one value of the compute dtype.
fn dtype_bytes(t: DType) -> u64 {
    match t {
        DType::F16 | DType::BF16 => 2,
        DType::F32 => 4,
        DType::F64 => 8,
    }
}

fn case(op: Op, scheme: Scheme) -> OpCase {
    OpCase { op, scheme, variant: Variant::default(), inject: None, w: None, wq: None, x: None, ids: None }
}

fn stored(c: &OpCase) -> anyhow::Result<u64> {
    devices::cpu::stored_weight_bytes(c).map_err(|e| anyhow!("{}: {e}", c.scheme))
}

/// The op jobs of `scheme` (the kernels that apply to it), built and sized.
pub fn op_jobs(scheme: &Scheme, kernels: &[Kernel], shapes: &Shapes, seed: u64) -> anyhow::Result<Vec<Job>> {
    let t = dtype_bytes(scheme.dtype);
    let mut jobs = Vec::new();
    let weight_scheme = !scheme.is_activation();
    for &kernel in kernels {
        let job = match kernel {
            Kernel::Dequantize if weight_scheme => {
                let [n, k] = shapes.dequant;
                let mut c = case(Op::Dequantize, *scheme);
                c.wq = Some(weights(scheme, n, k, seed)?);
                let bytes = stored(&c)? + (n * k) as u64 * t;
                Job { kernel, scheme: *scheme, shape: vec![n, k], bytes, flops: 0, work: Work::Case(Box::new(c)) }
            }
            Kernel::LinearDecode | Kernel::LinearPrefill if weight_scheme => {
                let (m, n, k) = if kernel == Kernel::LinearPrefill {
                    let [m, n, k] = shapes.prefill;
                    (m, n, k)
                } else {
                    // Size N from the stored bytes of a block of rows.
                    let k = shapes.decode_k;
                    let mut probe = case(Op::Dequantize, *scheme);
                    probe.wq = Some(weights(scheme, BLOCK_ROWS, k, seed)?);
                    let per_row = stored(&probe)?.div_ceil(BLOCK_ROWS as u64).max(1);
                    let rows = shapes.decode_bytes.div_ceil(per_row) as usize;
                    (1, rows.div_ceil(BLOCK_ROWS).max(1) * BLOCK_ROWS, k)
                };
                let mut c = case(Op::Linear, *scheme);
                c.wq = Some(weights(scheme, n, k, seed)?);
                c.x = Some(matrix(m, k, seed ^ 0x5eed));
                let bytes = stored(&c)? + ((m * k + m * n) as u64) * t;
                let flops = 2 * (m * n * k) as u64;
                Job { kernel, scheme: *scheme, shape: vec![m, n, k], bytes, flops, work: Work::Case(Box::new(c)) }
            }
            Kernel::ActQuant => {
                let Some(a) = scheme.activation_scheme() else { continue };
                let [m, k] = shapes.act;
                let mut c = case(Op::ActQuant, a);
                c.x = Some(matrix(m, k, seed ^ 0xac7));
                // In: M·K values of T; out: M·K int8 codes and a scale and a zero-point per token.
                let bytes = (m * k) as u64 * (t + 1) + (m as u64) * 8;
                Job { kernel, scheme: a, shape: vec![m, k], bytes, flops: 0, work: Work::Case(Box::new(c)) }
            }
            Kernel::Embedding if weight_scheme => {
                let [ids, rows, d] = shapes.embedding;
                let mut c = case(Op::Embedding, *scheme);
                c.wq = Some(weights(scheme, rows, d, seed)?);
                let mut s = seed | 1;
                c.ids = Some(
                    (0..ids)
                        .map(|_| {
                            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                            ((s >> 33) % rows as u64) as u32
                        })
                        .collect(),
                );
                let row_bytes = stored(&c)?.div_ceil(rows as u64);
                let bytes = ids as u64 * (row_bytes + d as u64 * t + 4);
                Job {
                    kernel,
                    scheme: *scheme,
                    shape: vec![ids, rows, d],
                    bytes,
                    flops: 0,
                    work: Work::Case(Box::new(c)),
                }
            }
            _ => continue,
        };
        jobs.push(job);
    }
    Ok(jobs)
}

/// Stored bytes and multiply-adds of one forward token through `q`'s weights: every linear and
/// the head (embedding rows are gathered, one per token: not counted).
fn model_weight_bytes(q: &QModel) -> anyhow::Result<(u64, u64)> {
    let mut bytes = 0u64;
    let mut macs = 0u64;
    let mut add = |t: &QTensor| -> anyhow::Result<()> {
        let [r, c] = t.shape();
        macs += (r * c) as u64;
        bytes += match t {
            QTensor::F32(m) => 4 * m.data.len() as u64,
            QTensor::Quant(wq) => {
                let mut c = case(Op::Dequantize, wq.scheme);
                c.wq = Some(wq.clone());
                stored(&c)?
            }
        };
        Ok(())
    };
    for l in &q.layers {
        for (_, t) in l.linears() {
            add(t)?;
        }
    }
    add(&q.head)?;
    Ok((bytes, macs))
}

/// The model jobs of `scheme` on `model`: the prompt's prefill and one-token decode steps.
pub fn model_jobs(model: &Model, scheme: &Scheme, kernels: &[Kernel], prompt: &[u32]) -> anyhow::Result<Vec<Job>> {
    let plan = QuantPlan::linear(*scheme);
    crate::modeleval::check_plan(model, &plan)?;
    let kernels: Vec<Kernel> = kernels.iter().copied().filter(|k| k.is_model()).collect();
    if kernels.is_empty() {
        return Ok(Vec::new());
    }
    // Quantized once, shared by the prefill and decode jobs.
    let q = Arc::new(QModel::quantize(model, &plan).map_err(|e| anyhow!("{scheme}: {e}"))?);
    let (bytes, macs) = model_weight_bytes(&q)?;
    let prompt: Arc<[u32]> = prompt.into();
    let mut jobs = Vec::new();
    for kernel in kernels {
        let tokens = if kernel == Kernel::ModelPrefill { prompt.len() } else { 1 };
        jobs.push(Job {
            kernel,
            scheme: *scheme,
            shape: vec![tokens, macs as usize],
            // Prefill reads the weights once for the whole prompt (batched); decode once per token.
            bytes,
            flops: 2 * macs * tokens as u64,
            work: Work::Model { model: Arc::clone(&q), prompt: Arc::clone(&prompt) },
        });
    }
    Ok(jobs)
}

/// Measures `dev`'s peaks.
pub fn peaks(dev: &mut dyn Device, plan: &BenchPlan) -> DevicePeaks {
    let id = dev.info().id.clone();
    match dev.peaks(plan) {
        Ok(p) => DevicePeaks {
            device: id,
            read_gbps: p.read_gbps,
            copy_gbps: p.copy_gbps,
            fma_gflops: p.fma_gflops,
            buffer_bytes: p.buffer_bytes,
            timing: method(p.method).into(),
            error: None,
        },
        Err(e) => DevicePeaks { device: id, timing: "system".into(), error: Some(e.to_string()), ..Default::default() },
    }
}

fn method(m: TimingMethod) -> &'static str {
    match m {
        TimingMethod::Device => "device",
        TimingMethod::System => "system",
    }
}

/// The outcome of one job on one device: a result, or why the device does not run it.
#[derive(Debug)]
pub enum Outcome {
    /// Measured (or failed: `error` set).
    Result(Box<BenchResult>),
    /// The device does not run this kernel with this scheme.
    Unsupported(String),
}

/// Runs `job` on `dev` and turns the samples into a result against `peaks`.
pub fn run_job(dev: &mut dyn Device, job: &Job, plan: &BenchPlan, peaks: &DevicePeaks) -> Outcome {
    let samples = match &job.work {
        Work::Case(c) => dev.bench(c, plan),
        Work::Model { model, prompt } => bench_model(dev, model, prompt, job.kernel, plan),
    };
    let mut r = BenchResult {
        device: dev.info().id.clone(),
        kernel: job.kernel.result_name().into(),
        scheme: job.scheme.to_string(),
        shape: job.shape.clone(),
        bytes: job.bytes,
        flops: job.flops,
        peak_gbps: peaks.peak_gbps(),
        peak_gflops: peaks.fma_gflops,
        cold: plan.cold,
        ..BenchResult::default()
    };
    match samples {
        Ok(s) => {
            fill(&mut r, &s);
            if job.kernel.is_model() {
                r.tokens_per_s = Some(job.shape[0] as f64 / r.median_s);
            }
            Outcome::Result(Box::new(r))
        }
        Err(DeviceError::Unsupported { reason, .. }) => Outcome::Unsupported(reason),
        Err(e) => {
            r.timing = "system".into();
            r.error = Some(e.to_string());
            Outcome::Result(Box::new(r))
        }
    }
}

/// The figures of `r` from its samples.
fn fill(r: &mut BenchResult, s: &Samples) {
    r.timing = method(s.method).into();
    r.samples = s.seconds.len();
    r.samples_s = s.seconds.clone();
    (r.median_s, r.min_s, r.max_s) = (s.median(), s.min(), s.max());
    let per_s = |x: u64| if r.median_s > 0.0 { x as f64 / r.median_s / 1e9 } else { 0.0 };
    r.gbps = per_s(r.bytes);
    r.gflops = per_s(r.flops);
    r.peak_fraction = if r.peak_gbps > 0.0 { r.gbps / r.peak_gbps } else { 0.0 };
    r.flops_fraction = if r.peak_gflops > 0.0 && r.flops > 0 { r.gflops / r.peak_gflops } else { 0.0 };
}

/// Model forwards, wall clock: the session is loaded once; a prefill sample empties the cache and
/// feeds the prompt; a decode sample feeds one token after the prompt (the cache is refilled,
/// untimed, when it reaches twice the prompt).
fn bench_model(
    dev: &mut dyn Device,
    model: &QModel,
    prompt: &[u32],
    kernel: Kernel,
    plan: &BenchPlan,
) -> Result<Samples, DeviceError> {
    let mut session = dev.load_model(model)?;
    let timed = |f: &mut dyn FnMut() -> Result<(), DeviceError>| {
        let t = Instant::now();
        f()?;
        Ok(devices::Timing { seconds: t.elapsed().as_secs_f64(), method: TimingMethod::System })
    };
    match kernel {
        Kernel::ModelPrefill => devices::bench::sample(
            plan,
            || {},
            || {
                session.reset();
                timed(&mut || session.forward(prompt).map(|_| ()))
            },
        ),
        _ => {
            let limit = (2 * prompt.len()).clamp(prompt.len() + 1, model.config.max_positions.max(prompt.len() + 1));
            let mut next = 0u32;
            devices::bench::sample(
                plan,
                || {},
                || {
                    if session.is_empty() || session.len() >= limit {
                        session.reset();
                        let l = session.forward(prompt)?;
                        next = models::metrics::top_k(l.row(l.rows - 1), 1).first().copied().unwrap_or(0);
                    }
                    let mut logits = None;
                    let t = timed(&mut || {
                        logits = Some(session.forward(&[next])?);
                        Ok(())
                    })?;
                    if let Some(l) = logits {
                        next = models::metrics::top_k(l.row(0), 1).first().copied().unwrap_or(0);
                    }
                    Ok(t)
                },
            )
        }
    }
}

/// The prompt of the model kernels: the default texts tokenized, `n` tokens (repeated if short).
pub fn model_prompt(model: &Model, n: usize) -> anyhow::Result<Vec<u32>> {
    let tok = model
        .tokenizer
        .as_ref()
        .ok_or_else(|| anyhow!("{}: the model has no tokenizer, so no prompt can be fed", model.source.path))?;
    let mut ids = Vec::new();
    for t in models::texts::DEFAULT {
        ids.extend(tok.encode(t.text, true).map_err(|e| anyhow!("{e}"))?);
        if ids.len() >= n {
            break;
        }
    }
    if ids.is_empty() {
        bail!("the default texts tokenize to nothing");
    }
    while ids.len() < n {
        ids.extend_from_within(..);
    }
    ids.truncate(n);
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-row qparams depend on their row alone, so quantizing a block and repeating it is
    /// quantizing the repeated matrix; schemes with shared qparams are quantized whole.
    #[test]
    fn repeated_blocks_are_what_quantizing_the_tall_matrix_gives() {
        let (rows, cols) = (3 * BLOCK_ROWS, 64);
        let block = matrix(BLOCK_ROWS, cols, 9);
        let tall = Matrix::new(rows, cols, block.data.repeat(3)).unwrap();
        for name in
            ["q4_0", "q4_K", "w4g32-sym-ao", "w4g32-asym-ao", "w4g32-mlx-cpu", "8da4w-ao", "w8pt-sym-ao", "pal4-pt"]
        {
            let s: Scheme = name.parse().unwrap();
            let Ok(want) = s.quantize(&tall) else { continue };
            let got = weights(&s, rows, cols, 9).unwrap();
            assert_eq!(got, want, "{name}");
        }
    }

    /// Every kernel applies to the schemes it should; decode weights reach the stored size asked.
    #[test]
    fn jobs_cover_the_kernels_and_size_the_decode_weights() {
        let shapes = Shapes::quick();
        let jobs = op_jobs(&"q4_0".parse().unwrap(), &Kernel::ALL, &shapes, 1).unwrap();
        let kinds: Vec<Kernel> = jobs.iter().map(|j| j.kernel).collect();
        assert_eq!(kinds, [Kernel::Dequantize, Kernel::LinearDecode, Kernel::LinearPrefill, Kernel::Embedding]);
        let dec = &jobs[1];
        let (n, k) = (dec.shape[1] as u64, dec.shape[2] as u64);
        assert!(n * k / 32 * 18 >= shapes.decode_bytes && (n - BLOCK_ROWS as u64) * k / 32 * 18 < shapes.decode_bytes);
        let act = op_jobs(&"a8-pt-asym-xnn".parse().unwrap(), &Kernel::ALL, &shapes, 1).unwrap();
        assert_eq!(act.iter().map(|j| j.kernel).collect::<Vec<_>>(), [Kernel::ActQuant]);
    }

    /// The model kernels on the built-in synthetic model: a batched prefill of the prompt and
    /// one-token decode steps, with tokens per second from the median.
    #[test]
    fn model_kernels_time_prefill_and_decode() {
        let model = models::synthetic::load().unwrap();
        let prompt = model_prompt(&model, 12).unwrap();
        assert_eq!(prompt.len(), 12);
        let scheme: Scheme = "w8g32-sym-ao".parse().unwrap();
        let jobs = model_jobs(&model, &scheme, &[Kernel::ModelPrefill, Kernel::ModelDecode], &prompt).unwrap();
        let mut dev = devices::open("cpu").unwrap();
        let plan =
            BenchPlan { warmup: 1, min_samples: 3, max_samples: 3, budget: std::time::Duration::ZERO, cold: false };
        let peaks = DevicePeaks { device: "cpu".into(), read_gbps: 10.0, copy_gbps: 5.0, ..Default::default() };
        for job in &jobs {
            let Outcome::Result(r) = run_job(dev.as_mut(), job, &plan, &peaks) else { panic!("unsupported") };
            assert!(r.error.is_none(), "{r:?}");
            assert_eq!(r.samples, 3);
            let tokens = if job.kernel == Kernel::ModelPrefill { 12.0 } else { 1.0 };
            assert_eq!(r.shape[0] as f64, tokens);
            assert!((r.tokens_per_s.unwrap() - tokens / r.median_s).abs() < 1e-9 * r.tokens_per_s.unwrap());
            assert_eq!(r.peak_gbps, 10.0);
            let c = &model.config;
            let (d, q, kv, f) = (c.hidden_size, c.q_width(), c.kv_width(), c.intermediate_size);
            let per_layer = 2 * q * d + 2 * kv * d + 3 * f * d;
            assert_eq!(r.shape[1], c.n_layers * per_layer + c.vocab_size * d, "linears and the head");
        }
    }
}

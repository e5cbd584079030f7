//! `qdiff bench [--device ID]... [--scheme NAME]... [--kernel K]... [--model PATH] [--time SECS]
//! [--samples N] [--cold] [--quick] [--baseline RESULTS.json] [--out DIR]`: each device's peaks,
//! then every kernel of every scheme on every device (see `crate::bench`); a table on stdout and
//! `bench_results` with `device_peaks` in `DIR/results.json`. Exit 1 when a benchmark or a peak
//! measurement failed, or a benchmark regressed against the baseline.

use crate::bench::{self, BenchSpec, Job, Kernel, Outcome, Shapes};
use crate::meta;
use crate::Exit;
use anyhow::{anyhow, Context};
use clap::Args;
use devices::BenchPlan;
use kernels_ref::scheme::Scheme;
use reports::{BenchResult, DevicePeaks, Results};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Schemes benchmarked when none is given: ggml's Q4_0 and Q4_1, torchao int4 and int8 in groups
/// of 32, and torchao's 8da4w (int8 activations × int4 weights).
pub const DEFAULT_SCHEMES: [&str; 5] = ["q4_0", "q4_1", "w4g32-sym-ao", "w8g32-sym-ao", "8da4w-ao"];

/// Arguments of `qdiff bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Devices (repeatable; default: cpu and every GPU adapter).
    #[arg(long)]
    pub device: Vec<String>,
    /// Schemes (repeatable; default q4_0, q4_1, w4g32-sym-ao, w8g32-sym-ao, 8da4w-ao).
    #[arg(long)]
    pub scheme: Vec<String>,
    /// Kernels (repeatable): dequantize, linear-decode, linear-prefill, act_quant, embedding,
    /// model-prefill, model-decode (default: every op kernel, and the model kernels with --model).
    #[arg(long)]
    pub kernel: Vec<String>,
    /// A model (GGUF file or safetensors folder) for the model kernels, quantized with each scheme.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Time budget per benchmark in seconds (sampling goes on until it is spent and the minimum
    /// number of samples is taken).
    #[arg(long, default_value_t = 1.0)]
    pub time: f64,
    /// Most samples per benchmark.
    #[arg(long, default_value_t = 100)]
    pub samples: usize,
    /// Fewest samples per benchmark.
    #[arg(long, default_value_t = 5)]
    pub min_samples: usize,
    /// Untimed runs before sampling.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Flush the device's caches before every sample.
    #[arg(long)]
    pub cold: bool,
    /// Small shapes (a smoke run; decode weights then fit in the last-level cache).
    #[arg(long)]
    pub quick: bool,
    /// Seed of the inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A previous run's results.json: every benchmark is compared with the baseline's (same
    /// device, kernel, scheme, shape); one slower beyond its noise band is a regression, listed
    /// in results.json and on stdout, and the exit code is 1.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Relative slowdown beyond the noise band that counts as a regression (with --baseline).
    #[arg(long, default_value_t = 0.10)]
    pub slowdown: f64,
    /// Output folder (results.json).
    #[arg(long, default_value = "qdiff-out")]
    pub out: PathBuf,
}

/// The spec of a command line.
pub fn spec(args: &BenchArgs) -> anyhow::Result<BenchSpec> {
    if !(args.time.is_finite() && args.time >= 0.0) {
        anyhow::bail!("--time {}: must be a number of seconds >= 0", args.time);
    }
    if args.samples == 0 || args.min_samples > args.samples {
        anyhow::bail!("--samples {} / --min-samples {}: need 1 <= min <= max", args.samples, args.min_samples);
    }
    let names: Vec<String> = if args.scheme.is_empty() {
        DEFAULT_SCHEMES.iter().map(|s| s.to_string()).collect()
    } else {
        args.scheme.clone()
    };
    let schemes = names
        .iter()
        .map(|n| n.parse::<Scheme>().map_err(|e| anyhow!("--scheme {n}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut kernels = if args.kernel.is_empty() {
        Kernel::ALL.iter().copied().filter(|k| !k.is_model() || args.model.is_some()).collect()
    } else {
        args.kernel
            .iter()
            .map(|k| k.parse::<Kernel>().map_err(|e| anyhow!("--kernel: {e}")))
            .collect::<Result<Vec<_>, _>>()?
    };
    kernels.sort();
    kernels.dedup();
    if kernels.iter().any(|k| k.is_model()) && args.model.is_none() {
        anyhow::bail!("--kernel model-prefill / model-decode need --model PATH");
    }
    let plan = BenchPlan {
        warmup: args.warmup,
        min_samples: args.min_samples,
        max_samples: args.samples,
        budget: Duration::from_secs_f64(args.time),
        cold: args.cold,
    };
    let peaks_plan =
        BenchPlan { warmup: 1, min_samples: 3, max_samples: 20, budget: Duration::from_millis(600), cold: false };
    Ok(BenchSpec {
        schemes,
        kernels,
        plan,
        peaks_plan,
        shapes: if args.quick { Shapes::quick() } else { Shapes::full() },
        seed: args.seed,
    })
}

/// What one bench run produced.
#[derive(Debug)]
pub struct BenchRun {
    /// Peaks per device.
    pub peaks: Vec<DevicePeaks>,
    /// Results.
    pub results: Vec<BenchResult>,
    /// `(device, kernel, scheme, reason)` of what a device does not run.
    pub unsupported: Vec<(String, String, String, String)>,
}

/// Runs `spec` on `devs` (the model kernels on `model` when given), reporting progress on stderr.
pub fn execute(
    spec: &BenchSpec,
    devs: &mut [Box<dyn devices::Device>],
    model: Option<&models::Model>,
) -> anyhow::Result<BenchRun> {
    let mut run = BenchRun { peaks: Vec::new(), results: Vec::new(), unsupported: Vec::new() };
    for dev in devs.iter_mut() {
        let p = bench::peaks(dev.as_mut(), &spec.peaks_plan);
        match &p.error {
            None => eprintln!(
                "bench: {} peaks: read {:.1} GB/s, copy {:.1} GB/s, FMA {:.0} GFLOP/s ({} timing, {} MiB buffer)",
                p.device,
                p.read_gbps,
                p.copy_gbps,
                p.fma_gflops,
                p.timing,
                p.buffer_bytes >> 20
            ),
            Some(e) => eprintln!("bench: {} peaks failed: {e}", p.device),
        }
        run.peaks.push(p);
    }
    let prompt = match model {
        Some(m) => bench::model_prompt(m, spec.shapes.model_prompt)?,
        None => Vec::new(),
    };
    for scheme in &spec.schemes {
        // Jobs are built once per scheme and run on every device, then dropped (tall weights).
        let mut jobs: Vec<Job> = bench::op_jobs(scheme, &spec.kernels, &spec.shapes, spec.seed)?;
        if let Some(m) = model {
            if !scheme.is_activation() {
                jobs.extend(bench::model_jobs(m, scheme, &spec.kernels, &prompt)?);
            }
        }
        for job in &jobs {
            for (dev, peaks) in devs.iter_mut().zip(&run.peaks) {
                let id = dev.info().id.clone();
                match bench::run_job(dev.as_mut(), job, &spec.plan, peaks) {
                    Outcome::Result(r) => {
                        eprintln!("bench: {}", row(&r));
                        run.results.push(*r);
                    }
                    Outcome::Unsupported(reason) => {
                        run.unsupported.push((id, job.kernel.name().into(), job.scheme.to_string(), reason))
                    }
                }
            }
        }
    }
    Ok(run)
}

/// Human-readable size of a shape.
fn shape_text(s: &[usize]) -> String {
    s.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("x")
}

fn secs(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} us", s * 1e6)
    }
}

/// One line of the table for `r`.
pub fn row(r: &BenchResult) -> String {
    let label = match (r.kernel.as_str(), r.shape.first()) {
        ("linear", Some(1)) => "linear (decode)".to_string(),
        ("linear", _) => "linear (prefill)".to_string(),
        (k, _) => k.to_string(),
    };
    if let Some(e) = &r.error {
        return format!("{:<10} {:<17} {:<16} {:<18} ERROR: {e}", r.device, label, r.scheme, shape_text(&r.shape));
    }
    let tok = r.tokens_per_s.map(|t| format!("  {t:.1} tok/s")).unwrap_or_default();
    let gf = if r.flops > 0 { format!("{:>8.1}", r.gflops) } else { format!("{:>8}", "-") };
    format!(
        "{:<10} {:<17} {:<16} {:<18} {:<6} {:>4} {:>10} [{} .. {}] {:>8.2} {:>6.1}% {}{}",
        r.device,
        label,
        r.scheme,
        shape_text(&r.shape),
        r.timing,
        r.samples,
        secs(r.median_s),
        secs(r.min_s),
        secs(r.max_s),
        r.gbps,
        100.0 * r.peak_fraction,
        gf,
        tok
    )
}

/// The whole table: peaks, then one row per result, then what was not supported.
pub fn table(run: &BenchRun) -> String {
    let mut s = String::new();
    s.push_str("device peaks (measured in this run)\n");
    for p in &run.peaks {
        match &p.error {
            None => s.push_str(&format!(
                "  {:<10} read {:>7.1} GB/s  copy {:>7.1} GB/s  FMA {:>8.1} GFLOP/s  ({} timing)\n",
                p.device, p.read_gbps, p.copy_gbps, p.fma_gflops, p.timing
            )),
            Some(e) => s.push_str(&format!("  {:<10} ERROR: {e}\n", p.device)),
        }
    }
    s.push_str(&format!(
        "\n{:<10} {:<17} {:<16} {:<18} {:<6} {:>4} {:>10} {:<21} {:>8} {:>7} {:>8}\n",
        "device", "kernel", "scheme", "shape", "timing", "n", "median", "[min .. max]", "GB/s", "%peak", "GFLOP/s"
    ));
    for r in &run.results {
        s.push_str(&row(r));
        s.push('\n');
    }
    if !run.unsupported.is_empty() {
        s.push_str("\nnot supported:\n");
        for (d, k, sch, why) in &run.unsupported {
            s.push_str(&format!("  {d} {k} {sch}: {why}\n"));
        }
    }
    s
}

/// Run it.
pub fn run(args: &BenchArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let started_at = meta::now_rfc3339();
    let spec = spec(args)?;
    if !(args.slowdown.is_finite() && args.slowdown >= 0.0) {
        anyhow::bail!("--slowdown {}: must be a fraction >= 0", args.slowdown);
    }
    // Read before anything runs: a bad baseline is exit 2 with nothing written.
    let baseline = match &args.baseline {
        Some(p) => Some(Results::read(p).map_err(|e| anyhow!("--baseline: {e}"))?),
        None => None,
    };
    let ids = if args.device.is_empty() { meta::default_devices() } else { args.device.clone() };
    let mut devs = Vec::new();
    for id in &ids {
        devs.push(devices::open(id).map_err(|e| anyhow!("{e}"))?);
    }
    let model = match &args.model {
        Some(p) => Some(crate::modeleval::load_model(Some(p))?),
        None => None,
    };
    let bench_run = execute(&spec, &mut devs, model.as_ref())?;
    let failed =
        bench_run.results.iter().any(|r| r.error.is_some()) || bench_run.peaks.iter().any(|p| p.error.is_some());
    let mut res = Results {
        bench_results: bench_run.results.clone(),
        device_peaks: bench_run.peaks.clone(),
        ..Results::new(
            meta::run_info(started_at, args.seed, None),
            devs.iter().map(|d| meta::device_entry(d.info())).collect(),
        )
    };
    if let Some(b) = &baseline {
        let th = reports::Thresholds { slowdown: args.slowdown, ..Default::default() };
        res.regressions = reports::regressions(&res, b, &th);
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    res.write(&args.out.join("results.json"))?;
    write!(out, "{}", table(&bench_run))?;
    if baseline.is_some() {
        writeln!(out, "\nregressions against the baseline: {}", res.regressions.len())?;
        for r in &res.regressions {
            writeln!(out, "  {}: {} -> {}", r.what, r.baseline, r.now)?;
        }
    }
    writeln!(out, "wrote {}", args.out.join("results.json").display())?;
    Ok(if failed || !res.regressions.is_empty() { Exit::FellShort } else { Exit::Clean })
}

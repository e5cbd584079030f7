//! `qdiff check`: seeded op cases for every (op, scheme, device) chosen, run on each device,
//! compared with the exact emulation (the `ref` device) and the fp32 truth, written to
//! `results.json`, summarised on stdout; exit 1 on any mismatch, error or crash.

use crate::casefile::CaseFile;
use crate::cases::{case_shape, make_case, stable_hash};
use crate::exec::{expect, judge, Executor, InProcess};
use crate::{meta, Exit};
use anyhow::{anyhow, bail, Context};
use devices::case::{Fault, Op, OpCase, Storage, Variant};
use devices::reference::RefDevice;
use devices::{Device, Support};
use kernels_ref::scheme::name::families;
use kernels_ref::scheme::Scheme;
use reports::{DeviceEntry, OpResult, Results, RunInfo, Summary, Verdict};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `qdiff check`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckCli {
    /// Device id (ref, cpu, vulkan, vulkan:N, metal, metal:N); repeatable. Default: cpu and every GPU.
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// Scheme name; repeatable. Default: every example of every catalogue family.
    #[arg(long = "scheme")]
    pub schemes: Vec<String>,
    /// Op (quantize, dequantize, linear, embedding, act_quant, regroup); repeatable. Default: all.
    #[arg(long = "op")]
    pub ops: Vec<String>,
    /// Cases per (op, scheme, storage variant).
    #[arg(long, default_value_t = 5)]
    pub cases: usize,
    /// Run seed: the same seed gives the same cases on any machine.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder for results.json and cases/.
    #[arg(long, default_value = "qdiff-out")]
    pub out: PathBuf,
    /// Inject a deliberate fault into every device but ref: zp-bind-int8, zp-bind-f16,
    /// nibble-swap, scale-transpose, drop-last-group, crash, hang.
    #[arg(long)]
    pub inject: Option<String>,
    /// Where weights and qparams live on the device; repeatable (default buffer).
    #[arg(long, value_enum)]
    pub storage: Vec<crate::cli::StorageArg>,
    /// Workgroup size of GPU kernels (default: the runner's).
    #[arg(long)]
    pub workgroup_size: Option<u32>,
}

impl CheckArgs {
    /// From the parsed command line.
    pub fn from_cli(c: CheckCli) -> Self {
        CheckArgs {
            devices: c.devices,
            schemes: c.schemes,
            ops: c.ops,
            cases: c.cases,
            seed: c.seed,
            out: c.out,
            inject: c.inject,
            storage: c
                .storage
                .into_iter()
                .map(|s| match s {
                    crate::cli::StorageArg::Buffer => Storage::Buffer,
                    crate::cli::StorageArg::Texture => Storage::Texture,
                })
                .collect(),
            workgroup_size: c.workgroup_size,
            command: std::env::args().collect::<Vec<_>>().join(" "),
        }
    }
}

/// What `qdiff check` was asked to do.
#[derive(Debug, Clone)]
pub struct CheckArgs {
    /// Device ids; empty means `cpu` and every GPU adapter found.
    pub devices: Vec<String>,
    /// Scheme names; empty means every example of every catalogue family.
    pub schemes: Vec<String>,
    /// Op names; empty means every op.
    pub ops: Vec<String>,
    /// Cases per (op, scheme, variant).
    pub cases: usize,
    /// The run seed.
    pub seed: u64,
    /// Output folder.
    pub out: PathBuf,
    /// A fault to inject on every device but `ref`.
    pub inject: Option<String>,
    /// Storage variants to run (default: buffer).
    pub storage: Vec<Storage>,
    /// Workgroup size for GPU kernels.
    pub workgroup_size: Option<u32>,
    /// The command line, for provenance.
    pub command: String,
}

/// The default scheme list: every example the catalogue gives for every family (each family at
/// least once, with the `@f16` / `@bf16` and zero-point variants the examples carry).
pub fn default_schemes() -> Vec<String> {
    let mut seen = Vec::new();
    for f in families() {
        for e in f.examples {
            if !seen.iter().any(|s: &String| s == e) {
                seen.push(e.to_string());
            }
        }
    }
    seen
}

/// Every device id this machine has, but `ref` (what everything is compared with).
fn default_devices() -> Vec<String> {
    devices::list().devices.into_iter().filter(|d| d.id != "ref").map(|d| d.id).collect()
}

/// Per-device counters for the summary.
#[derive(Debug, Default)]
struct DeviceTally {
    summary: Summary,
    ran: u64,
    busy: Duration,
}

/// Run `qdiff check`.
pub fn run(args: &CheckArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    // Everything that can be refused is refused before anything runs or is written.
    let scheme_names = if args.schemes.is_empty() { default_schemes() } else { args.schemes.clone() };
    let schemes: Vec<Scheme> = scheme_names
        .iter()
        .map(|n| n.parse::<Scheme>().map_err(|e| anyhow!("--scheme {n}: {e}")))
        .collect::<anyhow::Result<_>>()?;
    let ops: Vec<Op> = if args.ops.is_empty() {
        Op::ALL.to_vec()
    } else {
        args.ops
            .iter()
            .map(|o| {
                Op::parse(o).ok_or_else(|| {
                    anyhow!(
                        "--op {o}: unknown op (ops: {})",
                        Op::ALL.iter().map(|o| o.name()).collect::<Vec<_>>().join(", ")
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let inject = match &args.inject {
        None => None,
        Some(name) => Some(Fault::parse(name).ok_or_else(|| {
            anyhow!(
                "--inject {name}: unknown fault (faults: {})",
                Fault::ALL.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
            )
        })?),
    };
    if args.cases == 0 {
        bail!("--cases 0: at least one case per (op, scheme) is needed");
    }
    let device_ids = if args.devices.is_empty() { default_devices() } else { args.devices.clone() };
    let mut devs: Vec<Box<dyn Executor>> = Vec::new();
    for id in &device_ids {
        devs.push(Box::new(InProcess::open(id).map_err(|e| anyhow!("--device {id}: {e}"))?));
    }
    let storages = if args.storage.is_empty() { vec![Storage::Buffer] } else { args.storage.clone() };
    let variants: Vec<Variant> = storages
        .iter()
        .map(|&storage| Variant { storage, workgroup_size: args.workgroup_size, ..Variant::default() })
        .collect();

    let reference = RefDevice::new();
    let started_at = meta::now_rfc3339();
    let total = (schemes.len() * ops.len() * variants.len() * args.cases) as u64;
    let progress = progress_bar(total);
    let mut op_results: Vec<OpResult> = Vec::new();
    let mut tallies: BTreeMap<String, DeviceTally> = BTreeMap::new();
    let mut failures: Vec<(OpResult, OpCase)> = Vec::new();

    for scheme in &schemes {
        for &op in &ops {
            for variant in &variants {
                let mut refused: BTreeMap<String, String> = BTreeMap::new();
                for index in 0..args.cases {
                    progress.inc(1);
                    let key = format!("{}/{op}/{scheme}/{}/{index}", args.seed, variant.label());
                    let seed = stable_hash(&key);
                    let case_id = format!("{op}/{scheme}/{}/{seed:016x}", variant.label());
                    let result_for = |device: &str, verdict: Verdict, shape: Vec<usize>| OpResult {
                        case_id: case_id.clone(),
                        op: op.name().into(),
                        scheme: scheme.to_string(),
                        device: device.to_string(),
                        variant: serde_json::to_value(variant).unwrap_or_default(),
                        shape,
                        seed,
                        verdict,
                        metrics: None,
                        note: None,
                        inject: inject.map(|f| f.name().to_string()),
                        device_seconds: None,
                        case_file: None,
                    };
                    // Ops that make no sense for the scheme are one `unsupported` per device.
                    if let Support::Unsupported(reason) = reference.supports(op, scheme, variant) {
                        for d in &devs {
                            let id = d.info().id.clone();
                            if refused.insert(id.clone(), reason.clone()).is_none() {
                                let mut r = result_for(&id, Verdict::Unsupported, Vec::new());
                                r.note = Some(reason.clone());
                                tallies.entry(id).or_default().summary.add(Verdict::Unsupported);
                                op_results.push(r);
                            }
                        }
                        continue;
                    }
                    let case = make_case(op, *scheme, variant, inject, seed)
                        .with_context(|| format!("making case {case_id}"))?;
                    let shape = case_shape(&case);
                    let expectation = expect(&case);
                    for d in devs.iter_mut() {
                        let id = d.info().id.clone();
                        let tally = tallies.entry(id.clone()).or_default();
                        if refused.contains_key(&id) {
                            continue;
                        }
                        let why_not = match (inject.map(|f| f.applies(op, scheme)), d.supports(op, scheme, variant)) {
                            (Some(Err(why)), _) if id != "ref" => {
                                Some(format!("fault {} does not apply: {why}", inject.map_or("", |f| f.name())))
                            }
                            (_, Support::Unsupported(why)) => Some(why),
                            _ => None,
                        };
                        if let Some(why) = why_not {
                            let mut r = result_for(&id, Verdict::Unsupported, shape.clone());
                            r.note = Some(why.clone());
                            refused.insert(id, why);
                            tally.summary.add(Verdict::Unsupported);
                            op_results.push(r);
                            continue;
                        }
                        let device_case =
                            if id == "ref" { OpCase { inject: None, ..case.clone() } } else { case.clone() };
                        let t0 = Instant::now();
                        let got = d.execute(&device_case);
                        tally.busy += t0.elapsed();
                        tally.ran += 1;
                        let (j, _) = judge(&case, &expectation, got);
                        let mut r = result_for(&id, j.verdict, shape.clone());
                        r.metrics = j.metrics;
                        r.note = j.note;
                        r.device_seconds = j.device_seconds;
                        tally.summary.add(r.verdict);
                        if r.verdict.falls_short() {
                            failures.push((r.clone(), case.clone()));
                        }
                        op_results.push(r);
                    }
                }
            }
        }
    }
    progress.finish_and_clear();

    // Case files for failures, then results.json (atomically, after everything ran).
    let mut summary = Summary::default();
    for r in &op_results {
        summary.add(r.verdict);
    }
    let device_entries: Vec<DeviceEntry> = devs.iter().map(|d| device_entry(d.as_ref())).collect();
    let mut case_files = BTreeMap::new();
    for (r, case) in &failures {
        let rel = format!("cases/{}.json", sanitize(&format!("{}-{}", r.device, r.case_id)));
        let found_on = device_entries.iter().find(|d| d.id == r.device).cloned();
        let cf =
            CaseFile::new(case, r.shape.clone(), r.seed, found_on, Some(r.verdict), r.metrics.clone(), r.note.clone());
        cf.write(&args.out.join(&rel))?;
        case_files.insert((r.device.clone(), r.case_id.clone()), rel);
    }
    for r in &mut op_results {
        r.case_file = case_files.get(&(r.device.clone(), r.case_id.clone())).cloned();
    }
    let results = Results {
        schema_version: reports::SCHEMA_VERSION,
        run: RunInfo {
            qdiff_version: meta::VERSION.into(),
            git_commit: meta::GIT_COMMIT.into(),
            started_at,
            host: meta::host(),
            seed: args.seed,
            shard: "1/1".into(),
            command: Some(args.command.clone()),
        },
        devices: device_entries,
        summary: summary.clone(),
        op_results,
        model_results: Vec::new(),
        bench_results: Vec::new(),
        regressions: Vec::new(),
    };
    let results_path = args.out.join("results.json");
    results.write(&results_path)?;
    print_summary(out, &results, &tallies, &results_path)?;
    Ok(if summary.falls_short() { Exit::FellShort } else { Exit::Clean })
}

/// A device as results record it.
fn device_entry(d: &dyn Executor) -> DeviceEntry {
    let i = d.info();
    DeviceEntry {
        id: i.id.clone(),
        kind: i.kind.name().into(),
        name: i.name.clone(),
        driver: i.driver.clone(),
        features: i.features.clone(),
    }
}

/// A file-name-safe version of a case id.
fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@') { c } else { '_' }).collect()
}

/// A progress bar on a terminal (stderr), hidden otherwise.
fn progress_bar(total: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} cases ({per_sec}, eta {eta})",
    ) {
        pb.set_style(style);
    }
    pb
}

/// The summary on stdout: one line per device with cases/s, then every failure, then why things
/// were unsupported.
fn print_summary(
    out: &mut dyn Write,
    results: &Results,
    tallies: &BTreeMap<String, DeviceTally>,
    path: &Path,
) -> anyhow::Result<()> {
    writeln!(
        out,
        "{:<12} {:>7} {:>7} {:>7} {:>8} {:>6} {:>6} {:>11} {:>10}",
        "device", "cases", "exact", "within", "mismatch", "error", "crash", "unsupported", "cases/s"
    )?;
    for d in &results.devices {
        let Some(t) = tallies.get(&d.id) else { continue };
        let s = &t.summary;
        let rate = if t.busy.as_secs_f64() > 0.0 { t.ran as f64 / t.busy.as_secs_f64() } else { 0.0 };
        writeln!(
            out,
            "{:<12} {:>7} {:>7} {:>7} {:>8} {:>6} {:>6} {:>11} {:>10.0}",
            d.id, s.op_cases, s.exact, s.within_tolerance, s.mismatch, s.error, s.crash, s.unsupported, rate
        )?;
    }
    let failing: Vec<&OpResult> = results.op_results.iter().filter(|r| r.verdict.falls_short()).collect();
    if !failing.is_empty() {
        writeln!(out, "\nfailures ({}):", failing.len())?;
        for r in failing.iter().take(40) {
            writeln!(out, "  {:<9} {} {}: {}", r.verdict.name(), r.device, r.case_id, r.note.as_deref().unwrap_or(""))?;
        }
        if failing.len() > 40 {
            writeln!(out, "  ... {} more in {}", failing.len() - 40, path.display())?;
        }
    }
    {
        let mut by_reason: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
        for r in results.op_results.iter().filter(|r| r.verdict == Verdict::Unsupported) {
            let e = by_reason.entry((r.device.clone(), r.op.clone(), r.note.clone().unwrap_or_default())).or_default();
            if !e.contains(&r.scheme) {
                e.push(r.scheme.clone());
            }
        }
        if !by_reason.is_empty() {
            writeln!(out, "\nunsupported ({} combinations):", by_reason.values().map(Vec::len).sum::<usize>())?;
        }
        for ((device, op, why), schemes) in &by_reason {
            let list = if schemes.len() > 6 {
                format!("{} and {} more", schemes[..6].join(", "), schemes.len() - 6)
            } else {
                schemes.join(", ")
            };
            writeln!(out, "  {device} {op} [{list}]: {why}")?;
        }
    }
    let s = &results.summary;
    writeln!(
        out,
        "\n{} op results: {} exact, {} within tolerance, {} mismatch, {} error, {} crash, {} unsupported -> {}",
        s.op_cases,
        s.exact,
        s.within_tolerance,
        s.mismatch,
        s.error,
        s.crash,
        s.unsupported,
        path.display()
    )?;
    Ok(())
}

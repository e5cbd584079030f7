//! `qdiff fuzz`: draw cases from the proptest strategies of every (op, scheme) the device runs,
//! run each on the device, judge it against the reference, and shrink each distinct failure (by
//! op, scheme, verdict and signature) to a minimal case file under `--out`/cases/. Stops at
//! `--time` or `--cases`; writes `results.json`; exits 1 when anything failed.
//!
//! Determinism: each (op, scheme) has its own ChaCha runner seeded from (`--seed`, op, scheme),
//! and combinations take turns in a fixed order, so the same seed runs the same cases, finds the
//! same failures and writes byte-identical case files (a `--time` run is a prefix of that
//! sequence).

use crate::casefile::CaseFile;
use crate::cases::stable_hash;
use crate::exec::{expect, judge, open_executor, Executor, Isolation};
use crate::fuzz::shrink::{shrink, CaseTree};
use crate::fuzz::strategies::{case_strategy, variants, CaseSpec, CaseStrategy, WORKGROUP_SIZES};
use crate::fuzz::{seeded_runner, signature};
use crate::{meta, Exit};
use anyhow::{anyhow, bail};
use devices::case::{Fault, Op, Storage};
use devices::reference::op_applies;
use devices::Support;
use kernels_ref::scheme::Scheme;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use reports::{DeviceEntry, Metrics, OpResult, Results, Summary, Verdict};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `qdiff fuzz`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct FuzzArgs {
    /// The device to fuzz (cpu, vulkan, vulkan:N, metal, metal:N, ref).
    #[arg(long)]
    pub device: String,
    /// Scheme names; repeatable. Default: every example of every catalogue family.
    #[arg(long = "scheme")]
    pub schemes: Vec<String>,
    /// Ops (quantize, dequantize, linear, embedding, act_quant); repeatable. Default: all the
    /// device runs.
    #[arg(long = "op")]
    pub ops: Vec<String>,
    /// Stop after this many seconds (default 60 when neither --time nor --cases is given).
    #[arg(long, conflicts_with = "cases")]
    pub time: Option<f64>,
    /// Stop after this many cases (shrinking does not count).
    #[arg(long)]
    pub cases: Option<u64>,
    /// Run seed: the same seed draws the same cases.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder for results.json and cases/.
    #[arg(long, default_value = "qdiff-out")]
    pub out: PathBuf,
    /// A deliberate fault for the device to commit: zp-bind-int8, zp-bind-f16, nibble-swap,
    /// scale-transpose, drop-last-group, crash, hang.
    #[arg(long)]
    pub inject: Option<String>,
    /// How device work is isolated from the fuzzer (a worker process turns a crash or a hang into
    /// a result).
    #[arg(long, value_enum, default_value_t = Isolation::Auto)]
    pub isolation: Isolation,
    /// Seconds a case may take before it is a `timeout` (isolated workers only).
    #[arg(long, default_value_t = 30.0)]
    pub case_timeout: f64,
    /// Where weights and qparams live on the device; repeatable. Default: every storage the
    /// device supports.
    #[arg(long, value_enum)]
    pub storage: Vec<crate::cli::StorageArg>,
    /// Candidates tried at most while shrinking one failure.
    #[arg(long, default_value_t = 3000)]
    pub shrink_steps: usize,
}

/// Seconds a run lasts when neither `--time` nor `--cases` is given.
const DEFAULT_TIME_S: f64 = 60.0;
/// Candidates tried at most while shrinking a crash: each one that still crashes costs a worker
/// restart.
const CRASH_SHRINK_STEPS: usize = 60;
/// Candidates tried at most while shrinking a timeout: each one that still hangs costs a whole
/// case timeout.
const TIMEOUT_SHRINK_STEPS: usize = 8;
/// Wall-clock limit of one shrink, so a slow device cannot stall the run.
const SHRINK_WALL: Duration = Duration::from_secs(120);
/// Consecutive draws the reference refuses before the fuzzer gives up on a run.
const MAX_REJECTS: u64 = 10_000;

/// When the run stops.
#[derive(Debug, Clone, Copy)]
enum Budget {
    /// After this many cases.
    Cases(u64),
    /// After this long.
    Time(Duration),
}

/// One (op, scheme) the run draws from.
struct Combo {
    op: Op,
    scheme: Scheme,
    strategy: CaseStrategy,
    runner: TestRunner,
}

/// A distinct failure and its minimal case.
#[derive(Debug)]
struct Found {
    result: OpResult,
    /// How many drawn cases failed this way.
    hits: u64,
    /// The shape of the first failing case, before shrinking.
    original_shape: Vec<usize>,
    /// Shrink candidates tried.
    steps: usize,
}

/// The outcome of running one case.
struct Ran {
    verdict: Verdict,
    signature: String,
    metrics: Option<Metrics>,
    note: Option<String>,
    device_seconds: Option<f64>,
}

/// Run `case` on the device and judge it.
fn run_case(exec: &mut dyn Executor, spec: &CaseSpec) -> Option<Ran> {
    let case = spec.op_case().ok()?;
    let exp = expect(&case);
    let got = exec.execute(&case);
    let (j, found) = judge(&case, &exp, got);
    let sig = signature(j.verdict, exp.expected.as_ref().ok(), found.as_ref());
    Some(Ran { verdict: j.verdict, signature: sig, metrics: j.metrics, note: j.note, device_seconds: j.device_seconds })
}

/// The command line's names, parsed.
struct Parsed {
    schemes: Vec<Scheme>,
    ops: Vec<Op>,
    inject: Option<Fault>,
    budget: Budget,
}

/// Parse the command line's names; everything refused here is refused before anything runs.
fn parse_names(args: &FuzzArgs) -> anyhow::Result<Parsed> {
    let schemes = crate::selection::schemes(&args.schemes)?;
    let ops = crate::selection::ops(&args.ops)?;
    let inject = crate::selection::fault(args.inject.as_deref())?;
    let budget = match (args.time, args.cases) {
        (Some(_), Some(_)) => bail!("--time and --cases: give one budget, not both"),
        (Some(t), None) if !(t.is_finite() && t > 0.0) => bail!("--time {t}: must be a positive number of seconds"),
        (Some(t), None) => Budget::Time(Duration::from_secs_f64(t)),
        (None, Some(0)) => bail!("--cases 0: must be at least 1"),
        (None, Some(n)) => Budget::Cases(n),
        (None, None) => Budget::Time(Duration::from_secs_f64(DEFAULT_TIME_S)),
    };
    if !(args.case_timeout.is_finite() && args.case_timeout > 0.0) {
        bail!("--case-timeout {}: must be a positive number of seconds", args.case_timeout);
    }
    if args.shrink_steps == 0 {
        bail!("--shrink-steps 0: must be at least 1");
    }
    Ok(Parsed { schemes, ops, inject, budget })
}

/// Run `qdiff fuzz`.
pub fn run(args: FuzzArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let Parsed { schemes, ops, inject, budget } = parse_names(&args)?;
    let timeout = Duration::from_secs_f64(args.case_timeout);
    let mut exec =
        open_executor(&args.device, args.isolation, timeout).map_err(|e| anyhow!("--device {}: {e}", args.device))?;
    let storages: Vec<Storage> = if args.storage.is_empty() {
        vec![Storage::Buffer, Storage::Texture]
    } else {
        args.storage.iter().copied().map(Storage::from).collect()
    };
    let all_variants = variants(&storages, &WORKGROUP_SIZES);

    // The combinations the device runs; each one skipped is listed once with why.
    let mut combos: Vec<Combo> = Vec::new();
    let mut skipped: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for &op in &ops {
        for scheme in &schemes {
            let mut skip =
                |why: String| skipped.entry((op.name().to_string(), why)).or_default().push(scheme.to_string());
            if let Support::Unsupported(why) = op_applies(op, scheme) {
                skip(why);
                continue;
            }
            if let Some(Err(why)) = inject.map(|f| f.applies(op, scheme)) {
                skip(format!("fault {} does not apply: {why}", inject.map_or("", |f| f.name())));
                continue;
            }
            let mut first_refusal = None;
            let ok: Vec<_> = all_variants
                .iter()
                .filter(|v| match exec.supports(op, scheme, v) {
                    Support::Supported => true,
                    Support::Unsupported(why) => {
                        first_refusal.get_or_insert(why);
                        false
                    }
                })
                .cloned()
                .collect();
            if ok.is_empty() {
                skip(first_refusal.unwrap_or_else(|| "no variant is supported".into()));
                continue;
            }
            let seed = stable_hash(&format!("fuzz/{}/{op}/{scheme}", args.seed));
            combos.push(Combo {
                op,
                scheme: *scheme,
                strategy: case_strategy(op, *scheme, inject, ok),
                runner: seeded_runner(seed),
            });
        }
    }
    if combos.is_empty() {
        let why = skipped.keys().next().map_or(String::new(), |(op, why)| format!(" (first: {op}: {why})"));
        bail!("nothing to fuzz on {}: every (op, scheme) asked for was skipped{why}", args.device);
    }

    let entry = crate::exec::device_entry(exec.as_ref());
    let started_at = meta::now_rfc3339();
    let t0 = Instant::now();
    let deadline = match budget {
        Budget::Time(d) => Some(t0 + d),
        Budget::Cases(_) => None,
    };
    let progress = Progress::new(budget);
    let mut summary = Summary::default();
    let mut found: Vec<Found> = Vec::new();
    let mut index_of: BTreeMap<(Op, String, String), usize> = BTreeMap::new();
    let (mut cases_run, mut rejected, mut rejected_in_a_row) = (0u64, 0u64, 0u64);
    let mut busy = Duration::ZERO;
    let mut turn = 0usize;

    loop {
        match budget {
            Budget::Cases(n) if cases_run >= n => break,
            Budget::Time(_) if deadline.is_some_and(|d| Instant::now() >= d) => break,
            _ => {}
        }
        if rejected_in_a_row >= MAX_REJECTS {
            break;
        }
        let n_combos = combos.len();
        let combo = &mut combos[turn % n_combos];
        turn += 1;
        let Ok(mut tree) = combo.strategy.new_tree(&mut combo.runner) else {
            rejected += 1;
            rejected_in_a_row += 1;
            continue;
        };
        let spec = tree.current();
        let c0 = Instant::now();
        let Some(ran) = run_case(exec.as_mut(), &spec) else {
            // The reference refused what the strategy drew: not a device result.
            rejected += 1;
            rejected_in_a_row += 1;
            continue;
        };
        busy += c0.elapsed();
        rejected_in_a_row = 0;
        cases_run += 1;
        summary.add(ran.verdict);
        if ran.verdict.falls_short() {
            let key = (combo.op, combo.scheme.to_string(), ran.signature.clone());
            if let Some(&i) = index_of.get(&key) {
                found[i].hits += 1;
            } else {
                let f = minimise(exec.as_mut(), &mut tree, &spec, &ran, &entry, &args, inject)?;
                index_of.insert(key, found.len());
                found.push(f);
            }
        }
        progress.update(cases_run, found.len(), t0);
    }
    progress.finish();
    let elapsed = t0.elapsed();

    let results = Results {
        summary: summary.clone(),
        op_results: found.iter().map(|f| f.result.clone()).collect(),
        ..Results::new(meta::run_info(started_at, args.seed, None), vec![entry])
    };
    let results_path = args.out.join("results.json");
    results.write(&results_path)?;

    // The summary on stdout.
    let rate = if elapsed.as_secs_f64() > 0.0 { cases_run as f64 / elapsed.as_secs_f64() } else { 0.0 };
    writeln!(
        out,
        "fuzzed {} on {} (op, scheme) combinations: {cases_run} cases in {:.1} s ({rate:.0} cases/s, {:.0} cases/s of device time), seed {}",
        args.device,
        combos.len(),
        elapsed.as_secs_f64(),
        if busy.as_secs_f64() > 0.0 { cases_run as f64 / busy.as_secs_f64() } else { 0.0 },
        args.seed
    )?;
    let s = &summary;
    writeln!(
        out,
        "verdicts: {} exact, {} within tolerance, {} mismatch, {} error, {} crash, {} timeout, {} unsupported{}",
        s.exact,
        s.within_tolerance,
        s.mismatch,
        s.error,
        s.crash,
        s.timeout,
        s.unsupported,
        if rejected > 0 { format!("; {rejected} draws refused by the reference") } else { String::new() }
    )?;
    if !skipped.is_empty() {
        writeln!(out, "\nskipped ({} combinations):", skipped.values().map(Vec::len).sum::<usize>())?;
        for ((op, why), list) in &skipped {
            let list = if list.len() > 6 {
                format!("{} and {} more", list[..6].join(", "), list.len() - 6)
            } else {
                list.join(", ")
            };
            writeln!(out, "  {op} [{list}]: {why}")?;
        }
    }
    if found.is_empty() {
        writeln!(out, "\nno failures -> {}", results_path.display())?;
        return Ok(Exit::Clean);
    }
    writeln!(out, "\nfailures ({} distinct):", found.len())?;
    for f in &found {
        let r = &f.result;
        let file = args.out.join(r.case_file.as_deref().unwrap_or_default());
        writeln!(
            out,
            "  {} {} {} {:?} (shrunk from {:?} in {} steps; {} case{} failed this way): {}",
            r.verdict.name(),
            r.op,
            r.scheme,
            r.shape,
            f.original_shape,
            f.steps,
            f.hits,
            if f.hits == 1 { "" } else { "s" },
            r.note.as_deref().unwrap_or("")
        )?;
        writeln!(out, "    {}\n    qdiff repro {}", file.display(), file.display())?;
    }
    writeln!(out, "\n-> {}", results_path.display())?;
    Ok(Exit::FellShort)
}

/// Shrink a failure to its minimal case, write the case file, and make its result.
fn minimise(
    exec: &mut dyn Executor,
    tree: &mut CaseTree,
    spec: &CaseSpec,
    ran: &Ran,
    entry: &DeviceEntry,
    args: &FuzzArgs,
    inject: Option<Fault>,
) -> anyhow::Result<Found> {
    let max_steps = match ran.verdict {
        Verdict::Timeout => TIMEOUT_SHRINK_STEPS,
        Verdict::Crash => CRASH_SHRINK_STEPS,
        _ => args.shrink_steps,
    }
    .min(args.shrink_steps);
    let target = (ran.verdict, ran.signature.clone());
    // The judgement of the last candidate that still failed: what the case file records, with no
    // second run (a timeout costs a whole case timeout).
    let mut last: Option<Ran> = None;
    let shrunk = shrink(tree, max_steps, Some(Instant::now() + SHRINK_WALL), |cand| {
        match run_case(exec, cand).filter(|r| (r.verdict, &r.signature) == (target.0, &target.1)) {
            Some(r) => {
                last = Some(r);
                true
            }
            None => false,
        }
    });
    let min = shrunk.spec;
    let last = match last {
        Some(l) if shrunk.accepted > 0 => l,
        _ => clone_ran(ran),
    };
    let case = min.op_case().map_err(|e| anyhow!("rebuilding the minimal case: {e}"))?;
    let shape = min.shape();
    let rel = format!(
        "cases/{}.json",
        crate::casefile::file_name_safe(&format!("{}-{}-{}-{}", entry.id, min.op.name(), min.scheme, target.1))
    );
    let cf = CaseFile::new(
        &case,
        shape.clone(),
        min.seed,
        Some(entry.clone()),
        Some(last.verdict),
        last.metrics.clone(),
        last.note.clone(),
    );
    cf.write(&args.out.join(&rel))?;
    let result = OpResult {
        case_id: format!("{}/{}/{}/{:016x}", min.op, min.scheme, min.variant.label(), min.seed),
        op: min.op.name().into(),
        scheme: min.scheme.to_string(),
        device: entry.id.clone(),
        variant: serde_json::to_value(&min.variant).unwrap_or_default(),
        shape,
        seed: min.seed,
        verdict: last.verdict,
        metrics: last.metrics,
        note: last.note,
        inject: inject.map(|f| f.name().to_string()),
        device_seconds: last.device_seconds,
        case_file: Some(rel),
    };
    Ok(Found { result, hits: 1, original_shape: spec.shape(), steps: shrunk.steps })
}

/// A copy of a run's outcome.
fn clone_ran(r: &Ran) -> Ran {
    Ran {
        verdict: r.verdict,
        signature: r.signature.clone(),
        metrics: r.metrics.clone(),
        note: r.note.clone(),
        device_seconds: r.device_seconds,
    }
}

/// Progress on a terminal (stderr): cases/s, failures so far, time or cases left. Hidden when
/// stderr is not a terminal.
struct Progress {
    bar: indicatif::ProgressBar,
    budget: Budget,
    last: std::cell::Cell<Option<Instant>>,
}

impl Progress {
    fn new(budget: Budget) -> Self {
        let bar = if std::io::stderr().is_terminal() {
            let b = indicatif::ProgressBar::new_spinner();
            if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}") {
                b.set_style(style);
            }
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        Progress { bar, budget, last: std::cell::Cell::new(None) }
    }

    fn update(&self, cases: u64, failures: usize, t0: Instant) {
        if self.bar.is_hidden() {
            return;
        }
        // Redraw at most ten times a second: a case can take microseconds.
        let now = Instant::now();
        if self.last.get().is_some_and(|l| now.duration_since(l) < Duration::from_millis(100)) {
            return;
        }
        self.last.set(Some(now));
        let secs = t0.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { cases as f64 / secs } else { 0.0 };
        let left = match self.budget {
            Budget::Cases(n) => format!("{} cases left", n.saturating_sub(cases)),
            Budget::Time(d) => format!("{:.0} s left", (d.as_secs_f64() - secs).max(0.0)),
        };
        self.bar.set_message(format!("{cases} cases, {rate:.0} cases/s, {failures} failures, {left}"));
        self.bar.tick();
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

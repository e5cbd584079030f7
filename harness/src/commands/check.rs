//! `qdiff check`: seeded op cases for every (op, scheme, device) chosen, run on each device,
//! compared with the exact emulation (the `ref` device) and the fp32 truth, written to
//! `results.json`, summarised on stdout; exit 1 on any mismatch, error, crash, timeout or
//! nondeterminism.
//!
//! Device work runs in a `qdiff worker` process where one is available (`--isolation`), so a
//! crash or hang is a verdict and the run goes on. Every result is appended to
//! `<out>/results.jsonl` as it is made ([`Journal`]); an interrupted run keeps them and
//! `--resume` continues it.

use crate::casefile::CaseFile;
use crate::cases::{case_shape, make_case, stable_hash};
use crate::exec::{execute_repeated, expect, judge_repeated, open_executor, Executor, Expectation, Isolation};
use crate::{meta, Exit};
use anyhow::{anyhow, bail, Context};
use devices::case::{OpCase, Storage, Variant};
use devices::reference::RefDevice;
use devices::{Device, Support};
use reports::{DeviceEntry, OpResult, Results, Summary, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
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
    /// Output folder for results.json, results.jsonl and cases/.
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
    /// Where device work runs: `worker` (a child qdiff process per device: a crash or hang is a
    /// verdict, not the end of the run), `none` (in this process), `auto` (worker when running
    /// as the qdiff executable).
    #[arg(long, value_enum, default_value_t = Isolation::Auto)]
    pub isolation: Isolation,
    /// Seconds a worker gets per case before it is killed and the case is a `timeout`.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub case_timeout: f64,
    /// Continue the run whose results.jsonl is in --out (same arguments): finished results are
    /// kept, the rest is run.
    #[arg(long)]
    pub resume: bool,
    /// Run each case N times on each device; outputs that are not all bit-identical are
    /// `nondeterministic`.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub repeat: usize,
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
            storage: c.storage.into_iter().map(Storage::from).collect(),
            workgroup_size: c.workgroup_size,
            isolation: c.isolation,
            case_timeout: c.case_timeout,
            resume: c.resume,
            repeat: c.repeat,
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
    /// Where device work runs.
    pub isolation: Isolation,
    /// Seconds per case in a worker before it is a `timeout`.
    pub case_timeout: f64,
    /// Continue the run in `out`.
    pub resume: bool,
    /// Runs per case and device.
    pub repeat: usize,
    /// The command line, for provenance.
    pub command: String,
}

/// Per-device speed: cases run in this invocation and the time they took.
#[derive(Debug, Default)]
struct Speed {
    ran: u64,
    busy: Duration,
}

/// The arguments a run's results depend on. A results.jsonl starts with them, and `--resume`
/// continues only a run made with the same ones (else its results would be mixed with others').
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunParams {
    seed: u64,
    /// Canonical scheme names.
    schemes: Vec<String>,
    ops: Vec<String>,
    devices: Vec<String>,
    cases: usize,
    inject: Option<String>,
    storage: Vec<Storage>,
    workgroup_size: Option<u32>,
    repeat: usize,
}

/// The first line of results.jsonl.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JournalHeader {
    /// The journal format ([`JOURNAL_FORMAT`]).
    qdiff_results_jsonl: u32,
    /// What the run was asked to do.
    params: RunParams,
    /// When the run (its first invocation) started.
    started_at: String,
}

/// The results.jsonl format version.
const JOURNAL_FORMAT: u32 = 1;

/// How long finished lines may sit in the page cache before they are forced to disk. A process
/// killed (Ctrl-C, `kill -9`) loses nothing written; only a power loss can lose this much.
const SYNC_EVERY: Duration = Duration::from_millis(100);

/// `results.jsonl`: every op result appended as one line as soon as it is made, so an
/// interrupted run keeps everything it finished.
#[derive(Debug)]
struct Journal {
    file: File,
    path: PathBuf,
    last_sync: Instant,
}

impl Journal {
    /// Start a new journal (replacing any old one) with its header, on disk before any work.
    fn create(path: &Path, header: &JournalHeader) -> anyhow::Result<Self> {
        let mut file = File::create(path).with_context(|| format!("{}", path.display()))?;
        let mut line = serde_json::to_vec(header)?;
        line.push(b'\n');
        file.write_all(&line).and_then(|()| file.sync_data()).with_context(|| format!("{}", path.display()))?;
        Ok(Journal { file, path: path.to_path_buf(), last_sync: Instant::now() })
    }

    /// Continue a journal whose first `keep` bytes are whole lines (a torn last line is cut off,
    /// so the next line starts on a line of its own).
    fn append_to(path: &Path, keep: u64) -> anyhow::Result<Self> {
        let file =
            std::fs::OpenOptions::new().append(true).open(path).with_context(|| format!("{}", path.display()))?;
        file.set_len(keep).with_context(|| format!("{}", path.display()))?;
        Ok(Journal { file, path: path.to_path_buf(), last_sync: Instant::now() })
    }

    /// Append one result as one line (a single write, so a killed process never leaves half of
    /// one behind another); failures are forced to disk at once, others at most [`SYNC_EVERY`]
    /// later.
    fn append(&mut self, r: &OpResult) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(r)?;
        line.push(b'\n');
        self.file.write_all(&line).with_context(|| format!("{}", self.path.display()))?;
        if r.verdict.falls_short() || self.last_sync.elapsed() >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> anyhow::Result<()> {
        self.file.sync_data().with_context(|| format!("{}", self.path.display()))?;
        self.last_sync = Instant::now();
        Ok(())
    }
}

/// A previous run's journal, read for `--resume`.
#[derive(Debug)]
struct Prior {
    header: JournalHeader,
    /// Finished results by (case id, device).
    results: HashMap<(String, String), OpResult>,
    /// Bytes of whole, readable lines (what is kept).
    keep: u64,
}

/// Read results.jsonl for `--resume`: `None` when there is nothing to resume (no file, or not even
/// a whole header line); an error when it belongs to a run with other arguments or is corrupt
/// before its last line. A last line that does not parse (the write a kill interrupted) is dropped.
fn read_prior(path: &Path, params: &RunParams) -> anyhow::Result<Option<Prior>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow!("--resume: {}: {e}", path.display())),
    };
    let mut lines: Vec<(usize, &[u8])> = Vec::new();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            lines.push((i + 1, &bytes[start..i]));
            start = i + 1;
        }
    }
    let torn = start < bytes.len();
    let Some(&(header_end, header_line)) = lines.first() else { return Ok(None) };
    let header: JournalHeader = serde_json::from_slice(header_line)
        .ok()
        .filter(|h: &JournalHeader| h.qdiff_results_jsonl == JOURNAL_FORMAT)
        .ok_or_else(|| anyhow!("--resume: {} line 1: not a qdiff check results.jsonl header", path.display()))?;
    if header.params != *params {
        bail!(
            "--resume: {} was written by a run with other arguments ({}); rerun with the same arguments or without --resume",
            path.display(),
            differences(&header.params, params)
        );
    }
    let mut results = HashMap::new();
    let mut keep = header_end as u64;
    let last = lines.len() - 1;
    for (n, &(end, line)) in lines.iter().enumerate().skip(1) {
        match serde_json::from_slice::<OpResult>(line) {
            Ok(r) => {
                results.insert((r.case_id.clone(), r.device.clone()), r);
                keep = end as u64;
            }
            // The last whole line of a file nothing follows may be a torn write too.
            Err(_) if n == last && !torn => break,
            Err(e) => bail!("--resume: {} line {}: {e}", path.display(), n + 1),
        }
    }
    Ok(Some(Prior { header, results, keep }))
}

/// What differs between two runs' parameters, for the refusal of a `--resume`.
fn differences(was: &RunParams, now: &RunParams) -> String {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(was), serde_json::to_value(now))
    else {
        return "unreadable".into();
    };
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: {v} there, {} here", b.get(k).cloned().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The results of this run so far: each either carried over from the journal of an interrupted
/// run or made now (and then journaled at once).
#[derive(Debug)]
struct Recorder {
    prior: HashMap<(String, String), OpResult>,
    journal: Journal,
    op_results: Vec<OpResult>,
    tallies: BTreeMap<String, Summary>,
    resumed: usize,
}

impl Recorder {
    /// Record the result of `case_id` on `device`: the journal's when it has one, else `make`'s.
    fn settle(
        &mut self,
        case_id: &str,
        device: &str,
        make: impl FnOnce() -> anyhow::Result<OpResult>,
    ) -> anyhow::Result<()> {
        let r = match self.prior.remove(&(case_id.to_string(), device.to_string())) {
            Some(r) => {
                self.resumed += 1;
                r
            }
            None => {
                let r = make()?;
                self.journal.append(&r)?;
                r
            }
        };
        self.tallies.entry(device.to_string()).or_default().add(r.verdict);
        self.op_results.push(r);
        Ok(())
    }
}

/// A case made once all devices need it: the case, its main shape and the reference's answer.
#[derive(Debug)]
struct Made {
    case: OpCase,
    shape: Vec<usize>,
    expectation: Expectation,
}

/// Run `qdiff check`.
pub fn run(args: &CheckArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    // Everything that can be refused is refused before anything runs or is written.
    let schemes = crate::selection::schemes(&args.schemes)?;
    let ops = crate::selection::ops(&args.ops)?;
    let inject = crate::selection::fault(args.inject.as_deref())?;
    if args.cases == 0 {
        bail!("--cases 0: at least one case per (op, scheme) is needed");
    }
    if args.repeat == 0 {
        bail!("--repeat 0: at least one run per case is needed");
    }
    if !(args.case_timeout > 0.0 && args.case_timeout <= 1e9) {
        bail!("--case-timeout {}: a positive number of seconds is needed", args.case_timeout);
    }
    let case_timeout = Duration::from_secs_f64(args.case_timeout);
    let device_ids = if args.devices.is_empty() { meta::default_devices() } else { args.devices.clone() };
    let storages = if args.storage.is_empty() { vec![Storage::Buffer] } else { args.storage.clone() };
    let params = RunParams {
        seed: args.seed,
        schemes: schemes.iter().map(|s| s.to_string()).collect(),
        ops: ops.iter().map(|o| o.name().to_string()).collect(),
        devices: device_ids.clone(),
        cases: args.cases,
        inject: inject.map(|f| f.name().to_string()),
        storage: storages.clone(),
        workgroup_size: args.workgroup_size,
        repeat: args.repeat,
    };
    let journal_path = args.out.join("results.jsonl");
    let prior = if args.resume { read_prior(&journal_path, &params)? } else { None };
    let mut devs: Vec<Box<dyn Executor>> = Vec::new();
    for id in &device_ids {
        devs.push(open_executor(id, args.isolation, case_timeout).map_err(|e| anyhow!("--device {id}: {e}"))?);
    }
    let variants: Vec<Variant> = storages
        .iter()
        .map(|&storage| Variant { storage, workgroup_size: args.workgroup_size, ..Variant::default() })
        .collect();

    // From here on things are written.
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
    let (journal, started_at, prior_results) = match prior {
        Some(p) => (Journal::append_to(&journal_path, p.keep)?, p.header.started_at, p.results),
        None => {
            if args.resume {
                writeln!(out, "nothing to resume in {} (no results.jsonl): starting afresh", args.out.display())?;
            }
            let header = JournalHeader {
                qdiff_results_jsonl: JOURNAL_FORMAT,
                params: params.clone(),
                started_at: meta::now_rfc3339(),
            };
            (Journal::create(&journal_path, &header)?, header.started_at, HashMap::new())
        }
    };
    let mut rec =
        Recorder { prior: prior_results, journal, op_results: Vec::new(), tallies: BTreeMap::new(), resumed: 0 };
    let device_entries: Vec<DeviceEntry> = devs.iter().map(|d| crate::exec::device_entry(d.as_ref())).collect();
    let mut speed: BTreeMap<String, Speed> = BTreeMap::new();

    let reference = RefDevice::new();
    let total = (schemes.len() * ops.len() * variants.len() * args.cases) as u64;
    let progress = progress_bar(total);

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
                                rec.settle(&case_id, &id, || {
                                    let mut r = result_for(&id, Verdict::Unsupported, Vec::new());
                                    r.note = Some(reason.clone());
                                    Ok(r)
                                })?;
                            }
                        }
                        continue;
                    }
                    // Made only when some device has no result for it yet (a resumed run skips it).
                    let mut made: Option<Made> = None;
                    let make = |slot: &mut Option<Made>| -> anyhow::Result<()> {
                        if slot.is_none() {
                            let case = make_case(op, *scheme, variant, inject, seed)
                                .with_context(|| format!("making case {case_id}"))?;
                            let shape = case_shape(&case);
                            let expectation = expect(&case);
                            *slot = Some(Made { case, shape, expectation });
                        }
                        Ok(())
                    };
                    for d in devs.iter_mut() {
                        let id = d.info().id.clone();
                        if refused.contains_key(&id) {
                            continue;
                        }
                        // A fault that cannot change the result is said so, but the process-killing
                        // ones strike some cases only: everything else runs on as without them.
                        let not_biting = inject.filter(|f| !f.kills_process()).map(|f| (f, f.applies(op, scheme)));
                        let why_not = match (not_biting, d.supports(op, scheme, variant)) {
                            (Some((f, Err(why))), _) if id != "ref" => {
                                Some(format!("fault {} does not apply: {why}", f.name()))
                            }
                            (_, Support::Unsupported(why)) => Some(why),
                            _ => None,
                        };
                        if let Some(why) = why_not {
                            refused.insert(id.clone(), why.clone());
                            rec.settle(&case_id, &id, || {
                                make(&mut made)?;
                                let shape = made.as_ref().map(|m| m.shape.clone()).unwrap_or_default();
                                let mut r = result_for(&id, Verdict::Unsupported, shape);
                                r.note = Some(why);
                                Ok(r)
                            })?;
                            continue;
                        }
                        rec.settle(&case_id, &id, || {
                            make(&mut made)?;
                            let Some(m) = made.as_ref() else { bail!("case {case_id} was not made") };
                            let device_case =
                                if id == "ref" { OpCase { inject: None, ..m.case.clone() } } else { m.case.clone() };
                            let t0 = Instant::now();
                            let repeated = execute_repeated(d.as_mut(), &device_case, args.repeat);
                            let s = speed.entry(id.clone()).or_default();
                            s.busy += t0.elapsed();
                            s.ran += 1;
                            let (j, _) = judge_repeated(&m.case, &m.expectation, repeated);
                            let mut r = result_for(&id, j.verdict, m.shape.clone());
                            r.metrics = j.metrics;
                            r.note = j.note;
                            r.device_seconds = j.device_seconds;
                            if r.verdict.falls_short() {
                                // Written before its result line, which then never names a missing file.
                                let rel = format!(
                                    "cases/{}.json",
                                    crate::casefile::file_name_safe(&format!("{}-{}", r.device, r.case_id))
                                );
                                let found_on = device_entries.iter().find(|e| e.id == r.device).cloned();
                                CaseFile::new(
                                    &m.case,
                                    r.shape.clone(),
                                    r.seed,
                                    found_on,
                                    Some(r.verdict),
                                    r.metrics.clone(),
                                    r.note.clone(),
                                )
                                .write(&args.out.join(&rel))?;
                                r.case_file = Some(rel);
                            }
                            Ok(r)
                        })?;
                    }
                }
            }
        }
    }
    progress.finish_and_clear();
    rec.journal.sync()?;
    drop(devs);

    // results.json atomically, after everything ran.
    let mut summary = Summary::default();
    for r in &rec.op_results {
        summary.add(r.verdict);
    }
    if rec.resumed > 0 {
        writeln!(out, "resumed: {} results kept from {}", rec.resumed, journal_path.display())?;
    }
    let results = Results {
        summary: summary.clone(),
        op_results: rec.op_results,
        ..Results::new(meta::run_info(started_at, args.seed, Some(args.command.clone())), device_entries)
    };
    let results_path = args.out.join("results.json");
    results.write(&results_path)?;
    print_summary(out, &results, &rec.tallies, &speed, &results_path)?;
    Ok(if summary.falls_short() { Exit::FellShort } else { Exit::Clean })
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
    tallies: &BTreeMap<String, Summary>,
    speed: &BTreeMap<String, Speed>,
    path: &Path,
) -> anyhow::Result<()> {
    writeln!(
        out,
        "{:<12} {:>7} {:>7} {:>7} {:>8} {:>6} {:>6} {:>7} {:>6} {:>11} {:>10}",
        "device",
        "cases",
        "exact",
        "within",
        "mismatch",
        "error",
        "crash",
        "timeout",
        "nondet",
        "unsupported",
        "cases/s"
    )?;
    for d in &results.devices {
        let Some(s) = tallies.get(&d.id) else { continue };
        // Cases run by this invocation only: results carried over by --resume took no time now.
        let rate = speed.get(&d.id).map_or(0.0, |t| {
            if t.busy.as_secs_f64() > 0.0 {
                t.ran as f64 / t.busy.as_secs_f64()
            } else {
                0.0
            }
        });
        writeln!(
            out,
            "{:<12} {:>7} {:>7} {:>7} {:>8} {:>6} {:>6} {:>7} {:>6} {:>11} {:>10.0}",
            d.id,
            s.op_cases,
            s.exact,
            s.within_tolerance,
            s.mismatch,
            s.error,
            s.crash,
            s.timeout,
            s.nondeterministic,
            s.unsupported,
            rate
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
        "\n{} op results: {} exact, {} within tolerance, {} mismatch, {} nondeterministic, {} error, {} crash, {} timeout, {} unsupported -> {}",
        s.op_cases,
        s.exact,
        s.within_tolerance,
        s.mismatch,
        s.nondeterministic,
        s.error,
        s.crash,
        s.timeout,
        s.unsupported,
        path.display()
    )?;
    Ok(())
}

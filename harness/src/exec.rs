//! Running one op case on a device and judging it: the step `qdiff check`, `qdiff fuzz` and
//! `qdiff repro` share.
//!
//! An [`Executor`] runs cases on one device. [`InProcess`] calls the device in this process (a
//! panic becomes an `error`); an isolated executor (a child `qdiff worker` process) turns a dead
//! or hung device into `crash` / `timeout` results instead of taking the run down. [`judge`]
//! turns what came back into a verdict against the reference.

use crate::commands::worker::{wire_case, Request, Response, WireError, PROTOCOL};
use crate::compare::compare;
use devices::case::{OpCase, Outputs, Variant};
use devices::reference::{truth, RefDevice};
use devices::{Device, DeviceError, DeviceInfo, Support};
use kernels_ref::scheme::Scheme;
use reports::{Metrics, Verdict};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a case produced no outputs.
#[derive(Debug)]
pub enum RunFailure {
    /// The device refused or failed the case (`unsupported` or `error`).
    Device(DeviceError),
    /// The device code panicked inside this process.
    Panicked(String),
    /// The device process died: the signal or exit status, and the tail of its stderr.
    Crashed {
        /// What ended it (`signal 11 (SIGSEGV)`, `exit status 101`).
        status: String,
        /// The last lines it wrote to stderr.
        stderr_tail: String,
    },
    /// The device did not answer within the case timeout.
    TimedOut {
        /// The timeout, seconds.
        after_s: f64,
    },
}

/// Runs op cases on one device.
pub trait Executor {
    /// The device's identity and capabilities.
    fn info(&self) -> &DeviceInfo;
    /// Whether the device runs this combination.
    fn supports(&self, op: devices::Op, scheme: &Scheme, variant: &Variant) -> Support;
    /// Run one case.
    fn execute(&mut self, case: &OpCase) -> Result<Outputs, RunFailure>;
}

/// A device called directly in this process. Faults that kill the process (`crash`, `hang`) are
/// refused: they need an isolated worker.
pub struct InProcess {
    device: Box<dyn Device>,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InProcess({})", self.device.info().id)
    }
}

impl InProcess {
    /// Open a device by id.
    pub fn open(id: &str) -> Result<Self, DeviceError> {
        Ok(InProcess { device: devices::open(id)? })
    }
    /// Wrap an open device.
    pub fn new(device: Box<dyn Device>) -> Self {
        InProcess { device }
    }
}

impl Executor for InProcess {
    fn info(&self) -> &DeviceInfo {
        self.device.info()
    }
    fn supports(&self, op: devices::Op, scheme: &Scheme, variant: &Variant) -> Support {
        self.device.supports(op, scheme, variant)
    }
    fn execute(&mut self, case: &OpCase) -> Result<Outputs, RunFailure> {
        if let Some(f) = case.inject.filter(|f| f.kills_process() && f.applies(case.op, &case.scheme).is_ok()) {
            return Err(RunFailure::Device(DeviceError::Unsupported {
                device: self.device.info().id.clone(),
                op: case.op,
                scheme: case.scheme.to_string(),
                reason: format!("fault {} kills the device process: it runs only in an isolated worker", f.name()),
            }));
        }
        // A process-killing fault that does not strike this case leaves it as it is: the devices
        // never commit those faults themselves (only a worker does), so they never see them.
        let stripped;
        let case = if case.inject.is_some_and(|f| f.kills_process()) {
            stripped = OpCase { inject: None, ..case.clone() };
            &stripped
        } else {
            case
        };
        let dev = &mut self.device;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dev.run(case))) {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(RunFailure::Device(e)),
            Err(panic) => Err(RunFailure::Panicked(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into()),
            )),
        }
    }
}

/// What the reference says a case must give: its outputs (or why it could not) and the fp32 truth.
#[derive(Debug)]
pub struct Expectation {
    /// The exact emulation's outputs.
    pub expected: Result<Outputs, DeviceError>,
    /// The fp32 truth, where the case carries one.
    pub truth: Option<Vec<f32>>,
}

/// Compute the reference's expectation for a case (without its injected fault).
pub fn expect(case: &OpCase) -> Expectation {
    let clean = OpCase { inject: None, ..case.clone() };
    Expectation { expected: RefDevice::new().run(&clean), truth: truth(&clean) }
}

/// A judged case.
#[derive(Debug, Clone)]
pub struct Judgement {
    /// The verdict.
    pub verdict: Verdict,
    /// Metrics, when outputs came back.
    pub metrics: Option<Metrics>,
    /// Why (unsupported reason, error, first mismatch, crash status and stderr).
    pub note: Option<String>,
    /// Device time of the case, when measured.
    pub device_seconds: Option<f64>,
}

/// Judge what a device returned for `case` against the reference's expectation.
pub fn judge(case: &OpCase, exp: &Expectation, got: Result<Outputs, RunFailure>) -> (Judgement, Option<Outputs>) {
    let j = |verdict, note: String| Judgement { verdict, metrics: None, note: Some(note), device_seconds: None };
    match (&exp.expected, got) {
        (_, Err(RunFailure::Device(DeviceError::Unsupported { reason, .. }))) => {
            (j(Verdict::Unsupported, reason), None)
        }
        (_, Err(RunFailure::Device(e))) => (j(Verdict::Error, e.to_string()), None),
        (_, Err(RunFailure::Panicked(msg))) => (j(Verdict::Error, format!("the device panicked: {msg}")), None),
        (_, Err(RunFailure::Crashed { status, stderr_tail })) => {
            // One line, so that the summary's failure list stays one line per failure.
            let tail = stderr_tail.trim().replace('\n', " | ");
            let tail = if tail.is_empty() { String::new() } else { format!("; stderr: {tail}") };
            (j(Verdict::Crash, format!("the device process died: {status}{tail}")), None)
        }
        (_, Err(RunFailure::TimedOut { after_s })) => (
            j(Verdict::Timeout, format!("no answer within the case timeout of {after_s} s; the worker was killed")),
            None,
        ),
        (Err(e), Ok(out)) => (j(Verdict::Error, format!("the reference could not run this case: {e}")), Some(out)),
        (Ok(expected), Ok(out)) => {
            let c = compare(case, expected, &out, exp.truth.as_deref());
            let judged = Judgement {
                verdict: c.verdict,
                metrics: Some(c.metrics),
                note: c.note,
                device_seconds: out.timing.map(|t| t.seconds),
            };
            (judged, Some(out))
        }
    }
}

/// What `--repeat N` made of one case: the result to judge and how many distinct outputs the
/// runs gave.
#[derive(Debug)]
pub struct Repeated {
    /// The first run's outputs, or the first failure of any run.
    pub result: Result<Outputs, RunFailure>,
    /// Runs asked for.
    pub asked: usize,
    /// The run (1-based) that failed, when it was not the first: the earlier ones gave outputs.
    pub failed_run: Option<usize>,
    /// Distinct outputs among the runs that gave outputs (bit for bit, timing aside).
    pub distinct: usize,
}

/// Run `case` `n` times (at least once) on `exec`, stopping at the first failure: a device that
/// gives different bits for the same inputs on different runs (tile-shaped wrong results on
/// some runs only, in the field) is caught only by running it again.
pub fn execute_repeated(exec: &mut dyn Executor, case: &OpCase, n: usize) -> Repeated {
    let asked = n.max(1);
    let first = match exec.execute(case) {
        Ok(out) => out,
        Err(e) => return Repeated { result: Err(e), asked, failed_run: None, distinct: 0 },
    };
    let mut distinct: Vec<Outputs> = vec![first.clone()];
    for run in 2..=asked {
        match exec.execute(case) {
            Ok(out) => {
                if !distinct.iter().any(|d| same_bits(d, &out)) {
                    distinct.push(out);
                }
            }
            Err(e) => return Repeated { result: Err(e), asked, failed_run: Some(run), distinct: distinct.len() },
        }
    }
    Repeated { result: Ok(first), asked, failed_run: None, distinct: distinct.len() }
}

/// Whether two outputs are bit-identical (timing aside; NaNs compared by their bits).
pub fn same_bits(a: &Outputs, b: &Outputs) -> bool {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    a.shape == b.shape
        && a.ints == b.ints
        && bits(&a.values) == bits(&b.values)
        && a.floats.len() == b.floats.len()
        && a.floats.iter().zip(&b.floats).all(|((ka, va), (kb, vb))| ka == kb && bits(va) == bits(vb))
}

/// Judge a repeated case: as [`judge`] judges its first run, except that a later run's failure
/// is that failure (its note says which run), and runs that disagree are `nondeterministic`
/// whatever the first run's verdict was (its metrics are kept).
pub fn judge_repeated(case: &OpCase, exp: &Expectation, rep: Repeated) -> (Judgement, Option<Outputs>) {
    let Repeated { result, asked, failed_run, distinct } = rep;
    let (mut j, out) = judge(case, exp, result);
    if let Some(run) = failed_run {
        j.note = Some(format!("run {run} of {asked}: {}", j.note.as_deref().unwrap_or("")));
    } else if distinct > 1 {
        let first = match &j.note {
            Some(n) => format!("{}: {n}", j.verdict.name()),
            None => j.verdict.name().to_string(),
        };
        j.note = Some(format!("{asked} runs, {distinct} distinct outputs; the first run was {first}"));
        j.verdict = Verdict::Nondeterministic;
    }
    (j, out)
}

/// How device work is isolated from the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Isolation {
    /// A worker process when the running executable is `qdiff` (or `QDIFF_WORKER_EXE` names
    /// one), else in this process.
    #[default]
    Auto,
    /// Always a child `qdiff worker` process: a crash or hang is a result, not the end of the run.
    Worker,
    /// In this process (fastest; a crashing device takes the run down).
    None,
}

/// The executable to run workers with: `QDIFF_WORKER_EXE` when set, else this process's own
/// executable when it is `qdiff` (a test binary or another program embedding the harness is not
/// a `qdiff` and cannot be asked to be a worker).
pub fn worker_exe() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("QDIFF_WORKER_EXE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    (exe.file_stem()? == "qdiff").then_some(exe)
}

/// Open an executor for device `id`: a [`Worker`] or [`InProcess`] as `isolation` asks, with
/// `case_timeout` for each case run in a worker.
pub fn open_executor(id: &str, isolation: Isolation, case_timeout: Duration) -> Result<Box<dyn Executor>, DeviceError> {
    match (isolation, worker_exe()) {
        (Isolation::None, _) | (Isolation::Auto, None) => Ok(Box::new(InProcess::open(id)?)),
        (Isolation::Worker | Isolation::Auto, Some(exe)) => Ok(Box::new(Worker::spawn(&exe, id, case_timeout)?)),
        (Isolation::Worker, None) => Err(DeviceError::Failed {
            device: id.to_string(),
            detail: "--isolation worker needs a qdiff executable to run workers with, and this program is not \
                     `qdiff`: set QDIFF_WORKER_EXE to one"
                .into(),
        }),
    }
}

/// The least time a worker gets to open its device (GPU probes take about a second; a loaded
/// machine more) and to answer a `supports` query, whatever the case timeout.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// How many lines of a worker's stderr a crash reports.
const STDERR_TAIL_LINES: usize = 20;

/// A device run in a child `qdiff worker` process ([`crate::commands::worker`] has the
/// protocol). A worker that dies becomes [`RunFailure::Crashed`], one that does not answer within
/// the case timeout is killed and becomes [`RunFailure::TimedOut`]; either way the next case
/// starts a fresh worker. One worker serves every case until then: opening a GPU device costs up
/// to a second of probes.
pub struct Worker {
    exe: PathBuf,
    device: String,
    case_timeout: Duration,
    /// From the first worker's handshake (the device's identity does not change on a restart).
    info: DeviceInfo,
    /// Behind a lock because [`Executor::supports`] takes `&self` yet must talk to the worker.
    state: Mutex<WorkerState>,
}

/// The running worker, if any, and the `supports` answers so far.
#[derive(Debug, Default)]
struct WorkerState {
    process: Option<WorkerProcess>,
    supports: HashMap<String, Support>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Worker({}, {})", self.device, self.exe.display())
    }
}

impl Worker {
    /// Start a worker for device `id` from executable `exe` and take its device's identity.
    pub fn spawn(exe: &Path, id: &str, case_timeout: Duration) -> Result<Self, DeviceError> {
        let (process, info) = start_worker(exe, id, case_timeout).map_err(|f| match f {
            RunFailure::Device(e) => e,
            other => DeviceError::Failed { device: id.to_string(), detail: describe_failure(&other) },
        })?;
        Ok(Worker {
            exe: exe.to_path_buf(),
            device: id.to_string(),
            case_timeout,
            info,
            state: Mutex::new(WorkerState { process: Some(process), supports: HashMap::new() }),
        })
    }

    /// Send one request, starting a fresh worker first when the last one died or was killed.
    fn request(&self, state: &mut WorkerState, req: &Request, timeout: Duration) -> Result<Response, RunFailure> {
        let line = serde_json::to_string(req).map_err(|e| {
            RunFailure::Device(DeviceError::Failed {
                device: self.info.id.clone(),
                detail: format!("worker request: {e}"),
            })
        })?;
        let process = match state.process.as_mut() {
            Some(p) => p,
            None => state.process.insert(start_worker(&self.exe, &self.device, self.case_timeout)?.0),
        };
        match process.request(&line, timeout) {
            Ok(r) => Ok(r),
            Err(Trouble::Died) => {
                let mut dead = state.process.take();
                let (status, stderr_tail) = dead.as_mut().map(WorkerProcess::reap).unwrap_or_default();
                Err(RunFailure::Crashed { status, stderr_tail })
            }
            Err(Trouble::TimedOut) => {
                // Dropping it kills it; the next request starts a fresh one.
                state.process = None;
                Err(RunFailure::TimedOut { after_s: timeout.as_secs_f64() })
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WorkerState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Executor for Worker {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn supports(&self, op: devices::Op, scheme: &Scheme, variant: &Variant) -> Support {
        let req = Request::Supports { op, scheme: scheme.to_string(), variant: variant.clone() };
        let key = serde_json::to_string(&req).unwrap_or_default();
        let mut state = self.lock();
        if let Some(s) = state.supports.get(&key) {
            return s.clone();
        }
        match self.request(&mut state, &req, self.case_timeout.max(OPEN_TIMEOUT)) {
            Ok(Response::Support { support }) => {
                state.supports.insert(key, support.clone());
                support
            }
            // A worker that cannot say is asked to run the case anyway: running it reports the
            // crash or error as the case's verdict instead of hiding it behind `unsupported`.
            _ => Support::Supported,
        }
    }

    fn execute(&mut self, case: &OpCase) -> Result<Outputs, RunFailure> {
        let req = Request::Run { case: Box::new(wire_case(case)) };
        let timeout = self.case_timeout;
        let mut state = self.lock();
        match self.request(&mut state, &req, timeout)? {
            Response::Outputs { outputs } => Ok(outputs.into()),
            Response::Error(w) => Err(run_failure(w, &self.info.id, Some(case))),
            other => Err(RunFailure::Device(DeviceError::Failed {
                device: self.info.id.clone(),
                detail: format!("the worker answered a run with {other:?}"),
            })),
        }
    }
}

/// Start `exe worker --device id` and shake hands: the running process and its device's identity.
fn start_worker(exe: &Path, id: &str, case_timeout: Duration) -> Result<(WorkerProcess, DeviceInfo), RunFailure> {
    let mut process = WorkerProcess::spawn(exe, id).map_err(|e| {
        RunFailure::Device(DeviceError::Failed {
            device: id.to_string(),
            detail: format!("could not start the worker `{} worker --device {id}`: {e}", exe.display()),
        })
    })?;
    let hello = serde_json::to_string(&Request::Hello { protocol: PROTOCOL }).unwrap_or_default();
    let after = case_timeout.max(OPEN_TIMEOUT);
    match process.request(&hello, after) {
        Ok(Response::Hello { protocol, info }) if protocol == PROTOCOL => Ok((process, info)),
        Ok(Response::Error(w)) => Err(run_failure(w, id, None)),
        Ok(other) => Err(RunFailure::Device(DeviceError::Failed {
            device: id.to_string(),
            detail: format!("the worker `{}` answered hello with {other:?}", exe.display()),
        })),
        Err(Trouble::Died) => {
            let (status, stderr_tail) = process.reap();
            Err(RunFailure::Crashed { status, stderr_tail })
        }
        Err(Trouble::TimedOut) => Err(RunFailure::TimedOut { after_s: after.as_secs_f64() }),
    }
}

/// A failure as one line, for an error that is not a case's verdict (opening a device).
fn describe_failure(f: &RunFailure) -> String {
    match f {
        RunFailure::Device(e) => e.to_string(),
        RunFailure::Panicked(m) => format!("the device panicked: {m}"),
        RunFailure::Crashed { status, stderr_tail } => {
            let tail = stderr_tail.trim().replace('\n', " | ");
            if tail.is_empty() {
                format!("the worker died opening the device: {status}")
            } else {
                format!("the worker died opening the device: {status}; stderr: {tail}")
            }
        }
        RunFailure::TimedOut { after_s } => format!("the worker did not open the device within {after_s} s"),
    }
}

/// Rebuild what the device said in the worker, reading exactly as it would have in process
/// (results must not depend on the isolation).
fn run_failure(w: WireError, device: &str, case: Option<&OpCase>) -> RunFailure {
    match (w.kind.as_str(), w.error.as_deref(), w.device, w.detail) {
        ("unsupported", ..) => RunFailure::Device(DeviceError::Unsupported {
            device: device.to_string(),
            op: case.map_or(devices::Op::Quantize, |c| c.op),
            scheme: case.map(|c| c.scheme.to_string()).unwrap_or_default(),
            reason: w.message,
        }),
        ("panicked", ..) => RunFailure::Panicked(w.message),
        (_, Some("not_found"), Some(id), Some(detail)) => RunFailure::Device(DeviceError::NotFound { id, detail }),
        (_, Some("failed"), Some(device), Some(detail)) => RunFailure::Device(DeviceError::Failed { device, detail }),
        // Other errors (a bad case, the reference refusing inputs) are rebuilt from their text:
        // `RefError::Unsupported` displays as `{op}: {detail}`, which splits any `a: b` back whole.
        _ => RunFailure::Device(match w.message.split_once(": ") {
            Some((op, detail)) => {
                DeviceError::Ref(kernels_ref::RefError::Unsupported { op: op.to_string(), detail: detail.to_string() })
            }
            None => DeviceError::Failed { device: device.to_string(), detail: w.message },
        }),
    }
}

/// Why a worker gave no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trouble {
    /// It closed its stdout: it died (or is dying).
    Died,
    /// No response within the timeout: it is still running, stuck.
    TimedOut,
}

/// One running `qdiff worker`: its pipes, a thread reading its stdout into a channel (so a
/// response can be waited for with a timeout), and a thread keeping the tail of its stderr.
#[derive(Debug)]
struct WorkerProcess {
    child: Child,
    stdin: ChildStdin,
    /// Lines of its stdout; `None` at end of file.
    lines: Receiver<Option<String>>,
    /// The last [`STDERR_TAIL_LINES`] lines of its stderr.
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// Signalled when its stderr reaches end of file.
    stderr_done: Receiver<()>,
}

impl WorkerProcess {
    fn spawn(exe: &Path, id: &str) -> std::io::Result<Self> {
        let mut child = Command::new(exe)
            .args(["worker", "--device", id])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other("the worker's pipes were not set up"));
        };
        let (line_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if line_tx.send(Some(String::from_utf8_lossy(&buf).into_owned())).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = line_tx.send(None);
        });
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (done_tx, stderr_done) = mpsc::channel();
        {
            let tail = Arc::clone(&tail);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut buf = Vec::new();
                while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                    push_tail(&tail, String::from_utf8_lossy(&buf).trim_end().to_string());
                    buf.clear();
                }
                let _ = done_tx.send(());
            });
        }
        Ok(WorkerProcess { child, stdin, lines, stderr: tail, stderr_done })
    }

    /// Send one request line and wait up to `timeout` for the response line. Lines that are not
    /// responses (stray output of device code) go to the stderr tail.
    fn request(&mut self, line: &str, timeout: Duration) -> Result<Response, Trouble> {
        let sent = self
            .stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.stdin.write_all(b"\n"))
            .and_then(|()| self.stdin.flush());
        if sent.is_err() {
            return Err(Trouble::Died);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(Some(text)) => match serde_json::from_str::<Response>(&text) {
                    Ok(r) => return Ok(r),
                    Err(_) => push_tail(&self.stderr, format!("(stdout) {}", text.trim_end())),
                },
                Ok(None) | Err(RecvTimeoutError::Disconnected) => return Err(Trouble::Died),
                Err(RecvTimeoutError::Timeout) => return Err(Trouble::TimedOut),
            }
        }
    }

    /// After its stdout closed: how it ended and the tail of its stderr.
    fn reap(&mut self) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break describe_exit(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Ok(None) => {
                    // It closed its stdout but lives on: as good as dead to us.
                    let _ = self.child.kill();
                    break match self.child.wait() {
                        Ok(s) => format!("closed its output and was killed ({})", describe_exit(s)),
                        Err(e) => format!("closed its output; waiting for it failed: {e}"),
                    };
                }
                Err(e) => break format!("unknown (waiting for it failed: {e})"),
            }
        };
        // Its stderr closes when it exits; the reader thread needs a moment to drain it.
        let _ = self.stderr_done.recv_timeout(Duration::from_secs(2));
        let tail = self.stderr.lock().map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n")).unwrap_or_default();
        (status, tail)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        // Workers hold no state worth a graceful exit; a stuck one must not outlive its parent.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keep the last [`STDERR_TAIL_LINES`] lines (each cut to a readable length).
fn push_tail(tail: &Mutex<VecDeque<String>>, mut line: String) {
    if line.len() > 400 {
        let mut cut = 400;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str(" ...");
    }
    if let Ok(mut t) = tail.lock() {
        if t.len() == STDERR_TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line);
    }
}

/// How a process ended: `signal 11 (SIGSEGV)`, `exit status 101`.
fn describe_exit(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("signal {sig} ({})", signal_name(sig));
        }
    }
    match status.code() {
        Some(c) => format!("exit status {c}"),
        None => status.to_string(),
    }
}

/// The name of a signal a device process dies of.
#[cfg(unix)]
fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGABRT => "SIGABRT",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGQUIT => "SIGQUIT",
        _ => "unknown signal",
    }
}

/// A device as results and case files record it.
pub fn device_entry(d: &dyn Executor) -> reports::DeviceEntry {
    crate::meta::device_entry(d.info())
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::case::Op;
    use kernels_ref::tensor::Matrix;

    /// A device that gives the reference's outputs, with one bit flipped on every `flip_every`th run.
    struct Flaky {
        inner: InProcess,
        runs: usize,
        flip_every: usize,
        fail_on: usize,
    }

    impl Executor for Flaky {
        fn info(&self) -> &DeviceInfo {
            self.inner.info()
        }
        fn supports(&self, op: devices::Op, scheme: &Scheme, variant: &Variant) -> Support {
            self.inner.supports(op, scheme, variant)
        }
        fn execute(&mut self, case: &OpCase) -> Result<Outputs, RunFailure> {
            self.runs += 1;
            if self.runs == self.fail_on {
                return Err(RunFailure::TimedOut { after_s: 2.0 });
            }
            let mut out = self.inner.execute(case)?;
            if self.runs % self.flip_every == 0 {
                out.values[0] = f32::from_bits(out.values[0].to_bits() ^ 1);
            }
            Ok(out)
        }
    }

    fn case() -> OpCase {
        let s: Scheme = "w4g32-sym-ao".parse().unwrap();
        let w = Matrix::new(2, 64, (0..128).map(|i| (i as f32 * 0.61).cos()).collect()).unwrap();
        OpCase {
            op: Op::Dequantize,
            scheme: s,
            variant: Variant::default(),
            inject: None,
            wq: Some(s.quantize(&w).unwrap()),
            w: Some(w),
            x: None,
            ids: None,
        }
    }

    #[test]
    fn runs_that_disagree_are_nondeterministic_and_say_how_many_outputs() {
        let case = case();
        let exp = expect(&case);
        let mut flaky = Flaky { inner: InProcess::open("ref").unwrap(), runs: 0, flip_every: 3, fail_on: 0 };
        let (j, _) = judge_repeated(&case, &exp, execute_repeated(&mut flaky, &case, 5));
        assert_eq!(j.verdict, Verdict::Nondeterministic);
        assert!(j.note.as_deref().unwrap().starts_with("5 runs, 2 distinct outputs; the first run was exact"), "{j:?}");
        assert!(j.metrics.is_some());

        let mut steady = Flaky { inner: InProcess::open("ref").unwrap(), runs: 0, flip_every: 100, fail_on: 0 };
        let (j, _) = judge_repeated(&case, &exp, execute_repeated(&mut steady, &case, 5));
        assert_eq!(j.verdict, Verdict::Exact, "{j:?}");
        assert_eq!(steady.runs, 5);
    }

    #[test]
    fn a_later_run_that_fails_is_that_failure() {
        let case = case();
        let exp = expect(&case);
        let mut dev = Flaky { inner: InProcess::open("ref").unwrap(), runs: 0, flip_every: 2, fail_on: 3 };
        let (j, out) = judge_repeated(&case, &exp, execute_repeated(&mut dev, &case, 5));
        assert_eq!(j.verdict, Verdict::Timeout, "{j:?}");
        assert!(j.note.as_deref().unwrap().starts_with("run 3 of 5: no answer"), "{j:?}");
        assert!(out.is_none());
        assert_eq!(dev.runs, 3, "runs stop at the first failure");
    }

    #[test]
    fn exit_statuses_read_as_signals_or_codes() {
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(describe_exit(std::process::ExitStatus::from_raw(11)), "signal 11 (SIGSEGV)");
            assert_eq!(describe_exit(std::process::ExitStatus::from_raw(101 << 8)), "exit status 101");
        }
    }
}

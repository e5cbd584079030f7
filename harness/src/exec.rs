//! Running one op case on a device and judging it: the step `qdiff check`, `qdiff fuzz` and
//! `qdiff repro` share.
//!
//! An [`Executor`] runs cases on one device. [`InProcess`] calls the device in this process (a
//! panic becomes an `error`); an isolated executor (a child `qdiff worker` process) turns a dead
//! or hung device into `crash` / `timeout` results instead of taking the run down. [`judge`]
//! turns what came back into a verdict against the reference.

use crate::compare::compare;
use devices::case::{OpCase, Outputs, Variant};
use devices::reference::{truth, RefDevice};
use devices::{Device, DeviceError, DeviceInfo, Support};
use kernels_ref::scheme::Scheme;
use reports::{Metrics, Verdict};

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
            let tail =
                if stderr_tail.trim().is_empty() { String::new() } else { format!("; stderr: {}", stderr_tail.trim()) };
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

/// Open an executor for device `id`.
pub fn open_executor(
    id: &str,
    isolation: Isolation,
    case_timeout: std::time::Duration,
) -> Result<Box<dyn Executor>, DeviceError> {
    let _ = (isolation, case_timeout);
    Ok(Box::new(InProcess::open(id)?))
}

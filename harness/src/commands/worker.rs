//! `qdiff worker --device ID`: device work in a child process, so that a device that segfaults,
//! aborts or hangs takes down only the worker, never the run (crash isolation; the parent side is
//! [`crate::exec::Worker`]).
//!
//! # Protocol (version [`PROTOCOL`])
//!
//! One JSON object per line each way; the parent writes a request on the worker's stdin and
//! reads exactly one response line from its stdout. Requests (`"req"`):
//!
//! - `{"req": "hello", "protocol": 1}` → `{"resp": "hello", "protocol": 1, "info": DeviceInfo}`.
//!   The worker opens its device before answering; if it cannot, it answers `error` and exits.
//! - `{"req": "supports", "op": "linear", "scheme": "w4g32-sym-ao", "variant": {..}}` →
//!   `{"resp": "support", "support": {"support": "supported"}}` (serde of [`Support`]).
//! - `{"req": "run", "case": CASE}` → `{"resp": "outputs", "outputs": WIRE_OUTPUTS}` or
//!   `{"resp": "error", "kind": "unsupported" | "error" | "panicked", "message": ".."}`.
//!
//! Floats must cross the pipe exactly, NaN and infinities included (JSON numbers cannot carry
//! them), so CASE is a case file ([`CaseFile`], whose tensors are bit patterns) without its
//! human-readable `data` copies, and WIRE_OUTPUTS ([`WireOutputs`]) carries every f32 as its
//! `u32` bit pattern. Anything on stdout that is not a response line is ignored by the parent;
//! on unix the worker also points fd 1 at stderr so a driver's stray `printf` cannot corrupt it.
//!
//! The process-killing faults are committed here and only here: a case injected with
//! [`Fault::Crash`] kills the worker with SIGSEGV, one with [`Fault::Hang`] never answers.

use crate::casefile::CaseFile;
use crate::Exit;
use devices::case::{Fault, Op, OpCase, Outputs, Timing, Variant};
use devices::{Device, DeviceError, DeviceInfo, Support};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};

/// The protocol version spoken by this build's worker and parent.
pub const PROTOCOL: u32 = 1;

/// `qdiff worker`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// The device this worker runs.
    #[arg(long)]
    pub device: String,
}

/// A request from the parent (one line of the worker's stdin).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "req", rename_all = "snake_case")]
pub enum Request {
    /// Check the protocol version and get the device's identity.
    Hello {
        /// The protocol the parent speaks.
        protocol: u32,
    },
    /// Whether the device runs an (op, scheme, variant).
    Supports {
        /// The op.
        op: Op,
        /// The scheme name (with its `@dtype`).
        scheme: String,
        /// The device-side variant.
        variant: Variant,
    },
    /// Run one case.
    Run {
        /// The case, tensors as bit patterns.
        case: Box<CaseFile>,
    },
}

/// A response from the worker (one line of its stdout).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "resp", rename_all = "snake_case")]
pub enum Response {
    /// Answer to `hello`.
    Hello {
        /// The protocol the worker speaks.
        protocol: u32,
        /// The device it opened.
        info: DeviceInfo,
    },
    /// Answer to `supports`.
    Support {
        /// Whether, and if not why.
        support: Support,
    },
    /// The outputs of a `run`.
    Outputs {
        /// The outputs, floats as bit patterns.
        outputs: WireOutputs,
    },
    /// A request that failed (the device refused or failed a case, or could not be opened).
    Error(WireError),
}

/// A device error as it crosses the pipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// `unsupported` (the device does not run this; `message` is the reason), `error` (it
    /// failed; `message` is the whole error) or `panicked` (the device code panicked).
    pub kind: String,
    /// What happened.
    pub message: String,
    /// For `error`, which [`DeviceError`] it was (`not_found`, `failed`, `bad_case`, `ref`), so
    /// the parent can rebuild one that reads exactly the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The device id (`not_found`) or device (`failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The detail (`not_found`, `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl WireError {
    /// A device error for the wire.
    pub fn from_device(e: &DeviceError) -> Self {
        let (kind, message, error, device, detail) = match e {
            DeviceError::Unsupported { reason, .. } => ("unsupported", reason.clone(), None, None, None),
            DeviceError::NotFound { id, detail } => {
                ("error", e.to_string(), Some("not_found"), Some(id.clone()), Some(detail.clone()))
            }
            DeviceError::Failed { device, detail } => {
                ("error", e.to_string(), Some("failed"), Some(device.clone()), Some(detail.clone()))
            }
            DeviceError::BadCase { .. } => ("error", e.to_string(), Some("bad_case"), None, None),
            DeviceError::Ref(_) => ("error", e.to_string(), Some("ref"), None, None),
            DeviceError::Model(_) => ("error", e.to_string(), Some("model"), None, None),
        };
        WireError { kind: kind.into(), message, error: error.map(Into::into), device, detail }
    }

    /// A plain failure (bad request, protocol mismatch).
    fn failed(message: String) -> Self {
        WireError { kind: "error".into(), message, error: None, device: None, detail: None }
    }
}

/// [`Outputs`] with every f32 as its bit pattern, so NaN, infinities and negative zero survive
/// the JSON line exactly.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WireOutputs {
    /// `values`, as `f32::to_bits`.
    pub values: Vec<u32>,
    /// Shape of `values`.
    pub shape: Vec<usize>,
    /// Integer outputs (exact in JSON).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ints: BTreeMap<String, Vec<i64>>,
    /// Float side outputs, as bit patterns.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub floats: BTreeMap<String, Vec<u32>>,
    /// Kernel time (a finite f64; a non-finite one is dropped rather than sent as `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
}

impl From<&Outputs> for WireOutputs {
    fn from(o: &Outputs) -> Self {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        WireOutputs {
            values: bits(&o.values),
            shape: o.shape.clone(),
            ints: o.ints.clone(),
            floats: o.floats.iter().map(|(k, v)| (k.clone(), bits(v))).collect(),
            timing: o.timing.filter(|t| t.seconds.is_finite()),
        }
    }
}

impl From<WireOutputs> for Outputs {
    fn from(w: WireOutputs) -> Self {
        let floats = |v: Vec<u32>| v.into_iter().map(f32::from_bits).collect::<Vec<f32>>();
        Outputs {
            values: floats(w.values),
            shape: w.shape,
            ints: w.ints,
            floats: w.floats.into_iter().map(|(k, v)| (k, floats(v))).collect(),
            timing: w.timing,
        }
    }
}

/// A case as it crosses the pipe: its case file without the human-readable `data` copies (the
/// bit patterns are authoritative and half the size).
pub fn wire_case(case: &OpCase) -> CaseFile {
    let mut cf = CaseFile::new(case, Vec::new(), 0, None, None, None, None);
    let inputs = &mut cf.inputs;
    for t in [inputs.w.as_mut(), inputs.x.as_mut()].into_iter().flatten() {
        t.data = None;
    }
    if let Some(q) = inputs.wq.as_mut() {
        q.scales.data = None;
        for t in [q.zero_points.as_mut(), q.lut.as_mut()].into_iter().flatten() {
            t.data = None;
        }
    }
    cf
}

/// Run a worker: open the device, answer requests until stdin closes.
pub fn run(args: WorkerArgs) -> anyhow::Result<Exit> {
    let mut proto = protocol_stdout();
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut device: Option<Box<dyn Device>> = None;
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(Exit::Clean);
        }
        if line.trim().is_empty() {
            continue;
        }
        let response = match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::Error(WireError::failed(format!("worker: malformed request: {e}"))),
            Ok(Request::Hello { protocol }) if protocol != PROTOCOL => Response::Error(WireError::failed(format!(
                "worker: the parent speaks protocol {protocol}, this worker {PROTOCOL} (mixed qdiff builds?)"
            ))),
            Ok(Request::Hello { .. }) => match devices::open(&args.device) {
                Ok(d) => {
                    let info = d.info().clone();
                    device = Some(d);
                    Response::Hello { protocol: PROTOCOL, info }
                }
                Err(e) => {
                    // The parent reports it; nothing more this worker can do.
                    send(&mut proto, &Response::Error(WireError::from_device(&e)))?;
                    return Ok(Exit::CouldNotRun);
                }
            },
            Ok(req) => match device.as_mut() {
                None => Response::Error(WireError::failed("worker: `hello` must come first".into())),
                Some(dev) => answer(dev.as_mut(), req),
            },
        };
        send(&mut proto, &response)?;
    }
}

/// Answer a `supports` or `run` request on an open device.
fn answer(dev: &mut dyn Device, req: Request) -> Response {
    match req {
        Request::Hello { .. } => Response::Error(WireError::failed("worker: `hello` twice".into())),
        Request::Supports { op, scheme, variant } => match scheme.parse() {
            Ok(s) => Response::Support { support: dev.supports(op, &s, &variant) },
            Err(e) => Response::Error(WireError::failed(format!("worker: scheme {scheme}: {e}"))),
        },
        Request::Run { case } => {
            let case = match case.op_case() {
                Ok(c) => c,
                Err(e) => return Response::Error(WireError::failed(format!("worker: bad case: {e:#}"))),
            };
            if let Some(f) = case.inject.filter(|f| f.kills_process() && f.applies(case.op, &case.scheme).is_ok()) {
                commit(f);
            }
            // The worker commits the process-killing faults itself; the device never sees them.
            let case = OpCase { inject: case.inject.filter(|f| !f.kills_process()), ..case };
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dev.run(&case))) {
                Ok(Ok(out)) => Response::Outputs { outputs: WireOutputs::from(&out) },
                Ok(Err(e)) => Response::Error(WireError::from_device(&e)),
                Err(panic) => Response::Error(WireError {
                    kind: "panicked".into(),
                    message: panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into()),
                    error: None,
                    device: None,
                    detail: None,
                }),
            }
        }
    }
}

/// Write one response line and flush it (the parent is waiting for it).
fn send(out: &mut dyn Write, r: &Response) -> anyhow::Result<()> {
    let mut text = serde_json::to_vec(r)?;
    text.push(b'\n');
    out.write_all(&text)?;
    out.flush()?;
    Ok(())
}

/// Commit a process-killing fault: what a crashing or hung driver does to the process.
fn commit(f: Fault) {
    match f {
        Fault::Crash => crash(),
        Fault::Hang => hang(),
        _ => {}
    }
}

/// Die with SIGSEGV, as a driver that dereferences a bad pointer does.
#[cfg(unix)]
fn crash() -> ! {
    eprintln!("qdiff worker: injected fault `crash`: raising SIGSEGV");
    // SAFETY: plain libc calls with valid arguments. Rust's runtime installs its own SIGSEGV
    // handler (stack-overflow detection) that returns for a raised signal, so the default action
    // is restored first; no core file is wanted for a deliberate crash.
    unsafe {
        let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        libc::raise(libc::SIGSEGV);
    }
    std::process::abort()
}

/// Die abnormally (no SIGSEGV to raise here).
#[cfg(not(unix))]
fn crash() -> ! {
    eprintln!("qdiff worker: injected fault `crash`: aborting");
    std::process::abort()
}

/// Never answer, as a hung queue does; the parent's case timeout kills the worker. If the parent
/// itself dies first (`kill -9`), the orphan notices and exits rather than sleeping forever.
fn hang() -> ! {
    eprintln!("qdiff worker: injected fault `hang`: never answering");
    let parent = parent_pid();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if parent_pid() != parent {
            std::process::exit(3);
        }
    }
}

/// The parent process id (it changes when the parent dies and the worker is reparented).
#[cfg(unix)]
fn parent_pid() -> u32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    unsafe { libc::getppid() as u32 }
}

#[cfg(not(unix))]
fn parent_pid() -> u32 {
    0
}

/// Where protocol lines go. On unix the real stdout is kept for them alone and fd 1 is pointed at
/// stderr, so that device code printing to stdout lands in the captured stderr tail instead of
/// the middle of a response line.
#[cfg(unix)]
fn protocol_stdout() -> Box<dyn Write> {
    use std::os::fd::FromRawFd;
    // SAFETY: dup/dup2 on the standard descriptors; on success the duplicate is a fresh descriptor
    // this process owns and hands to exactly one File.
    unsafe {
        let fd = libc::dup(1);
        if fd >= 0 && libc::dup2(2, 1) >= 0 {
            return Box::new(std::io::BufWriter::new(std::fs::File::from_raw_fd(fd)));
        }
    }
    Box::new(std::io::stdout())
}

#[cfg(not(unix))]
fn protocol_stdout() -> Box<dyn Write> {
    Box::new(std::io::stdout())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_cross_the_wire_bit_for_bit() {
        let odd = vec![f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, f32::MIN_POSITIVE / 3.0, 0.1];
        let mut out = Outputs { values: odd.clone(), shape: vec![1, odd.len()], ..Outputs::default() };
        out.floats.insert("scales".into(), odd.clone());
        out.ints.insert("q".into(), vec![i64::MIN, -1, 0, i64::MAX]);
        let line = serde_json::to_string(&Response::Outputs { outputs: WireOutputs::from(&out) }).unwrap();
        let Response::Outputs { outputs } = serde_json::from_str(&line).unwrap() else { panic!("{line}") };
        let back = Outputs::from(outputs);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.values), bits(&odd));
        assert_eq!(bits(&back.floats["scales"]), bits(&odd));
        assert_eq!(back.ints, out.ints);
    }

    #[test]
    fn a_case_crosses_the_wire_exactly() {
        let s: kernels_ref::scheme::Scheme = "w4g32-asym-ao".parse().unwrap();
        let data: Vec<f32> = (0..128).map(|i| if i == 5 { -0.0 } else { (i as f32 * 0.37).sin() }).collect();
        let w = kernels_ref::tensor::Matrix::new(2, 64, data).unwrap();
        let mut x = kernels_ref::tensor::Matrix::new(1, 64, vec![0.5; 64]).unwrap();
        x.data[3] = f32::NAN;
        let case = OpCase {
            op: Op::Linear,
            scheme: s,
            variant: Variant::default(),
            inject: Some(Fault::Crash),
            wq: Some(s.quantize(&w).unwrap()),
            w: Some(w),
            x: Some(x),
            ids: None,
        };
        let line = serde_json::to_string(&Request::Run { case: Box::new(wire_case(&case)) }).unwrap();
        let Request::Run { case: back } = serde_json::from_str(&line).unwrap() else { panic!("{line}") };
        let back = back.op_case().unwrap();
        assert_eq!(back.x.as_ref().unwrap().data[3].to_bits(), f32::NAN.to_bits());
        assert_eq!(back.w.as_ref().unwrap().data[5].to_bits(), (-0.0f32).to_bits());
        assert_eq!(back.wq, case.wq);
        assert_eq!((back.op, back.scheme, back.inject), (case.op, case.scheme, case.inject));
    }
}

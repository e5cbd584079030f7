//! What a device is: its identity and capabilities ([`DeviceInfo`]), what it supports
//! ([`Support`]), and running one op case ([`Device::run`]).

use crate::bench::{BenchPlan, Peaks, Samples};
use crate::case::{Op, OpCase, Outputs, Variant};
use kernels_ref::scheme::Scheme;
use kernels_ref::tensor::Matrix;
use models::QModel;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// The kind of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// The reference itself (the exact emulation every device is compared against).
    Ref,
    /// qdiff's production-like CPU kernels.
    Cpu,
    /// A Vulkan adapter through wgpu.
    Vulkan,
    /// A Metal adapter through wgpu.
    Metal,
}

impl DeviceKind {
    /// The id prefix (`ref`, `cpu`, `vulkan`, `metal`).
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Ref => "ref",
            DeviceKind::Cpu => "cpu",
            DeviceKind::Vulkan => "vulkan",
            DeviceKind::Metal => "metal",
        }
    }
}

/// Identity and capabilities of a device, as `qdiff devices` and `results.json` show them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// `ref`, `cpu`, `vulkan:0`, `metal:0`, ...
    pub id: String,
    /// The kind.
    pub kind: DeviceKind,
    /// Adapter or CPU name.
    pub name: String,
    /// Driver name and version (`llvmpipe`, `Mesa 22.3.6 (LLVM 15.0.6)`), or qdiff's version for
    /// `ref` and `cpu`.
    pub driver: String,
    /// The API backend (`vulkan`, `metal`, `native`).
    pub backend: String,
    /// Capabilities and probed properties (fp16, subgroup size, timestamp queries, whether `fma`
    /// is fused, `round` ties, fp32→fp16 rounding, denormal flushing, threads, SIMD level, ...).
    pub features: BTreeMap<String, serde_json::Value>,
}

/// Whether a device can run an (op, scheme, variant), and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "support", content = "reason")]
pub enum Support {
    /// It runs.
    Supported,
    /// It does not, for the reason given (shown to the user as the `unsupported` verdict's note).
    Unsupported(String),
}

impl Support {
    /// Shorthand for an unsupported reason.
    pub fn no(reason: impl Into<String>) -> Self {
        Support::Unsupported(reason.into())
    }
    /// Whether supported.
    pub fn is_supported(&self) -> bool {
        matches!(self, Support::Supported)
    }
}

/// Why a device could not be opened or could not run a case.
#[derive(Debug, Error)]
pub enum DeviceError {
    /// No device with that id on this machine; says what exists and how to get more.
    #[error("no device `{id}`: {detail}")]
    NotFound { id: String, detail: String },
    /// The case asks for something the device does not support.
    #[error("{device}: {op} {scheme} is not supported: {reason}")]
    Unsupported { device: String, op: Op, scheme: String, reason: String },
    /// The case itself is malformed (missing input, inconsistent shapes).
    #[error("{op} {scheme}: bad case: {detail}")]
    BadCase { op: Op, scheme: String, detail: String },
    /// The reference refused the inputs.
    #[error(transparent)]
    Ref(#[from] kernels_ref::RefError),
    /// A model could not be prepared or run (bad tokens, a scheme that does not fit a weight).
    #[error(transparent)]
    Model(#[from] models::ModelError),
    /// The device failed while running (shader compile error, out of memory, device lost, a
    /// poisoned output that was never written, a timeout waiting for the queue).
    #[error("{device}: {detail}")]
    Failed { device: String, detail: String },
}

/// A device that runs op cases. Object safe; a handful of methods.
pub trait Device: Send {
    /// Identity and capabilities.
    fn info(&self) -> &DeviceInfo;

    /// Whether the device runs `op` with `scheme` in `variant`; when not, the reason.
    fn supports(&self, op: Op, scheme: &Scheme, variant: &Variant) -> Support;

    /// Run one case and return its outputs (names per op: see [`Outputs`]). A case the device does
    /// not support returns [`DeviceError::Unsupported`]; a device failure returns
    /// [`DeviceError::Failed`] and leaves the device usable for the next case where it can.
    fn run(&mut self, case: &OpCase) -> Result<Outputs, DeviceError>;

    /// What reproduces `case` on this device outside qdiff, for a driver bug report: per launch
    /// the kernel source (WGSL and SPIR-V), its bindings, workgroup counts, uniform values and the
    /// bytes of every input, as a JSON object (`qdiff_export: 1`; the GPU runner documents the
    /// fields). Nothing is launched. `None` where the device has no kernel to hand over (`ref`,
    /// `cpu`: qdiff's own Rust code is the reproduction) or cannot run the case.
    fn export(&mut self, _case: &OpCase) -> Option<serde_json::Value> {
        None
    }

    /// Benchmark `case`: prepare it once (pack or upload the weights, build the kernels), check
    /// it runs, then time the kernel alone as `plan` says (device time where the device has
    /// timestamps, else wall clock around submit + wait). Support and errors are as [`run`]'s.
    ///
    /// [`run`]: Device::run
    fn bench(&mut self, case: &OpCase, plan: &BenchPlan) -> Result<Samples, DeviceError>;

    /// Measure this device's peaks with its own kernels: stream-read and copy bandwidth over a
    /// buffer larger than its last-level cache, and FMA throughput (see [`crate::bench`]).
    fn peaks(&mut self, plan: &BenchPlan) -> Result<Peaks, DeviceError>;

    /// Load a quantized model for real forwards on this device: the weights are uploaded (or
    /// packed) once, and the returned session keeps its activations and KV cache on the device
    /// between layers and calls. A device or plan it cannot run is
    /// [`DeviceError::Unsupported`] with the reason.
    fn load_model(&mut self, model: &QModel) -> Result<Box<dyn ModelSession + '_>, DeviceError> {
        Err(DeviceError::Unsupported {
            device: self.info().id.clone(),
            op: Op::Linear,
            scheme: model.plan.label(),
            reason: "this device does not run whole models".into(),
        })
    }
}

/// A model loaded on a device: feeds tokens, keeps its KV cache, returns logits.
pub trait ModelSession {
    /// Feeds `tokens` at positions `self.len() ..` (a batched prefill when there are several),
    /// appends them to the KV cache, and returns the logits of every position fed, `[T, V]`.
    fn forward(&mut self, tokens: &[u32]) -> Result<Matrix, DeviceError>;
    /// Empties the KV cache (the weights stay loaded).
    fn reset(&mut self);
    /// Positions in the KV cache.
    fn len(&self) -> usize;
    /// Whether the cache is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Helper for runners: the named input of a case, or a [`DeviceError::BadCase`].
pub fn need<'a, T>(case: &OpCase, v: &'a Option<T>, name: &str) -> Result<&'a T, DeviceError> {
    v.as_ref().ok_or_else(|| DeviceError::BadCase {
        op: case.op,
        scheme: case.scheme.to_string(),
        detail: format!("input `{name}` is missing"),
    })
}

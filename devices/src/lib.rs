//! qdiff's devices: the [`Device`] trait and its runners.
//!
//! - [`case`]: an op case and a device's outputs (the names each op returns).
//! - [`device`]: the trait, device identity and capabilities, support and errors.
//! - [`reference`]: the `ref` device, the exact emulation of each scheme on kernels-ref that every
//!   other device is compared against.
//! - [`cpu`]: production-like quantized CPU kernels (integer dot products, fp16/fp32 accumulation,
//!   rayon), deliberately not the reference's arithmetic.
//! - [`gpu`]: one GPU runner on wgpu with WGSL kernels: Vulkan on Linux, Android and Windows,
//!   Metal on macOS and iOS.
//!
//! [`open`] turns a cli.md device id into a device; [`list`] is what `qdiff devices` prints.

pub mod bench;
pub mod case;
pub mod cpu;
pub mod device;
pub mod gpu;
pub mod reference;
mod reference_model;

pub use bench::{BenchPlan, Peaks, Samples};
pub use case::{Fault, Op, OpCase, Outputs, Storage, TexelBinding, TexelFormat, Timing, TimingMethod, Variant};
pub use device::{Device, DeviceError, DeviceInfo, DeviceKind, ModelSession, Support};

/// What this machine has: every device with its capabilities, and notes on what is missing and
/// the command that fixes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Listing {
    /// `ref`, `cpu`, then every GPU adapter found.
    pub devices: Vec<DeviceInfo>,
    /// Why a kind of device is absent, with the fix (e.g. no Vulkan loader or ICD).
    pub notes: Vec<String>,
}

/// List `ref`, `cpu` and every GPU adapter wgpu finds (each probed).
pub fn list() -> Listing {
    let mut devices = vec![reference::RefDevice::new().info().clone(), cpu::CpuDevice::new().info().clone()];
    let mut notes = Vec::new();
    match gpu::enumerate() {
        Ok(found) => devices.extend(found),
        Err(why) => notes.push(why),
    }
    if !devices.iter().any(|d| d.kind == DeviceKind::Vulkan || d.kind == DeviceKind::Metal) && notes.is_empty() {
        notes.push(gpu::missing_gpu_note());
    }
    Listing { devices, notes }
}

/// Open a device by its cli.md id: `ref`, `cpu`, `vulkan` (= `vulkan:0`), `vulkan:N`, `metal`, `metal:N`.
pub fn open(id: &str) -> Result<Box<dyn Device>, DeviceError> {
    let (kind, index) = match id.split_once(':') {
        Some((k, n)) => {
            let n = n.parse::<usize>().map_err(|_| DeviceError::NotFound {
                id: id.to_string(),
                detail: format!("`{n}` is not an adapter index (ids: ref, cpu, vulkan, vulkan:N, metal, metal:N)"),
            })?;
            (k, n)
        }
        None => (id, 0),
    };
    match kind {
        "ref" if !id.contains(':') => Ok(Box::new(reference::RefDevice::new())),
        "cpu" if !id.contains(':') => Ok(Box::new(cpu::CpuDevice::new())),
        "vulkan" => Ok(Box::new(gpu::open(DeviceKind::Vulkan, index)?)),
        "metal" => Ok(Box::new(gpu::open(DeviceKind::Metal, index)?)),
        _ => Err(DeviceError::NotFound {
            id: id.to_string(),
            detail: "device ids are ref, cpu, vulkan, vulkan:N, metal, metal:N (see `qdiff devices`)".into(),
        }),
    }
}

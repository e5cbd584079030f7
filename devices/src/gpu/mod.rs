//! The GPU runner: one code path on wgpu with WGSL kernels. The backend is chosen at build time
//! by platform: Vulkan on Linux, Android and Windows, Metal on macOS and iOS. Device ids are
//! `vulkan:N` / `metal:N`, N the index among that backend's adapters.
//!
//! - [`context`]: the wgpu compute skeleton wrapped once (buffers, textures, pipelines cached per
//!   kernel and specialization, poisoned outputs, error scopes, timestamp timing).
//! - [`ops`]: each op as WGSL launches, and what is supported.
//! - [`model`]: a whole model (`Device::load_model`): weights, activations and KV cache kept on
//!   the device, one command buffer per layer.
//! - [`bench`]: `Device::bench` (a case's programs prepared once, then timed launches) and
//!   `Device::peaks` (`kernels/peak.wgsl`).
//! - [`probe`]: the probed numerics of an adapter (fma fusion, `round` ties, conversions).
//! - [`spirv`]: naga translation and the SPIR-V patches passthrough kernels need.
//! - `kernels/*.wgsl`: the kernels, embedded.

mod bench;
mod context;
mod model;
mod ops;

pub use model::GpuSession;

pub use context::assembled_kernels;
pub mod probe;
pub mod spirv;

use crate::bench::{BenchPlan, Peaks, Samples};
use crate::case::{Op, OpCase, Outputs, Variant};
use crate::device::{Device, DeviceError, DeviceInfo, DeviceKind, ModelSession, Support};
use kernels_ref::scheme::Scheme;
use std::collections::BTreeMap;

/// The backend this build drives and its device kind.
fn backend() -> (wgpu::Backends, DeviceKind) {
    if cfg!(target_vendor = "apple") {
        (wgpu::Backends::METAL, DeviceKind::Metal)
    } else {
        (wgpu::Backends::VULKAN, DeviceKind::Vulkan)
    }
}

fn adapters() -> Vec<wgpu::Adapter> {
    let (backends, _) = backend();
    let desc = wgpu::InstanceDescriptor {
        backends,
        // No validation layers: they would intercept the deliberate format mismatches of the
        // fault-injection cases before the driver sees them.
        flags: wgpu::InstanceFlags::empty(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    };
    let instance = wgpu::Instance::new(desc);
    pollster::block_on(instance.enumerate_adapters(backends))
}

/// A GPU adapter through wgpu, opened with the features qdiff uses that it has.
pub struct GpuDevice {
    info: DeviceInfo,
    gpu: context::Gpu,
}

impl std::fmt::Debug for GpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuDevice").field("id", &self.info.id).finish_non_exhaustive()
    }
}

fn device_info(kind: DeviceKind, index: usize, gpu: &context::Gpu) -> DeviceInfo {
    let ai = gpu.adapter.get_info();
    let f = gpu.features;
    let l = &gpu.limits;
    let mut features: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut put = |k: &str, v: serde_json::Value| {
        features.insert(k.to_string(), v);
    };
    put("shader_f16", f.contains(wgpu::Features::SHADER_F16).into());
    put("subgroup", f.contains(wgpu::Features::SUBGROUP).into());
    put("subgroup_min_size", ai.subgroup_min_size.into());
    put("subgroup_max_size", ai.subgroup_max_size.into());
    put("timestamp_query", f.contains(wgpu::Features::TIMESTAMP_QUERY).into());
    put("timestamp_query_inside_passes", f.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES).into());
    put("passthrough", gpu.has_passthrough().into());
    put("max_workgroup_size", l.max_compute_invocations_per_workgroup.into());
    put("max_workgroup_size_x", l.max_compute_workgroup_size_x.into());
    put("device_type", format!("{:?}", ai.device_type).to_lowercase().into());
    put("vendor_id", ai.vendor.into());
    put("device_id", ai.device.into());
    let storage: Vec<serde_json::Value> = [
        crate::case::TexelFormat::R32Float,
        crate::case::TexelFormat::Rgba32Float,
        crate::case::TexelFormat::Rgba16Float,
        crate::case::TexelFormat::Rgba8Sint,
        crate::case::TexelFormat::Rgba32Sint,
        crate::case::TexelFormat::R32Sint,
    ]
    .into_iter()
    .filter(|&t| gpu.storage_format_ok(t))
    .map(|t| context::wgsl_format(t).into())
    .collect();
    put("storage_texture_formats", storage.into());
    for (k, v) in probe::probe(&gpu.adapter, &gpu.device, &gpu.queue) {
        features.insert(k, v);
    }
    DeviceInfo {
        id: format!("{}:{index}", kind.name()),
        kind,
        name: ai.name.clone(),
        driver: format!("{} {}", ai.driver, ai.driver_info).trim().to_string(),
        backend: kind.name().to_string(),
        features,
    }
}

/// Every GPU adapter found, opened and probed; `Err` says why none could be looked for.
pub fn enumerate() -> Result<Vec<DeviceInfo>, String> {
    let (_, kind) = backend();
    let mut out = Vec::new();
    for (i, a) in adapters().into_iter().enumerate() {
        match context::Gpu::open(a) {
            Ok(gpu) => out.push(device_info(kind, i, &gpu)),
            Err(e) => return Err(format!("{}:{i} was found but could not be opened: {e}", kind.name())),
        }
    }
    Ok(out)
}

/// Why no GPU adapter was found, and the command that fixes it.
pub fn missing_gpu_note() -> String {
    if cfg!(target_vendor = "apple") {
        "no Metal adapter found (Metal needs macOS 10.13+ / iOS 11+ on Apple hardware)".into()
    } else {
        "no Vulkan adapter found; on Debian/Ubuntu `apt-get install mesa-vulkan-drivers libvulkan1` gives lavapipe (Vulkan on the CPU)".into()
    }
}

/// Open adapter `index` of `kind`.
pub fn open(kind: DeviceKind, index: usize) -> Result<GpuDevice, DeviceError> {
    let id = format!("{}:{index}", kind.name());
    let (_, ours) = backend();
    if kind != ours {
        return Err(DeviceError::NotFound {
            id,
            detail: format!(
                "this build drives {} only ({} is {})",
                ours.name(),
                kind.name(),
                if kind == DeviceKind::Metal { "Apple-only" } else { "not used on Apple platforms" }
            ),
        });
    }
    let mut all = adapters();
    if index >= all.len() {
        let detail = if all.is_empty() {
            missing_gpu_note()
        } else {
            format!("there are {} {} adapter(s): {}:0..{}", all.len(), kind.name(), kind.name(), all.len() - 1)
        };
        return Err(DeviceError::NotFound { id, detail });
    }
    let gpu = context::Gpu::open(all.swap_remove(index))
        .map_err(|e| DeviceError::Failed { device: id.clone(), detail: e })?;
    let info = device_info(kind, index, &gpu);
    Ok(GpuDevice { info, gpu })
}

impl GpuDevice {
    /// An op error as the `DeviceError` [`Device::run`] returns for `case`.
    fn op_error(&self, case: &OpCase, e: ops::OpError) -> DeviceError {
        let device = self.info.id.clone();
        match e {
            ops::OpError::Unsupported(reason) => {
                DeviceError::Unsupported { device, op: case.op, scheme: case.scheme.to_string(), reason }
            }
            ops::OpError::BadCase(detail) => {
                DeviceError::BadCase { op: case.op, scheme: case.scheme.to_string(), detail }
            }
            ops::OpError::Failed(detail) => DeviceError::Failed { device, detail },
        }
    }

    /// [`Device::load_model`] with the concrete session type (which also reports the bytes it
    /// holds on the device).
    pub fn load_gpu_model(&mut self, model: &models::QModel) -> Result<GpuSession<'_>, DeviceError> {
        model::load(&mut self.gpu, &self.info.id, model)
    }
}

impl Device for GpuDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn supports(&self, op: Op, scheme: &Scheme, variant: &Variant) -> Support {
        ops::support(&self.gpu, op, scheme, variant)
    }

    fn run(&mut self, case: &OpCase) -> Result<Outputs, DeviceError> {
        ops::run(&mut self.gpu, case).map_err(|e| self.op_error(case, e))
    }

    /// Runs the case once through [`Device::run`] (so support, bad cases and failures are
    /// exactly `run`'s, and the kernels are compiled and their outputs checked against the
    /// sentinel), then captures the programs that run launches, creates their resources once
    /// and times all their dispatches as one command buffer per sample (see `gpu/bench.rs`).
    fn bench(&mut self, case: &OpCase, plan: &BenchPlan) -> Result<Samples, DeviceError> {
        self.run(case)?;
        let programs = ops::capture(&mut self.gpu, case).map_err(|e| self.op_error(case, e))?;
        if programs.is_empty() {
            // Only an embedding of no ids launches nothing; a time of nothing is no benchmark.
            return Err(DeviceError::BadCase {
                op: case.op,
                scheme: case.scheme.to_string(),
                detail: "the case launches no kernel: nothing to time".into(),
            });
        }
        bench::programs(&mut self.gpu, &programs, plan)
            .map_err(|detail| DeviceError::Failed { device: self.info.id.clone(), detail })
    }

    fn peaks(&mut self, plan: &BenchPlan) -> Result<Peaks, DeviceError> {
        bench::peaks(&mut self.gpu, plan).map_err(|detail| DeviceError::Failed { device: self.info.id.clone(), detail })
    }

    fn load_model(&mut self, model: &models::QModel) -> Result<Box<dyn ModelSession + '_>, DeviceError> {
        Ok(Box::new(self.load_gpu_model(model)?))
    }

    fn export(&mut self, case: &OpCase) -> Option<serde_json::Value> {
        let programs = ops::export(&mut self.gpu, case).ok()?;
        if programs.is_empty() {
            return None;
        }
        let i = &self.info;
        Some(serde_json::json!({
            "qdiff_export": 1,
            "device": {"id": i.id, "name": i.name, "driver": i.driver, "backend": i.backend},
            "op": case.op,
            "scheme": case.scheme.to_string(),
            "variant": case.variant,
            "inject": case.inject,
            "api": "WGSL kernels run through wgpu; on Vulkan: descriptor set 0, binding N as listed, \
                    storage buffers and storage images, push constants unused",
            "programs": programs,
        }))
    }
}

//! The GPU runner (being written in this change).
use crate::device::{DeviceError, DeviceInfo, DeviceKind};

/// A GPU adapter through wgpu.
pub type GpuDevice = crate::cpu::CpuDevice;

/// Every GPU adapter found, probed; `Err` says why none could be looked for.
pub fn enumerate() -> Result<Vec<DeviceInfo>, String> {
    Ok(Vec::new())
}

/// Why no GPU adapter was found, and the command that fixes it.
pub fn missing_gpu_note() -> String {
    "no Vulkan adapter found; on Debian/Ubuntu `apt-get install mesa-vulkan-drivers libvulkan1` gives lavapipe".into()
}

/// Open adapter `index` of `kind`.
pub fn open(kind: DeviceKind, index: usize) -> Result<GpuDevice, DeviceError> {
    Err(DeviceError::NotFound {
        id: format!("{}:{index}", kind.name()),
        detail: "the GPU runner is being written".into(),
    })
}

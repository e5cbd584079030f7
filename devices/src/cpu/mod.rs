//! The `cpu` runner (being written in this change).
use crate::case::{Op, OpCase, Outputs, Variant};
use crate::device::{Device, DeviceError, DeviceInfo, DeviceKind, Support};
use kernels_ref::scheme::Scheme;
use std::collections::BTreeMap;

/// qdiff's production-like CPU kernels.
#[derive(Debug)]
pub struct CpuDevice {
    info: DeviceInfo,
}

impl CpuDevice {
    /// The cpu device.
    pub fn new() -> Self {
        CpuDevice {
            info: DeviceInfo {
                id: "cpu".into(),
                kind: DeviceKind::Cpu,
                name: "cpu".into(),
                driver: env!("CARGO_PKG_VERSION").into(),
                backend: "native".into(),
                features: BTreeMap::new(),
            },
        }
    }
}

impl Default for CpuDevice {
    fn default() -> Self {
        Self::new()
    }
}

impl Device for CpuDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }
    fn supports(&self, _op: Op, _scheme: &Scheme, _variant: &Variant) -> Support {
        Support::no("the cpu runner is being written")
    }
    fn run(&mut self, case: &OpCase) -> Result<Outputs, DeviceError> {
        Err(DeviceError::Unsupported {
            device: "cpu".into(),
            op: case.op,
            scheme: case.scheme.to_string(),
            reason: "the cpu runner is being written".into(),
        })
    }
}

//! What the device benches share: deterministic inputs and the devices to run on.

use devices::DeviceKind;
use kernels_ref::tensor::Matrix;

/// A `[rows, cols]` matrix of values in [-1, 1], deterministic in `seed`.
pub fn matrix(rows: usize, cols: usize, seed: u32) -> Matrix {
    let data = (0..rows * cols).map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0);
    Matrix::new(rows, cols, data.collect()).expect("shape")
}

/// `cpu` and every Vulkan or Metal adapter this machine has.
pub fn device_ids() -> Vec<String> {
    let mut ids = vec!["cpu".to_string()];
    ids.extend(
        devices::list()
            .devices
            .into_iter()
            .filter(|d| matches!(d.kind, DeviceKind::Vulkan | DeviceKind::Metal))
            .map(|d| d.id),
    );
    ids
}

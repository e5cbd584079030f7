//! What the cpu device reports about itself: the CPU model, the thread pool, the SIMD features
//! the processor has, and the accumulation each scheme family's kernels use.

use crate::device::{DeviceInfo, DeviceKind};
use serde_json::json;
use std::collections::BTreeMap;

/// Probe the machine and describe the cpu device.
pub(crate) fn probe() -> DeviceInfo {
    let mut features = BTreeMap::new();
    features.insert("threads".into(), json!(rayon::current_num_threads()));
    features.insert("simd".into(), json!(simd_features()));
    features.insert(
        "simd_note".into(),
        json!("kernels are portable Rust, auto-vectorized for the build target; `simd` is what the processor offers"),
    );
    features.insert(
        "accumulation".into(),
        json!({
            "@f32": "fp32, 8 lanes reduced pairwise",
            "torchao, coremltools, fbgemm, palettization, ggml @f16/@bf16": "fp32 (PyTorch opmath), one rounding to T",
            "mlx @f16/@bf16": "T, one rounding per product and per add (MLX cpu _qmm)",
            "8da4w": "i32 per group; -ao/-xnn fp32 across groups (XNNPACK qd8-f32-qb4w order); -vk in T (ExecuTorch Vulkan DTYPE)",
        }),
    );
    features.insert(
        "fma".into(),
        json!("only where the framework fuses: q4_0-fused / q4_1-fused quantizers, the 8da4w group correction"),
    );
    features.insert(
        "packed_layouts".into(),
        json!("codes packed once per case in the scheme's layout, decoded inside the kernels"),
    );
    DeviceInfo {
        id: "cpu".into(),
        kind: DeviceKind::Cpu,
        name: cpu_model(),
        driver: format!("qdiff {}", env!("CARGO_PKG_VERSION")),
        backend: "native".into(),
        features,
    }
}

/// The CPU model from `/proc/cpuinfo` (`model name`), else the architecture.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let (key, value) = l.split_once(':')?;
                (key.trim() == "model name" && !value.trim().is_empty()).then(|| value.trim().to_string())
            })
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The SIMD extensions the processor reports.
fn simd_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        let probes: [(&str, bool); 7] = [
            ("sse4.2", std::arch::is_x86_feature_detected!("sse4.2")),
            ("avx", std::arch::is_x86_feature_detected!("avx")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("f16c", std::arch::is_x86_feature_detected!("f16c")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ("avx512vnni", std::arch::is_x86_feature_detected!("avx512vnni")),
        ];
        found.extend(probes.iter().filter(|p| p.1).map(|p| p.0));
    }
    #[cfg(target_arch = "aarch64")]
    {
        let probes: [(&str, bool); 4] = [
            ("neon", std::arch::is_aarch64_feature_detected!("neon")),
            ("fp16", std::arch::is_aarch64_feature_detected!("fp16")),
            ("dotprod", std::arch::is_aarch64_feature_detected!("dotprod")),
            ("i8mm", std::arch::is_aarch64_feature_detected!("i8mm")),
        ];
        found.extend(probes.iter().filter(|p| p.1).map(|p| p.0));
    }
    found
}

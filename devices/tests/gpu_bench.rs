//! `Device::bench` and `Device::peaks` on the first GPU adapter: a benchmark takes as many
//! samples as its plan says, all positive, timed by the device where the adapter reports
//! timestamp queries; what `run` refuses, `bench` refuses with the same error; a cold plan
//! (cache flush before every sample) works; the device still runs cases correctly afterwards;
//! the peaks are finite and positive and were measured over a buffer larger than any GPU's
//! last-level cache; the peak kernels translate to MSL. No speed is asserted (CI machines and
//! lavapipe vary too much): the figures are printed.
//!
//! No adapter: with `QDIFF_REQUIRE_VULKAN=1` the tests fail; otherwise they print why and pass.

use devices::bench::{BenchPlan, Samples};
use devices::case::{Op, OpCase, Variant};
use devices::device::{Device, DeviceError};
use devices::gpu::{self, GpuDevice};
use devices::TimingMethod;
use kernels_ref::scheme::Scheme;
use kernels_ref::tensor::Matrix;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The first GPU adapter, opened once for the whole test binary (`None`: skip).
fn device() -> Option<MutexGuard<'static, GpuDevice>> {
    static DEVICE: OnceLock<Option<Mutex<GpuDevice>>> = OnceLock::new();
    let opened = DEVICE.get_or_init(|| {
        let kind = if cfg!(target_vendor = "apple") {
            devices::device::DeviceKind::Metal
        } else {
            devices::device::DeviceKind::Vulkan
        };
        match gpu::open(kind, 0) {
            Ok(d) => Some(Mutex::new(d)),
            Err(e) => {
                let note = format!("{e} ({})", gpu::missing_gpu_note());
                if std::env::var("QDIFF_REQUIRE_VULKAN").is_ok_and(|v| v == "1") {
                    panic!("QDIFF_REQUIRE_VULKAN=1 but {note}");
                }
                eprintln!("skipping GPU bench tests: {note}");
                None
            }
        }
    });
    opened.as_ref().map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
}

/// The timing method a benchmark on `dev` must report: device time exactly when the adapter has
/// timestamp queries.
fn expected_method(dev: &GpuDevice) -> TimingMethod {
    match dev.info().features.get("timestamp_query") {
        Some(serde_json::Value::Bool(true)) => TimingMethod::Device,
        Some(serde_json::Value::Bool(false)) => TimingMethod::System,
        other => panic!("features[\"timestamp_query\"] is {other:?}, not a bool"),
    }
}

fn matrix(rows: usize, cols: usize, seed: u32) -> Matrix {
    let data = (0..rows * cols).map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0);
    Matrix::new(rows, cols, data.collect()).expect("shape")
}

/// A case built as `benches/cases.rs` builds them: `[n, k]` weights quantized by the scheme,
/// `[m, k]` activations.
fn case(op: Op, scheme: &str, m: usize, n: usize, k: usize) -> OpCase {
    let s: Scheme = scheme.parse().unwrap_or_else(|e| panic!("{scheme}: {e}"));
    let w = matrix(n, k, 1);
    OpCase {
        op,
        scheme: s,
        variant: Variant::default(),
        inject: None,
        wq: (op != Op::ActQuant && op != Op::Quantize).then(|| s.quantize(&w).expect("quantize")),
        w: Some(w),
        x: Some(matrix(m, k, 2)),
        ids: Some(vec![0, 3, 7]),
    }
}

fn plan(min: usize, max: usize, budget: Duration, cold: bool) -> BenchPlan {
    BenchPlan { warmup: 1, min_samples: min, max_samples: max, budget, cold }
}

/// Samples as the plan says and as the device must time them.
fn check_samples(what: &str, s: &Samples, plan: &BenchPlan, method: TimingMethod) {
    let n = s.seconds.len();
    assert!((plan.min_samples..=plan.max_samples).contains(&n), "{what}: {n} samples outside the plan's {plan:?}");
    assert!(s.seconds.iter().all(|t| t.is_finite() && *t > 0.0), "{what}: a sample is not positive: {:?}", s.seconds);
    assert_eq!(s.method, method, "{what}: timed by {:?}", s.method);
    assert!(s.min() <= s.median() && s.median() <= s.max(), "{what}: {s:?}");
}

#[test]
fn bench_times_cases_as_the_plan_says() {
    let Some(mut dev) = device() else { return };
    let method = expected_method(&dev);
    let linear = case(Op::Linear, "w4g32-sym-ao", 1, 256, 512);
    let before = dev.run(&linear).expect("run the linear case");

    // Budget spent at once: exactly the minimum count; budget never spent: exactly the maximum.
    let quick = plan(3, 50, Duration::ZERO, false);
    let s = dev.bench(&linear, &quick).expect("bench w4g32-sym-ao");
    check_samples("linear, no budget", &s, &quick, method);
    assert_eq!(s.seconds.len(), 3, "a spent budget stops at the minimum");
    let long = plan(2, 6, Duration::from_secs(3600), false);
    let s = dev.bench(&linear, &long).expect("bench w4g32-sym-ao");
    check_samples("linear, long budget", &s, &long, method);
    assert_eq!(s.seconds.len(), 6, "an unspent budget stops at the maximum");

    // The default plan, as `qdiff bench` runs it.
    let default = BenchPlan::default();
    let started = Instant::now();
    let s = dev.bench(&linear, &default).expect("bench w4g32-sym-ao");
    check_samples("linear, default plan", &s, &default, method);
    eprintln!(
        "{}: linear w4g32-sym-ao 1x256x512: run {:?}; bench {} samples, median {:.1} µs (min {:.1}, max {:.1}), {:?}, took {:.2} s",
        dev.info().name,
        before.timing,
        s.seconds.len(),
        s.median() * 1e6,
        s.min() * 1e6,
        s.max() * 1e6,
        s.method,
        started.elapsed().as_secs_f64()
    );

    // Several dispatches in one program (8da4w: activation qparams, codes, integer linear),
    // and a case whose program is a quantizer.
    for c in [case(Op::Linear, "8da4w-vk", 4, 64, 256), case(Op::Quantize, "w4g32-sym-ao", 1, 64, 256)] {
        let s = dev.bench(&c, &quick).unwrap_or_else(|e| panic!("bench {} {}: {e}", c.op, c.scheme));
        check_samples(&format!("{} {}", c.op, c.scheme), &s, &quick, method);
    }

    // Benchmarking leaves the device as it was: the case still runs, bit for bit.
    let after = dev.run(&linear).expect("run after bench");
    assert_eq!(
        before.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        after.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn cold_bench_flushes_before_every_sample() {
    let Some(mut dev) = device() else { return };
    let method = expected_method(&dev);
    let linear = case(Op::Linear, "w4g32-sym-ao", 1, 256, 512);
    let cold = plan(3, 4, Duration::from_millis(50), true);
    let s = dev.bench(&linear, &cold).expect("cold bench");
    check_samples("linear, cold", &s, &cold, method);
    // A second cold bench reuses the scratch buffer.
    let s = dev.bench(&linear, &cold).expect("cold bench again");
    check_samples("linear, cold again", &s, &cold, method);
    let warm = dev.bench(&linear, &plan(3, 4, Duration::from_millis(50), false)).expect("warm bench");
    eprintln!(
        "linear w4g32-sym-ao 1x256x512: cold median {:.1} µs, warm {:.1} µs",
        s.median() * 1e6,
        warm.median() * 1e6
    );
}

/// Whether `a` and `b` are the same error (variant and message).
fn same_error(a: &DeviceError, b: &DeviceError) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b) && a.to_string() == b.to_string()
}

#[test]
fn bench_refuses_what_run_refuses() {
    let Some(mut dev) = device() else { return };
    let quick = plan(2, 3, Duration::ZERO, false);
    let mut missing_x = case(Op::Linear, "w4g32-sym-ao", 1, 16, 64);
    missing_x.x = None;
    let mut huge_workgroup = case(Op::Linear, "w4g32-sym-ao", 1, 16, 64);
    huge_workgroup.variant.workgroup_size = Some(1 << 20);
    let mut wrong_k = case(Op::Linear, "w4g32-sym-ao", 1, 16, 64);
    wrong_k.x = Some(matrix(1, 32, 3));
    let refused = [
        // Unsupported: host-side ops and quantizers.
        (case(Op::Regroup, "w4g32-sym-ao", 1, 16, 64), "unsupported"),
        (case(Op::Quantize, "q4_0", 1, 16, 64), "unsupported"),
        (huge_workgroup, "unsupported"),
        // Malformed.
        (missing_x, "bad"),
        (wrong_k, "bad"),
    ];
    for (c, kind) in &refused {
        let ran = dev.run(c).expect_err("run refuses");
        let benched = dev.bench(c, &quick).expect_err("bench refuses");
        let expected = match kind {
            &"unsupported" => matches!(ran, DeviceError::Unsupported { .. }),
            _ => matches!(ran, DeviceError::BadCase { .. }),
        };
        assert!(expected, "{} {}: run gave {ran:?}", c.op, c.scheme);
        assert!(same_error(&ran, &benched), "{} {}: run gave {ran:?}, bench {benched:?}", c.op, c.scheme);
    }

    // An embedding of no ids runs (to nothing) but launches no kernel: nothing to time.
    let mut no_ids = case(Op::Embedding, "w4g32-sym-ao", 1, 16, 64);
    no_ids.ids = Some(vec![]);
    dev.run(&no_ids).expect("an empty embedding runs");
    let e = dev.bench(&no_ids, &quick).expect_err("nothing to time");
    assert!(matches!(e, DeviceError::BadCase { .. }), "{e:?}");

    // The device is usable after the refusals.
    let ok = case(Op::Linear, "w4g32-sym-ao", 1, 16, 64);
    dev.bench(&ok, &quick).expect("bench after refusals");
}

#[test]
fn peaks_are_finite_and_positive() {
    let Some(mut dev) = device() else { return };
    let method = expected_method(&dev);
    let started = Instant::now();
    let p = dev.peaks(&BenchPlan::default()).expect("peaks");
    let took = started.elapsed().as_secs_f64();
    eprintln!(
        "{} ({}): read {:.1} GB/s, copy {:.1} GB/s, fma {:.1} GFLOP/s over {} MiB, {:?}; peaks took {took:.2} s",
        dev.info().name,
        dev.info().driver,
        p.read_gbps,
        p.copy_gbps,
        p.fma_gflops,
        p.buffer_bytes >> 20,
        p.method
    );
    for (what, v) in [("read_gbps", p.read_gbps), ("copy_gbps", p.copy_gbps), ("fma_gflops", p.fma_gflops)] {
        assert!(v.is_finite() && v > 0.0, "{what} = {v}");
    }
    assert_eq!(p.peak_gbps(), p.read_gbps.max(p.copy_gbps));
    // WebGPU guarantees 128 MiB storage bindings: every GPU streams more than twice H100's 50 MB
    // L2, at most the 256 MiB the kernels ask for; a CPU driver twice a 32 MiB L3.
    let least = if dev.info().features.get("device_type") == Some(&"cpu".into()) { 64 << 20 } else { 128 << 20 };
    assert!((least..=256 << 20).contains(&p.buffer_bytes), "buffer of {} bytes", p.buffer_bytes);
    assert_eq!(p.buffer_bytes % 16, 0, "whole vec4s");
    assert_eq!(p.method, method);

    // A smaller plan: still a measurement.
    let small = plan(2, 3, Duration::ZERO, true);
    let q = dev.peaks(&small).expect("peaks, small plan");
    assert!([q.read_gbps, q.copy_gbps, q.fma_gflops].iter().all(|v| v.is_finite() && *v > 0.0), "{q:?}");

    // The peak kernels as compiled translate for Metal too (wgsl_translate.rs also walks the
    // file; this checks what was recorded as compiled).
    let assembled = gpu::assembled_kernels();
    let peak: Vec<_> = assembled.iter().filter(|(_, src)| src.contains("fn peak_fma")).collect();
    assert_eq!(peak.len(), 1, "peak.wgsl recorded once");
    gpu::spirv::wgsl_to_msl(&peak[0].1).expect("peak.wgsl → MSL");
    gpu::spirv::wgsl_to_spirv(&peak[0].1).expect("peak.wgsl → SPIR-V");
}

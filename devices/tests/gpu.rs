//! GPU conformance: one suite written once and run on every GPU adapter this machine has
//! (cubecl's `testgen` idea), every op × family × dtype × storage against the `ref` device.
//! Integer outputs and float side outputs must match bit for bit; `values` too, except `linear`,
//! which must lie within `(K + 4)·u·Σ_k|x̂_k·ŵ_k| + ulp_T(y_ref)/2` of the reference, plus
//! `(K + 4)·η_T/2` (η_T the smallest subnormal) for the absolute error of gradual underflow.
//!
//! Also pinned here: what lavapipe does with each injected fault (the format-mismatch faults are
//! undefined behaviour, so what the driver does is a finding; a driver update that changes it
//! fails this test on purpose).
//!
//! No adapter: with `QDIFF_REQUIRE_VULKAN=1` the tests fail; otherwise they print why and how to
//! get lavapipe, and pass.

use devices::case::{Fault, Op, OpCase, Outputs, Storage, TexelBinding, TexelFormat, Variant};
use devices::device::{Device, DeviceError, Support};
use devices::gpu::{self, GpuDevice};
use devices::reference::RefDevice;
use kernels_ref::dtype::DType;
use kernels_ref::scheme::Scheme;
use kernels_ref::tensor::Matrix;
use std::sync::{Mutex, OnceLock};

/// Every adapter, opened once for the whole test binary.
fn devices() -> &'static [Mutex<GpuDevice>] {
    static DEVICES: OnceLock<Vec<Mutex<GpuDevice>>> = OnceLock::new();
    DEVICES.get_or_init(|| {
        let kind = if cfg!(target_vendor = "apple") {
            devices::device::DeviceKind::Metal
        } else {
            devices::device::DeviceKind::Vulkan
        };
        let found = match gpu::enumerate() {
            Ok(f) => f,
            Err(e) => {
                eprintln!("GPU enumeration failed: {e}");
                Vec::new()
            }
        };
        let opened: Vec<Mutex<GpuDevice>> =
            (0..found.len()).filter_map(|i| gpu::open(kind, i).ok().map(Mutex::new)).collect();
        if opened.is_empty() {
            let note = gpu::missing_gpu_note();
            if std::env::var("QDIFF_REQUIRE_VULKAN").is_ok_and(|v| v == "1") {
                panic!("QDIFF_REQUIRE_VULKAN=1 but {note}");
            }
            eprintln!("skipping GPU tests: {note}");
        }
        opened
    })
}

/// A deterministic generator (no external crates needed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 11
    }
    /// Uniform in [-1, 1).
    fn f(&mut self) -> f32 {
        (self.next() as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
    }
}

/// A `[rows, cols]` matrix whose rows exercise the edge cases of schemes.md §7: random, all zero,
/// all negative, a tiny range (below the Vulkan/ET 6.1e-5 threshold), an outlier, ±amax ties,
/// all positive, then random rows.
fn matrix(rows: usize, cols: usize, seed: u64) -> Matrix {
    let mut r = Rng(seed);
    let mut data = Vec::with_capacity(rows * cols);
    for row in 0..rows {
        for c in 0..cols {
            let v = r.f();
            data.push(match row % 8 {
                1 => 0.0,
                2 => -(v.abs()) * 0.7 - 0.01,
                3 => v * 3e-4,
                4 if c == 5 => 40.0,
                5 => {
                    if c % 3 == 0 {
                        if c % 2 == 0 {
                            0.75
                        } else {
                            -0.75
                        }
                    } else {
                        v * 0.5
                    }
                }
                6 => v.abs() + 0.25,
                _ => v * (1.0 + (row as f32) * 0.3),
            });
        }
    }
    Matrix::new(rows, cols, data).expect("shape")
}

fn scheme(name: &str) -> Scheme {
    name.parse().unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn variant(storage: Storage) -> Variant {
    Variant { storage, ..Variant::default() }
}

/// The weight schemes of every family (dequantize, embedding, linear).
const WEIGHT_SCHEMES: &[&str] = &[
    "w4g32-sym-ao",
    "w4g32-asym-ao",
    "w4g32-sym-nce-ao",
    "w8pc-sym-ao",
    "w3g32-asym-ao",
    "w4pt-sym-ao",
    "w4g32-symclip",
    "w4g32-symclip-coreai",
    "w4g32-asym-coreml",
    "w8pc-asym-coreml",
    "w4g32-sym8",
    "w4g32-fzp",
    "w4g32-mlx-gpu",
    "w4g64-mlx-cpu",
    "w3g32-mlx-gpu",
    "w2g32-mlx-cpu",
    "w6g32-mlx-gpu",
    "w8g32-mlx-gpu",
    "q4_0",
    "q4_1",
    "q8_0",
    "pal4-pt",
    "pal2g4",
    "pal3-pt",
    "pal4-pcs-col",
    "pal4-pcs-row",
    "pal6-pt-uniform",
    "8da4w-ao",
    "8da4w-xnn",
    "8da4w-vk",
    "8da4wg64-vk",
];

const DTYPES: &[&str] = &["", "@f16", "@bf16"];

/// The outcome of one case on one device.
#[derive(Debug)]
enum Outcome {
    Ok,
    Unsupported(String),
}

fn ulp(t: DType, y: f64) -> f64 {
    let f = t.format();
    let a = y.abs();
    let e = if a == 0.0 { f.emin } else { (a.log2().floor() as i32).max(f.emin) };
    2f64.powi(e - (f.precision - 1))
}

/// The smallest subnormal of T: every rounding below T's normal range may add up to half of it
/// in absolute terms, which no relative bound covers (gradual underflow).
fn eta(t: DType) -> f64 {
    let f = t.format();
    2f64.powi(f.emin - (f.precision - 1))
}

fn unit_roundoff(t: DType) -> f64 {
    match t {
        DType::F16 => 2f64.powi(-11),
        DType::BF16 => 2f64.powi(-8),
        _ => 2f64.powi(-24),
    }
}

/// Σ_k |x̂_k·ŵ_k| per output of a linear case, from the reference's own quantization.
fn abs_products(case: &OpCase, want: &Outputs) -> Vec<f64> {
    let s = case.scheme;
    let x = case.x.as_ref().expect("x");
    let wq = case.wq.as_ref().expect("wq");
    let w = s.dequantize(wq).expect("dequantize");
    let (m, k, n) = (x.rows, x.cols, wq.shape[0]);
    let xh: Vec<f64> = if let (Some(aq), Some(zp), Some(sa)) =
        (want.ints.get("act_q"), want.ints.get("act_zp"), want.floats.get("act_scales"))
    {
        (0..m * k).map(|i| ((aq[i] - zp[i / k]) as f64 * sa[i / k] as f64).abs()).collect()
    } else {
        x.data.iter().map(|&v| s.dtype.round(v as f64).abs()).collect()
    };
    let mut out = Vec::with_capacity(m * n);
    for mi in 0..m {
        for ni in 0..n {
            out.push((0..k).map(|kk| xh[mi * k + kk] * (w[ni * k + kk] as f64).abs()).sum());
        }
    }
    out
}

/// Run `case` on `dev` and compare with the reference.
fn check(dev: &mut GpuDevice, case: &OpCase) -> Result<Outcome, String> {
    let label = format!("{} {} {}", case.op, case.scheme, case.variant.label());
    if let Support::Unsupported(r) = dev.supports(case.op, &case.scheme, &case.variant) {
        return Ok(Outcome::Unsupported(r));
    }
    let got = match dev.run(case) {
        Ok(o) => o,
        Err(DeviceError::Unsupported { reason, .. }) => return Ok(Outcome::Unsupported(reason)),
        Err(e) => return Err(format!("{label}: {e}")),
    };
    let want = RefDevice::new().run(case).map_err(|e| format!("{label}: ref: {e}"))?;
    compare(case, &got, &want).map_err(|e| format!("{label}: {e}"))?;
    Ok(Outcome::Ok)
}

fn compare(case: &OpCase, got: &Outputs, want: &Outputs) -> Result<(), String> {
    if got.shape != want.shape {
        return Err(format!("shape {:?} vs ref {:?}", got.shape, want.shape));
    }
    for (name, w) in &want.ints {
        let g = got.ints.get(name).ok_or_else(|| format!("missing ints[{name}]"))?;
        if let Some(i) = (0..w.len().max(g.len())).find(|&i| g.get(i) != w.get(i)) {
            return Err(format!("ints[{name}][{i}] = {:?}, ref {:?}", g.get(i), w.get(i)));
        }
    }
    for (name, w) in &want.floats {
        let g = got.floats.get(name).ok_or_else(|| format!("missing floats[{name}]"))?;
        if let Some(i) =
            (0..w.len().max(g.len())).find(|&i| g.get(i).map(|v| v.to_bits()) != w.get(i).map(|v| v.to_bits()))
        {
            return Err(format!("floats[{name}][{i}] = {:?}, ref {:?}", g.get(i), w.get(i)));
        }
    }
    if got.values.len() != want.values.len() {
        return Err(format!("{} values, ref {}", got.values.len(), want.values.len()));
    }
    if case.op == Op::Linear {
        let t = case.scheme.dtype;
        let k = case.x.as_ref().map_or(0, |x| x.cols) as f64;
        let sums = abs_products(case, want);
        for (i, (g, w)) in got.values.iter().zip(&want.values).enumerate() {
            // The stated bound, plus K·η/2 for gradual underflow: fp16 products of the tiny-range
            // rows are subnormal, and each subnormal rounding errs absolutely, not relatively.
            let bound = (k + 4.0) * unit_roundoff(t) * sums[i] + ulp(t, *w as f64) / 2.0 + (k + 4.0) * eta(t) / 2.0;
            let err = (*g as f64 - *w as f64).abs();
            if err.is_nan() || err > bound {
                return Err(format!("y[{i}] = {g}, ref {w}: |err| {err:e} > bound {bound:e}"));
            }
        }
    } else if let Some(i) = (0..got.values.len()).find(|&i| got.values[i].to_bits() != want.values[i].to_bits()) {
        return Err(format!(
            "values[{i}] = {:e} ({:#010x}), ref {:e} ({:#010x})",
            got.values[i],
            got.values[i].to_bits(),
            want.values[i],
            want.values[i].to_bits()
        ));
    }
    Ok(())
}

/// Run a list of cases on every adapter; fail with every mismatch listed.
fn run_suite(name: &str, cases: &[OpCase]) -> (usize, usize) {
    let mut failures = Vec::new();
    let (mut ok, mut unsupported) = (0, 0);
    for dev in devices() {
        let mut dev = dev.lock().unwrap_or_else(|p| p.into_inner());
        for case in cases {
            match check(&mut dev, case) {
                Ok(Outcome::Ok) => ok += 1,
                Ok(Outcome::Unsupported(r)) => {
                    unsupported += 1;
                    if std::env::var("QDIFF_GPU_VERBOSE").is_ok() {
                        eprintln!("unsupported: {} {} {}: {r}", case.op, case.scheme, case.variant.label());
                    }
                }
                Err(e) => failures.push(format!("[{}] {e}", dev.info().id)),
            }
        }
    }
    eprintln!("{name}: {ok} exact/within bound, {unsupported} unsupported, {} failed", failures.len());
    assert!(failures.is_empty(), "{name}: {} failures:\n{}", failures.len(), failures.join("\n"));
    (ok, unsupported)
}

fn weight_case(op: Op, name: &str, storage: Storage, seed: u64) -> OpCase {
    let s = scheme(name);
    let (n, k) = if name.starts_with("q4_K") { (2, 256) } else { (12, 128) };
    let w = matrix(n, k, seed);
    let wq = s.quantize(&w).unwrap_or_else(|e| panic!("{name}: {e}"));
    let x = (op == Op::Linear).then(|| matrix(3, k, seed ^ 0x55));
    let ids = (op == Op::Embedding).then(|| vec![3.min(n as u32 - 1), 0, 11.min(n as u32 - 1), 1]);
    OpCase { op, scheme: s, variant: variant(storage), inject: None, w: Some(w), wq: Some(wq), x, ids }
}

fn all_weight_cases(op: Op) -> Vec<OpCase> {
    let mut cases = Vec::new();
    for (i, base) in WEIGHT_SCHEMES.iter().chain(["q4_K"].iter()).enumerate() {
        for dt in DTYPES {
            for storage in [Storage::Buffer, Storage::Texture] {
                cases.push(weight_case(op, &format!("{base}{dt}"), storage, 100 + i as u64));
            }
        }
    }
    cases
}

#[test]
fn act_quant_matches_reference() {
    let mut cases = Vec::new();
    let bases = [
        "a8-pt-asym-vk",
        "a8-pt-asym-vk-away",
        "a8-pt-asym-ao",
        "a8-pt-asym-ao-i8w",
        "a8-pt-asym-xnn",
        "a8-pt-asym-vk-zpf32",
        "a8-pt-asym-vk-zpf16",
        "a8-pt-asym-ao-zpf16",
        "a8-q8_0-ref",
        "a8-q8_0-avx",
        "a8-q8_0-neon",
    ];
    for (i, base) in bases.iter().enumerate() {
        for dt in DTYPES {
            for storage in [Storage::Buffer, Storage::Texture] {
                for (j, (m, k)) in [(8usize, 64usize), (3, 96)].into_iter().enumerate() {
                    let s = scheme(&format!("{base}{dt}"));
                    cases.push(OpCase {
                        op: Op::ActQuant,
                        scheme: s,
                        variant: variant(storage),
                        inject: None,
                        w: None,
                        wq: None,
                        x: Some(matrix(m, k, 7 + (i * 10 + j) as u64)),
                        ids: None,
                    });
                }
            }
        }
    }
    run_suite("act_quant", &cases);
}

#[test]
fn vk_act_quant_is_bit_exact_on_many_rows() {
    // The hard requirement: -vk codes, zero-points and scales bit-exact, on many random rows
    // (scales spanning many binades, including the small-scale amplification path).
    let mut cases = Vec::new();
    for (i, name) in [
        "a8-pt-asym-vk",
        "a8-pt-asym-vk-away",
        "a8-pt-asym-vk@f16",
        "a8-pt-asym-vk@bf16",
        // XNNPACK's fp32 scale times a code, rounded once to T: exact only with the two-product.
        "a8-pt-asym-xnn@f16",
        "a8-pt-asym-xnn@bf16",
    ]
    .iter()
    .enumerate()
    {
        let mut r = Rng(99 + i as u64);
        let (m, k) = (64, 64);
        let data: Vec<f32> = (0..m * k)
            .map(|j| {
                let row_scale = 2f32.powi((j / k) as i32 % 24 - 16);
                r.f() * row_scale
            })
            .collect();
        for storage in [Storage::Buffer, Storage::Texture] {
            cases.push(OpCase {
                op: Op::ActQuant,
                scheme: scheme(name),
                variant: variant(storage),
                inject: None,
                w: None,
                wq: None,
                x: Some(Matrix::new(m, k, data.clone()).expect("shape")),
                ids: None,
            });
        }
    }
    let (ok, _) = run_suite("vk act_quant", &cases);
    if !devices().is_empty() {
        assert_eq!(ok, cases.len() * devices().len(), "every -vk act_quant case must run");
    }
}

#[test]
fn f64_activation_flavours_are_unsupported_with_a_reason() {
    for dev in devices() {
        let dev = dev.lock().unwrap_or_else(|p| p.into_inner());
        for name in ["a8-pt-asym-decomp", "a8-pt-asym-etport"] {
            match dev.supports(Op::ActQuant, &scheme(name), &Variant::default()) {
                Support::Unsupported(r) => assert!(r.contains("f64"), "{name}: {r}"),
                Support::Supported => panic!("{name} should need f64"),
            }
        }
        let r = dev.supports(Op::Regroup, &scheme("w4g32-sym-ao"), &Variant::default());
        assert!(!r.is_supported());
    }
}

#[test]
fn dequantize_matches_reference() {
    run_suite("dequantize", &all_weight_cases(Op::Dequantize));
}

#[test]
fn embedding_matches_reference() {
    run_suite("embedding", &all_weight_cases(Op::Embedding));
}

#[test]
fn linear_within_bound() {
    let mut cases = all_weight_cases(Op::Linear);
    // The 8da4w zero-point dtypes (written by the act-quant launch, read back by the linear).
    for (i, base) in ["8da4w-vk-zpf32", "8da4w-vk-zpf16", "8da4w-xnn-zpf32", "8da4w-ao-zpf16"].iter().enumerate() {
        for dt in ["", "@f16"] {
            for storage in [Storage::Buffer, Storage::Texture] {
                cases.push(weight_case(Op::Linear, &format!("{base}{dt}"), storage, 300 + i as u64));
            }
        }
    }
    run_suite("linear", &cases);
}

#[test]
fn quantize_matches_reference_where_a_gpu_kernel_exists() {
    let supported = [
        "w4g32-sym-ao",
        "w4g32-asym-ao",
        "w4g32-sym-nce-ao",
        "w8pc-sym-ao",
        "w8g32-asym-ao",
        "w4pt-sym-ao",
        "w4g32-mlx-gpu",
        "w3g32-mlx-gpu",
        "w8g64-mlx-gpu",
        "q8_0",
        "8da4w-vk",
        "8da4w-xnn",
        "8da4w-ao",
    ];
    let mut cases = Vec::new();
    for (i, base) in supported.iter().enumerate() {
        for dt in DTYPES {
            let s = scheme(&format!("{base}{dt}"));
            let w = matrix(8, 128, 500 + i as u64);
            cases.push(OpCase {
                op: Op::Quantize,
                scheme: s,
                variant: Variant::default(),
                inject: None,
                w: Some(w),
                wq: None,
                x: None,
                ids: None,
            });
        }
    }
    let (ok, unsupported) = run_suite("quantize", &cases);
    if !devices().is_empty() {
        assert_eq!(unsupported, 0, "every listed quantizer has a GPU kernel");
        assert_eq!(ok, cases.len() * devices().len());
    }
    for dev in devices() {
        let dev = dev.lock().unwrap_or_else(|p| p.into_inner());
        for name in ["pal4-pt", "q4_K", "w4g32-symclip", "w4g32-mlx-cpu", "q4_0", "w4g32-fzp"] {
            let r = dev.supports(Op::Quantize, &scheme(name), &Variant::default());
            assert!(!r.is_supported(), "{name} has no GPU quantizer");
        }
    }
}

/// Run a fault case and compare with the reference: `Ok(true)` exact, `Ok(false)` mismatch.
fn fault_outcome(dev: &mut GpuDevice, case: &OpCase) -> Result<(bool, Outputs, Outputs), String> {
    let got = dev.run(case).map_err(|e| e.to_string())?;
    let want = RefDevice::new().run(case).map_err(|e| e.to_string())?;
    let exact = compare(case, &got, &want).is_ok();
    Ok((exact, got, want))
}

/// The fault-injection cases. The three kernel-parameter faults must bite everywhere. The two
/// texel-format mismatches are undefined behaviour; what lavapipe does with them is pinned here
/// (a driver update that changes it fails this test on purpose), other drivers are reported.
#[test]
fn injected_faults() {
    for dev in devices() {
        let mut dev = dev.lock().unwrap_or_else(|p| p.into_inner());
        let lavapipe = dev.info().driver.contains("llvmpipe") || dev.info().name.contains("llvmpipe");
        // Kernel-parameter faults: always a mismatch.
        let bites = [
            (Fault::NibbleSwap, Op::Dequantize, "q4_0"),
            (Fault::NibbleSwap, Op::Dequantize, "w4g32-mlx-gpu"),
            (Fault::NibbleSwap, Op::Embedding, "w4g32-sym8"),
            (Fault::NibbleSwap, Op::Linear, "8da4w-vk"),
            (Fault::ScaleTranspose, Op::Dequantize, "w4g32-sym-ao"),
            (Fault::ScaleTranspose, Op::Dequantize, "q4_0"),
            (Fault::ScaleTranspose, Op::Linear, "8da4w-vk"),
            (Fault::DropLastGroup, Op::Dequantize, "w4g32-asym-ao"),
            (Fault::DropLastGroup, Op::Dequantize, "q4_K"),
            (Fault::DropLastGroup, Op::Linear, "8da4w-xnn"),
        ];
        for (f, op, name) in bites {
            for storage in [Storage::Buffer, Storage::Texture] {
                let mut c = weight_case(op, name, storage, 41);
                c.inject = Some(f);
                let (exact, _, _) =
                    fault_outcome(&mut dev, &c).unwrap_or_else(|e| panic!("{} {op} {name}: {e}", f.name()));
                assert!(!exact, "{} on {op} {name} ({storage:?}) went unnoticed", f.name());
            }
        }
        // A fault that cannot bite is refused, not silently run.
        let mut c = weight_case(Op::Dequantize, "w8pc-sym-ao", Storage::Buffer, 41);
        c.inject = Some(Fault::NibbleSwap);
        assert!(matches!(dev.run(&c), Err(DeviceError::Unsupported { .. })));

        // Texel-format mismatches through SPIR-V passthrough.
        for f in [Fault::ZpBindInt8, Fault::ZpBindF16] {
            let mut cases = vec![OpCase {
                op: Op::ActQuant,
                scheme: scheme("a8-pt-asym-vk"),
                variant: Variant::default(),
                inject: Some(f),
                w: None,
                wq: None,
                x: Some(matrix(8, 64, 5)),
                ids: None,
            }];
            for storage in [Storage::Buffer, Storage::Texture] {
                let mut c = weight_case(Op::Linear, "8da4w-vk", storage, 77);
                c.inject = Some(f);
                cases.push(c);
            }
            for c in &cases {
                let (exact, got, want) = match fault_outcome(&mut dev, c) {
                    Ok(o) => o,
                    Err(e) => {
                        assert!(!lavapipe, "{} {}: {e}", f.name(), c.scheme);
                        eprintln!("[{}] {} on {} {}: failed: {e}", dev.info().id, f.name(), c.op, c.scheme);
                        continue;
                    }
                };
                let key = if c.op == Op::ActQuant { "zp" } else { "act_zp" };
                let (gz, wz) = (&got.ints[key], &want.ints[key]);
                eprintln!(
                    "[{}] {} on {} {} ({}): {} ; zero-points read {:?}, reference {:?}",
                    dev.info().id,
                    f.name(),
                    c.op,
                    c.scheme,
                    c.variant.label(),
                    if exact { "exact" } else { "mismatch" },
                    gz,
                    wz
                );
                if !lavapipe {
                    continue;
                }
                assert!(!exact, "{} on lavapipe used to mismatch", f.name());
                match f {
                    // lavapipe ignores the rgba8sint in the shader and returns each texel's raw
                    // fp32 bits as the int32 channel (127.0 → 0x42FE0000, −0.0 → i32::MIN): no
                    // int8 truncation, not the low byte.
                    Fault::ZpBindInt8 => {
                        for (g, w) in gz.iter().zip(wz) {
                            let bits = (*w as f32).to_bits() as i32 as i64;
                            assert!(*g == bits || (*w == 0 && *g == i32::MIN as i64), "zp {w} read as {g}");
                        }
                    }
                    // Written through rgba16float into rgba8sint and read back through
                    // rgba16float: lavapipe moves raw 32-bit channel words both ways. The store
                    // takes the float's bits as an int and saturates it to int8 (a positive zp
                    // → 127, a negative one or −0.0 → −128); the load returns the sign-extended
                    // int8 as float bits: 127 → 1.8e-43 (a denormal, read as zp 0), −128 →
                    // 0xFFFFFF80, a NaN (reported as i64::MIN), whose row's codes all become 0.
                    _ => {
                        let k = c.x.as_ref().map_or(1, |x| x.cols);
                        let q = if c.op == Op::ActQuant { &got.ints["q"] } else { &got.ints["act_q"] };
                        for (row, (g, w)) in gz.iter().zip(wz).enumerate() {
                            let ok = match w.signum() {
                                1 => *g == 0,
                                -1 => *g == i64::MIN,
                                _ => *g == 0 || *g == i64::MIN,
                            };
                            assert!(ok, "row {row}: zp {w} read as {g}");
                            if *g == i64::MIN {
                                assert!(q[row * k..(row + 1) * k].iter().all(|&v| v == 0), "row {row} codes");
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Explicit texel formats and workgroup sizes: the same kernels through other (matching) formats.
#[test]
fn variants_match_reference() {
    let tex = |pairs: &[(&str, TexelFormat)], wg: Option<u32>| Variant {
        storage: Storage::Texture,
        texel_formats: pairs.iter().map(|(n, f)| (n.to_string(), TexelBinding { alloc: *f, bind: *f })).collect(),
        workgroup_size: wg,
    };
    let variants = [
        tex(&[("act_zero_points", TexelFormat::R32Sint), ("act_scales", TexelFormat::R32Float)], None),
        tex(&[("act_zero_points", TexelFormat::Rgba32Sint), ("weight", TexelFormat::R32Sint)], Some(32)),
        tex(&[("scales", TexelFormat::Rgba32Float), ("zero_points", TexelFormat::Rgba32Float)], Some(128)),
        Variant { workgroup_size: Some(16), ..Variant::default() },
    ];
    let mut cases = Vec::new();
    for v in &variants {
        for (op, name) in [
            (Op::Linear, "8da4w-vk"),
            (Op::Linear, "8da4w-xnn@f16"),
            (Op::Dequantize, "w4g32-asym-ao"),
            (Op::Dequantize, "q4_K"),
            (Op::Embedding, "w4g32-mlx-gpu@f16"),
            (Op::Linear, "w4g32-fzp"),
        ] {
            let mut c = weight_case(op, name, Storage::Texture, 900);
            c.variant = v.clone();
            cases.push(c);
        }
        cases.push(OpCase {
            op: Op::ActQuant,
            scheme: scheme("a8-pt-asym-vk-away@f16"),
            variant: v.clone(),
            inject: None,
            w: None,
            wq: None,
            x: Some(matrix(8, 64, 901)),
            ids: None,
        });
    }
    let (ok, _) = run_suite("variants", &cases);
    if !devices().is_empty() {
        assert_eq!(ok, cases.len() * devices().len());
    }
}

#[test]
fn device_info_names_the_adapter() {
    for dev in devices() {
        let dev = dev.lock().unwrap_or_else(|p| p.into_inner());
        let info = dev.info();
        eprintln!("{}", serde_json::to_string_pretty(info).unwrap_or_default());
        assert!(info.id.starts_with("vulkan:") || info.id.starts_with("metal:"));
        for k in
            ["shader_f16", "subgroup_min_size", "timestamp_query", "passthrough", "max_workgroup_size", "device_type"]
        {
            assert!(info.features.contains_key(k), "features lack {k}");
        }
    }
}

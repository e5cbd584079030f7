//! The cpu runner against the reference device: every op × a broad set of schemes (every family,
//! @f16/@bf16 variants, odd shapes, all-zero and constant groups, negative zeros, exact ties),
//! the faults it can commit (each must turn the verdict into a mismatch), what it refuses and
//! why, and property tests of the invariants (bit-exact dequantize and activation codes, the
//! linear accumulation bound, thread-count independence).
//!
//! The comparison rule is the harness's: every integer output and every `floats` output
//! bit-identical; `values` bit-identical except for `linear`, where
//! `|y − y_ref| ≤ (K + 4)·u·Σ_k |x̂_k·ŵ_k| + ulp_T(y_ref)/2` with `u` = 2^-24 (f32), 2^-11 (f16),
//! 2^-8 (bf16).

use devices::cpu::CpuDevice;
use devices::reference::RefDevice;
use devices::{Device, DeviceError, Fault, Op, OpCase, Outputs, Storage, Support, TexelBinding, TexelFormat, Variant};
use kernels_ref::dtype::DType;
use kernels_ref::scheme::{Family, Scheme};
use kernels_ref::tensor::Matrix;
use proptest::prelude::*;

/// SplitMix64: a failure replays from its seed.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A `[rows, cols]` tensor whose rows cycle through the edge cases of schemes.md §7 (all zero with
/// negative zeros, constant, all negative, exact ties on a power-of-two grid, a zero group and a
/// constant group inside random data, a single outlier, all positive), at mixed magnitudes.
fn edgy(rng: &mut Rng, rows: usize, cols: usize, group: usize) -> Matrix {
    let mut data = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let mag = [0.02f32, 0.5, 3.0][rng.below(3) as usize];
        let c = rng.uniform() * mag;
        for k in 0..cols {
            let u = rng.uniform() * mag;
            let v = match r % 8 {
                0 => {
                    if k % 3 == 0 {
                        -0.0
                    } else {
                        0.0
                    }
                }
                1 => c,
                2 => -u.abs() - 1e-3,
                3 => ((rng.below(16) as f32) - 8.0 + 0.5) / 16.0,
                4 => match (k / group.max(1)) % 3 {
                    0 if cols > group => 0.0,
                    1 if cols > group => c,
                    _ => u,
                },
                5 => {
                    if k == cols / 2 {
                        40.0 * mag
                    } else {
                        u
                    }
                }
                6 => u.abs() + 1e-3,
                _ => {
                    if k % 7 == 3 {
                        -0.0
                    } else {
                        u
                    }
                }
            };
            data.push(v);
        }
    }
    Matrix::new(rows, cols, data).unwrap()
}

/// Activations uniform in [-mag, mag), with an all-zero row, a constant row and an all-positive row.
fn activations(rng: &mut Rng, rows: usize, cols: usize) -> Matrix {
    let mut data = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let c = rng.uniform();
        for k in 0..cols {
            data.push(match r % 5 {
                0 if rows > 2 => {
                    if k % 2 == 0 {
                        -0.0
                    } else {
                        0.0
                    }
                }
                1 if rows > 2 => c,
                2 => rng.uniform().abs() * 2.0,
                3 => ((rng.below(32) as f32) - 16.0 + 0.5) / 8.0,
                _ => rng.uniform() * [0.1f32, 1.0, 4.0][r % 3],
            });
        }
    }
    Matrix::new(rows, cols, data).unwrap()
}

/// Tokens uniform in `[−lo, hi]` with `lo` growing by row: asymmetric ranges, so every
/// per-token zero-point is well inside `(−128, 127)` and nonzero.
fn skewed(rng: &mut Rng, rows: usize, cols: usize) -> Matrix {
    let mut data = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let (lo, hi) = (0.2 + 0.25 * r as f32, 1.0f32);
        for k in 0..cols {
            data.push(match k {
                0 => -lo,
                1 => hi,
                _ => -lo + (rng.uniform() + 1.0) / 2.0 * (lo + hi),
            });
        }
    }
    Matrix::new(rows, cols, data).unwrap()
}

/// Rows on the tie points of a quantization grid: each row picks a non-dyadic range `R` and a
/// level count `L` (the divisors schemes use: 7, 7.5, 8, 15, 127, 127.5, 255), and holds `±R`
/// and `(j + ½)·R/L`, so `x/s`, `x·(1/s)` and `x·m` land on or within an ulp of `.5`: where
/// reciprocal-multiply vs divide, the multiplier's rounding, fused vs unfused, and round-before
/// vs after the zero-point all decide the code.
fn near_ties(rng: &mut Rng, rows: usize, cols: usize) -> Matrix {
    let mut data = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let levels = [7.0f32, 7.5, 8.0, 15.0, 127.0, 127.5, 255.0][rng.below(7) as usize];
        let range = 2f32.powi(rng.below(10) as i32 - 6) * (1.0 + rng.uniform().abs());
        let step = range / levels;
        let offset = if r % 3 == 2 { range * 0.25 } else { 0.0 };
        let span = 2 * levels.ceil() as u64;
        for k in 0..cols {
            data.push(match k {
                0 => -range + offset,
                1 => range + offset,
                _ => ((rng.below(span) as f32) - levels.ceil() + 0.5) * step + offset,
            });
        }
    }
    Matrix::new(rows, cols, data).unwrap()
}

fn scheme(name: &str) -> Scheme {
    name.parse().unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The group length of a scheme's weights on rows of `cols` (for the generators).
fn group_of(s: &Scheme, cols: usize) -> usize {
    match s.family {
        Family::Q4K { .. } => 32,
        _ => s.granularity().group_len(cols),
    }
}

/// A case of `op` on `scheme`; weight inputs are quantized by the reference, as the harness does.
fn case(op: Op, s: Scheme, n: usize, k: usize, m: usize, seed: u64) -> OpCase {
    let mut rng = Rng(seed);
    let w = edgy(&mut rng, n, k, group_of(&s, k));
    let x = activations(&mut rng, m, k);
    let mut c =
        OpCase { op, scheme: s, variant: Variant::default(), inject: None, w: None, wq: None, x: None, ids: None };
    match op {
        Op::Quantize => c.w = Some(w),
        Op::ActQuant => c.x = Some(x),
        _ => {
            c.wq = Some(s.quantize(&w).unwrap_or_else(|e| panic!("{s}: {e}")));
            c.w = Some(w);
            if op == Op::Linear {
                c.x = Some(x);
            }
            if op == Op::Embedding {
                c.ids = Some(vec![0, (n - 1) as u32, 2 % n as u32, 2 % n as u32, 1 % n as u32]);
            }
        }
    }
    c
}

/// The unit roundoff of the accumulation bound for a compute dtype.
fn unit(t: DType) -> f64 {
    match t {
        DType::F16 => 2f64.powi(-11),
        DType::BF16 => 2f64.powi(-8),
        _ => 2f64.powi(-24),
    }
}

/// `ulp_T(y)`: the spacing of T at `|y|` (the subnormal spacing below the normal range).
fn ulp(t: DType, y: f64) -> f64 {
    let f = t.format();
    let a = y.abs();
    let e = if a == 0.0 { f.emin } else { (a.log2().floor() as i32).max(f.emin) };
    2f64.powi(e - (f.precision - 1))
}

/// `y`'s distance to `y_ref` against the accumulation bound, for every output of a linear case.
fn linear_within_bound(c: &OpCase, y: &[f32], y_ref: &[f32]) -> Result<(), String> {
    let s = c.scheme;
    let t = s.dtype;
    let (x, wq) = (c.x.as_ref().unwrap(), c.wq.as_ref().unwrap());
    let (m, k, n) = (x.rows, x.cols, wq.shape[0]);
    let w_hat = s.dequantize(wq).map_err(|e| e.to_string())?;
    let x_hat: Vec<f32> = match s.activation_scheme() {
        Some(a) => a.dequantize(&a.quantize(x).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?,
        None => x.data.iter().map(|&v| t.round_f32(v as f64)).collect(),
    };
    if y.len() != m * n || y_ref.len() != m * n {
        return Err(format!("y has {} values, y_ref {}, expected {}", y.len(), y_ref.len(), m * n));
    }
    for mi in 0..m {
        for ni in 0..n {
            let sum_abs: f64 = (0..k).map(|kk| (x_hat[mi * k + kk] as f64 * w_hat[ni * k + kk] as f64).abs()).sum();
            let (a, b) = (y[mi * n + ni] as f64, y_ref[mi * n + ni] as f64);
            let tol = (k as f64 + 4.0) * unit(t) * sum_abs + ulp(t, b) / 2.0;
            // Written so that a NaN anywhere fails the check.
            let within = (a - b).abs() <= tol;
            if !within {
                return Err(format!("y[{mi},{ni}] = {a:e} vs ref {b:e}: |diff| {:e} > bound {tol:e}", (a - b).abs()));
            }
        }
    }
    Ok(())
}

/// The harness's verdict rule: `Ok` = match, `Err` = mismatch with the first difference.
fn compare(c: &OpCase, got: &Outputs, want: &Outputs) -> Result<(), String> {
    if got.shape != want.shape {
        return Err(format!("shape {:?} vs {:?}", got.shape, want.shape));
    }
    let names =
        |o: &Outputs| (o.ints.keys().cloned().collect::<Vec<_>>(), o.floats.keys().cloned().collect::<Vec<_>>());
    if names(got) != names(want) {
        return Err(format!("output names {:?} vs {:?}", names(got), names(want)));
    }
    for (name, v) in &want.ints {
        if let Some(i) = (0..v.len().max(got.ints[name].len())).find(|&i| got.ints[name].get(i) != v.get(i)) {
            return Err(format!("ints[{name}][{i}]: {:?} vs {:?}", got.ints[name].get(i), v.get(i)));
        }
    }
    for (name, v) in &want.floats {
        let g = &got.floats[name];
        if g.len() != v.len() {
            return Err(format!("floats[{name}]: {} values vs {}", g.len(), v.len()));
        }
        if let Some(i) = (0..v.len()).find(|&i| g[i].to_bits() != v[i].to_bits()) {
            return Err(format!("floats[{name}][{i}]: {:e} vs {:e}", g[i], v[i]));
        }
    }
    if c.op == Op::Linear {
        return linear_within_bound(c, &got.values, &want.values);
    }
    if got.values.len() != want.values.len() {
        return Err(format!("{} values vs {}", got.values.len(), want.values.len()));
    }
    match (0..want.values.len()).find(|&i| got.values[i].to_bits() != want.values[i].to_bits()) {
        Some(i) => Err(format!("values[{i}]: {:e} vs {:e}", got.values[i], want.values[i])),
        None => Ok(()),
    }
}

/// Run a case on both devices and compare.
fn check(c: &OpCase) -> Result<(), String> {
    let want = RefDevice::new().run(c).map_err(|e| format!("ref: {e}"))?;
    let got = CpuDevice::new().run(c).map_err(|e| format!("cpu: {e}"))?;
    compare(c, &got, &want)
}

/// Weight schemes covering every weight family, bit width, packing and dtype the cpu runs, with
/// a `[N, K]` each (K not a multiple of 8 where the scheme allows; N not a multiple of 4).
const WEIGHT_SCHEMES: &[(&str, usize, usize)] = &[
    ("w4g32-sym-ao", 7, 64),
    ("w4g32-sym-ao@f16", 6, 96),
    ("w4g32-sym-ao@bf16", 6, 64),
    ("w4g32-sym-nce-ao", 5, 64),
    ("w4g16-asym-ao@bf16", 9, 48),
    ("w8pc-sym-ao", 5, 40),
    ("w8pt-asym-ao@f16", 6, 24),
    ("w2g6-sym-ao", 5, 18),
    ("w3g10-asym-ao@f16", 5, 30),
    ("w6g16-sym-nce-ao@bf16", 5, 32),
    ("w4g32-symclip", 7, 64),
    ("w8pc-symclip@f16", 6, 40),
    ("w3g6-symclip@bf16", 5, 18),
    ("w4g32-symclip-coreai", 6, 64),
    ("w8pc-symclip-coreai@bf16", 5, 24),
    ("w4g5-sym8", 7, 15),
    ("w4g32-sym8@bf16", 6, 64),
    ("w4g5-fzp", 6, 15),
    ("w4g32-fzp@bf16", 7, 64),
    ("w4g32-fzp@f16", 5, 64),
    ("w4g32-asym-coreml", 6, 64),
    ("w8pc-asym-coreml@f16", 7, 24),
    ("w8pt-asym-coreml", 5, 16),
    ("w4g32-mlx-cpu", 6, 64),
    ("w4g64-mlx-gpu@f16", 7, 128),
    ("w3g32-mlx-cpu@bf16", 5, 64),
    ("w5g32-mlx-gpu", 5, 96),
    ("w6g32-mlx-cpu@f16", 6, 64),
    ("w2g32-mlx-gpu@bf16", 5, 32),
    ("w8g128-mlx-cpu", 5, 128),
    ("q4_0", 7, 64),
    ("q4_0-fused", 6, 96),
    ("q4_0-py", 8, 32),
    ("q4_0@f16", 5, 64),
    ("q4_1", 7, 64),
    ("q4_1-fused@bf16", 6, 64),
    ("q8_0", 6, 64),
    ("q4_K", 5, 512),
    ("q4_K@f16", 3, 256),
    ("pal4-pt-uniform", 6, 40),
    ("pal2g2-uniform", 6, 20),
    ("pal3-pcs-col-uniform@f16", 5, 24),
    ("pal6-pcs-row-uniform@bf16", 7, 16),
    ("pal1-pt-uniform", 5, 12),
    ("pal8-pt-uniform@f16", 5, 64),
    ("8da4w-ao", 6, 64),
    ("8da4wg16-ao@bf16", 5, 48),
    ("8da4wg5-xnn", 7, 15),
    ("8da4w-xnn@f16", 6, 64),
    ("8da4wg4-vk", 7, 12),
    ("8da4w-vk-zpf32@f16", 6, 64),
    ("8da4wg16-vk-zpf16@bf16", 9, 32),
];

/// Activation schemes (and 8da4w's activation path) with a `[M, K]` each.
const ACT_SCHEMES: &[(&str, usize, usize)] = &[
    ("a8-pt-asym-ao", 6, 40),
    ("a8-pt-asym-ao@bf16", 6, 33),
    ("a8-pt-asym-ao@f16", 5, 64),
    ("a8-pt-asym-ao-i8w", 6, 40),
    ("a8-pt-asym-ao-i8w@bf16", 5, 40),
    ("a8-pt-asym-decomp", 6, 40),
    ("a8-pt-asym-decomp@f16", 6, 27),
    ("a8-pt-asym-decomp@bf16", 5, 40),
    ("a8-pt-asym-etport", 6, 40),
    ("a8-pt-asym-xnn", 6, 40),
    ("a8-pt-asym-xnn@f16", 5, 40),
    ("a8-pt-asym-vk", 6, 40),
    ("a8-pt-asym-vk-away-zpf32@f16", 6, 40),
    ("a8-pt-asym-vk-zpf16@bf16", 5, 40),
    ("a8-q8_0-ref", 5, 64),
    ("a8-q8_0-avx@f16", 5, 64),
    ("a8-q8_0-neon@bf16", 5, 96),
    ("8da4w-xnn", 5, 64),
    ("8da4w-vk@f16", 5, 64),
];

#[test]
fn every_weight_scheme_and_op_matches_the_reference() {
    let mut failures = Vec::new();
    let mut runs = 0;
    for (i, &(name, n, k)) in WEIGHT_SCHEMES.iter().enumerate() {
        let s = scheme(name);
        for op in [Op::Quantize, Op::Dequantize, Op::Embedding, Op::Linear] {
            for seed in 0..2u64 {
                let c = case(op, s, n, k, 3, 1000 * i as u64 + seed);
                runs += 1;
                if let Err(e) = check(&c) {
                    failures.push(format!("{op} {name} seed {seed}: {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {runs} cases mismatch:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_activation_scheme_matches_the_reference() {
    let mut failures = Vec::new();
    for (i, &(name, m, k)) in ACT_SCHEMES.iter().enumerate() {
        for seed in 0..3u64 {
            let c = case(Op::ActQuant, scheme(name), 1, k, m, 77 + 1000 * i as u64 + seed);
            if let Err(e) = check(&c) {
                failures.push(format!("act_quant {name} seed {seed}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn kmeans_palettes_are_looked_up_exactly() {
    // The reference's own k-means LUT stands in for the framework's: the cpu only reads it.
    for name in ["pal4-pt", "pal2g3", "pal3-pcs-col@f16", "pal6-pcs-row@bf16"] {
        for op in [Op::Dequantize, Op::Embedding, Op::Linear] {
            let c = case(op, scheme(name), 6, 24, 3, 5);
            check(&c).unwrap_or_else(|e| panic!("{op} {name}: {e}"));
        }
    }
}

#[test]
fn exact_ties_in_every_rounding_form() {
    // Values on an exact power-of-two grid with amax chosen so the scales are powers of two:
    // x·(1/s) and x/s land exactly on .5 and each scheme's tie rule decides.
    let grid: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0 + 0.5) / 4.0).collect();
    let mut w = Vec::new();
    for r in 0..4 {
        w.extend(grid.iter().map(|v| v * [1.0f32, -1.0, 0.5, 2.0][r]));
    }
    let w = Matrix::new(4, 64, w).unwrap();
    for name in [
        "w4g16-sym-ao",
        "w4g16-asym-ao@bf16",
        "w4g16-symclip@f16",
        "w4g16-sym8",
        "w4g16-fzp",
        "w8pc-asym-coreml",
        "w4g32-mlx-cpu",
        "w4g32-mlx-gpu",
        "q4_0",
        "q4_1",
        "q8_0",
        "pal4-pt-uniform",
    ] {
        let c = OpCase {
            op: Op::Quantize,
            scheme: scheme(name),
            variant: Variant::default(),
            inject: None,
            w: Some(w.clone()),
            wq: None,
            x: None,
            ids: None,
        };
        check(&c).unwrap_or_else(|e| panic!("quantize {name} on ties: {e}"));
    }
    for name in
        ["a8-pt-asym-ao", "a8-pt-asym-decomp", "a8-pt-asym-xnn", "a8-pt-asym-vk-away", "a8-q8_0-ref", "a8-q8_0-avx"]
    {
        let c = OpCase {
            op: Op::ActQuant,
            scheme: scheme(name),
            variant: Variant::default(),
            inject: None,
            w: None,
            wq: None,
            x: Some(w.clone()),
            ids: None,
        };
        check(&c).unwrap_or_else(|e| panic!("act_quant {name} on ties: {e}"));
    }
}

#[test]
fn near_ties_in_every_quantizer() {
    let mut failures = Vec::new();
    for (i, name) in [
        "w4g32-sym-ao",
        "w4g32-sym-ao@bf16",
        "w4g32-sym-nce-ao@f16",
        "w4g32-asym-ao",
        "w8pc-sym-ao@f16",
        "w4g32-symclip",
        "w8pc-symclip@f16",
        "w4g32-symclip-coreai@bf16",
        "w4g32-sym8",
        "w4g32-fzp",
        "w4g32-asym-coreml@f16",
        "w8pc-asym-coreml",
        "w4g32-mlx-cpu",
        "w4g32-mlx-gpu@bf16",
        "q4_0",
        "q4_0-fused",
        "q4_1",
        "q4_1-fused",
        "q8_0",
        "q4_K",
        "pal4-pt-uniform@f16",
        "8da4w-xnn@bf16",
    ]
    .iter()
    .enumerate()
    {
        let s = scheme(name);
        let cols = if matches!(s.family, Family::Q4K { .. }) { 256 } else { 64 };
        let w = near_ties(&mut Rng(500 + i as u64), 96, cols);
        let c = OpCase {
            op: Op::Quantize,
            scheme: s,
            variant: Variant::default(),
            inject: None,
            w: Some(w),
            wq: None,
            x: None,
            ids: None,
        };
        if let Err(e) = check(&c) {
            failures.push(format!("quantize {name}: {e}"));
        }
    }
    for (i, name) in [
        "a8-pt-asym-ao",
        "a8-pt-asym-ao@bf16",
        "a8-pt-asym-ao-i8w",
        "a8-pt-asym-decomp",
        "a8-pt-asym-decomp@f16",
        "a8-pt-asym-etport",
        "a8-pt-asym-xnn",
        "a8-pt-asym-xnn@f16",
        "a8-pt-asym-vk",
        "a8-pt-asym-vk-away@f16",
        "a8-q8_0-ref",
        "a8-q8_0-avx",
        "a8-q8_0-neon",
    ]
    .iter()
    .enumerate()
    {
        let x = near_ties(&mut Rng(900 + i as u64), 256, 64);
        let c = OpCase {
            op: Op::ActQuant,
            scheme: scheme(name),
            variant: Variant::default(),
            inject: None,
            w: None,
            wq: None,
            x: Some(x),
            ids: None,
        };
        if let Err(e) = check(&c) {
            failures.push(format!("act_quant {name}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn refusals_carry_reasons() {
    let cpu = CpuDevice::new();
    let plain = Variant::default();
    let reason = |s: Support| match s {
        Support::Unsupported(r) => r,
        Support::Supported => panic!("expected unsupported"),
    };
    assert!(reason(cpu.supports(Op::Quantize, &scheme("pal4-pt"), &plain)).contains("k-means"));
    assert!(reason(cpu.supports(Op::Regroup, &scheme("w4g32-sym-ao"), &plain)).contains("regroup"));
    assert!(reason(cpu.supports(Op::Linear, &scheme("a8-pt-asym-ao"), &plain)).contains("activation"));
    assert!(reason(cpu.supports(Op::ActQuant, &scheme("q4_0"), &plain)).contains("weight-only"));
    let texture = Variant { storage: Storage::Texture, ..Variant::default() };
    assert!(reason(cpu.supports(Op::Linear, &scheme("8da4w-vk"), &texture)).contains("GPU"));
    let mut bound = Variant::default();
    bound
        .texel_formats
        .insert("act_zero_points".into(), TexelBinding { alloc: TexelFormat::R32Float, bind: TexelFormat::Rgba8Sint });
    assert!(reason(cpu.supports(Op::Linear, &scheme("8da4w-vk"), &bound)).contains("texture"));
    let wg = Variant { workgroup_size: Some(128), ..Variant::default() };
    assert!(cpu.supports(Op::Linear, &scheme("8da4w-vk"), &wg).is_supported());
    // Everything else of the catalogue runs.
    for &(name, ..) in WEIGHT_SCHEMES {
        for op in [Op::Quantize, Op::Dequantize, Op::Embedding, Op::Linear] {
            assert!(cpu.supports(op, &scheme(name), &plain).is_supported(), "{op} {name}");
        }
    }
    for &(name, ..) in ACT_SCHEMES {
        assert!(cpu.supports(Op::ActQuant, &scheme(name), &plain).is_supported(), "{name}");
    }
    // run says the same as supports.
    let mut c = case(Op::Quantize, scheme("pal4-pt"), 4, 16, 1, 1);
    let mut dev = CpuDevice::new();
    assert!(matches!(dev.run(&c), Err(DeviceError::Unsupported { .. })));
    c.variant = texture;
    c.scheme = scheme("w4g16-sym-ao");
    assert!(matches!(dev.run(&c), Err(DeviceError::Unsupported { .. })));
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let mut dev = CpuDevice::new();
    // An id past the table.
    let mut c = case(Op::Embedding, scheme("q4_0"), 4, 32, 1, 3);
    c.ids = Some(vec![0, 4]);
    assert!(matches!(dev.run(&c), Err(DeviceError::BadCase { .. })));
    // Mismatched inner dimensions.
    let mut c = case(Op::Linear, scheme("w4g16-sym-ao"), 4, 32, 2, 3);
    c.x = Some(Matrix::zeros(2, 16));
    assert!(dev.run(&c).is_err());
    // Missing inputs, truncated scales, codes out of range, NaN weights, a group that does not divide.
    let mut c = case(Op::Dequantize, scheme("w4g16-sym-ao"), 4, 32, 1, 3);
    c.wq = None;
    assert!(matches!(dev.run(&c), Err(DeviceError::BadCase { .. })));
    let mut c = case(Op::Dequantize, scheme("w4g16-sym-ao"), 4, 32, 1, 3);
    c.wq.as_mut().unwrap().scales.pop();
    assert!(matches!(dev.run(&c), Err(DeviceError::BadCase { .. })));
    let mut c = case(Op::Dequantize, scheme("w4g16-sym8"), 4, 32, 1, 3);
    c.wq.as_mut().unwrap().q[5] = 9;
    assert!(dev.run(&c).is_err());
    let mut c = case(Op::Quantize, scheme("w4g16-sym-ao"), 4, 32, 1, 3);
    c.w.as_mut().unwrap().data[3] = f32::NAN;
    assert!(matches!(dev.run(&c), Err(DeviceError::BadCase { .. })));
    let c = case(Op::Quantize, scheme("w4g24-sym-ao"), 4, 32, 1, 3);
    assert!(dev.run(&c).is_err());
    let mut c = case(Op::ActQuant, scheme("a8-pt-asym-vk"), 1, 32, 2, 3);
    c.x.as_mut().unwrap().data[0] = f32::INFINITY;
    assert!(matches!(dev.run(&c), Err(DeviceError::BadCase { .. })));
    // A wq made by another scheme.
    let mut c = case(Op::Dequantize, scheme("w4g16-sym-ao"), 4, 32, 1, 3);
    c.scheme = scheme("w4g16-sym-ao@f16");
    assert!(matches!(dev.run(&c), Err(DeviceError::BadCase { .. })));
}

#[test]
fn device_info_describes_the_machine() {
    let cpu = CpuDevice::new();
    let info = cpu.info();
    assert_eq!(info.id, "cpu");
    assert_eq!(info.kind, devices::DeviceKind::Cpu);
    assert_eq!(info.backend, "native");
    assert!(info.driver.starts_with("qdiff "));
    assert!(!info.name.is_empty());
    assert!(info.features["threads"].as_u64().unwrap() >= 1);
    assert!(info.features.contains_key("simd"));
    assert!(info.features.contains_key("accumulation"));
}

/// Representative (op, scheme, shape) cases for each fault, with shapes where it bites
/// (≥ 2 groups per row, nonzero zero-points, N ≠ G).
fn fault_cases(f: Fault) -> Vec<OpCase> {
    let weight = |names: &[&str], n: usize, k: usize| -> Vec<OpCase> {
        let mut v = Vec::new();
        for (i, name) in names.iter().enumerate() {
            for op in [Op::Dequantize, Op::Embedding, Op::Linear] {
                v.push(case(op, scheme(name), n, k, 3, 40 + i as u64));
            }
        }
        v
    };
    let mut cases = match f {
        Fault::ZpBindInt8 | Fault::ZpBindF16 => {
            let mut v: Vec<OpCase> = [
                "a8-pt-asym-ao",
                "a8-pt-asym-ao-i8w@bf16",
                "a8-pt-asym-decomp",
                "a8-pt-asym-etport",
                "a8-pt-asym-xnn",
                "a8-pt-asym-vk-zpf32@f16",
                "8da4w-vk",
            ]
            .iter()
            .map(|n| case(Op::ActQuant, scheme(n), 1, 64, 4, 9))
            .collect();
            for n in ["8da4w-ao", "8da4w-xnn@bf16", "8da4w-vk-zpf32", "8da4wg16-vk-zpf16@f16"] {
                v.push(case(Op::Linear, scheme(n), 6, 64, 4, 9));
            }
            // Tokens skewed to one side give zero-points away from 0, −128 and 127, the values
            // both bindings happen to preserve.
            for c in &mut v {
                c.x = Some(skewed(&mut Rng(31), 4, 64));
            }
            v
        }
        Fault::NibbleSwap => {
            let mut v = weight(
                &[
                    "w4g32-sym8",
                    "w4g32-fzp@bf16",
                    "w4g32-symclip",
                    "w4g32-asym-coreml@f16",
                    "w4g32-mlx-cpu",
                    "w4g32-mlx-gpu@f16",
                    "q4_0",
                    "q4_1",
                    "pal4-pt-uniform",
                    "8da4w-xnn",
                    "8da4w-vk",
                ],
                6,
                64,
            );
            v.extend(weight(&["q4_K"], 3, 256));
            v
        }
        Fault::ScaleTranspose | Fault::DropLastGroup => {
            let mut v = weight(
                &[
                    "w4g16-sym-ao",
                    // (@f16, not @bf16: at K = 64 the bf16 bound, 68·2^-8 of Σ|x̂ŵ|, is wider than
                    // one dropped group of four.)
                    "w4g16-asym-ao@f16",
                    "w8g16-symclip@f16",
                    "w4g16-sym8",
                    "w4g16-fzp",
                    "w4g16-asym-coreml",
                    "w4g32-mlx-cpu",
                    "q4_0",
                    "q4_1@f16",
                    "q8_0",
                    "8da4wg16-ao",
                    "8da4wg16-xnn",
                    "8da4wg16-vk",
                ],
                3,
                64,
            );
            v.extend(weight(&["q4_K"], 3, 512));
            v
        }
        // Committed by the isolated worker, never by the runner: nothing to check here.
        Fault::Crash | Fault::Hang => Vec::new(),
    };
    for c in &mut cases {
        c.inject = Some(f);
    }
    cases
}

#[test]
fn every_fault_turns_the_verdict_into_a_mismatch() {
    let mut missed = Vec::new();
    // crash and hang are committed by the isolated worker around a device, never by the runner.
    for f in Fault::ALL.into_iter().filter(|f| !f.kills_process()) {
        for c in fault_cases(f) {
            assert!(f.applies(c.op, &c.scheme).is_ok(), "{} should apply to {} {}", f.name(), c.op, c.scheme);
            if check(&c).is_ok() {
                missed.push(format!("{} on {} {}", f.name(), c.op, c.scheme));
            }
        }
    }
    assert!(missed.is_empty(), "faults the comparison would not catch:\n{}", missed.join("\n"));
}

#[test]
fn faults_that_cannot_bite_are_not_committed() {
    for (f, op, name) in [
        (Fault::NibbleSwap, Op::Dequantize, "w4g32-sym-ao"),
        (Fault::NibbleSwap, Op::Linear, "q8_0"),
        (Fault::ScaleTranspose, Op::Dequantize, "w8pc-sym-ao"),
        (Fault::DropLastGroup, Op::Linear, "pal4g2-uniform"),
        (Fault::ZpBindInt8, Op::Linear, "w4g32-sym-ao"),
        (Fault::ZpBindF16, Op::ActQuant, "a8-q8_0-ref"),
        (Fault::ScaleTranspose, Op::Quantize, "w4g16-sym-ao"),
    ] {
        assert!(f.applies(op, &scheme(name)).is_err());
        let mut c = case(op, scheme(name), 6, 64, 3, 8);
        c.inject = Some(f);
        check(&c).unwrap_or_else(|e| panic!("{} on {op} {name}: {e}", f.name()));
    }
}

/// Outputs without the timing, for bit comparisons across runs.
fn untimed(mut o: Outputs) -> Outputs {
    o.timing = None;
    o
}

fn run_with_threads(threads: usize, c: &OpCase) -> Outputs {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    untimed(pool.install(|| CpuDevice::new().run(c)).unwrap())
}

fn bits(o: &Outputs) -> Vec<u32> {
    o.values.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    for (op, name, n, k, m) in [
        (Op::Linear, "w4g32-sym-ao@f16", 41, 64, 5),
        (Op::Linear, "w4g32-mlx-cpu@bf16", 19, 64, 3),
        (Op::Linear, "8da4w-vk@f16", 23, 64, 4),
        (Op::Quantize, "q4_K", 5, 512, 1),
        (Op::Dequantize, "q4_1", 33, 64, 1),
        (Op::ActQuant, "a8-pt-asym-decomp", 1, 40, 17),
    ] {
        let c = case(op, scheme(name), n, k, m, 21);
        let one = run_with_threads(1, &c);
        let many = run_with_threads(4, &c);
        assert_eq!(bits(&one), bits(&many), "{op} {name}");
        assert_eq!(one.ints, many.ints, "{op} {name}");
    }
}

/// Schemes the property tests draw from.
const PROP_SCHEMES: &[&str] = &[
    "w4g16-sym-ao",
    "w4g16-asym-ao@bf16",
    "w8pc-sym-nce-ao@f16",
    "w4g16-symclip@f16",
    "w4g16-symclip-coreai",
    "w4g16-sym8@bf16",
    "w4g16-fzp@f16",
    "w8g16-asym-coreml@bf16",
    "w4g32-mlx-cpu@f16",
    "w3g32-mlx-gpu",
    "q4_0",
    "q4_1@bf16",
    "q8_0@f16",
    "pal3-pt-uniform@bf16",
    "8da4wg16-xnn@f16",
    "8da4wg16-vk",
];

/// A random `[rows, 64]` tensor: uniform at a random magnitude, sprinkled with zeros, negative
/// zeros and repeated values.
fn random_matrix(seed: u64, rows: usize, cols: usize) -> Matrix {
    let mut rng = Rng(seed);
    let mag = 2f32.powi(rng.below(12) as i32 - 8);
    let data = (0..rows * cols)
        .map(|_| match rng.below(10) {
            0 => 0.0,
            1 => -0.0,
            2 => mag / 2.0,
            _ => rng.uniform() * mag,
        })
        .collect();
    Matrix::new(rows, cols, data).unwrap()
}

fn weight_case(op: Op, s: Scheme, seed: u64, rows: usize) -> OpCase {
    let w = random_matrix(seed, rows, 64);
    OpCase {
        op,
        scheme: s,
        variant: Variant::default(),
        inject: None,
        wq: (op != Op::Quantize).then(|| s.quantize(&w).unwrap()),
        x: (op == Op::Linear).then(|| random_matrix(seed ^ 0x5555, 3, 64)),
        w: Some(w),
        ids: None,
    }
}

proptest! {
    // 48 cases each by default (the binary stays fast); `PROPTEST_CASES` overrides.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn dequantize_is_bit_exact(i in 0..PROP_SCHEMES.len(), seed in any::<u64>(), rows in 1usize..6) {
        let c = weight_case(Op::Dequantize, scheme(PROP_SCHEMES[i]), seed, rows);
        prop_assert!(check(&c).is_ok(), "{}: {:?}", PROP_SCHEMES[i], check(&c));
    }

    #[test]
    fn quantize_is_bit_exact(i in 0..PROP_SCHEMES.len(), seed in any::<u64>(), rows in 1usize..6) {
        let c = weight_case(Op::Quantize, scheme(PROP_SCHEMES[i]), seed, rows);
        prop_assert!(check(&c).is_ok(), "{}: {:?}", PROP_SCHEMES[i], check(&c));
    }

    #[test]
    fn linear_is_within_the_accumulation_bound(i in 0..PROP_SCHEMES.len(), seed in any::<u64>(), rows in 1usize..12) {
        let c = weight_case(Op::Linear, scheme(PROP_SCHEMES[i]), seed, rows);
        prop_assert!(check(&c).is_ok(), "{}: {:?}", PROP_SCHEMES[i], check(&c));
    }

    #[test]
    fn act_quant_codes_are_exact(
        flavor in prop::sample::select(vec![
            "a8-pt-asym-ao", "a8-pt-asym-ao@bf16", "a8-pt-asym-ao-i8w@f16", "a8-pt-asym-decomp@bf16",
            "a8-pt-asym-etport", "a8-pt-asym-xnn", "a8-pt-asym-vk@f16", "a8-pt-asym-vk-away", "a8-q8_0-neon",
        ]),
        seed in any::<u64>(),
        rows in 1usize..8,
    ) {
        let c = OpCase {
            op: Op::ActQuant,
            scheme: scheme(flavor),
            variant: Variant::default(),
            inject: None,
            w: None,
            wq: None,
            x: Some(random_matrix(seed, rows, 64)),
            ids: None,
        };
        prop_assert!(check(&c).is_ok(), "{}: {:?}", flavor, check(&c));
    }

    #[test]
    fn thread_count_never_changes_a_bit(i in 0..PROP_SCHEMES.len(), seed in any::<u64>(), threads in 2usize..5) {
        let c = weight_case(Op::Linear, scheme(PROP_SCHEMES[i]), seed, 19);
        let (one, many) = (run_with_threads(1, &c), run_with_threads(threads, &c));
        prop_assert_eq!(bits(&one), bits(&many));
        prop_assert_eq!(one.ints, many.ints);
    }
}

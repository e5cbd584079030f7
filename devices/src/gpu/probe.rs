//! Probes of a GPU's arithmetic, measured by tiny compute shaders (schemes.md §5.6 and §9: what
//! must be recorded with every device result). Keys and values:
//!
//! | key | values |
//! |---|---|
//! | `probe.fma_fused` | `true` / `false`: WGSL `fma` (SPIR-V GLSL `Fma`) rounds once |
//! | `probe.mul_add_contracted` | `true` / `false`: a plain `a * b + c` was fused by the compiler |
//! | `probe.wgsl_round_ties` | `"even"` (WGSL requires it) / `"away"` / `"other: [...]"` |
//! | `probe.glsl_round_ties` | same, for GLSL `Round` (implementation-defined ties), run through SPIR-V passthrough |
//! | `probe.f32_to_f16`, `probe.pack2x16float` | `"rte"` / `"rtz"` / `"rna"` / `"other: ..."` |
//! | `probe.f32_to_f16_overflow`, `probe.pack2x16float_overflow` | `"inf"` / `"max"` / `"other: ..."` |
//! | `probe.f32_denormals`, `probe.f16_denormals` | `"preserved"` / `"flushed"` / `"mixed: op=outcome, ..."` |
//! | `probe.subgroup_size` | the measured size (number), or `"varying: [...]"` |
//! | `probe.subgroup_size_adapter_range` | `[min, max]` as the adapter reports it |
//! | `probe.div_correctly_rounded`, `probe.recip_correctly_rounded` | `"correctly_rounded"` / `"max_ulp: N (M of 4096 differ)"` |
//!
//! A probe that cannot run records, under each of its keys, a string starting `unknown:` (a
//! missing feature: SHADER_F16, SUBGROUP, PASSTHROUGH_SHADERS) or `error:` (compile error, device
//! error, an output never written), and the others still run.
//!
//! Kernels live in `kernels/probe*.wgsl`. Values cross the host boundary as bit patterns and are
//! classified here against exact expectations computed on the host.

use super::spirv;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

const PROBE_WGSL: &str = include_str!("kernels/probe.wgsl");
const PROBE_F16_WGSL: &str = include_str!("kernels/probe_f16.wgsl");
const PROBE_F16_DENORMALS_WGSL: &str = include_str!("kernels/probe_f16_denormals.wgsl");
const PROBE_SUBGROUP_WGSL: &str = include_str!("kernels/probe_subgroup.wgsl");

/// Written into every output word before a launch; a word still holding it afterwards was never
/// written (a launch that silently did nothing must not look like a measurement). A NaN no
/// probe produces.
const SENTINEL: u32 = 0x7FA5_A5A5;

/// How long one probe may keep the queue busy before it is declared hung.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Pairs of operands the division probe checks (and 1/b for each b).
const DIV_PAIRS: usize = 4096;

/// Measure the device's arithmetic. Keys are `probe.*` (see the module doc); a probe that could
/// not run records a string starting `unknown:` (missing feature) or `error:` (it failed).
pub fn probe(adapter: &wgpu::Adapter, device: &wgpu::Device, queue: &wgpu::Queue) -> BTreeMap<String, Value> {
    let runner = Runner::new(device, queue);
    let features = device.features();
    let info = adapter.get_info();
    let mut out = BTreeMap::new();
    // Each probe's keys get its values, or all of them the reason it could not measure. A panic
    // inside wgpu or the driver glue is caught and recorded the same way: probing is best effort
    // and must never take the device listing down with it.
    let mut record = |keys: &[&str], probe: &dyn Fn() -> Probed| {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(probe)).unwrap_or_else(|panic| {
            let what =
                panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            Err(format!("error: panicked: {}", what.unwrap_or_default()))
        });
        match result {
            Ok(pairs) => out.extend(pairs.into_iter().map(|(k, v)| (k.to_string(), v))),
            Err(why) => out.extend(keys.iter().map(|k| (k.to_string(), Value::String(why.clone())))),
        }
    };
    let f16 = features.contains(wgpu::Features::SHADER_F16);
    let no_f16 = || Err("unknown: the device has no SHADER_F16".to_string());

    record(&["probe.fma_fused", "probe.mul_add_contracted"], &|| fma(&runner));
    record(&["probe.wgsl_round_ties"], &|| wgsl_round(&runner));
    record(&["probe.glsl_round_ties"], &|| glsl_round(&runner, features, info.backend));
    record(&["probe.f32_to_f16", "probe.f32_to_f16_overflow"], &|| if f16 { f32_to_f16(&runner) } else { no_f16() });
    record(&["probe.pack2x16float", "probe.pack2x16float_overflow"], &|| pack2x16float(&runner));
    record(&["probe.f32_denormals"], &|| f32_denormals(&runner));
    record(&["probe.f16_denormals"], &|| if f16 { f16_denormals(&runner) } else { no_f16() });
    record(&["probe.subgroup_size"], &|| subgroup(&runner, features, &info));
    record(&["probe.div_correctly_rounded", "probe.recip_correctly_rounded"], &|| division(&runner));
    out
}

// ---------------------------------------------------------------------------------------------
// The probes. Each returns its keys and values, or why it could not measure.

type Probed = Result<Vec<(&'static str, Value)>, String>;

/// `fma(a, b, c)` and `a * b + c` with a = b = 1 + 2^-12, c = -1: a·b = 1 + 2^-11 + 2^-24 exactly,
/// whose 2^-24 is half an ulp of [1, 2) and a tie that rounds to even (1 + 2^-11). So a fused
/// result is 2^-11 + 2^-24 and a rounded-product result is 2^-11.
fn fma(runner: &Runner) -> Probed {
    let (a, b, c) = FMA_OPERANDS;
    let out = runner.run_wgsl(PROBE_WGSL, "fma_probe", &[a.to_bits(), b.to_bits(), c.to_bits()], 3, 1)?;
    let fused = a.mul_add(b, c);
    let unfused = a * b + c;
    let classify = |bits: u32| -> Value {
        if bits == fused.to_bits() {
            json!(true)
        } else if bits == unfused.to_bits() {
            json!(false)
        } else {
            json!(format!("other: {:e} (fused {fused:e}, unfused {unfused:e})", f32::from_bits(bits)))
        }
    };
    Ok(vec![("probe.fma_fused", classify(out[0])), ("probe.mul_add_contracted", classify(out[1]))])
}

/// Operands of the fma probe (see [`fma`]).
const FMA_OPERANDS: (f32, f32, f32) = (1.0 + 1.0 / 4096.0, 1.0 + 1.0 / 4096.0, -1.0);

/// Inputs whose rounding tells ties-to-even from ties-away (and from truncation or floor).
const ROUND_INPUTS: [f32; 8] = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 0.49999997];

/// Classify `round` results: "even", "away", or "other: [...]".
fn round_ties(out: &[u32]) -> Value {
    let got: Vec<f32> = out.iter().map(|&b| f32::from_bits(b)).collect();
    let even: Vec<f32> = ROUND_INPUTS.iter().map(|x| x.round_ties_even()).collect();
    let away: Vec<f32> = ROUND_INPUTS.iter().map(|x| x.round()).collect();
    // Compare bits so -0.0 (round(-0.5) to even) is told from +0.0.
    let same = |want: &[f32]| got.iter().zip(want).all(|(g, w)| g.to_bits() == w.to_bits());
    if same(&even) {
        json!("even")
    } else if same(&away) {
        json!("away")
    } else {
        let pairs: Vec<String> = ROUND_INPUTS.iter().zip(&got).map(|(x, g)| format!("{x}→{g}")).collect();
        json!(format!("other: [{}]", pairs.join(", ")))
    }
}

/// WGSL `round` (round-half-even by the WGSL spec; measured, not assumed).
fn wgsl_round(runner: &Runner) -> Probed {
    let input: Vec<u32> = ROUND_INPUTS.iter().map(|x| x.to_bits()).collect();
    let out = runner.run_wgsl(PROBE_WGSL, "round_probe", &input, input.len(), 1)?;
    Ok(vec![("probe.wgsl_round_ties", round_ties(&out))])
}

/// GLSL/SPIR-V `Round`, whose ties are implementation-defined: the same kernel as WGSL `round`
/// with `RoundEven` patched to `Round` ([`spirv::use_glsl_round`]), through SPIR-V passthrough.
fn glsl_round(runner: &Runner, features: wgpu::Features, backend: wgpu::Backend) -> Probed {
    if backend != wgpu::Backend::Vulkan {
        return Err(format!("unknown: the GLSL round probe is SPIR-V, and this is {backend:?}"));
    }
    if !features.contains(wgpu::Features::PASSTHROUGH_SHADERS) {
        return Err("unknown: no passthrough (the device lacks PASSTHROUGH_SHADERS)".into());
    }
    let mut words = spirv::wgsl_to_spirv(PROBE_WGSL).map_err(|e| format!("error: {e}"))?;
    if spirv::use_glsl_round(&mut words) == 0 {
        return Err("error: naga emitted no RoundEven to patch".into());
    }
    let module =
        runner.scoped(|| spirv::create_passthrough(runner.device, "qdiff probe glsl round", &words, "round_probe"))?;
    let input: Vec<u32> = ROUND_INPUTS.iter().map(|x| x.to_bits()).collect();
    let out = runner.run(&module, "round_probe", &input, input.len(), 1)?;
    Ok(vec![("probe.glsl_round_ties", round_ties(&out))])
}

/// fp32 → fp16 rounding modes the probes tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rounding {
    /// To nearest, ties to even (IEEE default).
    Rte,
    /// Toward zero.
    Rtz,
    /// To nearest, ties away from zero.
    Rna,
}

/// fp32 → fp16 bits in `mode`, overflow to ±inf for the round-to-nearest modes and to ±65504
/// for RTZ (what RTZ gives by definition). NaN keeps its sign and becomes the quiet NaN 0x7E00.
fn f16_bits(x: f32, mode: Rounding) -> u16 {
    let u = x.to_bits();
    let sign = ((u >> 16) & 0x8000) as u16;
    let a = u & 0x7fff_ffff;
    if a > 0x7f80_0000 {
        return sign | 0x7e00;
    }
    if a == 0x7f80_0000 {
        return sign | 0x7c00;
    }
    // Work on |x| as an integer multiple of 2^-149 (the f32 quantum), expressed as m·2^e.
    let exp = (a >> 23) as i32;
    let (m, e) = if exp == 0 { (a as u64, -149) } else { (((a & 0x7f_ffff) | 0x80_0000) as u64, exp - 150) };
    // f16 quantum at this magnitude: 2^-24 for subnormals, else 2^(E-10) for |x| in [2^E, 2^(E+1)).
    let top = e + 63 - m.leading_zeros() as i32; // floor(log2 |x|)
    let q = (top - 10).max(-24);
    // |x| / 2^q as an integer part and a remainder over 2^shift.
    let shift = q - e;
    let (int, rem, half) = if shift <= 0 {
        (m << (-shift) as u32, 0u64, 1u64)
    } else if shift >= 64 {
        (0, m, u64::MAX) // far below the quantum: the remainder is below half
    } else {
        (m >> shift as u32, m & ((1u64 << shift as u32) - 1), 1u64 << (shift as u32 - 1))
    };
    let up = match mode {
        Rounding::Rtz => false,
        Rounding::Rte => rem > half || (rem == half && int & 1 == 1),
        Rounding::Rna => rem >= half && rem != 0,
    };
    let n = int + up as u64; // |result| = n · 2^q
                             // Encode n·2^q: subnormal when q = -24 and n < 1024, else normal with mantissa n - 1024
                             // (n may have carried to 2048: the next binade, mantissa 0).
    let bits = if q == -24 && n < 1024 {
        n as u32
    } else {
        let (n, q) = if n >= 2048 { (n >> 1, q + 1) } else { (n, q) };
        let biased = q + 10 + 15;
        if biased >= 31 {
            if mode == Rounding::Rtz {
                0x7bff
            } else {
                0x7c00
            }
        } else {
            ((biased as u32) << 10) | (n as u32 - 1024)
        }
    };
    sign | bits as u16
}

/// Inputs for the conversion probes: exact ties, just above and below ties, both signs, and
/// values with random low bits (which tell RTE from RTZ half of the time each), all normal in f16.
fn f16_rounding_inputs() -> Vec<f32> {
    let ulp = |k: i32| 2f32.powi(k);
    let mut v = vec![
        1.0 + ulp(-11),               // tie between 1 and 1 + 2^-10: even is 1
        1.0 + 3.0 * ulp(-11),         // tie between 1 + 2^-10 and 1 + 2^-9: even is up
        1.0 + ulp(-11) + ulp(-20),    // just above a tie
        1.0 + ulp(-11) - ulp(-22),    // just below a tie
        -(1.0 + 3.0 * ulp(-11)),      // negative tie
        -(1.0 + ulp(-11) + ulp(-20)), // negative, just above a tie
        1000.0 + 0.25,                // tie at a larger binade (f16 ulp 0.5 in [512, 1024))
        ulp(-14) * (1.0 + ulp(-11)),  // tie at the smallest normal binade
    ];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..56 {
        let r = splitmix(&mut state);
        let sign = (r >> 63) as u32;
        let exp = 127 - 14 + (r % 29) as u32; // 2^-14 ..= 2^14
        let mant = (r >> 20) as u32 & 0x7f_ffff;
        v.push(f32::from_bits((sign << 31) | (exp << 23) | mant));
    }
    v
}

/// Values beyond f16's range: 65520 is the tie between 65504 and 2^16 (→ inf under RTE).
const F16_OVERFLOW_INPUTS: [f32; 4] = [65520.0, 1.0e6, -1.0e6, 3.0e38];

/// Classify device conversions `out` of `inputs` (f16 bits in the low half): rounding mode and
/// overflow behaviour.
fn classify_f16(inputs: &[f32], out: &[u32]) -> (Value, Value) {
    let (rounding, overflow) = out.split_at(inputs.len() - F16_OVERFLOW_INPUTS.len());
    let got: Vec<u16> = rounding.iter().map(|&b| b as u16).collect();
    let mode = [(Rounding::Rte, "rte"), (Rounding::Rtz, "rtz"), (Rounding::Rna, "rna")]
        .into_iter()
        .find(|(m, _)| inputs.iter().zip(&got).all(|(x, g)| f16_bits(*x, *m) == *g))
        .map(|(_, name)| json!(name))
        .unwrap_or_else(|| {
            let wrong: Vec<String> = inputs
                .iter()
                .zip(&got)
                .filter(|(x, g)| f16_bits(**x, Rounding::Rte) != **g)
                .take(4)
                .map(|(x, g)| format!("{x:e}→{g:#06x} (rte {:#06x})", f16_bits(*x, Rounding::Rte)))
                .collect();
            json!(format!("other: {}", wrong.join(", ")))
        });
    let over: Vec<u16> = overflow.iter().map(|&b| b as u16 & 0x7fff).collect();
    let overflow = if over.iter().all(|&b| b == 0x7c00) {
        json!("inf")
    } else if over.iter().all(|&b| b == 0x7bff) {
        json!("max")
    } else {
        let shown: Vec<String> =
            F16_OVERFLOW_INPUTS.iter().zip(overflow).map(|(x, b)| format!("{x:e}→{:#06x}", *b as u16)).collect();
        json!(format!("other: {}", shown.join(", ")))
    };
    (mode, overflow)
}

fn conversion_inputs() -> Vec<f32> {
    let mut inputs = f16_rounding_inputs();
    inputs.extend(F16_OVERFLOW_INPUTS);
    inputs
}

/// `f16(x)` for each f32 x on the device (needs SHADER_F16): the f16 bits, one per input.
fn convert_to_f16(runner: &Runner, inputs: &[f32]) -> Result<Vec<u16>, String> {
    // Pad to an even count: the output is read as whole words, two f16 each, all written.
    let mut bits: Vec<u32> = inputs.iter().map(|x| x.to_bits()).collect();
    if bits.len() % 2 == 1 {
        bits.push(bits[bits.len() - 1]);
    }
    let out = runner.run_wgsl(PROBE_F16_WGSL, "convert_probe", &bits, bits.len() / 2, groups_of_64(bits.len()))?;
    Ok(out.iter().flat_map(|w| [*w as u16, (w >> 16) as u16]).take(inputs.len()).collect())
}

/// `f16(x)` for f32 x (needs SHADER_F16).
fn f32_to_f16(runner: &Runner) -> Probed {
    let inputs = conversion_inputs();
    let out: Vec<u32> = convert_to_f16(runner, &inputs)?.into_iter().map(u32::from).collect();
    let (mode, overflow) = classify_f16(&inputs, &out);
    Ok(vec![("probe.f32_to_f16", mode), ("probe.f32_to_f16_overflow", overflow)])
}

/// `pack2x16float` (no f16 feature needed; WGSL leaves out-of-range results indeterminate).
fn pack2x16float(runner: &Runner) -> Probed {
    let inputs = conversion_inputs();
    let bits: Vec<u32> = inputs.iter().map(|x| x.to_bits()).collect();
    let out = runner.run_wgsl(PROBE_WGSL, "pack_probe", &bits, bits.len(), groups_of_64(bits.len()))?;
    let (mode, overflow) = classify_f16(&inputs, &out);
    Ok(vec![("probe.pack2x16float", mode), ("probe.pack2x16float_overflow", overflow)])
}

/// Workgroups for one invocation per item with `@workgroup_size(64)`.
fn groups_of_64(items: usize) -> u32 {
    items.div_ceil(64) as u32
}

/// What happened to a subnormal: kept bit-exact, flushed to (±)0, or something else.
fn denormal_outcome(got: u32, want: u32, zero_mask: u32) -> &'static str {
    if got == want {
        "preserved"
    } else if got & zero_mask == 0 {
        "flushed"
    } else {
        "wrong"
    }
}

/// Summarise named outcomes: all the same → that word, else "mixed: name=outcome, ...".
fn summarise(outcomes: &[(&str, &str)]) -> Value {
    let first = outcomes[0].1;
    if outcomes.iter().all(|(_, o)| *o == first) {
        json!(first)
    } else {
        let parts: Vec<String> = outcomes.iter().map(|(n, o)| format!("{n}={o}")).collect();
        json!(format!("mixed: {}", parts.join(", ")))
    }
}

/// f32 subnormals as inputs (2^-140 through mul and add) and as results (2^-120 · 2^-20).
fn f32_denormals(runner: &Runner) -> Probed {
    let tiny = 2f32.powi(-140);
    let (a, b) = (2f32.powi(-120), 2f32.powi(-20));
    let input = [tiny, 1.0, 0.0, a, b].map(f32::to_bits);
    let out = runner.run_wgsl(PROBE_WGSL, "denormals_probe", &input, 6, 1)?;
    if out[5] != tiny.to_bits() {
        return Err(format!("error: the buffer path changed a subnormal ({:#010x} read back)", out[5]));
    }
    let want = tiny.to_bits();
    let z = 0x7fff_ffff;
    Ok(vec![(
        "probe.f32_denormals",
        summarise(&[
            ("mul_add", denormal_outcome(out[0], want, z)),
            ("add", denormal_outcome(out[1], want, z)),
            ("mul", denormal_outcome(out[2], want, z)),
            ("mul_result", denormal_outcome(out[3], want, z)),
            ("mul_chain", denormal_outcome(out[4], want, z)),
        ]),
    )])
}

/// f16 subnormals (needs SHADER_F16): 2^-20 through mul and add, 2^-10 · 2^-10, and the
/// conversions f32 → f16 into a subnormal and f16 subnormal → f32.
fn f16_denormals(runner: &Runner) -> Probed {
    const TINY: u16 = 0x0010; // 2^-20: subnormal (f16's smallest normal is 2^-14)
    const ONE: u16 = 0x3c00;
    const A: u16 = 0x1400; // 2^-10
    let tiny_f32 = 2f32.powi(-20);
    let halves = [TINY, ONE, 0, A, A, 0];
    let input: Vec<u32> = halves.chunks(2).map(|p| p[0] as u32 | (p[1] as u32) << 16).collect();
    let out = runner.run_wgsl(PROBE_F16_DENORMALS_WGSL, "f16_denormals_probe", &input, 6, 1)?;
    let from_f32 = convert_to_f16(runner, &[tiny_f32])?[0];
    let (want, z) = (tiny_f32.to_bits(), 0x7fff_ffff);
    Ok(vec![(
        "probe.f16_denormals",
        summarise(&[
            ("mul_add", denormal_outcome(out[0], want, z)),
            ("add", denormal_outcome(out[1], want, z)),
            ("mul", denormal_outcome(out[2], want, z)),
            ("mul_result", denormal_outcome(out[3], want, z)),
            ("mul_chain", denormal_outcome(out[4], want, z)),
            ("to_f32", denormal_outcome(out[5], want, z)),
            ("from_f32", denormal_outcome(from_f32 as u32, TINY as u32, 0x7fff)),
        ]),
    )])
}

/// The subgroup size compute shaders run with (needs SUBGROUP), next to the adapter's range.
fn subgroup(runner: &Runner, features: wgpu::Features, info: &wgpu::AdapterInfo) -> Probed {
    if !features.contains(wgpu::Features::SUBGROUP) {
        return Err("unknown: the device has no SUBGROUP".into());
    }
    let out = runner.run_wgsl(PROBE_SUBGROUP_WGSL, "subgroup_probe", &[1], 256, 1)?;
    let (sizes, sums) = out.split_at(128);
    let size = sizes[0];
    let range = json!([info.subgroup_min_size, info.subgroup_max_size]);
    let mut found = vec![("probe.subgroup_size_adapter_range", range)];
    if sizes.iter().any(|&s| s != size) || sums.iter().any(|&s| s != size) {
        let mut distinct: Vec<u32> = sizes.iter().chain(sums).copied().collect();
        distinct.sort_unstable();
        distinct.dedup();
        found.push(("probe.subgroup_size", json!(format!("varying: {distinct:?}"))));
    } else {
        found.push(("probe.subgroup_size", json!(size)));
        if size < info.subgroup_min_size || size > info.subgroup_max_size {
            found.push(("probe.subgroup_size_note", json!("outside the adapter's reported range")));
        }
    }
    Ok(found)
}

/// `a / b` and `1.0 / b` on [`DIV_PAIRS`] deterministic pairs against f64 division rounded to
/// f32, which is the correctly rounded f32 quotient (53 ≥ 2·24 + 2 bits: no double rounding).
fn division(runner: &Runner) -> Probed {
    let pairs = division_pairs();
    let input: Vec<u32> = pairs.iter().flat_map(|(a, b)| [a.to_bits(), b.to_bits()]).collect();
    let out = runner.run_wgsl(PROBE_WGSL, "div_probe", &input, input.len(), groups_of_64(pairs.len()))?;
    let verdict = |quotients: &mut dyn Iterator<Item = (f32, u32)>| -> Value {
        let (mut differ, mut worst) = (0usize, 0u64);
        for (want, got) in quotients {
            let d = ulp_distance(want.to_bits(), got);
            if d != 0 {
                differ += 1;
                worst = worst.max(d);
            }
        }
        if differ == 0 {
            json!("correctly_rounded")
        } else {
            json!(format!("max_ulp: {worst} ({differ} of {} differ)", pairs.len()))
        }
    };
    let div = verdict(&mut pairs.iter().enumerate().map(|(i, (a, b))| (exact_div(*a, *b), out[2 * i])));
    let recip = verdict(&mut pairs.iter().enumerate().map(|(i, (_, b))| (exact_div(1.0, *b), out[2 * i + 1])));
    Ok(vec![("probe.div_correctly_rounded", div), ("probe.recip_correctly_rounded", recip)])
}

/// The correctly rounded f32 quotient.
fn exact_div(a: f32, b: f32) -> f32 {
    (a as f64 / b as f64) as f32
}

/// Distance in units in the last place between two finite f32 bit patterns (on the ordered
/// integer line, so it counts across zero); NaN against a number counts as the maximum.
fn ulp_distance(a: u32, b: u32) -> u64 {
    if f32::from_bits(a).is_nan() || f32::from_bits(b).is_nan() {
        return if a == b { 0 } else { u32::MAX as u64 };
    }
    let ordered = |x: u32| -> i64 {
        if x & 0x8000_0000 != 0 {
            -((x & 0x7fff_ffff) as i64)
        } else {
            x as i64
        }
    };
    (ordered(a) - ordered(b)).unsigned_abs()
}

/// Division operands: random mantissas (all 23 bits) with exponents in ±20 and random signs, so
/// quotients stay normal; the first few are classic hard cases (1/3, divisors of all-ones
/// mantissa, a quotient within an ulp of 1).
fn division_pairs() -> Vec<(f32, f32)> {
    let mut pairs = vec![
        (1.0, 3.0),
        (2.0, 3.0),
        (7.0, 10.0),
        (1.0, f32::from_bits(0x3fff_ffff)),
        (f32::from_bits(0x3fff_fffe), f32::from_bits(0x3fff_ffff)),
        (f32::from_bits(0x3f80_0001), f32::from_bits(0x3f7f_ffff)),
        (1.0, 1.0 + f32::EPSILON),
        (3.0, 0.1),
    ];
    let mut state = 0x0123_4567_89AB_CDEFu64;
    let mut random = || {
        let r = splitmix(&mut state);
        let sign = (r >> 63) as u32;
        let exp = (127 - 20 + (r % 41)) as u32;
        let mant = (r >> 16) as u32 & 0x7f_ffff;
        f32::from_bits((sign << 31) | (exp << 23) | mant)
    };
    while pairs.len() < DIV_PAIRS {
        let (a, b) = (random(), random());
        pairs.push((a, b));
    }
    pairs
}

/// SplitMix64: a deterministic generator, so every device sees the same operands.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Run `f` with every wgpu error it raises on `device` captured (instead of reaching wgpu's
/// default handler, which panics); the first error becomes `Err("error: ...")`.
pub(crate) fn scoped<T>(device: &wgpu::Device, f: impl FnOnce() -> T) -> Result<T, String> {
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let value = f();
    // Scopes pop in reverse order of their pushes.
    let errors =
        [pollster::block_on(validation.pop()), pollster::block_on(internal.pop()), pollster::block_on(oom.pop())];
    match errors.into_iter().flatten().next() {
        Some(e) => Err(format!("error: {e}")),
        None => Ok(value),
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal runner: one read-only input buffer (binding 0) and one read-write output buffer
// (binding 1), both u32 words, an explicit layout (passthrough modules have no reflection), and
// every wgpu error captured into the result instead of wgpu's panicking default handler.

struct Runner<'d> {
    device: &'d wgpu::Device,
    queue: &'d wgpu::Queue,
    layout: wgpu::PipelineLayout,
    bind_layout: wgpu::BindGroupLayout,
}

impl<'d> Runner<'d> {
    fn new(device: &'d wgpu::Device, queue: &'d wgpu::Queue) -> Self {
        let entry = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let bind_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("qdiff probe"),
            entries: &[entry(0, true), entry(1, false)],
        });
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("qdiff probe"),
            bind_group_layouts: &[Some(&bind_layout)],
            immediate_size: 0,
        });
        Runner { device, queue, layout, bind_layout }
    }

    fn scoped<T>(&self, f: impl FnOnce() -> T) -> Result<T, String> {
        scoped(self.device, f)
    }

    /// Compile `source` with wgpu (naga, wgpu's validation) and run `entry`.
    fn run_wgsl(
        &self,
        source: &str,
        entry: &str,
        input: &[u32],
        out_words: usize,
        groups: u32,
    ) -> Result<Vec<u32>, String> {
        let module = self.scoped(|| {
            self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(entry),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            })
        })?;
        self.run(&module, entry, input, out_words, groups)
    }

    /// Run `entry` of `module` on `groups` workgroups and read back `out_words` output words,
    /// refusing any word the kernel did not write.
    fn run(
        &self,
        module: &wgpu::ShaderModule,
        entry: &str,
        input: &[u32],
        out_words: usize,
        groups: u32,
    ) -> Result<Vec<u32>, String> {
        let bytes = |words: usize| (words.max(1) * 4) as u64;
        let (index, readback) = self.scoped(|| {
            let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&self.layout),
                module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
            let buffer = |label: &str, size: u64, usage: wgpu::BufferUsages| {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size,
                    usage,
                    mapped_at_creation: false,
                })
            };
            let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
            let input_buf = buffer("probe input", bytes(input.len()), storage);
            let output_buf = buffer("probe output", bytes(out_words), storage | wgpu::BufferUsages::COPY_SRC);
            let readback =
                buffer("probe readback", bytes(out_words), wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
            if !input.is_empty() {
                self.queue.write_buffer(&input_buf, 0, bytemuck::cast_slice(input));
            }
            self.queue.write_buffer(&output_buf, 0, bytemuck::cast_slice(&vec![SENTINEL; out_words.max(1)]));
            let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(entry),
                layout: &self.bind_layout,
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: input_buf.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: output_buf.as_entire_binding() },
                ],
            });
            let mut encoder =
                self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(entry) });
            {
                let mut pass = encoder
                    .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(entry), timestamp_writes: None });
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &bind_group, &[]);
                pass.dispatch_workgroups(groups, 1, 1);
            }
            encoder.copy_buffer_to_buffer(&output_buf, 0, &readback, 0, bytes(out_words));
            (self.queue.submit([encoder.finish()]), readback)
        })?;
        let wait = |index| {
            self.device
                .poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: Some(TIMEOUT) })
                .map_err(|e| format!("error: waiting for the queue: {e}"))
        };
        wait(index)?;
        let (send, receive) = mpsc::channel();
        readback.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = send.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait { submission_index: None, timeout: Some(TIMEOUT) })
            .map_err(|e| format!("error: waiting for the readback: {e}"))?;
        match receive.recv_timeout(TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("error: mapping the readback: {e}")),
            Err(_) => return Err("error: the readback was never mapped".into()),
        }
        let words: Vec<u32> = {
            let view = readback.get_mapped_range(..).map_err(|e| format!("error: reading back: {e}"))?;
            bytemuck::cast_slice(&view[..out_words * 4]).to_vec()
        };
        readback.unmap();
        if let Some(k) = words.iter().position(|&w| w == SENTINEL) {
            return Err(format!("error: `{entry}` never wrote output word {k} (sentinel still there)"));
        }
        Ok(words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fma_operands_tell_fused_from_unfused() {
        let (a, b, c) = FMA_OPERANDS;
        assert_eq!(a.mul_add(b, c), 2f32.powi(-11) + 2f32.powi(-24), "fused: exact");
        assert_eq!(a * b + c, 2f32.powi(-11), "unfused: the product's tie rounds to even");
        assert_ne!(a.mul_add(b, c), a * b + c);
    }

    #[test]
    fn f16_conversion_matches_half_and_known_ties() {
        use half::f16;
        // RTE against the half crate on many values, including subnormals, ties and overflow.
        let mut state = 7u64;
        for _ in 0..200_000 {
            let x = f32::from_bits(splitmix(&mut state) as u32);
            if x.is_nan() {
                continue;
            }
            assert_eq!(f16_bits(x, Rounding::Rte), f16::from_f32(x).to_bits(), "{x:e} ({:#010x})", x.to_bits());
        }
        let t = |k: i32| 2f32.powi(k);
        // Ties at 1: even, toward zero, away.
        let tie = 1.0 + t(-11);
        assert_eq!([Rounding::Rte, Rounding::Rtz, Rounding::Rna].map(|m| f16_bits(tie, m)), [0x3c00, 0x3c00, 0x3c01]);
        let tie_odd = 1.0 + 3.0 * t(-11);
        assert_eq!(
            [Rounding::Rte, Rounding::Rtz, Rounding::Rna].map(|m| f16_bits(tie_odd, m)),
            [0x3c02, 0x3c01, 0x3c02]
        );
        assert_eq!(f16_bits(-tie_odd, Rounding::Rtz), 0xbc01);
        // Subnormal ties: 2^-25 is half the smallest subnormal.
        assert_eq!(f16_bits(t(-25), Rounding::Rte), 0);
        assert_eq!(f16_bits(t(-25), Rounding::Rna), 1);
        assert_eq!(f16_bits(3.0 * t(-25), Rounding::Rte), 2);
        assert_eq!(f16_bits(3.0 * t(-25), Rounding::Rtz), 1);
        // Carry into the next binade, and overflow.
        assert_eq!(f16_bits(2.0 - t(-12), Rounding::Rte), 0x4000);
        assert_eq!(f16_bits(65520.0, Rounding::Rte), 0x7c00);
        assert_eq!(f16_bits(65520.0, Rounding::Rtz), 0x7bff);
        assert_eq!(f16_bits(65519.0, Rounding::Rte), 0x7bff);
        assert_eq!(f16_bits(-1e6, Rounding::Rtz), 0xfbff);
    }

    #[test]
    fn f16_inputs_separate_the_modes() {
        let inputs = f16_rounding_inputs();
        for (m1, m2) in [(Rounding::Rte, Rounding::Rtz), (Rounding::Rte, Rounding::Rna), (Rounding::Rtz, Rounding::Rna)]
        {
            assert!(inputs.iter().any(|&x| f16_bits(x, m1) != f16_bits(x, m2)), "{m1:?} vs {m2:?}");
        }
        // The classifier names each mode from its own results.
        let all = conversion_inputs();
        for (mode, name, over) in [(Rounding::Rte, "rte", "inf"), (Rounding::Rtz, "rtz", "max")] {
            let out: Vec<u32> = all.iter().map(|&x| f16_bits(x, mode) as u32).collect();
            assert_eq!(classify_f16(&all, &out), (json!(name), json!(over)));
        }
    }

    #[test]
    fn round_classifier() {
        let even: Vec<u32> = ROUND_INPUTS.iter().map(|x| x.round_ties_even().to_bits()).collect();
        let away: Vec<u32> = ROUND_INPUTS.iter().map(|x| x.round().to_bits()).collect();
        assert_eq!(round_ties(&even), json!("even"));
        assert_eq!(round_ties(&away), json!("away"));
        let floor: Vec<u32> = ROUND_INPUTS.iter().map(|x| x.floor().to_bits()).collect();
        assert!(round_ties(&floor).as_str().unwrap().starts_with("other: ["));
    }

    #[test]
    fn division_reference_and_ulps() {
        assert_eq!(exact_div(1.0, 3.0), 1.0f32 / 3.0);
        assert_eq!(ulp_distance(1.0f32.to_bits(), 1.0f32.to_bits()), 0);
        assert_eq!(ulp_distance(1.0f32.to_bits(), f32::from_bits(0x3f80_0002).to_bits()), 2);
        assert_eq!(ulp_distance(0x8000_0001, 0x0000_0001), 2, "across zero");
        let pairs = division_pairs();
        assert_eq!(pairs.len(), DIV_PAIRS);
        assert!(pairs.iter().all(|(a, b)| (a / b).is_normal()));
        // Rust's f32 division is IEEE: the f64 route agrees with it everywhere.
        assert!(pairs.iter().all(|(a, b)| exact_div(*a, *b) == a / b && exact_div(1.0, *b) == 1.0 / b));
    }
}

/// A device for GPU tests: the first Vulkan adapter (Metal on Apple platforms) with SHADER_F16,
/// SUBGROUP, PASSTHROUGH_SHADERS and TIMESTAMP_QUERY where it has them. `None` (and a note on
/// stderr) where the machine has none, unless `QDIFF_REQUIRE_VULKAN=1`, which makes it a failure.
#[cfg(test)]
pub(crate) fn test_device() -> Option<(wgpu::Adapter, wgpu::Device, wgpu::Queue)> {
    let backends = if cfg!(target_vendor = "apple") { wgpu::Backends::METAL } else { wgpu::Backends::VULKAN };
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let skip = |why: String| {
        assert!(std::env::var("QDIFF_REQUIRE_VULKAN").as_deref() != Ok("1"), "QDIFF_REQUIRE_VULKAN=1 but {why}");
        eprintln!("skipped: {why}; on Debian/Ubuntu `apt-get install mesa-vulkan-drivers libvulkan1` gives lavapipe");
        None
    };
    let Some(adapter) = pollster::block_on(instance.enumerate_adapters(backends)).into_iter().next() else {
        return skip(format!("no {backends:?} adapter found"));
    };
    let wanted = wgpu::Features::SHADER_F16
        | wgpu::Features::SUBGROUP
        | wgpu::Features::PASSTHROUGH_SHADERS
        | wgpu::Features::TIMESTAMP_QUERY;
    let desc = wgpu::DeviceDescriptor {
        label: Some("qdiff test"),
        required_features: adapter.features() & wanted,
        required_limits: adapter.limits(),
        ..Default::default()
    };
    match pollster::block_on(adapter.request_device(&desc)) {
        Ok((device, queue)) => Some((adapter, device, queue)),
        Err(e) => skip(format!("{:?} would not open a device: {e}", adapter.get_info().name)),
    }
}

#[cfg(test)]
mod gpu_tests {
    use super::*;

    #[test]
    fn probe_the_first_adapter() {
        let Some((adapter, device, queue)) = test_device() else { return };
        let info = adapter.get_info();
        let start = std::time::Instant::now();
        let found = probe(&adapter, &device, &queue);
        let seconds = start.elapsed().as_secs_f64();
        eprintln!("{} ({}, {}): probed in {seconds:.3} s", info.name, info.driver, info.driver_info);
        for (k, v) in &found {
            eprintln!("  {k} = {v}");
        }
        let errors: Vec<String> = found
            .iter()
            .filter(|(_, v)| v.as_str().is_some_and(|s| s.starts_with("error:")))
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        assert!(errors.is_empty(), "probes failed:\n{}", errors.join("\n"));
        for key in [
            "probe.fma_fused",
            "probe.mul_add_contracted",
            "probe.wgsl_round_ties",
            "probe.glsl_round_ties",
            "probe.f32_to_f16",
            "probe.f32_to_f16_overflow",
            "probe.pack2x16float",
            "probe.pack2x16float_overflow",
            "probe.f32_denormals",
            "probe.f16_denormals",
            "probe.subgroup_size",
            "probe.div_correctly_rounded",
            "probe.recip_correctly_rounded",
        ] {
            assert!(found.contains_key(key), "{key} missing");
        }
        // WGSL specifies round-half-even: a device that differs is broken, not merely different.
        assert_eq!(found["probe.wgsl_round_ties"], json!("even"));
    }
}

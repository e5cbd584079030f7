//! The `cpu` device's whole-model forward against the `ref` device's, on the synthetic Llama and
//! on Qwen2-like (q/k/v biases) and Qwen3-like (per-head q/k RMSNorm, untied head) variants with
//! half-style RoPE: fp32, weight-only schemes of every accumulation family (torchao, ggml Q4_0
//! and Q4_K, MLX), quantized heads and embedding tables, and 8da4w; plus prefill against
//! token-by-token decoding, `reset`, thread-count independence and the errors.
//!
//! ## Tolerances (from the numerics)
//!
//! Both devices multiply bit-identical weights (the cpu dequantizes with each framework's
//! arithmetic, bit for bit the reference's: `tests/cpu.rs` checks `dequantize` exactly), so for
//! fp32 and weight-only plans the logits differ only by rounding. With `u = 2^-24` and
//! `γ_n = n·u / (1 − n·u)`, per stage of the forward:
//!
//! - a cpu dot product of length K accumulates in 8 lanes of `⌈K/8⌉` terms, adds the lanes
//!   pairwise (3 adds) and the tail (1): `|ŝ − s| ≤ γ_{⌈K/8⌉+4} · Σ_k |x_k·w_k|`; MLX's
//!   accumulation in T (f32 here) is one sequential sum: `γ_{K+1}`; the reference rounds its
//!   exact sum once. K ranges over D, F, Hq·Dh (the linears) and Dh (attention scores);
//! - P·V sums the S visible positions sequentially: `γ_{S+1}` relative to `Σ_j p_j·|v_j|`;
//! - RMSNorm (f32 squares, f64 sum, `1/sqrtf`, two products), RoPE (f32 tables rounded from f64
//!   and a 2-term rotation), softmax (`expf` of a rounded difference, f64 sum, a product) and
//!   SiLU are each within 8u of their exact value, relative to the same kind of absolute sums.
//!
//! `η` is the largest of those bounds for the model's shapes. Along the longest path a value
//! passes N = 14·L + 2 rounding stages (per layer: norm, q/k/v, q/k norm, RoPE, scores, softmax,
//! P·V, o, residual, norm, gate/up, SwiGLU, down, residual; then the final norm and the head).
//! To first order, with every stage passing relative errors on with gain at most 1 (each branch
//! reads an RMS-normalized input and the residual stream only adds), the head's input carries a
//! relative error of at most (N − 1)·η per element, so a logit `y_tv = Σ_k h_tk·w_vk` is off by at
//! most `N·η·S_t`, where `S_t = max_v Σ_k |h_tk·w_vk|` is computed from the reference's final
//! hidden state. That gain assumption is the one thing not certain; so the test asserts, per
//! position, `max_v |Δy_tv| ≤ N·η·S_t` (the largest relative error below the derived bound) and
//! that the top-1 token is the reference's wherever the reference's top-2 margin exceeds twice
//! that bound (where each logit moves less than the bound, the order of the top two cannot
//! change). The observed errors are a few u of `max |y|`, about three orders of magnitude inside
//! the bound (the tests print the ratio with `--nocapture`).
//!
//! 8da4w quantizes every linear's input per token at run time; the cpu's quantizer gives the
//! reference's codes bit for bit on equal inputs (`tests/cpu.rs`), but the inputs differ by the
//! rounding above, and a value within that distance of a rounding boundary gets the neighbouring
//! code: one activation moves by one step `s_a` (twice the largest rounding error the quantizer
//! commits). Through the KV cache and later layers such a flip spreads, and the two devices'
//! logits become two quantizations of the same activations: each within `D` of the unquantized
//! forward, `D = max |y_8da4w − y_unquantized-activations|` measured on the reference, so within
//! `2·D` of each other (triangle inequality). That is not a strict bound (it takes the cpu's
//! quantization noise to be no larger than the reference's), so it is asserted with the same
//! top-1 rule: `max_v |Δy_tv| ≤ N·η·S_t + 2·D`, and top-1 equal where the margin exceeds twice that.

use devices::{open, DeviceError, ModelSession};
use kernels_ref::dtype::DType;
use kernels_ref::ops::RopeStyle;
use kernels_ref::scheme::Scheme;
use kernels_ref::tensor::Matrix;
use models::{synthetic, Arch, LlamaConfig, Model, QModel, QuantPlan, RefExecutor};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The unit roundoff of f32.
const U: f64 = 1.0 / (1u64 << 24) as f64;

/// `γ_n = n·u / (1 − n·u)`.
fn gamma(n: usize) -> f64 {
    n as f64 * U / (1.0 - n as f64 * U)
}

/// Seeded token ids below `vocab` (an LCG: a failure replays).
fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) % vocab as u64) as u32
        })
        .collect()
}

/// The synthetic Llama, and Qwen2-like and Qwen3-like models of the same shapes with half-style
/// RoPE (Qwen3's head untied).
fn models() -> Vec<(&'static str, Model)> {
    let mut qwen2 = synthetic::config();
    qwen2.arch = Arch::Qwen2;
    qwen2.rope_style = RopeStyle::Half;
    let mut qwen3 = synthetic::config();
    qwen3.arch = Arch::Qwen3;
    qwen3.rope_style = RopeStyle::Half;
    qwen3.tied_embeddings = false;
    vec![
        ("llama", synthetic::model(synthetic::SEED)),
        ("qwen2", synthetic::model_with(qwen2, 0x0051_2e20)),
        ("qwen3", synthetic::model_with(qwen3, 0x0051_2e30)),
    ]
}

fn plan(linear: Option<&str>) -> Result<QuantPlan, Box<dyn std::error::Error>> {
    Ok(match linear {
        None => QuantPlan::default(),
        Some(s) => QuantPlan::linear(s.parse()?),
    })
}

/// Logits of `tokens` fed at once to a fresh session of `q` on device `id`.
fn logits(id: &str, q: &QModel, tokens: &[u32]) -> Result<Matrix, DeviceError> {
    let mut dev = open(id)?;
    let mut s = dev.load_model(q)?;
    s.forward(tokens)
}

/// The rounding bound's relative factor `N·η` for `q` fed `positions` tokens (module docs).
fn rounding_factor(c: &LlamaConfig, q: &QModel, positions: usize) -> f64 {
    let widths = [c.hidden_size, c.intermediate_size, c.q_width(), c.head_dim];
    let k = *widths.iter().max().expect("widths");
    let sequential = [&q.embed, &q.head].into_iter().chain(q.layers.iter().flat_map(|l| l.linears().map(|(_, w)| w)));
    let mlx =
        sequential.filter_map(|w| w.scheme()).any(|s| matches!(s.family, kernels_ref::scheme::Family::Mlx { .. }));
    let dot = if mlx { gamma(k + 1) } else { gamma(k.div_ceil(8) + 4) };
    let eta = dot.max(gamma(positions + 1)).max(8.0 * U);
    let stages = 14 * c.n_layers + 2;
    stages as f64 * eta
}

/// `S_t = max_v Σ_k |h_tk·w_vk|` per position: the scale of the head's dot products, from the
/// reference's final hidden state (after the final norm) and the head as the plan stores it.
fn head_scales(q: &QModel, tokens: &[u32]) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let dq = q.dequantized()?;
    let exec = RefExecutor::with_activation(&dq, q.plan.activation());
    let h = exec.hidden(&mut exec.cache(), tokens)?;
    let w = dq.head();
    Ok((0..h.rows)
        .map(|t| {
            let ht = h.row(t);
            (0..w.rows)
                .map(|v| ht.iter().zip(w.row(v)).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum::<f64>())
                .fold(0.0, f64::max)
        })
        .collect())
}

/// The index of the largest value and the margin to the second largest.
fn top2(row: &[f32]) -> (usize, f64) {
    let (mut best, mut second) = ((0usize, f32::NEG_INFINITY), f32::NEG_INFINITY);
    for (i, &v) in row.iter().enumerate() {
        if v > best.1 {
            second = best.1;
            best = (i, v);
        } else if v > second {
            second = v;
        }
    }
    (best.0, best.1 as f64 - second as f64)
}

/// Asserts the module docs' rule: per position `max_v |Δ| ≤ tol_t`, and equal top-1 wherever
/// the reference's top-2 margin exceeds `2·tol_t`, which must be the case at `min_clear` of the
/// positions at least (else the top-1 check says little). Returns the largest `|Δ| / tol_t`.
fn check(what: &str, cpu: &Matrix, reference: &Matrix, tol: &[f64], min_clear: f64) -> f64 {
    assert_eq!((cpu.rows, cpu.cols), (reference.rows, reference.cols), "{what}: logits shape");
    let v = cpu.cols;
    let mut worst = 0f64;
    let mut compared = 0;
    for (t, &tol_t) in tol.iter().enumerate() {
        let (c, r) = (&cpu.data[t * v..(t + 1) * v], &reference.data[t * v..(t + 1) * v]);
        let err = c.iter().zip(r).map(|(&a, &b)| (a as f64 - b as f64).abs()).fold(0.0, f64::max);
        assert!(err <= tol_t, "{what}: position {t}: max |cpu - ref| = {err:e} exceeds the bound {tol_t:e}");
        worst = worst.max(err / tol_t);
        let (rt, margin) = top2(r);
        if margin > 2.0 * tol_t {
            compared += 1;
            assert_eq!(top2(c).0, rt, "{what}: position {t}: top-1 differs with a reference margin of {margin:e}");
        }
    }
    let clear = compared as f64 / tol.len() as f64;
    assert!(clear >= min_clear, "{what}: only {compared} of {} positions had a clear top-1", tol.len());
    worst
}

/// fp32 and weight-only plans (torchao, ggml Q4_0 and Q4_K with fp32 accumulation, MLX with its
/// sequential T accumulation) on all three architectures: within the rounding bound.
#[test]
fn weight_only_logits_match_ref_within_the_rounding_bound() -> TestResult {
    for (name, model) in models() {
        let toks = tokens(40, model.config.vocab_size, 0x70c5);
        for scheme in [None, Some("w4g32-sym-ao"), Some("q4_0"), Some("w4g64-mlx-cpu"), Some("q4_K")] {
            let q = QModel::quantize(&model, &plan(scheme)?)?;
            let what = format!("{name} {}", q.plan.label());
            let (cpu, reference) = (logits("cpu", &q, &toks)?, logits("ref", &q, &toks)?);
            let factor = rounding_factor(&model.config, &q, toks.len());
            let tol: Vec<f64> = head_scales(&q, &toks)?.iter().map(|s| factor * s).collect();
            let worst = check(&what, &cpu, &reference, &tol, 0.75);
            println!("{what}: largest error {worst:.2e} of the bound (N·η = {factor:.2e})");
        }
    }
    Ok(())
}

/// A quantized head and a quantized embedding table (the head's packed GEMM, the table's
/// row dequantization) on top of quantized linears.
#[test]
fn quantized_head_and_embedding_match_ref() -> TestResult {
    let model = synthetic::model(synthetic::SEED);
    let toks = tokens(24, model.config.vocab_size, 0xe3b);
    for (linear, head, embed) in [("w4g32-sym-ao", "q8_0", "q4_0"), ("q4_K", "w4g64-mlx-cpu", "w8pc-sym-ao")] {
        let plan = QuantPlan { linear: Some(linear.parse()?), head: Some(head.parse()?), embed: Some(embed.parse()?) };
        let q = QModel::quantize(&model, &plan)?;
        let (cpu, reference) = (logits("cpu", &q, &toks)?, logits("ref", &q, &toks)?);
        let factor = rounding_factor(&model.config, &q, toks.len());
        let tol: Vec<f64> = head_scales(&q, &toks)?.iter().map(|s| factor * s).collect();
        check(&plan.label(), &cpu, &reference, &tol, 0.75);
    }
    Ok(())
}

/// 8da4w-xnn (the integer GEMM on per-token int8 codes): within the rounding bound plus twice
/// the reference's own activation-quantization effect (module docs).
#[test]
fn w8da4w_logits_match_ref_within_the_quantization_noise() -> TestResult {
    for (name, model) in models() {
        let toks = tokens(40, model.config.vocab_size, 0x70c5);
        let q = QModel::quantize(&model, &plan(Some("8da4w-xnn"))?)?;
        let what = format!("{name} {}", q.plan.label());
        let (cpu, reference) = (logits("cpu", &q, &toks)?, logits("ref", &q, &toks)?);
        let dq = q.dequantized()?;
        let plain = RefExecutor::new(&dq).forward(&mut RefExecutor::new(&dq).cache(), &toks)?;
        let noise =
            reference.data.iter().zip(&plain.data).map(|(&a, &b)| (a as f64 - b as f64).abs()).fold(0.0, f64::max);
        assert!(noise > 0.0, "{what}: activation quantization changed nothing");
        let factor = rounding_factor(&model.config, &q, toks.len());
        let tol: Vec<f64> = head_scales(&q, &toks)?.iter().map(|s| factor * s + 2.0 * noise).collect();
        // The noise term is as large as the quantization's whole effect, so fewer positions have a
        // top-2 margin above it.
        let worst = check(&what, &cpu, &reference, &tol, 0.25);
        println!("{what}: largest error {worst:.2e} of the bound (activation noise D = {noise:.2e})");
    }
    Ok(())
}

/// A prefill of T tokens and T one-token steps give the same bits: every output of every op is
/// computed by the same arithmetic whatever the number of tokens (the GEMM's 4-token blocks and
/// single-token blocks share the 8-lane sums, MLX's chains run per token, attention, norms and
/// the activation quantizer work per row), so the bound of the module docs is met with zero.
#[test]
fn prefill_equals_one_token_steps() -> TestResult {
    for (name, model) in models() {
        let toks = tokens(13, model.config.vocab_size, 0xdec0de);
        for scheme in [None, Some("q4_0"), Some("w4g64-mlx-cpu"), Some("8da4w-xnn")] {
            let q = QModel::quantize(&model, &plan(scheme)?)?;
            let mut dev = open("cpu")?;
            let mut s = dev.load_model(&q)?;
            let prefill = s.forward(&toks)?;
            s.reset();
            // A prompt of 5, then one token at a time.
            let mut stepped = s.forward(&toks[..5])?.data;
            for &t in &toks[5..] {
                let row = s.forward(&[t])?;
                assert_eq!((row.rows, row.cols), (1, model.config.vocab_size));
                stepped.extend_from_slice(&row.data);
            }
            assert_eq!(s.len(), toks.len());
            let diff = prefill.data.iter().zip(&stepped).position(|(a, b)| a.to_bits() != b.to_bits());
            assert_eq!(diff, None, "{name} {}: prefill and steps differ at element {diff:?}", q.plan.label());
        }
    }
    Ok(())
}

/// `reset` empties the cache: the same tokens give the same bits again.
#[test]
fn reset_starts_over() -> TestResult {
    let model = synthetic::model(synthetic::SEED);
    let q = QModel::quantize(&model, &plan(Some("w4g32-sym-ao"))?)?;
    let toks = tokens(9, model.config.vocab_size, 5);
    let mut dev = open("cpu")?;
    let mut s = dev.load_model(&q)?;
    assert!(s.is_empty());
    let first = s.forward(&toks)?;
    let more = s.forward(&toks[..3])?;
    assert_eq!(s.len(), 12);
    assert_ne!(more.data, first.data[..3 * model.config.vocab_size], "later positions see the cache");
    s.reset();
    assert_eq!(s.len(), 0);
    assert_eq!(s.forward(&toks)?.data, first.data);
    Ok(())
}

/// The logits' bits do not depend on the number of threads (1, 2 and 3 workers): every output is
/// computed whole by one task in a fixed order.
#[test]
fn bits_do_not_depend_on_the_thread_count() -> TestResult {
    for (name, model) in models() {
        let toks = tokens(33, model.config.vocab_size, 0x7d);
        for scheme in [None, Some("q4_0"), Some("w4g64-mlx-cpu"), Some("8da4w-xnn")] {
            let q = QModel::quantize(&model, &plan(scheme)?)?;
            let run = |threads: usize| -> Result<Vec<u32>, Box<dyn std::error::Error>> {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
                let m = pool.install(|| -> Result<Matrix, DeviceError> {
                    let mut dev = open("cpu")?;
                    let mut s = dev.load_model(&q)?;
                    let mut out = s.forward(&toks[..30])?;
                    out.data.extend(s.forward(&toks[30..])?.data);
                    Ok(out)
                })?;
                Ok(m.data.iter().map(|v| v.to_bits()).collect())
            };
            let one = run(1)?;
            for threads in [2, 3] {
                assert!(run(threads)? == one, "{name} {}: {threads} threads change the bits", q.plan.label());
            }
        }
    }
    Ok(())
}

/// Bad input is an error, never a panic, and leaves the session usable; a scheme the cpu does
/// not run is `Unsupported` with the reason; no tokens give no logits.
#[test]
fn errors_and_edge_cases() -> TestResult {
    let mut c = synthetic::config();
    c.max_positions = 8;
    let model = synthetic::model_with(c, 1);
    let q = QModel::quantize(&model, &QuantPlan::default())?;
    let mut dev = open("cpu")?;
    let mut s = dev.load_model(&q)?;
    let empty = s.forward(&[])?;
    assert_eq!((empty.rows, empty.cols, s.len()), (0, 512, 0));
    let err = s.forward(&[1, 512]).err().ok_or("a token outside the vocabulary was accepted")?;
    assert!(matches!(err, DeviceError::Model(_)), "{err}");
    assert_eq!(s.len(), 0);
    s.forward(&[1, 2, 3, 4, 5, 6])?;
    let err = s.forward(&[1, 2, 3]).err().ok_or("a context overflow was accepted")?;
    assert!(matches!(err, DeviceError::Model(_)) && err.to_string().contains("context"), "{err}");
    assert_eq!(s.len(), 6);
    assert_eq!(s.forward(&[7, 8])?.rows, 2);
    drop(s);

    let f64_scheme = "w4g32-sym-ao".parse::<Scheme>()?.with_dtype(DType::F64);
    let q = QModel::quantize(&synthetic::model(synthetic::SEED), &QuantPlan::linear(f64_scheme))?;
    match dev.load_model(&q) {
        Err(DeviceError::Unsupported { reason, .. }) => assert!(reason.contains("f64"), "{reason}"),
        Err(e) => return Err(format!("expected Unsupported, got {e}").into()),
        Ok(_) => return Err("an f64 scheme was accepted".into()),
    }
    Ok(())
}

/// CPU seconds this process has used (user + system, all threads), from `/proc/self/stat`
/// (clock ticks of 1/100 s); 0 where that file does not exist.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesized command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    if f.len() > 12 {
        (f[11] + f[12]) / 100.0
    } else {
        0.0
    }
}

/// Tokens per second on SmolLM2-135M (prefill of 128 and 512 positions, single-token decode
/// after a 128-token prompt) for fp32, w4g32-sym-ao and q4_0 linears; `PLANS=a,b` picks others,
/// `STEPS=n` the decode steps. Wall time on however many threads rayon has, and the CPU time
/// the process spent (which a machine shared with other work does not inflate); run it in a
/// release build:
/// `cargo test --release -p qdiff-devices --test cpu_model -- --ignored --nocapture smollm2_speed`.
/// Without the GGUF file it times a SmolLM2-shaped synthetic model.
#[test]
#[ignore]
fn smollm2_speed() -> TestResult {
    use std::time::Instant;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let model = match models::load::load(&path) {
        Ok(m) => m,
        Err(e) => {
            println!("{e}: timing a SmolLM2-shaped synthetic model instead");
            let mut c = synthetic::config();
            (c.vocab_size, c.hidden_size, c.n_layers, c.n_heads, c.n_kv_heads, c.intermediate_size) =
                (49152, 576, 30, 9, 3, 1536);
            c.tied_embeddings = true;
            synthetic::model_with(c, 1)
        }
    };
    let plans = std::env::var("PLANS").unwrap_or_else(|_| "fp32,w4g32-sym-ao,q4_0".into());
    println!("{} with {} threads", model.source.name, rayon::current_num_threads());
    for name in plans.split(',') {
        let plan = if name == "fp32" { QuantPlan::default() } else { QuantPlan::linear(name.parse()?) };
        let q = QModel::quantize(&model, &plan)?;
        let mut dev = open("cpu")?;
        let t0 = Instant::now();
        let mut s = dev.load_model(&q)?;
        let load = t0.elapsed().as_secs_f64();
        let steps: usize = std::env::var("STEPS").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
        let toks: Vec<u32> = tokens(512.max(128 + steps), model.config.vocab_size, 11);
        // (wall seconds, CPU seconds) of one forward.
        let timed = |s: &mut Box<dyn ModelSession + '_>, t: &[u32]| -> Result<(f64, f64), DeviceError> {
            let (t0, c0) = (Instant::now(), process_cpu_seconds());
            s.forward(t)?;
            Ok((t0.elapsed().as_secs_f64(), process_cpu_seconds() - c0))
        };
        let p128 = timed(&mut s, &toks[..128])?;
        let mut decode = (0.0, 0.0);
        for i in 0..steps {
            let d = timed(&mut s, &toks[128 + i..129 + i])?;
            decode = (decode.0 + d.0, decode.1 + d.1);
        }
        s.reset();
        let p512 = timed(&mut s, &toks[..512])?;
        let rate = |n: f64, (wall, cpu): (f64, f64)| format!("{:.1} tok/s ({:.1} per CPU-s)", n / wall, n / cpu);
        println!(
            "{name}: load {load:.2} s | prefill 128: {} | prefill 512: {} | decode after 128: {}",
            rate(128.0, p128),
            rate(512.0, p512),
            rate(steps as f64, decode)
        );
    }
    Ok(())
}

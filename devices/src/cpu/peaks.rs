//! The host's measured peaks (stream read, copy, FMA throughput) and the cache flush of cold
//! benchmarks. Every kernel runs on all rayon threads, each on its own contiguous share, with an
//! AVX2 (+FMA) instance where the CPU has it: the figures are what a well-written kernel on this
//! machine can reach, the yardstick `peak_fraction` divides by.

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Instant;

use rayon::prelude::*;

use crate::bench::{sample, BenchPlan, Peaks};
use crate::case::{Timing, TimingMethod};

/// The last-level cache size in bytes: the largest unified or data cache sysfs lists for CPU 0
/// (Linux), else 32 MiB (a large desktop or server L3; erring large only makes buffers bigger).
pub fn llc_bytes() -> usize {
    static LLC: OnceLock<usize> = OnceLock::new();
    *LLC.get_or_init(|| {
        let mut best = 0usize;
        for i in 0..8 {
            let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
            let Ok(kind) = std::fs::read_to_string(format!("{dir}/type")) else { break };
            if kind.trim() == "Instruction" {
                continue;
            }
            if let Some(b) = std::fs::read_to_string(format!("{dir}/size")).ok().as_deref().and_then(parse_size) {
                best = best.max(b);
            }
        }
        if best == 0 {
            32 << 20
        } else {
            best
        }
    })
}

/// `"32768K"`, `"1M"`, `"512"` (bytes) as bytes.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mul) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mul)
}

/// Size of the buffers the bandwidth kernels stream: 8x the last-level cache, within
/// [128 MiB, 1 GiB], so that at most an eighth of it can be served from cache.
pub fn stream_bytes() -> usize {
    (8 * llc_bytes()).clamp(128 << 20, 1 << 30)
}

/// Evicts the caches between cold samples: writes then reads a buffer of 4x the last-level
/// cache (kept between calls, so only the first flush pays for the allocation).
pub fn flush_caches() {
    static FLUSH: std::sync::Mutex<Vec<f32>> = std::sync::Mutex::new(Vec::new());
    let Ok(mut buf) = FLUSH.lock() else { return };
    let len = 4 * llc_bytes() / 4;
    if buf.len() != len {
        *buf = vec![0f32; len];
    }
    let seed = black_box(1.0f32);
    buf.par_chunks_mut(1 << 16).for_each(|c| c.iter_mut().for_each(|v| *v += seed));
    black_box(read_sum(&buf));
}

/// Measures the host's peaks with `plan`'s sample counts (each figure is the median sample).
pub fn measure(plan: &BenchPlan) -> Peaks {
    let n = stream_bytes() / 4;
    // Touched once so that page faults are not timed.
    let src: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let mut dst = vec![0f32; n];
    let bytes = (4 * n) as f64;
    let timed = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        Ok::<_, ()>(Timing { seconds: start.elapsed().as_secs_f64(), method: TimingMethod::System })
    };
    // Bandwidth kernels need no flush: the buffer is 8x the cache already.
    let warm = BenchPlan { cold: false, ..*plan };
    let read = sample(&warm, || {}, || timed(&mut || _ = black_box(read_sum(black_box(&src)))))
        .expect("the kernel cannot fail");
    let copy = sample(
        &warm,
        || {},
        || {
            timed(&mut || {
                dst.par_chunks_mut(1 << 18).zip(src.par_chunks(1 << 18)).for_each(|(d, s)| d.copy_from_slice(s));
                black_box(&mut dst);
            })
        },
    )
    .expect("the kernel cannot fail");
    let iters = fma_iters_for(0.02);
    let fma = sample(&warm, || {}, || timed(&mut || _ = black_box(fma_all(iters)))).expect("the kernel cannot fail");
    let flops = (rayon::current_num_threads() as f64) * fma_flops_per_iter() * iters as f64;
    Peaks {
        read_gbps: bytes / read.median() / 1e9,
        copy_gbps: 2.0 * bytes / copy.median() / 1e9,
        fma_gflops: flops / fma.median() / 1e9,
        buffer_bytes: (4 * n) as u64,
        method: TimingMethod::System,
    }
}

/// Sum of `v` across the pool (the values are irrelevant; the sum keeps the loads alive).
fn read_sum(v: &[f32]) -> f32 {
    v.par_chunks(1 << 18).map(read_chunk).sum()
}

fn read_chunk(v: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if super::linear::has_avx2() {
            // SAFETY: only AVX2 is required, and the CPU has just been checked for it.
            return unsafe { read_chunk_avx2(v) };
        }
    }
    read_chunk_body(v)
}

/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn read_chunk_avx2(v: &[f32]) -> f32 {
    read_chunk_body(v)
}

/// 32 independent lanes (four 8-wide vectors): the adds never wait on each other, so the loop
/// is bound by the loads.
#[inline(always)]
fn read_chunk_body(v: &[f32]) -> f32 {
    let mut acc = [0f32; 32];
    let chunks = v.chunks_exact(32);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for j in 0..32 {
            acc[j] += c[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Independent chains of the FMA kernel and their width (lanes of one AVX2 vector).
const CHAINS: usize = 12;
const LANES: usize = 8;

fn fma_flops_per_iter() -> f64 {
    (2 * CHAINS * LANES) as f64
}

/// An iteration count that takes about `seconds` on one thread (one timed calibration run).
fn fma_iters_for(seconds: f64) -> usize {
    let probe = 1 << 16;
    let start = Instant::now();
    black_box(fma_chains(black_box(probe)));
    let per = start.elapsed().as_secs_f64().max(1e-9) / probe as f64;
    ((seconds / per) as usize).clamp(1 << 12, 1 << 28)
}

/// The FMA kernel on every thread of the pool at once.
fn fma_all(iters: usize) -> f32 {
    (0..rayon::current_num_threads()).into_par_iter().map(|_| fma_chains(black_box(iters))).sum()
}

fn fma_chains(iters: usize) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if super::linear::has_avx2() && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has just been checked for AVX2 and FMA.
            return unsafe { fma_chains_avx2(iters) };
        }
    }
    fma_chains_body(iters)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_avx2(iters: usize) -> f32 {
    fma_chains_body(iters)
}

/// `CHAINS` independent vectors of `acc = acc * a + b`, with `a` just below 1 and `b` small so the
/// values stay finite and normal for any count.
#[inline(always)]
fn fma_chains_body(iters: usize) -> f32 {
    let mut acc = [[0f32; LANES]; CHAINS];
    for (c, chain) in acc.iter_mut().enumerate() {
        for (l, v) in chain.iter_mut().enumerate() {
            *v = (c * LANES + l) as f32 * 1e-3;
        }
    }
    let a = black_box(0.999_9f32);
    let b = black_box(1e-4f32);
    for _ in 0..iters {
        for chain in acc.iter_mut() {
            for v in chain.iter_mut() {
                *v = v.mul_add(a, b);
            }
        }
    }
    acc.iter().flatten().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_sysfs_writes_them() {
        assert_eq!(parse_size("32768K\n"), Some(32 << 20));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("lots"), None);
        assert!(stream_bytes() >= 8 * llc_bytes().min(128 << 20) / 8 && stream_bytes() <= 1 << 30);
    }

    #[test]
    fn fma_chains_stay_finite() {
        // The fixed point of v = 0.9999 v + 1e-4 is 1: long runs converge there, never overflow.
        let s = fma_chains_body(1 << 20);
        assert!(s.is_finite() && (s - (CHAINS * LANES) as f32).abs() < 1.0, "{s}");
    }
}

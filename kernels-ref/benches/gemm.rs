//! Throughput of the reference `matmul` (exact: f64 products and sums, rounded once) against
//! the `gemm` crate's plain f32 GEMM, which is what a fast but inexact CPU kernel does.
//!
//! Shapes: square 256 and 512, a prefill-like `128 x 2048 x 2048` and a decode-like
//! `M = 1, N = K = 2048`. For each: ours on one rayon thread, ours on two, and `gemm` with
//! `Parallelism::None` (compare the one-thread figures). Throughput is reported as
//! `2 M N K` elements per second, i.e. FLOP/s.
//!
//! Run with `cargo bench -p qdiff-kernels-ref --bench gemm`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kernels_ref::ops::matmul;
use ndarray::Array2;

/// Deterministic pseudo-random values in [-1, 1) (a 64-bit LCG; no rand dependency needed).
fn filled(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    Array2::from_shape_fn((rows, cols), |_| {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a rayon pool")
}

fn bench_gemm(c: &mut Criterion) {
    let one = pool(1);
    let two = pool(2);
    let mut group = c.benchmark_group("matmul");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for (m, n, k) in [(256, 256, 256), (512, 512, 512), (128, 2048, 2048), (1, 2048, 2048)] {
        let a = filled(m, k, 1);
        let b = filled(k, n, 2);
        let label = format!("{m}x{n}x{k}");
        group.throughput(Throughput::Elements(2 * (m * n * k) as u64));

        group.bench_with_input(BenchmarkId::new("ours_1t", &label), &(), |bench, _| {
            one.install(|| bench.iter(|| matmul(a.view(), b.view()).expect("shapes agree")))
        });
        group.bench_with_input(BenchmarkId::new("ours_2t", &label), &(), |bench, _| {
            two.install(|| bench.iter(|| matmul(a.view(), b.view()).expect("shapes agree")))
        });

        let a_s = a.as_slice().expect("row-major");
        let b_s = b.as_slice().expect("row-major");
        let mut dst = vec![0f32; m * n];
        group.bench_with_input(BenchmarkId::new("gemm_f32_1t", &label), &(), |bench, _| {
            bench.iter(|| {
                // SAFETY: the pointers cover row-major [m, k], [k, n] and [m, n] buffers that
                // live for the whole call; the strides below describe exactly those layouts.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        dst.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a_s.as_ptr(),
                        1,
                        k as isize,
                        b_s.as_ptr(),
                        1,
                        n as isize,
                        0.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_gemm);
criterion_main!(benches);

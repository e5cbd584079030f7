//! Kernel throughput through each device's own bench path (`Device::bench`: weights packed or
//! uploaded once, the kernel alone timed): the cpu runner's kernels by wall clock, GPU kernels by
//! device time (timestamp queries) through `iter_custom`. Shapes: a decode matvec
//! `[1, 4096, 4096]` and a prefill `[32, 1024, 1024]` linear, and `dequantize` `[1024, 1024]`,
//! for ggml Q4_0, torchao int4 in groups of 32 and 8da4w. Throughput is in FLOPs (2·M·N·K) for the
//! linears and weights for `dequantize`.
//!
//! `cargo bench -p qdiff-devices --bench kernels`. `qdiff bench` measures the same kernels at
//! DRAM-sized shapes against the device's measured peaks; this suite is for regressions between
//! commits (criterion keeps the previous run and reports the change).

mod common;

use common::{device_ids, matrix};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use devices::case::{Op, OpCase, Variant};
use devices::BenchPlan;
use kernels_ref::scheme::Scheme;
use std::time::Duration;

fn case(op: Op, scheme: &str, m: usize, n: usize, k: usize) -> OpCase {
    let s: Scheme = scheme.parse().expect("scheme");
    OpCase {
        op,
        scheme: s,
        variant: Variant::default(),
        inject: None,
        wq: Some(s.quantize(&matrix(n, k, 1)).expect("quantize")),
        w: None,
        x: (op == Op::Linear).then(|| matrix(m, k, 2)),
        ids: None,
    }
}

fn bench(c: &mut Criterion) {
    let ids = device_ids();
    let mut cases = Vec::new();
    for scheme in ["q4_0", "w4g32-sym-ao", "8da4w-ao"] {
        cases.push((
            format!("linear decode {scheme} 1x4096x4096"),
            case(Op::Linear, scheme, 1, 4096, 4096),
            2 * 4096 * 4096,
        ));
        cases.push((
            format!("linear prefill {scheme} 32x1024x1024"),
            case(Op::Linear, scheme, 32, 1024, 1024),
            2 * 32 * 1024 * 1024,
        ));
        cases.push((
            format!("dequantize {scheme} 1024x1024"),
            case(Op::Dequantize, scheme, 1, 1024, 1024),
            1024 * 1024,
        ));
    }
    for id in ids {
        let Ok(mut dev) = devices::open(&id) else { continue };
        let mut group = c.benchmark_group(format!("kernels/{id}"));
        group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
        for (name, case, elems) in &cases {
            if !dev.supports(case.op, &case.scheme, &case.variant).is_supported() {
                continue;
            }
            group.throughput(Throughput::Elements(*elems));
            // Each criterion batch is one bench call of exactly `iters` samples (no warm-up
            // inside: criterion warms up), summed; GPU samples are device time.
            group.bench_function(name.as_str(), |b| {
                b.iter_custom(|iters| {
                    let n = iters.max(1) as usize;
                    let plan =
                        BenchPlan { warmup: 0, min_samples: n, max_samples: n, budget: Duration::ZERO, cold: false };
                    let s = dev.bench(case, &plan).expect("bench");
                    Duration::from_secs_f64(s.seconds.iter().sum())
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

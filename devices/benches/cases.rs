//! Small op cases per second on each device this machine has (`cargo bench -p qdiff-devices`):
//! what bounds `qdiff check` and `qdiff fuzz`. GPU kernels are also measured by device time
//! (timestamp queries) through `iter_custom`, next to the wall time of a whole case (upload,
//! dispatch, readback).

mod common;

use common::{device_ids, matrix};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use devices::case::{Op, OpCase, Variant};
use devices::TimingMethod;
use kernels_ref::scheme::Scheme;
use std::time::Duration;

fn cases() -> Vec<(&'static str, OpCase)> {
    let mk = |op: Op, scheme: &str, m: usize, n: usize, k: usize| {
        let s: Scheme = scheme.parse().expect("scheme");
        let w = matrix(n, k, 1);
        OpCase {
            op,
            scheme: s,
            variant: Variant::default(),
            inject: None,
            wq: (op != Op::ActQuant).then(|| s.quantize(&w).expect("quantize")),
            w: Some(w),
            x: Some(matrix(m, k, 2)),
            ids: None,
        }
    };
    vec![
        ("dequantize w4g32-sym-ao 64x64", mk(Op::Dequantize, "w4g32-sym-ao", 1, 64, 64)),
        ("linear 8da4w-vk 4x16x128", mk(Op::Linear, "8da4w-vk", 4, 16, 128)),
        ("linear q4_0 4x16x128", mk(Op::Linear, "q4_0", 4, 16, 128)),
        ("act_quant a8-pt-asym-vk 4x128", mk(Op::ActQuant, "a8-pt-asym-vk", 4, 128, 128)),
    ]
}

fn bench(c: &mut Criterion) {
    let ids = device_ids();
    for id in ids {
        let Ok(mut dev) = devices::open(&id) else { continue };
        let mut group = c.benchmark_group(format!("cases/{id}"));
        group.throughput(Throughput::Elements(1));
        group.measurement_time(Duration::from_secs(3));
        for (name, case) in cases() {
            if !dev.supports(case.op, &case.scheme, &case.variant).is_supported() {
                continue;
            }
            dev.run(&case).expect("warm-up run");
            group.bench_function(format!("{name} (wall)"), |b| b.iter(|| dev.run(&case).expect("run")));
            let timed = dev.run(&case).ok().and_then(|o| o.timing).is_some_and(|t| t.method == TimingMethod::Device);
            if timed {
                group.bench_function(format!("{name} (device time)"), |b| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let t = dev.run(&case).expect("run").timing.expect("timed");
                            total += Duration::from_secs_f64(t.seconds);
                        }
                        total
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

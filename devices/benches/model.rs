//! Model forward throughput: prefill (a batch of positions in one forward) and decode (one token
//! per forward over a KV cache) on `ref` (the exact oracle), `cpu` and the first Vulkan/Metal
//! adapter, for the synthetic model and, when `models/` has it, SmolLM2-135M.
//!
//! `cargo bench -p qdiff-devices --bench model`. Throughput is reported in elements = tokens, so
//! criterion prints tokens/s. GPU adapters that are absent are skipped with a note.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use models::{Model, QModel, QuantPlan};
use std::time::Duration;

fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

fn models_to_bench() -> Vec<Model> {
    let mut v = vec![models::synthetic::model(models::synthetic::SEED)];
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models").join(models::EXAMPLE_MODEL);
    match models::load::load(&path) {
        Ok(m) => v.push(m),
        Err(e) => eprintln!("model bench: SmolLM2 not benchmarked ({e}); fetch it with scripts/fetch-smollm2.sh"),
    }
    v
}

fn bench(c: &mut Criterion) {
    let plans: Vec<QuantPlan> = vec![QuantPlan::default(), QuantPlan::linear("w4g32-sym-ao".parse().expect("scheme"))];
    for model in models_to_bench() {
        let name = model.source.name.clone();
        let vocab = model.config.vocab_size;
        for plan in &plans {
            let q = QModel::quantize(&model, plan).expect("the plan fits");
            for id in ["ref", "cpu", "vulkan"] {
                let Ok(mut dev) = devices::open(id) else {
                    eprintln!("model bench: no {id} device here");
                    continue;
                };
                let mut session = match dev.load_model(&q) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("model bench: {id} {}: {e}", plan.label());
                        continue;
                    }
                };
                let mut g = c.benchmark_group(format!("forward/{name}/{}", plan.label()));
                g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
                // Prefill: 128 positions in one forward.
                let t = 128;
                let toks = tokens(t, vocab);
                g.throughput(Throughput::Elements(t as u64));
                g.bench_function(BenchmarkId::new(format!("prefill/{id}"), t), |b| {
                    b.iter(|| {
                        session.reset();
                        session.forward(&toks).expect("forward")
                    })
                });
                // Decode: one token per forward after a 32-token prompt (the cache is reset when
                // it reaches 64 positions, so every measured step attends to 32..64 positions).
                let prompt = tokens(32, vocab);
                session.reset();
                session.forward(&prompt).expect("prompt");
                g.throughput(Throughput::Elements(1));
                g.bench_function(BenchmarkId::new(format!("decode/{id}"), 32), |b| {
                    b.iter(|| {
                        if session.len() >= 64 {
                            session.reset();
                            session.forward(&prompt).expect("prompt");
                        }
                        session.forward(&[7]).expect("decode")
                    })
                });
                g.finish();
            }
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

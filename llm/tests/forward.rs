//! The reference executor: deterministic bits (thread count, batching) and the Llama-family
//! variants.

use kernels_ref::ops::RopeStyle;
use models::synthetic::{self, SEED};
use models::{Arch, KvCache, Model, QModel, QuantPlan, RefExecutor};

fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

fn bits(m: &kernels_ref::tensor::Matrix) -> Vec<u32> {
    m.data.iter().map(|v| v.to_bits()).collect()
}

fn variants() -> Vec<Model> {
    let mut qwen2 = synthetic::config();
    qwen2.arch = Arch::Qwen2;
    qwen2.rope_style = RopeStyle::Half;
    qwen2.tied_embeddings = false;
    let mut qwen3 = synthetic::config();
    qwen3.arch = Arch::Qwen3;
    qwen3.rope_style = RopeStyle::Half;
    vec![synthetic::model(SEED), synthetic::model_with(qwen2, 7), synthetic::model_with(qwen3, 8)]
}

#[test]
fn logits_do_not_depend_on_the_thread_count() {
    for model in variants() {
        model.validate("synthetic").unwrap();
        let ex = RefExecutor::new(&model);
        let t = tokens(40, model.config.vocab_size);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| ex.forward(&mut ex.cache(), &t).unwrap())
        };
        let one = run(1);
        assert_eq!(one.shape(), [40, model.config.vocab_size]);
        assert!(one.data.iter().all(|v| v.is_finite()));
        assert_eq!(bits(&one), bits(&run(3)), "{:?}", model.config.arch);
    }
}

#[test]
fn prefill_equals_decode_steps_bit_for_bit() {
    // Every op computes each element with the same fixed-order f64 sum whatever the batch, so a
    // batched prefill and one-token steps over the KV cache give identical bits.
    for model in variants() {
        let ex = RefExecutor::new(&model);
        let t = tokens(12, model.config.vocab_size);
        let all = ex.forward(&mut ex.cache(), &t).unwrap();
        let mut cache = ex.cache();
        let mut rows = Vec::new();
        let first = ex.forward(&mut cache, &t[..5]).unwrap();
        rows.extend(bits(&first));
        for &tok in &t[5..] {
            rows.extend(bits(&ex.forward(&mut cache, &[tok]).unwrap()));
        }
        assert_eq!(cache.len, 12);
        assert_eq!(rows, bits(&all), "{:?}", model.config.arch);
    }
}

#[test]
fn logits_are_peaked_and_depend_on_context() {
    // The synthetic model must be a useful test subject: top-1 margins well above rounding noise,
    // and a token's logits change when what precedes it changes.
    let model = synthetic::model(SEED);
    let ex = RefExecutor::new(&model);
    let a = ex.forward(&mut ex.cache(), &[1, 2, 3, 4]).unwrap();
    let b = ex.forward(&mut ex.cache(), &[9, 2, 3, 4]).unwrap();
    assert_ne!(a.row(3), b.row(3));
    let v = model.config.vocab_size;
    for r in 0..4 {
        let top = models::metrics::top_k(a.row(r), 2);
        let margin = a.data[r * v + top[0] as usize] - a.data[r * v + top[1] as usize];
        assert!(margin > 1e-3, "row {r}: margin {margin}");
    }
}

#[test]
fn bad_tokens_and_context_overflow_are_errors() {
    let model = synthetic::model(SEED);
    let ex = RefExecutor::new(&model);
    let e = ex.forward(&mut ex.cache(), &[1, 512]).unwrap_err().to_string();
    assert!(e.contains("token 512 at index 1"), "{e}");
    let mut cache = KvCache::new(&model.config);
    cache.len = model.config.max_positions;
    let e = ex.forward(&mut cache, &[1]).unwrap_err().to_string();
    assert!(e.contains("exceed the model's context"), "{e}");
}

#[test]
fn a_plan_quantizes_what_it_names_and_nothing_else() {
    let model = synthetic::model(SEED);
    let s = |n: &str| Some(n.parse::<kernels_ref::scheme::Scheme>().unwrap());
    let plan = QuantPlan { linear: s("w4g32-sym-ao"), head: s("w8pc-symclip"), embed: None };
    let q = QModel::quantize(&model, &plan).unwrap();
    assert_eq!(plan.label(), "w4g32-sym-ao+head:w8pc-symclip");
    assert!(q.layers.iter().all(|l| l.linears().iter().all(|(_, t)| t.scheme() == plan.linear.as_ref())));
    assert_eq!(q.head.scheme(), plan.head.as_ref());
    assert_eq!(q.embed.scheme(), None);
    // The dequantized model differs from the original in the linears and the head only.
    let d = q.dequantized().unwrap();
    assert_eq!(d.embed, model.embed);
    assert_ne!(d.layers[0].wq, model.layers[0].wq);
    assert_ne!(d.head(), model.head());
    // A group size that does not divide a width names the tensor.
    let bad = QuantPlan::linear("w4g48-sym-ao".parse().unwrap());
    let e = QModel::quantize(&model, &bad).unwrap_err().to_string();
    assert!(e.contains("layer 0") && e.contains("48"), "{e}");
}

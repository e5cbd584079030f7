//! The output bits of the ops depend on the inputs alone: the same with one rayon thread and
//! with two, and the same from run to run. Shapes are large enough that the work is split into
//! several independent tiles / rows / heads.

use kernels_ref::ops::{attention, linear, matmul, rmsnorm, rope, softmax, RopeStyle};
use ndarray::{Array1, Array2};

mod common;
use common::Rng;

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
}

fn bits(a: &Array2<f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

/// Runs `op` twice on one thread and twice on two threads; all four results must have the same
/// bits.
fn check(what: &str, op: impl Fn() -> Array2<f32> + Sync) {
    let one = pool(1);
    let two = pool(2);
    let reference = bits(&one.install(&op));
    assert_eq!(bits(&one.install(&op)), reference, "{what}: repeated run on 1 thread");
    assert_eq!(bits(&two.install(&op)), reference, "{what}: 2 threads vs 1");
    assert_eq!(bits(&two.install(&op)), reference, "{what}: repeated run on 2 threads");
}

#[test]
fn linear_and_matmul_are_thread_count_independent() {
    let mut rng = Rng(1);
    // 150 x 300: 3 x 3 tiles on the tiled path; K = 600 spans three K chunks.
    let x = rng.matrix(150, 600, 1.0);
    let w = rng.matrix(300, 600, 1.0);
    let b = Array1::from_shape_simple_fn(300, || rng.uniform());
    check("linear tiled", || linear(x.view(), w.view(), Some(b.view())).unwrap());
    let w_kn = w.t().as_standard_layout().to_owned();
    check("matmul tiled", || matmul(x.view(), w_kn.view()).unwrap());
    // Small M: the strip (matmul) and rows (linear) paths, split over column blocks.
    let x1 = rng.matrix(3, 600, 1.0);
    let w1 = rng.matrix(1100, 600, 1.0);
    check("linear small M", || linear(x1.view(), w1.view(), None).unwrap());
    let w1_kn = w1.t().as_standard_layout().to_owned();
    check("matmul small M", || matmul(x1.view(), w1_kn.view()).unwrap());
}

#[test]
fn softmax_rmsnorm_rope_are_thread_count_independent() {
    let mut rng = Rng(2);
    let x = rng.matrix(64, 257, 8.0);
    check("softmax", || softmax(x.view()).unwrap());
    let wt = Array1::from_shape_simple_fn(257, || rng.uniform());
    check("rmsnorm", || rmsnorm(x.view(), wt.view(), 1e-6).unwrap());
    let xr = rng.matrix(64, 4 * 32, 1.0);
    let pos: Vec<usize> = (0..64).map(|t| t * 37).collect();
    check("rope", || rope(xr.view(), &pos, 32, 10000.0, RopeStyle::Half).unwrap());
}

#[test]
fn attention_is_thread_count_independent() {
    let mut rng = Rng(3);
    let (t, s, hq, hkv, d) = (24, 40, 8, 2, 16);
    let q = rng.matrix(t, hq * d, 2.0);
    let k = rng.matrix(s, hkv * d, 2.0);
    let v = rng.matrix(s, hkv * d, 1.0);
    let scale = 1.0 / (d as f32).sqrt();
    check("attention causal", || attention(q.view(), k.view(), v.view(), hq, hkv, true, s - t, scale).unwrap());
    check("attention full", || attention(q.view(), k.view(), v.view(), hq, hkv, false, 0, scale).unwrap());
}

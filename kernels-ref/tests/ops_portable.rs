//! The portable instance of the GEMM engine (no AVX2 / FMA: multiply then add) gives the bits
//! of the naive loop too, so the result does not depend on which instance the CPU selects.
//!
//! This file holds a single test because it switches the whole process to the portable
//! instance (`QDIFF_REF_PORTABLE`) before the first op runs.

use kernels_ref::ops::{linear, matmul};
use ndarray::Array2;

mod common;
use common::Rng;

fn naive(x: &Array2<f32>, w: &Array2<f32>) -> Array2<f32> {
    let k = x.ncols();
    Array2::from_shape_fn((x.nrows(), w.nrows()), |(i, j)| {
        let mut acc = 0f64;
        for kk in 0..k {
            acc += f64::from(x[[i, kk]]) * f64::from(w[[j, kk]]);
        }
        acc as f32
    })
}

#[test]
fn portable_instance_matches_the_naive_loop() {
    // Only this test runs in this process, so nothing has chosen an instance yet.
    std::env::set_var("QDIFF_REF_PORTABLE", "1");
    let mut rng = Rng(42);
    for &(m, n, k) in &[(1, 100, 300), (3, 70, 260), (4, 33, 9), (5, 40, 513), (73, 130, 300), (130, 257, 64)] {
        let (x, w) = rng.cancelling_pair(m, n, k);
        let want: Vec<u32> = naive(&x, &w).iter().map(|v| v.to_bits()).collect();
        let got = linear(x.view(), w.view(), None).unwrap();
        assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want, "linear {m}x{n}x{k}");
        let w_kn = w.t().as_standard_layout().to_owned();
        let got = matmul(x.view(), w_kn.view()).unwrap();
        assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want, "matmul {m}x{n}x{k}");
    }
}

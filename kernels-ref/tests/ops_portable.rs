//! The portable instance of the GEMM engine (no AVX2 / FMA: multiply then add) gives the bits
//! of the naive loop too, so the result does not depend on which instance the CPU selects.
//!
//! This file holds a single test because it switches the whole process to the portable
//! instance (`QDIFF_REF_PORTABLE`) before the first op runs.

use kernels_ref::ops::{linear, matmul};
use ndarray::Array2;

struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    /// Uniform values with a few exactly cancelling ±2^40 column pairs, which make the
    /// summation order visible in the f32 result (see `ops_linear.rs`).
    fn cancelling_pair(&mut self, m: usize, n: usize, k: usize) -> (Array2<f32>, Array2<f32>) {
        let mut x = Array2::from_shape_simple_fn((m, k), || self.uniform());
        let mut w = Array2::from_shape_simple_fn((n, k), || self.uniform());
        for _ in 0..3 {
            let k1 = (self.next_u64() % (k as u64 - 1)) as usize;
            let k2 = k1 + 1 + (self.next_u64() % (k - k1 - 1) as u64) as usize;
            for i in 0..m {
                let big = if self.next_u64() % 2 == 0 { 2f32.powi(40) } else { -(2f32.powi(40)) };
                x[[i, k1]] = big;
                x[[i, k2]] = -big;
            }
            for j in 0..n {
                w[[j, k2]] = w[[j, k1]];
            }
        }
        (x, w)
    }
}

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

//! Helpers shared by the ops tests: a tiny deterministic generator (SplitMix64, so a failure
//! replays from its seed) and a ULP distance. Each test binary uses a subset.
#![allow(dead_code)]

use ndarray::Array2;

/// SplitMix64.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    /// An `[r, c]` matrix uniform in [-scale, scale).
    pub fn matrix(&mut self, r: usize, c: usize, scale: f32) -> Array2<f32> {
        Array2::from_shape_simple_fn((r, c), || self.uniform() * scale)
    }
    /// Uniform in [-1, 1), times 2^e for e in [-12, 12]: wide magnitudes make f64 sums round,
    /// so any change of summation order shows up in the bits.
    pub fn wide(&mut self) -> f32 {
        let u = self.uniform();
        let e = (self.next_u64() % 25) as i32 - 12;
        u * 2f32.powi(e)
    }
    /// An `[r, c]` matrix of [`Rng::wide`] values.
    pub fn wide_matrix(&mut self, r: usize, c: usize) -> Array2<f32> {
        Array2::from_shape_simple_fn((r, c), || self.wide())
    }
    /// `x [m, k]`, `w [n, k]` uniform in [-1, 1), except for up to three column pairs
    /// `k1 < k2` where `x[i, k1] = ±2^40 = -x[i, k2]` and `w[j, k1] = w[j, k2]`. The huge
    /// products cancel exactly in the full sum, but the partial sums between `k1` and `k2`
    /// absorb the small products with rounding errors far above the result's f32 resolution:
    /// any other summation order gives other bits.
    pub fn cancelling_pair(&mut self, m: usize, n: usize, k: usize) -> (Array2<f32>, Array2<f32>) {
        let mut x = Array2::from_shape_simple_fn((m, k), || self.uniform());
        let mut w = Array2::from_shape_simple_fn((n, k), || self.uniform());
        if k >= 2 {
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
        }
        (x, w)
    }
}

/// Distance in units in the last place between two f32 (0 for +0 vs -0).
pub fn ulps(a: f32, b: f32) -> u64 {
    let ord = |x: f32| {
        let b = x.to_bits();
        if b >> 31 == 1 {
            -i64::from(b & 0x7fff_ffff)
        } else {
            i64::from(b)
        }
    };
    ord(a).abs_diff(ord(b))
}

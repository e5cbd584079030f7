//! `rope`: norm preservation, the two pairings against each other, identity at position 0,
//! an independent reference, the scalings, and the errors.

use kernels_ref::ops::{rope, rope_inv_freq, rope_with_scaling, RopeScaling, RopeStyle};
use kernels_ref::RefError;
use ndarray::Array2;

mod common;
use common::{ulps, Rng};

/// The element indices of the pair of frequency `i` in a head of `dh` values.
fn pair(style: RopeStyle, i: usize, dh: usize) -> (usize, usize) {
    match style {
        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
        RopeStyle::Half => (i, i + dh / 2),
    }
}

/// A rotation preserves `x0² + x1²`. Each output is rounded once (relative error at most
/// 2^-24), so the squared norm moves by at most about 2 * 2^-24 relative; the f64 rotation
/// adds a few 2^-53. Bound: 2^-22 relative.
#[test]
fn rope_preserves_pairwise_norms() {
    let mut rng = Rng(1);
    let (t, h, dh) = (20, 3, 64);
    let x = rng.matrix(t, h * dh, 4.0);
    let positions: Vec<usize> = (0..t).map(|i| i * 997).collect();
    for style in [RopeStyle::Interleaved, RopeStyle::Half] {
        let y = rope(x.view(), &positions, dh, 10000.0, style).unwrap();
        for r in 0..t {
            for head in 0..h {
                for i in 0..dh / 2 {
                    let (a, b) = pair(style, i, dh);
                    let (a, b) = (head * dh + a, head * dh + b);
                    let n0 = f64::from(x[[r, a]]).powi(2) + f64::from(x[[r, b]]).powi(2);
                    let n1 = f64::from(y[[r, a]]).powi(2) + f64::from(y[[r, b]]).powi(2);
                    assert!((n1 - n0).abs() <= n0 * 2f64.powi(-22), "{style:?} row {r} pair {i}: {n0} -> {n1}");
                }
            }
        }
    }
}

/// Position 0 is the identity, bit for bit (cos 0 = 1, sin 0 = 0 exactly).
#[test]
fn position_zero_is_the_identity() {
    let mut rng = Rng(2);
    let x = rng.matrix(3, 2 * 16, 10.0);
    for style in [RopeStyle::Interleaved, RopeStyle::Half] {
        let y = rope(x.view(), &[0, 0, 0], 16, 500000.0, style).unwrap();
        assert_eq!(y, x);
    }
}

/// The two pairings are the same rotation on permuted elements: moving element `i` to `2i`
/// and `i + Dh/2` to `2i + 1` turns Half into Interleaved, bit for bit.
#[test]
fn half_and_interleaved_agree_up_to_the_permutation() {
    let mut rng = Rng(3);
    let (t, h, dh) = (7, 2, 32);
    let x = rng.matrix(t, h * dh, 3.0);
    let positions = [0, 1, 5, 100, 4095, 70000, 3];
    // perm[c] = the Half-layout column that lands at Interleaved column c.
    let perm: Vec<usize> = (0..h * dh)
        .map(|c| {
            let (head, j) = (c / dh, c % dh);
            head * dh + if j % 2 == 0 { j / 2 } else { j / 2 + dh / 2 }
        })
        .collect();
    let permute = |m: &Array2<f32>| Array2::from_shape_fn((t, h * dh), |(r, c)| m[[r, perm[c]]]);
    let half = rope(x.view(), &positions, dh, 10000.0, RopeStyle::Half).unwrap();
    let inter = rope(permute(&x).view(), &positions, dh, 10000.0, RopeStyle::Interleaved).unwrap();
    assert_eq!(
        permute(&half).iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        inter.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

/// Against an independent f64 evaluation with std's `powf`, `cos`, `sin` (HF's formula
/// `1 / theta^(2i/Dh)`): the angles agree to a few f64 ulps, so at positions up to 10^4 the
/// outputs agree to 1 f32 ulp, except where the output is tiny from cancellation, which the
/// absolute slack 2^-30 |x| covers.
#[test]
fn rope_matches_an_independent_reference() {
    let mut rng = Rng(4);
    let (dh, theta) = (128, 1_000_000.0f64);
    let positions: Vec<usize> = vec![0, 1, 2, 17, 511, 4096, 10_000];
    let x = rng.matrix(positions.len(), dh, 2.0);
    let y = rope(x.view(), &positions, dh, theta, RopeStyle::Half).unwrap();
    for (r, &pos) in positions.iter().enumerate() {
        for i in 0..dh / 2 {
            let inv = 1.0 / theta.powf((2 * i) as f64 / dh as f64);
            let a = pos as f64 * inv;
            let (x0, x1) = (f64::from(x[[r, i]]), f64::from(x[[r, i + dh / 2]]));
            let want = [(x0 * a.cos() - x1 * a.sin()) as f32, (x0 * a.sin() + x1 * a.cos()) as f32];
            let got = [y[[r, i]], y[[r, i + dh / 2]]];
            let slack = (x0.abs() + x1.abs()) * 2f64.powi(-30);
            for (g, w) in got.into_iter().zip(want) {
                assert!(
                    ulps(g, w) <= 1 || (f64::from(g) - f64::from(w)).abs() <= slack,
                    "pos {pos} i {i}: got {g:e}, reference {w:e}"
                );
            }
        }
    }
}

/// One pair, frequency 1, position 1: a rotation by one radian, checked against literal
/// values of cos 1 and sin 1.
#[test]
fn rope_known_value() {
    let x = Array2::from_shape_vec((1, 2), vec![1.0f32, 0.0]).unwrap();
    let y = rope(x.view(), &[1], 2, 10000.0, RopeStyle::Interleaved).unwrap();
    assert_eq!(y[[0, 0]], 0.540_302_3_f32); // cos(1) = 0.5403023058681398
    assert_eq!(y[[0, 1]], 0.841_470_96_f32); // sin(1) = 0.8414709848078965
}

/// inv_freq_i = theta^(-2i/Dh): i = 0 is exactly 1, and the values decrease geometrically.
#[test]
fn inv_freq_values() {
    let f = rope_inv_freq(8, 10000.0, None).unwrap();
    assert_eq!(f.len(), 4);
    assert_eq!(f[0], 1.0);
    assert!((f[1] - 0.1).abs() < 1e-16);
    assert!((f[2] - 0.01).abs() < 1e-17);
    assert!((f[3] - 0.001).abs() < 1e-18);
}

/// Linear scaling by 2 at position 2p is rope at position p, bit for bit (halving inv_freq
/// and doubling the position are both exact).
#[test]
fn linear_scaling_is_position_interpolation() {
    let mut rng = Rng(5);
    let x = rng.matrix(4, 64, 1.0);
    let scaled = rope_with_scaling(
        x.view(),
        &[0, 2, 200, 8190],
        32,
        10000.0,
        RopeStyle::Half,
        Some(RopeScaling::Linear { factor: 2.0 }),
    )
    .unwrap();
    let plain = rope(x.view(), &[0, 1, 100, 4095], 32, 10000.0, RopeStyle::Half).unwrap();
    assert_eq!(scaled, plain);
}

/// Llama 3.1's published scaling (factor 8, low 1, high 4, original context 8192, theta
/// 500000, Dh 128): short wavelengths (< 2048) are unchanged, long ones (> 8192) divided by
/// 8, and the band between is interpolated monotonically between the two.
#[test]
fn llama3_scaling_bands() {
    let s = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    };
    let base = rope_inv_freq(128, 500000.0, None).unwrap();
    let scaled = rope_inv_freq(128, 500000.0, Some(&s)).unwrap();
    let (mut kept, mut divided, mut smoothed) = (0, 0, 0);
    for (&b, &f) in base.iter().zip(&scaled) {
        let wavelen = 2.0 * std::f64::consts::PI / b;
        if wavelen < 2048.0 {
            assert_eq!(f, b);
            kept += 1;
        } else if wavelen > 8192.0 {
            assert_eq!(f, b / 8.0);
            divided += 1;
        } else {
            assert!(f < b && f > b / 8.0, "smoothed {f} not between {} and {b}", b / 8.0);
            smoothed += 1;
        }
    }
    assert!(kept > 0 && divided > 0 && smoothed > 0, "{kept} {divided} {smoothed}");
    // The smoothed band is a convex combination whose weight rises with frequency.
    let ratios: Vec<f64> = base.iter().zip(&scaled).map(|(b, f)| f / b).collect();
    assert!(ratios.windows(2).all(|w| w[0] >= w[1]));
}

#[test]
fn rope_errors() {
    let x = Array2::<f32>::zeros((2, 12));
    let is = |r: kernels_ref::error::Result<Array2<f32>>, want_shape: bool| {
        let e = r.unwrap_err();
        match (&e, want_shape) {
            (RefError::Shape { op, .. }, true) | (RefError::Unsupported { op, .. }, false) => {
                assert_eq!(op, "rope")
            }
            _ => panic!("unexpected error {e}"),
        }
    };
    is(rope(x.view(), &[0, 1], 5, 10000.0, RopeStyle::Half), false); // odd head_dim
    is(rope(x.view(), &[0, 1], 0, 10000.0, RopeStyle::Half), false);
    is(rope(x.view(), &[0, 1], 8, 10000.0, RopeStyle::Half), true); // 12 % 8 != 0
    is(rope(x.view(), &[0], 6, 10000.0, RopeStyle::Half), true); // positions length
    is(rope(x.view(), &[0, 1], 6, -1.0, RopeStyle::Half), false);
    let bad = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 2.0,
        high_freq_factor: 2.0,
        original_max_position_embeddings: 8192,
    };
    is(rope_with_scaling(x.view(), &[0, 1], 6, 1e4, RopeStyle::Half, Some(bad)), false);
    let bad = RopeScaling::Linear { factor: 0.0 };
    is(rope_with_scaling(x.view(), &[0, 1], 6, 1e4, RopeStyle::Half, Some(bad)), false);
    assert!(rope(x.view(), &[0, 1], 6, 10000.0, RopeStyle::Interleaved).is_ok());
}

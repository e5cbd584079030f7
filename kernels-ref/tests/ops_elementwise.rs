//! `silu`, `swiglu`, `rmsnorm` and `embedding`: exact values, independent references with
//! rounding-derived tolerances, exact scaling properties, and errors.

use kernels_ref::ops::{embedding, rmsnorm, silu, swiglu};
use kernels_ref::RefError;
use ndarray::{arr1, Array1, Array2, Array3};

mod common;
use common::{ulps, Rng};

#[test]
fn silu_exact_values() {
    let y = silu(arr1(&[0.0f32, -0.0, 100.0, -200.0, f32::INFINITY]).view());
    assert_eq!(y[0].to_bits(), 0.0f32.to_bits());
    assert_eq!(y[1].to_bits(), (-0.0f32).to_bits());
    assert_eq!(y[2], 100.0); // 100 / (1 + e^-100) rounds to 100
    assert_eq!(y[3].to_bits(), (-0.0f32).to_bits()); // -200 e^-200 underflows f32 to -0
    assert_eq!(y[4], f32::INFINITY);
    assert!(silu(arr1(&[f32::NAN, f32::NEG_INFINITY]).view()).iter().all(|v| v.is_nan()));
}

/// Against `x * sigmoid(x)` with std's f64 `exp`: both are within a few f64 ulps of exact,
/// so after one rounding they agree to 1 f32 ulp.
#[test]
fn silu_matches_an_independent_reference() {
    let mut rng = Rng(1);
    let x = rng.matrix(50, 200, 30.0);
    let y = silu(x.view());
    for (&xi, &yi) in x.iter().zip(&y) {
        let xd = f64::from(xi);
        let want = (xd * (1.0 / (1.0 + (-xd).exp()))) as f32;
        assert!(ulps(yi, want) <= 1, "silu({xi}) = {yi:e}, reference {want:e}");
    }
}

/// `swiglu(g, u)` keeps `silu(g) * u` in f64 and rounds once; rounding `silu(g)` first and
/// multiplying in f32 moves the pre-rounding value by less than one ulp, so the two differ by
/// at most 1 ulp. Works for any dimension.
#[test]
fn swiglu_is_silu_times_up_within_one_ulp() {
    let mut rng = Rng(2);
    let g = Array3::from_shape_simple_fn((4, 8, 64), || rng.uniform() * 12.0);
    let u = Array3::from_shape_simple_fn((4, 8, 64), || rng.uniform() * 5.0);
    let y = swiglu(g.view(), u.view()).unwrap();
    let two_step = silu(g.view()) * &u;
    for (&a, &b) in y.iter().zip(&two_step) {
        assert!(ulps(a, b) <= 1, "{a:e} vs {b:e}");
    }
    // Exactly silu(g) where up is 1.
    let ones = Array3::from_elem((4, 8, 64), 1.0f32);
    assert_eq!(swiglu(g.view(), ones.view()).unwrap(), silu(g.view()));
}

#[test]
fn swiglu_shape_mismatch_is_an_error() {
    let g = Array2::<f32>::zeros((2, 3));
    let u = Array2::<f32>::zeros((3, 2));
    let e = swiglu(g.view(), u.view()).unwrap_err();
    assert!(matches!(&e, RefError::Shape { op, detail } if op == "swiglu" && detail.contains("[2, 3]")), "{e}");
}

/// Against `x * (1 / rms) * w` evaluated independently in f64 (sum of squares from the end,
/// reciprocal then multiply): each side is within a few f64 ulps, so 1 f32 ulp after rounding.
#[test]
fn rmsnorm_matches_an_independent_reference() {
    let mut rng = Rng(3);
    let (m, d) = (9, 333);
    let x = rng.matrix(m, d, 50.0);
    let w = Array1::from_shape_simple_fn(d, || rng.uniform() * 2.0);
    let eps = 1e-5f32;
    let y = rmsnorm(x.view(), w.view(), eps).unwrap();
    for r in 0..m {
        let ss: f64 = (0..d).rev().map(|i| f64::from(x[[r, i]]).powi(2)).sum();
        let inv = 1.0 / (ss / d as f64 + f64::from(eps)).sqrt();
        for i in 0..d {
            let want = (f64::from(x[[r, i]]) * inv * f64::from(w[i])) as f32;
            assert!(ulps(y[[r, i]], want) <= 1, "row {r} col {i}: {} vs {want}", y[[r, i]]);
        }
    }
}

/// With eps = 0 RMSNorm is invariant under scaling by a power of two, bit for bit: the sum of
/// squares, the mean, the square root and `x * w` all scale exactly.
#[test]
fn rmsnorm_is_exactly_scale_invariant() {
    let mut rng = Rng(4);
    let x = rng.matrix(6, 100, 3.0);
    let w = Array1::from_shape_simple_fn(100, || rng.uniform());
    let y = rmsnorm(x.view(), w.view(), 0.0).unwrap();
    for s in [2f32.powi(-20), 0.25, 8.0, 2f32.powi(30)] {
        let ys = rmsnorm((&x * s).view(), w.view(), 0.0).unwrap();
        assert_eq!(ys, y, "scale {s}");
    }
    // A constant row with unit weight normalises to exactly 1.
    let c = Array2::from_elem((1, 7), -3.5f32);
    assert_eq!(rmsnorm(c.view(), Array1::<f32>::ones(7).view(), 0.0).unwrap(), Array2::from_elem((1, 7), -1.0f32));
}

#[test]
fn rmsnorm_weight_length_is_checked() {
    let x = Array2::<f32>::zeros((2, 4));
    let e = rmsnorm(x.view(), Array1::<f32>::zeros(5).view(), 1e-6).unwrap_err();
    assert!(matches!(&e, RefError::Shape { op, .. } if op == "rmsnorm"), "{e}");
}

#[test]
fn embedding_copies_rows_bit_for_bit() {
    let mut table = Array2::from_shape_fn((5, 3), |(r, c)| (r * 10 + c) as f32);
    table[[2, 1]] = f32::from_bits(0x7fc0_0abc); // a NaN payload survives the copy
    let y = embedding(table.view(), &[2, 0, 4, 2]).unwrap();
    assert_eq!(y.dim(), (4, 3));
    for (row, &id) in y.rows().into_iter().zip(&[2usize, 0, 4, 2]) {
        for (a, b) in row.iter().zip(table.row(id)) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }
    assert_eq!(embedding(table.view(), &[]).unwrap().dim(), (0, 3));
}

#[test]
fn embedding_out_of_range_id_is_an_error() {
    let table = Array2::<f32>::zeros((5, 3));
    let e = embedding(table.view(), &[1, 4, 5, 9]).unwrap_err();
    match &e {
        RefError::Shape { op, detail } => {
            assert_eq!(op, "embedding");
            assert!(detail.contains("id 5") && detail.contains("V = 5") && detail.contains("index 2"), "{e}");
        }
        _ => panic!("unexpected error {e}"),
    }
}

//! `linear` / `matmul`: the blocked engine against the naive triple loop (bit for bit), exact
//! integer results, layouts, edge shapes, and shape errors.

use kernels_ref::ops::{linear, matmul};
use kernels_ref::RefError;
use ndarray::{s, Array1, Array2};
use proptest::prelude::*;

mod common;
use common::Rng;

/// The definition: per element one f64 accumulator, k ascending, + bias, rounded once.
fn naive(x: &Array2<f32>, w_nk: &Array2<f32>, bias: Option<&Array1<f32>>) -> Array2<f32> {
    let (m, k) = x.dim();
    let n = w_nk.nrows();
    let (xs, ws) = (x.as_slice().unwrap(), w_nk.as_slice().unwrap());
    Array2::from_shape_fn((m, n), |(i, j)| {
        let mut acc = 0f64;
        for kk in 0..k {
            acc += f64::from(xs[i * k + kk]) * f64::from(ws[j * k + kk]);
        }
        if let Some(b) = bias {
            acc += f64::from(b[j]);
        }
        acc as f32
    })
}

fn assert_bits_eq(got: &Array2<f32>, want: &Array2<f32>, what: &str) {
    assert_eq!(got.dim(), want.dim(), "{what}: shape");
    for ((idx, g), w) in got.indexed_iter().zip(want.iter()) {
        assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {idx:?}: got {g:e}, want {w:e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Every path of the engine (small-M strip and rows, tiled with short panels, several K
    /// chunks) equals the naive loop bit for bit, for linear (both weight layouts) and matmul.
    #[test]
    fn fast_path_is_bit_identical_to_naive_loop(
        m in prop_oneof![1usize..=6, 1usize..=80],
        n in prop_oneof![1usize..=40, 1usize..=150],
        k in prop_oneof![0usize..=17, 1usize..=600],
        with_bias in any::<bool>(),
        cancel in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed);
        let (x, w) = if cancel {
            rng.cancelling_pair(m, n, k)
        } else {
            (rng.wide_matrix(m, k), rng.wide_matrix(n, k))
        };
        let bias = with_bias.then(|| Array1::from_shape_simple_fn(n, || rng.wide()));
        let want = naive(&x, &w, bias.as_ref());

        let got = linear(x.view(), w.view(), bias.as_ref().map(|b| b.view())).unwrap();
        assert_bits_eq(&got, &want, "linear, w [N, K] row-major");

        // The same weight stored [K, N] and passed as a transposed view takes the KN layout.
        let w_kn = w.t().as_standard_layout().to_owned();
        let got = linear(x.view(), w_kn.t(), bias.as_ref().map(|b| b.view())).unwrap();
        assert_bits_eq(&got, &want, "linear, w as a transposed view");

        if bias.is_none() {
            assert_bits_eq(&matmul(x.view(), w_kn.view()).unwrap(), &want, "matmul, b [K, N]");
            assert_bits_eq(&matmul(x.view(), w.t()).unwrap(), &want, "matmul, b transposed view");
        }
    }
}

/// Fixed shapes on every boundary of the blocking: M around the small-M limit and the 72-row
/// tile, N around the 8/16/32 panels and the 128/512 blocks, K around the 256 chunk.
#[test]
fn blocking_boundaries_match_naive_loop() {
    let mut rng = Rng(7);
    for &(m, n, k) in &[
        (1, 513, 257),
        (4, 129, 256),
        (5, 33, 255),
        (6, 8, 1),
        (7, 17, 512),
        (72, 128, 256),
        (73, 129, 513),
        (3, 2049, 9),
    ] {
        let (x, w) = rng.cancelling_pair(m, n, k);
        let want = naive(&x, &w, None);
        assert_bits_eq(&linear(x.view(), w.view(), None).unwrap(), &want, &format!("linear {m}x{n}x{k}"));
        let w_kn = w.t().as_standard_layout().to_owned();
        assert_bits_eq(&matmul(x.view(), w_kn.view()).unwrap(), &want, &format!("matmul {m}x{n}x{k}"));
    }
}

/// The tests have teeth: on the cancelling inputs, summing k in descending order changes the
/// bits of many elements, so bit identity with the naive loop really pins the order.
#[test]
fn summation_order_is_visible_in_the_bits() {
    let mut rng = Rng(11);
    let (m, n, k) = (16, 16, 300);
    let (x, w) = rng.cancelling_pair(m, n, k);
    let got = linear(x.view(), w.view(), None).unwrap();
    let reversed = Array2::from_shape_fn((m, n), |(i, j)| {
        let mut acc = 0f64;
        for kk in (0..k).rev() {
            acc += f64::from(x[[i, kk]]) * f64::from(w[[j, kk]]);
        }
        acc as f32
    });
    let differing = got.iter().zip(&reversed).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert!(differing >= m * n / 10, "only {differing} of {} elements depend on the order", m * n);
}

/// Small integers: every partial sum is an integer below 2^24, so the result is exact and must
/// equal integer arithmetic exactly.
#[test]
fn small_integer_inputs_give_exact_results() {
    let mut rng = Rng(3);
    let (m, n, k) = (37, 45, 1000);
    let int = |rng: &mut Rng| (rng.next_u64() % 17) as i64 - 8;
    let xi = Array2::from_shape_simple_fn((m, k), || int(&mut rng));
    let wi = Array2::from_shape_simple_fn((n, k), || int(&mut rng));
    let bi = Array1::from_shape_simple_fn(n, || int(&mut rng) * 1000);
    let x = xi.mapv(|v| v as f32);
    let w = wi.mapv(|v| v as f32);
    let b = bi.mapv(|v| v as f32);
    let got = linear(x.view(), w.view(), Some(b.view())).unwrap();
    for ((i, j), &g) in got.indexed_iter() {
        let exact: i64 = (0..k).map(|kk| xi[[i, kk]] * wi[[j, kk]]).sum::<i64>() + bi[j];
        assert_eq!(g, exact as f32, "element ({i}, {j})");
    }
}

/// `matmul(a, w.t())` and `linear(a, w)` are the same computation.
#[test]
fn matmul_and_linear_agree() {
    let mut rng = Rng(5);
    let a = rng.wide_matrix(9, 70);
    let w = rng.wide_matrix(33, 70);
    assert_bits_eq(&matmul(a.view(), w.t()).unwrap(), &linear(a.view(), w.view(), None).unwrap(), "matmul vs linear");
}

/// Non-contiguous views (a column-strided slice, a transposed x) are accepted and give the
/// bits of their contiguous copies.
#[test]
fn strided_views_give_the_same_bits() {
    let mut rng = Rng(9);
    let big_x = rng.wide_matrix(10, 64);
    let x = big_x.slice(s![.., ..;2]);
    let w = rng.wide_matrix(20, 32);
    let want = linear(x.to_owned().view(), w.view(), None).unwrap();
    assert_bits_eq(&linear(x, w.view(), None).unwrap(), &want, "strided x");
    let xt = x.t().as_standard_layout().to_owned();
    assert_bits_eq(&linear(xt.t(), w.view(), None).unwrap(), &want, "transposed x");
    let big_w = rng.wide_matrix(20, 64);
    let w_str = big_w.slice(s![.., ..;2]);
    let want = naive(&x.to_owned(), &w_str.to_owned(), None);
    assert_bits_eq(&linear(x, w_str, None).unwrap(), &want, "strided w");
}

/// Degenerate shapes: K = 0 gives the bias (or zeros), M = 0 or N = 0 give empty results.
#[test]
fn empty_dimensions() {
    let x = Array2::<f32>::zeros((3, 0));
    let w = Array2::<f32>::zeros((4, 0));
    let b = Array1::from(vec![1.5f32, -2.0, 0.0, 7.25]);
    let y = linear(x.view(), w.view(), Some(b.view())).unwrap();
    assert_eq!(y, Array2::from_shape_fn((3, 4), |(_, j)| b[j]));
    assert_eq!(matmul(x.view(), Array2::<f32>::zeros((0, 5)).view()).unwrap(), Array2::<f32>::zeros((3, 5)));
    assert_eq!(
        linear(Array2::<f32>::zeros((0, 6)).view(), Array2::<f32>::zeros((4, 6)).view(), None).unwrap().dim(),
        (0, 4)
    );
    assert_eq!(matmul(Array2::<f32>::zeros((2, 6)).view(), Array2::<f32>::zeros((6, 0)).view()).unwrap().dim(), (2, 0));
}

/// A NaN input poisons exactly the outputs it feeds, written as the canonical NaN.
#[test]
fn nan_propagates_as_canonical_nan() {
    let mut x = Array2::from_elem((2, 5), 1.0f32);
    x[[1, 3]] = f32::from_bits(0x7fc0_1234);
    let w = Array2::from_elem((3, 5), 2.0f32);
    let y = linear(x.view(), w.view(), None).unwrap();
    assert!(y.row(0).iter().all(|&v| v == 10.0));
    assert!(y.row(1).iter().all(|&v| v.to_bits() == f32::NAN.to_bits()));
}

#[test]
fn shape_mismatches_are_errors() {
    let x = Array2::<f32>::zeros((2, 3));
    let e = linear(x.view(), Array2::<f32>::zeros((4, 5)).view(), None).unwrap_err();
    assert!(
        matches!(&e, RefError::Shape { op, detail } if op == "linear" && detail.contains("[2, 3]") && detail.contains("[4, 5]")),
        "{e}"
    );
    let e = linear(x.view(), Array2::<f32>::zeros((4, 3)).view(), Some(Array1::<f32>::zeros(5).view())).unwrap_err();
    assert!(matches!(&e, RefError::Shape { op, .. } if op == "linear"), "{e}");
    let e = matmul(x.view(), Array2::<f32>::zeros((4, 3)).view()).unwrap_err();
    assert!(matches!(&e, RefError::Shape { op, detail } if op == "matmul" && detail.contains("[4, 3]")), "{e}");
}

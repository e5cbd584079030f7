//! `softmax` and `attention`: correctness against independent references with tolerances
//! derived from the rounding, and exact structural properties (single key, causal masking,
//! GQA vs repeated heads, KV-cache decoding).

use kernels_ref::ops::{attention, softmax};
use kernels_ref::RefError;
use ndarray::{s, Array2};

mod common;
use common::{ulps, Rng};

fn assert_bits_eq(got: &Array2<f32>, want: &Array2<f32>, what: &str) {
    assert_eq!(got.dim(), want.dim(), "{what}: shape");
    for ((idx, g), w) in got.indexed_iter().zip(want.iter()) {
        assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {idx:?}: got {g:e}, want {w:e}");
    }
}

/// Each output is the f64 probability rounded once, so its error is at most half an ulp,
/// i.e. 2^-24 relative; the f64 steps (exp, sum, divide) add about N * 2^-53 relative in
/// total. A row therefore sums to 1 within 2^-24 + N * 2^-52.
#[test]
fn softmax_rows_sum_to_one() {
    let mut rng = Rng(1);
    for &(n, scale) in &[(1, 1.0), (7, 3.0), (100, 10.0), (1000, 30.0), (4096, 5.0)] {
        let x = rng.matrix(5, n, scale);
        let y = softmax(x.view()).unwrap();
        let tol = 2f64.powi(-24) + n as f64 * 2f64.powi(-52);
        for (r, row) in y.rows().into_iter().enumerate() {
            let sum: f64 = row.iter().map(|&v| f64::from(v)).sum();
            assert!((sum - 1.0).abs() <= tol, "n = {n}, row {r}: sum = {sum}, |sum - 1| > {tol:e}");
        }
    }
}

/// Against an independent f64 evaluation (std's `exp`, no max subtraction, sum accumulated
/// from the largest probability down): both are within a few f64 ulps of the exact value, so
/// after rounding to f32 they agree to within 1 ulp.
#[test]
fn softmax_matches_an_independent_reference() {
    let mut rng = Rng(2);
    let x = rng.matrix(16, 300, 20.0);
    let y = softmax(x.view()).unwrap();
    for (xr, yr) in x.rows().into_iter().zip(y.rows()) {
        let e: Vec<f64> = xr.iter().map(|&v| f64::from(v).exp()).collect();
        let mut sorted = e.clone();
        sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
        let sum: f64 = sorted.iter().sum();
        for (&ei, &yi) in e.iter().zip(yr) {
            let want = (ei / sum) as f32;
            assert!(ulps(yi, want) <= 1, "got {yi:e}, reference {want:e}");
        }
    }
}

#[test]
fn softmax_special_values() {
    let x = Array2::from_shape_vec(
        (3, 4),
        vec![
            0.0,
            f32::NEG_INFINITY,
            0.0,
            f32::NEG_INFINITY, // -inf entries get exactly 0
            3.0,
            3.0,
            3.0,
            3.0, // equal entries get exactly 1/4
            1.0,
            f32::NAN,
            2.0,
            3.0, // NaN poisons its row
        ],
    )
    .unwrap();
    let y = softmax(x.view()).unwrap();
    assert_eq!(y.row(0).to_vec(), vec![0.5, 0.0, 0.5, 0.0]);
    assert_eq!(y.row(1).to_vec(), vec![0.25; 4]);
    assert!(y.row(2).iter().all(|v| v.is_nan()));
    // Huge logits do not overflow: the maximum is subtracted first.
    let big = Array2::from_shape_vec((1, 2), vec![3.0e38f32, 3.0e38]).unwrap();
    assert_eq!(softmax(big.view()).unwrap().row(0).to_vec(), vec![0.5, 0.5]);
}

/// With a single visible key the probability is exactly 1 and the output is `v` exactly.
#[test]
fn attention_with_one_key_returns_v() {
    let mut rng = Rng(3);
    let (hq, hkv, d) = (4, 2, 8);
    let q = rng.matrix(1, hq * d, 5.0);
    let k = rng.matrix(1, hkv * d, 5.0);
    let v = rng.matrix(1, hkv * d, 100.0);
    for causal in [false, true] {
        let y = attention(q.view(), k.view(), v.view(), hq, hkv, causal, 0, 0.35).unwrap();
        for h in 0..hq {
            let g = h / (hq / hkv);
            assert_eq!(y.slice(s![0, h * d..(h + 1) * d]), v.slice(s![0, g * d..(g + 1) * d]));
        }
    }
    // Causal row 0 sees only key 0, however many keys follow.
    let q = rng.matrix(3, hq * d, 5.0);
    let k = rng.matrix(3, hkv * d, 5.0);
    let v = rng.matrix(3, hkv * d, 100.0);
    let y = attention(q.view(), k.view(), v.view(), hq, hkv, true, 0, 0.35).unwrap();
    for h in 0..hq {
        let g = h / (hq / hkv);
        assert_eq!(y.slice(s![0, h * d..(h + 1) * d]), v.slice(s![0, g * d..(g + 1) * d]));
    }
}

/// Changing the keys and values of later positions leaves the causal outputs of earlier rows
/// unchanged, bit for bit.
#[test]
fn causal_masking_hides_future_keys() {
    let mut rng = Rng(4);
    let (t, hq, hkv, d) = (12, 4, 4, 16);
    let q = rng.matrix(t, hq * d, 2.0);
    let k = rng.matrix(t, hkv * d, 2.0);
    let v = rng.matrix(t, hkv * d, 2.0);
    let y = attention(q.view(), k.view(), v.view(), hq, hkv, true, 0, 0.25).unwrap();
    for cut in [1, 5, 11] {
        let (mut k2, mut v2) = (k.clone(), v.clone());
        k2.slice_mut(s![cut.., ..]).mapv_inplace(|x| -3.0 * x + 1.0);
        v2.slice_mut(s![cut.., ..]).mapv_inplace(|x| x * 7.0 - 2.0);
        let y2 = attention(q.view(), k2.view(), v2.view(), hq, hkv, true, 0, 0.25).unwrap();
        assert_bits_eq(&y2.slice(s![..cut, ..]).to_owned(), &y.slice(s![..cut, ..]).to_owned(), "rows before the cut");
        assert_ne!(y2.slice(s![cut.., ..]), y.slice(s![cut.., ..]));
    }
}

/// Grouped-query attention equals multi-head attention on key/value heads repeated
/// `Hq / Hkv` times, bit for bit.
#[test]
fn gqa_equals_mha_with_repeated_kv_heads() {
    let mut rng = Rng(5);
    let (t, s_len, hq, hkv, d) = (6, 9, 8, 2, 8);
    let q = rng.matrix(t, hq * d, 2.0);
    let k = rng.matrix(s_len, hkv * d, 2.0);
    let v = rng.matrix(s_len, hkv * d, 2.0);
    let repeat = |m: &Array2<f32>| {
        Array2::from_shape_fn((s_len, hq * d), |(j, c)| {
            let (h, i) = (c / d, c % d);
            m[[j, (h / (hq / hkv)) * d + i]]
        })
    };
    let (k_rep, v_rep) = (repeat(&k), repeat(&v));
    for (causal, off) in [(false, 0), (true, s_len - t)] {
        let gqa = attention(q.view(), k.view(), v.view(), hq, hkv, causal, off, 0.3).unwrap();
        let mha = attention(q.view(), k_rep.view(), v_rep.view(), hq, hq, causal, off, 0.3).unwrap();
        assert_bits_eq(&gqa, &mha, "gqa vs mha");
    }
}

/// Decoding one token at a time with a KV cache (`q_offset = t`, keys `0..=t`) gives the
/// rows of the full causal pass, bit for bit.
#[test]
fn kv_cache_decode_matches_the_full_causal_pass() {
    let mut rng = Rng(6);
    let (t_len, hq, hkv, d) = (10, 6, 3, 8);
    let q = rng.matrix(t_len, hq * d, 2.0);
    let k = rng.matrix(t_len, hkv * d, 2.0);
    let v = rng.matrix(t_len, hkv * d, 2.0);
    let full = attention(q.view(), k.view(), v.view(), hq, hkv, true, 0, 0.3).unwrap();
    for t in 0..t_len {
        let step =
            attention(q.slice(s![t..t + 1, ..]), k.slice(s![..=t, ..]), v.slice(s![..=t, ..]), hq, hkv, true, t, 0.3)
                .unwrap();
        assert_bits_eq(&step, &full.slice(s![t..t + 1, ..]).to_owned(), &format!("decode step {t}"));
    }
}

/// Against a straightforward f64 implementation (std `exp`, unnormalised weights divided at
/// the end). Both carry f64 errors of a few 2^-53 relative to `max |v|` (the weighted sum can
/// cancel), and ours is then rounded once to f32, so `|got - ref| <= 2^-23 |got| + 2^-40 max|v|`
/// (half an ulp of rounding, bounded by 2^-24 relative, doubled for the reference's own
/// rounding to compare against, plus generous f64 slack).
#[test]
fn attention_matches_an_independent_reference() {
    let mut rng = Rng(7);
    let (t_len, s_len, hq, hkv, d) = (5, 13, 4, 2, 16);
    let q = rng.matrix(t_len, hq * d, 1.5);
    let k = rng.matrix(s_len, hkv * d, 1.5);
    let v = rng.matrix(s_len, hkv * d, 3.0);
    let scale = 0.25f32;
    let off = s_len - t_len;
    let y = attention(q.view(), k.view(), v.view(), hq, hkv, true, off, scale).unwrap();
    let vmax = v.iter().fold(0f64, |m, &x| m.max(f64::from(x).abs()));
    for t in 0..t_len {
        for h in 0..hq {
            let g = h / (hq / hkv);
            let keys = off + t + 1;
            let scores: Vec<f64> = (0..keys)
                .map(|j| {
                    (0..d).map(|i| f64::from(q[[t, h * d + i]]) * f64::from(k[[j, g * d + i]])).sum::<f64>()
                        * f64::from(scale)
                })
                .collect();
            let w: Vec<f64> = scores.iter().map(|s| s.exp()).collect();
            let total: f64 = w.iter().sum();
            for i in 0..d {
                let want = (0..keys).map(|j| w[j] * f64::from(v[[j, g * d + i]])).sum::<f64>() / total;
                let got = y[[t, h * d + i]];
                let diff = (f64::from(got) - want).abs();
                let tol = f64::from(got).abs() * 2f64.powi(-23) + vmax * 2f64.powi(-40);
                assert!(diff <= tol, "t {t} h {h} i {i}: got {got:e}, reference {want:e}");
            }
        }
    }
}

#[test]
fn attention_shape_errors() {
    let q = Array2::<f32>::zeros((2, 8));
    let k = Array2::<f32>::zeros((3, 4));
    let v = Array2::<f32>::zeros((3, 4));
    let err = |r: kernels_ref::error::Result<Array2<f32>>| match r.unwrap_err() {
        RefError::Shape { op, detail } => {
            assert_eq!(op, "attention");
            detail
        }
        e => panic!("unexpected error {e}"),
    };
    // Hq = 4, Hkv = 3: not a multiple.
    assert!(err(attention(q.view(), k.view(), v.view(), 4, 3, false, 0, 1.0)).contains("multiple"));
    assert!(err(attention(q.view(), k.view(), v.view(), 0, 1, false, 0, 1.0)).contains("> 0"));
    // Hq = 2 -> D = 4, Hkv = 2 needs width 8.
    assert!(err(attention(q.view(), k.view(), v.view(), 2, 2, false, 0, 1.0)).contains("wide"));
    // q width 8 is not a multiple of 3 heads.
    assert!(err(attention(q.view(), k.view(), v.view(), 3, 1, false, 0, 1.0)).contains("n_heads"));
    let v2 = Array2::<f32>::zeros((2, 4));
    assert!(err(attention(q.view(), k.view(), v2.view(), 2, 1, false, 0, 1.0)).contains("rows"));
    // Causal: queries at positions 2, 3 but only keys 0..=2.
    assert!(err(attention(q.view(), k.view(), v.view(), 2, 1, true, 2, 1.0)).contains("causal"));
    let k0 = Array2::<f32>::zeros((0, 4));
    assert!(err(attention(q.view(), k0.view(), k0.view(), 2, 1, false, 0, 1.0)).contains("no keys"));
    // Valid: Hq = 2 (D = 4), Hkv = 1.
    assert!(attention(q.view(), k.view(), v.view(), 2, 1, true, 1, 1.0).is_ok());
}

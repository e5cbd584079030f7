//! Property tests of the scheme catalogue: names round-trip, every code is the nearest level the
//! scheme can represent (so `|x − dq(q(x))| ≤ step/2` inside the clip range, and clipped values sit
//! on the boundary), and bad input is refused with the right error.
//!
//! Tolerances come from the arithmetic: each f32 operation rounds with relative error 2^-24 and a
//! code passes through a handful of them, so a slack of 2^-20 of the magnitudes involved covers
//! every rounding; where a scheme stores a scale other than the one it quantized with (ggml's fp16
//! `d`, XNNPACK's bf16 group scales), the level grid the codes were chosen on is not the one
//! dequantization uses: the distances to levels `q` and `q±1` each move by at most `(|q|+1)·|Δs|`,
//! so `(2|q| + 2)·|s_quant − s_stored|` is added; a float offset stored in fp16 (ggml Q4_1's `m`)
//! adds twice its storage rounding.

use kernels_ref::dtype::DType;
use kernels_ref::error::RefError;
use kernels_ref::scheme::name::families;
use kernels_ref::scheme::{Family, Quantized, Scheme};
use kernels_ref::tensor::Matrix;
use proptest::prelude::*;

const SCHEMES: &[&str] = &[
    "w4g32-sym-ao",
    "w4g16-sym-nce-ao",
    "w4g32-asym-ao",
    "w3g32-asym-ao",
    "w8pc-sym-ao",
    "w2g32-sym-ao",
    "w4g32-symclip",
    "w8pc-symclip",
    "w8pc-symclip-coreai",
    "w4g32-sym8",
    "w4g32-fzp",
    "w8pc-asym-coreml",
    "w4g32-asym-coreml",
    "w4g32-mlx-cpu",
    "w3g64-mlx-gpu",
    "w8g32-mlx-cpu",
    "w2g32-mlx-gpu",
    "q4_0",
    "q4_0-fused",
    "q4_0-py",
    "q4_1",
    "q4_1-fused",
    "q8_0",
    "q4_K",
    "a8-q8_0-ref",
    "a8-q8_0-avx",
    "a8-pt-asym-ao",
    "a8-pt-asym-ao-i8w",
    "a8-pt-asym-decomp",
    "a8-pt-asym-etport",
    "a8-pt-asym-xnn",
    "a8-pt-asym-vk",
    "a8-pt-asym-vk-away",
    "8da4w-xnn",
    "8da4wg64-vk",
];

/// Values for one group, drawn from the edge-case generators of schemes.md §7.
fn group_values(len: usize) -> impl Strategy<Value = Vec<f32>> {
    let normal = (1e-4f32..2.0, any::<u64>()).prop_map(move |(sigma, seed)| {
        let mut s = seed | 1;
        (0..len)
            .map(|_| {
                // Irwin–Hall approximation of a normal: deterministic from the seed, no extra crate.
                let mut acc = 0.0f32;
                for _ in 0..4 {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    acc += (s >> 40) as f32 / (1u64 << 24) as f32;
                }
                (acc - 2.0) * sigma
            })
            .collect::<Vec<f32>>()
    });
    prop_oneof![
        4 => normal.clone(),
        1 => Just(vec![0.0f32; len]),
        1 => Just(vec![-0.0f32; len]),
        1 => (-3.0f32..3.0).prop_map(move |c| vec![c; len]),
        1 => normal.clone().prop_map(|v| v.into_iter().map(|x| -x.abs()).collect()),
        1 => normal.clone().prop_map(|v| v.into_iter().map(|x| x.abs()).collect()),
        1 => (normal.clone(), 0..len, -50.0f32..50.0).prop_map(|(mut v, i, o)| { v[i] = o; v }),
        1 => (1e-3f32..1.0).prop_map(move |a| (0..len).map(|i| if i % 2 == 0 { a } else { -a }).collect()),
        1 => (1e-7f32..1e-4).prop_map(move |a| (0..len).map(|i| a * ((i % 7) as f32 - 3.0)).collect()),
    ]
}

fn matrix_for(scheme: Scheme) -> impl Strategy<Value = Matrix> {
    let g = match scheme.family {
        Family::Q4K { .. } => 256,
        _ => match scheme.granularity() {
            kernels_ref::scheme::Granularity::Group(g) => g,
            _ => 32,
        },
    };
    (1usize..4, 1usize..3).prop_flat_map(move |(rows, groups)| {
        prop::collection::vec(group_values(g), rows * groups).prop_map(move |gs| {
            // groups are laid along each row
            let cols = groups * g;
            let mut data = vec![0f32; rows * cols];
            for (k, grp) in gs.iter().enumerate() {
                let (r, j) = (k / groups, k % groups);
                data[r * cols + j * g..r * cols + (j + 1) * g].copy_from_slice(grp);
            }
            Matrix::new(rows, cols, data).unwrap()
        })
    })
}

/// Dequantize with every code moved by `delta` (clamped to the scheme's range).
fn shifted(s: &Scheme, q: &Quantized, delta: i32) -> Vec<f32> {
    let p = s.params();
    let mut moved = q.clone();
    for c in moved.q.iter_mut() {
        *c = (*c + delta).clamp(p.qmin as i32, p.qmax as i32);
    }
    s.dequantize(&moved).unwrap()
}

/// The index of the scale that governs element `i` (one per group, per row or per sub-block).
fn scale_index(q: &Quantized, i: usize) -> usize {
    let [rows, cols] = q.shape;
    let [sr, sc] = q.scale_shape;
    let (r, c) = (i / cols, i % cols);
    let r = if sr == rows { r } else { 0 };
    r * sc + c / (cols / sc)
}

fn check_nearest_level(name: &str, x: &Matrix) -> Result<(), TestCaseError> {
    let s: Scheme = name.parse().unwrap();
    let q = s.quantize(x).unwrap();
    let dq = s.dequantize(&q).unwrap();
    let (up, down) = (shifted(&s, &q, 1), shifted(&s, &q, -1));
    let p = s.params();
    for i in 0..x.data.len() {
        let xi = x.data[i] as f64;
        let (d, u, l) = (dq[i] as f64, up[i] as f64, down[i] as f64);
        let si = scale_index(&q, i);
        let stored = q.scales[si] as f64;
        let quant = q.quantize_scales.as_ref().map_or(stored, |v| v[si]);
        let code = q.q[i] as f64;
        let zp = q.zero_points.as_ref().map_or(0.0, |z| z[si] as f64).abs();
        let step = (u - d).abs().max((d - l).abs());
        // A float offset stored in a narrower dtype (ggml Q4_1's fp16 `m`) moves every level by up
        // to half an ulp of that dtype (or half its smallest subnormal).
        let t = p.stored_scale_dtype;
        let offset_move = if t == DType::F32 || q.zero_points.is_none() {
            0.0
        } else {
            zp * t.epsilon() / 2.0 + t.smallest_normal() * t.epsilon()
        };
        let slack = 2f64.powi(-20) * (xi.abs() + step * (code.abs() + zp + 1.0))
            + (2.0 * code.abs() + 2.0) * (quant - stored).abs()
            + 2.0 * offset_move;
        let err = (xi - d).abs();
        prop_assert!(
            err <= (xi - u).abs() + slack && err <= (xi - l).abs() + slack,
            "{name}: element {i} = {xi:e} got code {code} -> {d:e}, but a neighbour code gives {u:e} / {l:e} (slack {slack:e})"
        );
        let interior = q.q[i] > p.qmin as i32 && q.q[i] < p.qmax as i32;
        if interior && step > 0.0 {
            prop_assert!(
                err <= step / 2.0 + slack,
                "{name}: element {i} = {xi:e}: |x - dq| = {err:e} > step/2 = {:e}",
                step / 2.0
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_code_is_the_nearest_level(
        (idx, x) in (0..SCHEMES.len()).prop_flat_map(|i| (Just(i), matrix_for(SCHEMES[i].parse().unwrap())))
    ) {
        check_nearest_level(SCHEMES[idx], &x)?;
    }

    #[test]
    fn names_round_trip(fam in 0..families().len(), ex in 0usize..4, dt in 0usize..3) {
        let f = &families()[fam];
        let name = f.examples[ex % f.examples.len()];
        let s: Scheme = name.parse().unwrap();
        prop_assert_eq!(s.to_string(), name);
        let d = [kernels_ref::dtype::DType::F32, kernels_ref::dtype::DType::F16, kernels_ref::dtype::DType::BF16][dt];
        let with = s.with_dtype(d);
        if let Ok(back) = with.to_string().parse::<Scheme>() {
            prop_assert_eq!(back, with);
        }
    }

    #[test]
    fn group_sizes_that_do_not_divide_are_refused(g in 3usize..200, cols in 1usize..300) {
        prop_assume!(cols % g != 0);
        let s: Scheme = format!("w4g{g}-sym-ao").parse().unwrap();
        let x = Matrix::new(1, cols, vec![0.5; cols]).unwrap();
        let e = s.quantize(&x).unwrap_err();
        prop_assert_eq!(e, RefError::GroupSize { op: s.to_string(), group: g, axis: "cols".into(), len: cols });
    }
}

#[test]
fn nearest_level_holds_on_every_listed_scheme_for_fixed_edge_inputs() {
    // Deterministic companions of the property: the constant, zero and ±a groups on every scheme.
    for name in SCHEMES {
        let s: Scheme = name.parse().unwrap();
        let g = if matches!(s.family, Family::Q4K { .. }) { 256 } else { 64 };
        let mut data = vec![0f32; 3 * g];
        for (i, v) in data.iter_mut().enumerate().take(g) {
            *v = if i % 2 == 0 { 0.37 } else { -0.37 };
        }
        for v in data[g..2 * g].iter_mut() {
            *v = -1.25;
        }
        let x = Matrix::new(3, g, data).unwrap();
        check_nearest_level(name, &x).unwrap();
    }
}

#[test]
fn non_finite_inputs_are_refused_with_their_index() {
    for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut data = vec![0.1f32; 64];
        data[37] = v;
        let x = Matrix::new(2, 32, data).unwrap();
        for name in ["w4g32-sym-ao", "q4_0", "w4g32-mlx-cpu", "pal4-pt", "a8-pt-asym-vk"] {
            let s: Scheme = name.parse().unwrap();
            match s.quantize(&x) {
                Err(RefError::BadValue { index, .. }) => assert_eq!(index, 37, "{name}"),
                other => panic!("{name}: expected BadValue, got {other:?}"),
            }
        }
    }
}

#[test]
fn unknown_names_say_why() {
    for (name, needle) in [
        ("w4g32-sym", "variant must be one of"),
        ("w4g32-mlx-cpu@f8", "unknown dtype suffix"),
        ("w7g32-mlx-cpu", "MLX allows bits"),
        ("w4g48-mlx-gpu", "MLX allows group sizes"),
        ("8da4wg30-vk", "multiple of 4"),
        ("pal5-pt", "palettization allows"),
        ("q5_0", "not in the catalogue"),
        ("a8-pt-asym-etport@f16", "fp32 input only"),
    ] {
        let e = name.parse::<Scheme>().unwrap_err().to_string();
        assert!(e.contains(needle) && e.contains(name), "{name}: {e}");
    }
}

#[test]
fn every_catalogue_example_quantizes_and_lists_its_parameters() {
    for f in families() {
        for name in &f.examples {
            let s: Scheme = name.parse().unwrap();
            let cols = if matches!(s.family, Family::Q4K { .. }) { 256 } else { 128 };
            // 32 rows: grouped-channel LUTs (pal{n}g{C}, C up to 32) need C | rows.
            let data: Vec<f32> = (0..32 * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 97.0).collect();
            let x = Matrix::new(32, cols, data).unwrap();
            let q = s.quantize(&x).unwrap_or_else(|e| panic!("{name}: {e}"));
            let dq = s.dequantize(&q).unwrap();
            assert_eq!(dq.len(), x.data.len());
            let p = s.params();
            assert!(
                q.q.iter().all(|&c| c >= p.qmin as i32 && c <= p.qmax as i32),
                "{name}: code out of [{}, {}]",
                p.qmin,
                p.qmax
            );
            assert!(!s.params().source.is_empty());
        }
    }
}

#[test]
fn torchao_sym_int4_clips_the_top_by_half_a_step_and_keeps_the_bottom() {
    // schemes.md §8.1: amax/7.5 on [-8, 7]: +amax -> 7.5 -> rne 8 -> clamp 7; -amax -> -8 (or -7).
    let s: Scheme = "w4g32-sym-ao".parse().unwrap();
    let mut data = vec![0.0f32; 32];
    data[0] = 1.5;
    data[1] = -1.5;
    let q = s.quantize(&Matrix::new(1, 32, data).unwrap()).unwrap();
    assert_eq!(q.scales[0], 0.2);
    assert_eq!(q.q[0], 7);
    assert!(q.q[1] == -8 || q.q[1] == -7);
    // q4_0 keys the scale on the signed max: the first max-|x| element is exact at -8, the other side clips.
    let g: Scheme = "q4_0".parse().unwrap();
    let mut data = vec![0.0f32; 32];
    data[0] = 1.5;
    data[1] = -1.5;
    let q = g.quantize(&Matrix::new(1, 32, data).unwrap()).unwrap();
    assert_eq!((q.q[0], q.q[1]), (-8, 7));
}

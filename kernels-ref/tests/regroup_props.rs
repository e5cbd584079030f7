//! Regrouping (field report 002): refining keeps dequantization bit-identical, coarsening is
//! exact or an error, non-dividing sizes are errors; and the Int4Tensor ↔ int8 repack round trips.

use kernels_ref::pack::{pack, Nibbles, Packing};
use kernels_ref::regroup::{pack_int8_to_int4, regroup, repack_int4_to_int8, transpose_grid};
use kernels_ref::scheme::{Family, Granularity, Quantized, Scheme};
use kernels_ref::tensor::Matrix;
use kernels_ref::RefError;
use proptest::collection::vec;
use proptest::prelude::*;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn quantize(name: &str, rows: usize, cols: usize, data: &[f32]) -> Quantized {
    let s: Scheme = name.parse().unwrap();
    s.quantize(&Matrix::new(rows, cols, data[..rows * cols].to_vec()).unwrap()).unwrap()
}

fn dequant(q: &Quantized) -> Vec<u32> {
    bits(&q.scheme.dequantize(q).unwrap())
}

const SCHEMES: [&str; 12] = [
    "w4g64-sym-ao",
    "w4g64-asym-ao@bf16",
    "w8g128-sym-nce-ao@f16",
    "w4g64-symclip",
    "w4g64-symclip-coreai",
    "w8g64-asym-coreml@f16",
    "w4g64-sym8",
    "w4g128-fzp@bf16",
    "8da4wg64-ao",
    "8da4wg64-vk",
    "w4g128-mlx-cpu",
    "w4pc-asym-ao",
];

fn divisors(n: usize) -> Vec<usize> {
    (2..=n).filter(|d| n % d == 0).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Refining to every divisor keeps the dequantization bit for bit, and coarsening back gives
    /// the original qparams.
    #[test]
    fn refine_is_exact_and_coarsen_undoes_it(which in 0usize..SCHEMES.len(), rows in 1usize..=3,
                                             data in vec(-3.0f32..3.0, 3 * 128)) {
        let name = SCHEMES[which];
        let cols = 128;
        let q = quantize(name, rows, cols, &data);
        let old = q.scheme.granularity().group_len(cols);
        let want = dequant(&q);
        for g in divisors(old) {
            let r = match regroup(&q, g) {
                Ok(r) => r,
                // MLX (32/64/128 only) and the Vulkan kernels (G % 4 == 0) refuse some sizes.
                Err(RefError::Unsupported { detail, .. }) => {
                    prop_assert!(detail.contains("not valid"), "{name} → {g}: {detail}");
                    continue;
                }
                Err(e) => return Err(TestCaseError::fail(format!("{name} → {g}: {e}"))),
            };
            prop_assert_eq!(r.scheme.granularity(), if g == old && q.scheme.granularity() == Granularity::Channel {
                Granularity::Channel
            } else {
                Granularity::Group(g)
            });
            prop_assert_eq!(r.scale_shape, [rows, cols / g]);
            prop_assert_eq!(&r.q, &q.q);
            prop_assert_eq!(dequant(&r), want.clone(), "{} → {}", name, g);
            // The scheme name round-trips through the catalogue.
            prop_assert_eq!(r.scheme.to_string().parse::<Scheme>().unwrap(), r.scheme);
            let back = regroup(&r, old).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(bits(&back.scales), bits(&q.scales));
            prop_assert_eq!(back.zero_points.as_deref().map(bits), q.zero_points.as_deref().map(bits));
            prop_assert_eq!(dequant(&back), want.clone());
            if q.scheme.granularity() != Granularity::Channel {
                prop_assert_eq!(&back, &q);
            }
        }
    }

    /// Int4Tensor nibbles + (K/G, N) scales ↔ int8 codes + (N, K/G) scales, both ways.
    #[test]
    fn int4_int8_repack_roundtrip((rows, cols, kg, q, s) in (0usize..=6, 1usize..=24)
        .prop_flat_map(|(r, c)| (Just(r), Just(c), prop::sample::select((1..=c).filter(|d| c % d == 0).collect::<Vec<_>>())))
        .prop_flat_map(|(r, c, kg)| (Just(r), Just(c), Just(kg), vec(-8i8..=7, r * c), vec(any::<f32>(), r * kg)))) {
        let (bytes, s_kg_n) = pack_int8_to_int4(&q, rows, cols, &s).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // The nibbles are exactly pack's LnEvenTc layout.
        let x = Quantized { q: q.iter().map(|&c| c as i32).collect(), ..quantize("w4g32-sym-ao", 1, 32, &[0.0; 32]) };
        let x = Quantized { shape: [rows, cols], ..x };
        prop_assert_eq!(&bytes, &pack(Packing::Nibbles(Nibbles::LnEvenTc), &x).unwrap());
        prop_assert_eq!(bits(&s_kg_n), bits(&transpose_grid(&s, rows, kg).unwrap()));
        let (q2, s2) = repack_int4_to_int8(&bytes, rows, cols, &s_kg_n).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(q2, q);
        prop_assert_eq!(bits(&s2), bits(&s));
    }
}

#[test]
fn coarsening_identical_groups_is_exact() {
    // Two rows whose first 64 columns share one qparam set and last 64 another: a g32 quantization
    // of a tensor built so that both g32 halves have the same amax gives identical scales.
    let mut data = vec![0f32; 2 * 128];
    for r in 0..2 {
        for c in 0..128 {
            let amax = if c < 64 { 1.0 } else { 0.25 } * (r + 1) as f32;
            data[r * 128 + c] = if c % 32 == 0 { amax } else { amax * ((c % 7) as f32 / 7.0 - 0.5) };
        }
    }
    let q = quantize("w4g32-sym-ao", 2, 128, &data);
    let c = regroup(&q, 64).unwrap();
    assert_eq!(c.scheme.to_string(), "w4g64-sym-ao");
    assert_eq!(c.scale_shape, [2, 2]);
    assert_eq!(c.scales, vec![q.scales[0], q.scales[2], q.scales[4], q.scales[6]]);
    assert_eq!(dequant(&c), dequant(&q));
    // And it is the same as quantizing with g64 directly.
    let direct = quantize("w4g64-sym-ao", 2, 128, &data);
    assert_eq!(c, direct);
    // g128 mixes the two halves: not exact.
    let e = regroup(&q, 128).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RefError::Unsupported { .. }), "{msg}");
    assert!(msg.contains("group 32 to 128") && msg.contains("row 0") && msg.contains("differ"), "{msg}");
}

#[test]
fn coarsening_different_scales_errors_with_the_position() {
    let data: Vec<f32> = (0..2 * 64).map(|i| ((i * 37 % 101) as f32 - 50.0) / (1.0 + (i / 32) as f32)).collect();
    let q = quantize("w4g32-asym-ao", 2, 64, &data);
    let e = regroup(&q, 64).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("cannot coarsen group 32 to 64 exactly"), "{msg}");
    assert!(msg.contains("row 0, new group 0 (columns 0..64)"), "{msg}");
    assert!(msg.contains("old groups 0 and 1"), "{msg}");
}

#[test]
fn non_dividing_sizes_are_group_size_errors() {
    let data: Vec<f32> = (0..96).map(|i| (i as f32 - 40.0) / 13.0).collect();
    let q = quantize("w4g32-sym-ao", 1, 96, &data);
    // 48 divides 96 but neither 32 | 48 nor 48 | 32: groups would straddle (the field report bug).
    let e = regroup(&q, 48).unwrap_err();
    assert!(matches!(e, RefError::GroupSize { group: 48, len: 32, .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("group size 48 does not divide the old group size = 32"), "{msg}");
    // A new group that does not divide the row.
    let e = regroup(&q, 64).unwrap_err();
    assert!(e.to_string().contains("group size 64 does not divide cols = 96"), "{e}");
    let e = regroup(&q, 0).unwrap_err();
    assert!(e.to_string().contains("group size 0 does not divide cols = 96"), "{e}");
    // Per-axis source (group = cols = 96) to 64: 64 does not divide 96.
    let pc = quantize("w4pc-sym-ao", 1, 96, &data);
    let e = regroup(&pc, 64).unwrap_err();
    assert!(e.to_string().contains("group size 64 does not divide cols = 96"), "{e}");
    // ... but to 24 it is exact.
    let r = regroup(&pc, 24).unwrap();
    assert_eq!(r.scheme.to_string(), "w4g24-sym-ao");
    assert_eq!(r.scales, vec![pc.scales[0]; 4]);
    assert_eq!(dequant(&r), dequant(&pc));
    // Per-axis asked for its own size: unchanged.
    assert_eq!(regroup(&pc, 96).unwrap(), pc);
}

#[test]
fn per_tensor_source_refines() {
    let data: Vec<f32> = (0..3 * 64).map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0).collect();
    let q = quantize("w8pt-symclip", 3, 64, &data);
    let r = regroup(&q, 16).unwrap();
    assert_eq!(
        r.scheme.family,
        Family::SymClip { bits: 8, gran: Granularity::Group(16), flavor: kernels_ref::scheme::ClipFlavor::Coreml }
    );
    assert_eq!(r.scale_shape, [3, 4]);
    assert_eq!(dequant(&r), dequant(&q));
    let r = regroup(&q, 64).unwrap();
    assert_eq!(r.scale_shape, [3, 1]);
    assert_eq!(dequant(&r), dequant(&q));
}

#[test]
fn schemes_that_cannot_be_regrouped() {
    let data: Vec<f32> = (0..2 * 256).map(|i| ((i * 7 % 23) as f32 - 11.0) / 5.0).collect();
    for (name, cols, g, why) in [
        ("q4_0", 64, 16, "ggml block formats"),
        ("q4_K", 256, 128, "ggml block formats"),
        ("q8_0", 64, 64, "ggml block formats"),
        ("pal4-pt", 64, 32, "palettized"),
        ("a8-pt-asym-ao", 64, 32, "activations"),
        ("w4g64-mlx-cpu", 64, 16, "MLX allows group sizes 32, 64, 128"),
        ("8da4wg64-vk", 64, 2, "multiple of 4"),
        ("w4g64-sym-ao", 64, 1, "at least 2"),
    ] {
        let q = quantize(name, 2, cols, &data);
        let e = regroup(&q, g).unwrap_err();
        assert!(matches!(e, RefError::Unsupported { .. }), "{name}: {e}");
        assert!(e.to_string().contains(why), "{name}: {e}");
    }
}

#[test]
fn refining_repeats_quantize_scales_and_zero_points() {
    // bf16 storage: quantize-time scales differ from the stored ones and are carried along.
    let data: Vec<f32> = (0..64).map(|i| ((i * 29 % 61) as f32 - 30.0) / 9.3).collect();
    let q = quantize("w4g32-fzp@bf16", 1, 64, &data);
    let r = regroup(&q, 8).unwrap();
    assert_eq!(r.scheme.to_string(), "w4g8-fzp@bf16");
    let zp = q.zero_points.as_ref().unwrap();
    assert_eq!(r.zero_points.as_ref().unwrap(), &[[zp[0]; 4], [zp[1]; 4]].concat());
    if let Some(qs) = &q.quantize_scales {
        assert_eq!(r.quantize_scales.as_ref().unwrap(), &[[qs[0]; 4], [qs[1]; 4]].concat());
    }
    assert_eq!(dequant(&r), dequant(&q));
}

#[test]
fn malformed_inputs_are_shape_errors() {
    let data = vec![0.5f32; 64];
    let mut q = quantize("w4g32-sym-ao", 1, 64, &data);
    q.scales.pop();
    assert!(matches!(regroup(&q, 16), Err(RefError::Shape { .. })));
    let mut q = quantize("w4g32-sym-ao", 1, 64, &data);
    q.q.pop();
    assert!(matches!(regroup(&q, 16), Err(RefError::Shape { .. })));
    let mut q = quantize("w4g32-sym-ao", 1, 64, &data);
    q.scale_shape = [2, 1];
    assert!(matches!(regroup(&q, 16), Err(RefError::Shape { .. })));
}

#[test]
fn int4_tensor_repack_known_answer() {
    // N = 2, K = 4, G = 2: nibbles tc, scales (K/G, N) = [[a0, b0], [a1, b1]].
    let bytes = [0x78u8, 0x0F, 0x21, 0xBC];
    let (q, s) = repack_int4_to_int8(&bytes, 2, 4, &[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert_eq!(q, vec![-8, 7, -1, 0, 1, 2, -4, -5]);
    // (N, K/G): row 0 = [1, 3], row 1 = [2, 4].
    assert_eq!(s, vec![1.0, 3.0, 2.0, 4.0]);
    let (b2, s2) = pack_int8_to_int4(&q, 2, 4, &s).unwrap();
    assert_eq!(b2, bytes.to_vec());
    assert_eq!(s2, vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn int4_tensor_repack_errors() {
    // Wrong byte length.
    let e = repack_int4_to_int8(&[0u8; 3], 2, 4, &[1.0; 4]).unwrap_err();
    assert!(e.to_string().contains("expected 4, got 3"), "{e}");
    // Scale count not a multiple of N.
    assert!(matches!(repack_int4_to_int8(&[0u8; 4], 2, 4, &[1.0; 3]), Err(RefError::Shape { .. })));
    // K/G = 3 does not divide K = 4.
    let e = repack_int4_to_int8(&[0u8; 4], 2, 4, &[1.0; 6]).unwrap_err();
    assert!(e.to_string().contains("does not divide K = 4"), "{e}");
    // No scales.
    assert!(repack_int4_to_int8(&[0u8; 4], 2, 4, &[]).is_err());
    // Odd K with a non-zero pad nibble.
    assert!(repack_int4_to_int8(&[0x10], 1, 1, &[1.0]).is_err());
    // Codes out of int4 range, and the wrong code count.
    assert!(matches!(pack_int8_to_int4(&[0, 8], 1, 2, &[1.0]), Err(RefError::BadValue { index: 1, .. })));
    assert!(matches!(pack_int8_to_int4(&[0, 1, 2], 1, 2, &[1.0]), Err(RefError::Shape { .. })));
    assert!(transpose_grid(&[1.0; 5], 2, 3).is_err());
}

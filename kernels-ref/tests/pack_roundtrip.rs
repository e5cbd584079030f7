//! Property tests: `unpack(pack(x)) == x` for every layout, `pack(unpack(bytes)) == bytes` for the
//! self-describing ggml blocks, and no panics on arbitrary bytes and shapes.

use kernels_ref::dtype::f16_bits_to_f32;
use kernels_ref::pack::{pack, packed_len, unpack, Nibbles, Packing};
use kernels_ref::scheme::ggml::Q4KRaw;
use kernels_ref::scheme::{Quantized, Scheme};
use proptest::collection::vec;
use proptest::prelude::*;

fn blank(scheme: &str, rows: usize, cols: usize) -> Quantized {
    Quantized {
        scheme: scheme.parse::<Scheme>().unwrap(),
        shape: [rows, cols],
        q: Vec::new(),
        scales: Vec::new(),
        scale_shape: [0, 0],
        zero_points: None,
        zero_point_shape: None,
        lut: None,
        lut_shape: None,
        quantize_scales: None,
        extra: None,
    }
}

fn with_codes(rows: usize, cols: usize, q: Vec<i32>) -> Quantized {
    Quantized { q, ..blank("w4g32-sym-ao", rows, cols) }
}

fn range(bits: u8, signed: bool) -> (i32, i32) {
    if signed {
        (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    } else {
        (0, (1 << bits) - 1)
    }
}

/// `(bits, signed, rows, cols, codes)` with codes in range.
fn coded(
    bits: impl Strategy<Value = u8>,
    signed: impl Strategy<Value = bool>,
    max_rows: usize,
    max_cols: usize,
) -> impl Strategy<Value = (u8, bool, usize, usize, Vec<i32>)> {
    (bits, signed, 0..=max_rows, 0..=max_cols).prop_flat_map(|(b, s, r, c)| {
        let (lo, hi) = range(b, s);
        (Just(b), Just(s), Just(r), Just(c), vec(lo..=hi, r * c))
    })
}

/// Any fp16 value but NaN (covers ±0, subnormals, ±inf), as f32.
fn fp16_any() -> impl Strategy<Value = f32> {
    any::<u16>().prop_map(f16_bits_to_f32).prop_filter("not NaN", |v| !v.is_nan())
}

/// fp16 values other than NaN, as f32 (NaN payloads do not survive Q4KRaw's JSON; d never is NaN).
fn fp16_not_nan() -> impl Strategy<Value = f32> {
    fp16_any().prop_filter("not NaN", |v| !v.is_nan())
}

fn bits_of(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn roundtrip_codes(p: Packing, rows: usize, cols: usize, q: Vec<i32>) -> Result<(), TestCaseError> {
    let x = with_codes(rows, cols, q);
    let bytes = pack(p, &x).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(bytes.len(), packed_len(p, rows, cols).unwrap());
    let mut y = blank("w4g32-sym-ao", rows, cols);
    unpack(p, &bytes, &mut y).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&y.q, &x.q);
    // And back: the bytes are canonical.
    prop_assert_eq!(pack(p, &y).unwrap(), bytes);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn unpacked_roundtrip((bits, signed, rows, cols, q) in coded(1u8..=8, any::<bool>(), 5, 24)) {
        roundtrip_codes(Packing::Unpacked { bits, signed }, rows, cols, q)?;
    }

    #[test]
    fn bitstream_roundtrip((bits, signed, rows, cols, q) in coded(1u8..=8, any::<bool>(), 9, 24)) {
        roundtrip_codes(Packing::Bitstream { bits, signed }, rows, cols, q)?;
    }

    #[test]
    fn mlx_roundtrip((bits, _, rows, cols, q) in coded(prop::sample::select(vec![2u8, 3, 4, 5, 6, 8]), Just(false), 5, 70)) {
        roundtrip_codes(Packing::MlxWords { bits }, rows, cols, q)?;
    }

    #[test]
    fn nibbles_roundtrip((_, _, rows, cols, q) in coded(Just(4u8), Just(true), 5, 25), tc in any::<bool>()) {
        let kind = if tc { Nibbles::LnEvenTc } else { Nibbles::LnEvenOb };
        roundtrip_codes(Packing::Nibbles(kind), rows, cols, q)?;
    }

    #[test]
    fn vulkan_roundtrip((rows, cols, q) in (0usize..=19, 0usize..=13)
        .prop_flat_map(|(r, c)| (Just(r), Just(c), vec(-8i32..=7, r * c)))) {
        roundtrip_codes(Packing::VulkanQ4Blocks, rows, cols, q)?;
    }

    #[test]
    fn ggml32_roundtrip(which in 0usize..3, rows in 0usize..=3, blocks in 0usize..=3, seed in any::<u64>(),
                        d in vec(fp16_any(), 9), m in vec(fp16_any(), 9)) {
        let (p, name, lo, hi) = [
            (Packing::GgmlQ4_0, "q4_0", -8, 7),
            (Packing::GgmlQ4_1, "q4_1", 0, 15),
            (Packing::GgmlQ8_0, "q8_0", -128, 127),
        ][which];
        let (cols, nb) = (32 * blocks, rows * blocks);
        let mut state = seed;
        let q: Vec<i32> = (0..rows * cols).map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            lo + ((state >> 33) % (hi - lo + 1) as u64) as i32
        }).collect();
        let mut x = blank(name, rows, cols);
        x.q = q;
        x.scales = d[..nb].to_vec();
        x.scale_shape = [rows, blocks];
        if p == Packing::GgmlQ4_1 {
            x.zero_points = Some(m[..nb].to_vec());
            x.zero_point_shape = Some([rows, blocks]);
        }
        let bytes = pack(p, &x).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(bytes.len(), packed_len(p, rows, cols).unwrap());
        let mut y = blank(name, rows, cols);
        unpack(p, &bytes, &mut y).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&y.q, &x.q);
        prop_assert_eq!(bits_of(&y.scales), bits_of(&x.scales));
        prop_assert_eq!(y.scale_shape, [rows, blocks]);
        prop_assert_eq!(y.zero_points.as_deref().map(bits_of), x.zero_points.as_deref().map(bits_of));
        prop_assert_eq!(y.zero_point_shape, x.zero_point_shape);
    }

    #[test]
    fn q4k_roundtrip(rows in 0usize..=2, sblocks in 0usize..=2, seed in any::<u64>(),
                     // ±inf included: fp16 d/dmin overflow for ranges above ~6e7 and must survive `extra`.
                     d in vec(fp16_not_nan(), 4), dmin in vec(fp16_not_nan(), 4),
                     sc in vec(0u8..64, 32), m in vec(0u8..64, 32)) {
        let (cols, nsb) = (256 * sblocks, rows * sblocks);
        let mut state = seed;
        let q: Vec<i32> = (0..rows * cols).map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % 16) as i32
        }).collect();
        let raw = Q4KRaw { d: d[..nsb].to_vec(), dmin: dmin[..nsb].to_vec(), sc: sc[..nsb * 8].to_vec(), m: m[..nsb * 8].to_vec() };
        let mut x = blank("q4_K", rows, cols);
        x.q = q;
        x.scales = (0..nsb * 8).map(|i| raw.d[i / 8] * raw.sc[i] as f32).collect();
        x.zero_points = Some((0..nsb * 8).map(|i| raw.dmin[i / 8] * raw.m[i] as f32).collect());
        x.scale_shape = [rows, cols / 32];
        x.zero_point_shape = Some([rows, cols / 32]);
        x.extra = Some(serde_json::to_value(&raw).unwrap());
        let bytes = pack(Packing::GgmlQ4K, &x).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(bytes.len(), 144 * nsb);
        let mut y = blank("q4_K", rows, cols);
        unpack(Packing::GgmlQ4K, &bytes, &mut y).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&y.q, &x.q);
        prop_assert_eq!(bits_of(&y.scales), bits_of(&x.scales));
        prop_assert_eq!(y.zero_points.as_deref().map(bits_of), x.zero_points.as_deref().map(bits_of));
        let back: Q4KRaw = serde_json::from_value(y.extra.clone().unwrap()).unwrap();
        prop_assert_eq!(bits_of(&back.d), bits_of(&raw.d));
        prop_assert_eq!(bits_of(&back.dmin), bits_of(&raw.dmin));
        prop_assert_eq!(&back.sc, &raw.sc);
        prop_assert_eq!(&back.m, &raw.m);
        prop_assert_eq!(y.scale_shape, [rows, cols / 32]);
    }

    /// Any bytes of the right length are a valid ggml tensor (but NaN scales), and packing what
    /// they unpack to gives the same bytes: the ggml layouts are bijections.
    #[test]
    fn ggml_bytes_roundtrip(which in 0usize..4, rows in 1usize..=2, seed in any::<u64>()) {
        let (p, name, cols) = [
            (Packing::GgmlQ4_0, "q4_0", 64),
            (Packing::GgmlQ4_1, "q4_1", 64),
            (Packing::GgmlQ8_0, "q8_0", 64),
            (Packing::GgmlQ4K, "q4_K", 256),
        ][which];
        let len = packed_len(p, rows, cols).unwrap();
        let (bb, nhalf) = match p { Packing::GgmlQ4_0 => (18, 1), Packing::GgmlQ4_1 => (20, 2), Packing::GgmlQ8_0 => (34, 1), _ => (144, 2) };
        let mut state = seed;
        let mut bytes: Vec<u8> = (0..len).map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 56) as u8
        }).collect();
        // Clear the top exponent bit of each fp16 field: no NaN / inf.
        for b in 0..len / bb {
            for h in 0..nhalf {
                bytes[b * bb + 2 * h + 1] &= 0xBF;
            }
        }
        let mut y = blank(name, rows, cols);
        unpack(p, &bytes, &mut y).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(pack(p, &y).map_err(|e| TestCaseError::fail(e.to_string()))?, bytes);
    }

    /// Arbitrary bytes and shapes: unpack answers Ok or Err, never panics; a length mismatch is
    /// always an error.
    #[test]
    fn unpack_never_panics(which in 0usize..12, bits in 0u8..=9, rows in 0usize..=9, cols in 0usize..=300,
                           bytes in vec(any::<u8>(), 0..400)) {
        let p = [
            Packing::Unpacked { bits, signed: true },
            Packing::Unpacked { bits, signed: false },
            Packing::Nibbles(Nibbles::LnEvenOb),
            Packing::Nibbles(Nibbles::LnEvenTc),
            Packing::Bitstream { bits, signed: true },
            Packing::Bitstream { bits, signed: false },
            Packing::MlxWords { bits },
            Packing::GgmlQ4_0,
            Packing::GgmlQ4_1,
            Packing::GgmlQ8_0,
            Packing::GgmlQ4K,
            Packing::VulkanQ4Blocks,
        ][which];
        let mut y = blank("w4g32-sym-ao", rows, cols);
        let r = unpack(p, &bytes, &mut y);
        match packed_len(p, rows, cols) {
            Ok(n) if n == bytes.len() => {}
            _ => prop_assert!(r.is_err()),
        }
        if r.is_ok() {
            prop_assert_eq!(y.q.len(), rows * cols);
        }
        // Packing whatever codes there are never panics either.
        let _ = pack(p, &y);
    }
}

//! Known-answer tests that pin each byte layout with hand-computed bytes, the error cases, and
//! quantize → pack → unpack round trips through the scheme catalogue.

use kernels_ref::pack::{pack, packed_len, unpack, Nibbles, Packing};
use kernels_ref::scheme::ggml::Q4KRaw;
use kernels_ref::scheme::{Quantized, Scheme};
use kernels_ref::tensor::Matrix;
use kernels_ref::RefError;

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

fn codes(rows: usize, cols: usize, q: Vec<i32>) -> Quantized {
    Quantized { q, ..blank("w4g32-sym-ao", rows, cols) }
}

fn unpack_codes(p: Packing, bytes: &[u8], rows: usize, cols: usize) -> Result<Vec<i32>, RefError> {
    let mut y = blank("w4g32-sym-ao", rows, cols);
    unpack(p, bytes, &mut y)?;
    Ok(y.q)
}

/// Deterministic pseudo-normal test data.
fn data(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            let mut acc = 0f32;
            for _ in 0..4 {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                acc += ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
            }
            acc * scale
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Known answers

#[test]
fn q4_0_block_ln_j_hn_j16() {
    // u_j = j / 2 (q = u - 8): qs[j] = u_j | u_{j+16} << 4 = (j/2) | ((8 + j/2) << 4).
    let q: Vec<i32> = (0..32).map(|j| j / 2 - 8).collect();
    let mut x = codes(1, 32, q.clone());
    x.scales = vec![1.0];
    let b = pack(Packing::GgmlQ4_0, &x).unwrap();
    let mut want = vec![0x00, 0x3C]; // fp16 1.0, little endian
    want.extend([0x80, 0x80, 0x91, 0x91, 0xA2, 0xA2, 0xB3, 0xB3, 0xC4, 0xC4, 0xD5, 0xD5, 0xE6, 0xE6, 0xF7, 0xF7]);
    assert_eq!(b, want);
    // -0.0 keeps its sign bit (an all-zero ggml block stores d = -0.0).
    x.scales = vec![-0.0];
    let b = pack(Packing::GgmlQ4_0, &x).unwrap();
    assert_eq!(&b[..2], &[0x00, 0x80]);
    let mut y = blank("q4_0", 1, 32);
    unpack(Packing::GgmlQ4_0, &b, &mut y).unwrap();
    assert_eq!(y.q, q);
    assert_eq!(y.scales[0].to_bits(), (-0.0f32).to_bits());
    assert_eq!(y.zero_points, None);
}

#[test]
fn q4_1_and_q8_0_blocks() {
    let q: Vec<i32> = (0..32).map(|j| j % 16).collect();
    let mut x = codes(1, 32, q);
    x.scales = vec![0.5];
    x.zero_points = Some(vec![-2.0]);
    let b = pack(Packing::GgmlQ4_1, &x).unwrap();
    assert_eq!(&b[..4], &[0x00, 0x38, 0x00, 0xC0]); // fp16 0.5, fp16 -2.0
    let qs: Vec<u8> = (0..16).map(|j| j | (j << 4)).collect();
    assert_eq!(&b[4..], &qs[..]);

    let q: Vec<i32> = (0..32).map(|j| if j % 2 == 0 { -127 + j } else { 127 - j }).collect();
    let mut x = codes(1, 32, q.clone());
    // The smallest fp16 subnormal, 2^-24.
    x.scales = vec![f32::from_bits(0x3380_0000)];
    let b = pack(Packing::GgmlQ8_0, &x).unwrap();
    assert_eq!(&b[..2], &[0x01, 0x00]);
    assert_eq!(b[2], (-127i8) as u8);
    assert_eq!(b[3], 126);
    assert_eq!(b.len(), 34);
}

#[test]
fn q4_k_scales_and_codes() {
    let sc = [0u8, 1, 2, 63, 16, 33, 47, 63];
    let m = [5u8, 10, 20, 40, 17, 48, 32, 1];
    let raw = Q4KRaw { d: vec![0.25], dmin: vec![1.0], sc: sc.to_vec(), m: m.to_vec() };
    // q[i] = i mod 16 in chunk order: chunk c low nibbles are q[64c + l], high q[64c + 32 + l].
    let q: Vec<i32> = (0..256).map(|i| i % 16).collect();
    let mut x = blank("q4_K", 1, 256);
    x.q = q.clone();
    x.scales = sc.iter().map(|&s| 0.25 * s as f32).collect();
    x.zero_points = Some(m.iter().map(|&v| v as f32).collect());
    x.extra = Some(serde_json::to_value(&raw).unwrap());
    let b = pack(Packing::GgmlQ4K, &x).unwrap();
    assert_eq!(b.len(), 144);
    // fp16 0.25, fp16 1.0.
    assert_eq!(&b[..4], &[0x00, 0x34, 0x00, 0x3C]);
    // Hand-packed: j<4 low 6 bits of bytes 0..4 (sc) / 4..8 (m); j>=4 low nibbles in 8..12
    // and top 2 bits in the high bits of 0..8.
    assert_eq!(&b[4..16], &[0x40, 0x81, 0x82, 0xFF, 0x45, 0xCA, 0x94, 0x28, 0x10, 0x01, 0x0F, 0x1F]);
    // qs[32c + l] = q[64c + l] | q[64c + 32 + l] << 4; with q = i mod 16 both are l mod 16.
    for l in 0..128 {
        let v = (l % 16) as u8;
        assert_eq!(b[16 + l], v | (v << 4), "qs[{l}]");
    }
    let mut y = blank("q4_K", 1, 256);
    unpack(Packing::GgmlQ4K, &b, &mut y).unwrap();
    assert_eq!(y.q, q);
    assert_eq!(y.scales, x.scales);
    assert_eq!(y.zero_points, x.zero_points);
    assert_eq!(serde_json::from_value::<Q4KRaw>(y.extra.unwrap()).unwrap(), raw);
    assert_eq!(y.scale_shape, [1, 8]);

    // Distinguish the 64-chunk layout from LN=j/HN=j+16 over the whole super-block.
    let mut x2 = x.clone();
    x2.q = vec![0; 256];
    x2.q[32] = 5; // chunk 0, high nibble of qs[0]
    x2.q[64] = 7; // chunk 1, low nibble of qs[32]
    let b = pack(Packing::GgmlQ4K, &x2).unwrap();
    assert_eq!(b[16], 0x50);
    assert_eq!(b[16 + 32], 0x07);
}

#[test]
fn int4_tensor_tc_vs_xnnpack_ob() {
    // One odd row: pairs (-8, 7), (-1, 0), (3, pad).
    let x = codes(1, 5, vec![-8, 7, -1, 0, 3]);
    let tc = pack(Packing::Nibbles(Nibbles::LnEvenTc), &x).unwrap();
    let ob = pack(Packing::Nibbles(Nibbles::LnEvenOb), &x).unwrap();
    assert_eq!(tc, vec![0x78, 0x0F, 0x03]);
    assert_eq!(ob, vec![0xF0, 0x87, 0x8B]);
    // Rows are padded independently.
    let x = codes(2, 3, vec![1, 2, 3, -4, -5, -6]);
    assert_eq!(pack(Packing::Nibbles(Nibbles::LnEvenTc), &x).unwrap(), vec![0x21, 0x03, 0xBC, 0x0A]);
    assert_eq!(pack(Packing::Nibbles(Nibbles::LnEvenOb), &x).unwrap(), vec![0xA9, 0x8B, 0x34, 0x82]);
}

#[test]
fn bitstream_3bit_straddles_bytes() {
    // Signed 3-bit: -4 → 100, 3 → 011, -1 → 111, 2 → 010; element 2 straddles bytes 0 and 1.
    let x = codes(2, 2, vec![-4, 3, -1, 2]);
    let p = Packing::Bitstream { bits: 3, signed: true };
    assert_eq!(pack(p, &x).unwrap(), vec![0xDC, 0x05]);
    assert_eq!(unpack_codes(p, &[0xDC, 0x05], 2, 2).unwrap(), vec![-4, 3, -1, 2]);
    // Unsigned, 9 codes = 27 bits → 4 bytes, last one zero-padded.
    let x = codes(3, 3, vec![1, 2, 3, 4, 5, 6, 7, 0, 5]);
    let p = Packing::Bitstream { bits: 3, signed: false };
    assert_eq!(pack(p, &x).unwrap(), vec![0xD1, 0x58, 0x1F, 0x05]);
    // 4-bit bitstream = LN=even two's complement.
    let x = codes(1, 4, vec![-8, 7, -1, 0]);
    assert_eq!(
        pack(Packing::Bitstream { bits: 4, signed: true }, &x).unwrap(),
        pack(Packing::Nibbles(Nibbles::LnEvenTc), &x).unwrap()
    );
    // 6-bit: 0b111111, 0b000001 → bits 0..12.
    let x = codes(1, 2, vec![63, 1]);
    assert_eq!(pack(Packing::Bitstream { bits: 6, signed: false }, &x).unwrap(), vec![0x7F, 0x00]);
}

#[test]
fn mlx_words() {
    // 4-bit codes 0..7 → one word 0x76543210.
    let x = codes(1, 8, (0..8).collect());
    let b = pack(Packing::MlxWords { bits: 4 }, &x).unwrap();
    assert_eq!(b, 0x7654_3210u32.to_le_bytes().to_vec());
    // 3-bit codes 0..7 = 24 bits: 0xFAC688, padded to a whole word.
    let b = pack(Packing::MlxWords { bits: 3 }, &x).unwrap();
    assert_eq!(b, 0x00FA_C688u32.to_le_bytes().to_vec());
    // 2-bit: element j at bit 2·(j mod 16) of word j/16.
    let x = codes(1, 32, (0..32).map(|j| j % 4).collect());
    let b = pack(Packing::MlxWords { bits: 2 }, &x).unwrap();
    assert_eq!(b, [0xE4u8; 8].to_vec());
    // Rows pad separately: 2 rows of 3 8-bit codes → 2 words.
    let x = codes(2, 3, vec![1, 2, 3, 4, 5, 6]);
    let b = pack(Packing::MlxWords { bits: 8 }, &x).unwrap();
    assert_eq!(b, vec![1, 2, 3, 0, 4, 5, 6, 0]);
    // 5-bit: 8 values per 5 bytes, straddling; 32 codes = 160 bits = 5 words.
    let x = codes(1, 32, (0..32).collect());
    let b = pack(Packing::MlxWords { bits: 5 }, &x).unwrap();
    assert_eq!(b.len(), 20);
    assert_eq!(&b[..5], &[0x20, 0x88, 0x41, 0x8A, 0x39]);
}

#[test]
fn vulkan_block_4k_8n() {
    // N = 8 rows, K = 4 columns, w(n, k) = n + 2k - 8: nibble (2j) of data[r] is r + 2j, nibble
    // (2j+1) is r + 4 + 2j.
    let q: Vec<i32> = (0..8).flat_map(|n| (0..4).map(move |k| n + 2 * k - 8)).collect();
    let x = codes(8, 4, q.clone());
    let b = pack(Packing::VulkanQ4Blocks, &x).unwrap();
    let words: Vec<u32> = b.chunks(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(words, vec![0xA684_6240, 0xB795_7351, 0xC8A6_8462, 0xD9B7_9573]);
    assert_eq!(unpack_codes(Packing::VulkanQ4Blocks, &b, 8, 4).unwrap(), q);

    // N = 3, K = 5: one N-block, two K-blocks; padding nibbles are 8 (q = 0).
    let x = codes(3, 5, vec![-8; 15]);
    let b = pack(Packing::VulkanQ4Blocks, &x).unwrap();
    assert_eq!(b.len(), 32);
    let words: Vec<u32> = b.chunks(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    // Block (0, 0): rows 0..3 real (low nibbles 0), rows 4..7 padding (8); row pair (3, 7) all padding.
    assert_eq!(&words[..4], &[0x8080_8080, 0x8080_8080, 0x8080_8080, 0x8888_8888]);
    // Block (0, 1): only k = 4 real.
    assert_eq!(&words[4..], &[0x8888_8880, 0x8888_8880, 0x8888_8880, 0x8888_8888]);

    // Block order is N-block major: (n8, k4) at byte 16·(n8·K4 + k4). N = 16, K = 8: K4 = 2.
    for (n, k) in [(0usize, 0usize), (3, 5), (9, 2), (15, 7), (12, 4)] {
        let mut q = vec![0; 16 * 8];
        q[n * 8 + k] = 7; // nibble 15
        let b = pack(Packing::VulkanQ4Blocks, &codes(16, 8, q)).unwrap();
        let changed: Vec<usize> = (0..b.len()).filter(|&i| b[i] != 0x88).collect();
        let (n8, k4, r, j) = (n / 8, k / 4, n % 4, k % 4);
        let nib = 2 * j + usize::from(n % 8 >= 4);
        let at = 16 * (n8 * 2 + k4) + 4 * r + nib / 2;
        assert_eq!(changed, vec![at], "w({n}, {k})");
        assert_eq!(b[at], if nib % 2 == 0 { 0x8F } else { 0xF8 });
    }
}

#[test]
fn unpacked_bytes() {
    let x = codes(1, 4, vec![-8, 7, -1, 0]);
    assert_eq!(pack(Packing::Unpacked { bits: 4, signed: true }, &x).unwrap(), vec![0xF8, 0x07, 0xFF, 0x00]);
    let x = codes(1, 2, vec![0, 255]);
    assert_eq!(pack(Packing::Unpacked { bits: 8, signed: false }, &x).unwrap(), vec![0, 255]);
}

#[test]
fn packed_lengths() {
    assert_eq!(packed_len(Packing::Unpacked { bits: 4, signed: true }, 3, 5).unwrap(), 15);
    assert_eq!(packed_len(Packing::Nibbles(Nibbles::LnEvenOb), 3, 5).unwrap(), 9);
    assert_eq!(packed_len(Packing::Bitstream { bits: 3, signed: false }, 3, 5).unwrap(), 6);
    assert_eq!(packed_len(Packing::MlxWords { bits: 3 }, 2, 32).unwrap(), 24);
    assert_eq!(packed_len(Packing::MlxWords { bits: 6 }, 2, 5).unwrap(), 8);
    assert_eq!(packed_len(Packing::GgmlQ4_0, 2, 64).unwrap(), 72);
    assert_eq!(packed_len(Packing::GgmlQ4_1, 2, 64).unwrap(), 80);
    assert_eq!(packed_len(Packing::GgmlQ8_0, 2, 64).unwrap(), 136);
    assert_eq!(packed_len(Packing::GgmlQ4K, 2, 512).unwrap(), 576);
    assert_eq!(packed_len(Packing::VulkanQ4Blocks, 9, 5).unwrap(), 64);
    assert!(packed_len(Packing::Unpacked { bits: 4, signed: true }, usize::MAX, 2).is_err());
}

// ---------------------------------------------------------------------------------------------
// Errors

#[test]
fn wrong_byte_length_names_expected_and_actual() {
    let cases = [
        (Packing::Unpacked { bits: 8, signed: true }, 2, 3, 6),
        (Packing::Nibbles(Nibbles::LnEvenTc), 2, 3, 4),
        (Packing::Bitstream { bits: 3, signed: true }, 2, 3, 3),
        (Packing::MlxWords { bits: 4 }, 2, 32, 32),
        (Packing::GgmlQ4_0, 1, 32, 18),
        (Packing::GgmlQ4_1, 1, 32, 20),
        (Packing::GgmlQ8_0, 1, 32, 34),
        (Packing::GgmlQ4K, 1, 256, 144),
        (Packing::VulkanQ4Blocks, 8, 4, 16),
    ];
    for (p, rows, cols, want) in cases {
        assert_eq!(packed_len(p, rows, cols).unwrap(), want);
        for got in [want - 1, want + 1] {
            let mut y = blank("w4g32-sym-ao", rows, cols);
            match unpack(p, &vec![0u8; got], &mut y) {
                Err(RefError::Shape { detail, .. }) => {
                    assert!(detail.contains(&format!("expected {want}")), "{p:?}: {detail}");
                    assert!(detail.contains(&format!("got {got}")), "{p:?}: {detail}");
                }
                other => panic!("{p:?} with {got} bytes: {other:?}"),
            }
        }
    }
}

#[test]
fn out_of_range_codes_name_the_index() {
    let cases = [
        (Packing::Unpacked { bits: 4, signed: true }, vec![0, 7, 8, 0], 2),
        (Packing::Unpacked { bits: 4, signed: false }, vec![0, 15, -1, 0], 2),
        (Packing::Nibbles(Nibbles::LnEvenOb), vec![0, -9, 0, 0], 1),
        (Packing::Bitstream { bits: 3, signed: true }, vec![-4, 3, 0, 4], 3),
        (Packing::MlxWords { bits: 2 }, vec![3, 0, 4, 0], 2),
        (Packing::VulkanQ4Blocks, vec![0, 0, 0, 8], 3),
    ];
    for (p, q, at) in cases {
        match pack(p, &codes(2, 2, q)) {
            Err(RefError::BadValue { index, .. }) => assert_eq!(index, at, "{p:?}"),
            other => panic!("{p:?}: {other:?}"),
        }
    }
    let mut x = codes(1, 32, vec![0; 32]);
    x.scales = vec![1.0];
    x.q[17] = 8;
    assert!(matches!(pack(Packing::GgmlQ4_0, &x), Err(RefError::BadValue { index: 17, .. })));
    x.q[17] = 16;
    x.zero_points = Some(vec![0.0]);
    assert!(matches!(pack(Packing::GgmlQ4_1, &x), Err(RefError::BadValue { index: 17, .. })));
    x.q[17] = -129;
    assert!(matches!(pack(Packing::GgmlQ8_0, &x), Err(RefError::BadValue { index: 17, .. })));
    // An unpacked byte out of range for its bit width.
    assert!(matches!(
        unpack_codes(Packing::Unpacked { bits: 4, signed: true }, &[0x00, 0x08], 1, 2),
        Err(RefError::BadValue { index: 1, .. })
    ));
}

#[test]
fn shapes_a_layout_cannot_take() {
    let x = codes(1, 40, vec![0; 40]);
    for p in [Packing::GgmlQ4_0, Packing::GgmlQ4_1, Packing::GgmlQ8_0] {
        let e = pack(p, &x).unwrap_err();
        assert!(matches!(e, RefError::GroupSize { group: 32, len: 40, .. }), "{e}");
        assert!(e.to_string().contains("group size 32 does not divide cols = 40"), "{e}");
    }
    let e = packed_len(Packing::GgmlQ4K, 2, 288).unwrap_err();
    assert!(e.to_string().contains("group size 256 does not divide cols = 288"), "{e}");
    let mut y = blank("q4_0", 1, 40);
    assert!(unpack(Packing::GgmlQ4_0, &[0u8; 18], &mut y).is_err());
    // Bit widths a layout does not take.
    assert!(packed_len(Packing::Unpacked { bits: 0, signed: true }, 1, 1).is_err());
    assert!(packed_len(Packing::Bitstream { bits: 9, signed: false }, 1, 1).is_err());
    let e = packed_len(Packing::MlxWords { bits: 7 }, 1, 32).unwrap_err();
    assert!(e.to_string().contains('7'), "{e}");
    // Codes that do not match the shape.
    let e = pack(Packing::Unpacked { bits: 8, signed: true }, &codes(2, 2, vec![0; 3])).unwrap_err();
    assert!(matches!(e, RefError::Shape { .. }), "{e}");
}

#[test]
fn empty_rows_of_huge_shapes_do_not_spin() {
    let rows = usize::MAX / 4;
    for p in [
        Packing::Nibbles(Nibbles::LnEvenOb),
        Packing::MlxWords { bits: 4 },
        Packing::VulkanQ4Blocks,
        Packing::Unpacked { bits: 8, signed: true },
        Packing::GgmlQ4_0,
    ] {
        assert_eq!(packed_len(p, rows, 0).unwrap(), 0);
        let mut y = blank("w4g32-sym-ao", rows, 0);
        unpack(p, &[], &mut y).unwrap();
        assert!(y.q.is_empty());
        assert!(pack(p, &y).unwrap().is_empty());
    }
}

#[test]
fn bad_padding_is_rejected() {
    // Odd row, pad nibble must encode q = 0.
    assert!(unpack_codes(Packing::Nibbles(Nibbles::LnEvenTc), &[0x10], 1, 1).is_err());
    assert_eq!(unpack_codes(Packing::Nibbles(Nibbles::LnEvenTc), &[0x01], 1, 1).unwrap(), vec![1]);
    assert!(unpack_codes(Packing::Nibbles(Nibbles::LnEvenOb), &[0x09], 1, 1).is_err());
    assert_eq!(unpack_codes(Packing::Nibbles(Nibbles::LnEvenOb), &[0x89], 1, 1).unwrap(), vec![1]);
    // Bitstream tail bits.
    assert!(unpack_codes(Packing::Bitstream { bits: 3, signed: false }, &[0xFF], 1, 2).is_err());
    assert_eq!(unpack_codes(Packing::Bitstream { bits: 3, signed: false }, &[0x3F], 1, 2).unwrap(), vec![7, 7]);
    // MLX word padding.
    assert!(unpack_codes(Packing::MlxWords { bits: 8 }, &[1, 2, 3, 4], 1, 3).is_err());
    // Vulkan padding nibble not 8.
    let mut b = pack(Packing::VulkanQ4Blocks, &codes(3, 4, vec![0; 12])).unwrap();
    assert!(unpack_codes(Packing::VulkanQ4Blocks, &b, 3, 4).is_ok());
    b[12] = 0x80; // word 3 = rows 3 and 7, both padding
    assert!(unpack_codes(Packing::VulkanQ4Blocks, &b, 3, 4).is_err());
}

#[test]
fn ggml_missing_or_inexact_qparams() {
    let mut x = codes(1, 32, vec![0; 32]);
    x.scales = vec![0.1]; // not an fp16 value
    let e = pack(Packing::GgmlQ4_0, &x).unwrap_err();
    assert!(e.to_string().contains("fp16"), "{e}");
    x.scales = vec![1.0];
    assert!(pack(Packing::GgmlQ4_1, &x).is_err()); // no zero_points
    x.scales = vec![];
    assert!(matches!(pack(Packing::GgmlQ4_0, &x), Err(RefError::Shape { .. })));
    let mut k = blank("q4_K", 1, 256);
    k.q = vec![0; 256];
    k.scales = vec![0.0; 8];
    k.zero_points = Some(vec![0.0; 8]);
    let e = pack(Packing::GgmlQ4K, &k).unwrap_err();
    assert!(e.to_string().contains("Q4KRaw"), "{e}");
    let raw = Q4KRaw { d: vec![1.0], dmin: vec![1.0], sc: vec![1; 8], m: vec![0; 8] };
    k.extra = Some(serde_json::to_value(&raw).unwrap());
    // scales (0) disagree with d·sc (1).
    assert!(pack(Packing::GgmlQ4K, &k).is_err());
    k.scales = vec![1.0; 8];
    assert!(pack(Packing::GgmlQ4K, &k).is_ok());
    let raw = Q4KRaw { d: vec![1.0], dmin: vec![1.0], sc: vec![64; 8], m: vec![0; 8] };
    k.extra = Some(serde_json::to_value(&raw).unwrap());
    k.scales = vec![64.0; 8];
    assert!(matches!(pack(Packing::GgmlQ4K, &k), Err(RefError::BadValue { .. })));
}

// ---------------------------------------------------------------------------------------------
// Through the catalogue

#[test]
fn ggml_quantize_pack_unpack_identical() -> Result<(), RefError> {
    for (name, cols) in [("q4_0", 64), ("q4_1", 64), ("q8_0", 96), ("q4_K", 512), ("q4_0@f16", 32), ("q4_1-fused", 64)]
    {
        for (seed, scale) in [(1u64, 1.0f32), (2, 1e-6), (3, 3e4), (4, 0.0)] {
            let rows = 3;
            let mut v = data(rows * cols, seed, scale);
            // An all-zero block, a constant block and a single outlier.
            v[..32].fill(0.0);
            v[32..64].fill(0.75);
            v[cols + 5] = 40.0 * scale.max(1.0);
            let s: Scheme = name.parse()?;
            let qz = s.quantize(&Matrix::new(rows, cols, v)?)?;
            let p = s.packing();
            let bytes = pack(p, &qz)?;
            assert_eq!(bytes.len(), packed_len(p, rows, cols)?);
            let mut y = Quantized {
                q: vec![],
                scales: vec![],
                scale_shape: [0, 0],
                zero_points: None,
                zero_point_shape: None,
                extra: None,
                ..qz.clone()
            };
            unpack(p, &bytes, &mut y)?;
            assert_eq!(y.q, qz.q, "{name}");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y.scales), bits(&qz.scales), "{name}");
            assert_eq!(y.scale_shape, qz.scale_shape, "{name}");
            assert_eq!(y.zero_points.as_deref().map(bits), qz.zero_points.as_deref().map(bits), "{name}");
            assert_eq!(y.zero_point_shape, qz.zero_point_shape, "{name}");
            assert_eq!(y.extra, qz.extra, "{name}");
            assert_eq!(bits(&s.dequantize(&y)?), bits(&s.dequantize(&qz)?), "{name}");
            assert_eq!(pack(p, &y)?, bytes, "{name}");
        }
    }
    Ok(())
}

#[test]
fn every_weight_scheme_packs_its_codes() -> Result<(), RefError> {
    for name in [
        "w4g32-sym-ao",
        "w4g32-asym-ao@bf16",
        "w8pc-sym-ao",
        "w3g32-sym-ao",
        "w4g32-symclip",
        "w8pc-symclip@f16",
        "w4g32-symclip-coreai",
        "w4g32-asym-coreml",
        "w8pc-asym-coreml",
        "w4g32-sym8",
        "w4g32-fzp@bf16",
        "w2g32-mlx-cpu",
        "w3g32-mlx-cpu",
        "w4g64-mlx-gpu",
        "w5g32-mlx-cpu",
        "w6g32-mlx-cpu",
        "w8g32-mlx-cpu",
        "pal3-pt",
        "pal6-pt-uniform",
        "pal1-pt",
        "8da4w-ao",
        "8da4w-xnn",
        "8da4w-vk",
    ] {
        let s: Scheme = name.parse()?;
        let (rows, cols) = (5, 64);
        let qz = s.quantize(&Matrix::new(rows, cols, data(rows * cols, 7, 0.3))?)?;
        let p = s.packing();
        let bytes = pack(p, &qz)?;
        assert_eq!(bytes.len(), packed_len(p, rows, cols)?, "{name}");
        let mut y = Quantized { q: vec![], ..qz.clone() };
        unpack(p, &bytes, &mut y)?;
        assert_eq!(y, qz, "{name}");
    }
    Ok(())
}

#[test]
fn q4_k_with_an_fp16_overflowing_scale_packs_and_unpacks() {
    // A super-block spanning ~2e8 has max_scale/63 beyond fp16's max: d is stored as +inf.
    let mut data = vec![0f32; 256];
    for (i, v) in data.iter_mut().enumerate() {
        *v = (i as f32 - 128.0) * 1.0e6;
    }
    let s: Scheme = "q4_K".parse().unwrap();
    let q = s.quantize(&Matrix::new(1, 256, data).unwrap()).unwrap();
    let raw: Q4KRaw = serde_json::from_value(q.extra.clone().unwrap()).unwrap();
    assert!(raw.d[0].is_infinite() || raw.dmin[0].is_infinite(), "d = {}, dmin = {}", raw.d[0], raw.dmin[0]);
    let bytes = pack(Packing::GgmlQ4K, &q).unwrap();
    let mut back = blank("q4_K", 1, 256);
    unpack(Packing::GgmlQ4K, &bytes, &mut back).unwrap();
    assert_eq!(back.q, q.q);
    let b: Q4KRaw = serde_json::from_value(back.extra.unwrap()).unwrap();
    assert_eq!((b.d[0].to_bits(), b.dmin[0].to_bits()), (raw.d[0].to_bits(), raw.dmin[0].to_bits()));
}

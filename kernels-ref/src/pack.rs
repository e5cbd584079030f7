//! Packed storage layouts of quantized codes (schemes.md §0.2, §8.11): what the bytes on disk or
//! in a GPU buffer look like for each framework, with exact round trips.
//!
//! [`pack`] turns a [`Quantized`] into its framework's bytes and [`unpack`] reads them back:
//! `unpack(p, &pack(p, &x)?, &mut y)` gives `y.q == x.q` (and, for the ggml blocks, which hold
//! their own scales, identical `scales` / `zero_points` / Q4_K `extra`) for every valid `x`.
//! [`packed_len`] says how many bytes a `[rows, cols]` tensor takes.
//!
//! Both directions are strict, so that a mis-sized, mis-shaped or corrupted buffer is reported
//! rather than read: codes out of range for the layout, a byte length that does not match the
//! shape exactly, a shape the layout cannot take (ggml rows that are not whole blocks), a scale
//! that is not an exact fp16 value, and padding that is not the layout's padding value (zero
//! bits, or the nibble of q = 0) are all errors. Nothing here panics on any input.

use crate::dtype::{f16_bits_to_f32, f32_to_f16_bits};
use crate::error::{RefError, Result};
use crate::scheme::ggml::Q4KRaw;
use crate::scheme::Quantized;
use serde::{Deserialize, Serialize};

/// Two 4-bit codes per byte, element `2i` in the low nibble (`LN=even`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Nibbles {
    /// Offset-binary: nibble = q + 8 (XNNPACK `convert_to_qc4w`, ExecuTorch Vulkan serialization).
    LnEvenOb,
    /// Two's complement: nibble = q & 0xF (torchao `Int4Tensor` / mslk `pack_int4`).
    LnEvenTc,
}

/// A packed layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "layout", rename_all = "snake_case")]
pub enum Packing {
    /// One byte per code (torchao `IntxUnpackedToInt8Tensor`): int8 two's complement, or uint8.
    Unpacked { bits: u8, signed: bool },
    /// Two 4-bit codes per byte along each row, `LN=even`; an odd row length is padded with q = 0.
    Nibbles(Nibbles),
    /// coremltools `pack_elements_into_bits`: a continuous LSB-first bitstream over the row-major
    /// tensor, `bits` per code, two's complement when signed; the last byte is zero-padded.
    Bitstream { bits: u8, signed: bool },
    /// MLX: per row, codes LSB-first in little-endian uint32 words (bits 3/5/6 straddle bytes the
    /// same way); unsigned codes.
    ///
    /// Element `j` of a row sits at bit `bits·j` of the row's bitstream (for 2/4/8 bits: bit
    /// `bits·(j mod 32/bits)` of word `j / (32/bits)`; for 3/5/6 bits MLX's "8 values per 3
    /// bytes" (5 bytes, resp. 4 values per 3 bytes) is the same stream). Each row is zero-padded
    /// to a whole number of words, `⌈cols·bits/32⌉`; the bytes are the little-endian words.
    MlxWords { bits: u8 },
    /// ggml `block_q4_0`: fp16 `d`, then 16 bytes with `LN=j / HN=j+16`, nibble = q + 8. 18 bytes / 32.
    GgmlQ4_0,
    /// ggml `block_q4_1`: fp16 `d`, fp16 `m`, 16 bytes `LN=j / HN=j+16`, unsigned. 20 bytes / 32.
    GgmlQ4_1,
    /// ggml `block_q8_0`: fp16 `d`, 32 int8. 34 bytes / 32.
    GgmlQ8_0,
    /// ggml `block_q4_K`: fp16 `d`, fp16 `dmin`, 12 bytes of 6-bit scales/mins, 128 bytes of codes
    /// (per 64-chunk: low nibbles elements 0..32, high nibbles 32..64). 144 bytes / 256.
    GgmlQ4K,
    /// ExecuTorch Vulkan's GPU repack of 4-bit weights into 4K×8N blocks (`pack_q4_linear_weight`).
    ///
    /// qdiff's layout of that buffer (the device runner uploads exactly these bytes). The weight is
    /// `[N, K]` = `[rows, cols]` with codes q in `[-8, 7]`. K is padded to `K4·4` (`K4 = ⌈K/4⌉`)
    /// and N to `N8·8` (`N8 = ⌈N/8⌉`), padding with q = 0 (nibble 8). Block `(n8, k4)` covers
    /// rows `n0 = 8·n8 .. n0+8` and columns `k0 = 4·k4 .. k0+4`, and is one `ivec4`: four
    /// little-endian u32 words `data[0..4]`, 16 bytes. Word `data[r]` holds 8 nibbles, nibble `i`
    /// at bits `4i..4i+4`: nibble `2j` is `w(n0+r, k0+j) + 8` and nibble `2j+1` is
    /// `w(n0+r+4, k0+j) + 8`, for `j = 0..4` (`create_packed_blocks`). Blocks are stored
    /// **N-block major**: block `(n8, k4)` is at byte `16·(n8·K4 + k4)`, i.e. for each N-block
    /// (n0 = 0, 8, 16, ...) all its K-blocks in order. This is ExecuTorch's buffer-storage
    /// `write_packed_block` (`t_packed_int4_weight[n8 * nblocks_K + k4]`; the texture variant is
    /// `imageStore(ivec2(k4, n8))`, the same order). A word of a padding row pair is `0x88888888`.
    /// Total `N8·K4·16` bytes.
    VulkanQ4Blocks,
}

/// `[lo, hi]` of a `bits`-wide code, two's complement when `signed`.
fn code_range(bits: u8, signed: bool) -> (i32, i32) {
    if signed {
        (-(1i32 << (bits - 1)), (1i32 << (bits - 1)) - 1)
    } else {
        (0, (1i32 << bits) - 1)
    }
}

fn op_name(kind: &str, p: Packing) -> String {
    let l = match p {
        Packing::Unpacked { bits, signed } => {
            format!("unpacked {}{bits}", if signed { "int" } else { "uint" })
        }
        Packing::Nibbles(Nibbles::LnEvenOb) => "nibbles LN=even offset-binary".into(),
        Packing::Nibbles(Nibbles::LnEvenTc) => "nibbles LN=even two's complement".into(),
        Packing::Bitstream { bits, signed } => {
            format!("{bits}-bit {} bitstream", if signed { "signed" } else { "unsigned" })
        }
        Packing::MlxWords { bits } => format!("MLX {bits}-bit uint32 words"),
        Packing::GgmlQ4_0 => "ggml block_q4_0".into(),
        Packing::GgmlQ4_1 => "ggml block_q4_1".into(),
        Packing::GgmlQ8_0 => "ggml block_q8_0".into(),
        Packing::GgmlQ4K => "ggml block_q4_K".into(),
        Packing::VulkanQ4Blocks => "Vulkan 4Kx8N int4 blocks".into(),
    };
    format!("{kind} ({l})")
}

fn mul(op: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| RefError::shape(op, format!("size {a} x {b} overflows")))
}

fn check_bits(op: &str, bits: u8, allowed: &[u8], what: &str) -> Result<()> {
    if allowed.contains(&bits) {
        Ok(())
    } else {
        Err(RefError::unsupported(op, format!("{what} take {allowed:?} bits, not {bits}")))
    }
}

const UNPACKED_BITS: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
const MLX_BITS: [u8; 6] = [2, 3, 4, 5, 6, 8];

/// Elements per ggml block of a layout and bytes per block.
fn ggml_block(p: Packing) -> Option<(usize, usize)> {
    match p {
        Packing::GgmlQ4_0 => Some((32, 18)),
        Packing::GgmlQ4_1 => Some((32, 20)),
        Packing::GgmlQ8_0 => Some((32, 34)),
        Packing::GgmlQ4K => Some((256, 144)),
        _ => None,
    }
}

fn packed_len_op(op: &str, p: Packing, rows: usize, cols: usize) -> Result<usize> {
    let n = mul(op, rows, cols)?;
    match p {
        Packing::Unpacked { bits, .. } => {
            check_bits(op, bits, &UNPACKED_BITS, "unpacked codes")?;
            Ok(n)
        }
        Packing::Nibbles(_) => mul(op, rows, cols.div_ceil(2)),
        Packing::Bitstream { bits, .. } => {
            check_bits(op, bits, &UNPACKED_BITS, "bitstreams")?;
            Ok(mul(op, n, bits as usize)?.div_ceil(8))
        }
        Packing::MlxWords { bits } => {
            check_bits(op, bits, &MLX_BITS, "MLX words")?;
            let words = mul(op, cols, bits as usize)?.div_ceil(32);
            mul(op, mul(op, rows, words)?, 4)
        }
        Packing::GgmlQ4_0 | Packing::GgmlQ4_1 | Packing::GgmlQ8_0 | Packing::GgmlQ4K => {
            let (qk, bytes) = ggml_block(p).unwrap_or((32, 18));
            if cols % qk != 0 {
                return Err(RefError::GroupSize {
                    op: format!("{op}: ggml blocks of {qk} run along rows"),
                    group: qk,
                    axis: "cols".into(),
                    len: cols,
                });
            }
            mul(op, n / qk, bytes)
        }
        Packing::VulkanQ4Blocks => mul(op, mul(op, rows.div_ceil(8), cols.div_ceil(4))?, 16),
    }
}

/// Bytes a `[rows, cols]` tensor takes in layout `p`.
///
/// Errors for bit widths the layout does not take (`Unpacked`/`Bitstream`: 1..=8, `MlxWords`:
/// 2, 3, 4, 5, 6, 8), for ggml shapes whose rows are not whole blocks (`cols % 32`, resp.
/// `% 256` for Q4_K), and for sizes that overflow `usize`.
pub fn packed_len(p: Packing, rows: usize, cols: usize) -> Result<usize> {
    packed_len_op("packed_len", p, rows, cols)
}

fn check_codes(op: &str, q: &[i32], lo: i32, hi: i32) -> Result<()> {
    match q.iter().position(|&c| c < lo || c > hi) {
        None => Ok(()),
        Some(i) => Err(RefError::BadValue {
            op: op.to_string(),
            what: format!("code (the layout holds {lo}..={hi})"),
            index: i,
            value: q[i] as f64,
        }),
    }
}

fn check_len(op: &str, what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(RefError::shape(op, format!("{what}: expected {want}, got {got}")))
    }
}

/// OR the low `bits` bits of `v` into `buf` at bit offset `bit`, LSB-first (`bits <= 8`).
fn put_bits(buf: &mut [u8], bit: usize, bits: u32, v: u32) {
    let (byte, sh) = (bit / 8, (bit % 8) as u32);
    let w = ((v & ((1 << bits) - 1)) as u16) << sh;
    buf[byte] |= w as u8;
    if sh + bits > 8 {
        buf[byte + 1] |= (w >> 8) as u8;
    }
}

/// `bits` bits of `buf` at bit offset `bit`, LSB-first (`bits <= 8`).
fn get_bits(buf: &[u8], bit: usize, bits: u32) -> u32 {
    let (byte, sh) = (bit / 8, (bit % 8) as u32);
    let mut w = buf[byte] as u16;
    if sh + bits > 8 {
        w |= (buf[byte + 1] as u16) << 8;
    }
    ((w >> sh) as u32) & ((1 << bits) - 1)
}

/// Whether every bit of `buf` from bit `used` on is zero.
fn tail_is_zero(buf: &[u8], used: usize) -> bool {
    let (full, rem) = (used / 8, used % 8);
    let mut start = full;
    if rem != 0 {
        match buf.get(full) {
            Some(&b) if b >> rem != 0 => return false,
            _ => start = full + 1,
        }
    }
    buf.get(start..).is_none_or(|t| t.iter().all(|&b| b == 0))
}

fn sign_extend(u: u32, bits: u8, signed: bool) -> i32 {
    if signed && u >= 1 << (bits - 1) {
        u as i32 - (1i32 << bits)
    } else {
        u as i32
    }
}

/// The fp16 bits of a stored scale that must be an exact fp16 value (NaN passes as fp16 NaN).
fn f16_exact(op: &str, what: &str, index: usize, x: f32) -> Result<u16> {
    let b = f32_to_f16_bits(x);
    if x.is_nan() || f16_bits_to_f32(b).to_bits() == x.to_bits() {
        Ok(b)
    } else {
        Err(RefError::BadValue {
            op: op.to_string(),
            what: format!("{what} (not an exact fp16 value)"),
            index,
            value: x as f64,
        })
    }
}

fn read_f16(bytes: &[u8], at: usize) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes([bytes[at], bytes[at + 1]]))
}

fn nib_enc(kind: Nibbles, q: i32) -> u8 {
    match kind {
        Nibbles::LnEvenOb => (q + 8) as u8 & 0xF,
        Nibbles::LnEvenTc => (q & 0xF) as u8,
    }
}

fn nib_dec(kind: Nibbles, n: u8) -> i32 {
    match kind {
        Nibbles::LnEvenOb => n as i32 - 8,
        Nibbles::LnEvenTc => sign_extend(n as u32, 4, true),
    }
}

/// Pack `[rows, cols]` int4 codes (q in `[-8, 7]`, already range-checked) as `LN=even` nibbles.
pub(crate) fn pack_nibbles(kind: Nibbles, q: &[i32], rows: usize, cols: usize) -> Vec<u8> {
    let rb = cols.div_ceil(2);
    let mut out = vec![0u8; rows * rb];
    for r in 0..if cols == 0 { 0 } else { rows } {
        let row = &q[r * cols..(r + 1) * cols];
        for (i, o) in out[r * rb..(r + 1) * rb].iter_mut().enumerate() {
            let lo = row[2 * i];
            let hi = row.get(2 * i + 1).copied().unwrap_or(0);
            *o = nib_enc(kind, lo) | (nib_enc(kind, hi) << 4);
        }
    }
    out
}

/// Unpack `LN=even` nibbles of a `[rows, cols]` tensor (the length already checked), rejecting a
/// row pad nibble that is not q = 0.
pub(crate) fn unpack_nibbles(op: &str, kind: Nibbles, bytes: &[u8], rows: usize, cols: usize) -> Result<Vec<i32>> {
    let rb = cols.div_ceil(2);
    let mut q = Vec::with_capacity(rows * cols);
    for r in 0..if cols == 0 { 0 } else { rows } {
        let row = &bytes[r * rb..(r + 1) * rb];
        for c in 0..cols {
            let b = row[c / 2];
            q.push(nib_dec(kind, if c % 2 == 0 { b & 0xF } else { b >> 4 }));
        }
        if cols % 2 == 1 {
            let pad = row[rb - 1] >> 4;
            if pad != nib_enc(kind, 0) {
                return Err(RefError::BadValue {
                    op: op.to_string(),
                    what: format!("pad nibble of row {r} (must encode q = 0, i.e. {:#x})", nib_enc(kind, 0)),
                    index: r * rb + rb - 1,
                    value: pad as f64,
                });
            }
        }
    }
    Ok(q)
}

/// `get_scale_min_k4`: the 6-bit `(sc, m)` of sub-block `j` from the 12 packed bytes.
fn get_scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// The 12 bytes of packed 6-bit `sc`/`m` (`sc`, `m` < 64) of one Q4_K super-block.
fn put_scale_min_k4(sc: &[u8], m: &[u8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = sc[j];
            s[j + 4] = m[j];
        } else {
            s[j + 4] = (sc[j] & 0xF) | ((m[j] & 0xF) << 4);
            s[j - 4] |= (sc[j] >> 4) << 6;
            s[j] |= (m[j] >> 4) << 6;
        }
    }
    s
}

fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits()
}

/// Pack a quantized tensor into its framework's bytes.
///
/// Uses `q.shape`, `q.q` and, for the ggml layouts, `q.scales` (fp16 `d`), `q.zero_points`
/// (Q4_1 `m`) and `q.extra` (Q4_K: the [`Q4KRaw`] `d`/`dmin`/`sc`/`m`, which must agree bit for
/// bit with `scales = d·sc` and `zero_points = dmin·m`). Codes must be in the layout's range:
/// `Unpacked`/`Bitstream` `bits`-wide (signed or unsigned), nibbles and Vulkan `[-8, 7]`, MLX
/// `0..2^bits`, Q4_0 `[-8, 7]`, Q4_1/Q4_K `0..=15`, Q8_0 `[-128, 127]` (the int8 the block holds;
/// ggml's quantizer writes `[-127, 127]`). Stored ggml scales must be exact fp16 values.
pub fn pack(p: Packing, q: &Quantized) -> Result<Vec<u8>> {
    let op = op_name("pack", p);
    let op = op.as_str();
    let [rows, cols] = q.shape;
    let len = packed_len_op(op, p, rows, cols)?;
    let n = rows * cols; // checked by packed_len_op
    check_len(op, &format!("codes for shape [{rows}, {cols}]"), q.q.len(), n)?;
    let codes = &q.q;
    match p {
        Packing::Unpacked { bits, signed } => {
            let (lo, hi) = code_range(bits, signed);
            check_codes(op, codes, lo, hi)?;
            Ok(codes.iter().map(|&c| c as i8 as u8).collect())
        }
        Packing::Nibbles(kind) => {
            check_codes(op, codes, -8, 7)?;
            Ok(pack_nibbles(kind, codes, rows, cols))
        }
        Packing::Bitstream { bits, signed } => {
            let (lo, hi) = code_range(bits, signed);
            check_codes(op, codes, lo, hi)?;
            let mut out = vec![0u8; len];
            for (i, &c) in codes.iter().enumerate() {
                put_bits(&mut out, i * bits as usize, bits as u32, c as u32);
            }
            Ok(out)
        }
        Packing::MlxWords { bits } => {
            let (lo, hi) = code_range(bits, false);
            check_codes(op, codes, lo, hi)?;
            let mut out = vec![0u8; len];
            let rb = len.checked_div(rows).unwrap_or(0);
            for r in 0..if cols == 0 { 0 } else { rows } {
                let row = &mut out[r * rb..(r + 1) * rb];
                for (j, &c) in codes[r * cols..(r + 1) * cols].iter().enumerate() {
                    put_bits(row, j * bits as usize, bits as u32, c as u32);
                }
            }
            Ok(out)
        }
        Packing::GgmlQ4_0 | Packing::GgmlQ4_1 | Packing::GgmlQ8_0 => pack_ggml32(op, p, q, len),
        Packing::GgmlQ4K => pack_q4k(op, q, len),
        Packing::VulkanQ4Blocks => {
            check_codes(op, codes, -8, 7)?;
            let (n8, k4) = (rows.div_ceil(8), cols.div_ceil(4));
            let nib = |n: usize, k: usize| -> u32 {
                if n < rows && k < cols {
                    (codes[n * cols + k] + 8) as u32
                } else {
                    8
                }
            };
            let mut out = vec![0u8; len];
            for nb in 0..if k4 == 0 { 0 } else { n8 } {
                for kb in 0..k4 {
                    let base = (nb * k4 + kb) * 16;
                    for r in 0..4 {
                        let mut word = 0u32;
                        for j in 0..4 {
                            let k = kb * 4 + j;
                            word |= nib(nb * 8 + r, k) << (8 * j);
                            word |= nib(nb * 8 + r + 4, k) << (8 * j + 4);
                        }
                        out[base + 4 * r..base + 4 * r + 4].copy_from_slice(&word.to_le_bytes());
                    }
                }
            }
            Ok(out)
        }
    }
}

fn pack_ggml32(op: &str, p: Packing, q: &Quantized, len: usize) -> Result<Vec<u8>> {
    let (qk, bb) = ggml_block(p).unwrap_or((32, 18));
    let nb = q.q.len() / qk;
    check_len(op, "stored scales (one fp16 d per 32-element block)", q.scales.len(), nb)?;
    let (lo, hi) = match p {
        Packing::GgmlQ4_0 => (-8, 7),
        Packing::GgmlQ4_1 => (0, 15),
        _ => (-128, 127),
    };
    check_codes(op, &q.q, lo, hi)?;
    let mins = if p == Packing::GgmlQ4_1 {
        let m = q.zero_points.as_deref().ok_or_else(|| {
            RefError::unsupported(op, "block_q4_1 needs the block minimums `m` in zero_points, which are absent")
        })?;
        check_len(op, "zero_points (one fp16 m per 32-element block)", m.len(), nb)?;
        Some(m)
    } else {
        None
    };
    let mut out = vec![0u8; len];
    for b in 0..nb {
        let blk = &mut out[b * bb..(b + 1) * bb];
        let codes = &q.q[b * qk..(b + 1) * qk];
        blk[0..2].copy_from_slice(&f16_exact(op, "scale d", b, q.scales[b])?.to_le_bytes());
        let qs = match mins {
            Some(m) => {
                blk[2..4].copy_from_slice(&f16_exact(op, "min m", b, m[b])?.to_le_bytes());
                &mut blk[4..]
            }
            None => &mut blk[2..],
        };
        match p {
            Packing::GgmlQ4_0 => {
                for j in 0..16 {
                    qs[j] = ((codes[j] + 8) as u8) | (((codes[j + 16] + 8) as u8) << 4);
                }
            }
            Packing::GgmlQ4_1 => {
                for j in 0..16 {
                    qs[j] = (codes[j] as u8) | ((codes[j + 16] as u8) << 4);
                }
            }
            _ => {
                for (o, &c) in qs.iter_mut().zip(codes) {
                    *o = c as i8 as u8;
                }
            }
        }
    }
    Ok(out)
}

fn q4k_raw(op: &str, q: &Quantized, nsb: usize) -> Result<Q4KRaw> {
    let extra = q.extra.as_ref().ok_or_else(|| {
        RefError::unsupported(op, "block_q4_K needs the raw d/dmin/sc/m (Q4KRaw) in `extra`, which is absent")
    })?;
    let raw: Q4KRaw = serde_json::from_value(extra.clone())
        .map_err(|e| RefError::unsupported(op, format!("`extra` is not a Q4KRaw (d, dmin, sc, m): {e}")))?;
    check_len(op, "Q4KRaw d (one per 256-element super-block)", raw.d.len(), nsb)?;
    check_len(op, "Q4KRaw dmin (one per 256-element super-block)", raw.dmin.len(), nsb)?;
    check_len(op, "Q4KRaw sc (one per 32-element sub-block)", raw.sc.len(), nsb * 8)?;
    check_len(op, "Q4KRaw m (one per 32-element sub-block)", raw.m.len(), nsb * 8)?;
    for (what, v) in [("Q4KRaw sc (6-bit)", &raw.sc), ("Q4KRaw m (6-bit)", &raw.m)] {
        if let Some(i) = v.iter().position(|&x| x > 63) {
            return Err(RefError::BadValue { op: op.to_string(), what: what.into(), index: i, value: v[i] as f64 });
        }
    }
    Ok(raw)
}

fn pack_q4k(op: &str, q: &Quantized, len: usize) -> Result<Vec<u8>> {
    let nsb = q.q.len() / 256;
    check_codes(op, &q.q, 0, 15)?;
    let raw = q4k_raw(op, q, nsb)?;
    check_len(op, "stored scales (d·sc per 32-element sub-block)", q.scales.len(), nsb * 8)?;
    let zps = q.zero_points.as_deref().ok_or_else(|| {
        RefError::unsupported(op, "block_q4_K needs the sub-block offsets dmin·m in zero_points, which are absent")
    })?;
    check_len(op, "zero_points (dmin·m per 32-element sub-block)", zps.len(), nsb * 8)?;
    let mut out = vec![0u8; len];
    for b in 0..nsb {
        let (d, dmin) = (raw.d[b], raw.dmin[b]);
        let sc = &raw.sc[b * 8..(b + 1) * 8];
        let m = &raw.m[b * 8..(b + 1) * 8];
        for j in 0..8 {
            let i = b * 8 + j;
            if !same_bits(q.scales[i], d * sc[j] as f32) || !same_bits(zps[i], dmin * m[j] as f32) {
                return Err(RefError::shape(
                    op,
                    format!(
                        "sub-block {i}: stored scale {} / offset {} disagree with Q4KRaw d·sc = {}·{} / dmin·m = {}·{}",
                        q.scales[i], zps[i], d, sc[j], dmin, m[j]
                    ),
                ));
            }
        }
        let blk = &mut out[b * 144..(b + 1) * 144];
        blk[0..2].copy_from_slice(&f16_exact(op, "super-block d", b, d)?.to_le_bytes());
        blk[2..4].copy_from_slice(&f16_exact(op, "super-block dmin", b, dmin)?.to_le_bytes());
        blk[4..16].copy_from_slice(&put_scale_min_k4(sc, m));
        let codes = &q.q[b * 256..(b + 1) * 256];
        for c in 0..4 {
            for l in 0..32 {
                blk[16 + 32 * c + l] = (codes[64 * c + l] as u8) | ((codes[64 * c + 32 + l] as u8) << 4);
            }
        }
    }
    Ok(out)
}

/// Unpack bytes into codes (and, for self-describing block formats, stored scales and offsets),
/// filling the fields of `into` (whose `scheme` and `shape` say what to expect).
///
/// Always sets `into.q`. The ggml layouts also set `scales` and `scale_shape` (`[rows, cols/32]`,
/// the fp16 `d`, or Q4_K's `d·sc` per 32-element sub-block), `zero_points` and
/// `zero_point_shape` (Q4_1 `m`, Q4_K `dmin·m`; `None` for Q4_0/Q8_0) and, for Q4_K, `extra`
/// (the [`Q4KRaw`]); other fields are left alone. The byte length must match `into.shape`
/// exactly ([`RefError::Shape`] names both), and padding must hold the layout's padding value.
pub fn unpack(p: Packing, bytes: &[u8], into: &mut Quantized) -> Result<()> {
    let op = op_name("unpack", p);
    let op = op.as_str();
    let [rows, cols] = into.shape;
    let len = packed_len_op(op, p, rows, cols)?;
    check_len(op, &format!("bytes for shape [{rows}, {cols}]"), bytes.len(), len)?;
    let n = rows * cols;
    match p {
        Packing::Unpacked { bits, signed } => {
            let (lo, hi) = code_range(bits, signed);
            let q: Vec<i32> = bytes.iter().map(|&b| if signed { b as i8 as i32 } else { b as i32 }).collect();
            check_codes(op, &q, lo, hi)?;
            into.q = q;
        }
        Packing::Nibbles(kind) => into.q = unpack_nibbles(op, kind, bytes, rows, cols)?,
        Packing::Bitstream { bits, signed } => {
            let b = bits as usize;
            if !tail_is_zero(bytes, n * b) {
                return Err(RefError::shape(op, format!("padding bits after the {} code bits are not zero", n * b)));
            }
            into.q = (0..n).map(|i| sign_extend(get_bits(bytes, i * b, bits as u32), bits, signed)).collect();
        }
        Packing::MlxWords { bits } => {
            let b = bits as usize;
            let rb = len.checked_div(rows).unwrap_or(0);
            let mut q = Vec::with_capacity(n);
            for r in 0..if cols == 0 { 0 } else { rows } {
                let row = &bytes[r * rb..(r + 1) * rb];
                if !tail_is_zero(row, cols * b) {
                    return Err(RefError::shape(
                        op,
                        format!("row {r}: padding bits of its last uint32 word are not zero"),
                    ));
                }
                q.extend((0..cols).map(|j| get_bits(row, j * b, bits as u32) as i32));
            }
            into.q = q;
        }
        Packing::GgmlQ4_0 | Packing::GgmlQ4_1 | Packing::GgmlQ8_0 => {
            let (qk, bb) = ggml_block(p).unwrap_or((32, 18));
            let nb = n / qk;
            let mut q = vec![0i32; n];
            let mut scales = vec![0f32; nb];
            let mut mins = vec![0f32; if p == Packing::GgmlQ4_1 { nb } else { 0 }];
            for b in 0..nb {
                let blk = &bytes[b * bb..(b + 1) * bb];
                let codes = &mut q[b * qk..(b + 1) * qk];
                scales[b] = read_f16(blk, 0);
                match p {
                    Packing::GgmlQ4_0 => {
                        for j in 0..16 {
                            codes[j] = (blk[2 + j] & 0xF) as i32 - 8;
                            codes[j + 16] = (blk[2 + j] >> 4) as i32 - 8;
                        }
                    }
                    Packing::GgmlQ4_1 => {
                        mins[b] = read_f16(blk, 2);
                        for j in 0..16 {
                            codes[j] = (blk[4 + j] & 0xF) as i32;
                            codes[j + 16] = (blk[4 + j] >> 4) as i32;
                        }
                    }
                    _ => {
                        for (c, &v) in codes.iter_mut().zip(&blk[2..]) {
                            *c = v as i8 as i32;
                        }
                    }
                }
            }
            let shape = [rows, cols / qk];
            into.q = q;
            into.scales = scales;
            into.scale_shape = shape;
            if p == Packing::GgmlQ4_1 {
                into.zero_points = Some(mins);
                into.zero_point_shape = Some(shape);
            } else {
                into.zero_points = None;
                into.zero_point_shape = None;
            }
        }
        Packing::GgmlQ4K => {
            let nsb = n / 256;
            let mut q = vec![0i32; n];
            let mut raw = Q4KRaw { d: vec![0.0; nsb], dmin: vec![0.0; nsb], sc: vec![0; nsb * 8], m: vec![0; nsb * 8] };
            let mut scales = vec![0f32; nsb * 8];
            let mut mins = vec![0f32; nsb * 8];
            for b in 0..nsb {
                let blk = &bytes[b * 144..(b + 1) * 144];
                let (d, dmin) = (read_f16(blk, 0), read_f16(blk, 2));
                raw.d[b] = d;
                raw.dmin[b] = dmin;
                for j in 0..8 {
                    let (sc, m) = get_scale_min_k4(j, &blk[4..16]);
                    raw.sc[b * 8 + j] = sc;
                    raw.m[b * 8 + j] = m;
                    // Exact in f32 (an fp16 significand times a 6-bit integer), as ggml::quantize.
                    scales[b * 8 + j] = d * sc as f32;
                    mins[b * 8 + j] = dmin * m as f32;
                }
                let codes = &mut q[b * 256..(b + 1) * 256];
                for c in 0..4 {
                    for l in 0..32 {
                        let v = blk[16 + 32 * c + l];
                        codes[64 * c + l] = (v & 0xF) as i32;
                        codes[64 * c + 32 + l] = (v >> 4) as i32;
                    }
                }
            }
            let extra = serde_json::to_value(&raw)
                .map_err(|e| RefError::unsupported(op, format!("cannot record Q4KRaw in `extra`: {e}")))?;
            let shape = [rows, cols / 32];
            into.q = q;
            into.scales = scales;
            into.scale_shape = shape;
            into.zero_points = Some(mins);
            into.zero_point_shape = Some(shape);
            into.extra = Some(extra);
        }
        Packing::VulkanQ4Blocks => {
            let (n8, k4) = (rows.div_ceil(8), cols.div_ceil(4));
            let mut q = vec![0i32; n];
            for nb in 0..if k4 == 0 { 0 } else { n8 } {
                for kb in 0..k4 {
                    let base = (nb * k4 + kb) * 16;
                    for r in 0..4 {
                        let at = base + 4 * r;
                        let word = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
                        for i in 0..8 {
                            let nib = (word >> (4 * i)) & 0xF;
                            let (nn, k) = (nb * 8 + r + 4 * (i % 2), kb * 4 + i / 2);
                            if nn < rows && k < cols {
                                q[nn * cols + k] = nib as i32 - 8;
                            } else if nib != 8 {
                                return Err(RefError::BadValue {
                                    op: op.to_string(),
                                    what: format!(
                                        "padding nibble (block n8={nb} k4={kb}, word {r}, nibble {i}; must be 8 = q 0)"
                                    ),
                                    index: at + i / 2,
                                    value: nib as f64,
                                });
                            }
                        }
                    }
                }
            }
            into.q = q;
        }
    }
    Ok(())
}

//! Quantized weights as a framework ships them to a CPU kernel: the codes packed once into the
//! scheme's own layout (`Scheme::packing`: unpacked int8, LN=even nibbles, coremltools bitstreams,
//! MLX uint32 words, ggml blocks that carry their own fp16 scales, ExecuTorch Vulkan's 4K×8N
//! blocks), and the qparams in their storage dtype (fp16/bf16 bit patterns, int8 zero-points).
//!
//! Kernels never see `Quantized::q`: they decode packed bytes row by row ([`PackedWeights::decode_row`])
//! and read scales through the grid accessors, which is where the nibble-swap and scale-transpose
//! faults live.

use super::bad_case;
use super::faults::Faults;
use super::num::{bf16_value, f16_value, Arith};
use crate::case::OpCase;
use crate::device::DeviceError;
use half::{bf16, f16};
use kernels_ref::dtype::DType;
use kernels_ref::pack::{pack, Nibbles, Packing};
use kernels_ref::scheme::{Family, Granularity, LutGranularity, PcsAxis, Quantized, W8da4wFlavor};

/// Float qparams in their storage dtype.
#[derive(Debug, Clone)]
pub(crate) enum FloatBuf {
    /// fp32 values.
    F32(Vec<f32>),
    /// fp16 bit patterns.
    F16(Vec<u16>),
    /// bf16 bit patterns.
    BF16(Vec<u16>),
}

impl FloatBuf {
    /// Store `values` in `dtype`; every value must be exact in it (a stored qparam is, by
    /// definition, a value of its storage dtype), else the reason.
    pub fn store(dtype: DType, values: &[f32], what: &str) -> Result<FloatBuf, String> {
        let inexact = |i: usize, v: f32| format!("{what}[{i}] = {v:e} is not an exact {dtype} value");
        match dtype {
            DType::F32 | DType::F64 => Ok(FloatBuf::F32(values.to_vec())),
            DType::F16 => values
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let h = f16::from_f32(v);
                    if v.is_nan() || h.to_f32().to_bits() == v.to_bits() {
                        Ok(h.to_bits())
                    } else {
                        Err(inexact(i, v))
                    }
                })
                .collect::<Result<_, _>>()
                .map(FloatBuf::F16),
            DType::BF16 => values
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let h = bf16::from_f32(v);
                    if v.is_nan() || h.to_f32().to_bits() == v.to_bits() {
                        Ok(h.to_bits())
                    } else {
                        Err(inexact(i, v))
                    }
                })
                .collect::<Result<_, _>>()
                .map(FloatBuf::BF16),
        }
    }

    /// Element `i` widened to fp32 (exact).
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            FloatBuf::F32(v) => v[i],
            FloatBuf::F16(v) => f16_value(v[i]),
            FloatBuf::BF16(v) => bf16_value(v[i]),
        }
    }
}

/// Zero-points / offsets in their storage dtype.
#[derive(Debug, Clone)]
pub(crate) enum ZpBuf {
    /// Integer zero-points (int8 storage).
    Int(Vec<i8>),
    /// Float offsets (MLX bias, Int4Tensor zeros).
    Float(FloatBuf),
}

/// How a code and its qparams become a value (each framework's dequantization arithmetic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Formula {
    /// `T(f32(q − zp) · s)`: torchao, coremltools, fbgemm sym8, 8da4w weights. The fp32 product
    /// is PyTorch's `promote(T, scale dtype)` product: exact for fp16/bf16 scales, one rounding
    /// for fp32 ones.
    IntZp,
    /// `T(T(s · q) + z)`: a multiply then an add, each in T (MLX `scale·q + bias`, Int4Tensor
    /// `q·s + zero`).
    MulAdd,
    /// ggml `q · d` in fp32 (Q4_0, Q8_0).
    GgmlScale,
    /// ggml `u · d + m` in fp32 (Q4_1).
    GgmlScaleMin,
    /// ggml Q4_K `(d·sc)·q − dmin·m` in fp32.
    GgmlK,
    /// coremltools `lut[idx]`, times the per-channel scale in T when there is one.
    Lut,
}

/// The shape of the scale grid relative to the weight rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grid {
    /// `[rows, groups]`.
    Group,
    /// `[rows, 1]`.
    Row,
    /// `[1, 1]`.
    Tensor,
}

/// Palettization LUTs and the optional per-channel scale.
#[derive(Debug, Clone)]
pub(crate) struct LutStore {
    /// `[n_luts, levels]` row-major, in the weight dtype.
    values: Vec<f32>,
    /// Entries per LUT.
    levels: usize,
    /// Weight rows sharing one LUT.
    rows_per_lut: usize,
    /// The per-channel scale (axis and values).
    pcs: Option<(PcsAxis, FloatBuf)>,
}

/// One quantized weight tensor `[rows, cols]` in its framework's packed layout.
#[derive(Debug, Clone)]
pub(crate) struct PackedWeights {
    /// Rows (output channels, or table rows for an embedding).
    pub rows: usize,
    /// Columns (the quantized axis, K).
    pub cols: usize,
    /// Groups per row of the qparam grid (ggml: blocks / sub-blocks of 32).
    pub groups: usize,
    /// Elements per group (the whole row for per-channel and per-tensor).
    pub group_len: usize,
    /// The dequantization arithmetic.
    pub formula: Formula,
    /// The compute dtype.
    pub t: Arith,
    packing: Packing,
    bytes: Vec<u8>,
    grid: Grid,
    scales: Option<FloatBuf>,
    zps: Option<ZpBuf>,
    lut: Option<LutStore>,
}

/// The storage dtype of the scales of a weight family (`None`: inside ggml blocks).
fn scale_dtype(family: &Family, t: DType) -> Option<DType> {
    match family {
        Family::W8da4w { flavor: W8da4wFlavor::Xnn, .. } => Some(DType::BF16),
        Family::Q4_0 { .. } | Family::Q4_1 { .. } | Family::Q8_0 | Family::Q4K { .. } | Family::ActQ8_0 { .. } => None,
        _ => Some(t),
    }
}

fn formula_of(family: &Family) -> Formula {
    match family {
        Family::Fzp { .. } | Family::Mlx { .. } => Formula::MulAdd,
        Family::Q4_0 { .. } | Family::Q8_0 | Family::ActQ8_0 { .. } => Formula::GgmlScale,
        Family::Q4_1 { .. } => Formula::GgmlScaleMin,
        Family::Q4K { .. } => Formula::GgmlK,
        Family::Pal { .. } => Formula::Lut,
        _ => Formula::IntZp,
    }
}

impl PackedWeights {
    /// Pack `wq` once into the scheme's layout and store its qparams in their dtypes, checking
    /// that the stored values fit the scheme's geometry.
    pub fn new(case: &OpCase, wq: &Quantized) -> Result<PackedWeights, DeviceError> {
        let scheme = case.scheme;
        if wq.scheme != scheme {
            return Err(bad_case(case, format!("wq was quantized with {} but the case runs {scheme}", wq.scheme)));
        }
        let [rows, cols] = wq.shape;
        if rows.checked_mul(cols) != Some(wq.q.len()) {
            return Err(bad_case(case, format!("wq holds {} codes for shape [{rows}, {cols}]", wq.q.len())));
        }
        let gran = scheme.granularity();
        gran.check(&scheme.to_string(), cols).map_err(DeviceError::Ref)?;
        let t = Arith(scheme.dtype);
        let formula = formula_of(&scheme.family);
        let packing = scheme.packing();
        let bytes = pack(packing, wq)?;
        let is_ggml = matches!(formula, Formula::GgmlScale | Formula::GgmlScaleMin | Formula::GgmlK);
        let (grid, groups, group_len) = if is_ggml {
            (Grid::Group, cols / 32, 32)
        } else {
            match gran {
                Granularity::Group(g) => (Grid::Group, cols / g, g),
                Granularity::Channel => (Grid::Row, 1, cols),
                Granularity::Tensor => (Grid::Tensor, 1, cols),
            }
        };
        let mut w = PackedWeights {
            rows,
            cols,
            groups,
            group_len,
            formula,
            t,
            packing,
            bytes,
            grid,
            scales: None,
            zps: None,
            lut: None,
        };
        match formula {
            Formula::IntZp | Formula::MulAdd => {
                let want = match grid {
                    Grid::Group => rows * groups,
                    Grid::Row => rows,
                    Grid::Tensor => 1,
                };
                if wq.scales.len() != want {
                    return Err(bad_case(
                        case,
                        format!(
                            "wq has {} scales, the [{rows}, {cols}] grid of {scheme} needs {want}",
                            wq.scales.len()
                        ),
                    ));
                }
                let sd = scale_dtype(&scheme.family, scheme.dtype).unwrap_or(DType::F32);
                w.scales = Some(FloatBuf::store(sd, &wq.scales, "scales").map_err(|e| bad_case(case, e))?);
                if let Some(z) = &wq.zero_points {
                    if z.len() != want {
                        return Err(bad_case(case, format!("wq has {} zero-points, expected {want}", z.len())));
                    }
                    w.zps = Some(if formula == Formula::IntZp {
                        let ints = z
                            .iter()
                            .enumerate()
                            .map(|(i, &v)| {
                                if v.fract() == 0.0 && (-128.0..=127.0).contains(&v) {
                                    Ok(v as i8)
                                } else {
                                    Err(bad_case(case, format!("zero_points[{i}] = {v} is not an int8 zero-point")))
                                }
                            })
                            .collect::<Result<Vec<i8>, _>>()?;
                        ZpBuf::Int(ints)
                    } else {
                        ZpBuf::Float(FloatBuf::store(scheme.dtype, z, "zero_points").map_err(|e| bad_case(case, e))?)
                    });
                }
            }
            Formula::Lut => w.lut = Some(Self::lut_store(case, wq)?),
            Formula::GgmlScale | Formula::GgmlScaleMin | Formula::GgmlK => {}
        }
        Ok(w)
    }

    fn lut_store(case: &OpCase, wq: &Quantized) -> Result<LutStore, DeviceError> {
        let Family::Pal { bits, pcs, lut: lg, .. } = case.scheme.family else {
            return Err(bad_case(case, "a LUT store for a scheme that is not palettized".to_string()));
        };
        let [rows, cols] = wq.shape;
        let levels = 1usize << bits;
        let values = wq.lut.as_ref().ok_or_else(|| bad_case(case, "palettized weights without a LUT".into()))?;
        let n_luts = wq.lut_shape.map_or(1, |s| s[0]).max(1);
        if rows % n_luts != 0 || values.len() != n_luts * levels {
            return Err(bad_case(
                case,
                format!("LUT of {} entries as {n_luts} LUTs of {levels} does not fit {rows} rows", values.len()),
            ));
        }
        if let LutGranularity::GroupedChannels(c) = lg {
            if rows != 0 && n_luts * c != rows {
                return Err(bad_case(
                    case,
                    format!("{n_luts} LUTs for {rows} rows, but the scheme shares one per {c}"),
                ));
            }
        }
        let values = match FloatBuf::store(case.scheme.dtype, values, "lut").map_err(|e| bad_case(case, e))? {
            // Kept widened: a lookup is a copy, the dtype only matters for the check above.
            FloatBuf::F32(v) => v,
            other => (0..values.len()).map(|i| other.get(i)).collect(),
        };
        let pcs = match pcs {
            None => None,
            Some(axis) => {
                let want = if axis == PcsAxis::Col { cols } else { rows };
                if wq.scales.len() != want {
                    return Err(bad_case(
                        case,
                        format!("per-channel scale has {} entries, expected {want}", wq.scales.len()),
                    ));
                }
                Some((axis, FloatBuf::store(case.scheme.dtype, &wq.scales, "scales").map_err(|e| bad_case(case, e))?))
            }
        };
        Ok(LutStore { values, levels, rows_per_lut: (rows / n_luts).max(1), pcs })
    }

    /// Decode the codes of row `n` from the packed bytes into `out` (`cols` long): the integer
    /// each formula uses (signed for two's-complement and offset-binary layouts, unsigned for
    /// MLX, Q4_1, Q4_K and LUT indices). With `swap`, every byte of 4-bit codes has its nibbles
    /// exchanged before it is decoded (the nibble-swap fault).
    pub fn decode_row(&self, n: usize, swap: bool, out: &mut [i32]) {
        let cols = self.cols;
        let b = &self.bytes;
        let sw = |x: u8| if swap { x.rotate_left(4) } else { x };
        match self.packing {
            Packing::Unpacked { signed, .. } => {
                let row = &b[n * cols..(n + 1) * cols];
                for (o, &x) in out.iter_mut().zip(row) {
                    *o = if signed { x as i8 as i32 } else { x as i32 };
                }
            }
            Packing::Nibbles(kind) => {
                let rb = cols.div_ceil(2);
                let row = &b[n * rb..(n + 1) * rb];
                for (c, o) in out.iter_mut().enumerate() {
                    let byte = sw(row[c / 2]);
                    let nib = if c % 2 == 0 { byte & 0xF } else { byte >> 4 };
                    *o = match kind {
                        Nibbles::LnEvenOb => nib as i32 - 8,
                        Nibbles::LnEvenTc => ((nib << 4) as i8 >> 4) as i32,
                    };
                }
            }
            Packing::Bitstream { bits, signed } => {
                let bits = bits as usize;
                decode_stream(b, n * cols * bits, bits, signed, swap, out);
            }
            Packing::MlxWords { bits } => {
                let bits = bits as usize;
                let rb = (cols * bits).div_ceil(32) * 4;
                decode_stream(&b[n * rb..(n + 1) * rb], 0, bits, false, swap, out);
            }
            Packing::GgmlQ4_0 | Packing::GgmlQ4_1 => {
                let (bb, qs_at, off) = if self.packing == Packing::GgmlQ4_0 { (18, 2, 8) } else { (20, 4, 0) };
                let nb = cols / 32;
                for j in 0..nb {
                    let blk = &b[(n * nb + j) * bb..(n * nb + j + 1) * bb];
                    let o = &mut out[j * 32..(j + 1) * 32];
                    for l in 0..16 {
                        let x = sw(blk[qs_at + l]);
                        o[l] = (x & 0xF) as i32 - off;
                        o[l + 16] = (x >> 4) as i32 - off;
                    }
                }
            }
            Packing::GgmlQ8_0 => {
                let nb = cols / 32;
                for j in 0..nb {
                    let blk = &b[(n * nb + j) * 34..(n * nb + j + 1) * 34];
                    for (o, &x) in out[j * 32..(j + 1) * 32].iter_mut().zip(&blk[2..]) {
                        *o = x as i8 as i32;
                    }
                }
            }
            Packing::GgmlQ4K => {
                let nsb = cols / 256;
                for s in 0..nsb {
                    let blk = &b[(n * nsb + s) * 144..(n * nsb + s + 1) * 144];
                    let o = &mut out[s * 256..(s + 1) * 256];
                    for c in 0..4 {
                        for l in 0..32 {
                            let x = sw(blk[16 + 32 * c + l]);
                            o[64 * c + l] = (x & 0xF) as i32;
                            o[64 * c + 32 + l] = (x >> 4) as i32;
                        }
                    }
                }
            }
            Packing::VulkanQ4Blocks => {
                let k4 = cols.div_ceil(4);
                let (n8, r) = (n / 8, n % 8);
                let (word, high) = (r % 4, r >= 4);
                for (c, o) in out.iter_mut().enumerate() {
                    let x = sw(b[16 * (n8 * k4 + c / 4) + 4 * word + c % 4]);
                    let nib = if high { x >> 4 } else { x & 0xF };
                    *o = nib as i32 - 8;
                }
            }
        }
    }

    /// Flat index into the scale grid of the (possibly transposed) cell of `(n, g)`.
    #[inline]
    fn scale_index(&self, n: usize, g: usize, faults: &Faults) -> usize {
        match self.grid {
            Grid::Group => {
                let (n, g) = faults.scale_cell(n, g, self.rows, self.groups);
                n * self.groups + g
            }
            Grid::Row => n,
            Grid::Tensor => 0,
        }
    }

    /// The stored scale of group `g` of row `n` (affine formulas), read through the faults.
    #[inline]
    pub fn scale(&self, n: usize, g: usize, faults: &Faults) -> f32 {
        self.scales.as_ref().map_or(0.0, |s| s.get(self.scale_index(n, g, faults)))
    }

    /// The zero-point (integer formulas) or offset (float formulas) of group `g` of row `n`.
    #[inline]
    pub fn zero(&self, n: usize, g: usize) -> f32 {
        let i = self.scale_index(n, g, &Faults::NONE);
        match &self.zps {
            None => 0.0,
            Some(ZpBuf::Int(z)) => z[i] as f32,
            Some(ZpBuf::Float(z)) => z.get(i),
        }
    }

    /// The integer zero-point of group `g` of row `n` (0 for symmetric schemes).
    #[inline]
    pub fn int_zero(&self, n: usize, g: usize) -> i32 {
        match &self.zps {
            Some(ZpBuf::Int(z)) => z[self.scale_index(n, g, &Faults::NONE)] as i32,
            _ => 0,
        }
    }

    /// ggml: the block holding group `g` of row `n` (Q4_0/Q4_1/Q8_0: 32-element blocks).
    #[inline]
    fn ggml_block(&self, n: usize, g: usize, bytes_per_block: usize) -> &[u8] {
        let i = n * self.groups + g;
        &self.bytes[i * bytes_per_block..(i + 1) * bytes_per_block]
    }

    /// ggml: `(scale, min)` of 32-element group `g` of row `n`, read from the packed blocks: `d`
    /// (and Q4_1's `m`) as fp16, Q4_K's `d·sc` and `dmin·m` from the super-block. With the
    /// scale-transpose fault the scale comes from the transposed cell, the min from its own.
    pub fn ggml_params(&self, n: usize, g: usize, faults: &Faults) -> (f32, f32) {
        let (sn, sg) = faults.scale_cell(n, g, self.rows, self.groups);
        let fp16_at = |blk: &[u8], at: usize| f16_value(u16::from_le_bytes([blk[at], blk[at + 1]]));
        match self.packing {
            Packing::GgmlQ4_0 => (fp16_at(self.ggml_block(sn, sg, 18), 0), 0.0),
            Packing::GgmlQ8_0 => (fp16_at(self.ggml_block(sn, sg, 34), 0), 0.0),
            Packing::GgmlQ4_1 => (fp16_at(self.ggml_block(sn, sg, 20), 0), fp16_at(self.ggml_block(n, g, 20), 2)),
            Packing::GgmlQ4K => {
                let per_row = self.cols / 256;
                let sub = |n: usize, g: usize| {
                    let i = n * per_row + g / 8;
                    (&self.bytes[i * 144..(i + 1) * 144], g % 8)
                };
                let (blk, j) = sub(sn, sg);
                let (sc, _) = scale_min_k4(j, &blk[4..16]);
                let scale = fp16_at(blk, 0) * sc as f32;
                let (blk, j) = sub(n, g);
                let (_, m) = scale_min_k4(j, &blk[4..16]);
                (scale, fp16_at(blk, 2) * m as f32)
            }
            _ => (0.0, 0.0),
        }
    }

    /// Palettization: the value of index `idx` in row `n`, column `c` (times the per-channel
    /// scale in T when there is one).
    #[inline]
    pub fn lut_value(&self, n: usize, c: usize, idx: i32) -> f32 {
        let Some(l) = &self.lut else { return 0.0 };
        let v = l.values[(n / l.rows_per_lut) * l.levels + idx as usize];
        match &l.pcs {
            None => v,
            Some((PcsAxis::Col, s)) => self.t.mul(s.get(c), v),
            Some((PcsAxis::Row, s)) => self.t.mul(s.get(n), v),
        }
    }
}

/// Decode `out.len()` codes of `bits` each from an LSB-first bitstream starting at bit `start`.
/// Widths that divide a byte (1, 2, 4, 8) starting on a byte boundary never straddle bytes and
/// take a shift-and-mask loop; 3, 5, 6 bits (and odd starts) go through [`get_bits`].
fn decode_stream(buf: &[u8], start: usize, bits: usize, signed: bool, swap: bool, out: &mut [i32]) {
    if 8 % bits == 0 && start % 8 == 0 {
        let (per, mask) = (8 / bits, (1u32 << bits) - 1);
        for (codes, &byte) in out.chunks_mut(per).zip(&buf[start / 8..]) {
            let mut v = if swap { byte.rotate_left(4) } else { byte } as u32;
            for o in codes {
                *o = sign_extend(v & mask, bits, signed);
                v >>= bits;
            }
        }
    } else {
        for (c, o) in out.iter_mut().enumerate() {
            *o = sign_extend(get_bits(buf, start + c * bits, bits, swap), bits, signed);
        }
    }
}

/// `bits` (≤ 8) bits at bit offset `bit` of an LSB-first stream, each byte read with its nibbles
/// swapped when `swap` (the nibble-swap fault, only ever set for 4-bit codes).
#[inline]
fn get_bits(buf: &[u8], bit: usize, bits: usize, swap: bool) -> u32 {
    let rd = |i: usize| {
        let x = buf.get(i).copied().unwrap_or(0);
        if swap {
            x.rotate_left(4)
        } else {
            x
        }
    };
    let (byte, sh) = (bit / 8, bit % 8);
    let mut w = rd(byte) as u16;
    if sh + bits > 8 {
        w |= (rd(byte + 1) as u16) << 8;
    }
    ((w >> sh) as u32) & ((1u32 << bits) - 1)
}

#[inline]
fn sign_extend(u: u32, bits: usize, signed: bool) -> i32 {
    if signed && u >= 1 << (bits - 1) {
        u as i32 - (1i32 << bits)
    } else {
        u as i32
    }
}

/// ggml `get_scale_min_k4`: the 6-bit `(sc, m)` of sub-block `j` from the 12 packed bytes.
#[inline]
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

//! Quantized weights as a framework ships them to a CPU kernel: the codes packed once into the
//! scheme's own layout (`Scheme::packing`: unpacked int8, LN=even nibbles, coremltools bitstreams,
//! MLX uint32 words, ggml blocks that carry their own fp16 scales, ExecuTorch Vulkan's 4K×8N
//! blocks), and the qparams in their storage dtype (fp16/bf16 bit patterns, int8 zero-points).
//!
//! Kernels never see `Quantized::q`: they decode packed bytes row by row ([`PackedWeights::decode_row`])
//! and read scales through the grid accessors, which is where the nibble-swap and scale-transpose
//! faults live. A model's linears, which run without faults, decode the common layouts in one
//! pass straight to values ([`PackedWeights::dequant_row_fused`], the same bits).

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

/// Why a quantized tensor could not be packed: the reference refused it (bad geometry, a
/// packing that does not fit), or its stored values do not fit the scheme (the detail says how).
#[derive(Debug)]
pub(crate) enum PackError {
    /// kernels-ref's granularity check or packer refused the tensor.
    Ref(kernels_ref::RefError),
    /// The stored qparams, zero-points or LUT do not fit the scheme's grid or dtypes.
    Bad(String),
}

impl From<kernels_ref::RefError> for PackError {
    fn from(e: kernels_ref::RefError) -> Self {
        PackError::Ref(e)
    }
}

impl std::fmt::Display for PackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PackError::Ref(e) => write!(f, "{e}"),
            PackError::Bad(s) => f.write_str(s),
        }
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
        Self::from_quantized(wq).map_err(|e| match e {
            PackError::Ref(r) => DeviceError::Ref(r),
            PackError::Bad(detail) => bad_case(case, detail),
        })
    }

    /// [`new`](Self::new) without a case: pack `wq` with its own scheme (`wq.scheme`), as a
    /// model's weights are packed once when it is loaded.
    pub fn from_quantized(wq: &Quantized) -> Result<PackedWeights, PackError> {
        let scheme = wq.scheme;
        let [rows, cols] = wq.shape;
        if rows.checked_mul(cols) != Some(wq.q.len()) {
            return Err(PackError::Bad(format!("wq holds {} codes for shape [{rows}, {cols}]", wq.q.len())));
        }
        let gran = scheme.granularity();
        gran.check(&scheme.to_string(), cols)?;
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
                    return Err(PackError::Bad(format!(
                        "wq has {} scales, the [{rows}, {cols}] grid of {scheme} needs {want}",
                        wq.scales.len()
                    )));
                }
                let sd = scale_dtype(&scheme.family, scheme.dtype).unwrap_or(DType::F32);
                w.scales = Some(FloatBuf::store(sd, &wq.scales, "scales").map_err(PackError::Bad)?);
                if let Some(z) = &wq.zero_points {
                    if z.len() != want {
                        return Err(PackError::Bad(format!("wq has {} zero-points, expected {want}", z.len())));
                    }
                    w.zps = Some(if formula == Formula::IntZp {
                        let ints = z
                            .iter()
                            .enumerate()
                            .map(|(i, &v)| {
                                if v.fract() == 0.0 && (-128.0..=127.0).contains(&v) {
                                    Ok(v as i8)
                                } else {
                                    Err(PackError::Bad(format!("zero_points[{i}] = {v} is not an int8 zero-point")))
                                }
                            })
                            .collect::<Result<Vec<i8>, _>>()?;
                        ZpBuf::Int(ints)
                    } else {
                        ZpBuf::Float(FloatBuf::store(scheme.dtype, z, "zero_points").map_err(PackError::Bad)?)
                    });
                }
            }
            Formula::Lut => w.lut = Some(Self::lut_store(wq).map_err(PackError::Bad)?),
            Formula::GgmlScale | Formula::GgmlScaleMin | Formula::GgmlK => {}
        }
        Ok(w)
    }

    fn lut_store(wq: &Quantized) -> Result<LutStore, String> {
        let scheme = wq.scheme;
        let Family::Pal { bits, pcs, lut: lg, .. } = scheme.family else {
            return Err("a LUT store for a scheme that is not palettized".to_string());
        };
        let [rows, cols] = wq.shape;
        let levels = 1usize << bits;
        let values = wq.lut.as_ref().ok_or_else(|| "palettized weights without a LUT".to_string())?;
        let n_luts = wq.lut_shape.map_or(1, |s| s[0]).max(1);
        if rows % n_luts != 0 || values.len() != n_luts * levels {
            return Err(format!(
                "LUT of {} entries as {n_luts} LUTs of {levels} does not fit {rows} rows",
                values.len()
            ));
        }
        if let LutGranularity::GroupedChannels(c) = lg {
            if rows != 0 && n_luts * c != rows {
                return Err(format!("{n_luts} LUTs for {rows} rows, but the scheme shares one per {c}"));
            }
        }
        let values = match FloatBuf::store(scheme.dtype, values, "lut")? {
            // Kept widened: a lookup is a copy, the dtype only matters for the check above.
            FloatBuf::F32(v) => v,
            other => (0..values.len()).map(|i| other.get(i)).collect(),
        };
        let pcs = match pcs {
            None => None,
            Some(axis) => {
                let want = if axis == PcsAxis::Col { cols } else { rows };
                if wq.scales.len() != want {
                    return Err(format!("per-channel scale has {} entries, expected {want}", wq.scales.len()));
                }
                Some((axis, FloatBuf::store(scheme.dtype, &wq.scales, "scales")?))
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

    /// The integer codes of row `n` as i8 (`cols` long), straight from the packed bytes, for the
    /// layouts 8da4w weights use (torchao's int8 codes, XNNPACK's and fbgemm's nibbles): what
    /// [`decode_row`](Self::decode_row) gives without the nibble-swap fault, cast to i8, in one
    /// pass that vectorizes. Returns `false`, writing nothing, for any other layout.
    #[inline(always)]
    pub fn decode_row_i8(&self, n: usize, out: &mut [i8]) -> bool {
        let cols = self.cols;
        let b = &self.bytes;
        match self.packing {
            Packing::Unpacked { .. } => {
                out[..cols].iter_mut().zip(&b[n * cols..(n + 1) * cols]).for_each(|(o, &x)| *o = x as i8);
                true
            }
            Packing::Nibbles(kind) => {
                let rb = cols.div_ceil(2);
                let row = &b[n * rb..n * rb + cols / 2];
                let nib = |v: u8| match kind {
                    Nibbles::LnEvenOb => v as i8 - 8,
                    Nibbles::LnEvenTc => ((v << 4) as i8) >> 4,
                };
                for (pair, &x) in out[..cols].chunks_exact_mut(2).zip(row) {
                    pair[0] = nib(x & 0xF);
                    pair[1] = nib(x >> 4);
                }
                if cols % 2 == 1 {
                    out[cols - 1] = nib(b[n * rb + cols / 2] & 0xF);
                }
                true
            }
            _ => false,
        }
    }

    /// Bytes the weights occupy as stored: packed codes (with the ggml blocks' own scales),
    /// scales and zero-points in their storage dtypes, LUTs in the weight dtype and their
    /// per-channel scales. What a kernel reading the whole tensor must move.
    pub fn stored_bytes(&self) -> u64 {
        let t_bytes = match self.t.0 {
            DType::F16 | DType::BF16 => 2,
            DType::F32 => 4,
            DType::F64 => 8,
        };
        let floats = |b: &FloatBuf| match b {
            FloatBuf::F32(v) => 4 * v.len(),
            FloatBuf::F16(v) | FloatBuf::BF16(v) => 2 * v.len(),
        };
        let scales = self.scales.as_ref().map_or(0, floats);
        let zps = match &self.zps {
            None => 0,
            Some(ZpBuf::Int(z)) => z.len(),
            Some(ZpBuf::Float(f)) => floats(f),
        };
        let lut =
            self.lut.as_ref().map_or(0, |l| t_bytes * l.values.len() + l.pcs.as_ref().map_or(0, |(_, f)| floats(f)));
        (self.bytes.len() + scales + zps + lut) as u64
    }

    /// Appends the `groups` scales (widened to fp32) and integer zero-points (0 for symmetric
    /// schemes) of row `n`, in group order, without faults: what [`scale`](Self::scale) and
    /// [`int_zero`](Self::int_zero) give, read a row at a time. Returns whether the scheme has
    /// zero-points at all.
    pub fn row_qparams(&self, n: usize, scales: &mut Vec<f32>, zeros: &mut Vec<i32>) -> bool {
        let cells = match self.grid {
            Grid::Group => n * self.groups..(n + 1) * self.groups,
            Grid::Row => n..n + 1,
            Grid::Tensor => 0..1,
        };
        // A per-row or per-tensor grid has one cell for the whole row: `groups` is 1 there.
        match &self.scales {
            Some(FloatBuf::F32(v)) => scales.extend_from_slice(&v[cells.clone()]),
            Some(FloatBuf::F16(v)) => scales.extend(v[cells.clone()].iter().map(|&b| f16_value(b))),
            Some(FloatBuf::BF16(v)) => scales.extend(v[cells.clone()].iter().map(|&b| bf16_value(b))),
            None => scales.extend(cells.clone().map(|_| 0.0)),
        }
        match &self.zps {
            Some(ZpBuf::Int(z)) => {
                zeros.extend(z[cells].iter().map(|&v| v as i32));
                true
            }
            _ => {
                zeros.extend(cells.map(|_| 0));
                false
            }
        }
    }

    /// The packing of the codes.
    #[inline]
    pub fn packing(&self) -> Packing {
        self.packing
    }

    /// The packed bytes (codes, and the ggml blocks' own scales), rows in order.
    #[inline]
    pub fn packed_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Row `n` dequantized into `out` (`cols` long) straight from the packed bytes, in one pass,
    /// for the layouts whole models mostly run (torchao's int8 codes, ggml's Q4_0, Q4_1, Q8_0
    /// and Q4_K blocks, MLX's 4-bit words in f32): the values are bit for bit those of
    /// `dequant::dequant_row` without faults (the same operations on the same operands; a unit
    /// test compares them), but the codes never go through an `i32` buffer, so the loops
    /// vectorize. Returns `false`, writing nothing, for any other layout or formula.
    #[inline(always)]
    pub fn dequant_row_fused(&self, n: usize, out: &mut [f32]) -> bool {
        let (cols, gl) = (self.cols, self.group_len);
        let b = &self.bytes;
        let fp16_at = |blk: &[u8], at: usize| f16_bits_value(u16::from_le_bytes([blk[at], blk[at + 1]]));
        match (self.packing, self.formula) {
            (Packing::Unpacked { signed, .. }, Formula::IntZp) if gl > 0 => {
                let row = &b[n * cols..(n + 1) * cols];
                for (g, (o, codes)) in out[..cols].chunks_exact_mut(gl).zip(row.chunks_exact(gl)).enumerate() {
                    let (s, z) = (self.scale(n, g, &Faults::NONE), self.int_zero(n, g));
                    if signed {
                        o.iter_mut().zip(codes).for_each(|(o, &c)| *o = (c as i8 as i32 - z) as f32 * s);
                    } else {
                        o.iter_mut().zip(codes).for_each(|(o, &c)| *o = (c as i32 - z) as f32 * s);
                    }
                }
                if self.t.0 != DType::F32 {
                    out[..cols].iter_mut().for_each(|v| *v = self.t.round(*v));
                }
                true
            }
            (Packing::GgmlQ4_0, Formula::GgmlScale) | (Packing::GgmlQ4_1, Formula::GgmlScaleMin) => {
                let q4_1 = self.packing == Packing::GgmlQ4_1;
                let (bb, qs_at) = if q4_1 { (20, 4) } else { (18, 2) };
                let row = &b[n * (cols / 32) * bb..(n + 1) * (cols / 32) * bb];
                for (blk, o) in row.chunks_exact(bb).zip(out[..cols].chunks_exact_mut(32)) {
                    // Q4_0 adds −0.0, which changes no value (not even a zero's sign): one loop
                    // for both formats.
                    let (d, m, off) =
                        if q4_1 { (fp16_at(blk, 0), fp16_at(blk, 2), 0) } else { (fp16_at(blk, 0), -0.0, 8) };
                    let qs: &[u8; 16] = blk[qs_at..qs_at + 16].try_into().expect("16 bytes of nibbles");
                    nibble_block(qs, off, d, m, o.try_into().expect("32 values"));
                }
                true
            }
            (Packing::GgmlQ8_0, Formula::GgmlScale) => {
                let row = &b[n * (cols / 32) * 34..(n + 1) * (cols / 32) * 34];
                for (blk, o) in row.chunks_exact(34).zip(out[..cols].chunks_exact_mut(32)) {
                    let d = fp16_at(blk, 0);
                    o.iter_mut().zip(&blk[2..]).for_each(|(o, &x)| *o = x as i8 as i32 as f32 * d);
                }
                true
            }
            (Packing::GgmlQ4K, Formula::GgmlK) => {
                let nsb = cols / 256;
                for s in 0..nsb {
                    let blk = &b[(n * nsb + s) * 144..(n * nsb + s + 1) * 144];
                    for c in 0..4 {
                        let qs = &blk[16 + 32 * c..16 + 32 * (c + 1)];
                        let (d0, m0) = self.ggml_params(n, s * 8 + 2 * c, &Faults::NONE);
                        let (d1, m1) = self.ggml_params(n, s * 8 + 2 * c + 1, &Faults::NONE);
                        let (lo, hi) = out[s * 256 + 64 * c..s * 256 + 64 * (c + 1)].split_at_mut(32);
                        lo.iter_mut().zip(qs).for_each(|(l, &x)| *l = d0 * (x & 0xF) as i32 as f32 - m0);
                        hi.iter_mut().zip(qs).for_each(|(h, &x)| *h = d1 * (x >> 4) as i32 as f32 - m1);
                    }
                }
                true
            }
            (Packing::MlxWords { bits: 4 }, Formula::MulAdd) if self.t.0 == DType::F32 && gl % 2 == 0 && gl > 0 => {
                let rb = (cols * 4).div_ceil(32) * 4;
                let row = &b[n * rb..n * rb + cols / 2];
                for (g, (o, bytes)) in out[..cols].chunks_exact_mut(gl).zip(row.chunks_exact(gl / 2)).enumerate() {
                    let (s, z) = (self.scale(n, g, &Faults::NONE), self.zero(n, g));
                    for (pair, &x) in o.chunks_exact_mut(2).zip(bytes) {
                        pair[0] = s * (x & 0xF) as i32 as f32 + z;
                        pair[1] = s * (x >> 4) as i32 as f32 + z;
                    }
                }
                true
            }
            _ => false,
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

/// The value of fp16 bits, by bit manipulation (exact; NaNs quieted as F16C and `half` do), so
/// that it inlines into the fused decode loops instead of calling out per block.
#[inline(always)]
fn f16_bits_value(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let (exp, man) = (((h >> 10) & 0x1F) as u32, (h & 0x3FF) as u32);
    match exp {
        // Zero and subnormals: man · 2^-24, exact in f32.
        0 => f32::from_bits((man as f32 * (1.0 / 16_777_216.0)).to_bits() | sign),
        0x1F if man == 0 => f32::from_bits(sign | 0x7F80_0000),
        0x1F => f32::from_bits(sign | 0x7FC0_0000 | (man << 13)),
        _ => f32::from_bits(sign | ((exp + 112) << 23) | (man << 13)),
    }
}

/// One ggml block of 32 nibbles (low nibbles first, then high): `(q − off)·d + m` in f32.
#[inline(always)]
fn nibble_block(qs: &[u8; 16], off: i32, d: f32, m: f32, out: &mut [f32; 32]) {
    for l in 0..16 {
        out[l] = ((qs[l] & 0xF) as i32 - off) as f32 * d + m;
        out[l + 16] = ((qs[l] >> 4) as i32 - off) as f32 * d + m;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The inline fp16 conversion of the fused decode is `half`'s, for every bit pattern.
    #[test]
    fn f16_bits_value_is_exact() {
        for h in 0..=u16::MAX {
            let (got, want) = (f16_bits_value(h), f16_value(h));
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{h:#06x}: {got:e} vs {want:e}"
            );
        }
    }
}

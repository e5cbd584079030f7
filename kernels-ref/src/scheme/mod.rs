//! The scheme catalogue of schemes.md §7: typed values parsed from and printed to their names,
//! each with `choose_qparams + quantize` ([`Scheme::quantize`]), [`Scheme::dequantize`] and a packed
//! storage layout ([`Scheme::packing`], see [`crate::pack`]).
//!
//! Families live one per file: [`affine`] (torchao, coremltools, coreai-opt, fbgemm: one engine
//! parameterized as schemes.md §9 recommends), [`act`] (dynamic per-token int8 activations of
//! torchao, PyTorch decomposed, ExecuTorch portable, XNNPACK and Vulkan), [`mlx`], [`ggml`] and
//! [`pal`] (coremltools palettization). The parsing and printing of names is in [`name`].

pub mod act;
pub mod affine;
pub mod ggml;
pub mod mlx;
pub mod name;
pub mod pal;

use crate::dtype::DType;
use crate::error::{RefError, Result};
use crate::pack::Packing;
use crate::tensor::Matrix;
use serde::{Deserialize, Serialize};
use std::fmt;

pub use act::ActFlavor;
pub use affine::AffineParams;

/// How a weight scheme groups the quantized (last) axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// Groups of `G` consecutive elements along each row.
    Group(usize),
    /// One set of qparams per row (per output channel; per token for activations).
    Channel,
    /// One set of qparams for the whole tensor.
    Tensor,
}

impl Granularity {
    /// The group length for a row of `cols` elements (the whole row for per-channel).
    pub fn group_len(self, cols: usize) -> usize {
        match self {
            Granularity::Group(g) => g,
            Granularity::Channel | Granularity::Tensor => cols,
        }
    }
    /// `[rows, n_groups]` of the qparam grid for a `[rows, cols]` tensor.
    pub fn qparam_shape(self, rows: usize, cols: usize) -> [usize; 2] {
        match self {
            Granularity::Group(g) => [rows, cols / g],
            Granularity::Channel => [rows, 1],
            Granularity::Tensor => [1, 1],
        }
    }
    /// Check that the group divides the row.
    pub fn check(self, scheme: &str, cols: usize) -> Result<()> {
        if let Granularity::Group(g) = self {
            if g == 0 || cols % g != 0 {
                return Err(RefError::GroupSize { op: scheme.to_string(), group: g, axis: "cols".into(), len: cols });
            }
        }
        Ok(())
    }
}

/// Which symmetric convention (schemes.md §8.1/§8.2) or variant a torchao-formula scheme uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AoMapping {
    /// `MappingType.SYMMETRIC`: `amax / ((qmax − qmin)/2)`, levels `[-2^(b-1), 2^(b-1)-1]`.
    Sym,
    /// `MappingType.SYMMETRIC_NO_CLIPPING_ERR`.
    SymNce,
    /// `MappingType.ASYMMETRIC` with an integer zero-point from the min.
    Asym,
}

/// Who produced a `symclip` scheme: both give `amax/(2^(b-1)-1)` on `[-(2^(b-1)-1), 2^(b-1)-1]`,
/// with different arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipFlavor {
    /// coremltools `linear_symmetric`: `(vmax − vmin)/(qmax − qmin)` in W dtype, division, no eps.
    Coreml,
    /// coreai-opt `symmetric_with_clipping` through torchao's formula: `amax/qmax`, eps 2^-23, division.
    Coreai,
}

/// The storage dtype of a zero-point (a case variant for the 8da4w activation path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZpDtype {
    /// int8.
    I8,
    /// fp32.
    F32,
    /// fp16.
    F16,
}

impl ZpDtype {
    /// Short name used in scheme names (`-zpi8`).
    pub fn name(self) -> &'static str {
        match self {
            ZpDtype::I8 => "i8",
            ZpDtype::F32 => "f32",
            ZpDtype::F16 => "f16",
        }
    }
}

/// How a palettization LUT is built when none is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LutMode {
    /// Deterministic 1-D k-means (Lloyd, quantile init, f64): framework k-means is not reproducible,
    /// so this is qdiff's own, and exact LUT + indices can be given instead.
    Kmeans,
    /// coremltools `mode="uniform"`: `lut[i] = i·s + vmin` computed in f64, cast to the weight dtype.
    Uniform,
}

/// Which per-channel scale a `pal{n}-pcs-*` scheme applies (schemes.md §2.4 axis quirk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PcsAxis {
    /// coremltools PTQ: `max |W|` reduced over the output axis, one scale per input column.
    Col,
    /// coremltools.optimize.torch: one scale per output row.
    Row,
}

/// How palettization LUTs are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LutGranularity {
    /// One LUT for the whole tensor.
    Tensor,
    /// One LUT per group of `C` output channels (rows).
    GroupedChannels(usize),
}

/// ggml's activation Q8_0 variants (schemes.md §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Q8Flavor {
    /// `quantize_row_q8_0_ref`: `id = 1/d`, `roundf` (ties away).
    Ref,
    /// x86 AVX: `id = 127/amax`, RNE.
    Avx,
    /// ARM NEON: `id = 1/d`, RNE.
    Neon,
}

/// Which backend's 8da4w (int8 dynamic activation × int4 weight) a scheme describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum W8da4wFlavor {
    /// torchao eager: fake-quant activations (`a8-pt-asym-ao`) and `w4g{G}-sym-ao` weights, float GEMM.
    Ao,
    /// ExecuTorch XNNPACK: `a8-pt-asym-xnn` activations, int4 sym weights with bf16 group scales.
    Xnn,
    /// ExecuTorch Vulkan `linear_dq8ca_q4gsw`: `a8-pt-asym-vk` activations, q4gsw weights.
    Vk,
}

/// A scheme family with its structural parameters; the compute dtype lives in [`Scheme`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum Family {
    /// torchao `choose_qparams_affine` + `quantize_affine`: `w{b}{g|pc|pt}-{sym,sym-nce,asym}-ao`.
    Torchao { bits: u8, gran: Granularity, mapping: AoMapping },
    /// Restricted-range symmetric: `w{b}{g|pc|pt}-symclip[-coreai]`.
    SymClip { bits: u8, gran: Granularity, flavor: ClipFlavor },
    /// fbgemm/mslk `int4_row_quantize`: `w4g{G}-sym8` (`amax/8` on [-8,7]).
    Sym8 { group: usize },
    /// torchao `Int4Tensor` / mslk `int4_row_quantize_zp`: `w4g{G}-fzp` (float zero-point).
    Fzp { group: usize },
    /// coremltools `linear` (asymmetric) mode: `w{b}{g|pc|pt}-asym-coreml`.
    CoremlAsym { bits: u8, gran: Granularity },
    /// MLX affine: `w{b}g{G}-mlx-{cpu,gpu}`.
    Mlx { bits: u8, group: usize, gpu: bool },
    /// ggml `Q4_0` (`fused`: the `x*id + 8.5` contracted to one fma; `gguf_py`: gguf-py's numpy
    /// quantizer, which differs from C ggml only in the sign of `d` for an all-zero block that
    /// starts with −0.0).
    Q4_0 { fused: bool, gguf_py: bool },
    /// ggml `Q4_1`.
    Q4_1 { fused: bool },
    /// ggml `Q8_0` (reference quantizer: roundf).
    Q8_0,
    /// ggml `Q4_K` (reference quantizer, `make_qkx2_quants`).
    Q4K { fused: bool },
    /// ggml's activation Q8_0 quantizers: `a8-q8_0-{ref,avx,neon}`.
    ActQ8_0 { flavor: Q8Flavor },
    /// coremltools palettization: `pal{n}-pt`, `pal{n}g{C}`, `pal{n}-pcs-{col,row}` (`-uniform` for the
    /// uniform LUT).
    Pal { bits: u8, lut: LutGranularity, pcs: Option<PcsAxis>, mode: LutMode },
    /// Dynamic per-token asymmetric int8 activations: `a8-pt-asym-{ao,ao-i8w,decomp,etport,xnn,vk}`.
    Act { flavor: ActFlavor, zp_dtype: ZpDtype },
    /// int8 dynamic activation × int4 weight: `8da4w[g{G}]-{ao,xnn,vk}[-zp{i8,f32,f16}]`.
    W8da4w { flavor: W8da4wFlavor, group: usize, zp_dtype: ZpDtype },
}

/// A catalogue scheme: a family and the dtype its inputs are cast to and computed in (`@f16` ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scheme {
    /// The family and its structural parameters.
    pub family: Family,
    /// The activation / compute dtype (`@f16`, `@bf16`, `@f32`; default f32).
    pub dtype: DType,
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&name::print(self))
    }
}

impl std::str::FromStr for Scheme {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self> {
        name::parse(s)
    }
}

impl Serialize for Scheme {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Scheme {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a quantized tensor is: codes, stored qparams and (for palettization) LUTs, with the
/// conventions of cli.md ("`qdiff quantize`").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantized {
    /// The scheme that made it.
    pub scheme: Scheme,
    /// `[rows, cols]` of the original tensor.
    pub shape: [usize; 2],
    /// Integer codes, row-major, one per element: the integer the dequantization formula uses.
    pub q: Vec<i32>,
    /// Stored scales (after rounding to their storage dtype), as f32, row-major over `scale_shape`.
    pub scales: Vec<f32>,
    /// `[rows, n_groups]` (or `[1, cols]` for a per-column scale, `[1, 1]` per tensor).
    pub scale_shape: [usize; 2],
    /// What the formula offsets by: integer zero-points, or float offsets (MLX bias, Q4_1 `m`, the
    /// `-fzp` zero, Q4_K's `dmin·m`). `None` for symmetric schemes.
    pub zero_points: Option<Vec<f32>>,
    /// Shape of `zero_points`.
    pub zero_point_shape: Option<[usize; 2]>,
    /// Palettization LUTs, `[n_luts, 2^bits]` row-major.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lut: Option<Vec<f32>>,
    /// Shape of `lut`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lut_shape: Option<[usize; 2]>,
    /// The scales the codes were computed with, where they differ from the stored ones
    /// (schemes.md §8.10: ggml quantizes with the fp32 `d` and stores fp16; MLX quantizes with the
    /// fp32 scale and stores T). Same layout as `scales`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize_scales: Option<Vec<f64>>,
    /// Scheme-specific raw storage (ggml Q4_K's `d`, `dmin`, 6-bit `sc`/`m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
}

impl Quantized {
    /// Number of groups along a row (the second qparam dimension).
    pub fn groups_per_row(&self) -> usize {
        self.scale_shape[1]
    }
}

/// Reject NaN and ±Inf: every scheme's choose_qparams is undefined or rejects them (schemes.md §7
/// knob 12), so the reference refuses them with the index of the first one.
pub fn check_finite(scheme: &Scheme, m: &Matrix) -> Result<()> {
    if let Some((i, v)) = m.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(RefError::BadValue { op: scheme.to_string(), what: "input".into(), index: i, value: *v as f64 });
    }
    Ok(())
}

impl Scheme {
    /// The scheme in another compute dtype.
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// The group geometry of the weight codes (what `regroup` and devices need).
    pub fn granularity(&self) -> Granularity {
        match self.family {
            Family::Torchao { gran, .. } | Family::SymClip { gran, .. } | Family::CoremlAsym { gran, .. } => gran,
            Family::Sym8 { group } | Family::Fzp { group } | Family::Mlx { group, .. } => Granularity::Group(group),
            Family::W8da4w { group, .. } => Granularity::Group(group),
            Family::Q4_0 { .. } | Family::Q4_1 { .. } | Family::Q8_0 | Family::ActQ8_0 { .. } => Granularity::Group(32),
            Family::Q4K { .. } => Granularity::Group(256),
            Family::Act { .. } => Granularity::Channel,
            Family::Pal { .. } => Granularity::Tensor,
        }
    }

    /// Whether this is a dynamic activation scheme (quantized per token at run time).
    pub fn is_activation(&self) -> bool {
        matches!(self.family, Family::Act { .. } | Family::ActQ8_0 { .. })
    }

    /// Choose qparams and quantize `x` (`[rows, cols]`, rows = output channels or tokens).
    ///
    /// The input is first rounded to the scheme's compute dtype (`@f16` etc.), as a framework would
    /// see a tensor of that dtype. NaN/Inf are rejected; a group size that does not divide `cols`
    /// is an error.
    pub fn quantize(&self, x: &Matrix) -> Result<Quantized> {
        check_finite(self, x)?;
        self.granularity().check(&self.to_string(), x.cols)?;
        match self.family {
            Family::Torchao { .. }
            | Family::SymClip { .. }
            | Family::Sym8 { .. }
            | Family::Fzp { .. }
            | Family::CoremlAsym { .. }
            | Family::W8da4w { .. } => affine::AffineParams::for_scheme(self)?.quantize(self, x),
            Family::Mlx { .. } => mlx::quantize(self, x),
            Family::Q4_0 { .. } | Family::Q4_1 { .. } | Family::Q8_0 | Family::Q4K { .. } | Family::ActQ8_0 { .. } => {
                ggml::quantize(self, x)
            }
            Family::Pal { .. } => pal::quantize(self, x, None),
            Family::Act { .. } => act::quantize(self, x),
        }
    }

    /// Dequantize from the stored values only (codes, stored scales and zero-points, LUTs), with
    /// the framework's own dequantization arithmetic. Returns row-major f32.
    pub fn dequantize(&self, q: &Quantized) -> Result<Vec<f32>> {
        match self.family {
            Family::Torchao { .. }
            | Family::SymClip { .. }
            | Family::Sym8 { .. }
            | Family::Fzp { .. }
            | Family::CoremlAsym { .. }
            | Family::W8da4w { .. } => Ok(affine::AffineParams::for_scheme(self)?.dequantize(q)),
            Family::Mlx { .. } => Ok(mlx::dequantize(self, q)),
            Family::Q4_0 { .. } | Family::Q4_1 { .. } | Family::Q8_0 | Family::Q4K { .. } | Family::ActQ8_0 { .. } => {
                Ok(ggml::dequantize(self, q))
            }
            Family::Pal { .. } => pal::dequantize(self, q),
            Family::Act { .. } => act::dequantize(self, q),
        }
    }

    /// For a composite `8da4w` scheme, the torchao scheme its weight codes come from (all three
    /// backends quantize the weights with torchao at export; XNNPACK then stores the group scales
    /// as bf16, which `quantize` on the composite itself models). Otherwise the scheme itself.
    pub fn weight_scheme(&self) -> Scheme {
        match self.family {
            Family::W8da4w { group, .. } => Scheme {
                family: Family::Torchao { bits: 4, gran: Granularity::Group(group), mapping: AoMapping::Sym },
                dtype: self.dtype,
            },
            _ => *self,
        }
    }

    /// For a composite `8da4w` scheme, the scheme of its activations; `None` for weight schemes.
    pub fn activation_scheme(&self) -> Option<Scheme> {
        match self.family {
            Family::W8da4w { flavor, zp_dtype, .. } => {
                let flavor = match flavor {
                    W8da4wFlavor::Ao => ActFlavor::Ao,
                    W8da4wFlavor::Xnn => ActFlavor::Xnn,
                    W8da4wFlavor::Vk => ActFlavor::Vk(crate::round::Ties::Even),
                };
                Some(Scheme { family: Family::Act { flavor, zp_dtype }, dtype: self.dtype })
            }
            Family::Act { .. } | Family::ActQ8_0 { .. } => Some(*self),
            _ => None,
        }
    }

    /// The packed storage layout the scheme's framework uses for its codes.
    pub fn packing(&self) -> Packing {
        use crate::pack::{Nibbles, Packing as P};
        match self.family {
            Family::Torchao { bits, .. } => P::Unpacked { bits, signed: true },
            Family::SymClip { bits, flavor: ClipFlavor::Coreml, .. } => P::Bitstream { bits, signed: true },
            Family::SymClip { bits, flavor: ClipFlavor::Coreai, .. } => P::Unpacked { bits, signed: true },
            Family::CoremlAsym { bits, .. } => P::Bitstream { bits, signed: true },
            Family::Sym8 { .. } | Family::Fzp { .. } => P::Nibbles(Nibbles::LnEvenTc),
            Family::Mlx { bits, .. } => P::MlxWords { bits },
            Family::Q4_0 { .. } => P::GgmlQ4_0,
            Family::Q4_1 { .. } => P::GgmlQ4_1,
            Family::Q8_0 | Family::ActQ8_0 { .. } => P::GgmlQ8_0,
            Family::Q4K { .. } => P::GgmlQ4K,
            Family::Pal { bits, .. } => P::Bitstream { bits, signed: false },
            Family::Act { .. } => P::Unpacked { bits: 8, signed: true },
            Family::W8da4w { flavor: W8da4wFlavor::Ao, .. } => P::Unpacked { bits: 4, signed: true },
            Family::W8da4w { flavor: W8da4wFlavor::Xnn, .. } => P::Nibbles(Nibbles::LnEvenOb),
            Family::W8da4w { flavor: W8da4wFlavor::Vk, .. } => P::VulkanQ4Blocks,
        }
    }

    /// The parameters of schemes.md §9 that define this scheme, for `qdiff schemes --json`.
    pub fn params(&self) -> SchemeParams {
        name::params(self)
    }
}

/// The §9 parameterization of a scheme, as printed by `qdiff schemes --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemeParams {
    /// Where the definition comes from (framework and schemes.md section).
    pub source: String,
    /// Smallest and largest integer code.
    pub qmin: i64,
    /// Largest integer code.
    pub qmax: i64,
    /// Bits per code.
    pub bits: u8,
    /// Granularity of the qparams (`g32`, `per_channel`, `per_tensor`, `per_token`).
    pub granularity: String,
    /// Dtype choose_qparams computes in.
    pub arith_dtype: DType,
    /// `recip_mul` or `div`.
    pub op_form: String,
    /// Rounding of codes.
    pub round_mode: String,
    /// Whether the code is rounded before the zero-point is added.
    pub round_before_zp: bool,
    /// How the zero-point / offset is chosen.
    pub zp_rule: String,
    /// How a tiny or zero scale is handled.
    pub eps_rule: String,
    /// Dtype the scales are stored in.
    pub stored_scale_dtype: DType,
    /// Whether codes are computed with the stored (rounded) scale or the quantize-time one.
    pub quantize_with_stored_scale: bool,
    /// The packed layout of the codes.
    pub packing: String,
    /// Anything else worth knowing.
    pub notes: String,
}

/// Iterate the groups of a `[rows, cols]` tensor for a granularity: `(qparam index, element
/// indices)` with elements in row-major order within the group.
pub(crate) fn group_indices(
    gran: Granularity,
    rows: usize,
    cols: usize,
) -> Vec<(usize, std::ops::Range<usize>, usize)> {
    // A group is a contiguous run within a row, a whole row, or the whole tensor: a range suffices.
    match gran {
        Granularity::Group(g) => {
            let per_row = cols / g;
            (0..rows * per_row).map(|i| (i, i * g..(i + 1) * g, g)).collect()
        }
        Granularity::Channel => (0..rows).map(|r| (r, r * cols..(r + 1) * cols, cols)).collect(),
        Granularity::Tensor => vec![(0, 0..rows * cols, rows * cols)],
    }
}

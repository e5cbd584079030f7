//! What a device is asked to run: an op case (op, scheme, variant, inputs, an optional injected
//! fault) and what it gives back (float values, integer outputs, side outputs, timing).
//!
//! The output names per op are the contract between the runners, the reference device and the
//! comparison in `harness` (see [`Outputs`]).

use kernels_ref::scheme::{Family, Quantized, Scheme};
use kernels_ref::tensor::Matrix;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The ops of cli.md "Names".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Choose qparams and quantize a weight tensor `w` `[N, K]`.
    Quantize,
    /// Dequantize stored weights `wq` to `[N, K]`.
    Dequantize,
    /// `y = x · Ŵᵀ`: activations `x` `[M, K]` times quantized weights `wq` `[N, K]`, giving `[M, N]`.
    Linear,
    /// Look up rows `ids` of a quantized table `wq` `[V, D]`, giving `[len(ids), D]`.
    Embedding,
    /// Dynamic per-token quantization of activations `x` `[M, K]`.
    ActQuant,
    /// Move quantized weights to another group size (a host-side transform of kernels-ref).
    Regroup,
}

impl Op {
    /// Every op, in cli.md order.
    pub const ALL: [Op; 6] = [Op::Quantize, Op::Dequantize, Op::Linear, Op::Embedding, Op::ActQuant, Op::Regroup];

    /// The cli.md name.
    pub fn name(self) -> &'static str {
        match self {
            Op::Quantize => "quantize",
            Op::Dequantize => "dequantize",
            Op::Linear => "linear",
            Op::Embedding => "embedding",
            Op::ActQuant => "act_quant",
            Op::Regroup => "regroup",
        }
    }

    /// Parse a cli.md op name.
    pub fn parse(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.name() == s)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a runner keeps weights and qparams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// Storage buffers (the default).
    #[default]
    Buffer,
    /// Sampled / storage textures, as mobile GPU backends (ExecuTorch Vulkan) keep qparams and weights.
    Texture,
}

/// A texel format a texture is allocated with or bound (read) as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TexelFormat {
    /// One fp32 per texel.
    R32Float,
    /// Four fp32 per texel.
    Rgba32Float,
    /// Four fp16 per texel.
    Rgba16Float,
    /// Four int8 per texel.
    Rgba8Sint,
    /// Four int32 per texel.
    Rgba32Sint,
    /// One int32 per texel.
    R32Sint,
}

impl TexelFormat {
    /// Bytes per texel.
    pub fn texel_bytes(self) -> usize {
        match self {
            TexelFormat::R32Float | TexelFormat::R32Sint | TexelFormat::Rgba8Sint => 4,
            TexelFormat::Rgba16Float => 8,
            TexelFormat::Rgba32Float | TexelFormat::Rgba32Sint => 16,
        }
    }
    /// Whether texels read as floats (else signed integers).
    pub fn is_float(self) -> bool {
        matches!(self, TexelFormat::R32Float | TexelFormat::Rgba32Float | TexelFormat::Rgba16Float)
    }
}

/// The format a texture-stored tensor is allocated with, and the one the kernel binds and reads it
/// as. They differ only to reproduce a driver bug (a mismatch wgpu's validation forbids goes through
/// SPIR-V passthrough, so it reaches the driver as it does in the field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TexelBinding {
    /// Format of the texture as allocated (and written).
    pub alloc: TexelFormat,
    /// Format of the binding the consuming kernel reads it through.
    pub bind: TexelFormat,
}

/// The device-side choices of a case that matter for real driver bugs. The compute dtype (fp16 vs
/// fp32 arithmetic) is the scheme's `@dtype`; the zero-point dtype of the 8da4w activation path is
/// the scheme's `-zp{i8,f32,f16}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Variant {
    /// Buffers or textures for weights and qparams.
    pub storage: Storage,
    /// Per-tensor texel formats for texture storage, keyed by tensor name (`"act_zero_points"`,
    /// `"act_scales"`, `"scales"`, `"weight"`, ...); a tensor not named uses the runner's default.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub texel_formats: BTreeMap<String, TexelBinding>,
    /// Workgroup size (threads per workgroup along x); `None` is the runner's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workgroup_size: Option<u32>,
}

impl Variant {
    /// A short stable label (`buffer`, `texture`, `texture+act_zero_points:r32float>rgba8sint`, `..,wg=128`).
    pub fn label(&self) -> String {
        let mut s = match self.storage {
            Storage::Buffer => "buffer".to_string(),
            Storage::Texture => "texture".to_string(),
        };
        for (name, b) in &self.texel_formats {
            s.push_str(&format!(
                "+{name}:{}>{}",
                serde_json::to_value(b.alloc).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
                serde_json::to_value(b.bind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
            ));
        }
        if let Some(wg) = self.workgroup_size {
            s.push_str(&format!(",wg={wg}"));
        }
        s
    }
}

/// A deliberate, documented bug a runner can be asked to commit (`--inject NAME`), to prove the
/// harness catches the bug class it exists for. Off unless asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// The 8da4w activation zero-point allocated as fp32 but bound and read as int8 (on GPU a real
    /// texture-format mismatch through SPIR-V passthrough; on cpu the low byte of the fp32 bits read
    /// as an int8, which is what an `rgba8i` fetch of an `r32f` texel returns in its `.r` channel).
    ZpBindInt8,
    /// int8-allocated zero-points written and read through a float16 binding: on cpu the fp16 bit
    /// pattern of the zero-point saturated to int8 as it is stored (±zp → 127 / −128), the
    /// saturation reported in the field.
    ZpBindF16,
    /// High and low nibbles swapped when unpacking 4-bit codes.
    NibbleSwap,
    /// The scale grid `[N, G]` read as if it were stored `[G, N]`.
    ScaleTranspose,
    /// The last group of each row skipped (its codes contribute nothing).
    DropLastGroup,
    /// The device process dies with SIGSEGV on every linear-blockwise int4 case (grouped 4-bit
    /// weight schemes; field report 001's compiler), while other schemes, palettized ones among
    /// them, run. Only ever committed inside an isolated worker process.
    Crash,
    /// The device never returns on every linear-blockwise int4 case (a hung queue). Only ever
    /// committed inside an isolated worker process, whose case timeout ends it.
    Hang,
}

impl Fault {
    /// Every fault.
    pub const ALL: [Fault; 7] = [
        Fault::ZpBindInt8,
        Fault::ZpBindF16,
        Fault::NibbleSwap,
        Fault::ScaleTranspose,
        Fault::DropLastGroup,
        Fault::Crash,
        Fault::Hang,
    ];

    /// The `--inject` name.
    pub fn name(self) -> &'static str {
        match self {
            Fault::ZpBindInt8 => "zp-bind-int8",
            Fault::ZpBindF16 => "zp-bind-f16",
            Fault::NibbleSwap => "nibble-swap",
            Fault::ScaleTranspose => "scale-transpose",
            Fault::DropLastGroup => "drop-last-group",
            Fault::Crash => "crash",
            Fault::Hang => "hang",
        }
    }

    /// Whether the fault takes the whole device process down (crash, hang): these are committed
    /// only inside an isolated worker.
    pub fn kills_process(self) -> bool {
        matches!(self, Fault::Crash | Fault::Hang)
    }

    /// Parse an `--inject` name.
    pub fn parse(s: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == s)
    }

    /// Whether the fault can change the result of `op` on `scheme` at all, and if not, why. A fault
    /// that cannot bite is reported as such instead of silently passing.
    pub fn applies(self, op: Op, scheme: &Scheme) -> Result<(), String> {
        let weight_op = matches!(op, Op::Dequantize | Op::Linear | Op::Embedding);
        match self {
            Fault::ZpBindInt8 | Fault::ZpBindF16 => {
                let act = matches!(scheme.family, Family::Act { .. } | Family::W8da4w { .. });
                if act && matches!(op, Op::Linear | Op::ActQuant) {
                    Ok(())
                } else {
                    Err(format!(
                        "{} touches the per-token activation zero-point: 8da4w linear and a8 act_quant only",
                        self.name()
                    ))
                }
            }
            Fault::NibbleSwap => {
                let four_bit = match scheme.packing() {
                    kernels_ref::pack::Packing::Unpacked { .. } => false,
                    kernels_ref::pack::Packing::Bitstream { bits, .. }
                    | kernels_ref::pack::Packing::MlxWords { bits } => bits == 4,
                    kernels_ref::pack::Packing::GgmlQ8_0 => false,
                    _ => true,
                };
                if weight_op && four_bit {
                    Ok(())
                } else {
                    Err("nibble-swap applies to 4-bit packed weights read by dequantize, linear or embedding".into())
                }
            }
            Fault::Crash | Fault::Hang => {
                let int4_blockwise = matches!(scheme.granularity(), kernels_ref::scheme::Granularity::Group(_))
                    && match scheme.family {
                        Family::Torchao { bits, .. }
                        | Family::SymClip { bits, .. }
                        | Family::CoremlAsym { bits, .. }
                        | Family::Mlx { bits, .. } => bits == 4,
                        Family::Sym8 { .. }
                        | Family::Fzp { .. }
                        | Family::Q4_0 { .. }
                        | Family::Q4_1 { .. }
                        | Family::Q4K { .. }
                        | Family::W8da4w { .. } => true,
                        _ => false,
                    };
                if weight_op && int4_blockwise {
                    Ok(())
                } else {
                    Err(format!("{} strikes linear-blockwise int4 weights (grouped 4-bit schemes) only", self.name()))
                }
            }
            Fault::ScaleTranspose | Fault::DropLastGroup => {
                let grouped = matches!(scheme.granularity(), kernels_ref::scheme::Granularity::Group(_));
                if weight_op && grouped && !matches!(scheme.family, Family::Pal { .. }) {
                    Ok(())
                } else {
                    Err(format!(
                        "{} applies to group-wise weight scales read by dequantize, linear or embedding",
                        self.name()
                    ))
                }
            }
        }
    }
}

/// One op case: everything a device needs to run it, self-contained.
///
/// Inputs by op:
/// - `quantize`: `w` (the float weights, in the scheme's compute dtype already).
/// - `dequantize`, `embedding`: `wq` (weights quantized by the reference: codes and stored qparams,
///   what a checkpoint holds); `embedding` also `ids`. `w` is kept as the fp32 truth.
/// - `linear`: `x` `[M, K]` and `wq` `[N, K]` (`w` as truth).
/// - `act_quant`: `x` `[M, K]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpCase {
    /// The op.
    pub op: Op,
    /// The scheme (with its compute dtype).
    pub scheme: Scheme,
    /// Device-side choices.
    #[serde(default)]
    pub variant: Variant,
    /// A deliberate fault for the runner to commit, or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject: Option<Fault>,
    /// Float weights `[N, K]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w: Option<Matrix>,
    /// Quantized weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wq: Option<Quantized>,
    /// Activations `[M, K]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<Matrix>,
    /// Embedding row ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<u32>>,
}

/// How a figure of time was measured (cubecl's `TimingMethod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimingMethod {
    /// GPU timestamp queries around the kernel(s).
    Device,
    /// Host wall clock around submit + wait.
    System,
}

/// Time one case took on the device.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Seconds.
    pub seconds: f64,
    /// How it was measured.
    pub method: TimingMethod,
}

/// What a device gives back for one case.
///
/// Names by op (the comparison checks every name the device returns against the reference's):
/// - `quantize`: `values` = the dequantized tensor `[N, K]`; `ints["q"]` the codes (cli.md
///   conventions); `floats["scales"]`, `floats["zero_points"]` (when the scheme has them, integer
///   zero-points written as floats, as in [`Quantized`]), `floats["lut"]` (palettization).
/// - `dequantize`: `values` `[N, K]`.
/// - `embedding`: `values` `[len(ids), D]`.
/// - `act_quant`: `values` = the dequantized activations `[M, K]` in the compute dtype;
///   `ints["q"]` `[M, K]`; `ints["zp"]` `[M]` (per-token schemes); `floats["scales"]` (stored).
/// - `linear`: `values` = `y` `[M, N]`; for 8da4w also `ints["act_q"]` `[M, K]`, `ints["act_zp"]`
///   `[M]`, `floats["act_scales"]` `[M]`, and `ints["acc"]` `[M, N, G]`: per output and group the
///   exact integer `Σ_{k∈g} (a_k − zp_a)·q_k`.
///
/// Integer outputs must always match exactly; float side outputs (`floats`) bit for bit.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Outputs {
    /// The op's float result, row-major.
    pub values: Vec<f32>,
    /// Shape of `values`.
    pub shape: Vec<usize>,
    /// Integer outputs by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ints: BTreeMap<String, Vec<i64>>,
    /// Float side outputs by name, compared bit for bit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub floats: BTreeMap<String, Vec<f32>>,
    /// Kernel time, where the device measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
}

//! Each op as a [`Program`] of WGSL launches: what the GPU runner supports ([`support`]), how a
//! case becomes buffers, textures and launches, and how the read-back words become [`Outputs`].
//!
//! Weights are uploaded in their framework's packed layout (`kernels_ref::pack`), with the stored
//! scales / zero-points / LUTs, and decoded by `weights.wgsl` as the framework's GPU kernel would
//! read them; qparams (and the 8da4w per-token activation qparams) live in textures when the
//! variant asks for texture storage.

use super::context::{
    src, Access, BufKind, BufferRes, Dispatch, Elem, Gpu, Program, Results, TexData, TextureRes, Use,
};
use crate::case::{Fault, Op, OpCase, Outputs, Storage, TexelBinding, TexelFormat, Variant};
use crate::device::{need, Support};
use crate::reference::{check_linear_shapes, op_applies};
use kernels_ref::dtype::DType;
use kernels_ref::pack::{pack, Packing};
use kernels_ref::scheme::affine::{promote, AffineParams};
use kernels_ref::scheme::{
    ActFlavor, AoMapping, Family, Granularity, LutGranularity, PcsAxis, Quantized, Scheme, W8da4wFlavor, ZpDtype,
};

/// Default invocations per workgroup.
const DEFAULT_WG: u32 = 64;

/// Why a case cannot run (`Unsupported`) or why it failed (`Failed`), before it becomes a
/// `DeviceError` with the device's name.
#[derive(Debug)]
pub(crate) enum OpError {
    /// Not supported, with the reason.
    Unsupported(String),
    /// Malformed case.
    BadCase(String),
    /// The device failed.
    Failed(String),
}

type R<T> = Result<T, OpError>;

fn no<T>(why: impl Into<String>) -> R<T> {
    Err(OpError::Unsupported(why.into()))
}

/// The dtype string the program computes in (`f32`, native `f16`, emulated `bf16`).
pub(crate) fn dtype_of(gpu: &Gpu, t: DType) -> R<&'static str> {
    match t {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        DType::F16 if gpu.has_f16() => Ok("f16"),
        DType::F16 => no("@f16 computes in fp16 and this adapter lacks SHADER_F16 (WGSL `enable f16`)"),
        DType::F64 => no("WGSL has no portable f64 (Metal has none)"),
    }
}

fn workgroup(gpu: &Gpu, v: &Variant) -> R<u32> {
    let wg = v.workgroup_size.unwrap_or(DEFAULT_WG);
    let max = gpu.limits.max_compute_workgroup_size_x.min(gpu.limits.max_compute_invocations_per_workgroup);
    if wg == 0 || wg > max {
        return no(format!("workgroup size {wg} is outside this adapter's 1..={max}"));
    }
    Ok(wg)
}

/// Whether a family's stored weights can be decoded here (packing and dequant formula known).
fn weight_family_ok(s: &Scheme) -> R<()> {
    match s.family {
        Family::Act { .. } | Family::ActQ8_0 { .. } => no("an activation scheme has no stored weights"),
        _ => Ok(()),
    }
}

/// The texture binding of tensor `name`: the variant's, or `default`.
fn binding(v: &Variant, name: &str, default: TexelFormat) -> TexelBinding {
    v.texel_formats.get(name).copied().unwrap_or(TexelBinding { alloc: default, bind: default })
}

fn check_formats(gpu: &Gpu, name: &str, b: TexelBinding, write: Option<TexelFormat>) -> R<()> {
    for f in [Some(b.alloc), Some(b.bind), write].into_iter().flatten() {
        if !gpu.storage_format_ok(f) {
            return no(format!(
                "`{name}` needs {f:?} as a read-only and write-only storage texture, which this adapter does not offer"
            ));
        }
    }
    if (b.alloc != b.bind || write.is_some_and(|w| w != b.alloc)) && !gpu.has_passthrough() {
        return no(format!(
            "`{name}` allocated {:?} but bound {:?}: the mismatch needs SPIR-V passthrough (PASSTHROUGH_SHADERS on Vulkan), which this device lacks",
            b.alloc, b.bind
        ));
    }
    Ok(())
}

/// What the GPU runner supports, and why not.
pub(crate) fn support(gpu: &Gpu, op: Op, s: &Scheme, v: &Variant) -> Support {
    match support_inner(gpu, op, s, v) {
        Ok(()) => Support::Supported,
        Err(OpError::Unsupported(r)) | Err(OpError::BadCase(r)) | Err(OpError::Failed(r)) => Support::Unsupported(r),
    }
}

fn support_inner(gpu: &Gpu, op: Op, s: &Scheme, v: &Variant) -> R<()> {
    if let Support::Unsupported(r) = op_applies(op, s) {
        return no(r);
    }
    workgroup(gpu, v)?;
    match op {
        Op::Regroup => no("regroup is a host-side transform"),
        Op::ActQuant => {
            let a = s.activation_scheme().ok_or_else(|| OpError::Unsupported("no activation scheme".into()))?;
            match a.family {
                Family::ActQ8_0 { .. } => Ok(()),
                Family::Act { .. } => act_plan(gpu, &a, v, None).map(|_| ()),
                _ => no("not an activation scheme"),
            }
        }
        Op::Linear => {
            if let Family::W8da4w { .. } = s.family {
                let a = s.activation_scheme().ok_or_else(|| OpError::Unsupported("no activation scheme".into()))?;
                act_plan(gpu, &a, v, None)?;
            }
            weight_support(gpu, s, v)
        }
        Op::Dequantize | Op::Embedding => weight_support(gpu, s, v),
        Op::Quantize => quantize_support(gpu, s),
    }
}

fn weight_support(gpu: &Gpu, s: &Scheme, v: &Variant) -> R<()> {
    weight_family_ok(s)?;
    if !is_ggml(s) {
        dtype_of(gpu, s.dtype)?;
    }
    if v.storage == Storage::Texture || v.texel_formats.contains_key("weight") {
        let b = binding(v, "weight", TexelFormat::Rgba32Sint);
        if b.alloc.is_float() || b.bind.is_float() {
            return no("packed weight words need an integer texel format (r32sint or rgba32sint)");
        }
        check_formats(gpu, "weight", b, None)?;
    }
    if v.storage == Storage::Texture {
        for name in ["scales", "zero_points"] {
            check_formats(gpu, name, binding(v, name, TexelFormat::R32Float), None)?;
        }
    }
    Ok(())
}

pub(crate) fn is_ggml(s: &Scheme) -> bool {
    matches!(s.family, Family::Q4_0 { .. } | Family::Q4_1 { .. } | Family::Q8_0 | Family::Q4K { .. })
}

fn quantize_support(gpu: &Gpu, s: &Scheme) -> R<()> {
    match s.family {
        Family::Mlx { gpu: true, .. } => dtype_of(gpu, s.dtype).map(|_| ()),
        Family::Mlx { gpu: false, .. } => {
            no("MLX's CPU quantizer (rint, true min/max) runs on the host; its GPU kernel is the -mlx-gpu scheme")
        }
        Family::Torchao { bits, .. } if bits != 4 && bits != 8 => {
            no(format!("only int4/int8 torchao groups have a GPU requant kernel (Vulkan q4gsw_requant), not int{bits}"))
        }
        Family::Torchao { .. } | Family::W8da4w { .. } => dtype_of(gpu, s.dtype).map(|_| ()),
        Family::Q8_0 => Ok(()),
        Family::SymClip { .. } | Family::CoremlAsym { .. } => {
            no("coremltools / coreai-opt quantize at export time on the host (numpy / PyTorch); no GPU kernel exists")
        }
        Family::Sym8 { .. } | Family::Fzp { .. } => {
            no("fbgemm/mslk int4_row_quantize is an export-time host quantizer; no GPU kernel of it is emulated")
        }
        Family::Q4_0 { .. } | Family::Q4_1 { .. } => no(
            "ggml's Q4_0/Q4_1 reference quantizer runs on the host (llama-quantize); ggml's GPU cpy_f32_q4 kernels are not ported here",
        ),
        Family::Q4K { .. } => {
            no("q4_K's make_qkx2_quants iterative least-squares search is an export-time host quantizer")
        }
        Family::Pal { .. } => {
            no("palettization (k-means / uniform LUTs) is an export-time host quantizer (coremltools, sklearn)")
        }
        Family::Act { .. } | Family::ActQ8_0 { .. } => no("activation schemes are quantized by act_quant"),
    }
}

/// Run one case.
pub(crate) fn run(gpu: &mut Gpu, case: &OpCase) -> R<Outputs> {
    if let Support::Unsupported(r) = support(gpu, case.op, &case.scheme, &case.variant) {
        return no(r);
    }
    if let Some(f) = case.inject {
        f.applies(case.op, &case.scheme).map_err(OpError::Unsupported)?;
    }
    let s = case.scheme;
    let bad = |e: crate::device::DeviceError| OpError::BadCase(e.to_string());
    match case.op {
        Op::ActQuant => {
            let x = need(case, &case.x, "x").map_err(bad)?;
            let a = s.activation_scheme().ok_or_else(|| OpError::Unsupported("no activation scheme".into()))?;
            check_x(&a, x)?;
            if let Family::ActQ8_0 { flavor } = a.family {
                return q8_0(gpu, &a, x, flavor as u32, &case.variant);
            }
            act_quant(gpu, &a, x, case)
        }
        Op::Dequantize | Op::Embedding => {
            let wq = need(case, &case.wq, "wq").map_err(bad)?;
            let rows: Vec<u32> = if case.op == Op::Embedding {
                let ids = need(case, &case.ids, "ids").map_err(bad)?;
                if let Some((i, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= wq.shape[0]) {
                    return Err(OpError::BadCase(format!("ids[{i}] = {id} is past the table's {} rows", wq.shape[0])));
                }
                ids.clone()
            } else {
                (0..wq.shape[0] as u32).collect()
            };
            dequant(gpu, &s, wq, &rows, case)
        }
        Op::Linear => {
            let x = need(case, &case.x, "x").map_err(bad)?;
            let wq = need(case, &case.wq, "wq").map_err(bad)?;
            check_linear_shapes(case, x, wq).map_err(bad)?;
            if let Family::W8da4w { .. } = s.family {
                linear_8da4w(gpu, &s, x, wq, case)
            } else {
                linear_w(gpu, &s, x, wq, case)
            }
        }
        Op::Quantize => {
            let w = need(case, &case.w, "w").map_err(bad)?;
            quantize(gpu, &s, w, &case.variant)
        }
        Op::Regroup => no("regroup is a host-side transform"),
    }
}

fn check_x(s: &Scheme, x: &kernels_ref::tensor::Matrix) -> R<()> {
    kernels_ref::scheme::check_finite(s, x).map_err(|e| OpError::BadCase(e.to_string()))?;
    if x.rows == 0 || x.cols == 0 {
        return Err(OpError::BadCase("empty input".into()));
    }
    Ok(())
}

fn launch(gpu: &mut Gpu, p: &Program) -> R<Results> {
    if let Some(captured) = gpu.capture.as_mut() {
        // Exporting: record what would run. The empty results make the op's output decoding
        // produce empty outputs, which `export` discards.
        captured.push(p.clone());
        return Ok(Results::default());
    }
    gpu.run(p).map_err(OpError::Failed)
}

/// The programs `run` would launch for `case`, in order, without launching anything.
pub(crate) fn capture(gpu: &mut Gpu, case: &OpCase) -> R<Vec<Program>> {
    gpu.capture = Some(Vec::new());
    let ran = run(gpu, case);
    let programs = gpu.capture.take().unwrap_or_default();
    ran?;
    Ok(programs)
}

/// The programs `run` would launch for `case`, described for a harness outside qdiff (see
/// `Gpu::describe`), without launching anything.
pub(crate) fn export(gpu: &mut Gpu, case: &OpCase) -> R<Vec<serde_json::Value>> {
    let programs = capture(gpu, case)?;
    programs.iter().map(|p| gpu.describe(p).map_err(OpError::Failed)).collect()
}

/// Inputs rounded to the compute dtype, as the framework would hold a tensor of that dtype.
fn in_dtype(t: DType, v: &[f32]) -> Vec<u32> {
    v.iter().map(|&x| t.round_f32(x as f64).to_bits()).collect()
}

fn input(name: &'static str, elem: Elem, data: Vec<u32>) -> BufferRes {
    BufferRes { name, elem, kind: BufKind::Input(data) }
}

fn output(name: &'static str, elem: Elem, words: usize) -> BufferRes {
    BufferRes { name, elem, kind: BufKind::Output { words, readback: true } }
}

fn f32_words(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

// ---------------------------------------------------------------------------------------------
// Activations

/// Where the per-token activation qparams live and through which formats they are written/read.
#[derive(Debug, Clone)]
pub(crate) struct ActPlan {
    /// `FLAVOR` of the act kernels.
    pub flavor: u32,
    /// `EPS_BITS` of the act kernels.
    pub eps_bits: u32,
    /// Where the per-token scales live.
    pub scale: ActRes,
    /// Where the per-token zero-points live.
    pub zp: ActRes,
}

/// A per-token qparam resource: a buffer of an element type, or a texture.
#[derive(Debug, Clone)]
pub(crate) enum ActRes {
    Buffer(Elem),
    Texture { alloc: TexelFormat, write: TexelFormat, read: TexelFormat },
}

pub(crate) fn act_plan(gpu: &Gpu, a: &Scheme, v: &Variant, inject: Option<Fault>) -> R<ActPlan> {
    let Family::Act { flavor, zp_dtype } = a.family else { return no("not a per-token activation scheme") };
    let t = a.dtype;
    dtype_of(gpu, t)?;
    let (flavor, eps) = match flavor {
        ActFlavor::Ao => (0, t.smallest_normal()),
        ActFlavor::AoI8w => (1, DType::F32.epsilon()),
        ActFlavor::Xnn => (2, 0.0),
        ActFlavor::Vk(kernels_ref::round::Ties::Even) => (3, 0.0),
        ActFlavor::Vk(kernels_ref::round::Ties::Away) => (4, 0.0),
        ActFlavor::Decomp => {
            return no("PyTorch quantized_decomposed per-token quantization computes in f64 (float64 scales); WGSL f64 is not portable (Metal has none)")
        }
        ActFlavor::EtPort => {
            return no("ExecuTorch portable keeps a double scale and computes in f64; WGSL f64 is not portable (Metal has none)")
        }
    };
    let eps_bits = (t.round(eps) as f32).to_bits();
    // The stored scale's dtype: T for torchao (ASYMMETRIC in T) and Vulkan (DTYPE); f32 otherwise.
    let scale_f16 = t == DType::F16 && matches!(flavor, 0 | 3 | 4);
    let textures = v.storage == Storage::Texture;
    let scale = if textures || v.texel_formats.contains_key("act_scales") {
        let def = if scale_f16 { TexelFormat::Rgba16Float } else { TexelFormat::Rgba32Float };
        let b = binding(v, "act_scales", def);
        check_formats(gpu, "act_scales", b, None)?;
        ActRes::Texture { alloc: b.alloc, write: b.alloc, read: b.bind }
    } else {
        ActRes::Buffer(Elem::F32)
    };
    let zp = match inject {
        Some(Fault::ZpBindInt8) => {
            let alloc = match v.texel_formats.get("act_zero_points").map(|b| b.alloc) {
                Some(f @ (TexelFormat::R32Float | TexelFormat::Rgba32Float)) => f,
                _ => TexelFormat::Rgba32Float,
            };
            let b = TexelBinding { alloc, bind: TexelFormat::Rgba8Sint };
            check_formats(gpu, "act_zero_points", b, None)?;
            ActRes::Texture { alloc, write: alloc, read: TexelFormat::Rgba8Sint }
        }
        Some(Fault::ZpBindF16) => {
            let b = TexelBinding { alloc: TexelFormat::Rgba8Sint, bind: TexelFormat::Rgba16Float };
            check_formats(gpu, "act_zero_points", b, Some(TexelFormat::Rgba16Float))?;
            ActRes::Texture { alloc: b.alloc, write: b.bind, read: b.bind }
        }
        _ if textures || v.texel_formats.contains_key("act_zero_points") => {
            let def = match zp_dtype {
                ZpDtype::I8 => TexelFormat::Rgba8Sint,
                ZpDtype::F32 => TexelFormat::Rgba32Float,
                ZpDtype::F16 => TexelFormat::Rgba16Float,
            };
            let b = binding(v, "act_zero_points", def);
            check_formats(gpu, "act_zero_points", b, None)?;
            ActRes::Texture { alloc: b.alloc, write: b.alloc, read: b.bind }
        }
        _ => match zp_dtype {
            ZpDtype::I8 => ActRes::Buffer(Elem::I32),
            ZpDtype::F32 => ActRes::Buffer(Elem::F32),
            ZpDtype::F16 if gpu.has_f16() => ActRes::Buffer(Elem::F16),
            ZpDtype::F16 => return no("an fp16 zero-point buffer needs SHADER_F16"),
        },
    };
    Ok(ActPlan { flavor, eps_bits, scale, zp })
}

/// Add the activation qparams resources and the two activation launches to `p`.
fn act_launches(p: &mut Program, plan: &ActPlan, m: usize, k: usize, wg: u32) {
    let m4 = m.div_ceil(4) * 4;
    let mut add = |name: &'static str, r: &ActRes| -> (Use, Use) {
        match r {
            ActRes::Buffer(e) => {
                let words = if *e == Elem::F16 { m4.div_ceil(2) } else { m4 };
                p.buffers.push(BufferRes { name, elem: *e, kind: BufKind::Output { words, readback: false } });
                (Use::write(name), Use::read(name))
            }
            ActRes::Texture { alloc, write, read } => {
                p.textures.push(TextureRes { name, alloc: *alloc, data: TexData::Written { values: m4 }, width: None });
                (Use::write(name).through(*write), Use::read(name).through(*read))
            }
        }
    };
    let (sw, sr) = add("ascale", &plan.scale);
    let (zw, zr) = add("azp", &plan.zp);
    p.consts.push(("FLAVOR", plan.flavor));
    p.consts.push(("EPS_BITS", plan.eps_bits));
    p.buffers.push(output("q", Elem::I32, m * k));
    p.buffers.push(output("xh", Elem::F32, m * k));
    p.buffers.push(BufferRes { name: "qzp", elem: Elem::F32, kind: BufKind::Output { words: m, readback: true } });
    p.buffers.push(BufferRes { name: "qsc", elem: Elem::F32, kind: BufKind::Output { words: m, readback: true } });
    p.dispatches.push(Dispatch {
        source: src::ACT_CHOOSE,
        entry: "choose_qparams",
        uses: vec![Use::read("x"), sw, zw],
        threads: (m.div_ceil(4) as u32) * wg,
        wg,
    });
    p.dispatches.push(Dispatch {
        source: src::ACT_QUANTIZE,
        entry: "quantize",
        uses: vec![
            Use::read("x"),
            sr.clone(),
            zr.clone(),
            Use::write("q"),
            Use::write("xh"),
            Use { name: "qzp", access: Access::Write, bind: None },
            Use { name: "qsc", access: Access::Write, bind: None },
        ],
        threads: (m * k) as u32,
        wg,
    });
}

fn act_quant(gpu: &mut Gpu, a: &Scheme, x: &kernels_ref::tensor::Matrix, case: &OpCase) -> R<Outputs> {
    let plan = act_plan(gpu, a, &case.variant, case.inject)?;
    let wg = workgroup(gpu, &case.variant)?;
    let (m, k) = (x.rows, x.cols);
    let mut p = Program {
        dtype: dtype_of(gpu, a.dtype)?,
        params: vec![("M", m as u32), ("K", k as u32)],
        buffers: vec![input("x", Elem::F32, in_dtype(a.dtype, &x.data))],
        ..Program::default()
    };
    act_launches(&mut p, &plan, m, k, wg);
    let r = launch(gpu, &p)?;
    let mut out = Outputs { values: r.f32s("xh"), shape: vec![m, k], timing: r.timing, ..Outputs::default() };
    out.ints.insert("q".into(), r.i64s("q"));
    out.ints.insert("zp".into(), r.f32s("qzp").iter().map(|&z| zp_int(z)).collect());
    out.floats.insert("scales".into(), r.f32s("qsc"));
    Ok(out)
}

/// A zero-point as the consumer kernel read it, as an integer; a non-finite one (a format
/// mismatch can read NaN) is reported as `i64::MIN` rather than passing for a plausible 0.
fn zp_int(z: f32) -> i64 {
    if z.is_finite() {
        z as i64
    } else {
        i64::MIN
    }
}

fn q8_0(gpu: &mut Gpu, s: &Scheme, x: &kernels_ref::tensor::Matrix, qf: u32, v: &Variant) -> R<Outputs> {
    if x.cols % 32 != 0 {
        return Err(OpError::BadCase(format!("Q8_0 needs rows of whole 32-element blocks, not {}", x.cols)));
    }
    let wg = workgroup(gpu, v)?;
    let n = x.rows * x.cols;
    let nb = n / 32;
    let p = Program {
        dtype: "f32",
        consts: vec![("QF", qf)],
        params: vec![("NG", nb as u32), ("GL", 32)],
        buffers: vec![
            input("x", Elem::F32, in_dtype(s.dtype, &x.data)),
            output("q", Elem::I32, n),
            output("values", Elem::F32, n),
            output("scales", Elem::F32, nb),
        ],
        dispatches: vec![Dispatch {
            source: src::QUANTIZE_Q8,
            entry: "q8_blocks",
            uses: vec![Use::read("x"), Use::write("q"), Use::write("values"), Use::write("scales")],
            threads: nb as u32,
            wg,
        }],
        ..Program::default()
    };
    let r = launch(gpu, &p)?;
    let mut out =
        Outputs { values: r.f32s("values"), shape: vec![x.rows, x.cols], timing: r.timing, ..Outputs::default() };
    out.ints.insert("q".into(), r.i64s("q"));
    out.floats.insert("scales".into(), r.f32s("scales"));
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Weights

/// How `weights.wgsl` decodes one stored tensor.
pub(crate) struct WeightPlan {
    /// Specialization constants of `weights.wgsl` (packing, family, flags).
    pub consts: Vec<(&'static str, u32)>,
    /// Uniform params of `weights.wgsl` (`N`, `K`, `G`, `GL`, `SR`, `RPL`).
    pub params: Vec<(&'static str, u32)>,
    /// The packed codes as 32-bit words (little-endian bytes), one zero word appended.
    pub words: Vec<u32>,
    /// Stored scales (never empty).
    pub scales: Vec<f32>,
    /// Stored zero-points / offsets (never empty).
    pub zps: Vec<f32>,
    /// LUTs (never empty).
    pub lut: Vec<f32>,
    /// Texture width for the weight words (Vulkan blocks sit at `(k4, n8)`).
    pub width: Option<u32>,
}

pub(crate) fn weight_plan(s: &Scheme, wq: &Quantized, inject: Option<Fault>) -> R<WeightPlan> {
    weight_family_ok(s)?;
    let [rows, cols] = wq.shape;
    if rows == 0 || cols == 0 {
        return Err(OpError::BadCase("empty weights".into()));
    }
    let packing = s.packing();
    let bytes = pack(packing, wq).map_err(|e| OpError::BadCase(e.to_string()))?;
    let mut words: Vec<u32> =
        bytes.chunks(4).map(|c| c.iter().enumerate().fold(0u32, |w, (i, &b)| w | (b as u32) << (8 * i))).collect();
    words.push(0);
    let (pack_id, bits, signed) = match packing {
        Packing::Unpacked { bits, signed } => (0, bits, signed),
        Packing::Nibbles(kernels_ref::pack::Nibbles::LnEvenOb) => (1, 4, true),
        Packing::Nibbles(kernels_ref::pack::Nibbles::LnEvenTc) => (2, 4, true),
        Packing::Bitstream { bits, signed } => (3, bits, signed),
        Packing::MlxWords { bits } => (4, bits, false),
        Packing::GgmlQ4_0 => (5, 4, true),
        Packing::GgmlQ4_1 => (6, 4, false),
        Packing::GgmlQ8_0 => (7, 8, true),
        Packing::GgmlQ4K => (8, 4, false),
        Packing::VulkanQ4Blocks => (9, 4, true),
    };
    let t = s.dtype;
    let mut pt32 = 0;
    let mut has_zp = wq.zero_points.is_some() as u32;
    let mut pcs = 0;
    let mut levels = 0;
    let mut rpl = rows;
    let fam = match s.family {
        Family::Torchao { .. }
        | Family::SymClip { .. }
        | Family::CoremlAsym { .. }
        | Family::Sym8 { .. }
        | Family::W8da4w { .. } => {
            let ap = AffineParams::for_scheme(s).map_err(|e| OpError::Unsupported(e.to_string()))?;
            pt32 = (promote(t, ap.stored_scale) != t) as u32;
            0
        }
        Family::Fzp { .. } => 1,
        Family::Mlx { .. } => 2,
        Family::Pal { bits: b, lut, pcs: p, .. } => {
            levels = 1u32 << b;
            rpl = match lut {
                LutGranularity::Tensor => rows,
                LutGranularity::GroupedChannels(c) => c,
            };
            pcs = match p {
                None => 0,
                Some(PcsAxis::Col) => 1,
                Some(PcsAxis::Row) => 2,
            };
            has_zp = 0;
            3
        }
        Family::Q4_0 { .. } | Family::Q8_0 => 4,
        Family::Q4_1 { .. } => 5,
        Family::Q4K { .. } => 6,
        Family::Act { .. } | Family::ActQ8_0 { .. } => return no("an activation scheme has no stored weights"),
    };
    // The qparam grid: [SR, G] row-major (or [G, N] for ExecuTorch Vulkan, S_TRANS).
    let (mut sr, mut g) = (wq.scale_shape[0].max(1), wq.scale_shape[1].max(1));
    if matches!(s.family, Family::Pal { .. }) {
        // Palettized weights have no group grid (a per-channel scale is indexed by row or col).
        sr = 1;
        g = 1;
    }
    if fam != 3 && cols % g != 0 {
        return Err(OpError::BadCase(format!("{g} groups do not divide {cols} columns")));
    }
    let gl = if fam == 3 { cols } else { cols / g };
    let vk = matches!(s.family, Family::W8da4w { flavor: W8da4wFlavor::Vk, .. });
    let mut scales = wq.scales.clone();
    if vk {
        // ExecuTorch Vulkan keeps the group scales transposed, [K/G, N].
        scales = (0..g * sr).map(|i| wq.scales[(i % sr) * g + i / sr]).collect();
    }
    if scales.is_empty() {
        scales.push(0.0);
    }
    let mut zps = wq.zero_points.clone().unwrap_or_default();
    if zps.is_empty() {
        zps.push(0.0);
    }
    let mut lut = wq.lut.clone().unwrap_or_default();
    if lut.is_empty() {
        lut.push(0.0);
    }
    let flag = |f: Fault| (inject == Some(f)) as u32;
    let consts = vec![
        ("PACK", pack_id),
        ("BITS", bits as u32),
        ("SIGNED", signed as u32),
        ("FAM", fam),
        ("HAS_ZP", has_zp),
        ("PCS", pcs),
        ("PT32", pt32),
        ("S_TRANS", vk as u32),
        ("LEVELS", levels),
        ("F_SWAP", flag(Fault::NibbleSwap)),
        ("F_TRANS", flag(Fault::ScaleTranspose)),
        ("F_DROP", flag(Fault::DropLastGroup)),
    ];
    let params = vec![
        ("N", rows as u32),
        ("K", cols as u32),
        ("G", g as u32),
        ("GL", gl as u32),
        ("SR", sr as u32),
        ("RPL", rpl.max(1) as u32),
    ];
    let width = vk.then(|| cols.div_ceil(4) as u32);
    Ok(WeightPlan { consts, params, words, scales, zps, lut, width })
}

/// Add the weight resources to `p`; returns their uses for a dispatch.
fn weight_resources(p: &mut Program, plan: WeightPlan, v: &Variant) -> Vec<Use> {
    p.consts.extend(plan.consts);
    p.params.extend(plan.params);
    let tex = v.storage == Storage::Texture;
    let mut uses = Vec::new();
    if tex || v.texel_formats.contains_key("weight") {
        let b = binding(v, "weight", TexelFormat::Rgba32Sint);
        let width = if b.alloc == TexelFormat::Rgba32Sint { plan.width } else { plan.width.map(|w| w * 4) };
        p.textures.push(TextureRes {
            name: "w",
            alloc: b.alloc,
            data: TexData::Int(plan.words.iter().map(|&w| w as i32).collect()),
            width,
        });
        uses.push(Use::read("w").through(b.bind));
    } else {
        p.buffers.push(input("w", Elem::U32, plan.words));
        uses.push(Use::read("w"));
    }
    for (name, key, data) in [("scales", "scales", plan.scales), ("zps", "zero_points", plan.zps)] {
        if tex {
            let b = binding(v, key, TexelFormat::R32Float);
            p.textures.push(TextureRes { name, alloc: b.alloc, data: TexData::Float(data), width: None });
            uses.push(Use::read(name).through(b.bind));
        } else {
            p.buffers.push(input(name, Elem::F32, f32_words(&data)));
            uses.push(Use::read(name));
        }
    }
    // LUTs stay in a buffer: ExecuTorch Vulkan has no palettized path whose texture layout to copy.
    p.buffers.push(input("lut", Elem::F32, f32_words(&plan.lut)));
    uses.push(Use::read("lut"));
    uses
}

pub(crate) fn weight_dtype(gpu: &Gpu, s: &Scheme) -> R<&'static str> {
    // ggml dequantizes in fp32 whatever the model dtype (the reference does too).
    if is_ggml(s) {
        Ok("f32")
    } else {
        dtype_of(gpu, s.dtype)
    }
}

fn dequant(gpu: &mut Gpu, s: &Scheme, wq: &Quantized, rows: &[u32], case: &OpCase) -> R<Outputs> {
    let wg = workgroup(gpu, &case.variant)?;
    let plan = weight_plan(s, wq, case.inject)?;
    let k = wq.shape[1];
    let mut p = Program { dtype: weight_dtype(gpu, s)?, ..Program::default() };
    let mut uses = weight_resources(&mut p, plan, &case.variant);
    p.params.push(("R", rows.len() as u32));
    p.buffers.push(input("rows", Elem::U32, if rows.is_empty() { vec![0] } else { rows.to_vec() }));
    p.buffers.push(output("out", Elem::F32, rows.len() * k));
    uses.push(Use::read("rows"));
    uses.push(Use::write("out"));
    p.dispatches.push(Dispatch { source: src::DEQUANT, entry: "dequant", uses, threads: (rows.len() * k) as u32, wg });
    if rows.is_empty() {
        return Ok(Outputs { shape: vec![0, k], ..Outputs::default() });
    }
    let r = launch(gpu, &p)?;
    Ok(Outputs { values: r.f32s("out"), shape: vec![rows.len(), k], timing: r.timing, ..Outputs::default() })
}

fn linear_w(gpu: &mut Gpu, s: &Scheme, x: &kernels_ref::tensor::Matrix, wq: &Quantized, case: &OpCase) -> R<Outputs> {
    let wg = workgroup(gpu, &case.variant)?;
    let plan = weight_plan(s, wq, case.inject)?;
    let (m, n) = (x.rows, wq.shape[0]);
    // The activations are T tensors; ggml's f32 kernels take them as f32 of the T values.
    let dtype = dtype_of(gpu, s.dtype)?;
    let mut p = Program { dtype, ..Program::default() };
    let mut uses = weight_resources(&mut p, plan, &case.variant);
    p.params.push(("M", m as u32));
    p.buffers.push(input("x", Elem::F32, in_dtype(s.dtype, &x.data)));
    p.buffers.push(output("y", Elem::F32, m * n));
    uses.push(Use::read("x"));
    uses.push(Use::write("y"));
    p.dispatches.push(Dispatch { source: src::LINEAR_W, entry: "linear_w", uses, threads: (m * n) as u32, wg });
    let r = launch(gpu, &p)?;
    Ok(Outputs { values: r.f32s("y"), shape: vec![m, n], timing: r.timing, ..Outputs::default() })
}

fn linear_8da4w(
    gpu: &mut Gpu,
    s: &Scheme,
    x: &kernels_ref::tensor::Matrix,
    wq: &Quantized,
    case: &OpCase,
) -> R<Outputs> {
    let Family::W8da4w { flavor, .. } = s.family else { return no("not an 8da4w scheme") };
    let a = s.activation_scheme().ok_or_else(|| OpError::Unsupported("no activation scheme".into()))?;
    check_x(&a, x)?;
    let wg = workgroup(gpu, &case.variant)?;
    let aplan = act_plan(gpu, &a, &case.variant, case.inject)?;
    let wplan = weight_plan(s, wq, case.inject)?;
    let (m, k, n) = (x.rows, x.cols, wq.shape[0]);
    let g = wq.scale_shape[1];
    let mut p = Program {
        dtype: dtype_of(gpu, s.dtype)?,
        buffers: vec![input("x", Elem::F32, in_dtype(s.dtype, &x.data))],
        ..Program::default()
    };
    act_launches(&mut p, &aplan, m, k, wg);
    let mut uses = weight_resources(&mut p, wplan, &case.variant);
    // The act launches bound the qparams under `ascale` / `azp`; the linear launch reads them
    // through the same (read) binding as the act quantize launch.
    let act_reads: Vec<Use> = p.dispatches[1].uses[1..3].to_vec();
    p.params.push(("M", m as u32));
    p.consts.push((
        "DQ",
        match flavor {
            W8da4wFlavor::Ao => 0,
            W8da4wFlavor::Xnn => 1,
            W8da4wFlavor::Vk => 2,
        },
    ));
    p.buffers.push(output("acc", Elem::I32, m * n * g));
    p.buffers.push(output("y", Elem::F32, m * n));
    p.buffers.push(output("zp_seen", Elem::F32, m));
    p.buffers.push(output("sc_seen", Elem::F32, m));
    uses.extend(act_reads);
    uses.push(Use { name: "q", access: Access::Read, bind: None });
    uses.push(Use { name: "xh", access: Access::Read, bind: None });
    uses.push(Use::write("acc"));
    uses.push(Use::write("y"));
    uses.push(Use::write("zp_seen"));
    uses.push(Use::write("sc_seen"));
    p.dispatches.push(Dispatch { source: src::LINEAR_DQ8CA, entry: "linear_dq8ca", uses, threads: (m * n) as u32, wg });
    let r = launch(gpu, &p)?;
    let mut out = Outputs { values: r.f32s("y"), shape: vec![m, n], timing: r.timing, ..Outputs::default() };
    out.ints.insert("act_q".into(), r.i64s("q"));
    out.ints.insert("act_zp".into(), r.f32s("zp_seen").iter().map(|&z| zp_int(z)).collect());
    out.ints.insert("acc".into(), r.i64s("acc"));
    out.floats.insert("act_scales".into(), r.f32s("sc_seen"));
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Quantize

fn quantize(gpu: &mut Gpu, s: &Scheme, w: &kernels_ref::tensor::Matrix, v: &Variant) -> R<Outputs> {
    kernels_ref::scheme::check_finite(s, w).map_err(|e| OpError::BadCase(e.to_string()))?;
    s.granularity().check(&s.to_string(), w.cols).map_err(|e| OpError::BadCase(e.to_string()))?;
    if w.rows == 0 || w.cols == 0 {
        return Err(OpError::BadCase("empty weights".into()));
    }
    if let Family::Q8_0 = s.family {
        return q8_0(gpu, s, w, 0, v);
    }
    let wg = workgroup(gpu, v)?;
    let n = w.rows * w.cols;
    let (gl, has_zp, consts, entry) = match s.family {
        Family::Mlx { bits, group, .. } => (
            group,
            true,
            // affine_q shares the file: its constants are declared, unused.
            vec![("BITS", bits as u32), ("MAPPING", 0), ("EPS_BITS", 0), ("STORED_BF16", 0), ("PT32", 0)],
            "mlx_q",
        ),
        Family::Torchao { bits, gran, mapping } => {
            let gl = match gran {
                Granularity::Tensor => n,
                g => g.group_len(w.cols),
            };
            let mp = match mapping {
                AoMapping::Sym => 0,
                AoMapping::SymNce => 1,
                AoMapping::Asym => 2,
            };
            let eps = (s.dtype.round(s.dtype.smallest_normal()) as f32).to_bits();
            (
                gl,
                mapping == AoMapping::Asym,
                vec![("BITS", bits as u32), ("MAPPING", mp), ("EPS_BITS", eps), ("STORED_BF16", 0), ("PT32", 0)],
                "affine_q",
            )
        }
        Family::W8da4w { flavor, group, .. } => {
            let xnn = flavor == W8da4wFlavor::Xnn;
            let pt32 = xnn && promote(s.dtype, DType::BF16) != s.dtype;
            let eps = (s.dtype.round(s.dtype.smallest_normal()) as f32).to_bits();
            (
                group,
                false,
                vec![
                    ("BITS", 4),
                    ("MAPPING", 0),
                    ("EPS_BITS", eps),
                    ("STORED_BF16", xnn as u32),
                    ("PT32", pt32 as u32),
                ],
                "affine_q",
            )
        }
        _ => return no("no GPU quantizer for this family"),
    };
    let ng = n / gl;
    let p = Program {
        dtype: dtype_of(gpu, s.dtype)?,
        consts,
        params: vec![("NG", ng as u32), ("GL", gl as u32)],
        buffers: vec![
            input("x", Elem::F32, in_dtype(s.dtype, &w.data)),
            output("q", Elem::I32, n),
            output("values", Elem::F32, n),
            output("scales", Elem::F32, ng),
            output("zps", Elem::F32, ng),
        ],
        dispatches: vec![Dispatch {
            source: src::QUANTIZE,
            entry,
            uses: vec![Use::read("x"), Use::write("q"), Use::write("values"), Use::write("scales"), Use::write("zps")],
            threads: ng as u32,
            wg,
        }],
        ..Program::default()
    };
    let r = launch(gpu, &p)?;
    let mut out =
        Outputs { values: r.f32s("values"), shape: vec![w.rows, w.cols], timing: r.timing, ..Outputs::default() };
    out.ints.insert("q".into(), r.i64s("q"));
    out.floats.insert("scales".into(), r.f32s("scales"));
    if has_zp {
        out.floats.insert("zero_points".into(), r.f32s("zps").iter().map(|&z| z + 0.0).collect());
    }
    Ok(out)
}

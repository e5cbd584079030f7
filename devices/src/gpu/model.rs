//! A whole model on the GPU runner: [`GpuSession`], what [`GpuDevice::load_model`] returns.
//!
//! **Storage.** Every tensor lives on the device for the whole session, as a linear array of
//! 4-value texels in a 2-D storage texture (texel `i` at `(i % width, i / width)`), read and
//! written through the accessors `context.rs` generates (`NAME_ld4`, `NAME_st`):
//!
//! - weights, uploaded once at load: fp32 matrices as `rgba32float` (4 consecutive `k` of a row
//!   per texel); quantized ones exactly as the op path stores them in texture storage
//!   ([`ops::weight_plan`]: the scheme's packed words in `rgba32sint`, stored scales and
//!   zero-points in `r32float`, LUTs in a buffer), decoded by `weights.wgsl`; norms and biases as
//!   `rgba32float`;
//! - activations (`[T, width]` row-major, grown to the largest `T` fed), the two residual
//!   streams (ping-pong: a texture cannot be read and written by one dispatch), and the KV cache
//!   (per layer a K and a V texture of `[S, Hkv·Dh]`, grown by doubling with a device copy).
//!
//! Textures rather than storage buffers because CPU Vulkan drivers (lavapipe, the machine this
//! runner is tested on) turn every storage-buffer load into a per-lane scalar loop, while texel
//! fetches are vector gathers: the same kernels run 3-6× faster. On GPUs either is fine.
//!
//! **Kernels** (`kernels/model_*.wgsl`, completed by the generated header like every op kernel):
//! embedding gather (fp32 table, or a quantized one through `deq`), RMSNorm, (Qwen3) per-head
//! q/k RMSNorm fused with RoPE (both pairings; the cos/sin table is computed on the host in f64
//! from `rope_inv_freq` at the absolute positions and uploaded as f32), causal GQA attention
//! over the cache with an online f32 softmax, SwiGLU, the tiled linear (fp32 or any weight-only
//! family the op path supports, bias and residual add fused), its 8da4w integer twin after the
//! op path's own activation kernels (`act_choose`, `act_quantize`), and the cast of a linear's
//! input to an @f16 / @bf16 scheme's T. The linears reuse each decoded weight for 8 tokens and
//! share each loaded activation texel across 8 lanes (4 on 4-lane subgroups) with subgroup
//! shuffles, so the runner needs subgroups (of at least 4 lanes).
//!
//! **Submissions.** A prefill records one command buffer for the embedding, one per layer and
//! one for the head, submits them all, then waits for each in turn (so no single wait spans
//! more than a layer: a 512-token prefill on lavapipe never nears the queue timeout); a forward
//! of a few tokens (decoding) is a single submission. Prefills longer than the activation
//! textures hold run as consecutive chunks. Only the
//! logits are read back; they are poisoned before the forward, and a sentinel left in them is
//! a failure (a launch that silently did nothing).

use super::context::{
    src, Access, BufKind, BufferRes, Dispatch, Elem, Gpu, Kernel, Program, TexData, TextureRes, Use, POISON_F32,
    QUEUE_TIMEOUT,
};
use super::ops::{self, ActPlan, ActRes};
use crate::case::{Op, Storage, TexelFormat, Variant};
use crate::device::{DeviceError, ModelSession, Support};
use kernels_ref::ops::RopeStyle;
use kernels_ref::scheme::{Family, Quantized, Scheme, W8da4wFlavor};
use kernels_ref::tensor::Matrix;
use models::{LlamaConfig, QModel, QTensor};
use std::sync::Arc;

/// The kernels, as fragments the generated header completes.
mod kernel_src {
    /// fp32-weight tiled linear.
    pub const LINEAR_F32: &str =
        concat!(include_str!("kernels/model_wf32.wgsl"), include_str!("kernels/model_linear.wgsl"));
    /// Quantized-weight tiled linear.
    pub const LINEAR_Q: &str = concat!(
        include_str!("kernels/weights.wgsl"),
        include_str!("kernels/model_wq.wgsl"),
        include_str!("kernels/model_linear.wgsl")
    );
    /// 8da4w integer linear.
    pub const DQ8CA: &str = concat!(
        include_str!("kernels/weights.wgsl"),
        include_str!("kernels/model_wq.wgsl"),
        include_str!("kernels/model_dq8ca.wgsl")
    );
    /// fp32 embedding gather.
    pub const EMBED: &str = include_str!("kernels/model_embed.wgsl");
    /// Quantized embedding gather.
    pub const EMBED_Q: &str = concat!(include_str!("kernels/weights.wgsl"), include_str!("kernels/model_embed_q.wgsl"));
    /// RMSNorm.
    pub const NORM: &str = include_str!("kernels/model_norm.wgsl");
    /// q/k norm + RoPE.
    pub const ROPE: &str = include_str!("kernels/model_rope.wgsl");
    /// Attention.
    pub const ATTN: &str = include_str!("kernels/model_attn.wgsl");
    /// SwiGLU.
    pub const SWIGLU: &str = include_str!("kernels/model_swiglu.wgsl");
    /// Cast to T.
    pub const CAST: &str = include_str!("kernels/model_cast.wgsl");
}

/// Texture width (texels) of activations, norms, biases and the KV cache: fixed, since it is a
/// constant of every kernel that binds them. 1024 texels × 16 bytes is a multiple of the 256
/// bytes a texture↔buffer copy needs per row.
const ACT_W: u32 = 1024;
/// Texture width of weights (unless the op path's plan asks for one, as Vulkan's 4K×8N blocks do).
const WEIGHT_W: u32 = 4096;
/// Tokens per lane of the linears for prefill, and for a single token.
const RT_BIG: u32 = 8;
/// See [`RT_BIG`].
const RT_ONE: u32 = 1;
/// Lanes per workgroup of the linears and the attention (16 output texels = 64 rows).
const WG_TILE: u32 = 16;
/// Lanes per workgroup of the elementwise kernels.
const WG_ELEM: u32 = 64;
/// Lanes per workgroup of the op path's activation kernels.
const WG_ACT: u32 = 64;
/// Forwards of at most this many tokens are recorded into one submission (longer ones: one per
/// layer).
const ONE_SUBMISSION_TOKENS: usize = 16;
/// Smallest KV-cache capacity, in positions.
const MIN_CACHE: usize = 256;

type R<T> = Result<T, String>;

/// A storage texture holding a linear array of texels.
struct Tex {
    texture: wgpu::Texture,
    view: wgpu::TextureView,
    format: TexelFormat,
    width: u32,
    height: u32,
}

impl Tex {
    fn new(gpu: &Gpu, label: &str, format: TexelFormat, width: u32, texels: usize) -> R<Tex> {
        let height = (texels.max(1) as u64).div_ceil(width as u64);
        let max = gpu.limits.max_texture_dimension_2d as u64;
        if height > max || width as u64 > max {
            return Err(format!(
                "`{label}` needs {texels} texels: more than a {width}×{max} texture holds (max_texture_dimension_2d)"
            ));
        }
        let height = height as u32;
        let texture = gpu.device.create_texture(&wgpu::TextureDescriptor {
            label: Some(label),
            size: wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: super::context::wgpu_format(format),
            usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        });
        let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
        Ok(Tex { texture, view, format, width, height })
    }

    fn row_bytes(&self) -> u32 {
        self.width * self.format.texel_bytes() as u32
    }

    fn bytes(&self) -> u64 {
        self.row_bytes() as u64 * self.height as u64
    }

    /// Rows holding the first `texels` texels.
    fn rows_for(&self, texels: usize) -> u32 {
        (texels.max(1) as u64).div_ceil(self.width as u64).min(self.height as u64) as u32
    }

    /// Upload `bytes` from texel 0 (zero padded to whole rows).
    fn upload(&self, gpu: &Gpu, bytes: &[u8]) {
        let rb = self.row_bytes() as usize;
        let rows = bytes.len().div_ceil(rb).clamp(1, self.height as usize);
        let mut data = bytes[..bytes.len().min(rows * rb)].to_vec();
        data.resize(rows * rb, 0);
        gpu.queue.write_texture(
            self.copy_info(),
            &data,
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(rb as u32),
                rows_per_image: Some(rows as u32),
            },
            wgpu::Extent3d { width: self.width, height: rows as u32, depth_or_array_layers: 1 },
        );
    }

    fn copy_info(&self) -> wgpu::TexelCopyTextureInfo<'_> {
        wgpu::TexelCopyTextureInfo {
            texture: &self.texture,
            mip_level: 0,
            origin: wgpu::Origin3d::ZERO,
            aspect: wgpu::TextureAspect::All,
        }
    }
}

// wgpu takes little-endian bytes, the byte order of every platform it runs on.
fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

fn u32_bytes(v: &[u32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// An f32 vector or matrix as an `rgba32float` texture.
fn f32_tex(gpu: &Gpu, label: &str, width: u32, v: &[f32]) -> R<Tex> {
    let t = Tex::new(gpu, label, TexelFormat::Rgba32Float, width, v.len().div_ceil(4))?;
    t.upload(gpu, f32_bytes(v));
    Ok(t)
}

fn storage_buffer(gpu: &Gpu, label: &str, bytes: u64) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(16).div_ceil(16) * 16,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// How a kernel binds a resource (for assembling it; the resource itself is bound per launch).
#[derive(Clone, Copy)]
enum Slot {
    Tex(TexelFormat, u32),
    Buf(Elem),
}

/// A compiled kernel with the names of its params, in uniform order.
#[derive(Clone)]
struct KSpec {
    kernel: Arc<Kernel>,
    params: Vec<&'static str>,
    entry: &'static str,
}

/// What a kernel is assembled from.
struct KDesc {
    source: &'static str,
    entry: &'static str,
    dtype: &'static str,
    consts: Vec<(&'static str, u32)>,
    params: Vec<&'static str>,
    slots: Vec<(&'static str, Slot, Access)>,
    wg: u32,
}

fn build(gpu: &mut Gpu, d: KDesc) -> R<KSpec> {
    let mut prog = Program {
        consts: d.consts,
        dtype: d.dtype,
        params: d.params.iter().map(|&p| (p, 0)).collect(),
        ..Program::default()
    };
    for &(name, slot, _) in &d.slots {
        match slot {
            Slot::Tex(alloc, width) => {
                prog.textures.push(TextureRes { name, alloc, data: TexData::Written { values: 0 }, width: Some(width) })
            }
            Slot::Buf(elem) => {
                prog.buffers.push(BufferRes { name, elem, kind: BufKind::Output { words: 0, readback: false } })
            }
        }
    }
    let dispatch = Dispatch {
        source: d.source,
        entry: d.entry,
        uses: d.slots.iter().map(|&(name, _, access)| Use { name, access, bind: None }).collect(),
        threads: 0,
        wg: d.wg,
    };
    let kernel = gpu.kernel(&prog, &dispatch)?;
    Ok(KSpec { kernel, params: d.params, entry: d.entry })
}

const RD: Access = Access::Read;
const WR: Access = Access::Write;

fn act_tex(name: &'static str, access: Access) -> (&'static str, Slot, Access) {
    (name, Slot::Tex(TexelFormat::Rgba32Float, ACT_W), access)
}

/// A quantized tensor as the op path stores it in texture storage.
struct QWeights {
    words: Tex,
    scales: Tex,
    zps: Tex,
    lut: wgpu::Buffer,
    consts: Vec<(&'static str, u32)>,
    params: Vec<(&'static str, u32)>,
    words_width: u32,
}

impl QWeights {
    fn new(gpu: &Gpu, label: &str, q: &Quantized) -> Result<QWeights, ops::OpError> {
        let plan = ops::weight_plan(&q.scheme, q, None)?;
        let fail = |e: String| ops::OpError::Unsupported(e);
        let words_width = plan.width.unwrap_or(WEIGHT_W);
        let words =
            Tex::new(gpu, label, TexelFormat::Rgba32Sint, words_width, plan.words.len().div_ceil(4)).map_err(fail)?;
        words.upload(gpu, u32_bytes(&plan.words));
        let scales = Tex::new(gpu, label, TexelFormat::R32Float, WEIGHT_W, plan.scales.len()).map_err(fail)?;
        scales.upload(gpu, f32_bytes(&plan.scales));
        let zps = Tex::new(gpu, label, TexelFormat::R32Float, WEIGHT_W, plan.zps.len()).map_err(fail)?;
        zps.upload(gpu, f32_bytes(&plan.zps));
        let lut = storage_buffer(gpu, label, plan.lut.len() as u64 * 4);
        gpu.queue.write_buffer(&lut, 0, f32_bytes(&plan.lut));
        Ok(QWeights { words, scales, zps, lut, consts: plan.consts, params: plan.params, words_width })
    }

    fn slots(&self) -> Vec<(&'static str, Slot, Access)> {
        vec![
            ("w", Slot::Tex(TexelFormat::Rgba32Sint, self.words_width), RD),
            ("scales", Slot::Tex(TexelFormat::R32Float, WEIGHT_W), RD),
            ("zps", Slot::Tex(TexelFormat::R32Float, WEIGHT_W), RD),
            ("lut", Slot::Buf(Elem::F32), RD),
        ]
    }

    fn binds(&self) -> Vec<Bind<'_>> {
        vec![Bind::T(&self.words), Bind::T(&self.scales), Bind::T(&self.zps), Bind::B(&self.lut)]
    }

    fn bytes(&self) -> u64 {
        self.words.bytes() + self.scales.bytes() + self.zps.bytes() + self.lut.size()
    }
}

/// How a linear's weights are stored and which kernels run it.
enum LinW {
    /// fp32 weights.
    F32 { w: Tex },
    /// Weight-only quantized (and 8da4w's torchao flavour, whose float path is weight-only).
    Quant { q: QWeights },
    /// 8da4w through the integer kernel.
    Dq8 { q: QWeights, zp_elem: Elem },
}

/// One linear: weights, shape, compute dtype and its kernels for [`RT_ONE`] and [`RT_BIG`].
struct Linear {
    w: LinW,
    n: usize,
    k: usize,
    /// The dtype its input is rounded to before it runs (`f32`: none).
    dtype: &'static str,
    kernels: [KSpec; 2],
}

impl Linear {
    fn new(gpu: &mut Gpu, label: &str, t: &QTensor, act: Option<&ActPlanOf>) -> Result<Linear, ops::OpError> {
        let [n, k] = t.shape();
        let fail = |e: String| ops::OpError::Failed(e);
        let (w, dtype, source, mut consts, extra_params, slots_w) = match t {
            QTensor::F32(m) => {
                let w = f32_tex(gpu, label, WEIGHT_W, &m.data).map_err(ops::OpError::Unsupported)?;
                let slots = vec![("wf", Slot::Tex(TexelFormat::Rgba32Float, WEIGHT_W), RD)];
                (LinW::F32 { w }, "f32", kernel_src::LINEAR_F32, vec![], vec!["N", "K"], slots)
            }
            QTensor::Quant(q) => {
                let s = q.scheme;
                let dtype = ops::dtype_of(gpu, s.dtype)?;
                let qw = QWeights::new(gpu, label, q)?;
                let consts = qw.consts.clone();
                let params: Vec<&'static str> = qw.params.iter().map(|p| p.0).collect();
                let slots = qw.slots();
                // The integer kernel where the reference's activation scheme is this weight's
                // own (else the weight-only kernel over the dequantized activations).
                let int_path = match (s.family, act) {
                    (Family::W8da4w { flavor: f @ (W8da4wFlavor::Xnn | W8da4wFlavor::Vk), group, .. }, Some(a))
                        if s.activation_scheme() == Some(a.scheme) =>
                    {
                        Some((f, group))
                    }
                    _ => None,
                };
                if let Some((flavor, group)) = int_path {
                    if group % 4 != 0 {
                        return Err(ops::OpError::Unsupported(format!(
                            "the model's 8da4w kernel reads activation codes 4 at a time and needs a group size that is a multiple of 4, not {group}"
                        )));
                    }
                    let zp_elem = match act.map(|a| &a.plan.zp) {
                        Some(ActRes::Buffer(e)) => *e,
                        _ => return Err(ops::OpError::Unsupported("8da4w zero-points in textures".into())),
                    };
                    let dq = if flavor == W8da4wFlavor::Vk { 2 } else { 1 };
                    let mut c = consts;
                    c.push(("DQ", dq));
                    (LinW::Dq8 { q: qw, zp_elem }, dtype, kernel_src::DQ8CA, c, params, slots)
                } else {
                    (LinW::Quant { q: qw }, dtype, kernel_src::LINEAR_Q, consts, params, slots)
                }
            }
        };
        let mut params: Vec<&'static str> = extra_params;
        params.extend(["M", "YOFF", "BIAS", "RES"]);
        let mut slots = Vec::new();
        if let LinW::Dq8 { zp_elem, .. } = &w {
            slots.push(("aq", Slot::Tex(TexelFormat::Rgba32Sint, ACT_W), RD));
            slots.push(("ascale", Slot::Buf(Elem::F32), RD));
            slots.push(("azp", Slot::Buf(*zp_elem), RD));
        } else {
            slots.push(act_tex("x", RD));
        }
        slots.extend(slots_w);
        slots.extend([act_tex("bias", RD), act_tex("res", RD), act_tex("y", WR)]);
        let entry = if matches!(w, LinW::Dq8 { .. }) { "model_dq8ca" } else { "model_linear" };
        let quad = quad(&consts, &lin_params(&w), k);
        consts.push(("HOIST", hoist(&consts, &lin_params(&w)) as u32));
        consts.push(("QUAD", 0));
        consts.push(("RT", 0));
        let mut kernels = Vec::new();
        for rt in [RT_ONE, RT_BIG] {
            for c in consts.iter_mut() {
                match c.0 {
                    "RT" => c.1 = rt,
                    // 16 decoded weights per lane help a single token; with 8 tokens per lane the
                    // extra live values spill (measured on lavapipe: prefill 2× slower).
                    "QUAD" => c.1 = (quad && rt == RT_ONE) as u32,
                    _ => {}
                }
            }
            kernels.push(
                build(
                    gpu,
                    KDesc {
                        source,
                        entry,
                        dtype,
                        consts: consts.clone(),
                        params: params.clone(),
                        slots: slots.clone(),
                        wg: WG_TILE,
                    },
                )
                .map_err(fail)?,
            );
        }
        let kernels = [kernels[0].clone(), kernels[1].clone()];
        Ok(Linear { w, n, k, dtype, kernels })
    }

    fn bytes(&self) -> u64 {
        match &self.w {
            LinW::F32 { w } => w.bytes(),
            LinW::Quant { q } | LinW::Dq8 { q, .. } => q.bytes(),
        }
    }

    fn weight_params(&self) -> Vec<(&'static str, u32)> {
        match &self.w {
            LinW::F32 { .. } => vec![("N", self.n as u32), ("K", self.k as u32)],
            LinW::Quant { q } | LinW::Dq8 { q, .. } => q.params.clone(),
        }
    }
}

fn lin_params(w: &LinW) -> Vec<(&'static str, u32)> {
    match w {
        LinW::F32 { .. } => Vec::new(),
        LinW::Quant { q } | LinW::Dq8 { q, .. } => q.params.clone(),
    }
}

/// Whether model_wq.wgsl's `wrow16` can decode this tensor 16 weights at a time: K % 16 == 0, the
/// 16 codes in one group, and (bit streams) a bit width that keeps them in aligned words. fp32
/// weights need K % 16 == 0 only.
fn quad(consts: &[(&'static str, u32)], params: &[(&'static str, u32)], k: usize) -> bool {
    let get = |v: &[(&'static str, u32)], name: &str| v.iter().find(|p| p.0 == name).map(|p| p.1);
    if k % 16 != 0 {
        return false;
    }
    let Some(pack) = get(consts, "PACK") else { return true };
    let fam = get(consts, "FAM").unwrap_or(3);
    let bits = get(consts, "BITS").unwrap_or(0);
    let gl = get(params, "GL").unwrap_or(1);
    let faults = ["F_SWAP", "F_TRANS", "F_DROP"].iter().any(|f| get(consts, f).unwrap_or(0) != 0);
    fam != 3 && !faults && gl % 16 == 0 && (!(pack == 3 || pack == 4) || matches!(bits, 2 | 4 | 8))
}

/// Whether model_linear.wgsl can fetch each row's qparams once per chunk of 32 k's
/// (`chunk_qp`): quantized weights whose groups hold whole chunks (GL % 32 == 0), no LUT, no fault.
fn hoist(consts: &[(&'static str, u32)], params: &[(&'static str, u32)]) -> bool {
    let get = |v: &[(&'static str, u32)], name: &str| v.iter().find(|p| p.0 == name).map(|p| p.1);
    let (Some(fam), Some(gl)) = (get(consts, "FAM"), get(params, "GL")) else { return false };
    let faults = ["F_SWAP", "F_TRANS", "F_DROP"].iter().any(|f| get(consts, f).unwrap_or(0) != 0);
    fam != 3 && !faults && gl % 32 == 0
}

/// The plan's dynamic activation scheme and where its qparams live.
struct ActPlanOf {
    scheme: Scheme,
    plan: ActPlan,
    dtype: &'static str,
    choose: KSpec,
    quantize: KSpec,
}

/// One decoder layer on the device.
struct Layer {
    attn_norm: Tex,
    ffn_norm: Tex,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    w_gate: Linear,
    w_up: Linear,
    w_down: Linear,
    bq: Option<Tex>,
    bk: Option<Tex>,
    bv: Option<Tex>,
    q_norm: Option<Tex>,
    k_norm: Option<Tex>,
}

/// The embedding table.
enum Embed {
    F32(Tex),
    Quant(Box<QWeights>),
}

/// The kernels that do not depend on a weight.
struct Kernels {
    norm: KSpec,
    rope: KSpec,
    attn: KSpec,
    swiglu: KSpec,
    /// Cast kernels by dtype (`f16`, `bf16`).
    casts: Vec<(&'static str, KSpec)>,
}

/// Activation textures, sized for `cap` tokens.
struct Acts {
    cap: usize,
    x: [Tex; 2],
    h: Tex,
    cast: Tex,
    q: Tex,
    qr: Tex,
    kt: Tex,
    o: Tex,
    g: Tex,
    u: Tex,
    gu: Tex,
    logits: Tex,
    cs: Tex,
    ids: wgpu::Buffer,
    read: wgpu::Buffer,
    act: Option<ActBufs>,
}

/// The buffers of the op path's activation kernels (8da4w), sized for `cap` tokens of the widest
/// linear input.
struct ActBufs {
    x: wgpu::Buffer,
    q: wgpu::Buffer,
    xh: wgpu::Buffer,
    xh_tex: Tex,
    aq: Tex,
    ascale: wgpu::Buffer,
    azp: wgpu::Buffer,
    qzp: wgpu::Buffer,
    qsc: wgpu::Buffer,
}

/// The KV cache: per layer a K and a V texture of `cap` positions.
struct Kv {
    cap: usize,
    k: Vec<Tex>,
    v: Vec<Tex>,
}

/// What a launch binds at one binding.
#[derive(Clone, Copy)]
enum Bind<'a> {
    T(&'a Tex),
    B(&'a wgpu::Buffer),
}

/// One step of a submission.
enum Step<'a> {
    Run { k: &'a KSpec, params: Vec<u32>, binds: Vec<Bind<'a>>, groups: u32 },
    TexToBuf { tex: &'a Tex, buf: &'a wgpu::Buffer, texels: usize },
    BufToTex { buf: &'a wgpu::Buffer, tex: &'a Tex, texels: usize },
}

/// A model loaded on a GPU adapter (see the module doc).
pub struct GpuSession<'g> {
    gpu: &'g mut Gpu,
    st: State,
}

impl std::fmt::Debug for GpuSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuSession")
            .field("device", &self.st.device)
            .field("plan", &self.st.plan)
            .field("len", &self.st.len)
            .finish_non_exhaustive()
    }
}

struct State {
    device: String,
    plan: String,
    cfg: LlamaConfig,
    embed: Embed,
    embed_kernel: KSpec,
    layers: Vec<Layer>,
    final_norm: Tex,
    head: Linear,
    act: Option<ActPlanOf>,
    k: Kernels,
    /// A 1-texel texture bound where a kernel's optional input is absent.
    dummy: Tex,
    acts: Option<Acts>,
    kv: Kv,
    len: usize,
    weight_bytes: u64,
}

fn unsupported(device: &str, op: Op, scheme: String, reason: String) -> DeviceError {
    DeviceError::Unsupported { device: device.to_string(), op, scheme, reason }
}

/// Load `model` onto `gpu` (see the module doc). Schemes whose linear (or embedding) the op path
/// refuses are refused with the op path's reason.
pub(crate) fn load<'g>(gpu: &'g mut Gpu, device: &str, model: &QModel) -> Result<GpuSession<'g>, DeviceError> {
    let c = &model.config;
    let plan = model.plan.label();
    let no = |why: String| unsupported(device, Op::Linear, plan.clone(), why);
    if !gpu.features.contains(wgpu::Features::SUBGROUP) || gpu.adapter.get_info().subgroup_min_size < 4 {
        return Err(no(format!(
            "the model kernels share loaded texels across lanes with subgroup shuffles and need subgroups of at least 4 lanes (SUBGROUP: {}, subgroup sizes {}..={})",
            gpu.features.contains(wgpu::Features::SUBGROUP),
            gpu.adapter.get_info().subgroup_min_size,
            gpu.adapter.get_info().subgroup_max_size
        )));
    }
    for f in [TexelFormat::Rgba32Float, TexelFormat::Rgba32Sint, TexelFormat::R32Float] {
        if !gpu.storage_format_ok(f) {
            return Err(no(format!(
                "the model tensors live in {f:?} storage textures, which this adapter does not offer"
            )));
        }
    }
    let (d, qw, kw, f, v, dh) =
        (c.hidden_size, c.q_width(), c.kv_width(), c.intermediate_size, c.vocab_size, c.head_dim);
    if [d, qw, kw, f, v].iter().any(|x| x % 4 != 0) || dh % 8 != 0 {
        return Err(no(format!(
            "the model kernels work on texels of 4 values: widths D {d}, Hq·Dh {qw}, Hkv·Dh {kw}, F {f}, V {v} must be multiples of 4 and head_dim {dh} of 8"
        )));
    }
    let tex_variant = Variant { storage: Storage::Texture, ..Variant::default() };
    for (what, s, op) in [("linear", model.plan.linear, Op::Linear), ("head", model.plan.head, Op::Linear)] {
        if let Some(s) = s {
            if let Support::Unsupported(r) = ops::support(gpu, op, &s, &tex_variant) {
                return Err(unsupported(device, op, s.to_string(), format!("{what}: {r}")));
            }
        }
    }
    if let Some(s) = model.plan.embed {
        if let Support::Unsupported(r) = ops::support(gpu, Op::Embedding, &s, &tex_variant) {
            return Err(unsupported(device, Op::Embedding, s.to_string(), format!("embedding: {r}")));
        }
    }
    // Refusals (a weight the op path cannot store, a tensor too large for a texture) come back
    // beside the scoped result; device failures through it.
    let mut refused = None;
    let st = gpu
        .scoped(|gpu| {
            let st = match load_state(gpu, device, model) {
                Ok(st) => Some(st),
                Err(ops::OpError::Failed(e)) => return Err(e),
                Err(e) => {
                    refused = Some(e);
                    None
                }
            };
            // Flush the uploads and wait for them, so that running out of memory shows here.
            gpu.queue.submit([]);
            gpu.device
                .poll(wgpu::PollType::Wait { submission_index: None, timeout: Some(QUEUE_TIMEOUT) })
                .map_err(|e| format!("waiting for the uploads: {e}"))?;
            Ok(st)
        })
        .map_err(|detail| DeviceError::Failed { device: device.to_string(), detail })?;
    match (st, refused) {
        (Some(st), _) => Ok(GpuSession { gpu, st }),
        (None, Some(ops::OpError::BadCase(r))) => Err(DeviceError::Model(models::ModelError::Input(r))),
        (None, Some(ops::OpError::Unsupported(r))) => Err(no(r)),
        (None, _) => Err(DeviceError::Failed {
            device: device.to_string(),
            detail: "internal: load refused without a reason".into(),
        }),
    }
}

fn load_state(gpu: &mut Gpu, device: &str, model: &QModel) -> Result<State, ops::OpError> {
    let c = model.config.clone();
    let fail = ops::OpError::Failed;
    let unsup = ops::OpError::Unsupported;
    let act = match model.plan.activation() {
        Some(a) => {
            let plan = ops::act_plan(gpu, &a, &Variant::default(), None)?;
            let dtype = ops::dtype_of(gpu, a.dtype)?;
            let (ascale, azp) = match (&plan.scale, &plan.zp) {
                (ActRes::Buffer(s), ActRes::Buffer(z)) => (*s, *z),
                _ => return Err(unsup("activation qparams in textures".into())),
            };
            let consts = vec![("FLAVOR", plan.flavor), ("EPS_BITS", plan.eps_bits)];
            let params = vec!["M", "K"];
            let choose = build(
                gpu,
                KDesc {
                    source: src::ACT_CHOOSE,
                    entry: "choose_qparams",
                    dtype,
                    consts: consts.clone(),
                    params: params.clone(),
                    slots: vec![
                        ("x", Slot::Buf(Elem::F32), RD),
                        ("ascale", Slot::Buf(ascale), WR),
                        ("azp", Slot::Buf(azp), WR),
                    ],
                    wg: WG_ACT,
                },
            )
            .map_err(fail)?;
            let quantize = build(
                gpu,
                KDesc {
                    source: src::ACT_QUANTIZE,
                    entry: "quantize",
                    dtype,
                    consts,
                    params,
                    slots: vec![
                        ("x", Slot::Buf(Elem::F32), RD),
                        ("ascale", Slot::Buf(ascale), RD),
                        ("azp", Slot::Buf(azp), RD),
                        ("q", Slot::Buf(Elem::I32), WR),
                        ("xh", Slot::Buf(Elem::F32), WR),
                        ("qzp", Slot::Buf(Elem::F32), WR),
                        ("qsc", Slot::Buf(Elem::F32), WR),
                    ],
                    wg: WG_ACT,
                },
            )
            .map_err(fail)?;
            Some(ActPlanOf { scheme: a, plan, dtype, choose, quantize })
        }
        None => None,
    };
    let mut weight_bytes = 0u64;
    let vec_tex = |gpu: &Gpu, label: &str, v: &[f32], bytes: &mut u64| -> Result<Tex, ops::OpError> {
        let t = f32_tex(gpu, label, ACT_W, v).map_err(unsup)?;
        *bytes += t.bytes();
        Ok(t)
    };
    let mut layers = Vec::with_capacity(c.n_layers);
    for (i, l) in model.layers.iter().enumerate() {
        let mut lin = |name: &str, t: &QTensor| -> Result<Linear, ops::OpError> {
            let lin = Linear::new(gpu, &format!("layer {i} {name}"), t, act.as_ref())?;
            weight_bytes += lin.bytes();
            Ok(lin)
        };
        let (wq, wk, wv, wo) = (lin("wq", &l.wq)?, lin("wk", &l.wk)?, lin("wv", &l.wv)?, lin("wo", &l.wo)?);
        let (w_gate, w_up, w_down) = (lin("w_gate", &l.w_gate)?, lin("w_up", &l.w_up)?, lin("w_down", &l.w_down)?);
        let mut opt = |name: &str, v: &Option<Vec<f32>>| -> Result<Option<Tex>, ops::OpError> {
            v.as_ref().map(|v| vec_tex(gpu, &format!("layer {i} {name}"), v, &mut weight_bytes)).transpose()
        };
        let (bq, bk, bv) = (opt("bq", &l.bq)?, opt("bk", &l.bk)?, opt("bv", &l.bv)?);
        let (q_norm, k_norm) = (opt("q_norm", &l.q_norm)?, opt("k_norm", &l.k_norm)?);
        layers.push(Layer {
            attn_norm: vec_tex(gpu, "attn_norm", &l.attn_norm, &mut weight_bytes)?,
            ffn_norm: vec_tex(gpu, "ffn_norm", &l.ffn_norm, &mut weight_bytes)?,
            wq,
            wk,
            wv,
            wo,
            w_gate,
            w_up,
            w_down,
            bq,
            bk,
            bv,
            q_norm,
            k_norm,
        });
    }
    let final_norm = vec_tex(gpu, "final_norm", &model.final_norm, &mut weight_bytes)?;
    let head = Linear::new(gpu, "head", &model.head, act.as_ref())?;
    weight_bytes += head.bytes();
    let (embed, embed_kernel) = match &model.embed {
        QTensor::F32(m) => {
            let t = f32_tex(gpu, "embed", WEIGHT_W, &m.data).map_err(unsup)?;
            weight_bytes += t.bytes();
            let k = build(
                gpu,
                KDesc {
                    source: kernel_src::EMBED,
                    entry: "model_embed",
                    dtype: "f32",
                    consts: vec![],
                    params: vec!["M", "D"],
                    slots: vec![
                        ("table", Slot::Tex(TexelFormat::Rgba32Float, WEIGHT_W), RD),
                        ("ids", Slot::Buf(Elem::U32), RD),
                        act_tex("y", WR),
                    ],
                    wg: WG_ELEM,
                },
            )
            .map_err(fail)?;
            (Embed::F32(t), k)
        }
        QTensor::Quant(q) => {
            let qw = QWeights::new(gpu, "embed", q)?;
            weight_bytes += qw.bytes();
            let mut slots = qw.slots();
            slots.extend([("ids", Slot::Buf(Elem::U32), RD), act_tex("y", WR)]);
            let mut params: Vec<&'static str> = qw.params.iter().map(|p| p.0).collect();
            params.push("M");
            let k = build(
                gpu,
                KDesc {
                    source: kernel_src::EMBED_Q,
                    entry: "model_embed_q",
                    dtype: ops::weight_dtype(gpu, &q.scheme)?,
                    consts: qw.consts.clone(),
                    params,
                    slots,
                    wg: WG_ELEM,
                },
            )
            .map_err(fail)?;
            (Embed::Quant(Box::new(qw)), k)
        }
    };
    let k = kernels(gpu, &c, &layers, &head).map_err(fail)?;
    let dummy = f32_tex(gpu, "dummy", ACT_W, &[0.0; 4]).map_err(unsup)?;
    Ok(State {
        device: device.to_string(),
        plan: model.plan.label(),
        cfg: c,
        embed,
        embed_kernel,
        layers,
        final_norm,
        head,
        act,
        k,
        dummy,
        acts: None,
        kv: Kv { cap: 0, k: Vec::new(), v: Vec::new() },
        len: 0,
        weight_bytes,
    })
}

fn kernels(gpu: &mut Gpu, c: &LlamaConfig, layers: &[Layer], head: &Linear) -> R<Kernels> {
    let dh4 = (c.head_dim / 4) as u32;
    let elem = |gpu: &mut Gpu, source, entry, params: Vec<&'static str>, slots| {
        build(gpu, KDesc { source, entry, dtype: "f32", consts: vec![], params, slots, wg: WG_ELEM })
    };
    let norm = elem(
        gpu,
        kernel_src::NORM,
        "model_rmsnorm",
        vec!["M", "D", "EPS"],
        vec![act_tex("x", RD), act_tex("nw", RD), act_tex("y", WR)],
    )?;
    let swiglu = elem(
        gpu,
        kernel_src::SWIGLU,
        "model_swiglu",
        vec!["N4"],
        vec![act_tex("g", RD), act_tex("u", RD), act_tex("y", WR)],
    )?;
    let rope = build(
        gpu,
        KDesc {
            source: kernel_src::ROPE,
            entry: "model_rope",
            dtype: "f32",
            consts: vec![("DH4", dh4), ("HALF", (c.rope_style == RopeStyle::Half) as u32)],
            params: vec!["M", "HQ", "HKV", "S0", "QW4", "KW4", "EPS", "QKN"],
            slots: vec![
                act_tex("q", RD),
                act_tex("k", RD),
                act_tex("qo", WR),
                act_tex("kc", WR),
                act_tex("cs", RD),
                act_tex("qn", RD),
                act_tex("kn", RD),
            ],
            wg: WG_ELEM,
        },
    )?;
    let attn = build(
        gpu,
        KDesc {
            source: kernel_src::ATTN,
            entry: "model_attn",
            dtype: "f32",
            consts: vec![("DH4", dh4)],
            params: vec!["M", "S0", "HQ", "HKV", "QW4", "KW4", "SCALE"],
            slots: vec![act_tex("q", RD), act_tex("kc", RD), act_tex("vc", RD), act_tex("o", WR)],
            wg: WG_TILE,
        },
    )?;
    let mut casts: Vec<(&'static str, KSpec)> = Vec::new();
    let all = layers.iter().flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]).chain([head]);
    for lin in all {
        let t = lin.dtype;
        if t != "f32" && !casts.iter().any(|(d, _)| *d == t) {
            let k = build(
                gpu,
                KDesc {
                    source: kernel_src::CAST,
                    entry: "model_cast",
                    dtype: t,
                    consts: vec![],
                    params: vec!["N4"],
                    slots: vec![act_tex("x", RD), act_tex("y", WR)],
                    wg: WG_ELEM,
                },
            )?;
            casts.push((t, k));
        }
    }
    Ok(Kernels { norm, rope, attn, swiglu, casts })
}

fn groups(threads: usize, wg: u32) -> u32 {
    (threads.max(1) as u64).div_ceil(wg as u64) as u32
}

impl State {
    fn cast_kernel(&self, dtype: &'static str) -> Option<&KSpec> {
        self.k.casts.iter().find(|(d, _)| *d == dtype).map(|(_, k)| k)
    }

    /// The most tokens one submission set runs: every `[T, width]` activation (the logits the
    /// widest) must fit a texture of `ACT_W × max_dim` texels; at most 1024, to bound memory.
    fn max_chunk(&self, max_dim: u32) -> usize {
        let c = &self.cfg;
        let widest = c.vocab_size.max(c.intermediate_size).max(c.hidden_size).max(c.q_width()).max(1);
        (max_dim as usize * ACT_W as usize * 4 / widest).clamp(1, 1024)
    }

    /// Widest linear input (K) of the model.
    fn max_k(&self) -> usize {
        let c = &self.cfg;
        c.hidden_size.max(c.q_width()).max(c.intermediate_size)
    }

    fn ensure_acts(&mut self, gpu: &Gpu, t: usize) -> R<()> {
        if self.acts.as_ref().is_some_and(|a| a.cap >= t) {
            return Ok(());
        }
        let cap = t.next_power_of_two().max(8);
        let c = &self.cfg;
        let (d, qw, kw, f, v) = (c.hidden_size, c.q_width(), c.kv_width(), c.intermediate_size, c.vocab_size);
        let mk = |label: &str, width: usize| Tex::new(gpu, label, TexelFormat::Rgba32Float, ACT_W, cap * width / 4);
        let logits = mk("logits", v)?;
        let read = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("logits read"),
            size: logits.bytes(),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let max_k = self.max_k();
        let act = match &self.act {
            Some(a) => {
                let texels = cap * max_k / 4;
                let xh_tex = Tex::new(gpu, "xh", TexelFormat::Rgba32Float, ACT_W, texels)?;
                let aq = Tex::new(gpu, "aq", TexelFormat::Rgba32Sint, ACT_W, texels)?;
                let bytes = xh_tex.bytes();
                let cap4 = cap.div_ceil(4) * 4;
                let zp_words = match a.plan.zp {
                    ActRes::Buffer(Elem::F16) => cap4.div_ceil(2),
                    _ => cap4,
                };
                Some(ActBufs {
                    x: storage_buffer(gpu, "act x", bytes),
                    q: storage_buffer(gpu, "act q", bytes),
                    xh: storage_buffer(gpu, "act xh", bytes),
                    xh_tex,
                    aq,
                    ascale: storage_buffer(gpu, "act scales", cap4 as u64 * 4),
                    azp: storage_buffer(gpu, "act zero-points", zp_words as u64 * 4),
                    qzp: storage_buffer(gpu, "act zp echo", cap as u64 * 4),
                    qsc: storage_buffer(gpu, "act scale echo", cap as u64 * 4),
                })
            }
            None => None,
        };
        self.acts = Some(Acts {
            cap,
            x: [mk("x0", d)?, mk("x1", d)?],
            h: mk("h", d)?,
            cast: mk("cast", max_k)?,
            q: mk("q", qw)?,
            qr: mk("q rotated", qw)?,
            kt: mk("k", kw)?,
            o: mk("attention", qw)?,
            g: mk("gate", f)?,
            u: mk("up", f)?,
            gu: mk("swiglu", f)?,
            logits,
            cs: mk("rope cos sin", c.head_dim)?,
            ids: storage_buffer(gpu, "ids", cap as u64 * 4),
            read,
            act,
        });
        Ok(())
    }

    /// Grow the KV cache to hold `need` positions, copying what it holds.
    fn ensure_kv(&mut self, gpu: &Gpu, enc: &mut wgpu::CommandEncoder, need: usize) -> R<()> {
        if self.kv.cap >= need {
            return Ok(());
        }
        let cap = need.next_power_of_two().max(MIN_CACHE);
        let texels = cap * self.cfg.kv_width() / 4;
        let mut k = Vec::with_capacity(self.cfg.n_layers);
        let mut v = Vec::with_capacity(self.cfg.n_layers);
        for l in 0..self.cfg.n_layers {
            k.push(Tex::new(gpu, "k cache", TexelFormat::Rgba32Float, ACT_W, texels)?);
            v.push(Tex::new(gpu, "v cache", TexelFormat::Rgba32Float, ACT_W, texels)?);
            if self.len > 0 {
                for (old, new) in [(&self.kv.k[l], &k[l]), (&self.kv.v[l], &v[l])] {
                    let rows = old.rows_for(self.len * self.cfg.kv_width() / 4);
                    enc.copy_texture_to_texture(
                        old.copy_info(),
                        new.copy_info(),
                        wgpu::Extent3d { width: old.width, height: rows, depth_or_array_layers: 1 },
                    );
                }
            }
        }
        self.kv = Kv { cap, k, v };
        Ok(())
    }

    fn bytes_on_device(&self) -> u64 {
        let kv: u64 = self.kv.k.iter().chain(&self.kv.v).map(Tex::bytes).sum();
        let acts = self.acts.as_ref().map_or(0, |a| {
            let tex: u64 =
                [&a.x[0], &a.x[1], &a.h, &a.cast, &a.q, &a.qr, &a.kt, &a.o, &a.g, &a.u, &a.gu, &a.logits, &a.cs]
                    .iter()
                    .map(|t| t.bytes())
                    .sum();
            let act = a.act.as_ref().map_or(0, |b| {
                b.x.size()
                    + b.q.size()
                    + b.xh.size()
                    + b.xh_tex.bytes()
                    + b.aq.bytes()
                    + b.ascale.size()
                    + b.azp.size()
                    + b.qzp.size()
                    + b.qsc.size()
            });
            tex + a.ids.size() + a.read.size() + act
        });
        self.weight_bytes + kv + acts + self.dummy.bytes()
    }

    fn forward(&mut self, gpu: &mut Gpu, tokens: &[u32]) -> R<Matrix> {
        let t = tokens.len();
        let s0 = self.len;
        self.ensure_acts(gpu, t)?;
        let mut grow = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("kv grow") });
        self.ensure_kv(gpu, &mut grow, s0 + t)?;
        let c = self.cfg.clone();
        let acts = self.acts.as_ref().ok_or("internal: activations not allocated")?;
        // Inputs: token ids, the RoPE table at the absolute positions, poisoned logits.
        gpu.queue.write_buffer(&acts.ids, 0, u32_bytes(tokens));
        let inv_freq = kernels_ref::ops::rope_inv_freq(c.head_dim, c.rope_theta, c.rope_scaling.as_ref())
            .map_err(|e| e.to_string())?;
        let mut cs = Vec::with_capacity(t * c.head_dim);
        for pos in s0..s0 + t {
            for &fr in &inv_freq {
                let a = pos as f64 * fr;
                cs.push(a.cos() as f32);
                cs.push(a.sin() as f32);
            }
        }
        acts.cs.upload(gpu, f32_bytes(&cs));
        let v = c.vocab_size;
        let logit_texels = t * v / 4;
        let poison_rows = acts.logits.rows_for(logit_texels) as usize;
        acts.logits.upload(gpu, &POISON_F32.to_le_bytes().repeat(poison_rows * acts.logits.width as usize * 4));

        let mut subs: Vec<Vec<Step<'_>>> = Vec::new();
        let mut steps: Vec<Step<'_>> = Vec::new();
        let (d, qw, kw, f) = (c.hidden_size, c.q_width(), c.kv_width(), c.intermediate_size);
        let mu = t as u32;
        // Embedding.
        let embed_binds = match &self.embed {
            Embed::F32(tab) => vec![Bind::T(tab), Bind::B(&acts.ids), Bind::T(&acts.x[0])],
            Embed::Quant(q) => {
                let mut b = q.binds();
                b.extend([Bind::B(&acts.ids), Bind::T(&acts.x[0])]);
                b
            }
        };
        let mut embed_params = vec![("M", mu), ("D", d as u32)];
        if let Embed::Quant(q) = &self.embed {
            embed_params.extend(q.params.iter().copied());
        }
        steps.push(self.launch(&self.embed_kernel, &embed_params, embed_binds, groups(t * d / 4, WG_ELEM))?);
        subs.push(std::mem::take(&mut steps));
        let eps = c.rms_eps.to_bits();
        for (li, l) in self.layers.iter().enumerate() {
            let (x0, x1) = (&acts.x[0], &acts.x[1]);
            self.norm(&mut steps, x0, &l.attn_norm, &acts.h, t)?;
            let inp = self.prep(&mut steps, &acts.h, d, t, &l.wq)?;
            self.linear(&mut steps, &l.wq, inp, t, &acts.q, 0, l.bq.as_ref(), None)?;
            self.linear(&mut steps, &l.wk, inp, t, &acts.kt, 0, l.bk.as_ref(), None)?;
            self.linear(&mut steps, &l.wv, inp, t, &self.kv.v[li], s0 * kw / 4, l.bv.as_ref(), None)?;
            let qkn = l.q_norm.is_some() as u32;
            steps.push(self.launch(
                &self.k.rope,
                &[
                    ("M", mu),
                    ("HQ", c.n_heads as u32),
                    ("HKV", c.n_kv_heads as u32),
                    ("S0", s0 as u32),
                    ("QW4", (qw / 4) as u32),
                    ("KW4", (kw / 4) as u32),
                    ("EPS", eps),
                    ("QKN", qkn),
                ],
                vec![
                    Bind::T(&acts.q),
                    Bind::T(&acts.kt),
                    Bind::T(&acts.qr),
                    Bind::T(&self.kv.k[li]),
                    Bind::T(&acts.cs),
                    Bind::T(l.q_norm.as_ref().unwrap_or(&self.dummy)),
                    Bind::T(l.k_norm.as_ref().unwrap_or(&self.dummy)),
                ],
                groups(t * (c.n_heads + c.n_kv_heads), WG_ELEM),
            )?);
            steps.push(self.launch(
                &self.k.attn,
                &[
                    ("M", mu),
                    ("S0", s0 as u32),
                    ("HQ", c.n_heads as u32),
                    ("HKV", c.n_kv_heads as u32),
                    ("QW4", (qw / 4) as u32),
                    ("KW4", (kw / 4) as u32),
                    ("SCALE", c.attn_scale().to_bits()),
                ],
                vec![Bind::T(&acts.qr), Bind::T(&self.kv.k[li]), Bind::T(&self.kv.v[li]), Bind::T(&acts.o)],
                c.n_heads as u32 * groups(t, WG_TILE),
            )?);
            let inp = self.prep(&mut steps, &acts.o, qw, t, &l.wo)?;
            self.linear(&mut steps, &l.wo, inp, t, x1, 0, None, Some(x0))?;
            self.norm(&mut steps, x1, &l.ffn_norm, &acts.h, t)?;
            let inp = self.prep(&mut steps, &acts.h, d, t, &l.w_gate)?;
            self.linear(&mut steps, &l.w_gate, inp, t, &acts.g, 0, None, None)?;
            self.linear(&mut steps, &l.w_up, inp, t, &acts.u, 0, None, None)?;
            steps.push(self.launch(
                &self.k.swiglu,
                &[("N4", (t * f / 4) as u32)],
                vec![Bind::T(&acts.g), Bind::T(&acts.u), Bind::T(&acts.gu)],
                groups(t * f / 4, WG_ELEM),
            )?);
            let inp = self.prep(&mut steps, &acts.gu, f, t, &l.w_down)?;
            self.linear(&mut steps, &l.w_down, inp, t, x0, 0, None, Some(x1))?;
            subs.push(std::mem::take(&mut steps));
        }
        self.norm(&mut steps, &acts.x[0], &self.final_norm, &acts.h, t)?;
        let inp = self.prep(&mut steps, &acts.h, d, t, &self.head)?;
        self.linear(&mut steps, &self.head, inp, t, &acts.logits, 0, None, None)?;
        subs.push(steps);
        // Short forwards (decoding) are one submission: a layer's work is then far from the queue
        // timeout, and each submission costs a round trip through the driver's queue thread.
        if t <= ONE_SUBMISSION_TOKENS {
            subs = vec![subs.into_iter().flatten().collect()];
        }

        // Params: one uniform block per launch, at aligned offsets of one buffer.
        let align = gpu.limits.min_uniform_buffer_offset_alignment.max(16) as usize;
        let blocks: Vec<&Vec<u32>> = subs
            .iter()
            .flatten()
            .filter_map(|s| match s {
                Step::Run { params, .. } => Some(params),
                _ => None,
            })
            .collect();
        let stride = blocks.iter().map(|p| (p.len() + 1).div_ceil(4) * 16).max().unwrap_or(16).div_ceil(align) * align;
        let mut ubytes = vec![0u8; stride * blocks.len().max(1)];
        for (i, p) in blocks.iter().enumerate() {
            ubytes[i * stride..i * stride + p.len() * 4].copy_from_slice(u32_bytes(p));
        }
        let ubuf = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("model params"),
            size: ubytes.len() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        gpu.queue.write_buffer(&ubuf, 0, &ubytes);

        let mut indices = Vec::new();
        let mut block = 0usize;
        let maxg = gpu.limits.max_compute_workgroups_per_dimension.max(1);
        let mut first = Some(grow);
        let last = subs.len() - 1;
        for (si, sub) in subs.iter().enumerate() {
            let mut enc = first.take().unwrap_or_else(|| {
                gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("model forward") })
            });
            let mut i = 0;
            while i < sub.len() {
                if let Step::Run { .. } = sub[i] {
                    let mut bgs = Vec::new();
                    let mut j = i;
                    while j < sub.len() {
                        let Step::Run { k, params, binds, groups } = &sub[j] else { break };
                        let size = std::num::NonZeroU64::new(((params.len() + 1).div_ceil(4) * 16) as u64);
                        let mut entries = vec![wgpu::BindGroupEntry {
                            binding: 0,
                            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &ubuf,
                                offset: (block * stride) as u64,
                                size,
                            }),
                        }];
                        block += 1;
                        for (bi, b) in binds.iter().enumerate() {
                            let resource = match b {
                                Bind::T(t) => wgpu::BindingResource::TextureView(&t.view),
                                Bind::B(b) => b.as_entire_binding(),
                            };
                            entries.push(wgpu::BindGroupEntry { binding: bi as u32 + 1, resource });
                        }
                        let bg = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                            label: Some(k.entry),
                            layout: &k.kernel.layout,
                            entries: &entries,
                        });
                        bgs.push((k, bg, *groups));
                        j += 1;
                    }
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("model forward"),
                        timestamp_writes: None,
                    });
                    for (k, bg, g) in &bgs {
                        pass.set_pipeline(&k.kernel.pipeline);
                        pass.set_bind_group(0, bg, &[]);
                        let (gx, gy) = if *g <= maxg { (*g, 1) } else { (maxg, g.div_ceil(maxg)) };
                        pass.dispatch_workgroups(gx, gy, 1);
                    }
                    drop(pass);
                    i = j;
                    continue;
                }
                match &sub[i] {
                    Step::TexToBuf { tex, buf, texels } => {
                        let rows = tex.rows_for(*texels);
                        enc.copy_texture_to_buffer(
                            tex.copy_info(),
                            wgpu::TexelCopyBufferInfo {
                                buffer: buf,
                                layout: wgpu::TexelCopyBufferLayout {
                                    offset: 0,
                                    bytes_per_row: Some(tex.row_bytes()),
                                    rows_per_image: Some(rows),
                                },
                            },
                            wgpu::Extent3d { width: tex.width, height: rows, depth_or_array_layers: 1 },
                        );
                    }
                    Step::BufToTex { buf, tex, texels } => {
                        let rows = tex.rows_for(*texels);
                        enc.copy_buffer_to_texture(
                            wgpu::TexelCopyBufferInfo {
                                buffer: buf,
                                layout: wgpu::TexelCopyBufferLayout {
                                    offset: 0,
                                    bytes_per_row: Some(tex.row_bytes()),
                                    rows_per_image: Some(rows),
                                },
                            },
                            tex.copy_info(),
                            wgpu::Extent3d { width: tex.width, height: rows, depth_or_array_layers: 1 },
                        );
                    }
                    Step::Run { .. } => {}
                }
                i += 1;
            }
            if si == last {
                let rows = acts.logits.rows_for(logit_texels);
                enc.copy_texture_to_buffer(
                    acts.logits.copy_info(),
                    wgpu::TexelCopyBufferInfo {
                        buffer: &acts.read,
                        layout: wgpu::TexelCopyBufferLayout {
                            offset: 0,
                            bytes_per_row: Some(acts.logits.row_bytes()),
                            rows_per_image: Some(rows),
                        },
                    },
                    wgpu::Extent3d { width: acts.logits.width, height: rows, depth_or_array_layers: 1 },
                );
            }
            indices.push(gpu.queue.submit([enc.finish()]));
        }
        // Wait submission by submission: no wait spans more than one layer's work.
        for idx in indices {
            gpu.device
                .poll(wgpu::PollType::Wait { submission_index: Some(idx), timeout: Some(QUEUE_TIMEOUT) })
                .map_err(|e| format!("waiting for the queue: {e}"))?;
        }
        if let Some(e) = gpu.take_errors() {
            return Err(e);
        }
        let bytes = (logit_texels * 16) as u64;
        let mapped = Arc::new(std::sync::Mutex::new(None));
        let sink = mapped.clone();
        acts.read.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            if let Ok(mut m) = sink.lock() {
                *m = Some(r.is_ok());
            }
        });
        gpu.device
            .poll(wgpu::PollType::Wait { submission_index: None, timeout: Some(QUEUE_TIMEOUT) })
            .map_err(|e| format!("waiting for the logits: {e}"))?;
        if mapped.lock().ok().and_then(|m| *m) != Some(true) {
            return Err("mapping the logits failed".into());
        }
        let data: Vec<f32> = {
            let view = acts.read.get_mapped_range(0..bytes).map_err(|e| format!("reading the logits: {e}"))?;
            bytemuck::cast_slice::<u8, f32>(&view).to_vec()
        };
        acts.read.unmap();
        if let Some(i) = data.iter().position(|x| x.to_bits() == POISON_F32) {
            return Err(format!(
                "logit {} of token {} still holds the sentinel {POISON_F32:#010x}: the head kernel never wrote it",
                i % v,
                i / v
            ));
        }
        self.len += t;
        Matrix::new(t, v, data).map_err(|e| e.to_string())
    }

    fn launch<'a>(&self, k: &'a KSpec, vals: &[(&'static str, u32)], binds: Vec<Bind<'a>>, groups: u32) -> R<Step<'a>> {
        let params = k
            .params
            .iter()
            .map(|name| {
                vals.iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| *v)
                    .ok_or_else(|| format!("internal: kernel `{}` param `{name}` not given", k.entry))
            })
            .collect::<R<Vec<u32>>>()?;
        Ok(Step::Run { k, params, binds, groups })
    }

    fn norm<'a>(&'a self, steps: &mut Vec<Step<'a>>, x: &'a Tex, w: &'a Tex, y: &'a Tex, t: usize) -> R<()> {
        let c = &self.cfg;
        steps.push(self.launch(
            &self.k.norm,
            &[("M", t as u32), ("D", c.hidden_size as u32), ("EPS", c.rms_eps.to_bits())],
            vec![Bind::T(x), Bind::T(w), Bind::T(y)],
            groups(t, WG_ELEM),
        )?);
        Ok(())
    }

    /// The input `lin` reads, from `x` (`[t, k]`): `x` itself, `x` rounded to the linear's T, or
    /// (with a dynamic activation scheme) the op path's activation kernels' output.
    fn prep<'a>(&'a self, steps: &mut Vec<Step<'a>>, x: &'a Tex, k: usize, t: usize, lin: &Linear) -> R<&'a Tex> {
        let acts = self.acts.as_ref().ok_or("internal: activations not allocated")?;
        let texels = t * k / 4;
        let dtype = self.act.as_ref().map_or(lin.dtype, |a| a.dtype);
        let mut src = x;
        if dtype != "f32" {
            let cast = self.cast_kernel(dtype).ok_or_else(|| format!("internal: no cast kernel to {dtype}"))?;
            steps.push(self.launch(
                cast,
                &[("N4", texels as u32)],
                vec![Bind::T(x), Bind::T(&acts.cast)],
                groups(texels, WG_ELEM),
            )?);
            src = &acts.cast;
        }
        let (Some(a), Some(b)) = (&self.act, &acts.act) else { return Ok(src) };
        let m = t as u32;
        steps.push(Step::TexToBuf { tex: src, buf: &b.x, texels });
        steps.push(self.launch(
            &a.choose,
            &[("M", m), ("K", k as u32)],
            vec![Bind::B(&b.x), Bind::B(&b.ascale), Bind::B(&b.azp)],
            t.div_ceil(4) as u32,
        )?);
        steps.push(self.launch(
            &a.quantize,
            &[("M", m), ("K", k as u32)],
            vec![
                Bind::B(&b.x),
                Bind::B(&b.ascale),
                Bind::B(&b.azp),
                Bind::B(&b.q),
                Bind::B(&b.xh),
                Bind::B(&b.qzp),
                Bind::B(&b.qsc),
            ],
            groups(t * k, WG_ACT),
        )?);
        if matches!(lin.w, LinW::Dq8 { .. }) {
            steps.push(Step::BufToTex { buf: &b.q, tex: &b.aq, texels });
        }
        steps.push(Step::BufToTex { buf: &b.xh, tex: &b.xh_tex, texels });
        Ok(&b.xh_tex)
    }

    /// `y[.., yoff..] = x·Wᵀ (+ bias) (+ res)` for `t` tokens.
    #[allow(clippy::too_many_arguments)]
    fn linear<'a>(
        &'a self,
        steps: &mut Vec<Step<'a>>,
        lin: &'a Linear,
        x: &'a Tex,
        t: usize,
        y: &'a Tex,
        yoff: usize,
        bias: Option<&'a Tex>,
        res: Option<&'a Tex>,
    ) -> R<()> {
        let acts = self.acts.as_ref().ok_or("internal: activations not allocated")?;
        let big = t >= RT_BIG as usize;
        let rt = if big { RT_BIG } else { RT_ONE };
        let k = &lin.kernels[big as usize];
        let mut vals = lin.weight_params();
        vals.extend([
            ("M", t as u32),
            ("YOFF", yoff as u32),
            ("BIAS", bias.is_some() as u32),
            ("RES", res.is_some() as u32),
        ]);
        let mut binds = Vec::new();
        match &lin.w {
            LinW::F32 { w } => binds.extend([Bind::T(x), Bind::T(w)]),
            LinW::Quant { q } => {
                binds.push(Bind::T(x));
                binds.extend(q.binds());
            }
            LinW::Dq8 { q, .. } => {
                let b = acts.act.as_ref().ok_or("internal: 8da4w without activation buffers")?;
                binds.extend([Bind::T(&b.aq), Bind::B(&b.ascale), Bind::B(&b.azp)]);
                binds.extend(q.binds());
            }
        }
        binds.extend([Bind::T(bias.unwrap_or(&self.dummy)), Bind::T(res.unwrap_or(&self.dummy)), Bind::T(y)]);
        let n4 = lin.n / 4;
        let g = (t as u32).div_ceil(rt) * groups(n4, WG_TILE);
        steps.push(self.launch(k, &vals, binds, g)?);
        Ok(())
    }
}

impl GpuSession<'_> {
    /// Bytes this session holds on the device: weights, activations (for the longest forward so
    /// far), the KV cache and the logits read-back buffer.
    pub fn device_bytes(&self) -> u64 {
        self.st.bytes_on_device()
    }

    /// Bytes of the weights alone (as stored: packed codes, qparams, fp32 tensors).
    pub fn weight_bytes(&self) -> u64 {
        self.st.weight_bytes
    }
}

impl ModelSession for GpuSession<'_> {
    fn forward(&mut self, tokens: &[u32]) -> Result<Matrix, DeviceError> {
        let c = &self.st.cfg;
        models::forward::check_tokens(c, self.st.len, tokens)?;
        let v = c.vocab_size;
        let start = self.st.len;
        let chunk = self.st.max_chunk(self.gpu.limits.max_texture_dimension_2d);
        let st = &mut self.st;
        let mut data = Vec::with_capacity(tokens.len() * v);
        // A prefill longer than a chunk runs as consecutive prefills (the same logits: every
        // output's arithmetic is the same), so that no activation outgrows a texture.
        let ran = self.gpu.scoped(|gpu| {
            for part in tokens.chunks(chunk) {
                data.extend(st.forward(gpu, part)?.data);
            }
            Ok(())
        });
        if let Err(detail) = ran {
            self.st.len = start;
            return Err(DeviceError::Failed { device: self.st.device.clone(), detail });
        }
        Matrix::new(tokens.len(), v, data)
            .map_err(|e| DeviceError::Failed { device: self.st.device.clone(), detail: e.to_string() })
    }

    fn reset(&mut self) {
        self.st.len = 0;
    }

    fn len(&self) -> usize {
        self.st.len
    }
}

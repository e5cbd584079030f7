//! The wgpu compute skeleton, wrapped once (wgpu's `hello_compute` shape: shader module → storage
//! buffers → pipeline → pass → copy to a MAP_READ buffer → submit → map → poll with a timeout),
//! and the small "program" description every op is written in.
//!
//! A [`Program`] is a list of resources (input buffers, output buffers, textures) and a list of
//! [`Dispatch`]es that bind some of them. Each dispatch's WGSL is assembled from the kernel body
//! (a `.wgsl` file under `kernels/`) and a generated header: the compute dtype alias, the
//! specialization constants, the uniform `Params` struct and one declaration plus accessor
//! functions (`NAME_ld(i)`, `NAME_st(t, v)`) per bound resource. Kernels therefore never know
//! whether a tensor lives in a buffer or a texture, nor in which texel format.
//!
//! Every output buffer and every texture a kernel writes is filled with a sentinel before the
//! launch; a sentinel left in an output afterwards is reported as a failure (cubecl's "poisoned
//! output": a launch that silently did nothing must not look like a result).
//!
//! [`Gpu::run`] creates and uploads everything on every call ([`Gpu::prepare`]), then records the
//! passes and the readback. A benchmark prepares once and launches the prepared [`Step`]s per
//! sample ([`Gpu::launch_timed`]): same passes, same timestamp placement, no creation, upload or
//! readback in the timed loop.
//!
//! A texture bound through a format other than the one it was allocated with cannot pass wgpu's
//! validation, so such a dispatch is compiled by naga to SPIR-V with the *bind* format in the
//! shader and created with `create_shader_module_passthrough`, while the bind group layout and
//! the view carry the *alloc* format: the mismatch reaches the driver as it does in the field.

use crate::case::{TexelFormat, Timing, TimingMethod};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The float sentinel (a NaN with a recognisable payload) written into float outputs.
pub(crate) const POISON_F32: u32 = 0x7FC0_DEAD;
/// The integer sentinel written into integer outputs.
pub(crate) const POISON_I32: u32 = 0x7EAD_BEEF;

/// How long to wait for the queue before declaring the device hung.
pub(crate) const QUEUE_TIMEOUT: Duration = Duration::from_secs(60);

/// Scalar element type of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Elem {
    /// `f32`.
    F32,
    /// `i32`.
    I32,
    /// `u32`.
    U32,
    /// `f16` (needs SHADER_F16); stored two per word.
    F16,
}

impl Elem {
    fn wgsl(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::I32 => "i32",
            Elem::U32 => "u32",
            Elem::F16 => "f16",
        }
    }
    fn poison(self) -> u32 {
        match self {
            Elem::F32 => POISON_F32,
            Elem::I32 | Elem::U32 => POISON_I32,
            // Two fp16 NaNs with a payload per word.
            Elem::F16 => 0x7EAD_7EAD,
        }
    }
}

/// What a buffer is for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BufKind {
    /// Uploaded before the launch, read by kernels.
    Input(Vec<u32>),
    /// Written by kernels (poisoned first); read back when `readback`.
    Output { words: usize, readback: bool },
}

/// A storage buffer of a program.
#[derive(Debug, Clone)]
pub(crate) struct BufferRes {
    /// Name the kernels use.
    pub name: &'static str,
    /// Element type.
    pub elem: Elem,
    /// Input data or output size.
    pub kind: BufKind,
}

/// Texel data to upload into a texture (encoded into its alloc format on the host).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TexData {
    /// Float values (scales, zero-points).
    Float(Vec<f32>),
    /// Integer values or raw 32-bit words.
    Int(Vec<i32>),
    /// Written by a kernel; poisoned before the launch.
    Written { values: usize },
}

/// A 2-D texture holding a linear array of scalars, `cpt` per texel along x.
#[derive(Debug, Clone)]
pub(crate) struct TextureRes {
    /// Name the kernels use.
    pub name: &'static str,
    /// Format the texture is allocated with.
    pub alloc: TexelFormat,
    /// Content.
    pub data: TexData,
    /// Width in texels, if the layout needs a specific one (Vulkan's 4K×8N blocks at `(k4, n8)`).
    pub width: Option<u32>,
}

/// How a dispatch touches a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read only.
    Read,
    /// Written (buffers: read-write; textures: write-only).
    Write,
}

/// One resource bound by one dispatch.
#[derive(Debug, Clone)]
pub(crate) struct Use {
    /// Resource name.
    pub name: &'static str,
    /// Access.
    pub access: Access,
    /// For textures: the format the shader declares (defaults to the alloc format).
    pub bind: Option<TexelFormat>,
}

impl Use {
    /// Read a resource through its own format.
    pub fn read(name: &'static str) -> Use {
        Use { name, access: Access::Read, bind: None }
    }
    /// Write a resource through its own format.
    pub fn write(name: &'static str) -> Use {
        Use { name, access: Access::Write, bind: None }
    }
    /// With an explicit bind format.
    pub fn through(mut self, fmt: TexelFormat) -> Use {
        self.bind = Some(fmt);
        self
    }
}

/// One kernel launch of a program.
#[derive(Debug, Clone)]
pub(crate) struct Dispatch {
    /// Kernel body source (one of the embedded `.wgsl` files).
    pub source: &'static str,
    /// Entry point.
    pub entry: &'static str,
    /// Resources bound, in binding order after the params uniform.
    pub uses: Vec<Use>,
    /// Number of invocations along x (workgroups are derived with the workgroup size).
    pub threads: u32,
    /// Invocations per workgroup (`WG` in the kernel); `threads` is rounded up to a multiple.
    pub wg: u32,
}

/// A whole launch: resources, specialization, params and dispatches.
#[derive(Debug, Clone, Default)]
pub(crate) struct Program {
    /// Specialization constants (`const NAME: u32 = V;`), part of the pipeline cache key.
    pub consts: Vec<(&'static str, u32)>,
    /// Compute dtype: `"f32"`, `"f16"` (native, `enable f16`) or `"bf16"` (f32 arithmetic with
    /// each result rounded to bf16 by `rt`).
    pub dtype: &'static str,
    /// Uniform parameters (shapes, offsets), one `u32` each.
    pub params: Vec<(&'static str, u32)>,
    /// Storage buffers.
    pub buffers: Vec<BufferRes>,
    /// Textures.
    pub textures: Vec<TextureRes>,
    /// Launches, in order.
    pub dispatches: Vec<Dispatch>,
}

/// Read-back outputs of a program, by buffer name, as raw words.
#[derive(Debug, Default)]
pub(crate) struct Results {
    /// Output words by name.
    pub words: HashMap<&'static str, Vec<u32>>,
    /// How long the kernels took.
    pub timing: Option<Timing>,
}

impl Results {
    /// Output `name` as f32.
    pub fn f32s(&self, name: &str) -> Vec<f32> {
        self.words.get(name).map(|w| w.iter().map(|&b| f32::from_bits(b)).collect()).unwrap_or_default()
    }
    /// Output `name` as i64.
    pub fn i64s(&self, name: &str) -> Vec<i64> {
        self.words.get(name).map(|w| w.iter().map(|&b| b as i32 as i64).collect()).unwrap_or_default()
    }
}

/// Channels per texel of a format (values per texel in the linear-array view).
pub(crate) fn channels(f: TexelFormat) -> u32 {
    match f {
        TexelFormat::R32Float | TexelFormat::R32Sint => 1,
        _ => 4,
    }
}

/// The wgpu format of a texel format.
pub(crate) fn wgpu_format(f: TexelFormat) -> wgpu::TextureFormat {
    match f {
        TexelFormat::R32Float => wgpu::TextureFormat::R32Float,
        TexelFormat::Rgba32Float => wgpu::TextureFormat::Rgba32Float,
        TexelFormat::Rgba16Float => wgpu::TextureFormat::Rgba16Float,
        TexelFormat::Rgba8Sint => wgpu::TextureFormat::Rgba8Sint,
        TexelFormat::Rgba32Sint => wgpu::TextureFormat::Rgba32Sint,
        TexelFormat::R32Sint => wgpu::TextureFormat::R32Sint,
    }
}

/// The WGSL name of a texel format.
pub(crate) fn wgsl_format(f: TexelFormat) -> &'static str {
    match f {
        TexelFormat::R32Float => "r32float",
        TexelFormat::Rgba32Float => "rgba32float",
        TexelFormat::Rgba16Float => "rgba16float",
        TexelFormat::Rgba8Sint => "rgba8sint",
        TexelFormat::Rgba32Sint => "rgba32sint",
        TexelFormat::R32Sint => "r32sint",
    }
}

/// Encode linear values into `texels` texels of format `f` (zero padded).
fn encode_texels(f: TexelFormat, data: &TexData, texels: usize) -> Vec<u8> {
    let cpt = channels(f) as usize;
    let n = texels * cpt;
    let get_f = |i: usize| -> f32 {
        match data {
            TexData::Float(v) => v.get(i).copied().unwrap_or(0.0),
            TexData::Int(v) => v.get(i).copied().unwrap_or(0) as f32,
            TexData::Written { .. } => f32::from_bits(POISON_F32),
        }
    };
    let get_i = |i: usize| -> i32 {
        match data {
            TexData::Float(v) => v.get(i).copied().unwrap_or(0.0) as i32,
            TexData::Int(v) => v.get(i).copied().unwrap_or(0),
            TexData::Written { .. } => POISON_I32 as i32,
        }
    };
    let mut out = Vec::with_capacity(n * 4);
    for i in 0..n {
        match f {
            TexelFormat::R32Float | TexelFormat::Rgba32Float => out.extend_from_slice(&get_f(i).to_le_bytes()),
            TexelFormat::Rgba16Float => {
                let bits = match data {
                    TexData::Written { .. } => 0x7EADu16,
                    _ => half::f16::from_f32(get_f(i)).to_bits(),
                };
                out.extend_from_slice(&bits.to_le_bytes())
            }
            TexelFormat::Rgba8Sint => {
                let v = match data {
                    // -128 is a legal int8 zero-point; poison with 0x80 anyway and rely on the
                    // float echo of the consumer for the never-written check.
                    TexData::Written { .. } => 0x80u8,
                    _ => get_i(i).clamp(-128, 127) as i8 as u8,
                };
                out.push(v)
            }
            TexelFormat::Rgba32Sint | TexelFormat::R32Sint => out.extend_from_slice(&get_i(i).to_le_bytes()),
        }
    }
    out
}

/// A compiled kernel.
pub(crate) struct Kernel {
    /// The pipeline.
    pub pipeline: wgpu::ComputePipeline,
    /// Its bind group layout (binding 0: the params uniform; then the dispatch's uses in order).
    pub layout: wgpu::BindGroupLayout,
}

/// One compute pass ready to record: a dispatch's pipeline, its bound resources and its
/// workgroup counts.
pub(crate) struct Step {
    /// The entry point (the pass label).
    pub label: &'static str,
    /// The compiled kernel.
    pub pipeline: wgpu::ComputePipeline,
    /// Binding 0 the params uniform, then the dispatch's resources.
    pub bind_group: wgpu::BindGroup,
    /// Workgroups along x and y.
    pub groups: (u32, u32),
}

/// A program whose resources live on the device ([`Gpu::prepare`]): it can be launched any
/// number of times without creating or uploading anything again.
pub(crate) struct Prepared {
    /// Storage buffers by name, with their sizes in bytes.
    bufs: HashMap<&'static str, (wgpu::Buffer, u64)>,
    /// The dispatches, in order.
    pub steps: Vec<Step>,
    /// The params uniform and the texture views, which the bind groups reference: held for as
    /// long as the steps may be launched.
    _held: (wgpu::Buffer, HashMap<&'static str, wgpu::TextureView>),
}

/// Where a timed launch resolves its two timestamps and reads them back: created once per
/// benchmark, reused by every sample ([`Gpu::stamps`]).
pub(crate) struct Stamps {
    resolve: wgpu::Buffer,
    read: wgpu::Buffer,
}

/// The size of the scratch buffer [`Gpu::flush_caches`] overwrites: twice the largest
/// last-level cache of a GPU qdiff is meant for (H100 / H200: 50 MB of L2), so that no line
/// of a benchmark's working set survives the flush.
pub(crate) const FLUSH_BYTES: u64 = 100 << 20;

/// An opened wgpu device with its caches.
pub(crate) struct Gpu {
    /// The adapter.
    pub adapter: wgpu::Adapter,
    /// The device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// Features enabled on the device.
    pub features: wgpu::Features,
    /// Limits of the device.
    pub limits: wgpu::Limits,
    errors: Arc<Mutex<Vec<String>>>,
    lost: Arc<Mutex<Option<String>>>,
    cache: HashMap<String, Arc<Kernel>>,
    timestamps: Option<wgpu::QuerySet>,
    /// The scratch buffer [`Gpu::flush_caches`] overwrites, created on first use.
    flush: Option<wgpu::Buffer>,
    /// While `Some`, programs are recorded here instead of run (see `ops::export`): an export
    /// must describe exactly what a run would launch without launching it (a case may hang or
    /// lose the device).
    pub capture: Option<Vec<Program>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("adapter", &self.adapter.get_info().name).finish_non_exhaustive()
    }
}

/// The features qdiff asks for when the adapter has them.
pub(crate) fn wanted_features() -> wgpu::Features {
    wgpu::Features::SHADER_F16
        | wgpu::Features::TIMESTAMP_QUERY
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
        | wgpu::Features::SUBGROUP
        | wgpu::Features::PASSTHROUGH_SHADERS
        | wgpu::Features::TEXTURE_ADAPTER_SPECIFIC_FORMAT_FEATURES
}

impl Gpu {
    /// Open `adapter` with the wanted features it has and its own limits.
    pub fn open(adapter: wgpu::Adapter) -> Result<Gpu, String> {
        let features = adapter.features() & wanted_features();
        let limits = adapter.limits();
        let desc = wgpu::DeviceDescriptor {
            label: Some("qdiff"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| e.to_string())?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let lost = Arc::new(Mutex::new(None));
        // wgpu's default handler panics; qdiff reports errors as failed cases instead.
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(error_chain(&e));
            }
        }));
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if let Ok(mut l) = lost_sink.lock() {
                *l = Some(format!("device lost ({reason:?}): {msg}"));
            }
        });
        let timestamps = features.contains(wgpu::Features::TIMESTAMP_QUERY).then(|| {
            device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("qdiff timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            })
        });
        Ok(Gpu {
            adapter,
            device,
            queue,
            features,
            limits,
            errors,
            lost,
            cache: HashMap::new(),
            timestamps,
            flush: None,
            capture: None,
        })
    }

    /// Whether `f` can be a read-only and a write-only storage texture here.
    pub fn storage_format_ok(&self, f: TexelFormat) -> bool {
        let ff = self.adapter.get_texture_format_features(wgpu_format(f));
        let need =
            wgpu::TextureFormatFeatureFlags::STORAGE_READ_ONLY | wgpu::TextureFormatFeatureFlags::STORAGE_WRITE_ONLY;
        ff.allowed_usages.contains(wgpu::TextureUsages::STORAGE_BINDING) && ff.flags.contains(need)
    }

    /// Whether native f16 arithmetic is available.
    pub fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// Whether SPIR-V passthrough is available (needed for alloc ≠ bind texture formats).
    pub fn has_passthrough(&self) -> bool {
        self.features.contains(wgpu::Features::PASSTHROUGH_SHADERS)
            && self.adapter.get_info().backend == wgpu::Backend::Vulkan
    }

    /// Workgroups `(x, y)` a dispatch launches: `threads / wg` along x, spilling into y past the
    /// adapter's per-dimension limit (kernels fold `y` back into a linear index).
    fn workgroups(&self, d: &Dispatch) -> (u32, u32) {
        let groups = d.threads.div_ceil(d.wg).max(1);
        let maxg = self.limits.max_compute_workgroups_per_dimension.max(1);
        if groups <= maxg {
            (groups, 1)
        } else {
            (maxg, groups.div_ceil(maxg))
        }
    }

    /// The device-lost message, or the uncaptured errors collected since the last call.
    pub(crate) fn take_errors(&self) -> Option<String> {
        if let Ok(l) = self.lost.lock() {
            if let Some(m) = l.as_ref() {
                return Some(m.clone());
            }
        }
        let mut v = self.errors.lock().ok()?;
        if v.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut *v).join("; "))
        }
    }

    /// Run a program and read back its outputs. Errors are strings for `DeviceError::Failed`.
    pub fn run(&mut self, prog: &Program) -> Result<Results, String> {
        self.scoped(|gpu| gpu.run_inner(prog))
    }

    /// Run `f` inside validation, out-of-memory and internal error scopes: an error any of them
    /// caught, a lost device or an uncaptured error becomes `Err` (a device already lost fails
    /// before `f` runs).
    pub(crate) fn scoped<T>(&mut self, f: impl FnOnce(&mut Gpu) -> Result<T, String>) -> Result<T, String> {
        if let Some(e) = self.take_errors() {
            // A lost device stays lost; stale validation errors are dropped with a note.
            if e.starts_with("device lost") {
                return Err(e);
            }
        }
        let scope_v = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let scope_m = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let scope_i = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let res = f(self);
        let ei = pollster::block_on(scope_i.pop());
        let em = pollster::block_on(scope_m.pop());
        let ev = pollster::block_on(scope_v.pop());
        let scoped: Vec<String> = [ev, em, ei].into_iter().flatten().map(|e| error_chain(&e)).collect();
        if !scoped.is_empty() {
            return Err(scoped.join("; "));
        }
        if let Some(e) = self.take_errors() {
            return Err(e);
        }
        res
    }

    /// The compiled kernel of dispatch `d` of `prog` (assembled, recorded for
    /// [`assembled_kernels`], and cached by source and binding layout).
    pub(crate) fn kernel(&mut self, prog: &Program, d: &Dispatch) -> Result<Arc<Kernel>, String> {
        let (src, passthrough) = assemble(prog, d)?;
        record_assembled(d.entry, &src);
        let layout_key: String = d
            .uses
            .iter()
            .map(|u| {
                let tex = prog.textures.iter().find(|t| t.name == u.name).map(|t| format!("{:?}", t.alloc));
                format!("{}:{:?}:{}", u.name, u.access, tex.unwrap_or_default())
            })
            .collect::<Vec<_>>()
            .join(",");
        let key = format!("{}|{}|{}|{}", d.entry, passthrough, layout_key, src);
        if let Some(k) = self.cache.get(&key) {
            return Ok(k.clone());
        }
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }];
        for (i, u) in d.uses.iter().enumerate() {
            let ty = if let Some(t) = prog.textures.iter().find(|t| t.name == u.name) {
                wgpu::BindingType::StorageTexture {
                    access: match u.access {
                        Access::Read => wgpu::StorageTextureAccess::ReadOnly,
                        Access::Write => wgpu::StorageTextureAccess::WriteOnly,
                    },
                    // The layout carries the ALLOC format: it must match the view.
                    format: wgpu_format(t.alloc),
                    view_dimension: wgpu::TextureViewDimension::D2,
                }
            } else {
                wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: u.access == Access::Read },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                }
            };
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty,
                count: None,
            });
        }
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(d.entry), entries: &entries });
        let pl = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(d.entry),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        // naga's own diagnostics (line, column, source line) instead of wgpu's bare "Validation Error".
        let parsed = naga::front::wgsl::parse_str(&src)
            .map_err(|e| format!("kernel `{}`: {}", d.entry, e.emit_to_string(&src)))?;
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&parsed)
            .map_err(|e| format!("kernel `{}`: {}", d.entry, e.emit_to_string(&src)))?;
        let module = if passthrough {
            if !self.has_passthrough() {
                return Err("a texel-format mismatch needs SPIR-V passthrough (PASSTHROUGH_SHADERS on Vulkan), which this device lacks".into());
            }
            let words = super::spirv::wgsl_to_spirv(&src)?;
            let eps =
                [wgpu::PassthroughShaderEntryPoint { name: Cow::Borrowed(d.entry), workgroup_size: (d.wg, 1, 1) }];
            // SAFETY: the SPIR-V comes from naga's own WGSL front end and SPIR-V writer; the one
            // deliberate inconsistency is the storage-image format, which is the point of the case.
            unsafe {
                self.device.create_shader_module_passthrough(wgpu::ShaderModuleDescriptorPassthrough {
                    label: Some(d.entry),
                    entry_points: Cow::Borrowed(&eps),
                    spirv: Some(Cow::Owned(words)),
                    ..Default::default()
                })
            }
        } else {
            self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(d.entry),
                source: wgpu::ShaderSource::Wgsl(Cow::Owned(src)),
            })
        };
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(d.entry),
            layout: Some(&pl),
            module: &module,
            entry_point: Some(d.entry),
            compilation_options: Default::default(),
            cache: None,
        });
        let k = Arc::new(Kernel { pipeline, layout });
        self.cache.insert(key, k.clone());
        Ok(k)
    }

    /// Create `prog`'s resources on the device: the params uniform, every buffer with its input
    /// words or the sentinel, every texture with its encoded texels (queued writes, done before
    /// the next submission runs), the compiled kernels and one bind group per dispatch. What
    /// [`Gpu::run`] does before every launch, and a benchmark once before all its samples.
    pub(crate) fn prepare(&mut self, prog: &Program) -> Result<Prepared, String> {
        use wgpu::util::DeviceExt;
        let dev = self.device.clone();
        // Uniform params (16-byte multiple).
        let pw = param_words(prog);
        let params = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::cast_slice(&pw),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut bufs: HashMap<&'static str, (wgpu::Buffer, u64)> = HashMap::new();
        for b in &prog.buffers {
            let words = initial_words(b);
            let size = (words.len() * 4) as u64;
            let buf = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(b.name),
                contents: bytemuck::cast_slice(&words),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            });
            bufs.insert(b.name, (buf, size));
        }
        let mut views: HashMap<&'static str, wgpu::TextureView> = HashMap::new();
        for t in &prog.textures {
            let (w, h, _) = texture_extent(t, self.limits.max_texture_dimension_2d);
            let tex = dev.create_texture(&wgpu::TextureDescriptor {
                label: Some(t.name),
                size: wgpu::Extent3d { width: w, height: h, depth_or_array_layers: 1 },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu_format(t.alloc),
                usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            });
            let bytes = encode_texels(t.alloc, &t.data, (w * h) as usize);
            let bpr = w * t.alloc.texel_bytes() as u32;
            self.queue.write_texture(
                wgpu::TexelCopyTextureInfo {
                    texture: &tex,
                    mip_level: 0,
                    origin: wgpu::Origin3d::ZERO,
                    aspect: wgpu::TextureAspect::All,
                },
                &bytes,
                wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(bpr), rows_per_image: Some(h) },
                wgpu::Extent3d { width: w, height: h, depth_or_array_layers: 1 },
            );
            views.insert(t.name, tex.create_view(&wgpu::TextureViewDescriptor::default()));
        }
        let mut kernels = Vec::new();
        for d in &prog.dispatches {
            kernels.push(self.kernel(prog, d)?);
        }
        let mut steps = Vec::new();
        for (d, k) in prog.dispatches.iter().zip(&kernels) {
            let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() }];
            for (i, u) in d.uses.iter().enumerate() {
                let resource = if let Some(v) = views.get(u.name) {
                    wgpu::BindingResource::TextureView(v)
                } else if let Some((b, _)) = bufs.get(u.name) {
                    b.as_entire_binding()
                } else {
                    return Err(format!("internal: dispatch {} binds unknown resource {}", d.entry, u.name));
                };
                entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource });
            }
            let bind_group = dev.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(d.entry),
                layout: &k.layout,
                entries: &entries,
            });
            steps.push(Step { label: d.entry, pipeline: k.pipeline.clone(), bind_group, groups: self.workgroups(d) });
        }
        Ok(Prepared { bufs, steps, _held: (params, views) })
    }

    /// Record `steps` into `enc`, one compute pass each, in order (wgpu puts the barriers between
    /// passes). Where the device has timestamp queries, the first pass writes query 0 at its
    /// beginning and the last pass query 1 at its end: the interval covers the kernels only,
    /// not the uploads before nor the copies after.
    fn encode_passes(&self, enc: &mut wgpu::CommandEncoder, steps: &[&Step]) {
        let n = steps.len();
        for (i, s) in steps.iter().enumerate() {
            let edge = i == 0 || i + 1 == n;
            let tw = self.timestamps.as_ref().filter(|_| edge).map(|qs| wgpu::ComputePassTimestampWrites {
                query_set: qs,
                beginning_of_pass_write_index: (i == 0).then_some(0),
                end_of_pass_write_index: (i + 1 == n).then_some(1),
            });
            let mut pass =
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(s.label), timestamp_writes: tw });
            pass.set_pipeline(&s.pipeline);
            pass.set_bind_group(0, &s.bind_group, &[]);
            pass.dispatch_workgroups(s.groups.0, s.groups.1, 1);
        }
    }

    fn run_inner(&mut self, prog: &Program) -> Result<Results, String> {
        let dev = self.device.clone();
        let prep = self.prepare(prog)?;
        let bufs = &prep.bufs;
        let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("qdiff") });
        self.encode_passes(&mut enc, &prep.steps.iter().collect::<Vec<_>>());
        let ts_buf = self.timestamps.as_ref().map(|qs| {
            let resolve = dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            enc.resolve_query_set(qs, 0..2, &resolve, 0);
            let read = dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps read"),
                size: 16,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            enc.copy_buffer_to_buffer(&resolve, 0, &read, 0, 16);
            read
        });
        let mut reads = Vec::new();
        for b in &prog.buffers {
            if let BufKind::Output { words, readback: true } = b.kind {
                let (src, size) = &bufs[b.name];
                let read = dev.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(b.name),
                    size: *size,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                enc.copy_buffer_to_buffer(src, 0, &read, 0, *size);
                reads.push((b.name, b.elem, words, read));
            }
        }
        let t0 = Instant::now();
        let idx = self.queue.submit([enc.finish()]);
        let mut all: Vec<&wgpu::Buffer> = reads.iter().map(|r| &r.3).collect();
        if let Some(t) = &ts_buf {
            all.push(t);
        }
        let pending = Arc::new(Mutex::new(Vec::new()));
        for b in &all {
            let p = pending.clone();
            b.map_async(wgpu::MapMode::Read, .., move |r| {
                if let Ok(mut v) = p.lock() {
                    v.push(r.is_ok());
                }
            });
        }
        dev.poll(wgpu::PollType::Wait { submission_index: Some(idx), timeout: Some(QUEUE_TIMEOUT) })
            .map_err(|e| format!("waiting for the queue: {e}"))?;
        let wall = t0.elapsed().as_secs_f64();
        let oks = pending.lock().map(|v| v.clone()).unwrap_or_default();
        if oks.len() != all.len() || oks.iter().any(|ok| !ok) {
            return Err(format!("mapping the outputs failed ({} of {} mapped)", oks.len(), all.len()));
        }
        if let Some(e) = self.take_errors() {
            return Err(e);
        }
        let mut out = Results::default();
        for (name, elem, words, read) in &reads {
            let v = read.get_mapped_range(..).map_err(|e| format!("reading `{name}`: {e}"))?;
            let w: Vec<u32> = bytemuck::cast_slice::<u8, u32>(&v)[..*words].to_vec();
            drop(v);
            read.unmap();
            let poison = elem.poison();
            if let Some(i) = w.iter().position(|&x| x == poison) {
                return Err(format!(
                    "output `{name}` still holds the sentinel {poison:#010x} at element {i}: the kernel never wrote it"
                ));
            }
            out.words.insert(name, w);
        }
        out.timing = match ts_buf {
            Some(t) => {
                let v = t.get_mapped_range(..).map_err(|e| format!("reading timestamps: {e}"))?;
                let ts: [u64; 2] = [
                    u64::from_le_bytes(v[0..8].try_into().unwrap_or([0; 8])),
                    u64::from_le_bytes(v[8..16].try_into().unwrap_or([0; 8])),
                ];
                drop(v);
                t.unmap();
                let period = self.queue.get_timestamp_period() as f64;
                (ts[1] >= ts[0])
                    .then(|| Timing { seconds: (ts[1] - ts[0]) as f64 * period * 1e-9, method: TimingMethod::Device })
            }
            None => Some(Timing { seconds: wall, method: TimingMethod::System }),
        };
        Ok(out)
    }
}

impl Gpu {
    /// The buffers a timed launch resolves its timestamps into; `None` without timestamp
    /// queries (samples are then timed by the wall clock).
    pub(crate) fn stamps(&self) -> Option<Stamps> {
        self.timestamps.as_ref()?;
        let buffer = |label, usage| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage,
                mapped_at_creation: false,
            })
        };
        Some(Stamps {
            resolve: buffer("timestamps", wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC),
            read: buffer("timestamps read", wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST),
        })
    }

    /// Submit an empty command buffer and wait for the queue: the queued writes of
    /// [`Gpu::prepare`] (texture uploads) and any earlier work finish here rather than inside the
    /// first timed launch.
    pub(crate) fn settle(&self) -> Result<(), String> {
        let idx = self.queue.submit([]);
        self.wait(idx)
    }

    fn wait(&self, idx: wgpu::SubmissionIndex) -> Result<(), String> {
        self.device
            .poll(wgpu::PollType::Wait { submission_index: Some(idx), timeout: Some(QUEUE_TIMEOUT) })
            .map(|_| ())
            .map_err(|e| format!("waiting for the queue: {e}"))
    }

    /// Launch `steps` once, in order, in one command buffer, and time them: by the timestamps
    /// around the passes where `stamps` is given (a pair the driver wrote out of order or as
    /// equal is not a measurement: that sample falls back to the wall clock), else by the wall
    /// clock around submit + wait. Nothing is read back but the timestamps; run inside
    /// [`Gpu::scoped`] so that a validation error or a lost device fails the launch.
    pub(crate) fn launch_timed(&self, steps: &[&Step], stamps: Option<&Stamps>) -> Result<Timing, String> {
        let mut enc =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("qdiff bench") });
        self.encode_passes(&mut enc, steps);
        let stamps = stamps.zip(self.timestamps.as_ref());
        if let Some((s, qs)) = stamps {
            enc.resolve_query_set(qs, 0..2, &s.resolve, 0);
            enc.copy_buffer_to_buffer(&s.resolve, 0, &s.read, 0, 16);
        }
        let t0 = Instant::now();
        let idx = self.queue.submit([enc.finish()]);
        let mapped = Arc::new(Mutex::new(None));
        if let Some((s, _)) = stamps {
            let m = mapped.clone();
            s.read.map_async(wgpu::MapMode::Read, .., move |r| {
                if let Ok(mut v) = m.lock() {
                    *v = Some(r.is_ok());
                }
            });
        }
        self.wait(idx)?;
        let wall = Timing { seconds: t0.elapsed().as_secs_f64(), method: TimingMethod::System };
        if let Some(e) = self.take_errors() {
            return Err(e);
        }
        let Some((s, _)) = stamps else { return Ok(wall) };
        if mapped.lock().ok().and_then(|m| *m) != Some(true) {
            return Err("mapping the timestamps failed".into());
        }
        let v = s.read.get_mapped_range(..).map_err(|e| format!("reading timestamps: {e}"))?;
        let ts: [u64; 2] = [
            u64::from_le_bytes(v[0..8].try_into().unwrap_or([0; 8])),
            u64::from_le_bytes(v[8..16].try_into().unwrap_or([0; 8])),
        ];
        drop(v);
        s.read.unmap();
        let period = self.queue.get_timestamp_period() as f64;
        Ok(if ts[1] > ts[0] {
            Timing { seconds: (ts[1] - ts[0]) as f64 * period * 1e-9, method: TimingMethod::Device }
        } else {
            wall
        })
    }

    /// Evict the GPU's caches before a cold sample: overwrite a scratch buffer of
    /// [`FLUSH_BYTES`] (less where `max_buffer_size` is smaller) with `clear_buffer` and wait.
    /// The writes go through the last-level cache (the point of coherence for every engine on
    /// the GPUs qdiff targets) and leave it holding scratch lines only. The buffer is created on
    /// first use and kept; run inside [`Gpu::scoped`] (creating it may run out of memory).
    pub(crate) fn flush_caches(&mut self) -> Result<(), String> {
        let size =
            FLUSH_BYTES.min(self.limits.max_buffer_size) / wgpu::COPY_BUFFER_ALIGNMENT * wgpu::COPY_BUFFER_ALIGNMENT;
        let buf = self.flush.get_or_insert_with(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("qdiff cache flush"),
                size,
                usage: wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        let mut enc =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("qdiff flush") });
        enc.clear_buffer(buf, 0, None);
        let idx = self.queue.submit([enc.finish()]);
        self.wait(idx)
    }

    /// The bytes `offset .. offset + size` of `buf` (which needs COPY_SRC), copied to a mapped
    /// buffer and read; `offset` and `size` multiples of 4.
    pub(crate) fn read_buffer(&self, buf: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>, String> {
        let read = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("qdiff read"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("qdiff read") });
        enc.copy_buffer_to_buffer(buf, offset, &read, 0, size);
        let idx = self.queue.submit([enc.finish()]);
        let mapped = Arc::new(Mutex::new(None));
        let m = mapped.clone();
        read.map_async(wgpu::MapMode::Read, .., move |r| {
            if let Ok(mut v) = m.lock() {
                *v = Some(r.is_ok());
            }
        });
        self.wait(idx)?;
        if mapped.lock().ok().and_then(|m| *m) != Some(true) {
            return Err("mapping a read-back buffer failed".into());
        }
        let bytes = read.get_mapped_range(..).map_err(|e| format!("reading back: {e}"))?.to_vec();
        read.unmap();
        Ok(bytes)
    }
}

/// A wgpu error with its sources ("Validation Error" alone says nothing).
fn error_chain(e: &wgpu::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The uniform `Params` words as uploaded: each param in order, then `nc_key` (never the magic
/// value, so `nc()` in the kernels is an identity the driver cannot see through), zero padded to
/// a multiple of 16 bytes.
fn param_words(prog: &Program) -> Vec<u32> {
    let mut pw: Vec<u32> = prog.params.iter().map(|p| p.1).collect();
    pw.push(0);
    pw.resize(pw.len().div_ceil(4).max(1) * 4, 0);
    pw
}

/// A buffer's contents at upload: the input words, or the sentinel in every word of an output;
/// never empty (a zero-sized binding is invalid).
fn initial_words(b: &BufferRes) -> Vec<u32> {
    let mut words = match &b.kind {
        BufKind::Input(d) => d.clone(),
        BufKind::Output { words, .. } => vec![b.elem.poison(); *words],
    };
    if words.is_empty() {
        words.push(0);
    }
    words
}

/// `(width, height, texels)` of a texture resource.
pub(crate) fn texture_extent(t: &TextureRes, max_dim: u32) -> (u32, u32, u32) {
    let values = match &t.data {
        TexData::Float(v) => v.len(),
        TexData::Int(v) => v.len(),
        TexData::Written { values } => *values,
    };
    let texels = (values as u32).div_ceil(channels(t.alloc)).max(1);
    let w = t.width.unwrap_or_else(|| texels.min(max_dim.min(4096))).max(1);
    let h = texels.div_ceil(w).max(1);
    (w, h, texels)
}

/// Kernel bodies, embedded.
pub(crate) mod src {
    /// Shared helpers (rounding, bf16/f16 emulation).
    pub const COMMON: &str = include_str!("kernels/common.wgsl");
    /// Activation qparams (launch 1 of the activation path).
    pub const ACT_CHOOSE: &str =
        concat!(include_str!("kernels/act_common.wgsl"), include_str!("kernels/act_choose.wgsl"));
    /// Activation codes (launch 2).
    pub const ACT_QUANTIZE: &str =
        concat!(include_str!("kernels/act_common.wgsl"), include_str!("kernels/act_quantize.wgsl"));
    /// Dequantize / embedding.
    pub const DEQUANT: &str = concat!(include_str!("kernels/weights.wgsl"), include_str!("kernels/dequant.wgsl"));
    /// Weight-only linear.
    pub const LINEAR_W: &str = concat!(include_str!("kernels/weights.wgsl"), include_str!("kernels/linear_w.wgsl"));
    /// 8da4w linear.
    pub const LINEAR_DQ8CA: &str =
        concat!(include_str!("kernels/weights.wgsl"), include_str!("kernels/linear_dq8ca.wgsl"));
    /// ggml Q8_0 blocks.
    pub const QUANTIZE_Q8: &str = include_str!("kernels/q8_0.wgsl");
    /// GPU quantizers.
    pub const QUANTIZE: &str = include_str!("kernels/quantize.wgsl");
    /// `Device::peaks`: stream read, copy, FMA throughput (standalone: declares its bindings).
    pub const PEAK: &str = include_str!("kernels/peak.wgsl");
}

/// Every complete WGSL source this process has assembled, keyed `entry#hash` (see
/// [`assembled_kernels`]).
static ASSEMBLED: std::sync::OnceLock<Mutex<BTreeMap<String, String>>> = std::sync::OnceLock::new();

/// Remember an assembled kernel so tests can translate exactly what ran (MSL for Metal, SPIR-V).
pub(crate) fn record_assembled(entry: &str, src: &str) {
    let hash = src.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3));
    if let Ok(mut m) = ASSEMBLED.get_or_init(Default::default).lock() {
        m.entry(format!("{entry}#{hash:016x}")).or_insert_with(|| src.to_string());
    }
}

/// Every kernel source assembled so far in this process, as `(entry#hash, WGSL)`, sorted: the
/// kernels exactly as they were compiled (dtype alias, constants, bindings, fragments).
pub fn assembled_kernels() -> Vec<(String, String)> {
    ASSEMBLED
        .get()
        .and_then(|m| m.lock().ok().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
        .unwrap_or_default()
}

/// Assemble a dispatch's WGSL; returns it and whether it needs passthrough.
fn assemble(prog: &Program, d: &Dispatch) -> Result<(String, bool), String> {
    let mut s = String::new();
    let mut passthrough = false;
    let f16_buffers = d.uses.iter().any(|u| prog.buffers.iter().any(|b| b.name == u.name && b.elem == Elem::F16));
    if f16_buffers && prog.dtype != "f16" {
        s.push_str("enable f16;\n");
    }
    if prog.dtype == "f16" {
        s.push_str("enable f16;\nalias T = f16;\nconst T_IS_F16: bool = true;\nconst T_IS_BF16: bool = false;\n");
    } else {
        s.push_str("alias T = f32;\nconst T_IS_F16: bool = false;\n");
        s.push_str(&format!("const T_IS_BF16: bool = {};\n", prog.dtype == "bf16"));
    }
    s.push_str(&format!("const WG: u32 = {}u;\n", d.wg));
    for (k, v) in &prog.consts {
        s.push_str(&format!("const {k}: u32 = {v}u;\n"));
    }
    s.push_str("struct Params {\n");
    for (k, _) in &prog.params {
        s.push_str(&format!("  {k}: u32,\n"));
    }
    s.push_str("  nc_key: u32,\n");
    s.push_str("}\n@group(0) @binding(0) var<uniform> P: Params;\n");
    for (i, u) in d.uses.iter().enumerate() {
        let b = i + 1;
        let name = u.name;
        if let Some(t) = prog.textures.iter().find(|t| t.name == name) {
            let bind = u.bind.unwrap_or(t.alloc);
            if bind != t.alloc {
                passthrough = true;
            }
            let (w, _, _) = texture_extent(t, 8192);
            let cpt = channels(bind);
            let scalar = if bind.is_float() { "f32" } else { "i32" };
            let acc = if u.access == Access::Read { "read" } else { "write" };
            s.push_str(&format!(
                "@group(0) @binding({b}) var {name}: texture_storage_2d<{}, {acc}>;\nalias {name}_S = {scalar};\nconst {name}_CPT: u32 = {cpt}u;\nconst {name}_W: u32 = {w}u;\n",
                wgsl_format(bind)
            ));
            if u.access == Access::Read {
                s.push_str(&format!(
                    "fn {name}_ld(i: u32) -> {scalar} {{ let t = i / {cpt}u; return textureLoad({name}, vec2<u32>(t % {w}u, t / {w}u))[i % {cpt}u]; }}\n"
                ));
                s.push_str(&format!(
                    "fn {name}_ld4(t: u32) -> vec4<{scalar}> {{ return textureLoad({name}, vec2<u32>(t % {w}u, t / {w}u)); }}\n"
                ));
            } else {
                s.push_str(&format!(
                    "fn {name}_st(t: u32, v: vec4<{scalar}>) {{ textureStore({name}, vec2<u32>(t % {w}u, t / {w}u), v); }}\n"
                ));
            }
        } else if let Some(bf) = prog.buffers.iter().find(|x| x.name == name) {
            let ty = bf.elem.wgsl();
            let acc = if u.access == Access::Read { "read" } else { "read_write" };
            s.push_str(&format!(
                "@group(0) @binding({b}) var<storage, {acc}> {name}: array<{ty}>;\nalias {name}_S = {ty};\nconst {name}_CPT: u32 = 1u;\n"
            ));
            s.push_str(&format!("fn {name}_ld(i: u32) -> {ty} {{ return {name}[i]; }}\n"));
            if u.access == Access::Write {
                s.push_str(&format!("fn {name}_st(t: u32, v: vec4<{ty}>) {{ {name}[t] = v.x; }}\n"));
            }
        } else {
            return Err(format!("internal: dispatch {} uses unknown resource {name}", d.entry));
        }
    }
    s.push_str(src::COMMON);
    s.push('\n');
    s.push_str(d.source);
    Ok((s, passthrough))
}

// ---------------------------------------------------------------------------------------------
// Export: a program as a recipe a C / Vulkan harness can rebuild without qdiff.

/// Lowercase hex of bytes, two digits each, in memory order.
fn hex_bytes(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// 32-bit words as they sit in memory (little-endian), as hex.
fn hex_words_le(words: &[u32]) -> String {
    hex_bytes(bytemuck::cast_slice(words))
}

/// The Vulkan format of a texel format, so a C harness need not translate WGSL names.
fn vk_format(f: TexelFormat) -> &'static str {
    match f {
        TexelFormat::R32Float => "VK_FORMAT_R32_SFLOAT",
        TexelFormat::Rgba32Float => "VK_FORMAT_R32G32B32A32_SFLOAT",
        TexelFormat::Rgba16Float => "VK_FORMAT_R16G16B16A16_SFLOAT",
        TexelFormat::Rgba8Sint => "VK_FORMAT_R8G8B8A8_SINT",
        TexelFormat::Rgba32Sint => "VK_FORMAT_R32G32B32A32_SINT",
        TexelFormat::R32Sint => "VK_FORMAT_R32_SINT",
    }
}

impl Gpu {
    /// Describe `prog` as [`Gpu::run`] would launch it, without launching it: the uniform params,
    /// every resource with its bytes at upload, and per dispatch the assembled WGSL, its SPIR-V,
    /// the bindings and the workgroup counts. Byte strings are lowercase hex in memory order
    /// (buffers are little-endian 32-bit words).
    pub(crate) fn describe(&self, prog: &Program) -> Result<serde_json::Value, String> {
        use serde_json::json;
        let pw = param_words(prog);
        let mut fields: Vec<serde_json::Value> =
            prog.params.iter().map(|(name, value)| json!({"name": name, "value": value})).collect();
        fields.push(json!({"name": "nc_key", "value": 0}));
        let params = json!({
            "group": 0,
            "binding": 0,
            "type": "uniform_buffer",
            "layout": "struct Params: one u32 per field in this order, zero padded to a multiple of 16 bytes",
            "fields": fields,
            "size_bytes": pw.len() * 4,
            "data_hex": hex_words_le(&pw),
        });
        let mut resources = Vec::new();
        for b in &prog.buffers {
            let words = initial_words(b);
            let (role, read_back) = match b.kind {
                BufKind::Input(_) => ("input", false),
                BufKind::Output { readback, .. } => (if readback { "output" } else { "intermediate" }, readback),
            };
            let mut r = json!({
                "name": b.name,
                "kind": "buffer",
                "element": b.elem.wgsl(),
                "role": role,
                "size_bytes": words.len() * 4,
                "read_back": read_back,
            });
            if b.elem == Elem::F16 {
                r["element_note"] = "two f16 per 32-bit word, low half first".into();
            }
            match b.kind {
                BufKind::Input(_) => r["data_hex"] = hex_words_le(&words).into(),
                // A sentinel left after the launch means the kernel never wrote that element.
                BufKind::Output { .. } => r["fill_word"] = format!("{:#010x}", b.elem.poison()).into(),
            }
            resources.push(r);
        }
        for t in &prog.textures {
            let (w, h, _) = texture_extent(t, self.limits.max_texture_dimension_2d);
            let bytes = encode_texels(t.alloc, &t.data, (w * h) as usize);
            let (role, values) = match &t.data {
                TexData::Float(v) => ("input", v.len()),
                TexData::Int(v) => ("input", v.len()),
                TexData::Written { values } => ("written", *values),
            };
            resources.push(json!({
                "name": t.name,
                "kind": "texture",
                "dimension": "2d",
                "alloc_format": wgsl_format(t.alloc),
                "vk_format": vk_format(t.alloc),
                "width": w,
                "height": h,
                "bytes_per_row": w * t.alloc.texel_bytes() as u32,
                "values": values,
                "values_per_texel": channels(t.alloc),
                "layout": "a linear array of scalars, values_per_texel per texel, texel i at (i % width, i / width)",
                "usage": "storage image (read-only or write-only per binding), transfer dst for the upload",
                "role": role,
                "data_hex": hex_bytes(&bytes),
            }));
        }
        let mut dispatches = Vec::new();
        for (index, d) in prog.dispatches.iter().enumerate() {
            let (wgsl, passthrough) = assemble(prog, d)?;
            let words = super::spirv::wgsl_to_spirv(&wgsl).map_err(|e| format!("kernel `{}`: {e}", d.entry))?;
            let mut bindings = vec![
                json!({"group": 0, "binding": 0, "resource": "params", "type": "uniform_buffer", "access": "read"}),
            ];
            for (i, u) in d.uses.iter().enumerate() {
                let binding = i + 1;
                if let Some(t) = prog.textures.iter().find(|t| t.name == u.name) {
                    let bind = u.bind.unwrap_or(t.alloc);
                    bindings.push(json!({
                        "group": 0,
                        "binding": binding,
                        "resource": u.name,
                        "type": "storage_texture",
                        "access": if u.access == Access::Read { "read_only" } else { "write_only" },
                        "alloc_format": wgsl_format(t.alloc),
                        "bind_format": wgsl_format(bind),
                        "view_vk_format": vk_format(t.alloc),
                        "shader_vk_format": vk_format(bind),
                        "format_mismatch": bind != t.alloc,
                    }));
                } else if let Some(b) = prog.buffers.iter().find(|b| b.name == u.name) {
                    bindings.push(json!({
                        "group": 0,
                        "binding": binding,
                        "resource": u.name,
                        "type": "storage_buffer",
                        "access": if u.access == Access::Read { "read" } else { "read_write" },
                        "element": b.elem.wgsl(),
                        "size_bytes": initial_words(b).len() * 4,
                    }));
                } else {
                    return Err(format!("internal: dispatch {} binds unknown resource {}", d.entry, u.name));
                }
            }
            let (gx, gy) = self.workgroups(d);
            let spirv_origin = if passthrough {
                "the module qdiff passed to the driver (SPIR-V passthrough): naga's translation of this WGSL, bind formats in the shader, alloc formats on the views"
            } else {
                "naga's translation of this WGSL with wgpu's bounds-check policy; wgpu compiled the WGSL itself for this dispatch, so the driver's module may differ in ids and names, not in meaning"
            };
            dispatches.push(json!({
                "index": index,
                "entry": d.entry,
                "workgroup_size": [d.wg, 1, 1],
                "invocations": d.threads,
                "dispatch": [gx, gy, 1],
                "passthrough": passthrough,
                "bindings": bindings,
                "wgsl": wgsl,
                "spirv_words_hex": words.iter().map(|w| format!("{w:08x}")).collect::<String>(),
                "spirv_words": words.len(),
                "spirv_origin": spirv_origin,
            }));
        }
        let consts: serde_json::Map<String, serde_json::Value> =
            prog.consts.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
        Ok(json!({
            "dtype": prog.dtype,
            "constants": consts,
            "params": params,
            "resources": resources,
            "dispatches": dispatches,
            "order": "dispatches run in order, one compute pass each, in one command buffer (a storage barrier between passes); then every resource with read_back is copied out",
        }))
    }
}

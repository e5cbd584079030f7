//! Benchmarks on the GPU runner: a case's programs prepared once and launched by the sample
//! loop of [`crate::bench`] ([`programs`]), and the adapter's peaks measured by `peak.wgsl`
//! ([`peaks`]).
//!
//! A sample is one command buffer holding every dispatch of the case's programs in order (what
//! `ops::run` would launch as separate submissions), timed by the timestamps written at the
//! beginning of its first pass and the end of its last one, else by the wall clock around
//! submit + wait. Nothing is created, uploaded or read back inside a sample.

use super::context::{record_assembled, src, Gpu, Prepared, Program, Step};
use crate::bench::{sample, BenchPlan, Peaks, Samples};
use crate::case::TimingMethod;
use std::cell::RefCell;
use std::time::Duration;

/// Time `programs` (already run once by the caller, so their kernels are compiled and known to
/// work) as `plan` says.
pub(crate) fn programs(gpu: &mut Gpu, programs: &[Program], plan: &BenchPlan) -> Result<Samples, String> {
    let prepared: Vec<Prepared> =
        gpu.scoped(|g| programs.iter().map(|p| g.prepare(p)).collect::<Result<Vec<_>, _>>())?;
    gpu.scoped(|g| g.settle())?;
    let steps: Vec<&Step> = prepared.iter().flat_map(|p| &p.steps).collect();
    time(gpu, &steps, plan)
}

/// The sample loop over one launch of `steps`. A cold plan flushes the caches before each run
/// ([`Gpu::flush_caches`]); a flush that fails fails the run after it (the loop's flush cannot
/// return an error). Every flush and run is scoped, so validation errors, a lost device or a
/// queue timeout end the loop with that error.
fn time(gpu: &mut Gpu, steps: &[&Step], plan: &BenchPlan) -> Result<Samples, String> {
    let stamps = gpu.stamps();
    let flush_failed: RefCell<Option<String>> = RefCell::new(None);
    let gpu = RefCell::new(gpu);
    sample(
        plan,
        || {
            if let Err(e) = gpu.borrow_mut().scoped(|g| g.flush_caches()) {
                flush_failed.borrow_mut().get_or_insert(format!("flushing the caches: {e}"));
            }
        },
        || {
            if let Some(e) = flush_failed.borrow_mut().take() {
                return Err(e);
            }
            gpu.borrow_mut().scoped(|g| g.launch_timed(steps, stamps.as_ref()))
        },
    )
}

/// Largest buffer the bandwidth kernels stream: several times any GPU's last-level cache (H100's
/// L2 is 50 MB), and small enough for the copy's two buffers to fit any adapter qdiff runs on.
const PEAK_BUFFER_MAX: u64 = 256 << 20;
/// The same on a CPU driver (lavapipe), whose last-level cache is the CPU's L3 (32 MiB per CCD
/// on current x86 server parts): twice that. Its storage-buffer accesses are scalarised and
/// bounds-checked per lane (0.4 GB/s on 2 EPYC cores), so 256 MiB would make every read
/// sample a third of a second and `peaks` with the default plan take over 7 s.
const PEAK_BUFFER_MAX_CPU: u64 = 64 << 20;
/// Invocations per workgroup of `peak.wgsl` (its `WG`).
const PEAK_WG: u32 = 256;
/// FLOPs of one `peak_fma` loop trip of one invocation: 8 chains × 4 rounds × 4 lanes × 2.
const FMA_FLOPS_PER_TRIP: f64 = (8 * 4 * 4 * 2) as f64;
/// What one FMA sample should last: long enough that launch overhead (microseconds) and timer
/// resolution are below 0.1 %, short enough that the default plan's samples take well under
/// its budget.
const FMA_TARGET: Duration = Duration::from_millis(20);
/// `peak_fma`'s multiplier and addend (see `Params` in `peak.wgsl`); `never` for `peak_read`.
const FMA_MUL: f32 = 0.999_9;
const FMA_ADD: f32 = 1.0e-4;
const READ_NEVER: f32 = -1.0;

/// The `Params` uniform of `peak.wgsl`, 16-byte padded.
fn peak_params(n: u32, iters: u32) -> [u32; 8] {
    [n, iters, READ_NEVER.to_bits(), FMA_MUL.to_bits(), FMA_ADD.to_bits(), 0, 0, 0]
}

/// The pattern `peak_fill` writes at vec4 `i` (`peak_fill_value` in `peak.wgsl`).
fn fill_value(i: u64) -> [f32; 4] {
    let v = (i % 1024) as f32;
    [v, v + 0.25, v + 0.5, v + 0.75]
}

/// The peak kernels compiled, their buffers, and the bind group of the bandwidth launches.
struct PeakKernels {
    /// Bytes of each of `a` and `b`.
    bytes: u64,
    /// Workgroups of every launch (the invocations are `groups` × [`PEAK_WG`]).
    groups: u32,
    /// Streamed by `peak_read`, copied to `b` by `peak_copy`.
    a: wgpu::Buffer,
    /// The copy's destination.
    b: wgpu::Buffer,
    /// One f32 per invocation.
    out: wgpu::Buffer,
    layout: wgpu::BindGroupLayout,
    /// `peak_fill`, `peak_read`, `peak_copy`, `peak_fma`.
    pipelines: [wgpu::ComputePipeline; 4],
}

impl PeakKernels {
    /// Buffers sized from the device's limits and the kernels compiled (naga's diagnostics on a
    /// compile error). Run inside [`Gpu::scoped`].
    fn new(gpu: &Gpu) -> Result<PeakKernels, String> {
        let l = &gpu.limits;
        let cpu = gpu.adapter.get_info().device_type == wgpu::DeviceType::Cpu;
        let max = if cpu { PEAK_BUFFER_MAX_CPU } else { PEAK_BUFFER_MAX };
        let bytes = max.min(l.max_storage_buffer_binding_size).min(l.max_buffer_size) / 16 * 16;
        if bytes < 16 {
            return Err(format!("storage buffers of {bytes} bytes are too small to measure bandwidth"));
        }
        // Enough invocations to fill a big GPU (H100: 132 SMs × 2048 resident); a CPU driver
        // runs a workgroup per thread at a time, so a few workgroups per core suffice, and
        // fewer keep each invocation's share of the buffer long.
        let want: u32 = if cpu { 64 * PEAK_WG } else { 1 << 20 };
        let groups = (want / PEAK_WG).min(l.max_compute_workgroups_per_dimension).max(1);
        let dev = &gpu.device;
        let storage = |label, size| {
            dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        };
        let out = storage("peak out", (groups * PEAK_WG) as u64 * 4);
        let (a, b) = (storage("peak a", bytes), storage("peak b", bytes));
        record_assembled("peak", src::PEAK);
        let diagnostic = |e: String| format!("peak.wgsl: {e}");
        let parsed = naga::front::wgsl::parse_str(src::PEAK).map_err(|e| diagnostic(e.emit_to_string(src::PEAK)))?;
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&parsed)
            .map_err(|e| diagnostic(e.emit_to_string(src::PEAK)))?;
        let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("peak"),
            source: wgpu::ShaderSource::Wgsl(src::PEAK.into()),
        });
        let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None },
            count: None,
        };
        let rw = wgpu::BufferBindingType::Storage { read_only: false };
        let layout = dev.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("peak"),
            entries: &[
                entry(0, wgpu::BufferBindingType::Uniform),
                entry(1, wgpu::BufferBindingType::Storage { read_only: true }),
                entry(2, rw),
                entry(3, rw),
            ],
        });
        let pl = dev.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("peak"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = |entry: &str| {
            dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pl),
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let pipelines = [pipeline("peak_fill"), pipeline("peak_read"), pipeline("peak_copy"), pipeline("peak_fma")];
        Ok(PeakKernels { bytes, groups, a, b, out, layout, pipelines })
    }

    /// vec4 elements per buffer.
    fn n(&self) -> u32 {
        (self.bytes / 16) as u32
    }

    /// Invocations per launch.
    fn invocations(&self) -> u64 {
        self.groups as u64 * PEAK_WG as u64
    }

    /// The launch of entry `index` (of `pipelines`) binding `src`, `dst`, `out` and params for
    /// `iters` FMA trips.
    fn step(&self, gpu: &Gpu, index: usize, src: &wgpu::Buffer, dst: &wgpu::Buffer, iters: u32) -> Step {
        use wgpu::util::DeviceExt;
        let params = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("peak params"),
            contents: bytemuck::cast_slice(&peak_params(self.n(), iters)),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let label = ["peak_fill", "peak_read", "peak_copy", "peak_fma"][index];
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: src.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 2, resource: dst.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 3, resource: self.out.as_entire_binding() },
            ],
        });
        Step { label, pipeline: self.pipelines[index].clone(), bind_group, groups: (self.groups, 1) }
    }
}

const FILL: usize = 0;
const READ: usize = 1;
const COPY: usize = 2;
const FMA: usize = 3;

/// Most `peak_fma` trips calibration may choose (a device that slow measures what it can).
const FMA_MAX_ITERS: u32 = 1 << 20;

/// Measure the adapter's peaks with `peak.wgsl`. The three kernels share `plan`'s budget (a
/// third each: peaks are one measurement, and on a CPU driver a bandwidth sample takes tens of
/// milliseconds); `plan.cold` is ignored, since the bandwidth kernels stream buffers several
/// times any cache and the FMA kernel touches no memory in its loop. The FMA trip count is
/// calibrated first so that a sample lasts about [`FMA_TARGET`] on this adapter, whatever
/// its speed. The copy is checked against the fill pattern at both ends of the buffer and the
/// FMA output for a finite value, so a launch that silently did nothing cannot pass for a peak.
pub(crate) fn peaks(gpu: &mut Gpu, plan: &BenchPlan) -> Result<Peaks, String> {
    let k = gpu.scoped(|g| PeakKernels::new(g))?;
    let plan = BenchPlan { budget: plan.budget / 3, cold: false, ..*plan };
    let stamps = gpu.stamps();
    // `a` is the read-only `src` of the measured kernels; the fill binds it as `dst` instead.
    gpu.scoped(|g| g.launch_timed(&[&k.step(g, FILL, &k.b, &k.a, 0)], None))?;

    let read = gpu.scoped(|g| Ok(k.step(g, READ, &k.a, &k.b, 0)))?;
    let read = time(gpu, &[&read], &plan)?;
    let copy = gpu.scoped(|g| Ok(k.step(g, COPY, &k.a, &k.b, 0)))?;
    let copy = time(gpu, &[&copy], &plan)?;
    let last = k.bytes / 16 - 1;
    for (i, at) in [(0, 0), (last, k.bytes - 16)] {
        let bytes = gpu.scoped(|g| g.read_buffer(&k.b, at, 16))?;
        let got: &[f32] = bytemuck::cast_slice(&bytes);
        if got != fill_value(i) {
            return Err(format!("peak_copy left {got:?} at vec4 {i} where the source holds {:?}", fill_value(i)));
        }
    }

    let target = FMA_TARGET.as_secs_f64();
    let mut iters = 16u32;
    let fma_step = |gpu: &mut Gpu, iters: u32| gpu.scoped(|g| Ok(k.step(g, FMA, &k.a, &k.b, iters)));
    loop {
        let step = fma_step(gpu, iters)?;
        let t = gpu.scoped(|g| g.launch_timed(&[&step], stamps.as_ref()))?.seconds.max(1e-9);
        if t >= target / 4.0 || iters >= FMA_MAX_ITERS {
            iters = (iters as f64 * target / t).round().clamp(1.0, FMA_MAX_ITERS as f64) as u32;
            break;
        }
        iters = (iters as f64 * (target / 2.0 / t).clamp(2.0, 64.0)).min(FMA_MAX_ITERS as f64) as u32;
    }
    let step = fma_step(gpu, iters)?;
    let fma = time(gpu, &[&step], &plan)?;
    let out = gpu.scoped(|g| g.read_buffer(&k.out, 0, 4))?;
    let value = f32::from_le_bytes([out[0], out[1], out[2], out[3]]);
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("peak_fma wrote {value} where its chains converge to positive values"));
    }

    let per_s = |amount: f64, s: &Samples| amount / s.median() / 1e9;
    let flops = FMA_FLOPS_PER_TRIP * iters as f64 * k.invocations() as f64;
    let all_device = [&read, &copy, &fma].iter().all(|s| s.method == TimingMethod::Device);
    Ok(Peaks {
        read_gbps: per_s(k.bytes as f64, &read),
        copy_gbps: per_s(2.0 * k.bytes as f64, &copy),
        fma_gflops: per_s(flops, &fma),
        buffer_bytes: k.bytes,
        method: if all_device { TimingMethod::Device } else { TimingMethod::System },
    })
}

// Peak kernels: what `Device::peaks` measures an adapter by (gpu/bench.rs launches them).
//
// `peak_read` streams every vec4 of `src` once, `peak_copy` copies `src` to `dst`, both in a
// grid-stride loop (at each trip the invocations of a dispatch touch consecutive vec4s: coalesced
// on GPUs, sequential per workgroup on CPU drivers). `peak_fma` runs CHAINS independent vec4
// chains of `fma` in registers, ROUNDS times per loop trip, for `P.iters` trips. `peak_fill`
// writes the pattern `peak_fill_value(i)` into `dst` (bench.rs binds the read buffer there to
// initialise it, and checks the copy against the same pattern).
//
// Every operand the compiler could fold comes from the uniform `P`, and every result reaches
// memory or a branch on a uniform, so no driver can drop the loads or the arithmetic:
// `peak_read` stores its sum only when it equals `P.never` (a negative value, and the sums of
// the non-negative pattern never are), which keeps the reads live without adding write traffic
// to what is timed as a pure read.

struct Params {
    // vec4 elements in `src` and `dst`.
    n: u32,
    // `peak_fma` loop trips.
    iters: u32,
    // A sum `peak_read` never produces.
    never: f32,
    // `peak_fma` multiplier, in (0, 1): every chain converges to add / (1 - mul), so the values
    // stay normal (no denormal or infinity slow path on any device) whatever the trip count.
    mul: f32,
    // `peak_fma` addend.
    add: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

fn peak_fill_value(i: u32) -> vec4<f32> {
    let v = f32(i % 1024u);
    return vec4<f32>(v, v + 0.25, v + 0.5, v + 0.75);
}

@compute @workgroup_size(WG)
fn peak_fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * WG;
    for (var i = gid.x; i < P.n; i += stride) {
        dst[i] = peak_fill_value(i);
    }
}

@compute @workgroup_size(WG)
fn peak_read(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * WG;
    var acc = vec4<f32>(0.0);
    for (var i = gid.x; i < P.n; i += stride) {
        acc += src[i];
    }
    let s = acc.x + acc.y + acc.z + acc.w;
    if (s == P.never) {
        out[gid.x] = s;
    }
}

@compute @workgroup_size(WG)
fn peak_copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * WG;
    for (var i = gid.x; i < P.n; i += stride) {
        dst[i] = src[i];
    }
}

// 8 chains x 4 rounds per trip: 32 vec4 FMAs (128 scalar, 256 FLOPs) per trip and invocation
// (bench.rs: FMA_FLOPS_PER_TRIP). Eight independent chains cover the FMA latency of every
// current GPU (4 to 6 cycles) at one issue per cycle; the rounds amortise the loop counter.
@compute @workgroup_size(WG)
fn peak_fma(@builtin(global_invocation_id) gid: vec3<u32>) {
    let m = vec4<f32>(P.mul);
    let c = vec4<f32>(P.add);
    let s = f32(gid.x % 256u) * P.add;
    var a0 = vec4<f32>(s, s + 0.125, s + 0.25, s + 0.375);
    var a1 = a0 + vec4<f32>(0.5);
    var a2 = a0 + vec4<f32>(1.0);
    var a3 = a0 + vec4<f32>(1.5);
    var a4 = a0 + vec4<f32>(2.0);
    var a5 = a0 + vec4<f32>(2.5);
    var a6 = a0 + vec4<f32>(3.0);
    var a7 = a0 + vec4<f32>(3.5);
    for (var t = 0u; t < P.iters; t++) {
        for (var r = 0u; r < 4u; r++) {
            a0 = fma(a0, m, c);
            a1 = fma(a1, m, c);
            a2 = fma(a2, m, c);
            a3 = fma(a3, m, c);
            a4 = fma(a4, m, c);
            a5 = fma(a5, m, c);
            a6 = fma(a6, m, c);
            a7 = fma(a7, m, c);
        }
    }
    let sum = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
    out[gid.x] = sum.x + sum.y + sum.z + sum.w;
}

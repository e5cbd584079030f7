// The model forward's tiled linear: y[m, n] = Σ_k x[m, k]·w(n, k) (+ bias[n]) (+ res[m, n]).
// Each output is accumulated exactly as linear_w.wgsl's per-output loop: `fma` in T with k
// ascending (fp16 accumulation at @f16); bf16 accumulates in f32 and rounds once. The input is
// already in T (the forward casts it first); the bias and the residual are added in f32 after.
//
// Tiling, for CPU Vulkan drivers (lavapipe turns every memory access into a per-lane loop, so
// loads are what costs) as much as for GPUs: a lane owns one output texel (4 consecutive rows)
// for RT tokens. For each 4 k's it decodes its 4×4 weights once (`wtex`, from the weight
// fragment) and uses them for all RT tokens; the x rows are loaded 8 texels at a time (4 on
// 4-lane subgroups), one texel per lane, and handed to every lane with subgroupShuffle. Workgroups run n-block major, so consecutive workgroups share weights.
//
// Textures are linear arrays of texels: x [M, K/4], y [.., N/4] from texel
// YOFF, bias [N/4], res [M, N/4]. Params: M, N, K, YOFF, BIAS, RES (and the weight fragment's).
// Consts RT (tokens per lane), QUAD (1: decode 16 k's at a time, `wrow16`; the host sets it where
// K % 16 == 0 and the weight fragment can), HOIST (1: qparams once per chunk, `chunk_qp`).

// Four rows' weights at texel c (k = 4c .. 4c+3), transposed: result[e] holds rows 4·r4 + 0..3
// at k = 4c + e.
fn wtex(r4: u32, c: u32, qp: array<vec2<f32>, 4>) -> array<vec4<T>, 4> {
    var a: vec4<f32>;
    var b: vec4<f32>;
    var d: vec4<f32>;
    var e: vec4<f32>;
    if (HOIST == 1u) {
        let r = wrow4_qp(r4, c, qp);
        a = r[0];
        b = r[1];
        d = r[2];
        e = r[3];
    } else {
        a = wrow4(4u * r4, c);
        b = wrow4(4u * r4 + 1u, c);
        d = wrow4(4u * r4 + 2u, c);
        e = wrow4(4u * r4 + 3u, c);
    }
    return array<vec4<T>, 4>(
        vec4<T>(T(a.x), T(b.x), T(d.x), T(e.x)),
        vec4<T>(T(a.y), T(b.y), T(d.y), T(e.y)),
        vec4<T>(T(a.z), T(b.z), T(d.z), T(e.z)),
        vec4<T>(T(a.w), T(b.w), T(d.w), T(e.w)),
    );
}

// Four rows' weights at texels c .. c+3 (k = 4c .. 4c+15), transposed: result[i][e] holds rows
// 4·r4 + 0..3 at k = 4(c + i) + e.
fn wtex16(r4: u32, c: u32) -> array<array<vec4<T>, 4>, 4> {
    let a = wrow16(4u * r4, c);
    let b = wrow16(4u * r4 + 1u, c);
    let d = wrow16(4u * r4 + 2u, c);
    let e = wrow16(4u * r4 + 3u, c);
    var w: array<array<vec4<T>, 4>, 4>;
    for (var i = 0u; i < 4u; i = i + 1u) {
        w[i][0] = vec4<T>(T(a[i].x), T(b[i].x), T(d[i].x), T(e[i].x));
        w[i][1] = vec4<T>(T(a[i].y), T(b[i].y), T(d[i].y), T(e[i].y));
        w[i][2] = vec4<T>(T(a[i].z), T(b[i].z), T(d[i].z), T(e[i].z));
        w[i][3] = vec4<T>(T(a[i].w), T(b[i].w), T(d[i].w), T(e[i].w));
    }
    return w;
}

// The linear's output texel for token m from its accumulators: rounded as linear_w rounds, then
// bias and residual in f32.
fn lin_out(a: vec4<T>, m: u32, c: u32) -> vec4<f32> {
    var y = vec4<f32>(a);
    if (T_IS_BF16) {
        y = vec4<f32>(bf16r(y.x), bf16r(y.y), bf16r(y.z), bf16r(y.w));
    }
    if (P.BIAS == 1u) {
        y = y + bias_ld4(c);
    }
    if (P.RES == 1u) {
        y = res_ld4(m * (P.N / 4u) + c) + y;
    }
    return y;
}

@compute @workgroup_size(WG)
fn model_linear(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>, @builtin(subgroup_invocation_id) sg: u32,
                @builtin(subgroup_size) sgs: u32) {
    let g = wid.x + wid.y * nwg.x;
    let n4s = P.N / 4u;
    let k4s = P.K / 4u;
    let mbs = (P.M + RT - 1u) / RT;
    let m0 = (g % mbs) * RT;
    let c4 = (g / mbs) * WG + lid;
    let r4 = min(c4, n4s - 1u);
    // Texels shared per load: 8, or 4 on 4-lane subgroups.
    let cs = min(8u, sgs);
    let kl = sg % cs;
    var acc: array<vec4<T>, RT>;
    var xl: array<vec4<f32>, RT>;
    for (var c0 = 0u; c0 < k4s; c0 = c0 + cs) {
        // Lane kl of each group of cs loads texel c0 + kl of every token's row (clamped: the
        // texels past K are never used).
        for (var j = 0u; j < RT; j = j + 1u) {
            let m = min(m0 + j, P.M - 1u);
            xl[j] = x_ld4(m * k4s + min(c0 + kl, k4s - 1u));
        }
        // A loop with a run-time bound, so that the weight decode is compiled once (drivers
        // unroll constant-bound loops); the shuffle index is the same in every lane.
        let steps = min(cs, k4s - c0);
        if (QUAD == 1u) {
            // K % 16 == 0: 16 k's per decode (model_wq.wgsl's `wrow16`).
            for (var i = 0u; i < steps; i = i + 4u) {
                let w = wtex16(r4, c0 + i);
                for (var ii = 0u; ii < 4u; ii = ii + 1u) {
                    for (var j = 0u; j < RT; j = j + 1u) {
                        let x = subgroupShuffle(xl[j], i + ii);
                        var a = acc[j];
                        a = fma(vec4<T>(T(x.x)), w[ii][0], a);
                        a = fma(vec4<T>(T(x.y)), w[ii][1], a);
                        a = fma(vec4<T>(T(x.z)), w[ii][2], a);
                        a = fma(vec4<T>(T(x.w)), w[ii][3], a);
                        acc[j] = a;
                    }
                }
            }
            continue;
        }
        // HOIST: the chunk's 32 k's lie in one group (GL % 32 == 0): qparams once per chunk.
        var qp: array<vec2<f32>, 4>;
        if (HOIST == 1u) {
            qp = chunk_qp(r4, c0);
        }
        for (var i = 0u; i < steps; i = i + 1u) {
            let w = wtex(r4, c0 + i, qp);
            for (var j = 0u; j < RT; j = j + 1u) {
                let x = subgroupShuffle(xl[j], i);
                var a = acc[j];
                a = fma(vec4<T>(T(x.x)), w[0], a);
                a = fma(vec4<T>(T(x.y)), w[1], a);
                a = fma(vec4<T>(T(x.z)), w[2], a);
                a = fma(vec4<T>(T(x.w)), w[3], a);
                acc[j] = a;
            }
        }
    }
    if (c4 < n4s) {
        for (var j = 0u; j < RT; j = j + 1u) {
            let m = m0 + j;
            if (m < P.M) {
                y_st(P.YOFF + m * n4s + c4, lin_out(acc[j], m, c4));
            }
        }
    }
}

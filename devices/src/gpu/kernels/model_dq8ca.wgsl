// The model forward's 8da4w linear: linear_dq8ca.wgsl's integer path, tiled like
// model_linear.wgsl (a lane owns 4 rows × RT tokens and decodes each code once for its RT
// tokens, 4 at a time with model_wq.wgsl's `code4`). Per group g ascending and per token, over the group's k: dot = Σ a_k·(q_k + 8),
// asum = Σ a_k, wsum = Σ q_k (i32, exact whatever the order), adj = dot − (wsum + 8·GL)·zp +
// 8·(GL·zp − asum) = Σ (a_k − zp)·q_k; then DQ 2 (Vulkan): y = fma(T(adj), T(s_a)·T(s_w[g]), y)
// in T; DQ 1 (XNNPACK): f32 y += f32(adj)·(s_a·s_w[g]), rounded to T at the end. (DQ 0, torchao's
// fake-quant float path, is model_linear.wgsl over the dequantized activations.)
//
// Resources: aq (texels of 4 i32 activation codes [M, K/4]), ascale / azp (per token, as the act
// kernels wrote them), the weights.wgsl resources, y / bias / res as in model_linear.wgsl.
// Params: M, YOFF, BIAS, RES, and the weights' N, K, G, GL. Consts RT, DQ.

fn rt4(v: vec4<T>) -> vec4<T> {
    return vec4<T>(rt(v.x), rt(v.y), rt(v.z), rt(v.w));
}

@compute @workgroup_size(WG)
fn model_dq8ca(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = wid.x + wid.y * nwg.x;
    let n4s = P.N / 4u;
    let k4s = P.K / 4u;
    let mbs = (P.M + RT - 1u) / RT;
    let m0 = (g % mbs) * RT;
    let c4 = (g / mbs) * WG + lid;
    let r4 = min(c4, n4s - 1u);
    let n0 = 4u * r4;
    var yt: array<vec4<T>, RT>;
    var yf: array<vec4<f32>, RT>;
    var sa: array<f32, RT>;
    var zp: array<i32, RT>;
    for (var j = 0u; j < RT; j = j + 1u) {
        let m = min(m0 + j, P.M - 1u);
        sa[j] = f32(ascale_ld(m));
        zp[j] = i32(f32(azp_ld(m)));
    }
    let gl = i32(P.GL);
    let gl4 = P.GL / 4u;
    for (var gi = 0u; gi < P.G; gi = gi + 1u) {
        var dot: array<vec4<i32>, RT>;
        var asum: array<i32, RT>;
        var wsum = vec4<i32>(0);
        for (var c = gi * gl4; c < (gi + 1u) * gl4; c = c + 1u) {
            let k = 4u * c;
            // Row r's codes at k .. k+3, then transposed: q_e holds the 4 rows at k + e.
            let r0 = code4(n0, k);
            let r1 = code4(n0 + 1u, k);
            let r2 = code4(n0 + 2u, k);
            let r3 = code4(n0 + 3u, k);
            let q0 = vec4<i32>(r0.x, r1.x, r2.x, r3.x);
            let q1 = vec4<i32>(r0.y, r1.y, r2.y, r3.y);
            let q2 = vec4<i32>(r0.z, r1.z, r2.z, r3.z);
            let q3 = vec4<i32>(r0.w, r1.w, r2.w, r3.w);
            wsum = wsum + q0 + q1 + q2 + q3;
            for (var j = 0u; j < RT; j = j + 1u) {
                let a = aq_ld4(min(m0 + j, P.M - 1u) * k4s + c);
                dot[j] = dot[j] + a.x * (q0 + 8) + a.y * (q1 + 8) + a.z * (q2 + 8) + a.w * (q3 + 8);
                asum[j] = asum[j] + a.x + a.y + a.z + a.w;
            }
        }
        let sw = vec4<f32>(f32(scales_ld(sidx(n0, gi))), f32(scales_ld(sidx(n0 + 1u, gi))),
                           f32(scales_ld(sidx(n0 + 2u, gi))), f32(scales_ld(sidx(n0 + 3u, gi))));
        for (var j = 0u; j < RT; j = j + 1u) {
            let z = zp[j];
            let adj = dot[j] - (wsum + 8 * gl) * z + 8 * (gl * z - asum[j]);
            let af = vec4<f32>(adj);
            if (DQ == 2u) {
                let s = rt4(vec4<T>(T(sa[j])) * vec4<T>(sw));
                yt[j] = fma(vec4<T>(af), s, yt[j]);
            } else {
                yf[j] = yf[j] + af * (sa[j] * sw);
            }
        }
    }
    if (c4 < n4s) {
        for (var j = 0u; j < RT; j = j + 1u) {
            let m = m0 + j;
            if (m < P.M) {
                var y: vec4<f32>;
                if (DQ == 2u) {
                    y = vec4<f32>(rt4(yt[j]));
                } else {
                    let v = yf[j];
                    y = vec4<f32>(f32(to_t(v.x)), f32(to_t(v.y)), f32(to_t(v.z)), f32(to_t(v.w)));
                }
                if (P.BIAS == 1u) {
                    y = y + bias_ld4(c4);
                }
                if (P.RES == 1u) {
                    y = res_ld4(m * n4s + c4) + y;
                }
                y_st(P.YOFF + m * n4s + c4, y);
            }
        }
    }
}

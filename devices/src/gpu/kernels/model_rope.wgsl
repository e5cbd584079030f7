// Rotary embedding of the model forward, one lane per (token, head) over the HQ query heads and
// then the HKV key heads: (Qwen3, QKN = 1) the head's RMSNorm with q_norm / k_norm, then RoPE
// with the token's cos/sin row; query heads go to `qo`, key heads into the K cache at row S0 + t.
// The cos/sin table `cs` holds per token Dh/4 texels (cos_i, sin_i, cos_i+1, sin_i+1), i = 2·texel,
// computed on the host in f64 at the absolute positions and rounded to f32.
// Const DH4 (head_dim / 4), HALF (1: pairs (i, i + Dh/2), Hugging Face / neox; 0: pairs
// (2i, 2i + 1), GGUF llama). Params: M, HQ, HKV, S0, QW4, KW4 (row widths in texels), EPS, QKN.
// Resources: q, k (read), qo, kc (write), cs, qn, kn (read).

@compute @workgroup_size(WG)
fn model_rope(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    let hs = P.HQ + P.HKV;
    if (i >= P.M * hs) {
        return;
    }
    let t = i / hs;
    let h = i % hs;
    let isq = h < P.HQ;
    var v: array<vec4<f32>, DH4>;
    for (var c = 0u; c < DH4; c = c + 1u) {
        if (isq) {
            v[c] = q_ld4(t * P.QW4 + h * DH4 + c);
        } else {
            v[c] = k_ld4(t * P.KW4 + (h - P.HQ) * DH4 + c);
        }
    }
    if (P.QKN == 1u) {
        var ss = 0.0;
        for (var c = 0u; c < DH4; c = c + 1u) {
            ss = ss + dot(v[c], v[c]);
        }
        let rms = sqrt(ss / f32(4u * DH4) + bitcast<f32>(P.EPS));
        for (var c = 0u; c < DH4; c = c + 1u) {
            var w = kn_ld4(c);
            if (isq) {
                w = qn_ld4(c);
            }
            v[c] = (v[c] * w) / rms;
        }
    }
    var o: array<vec4<f32>, DH4>;
    if (HALF == 1u) {
        for (var c = 0u; c < DH4 / 2u; c = c + 1u) {
            let a = cs_ld4(t * DH4 + 2u * c);
            let b = cs_ld4(t * DH4 + 2u * c + 1u);
            let cs = vec4<f32>(a.x, a.z, b.x, b.z);
            let sn = vec4<f32>(a.y, a.w, b.y, b.w);
            let x0 = v[c];
            let x1 = v[c + DH4 / 2u];
            o[c] = x0 * cs - x1 * sn;
            o[c + DH4 / 2u] = x0 * sn + x1 * cs;
        }
    } else {
        for (var c = 0u; c < DH4; c = c + 1u) {
            let a = cs_ld4(t * DH4 + c);
            let x0 = v[c].xz;
            let x1 = v[c].yw;
            let y0 = x0 * a.xz - x1 * a.yw;
            let y1 = x0 * a.yw + x1 * a.xz;
            o[c] = vec4<f32>(y0.x, y1.x, y0.y, y1.y);
        }
    }
    for (var c = 0u; c < DH4; c = c + 1u) {
        if (isq) {
            qo_st(t * P.QW4 + h * DH4 + c, o[c]);
        } else {
            kc_st((P.S0 + t) * P.KW4 + (h - P.HQ) * DH4 + c, o[c]);
        }
    }
}

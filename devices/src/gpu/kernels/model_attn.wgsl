// Causal grouped-query attention of the model forward over the KV cache: one lane per (query t,
// head h), the lanes of a workgroup WG consecutive queries of one head. Query t (absolute
// position S0 + t) sees keys 0 ..= S0 + t; scores scale·(q·k_j) in f32; an online softmax keeps the
// running maximum, the rescaled sum and the rescaled output (max subtracted before every exp);
// the output is Σ_j p_j·v_j / Σ_j p_j. Key and value rows are the same for every lane: lanes 0..3
// of the subgroup load a row two texels of each 8 apiece and share it with subgroupBroadcast.
// Const DH4 (head_dim / 4). Params: M, S0, HQ, HKV, QW4, KW4 (row widths in texels), SCALE (f32
// bits). Resources: q (read [M, QW4]), kc, vc (read [S, KW4]), o (write [M, QW4]).

// q·k over the 8 texels r .. r+7 of a head: texel r + e is lane e's `kt0` (e < 4) or lane
// e − 4's `kt1`.
fn dot8(qv: ptr<function, array<vec4<f32>, DH4>>, r: u32, kt0: vec4<f32>, kt1: vec4<f32>) -> f32 {
    var s = dot((*qv)[r], subgroupBroadcast(kt0, 0u));
    if (r + 1u < DH4) {
        s = s + dot((*qv)[r + 1u], subgroupBroadcast(kt0, 1u));
    }
    if (r + 2u < DH4) {
        s = s + dot((*qv)[r + 2u], subgroupBroadcast(kt0, 2u));
    }
    if (r + 3u < DH4) {
        s = s + dot((*qv)[r + 3u], subgroupBroadcast(kt0, 3u));
    }
    if (r + 4u < DH4) {
        s = s + dot((*qv)[r + 4u], subgroupBroadcast(kt1, 0u));
    }
    if (r + 5u < DH4) {
        s = s + dot((*qv)[r + 5u], subgroupBroadcast(kt1, 1u));
    }
    if (r + 6u < DH4) {
        s = s + dot((*qv)[r + 6u], subgroupBroadcast(kt1, 2u));
    }
    if (r + 7u < DH4) {
        s = s + dot((*qv)[r + 7u], subgroupBroadcast(kt1, 3u));
    }
    return s;
}

// acc = acc·cr + p·v over the 8 texels r .. r+7, shared like `dot8`'s.
fn axpy8(acc: ptr<function, array<vec4<f32>, DH4>>, r: u32, vt0: vec4<f32>, vt1: vec4<f32>, p: f32, cr: f32) {
    (*acc)[r] = (*acc)[r] * cr + p * subgroupBroadcast(vt0, 0u);
    if (r + 1u < DH4) {
        (*acc)[r + 1u] = (*acc)[r + 1u] * cr + p * subgroupBroadcast(vt0, 1u);
    }
    if (r + 2u < DH4) {
        (*acc)[r + 2u] = (*acc)[r + 2u] * cr + p * subgroupBroadcast(vt0, 2u);
    }
    if (r + 3u < DH4) {
        (*acc)[r + 3u] = (*acc)[r + 3u] * cr + p * subgroupBroadcast(vt0, 3u);
    }
    if (r + 4u < DH4) {
        (*acc)[r + 4u] = (*acc)[r + 4u] * cr + p * subgroupBroadcast(vt1, 0u);
    }
    if (r + 5u < DH4) {
        (*acc)[r + 5u] = (*acc)[r + 5u] * cr + p * subgroupBroadcast(vt1, 1u);
    }
    if (r + 6u < DH4) {
        (*acc)[r + 6u] = (*acc)[r + 6u] * cr + p * subgroupBroadcast(vt1, 2u);
    }
    if (r + 7u < DH4) {
        (*acc)[r + 7u] = (*acc)[r + 7u] * cr + p * subgroupBroadcast(vt1, 3u);
    }
}

@compute @workgroup_size(WG)
fn model_attn(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>, @builtin(subgroup_invocation_id) sg: u32) {
    let g = wid.x + wid.y * nwg.x;
    let tbs = (P.M + WG - 1u) / WG;
    let hg = g / tbs;
    let h = min(hg, P.HQ - 1u);
    let t0 = (g % tbs) * WG;
    let t = t0 + lid;
    let tc = min(t, P.M - 1u);
    let kvh = h / (P.HQ / P.HKV);
    // Lanes 0..3 of the subgroup load two texels of each 8 (any subgroup of 4 lanes or more).
    let kl = sg % 4u;
    var qv: array<vec4<f32>, DH4>;
    var acc: array<vec4<f32>, DH4>;
    for (var c = 0u; c < DH4; c = c + 1u) {
        qv[c] = q_ld4(tc * P.QW4 + h * DH4 + c);
    }
    let scale = bitcast<f32>(P.SCALE);
    let neg_inf = bitcast<f32>(0xff800000u);
    var mx = -3.0e38;
    var l = 0.0;
    let last = P.S0 + tc;
    // Keys up to the last query of the workgroup: the same loop bounds for every lane.
    let jend = P.S0 + min(t0 + WG, P.M);
    for (var j = 0u; j < jend; j = j + 1u) {
        let kb = j * P.KW4 + kvh * DH4;
        var s = 0.0;
        for (var r = 0u; r < DH4; r = r + 8u) {
            s = s + dot8(&qv, r, kc_ld4(kb + min(r + kl, DH4 - 1u)), kc_ld4(kb + min(r + 4u + kl, DH4 - 1u)));
        }
        s = select(neg_inf, s * scale, j <= last);
        let mn = max(mx, s);
        let cr = exp(mx - mn);
        let p = exp(s - mn);
        l = l * cr + p;
        mx = mn;
        for (var r = 0u; r < DH4; r = r + 8u) {
            let v0 = vc_ld4(kb + min(r + kl, DH4 - 1u));
            axpy8(&acc, r, v0, vc_ld4(kb + min(r + 4u + kl, DH4 - 1u)), p, cr);
        }
    }
    if (t < P.M && hg < P.HQ) {
        for (var c = 0u; c < DH4; c = c + 1u) {
            o_st(t * P.QW4 + h * DH4 + c, acc[c] / l);
        }
    }
}

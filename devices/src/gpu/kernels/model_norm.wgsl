// RMSNorm of the model forward, one lane per row: y = (x·w) / sqrt(Σ x² / D + eps), the sum of
// squares accumulated in f32 (4 lanes of a texel, then texels ascending).
// Resources: x (read [M, D/4]), nw (read [D/4]), y (write [M, D/4]). Params: M, D, EPS (f32 bits).

@compute @workgroup_size(WG)
fn model_rmsnorm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let m = flat(gid, nwg);
    if (m >= P.M) {
        return;
    }
    let d4 = P.D / 4u;
    var ss = 0.0;
    for (var c = 0u; c < d4; c = c + 1u) {
        let v = x_ld4(m * d4 + c);
        ss = ss + dot(v, v);
    }
    let rms = sqrt(ss / f32(P.D) + bitcast<f32>(P.EPS));
    for (var c = 0u; c < d4; c = c + 1u) {
        y_st(m * d4 + c, (x_ld4(m * d4 + c) * nw_ld4(c)) / rms);
    }
}

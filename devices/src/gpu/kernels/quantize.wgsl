// Quantizers whose real GPU kernels exist, one invocation per group: torchao `choose_qparams_affine` + `quantize_affine` per group
// (MAPPING 0 SYMMETRIC, 1 SYMMETRIC_NO_CLIPPING_ERR, 2 ASYMMETRIC; arithmetic in T, as ExecuTorch
// Vulkan's requant), and MLX's Metal `affine_quantize` (w_max starts at 0, round = ties away).
// Input `x` [rows*K] already in T; outputs codes `q`, dequantized `values`, stored `scales`
// and zero-points/biases `zps` per group. Params: NG (groups), GL (group length).

@compute @workgroup_size(WG)
fn affine_q(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = flat(gid, nwg);
    if (g >= P.NG) {
        return;
    }
    let base = g * P.GL;
    let qmin = -f32(1u << (BITS - 1u));
    let qmax = f32((1u << (BITS - 1u)) - 1u);
    var lo = x[base];
    var hi = lo;
    for (var j = 1u; j < P.GL; j = j + 1u) {
        lo = min(lo, x[base + j]);
        hi = max(hi, x[base + j]);
    }
    let mn = T(min(lo, 0.0));
    let mx = T(max(hi, 0.0));
    var s: T;
    if (MAPPING == 0u) {
        s = rt(max(-mn, mx) / T((qmax - qmin) / 2.0));
    } else if (MAPPING == 1u) {
        let smin = rt(mn / T(qmin));
        let smax = rt(mx / T(qmax));
        s = select(smax, smin, smin > smax);
    } else {
        s = rt(rt(mx - mn) / T(qmax - qmin));
    }
    s = max(s, T(bitcast<f32>(EPS_BITS)));
    var zp = 0.0;
    if (MAPPING == 2u) {
        zp = clamp(qmin - f32(round(rt(mn / s))), qmin, qmax);
    }
    // The stored scale (bf16 for ExecuTorch's XNNPACK serializer, which quantized with T's).
    var stored = f32(s);
    if (STORED_BF16 == 1u) {
        stored = bf16r(stored);
    }
    let inv = rt(T(1.0) / s);
    for (var j = 0u; j < P.GL; j = j + 1u) {
        let y = rt(T(x[base + j]) * inv);
        let c = f32(to_code(f32(round(y)) + zp, qmin, qmax));
        q[base + j] = i32(c);
        if (PT32 == 1u) {
            values[base + j] = f32(to_t((c - zp) * stored));
        } else {
            values[base + j] = f32(rt(T(c - zp) * T(stored)));
        }
    }
    scales[g] = stored;
    zps[g] = zp;
}

@compute @workgroup_size(WG)
fn mlx_q(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = flat(gid, nwg);
    if (g >= P.NG) {
        return;
    }
    let base = g * P.GL;
    let n_bins = f32((1u << BITS) - 1u);
    var w_min = 3.4028235e38;
    var w_max = 0.0;
    for (var j = 0u; j < P.GL; j = j + 1u) {
        w_min = min(w_min, x[base + j]);
        w_max = max(w_max, x[base + j]);
    }
    let side = abs(w_min) > abs(w_max);
    var scale = max((w_max - w_min) / n_bins, 1e-7f);
    if (!side) {
        scale = -scale;
    }
    let edge = select(w_max, w_min, side);
    let q0 = rhaz(edge / scale);
    var bias = 0.0;
    if (q0 != 0.0) {
        scale = edge / q0;
        bias = edge;
    }
    let st = to_t(scale);
    let bt = to_t(bias);
    for (var j = 0u; j < P.GL; j = j + 1u) {
        let c = f32(to_code(rhaz((x[base + j] - bias) / scale), 0.0, n_bins));
        q[base + j] = i32(c);
        values[base + j] = f32(rt(nc(rt(st * T(c))) + bt));
    }
    scales[g] = f32(st);
    zps[g] = f32(bt);
}

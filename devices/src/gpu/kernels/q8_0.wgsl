// ggml Q8_0 blocks of 32 (weights, and the activation Q8_0 flavours: QF 0 ref `roundf` with
// id = 1/d, 1 AVX id = 127/amax with RNE, 2 NEON id = 1/d with RNE). The stored d is fp16 (RNE),
// the codes use the fp32 d. Params: NG (blocks).

@compute @workgroup_size(WG)
fn q8_blocks(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = flat(gid, nwg);
    if (b >= P.NG) {
        return;
    }
    let base = b * 32u;
    var amax = 0.0;
    for (var j = 0u; j < 32u; j = j + 1u) {
        amax = max(amax, abs(x[base + j]));
    }
    let d = amax / 127.0;
    var id = 0.0;
    if (QF == 1u) {
        if (amax != 0.0) {
            id = 127.0 / amax;
        }
    } else if (d != 0.0) {
        id = 1.0 / d;
    }
    let ds = f16r(d);
    for (var j = 0u; j < 32u; j = j + 1u) {
        let p = x[base + j] * id;
        var c: f32;
        if (QF == 0u) {
            c = rhaz(p);
        } else {
            c = round(p);
        }
        let ci = to_code(c, -128.0, 127.0);
        q[base + j] = ci;
        values[base + j] = f32(ci) * ds;
    }
    scales[b] = ds;
}


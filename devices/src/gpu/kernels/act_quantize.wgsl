// Launch 2 of the activation path: codes and dequantized values from the qparams read back.

@compute @workgroup_size(WG)
fn quantize(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= P.M * P.K) {
        return;
    }
    let row = i / P.K;
    let s = f32(ascale_ld(row));
    let zp = f32(azp_ld(row));
    let v = x[i];
    var code: f32;
    var value: f32;
    if (FLAVOR <= 1u) {
        let st = T(s);
        let inv = rt(T(1.0) / st);
        let y = rt(T(v) * inv);
        code = f32(to_code(f32(round(y)) + zp, -128.0, 127.0));
        if (FLAVOR == 0u) {
            value = f32(rt(T(code - zp) * st));
        } else {
            value = f32(to_t((code - zp) * s));
        }
    } else if (FLAVOR == 2u) {
        let mq = 1.0 / s;
        code = f32(to_code(round(v * mq) + zp, -128.0, 127.0));
        value = f32(mul_t(code - zp, s));
    } else {
        let inv = 1.0 / s;
        code = f32(to_code(rglsl(v * inv) + zp, -128.0, 127.0));
        value = f32(mul_t(code - zp, s));
    }
    q[i] = i32(code);
    xh[i] = value;
    if (i % P.K == 0u) {
        qzp[row] = zp;
        qsc[row] = s;
    }
}

// 8da4w linear: see linear_w.wgsl's header for the arithmetic.

@compute @workgroup_size(WG)
fn linear_dq8ca(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= P.M * P.N) {
        return;
    }
    let m = i / P.N;
    let n = i % P.N;
    let zp = f32(azp_ld(m));
    let sa = f32(ascale_ld(m));
    let zpi = i32(zp);
    let gl = i32(P.GL);
    var yt = T(0.0);
    var yf = 0.0;
    for (var g = 0u; g < P.G; g = g + 1u) {
        if (F_DROP == 1u && g + 1u == P.G) {
            acc[i * P.G + g] = 0;
            continue;
        }
        var dot = 0;
        var asum = 0;
        var wsum = 0;
        for (var k = g * P.GL; k < (g + 1u) * P.GL; k = k + 1u) {
            let a = q[m * P.K + k];
            let qk = code(n, k);
            dot = dot + a * (qk + 8);
            asum = asum + a;
            wsum = wsum + qk;
        }
        let adj = dot - (wsum + 8 * gl) * zpi + 8 * (gl * zpi - asum);
        acc[i * P.G + g] = adj;
        let sw = f32(scales_ld(sidx(n, g)));
        if (DQ == 2u) {
            yt = fma(T(f32(adj)), rt(T(sa) * T(sw)), yt);
        } else if (DQ == 1u) {
            yf = yf + f32(adj) * (sa * sw);
        }
    }
    if (DQ == 0u) {
        for (var k = 0u; k < P.K; k = k + 1u) {
            yt = fma(T(xh[m * P.K + k]), T(deq(n, k)), yt);
        }
    }
    if (DQ == 1u) {
        y[i] = f32(to_t(yf));
    } else {
        y[i] = f32(rt(yt));
    }
    if (n == 0u) {
        zp_seen[m] = zp;
        sc_seen[m] = sa;
    }
}

// Launch 1 of the activation path: one workgroup per 4 tokens reduces each row's min/max and
// writes the stored scale and zero-point (4 per texel for 4-channel texture formats).

var<workgroup> red_lo: array<f32, WG>;
var<workgroup> red_hi: array<f32, WG>;
var<workgroup> row_sc: array<f32, 4>;
var<workgroup> row_zp: array<f32, 4>;

// (stored scale, zero-point) of one row from its min and max.
fn qparams(lo: f32, hi: f32) -> vec2<f32> {
    if (FLAVOR <= 1u) {
        let mn = to_t(min(lo, 0.0));
        let mx = to_t(max(hi, 0.0));
        var s = rt(rt(mx - mn) / T(255.0));
        s = max(s, T(bitcast<f32>(EPS_BITS)));
        let z = clamp(T(-128.0) - round(rt(mn / s)), T(-128.0), T(127.0));
        return vec2<f32>(f32(s), f32(z));
    }
    if (FLAVOR == 2u) {
        let rmin = min(lo, 0.0);
        let rmax = max(hi, 0.0);
        var m = 1.0;
        if (rmin != rmax) {
            m = 255.0 / (rmax - rmin);
        }
        let dmin = ncf(rmin * m);
        let dmax = ncf(rmax * m);
        var z = 127.0 - dmax;
        if ((-128.0 + dmin) + (127.0 + dmax) > 0.0) {
            z = -128.0 - dmin;
        }
        let zp = round(clamp(z, -128.0, 127.0));
        return vec2<f32>(1.0 / m, zp);
    }
    // Vulkan choose_qparams_per_row (ExecuTorch portable's algorithm in fp32).
    var mn = min(lo, 0.0);
    var mx = max(hi, 0.0);
    var s = (mx - mn) / 255.0;
    if (s == 0.0 || abs(1.0 / s) > 3.4028235e38) {
        s = 0.1f;
    }
    if (s < SMALL) {
        let org = s;
        s = SMALL;
        if (mn == 0.0) {
            mx = SMALL * ncf(255.0);
        } else if (mx == 0.0) {
            mn = -SMALL * ncf(255.0);
        } else {
            let amp = SMALL / org;
            mn = mn * amp;
            mx = mx * amp;
        }
    }
    let a = mn / s;
    let b = mx / s;
    let zmin = -128.0 - a;
    let zmax = 127.0 - b;
    let emin = 128.0 - abs(a);
    let emax = 127.0 - abs(b);
    var init = zmax;
    if (emin < emax) {
        init = zmin;
    }
    var zp: f32;
    if (init < -128.0) {
        zp = -128.0;
    } else if (init > 127.0) {
        zp = 127.0;
    } else {
        zp = rglsl(init);
    }
    return vec2<f32>(f32(to_t(s)), zp);
}

@compute @workgroup_size(WG)
fn choose_qparams(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let base = (wid.x + wid.y * nwg.x) * 4u;
    for (var r = 0u; r < 4u; r = r + 1u) {
        let row = base + r;
        var lo = 0.0;
        var hi = 0.0;
        if (row < P.M) {
            lo = x[row * P.K];
            hi = lo;
            for (var k = lid; k < P.K; k = k + WG) {
                let v = x[row * P.K + k];
                lo = min(lo, v);
                hi = max(hi, v);
            }
        }
        red_lo[lid] = lo;
        red_hi[lid] = hi;
        workgroupBarrier();
        if (lid == 0u) {
            for (var i = 1u; i < WG; i = i + 1u) {
                lo = min(lo, red_lo[i]);
                hi = max(hi, red_hi[i]);
            }
            var sz = vec2<f32>(0.0, 0.0);
            if (row < P.M) {
                sz = qparams(lo, hi);
            }
            row_sc[r] = sz.x;
            row_zp[r] = sz.y;
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let sc = vec4<f32>(row_sc[0], row_sc[1], row_sc[2], row_sc[3]);
        let zp = vec4<f32>(row_zp[0], row_zp[1], row_zp[2], row_zp[3]);
        if (ascale_CPT == 4u) {
            ascale_st(base / 4u, vec4<ascale_S>(sc));
        } else {
            for (var r = 0u; r < 4u; r = r + 1u) {
                if (base + r < P.M) {
                    ascale_st(base + r, vec4<ascale_S>(vec4<f32>(sc[r])));
                }
            }
        }
        if (azp_CPT == 4u) {
            azp_st(base / 4u, vec4<azp_S>(zp));
        } else {
            for (var r = 0u; r < 4u; r = r + 1u) {
                if (base + r < P.M) {
                    azp_st(base + r, vec4<azp_S>(vec4<f32>(zp[r])));
                }
            }
        }
    }
}


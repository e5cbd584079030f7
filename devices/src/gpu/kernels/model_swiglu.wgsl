// SwiGLU of the model forward, one lane per texel: y = silu(g)·u = g / (1 + exp(−g))·u in f32.
// Resources: g, u (read), y (write), texels [M, F/4]. Params: N4 (texels).

@compute @workgroup_size(WG)
fn model_swiglu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= P.N4) {
        return;
    }
    let gv = g_ld4(i);
    y_st(i, gv / (vec4<f32>(1.0) + exp(-gv)) * u_ld4(i));
}

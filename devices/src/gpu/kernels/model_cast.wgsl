// The input of an @f16 / @bf16 linear rounded to T (exact round-to-nearest-even with `to_t`; a
// plain WGSL conversion leaves the rounding to the driver), as the op path rounds `x` on the
// host. One lane per texel. Params: N4 (texels). Resources: x (read), y (write).

@compute @workgroup_size(WG)
fn model_cast(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= P.N4) {
        return;
    }
    let v = x_ld4(i);
    y_st(i, vec4<f32>(f32(to_t(v.x)), f32(to_t(v.y)), f32(to_t(v.z)), f32(to_t(v.w))));
}

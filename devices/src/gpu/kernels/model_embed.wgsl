// Embedding gather of the model forward from an fp32 table, one lane per output texel: row t of
// the output is row ids[t] of `table` ([V, D/4] texels), bit for bit. Params: M, D.

@compute @workgroup_size(WG)
fn model_embed(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    let d4 = P.D / 4u;
    if (i >= P.M * d4) {
        return;
    }
    y_st(i, table_ld4(ids_ld(i / d4) * d4 + i % d4));
}

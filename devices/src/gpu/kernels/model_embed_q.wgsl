// Embedding gather of the model forward from a quantized table, one lane per output texel: row
// ids[t] dequantized by weights.wgsl's `deq` (the op path's dequantize / embedding arithmetic).
// Params: M, and the weights' N (= V), K (= D).

@compute @workgroup_size(WG)
fn model_embed_q(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    let d4 = P.K / 4u;
    if (i >= P.M * d4) {
        return;
    }
    let row = ids_ld(i / d4);
    let k = 4u * (i % d4);
    y_st(i, vec4<f32>(deq(row, k), deq(row, k + 1u), deq(row, k + 2u), deq(row, k + 3u)));
}

// Dequantize and embedding: output row r is stored row `rows[r]` (the identity for dequantize,
// the looked-up ids for embedding). Params: R (output rows), plus the weights.wgsl params.

@compute @workgroup_size(WG)
fn dequant(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= P.R * P.K) {
        return;
    }
    out[i] = deq(rows[i / P.K], i % P.K);
}

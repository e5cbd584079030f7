// Linear layers over stored quantized weights, one invocation per output (m, n).
//
// `linear_w` (weight-only, schemes.md §5.5 form): `y = Σ_k fma(x_k, ŵ_k, y)` in strict ascending
// k order, accumulated in T (fp16 accumulation in half mode, as ExecuTorch Vulkan and MLX CPU
// do; bf16 accumulates in f32 and rounds once).
//
// `linear_dq8ca` (8da4w): per group g ascending, the integer accumulators of
// `linear_dq8ca_q4gsw_tiled.glsl` (acc = Σ a_k·(q_k+8), asum = Σ a_k, wsum = Σ q_k; wsum is the
// export-time weight sum, recomputed here from the same codes) give
// `adj = acc − (wsum + 8·GL)·zp + 8·(GL·zp − asum)` = Σ (a_k − zp)·q_k exactly; then
// DQ 2 (Vulkan): `y = fma(T(adj), T(s_a)·T(s_w[g]), y)` in T; DQ 1 (XNNPACK): f32
// `y += f32(adj)·(s_a·s_w[g])`; DQ 0 (torchao): the fake-quant float path Σ x̂_k·ŵ_k in T.
// `zp_seen` / `sc_seen` echo the activation qparams this kernel read. Params: M, N, K.

@compute @workgroup_size(WG)
fn linear_w(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= P.M * P.N) {
        return;
    }
    let m = i / P.N;
    let n = i % P.N;
    if (T_IS_BF16) {
        var acc = 0.0;
        for (var k = 0u; k < P.K; k = k + 1u) {
            acc = fma(x[m * P.K + k], deq(n, k), acc);
        }
        y[i] = bf16r(acc);
        return;
    }
    var acc = T(0.0);
    for (var k = 0u; k < P.K; k = k + 1u) {
        acc = fma(T(x[m * P.K + k]), T(deq(n, k)), acc);
    }
    y[i] = f32(acc);
}


// fp32 weights for model_linear.wgsl: `wf` holds W [N, K] row-major as texels of 4 k's.

fn wrow4(n: u32, c: u32) -> vec4<f32> {
    return wf_ld4(n * (P.K / 4u) + c);
}

// Texels c .. c+3 of row n.
fn wrow16(n: u32, c: u32) -> array<vec4<f32>, 4> {
    let b = n * (P.K / 4u) + c;
    return array<vec4<f32>, 4>(wf_ld4(b), wf_ld4(b + 1u), wf_ld4(b + 2u), wf_ld4(b + 3u));
}

// fp32 weights have no qparams (model_linear.wgsl's HOIST is 0 for them).
fn chunk_qp(r4: u32, c: u32) -> array<vec2<f32>, 4> {
    return array<vec2<f32>, 4>();
}

fn wrow4_qp(r4: u32, c: u32, qp: array<vec2<f32>, 4>) -> array<vec4<f32>, 4> {
    return array<vec4<f32>, 4>(wrow4(4u * r4, c), wrow4(4u * r4 + 1u, c), wrow4(4u * r4 + 2u, c), wrow4(4u * r4 + 3u, c));
}

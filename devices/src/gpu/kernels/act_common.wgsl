// Dynamic per-token int8 activation quantization (schemes.md §1.5, §1.11, §5.2-5.3), as two
// launches the way ExecuTorch Vulkan runs it: `choose_qparams` writes each token's stored scale
// and zero-point (`ascale`, `azp`: buffers or textures, in the scheme's zero-point dtype), then
// `quantize` reads them back through its own binding and writes the codes `q` and the
// dequantized activations `xh`. `qzp` / `qsc` echo what the consumer read.
//
// FLAVOR: 0 torchao (ASYMMETRIC in T), 1 torchao Int8Tensor (eps 2^-23, fp32 scale),
// 2 XNNPACK qd8, 3 Vulkan ties-even, 4 Vulkan ties-away. EPS_BITS: the torchao eps as f32 bits.
// Params: M, K.

const SMALL: f32 = 6.1e-5f;

// GLSL round() as this scheme's driver breaks ties.
fn rglsl(x: f32) -> f32 {
    if (FLAVOR == 4u) {
        return rhaz(x);
    }
    return round(x);
}


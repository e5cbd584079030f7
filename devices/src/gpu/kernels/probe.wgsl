// Numerics probes on f32 (probe.rs runs them; none needs a device feature).
//
// Every probe reads bit patterns from `input` and writes bit patterns to `output`: values cross
// the host boundary as u32 so no load or store can canonicalise or flush them, and every operand
// comes from the buffer so neither naga nor the driver can fold the arithmetic at compile time.

@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> output: array<u32>;

fn f(i: u32) -> f32 {
    return bitcast<f32>(input[i]);
}

// input: a, b, c. output: fma(a, b, c), a * b + c (contractible), a * b.
@compute @workgroup_size(1)
fn fma_probe() {
    let a = f(0u);
    let b = f(1u);
    let c = f(2u);
    output[0] = bitcast<u32>(fma(a, b, c));
    output[1] = bitcast<u32>(a * b + c);
    output[2] = bitcast<u32>(a * b);
}

// output[i] = round(input[i]). WGSL `round` is round-half-even; probe.rs also runs this entry
// point as SPIR-V with RoundEven patched to GLSL Round (implementation-defined ties).
@compute @workgroup_size(1)
fn round_probe() {
    for (var i = 0u; i < arrayLength(&input); i++) {
        output[i] = bitcast<u32>(round(f(i)));
    }
}

// input: tiny (subnormal), one, zero, a, b (normals whose product is subnormal).
// output: tiny * one + zero, tiny + zero, tiny * one, a * b, a * b * one (a subnormal
// intermediate), tiny passed through unchanged (the buffer path itself).
@compute @workgroup_size(1)
fn denormals_probe() {
    let tiny = f(0u);
    let one = f(1u);
    let zero = f(2u);
    let a = f(3u);
    let b = f(4u);
    output[0] = bitcast<u32>(tiny * one + zero);
    output[1] = bitcast<u32>(tiny + zero);
    output[2] = bitcast<u32>(tiny * one);
    output[3] = bitcast<u32>(a * b);
    output[4] = bitcast<u32>(a * b * one);
    output[5] = input[0];
}

// input: pairs (a, b). output: pairs (a / b, 1.0 / b).
@compute @workgroup_size(64)
fn div_probe(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (2u * i + 1u >= arrayLength(&input)) {
        return;
    }
    let a = f(2u * i);
    let b = f(2u * i + 1u);
    output[2u * i] = bitcast<u32>(a / b);
    output[2u * i + 1u] = bitcast<u32>(1.0 / b);
}

// output[i] = the f16 bits pack2x16float gives input[i] (low half; the high half packs 0).
@compute @workgroup_size(64)
fn pack_probe(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= arrayLength(&input)) {
        return;
    }
    output[i] = pack2x16float(vec2<f32>(f(i), 0.0)) & 0xffffu;
}

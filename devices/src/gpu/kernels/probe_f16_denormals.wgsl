// f16 denormal probe (probe.rs runs it only where the device has SHADER_F16).
//
// f16 operands in, results widened to f32 out (f16 -> f32 is exact, including subnormals,
// unless the conversion itself flushes, which output[5] measures on its own).

enable f16;

@group(0) @binding(0) var<storage, read> input: array<f16>;
@group(0) @binding(1) var<storage, read_write> output: array<f32>;

// input: tiny (subnormal), one, zero, a, b (normals whose product is subnormal), padding.
// output: tiny * one + zero, tiny + zero, tiny * one, a * b, a * b * one, f32(tiny).
@compute @workgroup_size(1)
fn f16_denormals_probe() {
    let tiny = input[0];
    let one = input[1];
    let zero = input[2];
    let a = input[3];
    let b = input[4];
    output[0] = f32(tiny * one + zero);
    output[1] = f32(tiny + zero);
    output[2] = f32(tiny * one);
    output[3] = f32(a * b);
    output[4] = f32(a * b * one);
    output[5] = f32(tiny);
}

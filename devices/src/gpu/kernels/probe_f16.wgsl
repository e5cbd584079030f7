// fp32 -> fp16 conversion probe (probe.rs runs it only where the device has SHADER_F16).
//
// f32 bit patterns in, f16 values out: the output is an array<f16>, so the host reads the
// converted bits exactly as the device stored them (naga 30 has no size-changing bitcast).

enable f16;

@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> output: array<f16>;

// output[i] = f16(input[i] as f32): the conversion's rounding, overflow and subnormals.
@compute @workgroup_size(64)
fn convert_probe(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= arrayLength(&input)) {
        return;
    }
    output[i] = f16(bitcast<f32>(input[i]));
}

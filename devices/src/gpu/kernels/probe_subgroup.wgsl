// Subgroup size probe (probe.rs runs it only where the device has SUBGROUP).
//
// 128 invocations: a whole number of subgroups for every power-of-two size up to 128, so each
// subgroup is full and subgroupAdd(1) counts its invocations.

@group(0) @binding(0) var<storage, read> input: array<u32>;
@group(0) @binding(1) var<storage, read_write> output: array<u32>;

// output[i] = subgroup_size seen by invocation i; output[128 + i] = subgroupAdd(1) there.
@compute @workgroup_size(128)
fn subgroup_probe(@builtin(local_invocation_index) i: u32, @builtin(subgroup_size) size: u32) {
    // `input` is bound for a uniform layout across probes; reading it keeps it in the interface.
    let one = min(input[0], 1u);
    output[i] = size;
    output[128u + i] = subgroupAdd(one);
}

//! Shader translation through naga (WGSL → SPIR-V, WGSL → MSL) and the few SPIR-V patches qdiff
//! applies to reproduce driver behaviour that wgpu's own shader path would refuse or normalise:
//!
//! - [`retype_image`] declares one image binding with another texel format, so a kernel reads a
//!   texture through a binding of a different format, as field bugs do (wgpu's validation forbids
//!   the mismatch; the patched module reaches the driver through [`create_passthrough`]).
//! - [`use_glsl_round`] turns `RoundEven` into GLSL `Round`, whose ties are implementation
//!   defined: WGSL's `round` is always round-half-even, so only a patched module can show what a
//!   GLSL kernel's `round()` does on this GPU (schemes.md §5.6).
//!
//! The patches work on the raw word stream, small and self-contained: they only understand the
//! instructions naga emits for the constructs they touch, and say so in an error otherwise.

use crate::case::TexelFormat;
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The SPIR-V version [`wgsl_to_spirv`] writes: 1.3 is what every Vulkan 1.1 driver accepts and
/// the first version with the GroupNonUniform (subgroup) instructions.
pub const SPIRV_VERSION: (u8, u8) = (1, 3);

/// The MSL version [`wgsl_to_msl`] writes: 2.4 (macOS 12, iOS 15) has the simdgroup functions
/// subgroup kernels need and is what wgpu itself targets on current Apple GPUs.
pub const MSL_VERSION: (u8, u8) = (2, 4);

/// Parse and validate `source` with the capabilities `caps` (a backend's full set: the adapter
/// may expose any of them, and the device's own feature check happens when wgpu builds the
/// pipeline), then bake override constants in.
fn front(
    source: &str,
    caps: Capabilities,
    constants: &BTreeMap<String, f64>,
) -> Result<(naga::Module, ModuleInfo), String> {
    let module =
        naga::front::wgsl::parse_str(source).map_err(|e| format!("WGSL parse error: {}", e.emit_to_string(source)))?;
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| format!("WGSL validation error: {}", e.emit_to_string(source)))?;
    let mut pipeline_constants = naga::back::PipelineConstants::default();
    for (name, value) in constants {
        pipeline_constants.insert(name.clone(), *value);
    }
    let (module, info) = naga::back::pipeline_constants::process_overrides(&module, &info, None, &pipeline_constants)
        .map_err(|e| format!("override constants: {e}"))?;
    Ok((module.into_owned(), info.into_owned()))
}

/// Bounds checks as wgpu applies them to checked shader modules (`Restrict`: clamp the index), so
/// a passthrough module is no less safe than one wgpu compiled.
fn restrict_bounds() -> naga::proc::BoundsCheckPolicies {
    let restrict = naga::proc::BoundsCheckPolicy::Restrict;
    naga::proc::BoundsCheckPolicies {
        index: restrict,
        buffer: restrict,
        image_load: restrict,
        binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
    }
}

/// Translate WGSL to SPIR-V words for Vulkan 1.1+ (SPIR-V [`SPIRV_VERSION`]), every entry point
/// included. Override constants keep their WGSL defaults; see [`wgsl_to_spirv_with`].
///
/// Errors say which stage failed and, for WGSL errors, the line and column with the source line.
pub fn wgsl_to_spirv(source: &str) -> Result<Vec<u32>, String> {
    wgsl_to_spirv_with(source, &BTreeMap::new())
}

/// [`wgsl_to_spirv`] with override constants (`override name: T;` in WGSL) set by name: a
/// passthrough module cannot take them at pipeline creation, so they are baked in here.
pub fn wgsl_to_spirv_with(source: &str, constants: &BTreeMap<String, f64>) -> Result<Vec<u32>, String> {
    let (module, info) = front(source, naga::back::spv::supported_capabilities(), constants)?;
    let options = naga::back::spv::Options {
        lang_version: SPIRV_VERSION,
        // Names (OpName) make a failing module readable in spirv-dis; they cost nothing at run time.
        flags: naga::back::spv::WriterFlags::DEBUG,
        // With no binding map, naga's "fake" bindings are the identity: @group → DescriptorSet,
        // @binding → Binding, which is what wgpu's Vulkan backend produces too.
        fake_missing_bindings: true,
        bounds_check_policies: restrict_bounds(),
        ..Default::default()
    };
    naga::back::spv::write_vec(&module, &info, &options, None).map_err(|e| format!("SPIR-V generation error: {e}"))
}

/// Translate WGSL to Metal Shading Language ([`MSL_VERSION`]), every entry point included, with
/// the resource slots wgpu's Metal backend would give them: per entry point, the bindings it uses
/// in (group, binding) order, buffers, textures and samplers each counted from 0, then the
/// buffer-sizes buffer and the immediates buffer after the last buffer.
pub fn wgsl_to_msl(source: &str) -> Result<String, String> {
    wgsl_to_msl_with(source, &BTreeMap::new())
}

/// [`wgsl_to_msl`] with override constants set by name.
pub fn wgsl_to_msl_with(source: &str, constants: &BTreeMap<String, f64>) -> Result<String, String> {
    let (module, info) = front(source, naga::back::msl::supported_capabilities(), constants)?;
    let mut per_entry_point_map = naga::back::msl::EntryPointResourceMap::new();
    for (index, entry) in module.entry_points.iter().enumerate() {
        let resources = msl_resources(&module, info.get_entry_point(index))
            .map_err(|e| format!("MSL bindings of entry point `{}`: {e}", entry.name))?;
        per_entry_point_map.insert(entry.name.clone(), resources);
    }
    let options = naga::back::msl::Options {
        lang_version: MSL_VERSION,
        per_entry_point_map,
        fake_missing_bindings: false,
        bounds_check_policies: restrict_bounds(),
        ..Default::default()
    };
    let pipeline = naga::back::msl::PipelineOptions::default();
    naga::back::msl::write_string(&module, &info, &options, &pipeline)
        .map(|(msl, _)| msl)
        .map_err(|e| format!("MSL generation error: {e}"))
}

/// Metal slots for the globals one entry point uses.
fn msl_resources(
    module: &naga::Module,
    uses: &naga::valid::FunctionInfo,
) -> Result<naga::back::msl::EntryPointResources, String> {
    let mut bound: Vec<(naga::ResourceBinding, naga::Handle<naga::GlobalVariable>)> = module
        .global_variables
        .iter()
        .filter(|(handle, _)| !uses[*handle].is_empty())
        .filter_map(|(handle, var)| var.binding.map(|b| (b, handle)))
        .collect();
    bound.sort_by_key(|(b, _)| (b.group, b.binding));
    let slot = |n: u32| u8::try_from(n).map_err(|_| format!("more than 255 resources of one kind ({n})"));
    let (mut buffers, mut textures, mut samplers) = (0u32, 0u32, 0u32);
    let mut resources = naga::back::msl::EntryPointResources::default();
    for (binding, handle) in bound {
        let var = &module.global_variables[handle];
        let mut target = naga::back::msl::BindTarget::default();
        let inner = &module.types[var.ty].inner;
        let base = match *inner {
            naga::TypeInner::BindingArray { base, .. } => &module.types[base].inner,
            _ => inner,
        };
        match var.space {
            naga::AddressSpace::Uniform => {
                target.buffer = Some(slot(buffers)?);
                buffers += 1;
            }
            naga::AddressSpace::Storage { access } => {
                target.buffer = Some(slot(buffers)?);
                target.mutable = access.contains(naga::StorageAccess::STORE);
                buffers += 1;
            }
            naga::AddressSpace::Handle => match *base {
                naga::TypeInner::Sampler { .. } => {
                    target.sampler = Some(naga::back::msl::BindSamplerTarget::Resource(slot(samplers)?));
                    samplers += 1;
                }
                naga::TypeInner::Image { class, .. } => {
                    if let naga::ImageClass::Storage { access, .. } = class {
                        target.mutable = access.contains(naga::StorageAccess::STORE);
                    }
                    target.texture = Some(slot(textures)?);
                    textures += 1;
                }
                ref other => return Err(format!("unsupported handle type {other:?} at {binding:?}")),
            },
            other => return Err(format!("unsupported address space {other:?} at {binding:?}")),
        }
        resources.resources.insert(binding, target);
    }
    resources.sizes_buffer = Some(slot(buffers)?);
    resources.immediates_buffer = Some(slot(buffers + 1)?);
    Ok(resources)
}

/// Create a shader module from SPIR-V words, bypassing wgpu's shader translation and validation
/// (needs [`wgpu::Features::PASSTHROUGH_SHADERS`] on a Vulkan device). A pipeline built from it
/// needs an explicit layout: wgpu has no reflection of a passthrough module.
pub fn create_passthrough(device: &wgpu::Device, label: &str, spirv: &[u32], entry: &str) -> wgpu::ShaderModule {
    let desc = wgpu::ShaderModuleDescriptorPassthrough {
        label: Some(label),
        entry_points: Cow::Owned(vec![wgpu::PassthroughShaderEntryPoint {
            name: Cow::Owned(entry.to_string()),
            // Only Metal reads the workgroup size from here; SPIR-V carries its own.
            workgroup_size: (0, 0, 0),
        }]),
        spirv: Some(Cow::Borrowed(spirv)),
        ..Default::default()
    };
    // SAFETY: the words come from naga's SPIR-V writer (a module naga validated), changed only by
    // this file's patches, which keep it well-formed (their tests run spirv-val and naga's SPIR-V
    // front end on the result). What the driver does with a deliberately mismatched image format
    // is the behaviour under test, not memory unsafety on the host: bounds checks were written in
    // by naga (`Restrict`), and wgpu still validates the pipeline layout and bind groups.
    unsafe { device.create_shader_module_passthrough(desc) }
}

// ---------------------------------------------------------------------------------------------
// Raw SPIR-V: opcodes and enumerants used below (SPIR-V 1.6 unified spec, §3).

const MAGIC: u32 = 0x0723_0203;
const OP_EXT_INST_IMPORT: u16 = 11;
const OP_EXT_INST: u16 = 12;
const OP_TYPE_INT: u16 = 21;
const OP_TYPE_FLOAT: u16 = 22;
const OP_TYPE_VECTOR: u16 = 23;
const OP_TYPE_IMAGE: u16 = 25;
const OP_TYPE_POINTER: u16 = 32;
const OP_FUNCTION: u16 = 54;
const OP_FUNCTION_CALL: u16 = 57;
const OP_VARIABLE: u16 = 59;
const OP_IMAGE_TEXEL_POINTER: u16 = 60;
const OP_LOAD: u16 = 61;
const OP_STORE: u16 = 62;
const OP_DECORATE: u16 = 71;
const OP_COPY_OBJECT: u16 = 83;
const OP_SAMPLED_IMAGE: u16 = 86;
const OP_IMAGE_FETCH: u16 = 95;
const OP_IMAGE_GATHER: u16 = 96;
const OP_IMAGE_DREF_GATHER: u16 = 97;
const OP_IMAGE_READ: u16 = 98;
const OP_IMAGE_WRITE: u16 = 99;
const OP_IMAGE_QUERY_SIZE_LOD: u16 = 103;
const OP_IMAGE_QUERY_SIZE: u16 = 104;
const OP_IMAGE_QUERY_LEVELS: u16 = 106;
const OP_IMAGE_QUERY_SAMPLES: u16 = 107;
const OP_CONVERT_F_TO_U: u16 = 109;
const OP_CONVERT_F_TO_S: u16 = 110;
const OP_CONVERT_S_TO_F: u16 = 111;
const OP_CONVERT_U_TO_F: u16 = 112;
const OP_BITCAST: u16 = 124;
const OP_IMAGE_SPARSE_FETCH: u16 = 313;
const OP_IMAGE_SPARSE_READ: u16 = 320;
const DECORATION_BINDING: u32 = 33;
const DECORATION_DESCRIPTOR_SET: u32 = 34;
const STORAGE_CLASS_UNIFORM_CONSTANT: u32 = 0;
const GLSL_ROUND: u32 = 1;
const GLSL_ROUND_EVEN: u32 = 2;

/// The SPIR-V `Image Format` enumerant of a texel format.
pub fn spirv_image_format(format: TexelFormat) -> u32 {
    match format {
        TexelFormat::Rgba32Float => 1,
        TexelFormat::Rgba16Float => 2,
        TexelFormat::R32Float => 3,
        TexelFormat::Rgba32Sint => 21,
        TexelFormat::Rgba8Sint => 23,
        TexelFormat::R32Sint => 24,
    }
}

/// One instruction, its first word (word count and opcode) included.
type Inst = Vec<u32>;

fn opcode(inst: &[u32]) -> u16 {
    (inst[0] & 0xffff) as u16
}

/// Split a module into its header and instructions.
fn split(words: &[u32]) -> Result<([u32; 5], Vec<Inst>), String> {
    if words.len() < 5 || words[0] != MAGIC {
        return Err("not a SPIR-V module (no magic number in the first word)".into());
    }
    let header = [words[0], words[1], words[2], words[3], words[4]];
    let mut insts = Vec::new();
    let mut at = 5;
    while at < words.len() {
        let count = (words[at] >> 16) as usize;
        if count == 0 || at + count > words.len() {
            return Err(format!("malformed SPIR-V: instruction at word {at} has word count {count}"));
        }
        insts.push(words[at..at + count].to_vec());
        at += count;
    }
    Ok((header, insts))
}

/// Rebuild the word stream, recomputing each instruction's word count.
fn join(header: [u32; 5], insts: &[Inst]) -> Vec<u32> {
    let mut words = header.to_vec();
    for inst in insts {
        words.push(((inst.len() as u32) << 16) | (inst[0] & 0xffff));
        words.extend_from_slice(&inst[1..]);
    }
    words
}

fn inst(op: u16, operands: &[u32]) -> Inst {
    let mut v = vec![op as u32];
    v.extend_from_slice(operands);
    v
}

/// The numeric class of an image's texel components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Float,
    Sint,
    Uint,
}

/// Rewrite every GLSL.std.450 `RoundEven` call into `Round`, whose ties (x.5) the implementation
/// chooses; returns how many calls changed (0 where the module imports no GLSL.std.450 or has no
/// `RoundEven`, e.g. words that are not SPIR-V). WGSL `round` is lowered to `RoundEven` by naga,
/// so a WGSL kernel that uses `round` where the GLSL original used `round` gets the GLSL tie
/// behaviour back this way.
pub fn use_glsl_round(words: &mut [u32]) -> usize {
    let Ok((_, insts)) = split(words) else { return 0 };
    let glsl: Vec<u32> = insts
        .iter()
        .filter(|i| opcode(i) == OP_EXT_INST_IMPORT && i.len() >= 3 && literal_string(&i[2..]) == "GLSL.std.450")
        .map(|i| i[1])
        .collect();
    let mut changed = 0;
    let mut at = 5;
    while at < words.len() {
        let count = (words[at] >> 16) as usize;
        if count == 0 {
            break;
        }
        // OpExtInst: result type, result, set, instruction, operands.
        if (words[at] & 0xffff) as u16 == OP_EXT_INST
            && count >= 5
            && at + count <= words.len()
            && glsl.contains(&words[at + 3])
            && words[at + 4] == GLSL_ROUND_EVEN
        {
            words[at + 4] = GLSL_ROUND;
            changed += 1;
        }
        at += count;
    }
    changed
}

/// A SPIR-V literal string (UTF-8, NUL-terminated, packed little-endian into words).
fn literal_string(words: &[u32]) -> String {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).take_while(|&b| b != 0).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Declare the image variable at (`group`, `binding`) with texel format `format` instead of the
/// format the kernel was written for, so the driver reads (and writes) the bound texture through
/// `format` while the kernel's code is unchanged.
///
/// What changes:
/// - The variable gets a new `OpTypeImage` (and `UniformConstant` pointer) whose Image Format
///   operand is `format` (storage images; a sampled image keeps `Unknown`) and whose Sampled Type
///   is 32-bit float or 32-bit signed int to match `format`. Existing identical types are reused
///   (SPIR-V forbids duplicates); missing scalar and `vec4` types are added. The old type stays for
///   any other variable that uses it.
/// - Where the component class changes (float ↔ int), each `OpImageRead`/`OpImageFetch` of the
///   variable returns the new class and is followed by a numeric conversion back to the type the
///   kernel expects (`OpConvertSToF`, `OpConvertFToS`, ...), and each `OpImageWrite` converts its
///   texel to the new class first. So a kernel written for `r32float` and retyped to `rgba8sint`
///   sees `float(int8 channel)`: the number a GLSL kernel declared `rgba8i` would compute with.
///
/// Other uses of the image (sampling, atomics, passing it to a function) are refused with an
/// error, as is a binding that is not an image; on error `words` is left unchanged. The result is
/// meant for [`create_passthrough`]: wgpu would reject the mismatch between this declaration and
/// the bind group layout (which keeps the allocation's format, as the view must).
///
/// Takes a `Vec` (not a slice) because the patch adds instructions.
pub fn retype_image(words: &mut Vec<u32>, group: u32, binding: u32, format: TexelFormat) -> Result<(), String> {
    let (mut header, mut insts) = split(words)?;
    let at = format!("image at @group({group}) @binding({binding})");

    // The variable: decorated with both DescriptorSet = group and Binding = binding.
    let decorated = |deco: u32, value: u32| -> Vec<u32> {
        insts
            .iter()
            .filter(|i| opcode(i) == OP_DECORATE && i.len() >= 4 && i[2] == deco && i[3] == value)
            .map(|i| i[1])
            .collect()
    };
    let in_group = decorated(DECORATION_DESCRIPTOR_SET, group);
    let var = decorated(DECORATION_BINDING, binding)
        .into_iter()
        .find(|id| in_group.contains(id))
        .ok_or_else(|| format!("{at}: no variable has this DescriptorSet and Binding"))?;
    let var_index = insts
        .iter()
        .position(|i| opcode(i) == OP_VARIABLE && i.len() >= 4 && i[2] == var)
        .ok_or_else(|| format!("{at}: id {var} is decorated but is not an OpVariable"))?;
    if insts[var_index][3] != STORAGE_CLASS_UNIFORM_CONSTANT {
        return Err(format!("{at}: the variable is a buffer, not an image (storage class {})", insts[var_index][3]));
    }
    let ptr = insts[var_index][1];
    let find_def = |insts: &[Inst], id: u32| {
        insts.iter().position(|i| {
            let op = opcode(i);
            (op == OP_TYPE_INT
                || op == OP_TYPE_FLOAT
                || op == OP_TYPE_VECTOR
                || op == OP_TYPE_IMAGE
                || op == OP_TYPE_POINTER)
                && i.len() >= 2
                && i[1] == id
        })
    };
    let ptr_index = find_def(&insts, ptr).ok_or_else(|| format!("{at}: its pointer type {ptr} is not declared"))?;
    let old_image = insts[ptr_index].get(3).copied().unwrap_or(0);
    let old_image_index = find_def(&insts, old_image)
        .filter(|&k| opcode(&insts[k]) == OP_TYPE_IMAGE && insts[k].len() >= 9)
        .ok_or_else(|| format!("{at}: the variable is not an image (a binding array or a sampler?)"))?;
    let old_operands = insts[old_image_index][2..].to_vec();
    let class_of = |insts: &[Inst], id: u32| -> Option<Class> {
        let k = find_def(insts, id)?;
        match (opcode(&insts[k]), insts[k].get(2), insts[k].get(3)) {
            (OP_TYPE_FLOAT, Some(32), None) => Some(Class::Float),
            (OP_TYPE_INT, Some(32), Some(1)) => Some(Class::Sint),
            (OP_TYPE_INT, Some(32), Some(0)) => Some(Class::Uint),
            _ => None,
        }
    };
    let old_class = class_of(&insts, old_operands[0])
        .ok_or_else(|| format!("{at}: its Sampled Type is not a 32-bit float or int"))?;
    let new_class = if format.is_float() { Class::Float } else { Class::Sint };
    let sampled = old_operands[5];

    // Declarations are added at the end of the global section (before the first function), where
    // everything they refer to is declared: naga interleaves types and constants as it needs them,
    // so e.g. `OpTypeInt 32 1` may come after the image type.
    let mut insert_at = insts.iter().position(|i| opcode(i) == OP_FUNCTION).unwrap_or(insts.len());
    let mut next_id = header[3];
    let mut fresh = || {
        next_id += 1;
        next_id - 1
    };
    let mut scalar_of = |insts: &mut Vec<Inst>, class: Class, insert_at: &mut usize| -> u32 {
        if let Some(k) = insts.iter().position(|i| {
            i.len() >= 3
                && i[1] != 0
                && match class {
                    Class::Float => opcode(i) == OP_TYPE_FLOAT && i.len() == 3 && i[2] == 32,
                    Class::Sint => opcode(i) == OP_TYPE_INT && i.len() == 4 && i[2] == 32 && i[3] == 1,
                    Class::Uint => opcode(i) == OP_TYPE_INT && i.len() == 4 && i[2] == 32 && i[3] == 0,
                }
        }) {
            return insts[k][1];
        }
        let id = fresh();
        let decl = match class {
            Class::Float => inst(OP_TYPE_FLOAT, &[id, 32]),
            Class::Sint => inst(OP_TYPE_INT, &[id, 32, 1]),
            Class::Uint => inst(OP_TYPE_INT, &[id, 32, 0]),
        };
        insts.insert(*insert_at, decl);
        *insert_at += 1;
        id
    };
    let new_scalar = scalar_of(&mut insts, new_class, &mut insert_at);
    let mut new_operands = old_operands.clone();
    new_operands[0] = new_scalar;
    if sampled == 2 {
        new_operands[6] = spirv_image_format(format);
    }
    if new_operands == old_operands {
        return Ok(()); // already declared so: nothing to do
    }

    let mut new_vec4 = None;
    if old_class != new_class {
        new_vec4 = Some(
            match insts
                .iter()
                .position(|i| opcode(i) == OP_TYPE_VECTOR && i.len() == 4 && i[2] == new_scalar && i[3] == 4)
            {
                Some(k) => insts[k][1],
                None => {
                    let id = fresh();
                    insts.insert(insert_at, inst(OP_TYPE_VECTOR, &[id, new_scalar, 4]));
                    insert_at += 1;
                    id
                }
            },
        );
    }
    let new_image =
        match insts.iter().position(|i| opcode(i) == OP_TYPE_IMAGE && i.len() >= 3 && i[2..] == new_operands[..]) {
            Some(k) => insts[k][1],
            None => {
                let id = fresh();
                let mut ops = vec![id];
                ops.extend_from_slice(&new_operands);
                insts.insert(insert_at, inst(OP_TYPE_IMAGE, &ops));
                insert_at += 1;
                id
            }
        };
    let new_ptr = match insts.iter().position(|i| {
        opcode(i) == OP_TYPE_POINTER && i.len() == 4 && i[2] == STORAGE_CLASS_UNIFORM_CONSTANT && i[3] == new_image
    }) {
        Some(k) => insts[k][1],
        None => {
            let id = fresh();
            insts.insert(insert_at, inst(OP_TYPE_POINTER, &[id, STORAGE_CLASS_UNIFORM_CONSTANT, new_image]));
            id
        }
    };
    // Move the variable just before the first function, after the pointer type it now has (global
    // order carries no meaning).
    let var_index = insts
        .iter()
        .position(|i| opcode(i) == OP_VARIABLE && i.len() >= 4 && i[2] == var)
        .ok_or_else(|| format!("{at}: the variable vanished while patching"))?;
    let mut var_inst = insts.remove(var_index);
    var_inst[1] = new_ptr;
    let first_function = insts.iter().position(|i| opcode(i) == OP_FUNCTION).unwrap_or(insts.len());
    insts.insert(first_function, var_inst);

    // Loads of the variable now produce the new image type.
    let mut loaded = Vec::new();
    for i in insts.iter_mut() {
        if i.len() >= 4 && i[3] == var {
            match opcode(i) {
                OP_LOAD => {
                    i[1] = new_image;
                    loaded.push(i[2]);
                }
                OP_IMAGE_TEXEL_POINTER => return Err(format!("{at}: image atomics cannot be retyped")),
                _ => {}
            }
        }
        if opcode(i) == OP_FUNCTION_CALL && i.len() > 4 && i[4..].contains(&var) {
            return Err(format!("{at}: the image is passed to a function; retyping it would change the callee"));
        }
    }

    // Every use of a loaded image.
    let (read_conv, write_conv) = conversions(old_class, new_class);
    let mut k = 0;
    while k < insts.len() {
        let op = opcode(&insts[k]);
        let uses = |pos: usize| insts[k].get(pos).is_some_and(|id| loaded.contains(id));
        match op {
            OP_IMAGE_READ | OP_IMAGE_FETCH if uses(3) => {
                if let (Some(conv), Some(vec4)) = (read_conv, new_vec4) {
                    let old_type = insts[k][1];
                    if !is_vec4_of(&insts, old_type, old_operands[0]) {
                        return Err(format!("{at}: a read returns type {old_type}, not a vec4 of the texel type"));
                    }
                    let result = insts[k][2];
                    let raw = fresh();
                    insts[k][1] = vec4;
                    insts[k][2] = raw;
                    insts.insert(k + 1, inst(conv, &[old_type, result, raw]));
                    k += 1;
                }
            }
            OP_IMAGE_WRITE if uses(1) => {
                if let (Some(conv), Some(vec4)) = (write_conv, new_vec4) {
                    let texel = insts[k][3];
                    let converted = fresh();
                    insts.insert(k, inst(conv, &[vec4, converted, texel]));
                    k += 1;
                    insts[k][3] = converted;
                }
            }
            OP_IMAGE_QUERY_SIZE | OP_IMAGE_QUERY_SIZE_LOD | OP_IMAGE_QUERY_LEVELS | OP_IMAGE_QUERY_SAMPLES => {}
            OP_SAMPLED_IMAGE | OP_IMAGE_SPARSE_READ | OP_IMAGE_SPARSE_FETCH | OP_COPY_OBJECT if uses(3) => {
                return Err(format!("{at}: used by opcode {op}, which retype_image does not handle"));
            }
            OP_IMAGE_GATHER | OP_IMAGE_DREF_GATHER if uses(3) => {
                return Err(format!("{at}: gathered, which retype_image does not handle"));
            }
            OP_STORE if uses(2) => return Err(format!("{at}: the image handle is stored to a variable")),
            OP_FUNCTION_CALL if insts[k].len() > 4 && insts[k][4..].iter().any(|id| loaded.contains(id)) => {
                return Err(format!("{at}: the image is passed to a function; retyping it would change the callee"));
            }
            _ => {}
        }
        k += 1;
    }
    header[3] = next_id;
    *words = join(header, &insts);
    Ok(())
}

/// Whether `ty` is declared as a 4-component vector of `scalar`.
fn is_vec4_of(insts: &[Inst], ty: u32, scalar: u32) -> bool {
    insts.iter().any(|i| opcode(i) == OP_TYPE_VECTOR && i.len() == 4 && i[1] == ty && i[2] == scalar && i[3] == 4)
}

/// The conversion after a read (new class → the kernel's class) and before a write (the kernel's
/// class → new class); `None` where the class is unchanged.
fn conversions(old: Class, new: Class) -> (Option<u16>, Option<u16>) {
    match (old, new) {
        (Class::Float, Class::Sint) => (Some(OP_CONVERT_S_TO_F), Some(OP_CONVERT_F_TO_S)),
        (Class::Sint, Class::Float) => (Some(OP_CONVERT_F_TO_S), Some(OP_CONVERT_S_TO_F)),
        (Class::Uint, Class::Float) => (Some(OP_CONVERT_F_TO_U), Some(OP_CONVERT_U_TO_F)),
        (Class::Uint, Class::Sint) | (Class::Sint, Class::Uint) => (Some(OP_BITCAST), Some(OP_BITCAST)),
        (Class::Float, Class::Uint) => (Some(OP_CONVERT_U_TO_F), Some(OP_CONVERT_F_TO_U)),
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two storage textures (one read, one written) and a buffer: enough to see that a patch
    /// touches exactly the binding it was asked to.
    const TEXTURES: &str = r#"
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var zp: texture_storage_2d<r32float, read>;
@group(0) @binding(2) var other: texture_storage_2d<r32float, read>;
@group(0) @binding(3) var dst: texture_storage_2d<rgba8sint, write>;

@compute @workgroup_size(4)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let p = vec2<i32>(i32(id.x), 0);
    let z = textureLoad(zp, p).x;
    let o = textureLoad(other, p).x;
    out[id.x] = z + o;
    textureStore(dst, p, vec4<i32>(i32(z), 1, 2, 3));
}
"#;

    const ROUND: &str = r#"
@group(0) @binding(0) var<storage, read_write> v: array<f32>;
@compute @workgroup_size(1)
fn main() {
    v[0] = round(v[0]);
    v[1] = round(v[1]) + floor(v[2]);
}
"#;

    /// spirv-val from SPIRV-Tools, where installed (`apt-get install spirv-tools`): the strictest
    /// check of a patched module. Absent, naga's SPIR-V front end still re-reads it.
    fn spirv_val(words: &[u32]) -> Option<Result<(), String>> {
        use std::io::Write;
        let mut child = std::process::Command::new("spirv-val")
            .args(["--target-env", "vulkan1.1", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        child.stdin.take()?.write_all(&bytes).ok()?;
        let out = child.wait_with_output().ok()?;
        Some(if out.status.success() {
            Ok(())
        } else {
            Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
        })
    }

    /// Re-read with naga's SPIR-V front end and validate, plus spirv-val when present.
    fn check_valid(words: &[u32]) {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let module = naga::front::spv::parse_u8_slice(&bytes, &naga::front::spv::Options::default())
            .unwrap_or_else(|e| panic!("naga spv-in rejects the module: {e:?}"));
        Validator::new(ValidationFlags::all(), Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("naga rejects the re-read module: {e:?}"));
        match spirv_val(words) {
            Some(result) => result.unwrap_or_else(|e| panic!("spirv-val: {e}")),
            None => eprintln!("spirv-val not found (apt-get install spirv-tools); naga's check only"),
        }
    }

    /// (image type id, variable pointer type id) of the variable at (group, binding).
    fn image_of(words: &[u32], group: u32, binding: u32) -> Vec<u32> {
        let (_, insts) = split(words).unwrap();
        let deco = |d: u32, v: u32| -> Vec<u32> {
            insts.iter().filter(|i| opcode(i) == OP_DECORATE && i[2] == d && i[3] == v).map(|i| i[1]).collect()
        };
        let set = deco(DECORATION_DESCRIPTOR_SET, group);
        let var = deco(DECORATION_BINDING, binding).into_iter().find(|v| set.contains(v)).unwrap();
        let ptr = insts.iter().find(|i| opcode(i) == OP_VARIABLE && i[2] == var).unwrap()[1];
        let image = insts.iter().find(|i| opcode(i) == OP_TYPE_POINTER && i[1] == ptr).unwrap()[3];
        insts.iter().find(|i| opcode(i) == OP_TYPE_IMAGE && i[1] == image).unwrap().clone()
    }

    fn count_op(words: &[u32], op: u16) -> usize {
        split(words).unwrap().1.iter().filter(|i| opcode(i) == op).count()
    }

    fn scalar_class(words: &[u32], id: u32) -> Option<Class> {
        let (_, insts) = split(words).unwrap();
        let i = insts.iter().find(|i| (opcode(i) == OP_TYPE_FLOAT || opcode(i) == OP_TYPE_INT) && i[1] == id)?;
        match (opcode(i), i.get(3)) {
            (OP_TYPE_FLOAT, _) => Some(Class::Float),
            (_, Some(1)) => Some(Class::Sint),
            _ => Some(Class::Uint),
        }
    }

    #[test]
    fn spirv_header_and_version() {
        let words = wgsl_to_spirv(TEXTURES).unwrap();
        assert_eq!(words[0], MAGIC);
        assert_eq!(words[1], 0x0001_0300, "SPIR-V 1.3");
        check_valid(&words);
    }

    #[test]
    fn errors_say_where() {
        let err = wgsl_to_spirv("@compute @workgroup_size(1)\nfn main() {\n  let x: f32 = 1u;\n}\n").unwrap_err();
        assert!(err.contains("validation") || err.contains("parse"), "{err}");
        assert!(err.contains(":3:"), "no line:column in {err}");
        let err = wgsl_to_msl("fn main( {").unwrap_err();
        assert!(err.contains("parse error") && err.contains(":1:"), "{err}");
    }

    #[test]
    fn msl_binds_every_resource() {
        let msl = wgsl_to_msl(TEXTURES).unwrap();
        assert!(msl.contains("kernel void main_"), "{msl}");
        for slot in ["[[buffer(0)]]", "[[texture(0)]]", "[[texture(1)]]", "[[texture(2)]]"] {
            assert!(msl.contains(slot), "{slot} missing in\n{msl}");
        }
    }

    #[test]
    fn overrides_are_baked_in() {
        let src = "override k: f32;\n@group(0) @binding(0) var<storage, read_write> v: array<f32>;\n\
                   @compute @workgroup_size(1) fn main() { v[0] = k; }\n";
        assert!(wgsl_to_spirv(src).unwrap_err().contains("override"));
        let constants = BTreeMap::from([("k".to_string(), 2.5)]);
        check_valid(&wgsl_to_spirv_with(src, &constants).unwrap());
        assert!(wgsl_to_msl_with(src, &constants).unwrap().contains("2.5"));
    }

    #[test]
    fn f64_is_refused_for_metal_only() {
        let src = "@group(0) @binding(0) var<storage, read_write> v: array<f64>;\n\
                   @compute @workgroup_size(1) fn main() { v[0] = v[0] * 2.0; }\n";
        assert!(wgsl_to_spirv(src).is_ok());
        assert!(wgsl_to_msl(src).is_err());
    }

    #[test]
    fn glsl_round_rewrites_round_even_only() {
        let mut words = wgsl_to_spirv(ROUND).unwrap();
        let before = words.clone();
        assert_eq!(use_glsl_round(&mut words), 2);
        let diff: Vec<usize> = (0..words.len()).filter(|&k| words[k] != before[k]).collect();
        assert_eq!(diff.len(), 2, "exactly the two instruction operands change");
        for k in diff {
            assert_eq!((before[k], words[k]), (GLSL_ROUND_EVEN, GLSL_ROUND));
        }
        assert_eq!(use_glsl_round(&mut words), 0, "nothing left to rewrite");
        check_valid(&words);
        assert_eq!(use_glsl_round(&mut [1, 2, 3]), 0, "not SPIR-V: nothing changes");
    }

    #[test]
    fn retype_float_to_sint_converts_reads() {
        let mut words = wgsl_to_spirv(TEXTURES).unwrap();
        let before = words.clone();
        let other_before = image_of(&words, 0, 2);
        let dst_before = image_of(&words, 0, 3);
        let converts_before = count_op(&words, OP_CONVERT_S_TO_F);
        retype_image(&mut words, 0, 1, TexelFormat::Rgba8Sint).unwrap();
        assert_ne!(words, before);

        let zp = image_of(&words, 0, 1);
        assert_eq!(zp[8], spirv_image_format(TexelFormat::Rgba8Sint), "Image Format operand");
        assert_eq!(scalar_class(&words, zp[2]), Some(Class::Sint), "Sampled Type");
        assert_eq!(zp[3..8], other_before[3..8], "dim, depth, arrayed, MS, sampled unchanged");
        // The other bindings keep their declarations.
        assert_eq!(image_of(&words, 0, 2)[2..], other_before[2..]);
        assert_eq!(image_of(&words, 0, 3)[2..], dst_before[2..]);
        // One read of `zp`: one conversion back to float added, nothing else.
        assert_eq!(count_op(&words, OP_CONVERT_S_TO_F), converts_before + 1);
        assert_eq!(count_op(&words, OP_IMAGE_READ), count_op(&before, OP_IMAGE_READ));
        check_valid(&words);
    }

    #[test]
    fn retype_sint_to_float_converts_writes() {
        let mut words = wgsl_to_spirv(TEXTURES).unwrap();
        let converts_before = count_op(&words, OP_CONVERT_S_TO_F);
        retype_image(&mut words, 0, 3, TexelFormat::Rgba16Float).unwrap();
        let dst = image_of(&words, 0, 3);
        assert_eq!(dst[8], spirv_image_format(TexelFormat::Rgba16Float));
        assert_eq!(scalar_class(&words, dst[2]), Some(Class::Float));
        // The write's texel is converted to float first: one OpConvertSToF more.
        assert_eq!(count_op(&words, OP_CONVERT_S_TO_F), converts_before + 1);
        check_valid(&words);
    }

    #[test]
    fn retype_within_a_class_changes_only_the_format() {
        let mut words = wgsl_to_spirv(TEXTURES).unwrap();
        let before = words.clone();
        retype_image(&mut words, 0, 1, TexelFormat::Rgba32Float).unwrap();
        let zp = image_of(&words, 0, 1);
        assert_eq!(zp[8], spirv_image_format(TexelFormat::Rgba32Float));
        assert_eq!(zp[2], image_of(&before, 0, 1)[2], "same float sampled type");
        for op in [OP_CONVERT_S_TO_F, OP_CONVERT_F_TO_S] {
            assert_eq!(count_op(&words, op), count_op(&before, op));
        }
        // A new image type and a new pointer: two instructions and two ids more.
        assert_eq!(count_op(&words, OP_TYPE_IMAGE), count_op(&before, OP_TYPE_IMAGE) + 1);
        assert_eq!(words[3], before[3] + 2, "id bound");
        check_valid(&words);
    }

    #[test]
    fn retype_to_an_existing_type_reuses_it() {
        // `other` is r32float like `zp`; retyping `dst` to r32float... needs a float image, and
        // the r32float image type already exists: no duplicate declared.
        let mut words = wgsl_to_spirv(TEXTURES).unwrap();
        let images = count_op(&words, OP_TYPE_IMAGE);
        retype_image(&mut words, 0, 3, TexelFormat::R32Float).unwrap();
        // Write-only vs read-only storage images differ in naga's output only by decorations,
        // so the r32float type of `zp`/`other` is reused.
        assert_eq!(count_op(&words, OP_TYPE_IMAGE), images);
        assert_eq!(image_of(&words, 0, 3), image_of(&words, 0, 1));
        check_valid(&words);
    }

    #[test]
    fn retype_to_the_same_format_is_a_no_op() {
        let mut words = wgsl_to_spirv(TEXTURES).unwrap();
        let before = words.clone();
        retype_image(&mut words, 0, 1, TexelFormat::R32Float).unwrap();
        assert_eq!(words, before);
    }

    #[test]
    fn retype_refuses_what_it_cannot_do() {
        let mut words = wgsl_to_spirv(TEXTURES).unwrap();
        let err = retype_image(&mut words, 0, 9, TexelFormat::R32Float).unwrap_err();
        assert!(err.contains("@binding(9)") && err.contains("no variable"), "{err}");
        let err = retype_image(&mut words, 0, 0, TexelFormat::R32Float).unwrap_err();
        assert!(err.contains("buffer"), "{err}");
        let err = retype_image(&mut vec![0, 1, 2], 0, 0, TexelFormat::R32Float).unwrap_err();
        assert!(err.contains("not a SPIR-V module"), "{err}");
        let sampled = r#"
@group(0) @binding(0) var t: texture_2d<f32>;
@group(0) @binding(1) var s: sampler;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(1) fn main() { out[0] = textureSampleLevel(t, s, vec2<f32>(0.5), 0.0); }
"#;
        let mut words = wgsl_to_spirv(sampled).unwrap();
        let err = retype_image(&mut words, 0, 0, TexelFormat::R32Sint).unwrap_err();
        assert!(err.contains("does not handle"), "{err}");
        let err = retype_image(&mut words, 0, 1, TexelFormat::R32Sint).unwrap_err();
        assert!(err.contains("not an image"), "{err}");
    }

    #[test]
    fn retype_sampled_texture_fetch() {
        // textureLoad on a sampled texture is OpImageFetch; its format stays Unknown.
        let src = r#"
@group(0) @binding(0) var t: texture_2d<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(1) fn main() { out[0] = textureLoad(t, vec2<i32>(0), 0); }
"#;
        let mut words = wgsl_to_spirv(src).unwrap();
        retype_image(&mut words, 0, 0, TexelFormat::Rgba8Sint).unwrap();
        let t = image_of(&words, 0, 0);
        assert_eq!(t[8], 0, "sampled images keep format Unknown");
        assert_eq!(scalar_class(&words, t[2]), Some(Class::Sint));
        check_valid(&words);
    }
}

/// [`retype_image`] on a real driver: an `r32float` texture read by a kernel written for
/// `r32float`, through SPIR-V passthrough, as is and retyped to `rgba8sint`.
#[cfg(test)]
mod gpu_tests {
    use super::*;
    use crate::gpu::probe::{scoped, test_device};

    const READ: &str = r#"
@group(0) @binding(0) var zp: texture_storage_2d<r32float, read>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(4)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    out[id.x] = textureLoad(zp, vec2<i32>(i32(id.x), 0)).x;
}
"#;

    /// fp32 texels whose low bytes, read as int8, are 0, -2, 127, -128.
    const TEXELS: [u32; 4] = [0x3F80_0000, 0x3F80_00FE, 0x4000_007F, 0x4000_0080];

    /// Read [`TEXELS`] from an `r32float` texture through `spirv`; the four f32 read back.
    fn read_texels(device: &wgpu::Device, queue: &wgpu::Queue, spirv: &[u32]) -> Result<Vec<f32>, String> {
        let (index, readback) = scoped(device, || {
            let module = create_passthrough(device, "retype test", spirv, "main");
            let bind_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: None,
                entries: &[
                    wgpu::BindGroupLayoutEntry {
                        binding: 0,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        // The allocation's format: what wgpu checks the view against.
                        ty: wgpu::BindingType::StorageTexture {
                            access: wgpu::StorageTextureAccess::ReadOnly,
                            format: wgpu::TextureFormat::R32Float,
                            view_dimension: wgpu::TextureViewDimension::D2,
                        },
                        count: None,
                    },
                    wgpu::BindGroupLayoutEntry {
                        binding: 1,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Storage { read_only: false },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    },
                ],
            });
            let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: None,
                bind_group_layouts: &[Some(&bind_layout)],
                immediate_size: 0,
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: None,
                layout: Some(&layout),
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
            let size = wgpu::Extent3d { width: 4, height: 1, depth_or_array_layers: 1 };
            let texture = device.create_texture(&wgpu::TextureDescriptor {
                label: None,
                size,
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::R32Float,
                usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            });
            queue.write_texture(
                wgpu::TexelCopyTextureInfo {
                    texture: &texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d::ZERO,
                    aspect: wgpu::TextureAspect::All,
                },
                bytemuck::cast_slice(&TEXELS),
                wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(16), rows_per_image: Some(1) },
                size,
            );
            let buffer = |usage| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size: 16,
                    usage,
                    mapped_at_creation: false,
                })
            };
            let out = buffer(wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC);
            let readback = buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
            let view = texture.create_view(&Default::default());
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &bind_layout,
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: wgpu::BindingResource::TextureView(&view) },
                    wgpu::BindGroupEntry { binding: 1, resource: out.as_entire_binding() },
                ],
            });
            let mut encoder = device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &bind_group, &[]);
                pass.dispatch_workgroups(1, 1, 1);
            }
            encoder.copy_buffer_to_buffer(&out, 0, &readback, 0, 16);
            (queue.submit([encoder.finish()]), readback)
        })?;
        device
            .poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None })
            .map_err(|e| e.to_string())?;
        readback.map_async(wgpu::MapMode::Read, .., |r| r.expect("map"));
        device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| e.to_string())?;
        let values =
            bytemuck::cast_slice::<u8, f32>(&readback.get_mapped_range(..).map_err(|e| e.to_string())?).to_vec();
        Ok(values)
    }

    #[test]
    fn retyped_binding_reaches_the_driver() {
        let Some((_, device, queue)) = test_device() else { return };
        if !device.features().contains(wgpu::Features::PASSTHROUGH_SHADERS) {
            eprintln!("skipped: the device has no PASSTHROUGH_SHADERS");
            return;
        }
        let words = wgsl_to_spirv(READ).unwrap();
        // Unpatched, through passthrough: the texels come back exactly.
        let plain = read_texels(&device, &queue, &words).unwrap();
        assert_eq!(plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), TEXELS);
        // Declared rgba8sint: what the driver returns is its business (the bug class under test);
        // the module must be accepted and run, and the kernel sees whole numbers (converted ints).
        // Lavapipe (Mesa 22.3) returns each texel's 32 bits as one int (1.0 → 1065353216), not the
        // int8 of its low byte that a format-honouring read would give ([0, -2, 127, -128]).
        let mut retyped = words.clone();
        retype_image(&mut retyped, 0, 0, TexelFormat::Rgba8Sint).unwrap();
        let seen = read_texels(&device, &queue, &retyped).unwrap();
        eprintln!("r32float texels {TEXELS:08x?} read through rgba8sint: {seen:?}");
        assert_ne!(seen, plain, "the retyped declaration changed nothing");
        assert!(seen.iter().all(|v| v.fract() == 0.0), "not converted ints: {seen:?}");
    }
}

//! Every WGSL kernel under `devices/src/gpu/` translates with naga to SPIR-V (Vulkan) and to MSL
//! (Metal), so a kernel that only one backend's machine would reject is caught on any machine.
//!
//! The files are found by walking the directory at test time: kernels added later are covered
//! without touching this test. Two kinds of file:
//!
//! - **Standalone** kernels declare their own resources (`@group(..)`): translated as they are,
//!   once per variant when a line `// qdiff:variants NAME=VALUE,NAME=VALUE;NAME=VALUE` sets
//!   override constants (variants separated by `;`), else once with the WGSL defaults.
//! - **Fragments** declare no resources: the GPU runner completes them with a generated header
//!   (dtype alias, constants, bindings and accessors; see `gpu/context.rs`), so alone they do not
//!   compile. They are checked as instantiated: every fragment must appear in at least one
//!   source of [`instantiated_kernels`], and every such source must translate.

use devices::gpu::spirv::{wgsl_to_msl_with, wgsl_to_spirv_with};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Kernels as the GPU runner instantiates them: (name, complete WGSL source).
///
/// The runner assembles each kernel from fragments (dtype alias, constants, bindings and the
/// fragment files) per op, scheme family, dtype, storage and fault; what it assembled is recorded
/// (`devices::gpu::assembled_kernels`). This sweeps every op over every example scheme of the
/// catalogue (the first of each family also at `@f16`), both storages, and every fault, and loads
/// a few tiny models ([`sweep_models`]), on the first GPU adapter, then returns everything that
/// was assembled. Without an adapter it returns nothing (and fails when
/// `QDIFF_REQUIRE_VULKAN=1`): the fragments are then reported unchecked.
fn instantiated_kernels() -> Vec<(String, String)> {
    use devices::case::{Fault, Op, OpCase, Storage, Variant};
    use devices::DeviceKind;
    use kernels_ref::scheme::{Granularity, Scheme};
    use kernels_ref::tensor::Matrix;

    let listing = devices::list();
    let Some(info) = listing.devices.iter().find(|d| matches!(d.kind, DeviceKind::Vulkan | DeviceKind::Metal)) else {
        let required = std::env::var("QDIFF_REQUIRE_VULKAN").is_ok_and(|v| v == "1");
        assert!(!required, "QDIFF_REQUIRE_VULKAN=1 but no GPU adapter: {:?}", listing.notes);
        eprintln!(
            "no GPU adapter ({:?}): instantiated kernels not swept; `apt-get install mesa-vulkan-drivers libvulkan1` gives lavapipe",
            listing.notes
        );
        return Vec::new();
    };
    let mut gpu = devices::open(&info.id).expect("open the adapter just listed");
    let mut schemes: Vec<Scheme> = Vec::new();
    for f in kernels_ref::scheme::name::families() {
        for (i, e) in f.examples.iter().enumerate() {
            let s: Scheme = e.parse().expect("catalogue examples parse");
            // Every example, and the first of each family in fp16 arithmetic too.
            let with_f16 = if i == 0 { vec![s, s.with_dtype(kernels_ref::dtype::DType::F16)] } else { vec![s] };
            for t in with_f16 {
                if !schemes.contains(&t) {
                    schemes.push(t);
                }
            }
        }
    }
    let faults: Vec<Option<Fault>> = std::iter::once(None).chain(Fault::ALL.into_iter().map(Some)).collect();
    for s in &schemes {
        let k = match s.granularity() {
            Granularity::Group(g) => 2 * g,
            _ => 64,
        };
        let n = 8;
        let w = Matrix::new(n, k, (0..n * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect()).unwrap();
        let x = Matrix::new(2, k, (0..2 * k).map(|i| ((i * 53 % 89) as f32 - 44.0) / 30.0).collect()).unwrap();
        let wq = s.quantize(&w).ok();
        for op in [Op::Quantize, Op::Dequantize, Op::Linear, Op::Embedding, Op::ActQuant] {
            for storage in [Storage::Buffer, Storage::Texture] {
                for inject in &faults {
                    // Faults are kernel flags independent of the storage: one storage suffices.
                    let skip = inject.is_some_and(|f| f.applies(op, s).is_err() || storage == Storage::Texture);
                    if skip {
                        continue;
                    }
                    let variant = Variant { storage, ..Variant::default() };
                    if !gpu.supports(op, s, &variant).is_supported() {
                        continue;
                    }
                    let case = OpCase {
                        op,
                        scheme: *s,
                        variant,
                        inject: *inject,
                        w: Some(w.clone()),
                        wq: wq.clone(),
                        x: Some(x.clone()),
                        ids: Some(vec![0, 3, 7]),
                    };
                    // The outcome does not matter here (the conformance tests judge it): only
                    // that the kernels were assembled.
                    let _ = gpu.run(&case);
                }
            }
        }
    }
    sweep_models(gpu.as_mut());
    devices::gpu::assembled_kernels()
}

/// The model forward's kernels (`load_model`), assembled as a tiny model instantiates them: fp32
/// (interleaved RoPE), a weight-only scheme at @bf16 (the input cast) and at @f16 where the
/// adapter has it, Qwen3 (q/k norm, half RoPE), and 8da4w-vk with a quantized head and
/// embedding (the op path's activation kernels, the integer linear, the quantized gather).
/// Each model runs a prefill of 8 tokens and one decode step, which use different kernels.
fn sweep_models(gpu: &mut dyn devices::Device) {
    use kernels_ref::ops::RopeStyle;
    use models::{Arch, QModel, QuantPlan};

    let scheme = |s: &str| -> kernels_ref::scheme::Scheme { s.parse().expect("catalogue scheme") };
    let mut c = models::synthetic::config();
    c.vocab_size = 64;
    c.hidden_size = 64;
    c.n_layers = 1;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.head_dim = 32;
    c.intermediate_size = 128;
    let vk = QuantPlan { linear: Some(scheme("8da4w-vk")), head: Some(scheme("q4_0")), embed: Some(scheme("q8_0")) };
    let cases = [
        (Arch::Llama, RopeStyle::Interleaved, QuantPlan::default()),
        (Arch::Qwen3, RopeStyle::Half, QuantPlan::linear(scheme("w4g32-sym-ao@bf16"))),
        (Arch::Llama, RopeStyle::Interleaved, QuantPlan::linear(scheme("w4g32-sym-ao@f16"))),
        (Arch::Qwen2, RopeStyle::Half, vk),
    ];
    for (i, (arch, style, plan)) in cases.into_iter().enumerate() {
        let mut c = c.clone();
        c.arch = arch;
        c.rope_style = style;
        let model = models::synthetic::model_with(c, i as u64);
        let q = QModel::quantize(&model, &plan).expect("quantize the sweep model");
        // An adapter without SHADER_F16 refuses @f16: nothing to assemble there.
        if let Ok(mut s) = gpu.load_model(&q) {
            let _ = s.forward(&[1, 2, 3, 4, 5, 6, 7, 8]);
            let _ = s.forward(&[9]);
        }
    }
}

/// Every `.wgsl` file under `dir`, recursively, sorted.
fn wgsl_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("reading {}: {e}", d.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "wgsl") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The override-constant variants a file asks for (`// qdiff:variants ...`); one empty variant
/// when it asks for none.
fn variants(source: &str) -> Result<Vec<BTreeMap<String, f64>>, String> {
    let mut all = Vec::new();
    for line in source.lines() {
        let Some(spec) = line.trim().strip_prefix("// qdiff:variants") else { continue };
        for variant in spec.split(';').map(str::trim).filter(|v| !v.is_empty()) {
            let mut constants = BTreeMap::new();
            for pair in variant.split(',').map(str::trim) {
                let (name, value) = pair.split_once('=').ok_or_else(|| format!("`{pair}` is not NAME=VALUE"))?;
                let value = value.trim().parse::<f64>().map_err(|e| format!("`{pair}`: {e}"))?;
                constants.insert(name.trim().to_string(), value);
            }
            all.push(constants);
        }
    }
    if all.is_empty() {
        all.push(BTreeMap::new());
    }
    Ok(all)
}

/// Translate `source` with `constants` to both targets; one line per failure.
fn translate(name: &str, source: &str, constants: &BTreeMap<String, f64>) -> Vec<String> {
    let label = if constants.is_empty() { name.to_string() } else { format!("{name} {constants:?}") };
    let mut failures = Vec::new();
    if let Err(e) = wgsl_to_spirv_with(source, constants) {
        failures.push(format!("{label} → SPIR-V: {e}"));
    }
    if let Err(e) = wgsl_to_msl_with(source, constants) {
        failures.push(format!("{label} → MSL: {e}"));
    }
    failures
}

/// Whether a file declares resources of its own (else it is a fragment; see the module doc).
fn is_standalone(source: &str) -> bool {
    source.lines().any(|l| {
        let code = l.split("//").next().unwrap_or("");
        code.contains("@group(")
    })
}

#[test]
fn every_kernel_translates_to_spirv_and_msl() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gpu");
    let files = wgsl_files(&root);
    assert!(!files.is_empty(), "no .wgsl file under {}", root.display());

    let instantiated = instantiated_kernels();
    let mut failures = Vec::new();
    let mut translated = 0usize;
    let mut unchecked = Vec::new();
    for path in &files {
        let name = path.strip_prefix(&root).unwrap_or(path).display().to_string();
        let source = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{name}: cannot read: {e}"));
                continue;
            }
        };
        if is_standalone(&source) {
            match variants(&source) {
                Ok(all) => {
                    for constants in &all {
                        failures.extend(translate(&name, &source, constants));
                        translated += 1;
                    }
                }
                Err(e) => failures.push(format!("{name}: bad `// qdiff:variants` line: {e}")),
            }
        } else if !instantiated.iter().any(|(_, full)| full.contains(source.trim())) {
            unchecked.push(name);
        }
    }
    for (name, source) in &instantiated {
        failures.extend(translate(&format!("instantiated {name}"), source, &BTreeMap::new()));
        translated += 1;
    }

    eprintln!(
        "{} .wgsl files, {translated} translations to SPIR-V and MSL, {} instantiated kernels",
        files.len(),
        instantiated.len()
    );
    if !unchecked.is_empty() {
        // Only while the runner exposes no instantiated sources: once it does, a fragment that
        // no instantiated kernel contains is a failure (it would never be compiled anywhere).
        let message = format!("fragments not in any instantiated kernel: {}", unchecked.join(", "));
        if instantiated.is_empty() {
            eprintln!("unchecked (no instantiated kernel sources exposed yet): {message}");
        } else {
            failures.push(message);
        }
    }
    assert!(failures.is_empty(), "{} translation failures:\n\n{}", failures.len(), failures.join("\n\n"));
}

#[test]
fn variant_lines_parse() {
    let v = variants("// qdiff:variants A=1,B=2.5; A=3\nfn f() {}").unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["B"], 2.5);
    assert_eq!(v[1]["A"], 3.0);
    assert_eq!(variants("fn f() {}").unwrap(), vec![BTreeMap::new()]);
    assert!(variants("// qdiff:variants A").is_err());
    assert!(is_standalone("@group(0) @binding(0) var<uniform> x: u32;"));
    assert!(!is_standalone("// @group(0) in a comment\nfn f() {}"));
}

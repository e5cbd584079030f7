//! Scheme names (cli.md "Names", schemes.md §7): parsing, canonical printing, the family list
//! `qdiff schemes` prints, and each scheme's §9 parameters.
//!
//! Grammar (an optional `@f16|@bf16|@f32` suffix on every name sets the compute dtype):
//! ```text
//! w{b}{g{G}|pc|pt}-{sym-ao|sym-nce-ao|asym-ao|symclip|symclip-coreai|asym-coreml}
//! w4g{G}-{sym8|fzp}        w{b}g{G}-mlx-{cpu|gpu}
//! q4_0[-fused|-py]  q4_1[-fused]  q8_0  q4_K        a8-q8_0-{ref|avx|neon}
//! pal{n}{-pt|g{C}|-pcs-col|-pcs-row}[-uniform]
//! a8-pt-asym-{ao|ao-i8w|decomp|etport|xnn|vk|vk-away}[-zp{i8|f32|f16}]
//! 8da4w[g{G}]-{ao|xnn|vk}[-zp{i8|f32|f16}]          (G defaults to 32)
//! ```

use super::*;
use crate::pack::Packing;
use crate::round::{RoundMode, Ties};

fn bad(name: &str, reason: impl Into<String>) -> RefError {
    RefError::UnknownScheme { name: name.to_string(), reason: reason.into() }
}

fn num(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        None
    } else {
        s.parse().ok()
    }
}

/// Split a leading decimal number off `s`.
fn lead_num(s: &str) -> Option<(usize, &str)> {
    let end = s.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(s.len());
    num(&s[..end]).map(|n| (n, &s[end..]))
}

fn strip_zp(s: &str) -> (&str, Option<ZpDtype>) {
    for (suf, z) in [("-zpi8", ZpDtype::I8), ("-zpf32", ZpDtype::F32), ("-zpf16", ZpDtype::F16)] {
        if let Some(rest) = s.strip_suffix(suf) {
            return (rest, Some(z));
        }
    }
    (s, None)
}

/// Parse a scheme name.
pub fn parse(name: &str) -> Result<Scheme> {
    let (base, dtype) = match name.split_once('@') {
        Some((b, d)) => {
            let dt = match d {
                "f16" => DType::F16,
                "bf16" => DType::BF16,
                "f32" => DType::F32,
                _ => return Err(bad(name, format!("unknown dtype suffix `@{d}` (expected @f16, @bf16 or @f32)"))),
            };
            (b, dt)
        }
        None => (name, DType::F32),
    };
    let family = parse_family(name, base)?;
    let s = Scheme { family, dtype };
    validate(name, &s)?;
    Ok(s)
}

fn parse_family(name: &str, base: &str) -> Result<Family> {
    let fixed = match base {
        "q4_0" => Some(Family::Q4_0 { fused: false, gguf_py: false }),
        "q4_0-fused" => Some(Family::Q4_0 { fused: true, gguf_py: false }),
        "q4_0-py" => Some(Family::Q4_0 { fused: false, gguf_py: true }),
        "q4_1" => Some(Family::Q4_1 { fused: false }),
        "q4_1-fused" => Some(Family::Q4_1 { fused: true }),
        "q8_0" => Some(Family::Q8_0),
        "q4_K" => Some(Family::Q4K { fused: false }),
        "a8-q8_0-ref" => Some(Family::ActQ8_0 { flavor: Q8Flavor::Ref }),
        "a8-q8_0-avx" => Some(Family::ActQ8_0 { flavor: Q8Flavor::Avx }),
        "a8-q8_0-neon" => Some(Family::ActQ8_0 { flavor: Q8Flavor::Neon }),
        _ => None,
    };
    if let Some(f) = fixed {
        return Ok(f);
    }
    if let Some(rest) = base.strip_prefix("a8-pt-asym-") {
        let (rest, zp) = strip_zp(rest);
        let flavor = match rest {
            "ao" => ActFlavor::Ao,
            "ao-i8w" => ActFlavor::AoI8w,
            "decomp" => ActFlavor::Decomp,
            "etport" => ActFlavor::EtPort,
            "xnn" => ActFlavor::Xnn,
            "vk" => ActFlavor::Vk(Ties::Even),
            "vk-away" => ActFlavor::Vk(Ties::Away),
            _ => {
                return Err(bad(name, "activation flavour must be one of ao, ao-i8w, decomp, etport, xnn, vk, vk-away"))
            }
        };
        return Ok(Family::Act { flavor, zp_dtype: zp.unwrap_or(ZpDtype::I8) });
    }
    if let Some(rest) = base.strip_prefix("8da4w") {
        let (rest, zp) = strip_zp(rest);
        let (group, rest) = match rest.strip_prefix('g') {
            Some(r) => lead_num(r).ok_or_else(|| bad(name, "expected a group size after `8da4wg`"))?,
            None => (32, rest),
        };
        let flavor = match rest {
            "-ao" => W8da4wFlavor::Ao,
            "-xnn" => W8da4wFlavor::Xnn,
            "-vk" => W8da4wFlavor::Vk,
            _ => return Err(bad(name, "8da4w flavour must be -ao, -xnn or -vk")),
        };
        return Ok(Family::W8da4w { flavor, group, zp_dtype: zp.unwrap_or(ZpDtype::I8) });
    }
    if let Some(rest) = base.strip_prefix("pal") {
        let (bits, rest) = lead_num(rest).ok_or_else(|| bad(name, "expected bits after `pal`"))?;
        let (rest, mode) = match rest.strip_suffix("-uniform") {
            Some(r) => (r, LutMode::Uniform),
            None => (rest, LutMode::Kmeans),
        };
        let (lut, pcs) = match rest {
            "-pt" => (LutGranularity::Tensor, None),
            "-pcs-col" => (LutGranularity::Tensor, Some(PcsAxis::Col)),
            "-pcs-row" => (LutGranularity::Tensor, Some(PcsAxis::Row)),
            r => match r.strip_prefix('g').and_then(num) {
                Some(c) => (LutGranularity::GroupedChannels(c), None),
                None => return Err(bad(name, "palettization must be -pt, g{C}, -pcs-col or -pcs-row")),
            },
        };
        let bits = u8::try_from(bits).map_err(|_| bad(name, "bits out of range"))?;
        return Ok(Family::Pal { bits, lut, pcs, mode });
    }
    if let Some(rest) = base.strip_prefix('w') {
        let (bits, rest) = lead_num(rest).ok_or_else(|| bad(name, "expected bits after `w`"))?;
        let bits = u8::try_from(bits).map_err(|_| bad(name, "bits out of range"))?;
        let (gran, rest) = if let Some(r) = rest.strip_prefix("pc") {
            (Granularity::Channel, r)
        } else if let Some(r) = rest.strip_prefix("pt") {
            (Granularity::Tensor, r)
        } else if let Some(r) = rest.strip_prefix('g') {
            let (g, r) = lead_num(r).ok_or_else(|| bad(name, "expected a group size after `g`"))?;
            (Granularity::Group(g), r)
        } else {
            return Err(bad(name, "expected g{G}, pc or pt after the bit width"));
        };
        let group = |name: &str| match gran {
            Granularity::Group(g) => Ok(g),
            _ => Err(bad(name, "this family needs a group size g{G}")),
        };
        return Ok(match rest {
            "-sym-ao" => Family::Torchao { bits, gran, mapping: AoMapping::Sym },
            "-sym-nce-ao" => Family::Torchao { bits, gran, mapping: AoMapping::SymNce },
            "-asym-ao" => Family::Torchao { bits, gran, mapping: AoMapping::Asym },
            "-symclip" => Family::SymClip { bits, gran, flavor: ClipFlavor::Coreml },
            "-symclip-coreai" => Family::SymClip { bits, gran, flavor: ClipFlavor::Coreai },
            "-asym-coreml" => Family::CoremlAsym { bits, gran },
            "-sym8" => Family::Sym8 { group: group(name)? },
            "-fzp" => Family::Fzp { group: group(name)? },
            "-mlx-cpu" => Family::Mlx { bits, group: group(name)?, gpu: false },
            "-mlx-gpu" => Family::Mlx { bits, group: group(name)?, gpu: true },
            _ => {
                return Err(bad(
                    name,
                    "variant must be one of sym-ao, sym-nce-ao, asym-ao, symclip, symclip-coreai, asym-coreml, sym8, fzp, mlx-cpu, mlx-gpu",
                ))
            }
        });
    }
    Err(bad(name, "not in the catalogue (`qdiff schemes` lists every name)"))
}

fn validate(name: &str, s: &Scheme) -> Result<()> {
    let need = |ok: bool, why: &str| if ok { Ok(()) } else { Err(bad(name, why.to_string())) };
    let group_ok = |g: Granularity| match g {
        Granularity::Group(g) => g >= 2,
        _ => true,
    };
    match s.family {
        Family::Torchao { bits, gran, .. } => {
            need((2..=8).contains(&bits), "torchao bit widths are 2..=8")?;
            need(group_ok(gran), "group size must be at least 2")
        }
        Family::SymClip { bits, gran, .. } => {
            need((2..=8).contains(&bits), "symclip bit widths are 2..=8")?;
            need(group_ok(gran), "group size must be at least 2")
        }
        Family::CoremlAsym { bits, gran } => {
            need(bits == 4 || bits == 8, "coremltools linear quantizes to 4 or 8 bits")?;
            need(group_ok(gran), "group size must be at least 2")
        }
        Family::Sym8 { group } | Family::Fzp { group } => need(group >= 2, "group size must be at least 2"),
        Family::Mlx { bits, group, .. } => {
            need([2, 3, 4, 5, 6, 8].contains(&bits), "MLX allows bits 2, 3, 4, 5, 6, 8")?;
            need([32, 64, 128].contains(&group), "MLX allows group sizes 32, 64, 128")
        }
        Family::Pal { bits, lut, .. } => {
            need([1, 2, 3, 4, 6, 8].contains(&bits), "palettization allows 1, 2, 3, 4, 6, 8 bits")?;
            need(!matches!(lut, LutGranularity::GroupedChannels(0)), "channel group must be at least 1")
        }
        Family::W8da4w { flavor, group, .. } => {
            need(group >= 2, "group size must be at least 2")?;
            need(
                flavor != W8da4wFlavor::Vk || group % 4 == 0,
                "the Vulkan 8da4w kernels need a group size that is a multiple of 4",
            )
        }
        Family::Act { flavor, .. } => need(
            s.dtype == DType::F32 || !matches!(flavor, ActFlavor::EtPort),
            "the ExecuTorch portable kernel takes fp32 input only",
        ),
        Family::Q4_0 { .. } | Family::Q4_1 { .. } | Family::Q8_0 | Family::Q4K { .. } | Family::ActQ8_0 { .. } => {
            Ok(())
        }
    }
}

fn gran_str(g: Granularity) -> String {
    match g {
        Granularity::Group(g) => format!("g{g}"),
        Granularity::Channel => "pc".into(),
        Granularity::Tensor => "pt".into(),
    }
}

fn zp_str(z: ZpDtype) -> String {
    if z == ZpDtype::I8 {
        String::new()
    } else {
        format!("-zp{}", z.name())
    }
}

/// The canonical name of a scheme.
pub fn print(s: &Scheme) -> String {
    let base = match s.family {
        Family::Torchao { bits, gran, mapping } => {
            let v = match mapping {
                AoMapping::Sym => "sym-ao",
                AoMapping::SymNce => "sym-nce-ao",
                AoMapping::Asym => "asym-ao",
            };
            format!("w{bits}{}-{v}", gran_str(gran))
        }
        Family::SymClip { bits, gran, flavor } => {
            let v = if flavor == ClipFlavor::Coreml { "symclip" } else { "symclip-coreai" };
            format!("w{bits}{}-{v}", gran_str(gran))
        }
        Family::CoremlAsym { bits, gran } => format!("w{bits}{}-asym-coreml", gran_str(gran)),
        Family::Sym8 { group } => format!("w4g{group}-sym8"),
        Family::Fzp { group } => format!("w4g{group}-fzp"),
        Family::Mlx { bits, group, gpu } => format!("w{bits}g{group}-mlx-{}", if gpu { "gpu" } else { "cpu" }),
        Family::Q4_0 { fused, gguf_py } => {
            format!("q4_0{}{}", if fused { "-fused" } else { "" }, if gguf_py { "-py" } else { "" })
        }
        Family::Q4_1 { fused } => format!("q4_1{}", if fused { "-fused" } else { "" }),
        Family::Q8_0 => "q8_0".into(),
        Family::Q4K { .. } => "q4_K".into(),
        Family::ActQ8_0 { flavor } => format!(
            "a8-q8_0-{}",
            match flavor {
                Q8Flavor::Ref => "ref",
                Q8Flavor::Avx => "avx",
                Q8Flavor::Neon => "neon",
            }
        ),
        Family::Pal { bits, lut, pcs, mode } => {
            let g = match (lut, pcs) {
                (_, Some(PcsAxis::Col)) => "-pcs-col".to_string(),
                (_, Some(PcsAxis::Row)) => "-pcs-row".to_string(),
                (LutGranularity::Tensor, None) => "-pt".to_string(),
                (LutGranularity::GroupedChannels(c), None) => format!("g{c}"),
            };
            format!("pal{bits}{g}{}", if mode == LutMode::Uniform { "-uniform" } else { "" })
        }
        Family::Act { flavor, zp_dtype } => {
            let f = match flavor {
                ActFlavor::Ao => "ao",
                ActFlavor::AoI8w => "ao-i8w",
                ActFlavor::Decomp => "decomp",
                ActFlavor::EtPort => "etport",
                ActFlavor::Xnn => "xnn",
                ActFlavor::Vk(Ties::Even) => "vk",
                ActFlavor::Vk(Ties::Away) => "vk-away",
            };
            format!("a8-pt-asym-{f}{}", zp_str(zp_dtype))
        }
        Family::W8da4w { flavor, group, zp_dtype } => {
            let g = if group == 32 { String::new() } else { format!("g{group}") };
            let f = match flavor {
                W8da4wFlavor::Ao => "ao",
                W8da4wFlavor::Xnn => "xnn",
                W8da4wFlavor::Vk => "vk",
            };
            format!("8da4w{g}-{f}{}", zp_str(zp_dtype))
        }
    };
    if s.dtype == DType::F32 {
        base
    } else {
        format!("{base}@{}", s.dtype)
    }
}

/// One family of the catalogue, as `qdiff schemes` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyInfo {
    /// The name pattern, e.g. `w4g{G}-sym-ao`.
    pub pattern: &'static str,
    /// Bit widths the pattern takes.
    pub bits: Vec<u8>,
    /// Group sizes (or the rule for them).
    pub groups: &'static str,
    /// Example names, each parseable.
    pub examples: Vec<&'static str>,
    /// The §9 parameters of the first example.
    pub params: SchemeParams,
}

/// Every family of the catalogue with its parameters.
pub fn families() -> Vec<FamilyInfo> {
    let any_g = "any G >= 2 that divides the row; catalogue: 16, 32, 64, 128, 256";
    let rows: Vec<(&'static str, Vec<u8>, &'static str, Vec<&'static str>)> = vec![
        (
            "w{b}{g{G}|pc|pt}-sym-ao",
            vec![2, 3, 4, 5, 6, 8],
            any_g,
            vec!["w4g32-sym-ao", "w4g128-sym-ao@bf16", "w8pc-sym-ao", "w8g32-sym-ao"],
        ),
        ("w{b}{g{G}|pc|pt}-sym-nce-ao", vec![2, 3, 4, 5, 6, 8], any_g, vec!["w4g32-sym-nce-ao"]),
        ("w{b}{g{G}|pc|pt}-asym-ao", vec![2, 3, 4, 5, 6, 8], any_g, vec!["w4g32-asym-ao", "w8pc-asym-ao"]),
        (
            "w{b}{g{G}|pc|pt}-symclip",
            vec![2, 3, 4, 5, 6, 8],
            any_g,
            vec!["w4g32-symclip", "w8pc-symclip", "w8g32-symclip@f16"],
        ),
        ("w{b}{g{G}|pc|pt}-symclip-coreai", vec![4, 8], any_g, vec!["w4g32-symclip-coreai", "w8pc-symclip-coreai"]),
        ("w4g{G}-sym8", vec![4], any_g, vec!["w4g128-sym8"]),
        ("w4g{G}-fzp", vec![4], any_g, vec!["w4g128-fzp@bf16", "w4g32-fzp"]),
        ("w{b}{g{G}|pc|pt}-asym-coreml", vec![4, 8], any_g, vec!["w8pc-asym-coreml", "w4g32-asym-coreml"]),
        (
            "w{b}g{G}-mlx-cpu",
            vec![2, 3, 4, 5, 6, 8],
            "32, 64, 128",
            vec!["w4g64-mlx-cpu", "w8g32-mlx-cpu", "w4g32-mlx-cpu@f16"],
        ),
        ("w{b}g{G}-mlx-gpu", vec![2, 3, 4, 5, 6, 8], "32, 64, 128", vec!["w4g64-mlx-gpu", "w8g64-mlx-gpu"]),
        ("q4_0[-fused|-py]", vec![4], "32 (fixed)", vec!["q4_0", "q4_0-fused", "q4_0-py"]),
        ("q4_1[-fused]", vec![4], "32 (fixed)", vec!["q4_1", "q4_1-fused"]),
        ("q8_0", vec![8], "32 (fixed)", vec!["q8_0"]),
        ("q4_K", vec![4], "256 super-blocks of 8 x 32 (fixed)", vec!["q4_K"]),
        ("a8-q8_0-{ref|avx|neon}", vec![8], "32 (fixed)", vec!["a8-q8_0-ref", "a8-q8_0-avx", "a8-q8_0-neon"]),
        ("pal{n}-pt[-uniform]", vec![1, 2, 3, 4, 6, 8], "one LUT per tensor", vec!["pal4-pt", "pal2-pt-uniform"]),
        (
            "pal{n}g{C}[-uniform]",
            vec![1, 2, 3, 4, 6, 8],
            "one LUT per C output channels",
            vec!["pal4g16", "pal6g32-uniform"],
        ),
        (
            "pal{n}-pcs-col[-uniform]",
            vec![1, 2, 3, 4, 6, 8],
            "per-input-column scale, one LUT",
            vec!["pal4-pcs-col", "pal4-pcs-col@f16"],
        ),
        ("pal{n}-pcs-row[-uniform]", vec![1, 2, 3, 4, 6, 8], "per-output-row scale, one LUT", vec!["pal4-pcs-row"]),
        ("a8-pt-asym-ao", vec![8], "per token", vec!["a8-pt-asym-ao", "a8-pt-asym-ao@bf16"]),
        ("a8-pt-asym-ao-i8w", vec![8], "per token", vec!["a8-pt-asym-ao-i8w"]),
        ("a8-pt-asym-decomp", vec![8], "per token", vec!["a8-pt-asym-decomp"]),
        ("a8-pt-asym-etport", vec![8], "per token", vec!["a8-pt-asym-etport"]),
        ("a8-pt-asym-xnn", vec![8], "per token", vec!["a8-pt-asym-xnn"]),
        (
            "a8-pt-asym-vk[-away][-zp{i8|f32|f16}]",
            vec![8],
            "per token",
            vec!["a8-pt-asym-vk", "a8-pt-asym-vk-away-zpf32@f16"],
        ),
        (
            "8da4w[g{G}]-ao",
            vec![4, 8],
            "weights g{G} (default 32), activations per token",
            vec!["8da4w-ao", "8da4wg128-ao@bf16"],
        ),
        ("8da4w[g{G}]-xnn", vec![4, 8], "weights g{G} (default 32), activations per token", vec!["8da4w-xnn"]),
        (
            "8da4w[g{G}]-vk[-zp{i8|f32|f16}]",
            vec![4, 8],
            "weights g{G}, G % 4 == 0 (default 32), activations per token",
            vec!["8da4w-vk", "8da4w-vk-zpf32@f16", "8da4wg128-vk-zpf16@f16"],
        ),
    ];
    rows.into_iter()
        .map(|(pattern, bits, groups, examples)| {
            let params = parse(examples[0]).expect("catalogue examples parse").params();
            FamilyInfo { pattern, bits, groups, examples, params }
        })
        .collect()
}

fn packing_str(p: Packing) -> String {
    use crate::pack::Nibbles;
    match p {
        Packing::Unpacked { bits, signed } => {
            format!("unpacked int8 per code ({bits}-bit {})", if signed { "signed" } else { "unsigned" })
        }
        Packing::Nibbles(Nibbles::LnEvenOb) => "nibbles LN=even, offset-binary (q+8)".into(),
        Packing::Nibbles(Nibbles::LnEvenTc) => "nibbles LN=even, two's complement".into(),
        Packing::Bitstream { bits, signed } => {
            format!("LSB-first {bits}-bit bitstream, {}", if signed { "two's complement" } else { "unsigned" })
        }
        Packing::MlxWords { bits } => format!("MLX uint32 words, {bits}-bit LSB-first"),
        Packing::GgmlQ4_0 => "block_q4_0: fp16 d + LN=j/HN=j+16 offset-binary nibbles (18 B / 32)".into(),
        Packing::GgmlQ4_1 => "block_q4_1: fp16 d, fp16 m + LN=j/HN=j+16 unsigned nibbles (20 B / 32)".into(),
        Packing::GgmlQ8_0 => "block_q8_0: fp16 d + 32 int8 (34 B / 32)".into(),
        Packing::GgmlQ4K => "block_q4_K: fp16 d, dmin, 12 B 6-bit scales/mins, 128 B nibbles (144 B / 256)".into(),
        Packing::VulkanQ4Blocks => "ExecuTorch Vulkan 4K x 8N nibble blocks".into(),
    }
}

/// The §9 parameters of a scheme.
pub fn params(s: &Scheme) -> SchemeParams {
    let t = s.dtype;
    let packing = packing_str(s.packing());
    let gran = |g: Granularity| match g {
        Granularity::Group(g) => format!("g{g}"),
        Granularity::Channel => "per_channel".into(),
        Granularity::Tensor => "per_tensor".into(),
    };
    let from_affine = |source: &str, notes: &str| {
        let p = affine::AffineParams::for_scheme(s).expect("affine scheme");
        // Float-zero schemes report codes `q = u − mid` (cli.md), so the code range shifts too.
        let shift = match p.zp_rule {
            affine::ZpRule::FloatMin { mid } => mid as i64,
            _ => 0,
        };
        SchemeParams {
            source: source.into(),
            qmin: p.qmin as i64 - shift,
            qmax: p.qmax as i64 - shift,
            bits: ((p.qmax - p.qmin + 1) as f64).log2().ceil() as u8,
            granularity: if s.is_activation() { "per_token".into() } else { gran(p.gran) },
            arith_dtype: p.arith,
            op_form: p.op_form.to_string(),
            round_mode: p.round.to_string(),
            round_before_zp: p.round_before_zp,
            zp_rule: match p.zp_rule {
                affine::ZpRule::None => "none (symmetric)".into(),
                affine::ZpRule::FromMin => "qmin - rne(min/s), clamped (int)".into(),
                affine::ZpRule::CoremlLinear => "clip(rne((qmin*max - qmax*min)/(max - min))) (int)".into(),
                affine::ZpRule::FloatMin { mid } => format!("float zero z = min + s*{mid}; q = u - {mid}"),
            },
            eps_rule: match p.eps {
                Some(_) => format!(
                    "{} ({})",
                    p.eps_label,
                    if p.eps_at == affine::EpsAt::Scale { "on the scale" } else { "on the range" }
                ),
                None => p.eps_label.into(),
            },
            stored_scale_dtype: p.stored_scale,
            quantize_with_stored_scale: p.quantize_with_stored_scale,
            packing: packing.clone(),
            notes: notes.into(),
        }
    };
    let custom = |source: &str,
                  qmin: i64,
                  qmax: i64,
                  bits: u8,
                  granularity: String,
                  arith: DType,
                  op: &str,
                  round: &str,
                  before: bool,
                  zp: &str,
                  eps: &str,
                  stored: DType,
                  with_stored: bool,
                  notes: &str| SchemeParams {
        source: source.into(),
        qmin,
        qmax,
        bits,
        granularity,
        arith_dtype: arith,
        op_form: op.into(),
        round_mode: round.into(),
        round_before_zp: before,
        zp_rule: zp.into(),
        eps_rule: eps.into(),
        stored_scale_dtype: stored,
        quantize_with_stored_scale: with_stored,
        packing: packing.clone(),
        notes: notes.into(),
    };
    match s.family {
        Family::Torchao { mapping, .. } => from_affine(
            match mapping {
                AoMapping::Sym => "torchao choose_qparams_affine SYMMETRIC + quantize_affine (schemes.md 1.2/1.3)",
                AoMapping::SymNce => "torchao SYMMETRIC_NO_CLIPPING_ERR (schemes.md 1.2)",
                AoMapping::Asym => "torchao ASYMMETRIC, int zero-point (schemes.md 1.2/1.3)",
            },
            "IntxUnpackedToInt8Tensor: scale dtype = input dtype, shape (N, K/G)",
        ),
        Family::SymClip { flavor: ClipFlavor::Coreml, .. } => from_affine(
            "coremltools linear_symmetric (schemes.md 2.2)",
            "arithmetic in the weight dtype (fp16 after conversion)",
        ),
        Family::SymClip { flavor: ClipFlavor::Coreai, .. } => from_affine(
            "coreai-opt symmetric_with_clipping through torchao's formula (schemes.md 2.5)",
            "fake-quant division form",
        ),
        Family::Sym8 { .. } => from_affine(
            "fbgemm/mslk int4_row_quantize (schemes.md 1.8)",
            "amax/8 on [-8,7]; scales (K/G, N) in storage",
        ),
        Family::Fzp { .. } => from_affine(
            "torchao Int4Tensor / mslk int4_row_quantize_zp (schemes.md 1.8)",
            "true min/max (zero not included); scale and zero stored in the input dtype, (K/G, N) in storage",
        ),
        Family::CoremlAsym { .. } => from_affine("coremltools linear mode (schemes.md 2.2)", "zero always in range"),
        Family::W8da4w { flavor, .. } => from_affine(
            match flavor {
                W8da4wFlavor::Ao => "torchao Int8DynamicActivationIntxWeightConfig, weights (schemes.md 1.5)",
                W8da4wFlavor::Xnn => "ExecuTorch XNNPACK 8da4w weights (schemes.md 1.7, 1.11)",
                W8da4wFlavor::Vk => "ExecuTorch Vulkan linear_dq8ca_q4gsw weights (schemes.md 5.1, 5.4)",
            },
            "composite: these are the weight parameters; `activation_scheme` gives the per-token activation scheme",
        ),
        Family::Act { flavor: ActFlavor::Ao | ActFlavor::AoI8w, .. } => from_affine(
            "torchao per-token ASYMMETRIC int8 (schemes.md 1.5)",
            "fake-quant; dequantized in the input dtype",
        ),
        Family::Act { flavor: ActFlavor::Decomp, .. } => custom(
            "PyTorch quantized_decomposed per-token ops (schemes.md 1.9)",
            -128,
            127,
            8,
            "per_token".into(),
            t,
            "recip_mul (double)",
            "rne",
            false,
            "nudged: sum>0 -> from min; clamp then rne",
            "finfo(f32).eps = 2^-23 on the scale",
            t,
            true,
            "scale returned as float64; quantize in double",
        ),
        Family::Act { flavor: ActFlavor::EtPort, .. } => custom(
            "ExecuTorch portable choose_qparams_per_token_asymmetric + quantize_per_token (schemes.md 1.10)",
            -128,
            127,
            8,
            "per_token".into(),
            DType::F64,
            "recip_mul (fp32 inverse of the float scale)",
            "rne",
            true,
            "nudged: emin < emax -> from min; nearbyint",
            "scale 0 -> 0.1; below 6.1e-5 the range is amplified",
            DType::F64,
            true,
            "the double scale is reported as its f32 rounding; the exact double is kept as quantize_scales",
        ),
        Family::Act { flavor: ActFlavor::Xnn, .. } => custom(
            "XNNPACK qd8 (schemes.md 1.11)",
            -128,
            127,
            8,
            "per_token".into(),
            DType::F32,
            "multiply by fl(1/fl(1/m)), m = 255/(max-min)",
            "rne (lrintf)",
            true,
            "nudged: sum>0 -> from min; lrintf after clamp",
            "m = 1 when min == max",
            DType::F32,
            true,
            "which multiplier the convert kernel uses is version dependent [UNVERIFIED pin]",
        ),
        Family::Act { flavor: ActFlavor::Vk(ties), .. } => custom(
            "ExecuTorch Vulkan choose_qparams_per_row + quantize_and_pack (schemes.md 5.2/5.3)",
            -128,
            127,
            8,
            "per_token".into(),
            DType::F32,
            "recip_mul (1/float(stored scale))",
            &RoundMode::Rglsl(ties).to_string(),
            true,
            "nudged: emin < emax -> from min; GLSL round",
            "scale 0 -> 0.1; below 6.1e-5 the range is amplified (float)",
            t,
            true,
            "scale stored in DTYPE (fp16 in half mode), zero-point chosen with the fp32 scale",
        ),
        Family::Mlx { bits, group, gpu } => custom(
            if gpu {
                "MLX Metal/CUDA affine_quantize (schemes.md 3.1)"
            } else {
                "MLX CPU affine quantize (schemes.md 3.1)"
            },
            0,
            (1 << bits) - 1,
            bits,
            format!("g{group}"),
            DType::F32,
            "div",
            if gpu { "rhaz" } else { "rne" },
            true,
            if gpu { "float bias = edge (w_max starts at 0)" } else { "float bias = edge (true min/max)" },
            "scale >= 1e-7, nudged so zero is exact",
            t,
            false,
            "dequant scale*q + bias in T",
        ),
        Family::Q4_0 { fused, gguf_py } => custom(
            if gguf_py {
                "gguf-py quants.Q4_0 (numpy; schemes.md 4.1)"
            } else {
                "ggml quantize_row_q4_0_ref (schemes.md 4.1)"
            },
            -8,
            7,
            4,
            "g32".into(),
            DType::F32,
            "recip_mul",
            if fused { "rhup after fma(x, id, 8.5)" } else { "rhup ((int8_t)(x*id + 8.5f))" },
            true,
            "none (offset 8 in storage)",
            "d = max/-8 of the signed max-|x| element; id = 0 when d = 0",
            DType::F16,
            false,
            if gguf_py {
                "argmax takes x[0] of an all-zero block: d = -0.0/-8 = +0.0 where C ggml stores -0.0"
            } else {
                ""
            },
        ),
        Family::Q4_1 { fused } => custom(
            "ggml quantize_row_q4_1_ref (schemes.md 4.2)",
            0,
            15,
            4,
            "g32".into(),
            DType::F32,
            "recip_mul",
            if fused { "rhup after fma(x-min, id, 0.5)" } else { "rhup ((int8_t)((x-min)*id + 0.5f))" },
            true,
            "float m = min (true min), stored fp16",
            "id = 0 when d = 0",
            DType::F16,
            false,
            "",
        ),
        Family::Q8_0 | Family::ActQ8_0 { .. } => custom(
            "ggml Q8_0 (schemes.md 4.3)",
            -127,
            127,
            8,
            "g32".into(),
            DType::F32,
            if s.family == (Family::ActQ8_0 { flavor: Q8Flavor::Avx }) { "mul by 127/amax" } else { "recip_mul" },
            match s.family {
                Family::ActQ8_0 { flavor: Q8Flavor::Avx | Q8Flavor::Neon } => "rne",
                _ => "rhaz (roundf)",
            },
            true,
            "none",
            "id = 0 when d = 0",
            DType::F16,
            false,
            "",
        ),
        Family::Q4K { .. } => custom(
            "ggml quantize_row_q4_K_ref / make_qkx2_quants (schemes.md 4.4)",
            0,
            15,
            4,
            "g32 sub-blocks of 256 super-blocks".into(),
            DType::F32,
            "div (requant with stored scales)",
            "nearest_int",
            true,
            "6-bit m x fp16 dmin, subtracted",
            "d = 0 when the super-block is constant",
            DType::F16,
            true,
            "scales = d*sc, zero_points = dmin*m per 32-element sub-block; raw d, dmin, sc, m under `extra`",
        ),
        Family::Pal { bits, lut, pcs, mode } => custom(
            "coremltools palettize_weights (schemes.md 2.4)",
            0,
            (1 << bits) - 1,
            bits,
            match (lut, pcs) {
                (_, Some(PcsAxis::Col)) => "one LUT, per-input-column scale".into(),
                (_, Some(PcsAxis::Row)) => "one LUT, per-output-row scale".into(),
                (LutGranularity::Tensor, None) => "one LUT per tensor".into(),
                (LutGranularity::GroupedChannels(c), None) => format!("one LUT per {c} output channels"),
            },
            t,
            "lookup",
            if mode == LutMode::Uniform { "rne (uniform grid index)" } else { "nearest LUT entry, first wins ties" },
            true,
            "none",
            "per-channel scale 0 -> 1",
            t,
            true,
            if mode == LutMode::Uniform {
                "LUT i*s + vmin in f64, cast to the weight dtype"
            } else {
                "deterministic 1-D k-means (qdiff's own); pass a LUT to reproduce a framework's"
            },
        ),
    }
}

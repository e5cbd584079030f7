//! `qdiff schemes [--json]`: the catalogue, one family per entry, with its §9 parameters.

use crate::Exit;
use kernels_ref::scheme::name::families;
use serde_json::json;

/// Print the catalogue.
pub fn run(as_json: bool, out: &mut dyn std::io::Write) -> anyhow::Result<Exit> {
    let fams = families();
    if as_json {
        let doc = json!({
            "schema_version": 1,
            "dtype_suffixes": ["@f32", "@f16", "@bf16"],
            "families": fams,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(Exit::Clean);
    }
    writeln!(out, "{:<38} {:<14} {:<40} examples", "family", "bits", "source")?;
    for f in &fams {
        let bits = f.bits.iter().map(u8::to_string).collect::<Vec<_>>().join(",");
        let source: String = f.params.source.chars().take(40).collect();
        writeln!(out, "{:<38} {:<14} {:<40} {}", f.pattern, bits, source, f.examples.join(" "))?;
    }
    writeln!(out, "\nEvery name takes an optional @f16, @bf16 or @f32 suffix (the compute dtype; default @f32).")?;
    writeln!(out, "`qdiff schemes --json` prints each family's full parameters (arith dtype, op form, rounding, zero-point and eps rules, stored scale dtype, packing).")?;
    Ok(Exit::Clean)
}

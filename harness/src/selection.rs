//! What a run covers, from the command line's names: schemes, ops and the injected fault, parsed
//! before anything runs (a bad name is exit 2 with one line, and nothing written). Shared by
//! `qdiff check` and `qdiff fuzz`.

use anyhow::anyhow;
use devices::case::{Fault, Op};
use kernels_ref::scheme::name::families;
use kernels_ref::scheme::Scheme;

/// The default scheme list: every example the catalogue gives for every family (each family at
/// least once, with the `@f16` / `@bf16` and zero-point variants the examples carry).
pub fn default_schemes() -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for f in families() {
        for e in f.examples {
            if !seen.iter().any(|s| s == e) {
                seen.push(e.to_string());
            }
        }
    }
    seen
}

/// `--scheme` names (empty: [`default_schemes`]), parsed.
pub fn schemes(names: &[String]) -> anyhow::Result<Vec<Scheme>> {
    let names = if names.is_empty() { default_schemes() } else { names.to_vec() };
    names.iter().map(|n| n.parse::<Scheme>().map_err(|e| anyhow!("--scheme {n}: {e}"))).collect()
}

/// `--op` names (empty: every op), parsed.
pub fn ops(names: &[String]) -> anyhow::Result<Vec<Op>> {
    if names.is_empty() {
        return Ok(Op::ALL.to_vec());
    }
    names
        .iter()
        .map(|o| {
            Op::parse(o).ok_or_else(|| {
                anyhow!(
                    "--op {o}: unknown op (ops: {})",
                    Op::ALL.iter().map(|o| o.name()).collect::<Vec<_>>().join(", ")
                )
            })
        })
        .collect()
}

/// The `--inject` name, parsed.
pub fn fault(name: Option<&str>) -> anyhow::Result<Option<Fault>> {
    name.map(|name| {
        Fault::parse(name).ok_or_else(|| {
            anyhow!(
                "--inject {name}: unknown fault (faults: {})",
                Fault::ALL.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
            )
        })
    })
    .transpose()
}

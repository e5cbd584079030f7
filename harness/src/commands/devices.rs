//! `qdiff devices [--json]`: `ref`, `cpu` and every GPU adapter found, with capabilities and probed
//! properties; when no GPU is found, why, and the command that fixes it.

use crate::Exit;
use std::io::Write;

/// Print the device list.
pub fn run(as_json: bool, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let listing = devices::list();
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&listing)?)?;
        return Ok(Exit::Clean);
    }
    for d in &listing.devices {
        writeln!(out, "{:<10} {:<7} {} | driver: {} | backend: {}", d.id, d.kind.name(), d.name, d.driver, d.backend)?;
        for (k, v) in &d.features {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            writeln!(out, "{:<10}   {k}: {v}", "")?;
        }
    }
    for n in &listing.notes {
        writeln!(out, "note: {n}")?;
    }
    Ok(Exit::Clean)
}

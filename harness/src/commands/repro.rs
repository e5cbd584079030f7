//! `qdiff repro CASE.json [--device ID]... [--json] [--export DIR]`: replay a case file on
//! devices (default: the one it was found on), judge it against the reference as `check` does,
//! and show the verdict now against the one recorded, the metrics and a side-by-side of the worst
//! elements with the code, scale and zero-point involved. Exit 1 while it still fails anywhere.
//!
//! `--export DIR` writes what a driver bug report needs to reproduce the case without qdiff,
//! from the first device that has kernels to hand over (the GPU runner): each kernel's WGSL and
//! SPIR-V, `export.json` with the bindings, uniform values, input bytes and the reference's
//! expected outputs, and `case.json`, the case file carrying that export.

use crate::casefile::{CaseFile, WorstElement};
use crate::exec::{expect, judge, open_executor, Executor, Isolation, Judgement};
use crate::worst::{fmt_f32, ranked, Delta, Ranked};
use crate::Exit;
use anyhow::{anyhow, bail, Context};
use devices::case::{OpCase, Outputs};
use devices::DeviceError;
use reports::{Metrics, Verdict};
use serde::Serialize;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `qdiff repro`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ReproArgs {
    /// The case file.
    pub case: PathBuf,
    /// Devices to replay on; repeatable. Default: the one it was found on.
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write the kernels (WGSL, SPIR-V), bindings and input buffers of the first device that has
    /// them to DIR, for reproducing the case outside qdiff.
    #[arg(long, value_name = "DIR")]
    pub export: Option<PathBuf>,
    /// How many of the worst elements to show per device.
    #[arg(long, default_value_t = 10)]
    pub worst: usize,
    /// Seconds a device may take on the case before it counts as hung (isolated workers).
    #[arg(long, default_value_t = 60.0)]
    pub case_timeout: f64,
}

/// One worst element with how far off it is, as `--json` prints it.
#[derive(Debug, Serialize)]
struct WorstJson {
    #[serde(flatten)]
    element: WorstElement,
    /// `{"int": Δ}`, `{"ulps": u}`, `{"ulps": u, "tolerance": t, "tolerance_ratio": r}` or
    /// `{"missing": true}`.
    difference: serde_json::Value,
    /// The same, for the table.
    #[serde(skip)]
    delta: Delta,
}

/// One device's replay.
#[derive(Debug, Serialize)]
struct DeviceReplay {
    device: String,
    name: String,
    driver: String,
    verdict: Verdict,
    recorded_verdict: Option<Verdict>,
    still_fails: bool,
    metrics: Option<Metrics>,
    note: Option<String>,
    device_seconds: Option<f64>,
    worst: Vec<WorstJson>,
}

/// What `--export` wrote.
#[derive(Debug, Serialize)]
struct ExportReport {
    dir: PathBuf,
    device: Option<String>,
    files: Vec<String>,
    note: Option<String>,
}

/// Run `qdiff repro`.
pub fn run(args: ReproArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let path = &args.case;
    let (cf, case) = CaseFile::read(path)?;
    if !(args.case_timeout > 0.0 && args.case_timeout.is_finite()) {
        bail!("--case-timeout {}: a positive number of seconds", args.case_timeout);
    }
    let recorded_on = cf.found_on.as_ref().map(|d| d.id.clone());
    let ids: Vec<String> = if args.devices.is_empty() {
        match &recorded_on {
            Some(id) => vec![id.clone()],
            None => {
                bail!("{}: found_on: absent, so there is no default device; name one with --device", path.display())
            }
        }
    } else {
        args.devices.clone()
    };

    // Every device is opened before anything runs or is written: a missing one is exit 2.
    let timeout = Duration::from_secs_f64(args.case_timeout);
    let mut executors: Vec<Box<dyn Executor>> = Vec::new();
    for id in &ids {
        let ex = open_executor(id, Isolation::Auto, timeout).map_err(|e| match e {
            DeviceError::NotFound { .. } if args.devices.is_empty() => anyhow!(
                "{}: the case was found on `{id}`, which this machine does not have ({e}); replay it elsewhere with --device",
                path.display()
            ),
            e => anyhow!("--device {id}: {e}"),
        })?;
        executors.push(ex);
    }

    // The export describes launches without making them, and is written before the replay: a
    // case that takes the process down must still leave its reproduction behind.
    let expectation = expect(&case);
    let mut exported_value = None;
    let export_report = match &args.export {
        None => None,
        Some(dir) => Some(match first_export(&ids, &case)? {
            Some((device, value)) => {
                let files = write_export(dir, &cf, &case, &expectation.expected, &value)
                    .with_context(|| format!("--export {}", dir.display()))?;
                exported_value = Some(value);
                ExportReport { dir: dir.clone(), device: Some(device), files, note: None }
            }
            None => ExportReport {
                dir: dir.clone(),
                device: None,
                files: Vec::new(),
                note: Some(format!(
                    "nothing exported: none of {} has kernels to hand over (only GPU devices do; cpu and ref run qdiff's own Rust code)",
                    ids.join(", ")
                )),
            },
        }),
    };

    let mut replays = Vec::new();
    let mut ranked_first: Option<Vec<Ranked>> = None;
    for ex in executors.iter_mut() {
        let info = ex.info().clone();
        // As in `check`: the reference is the emulation itself, and commits no fault.
        let device_case = if info.id == "ref" { OpCase { inject: None, ..case.clone() } } else { case.clone() };
        let got = ex.execute(&device_case);
        let (j, outputs): (Judgement, Option<Outputs>) = judge(&case, &expectation, got);
        let worst = match (&expectation.expected, &outputs) {
            (Ok(expected), Some(found)) => ranked(&case, expected, found, args.worst),
            _ => Vec::new(),
        };
        if ranked_first.is_none() {
            ranked_first = Some(worst.clone());
        }
        let recorded_verdict =
            if recorded_on.as_deref() == Some(info.id.as_str()) || args.devices.is_empty() { cf.verdict } else { None };
        replays.push(DeviceReplay {
            device: info.id.clone(),
            name: info.name.clone(),
            driver: info.driver.clone(),
            verdict: j.verdict,
            recorded_verdict,
            still_fails: j.verdict.falls_short(),
            metrics: j.metrics,
            note: j.note,
            device_seconds: j.device_seconds,
            worst: worst
                .into_iter()
                .map(|r| WorstJson { difference: difference_json(&r.delta), delta: r.delta, element: r.element })
                .collect(),
        });
    }

    // The exported case file gains the worst elements of the first replay.
    if let (Some(x), Some(value)) = (&export_report, exported_value) {
        let worst: Vec<WorstElement> = ranked_first.unwrap_or_default().into_iter().map(|r| r.element).collect();
        if !worst.is_empty() {
            let with_worst = CaseFile { export: Some(value), worst, ..cf.clone() };
            with_worst.write(&x.dir.join("case.json")).with_context(|| format!("--export {}", x.dir.display()))?;
        }
    }

    let still_fails = replays.iter().any(|r| r.still_fails);
    if args.json {
        let v = serde_json::json!({
            "case": path,
            "op": cf.op,
            "scheme": cf.scheme,
            "shape": cf.shape,
            "seed": cf.seed,
            "variant": cf.variant,
            "inject": cf.inject,
            "recorded": {
                "device": recorded_on,
                "verdict": cf.verdict,
                "metrics": cf.metrics,
                "note": cf.note,
            },
            "devices": replays,
            "still_fails": still_fails,
            "export": export_report,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        print_text(out, path, &cf, &replays, export_report.as_ref())?;
    }
    Ok(if still_fails { Exit::FellShort } else { Exit::Clean })
}

/// The first device of `ids` that exports the case, with its export. Opened directly (not
/// through an executor): exporting launches nothing, so there is nothing to isolate.
fn first_export(ids: &[String], case: &OpCase) -> anyhow::Result<Option<(String, serde_json::Value)>> {
    for id in ids {
        let mut dev = devices::open(id).map_err(|e| anyhow!("--device {id}: {e}"))?;
        if let Some(v) = dev.export(case) {
            return Ok(Some((dev.info().id.clone(), v)));
        }
    }
    Ok(None)
}

fn difference_json(d: &Delta) -> serde_json::Value {
    use serde_json::json;
    let num = |v: f64| if v.is_finite() { json!(v) } else { json!("Infinity") };
    match *d {
        Delta::Int(i) => json!({ "int": i64::try_from(i).map_or_else(|_| json!(i as f64), |v| json!(v)) }),
        Delta::Side { ulps } => json!({ "ulps": num(ulps) }),
        Delta::Value { ulps, tolerance, ratio } => {
            json!({ "ulps": num(ulps), "tolerance": tolerance, "tolerance_ratio": num(ratio) })
        }
        Delta::Missing => json!({ "missing": true }),
    }
}

/// A count of ulps for people.
fn fmt_ulps(u: f64) -> String {
    if !u.is_finite() {
        "inf ulp".into()
    } else if u >= 1e5 {
        format!("{u:.2e} ulp")
    } else if (u - u.round()).abs() < 1e-6 {
        format!("{u:.0} ulp")
    } else {
        format!("{u:.2} ulp")
    }
}

fn fmt_difference(d: &Delta) -> String {
    match *d {
        Delta::Int(i) => format!("int {i:+}"),
        Delta::Side { ulps } => format!("{} (bit-exact needed)", fmt_ulps(ulps)),
        Delta::Value { ulps, tolerance: 0.0, .. } => format!("{} (tolerance 0)", fmt_ulps(ulps)),
        Delta::Value { ulps, ratio, .. } if ratio.is_infinite() => format!("{} (non-finite)", fmt_ulps(ulps)),
        Delta::Value { ulps, ratio, .. } => format!("{}, {ratio:.3}× tol", fmt_ulps(ulps)),
        Delta::Missing => "missing".into(),
    }
}

/// A JSON element value for people (floats short, as they read back).
fn fmt_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        serde_json::Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), |f| fmt_f32(f as f32)),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn fmt_metrics(m: &Metrics) -> String {
    format!(
        "bit-exact {:.2}%, max {}, tolerance ratio {}, int mismatches {}, side mismatches {}; vs fp32 truth: nmse {:.3e}, cosine {:.6}, max abs err {:.3e}",
        m.bit_exact_fraction * 100.0,
        fmt_ulps(m.max_ulp),
        if m.tolerance_ratio.is_finite() { format!("{:.3}", m.tolerance_ratio) } else { "inf".into() },
        m.int_mismatches,
        m.side_mismatches,
        m.nmse,
        m.cosine,
        m.max_abs_err
    )
}

fn print_text(
    out: &mut dyn Write,
    path: &Path,
    cf: &CaseFile,
    replays: &[DeviceReplay],
    export: Option<&ExportReport>,
) -> anyhow::Result<()> {
    writeln!(out, "case {}", path.display())?;
    writeln!(
        out,
        "  {} {} shape {:?} seed {} variant {}{}",
        cf.op,
        cf.scheme,
        cf.shape,
        cf.seed,
        cf.variant.label(),
        cf.inject.map_or(String::new(), |f| format!(" inject {}", f.name()))
    )?;
    match (&cf.found_on, cf.verdict) {
        (Some(d), Some(v)) => writeln!(out, "  recorded: {} on {} ({}, {})", v.name(), d.id, d.name, d.driver)?,
        (Some(d), None) => writeln!(out, "  recorded: found on {} ({}), no verdict recorded", d.id, d.name)?,
        (None, Some(v)) => writeln!(out, "  recorded: {}", v.name())?,
        (None, None) => writeln!(out, "  recorded: nothing")?,
    }
    if let Some(n) = &cf.note {
        writeln!(out, "  recorded note: {n}")?;
    }
    for r in replays {
        writeln!(out)?;
        let status = if r.still_fails {
            "still fails"
        } else if r.verdict == Verdict::Unsupported {
            "not run here"
        } else if r.recorded_verdict.is_some_and(|v| v.falls_short()) {
            "now passes"
        } else {
            "passes"
        };
        let recorded = r.recorded_verdict.map_or(String::new(), |v| format!(" (recorded: {})", v.name()));
        writeln!(out, "{} ({}, {}): {}{recorded}: {status}", r.device, r.name, r.driver, r.verdict.name())?;
        if let Some(m) = &r.metrics {
            writeln!(out, "  metrics: {}", fmt_metrics(m))?;
        }
        if let Some(n) = &r.note {
            writeln!(out, "  note: {n}")?;
        }
        if r.worst.is_empty() {
            continue;
        }
        writeln!(out, "  worst {} element(s), worst first:", r.worst.len())?;
        print_table(out, r)?;
    }
    if let Some(x) = export {
        writeln!(out)?;
        match (&x.device, &x.note) {
            (Some(d), _) => {
                writeln!(out, "export from {d} -> {}: {}", x.dir.display(), x.files.join(", "))?;
            }
            (None, Some(n)) => writeln!(out, "export: {n}")?,
            (None, None) => {}
        }
    }
    Ok(())
}

/// The side-by-side table of one device's worst elements.
fn print_table(out: &mut dyn Write, r: &DeviceReplay) -> anyhow::Result<()> {
    let head = ["output", "index [position]", "expected", "found", "difference", "context"];
    let rows: Vec<[String; 6]> = r
        .worst
        .iter()
        .map(|w| {
            let e = &w.element;
            let at = if e.at.is_empty() {
                String::new()
            } else {
                format!(" [{}]", e.at.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", "))
            };
            [
                e.output.clone(),
                format!("{}{at}", e.index),
                fmt_value(&e.expected),
                fmt_value(&e.found),
                difference_text(&w.delta, &e.expected, &e.found),
                e.context.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for row in &rows {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 6]| -> String {
        let mut s = String::from("   ");
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!(" {c:<w$} ", w = width[i]));
            }
        }
        s.trim_end().to_string()
    };
    writeln!(out, "{}", line(head))?;
    for row in &rows {
        writeln!(out, "{}", line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]))?;
    }
    Ok(())
}

/// The difference column: `found − expected` and what it amounts to (ulps, tolerances).
fn difference_text(d: &Delta, expected: &serde_json::Value, found: &serde_json::Value) -> String {
    let text = fmt_difference(d);
    match (d, expected.as_f64(), found.as_f64()) {
        (Delta::Value { .. } | Delta::Side { .. }, Some(e), Some(f)) => {
            let diff = (f as f32 as f64) - (e as f32 as f64);
            let sign = if diff < 0.0 { "-" } else { "+" };
            format!("{sign}{} = {text}", fmt_f32(diff.abs() as f32))
        }
        _ => text,
    }
}

/// Write `<DIR>/<kernel>.wgsl`, `<kernel>.spv`, `export.json` and `case.json`; returns the file
/// names. Each file is written whole or not at all.
fn write_export(
    dir: &Path,
    cf: &CaseFile,
    case: &OpCase,
    expected: &Result<Outputs, DeviceError>,
    export: &serde_json::Value,
) -> anyhow::Result<Vec<String>> {
    let mut files = Vec::new();
    let mut used = BTreeSet::new();
    let mut manifest = export.clone();
    let programs = manifest.get_mut("programs").and_then(|p| p.as_array_mut()).map(std::mem::take).unwrap_or_default();
    let mut out_programs = Vec::new();
    for mut prog in programs {
        if let Some(ds) = prog.get_mut("dispatches").and_then(|d| d.as_array_mut()) {
            for d in ds.iter_mut() {
                let entry = d.get("entry").and_then(|e| e.as_str()).unwrap_or("kernel").to_string();
                let mut stem = crate::casefile::file_name_safe(&entry);
                let mut n = 2;
                while !used.insert(stem.clone()) {
                    stem = format!("{}-{n}", crate::casefile::file_name_safe(&entry));
                    n += 1;
                }
                let obj = d.as_object_mut().ok_or_else(|| anyhow!("internal: a dispatch is not an object"))?;
                if let Some(wgsl) = obj.remove("wgsl").and_then(|v| v.as_str().map(str::to_string)) {
                    let name = format!("{stem}.wgsl");
                    reports::write_atomic(&dir.join(&name), wgsl.as_bytes())?;
                    obj.insert("wgsl_file".into(), name.clone().into());
                    files.push(name);
                }
                if let Some(hex) = obj.remove("spirv_words_hex").and_then(|v| v.as_str().map(str::to_string)) {
                    let bytes =
                        spirv_bytes(&hex).ok_or_else(|| anyhow!("internal: malformed SPIR-V words of {entry}"))?;
                    let name = format!("{stem}.spv");
                    reports::write_atomic(&dir.join(&name), &bytes)?;
                    obj.insert("spv_file".into(), name.clone().into());
                    files.push(name);
                }
            }
        }
        out_programs.push(prog);
    }
    manifest["programs"] = out_programs.into();
    manifest["expected"] = expected_json(expected);
    manifest["case"] = serde_json::json!({
        "op": case.op,
        "scheme": case.scheme.to_string(),
        "shape": cf.shape,
        "seed": cf.seed,
        "case_file": "case.json",
    });
    reports::write_atomic(&dir.join("export.json"), serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    files.push("export.json".into());

    // The case file itself, carrying the full export (sources inline).
    let mut with_export = cf.clone();
    with_export.export = Some(export.clone());
    with_export.write(&dir.join("case.json"))?;
    files.push("case.json".into());
    Ok(files)
}

/// The reference's outputs, to compare the read-back buffers with: floats as the hex of their
/// little-endian bytes, as the buffers hold them.
fn expected_json(expected: &Result<Outputs, DeviceError>) -> serde_json::Value {
    let hex = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).map(|b| format!("{b:02x}")).collect::<String>();
    match expected {
        Ok(o) => serde_json::json!({
            "note": "qdiff's reference (exact emulation), by qdiff output name (devices::case::Outputs): `values` is the op's result (the `out`, `y` or `xh` buffer), floats as little-endian f32 bytes in hex",
            "values_shape": o.shape,
            "values_hex": hex(&o.values),
            "ints": o.ints,
            "floats_hex": o.floats.iter().map(|(k, v)| (k.clone(), hex(v))).collect::<std::collections::BTreeMap<_, _>>(),
        }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

/// SPIR-V words (8 hex digits each, most significant first) as the little-endian bytes of a
/// `.spv` file.
fn spirv_bytes(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 8 != 0 || !hex.is_ascii() {
        return None;
    }
    let mut out = Vec::with_capacity(hex.len() / 2);
    for i in (0..hex.len()).step_by(8) {
        let w = u32::from_str_radix(&hex[i..i + 8], 16).ok()?;
        out.extend_from_slice(&w.to_le_bytes());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spirv_words_become_little_endian_bytes() {
        assert_eq!(spirv_bytes("07230203").unwrap(), vec![0x03, 0x02, 0x23, 0x07]);
        assert!(spirv_bytes("0723020").is_none());
        assert!(spirv_bytes("0723020z").is_none());
    }

    #[test]
    fn differences_read_the_way_people_count() {
        assert_eq!(fmt_difference(&Delta::Int(-3)), "int -3");
        assert_eq!(
            fmt_difference(&Delta::Value { ulps: 2.0, tolerance: 0.0, ratio: f64::INFINITY }),
            "2 ulp (tolerance 0)"
        );
        assert_eq!(fmt_difference(&Delta::Value { ulps: 1.0, tolerance: 1e-3, ratio: 0.5 }), "1 ulp, 0.500× tol");
        let d = Delta::Value { ulps: 4.0, tolerance: 0.0, ratio: f64::INFINITY };
        assert_eq!(difference_text(&d, &serde_json::json!(1.0), &serde_json::json!(0.5)), "-0.5 = 4 ulp (tolerance 0)");
        assert_eq!(difference_text(&Delta::Int(7), &serde_json::json!(1), &serde_json::json!(8)), "int +7");
        assert_eq!(difference_json(&Delta::Int(7)), serde_json::json!({"int": 7}));
    }
}

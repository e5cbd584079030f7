//! `qdiff repro` end to end: a case file written by `qdiff check` for an injected fault replays
//! as a failure (exit 1) with its worst elements located and explained; without the fault it
//! passes (exit 0); malformed case files are refused with exit 2 and one line naming the problem;
//! and on Vulkan `--export` writes a kernel and data a harness outside qdiff can rebuild.

use qdiff_e2e::{has_vulkan, qdiff, scratch};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A failing `dequantize q4_0` case file made by `qdiff check` with nibble-swap on cpu.
fn failing_case(name: &str) -> PathBuf {
    let dir = scratch(name);
    let run = qdiff(&[
        "check",
        "--device",
        "cpu",
        "--inject",
        "nibble-swap",
        "--scheme",
        "q4_0",
        "--op",
        "dequantize",
        "--cases",
        "2",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "check with a fault falls short; stderr: {}", run.stderr);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir.join("cases"))
        .expect("check writes cases/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    cases.sort();
    cases.into_iter().next().expect("a case file for the mismatch")
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Write `v` next to `like` under a new name.
fn write_variant(like: &Path, name: &str, text: &str) -> PathBuf {
    let p = like.with_file_name(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_failing_case_still_fails_and_shows_its_worst_elements() {
    let case = failing_case("repro-fails");
    let run = qdiff(&["repro", case.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.code, 1, "stdout:\n{stdout}\nstderr:\n{}", run.stderr);
    assert!(stdout.contains("cpu") && stdout.contains("mismatch (recorded: mismatch): still fails"), "{stdout}");
    assert!(stdout.contains("worst 10 element(s)"), "{stdout}");
    for col in ["output", "index [position]", "expected", "found", "difference", "context"] {
        assert!(stdout.contains(col), "table column `{col}` missing:\n{stdout}");
    }
    // Rows name the element's row, column and group, the code and the group scale.
    let row = stdout.lines().find(|l| l.trim_start().starts_with("values ")).expect("a values row");
    assert!(row.contains("w[") && row.contains(" code ") && row.contains("group ") && row.contains(" scale "), "{row}");
    assert!(row.contains("ulp (tolerance 0)"), "{row}");

    let run = qdiff(&["repro", case.to_str().unwrap(), "--json", "--worst", "4"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let v: Value = serde_json::from_slice(&run.stdout).expect("--json prints one JSON object");
    assert_eq!(v["still_fails"], true);
    assert_eq!(v["recorded"]["verdict"], "mismatch");
    let d = &v["devices"][0];
    assert_eq!(
        (d["device"].as_str(), d["verdict"].as_str(), d["recorded_verdict"].as_str()),
        (Some("cpu"), Some("mismatch"), Some("mismatch"))
    );
    let worst = d["worst"].as_array().unwrap();
    assert_eq!(worst.len(), 4);
    for w in worst {
        assert_eq!(w["output"], "values");
        let at = w["at"].as_array().unwrap();
        assert_eq!(at.len(), 3, "row, column, group: {w}");
        let (r, c, g) = (at[0].as_u64().unwrap(), at[1].as_u64().unwrap(), at[2].as_u64().unwrap());
        assert_eq!(g, c / 32, "q4_0 groups are 32 wide: {w}");
        assert!(w["context"].as_str().unwrap().starts_with(&format!("w[{r},{c}] code ")), "{w}");
        assert_eq!(w["difference"]["tolerance"], 0.0);
    }
}

#[test]
fn without_the_fault_the_case_now_passes() {
    let case = failing_case("repro-passes");
    let mut v = read_json(&case);
    v["inject"] = Value::Null;
    let fixed = write_variant(&case, "no-fault.json", &serde_json::to_string_pretty(&v).unwrap());
    let run = qdiff(&["repro", fixed.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.code, 0, "stdout:\n{stdout}\nstderr:\n{}", run.stderr);
    assert!(stdout.contains("exact (recorded: mismatch): now passes"), "{stdout}");
    assert!(!stdout.contains("element(s), worst first"), "{stdout}");
    // On the reference and cpu together, still clean.
    let run = qdiff(&["repro", fixed.to_str().unwrap(), "--device", "ref", "--device", "cpu", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let j: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(j["devices"].as_array().unwrap().len(), 2);
    assert_eq!(j["still_fails"], false);
}

#[test]
fn malformed_case_files_are_refused_with_one_line_naming_the_problem() {
    let case = failing_case("repro-malformed");
    let text = std::fs::read_to_string(&case).unwrap();
    let good = read_json(&case);

    let mut bad_hex = good.clone();
    bad_hex["inputs"]["wq"]["scales"]["bits"][1] = "zz00zz00".into();
    let mut unknown_field = good.clone();
    unknown_field["colour"] = "blue".into();
    let mut unknown_scheme = good.clone();
    unknown_scheme["scheme"] = "q5_7".into();
    let mut unknown_device = good.clone();
    unknown_device["found_on"]["id"] = "vulkan:7".into();
    let cases = [
        ("bad-hex.json", serde_json::to_string(&bad_hex).unwrap(), "inputs.wq.scales.bits[1]"),
        ("unknown-field.json", serde_json::to_string(&unknown_field).unwrap(), "unknown field `colour`"),
        ("truncated.json", text[..text.len() / 2].to_string(), "EOF while parsing"),
        ("unknown-scheme.json", serde_json::to_string(&unknown_scheme).unwrap(), "scheme:"),
        ("not-here.json", serde_json::to_string(&unknown_device).unwrap(), "vulkan:7"),
    ];
    for (name, body, names) in cases {
        let p = write_variant(&case, name, &body);
        let run = qdiff(&["repro", p.to_str().unwrap()]);
        assert_eq!(run.code, 2, "{name}: stdout {}", String::from_utf8_lossy(&run.stdout));
        assert!(run.stdout.is_empty(), "{name}: nothing on stdout");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{name}: one line on stderr: {}", run.stderr);
        assert!(lines[0].starts_with("qdiff: error: "), "{name}: {}", lines[0]);
        assert!(lines[0].contains(name), "{name}: the file is named: {}", lines[0]);
        assert!(lines[0].contains(names), "{name}: `{names}` is named: {}", lines[0]);
    }
    // A device this machine lacks, asked for by name.
    let run = qdiff(&["repro", case.to_str().unwrap(), "--device", "metal:3"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--device metal:3"), "{}", run.stderr);
}

#[test]
fn vulkan_exports_the_kernel_its_bindings_and_its_buffers() {
    if !has_vulkan() {
        return;
    }
    let case = failing_case("repro-export");
    let dir = scratch("repro-export-out");
    let run = qdiff(&["repro", case.to_str().unwrap(), "--device", "vulkan", "--export", dir.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    // nibble-swap bites on the GPU runner too: the replay still fails there.
    assert_eq!(run.code, 1, "stdout:\n{stdout}\nstderr:\n{}", run.stderr);
    assert!(stdout.contains("export from vulkan:0"), "{stdout}");

    let wgsl = std::fs::read_to_string(dir.join("dequant.wgsl")).expect("dequant.wgsl written");
    let module = naga::front::wgsl::parse_str(&wgsl).unwrap_or_else(|e| panic!("{}", e.emit_to_string(&wgsl)));
    assert!(module.entry_points.iter().any(|e| e.name == "dequant"));
    assert!(wgsl.contains("const F_SWAP: u32 = 1u;"), "the injected fault is part of the exported kernel");
    let spv = std::fs::read(dir.join("dequant.spv")).expect("dequant.spv written");
    assert!(spv.len() > 20 && spv.len() % 4 == 0);
    assert_eq!(u32::from_le_bytes(spv[..4].try_into().unwrap()), 0x0723_0203, "SPIR-V magic");

    let e = read_json(&dir.join("export.json"));
    assert_eq!(e["qdiff_export"], 1);
    assert_eq!(e["device"]["id"], "vulkan:0");
    let prog = &e["programs"][0];
    let d = &prog["dispatches"][0];
    assert_eq!(
        (d["entry"].as_str(), d["wgsl_file"].as_str(), d["spv_file"].as_str()),
        (Some("dequant"), Some("dequant.wgsl"), Some("dequant.spv"))
    );
    assert_eq!(d["passthrough"], false);
    let wg = d["workgroup_size"][0].as_u64().unwrap();
    let groups = d["dispatch"][0].as_u64().unwrap();
    assert!(groups * wg >= d["invocations"].as_u64().unwrap());
    // Bindings: the uniform at 0, then every resource the kernel declares, in order.
    let bindings = d["bindings"].as_array().unwrap();
    assert_eq!(bindings[0]["type"], "uniform_buffer");
    for (i, b) in bindings.iter().enumerate() {
        assert_eq!(b["binding"], i);
        assert_eq!(b["group"], 0);
        let decl = format!("@group(0) @binding({i}) var");
        assert!(wgsl.contains(&decl), "binding {i} ({}) is declared in the WGSL", b["resource"]);
    }
    // Buffers: every input with its bytes, sized as bound; the output to read back.
    let resources = prog["resources"].as_array().unwrap();
    for b in bindings.iter().skip(1) {
        let r = resources.iter().find(|r| r["name"] == b["resource"]).expect("every binding has a resource");
        assert_eq!(r["size_bytes"], b["size_bytes"]);
        if r["role"] == "input" {
            assert_eq!(r["data_hex"].as_str().unwrap().len() as u64, 2 * r["size_bytes"].as_u64().unwrap());
        }
    }
    assert!(resources.iter().any(|r| r["name"] == "w" && r["role"] == "input"));
    assert!(resources.iter().any(|r| r["role"] == "output" && r["read_back"] == true));
    let params = &prog["params"];
    assert_eq!(params["data_hex"].as_str().unwrap().len() as u64, 2 * params["size_bytes"].as_u64().unwrap());
    assert!(params["fields"].as_array().unwrap().iter().any(|f| f["name"] == "K" && f["value"].as_u64().unwrap() > 0));
    assert!(e["expected"]["values_hex"].as_str().is_some_and(|h| !h.is_empty()));

    // The case file written beside them carries the export and replays as the original does.
    let cf = read_json(&dir.join("case.json"));
    assert_eq!(cf["export"]["qdiff_export"], 1);
    assert!(cf["worst"].as_array().is_some_and(|w| !w.is_empty()), "the worst elements of the replay are kept");
    assert!(cf["export"]["programs"][0]["dispatches"][0]["wgsl"].as_str().is_some_and(|s| s.contains("fn dequant")));
    let again = qdiff(&["repro", dir.join("case.json").to_str().unwrap()]);
    assert_eq!(again.code, 1, "{}", again.stderr);
}

#[test]
fn devices_without_kernels_export_nothing_and_say_so() {
    let case = failing_case("repro-export-cpu");
    let dir = scratch("repro-export-cpu-out");
    let run = qdiff(&["repro", case.to_str().unwrap(), "--export", dir.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("export: nothing exported"), "{stdout}");
    assert!(!dir.exists(), "nothing written");
}

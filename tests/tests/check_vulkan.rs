//! `qdiff check` on the first Vulkan adapter (lavapipe in CI): every op x scheme family of the
//! default list, buffer and texture storage, with no mismatch. Without an adapter the test is
//! skipped with the reason and the command that fixes it, unless `QDIFF_REQUIRE_VULKAN=1` (set by
//! `.ci/run`), where a missing adapter fails it.

use qdiff_e2e::{has_vulkan, qdiff, scratch};
use serde_json::Value;

#[test]
fn vulkan_runs_every_family_with_no_mismatch() {
    if !has_vulkan() {
        return;
    }
    let dir = scratch("check-vulkan-all");
    let run = qdiff(&[
        "check",
        "--device",
        "vulkan",
        "--cases",
        "1",
        "--seed",
        "3",
        "--storage",
        "buffer",
        "--storage",
        "texture",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.code, 0, "stdout:\n{stdout}\nstderr:\n{}", run.stderr);
    let r: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(r["summary"]["mismatch"], 0);
    assert_eq!(r["summary"]["error"], 0);
    let dev = r["devices"].as_array().unwrap().iter().find(|d| d["kind"] == "vulkan").expect("vulkan device recorded");
    assert!(dev["driver"].as_str().is_some_and(|s| !s.is_empty()));
    // The -vk activation path's integer outputs are exact: act_quant and 8da4w linear ran and
    // matched, on both storages.
    for (op, scheme) in [("act_quant", "a8-pt-asym-vk"), ("linear", "8da4w-vk")] {
        for storage in ["buffer", "texture"] {
            let ran = r["op_results"].as_array().unwrap().iter().any(|o| {
                o["op"] == op
                    && o["scheme"] == scheme
                    && o["variant"]["storage"] == storage
                    && (o["verdict"] == "exact" || o["verdict"] == "within_tolerance")
                    && o["metrics"]["int_mismatches"] == 0
            });
            assert!(ran, "{op} {scheme} on {storage} storage did not run clean on vulkan");
        }
    }
}

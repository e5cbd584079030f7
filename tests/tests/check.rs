//! `qdiff check` end to end: the cpu runner against the reference over every scheme family, each
//! injected fault caught as a `mismatch` with exit 1, bad arguments refused with exit 2 and nothing
//! written, and the results.json schema of cli.md.

use qdiff_e2e::{qdiff, scratch, vulkan_required};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

fn results(dir: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(dir.join("results.json")).expect("results.json written");
    serde_json::from_str(&text).expect("results.json parses")
}

#[test]
fn cpu_covers_every_family_with_no_mismatch() {
    let dir = scratch("check-cpu-all");
    let run = qdiff(&["check", "--device", "cpu", "--cases", "2", "--seed", "7", "--out", dir.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.code, 0, "stdout:\n{stdout}\nstderr:\n{}", run.stderr);
    let r = results(&dir);
    assert_eq!(r["schema_version"], 1);
    assert_eq!(r["summary"]["mismatch"], 0);
    assert_eq!(r["summary"]["error"], 0);
    // Every family (by its first example) ran at least one op for real on cpu.
    let mut ran: BTreeSet<String> = BTreeSet::new();
    for o in r["op_results"].as_array().unwrap() {
        assert_eq!(o["device"], "cpu");
        for key in ["case_id", "op", "scheme", "variant", "shape", "seed", "verdict"] {
            assert!(o.get(key).is_some(), "op result without `{key}`: {o}");
        }
        let v = o["verdict"].as_str().unwrap();
        if v == "exact" || v == "within_tolerance" {
            ran.insert(o["scheme"].as_str().unwrap().to_string());
            let m = &o["metrics"];
            for key in ["bit_exact_fraction", "max_ulp", "max_abs_err", "nmse", "cosine", "int_mismatches"] {
                assert!(m.get(key).is_some(), "metrics without `{key}`: {m}");
            }
        } else {
            assert_eq!(v, "unsupported");
            assert!(o["note"].as_str().is_some_and(|n| !n.is_empty()), "an unsupported result says why: {o}");
        }
    }
    for f in kernels_ref::scheme::name::families() {
        assert!(
            f.examples.iter().any(|e| ran.contains(*e)),
            "family {} never ran on cpu (examples {:?})",
            f.pattern,
            f.examples
        );
    }
    assert!(r["devices"].as_array().unwrap().iter().any(|d| d["id"] == "cpu"));
    assert!(stdout.contains("cases/s"), "{stdout}");
}

/// Each fault, on schemes it applies to: every scheme listed must show at least one `mismatch`, and
/// the run exits 1.
#[test]
fn every_injected_fault_is_caught_on_cpu() {
    let plan: [(&str, &[&str], &[&str]); 5] = [
        (
            "zp-bind-int8",
            &["8da4w-vk-zpf32", "8da4w-ao", "a8-pt-asym-vk-zpf32", "a8-pt-asym-ao"],
            &["linear", "act_quant"],
        ),
        ("zp-bind-f16", &["8da4w-vk", "8da4w-xnn", "a8-pt-asym-vk", "a8-pt-asym-xnn"], &["linear", "act_quant"]),
        (
            "nibble-swap",
            &["q4_0", "q4_1", "w4g32-sym8", "w4g32-fzp", "w4g32-mlx-cpu", "8da4w-vk", "w4g32-symclip"],
            &["dequantize", "linear", "embedding"],
        ),
        (
            "scale-transpose",
            &["w4g32-sym-ao", "w8g32-sym-ao", "q4_0", "w4g32-mlx-gpu", "8da4w-vk"],
            &["dequantize", "linear", "embedding"],
        ),
        (
            "drop-last-group",
            &["w4g32-sym-ao", "q8_0", "q4_K", "w4g32-asym-coreml", "8da4w-xnn"],
            &["dequantize", "linear", "embedding"],
        ),
    ];
    for (fault, schemes, ops) in plan {
        let dir = scratch(&format!("check-inject-{fault}"));
        let mut args =
            vec!["check", "--device", "cpu", "--cases", "4", "--inject", fault, "--out", dir.to_str().unwrap()];
        for s in schemes {
            args.extend(["--scheme", s]);
        }
        for o in ops {
            args.extend(["--op", o]);
        }
        let run = qdiff(&args);
        assert_eq!(run.code, 1, "{fault}: exit {}\n{}", run.code, String::from_utf8_lossy(&run.stdout));
        let r = results(&dir);
        let mut caught: BTreeMap<String, usize> = BTreeMap::new();
        for o in r["op_results"].as_array().unwrap() {
            assert_eq!(o["inject"], fault);
            if o["verdict"] == "mismatch" {
                *caught.entry(o["scheme"].as_str().unwrap().to_string()).or_default() += 1;
                let file = o["case_file"].as_str().expect("a mismatch has a case file");
                assert!(dir.join(file).is_file(), "{file}");
            }
            assert_ne!(o["verdict"], "error", "{o}");
        }
        for s in schemes {
            let canon: kernels_ref::scheme::Scheme = s.parse().unwrap();
            assert!(caught.contains_key(&canon.to_string()), "{fault} not caught on {s}: {caught:?}");
        }
    }
}

#[test]
fn a_fault_that_cannot_bite_is_reported_not_passed() {
    let dir = scratch("check-inject-na");
    let run = qdiff(&[
        "check",
        "--device",
        "cpu",
        "--cases",
        "1",
        "--inject",
        "nibble-swap",
        "--scheme",
        "w8pc-sym-ao",
        "--op",
        "dequantize",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0);
    let r = results(&dir);
    let o = &r["op_results"][0];
    assert_eq!(o["verdict"], "unsupported");
    assert!(o["note"].as_str().unwrap().contains("does not apply"), "{o}");
}

#[test]
fn bad_arguments_exit_2_with_one_line_and_write_nothing() {
    for (args, needle) in [
        (vec!["--scheme", "w4g33x-nope"], "--scheme w4g33x-nope"),
        (vec!["--op", "conv"], "--op conv: unknown op"),
        (vec!["--inject", "bitflip"], "--inject bitflip: unknown fault"),
        (vec!["--device", "tpu"], "--device tpu"),
        (vec!["--cases", "0"], "--cases 0"),
    ] {
        let dir = scratch("check-bad");
        let mut full = vec!["check", "--out", dir.to_str().unwrap()];
        full.extend(args.iter().copied());
        let run = qdiff(&full);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
        assert!(!dir.exists(), "{args:?} wrote {}", dir.display());
    }
}

#[test]
fn the_same_seed_gives_the_same_cases_and_results() {
    let mut runs = Vec::new();
    for name in ["check-seed-a", "check-seed-b"] {
        let dir = scratch(name);
        let run = qdiff(&[
            "check",
            "--device",
            "cpu",
            "--cases",
            "3",
            "--seed",
            "42",
            "--scheme",
            "8da4w-vk",
            "--scheme",
            "q4_K",
            "--out",
            dir.to_str().unwrap(),
        ]);
        assert_eq!(run.code, 0);
        let mut r = results(&dir);
        for o in r["op_results"].as_array_mut().unwrap() {
            o.as_object_mut().unwrap().remove("device_seconds");
        }
        runs.push((r["op_results"].clone(), r["summary"].clone()));
    }
    assert_eq!(runs[0], runs[1]);
}

#[test]
fn devices_lists_ref_and_cpu_and_says_why_a_gpu_is_missing() {
    let run = qdiff(&["devices", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: Value = serde_json::from_slice(&run.stdout).unwrap();
    let ids: Vec<&str> = v["devices"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(&ids[..2], &["ref", "cpu"]);
    let has_gpu = ids.iter().any(|i| i.starts_with("vulkan") || i.starts_with("metal"));
    if !has_gpu {
        assert!(!vulkan_required(), "QDIFF_REQUIRE_VULKAN=1 but no Vulkan adapter: {v}");
        let notes = v["notes"].as_array().unwrap();
        assert!(notes.iter().any(|n| n.as_str().unwrap().contains("apt-get install")), "{v}");
    }
    for d in v["devices"].as_array().unwrap() {
        for key in ["id", "kind", "name", "driver", "backend", "features"] {
            assert!(d.get(key).is_some(), "device without `{key}`: {d}");
        }
    }
}

//! The real `qdiff` binary as a process: exit codes, one-line errors on stderr, nothing on stdout
//! when it could not run, and the catalogue listing every family the issue names.

use std::path::PathBuf;
use std::process::{Command, Output};

fn qdiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qdiff")).args(args).output().expect("spawn qdiff")
}

fn tmp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qdiff-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Exit 2, exactly one line on stderr containing every needle, and an empty stdout.
fn assert_refused(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(out.stdout.is_empty(), "stdout not empty: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
}

#[test]
fn help_and_version_exit_zero() {
    for args in [&["--help"][..], &["--version"], &["quantize", "--help"], &["schemes", "--help"]] {
        let out = qdiff(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
}

#[test]
fn schemes_json_lists_every_family_of_the_catalogue() {
    let out = qdiff(&["schemes", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fams = doc["families"].as_array().unwrap();
    let patterns: Vec<&str> = fams.iter().map(|f| f["pattern"].as_str().unwrap()).collect();
    for want in [
        "sym-ao",
        "sym-nce-ao",
        "asym-ao",
        "symclip",
        "sym8",
        "fzp",
        "asym-coreml",
        "mlx-cpu",
        "mlx-gpu",
        "q4_0",
        "q4_1",
        "q8_0",
        "q4_K",
        "pal{n}-pt",
        "pal{n}g{C}",
        "pcs-col",
        "pcs-row",
        "a8-pt-asym-ao",
        "a8-pt-asym-decomp",
        "a8-pt-asym-etport",
        "a8-pt-asym-xnn",
        "a8-pt-asym-vk",
        "8da4w[g{G}]-ao",
        "8da4w[g{G}]-xnn",
        "8da4w[g{G}]-vk",
    ] {
        assert!(patterns.iter().any(|p| p.contains(want)), "no family for {want} in {patterns:?}");
    }
    for f in fams {
        let p = &f["params"];
        for key in [
            "arith_dtype",
            "op_form",
            "round_mode",
            "round_before_zp",
            "zp_rule",
            "eps_rule",
            "stored_scale_dtype",
            "quantize_with_stored_scale",
            "qmin",
            "qmax",
            "packing",
        ] {
            assert!(!p[key].is_null(), "{} lacks {key}", f["pattern"]);
        }
    }
    // The issue's examples of each family, with the zero-point dtype as a parameter.
    for name in
        ["w8g32-sym-ao", "w8pc-symclip", "w8g64-symclip", "8da4w-vk-zpf32", "8da4w-vk-zpf16@f16", "8da4w-xnn@bf16"]
    {
        let t = tmp(
            "one.json",
            r#"{"shape":[1,64],"data":[0.5,-0.25,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1]}"#,
        );
        let out = qdiff(&["quantize", "--scheme", name, "--input", t.to_str().unwrap(), "--json"]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn quantize_prints_the_cli_md_object() {
    let t = tmp(
        "ok.json",
        &format!(
            r#"{{"shape":[2,32],"data":[{}]}}"#,
            (0..64).map(|i| format!("{}", (i as f32 - 31.5) / 10.0)).collect::<Vec<_>>().join(",")
        ),
    );
    let out = qdiff(&["quantize", "--scheme", "w4g32-asym-ao", "--input", t.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["scheme"], "w4g32-asym-ao");
    assert_eq!(v["shape"], serde_json::json!([2, 32]));
    assert_eq!(v["q"].as_array().unwrap().len(), 64);
    assert_eq!(v["dequant"].as_array().unwrap().len(), 64);
    assert_eq!(v["scale_shape"], serde_json::json!([2, 1]));
    assert_eq!(v["zero_point_shape"], serde_json::json!([2, 1]));
    let sym = qdiff(&["quantize", "--scheme", "w4g32-sym-ao", "--input", t.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&sym.stdout).unwrap();
    assert!(v["zero_points"].is_null() && v["zero_point_shape"].is_null());
    // The summary form says how far the round trip is.
    let text = qdiff(&["quantize", "--scheme", "q4_0", "--input", t.to_str().unwrap()]);
    assert_eq!(text.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&text.stdout).contains("max |x - dq(q(x))|"));
}

#[test]
fn bad_input_is_one_line_and_exit_two() {
    let good = tmp(
        "good.json",
        r#"{"shape":[1,32],"data":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32]}"#,
    );
    let g = good.to_str().unwrap();
    assert_refused(&qdiff(&["quantize", "--scheme", "w4g32-nope", "--input", g]), &["w4g32-nope", "variant"]);
    assert_refused(
        &qdiff(&["quantize", "--scheme", "w4g48-sym-ao", "--input", g]),
        &["group size 48", "cols = 32", "good.json"],
    );
    assert_refused(&qdiff(&["quantize", "--scheme", "q4_K", "--input", g]), &["256"]);
    let missing = std::env::temp_dir().join("qdiff-definitely-missing.json");
    assert_refused(&qdiff(&["quantize", "--scheme", "q4_0", "--input", missing.to_str().unwrap()]), &["cannot read"]);
    let malformed = tmp("malformed.json", r#"{"shape":[1,2],"data":[1,2"#);
    assert_refused(
        &qdiff(&["quantize", "--scheme", "q4_0", "--input", malformed.to_str().unwrap()]),
        &["malformed.json", "line 1"],
    );
    let short = tmp("short.json", r#"{"shape":[2,32],"data":[1,2,3]}"#);
    assert_refused(
        &qdiff(&["quantize", "--scheme", "q4_0", "--input", short.to_str().unwrap()]),
        &["short.json", "needs 64", "has 3"],
    );
    let nan = tmp("nan.json", &format!(r#"{{"shape":[1,32],"data":[{}"NaN"]}}"#, "0.5,".repeat(31)));
    assert_refused(
        &qdiff(&["quantize", "--scheme", "w4g32-sym-ao", "--input", nan.to_str().unwrap()]),
        &["nan.json", "index 31", "NaN"],
    );
    let field = tmp("field.json", r#"{"shape":[1,2],"data":[1,2],"extra":1}"#);
    assert_refused(
        &qdiff(&["quantize", "--scheme", "q4_0", "--input", field.to_str().unwrap()]),
        &["field.json", "extra"],
    );
    let lut = tmp(
        "lut.json",
        r#"{"shape":[1,32],"data":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],"lut":[0,1]}"#,
    );
    assert_refused(
        &qdiff(&["quantize", "--scheme", "pal4-pt", "--input", lut.to_str().unwrap()]),
        &["LUT has 2 entries"],
    );
    assert_refused(
        &qdiff(&["quantize", "--scheme", "q4_0-fused", "--input", lut.to_str().unwrap()]),
        &["only meaningful for palettized"],
    );
    // clap usage errors are exit 2 too (their message may span lines, so only the code is checked)
    assert_eq!(qdiff(&["quantize", "--scheme", "q4_0"]).status.code(), Some(2));
    assert_eq!(qdiff(&["frobnicate"]).status.code(), Some(2));
}

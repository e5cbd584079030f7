//! `qdiff fuzz` end to end on the cpu device: each injected fault of the devices issue is found
//! within a small case budget and shrunk to one row and at most two groups; without the fault the
//! same run is clean; the same seed writes byte-identical case files; bad arguments exit 2 with
//! nothing written. Also the strategies on their own: deterministic draws, every value finite, K
//! that does not divide the group refused as `RefError::GroupSize`, and the shrinker driven by a
//! plain predicate.

use harness::casefile::CaseFile;
use harness::fuzz::shrink::{shrink, CaseTree};
use harness::fuzz::strategies::{
    case_strategy, fill, non_dividing_strategy, variants, CaseSpec, Dist, ValueGen, WORKGROUP_SIZES,
};
use harness::fuzz::{seeded_runner, signature, Op, OpCase, Storage, Verdict};
use kernels_ref::error::RefError;
use kernels_ref::scheme::{Granularity, Scheme};
use proptest::strategy::{Strategy, ValueTree};
use qdiff_e2e::{qdiff, scratch};
use std::path::{Path, PathBuf};

/// Every case file a run wrote, sorted by name.
fn case_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("cases"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// One fault: the op and scheme it is fuzzed on, and whether it needs two groups / two weight rows.
struct Plan {
    fault: &'static str,
    op: &'static str,
    scheme: &'static str,
}

const PLANS: [Plan; 5] = [
    Plan { fault: "zp-bind-int8", op: "act_quant", scheme: "a8-pt-asym-ao" },
    Plan { fault: "zp-bind-f16", op: "linear", scheme: "8da4w-vk" },
    Plan { fault: "nibble-swap", op: "dequantize", scheme: "w4g32-sym8" },
    // One weight row reads its own scales transposed or not: the fault needs N ≥ 2, so the one
    // row is linear's activation row M.
    Plan { fault: "scale-transpose", op: "linear", scheme: "w4g32-sym-ao" },
    Plan { fault: "drop-last-group", op: "dequantize", scheme: "q4_0" },
];

fn fuzz_args<'a>(dir: &'a str, p: &'a Plan, seed: &'a str) -> Vec<&'a str> {
    vec!["fuzz", "--device", "cpu", "--cases", "30", "--seed", seed, "--op", p.op, "--scheme", p.scheme, "--out", dir]
}

#[test]
fn every_fault_is_found_and_shrunk_to_one_row_and_at_most_two_groups() {
    for p in &PLANS {
        let dir = scratch(&format!("fuzz-{}", p.fault));
        let d = dir.to_str().unwrap();
        let mut args = fuzz_args(d, p, "1");
        args.extend(["--inject", p.fault]);
        let run = qdiff(&args);
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert_eq!(run.code, 1, "{}: exit {}\n{stdout}\n{}", p.fault, run.code, run.stderr);
        assert!(stdout.contains("qdiff repro "), "{stdout}");
        let files = case_files(&dir);
        assert!(!files.is_empty(), "{}: no case file\n{stdout}", p.fault);
        for f in &files {
            let (cf, case) = CaseFile::read(f).unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
            assert_eq!(cf.inject.map(|f| f.name()), Some(p.fault));
            assert_eq!(cf.found_on.as_ref().map(|d| d.id.as_str()), Some("cpu"));
            assert!(cf.verdict.is_some_and(|v| v.falls_short()), "{}: {:?}", f.display(), cf.verdict);
            let scheme: Scheme = p.scheme.parse().unwrap();
            let k = case.x.as_ref().or(case.w.as_ref()).map(|m| m.cols).unwrap();
            let groups = match scheme.granularity() {
                Granularity::Group(g) => k / g,
                _ => 1,
            };
            let what = format!("{} {}: shape {:?}, {groups} groups", p.fault, f.display(), cf.shape);
            match case.op {
                Op::Linear | Op::ActQuant => assert_eq!(case.x.as_ref().unwrap().rows, 1, "{what}"),
                _ => assert_eq!(case.w.as_ref().unwrap().rows, 1, "{what}"),
            }
            if p.fault == "scale-transpose" {
                assert_eq!(case.w.as_ref().unwrap().rows, 2, "{what}");
            }
            match p.fault {
                "scale-transpose" | "drop-last-group" => assert_eq!(groups, 2, "{what}"),
                _ => assert!(groups <= 2, "{what}"),
            }
            // The shape in the file is the shape of what it replays.
            assert_eq!(cf.shape, shape_of(&case), "{what}");
        }
        let results: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
        assert_eq!(results["summary"]["op_cases"], 30, "{}", results["summary"]);
        for r in results["op_results"].as_array().unwrap() {
            assert!(dir.join(r["case_file"].as_str().unwrap()).is_file(), "{r}");
        }

        // Without the fault the same run is clean.
        let clean = scratch(&format!("fuzz-{}-clean", p.fault));
        let run = qdiff(&fuzz_args(clean.to_str().unwrap(), p, "1"));
        assert_eq!(run.code, 0, "{} clean: {}\n{}", p.fault, String::from_utf8_lossy(&run.stdout), run.stderr);
        assert!(case_files(&clean).is_empty());
    }
}

fn shape_of(case: &OpCase) -> Vec<usize> {
    harness::cases::case_shape(case)
}

#[test]
fn the_same_seed_writes_the_same_case_files() {
    let p = &PLANS[2];
    let mut runs = Vec::new();
    for i in 0..2 {
        let dir = scratch(&format!("fuzz-seed-{i}"));
        let mut args = fuzz_args(dir.to_str().unwrap(), p, "42");
        args.extend(["--inject", p.fault, "--op", "linear", "--scheme", "q4_1"]);
        let run = qdiff(&args);
        assert_eq!(run.code, 1, "{}", String::from_utf8_lossy(&run.stdout));
        let files = case_files(&dir);
        let named: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|f| (f.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(f).unwrap()))
            .collect();
        let mut results: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
        // Timings and provenance differ run to run; the rest must not.
        results["run"] = serde_json::Value::Null;
        for r in results["op_results"].as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("device_seconds");
        }
        runs.push((named, results));
    }
    assert!(runs[0].0.len() >= 2, "two (op, scheme) pairs, each with a failure: {:?}", runs[0].0.len());
    assert_eq!(runs[0].0, runs[1].0, "case files differ between two runs with the same seed");
    assert_eq!(runs[0].1, runs[1].1);
}

#[test]
fn bad_arguments_exit_2_and_write_nothing() {
    let dir = scratch("fuzz-bad-args");
    let d = dir.to_str().unwrap();
    let bad: [&[&str]; 10] = [
        &["fuzz", "--device", "nonesuch", "--cases", "3", "--out", d],
        &["fuzz", "--device", "cpu", "--scheme", "w4g33x", "--cases", "3", "--out", d],
        &["fuzz", "--device", "cpu", "--op", "transpose", "--cases", "3", "--out", d],
        &["fuzz", "--device", "cpu", "--inject", "bit-rot", "--cases", "3", "--out", d],
        &["fuzz", "--device", "cpu", "--time", "1", "--cases", "3", "--out", d],
        &["fuzz", "--device", "cpu", "--cases", "0", "--out", d],
        &["fuzz", "--device", "cpu", "--time", "0", "--out", d],
        &["fuzz", "--device", "cpu", "--time=-2", "--out", d],
        &["fuzz", "--cases", "3", "--out", d],
        // A fault that applies to none of the combinations asked for: nothing to fuzz.
        &["fuzz", "--device", "cpu", "--inject", "nibble-swap", "--scheme", "w8pc-sym-ao", "--cases", "3", "--out", d],
    ];
    for args in bad {
        let run = qdiff(args);
        assert_eq!(run.code, 2, "{args:?}: exit {}, stderr {}", run.code, run.stderr);
        let line = run.stderr.trim_end();
        assert!(!line.is_empty(), "{args:?}: no message");
        // Our own refusals are one line; clap's (a conflict, a missing flag) carry a usage block.
        if line.starts_with("qdiff: error:") {
            assert_eq!(line.lines().count(), 1, "{args:?}: {line}");
        } else {
            assert!(line.starts_with("error:") && line.contains("Usage"), "{args:?}: {line}");
        }
        assert!(!dir.exists(), "{args:?} wrote {}", dir.display());
    }
}

#[test]
fn a_group_size_that_does_not_divide_k_is_a_one_line_group_size_error() {
    let mut runner = seeded_runner(5);
    for (op, scheme) in [
        (Op::Dequantize, "w4g32-sym-ao"),
        (Op::Linear, "q4_0"),
        (Op::Embedding, "w4g64-mlx-cpu"),
        (Op::Quantize, "w4g128-fzp@bf16"),
        (Op::ActQuant, "a8-q8_0-ref"),
        (Op::Linear, "8da4w-vk"),
    ] {
        let s: Scheme = scheme.parse().unwrap();
        let strat = non_dividing_strategy(op, s).expect("a grouped scheme");
        for _ in 0..8 {
            let spec = strat.new_tree(&mut runner).unwrap().current();
            match spec.op_case() {
                Err(e @ RefError::GroupSize { .. }) => {
                    let msg = e.to_string();
                    assert!(!msg.contains('\n') && msg.contains("does not divide"), "{msg}");
                }
                other => panic!("{op} {scheme} K={}: expected a group-size error, got {other:?}", spec.k()),
            }
        }
    }
    assert!(non_dividing_strategy(Op::Dequantize, "w8pc-sym-ao".parse().unwrap()).is_none());
}

#[test]
fn draws_are_deterministic_finite_and_build() {
    let vs = variants(&[Storage::Buffer, Storage::Texture], &WORKGROUP_SIZES);
    for (op, scheme) in [
        (Op::Quantize, "w4g32-asym-ao@f16"),
        (Op::Dequantize, "q4_K"),
        (Op::Linear, "8da4w-xnn"),
        (Op::Embedding, "pal4g16"),
        (Op::ActQuant, "a8-pt-asym-vk-away-zpf32@f16"),
        (Op::Linear, "w8pc-symclip"),
    ] {
        let s: Scheme = scheme.parse().unwrap();
        let strat = case_strategy(op, s, None, vs.clone());
        let draw = |seed| {
            let mut r = seeded_runner(seed);
            (0..20).map(|_| strat.new_tree(&mut r).unwrap().current()).collect::<Vec<CaseSpec>>()
        };
        let a = draw(9);
        assert_eq!(a, draw(9), "{op} {scheme}: the same seed drew different cases");
        assert_ne!(a, draw(10));
        for spec in &a {
            let case = spec.op_case().unwrap_or_else(|e| panic!("{op} {scheme}: {e}"));
            for m in [&case.w, &case.x].into_iter().flatten() {
                assert!(m.data.iter().all(|v| v.is_finite()));
            }
            if let Granularity::Group(g) = s.granularity() {
                assert_eq!(spec.k() % g, 0);
            }
            if let Some(ids) = &case.ids {
                assert!(!ids.is_empty() && ids.iter().all(|&i| (i as usize) < case.w.as_ref().unwrap().rows));
            }
        }
    }
}

#[test]
fn distributions_reach_the_edge_cases() {
    let f32s: Scheme = "w4g32-sym-ao".parse().unwrap();
    let f16s: Scheme = "w4g32-sym-ao@f16".parse().unwrap();
    let values = |dist, exp, scheme: &Scheme| {
        let mut all = Vec::new();
        for seed in 0..8 {
            all.extend(fill(&ValueGen { dist, exp, seed }, 0, 4, 64, 32, scheme).data);
        }
        all
    };
    let any = |v: &[f32], p: &dyn Fn(f32) -> bool| v.iter().any(|&x| p(x));
    assert!(any(&values(Dist::NegativeZeros, 0, &f32s), &|x| x == 0.0 && x.is_sign_negative()));
    assert!(any(&values(Dist::F32Denormals, 0, &f32s), &|x| x != 0.0 && x.abs() < f32::MIN_POSITIVE));
    let h = values(Dist::F16Denormals, 0, &f16s);
    assert!(any(&h, &|x| x != 0.0 && x.abs() < 6.1e-5));
    let big = values(Dist::NearF16Max, 0, &f16s);
    assert!(big.iter().all(|x| x.is_finite() && x.abs() <= 65504.0) && any(&big, &|x| x.abs() > 63000.0));
    let ties = values(Dist::Ties, -3, &f32s);
    assert!(any(&ties, &|x| (x * 8.0).fract().abs() == 0.5), "(k+½)·2^-3 values");
    let neg = values(Dist::NegativeGroups, 0, &f32s);
    assert!(neg.iter().all(|&x| x < 0.0));
    let zero_groups = values(Dist::ZeroGroups, 0, &f32s);
    assert!(zero_groups.chunks(32).any(|g| g.iter().all(|&x| x == 0.0)));
    let constant = values(Dist::ConstantGroups, 0, &f32s);
    assert!(constant.chunks(32).any(|g| g.iter().all(|&x| x == g[0] && x != 0.0)));
    for d in Dist::ALL {
        for s in [&f32s, &f16s, &"w4g32-sym-ao@bf16".parse().unwrap()] {
            assert!(values(d, 4, s).iter().all(|x| x.is_finite()), "{d:?} {s}");
        }
    }
}

#[test]
fn the_shrinker_minimises_against_any_predicate() {
    // "Fails" while some weight is at least 2 in magnitude: the minimum is one row, one group,
    // one value 2 (a single significant bit) and zeros elsewhere.
    let s: Scheme = "w4g32-sym-ao".parse().unwrap();
    let strat = case_strategy(Op::Dequantize, s, None, vec![Default::default()]);
    let mut runner = seeded_runner(3);
    let fails = |c: &CaseSpec| c.w.as_ref().is_some_and(|w| w.data.iter().any(|v| v.abs() >= 2.0));
    let mut tree = loop {
        let t: CaseTree = strat.new_tree(&mut runner).unwrap();
        if fails(&t.current()) && t.current().w.as_ref().unwrap().rows > 1 {
            break t;
        }
    };
    let out = shrink(&mut tree, 5000, None, fails);
    let w = out.spec.w.as_ref().unwrap();
    assert_eq!((w.rows, w.cols), (1, 32), "{:?}", out.spec.shape());
    let nonzero: Vec<f32> = w.data.iter().copied().filter(|&v| v != 0.0).collect();
    assert_eq!(nonzero.len(), 1, "{:?}", w.data);
    assert_eq!(nonzero[0].abs(), 2.0);
    assert!(out.accepted > 0 && !out.budget_hit);
    assert_eq!(signature(Verdict::Crash, None, None), "crash");
}

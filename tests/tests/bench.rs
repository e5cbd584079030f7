//! `qdiff bench` end to end, at the small `--quick` shapes: every kernel's figures are consistent
//! with its samples, bytes and FLOPs and the device's peaks from the same run; bad arguments are
//! exit 2 with nothing written.

use qdiff_e2e::{assert_could_not_run, has_vulkan, qdiff, scratch};
use serde_json::Value;

fn results(dir: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// `qdiff bench` at the quick shapes on `device`: exactly `samples` samples per kernel (no time
/// budget, one warm-up), `extra` arguments, results into `out`.
fn quick_bench(device: &str, samples: usize, extra: &[&str], out: &std::path::Path) -> qdiff_e2e::Run {
    let n = samples.to_string();
    let mut args = vec!["bench", "--device", device, "--quick", "--time", "0", "--samples", &n, "--min-samples", &n];
    args.extend(["--warmup", "1", "--out", out.to_str().unwrap()]);
    args.extend_from_slice(extra);
    qdiff(&args)
}

/// Checks the arithmetic of every result against its own fields and `device_peaks`, and returns
/// the results of `device`.
fn checked(res: &Value, device: &str, samples: usize) -> Vec<Value> {
    let peaks = res["device_peaks"].as_array().unwrap();
    let p = peaks.iter().find(|p| p["device"] == device).unwrap_or_else(|| panic!("no peaks for {device}"));
    assert!(p.get("error").is_none(), "{p}");
    let peak = f(&p["read_gbps"]).max(f(&p["copy_gbps"]));
    assert!(peak > 0.0 && f(&p["fma_gflops"]) > 0.0, "{p}");
    let rows: Vec<Value> =
        res["bench_results"].as_array().unwrap().iter().filter(|r| r["device"] == device).cloned().collect();
    for r in &rows {
        assert!(r.get("error").is_none(), "{r}");
        let s: Vec<f64> = r["samples_s"].as_array().unwrap().iter().map(f).collect();
        assert_eq!(s.len(), samples, "{r}");
        assert_eq!(r["samples"], samples);
        let (med, min, max) = (f(&r["median_s"]), f(&r["min_s"]), f(&r["max_s"]));
        assert!(s.iter().all(|&v| v > 0.0) && min <= med && med <= max, "{r}");
        assert_eq!(min, s.iter().copied().fold(f64::INFINITY, f64::min));
        let bytes = r["bytes"].as_u64().unwrap() as f64;
        let flops = r["flops"].as_u64().unwrap() as f64;
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1e-30);
        assert!(close(f(&r["gbps"]), bytes / med / 1e9), "{r}");
        assert!(close(f(&r["gflops"]), flops / med / 1e9), "{r}");
        assert_eq!(f(&r["peak_gbps"]), peak);
        assert!(close(f(&r["peak_fraction"]), f(&r["gbps"]) / peak), "{r}");
        let shape: Vec<u64> = r["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        if r["kernel"] == "linear" {
            assert_eq!(flops, 2.0 * (shape[0] * shape[1] * shape[2]) as f64, "{r}");
        }
    }
    rows
}

#[test]
fn bench_on_the_cpu_measures_every_kernel_against_its_peaks() {
    let out = scratch("bench-cpu");
    let r = quick_bench("cpu", 3, &["--scheme", "q4_0", "--scheme", "8da4w-ao"], &out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let res = results(&out);
    let rows = checked(&res, "cpu", 3);
    let has = |kernel: &str, scheme: &str, m: Option<u64>| {
        rows.iter().any(|r| r["kernel"] == kernel && r["scheme"] == scheme && m.is_none_or(|m| r["shape"][0] == m))
    };
    for scheme in ["q4_0", "8da4w-ao"] {
        assert!(has("dequantize", scheme, None), "dequantize {scheme}");
        assert!(has("linear", scheme, Some(1)), "decode {scheme}");
        assert!(has("linear", scheme, Some(16)), "prefill {scheme}");
        assert!(has("embedding", scheme, None), "embedding {scheme}");
    }
    assert!(has("act_quant", "a8-pt-asym-ao", None), "8da4w's activation quantizer");
    assert!(rows.iter().all(|r| r["timing"] == "system"), "a CPU has no device timer");
    // Bytes as stored: Q4_0 is 18 bytes per 32 weights, plus x in and y out in fp32.
    let dec = rows.iter().find(|r| r["kernel"] == "linear" && r["scheme"] == "q4_0" && r["shape"][0] == 1).unwrap();
    let (n, k) = (dec["shape"][1].as_u64().unwrap(), dec["shape"][2].as_u64().unwrap());
    assert_eq!(dec["bytes"].as_u64().unwrap(), n * k / 32 * 18 + 4 * (k + n));
    assert!(n * k / 32 * 18 >= 2 << 20, "the quick decode weights still exceed an L2");
    let table = String::from_utf8(r.stdout).unwrap();
    assert!(table.contains("device peaks") && table.contains("linear (decode)") && table.contains("%peak"), "{table}");
}

#[test]
fn bench_on_vulkan_times_with_timestamps() {
    if !has_vulkan() {
        return;
    }
    let out = scratch("bench-vulkan");
    let extra = ["--scheme", "w4g32-sym-ao", "--kernel", "linear-decode", "--kernel", "dequantize"];
    let r = quick_bench("vulkan", 2, &extra, &out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let res = results(&out);
    let rows = checked(&res, "vulkan:0", 2);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let ts = res["devices"][0]["features"]["timestamp_query"].as_bool().unwrap();
    for row in &rows {
        assert_eq!(row["timing"], if ts { "device" } else { "system" }, "{row}");
    }
}

#[test]
fn bad_bench_arguments_exit_2_with_one_line() {
    let out = scratch("bench-bad");
    let o = out.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["bench", "--device", "cpu", "--kernel", "nosuch", "--out", o], "unknown kernel `nosuch`"),
        (&["bench", "--device", "cpu", "--kernel", "model-decode", "--out", o], "--model"),
        (&["bench", "--device", "nosuch", "--out", o], "nosuch"),
        (&["bench", "--device", "cpu", "--scheme", "w4g48-sym-ao", "--quick", "--out", o], "48"),
        (&["bench", "--device", "cpu", "--samples", "2", "--min-samples", "5", "--out", o], "--min-samples"),
    ];
    for (args, needle) in cases {
        assert_could_not_run(args, needle, &out);
    }
}

/// `results.json` of `dir` with every bench sample (and median, min, max) set to `seconds`: a
/// baseline far faster or slower than any real run, whatever this machine's noise.
fn baseline_at(dir: &std::path::Path, seconds: f64, to: &std::path::Path) {
    let mut res = results(dir);
    for r in res["bench_results"].as_array_mut().unwrap() {
        for key in ["median_s", "min_s", "max_s"] {
            r[key] = seconds.into();
        }
        let n = r["samples_s"].as_array().unwrap().len();
        r["samples_s"] = vec![seconds; n].into();
    }
    std::fs::write(to, serde_json::to_vec(&res).unwrap()).unwrap();
}

#[test]
fn a_baseline_that_was_faster_makes_bench_exit_1_with_the_regressions() {
    let first = scratch("bench-baseline-first");
    let kernels = ["--scheme", "q4_0", "--kernel", "linear-decode", "--kernel", "dequantize"];
    let run = |out: &std::path::Path, baseline: Option<&std::path::Path>| {
        let mut extra = kernels.to_vec();
        if let Some(b) = baseline {
            extra.extend(["--baseline", b.to_str().unwrap()]);
        }
        quick_bench("cpu", 3, &extra, out)
    };
    let r = run(&first, None);
    assert_eq!(r.code, 0, "{}", r.stderr);

    // A baseline at a nanosecond per run: both kernels regressed, listed in results.json and on
    // stdout.
    let fast = first.join("fast.json");
    baseline_at(&first, 1e-9, &fast);
    let out = scratch("bench-baseline-regressed");
    let r = run(&out, Some(&fast));
    assert_eq!(r.code, 1, "{}", r.stderr);
    let regs = results(&out)["regressions"].as_array().unwrap().clone();
    assert_eq!(regs.len(), 2, "{regs:?}");
    assert!(regs.iter().all(|g| g["what"].as_str().unwrap().contains("on cpu: slower")), "{regs:?}");
    let stdout = String::from_utf8(r.stdout).unwrap();
    assert!(stdout.contains("regressions against the baseline: 2"), "{stdout}");

    // A baseline at a thousand seconds per run: nothing regressed.
    let slow = first.join("slow.json");
    baseline_at(&first, 1e3, &slow);
    let out = scratch("bench-baseline-clean");
    let r = run(&out, Some(&slow));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(results(&out)["regressions"].as_array().unwrap().is_empty());

    // A baseline that is not results.json: exit 2, one line, nothing written.
    let bad = first.join("bad.json");
    std::fs::write(&bad, b"{\"schema_version\": 1, \"run\": 3}").unwrap();
    let out = scratch("bench-baseline-bad");
    let mut args = vec!["bench", "--device", "cpu", "--quick", "--out", out.to_str().unwrap()];
    args.extend(["--baseline", bad.to_str().unwrap()]);
    assert_could_not_run(&args, "bad.json", &out);
}

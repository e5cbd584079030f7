//! Crash isolation, no lost results and `--resume`, through the real `qdiff` binary (so the
//! worker executable is `qdiff` itself): a worker killed by SIGSEGV is a `crash` verdict, a hung
//! one a `timeout`, the run goes on and exits 1; a run killed with SIGKILL keeps every finished
//! line of results.jsonl and `--resume` finishes it as if it had never stopped.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn qdiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qdiff")).args(args).output().expect("spawn qdiff")
}

/// An empty scratch folder (its parent exists, the folder itself does not).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qdiff-isolation-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn results(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("results.json")).expect("results.json written");
    serde_json::from_str(&text).expect("results.json parses")
}

/// Op results with the timings (which differ run to run) taken out.
fn timeless(r: &Value) -> Value {
    let mut ops = r["op_results"].clone();
    for o in ops.as_array_mut().unwrap() {
        o.as_object_mut().unwrap().remove("device_seconds");
    }
    ops
}

fn show(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A crash fault on a grouped int4 scheme and a palettized one that it does not strike.
fn fault_run(fault: &str, timeout: &str, dir: &Path) -> Output {
    qdiff(&[
        "check",
        "--device",
        "cpu",
        "--inject",
        fault,
        "--scheme",
        "w4g32-sym-ao",
        "--scheme",
        "pal4-pt",
        "--op",
        "dequantize",
        "--op",
        "linear",
        "--cases",
        "2",
        "--case-timeout",
        timeout,
        "--out",
        dir.to_str().unwrap(),
    ])
}

/// Every w4g32-sym-ao result has `verdict` and a case file on disk; every pal4-pt one passed.
fn assert_struck(dir: &Path, verdict: &str, note: &str) {
    let r = results(dir);
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for o in r["op_results"].as_array().unwrap() {
        let scheme = o["scheme"].as_str().unwrap();
        let v = o["verdict"].as_str().unwrap();
        *seen.entry((scheme.to_string(), v.to_string())).or_default() += 1;
        if scheme == "w4g32-sym-ao" {
            assert_eq!(v, verdict, "{o}");
            assert!(o["note"].as_str().unwrap().contains(note), "{o}");
            let file = o["case_file"].as_str().expect("a failure has a case file");
            let case: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
            assert_eq!(case["verdict"], verdict);
            assert_eq!(case["inject"], o["inject"]);
        } else {
            assert!(v == "exact" || v == "within_tolerance", "the fault must not touch pal4-pt: {o}");
        }
    }
    assert_eq!(seen.get(&("w4g32-sym-ao".into(), verdict.into())), Some(&4), "{seen:?}");
    assert_eq!(seen.keys().filter(|(s, _)| s == "pal4-pt").map(|k| seen[k]).sum::<usize>(), 4, "{seen:?}");
    assert_eq!(r["summary"][verdict], 4);
}

#[test]
fn a_crashing_worker_is_a_crash_verdict_and_the_run_goes_on() {
    let dir = scratch("crash");
    let run = fault_run("crash", "20", &dir);
    assert_eq!(run.status.code(), Some(1), "{}", show(&run));
    assert_struck(&dir, "crash", "signal 11 (SIGSEGV)");
}

#[test]
fn a_hung_worker_is_a_timeout_verdict_and_the_run_goes_on() {
    let dir = scratch("hang");
    let t0 = Instant::now();
    let run = fault_run("hang", "2", &dir);
    let took = t0.elapsed();
    assert_eq!(run.status.code(), Some(1), "{}", show(&run));
    assert_struck(&dir, "timeout", "case timeout of 2 s");
    assert!(took < Duration::from_secs(30), "four 2 s timeouts took {took:?}");
}

/// A run made slow by hangs (one second per w4g32 case, after the fast pal4-pt ones), killed with
/// SIGKILL midway and resumed, against the same run left alone.
#[test]
fn a_run_killed_midway_and_resumed_loses_nothing() {
    let args = |dir: &Path| -> Vec<String> {
        [
            "check",
            "--device",
            "cpu",
            "--inject",
            "hang",
            "--scheme",
            "pal4-pt",
            "--scheme",
            "w4g32-sym-ao",
            "--op",
            "dequantize",
            "--cases",
            "3",
            "--case-timeout",
            "1",
            "--isolation",
            "worker",
            "--out",
            dir.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let (whole_dir, cut_dir) = (scratch("resume-whole"), scratch("resume-cut"));
    // The uninterrupted run goes alongside: both spend their time waiting on hung workers.
    let whole = Command::new(env!("CARGO_BIN_EXE_qdiff"))
        .args(args(&whole_dir))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qdiff");
    let journal = cut_dir.join("results.jsonl");
    let mut cut = Command::new(env!("CARGO_BIN_EXE_qdiff"))
        .args(args(&cut_dir))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn qdiff");
    // Header, three pal4-pt results, one timeout: then kill it while it waits on the second hang.
    let t0 = Instant::now();
    let finished_lines = loop {
        let text = std::fs::read_to_string(&journal).unwrap_or_default();
        if text.lines().count() >= 5 {
            break text;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "the journal never grew: {text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    cut.kill().expect("kill -9");
    let _ = cut.wait();
    assert!(!cut_dir.join("results.json").exists(), "the killed run finished before the kill");
    // Whatever the kill tore at the end of the file (here: half a line) must not stop a resume.
    let mut torn = std::fs::read(&journal).unwrap();
    torn.extend_from_slice(br#"{"case_id":"dequantize/w4g32-sym-ao/buf"#);
    std::fs::write(&journal, torn).unwrap();

    let mut resume = args(&cut_dir);
    resume.push("--resume".into());
    let resumed = Command::new(env!("CARGO_BIN_EXE_qdiff")).args(&resume).output().unwrap();
    assert_eq!(resumed.status.code(), Some(1), "{}", show(&resumed));
    assert!(String::from_utf8_lossy(&resumed.stdout).contains("resumed: "), "{}", show(&resumed));
    let whole = whole.wait_with_output().unwrap();
    assert_eq!(whole.status.code(), Some(1), "{}", show(&whole));

    let (r, w) = (results(&cut_dir), results(&whole_dir));
    let ids: Vec<(String, String)> = r["op_results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["case_id"].as_str().unwrap().to_string(), o["device"].as_str().unwrap().to_string()))
        .collect();
    for line in finished_lines.lines().skip(1) {
        let o: Value = serde_json::from_str(line).unwrap();
        let id = (o["case_id"].as_str().unwrap().to_string(), o["device"].as_str().unwrap().to_string());
        assert_eq!(ids.iter().filter(|i| **i == id).count(), 1, "{id:?} not exactly once in {ids:?}");
        let kept = r["op_results"].as_array().unwrap().iter().find(|x| x["case_id"] == o["case_id"]).unwrap();
        assert_eq!(kept, &o, "a finished result was redone instead of kept");
    }
    assert_eq!(timeless(&r), timeless(&w));
    assert_eq!(r["summary"], w["summary"]);
    assert_eq!(r["summary"]["timeout"], 3);
    // Every result line is whole again: the torn tail was cut off before appending.
    let text = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(text.lines().count(), 1 + 6, "{text}");
    for line in text.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}

#[test]
fn resume_with_other_arguments_is_refused_and_changes_nothing() {
    let dir = scratch("resume-other");
    let d = dir.to_str().unwrap();
    let base = ["check", "--device", "cpu", "--scheme", "pal4-pt", "--op", "dequantize", "--out", d];
    // Nothing to resume yet: it just runs.
    let first = qdiff(&[&base[..], &["--cases", "1", "--resume"]].concat());
    assert_eq!(first.status.code(), Some(0), "{}", show(&first));
    let journal = std::fs::read(dir.join("results.jsonl")).unwrap();
    let results_json = std::fs::read(dir.join("results.json")).unwrap();
    for extra in [
        &["--cases", "1", "--seed", "1"][..],
        &["--cases", "2"],
        &["--cases", "1", "--scheme", "q4_0"],
        &["--cases", "1", "--inject", "crash"],
        &["--cases", "1", "--repeat", "2"],
    ] {
        let run = qdiff(&[&base[..], extra, &["--resume"]].concat());
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{extra:?}: {}", show(&run));
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.starts_with("qdiff: error: --resume: ") && err.contains("other arguments"), "{err}");
        assert!(run.stdout.is_empty());
        assert_eq!(std::fs::read(dir.join("results.jsonl")).unwrap(), journal, "{extra:?} touched the journal");
        assert_eq!(std::fs::read(dir.join("results.json")).unwrap(), results_json);
    }
    // The same arguments resume a finished run: nothing left to do, the same results.
    let again = qdiff(&[&base[..], &["--cases", "1", "--resume"]].concat());
    assert_eq!(again.status.code(), Some(0), "{}", show(&again));
    assert_eq!(std::fs::read(dir.join("results.jsonl")).unwrap(), journal);
}

#[test]
fn the_same_seed_gives_the_same_results_in_a_worker_and_in_process() {
    let mut runs = Vec::new();
    for isolation in ["worker", "none"] {
        let dir = scratch(&format!("same-{isolation}"));
        let run = qdiff(&[
            "check",
            "--device",
            "cpu",
            "--seed",
            "11",
            "--cases",
            "2",
            "--scheme",
            "8da4w-vk",
            "--scheme",
            "q4_K",
            "--scheme",
            "pal4-pt",
            "--scheme",
            "w4g32-asym-ao@f16",
            "--isolation",
            isolation,
            "--repeat",
            "2",
            "--out",
            dir.to_str().unwrap(),
        ]);
        assert_eq!(run.status.code(), Some(0), "{isolation}: {}", show(&run));
        let r = results(&dir);
        assert!(r["summary"]["exact"].as_u64().unwrap() > 0);
        runs.push((timeless(&r), r["summary"].clone()));
    }
    assert_eq!(runs[0], runs[1]);
}

#[test]
fn worker_isolation_without_a_worker_executable_is_refused() {
    let dir = scratch("no-exe");
    let run = Command::new(env!("CARGO_BIN_EXE_qdiff"))
        .args(["check", "--device", "cpu", "--isolation", "worker", "--out", dir.to_str().unwrap()])
        .env("QDIFF_WORKER_EXE", dir.join("no-such-qdiff"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{}", show(&run));
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("--device cpu") && err.contains("could not start the worker"), "{err}");
    assert!(!dir.exists(), "a refused run wrote {}", dir.display());
}

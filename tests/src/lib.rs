//! Shared helpers of qdiff's end-to-end tests: finding the built `qdiff` binary, running it, and
//! reading the golden vectors under `tests/golden/`.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// What one `qdiff` invocation produced.
#[derive(Debug)]
pub struct Run {
    /// The exit code.
    pub code: i32,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: String,
}

/// Run the `qdiff` command line in process (the same `harness::run` the binary's `main` calls),
/// so these tests always exercise the code just built. The process-level checks of the real
/// binary (exit status, streams) live in `harness/tests/cli.rs`.
pub fn qdiff(args: &[&str]) -> Run {
    let mut argv = vec!["qdiff".to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = harness::run(&argv, &mut out, &mut err) as i32;
    Run { code, stdout: out, stderr: String::from_utf8_lossy(&err).into_owned() }
}

/// Asserts that `qdiff args` could not run: exit 2, one line on stderr that contains `needle`,
/// and no `results.json` written into `out`.
pub fn assert_could_not_run(args: &[&str], needle: &str, out: &Path) {
    let r = qdiff(args);
    assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
    assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(!out.join("results.json").exists(), "nothing half-written");
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// A golden file (`tests/golden/*.json`, format 1).
#[derive(Debug, Deserialize)]
pub struct GoldenFile {
    /// Format version (1).
    pub golden_format: u32,
    /// Which framework produced it.
    pub source: String,
    /// Versions of everything involved.
    pub versions: serde_json::Map<String, serde_json::Value>,
    /// The vectors.
    pub vectors: Vec<GoldenVector>,
}

/// One golden vector.
#[derive(Debug, Deserialize)]
pub struct GoldenVector {
    /// `<scheme>/<input kind>`.
    pub id: String,
    /// qdiff scheme name.
    pub scheme: String,
    /// The input tensor (TENSOR.json form).
    pub input: serde_json::Value,
    /// What the framework produced.
    pub expected: GoldenExpected,
    /// Set on vectors made from fixed packed bytes rather than by the framework's quantizer (gguf-py
    /// can only dequantize Q4_K): only unpack + dequantize are checked.
    #[serde(default)]
    pub dequant_only: bool,
}

/// A framework's output for one vector, in `qdiff quantize --json` conventions.
#[derive(Debug, Deserialize)]
pub struct GoldenExpected {
    /// Codes.
    pub q: Vec<i64>,
    /// Stored scales (null for schemes without any, e.g. palettization without a per-channel scale).
    pub scales: Option<Vec<f64>>,
    /// Shape of the scales.
    pub scale_shape: Option<Vec<usize>>,
    /// Zero-points / offsets.
    pub zero_points: Option<Vec<f64>>,
    /// Shape of the zero-points.
    pub zero_point_shape: Option<Vec<usize>>,
    /// Palettization LUT.
    #[serde(default)]
    pub lut: Option<Vec<f64>>,
    /// Shape of the LUT.
    #[serde(default)]
    pub lut_shape: Option<Vec<usize>>,
    /// The dequantized tensor.
    pub dequant: Vec<f64>,
    /// The framework's packed bytes, lowercase hex.
    #[serde(default)]
    pub packed_hex: Option<String>,
    /// Raw format fields (ggml q4_K `d`, `dmin`, `sc`, `m`).
    #[serde(default)]
    pub raw: Option<serde_json::Value>,
}

/// Golden files of the model path, in their own formats, checked by the models crate's tests
/// (`llm/tests/gguf.rs`, `llm/tests/tokenizer.rs`), not by the scheme golden tests.
const MODEL_GOLDENS: [&str; 2] = ["gguf_smollm2.json", "tokenize_smollm2.json"];

/// Every scheme golden file (format 1), by file name.
pub fn golden_files() -> Vec<(String, GoldenFile)> {
    let dir = repo_root().join("tests/golden");
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| !p.file_name().is_some_and(|n| MODEL_GOLDENS.iter().any(|m| n == *m)))
        .collect();
    names.sort();
    for p in names {
        let text = std::fs::read_to_string(&p).unwrap();
        let g: GoldenFile = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        out.push((p.file_name().unwrap().to_string_lossy().into_owned(), g));
    }
    out
}

/// f32 values as bit patterns (so -0.0 vs 0.0 and every ulp count).
pub fn bits(v: impl IntoIterator<Item = f64>) -> Vec<u32> {
    v.into_iter().map(|x| (x as f32).to_bits()).collect()
}

/// A fresh, empty scratch folder under the target directory (removed first if it exists).
pub fn scratch(name: &str) -> PathBuf {
    let dir = repo_root().join("target").join("e2e-scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.parent().expect("scratch has a parent")).expect("create scratch parent");
    dir
}

/// Whether a Vulkan adapter is needed by this run (`QDIFF_REQUIRE_VULKAN=1`, set by `.ci/run`).
pub fn vulkan_required() -> bool {
    std::env::var("QDIFF_REQUIRE_VULKAN").is_ok_and(|v| v == "1")
}

/// Whether this machine has a Vulkan adapter (through `qdiff devices --json`). When it has none,
/// fails if [`vulkan_required`], else prints the skip reason and the command that installs
/// lavapipe, and returns false.
pub fn has_vulkan() -> bool {
    let run = qdiff(&["devices", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).expect("devices --json parses");
    let found = v["devices"].as_array().is_some_and(|d| d.iter().any(|d| d["kind"] == "vulkan"));
    if !found {
        let notes = v["notes"].to_string();
        assert!(!vulkan_required(), "QDIFF_REQUIRE_VULKAN=1 but no Vulkan adapter was found: {notes}");
        eprintln!(
            "skipped: no Vulkan adapter ({notes}); install one with `apt-get install mesa-vulkan-drivers libvulkan1`"
        );
    }
    found
}

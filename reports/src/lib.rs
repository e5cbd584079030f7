//! qdiff's results schema (`results.json`, schema_version 1 of cli.md) and, later, its renderings
//! (HTML, Markdown card, JUnit XML). This crate knows nothing of how results were made: the types
//! here are plain data with serde.

mod baseline;
mod card;

pub use baseline::{regressions, Regression, Thresholds};
pub use card::card_markdown;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The schema version written in every `results.json`.
pub const SCHEMA_VERSION: u32 = 1;

/// A whole `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Provenance of the run.
    pub run: RunInfo,
    /// Devices involved, with drivers and probed capabilities.
    pub devices: Vec<DeviceEntry>,
    /// Counts of op-case verdicts.
    pub summary: Summary,
    /// One entry per op case (per device).
    pub op_results: Vec<OpResult>,
    /// Model evaluation results.
    #[serde(default)]
    pub model_results: Vec<ModelResult>,
    /// The models evaluated (provenance for the card).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelInfo>,
    /// Benchmark results.
    #[serde(default)]
    pub bench_results: Vec<BenchResult>,
    /// (qdiff addition) Each benchmarked device's measured peaks, from the same run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_peaks: Vec<DevicePeaks>,
    /// Regressions against a baseline.
    #[serde(default)]
    pub regressions: Vec<Regression>,
}

/// Provenance of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// qdiff's version.
    pub qdiff_version: String,
    /// The git commit qdiff was built from (`unknown` outside a checkout).
    pub git_commit: String,
    /// RFC 3339 UTC start time.
    pub started_at: String,
    /// Host name.
    pub host: String,
    /// The run's seed.
    pub seed: u64,
    /// `K/N`.
    pub shard: String,
    /// The command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// One benchmark: a kernel of a scheme at a shape on a device (cli.md `bench_results`, plus
/// qdiff additions marked below).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// Device id.
    pub device: String,
    /// `dequantize`, `linear`, `act_quant`, `embedding`, `model_prefill`, `model_decode`.
    pub kernel: String,
    /// Scheme name.
    pub scheme: String,
    /// `[M, N, K]` for `linear` (M = 1: a decode matvec), `[N, K]` for `dequantize`, `[M, K]` for
    /// `act_quant`, `[ids, rows, D]` for `embedding`, `[tokens, parameters]` for the model kernels.
    pub shape: Vec<usize>,
    /// `device` (timestamp queries) or `system` (wall clock around submit + wait).
    pub timing: String,
    /// Samples taken (after the warm-up).
    pub samples: usize,
    /// Median seconds per run.
    #[serde(with = "json_f64")]
    pub median_s: f64,
    /// Fastest run.
    #[serde(with = "json_f64")]
    pub min_s: f64,
    /// Slowest run.
    #[serde(with = "json_f64")]
    pub max_s: f64,
    /// Bytes one run must move as stored (codes, qparams in their dtypes, activations in and out).
    pub bytes: u64,
    /// Arithmetic of one run (2·M·N·K for `linear`; 0 for the pure data-movement kernels).
    pub flops: u64,
    /// `bytes / median_s`, GB/s.
    #[serde(with = "json_f64")]
    pub gbps: f64,
    /// `flops / median_s`, GFLOP/s.
    #[serde(with = "json_f64")]
    pub gflops: f64,
    /// The device's measured bandwidth peak (the best of stream read and copy), GB/s.
    #[serde(with = "json_f64")]
    pub peak_gbps: f64,
    /// `gbps / peak_gbps`.
    #[serde(with = "json_f64")]
    pub peak_fraction: f64,
    /// (qdiff addition) The device's measured FMA peak, GFLOP/s.
    #[serde(default, with = "json_f64")]
    pub peak_gflops: f64,
    /// (qdiff addition) `gflops / peak_gflops`.
    #[serde(default, with = "json_f64")]
    pub flops_fraction: f64,
    /// (qdiff addition) Every sample in seconds, in the order taken: the spread a baseline
    /// comparison judges noise from.
    #[serde(default)]
    pub samples_s: Vec<f64>,
    /// (qdiff addition) Whether caches were flushed before every sample (`--cold`).
    #[serde(default)]
    pub cold: bool,
    /// (qdiff addition) Tokens per second, for the model kernels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    /// (qdiff addition) Why the benchmark failed (a device error, a lost device); the figures are
    /// then zero. A failure makes the run fall short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A device's measured peaks (qdiff addition to cli.md's results).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DevicePeaks {
    /// Device id.
    pub device: String,
    /// Stream read bandwidth, GB/s.
    #[serde(with = "json_f64")]
    pub read_gbps: f64,
    /// Copy bandwidth (bytes read + written), GB/s.
    #[serde(with = "json_f64")]
    pub copy_gbps: f64,
    /// FMA throughput, GFLOP/s (f32).
    #[serde(with = "json_f64")]
    pub fma_gflops: f64,
    /// Bytes the bandwidth kernels streamed.
    pub buffer_bytes: u64,
    /// `device` or `system`.
    pub timing: String,
    /// Why the peaks could not be measured; the figures are then zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DevicePeaks {
    /// The bandwidth kernels are judged against: the best of read and copy.
    pub fn peak_gbps(&self) -> f64 {
        self.read_gbps.max(self.copy_gbps)
    }
}

/// A device as recorded in results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceEntry {
    /// `cpu`, `vulkan:0`, ...
    pub id: String,
    /// `ref`, `cpu`, `vulkan`, `metal`.
    pub kind: String,
    /// Adapter or CPU name.
    pub name: String,
    /// Driver and version.
    pub driver: String,
    /// Capabilities and probed properties.
    pub features: BTreeMap<String, serde_json::Value>,
}

/// A verdict of one op case on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every output bit-identical to the exact emulation.
    Exact,
    /// Integer and side outputs exact; float values within the tolerance the numerics allow.
    WithinTolerance,
    /// Something beyond tolerance, or an integer output that differs.
    Mismatch,
    /// Repeated runs of the same case (`--repeat N`) did not all give bit-identical outputs:
    /// run-to-run nondeterminism, a failure whatever the first run's verdict was.
    Nondeterministic,
    /// The device failed to run the case (compile error, device lost, poisoned output).
    Error,
    /// The device process died (a signal, an abort, a lost device that took the worker down).
    Crash,
    /// The device did not finish the case within the case timeout.
    Timeout,
    /// The device does not run this combination (the note says why).
    Unsupported,
}

impl Verdict {
    /// Every verdict, best first.
    pub const ALL: [Verdict; 8] = [
        Verdict::Exact,
        Verdict::WithinTolerance,
        Verdict::Mismatch,
        Verdict::Nondeterministic,
        Verdict::Error,
        Verdict::Crash,
        Verdict::Timeout,
        Verdict::Unsupported,
    ];
    /// The schema name.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Exact => "exact",
            Verdict::WithinTolerance => "within_tolerance",
            Verdict::Mismatch => "mismatch",
            Verdict::Nondeterministic => "nondeterministic",
            Verdict::Error => "error",
            Verdict::Crash => "crash",
            Verdict::Timeout => "timeout",
            Verdict::Unsupported => "unsupported",
        }
    }
    /// Whether this verdict makes a run fall short (exit 1).
    pub fn falls_short(self) -> bool {
        matches!(
            self,
            Verdict::Mismatch | Verdict::Nondeterministic | Verdict::Error | Verdict::Crash | Verdict::Timeout
        )
    }
}

/// Counts of verdicts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// All op results.
    pub op_cases: u64,
    /// `exact`.
    pub exact: u64,
    /// `within_tolerance`.
    pub within_tolerance: u64,
    /// `mismatch`.
    pub mismatch: u64,
    /// `error`.
    pub error: u64,
    /// `crash`.
    pub crash: u64,
    /// `timeout` (qdiff addition to the cli.md summary).
    #[serde(default)]
    pub timeout: u64,
    /// `unsupported`.
    pub unsupported: u64,
    /// `nondeterministic` (qdiff addition: `--repeat N` runs that disagreed with each other).
    #[serde(default)]
    pub nondeterministic: u64,
}

impl Summary {
    /// Count one verdict.
    pub fn add(&mut self, v: Verdict) {
        self.op_cases += 1;
        *match v {
            Verdict::Exact => &mut self.exact,
            Verdict::WithinTolerance => &mut self.within_tolerance,
            Verdict::Mismatch => &mut self.mismatch,
            Verdict::Nondeterministic => &mut self.nondeterministic,
            Verdict::Error => &mut self.error,
            Verdict::Crash => &mut self.crash,
            Verdict::Timeout => &mut self.timeout,
            Verdict::Unsupported => &mut self.unsupported,
        } += 1;
    }
    /// Whether anything fell short.
    pub fn falls_short(&self) -> bool {
        self.mismatch + self.nondeterministic + self.error + self.crash + self.timeout > 0
    }
}

/// Comparison metrics of one op case (cli.md, plus qdiff additions marked below).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Fraction of float values bit-identical to the exact emulation.
    #[serde(with = "json_f64")]
    pub bit_exact_fraction: f64,
    /// Largest distance from the exact emulation in units in the last place of the compute dtype.
    #[serde(with = "json_f64")]
    pub max_ulp: f64,
    /// Largest absolute error against the fp32 truth (what the scheme costs).
    #[serde(with = "json_f64")]
    pub max_abs_err: f64,
    /// Normalised mean squared error against the fp32 truth.
    #[serde(with = "json_f64")]
    pub nmse: f64,
    /// Cosine similarity with the fp32 truth.
    #[serde(with = "json_f64")]
    pub cosine: f64,
    /// Integer outputs (codes, zero-points, accumulators) that differ from the exact emulation.
    pub int_mismatches: u64,
    /// (qdiff addition) Float side outputs (stored scales, zero-points, LUTs) not bit-identical.
    #[serde(default)]
    pub side_mismatches: u64,
    /// (qdiff addition) Largest `|found − expected| / tolerance` over the float values (≤ 1 is
    /// within tolerance; 0 when bit-exact).
    #[serde(default, with = "json_f64")]
    pub tolerance_ratio: f64,
}

/// An f64 in JSON that survives non-finite values: finite values are numbers, `NaN`,
/// `Infinity` and `-Infinity` are strings (JSON has no literal for them, and `null` would be
/// unreadable), so a metric like an infinite tolerance ratio round-trips.
pub mod json_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize.
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("Infinity")
        } else {
            s.serialize_str("-Infinity")
        }
    }

    /// Deserialize.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum NumOrStr {
            Num(f64),
            Str(String),
        }
        match NumOrStr::deserialize(d)? {
            NumOrStr::Num(v) => Ok(v),
            NumOrStr::Str(s) => match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                other => Err(serde::de::Error::custom(format!("`{other}` is not a number"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_metrics_round_trip() {
        let m = Metrics { tolerance_ratio: f64::INFINITY, max_ulp: f64::NAN, nmse: -0.5, ..Metrics::default() };
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains("\"tolerance_ratio\":\"Infinity\""), "{text}");
        let back: Metrics = serde_json::from_str(&text).unwrap();
        assert_eq!(back.tolerance_ratio, f64::INFINITY);
        assert!(back.max_ulp.is_nan());
        assert_eq!(back.nmse, -0.5);
    }
}

/// A model evaluated in a run: what goes under a card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Short name (file name, or `synthetic-llama-s…`).
    pub name: String,
    /// Where it was read from.
    pub path: String,
    /// sha256 of the file (empty for a model built in memory).
    pub sha256: String,
    /// Architecture and shapes, one line.
    pub description: String,
    /// How the checkpoint stores its tensors (`Q4_1 x210, F32 x61, Q8_0 x1`).
    pub storage: String,
    /// The tokenizer.
    pub tokenizer: String,
    /// The teacher-forced texts: name and token count.
    pub texts: Vec<(String, usize)>,
    /// The greedy-rollout prompt and the oracle's continuation (token ids).
    pub rollout_prompt: String,
    /// The oracle's greedy tokens.
    pub oracle_greedy: Vec<u32>,
    /// The oracle's greedy tokens decoded.
    #[serde(default)]
    pub oracle_greedy_text: String,
}

/// A position where the device's top-1 differs from the oracle's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flip {
    /// The text's name.
    pub text: String,
    /// Position within that text.
    pub position: usize,
    /// The oracle's top token.
    pub oracle: u32,
    /// The device's top token.
    pub device: u32,
}

/// One (model, scheme plan, device): the teacher-forced numbers a model card publishes (cli.md
/// `model_results`, plus qdiff additions marked below).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelResult {
    /// The model's name.
    pub model: String,
    /// The linear weights' scheme (`fp32` when none).
    pub scheme: String,
    /// (qdiff addition) The head's scheme (`fp32` when none).
    #[serde(default = "fp32")]
    pub head_scheme: String,
    /// (qdiff addition) The embedding table's scheme (`fp32` when none).
    #[serde(default = "fp32")]
    pub embed_scheme: String,
    /// Device id.
    pub device: String,
    /// (qdiff addition) `ok`, `unsupported` or `error`.
    #[serde(default = "ok")]
    pub status: String,
    /// (qdiff addition) Why it is unsupported or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Teacher-forced positions compared.
    pub positions: usize,
    /// Positions where the device's top-1 equals the oracle's.
    pub top1_agree: usize,
    /// `top1_agree / positions`.
    #[serde(with = "json_f64")]
    pub top1_agreement: f64,
    /// Binomial standard error of `top1_agreement`, `sqrt(p (1 - p) / N)`.
    #[serde(with = "json_f64")]
    pub top1_stderr: f64,
    /// Mean of `|top5(oracle) ∩ top5(device)| / 5`.
    #[serde(with = "json_f64")]
    pub top5_overlap: f64,
    /// KL(oracle ‖ device) of the next-token distributions, mean over positions (nats).
    #[serde(with = "json_f64")]
    pub kld_mean: f64,
    /// (qdiff addition) Median KLD.
    #[serde(default, with = "json_f64")]
    pub kld_median: f64,
    /// 99th percentile KLD (nearest rank).
    #[serde(with = "json_f64")]
    pub kld_p99: f64,
    /// Largest KLD.
    #[serde(with = "json_f64")]
    pub kld_max: f64,
    /// (qdiff addition) RMS over positions of `p_oracle(t) - p_device(t)`, `t` the oracle's top token.
    #[serde(default, with = "json_f64")]
    pub delta_p_rms: f64,
    /// Tokens of the greedy rollout compared.
    pub greedy_tokens: usize,
    /// Length of the device's greedy rollout that is identical to the oracle's.
    pub greedy_identical_prefix: usize,
    /// (qdiff addition) Identical-prefix length of this device's greedy rollout against each other
    /// device's, same scheme plan.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub greedy_vs_devices: BTreeMap<String, usize>,
    /// Teacher-forced (prefill) throughput: positions / seconds of the device's forwards.
    #[serde(with = "json_f64")]
    pub tokens_per_s: f64,
    /// (qdiff addition) Greedy decode throughput, one token per forward.
    #[serde(default, with = "json_f64")]
    pub decode_tokens_per_s: f64,
    /// (qdiff addition) The first positions whose top-1 flipped (at most 32).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flips: Vec<Flip>,
    /// (qdiff addition) The device's greedy tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub greedy: Vec<u32>,
}

fn fp32() -> String {
    "fp32".into()
}
fn ok() -> String {
    "ok".into()
}

/// One op case on one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpResult {
    /// Stable id of the case (the same case on every device shares it).
    pub case_id: String,
    /// The op.
    pub op: String,
    /// The scheme name.
    pub scheme: String,
    /// The device id.
    pub device: String,
    /// The device-side variant.
    pub variant: serde_json::Value,
    /// The main shape (`[N, K]`, `[M, N, K]` for linear, `[M, K]` for act_quant).
    pub shape: Vec<usize>,
    /// The case seed.
    pub seed: u64,
    /// The verdict.
    pub verdict: Verdict,
    /// Metrics (absent for `unsupported` and `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// Why: the unsupported reason, the error, the first mismatching output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The injected fault, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject: Option<String>,
    /// Device time of the case, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_seconds: Option<f64>,
    /// Relative path of the case file written for a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_file: Option<String>,
}

/// Errors writing or reading results.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// I/O on a path.
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// JSON that does not parse as results.
    #[error("{path}: {source}")]
    Json { path: String, source: serde_json::Error },
}

/// Write `bytes` to `path` atomically: a temporary file in the same folder, then a rename, so a
/// reader never sees a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let io = |source| ReportError::Io { path: path.display().to_string(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp =
        dir.join(format!(".{}.tmp{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("out"), std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

impl Results {
    /// An empty `results.json` of a run on `devices`: sections are filled by whoever ran it.
    pub fn new(run: RunInfo, devices: Vec<DeviceEntry>) -> Results {
        Results {
            schema_version: SCHEMA_VERSION,
            run,
            devices,
            summary: Summary::default(),
            op_results: Vec::new(),
            model_results: Vec::new(),
            models: Vec::new(),
            bench_results: Vec::new(),
            device_peaks: Vec::new(),
            regressions: Vec::new(),
        }
    }

    /// Write as pretty JSON, atomically.
    pub fn write(&self, path: &Path) -> Result<(), ReportError> {
        let text = serde_json::to_vec_pretty(self)
            .map_err(|source| ReportError::Json { path: path.display().to_string(), source })?;
        write_atomic(path, &text)
    }
    /// Read and parse.
    pub fn read(path: &Path) -> Result<Results, ReportError> {
        let text =
            std::fs::read(path).map_err(|source| ReportError::Io { path: path.display().to_string(), source })?;
        serde_json::from_slice(&text).map_err(|source| ReportError::Json { path: path.display().to_string(), source })
    }
}

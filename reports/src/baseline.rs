//! Regressions of a run against a baseline run (`--baseline RESULTS.json`): every op verdict,
//! model metric and benchmark of the new run is matched with the baseline's by identity (case id
//! and device; model, plan and device; device, kernel, scheme, shape and cold), and each that got
//! worse beyond its threshold is a [`Regression`]. What the baseline has and the run lacks (or the
//! reverse) is coverage, not a regression.
//!
//! - A verdict got worse: ranks `exact` < `within_tolerance` < `mismatch` < `nondeterministic` <
//!   `error` < `timeout` < `crash`; `unsupported` counts as `within_tolerance` (nothing ran, so
//!   nothing got better or worse unless it used to be exact).
//! - A model's top-1 agreement dropped by more than `top1_drop` (absolute), or its mean KLD rose
//!   by more than `kld_rise` (relative), or it errored where the baseline did not.
//! - A benchmark got slower beyond its noise band, judged from the repeated samples: the faster
//!   quartile of the new samples is slower than the slower quartile of the baseline's by more
//!   than `slowdown` (relative). Two runs whose sample ranges overlap in their middle halves never
//!   regress, whatever their medians say. A benchmark that failed where the baseline measured is
//!   a regression too.

use serde::{Deserialize, Serialize};

use crate::{BenchResult, ModelResult, OpResult, Results, Verdict};

/// How much worse counts as a regression.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Absolute drop of top-1 agreement (0.02 = two points).
    pub top1_drop: f64,
    /// Relative rise of the mean KLD (0.25 = 25 % more).
    pub kld_rise: f64,
    /// Relative slowdown of a benchmark beyond its noise band (0.10 = 10 %).
    pub slowdown: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { top1_drop: 0.02, kld_rise: 0.25, slowdown: 0.10 }
    }
}

/// One regression (cli.md `regressions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    /// What got worse, named so a reader finds it (`linear q4_0 [1, 4096, 4096] on cpu: slower`).
    pub what: String,
    /// The baseline's figure.
    pub baseline: serde_json::Value,
    /// This run's figure.
    pub now: serde_json::Value,
}

/// How bad a verdict is (see the module docs).
fn rank(v: Verdict) -> u8 {
    match v {
        Verdict::Exact => 0,
        Verdict::WithinTolerance | Verdict::Unsupported => 1,
        Verdict::Mismatch => 2,
        Verdict::Nondeterministic => 3,
        Verdict::Error => 4,
        Verdict::Timeout => 5,
        Verdict::Crash => 6,
    }
}

fn op_key(r: &OpResult) -> (&str, &str) {
    (&r.case_id, &r.device)
}

fn model_key(r: &ModelResult) -> (&str, &str, &str, &str, &str) {
    (&r.model, &r.scheme, &r.head_scheme, &r.embed_scheme, &r.device)
}

fn bench_key(r: &BenchResult) -> (&str, &str, &str, &[usize], bool) {
    (&r.device, &r.kernel, &r.scheme, &r.shape, r.cold)
}

/// The `q`-quantile (nearest rank) of `r`'s samples; the recorded min / median / max when the
/// samples were not kept.
fn quantile(r: &BenchResult, q: f64) -> f64 {
    if r.samples_s.is_empty() {
        return if q <= 0.25 {
            r.min_s
        } else if q >= 0.75 {
            r.max_s
        } else {
            r.median_s
        };
    }
    let mut s = r.samples_s.clone();
    s.sort_by(f64::total_cmp);
    let i = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}

/// Every regression of `now` against `base`.
pub fn regressions(now: &Results, base: &Results, th: &Thresholds) -> Vec<Regression> {
    let mut out = Vec::new();
    let j = |v: f64| serde_json::json!(v);
    for r in &now.op_results {
        let Some(b) = base.op_results.iter().find(|b| op_key(b) == op_key(r)) else { continue };
        if rank(r.verdict) > rank(b.verdict) {
            out.push(Regression {
                what: format!("{} {} {} on {}: verdict", r.op, r.scheme, r.case_id, r.device),
                baseline: serde_json::json!(b.verdict.name()),
                now: serde_json::json!(r.verdict.name()),
            });
        }
    }
    for r in &now.model_results {
        let Some(b) = base.model_results.iter().find(|b| model_key(b) == model_key(r)) else { continue };
        let what = |m: &str| format!("{} {} on {}: {m}", r.model, r.scheme, r.device);
        if r.status != "ok" {
            if b.status == "ok" {
                out.push(Regression {
                    what: what("status"),
                    baseline: b.status.clone().into(),
                    now: r.status.clone().into(),
                });
            }
            continue;
        }
        if b.status != "ok" {
            continue;
        }
        if b.top1_agreement - r.top1_agreement > th.top1_drop {
            out.push(Regression {
                what: what("top-1 agreement"),
                baseline: j(b.top1_agreement),
                now: j(r.top1_agreement),
            });
        }
        if r.kld_mean > b.kld_mean * (1.0 + th.kld_rise) && r.kld_mean - b.kld_mean > f64::EPSILON {
            out.push(Regression { what: what("KLD mean"), baseline: j(b.kld_mean), now: j(r.kld_mean) });
        }
    }
    for r in &now.bench_results {
        let Some(b) = base.bench_results.iter().find(|b| bench_key(b) == bench_key(r)) else { continue };
        let shape = r.shape.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("x");
        let what = |m: &str| format!("{} {} {shape} on {}: {m}", r.kernel, r.scheme, r.device);
        match (&r.error, &b.error) {
            (Some(e), None) => {
                out.push(Regression { what: what("failed"), baseline: j(b.median_s), now: e.clone().into() });
                continue;
            }
            (Some(_), Some(_)) | (None, Some(_)) => continue,
            (None, None) => {}
        }
        let (fast_now, slow_base) = (quantile(r, 0.25), quantile(b, 0.75));
        if fast_now > slow_base * (1.0 + th.slowdown) {
            out.push(Regression { what: what("slower (median seconds)"), baseline: j(b.median_s), now: j(r.median_s) });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RunInfo;
    use proptest::prelude::*;

    fn results(bench: Vec<BenchResult>, models: Vec<ModelResult>, ops: Vec<OpResult>) -> Results {
        Results {
            op_results: ops,
            model_results: models,
            bench_results: bench,
            ..Results::new(RunInfo::default(), Vec::new())
        }
    }

    fn bench(samples: &[f64]) -> BenchResult {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        BenchResult {
            device: "cpu".into(),
            kernel: "linear".into(),
            scheme: "q4_0".into(),
            shape: vec![1, 64, 64],
            samples: s.len(),
            median_s: s[s.len() / 2],
            min_s: s[0],
            max_s: s[s.len() - 1],
            samples_s: samples.to_vec(),
            ..BenchResult::default()
        }
    }

    fn model(top1: f64, kld: f64) -> ModelResult {
        let text = r#"{"model": "m", "scheme": "q4_0", "device": "cpu", "positions": 100, "top1_agree": 90,
            "top1_agreement": 0.9, "top1_stderr": 0.03, "top5_overlap": 0.9, "kld_mean": 0.1, "kld_p99": 0.5,
            "kld_max": 1.0, "greedy_tokens": 8, "greedy_identical_prefix": 8, "tokens_per_s": 10.0}"#;
        let mut m: ModelResult = serde_json::from_str(text).unwrap();
        (m.top1_agreement, m.kld_mean) = (top1, kld);
        m
    }

    #[test]
    fn slower_beyond_the_noise_band_is_a_regression_and_overlap_is_not() {
        let th = Thresholds::default();
        let base = results(vec![bench(&[1.0, 1.02, 1.01, 0.99, 1.03])], vec![], vec![]);
        let slow = results(vec![bench(&[1.3, 1.31, 1.29, 1.35, 1.32])], vec![], vec![]);
        let noisy = results(vec![bench(&[0.9, 1.5, 1.0, 1.6, 1.02])], vec![], vec![]);
        let r = regressions(&slow, &base, &th);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].what.contains("linear q4_0 1x64x64 on cpu: slower"), "{}", r[0].what);
        assert!(regressions(&noisy, &base, &th).is_empty(), "overlapping middle halves are noise");
        assert!(regressions(&base, &slow, &th).is_empty(), "faster is not a regression");
    }

    #[test]
    fn model_metrics_and_verdicts_regress_past_their_thresholds() {
        let th = Thresholds::default();
        let base = results(vec![], vec![model(0.90, 0.10)], vec![]);
        assert!(regressions(&results(vec![], vec![model(0.885, 0.12)], vec![]), &base, &th).is_empty());
        let r = regressions(&results(vec![], vec![model(0.85, 0.20)], vec![]), &base, &th);
        let whats: Vec<&str> = r.iter().map(|r| r.what.as_str()).collect();
        assert_eq!(whats, ["m q4_0 on cpu: top-1 agreement", "m q4_0 on cpu: KLD mean"]);

        let op = |v: Verdict| -> OpResult {
            serde_json::from_value(serde_json::json!({"case_id": "c1", "op": "linear", "scheme": "q4_0",
                "device": "vulkan:0", "variant": {}, "shape": [1], "seed": 0, "verdict": v.name()}))
            .unwrap()
        };
        let ops = |v| results(vec![], vec![], vec![op(v)]);
        assert_eq!(regressions(&ops(Verdict::WithinTolerance), &ops(Verdict::Exact), &th).len(), 1);
        assert_eq!(regressions(&ops(Verdict::Crash), &ops(Verdict::Mismatch), &th).len(), 1);
        assert!(regressions(&ops(Verdict::Exact), &ops(Verdict::Mismatch), &th).is_empty());
        assert!(regressions(&ops(Verdict::Unsupported), &ops(Verdict::WithinTolerance), &th).is_empty());
    }

    proptest! {
        /// A run never regresses against itself, and uniformly slower samples (by more than the
        /// threshold and the spread) always do.
        #[test]
        fn self_comparison_is_clean_and_uniform_slowdown_is_caught(
            samples in prop::collection::vec(1e-6f64..1.0, 1..40), factor in 1.0f64..5.0,
        ) {
            let th = Thresholds::default();
            let base = results(vec![bench(&samples)], vec![model(0.8, 0.2)], vec![]);
            prop_assert!(regressions(&base, &base, &th).is_empty());
            let max = samples.iter().copied().fold(0.0, f64::max);
            let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
            // Every new sample beyond the baseline's slowest by more than the threshold.
            let shift = max * (1.0 + th.slowdown) * factor / min;
            let slower: Vec<f64> = samples.iter().map(|s| s * shift * 1.0001).collect();
            let now = results(vec![bench(&slower)], vec![], vec![]);
            prop_assert_eq!(regressions(&now, &base, &th).len(), 1);
        }
    }
}

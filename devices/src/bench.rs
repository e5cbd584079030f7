//! Benchmark plumbing every device shares: how many samples to take ([`BenchPlan`]), the sample
//! loop ([`sample`]), what comes back ([`Samples`]) and the device's measured peaks ([`Peaks`]).
//!
//! A device benchmarks a case by preparing it once (packing or uploading the weights, compiling
//! the kernels), then timing only the kernel: warm-up runs, then samples until both the minimum
//! count and the time budget are met, or the maximum count is reached. `cold` runs the device's
//! cache flush before every sample (warm-up included), outside the timed region.
//!
//! Peaks are measured by the device's own kernels in the same run: a stream read (every byte of
//! a buffer several times the last-level cache read once, reduced to one value per thread), a
//! copy (read + write of such a buffer) and an FMA-throughput kernel (independent chains of fused
//! multiply-adds in registers on every core or invocation). A kernel's bandwidth is reported as
//! a fraction of `peak_gbps`, the best of read and copy bandwidth, so figures compare across
//! machines.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::case::{Timing, TimingMethod};

/// How long and how often to sample one benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BenchPlan {
    /// Untimed runs first (caches, clocks, pipeline creation).
    pub warmup: usize,
    /// Samples at least.
    pub min_samples: usize,
    /// Samples at most.
    pub max_samples: usize,
    /// Keep sampling until this much wall time has passed (and `min_samples` are taken).
    pub budget: Duration,
    /// Flush the device's caches before each sample.
    pub cold: bool,
}

impl Default for BenchPlan {
    fn default() -> Self {
        BenchPlan { warmup: 2, min_samples: 5, max_samples: 100, budget: Duration::from_millis(1000), cold: false }
    }
}

/// The timed samples of one benchmark, in the order taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    /// Seconds per sample.
    pub seconds: Vec<f64>,
    /// How they were measured: `device` only when every sample was.
    pub method: TimingMethod,
}

impl Samples {
    /// The median (the mean of the two middle samples for an even count); 0 when empty.
    pub fn median(&self) -> f64 {
        let mut s = self.seconds.clone();
        s.sort_by(f64::total_cmp);
        match s.len() {
            0 => 0.0,
            n if n % 2 == 1 => s[n / 2],
            n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
        }
    }

    /// The fastest sample; 0 when empty.
    pub fn min(&self) -> f64 {
        self.seconds.iter().copied().min_by(f64::total_cmp).unwrap_or(0.0)
    }

    /// The slowest sample; 0 when empty.
    pub fn max(&self) -> f64 {
        self.seconds.iter().copied().max_by(f64::total_cmp).unwrap_or(0.0)
    }
}

/// A device's measured peaks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Peaks {
    /// Stream read: bytes read / median time, GB/s.
    pub read_gbps: f64,
    /// Copy: bytes read + bytes written / median time, GB/s.
    pub copy_gbps: f64,
    /// FMA throughput, 2 FLOPs per fused multiply-add, GFLOP/s (f32).
    pub fma_gflops: f64,
    /// Size of the buffer the bandwidth kernels stream, bytes.
    pub buffer_bytes: u64,
    /// How the peak kernels were timed.
    pub method: TimingMethod,
}

impl Peaks {
    /// The bandwidth a kernel is judged against: the best of read and copy.
    pub fn peak_gbps(&self) -> f64 {
        self.read_gbps.max(self.copy_gbps)
    }
}

/// Samples of a kernel whose single run outlasts the budget (see [`sample`]).
pub const SLOW_SAMPLES: usize = 3;

/// Runs `plan` over `run`, which executes the prepared kernel once and says how long it took;
/// `flush` is called before every run when `plan.cold`. The first error ends the loop.
pub fn sample<E>(
    plan: &BenchPlan,
    mut flush: impl FnMut(),
    mut run: impl FnMut() -> Result<Timing, E>,
) -> Result<Samples, E> {
    // A kernel whose one run outlasts the whole budget (a big shape on a software rasterizer)
    // gets one warm-up run and at most SLOW_SAMPLES samples: still repeated, so the median and
    // the spread stay honest, without minutes per figure.
    let mut slow = false;
    for _ in 0..plan.warmup {
        if plan.cold {
            flush();
        }
        if run()?.seconds > plan.budget.as_secs_f64() {
            slow = true;
            break;
        }
    }
    let min = if slow { plan.min_samples.min(SLOW_SAMPLES) } else { plan.min_samples }.max(1);
    let start = Instant::now();
    let mut seconds = Vec::new();
    let mut method = TimingMethod::Device;
    let max = plan.max_samples.max(min);
    while seconds.len() < max && (seconds.len() < min || start.elapsed() < plan.budget) {
        if plan.cold {
            flush();
        }
        let t = run()?;
        if t.method == TimingMethod::System {
            method = TimingMethod::System;
        }
        seconds.push(t.seconds);
    }
    Ok(Samples { seconds, method })
}

/// Wall-clock time of `f`, as a [`TimingMethod::System`] timing.
pub fn wall<T>(f: impl FnOnce() -> T) -> (T, Timing) {
    let start = Instant::now();
    let out = f();
    (out, Timing { seconds: start.elapsed().as_secs_f64(), method: TimingMethod::System })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(s: f64) -> Timing {
        Timing { seconds: s, method: TimingMethod::Device }
    }

    #[test]
    fn statistics_of_samples() {
        let s = Samples { seconds: vec![3.0, 1.0, 2.0, 10.0], method: TimingMethod::System };
        assert_eq!((s.median(), s.min(), s.max()), (2.5, 1.0, 10.0));
        let odd = Samples { seconds: vec![5.0, 1.0, 4.0], method: TimingMethod::System };
        assert_eq!(odd.median(), 4.0);
        let none = Samples { seconds: vec![], method: TimingMethod::System };
        assert_eq!((none.median(), none.min(), none.max()), (0.0, 0.0, 0.0));
    }

    #[test]
    fn sample_honours_counts_warmup_and_flush() {
        let plan =
            BenchPlan { warmup: 3, min_samples: 4, max_samples: 6, budget: Duration::from_secs(3600), cold: true };
        let (mut runs, mut flushes) = (0, 0);
        let s = sample::<()>(
            &plan,
            || flushes += 1,
            || {
                runs += 1;
                Ok(timing(runs as f64))
            },
        )
        .unwrap();
        // The budget is not met, so the maximum count ends the loop; warm-up runs are not samples.
        assert_eq!(s.seconds, vec![4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        assert_eq!((runs, flushes), (9, 9));
        assert_eq!(s.method, TimingMethod::Device);

        let quick = BenchPlan { warmup: 0, min_samples: 2, max_samples: 50, budget: Duration::ZERO, cold: false };
        let s =
            sample::<()>(&quick, || panic!("not cold"), || Ok(Timing { seconds: 1.0, method: TimingMethod::System }))
                .unwrap();
        assert_eq!(s.seconds.len(), 2, "a spent budget stops at the minimum count");
        assert_eq!(s.method, TimingMethod::System);
    }

    #[test]
    fn a_run_longer_than_the_budget_takes_one_warmup_and_three_samples() {
        let plan =
            BenchPlan { warmup: 4, min_samples: 10, max_samples: 20, budget: Duration::from_millis(5), cold: false };
        let mut runs = 0;
        let s = sample::<()>(
            &plan,
            || {},
            || {
                runs += 1;
                std::thread::sleep(Duration::from_millis(6));
                Ok(timing(0.006))
            },
        )
        .unwrap();
        assert_eq!((runs, s.seconds.len()), (1 + SLOW_SAMPLES, SLOW_SAMPLES));
    }

    #[test]
    fn sample_stops_at_the_first_error() {
        let mut n = 0;
        let r = sample(
            &BenchPlan::default(),
            || {},
            || {
                n += 1;
                if n == 4 {
                    Err("lost")
                } else {
                    Ok(timing(1.0))
                }
            },
        );
        assert_eq!(r, Err("lost"));
        assert_eq!(n, 4);
    }
}

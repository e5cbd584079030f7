//! Teacher-forced comparison of a device's logits with the oracle's: the numbers a model card
//! publishes.
//!
//! Per position (one row of logits each): the top-1 of each, the top-5 overlap, the KL divergence
//! `KL(P_oracle ‖ P_device)` of the softmax distributions, and `Δp = p_oracle(t) − p_device(t)`
//! for the oracle's top token `t`. Softmaxes are computed in f64 with the maximum subtracted.
//! Ties in the arg-max go to the lowest token id on both sides. A device row with a NaN or an
//! infinity has KLD = +∞ and never agrees.

/// The comparison of one position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PositionStats {
    /// The oracle's top token.
    pub oracle_top1: u32,
    /// The device's top token.
    pub device_top1: u32,
    /// `|top5(oracle) ∩ top5(device)| / 5`.
    pub top5_overlap: f64,
    /// `KL(P_oracle ‖ P_device)` in nats (≥ 0; +∞ for a non-finite device row).
    pub kld: f64,
    /// `p_oracle(t) − p_device(t)` for the oracle's top token `t`.
    pub delta_p: f64,
}

/// Indices of the `k` largest values, largest first, ties to the lower index. NaN ranks lowest.
pub fn top_k(row: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let key = |i: u32| {
        let v = row[i as usize];
        if v.is_nan() {
            f32::NEG_INFINITY
        } else {
            v
        }
    };
    let k = k.min(row.len());
    if k == 0 {
        return Vec::new();
    }
    let cmp = |a: &u32, b: &u32| key(*b).total_cmp(&key(*a)).then(a.cmp(b));
    idx.select_nth_unstable_by(k - 1, cmp);
    idx.truncate(k);
    idx.sort_by(cmp);
    idx
}

/// `log softmax` of a row in f64.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    let sum: f64 = row.iter().map(|&v| libm::exp(f64::from(v) - m)).sum();
    let lse = m + libm::log(sum);
    row.iter().map(|&v| f64::from(v) - lse).collect()
}

/// Compares one position's rows (same length).
pub fn compare_row(oracle: &[f32], device: &[f32]) -> PositionStats {
    let o5 = top_k(oracle, 5);
    let d5 = top_k(device, 5);
    let overlap = o5.iter().filter(|t| d5.contains(t)).count() as f64 / o5.len().max(1) as f64;
    let ot = o5.first().copied().unwrap_or(0);
    let lo = log_softmax(oracle);
    if device.iter().any(|v| !v.is_finite()) {
        return PositionStats {
            oracle_top1: ot,
            device_top1: u32::MAX,
            top5_overlap: overlap,
            kld: f64::INFINITY,
            delta_p: libm::exp(lo[ot as usize]),
        };
    }
    let ld = log_softmax(device);
    let kld: f64 = lo.iter().zip(&ld).map(|(&a, &b)| libm::exp(a) * (a - b)).sum();
    PositionStats {
        oracle_top1: ot,
        device_top1: d5.first().copied().unwrap_or(0),
        top5_overlap: overlap,
        // Rounding can make a tiny true KLD negative; it is ≥ 0 by definition.
        kld: kld.max(0.0),
        delta_p: libm::exp(lo[ot as usize]) - libm::exp(ld[ot as usize]),
    }
}

/// Aggregates over positions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Agreement {
    /// Positions compared.
    pub positions: usize,
    /// Positions whose top-1 agree.
    pub top1_agree: usize,
    /// `top1_agree / positions`.
    pub top1_agreement: f64,
    /// `sqrt(p (1 − p) / N)`.
    pub top1_stderr: f64,
    /// Mean top-5 overlap.
    pub top5_overlap: f64,
    /// Mean KLD.
    pub kld_mean: f64,
    /// Median KLD (mean of the two middle values for an even count).
    pub kld_median: f64,
    /// 99th percentile KLD, nearest rank.
    pub kld_p99: f64,
    /// Largest KLD.
    pub kld_max: f64,
    /// RMS of Δp.
    pub delta_p_rms: f64,
}

/// Summarizes per-position stats (an empty slice gives zeros with `positions = 0`).
pub fn summarize(stats: &[PositionStats]) -> Agreement {
    let n = stats.len();
    if n == 0 {
        return Agreement::default();
    }
    let agree = stats.iter().filter(|s| s.oracle_top1 == s.device_top1).count();
    let p = agree as f64 / n as f64;
    let mut k: Vec<f64> = stats.iter().map(|s| s.kld).collect();
    k.sort_by(f64::total_cmp);
    let median = if n % 2 == 1 { k[n / 2] } else { (k[n / 2 - 1] + k[n / 2]) / 2.0 };
    let rank = ((0.99 * n as f64).ceil() as usize).clamp(1, n);
    Agreement {
        positions: n,
        top1_agree: agree,
        top1_agreement: p,
        top1_stderr: (p * (1.0 - p) / n as f64).sqrt(),
        top5_overlap: stats.iter().map(|s| s.top5_overlap).sum::<f64>() / n as f64,
        kld_mean: k.iter().sum::<f64>() / n as f64,
        kld_median: median,
        kld_p99: k[rank - 1],
        kld_max: k[n - 1],
        delta_p_rms: (stats.iter().map(|s| s.delta_p * s.delta_p).sum::<f64>() / n as f64).sqrt(),
    }
}

/// Length of the common prefix of two token sequences.
pub fn identical_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn identical_rows_agree_with_zero_kld() {
        let row = [0.5f32, 3.0, -1.0, 2.0, 2.0, 0.0, 7.0];
        let s = compare_row(&row, &row);
        assert_eq!(s.oracle_top1, 6);
        assert_eq!(s.device_top1, 6);
        assert_eq!(s.top5_overlap, 1.0);
        assert_eq!(s.kld, 0.0);
        assert_eq!(s.delta_p, 0.0);
    }

    #[test]
    fn kld_of_two_point_distributions() {
        // P = softmax(0, 0) = (1/2, 1/2); Q = softmax(ln 3, 0) = (3/4, 1/4):
        // KL = 1/2 ln(2/3) + 1/2 ln(2) = 1/2 ln(4/3).
        let s = compare_row(&[0.0, 0.0], &[3f32.ln(), 0.0]);
        assert!((s.kld - 0.5 * (4.0f64 / 3.0).ln()).abs() < 1e-7, "{}", s.kld);
        assert_eq!(s.oracle_top1, 0); // tie goes to the lower id
        assert_eq!(s.device_top1, 0);
    }

    #[test]
    fn non_finite_device_rows_never_agree() {
        let s = compare_row(&[1.0, 0.0], &[f32::NAN, 0.0]);
        assert_eq!(s.kld, f64::INFINITY);
        assert_ne!(s.device_top1, s.oracle_top1);
        let a = summarize(&[s]);
        assert_eq!(a.top1_agree, 0);
        assert_eq!(a.kld_max, f64::INFINITY);
    }

    #[test]
    fn summary_statistics() {
        let mk = |kld: f64, agree: bool| PositionStats {
            oracle_top1: 1,
            device_top1: if agree { 1 } else { 2 },
            top5_overlap: 1.0,
            kld,
            delta_p: 0.1,
        };
        let stats: Vec<_> = (0..100).map(|i| mk(i as f64, i % 4 != 0)).collect();
        let a = summarize(&stats);
        assert_eq!(a.top1_agree, 75);
        assert!((a.top1_stderr - (0.75f64 * 0.25 / 100.0).sqrt()).abs() < 1e-15);
        assert_eq!(a.kld_p99, 98.0);
        assert_eq!(a.kld_max, 99.0);
        assert_eq!(a.kld_median, 49.5);
        assert!((a.delta_p_rms - 0.1).abs() < 1e-15);
        assert_eq!(identical_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
    }

    proptest! {
        #[test]
        fn kld_is_nonnegative_and_zero_only_for_shifted_copies(
            row in prop::collection::vec(-20f32..20.0, 2..64),
            shift in -5f32..5.0,
            noise in prop::collection::vec(-1f32..1.0, 64),
        ) {
            // Adding a constant to every logit does not change the distribution.
            let shifted: Vec<f32> = row.iter().map(|v| v + shift).collect();
            let s = compare_row(&row, &shifted);
            prop_assert!(s.kld < 1e-5, "{}", s.kld);
            let noisy: Vec<f32> = row.iter().zip(&noise).map(|(v, n)| v + n).collect();
            let t = compare_row(&row, &noisy);
            prop_assert!(t.kld >= 0.0);
            prop_assert!((0.0..=1.0).contains(&t.top5_overlap));
            let top = top_k(&row, row.len());
            prop_assert_eq!(top.len(), row.len());
            for w in top.windows(2) {
                let (a, b) = (row[w[0] as usize], row[w[1] as usize]);
                prop_assert!(a > b || (a == b && w[0] < w[1]));
            }
        }
    }
}

//! coremltools palettization (schemes.md §2.4): `pal{n}-pt`, `pal{n}g{C}`, `pal{n}-pcs-col`,
//! `pal{n}-pcs-row`, each with a k-means (default) or `-uniform` LUT.
//!
//! Framework k-means (sklearn k-means++, kmeans1d) is not reproducible across library versions, so
//! the LUT qdiff builds itself is a deterministic 1-D Lloyd k-means in f64 over the sorted values
//! (quantile initialisation, lower index wins ties), and a given LUT can be passed instead
//! ([`quantize`] with `Some(lut)`), after which indices and decompression are exact.
//! With a per-channel scale, `W ⊘ s` is taken in the weight dtype (coremltools divides in place),
//! the LUT is built over the normalized weights, and decompression is `s ⊗ lut[idx]` in the weight
//! dtype (`constexpr_blockwise_shift_scale`).

use super::{Family, LutGranularity, LutMode, PcsAxis, Quantized, Scheme};
use crate::dtype::DType;
use crate::error::{RefError, Result};
use crate::round::rne;
use crate::tensor::Matrix;

/// Deterministic 1-D k-means: at most `k` centroids, ascending, computed in f64.
pub fn kmeans_1d(values: &[f64], k: usize) -> Vec<f64> {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let mut distinct = v.clone();
    distinct.dedup();
    if distinct.len() <= k {
        return distinct;
    }
    let n = v.len();
    let mut c: Vec<f64> = (0..k).map(|i| v[((2 * i + 1) * n) / (2 * k)]).collect();
    c.dedup();
    for _ in 0..200 {
        // Sorted values and sorted centroids: cluster j owns the values between the midpoints.
        let mut sums = vec![0f64; c.len()];
        let mut counts = vec![0usize; c.len()];
        let mut j = 0;
        for &x in &v {
            while j + 1 < c.len() && (x - c[j]).abs() > (c[j + 1] - x).abs() {
                j += 1;
            }
            sums[j] += x;
            counts[j] += 1;
        }
        let next: Vec<f64> = c
            .iter()
            .enumerate()
            .map(|(i, &old)| if counts[i] > 0 { sums[i] / counts[i] as f64 } else { old })
            .collect();
        if next == c {
            break;
        }
        c = next;
        c.sort_by(|a, b| a.total_cmp(b));
    }
    c
}

/// Index of the LUT entry nearest to `x` (the first one wins ties).
pub fn nearest_index(lut: &[f64], x: f64) -> usize {
    let mut best = 0;
    for (i, &l) in lut.iter().enumerate() {
        if (x - l).abs() < (x - lut[best]).abs() {
            best = i;
        }
    }
    best
}

/// Palettize `x`. With `given_lut` (`[n_luts, 2^bits]` row-major), the LUT is taken as is and only
/// the indices are computed.
pub fn quantize(s: &Scheme, x: &Matrix, given_lut: Option<&[f32]>) -> Result<Quantized> {
    let Family::Pal { bits, lut: lg, pcs, mode } = s.family else { unreachable!("pal::quantize on {s}") };
    let t = s.dtype;
    let levels = 1usize << bits;
    let (rows, cols) = (x.rows, x.cols);
    let mut w: Vec<f64> = x.data.iter().map(|&v| t.round(v as f64)).collect();
    // Per-channel scale, folded out of the weights before palettization.
    let (scales, scale_shape) = match pcs {
        None => (Vec::new(), [0, 0]),
        Some(axis) => {
            let (n, shape) = match axis {
                PcsAxis::Col => (cols, [1, cols]),
                PcsAxis::Row => (rows, [rows, 1]),
            };
            let mut sc = vec![0f64; n];
            for r in 0..rows {
                for c in 0..cols {
                    let i = if axis == PcsAxis::Col { c } else { r };
                    sc[i] = sc[i].max(w[r * cols + c].abs());
                }
            }
            for v in sc.iter_mut() {
                if *v == 0.0 {
                    *v = 1.0;
                }
            }
            for r in 0..rows {
                for c in 0..cols {
                    let i = if axis == PcsAxis::Col { c } else { r };
                    w[r * cols + c] = t.div(w[r * cols + c], sc[i]);
                }
            }
            (sc.into_iter().map(|v| v as f32).collect(), shape)
        }
    };
    let rows_per_lut = match lg {
        LutGranularity::Tensor => rows,
        LutGranularity::GroupedChannels(c) => {
            if c == 0 || rows % c != 0 {
                return Err(RefError::GroupSize {
                    op: s.to_string(),
                    group: c,
                    axis: "rows (output channels)".into(),
                    len: rows,
                });
            }
            c
        }
    };
    let n_luts = rows / rows_per_lut.max(1);
    if let Some(l) = given_lut {
        if l.len() != n_luts * levels {
            return Err(RefError::shape(
                s.to_string(),
                format!("given LUT has {} entries, expected [{n_luts}, {levels}] = {}", l.len(), n_luts * levels),
            ));
        }
        if let Some((i, v)) = l.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(RefError::BadValue { op: s.to_string(), what: "lut".into(), index: i, value: *v as f64 });
        }
    }
    let mut q = vec![0i32; w.len()];
    let mut luts = vec![0f32; n_luts * levels];
    for g in 0..n_luts {
        let span = g * rows_per_lut * cols..(g + 1) * rows_per_lut * cols;
        let vals = &w[span.clone()];
        let lut: Vec<f64> = match given_lut {
            Some(l) => l[g * levels..(g + 1) * levels].iter().map(|&v| t.round(v as f64)).collect(),
            None => build_lut(mode, t, vals, levels),
        };
        match (given_lut, mode) {
            (None, LutMode::Uniform) => {
                let (vmin, vmax) = min_max(vals);
                let steps = (levels - 1) as f64;
                for (k, &v) in vals.iter().enumerate() {
                    let y = rne(t.mul(t.div(t.sub(v, vmin), t.sub(vmax, vmin)), steps));
                    q[span.start + k] = if y.is_nan() { 0 } else { y.clamp(0.0, steps) as i32 };
                }
            }
            _ => {
                for (k, &v) in vals.iter().enumerate() {
                    q[span.start + k] = nearest_index(&lut, v) as i32;
                }
            }
        }
        for (i, &l) in lut.iter().enumerate() {
            luts[g * levels + i] = l as f32;
        }
    }
    Ok(Quantized {
        scheme: *s,
        shape: x.shape(),
        q,
        scales,
        scale_shape,
        zero_points: None,
        zero_point_shape: None,
        lut: Some(luts),
        lut_shape: Some([n_luts, levels]),
        quantize_scales: None,
        extra: None,
    })
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)))
}

fn build_lut(mode: LutMode, t: DType, vals: &[f64], levels: usize) -> Vec<f64> {
    let mut lut = match mode {
        LutMode::Kmeans => kmeans_1d(vals, levels).into_iter().map(|c| t.round(c)).collect::<Vec<_>>(),
        LutMode::Uniform => {
            // `s = (vmax − vmin)/(2^n − 1)` is a T scalar; `np.array(range(2^n)) * s + vmin` is an
            // int64 array times a (strongly typed) numpy T scalar, which NumPy ≥ 2 promotes to f64;
            // the LUT is then cast to the weight dtype.
            let (vmin, vmax) = min_max(vals);
            let s = t.div(t.sub(vmax, vmin), (levels - 1) as f64);
            (0..levels).map(|i| t.round(i as f64 * s + vmin)).collect()
        }
    };
    lut.resize(levels, 0.0);
    lut
}

/// `lut[idx]`, times the per-channel scale in the weight dtype when there is one.
pub fn dequantize(s: &Scheme, q: &Quantized) -> Result<Vec<f32>> {
    let Family::Pal { bits, pcs, .. } = s.family else { unreachable!("pal::dequantize on {s}") };
    let t = s.dtype;
    let levels = 1usize << bits;
    let [rows, cols] = q.shape;
    let lut = q.lut.as_deref().ok_or_else(|| RefError::shape(s.to_string(), "palettized tensor without a LUT"))?;
    let n_luts = q.lut_shape.map_or(1, |s| s[0]).max(1);
    let rows_per_lut = rows / n_luts;
    let mut out = vec![0f32; rows * cols];
    for r in 0..rows {
        let g = r / rows_per_lut.max(1);
        for c in 0..cols {
            let i = r * cols + c;
            let idx = q.q[i] as usize;
            if idx >= levels {
                return Err(RefError::BadValue {
                    op: s.to_string(),
                    what: "index".into(),
                    index: i,
                    value: idx as f64,
                });
            }
            let v = lut[g * levels + idx] as f64;
            out[i] = match pcs {
                None => v as f32,
                Some(PcsAxis::Col) => t.mul(q.scales[c] as f64, v) as f32,
                Some(PcsAxis::Row) => t.mul(q.scales[r] as f64, v) as f32,
            };
        }
    }
    Ok(out)
}

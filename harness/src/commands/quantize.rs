//! `qdiff quantize --scheme NAME --input TENSOR.json [--json]`: the reference, one tensor at a time.

use crate::tensor_io::read_tensor;
use crate::Exit;
use anyhow::{anyhow, Context};
use kernels_ref::scheme::{Family, Quantized, Scheme};
use serde::Serialize;
use std::path::Path;

/// The cli.md output object of a quantized tensor (plus `quantize_scales` and, for q4_K, the raw
/// block fields where a scheme has them). f32 fields serialize as f32 (shortest round-trip text).
#[derive(Debug, Serialize)]
pub struct QuantizeOutput<'a> {
    /// Canonical scheme name.
    pub scheme: String,
    /// `[rows, cols]`.
    pub shape: [usize; 2],
    /// Integer codes.
    pub q: &'a [i32],
    /// Stored scales.
    pub scales: &'a [f32],
    /// Shape of `scales`.
    pub scale_shape: [usize; 2],
    /// Zero-points or float offsets (null when symmetric).
    pub zero_points: Option<&'a [f32]>,
    /// Shape of `zero_points`.
    pub zero_point_shape: Option<[usize; 2]>,
    /// Palettization LUTs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lut: Option<&'a [f32]>,
    /// Shape of `lut`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lut_shape: Option<[usize; 2]>,
    /// The dequantized tensor.
    pub dequant: &'a [f32],
    /// Scales the codes were computed with, where they differ from the stored ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantize_scales: Option<&'a [f64]>,
    /// ggml Q4_K raw fields (`d`, `dmin`, `sc`, `m`).
    #[serde(rename = "q4_K", skip_serializing_if = "Option::is_none")]
    pub q4_k: Option<&'a serde_json::Value>,
}

/// Build the output object.
pub fn output<'a>(q: &'a Quantized, dequant: &'a [f32]) -> QuantizeOutput<'a> {
    QuantizeOutput {
        scheme: q.scheme.to_string(),
        shape: q.shape,
        q: &q.q,
        scales: &q.scales,
        scale_shape: q.scale_shape,
        zero_points: q.zero_points.as_deref(),
        zero_point_shape: q.zero_point_shape,
        lut: q.lut.as_deref(),
        lut_shape: q.lut_shape,
        dequant,
        quantize_scales: q.quantize_scales.as_deref(),
        q4_k: q.extra.as_ref(),
    }
}

/// Quantize and dequantize a tensor file with a scheme.
pub fn quantize_file(scheme: &str, input: &Path) -> anyhow::Result<(Quantized, Vec<f32>, Vec<f32>)> {
    let s: Scheme = scheme.parse().map_err(|e| anyhow!("{e}"))?;
    let t = read_tensor(input)?;
    let file = input.display().to_string();
    let q = match (s.family, &t.lut) {
        (Family::Pal { .. }, Some(lut)) => kernels_ref::scheme::pal::quantize(&s, &t.matrix, Some(lut)),
        (_, Some(_)) => {
            Err(kernels_ref::RefError::unsupported(scheme, "a \"lut\" is only meaningful for palettized schemes"))
        }
        (_, None) => s.quantize(&t.matrix),
    }
    .map_err(|e| anyhow!("{file}: {e}"))?;
    let dq = s.dequantize(&q).map_err(|e| anyhow!("{file}: {e}"))?;
    Ok((q, dq, t.matrix.data))
}

/// Run the command.
pub fn run(scheme: &str, input: &Path, as_json: bool, out: &mut dyn std::io::Write) -> anyhow::Result<Exit> {
    let (q, dq, x) = quantize_file(scheme, input)?;
    if as_json {
        writeln!(out, "{}", serde_json::to_string(&output(&q, &dq)).context("serializing the result")?)?;
        return Ok(Exit::Clean);
    }
    let [rows, cols] = q.shape;
    writeln!(out, "scheme      {}", q.scheme)?;
    writeln!(out, "shape       [{rows}, {cols}]   qparams [{}, {}]", q.scale_shape[0], q.scale_shape[1])?;
    let (mut max_err, mut se, mut ss) = (0f64, 0f64, 0f64);
    for (&a, &b) in x.iter().zip(&dq) {
        let d = (a as f64 - b as f64).abs();
        max_err = max_err.max(d);
        se += d * d;
        ss += (a as f64) * (a as f64);
    }
    let nmse = if ss > 0.0 { se / ss } else { 0.0 };
    writeln!(out, "error       max |x - dq(q(x))| = {max_err:.6e}   nmse = {nmse:.6e}")?;
    let show = q.scales.len().min(8);
    if show > 0 {
        writeln!(out, "scales      {:?}{}", &q.scales[..show], if q.scales.len() > show { " ..." } else { "" })?;
    }
    if let Some(z) = &q.zero_points {
        let n = z.len().min(8);
        writeln!(out, "zero_points {:?}{}", &z[..n], if z.len() > n { " ..." } else { "" })?;
    }
    if let Some(l) = &q.lut {
        let n = l.len().min(16);
        writeln!(out, "lut         {:?}{}", &l[..n], if l.len() > n { " ..." } else { "" })?;
    }
    for r in 0..rows.min(4) {
        let codes = &q.q[r * cols..r * cols + cols.min(32)];
        writeln!(out, "row {r:<7} q {:?}{}", codes, if cols > 32 { " ..." } else { "" })?;
    }
    writeln!(out, "(use --json for every code, scale, zero-point and the dequantized tensor)")?;
    Ok(Exit::Clean)
}

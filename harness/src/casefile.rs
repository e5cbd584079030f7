//! Case files (cli.md "Case files"): one self-contained JSON object that replays anywhere.
//!
//! Every float travels as its exact bit pattern (`"bits": ["3f800000", ...]`, 8 hex digits per
//! f32; 16 per f64 for ExecuTorch's double scales) next to a readable `"data"` copy; on reading,
//! the bits are authoritative and a `data` that disagrees with them is an error (a hand edit
//! that went wrong), so a case file can never silently replay something else. The case carries
//! the op, scheme, variant, injected fault, inputs, the device it was found on, the verdict and
//! metrics at the time, and optionally the worst elements and a kernel export.

use anyhow::{anyhow, bail, Context, Result};
use devices::case::{Fault, Op, OpCase, Variant};
use kernels_ref::scheme::{Quantized, Scheme};
use kernels_ref::tensor::Matrix;
use reports::{DeviceEntry, Metrics, Verdict};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The case-file format version (`"qdiff_case": 1`).
pub const CASE_FORMAT: u32 = 1;

/// A file-name-safe version of a case id or name (`/`, `:` and the like become `_`).
pub fn file_name_safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@') { c } else { '_' }).collect()
}

/// An f32 tensor with its exact bits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExactTensor {
    /// Always `"f32"`.
    pub dtype: String,
    /// Shape (`[rows, cols]`, or `[n]` for a vector).
    pub shape: Vec<usize>,
    /// Bit patterns, 8 lowercase hex digits each, row-major. Authoritative.
    pub bits: Vec<String>,
    /// The same values as JSON numbers, for people (non-finite values as strings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<serde_json::Value>>,
}

impl ExactTensor {
    /// From values and a shape.
    pub fn new(shape: Vec<usize>, values: &[f32]) -> Self {
        ExactTensor {
            dtype: "f32".into(),
            shape,
            bits: values.iter().map(|v| format!("{:08x}", v.to_bits())).collect(),
            data: Some(values.iter().map(|&v| number(v)).collect()),
        }
    }
    /// The values, checked: dtype, shape against length, bits well formed, data agreeing.
    pub fn values(&self, at: &str) -> Result<Vec<f32>> {
        if self.dtype != "f32" {
            bail!("{at}.dtype: `{}`: case files carry f32 tensors", self.dtype);
        }
        let n: usize = self
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| anyhow!("{at}.shape overflows"))?;
        if n != self.bits.len() {
            bail!("{at}: shape {:?} needs {n} values, bits has {}", self.shape, self.bits.len());
        }
        let mut out = Vec::with_capacity(n);
        for (i, b) in self.bits.iter().enumerate() {
            let t = b.trim_start_matches("0x");
            if t.len() != 8 {
                bail!("{at}.bits[{i}]: `{b}` is not 8 hex digits");
            }
            let u = u32::from_str_radix(t, 16).map_err(|_| anyhow!("{at}.bits[{i}]: `{b}` is not hex"))?;
            out.push(f32::from_bits(u));
        }
        if let Some(data) = &self.data {
            if data.len() != out.len() {
                bail!("{at}.data has {} values, bits has {}", data.len(), out.len());
            }
            for (i, (d, v)) in data.iter().zip(&out).enumerate() {
                let parsed = crate::tensor_io::parse_f32_token(&d.to_string());
                let agrees = parsed.is_some_and(|p| p.to_bits() == v.to_bits() || (p.is_nan() && v.is_nan()));
                if !agrees {
                    bail!("{at}.data[{i}] = {d} disagrees with bits {} ({v:e}); the bits are authoritative: fix or drop `data`", self.bits[i]);
                }
            }
        }
        Ok(out)
    }
    /// As a `[rows, cols]` matrix.
    pub fn matrix(&self, at: &str) -> Result<Matrix> {
        let v = self.values(at)?;
        let [r, c] = match self.shape[..] {
            [r, c] => [r, c],
            [n] => [1, n],
            _ => bail!("{at}.shape {:?}: a matrix is [rows, cols]", self.shape),
        };
        Ok(Matrix::new(r, c, v)?)
    }
}

/// A finite f32 as a JSON number (shortest round-trip text), a non-finite one as a string.
fn number(v: f32) -> serde_json::Value {
    if v.is_finite() {
        serde_json::Value::from(v)
    } else if v.is_nan() {
        "NaN".into()
    } else if v > 0.0 {
        "Infinity".into()
    } else {
        "-Infinity".into()
    }
}

/// Quantized weights with exact bits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExactQuantized {
    /// `[rows, cols]`.
    pub shape: [usize; 2],
    /// Integer codes.
    pub q: Vec<i32>,
    /// Stored scales.
    pub scales: ExactTensor,
    /// Zero-points / float offsets.
    #[serde(default)]
    pub zero_points: Option<ExactTensor>,
    /// LUTs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lut: Option<ExactTensor>,
    /// Quantize-time scales (f64 bits, 16 hex digits), where they differ from the stored ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize_scales: Option<Vec<String>>,
    /// Scheme-specific raw storage (q4_K `d`, `dmin`, `sc`, `m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
}

impl ExactQuantized {
    /// From a reference [`Quantized`].
    pub fn new(q: &Quantized) -> Self {
        ExactQuantized {
            shape: q.shape,
            q: q.q.clone(),
            scales: ExactTensor::new(q.scale_shape.to_vec(), &q.scales),
            zero_points: q
                .zero_points
                .as_ref()
                .map(|z| ExactTensor::new(q.zero_point_shape.unwrap_or(q.scale_shape).to_vec(), z)),
            lut: q.lut.as_ref().map(|l| ExactTensor::new(q.lut_shape.map_or(vec![l.len()], |s| s.to_vec()), l)),
            quantize_scales: q
                .quantize_scales
                .as_ref()
                .map(|v| v.iter().map(|x| format!("{:016x}", x.to_bits())).collect()),
            extra: q.extra.clone(),
        }
    }
    /// Back to a [`Quantized`] of `scheme`, checked.
    pub fn quantized(&self, scheme: Scheme, at: &str) -> Result<Quantized> {
        let [r, c] = self.shape;
        if self.q.len() != r * c {
            bail!("{at}.q has {} codes, shape {:?} needs {}", self.q.len(), self.shape, r * c);
        }
        let two = |t: &ExactTensor, name: &str| -> Result<[usize; 2]> {
            match t.shape[..] {
                [a, b] => Ok([a, b]),
                _ => bail!("{at}.{name}.shape {:?}: expected [rows, cols]", t.shape),
            }
        };
        let quantize_scales = match &self.quantize_scales {
            None => None,
            Some(v) => Some(
                v.iter()
                    .enumerate()
                    .map(|(i, b)| {
                        u64::from_str_radix(b.trim_start_matches("0x"), 16)
                            .map(f64::from_bits)
                            .map_err(|_| anyhow!("{at}.quantize_scales[{i}]: `{b}` is not 16 hex digits"))
                    })
                    .collect::<Result<Vec<f64>>>()?,
            ),
        };
        Ok(Quantized {
            scheme,
            shape: self.shape,
            q: self.q.clone(),
            scales: self.scales.values(&format!("{at}.scales"))?,
            scale_shape: two(&self.scales, "scales")?,
            zero_points: self.zero_points.as_ref().map(|z| z.values(&format!("{at}.zero_points"))).transpose()?,
            zero_point_shape: self.zero_points.as_ref().map(|z| two(z, "zero_points")).transpose()?,
            lut: self.lut.as_ref().map(|l| l.values(&format!("{at}.lut"))).transpose()?,
            lut_shape: self.lut.as_ref().map(|l| two(l, "lut")).transpose()?,
            quantize_scales,
            extra: self.extra.clone(),
        })
    }
}

/// The inputs of a case.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inputs {
    /// Float weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w: Option<ExactTensor>,
    /// Quantized weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wq: Option<ExactQuantized>,
    /// Activations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<ExactTensor>,
    /// Embedding ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<u32>>,
}

/// One worst element, for people reading a case: where it is and what was expected vs found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorstElement {
    /// Output name (`values`, `acc`, `q`, ...).
    pub output: String,
    /// Flat index.
    pub index: usize,
    /// Row, column (and group where the output has groups).
    pub at: Vec<usize>,
    /// Expected value.
    pub expected: serde_json::Value,
    /// Found value.
    pub found: serde_json::Value,
    /// Anything else that explains it (the code, scale and zero-point involved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// A whole case file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// [`CASE_FORMAT`].
    pub qdiff_case: u32,
    /// The op.
    pub op: Op,
    /// The scheme name.
    pub scheme: String,
    /// The main shape (as in results).
    pub shape: Vec<usize>,
    /// The case seed.
    pub seed: u64,
    /// Device-side choices.
    #[serde(default)]
    pub variant: Variant,
    /// The injected fault.
    #[serde(default)]
    pub inject: Option<Fault>,
    /// The inputs.
    pub inputs: Inputs,
    /// The device it was found on.
    #[serde(default)]
    pub found_on: Option<DeviceEntry>,
    /// The verdict at the time.
    #[serde(default)]
    pub verdict: Option<Verdict>,
    /// The metrics at the time.
    #[serde(default)]
    pub metrics: Option<Metrics>,
    /// Why.
    #[serde(default)]
    pub note: Option<String>,
    /// The worst elements at the time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worst: Vec<WorstElement>,
    /// The kernel and data needed to reproduce it outside qdiff, where the device provides them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<serde_json::Value>,
}

impl CaseFile {
    /// A case file for `case` as found on `found_on` with this verdict.
    pub fn new(
        case: &OpCase,
        shape: Vec<usize>,
        seed: u64,
        found_on: Option<DeviceEntry>,
        verdict: Option<Verdict>,
        metrics: Option<Metrics>,
        note: Option<String>,
    ) -> Self {
        CaseFile {
            qdiff_case: CASE_FORMAT,
            op: case.op,
            scheme: case.scheme.to_string(),
            shape,
            seed,
            variant: case.variant.clone(),
            inject: case.inject,
            inputs: Inputs {
                w: case.w.as_ref().map(|m| ExactTensor::new(vec![m.rows, m.cols], &m.data)),
                wq: case.wq.as_ref().map(ExactQuantized::new),
                x: case.x.as_ref().map(|m| ExactTensor::new(vec![m.rows, m.cols], &m.data)),
                ids: case.ids.clone(),
            },
            found_on,
            verdict,
            metrics,
            note,
            worst: Vec::new(),
            export: None,
        }
    }

    /// The op case it replays, checked field by field (errors name the JSON path).
    pub fn op_case(&self) -> Result<OpCase> {
        if self.qdiff_case != CASE_FORMAT {
            bail!("qdiff_case: {} (this qdiff reads format {CASE_FORMAT})", self.qdiff_case);
        }
        let scheme: Scheme = self.scheme.parse().map_err(|e| anyhow!("scheme: {e}"))?;
        Ok(OpCase {
            op: self.op,
            scheme,
            variant: self.variant.clone(),
            inject: self.inject,
            w: self.inputs.w.as_ref().map(|t| t.matrix("inputs.w")).transpose()?,
            wq: self.inputs.wq.as_ref().map(|q| q.quantized(scheme, "inputs.wq")).transpose()?,
            x: self.inputs.x.as_ref().map(|t| t.matrix("inputs.x")).transpose()?,
            ids: self.inputs.ids.clone(),
        })
    }

    /// Write atomically (nothing half-written).
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self)?;
        reports::write_atomic(path, &text)?;
        Ok(())
    }

    /// Read and check a case file; errors say which file and which field.
    pub fn read(path: &Path) -> Result<(CaseFile, OpCase)> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
        let cf: CaseFile = serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let case = cf.op_case().map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
        Ok((cf, case))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_survive_the_round_trip_including_odd_values() {
        let vals = [0.0, -0.0, 1.0, f32::MIN_POSITIVE / 8.0, f32::MAX, -1.5e-7, 0.1, f32::INFINITY];
        let t = ExactTensor::new(vec![2, 4], &vals);
        let back: ExactTensor = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        let got = back.values("x").unwrap();
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            vals.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_data_copy_that_disagrees_with_the_bits_is_refused() {
        let mut t = ExactTensor::new(vec![1, 2], &[1.0, 2.0]);
        t.data.as_mut().unwrap()[1] = serde_json::json!(2.5);
        let e = t.values("inputs.x").unwrap_err().to_string();
        assert!(e.contains("inputs.x.data[1]") && e.contains("disagrees"), "{e}");
        t.bits[0] = "3f8".into();
        assert!(t.values("inputs.x").unwrap_err().to_string().contains("inputs.x.bits[0]"));
    }

    #[test]
    fn a_quantized_case_replays_identically() {
        let s: Scheme = "q4_K".parse().unwrap();
        let w = Matrix::new(2, 256, (0..512).map(|i| ((i * 7919) % 1000) as f32 / 333.0 - 1.5).collect()).unwrap();
        let case = OpCase {
            op: Op::Dequantize,
            scheme: s,
            variant: Variant::default(),
            inject: Some(Fault::NibbleSwap),
            wq: Some(s.quantize(&w).unwrap()),
            w: Some(w),
            x: None,
            ids: None,
        };
        let cf = CaseFile::new(&case, vec![2, 256], 9, None, Some(Verdict::Mismatch), None, None);
        let text = serde_json::to_string(&cf).unwrap();
        let back: CaseFile = serde_json::from_str(&text).unwrap();
        assert_eq!(back.op_case().unwrap(), case);
    }
}

//! Reading `TENSOR.json` files exactly: every number is parsed straight to the nearest f32 from
//! its decimal text (never through an f64, which could double-round), `"bits"` carries raw f32 bit
//! patterns, and the strings `"NaN"`, `"Infinity"`, `"-Infinity"` are accepted so that a scheme can
//! reject them by index rather than the file being unreadable.

use anyhow::{anyhow, bail, Context, Result};
use kernels_ref::tensor::Matrix;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::path::Path;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensor<'a> {
    shape: Vec<u64>,
    #[serde(borrow, default)]
    data: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    bits: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    lut: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    dtype: Option<String>,
}

/// A tensor read from a file, with an optional palettization LUT.
#[derive(Debug, Clone)]
pub struct TensorFile {
    /// The tensor as `[rows, cols]` (a 1-D shape `[n]` is read as `[1, n]`).
    pub matrix: Matrix,
    /// A LUT given with the tensor (palettized schemes), row-major `[n_luts, 2^bits]`.
    pub lut: Option<Vec<f32>>,
}

/// Parse one JSON number token (or a non-finite string) to the nearest f32.
pub fn parse_f32_token(tok: &str) -> Option<f32> {
    let t = tok.trim();
    match t {
        "\"NaN\"" | "\"nan\"" => Some(f32::NAN),
        "\"Infinity\"" | "\"inf\"" => Some(f32::INFINITY),
        "\"-Infinity\"" | "\"-inf\"" => Some(f32::NEG_INFINITY),
        _ if t.starts_with('"') => None,
        _ => t.parse::<f32>().ok().filter(|_| t.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))),
    }
}

fn parse_bits_token(tok: &str) -> Option<f32> {
    let t = tok.trim();
    let v = if let Some(s) = t.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        let h = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
        u32::from_str_radix(h, 16).ok()?
    } else {
        t.parse::<u32>().ok()?
    };
    Some(f32::from_bits(v))
}

fn values(file: &str, field: &str, toks: &[&RawValue], f: fn(&str) -> Option<f32>) -> Result<Vec<f32>> {
    toks.iter()
        .enumerate()
        .map(|(i, t)| {
            f(t.get()).ok_or_else(|| {
                anyhow!("{file}: {field}[{i}] = {} is not an f32 value", t.get().chars().take(40).collect::<String>())
            })
        })
        .collect()
}

/// Parse the text of a TENSOR.json file; `file` names it in errors.
pub fn parse_tensor(file: &str, text: &str) -> Result<TensorFile> {
    let raw: RawTensor = serde_json::from_str(text).map_err(|e| anyhow!("{file}: malformed tensor JSON: {e}"))?;
    if let Some(d) = &raw.dtype {
        if d != "f32" && d != "float32" {
            bail!("{file}: dtype `{d}` is not supported here (tensor files carry f32 values)");
        }
    }
    let (rows, cols) = match raw.shape.as_slice() {
        [n] => (1u64, *n),
        [r, c] => (*r, *c),
        other => bail!("{file}: shape {other:?} must have 1 or 2 dimensions"),
    };
    let data = match (&raw.data, &raw.bits) {
        (Some(d), None) => values(file, "data", d, parse_f32_token)?,
        (None, Some(b)) => values(file, "bits", b, parse_bits_token)?,
        (Some(_), Some(_)) => bail!("{file}: give either \"data\" or \"bits\", not both"),
        (None, None) => bail!("{file}: missing field \"data\" (or \"bits\")"),
    };
    let n = rows.checked_mul(cols).filter(|&n| n <= usize::MAX as u64);
    if n != Some(data.len() as u64) {
        bail!(
            "{file}: shape [{rows}, {cols}] needs {} values but the data has {}",
            rows as u128 * cols as u128,
            data.len()
        );
    }
    if rows == 0 || cols == 0 {
        bail!("{file}: shape [{rows}, {cols}] is empty");
    }
    let lut = raw.lut.as_ref().map(|l| values(file, "lut", l, parse_f32_token)).transpose()?;
    let matrix = Matrix::new(rows as usize, cols as usize, data).with_context(|| file.to_string())?;
    Ok(TensorFile { matrix, lut })
}

/// Read and parse a TENSOR.json file.
pub fn read_tensor(path: &Path) -> Result<TensorFile> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("{name}: cannot read: {e}"))?;
    parse_tensor(&name, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_parses_straight_to_f32() {
        // 0.1f32's shortest repr and a value whose f64 rounding would sit on an f32 midpoint.
        assert_eq!(parse_f32_token("0.1"), Some(0.1f32));
        assert_eq!(parse_f32_token("-0.0").map(f32::to_bits), Some((-0.0f32).to_bits()));
        // Just above the f32 midpoint 1 + 2^-24 (by ~1e-16): the nearest f32 is 1 + 2^-23, but the
        // nearest f64 is the midpoint itself, which would then tie to even 1.0.
        let s = "1.0000000596046448802993464888960475428";
        assert_eq!(parse_f32_token(s), Some(1.0000001f32));
        assert!(parse_f32_token("\"NaN\"").unwrap().is_nan());
        assert_eq!(parse_f32_token("\"x\""), None);
        assert_eq!(parse_f32_token("true"), None);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let e = parse_tensor("t.json", r#"{"shape":[2,2],"data":[1,2,3]}"#).unwrap_err().to_string();
        assert!(e.contains("t.json") && e.contains("needs 4 values") && e.contains("has 3"), "{e}");
        let e = parse_tensor("t.json", r#"{"shape":[1,2],"data":[1,"a"]}"#).unwrap_err().to_string();
        assert!(e.contains("data[1]"), "{e}");
        let e = parse_tensor("t.json", r#"{"shape":[1,2],"data":[1,2]"#).unwrap_err().to_string();
        assert!(e.contains("malformed"), "{e}");
        let e = parse_tensor("t.json", r#"{"shape":[1,2,3],"data":[1,2]}"#).unwrap_err().to_string();
        assert!(e.contains("1 or 2 dimensions"), "{e}");
        let t = parse_tensor("t.json", r#"{"shape":[2],"bits":["0x3f800000", 1065353216]}"#).unwrap();
        assert_eq!(t.matrix.data, vec![1.0, 1.0]);
    }
}

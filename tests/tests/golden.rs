//! The reference against vectors produced by the real frameworks (gguf-py and C ggml, MLX,
//! torchao, coremltools): codes, stored scales, zero-points, LUTs and dequantized values must match
//! bit for bit, through the library and through `qdiff quantize --json`.

use kernels_ref::scheme::{Family, LutMode, Scheme};
use kernels_ref::tensor::Matrix;
use qdiff_e2e::{bits, golden_files, qdiff, GoldenVector};

fn input_matrix(v: &GoldenVector) -> Matrix {
    let shape: Vec<usize> = serde_json::from_value(v.input["shape"].clone()).unwrap();
    let data: Vec<f64> = serde_json::from_value(v.input["data"].clone()).unwrap();
    Matrix::new(shape[0], shape[1], data.into_iter().map(|x| x as f32).collect()).unwrap()
}

/// Compare one field, returning a readable description of the first difference.
fn first_diff<T: PartialEq + std::fmt::Debug>(what: &str, got: &[T], want: &[T]) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("{what}: length {} vs expected {}", got.len(), want.len()));
    }
    let n = got.iter().zip(want).filter(|(a, b)| a != b).count();
    got.iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .map(|i| format!("{what}: {n} differ, first at [{i}]: got {:?}, expected {:?}", got[i], want[i]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Vectors made from fixed bytes (gguf-py can only dequantize Q4_K): unpack the framework's bytes
/// and dequantize them with the reference.
fn check_dequant_only(file: &str, v: &GoldenVector, s: &Scheme) -> Vec<String> {
    let e = &v.expected;
    let x = input_matrix(v);
    let mut q = s.quantize(&x).unwrap(); // right shapes and scheme; every field is overwritten
    let bytes = unhex(e.packed_hex.as_deref().expect("dequant-only vectors carry bytes"));
    if let Err(err) = kernels_ref::pack::unpack(s.packing(), &bytes, &mut q) {
        return vec![format!("{file} {}: unpack: {err}", v.id)];
    }
    let dq = s.dequantize(&q).unwrap();
    let q_i64: Vec<i64> = q.q.iter().map(|&c| c as i64).collect();
    let mut errs = Vec::new();
    errs.extend(first_diff("q", &q_i64, &e.q));
    errs.extend(first_diff("dequant (bits)", &bits(dq.iter().map(|&x| x as f64)), &bits(e.dequant.iter().copied())));
    errs.into_iter().map(|m| format!("{file} {} [{}]: {m}", v.id, v.scheme)).collect()
}

fn check_vector(file: &str, v: &GoldenVector) -> Vec<String> {
    let s: Scheme = v.scheme.parse().unwrap_or_else(|e| panic!("{file} {}: {e}", v.id));
    if v.dequant_only {
        return check_dequant_only(file, v, &s);
    }
    let x = input_matrix(v);
    let e = &v.expected;
    let q = match (s.family, &e.lut) {
        // Framework k-means is not reproducible: k-means vectors give the LUT, and the reference
        // must find the same indices and decompress identically. Uniform LUTs are recomputed.
        (Family::Pal { mode: LutMode::Kmeans, .. }, Some(lut)) => {
            let lut: Vec<f32> = lut.iter().map(|&x| x as f32).collect();
            kernels_ref::scheme::pal::quantize(&s, &x, Some(&lut)).unwrap()
        }
        _ => s.quantize(&x).unwrap(),
    };
    let dq = s.dequantize(&q).unwrap();
    let mut errs = Vec::new();
    let q_i64: Vec<i64> = q.q.iter().map(|&c| c as i64).collect();
    errs.extend(first_diff("q", &q_i64, &e.q));
    let want_scales = e.scales.clone().unwrap_or_default();
    errs.extend(first_diff("scales (bits)", &bits(q.scales.iter().map(|&x| x as f64)), &bits(want_scales)));
    if let Some(shape) = &e.scale_shape {
        errs.extend(first_diff("scale_shape", &q.scale_shape[..], &shape[..]));
    }
    match (&q.zero_points, &e.zero_points) {
        (Some(a), Some(b)) => {
            errs.extend(first_diff("zero_points (bits)", &bits(a.iter().map(|&x| x as f64)), &bits(b.iter().copied())))
        }
        (None, None) => {}
        (a, b) => errs.push(format!("zero_points: got {}, expected {}", a.is_some(), b.is_some())),
    }
    if let (Some(a), Some(b)) = (&q.lut, &e.lut) {
        errs.extend(first_diff("lut (bits)", &bits(a.iter().map(|&x| x as f64)), &bits(b.iter().copied())));
    }
    errs.extend(first_diff("dequant (bits)", &bits(dq.iter().map(|&x| x as f64)), &bits(e.dequant.iter().copied())));
    if let Some(want_hex) = &e.packed_hex {
        match kernels_ref::pack::pack(s.packing(), &q) {
            Ok(bytes) => {
                let got = hex(&bytes);
                if &got != want_hex {
                    errs.push(format!(
                        "packed bytes differ: got {}.., expected {}..",
                        &got[..got.len().min(40)],
                        &want_hex[..want_hex.len().min(40)]
                    ));
                }
            }
            Err(err) => errs.push(format!("pack: {err}")),
        }
    }
    errs.into_iter().map(|m| format!("{file} {} [{}]: {m}", v.id, v.scheme)).collect()
}

#[test]
fn reference_reproduces_every_golden_vector_bit_for_bit() {
    let files = golden_files();
    assert!(files.len() >= 4, "expected the golden files of ggml, MLX, torchao and coremltools");
    let mut failures = Vec::new();
    let mut n = 0;
    for (file, g) in &files {
        assert_eq!(g.golden_format, 1, "{file}");
        assert!(!g.vectors.is_empty(), "{file} has no vectors");
        for v in &g.vectors {
            n += 1;
            failures.extend(check_vector(file, v));
        }
    }
    assert!(failures.is_empty(), "{} mismatches over {n} vectors:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn qdiff_quantize_cli_reproduces_the_golden_vectors() {
    let dir = std::env::temp_dir().join(format!("qdiff-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    for (file, g) in golden_files() {
        for v in &g.vectors {
            if v.dequant_only {
                continue;
            }
            let mut input = v.input.clone();
            if let (Some(lut), Ok(Family::Pal { mode: LutMode::Kmeans, .. })) =
                (&v.expected.lut, v.scheme.parse::<Scheme>().map(|s| s.family))
            {
                input["lut"] = serde_json::json!(lut);
            }
            let path = dir.join("in.json");
            std::fs::write(&path, serde_json::to_string(&input).unwrap()).unwrap();
            let out = qdiff(&["quantize", "--scheme", &v.scheme, "--input", path.to_str().unwrap(), "--json"]);
            if out.code != 0 {
                failures.push(format!("{file} {}: exit {}: {}", v.id, out.code, out.stderr));
                continue;
            }
            let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let q: Vec<i64> = serde_json::from_value(got["q"].clone()).unwrap();
            let scales: Vec<f64> = serde_json::from_value(got["scales"].clone()).unwrap();
            let want_scales = v.expected.scales.clone().unwrap_or_default();
            let dq: Vec<f64> = serde_json::from_value(got["dequant"].clone()).unwrap();
            let zps: Option<Vec<f64>> = serde_json::from_value(got["zero_points"].clone()).unwrap();
            let e = &v.expected;
            let mut bad = Vec::new();
            bad.extend(first_diff("q", &q, &e.q));
            bad.extend(first_diff("scales", &bits(scales), &bits(want_scales)));
            bad.extend(first_diff("dequant", &bits(dq), &bits(e.dequant.iter().copied())));
            if let (Some(a), Some(b)) = (&zps, &e.zero_points) {
                bad.extend(first_diff("zero_points", &bits(a.iter().copied()), &bits(b.iter().copied())));
            }
            failures.extend(bad.into_iter().map(|m| format!("{file} {}: {m}", v.id)));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

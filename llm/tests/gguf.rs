//! The GGUF reader and writer: bit-identity with gguf-py on the real SmolLM2 file and on small
//! blocks of every type, writer round trips against the catalogue, hand-built malformed files,
//! and fuzzing (random metadata round trips; truncated, flipped and overwritten files never panic
//! and never allocate much more than the file's size).

mod common;

use common::{seeded, unique, TempDir};

use kernels_ref::pack::{pack, Packing};
use kernels_ref::scheme::Scheme;
use kernels_ref::tensor::Matrix;
use models::gguf::{self, GgmlType, GgufFile};
use models::meta::MetaValue;
use models::ModelError;
use proptest::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// An allocator that records the largest single allocation made by a thread while it is armed.
// ---------------------------------------------------------------------------------------------

struct Tracking;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn note(size: usize) {
    let _ = ARMED.try_with(|a| {
        if a.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// Run `f` and return its result with the largest single allocation this thread made meanwhile.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    ARMED.with(|a| a.set(true));
    let r = f();
    ARMED.with(|a| a.set(false));
    (r, LARGEST.with(|l| l.get()))
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The example model, or `None` with the skip message (a failure under `QDIFF_REQUIRE_MODEL=1`).
fn model_path() -> Option<PathBuf> {
    models::example_model_for_tests()
}

fn golden() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/gguf_smollm2.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("golden file")).expect("golden JSON")
}

fn sha256_f32(v: &[f32]) -> String {
    let mut h = Sha256::new();
    for x in v {
        h.update(x.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn ggml_type(name: &str) -> GgmlType {
    GgmlType::ALL.into_iter().find(|t| t.name() == name).unwrap_or_else(|| panic!("type {name}"))
}

/// Write one tensor to a fresh GGUF and read it back dequantized.
fn round_trip(dir: &TempDir, dims: &[u64], ty: GgmlType, bytes: Vec<u8>) -> Matrix {
    let p = dir.path(&format!("t{}.gguf", unique()));
    gguf::write(&p, &[], &[("t".into(), dims.to_vec(), ty, bytes)]).expect("write");
    let g = GgufFile::open(&p).expect("open");
    g.tensor_f32("t").expect("tensor_f32")
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The `at` of a Malformed error (panics on anything else).
fn malformed_at(r: Result<GgufFile, ModelError>) -> (String, String) {
    match r {
        Err(ModelError::Malformed { at, detail, .. }) => (at, detail),
        Err(e) => panic!("expected Malformed, got {e}"),
        Ok(g) => panic!("expected Malformed, parsed {g:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The real model against gguf-py
// ---------------------------------------------------------------------------------------------

fn meta_type_name(v: &MetaValue) -> &'static str {
    match v {
        MetaValue::U8(_) => "UINT8",
        MetaValue::I8(_) => "INT8",
        MetaValue::U16(_) => "UINT16",
        MetaValue::I16(_) => "INT16",
        MetaValue::U32(_) => "UINT32",
        MetaValue::I32(_) => "INT32",
        MetaValue::F32(_) => "FLOAT32",
        MetaValue::Bool(_) => "BOOL",
        MetaValue::String(_) => "STRING",
        MetaValue::Array(_) => "ARRAY",
        MetaValue::U64(_) => "UINT64",
        MetaValue::I64(_) => "INT64",
        MetaValue::F64(_) => "FLOAT64",
    }
}

fn meta_matches_json(v: &MetaValue, j: &Value) -> bool {
    match v {
        MetaValue::String(s) => j.as_str() == Some(s),
        MetaValue::Bool(b) => j.as_bool() == Some(*b),
        MetaValue::F32(x) => j.as_f64().map(|y| y as f32) == Some(*x),
        MetaValue::F64(x) => j.as_f64() == Some(*x),
        MetaValue::Array(_) => false,
        other => other.as_i64().is_some_and(|x| j.as_i64() == Some(x)),
    }
}

#[test]
fn smollm2_header_and_metadata_match_gguf_py() {
    let Some(path) = model_path() else { return };
    let gold = golden();
    let m = &gold["model"];
    let g = GgufFile::open(&path).expect("open SmolLM2");
    assert_eq!(g.version as u64, m["version"].as_u64().unwrap());
    assert_eq!(g.tensors.len() as u64, m["tensor_count"].as_u64().unwrap());
    assert_eq!(g.alignment(), m["alignment"].as_u64().unwrap());
    assert_eq!(g.data_offset(), m["data_offset"].as_u64().unwrap());
    assert_eq!(g.len() as u64, m["size"].as_u64().unwrap());
    assert_eq!(g.sha256(), m["sha256"].as_str().unwrap());
    assert_eq!(g.sha256(), "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53");
    assert_eq!(g.storage_summary(), "Q4_1 x210, F32 x61, Q8_0 x1");

    let meta = m["metadata"].as_object().unwrap();
    assert_eq!(g.metadata.len(), meta.len(), "keys: {:?}", g.metadata.keys().collect::<Vec<_>>());
    for (key, want) in meta {
        let got = g.get(key).unwrap_or_else(|| panic!("key {key} missing"));
        assert_eq!(meta_type_name(got), want["type"].as_str().unwrap(), "type of {key}");
        match got {
            MetaValue::Array(items) => {
                assert_eq!(items.len() as u64, want["len"].as_u64().unwrap(), "length of {key}");
                for (i, (a, b)) in items.iter().zip(want["first"].as_array().unwrap()).enumerate() {
                    assert_eq!(meta_type_name(a), want["elem_type"].as_str().unwrap(), "{key}[{i}]");
                    assert!(meta_matches_json(a, b), "{key}[{i}]: {a:?} vs {b}");
                }
            }
            v => assert!(meta_matches_json(v, &want["value"]), "{key}: {v:?} vs {}", want["value"]),
        }
    }
}

#[test]
fn smollm2_dequantization_is_bit_identical_to_gguf_py() {
    let Some(path) = model_path() else { return };
    let gold = golden();
    let g = GgufFile::open(&path).expect("open SmolLM2");
    let tensors = gold["model"]["tensors"].as_array().unwrap();
    let mut types = std::collections::BTreeSet::new();
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let info = g.tensor(name).unwrap_or_else(|| panic!("{name} missing"));
        let dims: Vec<u64> = t["dims"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        assert_eq!(info.dims, dims, "{name}");
        assert_eq!(info.ty.name(), t["type"].as_str().unwrap(), "{name}");
        types.insert(info.ty.name());
        let m = g.tensor_f32(name).expect(name);
        assert_eq!(m.cols as u64, dims[0], "{name}");
        assert_eq!(m.rows as u64, dims[1..].iter().product::<u64>(), "{name}");
        let first: Vec<u32> = t["first_bits"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u32).collect();
        assert_eq!(bits(&m.data[..first.len()]), first, "{name}: first values");
        assert_eq!(sha256_f32(&m.data), t["sha256"].as_str().unwrap(), "{name}: sha256 of all values");
        let sum: f64 = m.data.iter().map(|&x| x as f64).sum();
        let abs: f64 = m.data.iter().map(|&x| (x as f64).abs()).sum();
        let want = t["sum"].as_f64().unwrap();
        assert!((sum - want).abs() <= 1e-12 * abs.max(1.0), "{name}: sum {sum} vs {want}");
    }
    assert_eq!(types.into_iter().collect::<Vec<_>>(), ["F32", "Q4_1", "Q8_0"]);
}

#[test]
fn smollm2_every_tensor_reads() {
    let Some(path) = model_path() else { return };
    let g = GgufFile::open(&path).expect("open SmolLM2");
    let mut n = 0u64;
    for t in &g.tensors {
        let m = g.tensor_f32(&t.name).expect(&t.name);
        assert!(m.data.iter().all(|x| x.is_finite()), "{}", t.name);
        n += m.data.len() as u64;
        assert_eq!(g.tensor_bytes(&t.name).unwrap().len() as u64, t.n_bytes().unwrap());
    }
    assert_eq!(n, 134_515_008);
}

// ---------------------------------------------------------------------------------------------
// Every other type, through the writer, against gguf-py and the catalogue
// ---------------------------------------------------------------------------------------------

#[test]
fn gguf_py_blocks_round_trip_bit_identically() {
    let gold = golden();
    let dir = TempDir::new("blocks");
    let blocks = gold["blocks"].as_array().unwrap();
    let mut seen = Vec::new();
    for b in blocks {
        let name = b["name"].as_str().unwrap();
        let ty = ggml_type(b["type"].as_str().unwrap());
        seen.push(ty);
        let dims: Vec<u64> = b["dims"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        let bytes = hex_bytes(b["hex"].as_str().unwrap());
        let m = round_trip(&dir, &dims, ty, bytes.clone());
        assert_eq!([m.cols as u64, m.rows as u64], [dims[0], dims[1]], "{name}");
        let first: Vec<u32> = b["first_bits"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u32).collect();
        assert_eq!(bits(&m.data[..first.len()]), first, "{name}");
        assert_eq!(sha256_f32(&m.data), b["sha256"].as_str().unwrap(), "{name}");
        // The free function gives the same bits.
        let direct = gguf::dequantize(ty, &bytes, m.rows, m.cols).unwrap();
        assert_eq!(bits(&direct), bits(&m.data), "{name}");
    }
    for ty in GgmlType::ALL.into_iter().filter(|t| *t != GgmlType::F32) {
        assert!(seen.contains(&ty), "no golden block of {ty}");
    }
}

#[test]
fn catalogue_blocks_read_back_as_the_catalogue_dequantizes() {
    let dir = TempDir::new("catalogue");
    for (scheme, packing, ty, cols) in [
        ("q4_0", Packing::GgmlQ4_0, GgmlType::Q4_0, 96),
        ("q4_1", Packing::GgmlQ4_1, GgmlType::Q4_1, 64),
        ("q8_0", Packing::GgmlQ8_0, GgmlType::Q8_0, 128),
        ("q4_K", Packing::GgmlQ4K, GgmlType::Q4K, 512),
    ] {
        let s: Scheme = scheme.parse().unwrap();
        for (rows, seed) in [(1usize, 1u64), (5, 2), (3, 3)] {
            let x = Matrix::new(rows, cols, seeded(rows * cols, seed, 0.2)).unwrap();
            let q = s.quantize(&x).unwrap();
            let bytes = pack(packing, &q).unwrap();
            let want = s.dequantize(&q).unwrap();
            let got = round_trip(&dir, &[cols as u64, rows as u64], ty, bytes);
            assert_eq!([got.rows, got.cols], [rows, cols]);
            assert_eq!(bits(&got.data), bits(&want), "{scheme} [{rows}, {cols}]");
        }
    }
}

#[test]
fn big_tensors_split_into_parallel_chunks_give_the_same_bits() {
    // More rows than one parallel chunk holds: chunking must not change anything.
    let s: Scheme = "q4_1".parse().unwrap();
    let (rows, cols) = (700, 256);
    let x = Matrix::new(rows, cols, seeded(rows * cols, 9, 1.0)).unwrap();
    let q = s.quantize(&x).unwrap();
    let bytes = pack(Packing::GgmlQ4_1, &q).unwrap();
    let got = gguf::dequantize(GgmlType::Q4_1, &bytes, rows, cols).unwrap();
    assert_eq!(bits(&got), bits(&s.dequantize(&q).unwrap()));
}

/// One Q6_K block worked out by hand from the format: d = 0.5, scales 2 (first half) and -3
/// (second half), every ql byte 0x21 (low nibble 1, high nibble 2) and every qh byte 0b11_10_01_00
/// (the four 2-bit fields 0, 1, 2, 3).
#[test]
fn q6k_hand_computed_block() {
    let mut block = vec![0u8; 210];
    block[0..128].fill(0x21);
    block[128..192].fill(0b1110_0100);
    for (i, s) in block[192..208].iter_mut().enumerate() {
        *s = if i < 8 { 2 } else { (-3i8) as u8 };
    }
    block[208..210].copy_from_slice(&0x3800u16.to_le_bytes()); // fp16 0.5
                                                               // Groups of 32 in each half of 128: q = low|qh0<<4, low(+32)|qh1<<4, high|qh2<<4, high(+32)|qh3<<4
                                                               //   = 1, 17, 34, 50; minus 32: -31, -15, 2, 18.
    let mut want = Vec::new();
    for sc in [2.0f32, -3.0] {
        for q in [-31.0f32, -15.0, 2.0, 18.0] {
            want.extend(std::iter::repeat_n(0.5 * sc * q, 32));
        }
    }
    let dir = TempDir::new("q6k");
    let got = round_trip(&dir, &[256], GgmlType::Q6K, block.clone());
    assert_eq!(got.data, want);
    assert_eq!(want[0], -31.0);
    assert_eq!(want[255], -27.0); // 0.5 · −3 · 18
}

/// Q6_K against a direct, element-by-element reading of the format definition (where each bit of
/// element j lives), over random blocks.
#[test]
fn q6k_matches_the_format_definition_elementwise() {
    let dir = TempDir::new("q6k-def");
    let nb = 3;
    let mut bytes: Vec<u8> = seeded(nb * 210, 17, 512.0).iter().map(|&x| (x as i32 & 0xff) as u8).collect();
    for b in 0..nb {
        let d = kernels_ref::dtype::f32_to_f16_bits(0.001 * (b as f32 + 1.0) * if b == 1 { -1.0 } else { 1.0 });
        bytes[b * 210 + 208..b * 210 + 210].copy_from_slice(&d.to_le_bytes());
    }
    let got = round_trip(&dir, &[256, nb as u64], GgmlType::Q6K, bytes.clone());
    for b in 0..nb {
        let blk = &bytes[b * 210..(b + 1) * 210];
        let d = kernels_ref::dtype::f16_bits_to_f32(u16::from_le_bytes([blk[208], blk[209]]));
        for j in 0..256 {
            let (half, r) = (j / 128, j % 128);
            let (g, l) = (r / 32, r % 32);
            let ql = blk[64 * half + l + 32 * (g % 2)];
            let low = if g < 2 { ql & 0xF } else { ql >> 4 };
            let high = (blk[128 + 32 * half + l] >> (2 * g)) & 3;
            let q = (low | (high << 4)) as i32 - 32;
            let sc = blk[192 + 8 * half + l / 16 + 2 * g] as i8;
            let want = (d * sc as f32) * q as f32;
            assert_eq!(got.data[b * 256 + j].to_bits(), want.to_bits(), "block {b} element {j}");
        }
    }
}

#[test]
fn float_types_round_trip() {
    let dir = TempDir::new("floats");
    let mut x = seeded(2 * 3 * 8, 5, 1000.0);
    x[0] = 0.0;
    x[1] = -0.0;
    x[2] = f32::INFINITY;
    x[3] = 1e-7; // an fp16 subnormal
    x[4] = f32::from_bits(0x7fc0_1234); // a NaN with payload: F32 keeps it
    let dims = [8u64, 3, 2];
    let m = round_trip(&dir, &dims, GgmlType::F32, gguf::f32_bytes(&x));
    assert_eq!([m.rows, m.cols], [6, 8]);
    assert_eq!(bits(&m.data), bits(&x));

    let m = round_trip(&dir, &dims, GgmlType::F16, gguf::f16_bytes(&x));
    let want: Vec<u32> = x.iter().map(|&v| half::f16::from_f32(v).to_f32().to_bits()).collect();
    assert_eq!(bits(&m.data[5..]), want[5..], "F16");
    assert_eq!(bits(&m.data[..4]), want[..4], "F16 zeros, inf, subnormal");
    assert!(m.data[4].is_nan());

    let m = round_trip(&dir, &dims, GgmlType::BF16, gguf::bf16_bytes(&x));
    let want: Vec<u32> = x.iter().map(|&v| half::bf16::from_f32(v).to_f32().to_bits()).collect();
    assert_eq!(bits(&m.data[5..]), want[5..], "BF16");
    assert!(m.data[4].is_nan());
}

// ---------------------------------------------------------------------------------------------
// Writer behaviour
// ---------------------------------------------------------------------------------------------

#[test]
fn writer_layout_accessors_and_alignment() {
    let dir = TempDir::new("layout");
    let p = dir.path("a.gguf");
    let meta = vec![
        ("general.architecture".to_string(), MetaValue::String("llama".into())),
        ("general.alignment".to_string(), MetaValue::U32(64)),
    ];
    let a = seeded(40, 1, 1.0);
    let b = seeded(64, 2, 1.0);
    gguf::write(
        &p,
        &meta,
        &[
            ("a".into(), vec![40], GgmlType::F32, gguf::f32_bytes(&a)),
            ("b".into(), vec![32, 2], GgmlType::F16, gguf::f16_bytes(&b)),
        ],
    )
    .unwrap();
    let g = GgufFile::open(&p).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.alignment(), 64);
    assert_eq!(g.data_offset() % 64, 0);
    assert_eq!(g.tensor("a").unwrap().offset, 0);
    assert_eq!(g.tensor("b").unwrap().offset, 192); // 160 bytes of `a`, aligned up to 64
    assert_eq!(g.len() as u64 % 64, 0);
    assert_eq!(g.get("general.architecture"), Some(&MetaValue::String("llama".into())));
    assert_eq!(g.tensor_bytes("a").unwrap(), gguf::f32_bytes(&a).as_slice());
    assert_eq!(g.storage_summary(), "F16 x1, F32 x1");
    assert!(g.tensor("c").is_none());
    assert!(matches!(g.tensor_f32("c"), Err(ModelError::Unsupported { .. })));
    assert_eq!(g.tensors.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    let digest = Sha256::digest(std::fs::read(&p).unwrap());
    assert_eq!(g.sha256(), digest.iter().map(|b| format!("{b:02x}")).collect::<String>());
    assert!(format!("{g:?}").contains("tensors: 2"));
}

#[test]
fn writer_refuses_bad_input_and_leaves_nothing_behind() {
    let dir = TempDir::new("writer-bad");
    let p = dir.path("m.gguf");
    let ok = ("t".to_string(), vec![32u64], GgmlType::F32, vec![0u8; 128]);
    type Case = (Vec<(String, MetaValue)>, Vec<gguf::RawTensor>, &'static str);
    let cases: Vec<Case> = vec![
        (vec![], vec![("t".into(), vec![32], GgmlType::F32, vec![0; 127])], "tensor t"),
        (vec![], vec![("t".into(), vec![33], GgmlType::Q8_0, vec![0; 34])], "tensor t"),
        (vec![], vec![("t".into(), vec![], GgmlType::F32, vec![])], "tensor t"),
        (vec![], vec![("t".into(), vec![1, 1, 1, 1, 1], GgmlType::F32, vec![0; 4])], "tensor t"),
        (vec![], vec![("t".into(), vec![0], GgmlType::F32, vec![])], "tensor t"),
        (vec![], vec![ok.clone(), ok.clone()], "tensor t"),
        (vec![("k".into(), MetaValue::U8(1)), ("k".into(), MetaValue::U8(2))], vec![ok.clone()], "key k"),
        (vec![("k".into(), MetaValue::Array(vec![MetaValue::U8(1), MetaValue::I8(2)]))], vec![ok.clone()], "key k"),
        (vec![("general.alignment".into(), MetaValue::U32(48))], vec![ok.clone()], "key general.alignment"),
    ];
    for (meta, tensors, want_at) in cases {
        match gguf::write(&p, &meta, &tensors) {
            Err(ModelError::Malformed { at, .. }) => assert_eq!(at, want_at),
            other => panic!("expected Malformed at {want_at}, got {other:?}"),
        }
        assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
    }
    // An unwritable place: an Io error, and nothing left.
    let r = gguf::write(&dir.path("no/such/dir/m.gguf"), &[], std::slice::from_ref(&ok));
    assert!(matches!(r, Err(ModelError::Io { .. })), "{r:?}");
    assert!(dir.entries().is_empty());
    // A failed write keeps the previous file intact.
    gguf::write(&p, &[], std::slice::from_ref(&ok)).unwrap();
    let before = std::fs::read(&p).unwrap();
    assert!(gguf::write(&p, &[], &[ok.clone(), ok.clone()]).is_err());
    assert_eq!(std::fs::read(&p).unwrap(), before);
    assert_eq!(dir.entries(), ["m.gguf"]);
}

#[test]
fn open_errors_name_the_file() {
    let dir = TempDir::new("open");
    match GgufFile::open(&dir.path("absent.gguf")) {
        Err(ModelError::Io { path, .. }) => assert!(path.ends_with("absent.gguf")),
        other => panic!("{other:?}"),
    }
    let p = dir.path("short.gguf");
    std::fs::write(&p, b"GGUF\x03\0\0\0").unwrap();
    let (at, detail) = malformed_at(GgufFile::open(&p));
    assert_eq!(at, "offset 0");
    assert!(detail.contains("truncated"), "{detail}");
    std::fs::write(&p, b"").unwrap();
    assert!(matches!(GgufFile::open(&p), Err(ModelError::Malformed { .. })));
}

// ---------------------------------------------------------------------------------------------
// Hand-built malformed files
// ---------------------------------------------------------------------------------------------

/// A GGUF assembled byte by byte (independently of the writer).
#[derive(Clone)]
struct Raw {
    bytes: Vec<u8>,
}

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(version.to_le_bytes());
        bytes.extend(n_tensors.to_le_bytes());
        bytes.extend(n_kv.to_le_bytes());
        Raw { bytes }
    }
    fn u32(mut self, v: u32) -> Raw {
        self.bytes.extend(v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Raw {
        self.bytes.extend(v.to_le_bytes());
        self
    }
    fn raw(mut self, b: &[u8]) -> Raw {
        self.bytes.extend_from_slice(b);
        self
    }
    fn str(self, s: &str) -> Raw {
        self.u64(s.len() as u64).raw(s.as_bytes())
    }
    /// A tensor info.
    fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Raw {
        let mut r = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(ty).u64(offset)
    }
    /// Pad to 32 and append `n` data bytes.
    fn data(mut self, n: usize) -> Raw {
        while self.bytes.len() % 32 != 0 {
            self.bytes.push(0);
        }
        self.bytes.extend(std::iter::repeat_n(0x11u8, n));
        self
    }
    fn parse(&self) -> Result<GgufFile, ModelError> {
        GgufFile::from_bytes("raw.gguf", self.bytes.clone())
    }
}

#[test]
fn a_hand_built_file_parses() {
    let r = Raw::header(2, 1, 2)
        .str("a")
        .u32(9) // array
        .u32(9) // of arrays
        .u64(2)
        .u32(8) // of strings
        .u64(1)
        .str("x")
        .u32(7) // of bools
        .u64(2)
        .raw(&[1, 0])
        .str("b")
        .u32(12)
        .raw(&1.5f64.to_le_bytes())
        .tensor("w", &[32, 2], 8, 0)
        .data(68);
    let g = r.parse().unwrap();
    assert_eq!(g.version, 2);
    assert_eq!(
        g.get("a"),
        Some(&MetaValue::Array(vec![
            MetaValue::Array(vec![MetaValue::String("x".into())]),
            MetaValue::Array(vec![MetaValue::Bool(true), MetaValue::Bool(false)]),
        ]))
    );
    assert_eq!(g.get("b"), Some(&MetaValue::F64(1.5)));
    let m = g.tensor_f32("w").unwrap();
    assert_eq!([m.rows, m.cols], [2, 32]);
    // d = fp16 0x1111, codes 0x11 = 17.
    let d = kernels_ref::dtype::f16_bits_to_f32(0x1111);
    assert!(m.data.iter().all(|&x| x == 17.0 * d));
}

#[test]
fn malformed_files_are_refused_with_where_and_what() {
    let ok_kv = |r: Raw| r.str("k").u32(4).u32(7);
    let cases: Vec<(&str, Raw, &str, &str)> = vec![
        ("bad magic", Raw { bytes: b"GGUG\x03\0\0\0".iter().copied().chain([0; 16]).collect() }, "offset 0", "magic"),
        ("version 1", Raw::header(1, 0, 0), "offset 4", "version 1"),
        ("version 4", Raw::header(4, 0, 0), "offset 4", "version 4"),
        ("big-endian", Raw::header(3u32.swap_bytes(), 0, 0), "offset 4", "big-endian"),
        ("huge kv count", Raw::header(3, 0, u64::MAX), "offset 16", "metadata kvs"),
        ("huge tensor count", Raw::header(3, 1 << 60, 0), "offset 8", "tensor infos"),
        ("truncated kv", Raw::header(3, 0, 1).str("k").u32(4).raw(&[1, 2]), "key k", "truncated"),
        ("huge key length", Raw::header(3, 0, 1).u64(u64::MAX).raw(&[0; 16]), "offset 24", "claims"),
        ("key not UTF-8", Raw::header(3, 0, 1).u64(2).raw(&[0xff, 0xfe]).u32(0).raw(&[0]), "offset 24", "UTF-8"),
        ("unknown value type", Raw::header(3, 0, 1).str("k").u32(13).raw(&[0; 8]), "key k", "unknown value type 13"),
        ("bool 2", Raw::header(3, 0, 1).str("k").u32(7).raw(&[2]), "key k", "bool"),
        ("huge string", Raw::header(3, 0, 1).str("k").u32(8).u64(1 << 62).raw(&[0; 8]), "key k", "claims"),
        (
            "huge array",
            Raw::header(3, 0, 1).str("k").u32(9).u32(4).u64(1 << 40).raw(&[0; 8]),
            "key k",
            "array of 1099511627776",
        ),
        (
            "unknown element type",
            Raw::header(3, 0, 1).str("k").u32(9).u32(77).u64(1).raw(&[0; 8]),
            "key k",
            "element type 77",
        ),
        ("duplicate key", ok_kv(ok_kv(Raw::header(3, 0, 2))), "key k", "duplicate"),
        (
            "alignment 0",
            Raw::header(3, 0, 1).str("general.alignment").u32(4).u32(0),
            "key general.alignment",
            "power of two",
        ),
        (
            "alignment 24",
            Raw::header(3, 0, 1).str("general.alignment").u32(4).u32(24),
            "key general.alignment",
            "power of two",
        ),
        ("n_dims 0", Raw::header(3, 1, 0).tensor("t", &[], 0, 0).raw(&[0; 40]), "tensor t", "0 dims"),
        ("n_dims 5", Raw::header(3, 1, 0).tensor("t", &[1; 5], 0, 0).data(4), "tensor t", "5 dims"),
        ("zero dim", Raw::header(3, 1, 0).tensor("t", &[4, 0], 0, 0).data(16), "tensor t", "dim 1 is 0"),
        (
            "dims overflow",
            Raw::header(3, 1, 0).tensor("t", &[1 << 32, 1 << 32], 0, 0).data(16),
            "tensor t",
            "overflows",
        ),
        ("unknown type", Raw::header(3, 1, 0).tensor("t", &[4], 99, 0).data(16), "tensor t", "ggml type 99"),
        ("unaligned offset", Raw::header(3, 1, 0).tensor("t", &[4], 0, 8).data(32), "tensor t", "alignment"),
        ("past the end", Raw::header(3, 1, 0).tensor("t", &[8], 0, 0).data(31), "tensor t", "past the end"),
        ("far past the end", Raw::header(3, 1, 0).tensor("t", &[8], 0, 1 << 62).data(32), "tensor t", "past the end"),
        ("offset overflow", Raw::header(3, 1, 0).tensor("t", &[8], 0, u64::MAX - 31).data(32), "tensor t", "past"),
        ("partial block", Raw::header(3, 1, 0).tensor("t", &[48], 2, 0).data(64), "tensor t", "block size 32"),
        (
            "duplicate tensor",
            Raw::header(3, 2, 0).tensor("t", &[4], 0, 0).tensor("t", &[4], 0, 32).data(64),
            "tensor t",
            "duplicate",
        ),
        (
            "overlap",
            Raw::header(3, 2, 0).tensor("a", &[16], 0, 0).tensor("b", &[4], 0, 32).data(64),
            "tensor b",
            "overlaps tensor a",
        ),
        (
            "truncated infos",
            Raw::header(3, 1, 0).str("tttttttttt").u32(1).u64(4).u32(0),
            "tensor tttttttttt",
            "truncated",
        ),
    ];
    for (what, raw, want_at, want_detail) in cases {
        let (at, detail) = malformed_at(raw.parse());
        assert_eq!(at, want_at, "{what}: {detail}");
        assert!(detail.contains(want_detail), "{what}: `{detail}` lacks `{want_detail}`");
    }
}

#[test]
fn deep_arrays_are_refused_not_recursed() {
    // 100k nested arrays: refused at the depth limit (a recursive reader would overflow the stack).
    let mut r = Raw::header(3, 0, 1).str("k").u32(9);
    for _ in 0..100_000 {
        r = r.u32(9).u64(1);
    }
    let (at, detail) = malformed_at(r.parse());
    assert_eq!(at, "key k");
    assert!(detail.contains("nested"), "{detail}");
    // The limit itself is fine: depth MAX_ARRAY_DEPTH holds.
    let mut r = Raw::header(3, 0, 1).str("k").u32(9);
    for _ in 0..gguf::MAX_ARRAY_DEPTH - 1 {
        r = r.u32(9).u64(1);
    }
    let r = r.u32(0).u64(1).raw(&[5]);
    let g = r.parse().unwrap();
    let mut v = g.get("k").unwrap();
    for _ in 0..gguf::MAX_ARRAY_DEPTH {
        v = &v.as_array().unwrap()[0];
    }
    assert_eq!(v, &MetaValue::U8(5));
}

#[test]
fn unsupported_tensor_types_are_named() {
    let r = Raw::header(3, 1, 0).tensor("blk.0.ffn_down.weight", &[256], 13, 0).data(176);
    match r.parse() {
        Err(ModelError::Unsupported { detail, .. }) => {
            assert!(
                detail.contains("blk.0.ffn_down.weight") && detail.contains("13") && detail.contains("Q5_K"),
                "{detail}"
            )
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzzing
// ---------------------------------------------------------------------------------------------

fn leaf() -> impl Strategy<Value = MetaValue> {
    prop_oneof![
        any::<u8>().prop_map(MetaValue::U8),
        any::<i8>().prop_map(MetaValue::I8),
        any::<u16>().prop_map(MetaValue::U16),
        any::<i16>().prop_map(MetaValue::I16),
        any::<u32>().prop_map(MetaValue::U32),
        any::<i32>().prop_map(MetaValue::I32),
        any::<u32>().prop_map(|b| MetaValue::F32(f32::from_bits(b))),
        any::<bool>().prop_map(MetaValue::Bool),
        ".{0,12}".prop_map(MetaValue::String),
        any::<u64>().prop_map(MetaValue::U64),
        any::<i64>().prop_map(MetaValue::I64),
        any::<u64>().prop_map(|b| MetaValue::F64(f64::from_bits(b))),
    ]
}

/// A value: a leaf, or an array of one element type (possibly of arrays, of mixed inner types).
fn value() -> impl Strategy<Value = MetaValue> {
    leaf().prop_recursive(3, 40, 6, |inner| {
        prop_oneof![
            // Homogeneous arrays of leaves: repeat one leaf's type.
            (leaf(), 0usize..6).prop_flat_map(|(first, n)| {
                let same = match &first {
                    MetaValue::U8(_) => any::<u8>().prop_map(MetaValue::U8).boxed(),
                    MetaValue::I8(_) => any::<i8>().prop_map(MetaValue::I8).boxed(),
                    MetaValue::U16(_) => any::<u16>().prop_map(MetaValue::U16).boxed(),
                    MetaValue::I16(_) => any::<i16>().prop_map(MetaValue::I16).boxed(),
                    MetaValue::U32(_) => any::<u32>().prop_map(MetaValue::U32).boxed(),
                    MetaValue::I32(_) => any::<i32>().prop_map(MetaValue::I32).boxed(),
                    MetaValue::F32(_) => any::<u32>().prop_map(|b| MetaValue::F32(f32::from_bits(b))).boxed(),
                    MetaValue::Bool(_) => any::<bool>().prop_map(MetaValue::Bool).boxed(),
                    MetaValue::String(_) => ".{0,8}".prop_map(MetaValue::String).boxed(),
                    MetaValue::U64(_) => any::<u64>().prop_map(MetaValue::U64).boxed(),
                    MetaValue::I64(_) => any::<i64>().prop_map(MetaValue::I64).boxed(),
                    _ => any::<u64>().prop_map(|b| MetaValue::F64(f64::from_bits(b))).boxed(),
                };
                proptest::collection::vec(same, n).prop_map(move |rest| {
                    let mut v = vec![first.clone()];
                    v.extend(rest);
                    MetaValue::Array(v)
                })
            }),
            // Arrays of arrays.
            proptest::collection::vec(inner, 0..4)
                .prop_map(|items| { MetaValue::Array(items.into_iter().map(|x| MetaValue::Array(vec![x])).collect()) }),
        ]
    })
}

/// Bitwise equality (NaN payloads included).
fn same(a: &MetaValue, b: &MetaValue) -> bool {
    match (a, b) {
        (MetaValue::F32(x), MetaValue::F32(y)) => x.to_bits() == y.to_bits(),
        (MetaValue::F64(x), MetaValue::F64(y)) => x.to_bits() == y.to_bits(),
        (MetaValue::Array(x), MetaValue::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        _ => a == b,
    }
}

fn tensor_strategy() -> impl Strategy<Value = (Vec<u64>, GgmlType, Vec<u8>)> {
    (
        prop_oneof![Just(GgmlType::F32), Just(GgmlType::F16), Just(GgmlType::BF16), Just(GgmlType::Q8_0)],
        1u64..3,
        1u64..3,
    )
        .prop_flat_map(|(ty, blocks, rows)| {
            let cols = blocks * if ty == GgmlType::Q8_0 { 32 } else { 3 };
            let n = ty.bytes_for(cols * rows).unwrap() as usize;
            (Just(vec![cols, rows]), Just(ty), proptest::collection::vec(any::<u8>(), n))
        })
}

/// A small valid file with metadata of every kind and a few tensors, as bytes.
fn sample_file() -> Vec<u8> {
    let dir = TempDir::new("sample");
    let p = dir.path("s.gguf");
    let meta = vec![
        ("general.architecture".to_string(), MetaValue::String("llama".into())),
        ("n".to_string(), MetaValue::U32(7)),
        (
            "arr".to_string(),
            MetaValue::Array(vec![MetaValue::Array(vec![MetaValue::I16(-3)]), MetaValue::Array(vec![])]),
        ),
        ("tokens".to_string(), MetaValue::Array((0..20).map(|i| MetaValue::String(format!("t{i}"))).collect())),
    ];
    let s: Scheme = "q4_1".parse().unwrap();
    let q = s.quantize(&Matrix::new(2, 64, seeded(128, 4, 1.0)).unwrap()).unwrap();
    gguf::write(
        &p,
        &meta,
        &[
            ("a".into(), vec![4, 2], GgmlType::F32, gguf::f32_bytes(&seeded(8, 1, 1.0))),
            ("b".into(), vec![64, 2], GgmlType::Q4_1, pack(Packing::GgmlQ4_1, &q).unwrap()),
            ("c".into(), vec![256], GgmlType::Q6K, vec![7u8; 210]),
        ],
    )
    .unwrap();
    std::fs::read(&p).unwrap()
}

/// Parse corrupted bytes: never a panic; Ok or Err, and every tensor of an Ok file reads or errs.
/// The largest allocation stays within a small multiple of the file size.
fn parse_corrupted(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let len = bytes.len();
    let (_, largest) = largest_allocation(|| {
        if let Ok(g) = GgufFile::from_bytes("fuzz.gguf", bytes) {
            for t in &g.tensors {
                let _ = g.tensor_f32(&t.name);
            }
            let _ = g.storage_summary();
        }
    });
    // MetaValue is 32 bytes, so an array of n one-byte values takes 32n; the input's own copy
    // (moved in, not allocated here) does not count.
    prop_assert!(largest <= 40 * len + 4096, "allocated {largest} bytes for a {len}-byte file");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn metadata_and_tensors_round_trip(
        meta in proptest::collection::btree_map("[a-z.]{1,10}", value(), 0..8),
        tensors in proptest::collection::vec(tensor_strategy(), 0..4),
    ) {
        let dir = TempDir::new("prop-rt");
        let p = dir.path("r.gguf");
        let meta: Vec<(String, MetaValue)> =
            meta.into_iter().filter(|(k, _)| k != "general.alignment").collect();
        let tensors: Vec<gguf::RawTensor> =
            tensors.into_iter().enumerate().map(|(i, (d, t, b))| (format!("t{i}"), d, t, b)).collect();
        gguf::write(&p, &meta, &tensors).unwrap();
        let g = GgufFile::open(&p).unwrap();
        prop_assert_eq!(g.metadata.len(), meta.len());
        for (k, v) in &meta {
            prop_assert!(same(g.get(k).unwrap(), v), "{}: {:?} vs {:?}", k, g.get(k), v);
        }
        prop_assert_eq!(g.tensors.len(), tensors.len());
        for (name, dims, ty, bytes) in &tensors {
            let t = g.tensor(name).unwrap();
            prop_assert_eq!(&t.dims, dims);
            prop_assert_eq!(t.ty, *ty);
            prop_assert_eq!(g.tensor_bytes(name).unwrap(), bytes.as_slice());
            let m = g.tensor_f32(name).unwrap();
            prop_assert_eq!(m.data.len() as u64, dims[0] * dims[1]);
        }
        // And from memory, identically.
        let h = GgufFile::from_bytes("mem", std::fs::read(&p).unwrap()).unwrap();
        prop_assert_eq!(h.tensors, g.tensors.clone());
    }

    #[test]
    fn truncated_files_never_panic(cut in 0usize..100_000) {
        let bytes = sample_file();
        let cut = cut % bytes.len();
        parse_corrupted(bytes[..cut].to_vec())?;
    }

    #[test]
    fn flipped_bytes_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut bytes = sample_file();
        for (at, x) in flips {
            let n = bytes.len();
            bytes[at % n] ^= x | 1;
        }
        parse_corrupted(bytes)?;
    }

    #[test]
    fn overwritten_counts_never_panic(
        at in any::<usize>(),
        v in prop_oneof![Just(u64::MAX), Just(1u64 << 63), Just(1u64 << 40), Just(u32::MAX as u64), 0u64..1000, any::<u64>()],
        width in prop_oneof![Just(4usize), Just(8)],
    ) {
        let mut bytes = sample_file();
        let at = at % (bytes.len() - width);
        bytes[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
        parse_corrupted(bytes)?;
    }
}

#[test]
fn the_sample_file_parses_and_the_allocation_bound_is_meaningful() {
    let bytes = sample_file();
    let len = bytes.len();
    let g = GgufFile::from_bytes("s", bytes).unwrap();
    assert_eq!(g.storage_summary(), "F32 x1, Q4_1 x1, Q6_K x1");
    // The tracker sees allocations: a vec of 100 KB is recorded.
    let (_, largest) = largest_allocation(|| vec![0u8; 100_000]);
    assert!(largest >= 100_000);
    // The header counts of the sample sit at offsets 8 and 16; a huge kv count is refused
    // before anything proportional to it is allocated.
    let mut b = sample_file();
    b[16..24].copy_from_slice(&(1u64 << 50).to_le_bytes());
    let (r, largest) = largest_allocation(|| GgufFile::from_bytes("big", b.clone()).map(|_| ()));
    assert!(r.is_err());
    assert!(largest < 40 * len + 4096, "{largest}");
}

//! GGUF v2/v3: a memory-mapped reader that never trusts the file, the fp32 dequantization of the
//! tensor types qdiff reads, and an atomic writer.
//!
//! The layout (ggml's `docs/gguf.md`, all little-endian):
//!
//! ```text
//! "GGUF"  u32 version  u64 tensor_count  u64 kv_count
//! kv_count x (string key, u32 value_type, value)
//! tensor_count x (string name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset)
//! padding to general.alignment (default 32)
//! tensor data: each tensor at data_start + offset (offset a multiple of the alignment)
//! ```
//!
//! where a string is `u64 len` + UTF-8 bytes, and an array value is `u32 elem_type, u64 count`
//! + elements.
//!
//! **Nothing read from the file is trusted.** Every count and length is checked against the
//! bytes that remain *before* anything is allocated for it, so no allocation exceeds a small
//! multiple of the file size; every offset, product and sum is checked for overflow; arrays may
//! nest only [`MAX_ARRAY_DEPTH`] deep (no stack exhaustion); and every failure is a
//! [`ModelError::Malformed`] saying where (`offset N`, `key K`, `tensor NAME`) and what.
//!
//! Quantized blocks are dequantized with the scheme catalogue's own ggml arithmetic
//! ([`kernels_ref::pack::unpack`] then [`Scheme::dequantize`] with `q4_0`, `q4_1`, `q8_0`,
//! `q4_K`), so reading a GGUF and dequantizing a catalogue scheme are the same code. Q6_K is not
//! in the catalogue; its dequantizer here is ggml's `dequantize_row_q6_K`, operation for
//! operation.

use crate::meta::MetaValue;
use crate::{ModelError, Result};
use kernels_ref::dtype::{bf16_bits_to_f32, f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits};
use kernels_ref::pack::{unpack, Packing};
use kernels_ref::scheme::{Quantized, Scheme};
use kernels_ref::tensor::Matrix;
use kernels_ref::RefError;
use memmap2::Mmap;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// How deep metadata arrays may nest (an array of arrays is depth 2).
pub const MAX_ARRAY_DEPTH: usize = 8;
/// At most this many dims per tensor (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// A tensor as [`write()`] takes it: `(name, ggml dims fastest first, type, raw bytes)`.
pub type RawTensor = (String, Vec<u64>, GgmlType, Vec<u8>);

/// The ggml tensor types qdiff reads (the numbering of ggml's `enum ggml_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 0
    F32,
    /// 1
    F16,
    /// 2
    Q4_0,
    /// 3
    Q4_1,
    /// 8
    Q8_0,
    /// 12
    Q4K,
    /// 14
    Q6K,
    /// 30
    BF16,
}

/// Names of the `enum ggml_type` numbers qdiff does not read (for messages); `None` for numbers
/// that are not ggml types at all (never assigned, or removed).
fn other_ggml_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        6 => "Q5_0",
        7 => "Q5_1",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        13 => "Q5_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return None,
    })
}

impl GgmlType {
    /// Every type qdiff reads.
    pub const ALL: [GgmlType; 8] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
        GgmlType::BF16,
    ];

    /// The type with ggml number `id`, if qdiff reads it.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.into_iter().find(|t| t.id() == id)
    }

    /// Its number in ggml's `enum ggml_type` (what the file stores).
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4K => 12,
            GgmlType::Q6K => 14,
            GgmlType::BF16 => 30,
        }
    }

    /// ggml's name (`Q4_1`, `Q4_K`, ...), as gguf-py and llama.cpp print it.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q6K => "Q6_K",
            GgmlType::BF16 => "BF16",
        }
    }

    /// Elements per block (1 for the float types).
    pub fn block_len(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => 32,
            GgmlType::Q4K | GgmlType::Q6K => 256,
        }
    }

    /// Bytes per block (`sizeof(block_q4_1)` = 20, ...).
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q8_0 => 34,
            GgmlType::Q4K => 144,
            GgmlType::Q6K => 210,
        }
    }

    /// Bytes that `n` elements take (`None` when `n` is not whole blocks or the size overflows).
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let bl = self.block_len() as u64;
        if n % bl != 0 {
            return None;
        }
        (n / bl).checked_mul(self.block_bytes() as u64)
    }

    /// The packed layout and catalogue scheme of the block types the catalogue has.
    fn catalogue(self) -> Option<(Packing, &'static str)> {
        match self {
            GgmlType::Q4_0 => Some((Packing::GgmlQ4_0, "q4_0")),
            GgmlType::Q4_1 => Some((Packing::GgmlQ4_1, "q4_1")),
            GgmlType::Q8_0 => Some((Packing::GgmlQ8_0, "q8_0")),
            GgmlType::Q4K => Some((Packing::GgmlQ4K, "q4_K")),
            _ => None,
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor's header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Its name.
    pub name: String,
    /// ggml dims, fastest first (`ne0` = the row length).
    pub dims: Vec<u64>,
    /// Its type.
    pub ty: GgmlType,
    /// Byte offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements (`None` on overflow).
    pub fn n_elements(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
    }

    /// Bytes of its data (`None` when the row is not whole blocks or on overflow).
    pub fn n_bytes(&self) -> Option<u64> {
        self.ty.bytes_for(self.n_elements()?)
    }

    /// `[rows, cols]` of the fp32 matrix it becomes: `cols = ne0`, `rows = ne1·ne2·ne3` (1 for a
    /// 1-D tensor). `None` on overflow.
    pub fn matrix_shape(&self) -> Option<[usize; 2]> {
        let cols = usize::try_from(*self.dims.first()?).ok()?;
        let rows = self.dims.iter().skip(1).try_fold(1u64, |a, &d| a.checked_mul(d))?;
        let rows = usize::try_from(rows).ok()?;
        rows.checked_mul(cols)?;
        Some([rows, cols])
    }
}

/// The bytes behind a [`GgufFile`]: a read-only map of the file, or a buffer.
enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// An open, validated GGUF file: every tensor's type is one qdiff reads, its data lies inside the
/// file, aligned, and overlaps no other tensor.
pub struct GgufFile {
    /// The path, for messages.
    pub path: String,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata.
    pub metadata: BTreeMap<String, MetaValue>,
    /// Tensor headers in file order.
    pub tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
    index: HashMap<String, usize>,
    storage: Storage,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("len", &self.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Open and validate a GGUF file, memory-mapped.
    ///
    /// # Errors
    /// [`ModelError::Io`] when the file cannot be opened or mapped; [`ModelError::Malformed`] for
    /// anything wrong in it (see the module doc); [`ModelError::Unsupported`] for a tensor of a
    /// ggml type qdiff does not read.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let label = path.display().to_string();
        let io = |e: std::io::Error| ModelError::Io { path: label.clone(), error: e };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < HEADER_LEN as u64 {
            return Err(ModelError::malformed(
                &label,
                "offset 0",
                format!("truncated: {len} bytes, a GGUF header alone takes {HEADER_LEN}"),
            ));
        }
        // SAFETY: the map is read-only and private to this struct. Like every reader of a mapped
        // file, it assumes no other process truncates or rewrites the file while it is open
        // (qdiff's writer replaces files by rename, which leaves this map intact).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::parse(label, Storage::Mapped(map))
    }

    /// Parse and validate GGUF bytes held in memory; `label` names them in messages.
    ///
    /// # Errors
    /// As [`GgufFile::open`].
    pub fn from_bytes(label: impl Into<String>, bytes: Vec<u8>) -> Result<GgufFile> {
        Self::parse(label.into(), Storage::Owned(bytes))
    }

    fn parse(path: String, storage: Storage) -> Result<GgufFile> {
        let header = parse_header(&path, storage.bytes())?;
        let Header { version, metadata, tensors, alignment, data_offset } = header;
        let index = tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(GgufFile { path, version, metadata, tensors, alignment, data_offset, index, storage })
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// The file size in bytes.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// Whether the file is empty (never, for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    /// The alignment of the data section and the tensors (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Where the data section starts (the byte after the tensor infos, aligned up).
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// A tensor's header.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).and_then(|&i| self.tensors.get(i))
    }

    /// A tensor's raw bytes (its blocks as stored).
    ///
    /// # Errors
    /// [`ModelError::Unsupported`] when there is no such tensor.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let t = self.tensor(name).ok_or_else(|| self.missing(name))?;
        let bad = |d: &str| ModelError::malformed(&self.path, format!("tensor {name}"), d);
        // Validated when the file was parsed; checked again rather than trusted.
        let n = t.n_bytes().ok_or_else(|| bad("size overflows"))?;
        let start = self.data_offset.checked_add(t.offset).ok_or_else(|| bad("offset overflows"))?;
        let end = start.checked_add(n).ok_or_else(|| bad("offset overflows"))?;
        let (start, end) = (usize::try_from(start), usize::try_from(end));
        match (start, end) {
            (Ok(s), Ok(e)) => self.bytes().get(s..e).ok_or_else(|| bad("data past the end of the file")),
            _ => Err(bad("offset does not fit in memory")),
        }
    }

    /// A tensor dequantized to fp32, `[prod(dims[1..]), dims[0]]` (1-D tensors are one row).
    ///
    /// # Errors
    /// [`ModelError::Unsupported`] when there is no such tensor; [`ModelError::Malformed`] (naming
    /// the tensor) when its blocks cannot be read.
    pub fn tensor_f32(&self, name: &str) -> Result<Matrix> {
        let t = self.tensor(name).ok_or_else(|| self.missing(name))?;
        let bytes = self.tensor_bytes(name)?;
        let at = format!("tensor {name}");
        let [rows, cols] =
            t.matrix_shape().ok_or_else(|| ModelError::malformed(&self.path, &at, "shape does not fit in memory"))?;
        let data =
            dequantize(t.ty, bytes, rows, cols).map_err(|e| ModelError::malformed(&self.path, &at, e.to_string()))?;
        Ok(Matrix { rows, cols, data })
    }

    /// What the tensors are stored as, most frequent type first: `Q4_1 x210, F32 x61, Q8_0 x1`.
    pub fn storage_summary(&self) -> String {
        storage_summary(self.tensors.iter().map(|t| t.ty.name()))
    }

    /// sha256 of the whole file, lower-case hex.
    pub fn sha256(&self) -> String {
        sha256_hex(self.bytes())
    }

    fn missing(&self, name: &str) -> ModelError {
        ModelError::unsupported(&self.path, format!("no tensor named {name}"))
    }
}

/// `NAME xCOUNT, ...` over the names given, most frequent first (ties by name).
pub(crate) fn storage_summary<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for n in names {
        *counts.entry(n).or_default() += 1;
    }
    let mut v: Vec<(&str, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v.iter().map(|(n, c)| format!("{n} x{c}")).collect::<Vec<_>>().join(", ")
}

/// sha256 of `bytes`, lower-case hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// magic + version + tensor count + kv count.
const HEADER_LEN: usize = 4 + 4 + 8 + 8;
/// The smallest kv: an empty key (8), the value type (4), a one-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// The smallest tensor info: an empty name (8), n_dims (4), one dim (8), type (4), offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

const TYPE_U8: u32 = 0;
const TYPE_I8: u32 = 1;
const TYPE_U16: u32 = 2;
const TYPE_I16: u32 = 3;
const TYPE_U32: u32 = 4;
const TYPE_I32: u32 = 5;
const TYPE_F32: u32 = 6;
const TYPE_BOOL: u32 = 7;
const TYPE_STRING: u32 = 8;
const TYPE_ARRAY: u32 = 9;
const TYPE_U64: u32 = 10;
const TYPE_I64: u32 = 11;
const TYPE_F64: u32 = 12;

/// The fewest bytes one value of GGUF type `ty` takes (`None`: not a type).
fn min_value_bytes(ty: u32) -> Option<u64> {
    Some(match ty {
        TYPE_U8 | TYPE_I8 | TYPE_BOOL => 1,
        TYPE_U16 | TYPE_I16 => 2,
        TYPE_U32 | TYPE_I32 | TYPE_F32 => 4,
        TYPE_U64 | TYPE_I64 | TYPE_F64 | TYPE_STRING => 8,
        TYPE_ARRAY => 12,
        _ => return None,
    })
}

/// Where in the file a read happens, for messages.
#[derive(Clone, Copy)]
enum Ctx<'a> {
    Header,
    Key(&'a str),
    Tensor(&'a str),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a str,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos.min(self.buf.len())) as u64
    }

    fn fail(&self, ctx: Ctx<'_>, detail: impl fmt::Display) -> ModelError {
        match ctx {
            Ctx::Header => ModelError::malformed(self.path, format!("offset {}", self.pos), detail.to_string()),
            Ctx::Key(k) => {
                ModelError::malformed(self.path, format!("key {k}"), format!("{detail} (offset {})", self.pos))
            }
            Ctx::Tensor(t) => {
                ModelError::malformed(self.path, format!("tensor {t}"), format!("{detail} (offset {})", self.pos))
            }
        }
    }

    fn take(&mut self, n: u64, what: &str, ctx: Ctx<'_>) -> Result<&'a [u8]> {
        let rem = self.remaining();
        if n > rem {
            return Err(self.fail(ctx, format!("truncated: {what} needs {n} bytes, {rem} left")));
        }
        let n = n as usize; // n <= remaining, which is a usize
        let s = self.buf.get(self.pos..self.pos + n).ok_or_else(|| self.fail(ctx, "internal bounds"))?;
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str, ctx: Ctx<'_>) -> Result<[u8; N]> {
        let s = self.take(N as u64, what, ctx)?;
        s.try_into().map_err(|_| self.fail(ctx, "internal bounds"))
    }

    fn u32(&mut self, what: &str, ctx: Ctx<'_>) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what, ctx)?))
    }

    fn u64(&mut self, what: &str, ctx: Ctx<'_>) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what, ctx)?))
    }

    fn string(&mut self, what: &str, ctx: Ctx<'_>) -> Result<String> {
        let start = self.pos;
        let len = self.u64(&format!("length of {what}"), ctx)?;
        let rem = self.remaining();
        if len > rem {
            self.pos = start;
            return Err(self.fail(ctx, format!("{what} claims {len} bytes, only {rem} left in the file")));
        }
        let bytes = self.take(len, what, ctx)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => {
                self.pos = start;
                Err(self.fail(ctx, format!("{what} is not UTF-8 ({e})")))
            }
        }
    }

    fn value(&mut self, ty: u32, ctx: Ctx<'_>, depth: usize) -> Result<MetaValue> {
        Ok(match ty {
            TYPE_U8 => MetaValue::U8(u8::from_le_bytes(self.array("u8 value", ctx)?)),
            TYPE_I8 => MetaValue::I8(i8::from_le_bytes(self.array("i8 value", ctx)?)),
            TYPE_U16 => MetaValue::U16(u16::from_le_bytes(self.array("u16 value", ctx)?)),
            TYPE_I16 => MetaValue::I16(i16::from_le_bytes(self.array("i16 value", ctx)?)),
            TYPE_U32 => MetaValue::U32(u32::from_le_bytes(self.array("u32 value", ctx)?)),
            TYPE_I32 => MetaValue::I32(i32::from_le_bytes(self.array("i32 value", ctx)?)),
            TYPE_F32 => MetaValue::F32(f32::from_le_bytes(self.array("f32 value", ctx)?)),
            TYPE_U64 => MetaValue::U64(u64::from_le_bytes(self.array("u64 value", ctx)?)),
            TYPE_I64 => MetaValue::I64(i64::from_le_bytes(self.array("i64 value", ctx)?)),
            TYPE_F64 => MetaValue::F64(f64::from_le_bytes(self.array("f64 value", ctx)?)),
            TYPE_BOOL => {
                let [b] = self.array("bool value", ctx)?;
                match b {
                    0 => MetaValue::Bool(false),
                    1 => MetaValue::Bool(true),
                    _ => {
                        self.pos -= 1;
                        return Err(self.fail(ctx, format!("bool value is {b}, not 0 or 1")));
                    }
                }
            }
            TYPE_STRING => MetaValue::String(self.string("string value", ctx)?),
            TYPE_ARRAY => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.fail(ctx, format!("arrays nested more than {MAX_ARRAY_DEPTH} deep")));
                }
                let at = self.pos;
                let et = self.u32("array element type", ctx)?;
                let Some(min) = min_value_bytes(et) else {
                    self.pos = at;
                    return Err(self.fail(ctx, format!("unknown array element type {et}")));
                };
                let count = self.u64("array length", ctx)?;
                let rem = self.remaining();
                // Checked before allocating: each element takes at least `min` bytes.
                if count > rem / min {
                    self.pos = at;
                    return Err(self.fail(
                        ctx,
                        format!("array of {count} elements of type {et} needs at least {min} bytes each, {rem} left"),
                    ));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(et, ctx, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            _ => return Err(self.fail(ctx, format!("unknown value type {ty}"))),
        })
    }
}

struct Header {
    version: u32,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
}

fn parse_header(path: &str, buf: &[u8]) -> Result<Header> {
    let mut r = Reader { buf, pos: 0, path };
    let h = Ctx::Header;
    let magic: [u8; 4] = r.array("magic", h)?;
    if magic != GGUF_MAGIC {
        r.pos = 0;
        return Err(r.fail(h, format!("bad magic {:?} (expected \"GGUF\"): not a GGUF file", magic_str(&magic))));
    }
    let version = r.u32("version", h)?;
    if version != 2 && version != 3 {
        r.pos = 4;
        let hint = if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            " (a big-endian file? qdiff reads little-endian GGUF only)"
        } else {
            ""
        };
        return Err(r.fail(h, format!("GGUF version {version}: qdiff reads versions 2 and 3{hint}")));
    }
    let at_counts = r.pos;
    let tensor_count = r.u64("tensor count", h)?;
    let kv_count = r.u64("metadata kv count", h)?;
    let rem = r.remaining();
    if kv_count > rem / MIN_KV_BYTES {
        r.pos = at_counts + 8;
        return Err(r.fail(
            h,
            format!("{kv_count} metadata kvs cannot fit in the {rem} bytes left (each takes at least {MIN_KV_BYTES})"),
        ));
    }
    if tensor_count > rem / MIN_TENSOR_INFO_BYTES {
        r.pos = at_counts;
        return Err(r.fail(
            h,
            format!(
                "{tensor_count} tensor infos cannot fit in the {rem} bytes left (each takes at least {MIN_TENSOR_INFO_BYTES})"
            ),
        ));
    }

    let mut metadata = BTreeMap::new();
    for i in 0..kv_count {
        let key = r.string(&format!("key of metadata kv #{i}"), h)?;
        if metadata.contains_key(&key) {
            return Err(r.fail(Ctx::Key(&key), "duplicate key"));
        }
        let ty = r.u32("value type", Ctx::Key(&key))?;
        let value = r.value(ty, Ctx::Key(&key), 0)?;
        metadata.insert(key, value);
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(MetaValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
        Some(v) => {
            return Err(ModelError::malformed(
                path,
                "key general.alignment",
                format!("{v:?} is not a u32 power of two"),
            ))
        }
    };

    // Re-checked now that the metadata is read: the infos must fit in what is left.
    let rem = r.remaining();
    if tensor_count > rem / MIN_TENSOR_INFO_BYTES {
        return Err(
            r.fail(h, format!("{tensor_count} tensor infos cannot fit in the {rem} bytes left after the metadata"))
        );
    }
    let mut tensors = Vec::with_capacity(tensor_count as usize);
    let mut names = HashSet::with_capacity(tensor_count as usize);
    let mut sizes = Vec::with_capacity(tensor_count as usize);
    for i in 0..tensor_count {
        let name = r.string(&format!("name of tensor #{i}"), h)?;
        let t = Ctx::Tensor(&name);
        if names.contains(&name) {
            return Err(r.fail(t, "duplicate tensor name"));
        }
        let n_dims = r.u32("n_dims", t)?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            r.pos -= 4;
            return Err(r.fail(t, format!("{n_dims} dims (a tensor has 1 to {MAX_DIMS})")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        let mut n: u64 = 1;
        for j in 0..n_dims {
            let d = r.u64("a dim", t)?;
            if d == 0 {
                r.pos -= 8;
                return Err(r.fail(t, format!("dim {j} is 0")));
            }
            n = match n.checked_mul(d) {
                Some(n) if n <= i64::MAX as u64 => n,
                _ => {
                    r.pos -= 8;
                    return Err(r.fail(t, format!("the element count of dims {dims:?} x {d} overflows")));
                }
            };
            dims.push(d);
        }
        let id = r.u32("type", t)?;
        let Some(ty) = GgmlType::from_id(id) else {
            r.pos -= 4;
            return Err(match other_ggml_type_name(id) {
                Some(ggml) => ModelError::unsupported(
                    path,
                    format!(
                        "tensor {name}: ggml type {id} ({ggml}) is not supported; qdiff reads {}",
                        GgmlType::ALL.map(|t| t.name()).join(", ")
                    ),
                ),
                None => r.fail(t, format!("unknown ggml type {id}")),
            });
        };
        let offset = r.u64("offset", t)?;
        if offset % alignment != 0 {
            r.pos -= 8;
            return Err(r.fail(t, format!("data offset {offset} is not a multiple of the alignment {alignment}")));
        }
        let bl = ty.block_len() as u64;
        if dims[0] % bl != 0 {
            return Err(r.fail(t, format!("row length {} is not a multiple of the {ty} block size {bl}", dims[0])));
        }
        let size = ty.bytes_for(n).ok_or_else(|| r.fail(t, "byte size overflows"))?;
        names.insert(name.clone());
        sizes.push(size);
        tensors.push(TensorInfo { name, dims, ty, offset });
    }

    let end_of_infos = r.pos as u64;
    let data_offset = end_of_infos.div_ceil(alignment).checked_mul(alignment).ok_or_else(|| {
        ModelError::malformed(path, format!("offset {end_of_infos}"), "aligned data section start overflows")
    })?;
    let len = buf.len() as u64;
    let mut spans: Vec<(u64, u64, usize)> = Vec::with_capacity(tensors.len());
    for (i, (t, &size)) in tensors.iter().zip(&sizes).enumerate() {
        let at = format!("tensor {}", t.name);
        let end = data_offset.checked_add(t.offset).and_then(|s| s.checked_add(size));
        match end {
            Some(end) if end <= len => spans.push((t.offset, t.offset + size, i)),
            _ => {
                return Err(ModelError::malformed(
                    path,
                    at,
                    format!(
                        "data at offset {} + {} ({size} bytes of {}) runs past the end of the file ({len} bytes)",
                        data_offset, t.offset, t.ty
                    ),
                ))
            }
        }
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        if let [(_, prev_end, a), (start, _, b)] = *w {
            if start < prev_end {
                let (a, b) = (&tensors[a].name, &tensors[b].name);
                return Err(ModelError::malformed(path, format!("tensor {b}"), format!("data overlaps tensor {a}")));
            }
        }
    }
    Ok(Header { version, metadata, tensors, alignment, data_offset })
}

fn magic_str(m: &[u8; 4]) -> String {
    m.iter().map(|&b| if b.is_ascii_graphic() { (b as char).to_string() } else { format!("\\x{b:02x}") }).collect()
}

// ---------------------------------------------------------------------------------------------
// Dequantization
// ---------------------------------------------------------------------------------------------

/// Elements per parallel work item: large enough to amortize, small enough to spread one big
/// tensor (the embedding table) over every core.
const CHUNK_ELEMS: usize = 1 << 16;

/// Dequantize `[rows, cols]` stored as `ty` (ggml blocks along each row) to row-major fp32.
///
/// F32/F16/BF16 are converted exactly; Q4_0/Q4_1/Q8_0/Q4_K go through the catalogue
/// ([`unpack`] + [`Scheme::dequantize`]); Q6_K is ggml's `dequantize_row_q6_K`. Rows are split
/// into chunks dequantized in parallel; the result does not depend on the split.
///
/// # Errors
/// [`RefError::GroupSize`] when `cols` is not whole blocks, [`RefError::Shape`] when the byte
/// length does not match `[rows, cols]` exactly.
pub fn dequantize(ty: GgmlType, bytes: &[u8], rows: usize, cols: usize) -> std::result::Result<Vec<f32>, RefError> {
    let op = format!("dequantize {ty}");
    let bl = ty.block_len();
    if cols % bl != 0 {
        return Err(RefError::GroupSize { op, group: bl, axis: "cols".into(), len: cols });
    }
    let row_bytes = (cols / bl).checked_mul(ty.block_bytes());
    let total = row_bytes.and_then(|rb| rb.checked_mul(rows));
    let n = rows.checked_mul(cols);
    let (Some(row_bytes), Some(total), Some(n)) = (row_bytes, total, n) else {
        return Err(RefError::shape(op, format!("[{rows}, {cols}] overflows")));
    };
    if bytes.len() != total {
        return Err(RefError::shape(op, format!("[{rows}, {cols}] takes {total} bytes, got {}", bytes.len())));
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let rows_per_chunk = (CHUNK_ELEMS / cols).max(1);
    let mut out = vec![0f32; n];
    out.par_chunks_mut(rows_per_chunk * cols)
        .zip(bytes.par_chunks(rows_per_chunk * row_bytes))
        .try_for_each(|(o, b)| dequantize_rows(ty, b, o, cols))?;
    Ok(out)
}

/// Dequantize whole rows: `out.len() / cols` rows from `bytes` (lengths already consistent).
fn dequantize_rows(ty: GgmlType, bytes: &[u8], out: &mut [f32], cols: usize) -> std::result::Result<(), RefError> {
    match ty {
        GgmlType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        GgmlType::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        GgmlType::Q6K => {
            for (y, blk) in out.chunks_exact_mut(256).zip(bytes.chunks_exact(210)) {
                dequantize_block_q6k(blk, y);
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 | GgmlType::Q4K => {
            let Some((packing, name)) = ty.catalogue() else {
                return Err(RefError::unsupported(format!("dequantize {ty}"), "not a catalogue type"));
            };
            let scheme: Scheme = name.parse()?;
            let rows = out.len() / cols;
            let mut q = Quantized {
                scheme,
                shape: [rows, cols],
                q: Vec::new(),
                scales: Vec::new(),
                scale_shape: [0, 0],
                zero_points: None,
                zero_point_shape: None,
                lut: None,
                lut_shape: None,
                quantize_scales: None,
                extra: None,
            };
            unpack(packing, bytes, &mut q)?;
            let v = scheme.dequantize(&q)?;
            if v.len() != out.len() {
                return Err(RefError::shape(
                    format!("dequantize {ty}"),
                    format!("the catalogue returned {} values for {}", v.len(), out.len()),
                ));
            }
            out.copy_from_slice(&v);
        }
    }
    Ok(())
}

/// ggml's `dequantize_row_q6_K` for one 210-byte `block_q6_K` (`ql[128]`, `qh[64]`,
/// `int8 scales[16]`, fp16 `d`) into 256 values: `y = d · sc · (q − 32)`, evaluated as ggml's C
/// does, `(d * (float)sc) * (float)q` in f32 (`d·sc` is exact: 11 × 8 significant bits).
pub fn dequantize_block_q6k(block: &[u8], y: &mut [f32]) {
    let (Some(ql), Some(qh), Some(sc), Some(d)) =
        (block.get(0..128), block.get(128..192), block.get(192..208), block.get(208..210))
    else {
        return;
    };
    let d = f16_bits_to_f32(u16::from_le_bytes([d[0], d[1]]));
    for ((y, ql), (qh, sc)) in
        y.chunks_exact_mut(128).zip(ql.chunks_exact(64)).zip(qh.chunks_exact(32).zip(sc.chunks_exact(8)))
    {
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * sc[is] as i8 as f32 * q1 as f32;
            y[l + 32] = d * sc[is + 2] as i8 as f32 * q2 as f32;
            y[l + 64] = d * sc[is + 4] as i8 as f32 * q3 as f32;
            y[l + 96] = d * sc[is + 6] as i8 as f32 * q4 as f32;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// Little-endian fp32 bytes of `x` (GGUF `F32` tensor data).
pub fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian fp16 bytes of `x` rounded to nearest even (GGUF `F16` tensor data).
pub fn f16_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|&v| f32_to_f16_bits(v).to_le_bytes()).collect()
}

/// Little-endian bf16 bytes of `x` rounded to nearest even (GGUF `BF16` tensor data).
pub fn bf16_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|&v| f32_to_bf16_bits(v).to_le_bytes()).collect()
}

fn value_type(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => TYPE_U8,
        MetaValue::I8(_) => TYPE_I8,
        MetaValue::U16(_) => TYPE_U16,
        MetaValue::I16(_) => TYPE_I16,
        MetaValue::U32(_) => TYPE_U32,
        MetaValue::I32(_) => TYPE_I32,
        MetaValue::F32(_) => TYPE_F32,
        MetaValue::Bool(_) => TYPE_BOOL,
        MetaValue::String(_) => TYPE_STRING,
        MetaValue::Array(_) => TYPE_ARRAY,
        MetaValue::U64(_) => TYPE_U64,
        MetaValue::I64(_) => TYPE_I64,
        MetaValue::F64(_) => TYPE_F64,
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Serialize one value (without its type tag); `Err` names what cannot be written.
fn put_value(out: &mut Vec<u8>, v: &MetaValue, depth: usize) -> std::result::Result<(), String> {
    match v {
        MetaValue::U8(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(b) => out.push(u8::from(*b)),
        MetaValue::String(s) => put_string(out, s),
        MetaValue::Array(items) => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(format!("arrays nested more than {MAX_ARRAY_DEPTH} deep"));
            }
            // An empty array's element type is not recorded anywhere; u8 is as good as any.
            let et = items.first().map_or(TYPE_U8, value_type);
            if let Some(i) = items.iter().position(|x| value_type(x) != et) {
                return Err(format!("array element {i} differs in type from element 0 (GGUF arrays hold one type)"));
            }
            out.extend_from_slice(&et.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for x in items {
                put_value(out, x, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// The header bytes (everything before the data section, unpadded) and each tensor's offset.
fn serialize_header(
    path: &str,
    metadata: &[(String, MetaValue)],
    tensors: &[RawTensor],
    alignment: u64,
) -> Result<(Vec<u8>, Vec<u64>)> {
    let mut out = Vec::new();
    out.extend_from_slice(&GGUF_MAGIC);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    let mut keys = HashSet::new();
    for (k, v) in metadata {
        if !keys.insert(k.as_str()) {
            return Err(ModelError::malformed(path, format!("key {k}"), "duplicate key"));
        }
        put_string(&mut out, k);
        out.extend_from_slice(&value_type(v).to_le_bytes());
        put_value(&mut out, v, 0).map_err(|e| ModelError::malformed(path, format!("key {k}"), e))?;
    }
    let mut names = HashSet::new();
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut offset = 0u64;
    for (name, dims, ty, data) in tensors {
        let bad = |d: String| ModelError::malformed(path, format!("tensor {name}"), d);
        if !names.insert(name.as_str()) {
            return Err(bad("duplicate tensor name".into()));
        }
        if dims.is_empty() || dims.len() > MAX_DIMS || dims.contains(&0) {
            return Err(bad(format!("dims {dims:?}: a tensor has 1 to {MAX_DIMS} dims, none of them 0")));
        }
        let info = TensorInfo { name: name.clone(), dims: dims.clone(), ty: *ty, offset };
        let n = info.n_elements().filter(|&n| n <= i64::MAX as u64);
        let size = n.and_then(|n| ty.bytes_for(n));
        match size {
            Some(s) if s == data.len() as u64 => {}
            Some(s) => return Err(bad(format!("{ty} dims {dims:?} take {s} bytes, {} given", data.len()))),
            None => return Err(bad(format!("dims {dims:?} are not whole {ty} blocks along ne0, or overflow"))),
        }
        put_string(&mut out, name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&ty.id().to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset = (offset + data.len() as u64).div_ceil(alignment) * alignment;
    }
    Ok((out, offsets))
}

/// Write a GGUF v3 file atomically: a temporary file in the same folder, renamed over `path` once
/// complete (nothing half-written is left behind on error).
///
/// `metadata` is written in the order given (every value type, nested arrays of one element type
/// each); `tensors` are `(name, ggml dims fastest first, type, raw bytes)`, each placed at the
/// next multiple of the alignment: `general.alignment` when `metadata` sets it (a power of two),
/// else 32.
///
/// # Errors
/// [`ModelError::Malformed`] (naming the key or tensor) for duplicate keys or names, mixed-type
/// arrays, dims that are not 1 to 4 non-zero values with a row of whole blocks, or bytes that do
/// not match the dims; [`ModelError::Io`] when writing or renaming fails.
pub fn write(path: &Path, metadata: &[(String, MetaValue)], tensors: &[RawTensor]) -> Result<()> {
    let label = path.display().to_string();
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v {
            MetaValue::U32(a) if a.is_power_of_two() => u64::from(*a),
            _ => {
                return Err(ModelError::malformed(
                    &label,
                    "key general.alignment",
                    format!("{v:?}: the alignment must be a u32 power of two"),
                ))
            }
        },
    };
    let (header, offsets) = serialize_header(&label, metadata, tensors, alignment)?;
    let data_start = (header.len() as u64).div_ceil(alignment) * alignment;

    let tmp = temp_path(path);
    let io = |e: std::io::Error| ModelError::Io { path: label.clone(), error: e };
    let result = (|| -> Result<()> {
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut w = std::io::BufWriter::new(file);
        w.write_all(&header).map_err(io)?;
        let mut pos = header.len() as u64;
        let zeros = vec![0u8; alignment.min(1 << 20) as usize];
        let pad_to = |w: &mut std::io::BufWriter<std::fs::File>, pos: &mut u64, to: u64| -> Result<()> {
            while *pos < to {
                let n = (to - *pos).min(zeros.len() as u64) as usize;
                w.write_all(&zeros[..n]).map_err(io)?;
                *pos += n as u64;
            }
            Ok(())
        };
        for ((_, _, _, data), off) in tensors.iter().zip(&offsets) {
            pad_to(&mut w, &mut pos, data_start + off)?;
            w.write_all(data).map_err(io)?;
            pos += data.len() as u64;
        }
        // Pad the last tensor too, as ggml does, so the file is whole blocks of the alignment.
        let end = pos.div_ceil(alignment) * alignment;
        if !tensors.is_empty() {
            pad_to(&mut w, &mut pos, end)?;
        }
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        Ok(())
    })();
    match result {
        Ok(()) => std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            ModelError::Io { path: label.clone(), error: e }
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// A fresh temporary name beside `path`: `.NAME.PID.N.tmp`.
fn temp_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map_or("gguf".into(), |n| n.to_string_lossy().into_owned());
    let tmp = format!(".{name}.{}.{n}.tmp", std::process::id());
    match path.parent() {
        Some(p) => p.join(tmp),
        None => PathBuf::from(tmp),
    }
}

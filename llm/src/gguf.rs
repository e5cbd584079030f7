//! GGUF v2/v3: reader and writer. (being written)

use crate::meta::MetaValue;
use crate::Result;
use kernels_ref::tensor::Matrix;
use std::collections::BTreeMap;
use std::path::Path;

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

/// An open GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    /// The path, for messages.
    pub path: String,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata.
    pub metadata: BTreeMap<String, MetaValue>,
    /// Tensor headers in file order.
    pub tensors: Vec<TensorInfo>,
}

impl GgufFile {
    /// Open and validate.
    pub fn open(path: &Path) -> Result<GgufFile> {
        Err(crate::ModelError::unsupported(path.display().to_string(), "GGUF reader not yet built"))
    }
    /// A tensor dequantized to fp32, `[prod(dims[1..]), dims[0]]`.
    pub fn tensor_f32(&self, name: &str) -> Result<Matrix> {
        Err(crate::ModelError::unsupported(&self.path, format!("{name}")))
    }
}

/// Write a GGUF v3 file atomically.
pub fn write(path: &Path, metadata: &[(String, MetaValue)], tensors: &[(String, Vec<u64>, GgmlType, Vec<u8>)]) -> Result<()> {
    let _ = (metadata, tensors);
    Err(crate::ModelError::unsupported(path.display().to_string(), "GGUF writer not yet built"))
}

//! Tokenizers. (being written)

use crate::meta::MetaValue;
use crate::Result;
use std::collections::BTreeMap;

/// A tokenizer.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    /// From GGUF metadata.
    pub fn from_gguf(meta: &BTreeMap<String, MetaValue>, path: &str) -> Result<Self> {
        let _ = meta;
        Err(crate::ModelError::Tokenizer(format!("{path}: not yet built")))
    }
    /// From a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        Err(crate::ModelError::Tokenizer(format!("{}: not yet built", path.display())))
    }
    /// Encode.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let e = self.inner.encode(text, special).map_err(|e| crate::ModelError::Tokenizer(e.to_string()))?;
        Ok(e.get_ids().to_vec())
    }
}

//! Loading a model from a GGUF file or a safetensors folder. (being written)

use crate::weights::Model;
use crate::Result;
use std::path::Path;

/// Load a model: a `.gguf` file, or a folder with `config.json`, `*.safetensors` and `tokenizer.json`.
pub fn load(path: &Path) -> Result<Model> {
    Err(crate::ModelError::unsupported(path.display().to_string(), "loader not yet built"))
}

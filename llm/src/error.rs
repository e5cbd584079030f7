//! The models' error type: every failure says what and where (file, tensor, field, byte offset),
//! in one line.

use thiserror::Error;

/// Everything loading or running a model can fail with.
#[derive(Debug, Error)]
pub enum ModelError {
    /// The file could not be opened or read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The OS error (not a `source`: the message says it once, and anyhow's chain would
        /// print it again).
        error: std::io::Error,
    },
    /// The file is not what it claims (bad magic, truncated, offsets past the end, absurd counts,
    /// unknown types). `at` says where: a byte offset, a field or a tensor name.
    #[error("{path}: {at}: {detail}")]
    Malformed {
        /// The file.
        path: String,
        /// Where in the file (`offset 1234`, `tensor blk.0.attn_q.weight`, `key llama.block_count`).
        at: String,
        /// What is wrong.
        detail: String,
    },
    /// A well-formed file that this model family does not cover (another architecture, a tensor
    /// type without a dequantizer, a feature such as MoE or `rope_freqs`).
    #[error("{path}: {detail}")]
    Unsupported {
        /// The file or folder.
        path: String,
        /// What is not supported.
        detail: String,
    },
    /// The tokenizer failed or was refused.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Bad input to the executor (token id out of range, context too long).
    #[error("{0}")]
    Input(String),
    /// A reference op or scheme refused its input.
    #[error(transparent)]
    Ref(#[from] kernels_ref::RefError),
}

impl ModelError {
    /// Shorthand for [`ModelError::Malformed`].
    pub fn malformed(path: impl Into<String>, at: impl Into<String>, detail: impl Into<String>) -> Self {
        ModelError::Malformed { path: path.into(), at: at.into(), detail: detail.into() }
    }
    /// Shorthand for [`ModelError::Unsupported`].
    pub fn unsupported(path: impl Into<String>, detail: impl Into<String>) -> Self {
        ModelError::Unsupported { path: path.into(), detail: detail.into() }
    }
}

/// Result alias of the models crate.
pub type Result<T> = std::result::Result<T, ModelError>;

//! The reference's error type: every failure names the op or scheme, and the shapes or values
//! involved, so the binary can print one line that says what and where.

use thiserror::Error;

/// Everything the reference can refuse to do.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum RefError {
    /// A scheme name that is not in the catalogue, or has a parameter out of range.
    #[error("unknown scheme `{name}`: {reason}")]
    UnknownScheme { name: String, reason: String },
    /// Shapes that do not fit together (data length vs shape, matmul inner dims, ...).
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: String, detail: String },
    /// A group size that does not divide the axis it groups.
    #[error("{op}: group size {group} does not divide {axis} = {len}")]
    GroupSize { op: String, group: usize, axis: String, len: usize },
    /// A value the scheme does not accept (NaN, Inf, out of range).
    #[error("{op}: {what} at index {index} is {value}, which the scheme rejects")]
    BadValue { op: String, what: String, index: usize, value: f64 },
    /// Anything else the scheme or op cannot do, said plainly.
    #[error("{op}: {detail}")]
    Unsupported { op: String, detail: String },
}

impl RefError {
    /// Shorthand for [`RefError::Shape`].
    pub fn shape(op: impl Into<String>, detail: impl Into<String>) -> Self {
        RefError::Shape { op: op.into(), detail: detail.into() }
    }
    /// Shorthand for [`RefError::Unsupported`].
    pub fn unsupported(op: impl Into<String>, detail: impl Into<String>) -> Self {
        RefError::Unsupported { op: op.into(), detail: detail.into() }
    }
}

/// Result alias used across the reference.
pub type Result<T> = std::result::Result<T, RefError>;

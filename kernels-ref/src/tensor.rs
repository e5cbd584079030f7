//! A plain row-major 2-D fp32 tensor: what schemes quantize and what case files carry.

use crate::error::{RefError, Result};
use serde::{Deserialize, Serialize};

/// A row-major `[rows, cols]` fp32 matrix. Rows are output channels (or tokens); the
/// quantized axis is the last one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns (the quantized / reduced axis).
    pub cols: usize,
    /// `rows * cols` values, row-major.
    pub data: Vec<f32>,
}

impl Matrix {
    /// A matrix from its shape and row-major data, checking that they agree.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self> {
        match rows.checked_mul(cols) {
            Some(n) if n == data.len() => Ok(Matrix { rows, cols, data }),
            _ => Err(RefError::shape(
                "tensor",
                format!("shape [{rows}, {cols}] needs {} values, data has {}", rows as u128 * cols as u128, data.len()),
            )),
        }
    }
    /// An all-zero matrix.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Matrix { rows, cols, data: vec![0.0; rows * cols] }
    }
    /// Row `r` as a slice.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
    /// The shape as `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }
    /// The transpose.
    pub fn transpose(&self) -> Matrix {
        let mut out = vec![0.0; self.data.len()];
        for r in 0..self.rows {
            for c in 0..self.cols {
                out[c * self.rows + r] = self.data[r * self.cols + c];
            }
        }
        Matrix { rows: self.cols, cols: self.rows, data: out }
    }
}

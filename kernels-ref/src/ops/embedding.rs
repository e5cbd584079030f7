//! `embedding`: token ids to rows of a table.
//!
//! A row copy involves no arithmetic, so the output is the table's values bit for bit (NaN
//! payloads included). It lives here so that every op a decoder runs comes from one module
//! with one error convention.

use ndarray::{Array2, ArrayView2};

use crate::error::{RefError, Result};

/// Looks up `ids` in `table` (`[V, D]`): returns `[ids.len(), D]` whose row `t` is
/// `table[ids[t]]`, copied bit for bit.
///
/// # Errors
/// [`RefError::Shape`] naming the first id that is `>= V` (and its index in `ids`).
pub fn embedding(table: ArrayView2<'_, f32>, ids: &[u32]) -> Result<Array2<f32>> {
    let (v, d) = table.dim();
    if let Some((t, &id)) = ids.iter().enumerate().find(|&(_, &id)| id as usize >= v) {
        return Err(RefError::shape(
            "embedding",
            format!("id {id} (at index {t}) is out of range for a table of V = {v} rows of D = {d}"),
        ));
    }
    let mut out = Array2::<f32>::zeros((ids.len(), d));
    for (mut row, &id) in out.rows_mut().into_iter().zip(ids) {
        row.assign(&table.row(id as usize));
    }
    Ok(out)
}

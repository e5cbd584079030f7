//! Moving quantized weights between group sizes, exactly or not at all (field report 002:
//! ExecuTorch's MLX packer regrouped per-axis `IntxUnpackedToInt8Tensor` weights to group 128 by
//! `repeat_factor = old_gs // new_gs` without checking that the sizes divide, silently producing a
//! tensor whose scales no longer line up with its codes).
//!
//! [`regroup`] takes codes plus one (scale, zero-point) per group along the last axis
//! (torchao `IntxUnpackedToInt8Tensor` style) and re-expresses them with another group size:
//!
//! * **refining** (the new group divides the old one) repeats each scale / zero-point
//!   `old / new` times. The codes are untouched and every element keeps its (scale, zero-point),
//!   so [`Scheme::dequantize`] gives the same bits.
//! * **coarsening** (the old group divides the new one) is exact only when all the merged groups
//!   carry bit-identical (scale, zero-point); otherwise it is an error naming the row, the groups
//!   and the values, because one scale cannot reproduce two (the codes would have to be
//!   requantized, which is not a regroup).
//! * anything else (neither size divides the other, or the new size does not divide the row) is
//!   [`RefError::GroupSize`].
//!
//! [`repack_int4_to_int8`] / [`pack_int8_to_int4`] are the storage half of the same field report:
//! torchao `Int4Tensor` keeps `LN=even` two's-complement nibbles `[N, K/2]` and transposed scales
//! `(K/G, N)`; `IntxUnpackedToInt8Tensor` keeps int8 codes `[N, K]` and scales `(N, K/G)`.

use crate::error::{RefError, Result};
use crate::pack::{pack_nibbles, packed_len, unpack_nibbles, Nibbles, Packing};
use crate::scheme::{name, Family, Granularity, Quantized, Scheme};

/// The family of `s` with its group set to `g`, or why `s` cannot be regrouped.
fn family_with_group(s: &Scheme, g: usize) -> std::result::Result<Family, String> {
    let gran = Granularity::Group(g);
    Ok(match s.family {
        Family::Torchao { bits, mapping, .. } => Family::Torchao { bits, gran, mapping },
        Family::SymClip { bits, flavor, .. } => Family::SymClip { bits, gran, flavor },
        Family::CoremlAsym { bits, .. } => Family::CoremlAsym { bits, gran },
        Family::Sym8 { .. } => Family::Sym8 { group: g },
        Family::Fzp { .. } => Family::Fzp { group: g },
        Family::W8da4w { flavor, zp_dtype, .. } => Family::W8da4w { flavor, group: g, zp_dtype },
        // MLX stores one (scale, bias) per group like the affine schemes; only the group sizes the
        // format allows (32, 64, 128) are accepted, which the name check below enforces.
        Family::Mlx { bits, gpu, .. } => Family::Mlx { bits, group: g, gpu },
        Family::Q4_0 { .. } | Family::Q4_1 { .. } | Family::Q8_0 | Family::Q4K { .. } | Family::ActQ8_0 { .. } => {
            return Err("ggml block formats fix their block size (32 elements, 256 for q4_K super-blocks) in the \
                        byte layout itself; there is no other group size to move to"
                .into())
        }
        Family::Pal { .. } => {
            return Err("palettized weights are LUT indices, not codes with a per-group scale / zero-point".into())
        }
        Family::Act { .. } => {
            return Err("dynamic activations are quantized per token at run time; there are no stored groups".into())
        }
    })
}

fn bits_eq(a: Option<&[f32]>, i: usize, j: usize) -> bool {
    a.is_none_or(|v| v[i].to_bits() == v[j].to_bits())
}

/// Move `q` (an affine scheme with one scale and optional zero-point per group along the last
/// axis: torchao `w*-ao`, symclip, coremltools asym, sym8, fzp, 8da4w, and MLX between its allowed
/// group sizes 32/64/128) to groups of `new_group` elements, exactly or not at all.
///
/// The source is per-axis (`scale_shape [rows, 1]`, group = cols), per-tensor (`[1, 1]`, only
/// refinable) or group G (`[rows, cols/G]`). Refining repeats scales / zero-points (and the
/// quantize-time scales, if recorded); coarsening needs bit-identical (scale, zero-point) across
/// the merged groups and keeps the quantize-time scales only where they agree too (else
/// `quantize_scales` becomes `None`). The codes are never changed, so `Scheme::dequantize` of the
/// result equals that of `q` bit for bit.
///
/// The result's `scheme` carries `Granularity::Group(new_group)` (resp. `group: new_group`), even
/// for `new_group == cols`. When `new_group` already is `q`'s group length and granularity (a
/// per-axis tensor asked for `cols`), `q` is returned unchanged.
///
/// Errors: [`RefError::Unsupported`] for schemes without per-group affine qparams (ggml blocks,
/// palettization, activations), for group sizes the regrouped scheme does not allow (MLX outside
/// 32/64/128, the Vulkan 8da4w kernels' `G % 4`, group < 2), and for a coarsening of groups whose
/// (scale, zero-point) differ; [`RefError::GroupSize`] when `new_group` does not divide `cols` or
/// neither group size divides the other; [`RefError::Shape`] when `q`'s fields disagree with its
/// shape.
pub fn regroup(q: &Quantized, new_group: usize) -> Result<Quantized> {
    let s = q.scheme;
    let op = format!("regroup {s} to group {new_group}");
    let family = family_with_group(&s, new_group.max(1)).map_err(|why| RefError::unsupported(&op, why))?;
    let [rows, cols] = q.shape;
    let n = rows.checked_mul(cols).ok_or_else(|| RefError::shape(&op, "shape overflows"))?;
    let gran = s.granularity();
    let want = gran.qparam_shape(rows, cols);
    let check = |what: &str, got: usize, want: usize| {
        if got == want {
            Ok(())
        } else {
            Err(RefError::shape(&op, format!("{what}: expected {want}, got {got}")))
        }
    };
    if let Granularity::Group(g) = gran {
        if g == 0 || cols % g != 0 {
            return Err(RefError::GroupSize { op: format!("{op}: source"), group: g, axis: "cols".into(), len: cols });
        }
    }
    check("codes", q.q.len(), n)?;
    if q.scale_shape != want {
        return Err(RefError::shape(
            &op,
            format!("scale_shape {:?} is not the {:?} grid {want:?} of a [{rows}, {cols}] tensor", q.scale_shape, gran),
        ));
    }
    let nq = want[0] * want[1];
    check("scales", q.scales.len(), nq)?;
    if let Some(z) = &q.zero_points {
        check("zero_points", z.len(), nq)?;
    }
    if let Some(z) = &q.quantize_scales {
        check("quantize_scales", z.len(), nq)?;
    }
    if new_group == 0 || cols % new_group != 0 {
        return Err(RefError::GroupSize { op, group: new_group, axis: "cols".into(), len: cols });
    }
    let old = gran.group_len(cols);
    if old % new_group != 0 && new_group % old != 0 {
        return Err(RefError::GroupSize {
            op: format!("{op}: neither group size divides the other, so groups would straddle"),
            group: new_group,
            axis: "the old group size".into(),
            len: old,
        });
    }
    if new_group == old && gran != Granularity::Tensor {
        return Ok(q.clone());
    }
    let scheme = Scheme { family, dtype: s.dtype };
    match name::parse(&scheme.to_string()) {
        Ok(back) if back == scheme => {}
        Ok(_) => return Err(RefError::unsupported(&op, format!("{scheme} does not name the regrouped scheme"))),
        Err(e) => return Err(RefError::unsupported(&op, format!("the regrouped scheme is not valid: {e}"))),
    }
    // Source qparam index of element (r, c).
    let src = |r: usize, c: usize| match gran {
        Granularity::Group(g) => r * (cols / g) + c / g,
        Granularity::Channel => r,
        Granularity::Tensor => 0,
    };
    let per_row = cols / new_group;
    let mut idx = Vec::with_capacity(rows * per_row);
    let mut qs_agree = true;
    for r in 0..if per_row == 0 { 0 } else { rows } {
        for j in 0..per_row {
            let first = src(r, j * new_group);
            // Every old group inside the new one (just `first` when refining).
            for c in (j * new_group..(j + 1) * new_group).step_by(old.max(1)) {
                let k = src(r, c);
                let zp = q.zero_points.as_deref();
                if !bits_eq(Some(&q.scales), first, k) || !bits_eq(zp, first, k) {
                    let z = |i: usize| zp.map_or("none".to_string(), |v| v[i].to_string());
                    return Err(RefError::unsupported(
                        &op,
                        format!(
                            "cannot coarsen group {old} to {new_group} exactly: row {r}, new group {j} (columns {}..{}) \
                             merges old groups {} and {} whose (scale, zero-point) differ: ({}, {}) vs ({}, {}); one \
                             scale per {new_group} elements cannot reproduce both without requantizing the codes",
                            j * new_group,
                            (j + 1) * new_group,
                            first % want[1],
                            k % want[1],
                            q.scales[first],
                            z(first),
                            q.scales[k],
                            z(k)
                        ),
                    ));
                }
                if let Some(v) = &q.quantize_scales {
                    qs_agree &= v[first].to_bits() == v[k].to_bits();
                }
            }
            idx.push(first);
        }
    }
    let take = |v: &[f32]| idx.iter().map(|&i| v[i]).collect::<Vec<f32>>();
    let shape = [rows, per_row];
    Ok(Quantized {
        scheme,
        shape: q.shape,
        q: q.q.clone(),
        scales: take(&q.scales),
        scale_shape: shape,
        zero_points: q.zero_points.as_deref().map(take),
        zero_point_shape: q.zero_points.as_ref().map(|_| shape),
        lut: None,
        lut_shape: None,
        quantize_scales: match &q.quantize_scales {
            Some(v) if qs_agree => Some(idx.iter().map(|&i| v[i]).collect()),
            _ => None,
        },
        extra: q.extra.clone(),
    })
}

/// Transpose a row-major `[a, b]` grid into `[b, a]`.
pub fn transpose_grid(values: &[f32], a: usize, b: usize) -> Result<Vec<f32>> {
    match a.checked_mul(b) {
        Some(n) if n == values.len() => {}
        _ => {
            return Err(RefError::shape(
                "transpose",
                format!("[{a}, {b}] needs {} values, got {}", a as u128 * b as u128, values.len()),
            ))
        }
    }
    let mut out = vec![0f32; values.len()];
    for i in 0..if b == 0 { 0 } else { a } {
        for j in 0..b {
            out[j * a + i] = values[i * b + j];
        }
    }
    Ok(out)
}

/// The number of groups per row `K/G` implied by `n_scales` scales for `rows` rows of `cols`.
fn groups_per_row(op: &str, n_scales: usize, rows: usize, cols: usize) -> Result<usize> {
    if rows == 0 {
        return if n_scales == 0 {
            Ok(0)
        } else {
            Err(RefError::shape(op, format!("{n_scales} scales for a tensor with no rows")))
        };
    }
    if n_scales % rows != 0 {
        return Err(RefError::shape(
            op,
            format!("{n_scales} scales are not a whole number of groups for N = {rows} rows"),
        ));
    }
    let kg = n_scales / rows;
    if kg == 0 {
        return if cols == 0 {
            Ok(0)
        } else {
            Err(RefError::shape(op, format!("no scales for N = {rows} rows of K = {cols}")))
        };
    }
    if cols % kg != 0 {
        return Err(RefError::shape(
            op,
            format!("{n_scales} scales give K/G = {kg} groups per row, which does not divide K = {cols} (no integer group size)"),
        ));
    }
    Ok(kg)
}

/// torchao `Int4Tensor` storage → `IntxUnpackedToInt8Tensor` storage (field report 002's
/// `pack_mlx.py` conversion): `bytes` are `LN=even` two's-complement nibbles of an `[N, K]` =
/// `[rows, cols]` weight (`[N, ⌈K/2⌉]` bytes; an odd K's pad nibble must be 0) and `scales_kg_n`
/// the transposed `(K/G, N)` scales. Returns the int8 codes `[N, K]` (in `[-8, 7]`) and the scales
/// `(N, K/G)`. `G` follows from the scale count, which must be a multiple of N whose quotient
/// divides K. Exact; [`pack_int8_to_int4`] is its inverse.
pub fn repack_int4_to_int8(bytes: &[u8], rows: usize, cols: usize, scales_kg_n: &[f32]) -> Result<(Vec<i8>, Vec<f32>)> {
    let op = "repack_int4_to_int8";
    let p = Packing::Nibbles(Nibbles::LnEvenTc);
    let want = packed_len(p, rows, cols)?;
    if bytes.len() != want {
        return Err(RefError::shape(
            op,
            format!("bytes for [{rows}, {cols}] int4: expected {want}, got {}", bytes.len()),
        ));
    }
    let kg = groups_per_row(op, scales_kg_n.len(), rows, cols)?;
    let codes = unpack_nibbles(op, Nibbles::LnEvenTc, bytes, rows, cols)?;
    let scales = transpose_grid(scales_kg_n, kg, rows)?;
    Ok((codes.into_iter().map(|c| c as i8).collect(), scales))
}

/// `IntxUnpackedToInt8Tensor` storage → torchao `Int4Tensor` storage, the inverse of
/// [`repack_int4_to_int8`]: int8 codes `[N, K]` (each in `[-8, 7]`) and scales `(N, K/G)` become
/// `LN=even` two's-complement nibbles (`[N, ⌈K/2⌉]`, an odd K padded with q = 0) and scales
/// `(K/G, N)`.
pub fn pack_int8_to_int4(codes: &[i8], rows: usize, cols: usize, scales_n_kg: &[f32]) -> Result<(Vec<u8>, Vec<f32>)> {
    let op = "pack_int8_to_int4";
    match rows.checked_mul(cols) {
        Some(n) if n == codes.len() => {}
        _ => {
            return Err(RefError::shape(
                op,
                format!("codes for [{rows}, {cols}]: expected {}, got {}", rows as u128 * cols as u128, codes.len()),
            ))
        }
    }
    if let Some(i) = codes.iter().position(|&c| !(-8..=7).contains(&c)) {
        return Err(RefError::BadValue {
            op: op.into(),
            what: "int4 code (must be in -8..=7)".into(),
            index: i,
            value: codes[i] as f64,
        });
    }
    let kg = groups_per_row(op, scales_n_kg.len(), rows, cols)?;
    let q: Vec<i32> = codes.iter().map(|&c| c as i32).collect();
    let bytes = pack_nibbles(Nibbles::LnEvenTc, &q, rows, cols);
    let scales = transpose_grid(scales_n_kg, rows, kg)?;
    Ok((bytes, scales))
}

//! Dynamic activation quantization on the CPU, one token (row) per task: the per-token asymmetric
//! int8 quantizers of torchao (`ao`, `ao-i8w`), PyTorch's decomposed ops (`decomp`, double
//! math), ExecuTorch portable (`etport`, double scale), XNNPACK qd8 (`xnn`, the 255/range
//! multiplier) and ExecuTorch Vulkan (`vk`, fp32, GLSL `round` ties), and ggml's Q8_0 activation
//! quantizers (`a8-q8_0-{ref,avx,neon}`), each in its framework's dtypes and order of operations.
//!
//! The kernels read the zero-point back through a [`ZpBinding`] after choosing it, the way a
//! quantize shader reads it from the texture choose_qparams wrote: that is where the zp-bind
//! faults change the codes and everything downstream.

use super::faults::ZpBinding;
use super::num::{fp16, min_max, rne, smallest_normal, to_code, Arith};
use super::par::for_chunks;
use kernels_ref::round::Ties;
use kernels_ref::scheme::{ActFlavor, Family, Q8Flavor, Scheme};
use kernels_ref::tensor::Matrix;

const QMIN: f32 = -128.0;
const QMAX: f32 = 127.0;
/// ExecuTorch's `SMALL_SCALE_THRESHOLD` (a float literal).
const SMALL_SCALE: f32 = 6.1e-5;

/// How the stored activation qparams turn codes back into values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deq {
    /// torchao `dequantize_affine`: `T(f32(q − zp) · s)`.
    Torchao,
    /// `(q − zp) · s` in double, cast once to T (PyTorch decomposed and ExecuTorch portable keep
    /// float64 scales; for fp32 scales the f64 product is exact, so this is one rounding).
    Double,
    /// ggml `q · d` in fp32.
    Ggml,
}

/// Quantized activations `[rows, cols]` and their qparams.
#[derive(Debug, Clone)]
pub(crate) struct Tokens {
    /// Elements per token.
    pub cols: usize,
    /// int8 codes, row-major.
    pub q: Vec<i8>,
    /// Per-token zero-points as the kernel read them (`None` for ggml's symmetric blocks).
    pub zp: Option<Vec<i32>>,
    /// Stored scales: one per token, or one fp16 `d` per 32-element block for ggml.
    pub scales: Vec<f32>,
    /// The scale dequantization multiplies by (ExecuTorch portable's double; else the stored one).
    deq_scales: Vec<f64>,
    deq: Deq,
    t: Arith,
}

/// One token's result: codes are written in place.
struct Token {
    zp: i32,
    stored: f32,
    deq: f64,
}

/// Quantize activations `x` with an activation scheme (`a8-pt-asym-*` or `a8-q8_0-*`; an 8da4w
/// scheme must be mapped to its activation scheme first). The input is cast to the compute
/// dtype first, as the framework would see a tensor of that dtype. Errors say why the input is
/// refused (non-finite values, ggml rows that are not whole blocks).
pub(crate) fn quantize(scheme: &Scheme, x: &Matrix, bind: ZpBinding) -> Result<Tokens, String> {
    if let Some((i, v)) = x.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(format!("x[{i}] = {v}: activation quantizers reject NaN and ±Inf"));
    }
    if x.data.len() != x.rows * x.cols {
        return Err(format!("x is [{}, {}] but holds {} values", x.rows, x.cols, x.data.len()));
    }
    let t = Arith(scheme.dtype);
    let (rows, cols) = (x.rows, x.cols);
    let xt: Vec<f32> = x.data.iter().map(|&v| t.round(v)).collect();
    let mut q = vec![0i8; rows * cols];
    match scheme.family {
        Family::ActQ8_0 { flavor } => {
            if cols % 32 != 0 {
                return Err(format!("ggml Q8_0 blocks of 32 run along rows, and {cols} is not a multiple of 32"));
            }
            let scales =
                for_chunks(&mut q, 32, 32, || (), |_, b, codes| q8_0_block(flavor, &xt[b * 32..(b + 1) * 32], codes));
            let deq_scales = scales.iter().map(|&d| d as f64).collect();
            Ok(Tokens { cols, q, zp: None, scales, deq_scales, deq: Deq::Ggml, t })
        }
        Family::Act { flavor, .. } => {
            let per_row: Vec<Token> = if cols == 0 {
                (0..rows).map(|_| token(flavor, t, &[], bind, &mut [])).collect()
            } else {
                for_chunks(
                    &mut q,
                    cols,
                    cols,
                    || (),
                    |_, r, c| token(flavor, t, &xt[r * cols..(r + 1) * cols], bind, c),
                )
            };
            let deq = match flavor {
                ActFlavor::Ao | ActFlavor::AoI8w => Deq::Torchao,
                _ => Deq::Double,
            };
            Ok(Tokens {
                cols,
                q,
                zp: Some(per_row.iter().map(|r| r.zp).collect()),
                scales: per_row.iter().map(|r| r.stored).collect(),
                deq_scales: per_row.iter().map(|r| r.deq).collect(),
                deq,
                t,
            })
        }
        _ => Err(format!("{scheme} is not an activation scheme")),
    }
}

impl Tokens {
    /// The dequantized activations `[rows, cols]` in the compute dtype.
    pub fn dequantize(&self) -> Vec<f32> {
        let t = self.t;
        let cols = self.cols;
        self.q
            .iter()
            .enumerate()
            .map(|(i, &c)| match self.deq {
                Deq::Ggml => c as f32 * self.scales[i / 32],
                Deq::Torchao => {
                    let r = i / cols;
                    let zp = self.zp.as_ref().map_or(0, |z| z[r]);
                    t.round((c as i32 - zp) as f32 * self.scales[r])
                }
                Deq::Double => {
                    let r = i / cols;
                    let zp = self.zp.as_ref().map_or(0, |z| z[r]);
                    t.round64((c as i32 - zp) as f64 * self.deq_scales[r])
                }
            })
            .collect()
    }
}

/// Quantize one token (already in T) into `codes`.
fn token(flavor: ActFlavor, t: Arith, x: &[f32], bind: ZpBinding, codes: &mut [i8]) -> Token {
    #[cfg(target_arch = "x86_64")]
    {
        if super::linear::has_avx2() {
            // SAFETY: `token_avx2` only requires AVX2, which the CPU has just been checked for.
            return unsafe { token_avx2(flavor, t, x, bind, codes) };
        }
    }
    token_body(flavor, t, x, bind, codes)
}

/// [`token_body`] compiled with AVX2 (and the SSE4.1 it implies): `round_ties_even` becomes one
/// `roundps` instead of a library call, and the loops vectorize. IEEE operations either way: the
/// same bits.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn token_avx2(flavor: ActFlavor, t: Arith, x: &[f32], bind: ZpBinding, codes: &mut [i8]) -> Token {
    token_body(flavor, t, x, bind, codes)
}

#[inline(always)]
fn token_body(flavor: ActFlavor, t: Arith, x: &[f32], bind: ZpBinding, codes: &mut [i8]) -> Token {
    let (lo, hi) = min_max(x);
    let (mn, mx) = (lo.min(0.0), hi.max(0.0));
    match flavor {
        ActFlavor::Ao => torchao(t, smallest_normal(t.0), mn, mx, x, bind, codes),
        ActFlavor::AoI8w => torchao(t, f32::EPSILON, mn, mx, x, bind, codes),
        ActFlavor::Decomp => decomposed(t, mn, mx, x, bind, codes),
        ActFlavor::EtPort => {
            let (scale, init) = executorch_qparams(mn, mx, true);
            let zp = if init < QMIN as f64 {
                QMIN as i32
            } else if init > QMAX as f64 {
                QMAX as i32
            } else {
                // nearbyint((float)initial_zero_point)
                rne(init as f32) as i32
            };
            let zp = bind.read(zp);
            // quantize_val: the fp32 reciprocal of the (float) scale, round before adding zp.
            let inv = 1.0f32 / scale as f32;
            for (c, &v) in codes.iter_mut().zip(x) {
                *c = (zp as f32 + rne(inv * v)).clamp(QMIN, QMAX) as i8;
            }
            Token { zp, stored: scale as f32, deq: scale }
        }
        ActFlavor::Xnn => {
            let m = if mn == mx { 1.0f32 } else { 255.0 / (mx - mn) };
            let (dmin, dmax) = (mn * m, mx * m);
            let z = if (-128.0 + dmin) + (127.0 + dmax) > 0.0 { -128.0 - dmin } else { 127.0 - dmax };
            let zp = bind.read(rne(z.clamp(QMIN, QMAX)) as i32);
            let scale = 1.0f32 / m;
            // The convert kernel is handed the reciprocal of the stored scale.
            let mq = 1.0f32 / scale;
            for (c, &v) in codes.iter_mut().zip(x) {
                *c = (rne(v * mq) + zp as f32).clamp(QMIN, QMAX) as i8;
            }
            Token { zp, stored: scale, deq: scale as f64 }
        }
        ActFlavor::Vk(ties) => {
            let round = |v: f32| match ties {
                Ties::Even => rne(v),
                Ties::Away => v.round(),
            };
            let (scale, init) = executorch_qparams(mn, mx, false);
            let zp = if init < QMIN as f64 {
                QMIN as i32
            } else if init > QMAX as f64 {
                QMAX as i32
            } else {
                round(init as f32) as i32
            };
            let zp = bind.read(zp);
            // The scale is stored in DTYPE; the quantize shader takes 1/float(stored).
            let stored = t.round(scale as f32);
            let inv = 1.0f32 / stored;
            for (c, &v) in codes.iter_mut().zip(x) {
                *c = (round(v * inv) + zp as f32).clamp(QMIN, QMAX) as i8;
            }
            Token { zp, stored, deq: stored as f64 }
        }
    }
}

/// torchao `choose_qparams_affine(ASYMMETRIC, int8)` + `quantize_affine` per token, in T.
#[inline(always)]
fn torchao(t: Arith, eps: f32, mn: f32, mx: f32, x: &[f32], bind: ZpBinding, codes: &mut [i8]) -> Token {
    let s = t.div(t.sub(mx, mn), QMAX - QMIN).max(t.round(eps));
    // zp from the min, with the pre-cast scale, by division.
    let zp = bind.read((QMIN - rne(t.div(mn, s))).clamp(QMIN, QMAX) as i32);
    // `1.0 / scale` in the scale's dtype, the product in T; round before adding zp.
    let inv = t.div(1.0, s);
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = to_code((rne(t.mul(v, inv)) + zp as f32).clamp(QMIN, QMAX)) as i8;
    }
    Token { zp, stored: s, deq: s as f64 }
}

/// PyTorch `_choose_qparams_per_token_asymmetric_impl` (in T, nudged zp, clamp then round) and
/// `quantize_per_token` (float64 scale: `x·(1/s) + zp` in double, rounded after the add).
#[inline(always)]
fn decomposed(t: Arith, mn: f32, mx: f32, x: &[f32], bind: ZpBinding, codes: &mut [i8]) -> Token {
    let eps = t.round(f32::EPSILON);
    let s = t.div(t.sub(mx, mn), QMAX - QMIN).max(eps);
    let (dmin, dmax) = (t.div(mn, s), t.div(mx, s));
    let from_min = t.add(t.add(QMIN, dmin), t.add(QMAX, dmax)) > 0.0;
    let z = if from_min { t.sub(QMIN, dmin) } else { t.sub(QMAX, dmax) };
    let zp = bind.read(rne(z.clamp(QMIN, QMAX)) as i32);
    let inv = 1.0f64 / s as f64;
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = (v as f64 * inv + zp as f64).round_ties_even().clamp(QMIN as f64, QMAX as f64) as i8;
    }
    Token { zp, stored: s, deq: s as f64 }
}

/// ExecuTorch's `calculate_scale_and_zero_point` (portable: in double; Vulkan's
/// `choose_qparams_per_row.glsl`: the same steps in float). Returns `(scale, initial zp)`.
fn executorch_qparams(mn: f32, mx: f32, in_double: bool) -> (f64, f64) {
    let span = QMAX - QMIN;
    let mut scale: f64 = if in_double { (mx as f64 - mn as f64) / span as f64 } else { ((mx - mn) / span) as f64 };
    let (mut mn, mut mx) = (mn, mx);
    let sf = scale as f32;
    if sf == 0.0 || (1.0f32 / sf).is_infinite() {
        scale = if in_double { 0.1 } else { 0.1f32 as f64 };
    }
    if scale < SMALL_SCALE as f64 {
        let org = scale as f32;
        scale = SMALL_SCALE as f64;
        // Amplify the range so the floor scale still spans it.
        if mn == 0.0 {
            mx = SMALL_SCALE * span;
        } else if mx == 0.0 {
            mn = -SMALL_SCALE * span;
        } else {
            let amp = SMALL_SCALE / org;
            mn *= amp;
            mx *= amp;
        }
    }
    if in_double {
        let (a, b) = (mn as f64 / scale, mx as f64 / scale);
        let (zmin, zmax) = (QMIN as f64 - a, QMAX as f64 - b);
        let (emin, emax) = ((QMIN as f64).abs() - a.abs(), (QMAX as f64).abs() - b.abs());
        (scale, if emin < emax { zmin } else { zmax })
    } else {
        let s = scale as f32;
        let (a, b) = (mn / s, mx / s);
        let (zmin, zmax) = (QMIN - a, QMAX - b);
        let (emin, emax) = (128.0f32 - a.abs(), 127.0f32 - b.abs());
        (scale, if emin < emax { zmin as f64 } else { zmax as f64 })
    }
}

/// One ggml Q8_0 block of activations: codes in place, returns the stored fp16 `d`.
fn q8_0_block(flavor: Q8Flavor, x: &[f32], codes: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = match flavor {
        // x86 AVX: the multiplier directly, not 1/d.
        Q8Flavor::Avx => {
            if amax != 0.0 {
                127.0 / amax
            } else {
                0.0
            }
        }
        Q8Flavor::Ref | Q8Flavor::Neon => {
            if d != 0.0 {
                1.0 / d
            } else {
                0.0
            }
        }
    };
    for (c, &v) in codes.iter_mut().zip(x) {
        let p = v * id;
        // ref: roundf (ties away); SIMD: round-to-nearest-even conversions.
        *c = match flavor {
            Q8Flavor::Ref => p.round(),
            Q8Flavor::Avx | Q8Flavor::Neon => rne(p),
        } as i8;
    }
    fp16(d)
}

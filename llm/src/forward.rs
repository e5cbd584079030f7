//! The reference executor of Llama-family decoders: the fp32 oracle.
//!
//! One forward, built only from kernels-ref's exact ops, so its logits are deterministic bits
//! (independent of threads and machine):
//!
//! ```text
//! x = embed[ids]
//! per layer:
//!   h = rmsnorm(x, attn_norm)
//!   q, k, v = h·Wqᵀ (+bq), h·Wkᵀ (+bk), h·Wvᵀ (+bv)
//!   (Qwen3) q, k = rmsnorm per head (q_norm, k_norm)
//!   q, k = rope(q), rope(k) at positions start..start+T
//!   append k, v to the cache; a = causal GQA attention of q over the cache
//!   x = x + a·Woᵀ
//!   h = rmsnorm(x, ffn_norm); x = x + swiglu(h·Wgateᵀ, h·Wupᵀ)·Wdownᵀ
//! logits = rmsnorm(x, final_norm)·Headᵀ
//! ```
//!
//! The residual additions are single f32 additions (correctly rounded: exact-then-rounded).
//! With a dynamic activation scheme (8da4w), the input of every linear is fake-quantized per
//! token by that scheme's reference quantizer first (torchao's `8da4w` semantics).

use crate::config::LlamaConfig;
use crate::weights::Model;
use crate::{ModelError, Result};
use kernels_ref::ops;
use kernels_ref::scheme::Scheme;
use kernels_ref::tensor::Matrix;
use ndarray::{Array2, ArrayView1, ArrayView2};

/// The keys and values of every position fed so far, per layer (`[S, Hkv * Dh]` row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct KvCache {
    /// Keys per layer.
    pub k: Vec<Vec<f32>>,
    /// Values per layer.
    pub v: Vec<Vec<f32>>,
    /// Positions held.
    pub len: usize,
    /// Width of one row.
    pub width: usize,
}

impl KvCache {
    /// An empty cache for `config`.
    pub fn new(config: &LlamaConfig) -> Self {
        KvCache {
            k: vec![Vec::new(); config.n_layers],
            v: vec![Vec::new(); config.n_layers],
            len: 0,
            width: config.kv_width(),
        }
    }
}

/// The reference executor over a model's fp32 weights.
#[derive(Debug, Clone, Copy)]
pub struct RefExecutor<'m> {
    model: &'m Model,
    act: Option<Scheme>,
}

fn view(m: &Matrix) -> ArrayView2<'_, f32> {
    ArrayView2::from_shape((m.rows, m.cols), &m.data).expect("Matrix keeps rows * cols values")
}

fn owned(a: Array2<f32>) -> Matrix {
    let (r, c) = a.dim();
    let data = if a.is_standard_layout() { a.into_raw_vec_and_offset().0 } else { a.iter().copied().collect() };
    Matrix { rows: r, cols: c, data }
}

impl<'m> RefExecutor<'m> {
    /// The fp32 oracle of `model`.
    pub fn new(model: &'m Model) -> Self {
        RefExecutor { model, act: None }
    }

    /// The executor with every linear's input fake-quantized by `act` (a dynamic activation
    /// scheme, e.g. 8da4w's `a8-pt-asym-*`).
    pub fn with_activation(model: &'m Model, act: Option<Scheme>) -> Self {
        RefExecutor { model, act }
    }

    /// The model.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// An empty KV cache for this model.
    pub fn cache(&self) -> KvCache {
        KvCache::new(&self.model.config)
    }

    /// Feeds `tokens` at positions `cache.len ..`, appends their keys and values to `cache`, and
    /// returns the logits of every position fed, `[T, V]`.
    ///
    /// # Errors
    /// A token id outside the vocabulary, or more positions than the model's context.
    pub fn forward(&self, cache: &mut KvCache, tokens: &[u32]) -> Result<Matrix> {
        let x = self.hidden(cache, tokens)?;
        self.linear(&x, self.model.head(), None)
    }

    /// Like [`forward`](Self::forward), but returns the final hidden states (after the final
    /// norm), `[T, D]`, instead of the logits.
    pub fn hidden(&self, cache: &mut KvCache, tokens: &[u32]) -> Result<Matrix> {
        let m = self.model;
        let c = &m.config;
        check_tokens(c, cache.len, tokens)?;
        let t = tokens.len();
        let start = cache.len;
        let positions: Vec<usize> = (start..start + t).collect();
        let mut x = owned(ops::embedding(view(&m.embed), tokens)?);
        for (li, l) in m.layers.iter().enumerate() {
            let h = norm(&x, &l.attn_norm, c.rms_eps)?;
            let mut q = self.linear(&h, &l.wq, l.bq.as_deref())?;
            let mut k = self.linear(&h, &l.wk, l.bk.as_deref())?;
            let v = self.linear(&h, &l.wv, l.bv.as_deref())?;
            if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                q = head_norm(&q, qn, c.head_dim, c.rms_eps)?;
                k = head_norm(&k, kn, c.head_dim, c.rms_eps)?;
            }
            let q = owned(ops::rope_with_scaling(
                view(&q),
                &positions,
                c.head_dim,
                c.rope_theta,
                c.rope_style,
                c.rope_scaling,
            )?);
            let k = owned(ops::rope_with_scaling(
                view(&k),
                &positions,
                c.head_dim,
                c.rope_theta,
                c.rope_style,
                c.rope_scaling,
            )?);
            cache.k[li].extend_from_slice(&k.data);
            cache.v[li].extend_from_slice(&v.data);
            let s = start + t;
            let kc = ArrayView2::from_shape((s, cache.width), &cache.k[li]).expect("cache rows");
            let vc = ArrayView2::from_shape((s, cache.width), &cache.v[li]).expect("cache rows");
            let a = owned(ops::attention(view(&q), kc, vc, c.n_heads, c.n_kv_heads, true, start, c.attn_scale())?);
            let o = self.linear(&a, &l.wo, None)?;
            add_into(&mut x, &o);
            let h = norm(&x, &l.ffn_norm, c.rms_eps)?;
            let g = self.linear(&h, &l.w_gate, None)?;
            let u = self.linear(&h, &l.w_up, None)?;
            let gu = owned(ops::swiglu(view(&g), view(&u))?);
            let d = self.linear(&gu, &l.w_down, None)?;
            add_into(&mut x, &d);
        }
        cache.len += t;
        norm(&x, &m.final_norm, c.rms_eps)
    }

    /// `x·wᵀ (+ b)`, with `x` fake-quantized per token first when an activation scheme is set.
    fn linear(&self, x: &Matrix, w: &Matrix, b: Option<&[f32]>) -> Result<Matrix> {
        let xq;
        let x = match self.act {
            Some(a) => {
                let q = a.quantize(x)?;
                xq = Matrix::new(x.rows, x.cols, a.dequantize(&q)?)?;
                &xq
            }
            None => x,
        };
        Ok(owned(ops::linear(view(x), view(w), b.map(ArrayView1::from))?))
    }
}

/// Token ids must be in the vocabulary and fit the context.
pub fn check_tokens(c: &LlamaConfig, start: usize, tokens: &[u32]) -> Result<()> {
    if let Some((i, &id)) = tokens.iter().enumerate().find(|&(_, &id)| id as usize >= c.vocab_size) {
        return Err(ModelError::Input(format!(
            "token {id} at index {i} is outside the vocabulary of {}",
            c.vocab_size
        )));
    }
    if start + tokens.len() > c.max_positions {
        return Err(ModelError::Input(format!(
            "{} positions exceed the model's context of {}",
            start + tokens.len(),
            c.max_positions
        )));
    }
    Ok(())
}

fn norm(x: &Matrix, w: &[f32], eps: f32) -> Result<Matrix> {
    Ok(owned(ops::rmsnorm(view(x), ArrayView1::from(w), eps)?))
}

/// RMSNorm of each head of `x` (`[T, H * Dh]`) with the same `[Dh]` weight.
fn head_norm(x: &Matrix, w: &[f32], dh: usize, eps: f32) -> Result<Matrix> {
    let heads = Matrix { rows: x.rows * x.cols / dh, cols: dh, data: x.data.clone() };
    let n = norm(&heads, w, eps)?;
    Ok(Matrix { rows: x.rows, cols: x.cols, data: n.data })
}

fn add_into(x: &mut Matrix, y: &Matrix) {
    for (a, b) in x.data.iter_mut().zip(&y.data) {
        *a += *b;
    }
}

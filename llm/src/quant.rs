//! A scheme applied to a model's weights, as a device sees them.
//!
//! A [`QuantPlan`] names a scheme for the transformer's linear weights and, separately, for the
//! head and the embedding table (a head quantized one way or another flips top-1s, as field
//! report 004 shows). [`QModel::quantize`] applies it with the reference quantizers of
//! kernels-ref, so every device receives the same stored codes, scales and zero-points; norms
//! and biases stay fp32.

use crate::config::LlamaConfig;
use crate::weights::{LayerWeights, Model};
use crate::{ModelError, Result};
use kernels_ref::scheme::{Quantized, Scheme};
use kernels_ref::tensor::Matrix;
use rayon::prelude::*;

/// Which scheme goes where. `None` keeps that part in fp32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuantPlan {
    /// The q/k/v/o and FFN projections of every layer.
    pub linear: Option<Scheme>,
    /// The head (when tied, the head is quantized from the embedding table on its own).
    pub head: Option<Scheme>,
    /// The embedding table.
    pub embed: Option<Scheme>,
}

impl QuantPlan {
    /// Only the linear weights quantized.
    pub fn linear(scheme: Scheme) -> Self {
        QuantPlan { linear: Some(scheme), head: None, embed: None }
    }
    /// The linear scheme's name, or `fp32`.
    pub fn linear_name(&self) -> String {
        self.linear.map_or("fp32".into(), |s| s.to_string())
    }
    /// The head scheme's name, or `fp32`.
    pub fn head_name(&self) -> String {
        self.head.map_or("fp32".into(), |s| s.to_string())
    }
    /// The embedding scheme's name, or `fp32`.
    pub fn embed_name(&self) -> String {
        self.embed.map_or("fp32".into(), |s| s.to_string())
    }
    /// One label for results: the linear scheme, with `+head:S` / `+embed:S` when they are set.
    pub fn label(&self) -> String {
        let mut s = self.linear_name();
        if let Some(h) = self.head {
            s.push_str(&format!("+head:{h}"));
        }
        if let Some(e) = self.embed {
            s.push_str(&format!("+embed:{e}"));
        }
        s
    }
    /// The dynamic activation scheme of the linear scheme (8da4w), if any.
    pub fn activation(&self) -> Option<Scheme> {
        self.linear.and_then(|s| s.activation_scheme())
    }
}

/// A weight as stored for a device: fp32, or a scheme's quantized codes and qparams. Linear
/// weights are `[out, in]`; an embedding table is `[V, D]`.
// A model holds a few hundred of these, each owning megabytes: the inline size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum QTensor {
    /// Kept in fp32.
    F32(Matrix),
    /// Quantized (`Quantized::scheme` says how; for 8da4w the composite scheme, whose weight
    /// codes are its `weight_scheme()`'s).
    Quant(Quantized),
}

impl QTensor {
    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        match self {
            QTensor::F32(m) => m.shape(),
            QTensor::Quant(q) => q.shape,
        }
    }
    /// The scheme, if quantized.
    pub fn scheme(&self) -> Option<&Scheme> {
        match self {
            QTensor::F32(_) => None,
            QTensor::Quant(q) => Some(&q.scheme),
        }
    }
    /// The weight as the scheme's dequantization gives it (fp32 as is).
    pub fn dequantize(&self) -> Result<Matrix> {
        match self {
            QTensor::F32(m) => Ok(m.clone()),
            QTensor::Quant(q) => {
                let v = q.scheme.dequantize(q)?;
                Ok(Matrix::new(q.shape[0], q.shape[1], v)?)
            }
        }
    }
    /// Quantize `m` with `scheme` (`None`: keep fp32). `what` names the tensor in errors.
    pub fn quantize(m: &Matrix, scheme: Option<Scheme>, what: &str) -> Result<QTensor> {
        let Some(s) = scheme else { return Ok(QTensor::F32(m.clone())) };
        if s.is_activation() {
            return Err(ModelError::Input(format!(
                "{s} is an activation-only scheme and cannot quantize the weight {what}"
            )));
        }
        match s.quantize(m) {
            Ok(q) => Ok(QTensor::Quant(q)),
            Err(e) => Err(ModelError::Input(format!("{what} [{}, {}] with {s}: {e}", m.rows, m.cols))),
        }
    }
}

/// One decoder layer as stored for a device.
#[derive(Debug, Clone, PartialEq)]
pub struct QLayer {
    /// RMSNorm weight before attention.
    pub attn_norm: Vec<f32>,
    /// Query projection.
    pub wq: QTensor,
    /// Key projection.
    pub wk: QTensor,
    /// Value projection.
    pub wv: QTensor,
    /// q/k/v biases (Qwen2).
    pub bq: Option<Vec<f32>>,
    /// See `bq`.
    pub bk: Option<Vec<f32>>,
    /// See `bq`.
    pub bv: Option<Vec<f32>>,
    /// Per-head q/k RMSNorm weights (Qwen3).
    pub q_norm: Option<Vec<f32>>,
    /// See `q_norm`.
    pub k_norm: Option<Vec<f32>>,
    /// Output projection.
    pub wo: QTensor,
    /// RMSNorm weight before the FFN.
    pub ffn_norm: Vec<f32>,
    /// Gate projection.
    pub w_gate: QTensor,
    /// Up projection.
    pub w_up: QTensor,
    /// Down projection.
    pub w_down: QTensor,
}

impl QLayer {
    /// The seven projections in forward order, with their names.
    pub fn linears(&self) -> [(&'static str, &QTensor); 7] {
        [
            ("wq", &self.wq),
            ("wk", &self.wk),
            ("wv", &self.wv),
            ("wo", &self.wo),
            ("w_gate", &self.w_gate),
            ("w_up", &self.w_up),
            ("w_down", &self.w_down),
        ]
    }
}

/// A model with a [`QuantPlan`] applied: what a device loads.
#[derive(Debug, Clone, PartialEq)]
pub struct QModel {
    /// Shapes and constants.
    pub config: LlamaConfig,
    /// The plan that made it.
    pub plan: QuantPlan,
    /// The embedding table `[V, D]`.
    pub embed: QTensor,
    /// The layers.
    pub layers: Vec<QLayer>,
    /// Final RMSNorm weight.
    pub final_norm: Vec<f32>,
    /// The head `[V, D]` (its own copy even when tied, since it may be quantized differently).
    pub head: QTensor,
}

impl QModel {
    /// Apply `plan` to `model`'s fp32 weights with the reference quantizers (tensors in
    /// parallel; each tensor's codes are deterministic).
    ///
    /// # Errors
    /// A scheme whose group size does not divide a weight's input width, or an activation-only
    /// scheme given for weights, names the tensor and its shape.
    pub fn quantize(model: &Model, plan: &QuantPlan) -> Result<QModel> {
        let w = plan.linear;
        let layers =
            model.layers.par_iter().enumerate().map(|(i, l)| quantize_layer(i, l, w)).collect::<Result<Vec<_>>>()?;
        let (embed, head) = rayon::join(
            || QTensor::quantize(&model.embed, plan.embed, "the embedding table"),
            || QTensor::quantize(model.head(), plan.head, "the head"),
        );
        Ok(QModel {
            config: model.config.clone(),
            plan: *plan,
            embed: embed?,
            layers,
            final_norm: model.final_norm.clone(),
            head: head?,
        })
    }

    /// The fp32 model this one dequantizes to (what the reference runs for a weight scheme); it
    /// has no tokenizer and an empty source.
    pub fn dequantized(&self) -> Result<Model> {
        let layers = self
            .layers
            .par_iter()
            .map(|l| {
                Ok(LayerWeights {
                    attn_norm: l.attn_norm.clone(),
                    wq: l.wq.dequantize()?,
                    wk: l.wk.dequantize()?,
                    wv: l.wv.dequantize()?,
                    bq: l.bq.clone(),
                    bk: l.bk.clone(),
                    bv: l.bv.clone(),
                    q_norm: l.q_norm.clone(),
                    k_norm: l.k_norm.clone(),
                    wo: l.wo.dequantize()?,
                    ffn_norm: l.ffn_norm.clone(),
                    w_gate: l.w_gate.dequantize()?,
                    w_up: l.w_up.dequantize()?,
                    w_down: l.w_down.dequantize()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Model {
            config: self.config.clone(),
            embed: self.embed.dequantize()?,
            layers,
            final_norm: self.final_norm.clone(),
            head: Some(self.head.dequantize()?),
            tokenizer: None,
            source: Default::default(),
        })
    }
}

fn quantize_layer(i: usize, l: &LayerWeights, s: Option<Scheme>) -> Result<QLayer> {
    let q = |m: &Matrix, name: &str| QTensor::quantize(m, s, &format!("layer {i} {name}"));
    Ok(QLayer {
        attn_norm: l.attn_norm.clone(),
        wq: q(&l.wq, "wq")?,
        wk: q(&l.wk, "wk")?,
        wv: q(&l.wv, "wv")?,
        bq: l.bq.clone(),
        bk: l.bk.clone(),
        bv: l.bv.clone(),
        q_norm: l.q_norm.clone(),
        k_norm: l.k_norm.clone(),
        wo: q(&l.wo, "wo")?,
        ffn_norm: l.ffn_norm.clone(),
        w_gate: q(&l.w_gate, "w_gate")?,
        w_up: q(&l.w_up, "w_up")?,
        w_down: q(&l.w_down, "w_down")?,
    })
}

//! The `ref` device's model session: the reference executor of the models crate over the
//! weights as the plan's scheme dequantizes them, with every linear's input fake-quantized per
//! token when the scheme has a dynamic activation part (8da4w). With no scheme it is the fp32
//! oracle itself.

use crate::device::{DeviceError, ModelSession};
use kernels_ref::tensor::Matrix;
use models::{KvCache, Model, QModel, RefExecutor};

/// A model on the `ref` device.
#[derive(Debug)]
pub(crate) struct RefSession {
    model: Model,
    act: Option<kernels_ref::scheme::Scheme>,
    cache: KvCache,
}

impl RefSession {
    /// Dequantize `q` once and keep it.
    pub(crate) fn new(q: &QModel) -> Result<RefSession, DeviceError> {
        let model = q.dequantized()?;
        let cache = KvCache::new(&model.config);
        Ok(RefSession { model, act: q.plan.activation(), cache })
    }
}

impl ModelSession for RefSession {
    fn forward(&mut self, tokens: &[u32]) -> Result<Matrix, DeviceError> {
        Ok(RefExecutor::with_activation(&self.model, self.act).forward(&mut self.cache, tokens)?)
    }
    fn reset(&mut self) {
        self.cache = KvCache::new(&self.model.config);
    }
    fn len(&self) -> usize {
        self.cache.len
    }
}

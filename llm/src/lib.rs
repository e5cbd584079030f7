//! qdiff's models: checkpoints, tokenizers and the Llama-family reference executor.
//!
//! - [`config`]: [`LlamaConfig`], the architecture parameters of a Llama-family decoder (Llama,
//!   SmolLM2, Qwen2, Qwen3), read from GGUF metadata or a `config.json`.
//! - [`weights`]: [`Model`], a checkpoint's fp32 weights under canonical names, with its source
//!   (path, sha256) and tokenizer.
//! - [`meta`]: GGUF metadata values.
//! - [`gguf`]: the GGUF v2/v3 reader (memory-mapped, never trusting the file) and writer.
//! - [`safetensors`]: Hugging Face folders (`config.json`, `*.safetensors`, sharded index).
//! - [`load`]: [`load()`](load::load) a model from a GGUF file or a safetensors folder.
//! - [`tokenizer`]: HF `tokenizer.json` and the GGUF-embedded tokenizer.
//! - [`quant`]: a scheme applied to a model's weights ([`QuantPlan`], [`QModel`]), as devices see them.
//! - [`forward`]: the reference executor: batched prefill with a KV cache, logits for every
//!   position, built on kernels-ref's exact ops (deterministic bits).
//! - [`metrics`]: teacher-forced top-1, top-5, KLD and Δp of a device's logits against the oracle's.
//! - [`synthetic`]: the built-in seeded tiny Llama, written and read back through the GGUF path.
//! - [`texts`]: the default teacher-forcing texts.

pub mod config;
pub mod error;
pub mod forward;
pub mod gguf;
pub mod load;
pub mod meta;
pub mod metrics;
pub mod quant;
pub mod safetensors;
pub mod synthetic;
pub mod texts;
pub mod tokenizer;
pub mod weights;

pub use config::{Arch, LlamaConfig};
pub use error::{ModelError, Result};
pub use forward::{KvCache, RefExecutor};
pub use quant::{QModel, QTensor, QuantPlan};
pub use tokenizer::Tokenizer;
pub use weights::{LayerWeights, Model, Source};

/// The example model's file name (fetched into `models/` by `scripts/fetch-smollm2.sh`).
pub const EXAMPLE_MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// For tests that need the example model: its path when `models/` has it. When it is absent the
/// test should skip: this prints the command that fetches it and returns `None`, except under
/// `QDIFF_REQUIRE_MODEL=1` (set by CI, which fetches it), where a missing model is a failure.
///
/// # Panics
/// When the model is absent and `QDIFF_REQUIRE_MODEL=1`.
pub fn example_model_for_tests() -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("models").join(EXAMPLE_MODEL);
    if path.is_file() {
        return Some(path);
    }
    let msg = format!("models/{EXAMPLE_MODEL} is absent; fetch it with scripts/fetch-smollm2.sh");
    if std::env::var("QDIFF_REQUIRE_MODEL").is_ok_and(|v| v == "1") {
        panic!("QDIFF_REQUIRE_MODEL=1 but {msg}");
    }
    eprintln!("skipping: {msg}");
    None
}

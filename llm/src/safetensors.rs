//! Hugging Face safetensors folders. (being written)

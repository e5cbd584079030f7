//! Tokenizers: the GGUF-embedded one (`tokenizer.ggml.*`) and Hugging Face `tokenizer.json`.
//!
//! Both are built on the `tokenizers` crate. The GGUF one reproduces llama.cpp's tokenizer for
//! byte-level BPE vocabularies (`tokenizer.ggml.model = "gpt2"`): the vocabulary and merges of the
//! file, the pre-tokenizer regexes llama.cpp picks for `tokenizer.ggml.pre` (applied in sequence,
//! matches and the text between them both becoming pieces), the GPT-2 byte-to-unicode mapping, and
//! the CONTROL / USER_DEFINED tokens split out of the text before everything else (llama.cpp's
//! `parse_special`). [`GgufVocab`] trains a small byte-level vocabulary for the built-in synthetic
//! model and writes it as GGUF metadata.

use crate::gguf::GgufFile;
use crate::meta::MetaValue;
use crate::{ModelError, Result};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, PreTokenizerWrapper,
    SplitDelimiterBehavior,
};

/// GGUF `tokenizer.ggml.token_type` of an ordinary vocabulary piece.
pub const TOKEN_TYPE_NORMAL: i32 = 1;
/// GGUF token type of the unknown token.
pub const TOKEN_TYPE_UNKNOWN: i32 = 2;
/// GGUF token type of a control token (`<|im_start|>`): split out of the text only when special
/// tokens are parsed.
pub const TOKEN_TYPE_CONTROL: i32 = 3;
/// GGUF token type of a user-defined token: always split out of the text.
pub const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// The GPT-2 regex (llama.cpp's spelling, without the trailing `|\s+`: text a regex leaves
/// unmatched becomes a piece of its own anyway).
const RE_GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's regex, with the case-insensitive contractions spelled out as llama.cpp does.
const RE_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's regex: Llama 3's with single digits.
const RE_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How llama.cpp pre-tokenizes for one `tokenizer.ggml.pre` value.
#[derive(Debug, Clone, PartialEq)]
struct PreTokenization {
    /// Regexes applied one after the other to every piece.
    regexes: &'static [&'static str],
    /// A word that is a whole vocabulary token is taken as is, without merges (Llama 3).
    ignore_merges: bool,
    /// Whether BOS is added when the file does not say (`tokenizer.ggml.add_bos_token`).
    add_bos: bool,
}

/// The pre-tokenization llama.cpp uses for `pre` (its `tokenizer.ggml.pre` names; `gpt2` is
/// accepted as a spelling of `gpt-2`). `None` for a name this module does not know.
fn pre_tokenization(pre: &str) -> Option<PreTokenization> {
    const DEFAULT: &[&str] = &[r"[\p{P}\$\+<=>\^~\|]+", RE_GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"];
    let p = |regexes, ignore_merges, add_bos| Some(PreTokenization { regexes, ignore_merges, add_bos });
    match pre {
        "default" => p(DEFAULT, false, false),
        "gpt2" | "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" | "trillion" | "exaone4" | "granite-docling" => {
            p(&[RE_GPT2], false, false)
        }
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
            p(&[r"\p{N}", RE_GPT2], false, false)
        }
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2" => {
            p(&[RE_LLAMA3], true, true)
        }
        "dbrx" | "smaug-bpe" => p(&[RE_LLAMA3], false, false),
        "qwen2" | "deepseek-r1-qwen" | "megrez" | "stablelm2" | "hunyuan" => p(&[RE_QWEN2], false, false),
        _ => None,
    }
}

/// The pre-tokenizer names [`Tokenizer::from_gguf`] accepts for `tokenizer.ggml.pre`.
pub const SUPPORTED_PRE: &[&str] = &[
    "default",
    "gpt2",
    "gpt-2",
    "phi-2",
    "mpt",
    "olmo",
    "jais",
    "trillion",
    "exaone4",
    "granite-docling",
    "smollm",
    "starcoder",
    "refact",
    "command-r",
    "codeshell",
    "exaone",
    "minerva-7b",
    "mellum2",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "dbrx",
    "smaug-bpe",
    "qwen2",
    "deepseek-r1-qwen",
    "megrez",
    "stablelm2",
    "hunyuan",
];

/// The `tokenizers` pre-tokenizer for a list of regexes: each splits every piece, keeping its
/// matches and the text between them as pieces, then the GPT-2 byte-to-unicode mapping.
fn pre_tokenizer(regexes: &[&str]) -> Result<PreTokenizerWrapper> {
    let mut steps = Vec::with_capacity(regexes.len() + 1);
    for re in regexes {
        let split = Split::new(SplitPattern::Regex((*re).to_string()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| ModelError::Tokenizer(format!("pre-tokenizer regex {re:?}: {e}")))?;
        steps.push(PreTokenizerWrapper::Split(split));
    }
    steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)));
    Ok(PreTokenizerWrapper::Sequence(Sequence::new(steps)))
}

/// GPT-2's byte-to-unicode table: printable Latin-1 bytes stand for themselves, the others
/// (controls, space, ...) for U+0100 onwards, in byte order.
pub fn byte_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let printable = matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        // Every code is below U+0144, a valid scalar value.
        *slot = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
    }
    table
}

/// What decoding needs of a GGUF vocabulary: each piece, and whether it is literal text
/// (control / user-defined / unknown tokens) rather than byte-level encoded.
#[derive(Clone)]
struct ByteLevelPieces {
    pieces: Vec<String>,
    literal: Vec<bool>,
    unicode_to_byte: HashMap<char, u8>,
}

impl ByteLevelPieces {
    /// The bytes token `id` stands for.
    fn bytes(&self, id: u32) -> Option<Vec<u8>> {
        let i = usize::try_from(id).ok()?;
        let piece = self.pieces.get(i)?;
        if self.literal.get(i).copied().unwrap_or(false) {
            return Some(piece.as_bytes().to_vec());
        }
        let mut out = Vec::with_capacity(piece.len());
        for c in piece.chars() {
            match self.unicode_to_byte.get(&c) {
                Some(&b) => out.push(b),
                // Not a byte-level character: the piece's own UTF-8.
                None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        Some(out)
    }
}

/// A text tokenizer: encodes text to token ids and decodes them back.
///
/// Cloning is cheap (the vocabulary is shared).
#[derive(Clone)]
pub struct Tokenizer {
    /// Special tokens written in the text become their ids.
    parse_special: Arc<tokenizers::Tokenizer>,
    /// Special tokens written in the text are plain text.
    plain: Arc<tokenizers::Tokenizer>,
    /// GGUF: the pieces, decoded here rather than by `tokenizers` (exact for literal tokens).
    gguf: Option<Arc<ByteLevelPieces>>,
    kind: String,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    vocab_size: usize,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

/// The error for a missing or malformed `tokenizer.ggml.*` key.
fn key_error(path: &str, key: &str, detail: impl fmt::Display) -> ModelError {
    ModelError::Tokenizer(format!("{path}: key {key}: {detail}"))
}

fn get_str<'a>(meta: &'a BTreeMap<String, MetaValue>, path: &str, key: &str) -> Result<Option<&'a str>> {
    match meta.get(key) {
        None => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or_else(|| key_error(path, key, "not a string")),
    }
}

fn get_token_id(meta: &BTreeMap<String, MetaValue>, path: &str, key: &str, n_tokens: usize) -> Result<Option<u32>> {
    let Some(v) = meta.get(key) else { return Ok(None) };
    let id = v.as_u64().ok_or_else(|| key_error(path, key, "not a non-negative integer"))?;
    match u32::try_from(id) {
        Ok(id) if (id as usize) < n_tokens => Ok(Some(id)),
        _ => Err(key_error(path, key, format!("token id {id} is out of range (vocabulary of {n_tokens})"))),
    }
}

fn get_string_array(meta: &BTreeMap<String, MetaValue>, path: &str, key: &str) -> Result<Option<Vec<String>>> {
    let Some(v) = meta.get(key) else { return Ok(None) };
    let arr = v.as_array().ok_or_else(|| key_error(path, key, "not an array"))?;
    arr.iter()
        .enumerate()
        .map(|(i, e)| {
            e.as_str().map(str::to_owned).ok_or_else(|| key_error(path, key, format!("entry {i} is not a string")))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

impl Tokenizer {
    /// The tokenizer embedded in GGUF metadata (`tokenizer.ggml.*`); `path` names the file in
    /// messages.
    ///
    /// Supports `tokenizer.ggml.model = "gpt2"` (byte-level BPE) with the pre-tokenizers of
    /// [`SUPPORTED_PRE`] (a missing `tokenizer.ggml.pre` means `default`, as in llama.cpp).
    /// Fails with [`ModelError::Tokenizer`] naming the key when the metadata is missing or
    /// malformed, and with [`ModelError::Unsupported`] for another tokenizer model or an
    /// unknown pre-tokenizer.
    pub fn from_gguf(meta: &BTreeMap<String, MetaValue>, path: &str) -> Result<Self> {
        let model = get_str(meta, path, "tokenizer.ggml.model")?.ok_or_else(|| {
            ModelError::Tokenizer(format!("{path}: no tokenizer in the file (key tokenizer.ggml.model is missing)"))
        })?;
        match model {
            "gpt2" => {}
            "llama" => {
                return Err(ModelError::Tokenizer(format!(
                    "{path}: SentencePiece 'llama' tokenizers are not supported yet (tokenizer.ggml.model = \"llama\")"
                )))
            }
            other => {
                return Err(ModelError::unsupported(path, format!("tokenizer model '{other}' (tokenizer.ggml.model)")))
            }
        }
        let pre_name = get_str(meta, path, "tokenizer.ggml.pre")?.unwrap_or("default");
        let pre = pre_tokenization(pre_name).ok_or_else(|| {
            ModelError::unsupported(
                path,
                format!("pre-tokenizer '{pre_name}' (tokenizer.ggml.pre); supported: {}", SUPPORTED_PRE.join(", ")),
            )
        })?;

        let key = "tokenizer.ggml.tokens";
        let tokens = get_string_array(meta, path, key)?.ok_or_else(|| key_error(path, key, "missing"))?;
        if tokens.is_empty() {
            return Err(key_error(path, key, "empty"));
        }
        let n = tokens.len();
        if u32::try_from(n).is_err() {
            return Err(key_error(path, key, format!("{n} tokens do not fit u32 ids")));
        }

        let key = "tokenizer.ggml.token_type";
        let token_types: Vec<i32> = match meta.get(key) {
            None => vec![TOKEN_TYPE_NORMAL; n],
            Some(v) => {
                let arr = v.as_array().ok_or_else(|| key_error(path, key, "not an array"))?;
                if arr.len() != n {
                    return Err(key_error(path, key, format!("{} entries for {n} tokens", arr.len())));
                }
                arr.iter()
                    .enumerate()
                    .map(|(i, e)| {
                        e.as_i64()
                            .and_then(|t| i32::try_from(t).ok())
                            .ok_or_else(|| key_error(path, key, format!("entry {i} is not an integer")))
                    })
                    .collect::<Result<_>>()?
            }
        };

        let key = "tokenizer.ggml.merges";
        let merge_strings = get_string_array(meta, path, key)?.ok_or_else(|| key_error(path, key, "missing"))?;

        let mut vocab = Vocab::with_capacity(n);
        for (id, t) in tokens.iter().enumerate() {
            // A repeated piece keeps its last id, as llama.cpp's text-to-token map does.
            vocab.insert(t.clone(), id as u32);
        }
        let mut merges = Vec::with_capacity(merge_strings.len());
        let mut seen = std::collections::HashSet::with_capacity(merge_strings.len());
        for (i, m) in merge_strings.iter().enumerate() {
            // The first space after the first character separates the halves (llama.cpp's rule).
            let split_at = m.char_indices().nth(1).and_then(|(start, _)| m[start..].find(' ').map(|p| start + p));
            let (a, b) = match split_at {
                Some(p) if p + 1 < m.len() => (&m[..p], &m[p + 1..]),
                _ => return Err(key_error(path, key, format!("entry {i} {m:?} is not an \"a b\" pair"))),
            };
            for part in [a, b, &format!("{a}{b}")] {
                if !vocab.contains_key(part) {
                    return Err(key_error(
                        path,
                        key,
                        format!("entry {i} {m:?}: {part:?} is not in tokenizer.ggml.tokens"),
                    ));
                }
            }
            // A repeated pair keeps its first rank, as in llama.cpp.
            if seen.insert((a.to_string(), b.to_string())) {
                merges.push((a.to_string(), b.to_string()));
            }
        }

        let bos = get_token_id(meta, path, "tokenizer.ggml.bos_token_id", n)?;
        let eos = get_token_id(meta, path, "tokenizer.ggml.eos_token_id", n)?;
        let key = "tokenizer.ggml.add_bos_token";
        let add_bos = match meta.get(key) {
            None => pre.add_bos,
            Some(v) => v.as_bool().ok_or_else(|| key_error(path, key, "not a bool"))?,
        };
        if add_bos && bos.is_none() {
            return Err(key_error(path, key, "true, but tokenizer.ggml.bos_token_id is not set"));
        }

        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(pre.ignore_merges)
            .build()
            .map_err(|e| ModelError::Tokenizer(format!("{path}: building the BPE model: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tokenizer(pre.regexes)?));

        // Control and unknown tokens are split out of the text only when special tokens are parsed;
        // user-defined ones always (llama.cpp's tokenizer_st_partition, HF's non-special added tokens).
        let mut special = Vec::new();
        let mut user_defined = Vec::new();
        for (t, &ty) in tokens.iter().zip(&token_types) {
            if t.is_empty() {
                continue;
            }
            match ty {
                TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNKNOWN => {
                    special.push(AddedToken::from(t.clone(), true).normalized(false))
                }
                TOKEN_TYPE_USER_DEFINED => user_defined.push(AddedToken::from(t.clone(), false).normalized(false)),
                _ => {}
            }
        }
        inner.add_special_tokens(&special);
        inner.add_tokens(&user_defined);
        let mut plain = inner.clone();
        plain.set_encode_special_tokens(true);

        let literal =
            token_types.iter().map(|&t| matches!(t, TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNKNOWN | TOKEN_TYPE_USER_DEFINED));
        let table = byte_to_unicode();
        let unicode_to_byte = (0..=255u8).map(|b| (table[b as usize], b)).collect();
        Ok(Tokenizer {
            parse_special: Arc::new(inner),
            plain: Arc::new(plain),
            gguf: Some(Arc::new(ByteLevelPieces { pieces: tokens, literal: literal.collect(), unicode_to_byte })),
            kind: format!("gguf {model}/{pre_name}"),
            bos,
            eos,
            add_bos,
            vocab_size: n,
        })
    }

    /// A Hugging Face `tokenizer.json`. BOS / EOS come from a `tokenizer_config.json` beside it
    /// (`bos_token`, `eos_token`, `add_bos_token`), when there is one.
    pub fn from_file(path: &Path) -> Result<Self> {
        let shown = path.display();
        let inner =
            tokenizers::Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer(format!("{shown}: {e}")))?;
        let mut plain = inner.clone();
        plain.set_encode_special_tokens(true);

        let (mut bos, mut eos, mut add_bos) = (None, None, false);
        let config = path.with_file_name("tokenizer_config.json");
        if let Ok(text) = std::fs::read_to_string(&config) {
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ModelError::Tokenizer(format!("{}: {e}", config.display())))?;
            let token = |key: &str| {
                let v = value.get(key)?;
                let content = v.as_str().or_else(|| v.get("content").and_then(|c| c.as_str()))?;
                inner.token_to_id(content)
            };
            bos = token("bos_token");
            eos = token("eos_token");
            add_bos = value.get("add_bos_token").and_then(|v| v.as_bool()).unwrap_or(false) && bos.is_some();
        }
        let vocab_size = inner.get_vocab_size(true);
        Ok(Tokenizer {
            parse_special: Arc::new(inner),
            plain: Arc::new(plain),
            gguf: None,
            kind: "tokenizer.json".to_string(),
            bos,
            eos,
            add_bos,
            vocab_size,
        })
    }

    /// Encode `text`. With `special`, special tokens written in the text (`<|im_start|>`) become
    /// their ids; without, they are plain text. Never adds BOS (see [`Tokenizer::bos`]).
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let t = if special { &self.parse_special } else { &self.plain };
        let e = t.encode(text, false).map_err(|e| ModelError::Tokenizer(format!("encoding: {e}")))?;
        Ok(e.get_ids().to_vec())
    }

    /// Decode ids back to text, special tokens included as their text. Byte sequences that are
    /// not UTF-8 (a character cut between tokens) decode to U+FFFD. Fails on an id outside the
    /// vocabulary.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(ModelError::Tokenizer(format!(
                "decoding: token id {bad} is out of range (vocabulary of {})",
                self.vocab_size
            )));
        }
        match &self.gguf {
            Some(g) => {
                let mut bytes = Vec::new();
                for &id in ids {
                    bytes.extend(g.bytes(id).unwrap_or_default());
                }
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            None => self.parse_special.decode(ids, false).map_err(|e| ModelError::Tokenizer(format!("decoding: {e}"))),
        }
    }

    /// The bytes one token stands for (its decoded text, which may be part of a UTF-8 character).
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        match &self.gguf {
            Some(g) => g.bytes(id),
            None => {
                if id as usize >= self.vocab_size {
                    return None;
                }
                self.parse_special.decode(&[id], false).ok().map(String::into_bytes)
            }
        }
    }

    /// The raw vocabulary piece of `id` (byte-level encoded: `Ġthe` for " the").
    pub fn token_str(&self, id: u32) -> Option<String> {
        match &self.gguf {
            Some(g) => g.pieces.get(usize::try_from(id).ok()?).cloned(),
            None => self.parse_special.id_to_token(id),
        }
    }

    /// The id of a vocabulary piece or special token.
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.parse_special.token_to_id(piece)
    }

    /// The beginning-of-sequence token, if the tokenizer has one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence token, if the tokenizer has one.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Whether the model expects BOS before a prompt (GGUF `tokenizer.ggml.add_bos_token`, else
    /// llama.cpp's default for the pre-tokenizer).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Number of token ids (special tokens included).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Where the tokenizer came from: `gguf gpt2/smollm` (model / pre-tokenizer) or `tokenizer.json`.
    pub fn kind(&self) -> String {
        self.kind.clone()
    }
}

/// The tokenizer of a checkpoint: a GGUF file's embedded one (only the metadata is read), a
/// `tokenizer.json` file, or the `tokenizer.json` of a folder.
pub fn load_for(path: &Path) -> Result<Tokenizer> {
    let shown = path.display().to_string();
    let md = std::fs::metadata(path).map_err(|error| ModelError::Io { path: shown.clone(), error })?;
    if md.is_dir() {
        let json = path.join("tokenizer.json");
        if !json.is_file() {
            return Err(ModelError::Tokenizer(format!("{shown}: no tokenizer.json in the folder")));
        }
        return Tokenizer::from_file(&json);
    }
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
        return Tokenizer::from_file(path);
    }
    let mut magic = [0u8; 4];
    let is_gguf = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .map(|()| &magic == b"GGUF")
        .unwrap_or(false);
    if !is_gguf && !path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        return Err(ModelError::Tokenizer(format!(
            "{shown}: not a GGUF file (no GGUF magic), a tokenizer.json, or a folder with tokenizer.json"
        )));
    }
    let file = GgufFile::open(path)?;
    Tokenizer::from_gguf(&file.metadata, &shown)
}

/// A byte-level BPE vocabulary in GGUF form (`tokenizer.ggml.*`), for models written by qdiff
/// itself (the built-in synthetic model).
#[derive(Debug, Clone, PartialEq)]
pub struct GgufVocab {
    /// The pieces, byte-level encoded; the id is the index.
    pub tokens: Vec<String>,
    /// GGUF token types ([`TOKEN_TYPE_NORMAL`], [`TOKEN_TYPE_CONTROL`], ...), one per token.
    pub token_types: Vec<i32>,
    /// Merges in rank order, `"a b"`.
    pub merges: Vec<String>,
    /// Beginning-of-sequence token.
    pub bos: u32,
    /// End-of-sequence token.
    pub eos: u32,
    /// The `tokenizer.ggml.pre` name.
    pub pre: String,
}

impl GgufVocab {
    /// Train a byte-level BPE vocabulary: the 256 byte tokens (GPT-2's byte-to-unicode characters,
    /// id = byte value), then up to `n_merges` merges, each of the most frequent adjacent pair in
    /// the texts as pre-tokenized by llama.cpp's `smollm` pre-tokenizer (digits alone, then the
    /// GPT-2 regex); ties go to the pair whose pieces sort first, and a pair spelling a piece
    /// already in the vocabulary is passed over, so each merge adds one token. Training stops
    /// early when no pair is left. Then `specials` as CONTROL tokens (`<|endoftext|>` when `specials` is empty);
    /// BOS is the first special token and EOS the last. Deterministic.
    pub fn train_byte_level(texts: &[&str], n_merges: usize, specials: &[&str]) -> GgufVocab {
        let pre_name = "smollm";
        let table = byte_to_unicode();
        let mut tokens: Vec<String> = table.iter().map(|c| c.to_string()).collect();
        let mut ids: HashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();

        // Word frequencies over the pre-tokenized texts, each word as its byte-level characters.
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let regexes = pre_tokenization(pre_name).map(|p| p.regexes).unwrap_or(&[RE_GPT2]);
        for text in texts {
            for word in pre_tokenize(regexes, text) {
                *counts.entry(word).or_insert(0) += 1;
            }
        }
        let mut words: Vec<(Vec<String>, u64)> =
            counts.into_iter().map(|(w, c)| (w.chars().map(|c| c.to_string()).collect(), c)).collect();

        let mut merges = Vec::new();
        while merges.len() < n_merges {
            let mut pairs: BTreeMap<(&str, &str), u64> = BTreeMap::new();
            for (symbols, count) in &words {
                for w in symbols.windows(2) {
                    *pairs.entry((&w[0], &w[1])).or_insert(0) += count;
                }
            }
            // Highest count; among equals the first in (left, right) order. A pair that would spell
            // a piece already in the vocabulary is passed over, so every merge adds one token.
            let best = pairs.into_iter().filter(|((a, b), _)| !ids.contains_key(&format!("{a}{b}"))).fold(
                None,
                |best: Option<((&str, &str), u64)>, (p, c)| match best {
                    Some((_, bc)) if bc >= c => best,
                    _ => Some((p, c)),
                },
            );
            let Some(((a, b), _)) = best else { break };
            let (a, b) = (a.to_string(), b.to_string());
            let merged = format!("{a}{b}");
            for (symbols, _) in &mut words {
                let mut i = 0;
                while i + 1 < symbols.len() {
                    if symbols[i] == a && symbols[i + 1] == b {
                        symbols[i] = merged.clone();
                        symbols.remove(i + 1);
                    }
                    i += 1;
                }
            }
            ids.insert(merged.clone(), tokens.len() as u32);
            tokens.push(merged);
            merges.push(format!("{a} {b}"));
        }

        let mut token_types = vec![TOKEN_TYPE_NORMAL; tokens.len()];
        let specials: Vec<&str> = if specials.is_empty() { vec!["<|endoftext|>"] } else { specials.to_vec() };
        let mut special_ids = Vec::with_capacity(specials.len());
        for s in specials {
            let id = match ids.get(s) {
                Some(&id) => {
                    token_types[id as usize] = TOKEN_TYPE_CONTROL;
                    id
                }
                None => {
                    let id = tokens.len() as u32;
                    ids.insert(s.to_string(), id);
                    tokens.push(s.to_string());
                    token_types.push(TOKEN_TYPE_CONTROL);
                    id
                }
            };
            special_ids.push(id);
        }
        let bos = special_ids[0];
        let eos = special_ids[special_ids.len() - 1];
        GgufVocab { tokens, token_types, merges, bos, eos, pre: pre_name.to_string() }
    }

    /// The `tokenizer.ggml.*` metadata: model `gpt2`, the pre-tokenizer, tokens, token types,
    /// merges, BOS / EOS ids and `add_bos_token = false`.
    pub fn metadata(&self) -> Vec<(String, MetaValue)> {
        let strings = |v: &[String]| MetaValue::Array(v.iter().cloned().map(MetaValue::String).collect());
        vec![
            ("tokenizer.ggml.model".into(), MetaValue::String("gpt2".into())),
            ("tokenizer.ggml.pre".into(), MetaValue::String(self.pre.clone())),
            ("tokenizer.ggml.tokens".into(), strings(&self.tokens)),
            (
                "tokenizer.ggml.token_type".into(),
                MetaValue::Array(self.token_types.iter().map(|&t| MetaValue::I32(t)).collect()),
            ),
            ("tokenizer.ggml.merges".into(), strings(&self.merges)),
            ("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(self.bos)),
            ("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(self.eos)),
            ("tokenizer.ggml.add_bos_token".into(), MetaValue::Bool(false)),
        ]
    }
}

/// The byte-level pieces llama.cpp's pre-tokenizer cuts `text` into.
fn pre_tokenize(regexes: &[&str], text: &str) -> Vec<String> {
    let Ok(pt) = pre_tokenizer(regexes) else { return Vec::new() };
    let mut s = PreTokenizedString::from(text);
    if pt.pre_tokenize(&mut s).is_err() {
        return Vec::new();
    }
    s.get_splits(OffsetReferential::Original, OffsetType::Byte).into_iter().map(|(w, _, _)| w.to_string()).collect()
}

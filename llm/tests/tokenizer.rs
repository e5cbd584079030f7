//! Tokenizers: the GGUF-embedded byte-level BPE against llama.cpp's golden ids for SmolLM2
//! (tests/golden/tokenize_smollm2.json), round trips, the synthetic vocabulary, tokenizer.json,
//! and the refusals of malformed metadata.

use models::meta::MetaValue;
use models::tokenizer::{load_for, GgufVocab, Tokenizer, TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL};
use models::ModelError;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const SMOLLM2: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qdiff-tok-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The SmolLM2 tokenizer through `load_for`, or `None` (with the skip message) when the model is absent.
fn smollm2() -> Option<Tokenizer> {
    let path = models::example_model_for_tests()?;
    Some(load_for(&path).unwrap_or_else(|e| panic!("loading {SMOLLM2}: {e}")))
}

struct Case {
    text: String,
    special: bool,
    ids: Vec<u32>,
}

fn golden() -> (serde_json::Value, Vec<Case>) {
    let text = std::fs::read_to_string(repo().join("tests/golden/tokenize_smollm2.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_string(),
            special: c["special"].as_bool().unwrap(),
            ids: c["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect(),
        })
        .collect();
    (doc, cases)
}

#[test]
fn smollm2_matches_llama_cpp_golden_ids() {
    let Some(tok) = smollm2() else { return };
    let (doc, cases) = golden();
    let bytes = std::fs::read(repo().join(SMOLLM2)).unwrap();
    let sha: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(doc["model_sha256"].as_str().unwrap(), sha, "the golden file was made from another model file");
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for c in &cases {
        let ours = tok.encode(&c.text, c.special).unwrap();
        if ours != c.ids {
            failures.push(format!("{:?} special={}:\n  ours   {:?}\n  golden {:?}", c.text, c.special, ours, c.ids));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ ({}):\n{}",
        failures.len(),
        cases.len(),
        doc["reference"],
        failures.join("\n")
    );
}

#[test]
fn smollm2_decode_inverts_encode() {
    let Some(tok) = smollm2() else { return };
    for c in golden().1 {
        for special in [true, false] {
            let ids = tok.encode(&c.text, special).unwrap();
            assert_eq!(tok.decode(&ids).unwrap(), c.text, "special={special}");
        }
        // The golden ids themselves decode to the text.
        assert_eq!(tok.decode(&c.ids).unwrap(), c.text);
    }
}

#[test]
fn smollm2_vocabulary_and_specials() {
    let Some(tok) = smollm2() else { return };
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.kind(), "gguf gpt2/smollm");
    assert_eq!((tok.bos(), tok.eos(), tok.add_bos()), (Some(1), Some(2), false));
    assert_eq!(tok.token_str(1).as_deref(), Some("<|im_start|>"));
    assert_eq!(tok.token_str(0).as_deref(), Some("<|endoftext|>"));
    assert_eq!(tok.token_str(49152), None);
    // " the" is one byte-level piece, Ġthe.
    let the = tok.encode(" the", true).unwrap();
    assert_eq!(the.len(), 1);
    assert_eq!(tok.token_str(the[0]).as_deref(), Some("Ġthe"));
    assert_eq!(tok.token_bytes(the[0]).unwrap(), b" the");
    // Control tokens: ids with parsing, text without.
    assert_eq!(tok.encode("<|im_start|>", true).unwrap(), vec![1]);
    assert!(!tok.encode("<|im_start|>", false).unwrap().contains(&1));
    // Digits are split one by one (pre-tokenizer smollm).
    assert_eq!(tok.encode("2024", true).unwrap().len(), 4);
    assert!(tok.decode(&[49152]).is_err());
    // Cloning shares the vocabulary and tokenizes the same.
    assert_eq!(tok.clone().encode("Clone me", true).unwrap(), tok.encode("Clone me", true).unwrap());
}

const TRAIN: &[&str] = &[
    "the cat sat on the mat. the dog sat on the log.",
    "The quick brown fox jumps over the lazy dog, then the dog sleeps.",
    "Once upon a time, there was a tiny model that learned 12 numbers: 3, 5, 8 and 13.",
    "def f(x):\n    return x * x\n",
];

fn meta_map(v: &GgufVocab) -> BTreeMap<String, MetaValue> {
    v.metadata().into_iter().collect()
}

#[test]
fn synthetic_vocab_round_trips_through_gguf_metadata() {
    let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    let vocab = GgufVocab::train_byte_level(TRAIN, 60, &specials);
    assert_eq!(vocab, GgufVocab::train_byte_level(TRAIN, 60, &specials), "training is deterministic");
    assert_eq!(vocab.merges.len(), 60);
    assert_eq!(vocab.tokens.len(), vocab.token_types.len());
    assert_eq!(vocab.tokens.len(), 256 + 60 + 3, "one token per merge");
    assert_eq!(&vocab.tokens[32], "Ġ");
    assert!(vocab.token_types[..vocab.tokens.len() - 3].iter().all(|&t| t == TOKEN_TYPE_NORMAL));
    assert!(vocab.token_types[vocab.tokens.len() - 3..].iter().all(|&t| t == TOKEN_TYPE_CONTROL));
    assert_eq!(vocab.tokens[vocab.bos as usize], "<|endoftext|>");
    assert_eq!(vocab.tokens[vocab.eos as usize], "<|im_end|>");

    let meta = meta_map(&vocab);
    assert_eq!(meta["tokenizer.ggml.model"], MetaValue::String("gpt2".into()));
    assert_eq!(meta["tokenizer.ggml.add_bos_token"], MetaValue::Bool(false));
    let tok = Tokenizer::from_gguf(&meta, "synthetic.gguf").unwrap();
    assert_eq!(tok.vocab_size(), vocab.tokens.len());
    assert_eq!((tok.bos(), tok.eos(), tok.add_bos()), (Some(vocab.bos), Some(vocab.eos), false));
    assert_eq!(tok.kind(), format!("gguf gpt2/{}", vocab.pre));

    let texts = [
        TRAIN[0],
        TRAIN[3],
        "unseen words: zebra, quokka! 42",
        "Ünïcödé 日本語 😀 \t\n  spaces  ",
        "",
        "<|im_start|>user\nthe cat<|im_end|>\n<|im_start|>assistant\n",
    ];
    for text in texts {
        for special in [true, false] {
            let ids = tok.encode(text, special).unwrap();
            assert_eq!(tok.decode(&ids).unwrap(), text, "special={special}");
        }
    }
    // The merges were learned: a training text takes far fewer tokens than bytes.
    assert!(tok.encode(TRAIN[0], true).unwrap().len() * 2 < TRAIN[0].len());
    let chat = tok.encode("<|im_start|>hi<|im_end|>", true).unwrap();
    assert_eq!(chat.first(), Some(&(256 + 60 + 1)));
    assert_eq!(chat.last(), Some(&(vocab.tokens.len() as u32 - 1)));
    let n_normal = vocab.tokens.len() as u32 - 3;
    assert!(tok.encode("<|im_start|>hi", false).unwrap().iter().all(|&id| id < n_normal));
}

#[test]
fn synthetic_model_vocab_has_one_token_per_merge() {
    let texts: Vec<&str> = models::texts::DEFAULT.iter().map(|t| t.text).collect();
    let v = GgufVocab::train_byte_level(&texts, 253, &["<|endoftext|>", "<|im_start|>", "<|im_end|>"]);
    // synthetic.rs counts on 256 bytes + 253 merges + 3 specials = 512.
    assert_eq!((v.tokens.len(), v.merges.len()), (512, 253));
    let tok = Tokenizer::from_gguf(&meta_map(&v), "synthetic.gguf").unwrap();
    for t in &texts {
        assert_eq!(tok.decode(&tok.encode(t, true).unwrap()).unwrap(), *t);
    }
}

#[test]
fn synthetic_vocab_stops_when_no_pair_is_left() {
    let vocab = GgufVocab::train_byte_level(&["ab ab"], 1000, &[]);
    // "ab", "Ġab" pieces: a+b, Ġ+ab; then nothing is left to merge.
    assert_eq!(vocab.merges, vec!["a b".to_string(), "Ġ ab".to_string()]);
    assert_eq!(vocab.tokens.last().map(String::as_str), Some("<|endoftext|>"));
    assert_eq!(vocab.bos, vocab.eos);
    let tok = Tokenizer::from_gguf(&meta_map(&vocab), "t.gguf").unwrap();
    assert_eq!(tok.encode("ab ab", true).unwrap(), vec![256, 257]);
}

fn expect_tokenizer_error(meta: &BTreeMap<String, MetaValue>, needles: &[&str]) {
    let msg = match Tokenizer::from_gguf(meta, "bad.gguf") {
        Ok(_) => panic!("accepted metadata that should be refused ({needles:?})"),
        Err(e @ ModelError::Tokenizer(_)) => e.to_string(),
        Err(e) => panic!("expected ModelError::Tokenizer, got {e:?}"),
    };
    for n in needles {
        assert!(msg.contains(n), "`{n}` not in: {msg}");
    }
}

#[test]
fn malformed_metadata_is_refused_naming_the_key() {
    let good = meta_map(&GgufVocab::train_byte_level(TRAIN, 20, &["<|endoftext|>"]));
    Tokenizer::from_gguf(&good, "ok.gguf").unwrap();

    let mut m = good.clone();
    m.remove("tokenizer.ggml.model");
    expect_tokenizer_error(&m, &["bad.gguf", "no tokenizer", "tokenizer.ggml.model"]);

    let mut m = good.clone();
    m.remove("tokenizer.ggml.tokens");
    expect_tokenizer_error(&m, &["tokenizer.ggml.tokens", "missing"]);

    let mut m = good.clone();
    m.insert("tokenizer.ggml.tokens".into(), MetaValue::Array(vec![MetaValue::U32(3)]));
    expect_tokenizer_error(&m, &["tokenizer.ggml.tokens", "entry 0"]);

    let mut m = good.clone();
    m.insert("tokenizer.ggml.tokens".into(), MetaValue::String("a".into()));
    expect_tokenizer_error(&m, &["tokenizer.ggml.tokens", "not an array"]);

    let mut m = good.clone();
    m.insert("tokenizer.ggml.token_type".into(), MetaValue::Array(vec![MetaValue::I32(1)]));
    expect_tokenizer_error(&m, &["tokenizer.ggml.token_type", "entries"]);

    for bad in ["ab", "a ", " b", ""] {
        let mut m = good.clone();
        m.insert("tokenizer.ggml.merges".into(), MetaValue::Array(vec![MetaValue::String(bad.into())]));
        expect_tokenizer_error(&m, &["tokenizer.ggml.merges", "entry 0", "pair"]);
    }
    let mut m = good.clone();
    m.insert("tokenizer.ggml.merges".into(), MetaValue::Array(vec![MetaValue::String("x ☃".into())]));
    expect_tokenizer_error(&m, &["tokenizer.ggml.merges", "not in tokenizer.ggml.tokens"]);

    let mut m = good.clone();
    m.remove("tokenizer.ggml.merges");
    expect_tokenizer_error(&m, &["tokenizer.ggml.merges", "missing"]);

    let mut m = good.clone();
    m.insert("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(1_000_000));
    expect_tokenizer_error(&m, &["tokenizer.ggml.bos_token_id", "out of range"]);

    let mut m = good.clone();
    m.insert("tokenizer.ggml.eos_token_id".into(), MetaValue::I32(-1));
    expect_tokenizer_error(&m, &["tokenizer.ggml.eos_token_id"]);

    let mut m = good.clone();
    m.insert("tokenizer.ggml.add_bos_token".into(), MetaValue::U8(1));
    expect_tokenizer_error(&m, &["tokenizer.ggml.add_bos_token", "not a bool"]);

    let mut m = good.clone();
    m.insert("tokenizer.ggml.pre".into(), MetaValue::U8(1));
    expect_tokenizer_error(&m, &["tokenizer.ggml.pre", "not a string"]);

    let mut m = good.clone();
    m.insert("tokenizer.ggml.model".into(), MetaValue::String("llama".into()));
    expect_tokenizer_error(&m, &["SentencePiece 'llama' tokenizers are not supported yet"]);

    let mut m = good.clone();
    m.insert("tokenizer.ggml.pre".into(), MetaValue::String("klingon".into()));
    match Tokenizer::from_gguf(&m, "bad.gguf") {
        Err(e @ ModelError::Unsupported { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("'klingon'") && msg.contains("tokenizer.ggml.pre") && msg.contains("bad.gguf"),
                "{msg}"
            );
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }

    let mut m = good.clone();
    m.insert("tokenizer.ggml.model".into(), MetaValue::String("t5".into()));
    assert!(matches!(Tokenizer::from_gguf(&m, "bad.gguf"), Err(ModelError::Unsupported { .. })));
}

#[test]
fn every_supported_pre_tokenizer_builds_and_round_trips() {
    let vocab = GgufVocab::train_byte_level(TRAIN, 50, &[]);
    for pre in models::tokenizer::SUPPORTED_PRE {
        let mut m = meta_map(&vocab);
        m.insert("tokenizer.ggml.pre".into(), MetaValue::String(pre.to_string()));
        let tok = Tokenizer::from_gguf(&m, "p.gguf").unwrap_or_else(|e| panic!("{pre}: {e}"));
        let text = "It's 2024:   the cat's 12345 dogs\n\n  ran!! 😀";
        assert_eq!(tok.decode(&tok.encode(text, true).unwrap()).unwrap(), text, "{pre}");
    }
    // A missing pre-tokenizer is llama.cpp's "default".
    let mut m = meta_map(&vocab);
    m.remove("tokenizer.ggml.pre");
    assert_eq!(Tokenizer::from_gguf(&m, "p.gguf").unwrap().kind(), "gguf gpt2/default");
    // llama-bpe adds BOS unless the file says otherwise.
    let mut m = meta_map(&vocab);
    m.insert("tokenizer.ggml.pre".into(), MetaValue::String("llama-bpe".into()));
    m.remove("tokenizer.ggml.add_bos_token");
    assert!(Tokenizer::from_gguf(&m, "p.gguf").unwrap().add_bos());
}

#[test]
fn pre_tokenizers_split_digits_as_llama_cpp_does() {
    // Digits only, so that the byte tokens show the pre-tokenizer's pieces: no merges at all.
    let vocab = GgufVocab::train_byte_level(&[], 0, &[]);
    let pieces = |pre: &str, text: &str| {
        let mut m = meta_map(&vocab);
        m.insert("tokenizer.ggml.pre".into(), MetaValue::String(pre.into()));
        // Merges of digit pairs, so that a pre-tokenizer piece of several digits becomes one token.
        let mut tokens = vocab.tokens.clone();
        let mut merges = Vec::new();
        for a in '0'..='9' {
            for b in '0'..='9' {
                tokens.push(format!("{a}{b}"));
                merges.push(MetaValue::String(format!("{a} {b}")));
            }
        }
        let n = tokens.len();
        m.insert("tokenizer.ggml.tokens".into(), MetaValue::Array(tokens.into_iter().map(MetaValue::String).collect()));
        m.insert("tokenizer.ggml.token_type".into(), MetaValue::Array(vec![MetaValue::I32(1); n]));
        m.insert("tokenizer.ggml.merges".into(), MetaValue::Array(merges));
        let tok = Tokenizer::from_gguf(&m, "d.gguf").unwrap();
        tok.encode(text, true).unwrap().len()
    };
    assert_eq!(pieces("smollm", "1234"), 4, "smollm: one digit per piece");
    assert_eq!(pieces("qwen2", "1234"), 4, "qwen2: one digit per piece");
    assert_eq!(pieces("gpt2", "1234"), 2, "gpt2: digit runs merge");
    assert_eq!(pieces("llama-bpe", "1234"), 3, "llama3: runs of up to three digits: 123 | 4");
}

const TOKENIZER_JSON: &str = r#"{"version":"1.0","truncation":null,"padding":null,
 "added_tokens":[{"id":5,"content":"<s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
 "normalizer":null,
 "pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true},
 "post_processor":null,
 "decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},
 "model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,
  "fuse_unk":false,"byte_fallback":false,"ignore_merges":false,
  "vocab":{"h":0,"i":1,"Ġ":2,"hi":3,"Ġhi":4,"<s>":5,"<":6,"s":7,">":8},"merges":["h i","Ġ hi"]}}"#;

#[test]
fn tokenizer_json_from_a_folder() {
    let dir = tmp_dir("json");
    std::fs::write(dir.join("tokenizer.json"), TOKENIZER_JSON).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"bos_token": "<s>", "eos_token": {"content": "<s>"}}"#)
        .unwrap();
    for tok in [load_for(&dir).unwrap(), Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap()] {
        assert_eq!(tok.kind(), "tokenizer.json");
        assert_eq!(tok.vocab_size(), 9);
        assert_eq!((tok.bos(), tok.eos(), tok.add_bos()), (Some(5), Some(5), false));
        assert_eq!(tok.encode("hi hi", true).unwrap(), vec![3, 4]);
        assert_eq!(tok.encode("<s>hi", true).unwrap(), vec![5, 3]);
        assert_eq!(tok.encode("<s>hi", false).unwrap(), vec![6, 7, 8, 3]);
        assert_eq!(tok.decode(&[5, 3, 4]).unwrap(), "<s>hi hi");
        assert_eq!(tok.token_str(4).as_deref(), Some("Ġhi"));
        assert!(tok.decode(&[9]).is_err());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn load_for_refuses_what_is_not_a_tokenizer() {
    let dir = tmp_dir("refuse");
    let missing = dir.join("missing.gguf");
    assert!(matches!(load_for(&missing), Err(ModelError::Io { .. })));

    let text = dir.join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let e = load_for(&text).unwrap_err().to_string();
    assert!(e.contains("notes.txt") && e.contains("not a GGUF file"), "{e}");

    let e = load_for(&dir).unwrap_err().to_string();
    assert!(e.contains("no tokenizer.json"), "{e}");

    let bad_json = dir.join("tokenizer.json");
    std::fs::write(&bad_json, "{ not json").unwrap();
    let e = Tokenizer::from_file(&bad_json).unwrap_err();
    assert!(matches!(e, ModelError::Tokenizer(ref m) if m.contains("tokenizer.json")), "{e:?}");

    // A .gguf that is not one: the GGUF reader's error, not a panic.
    let fake = dir.join("fake.gguf");
    std::fs::write(&fake, b"GGUF\x03\x00").unwrap();
    assert!(load_for(&fake).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

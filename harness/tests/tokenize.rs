//! `qdiff tokenize`: `--json` against llama.cpp's golden ids for SmolLM2, `--bos`, `--no-special`,
//! the human table, a GGUF written by qdiff itself, and exit code 2 (one line on stderr, nothing on
//! stdout) for what is not a tokenizer.

use harness::Exit;
use models::meta::MetaValue;
use models::tokenizer::GgufVocab;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qdiff-tokenize-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Run `qdiff tokenize ARGS`: (exit, stdout, stderr).
fn tokenize(args: &[&str]) -> (Exit, String, String) {
    let mut argv = vec!["qdiff".to_string(), "tokenize".to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = harness::run(&argv, &mut out, &mut err);
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

fn json_tokens(out: &str) -> Vec<u32> {
    assert_eq!(out.lines().count(), 1, "not one line: {out}");
    let v: serde_json::Value = serde_json::from_str(out).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 1, "{out}");
    obj["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect()
}

fn assert_refused(res: &(Exit, String, String), needles: &[&str]) {
    let (code, out, err) = res;
    assert_eq!(*code, Exit::CouldNotRun, "stderr: {err}");
    assert!(out.is_empty(), "stdout not empty: {out}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("qdiff: error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
}

fn smollm2() -> Option<String> {
    Some(models::example_model_for_tests()?.display().to_string())
}

#[test]
fn json_matches_the_golden_ids() {
    let Some(model) = smollm2() else { return };
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("tests/golden/tokenize_smollm2.json")).unwrap())
            .unwrap();
    for case in golden["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ids: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let mut args = vec!["--model", &model, "--text", text, "--json"];
        if !case["special"].as_bool().unwrap() {
            args.push("--no-special");
        }
        let (code, out, err) = tokenize(&args);
        assert_eq!(code, Exit::Clean, "{err}");
        assert!(err.is_empty(), "{err}");
        assert_eq!(json_tokens(&out), ids, "{text:?}");
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        assert_eq!(out, format!("{{\"tokens\": [{}]}}\n", list.join(", ")));
    }
}

#[test]
fn bos_and_no_special() {
    let Some(model) = smollm2() else { return };
    let chat = "<|im_start|>user\nHi<|im_end|>\n";
    let (_, out, _) = tokenize(&["--model", &model, "--text", chat, "--json"]);
    assert_eq!(json_tokens(&out), vec![1, 4093, 198, 26843, 2, 198]);
    let (_, out, _) = tokenize(&["--model", &model, "--text", chat, "--json", "--bos"]);
    assert_eq!(json_tokens(&out), vec![1, 1, 4093, 198, 26843, 2, 198]);
    let (_, out, _) = tokenize(&["--model", &model, "--text", chat, "--json", "--no-special"]);
    assert_eq!(
        json_tokens(&out),
        vec![44, 108, 306, 79, 3738, 108, 46, 4093, 198, 26843, 44, 108, 306, 79, 486, 108, 46, 198]
    );
    let (code, out, _) = tokenize(&["--model", &model, "--text", "", "--json"]);
    assert_eq!((code, out.as_str()), (Exit::Clean, "{\"tokens\": []}\n"));
}

#[test]
fn human_table() {
    let Some(model) = smollm2() else { return };
    let (code, out, err) = tokenize(&["--model", &model, "--text", "Hello world\n\tok 😀"]);
    assert_eq!(code, Exit::Clean, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("index") && lines[0].contains("id"), "{out}");
    assert!(lines[1].contains("19556") && lines[1].contains("\"Hello\""), "{out}");
    assert!(lines[2].contains("905") && lines[2].contains("\" world\"") && lines[2].contains("Ġworld"), "{out}");
    assert!(out.contains("\"\\n\\t\"") || out.contains("\"\\n\""), "newline and tab are escaped: {out}");
    // The emoji is cut between byte tokens: its bytes show as \x escapes, never as U+FFFD.
    assert!(out.contains("\\xF0") && !out.contains('\u{fffd}'), "{out}");
    let n = lines.len() - 2;
    assert!(lines.last().unwrap().starts_with(&format!("{n} tokens (gguf gpt2/smollm")), "{out}");
}

#[test]
fn a_gguf_written_by_qdiff() {
    let dir = tmp_dir("own");
    let vocab = GgufVocab::train_byte_level(&["the cat sat on the mat", "the dog"], 20, &["<|endoftext|>"]);
    let path = dir.join("tiny.gguf");
    models::gguf::write(&path, &vocab.metadata(), &[]).unwrap();
    let p = path.display().to_string();
    let (code, out, err) = tokenize(&["--model", &p, "--text", "the cat<|endoftext|>", "--json", "--bos"]);
    assert_eq!(code, Exit::Clean, "{err}");
    let ids = json_tokens(&out);
    assert_eq!(ids[0], vocab.bos);
    assert_eq!(*ids.last().unwrap(), vocab.bos, "<|endoftext|> is BOS and EOS");
    assert!(ids.len() < 2 + "the cat".len());

    // Without a BOS token, --bos cannot run.
    let meta: Vec<(String, MetaValue)> =
        vocab.metadata().into_iter().filter(|(k, _)| k != "tokenizer.ggml.bos_token_id").collect();
    let nobos = dir.join("nobos.gguf");
    models::gguf::write(&nobos, &meta, &[]).unwrap();
    let p = nobos.display().to_string();
    assert_eq!(tokenize(&["--model", &p, "--text", "the", "--json"]).0, Exit::Clean);
    assert_refused(&tokenize(&["--model", &p, "--text", "the", "--bos"]), &["nobos.gguf", "BOS"]);

    // A GGUF without a tokenizer.
    let bare = dir.join("bare.gguf");
    models::gguf::write(&bare, &[("general.architecture".to_string(), MetaValue::String("llama".into()))], &[])
        .unwrap();
    let p = bare.display().to_string();
    assert_refused(&tokenize(&["--model", &p, "--text", "x"]), &["bare.gguf", "no tokenizer"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn what_is_not_a_tokenizer_exits_2() {
    let dir = tmp_dir("refused");
    let missing = dir.join("missing.gguf").display().to_string();
    let res = tokenize(&["--model", &missing, "--text", "x", "--json"]);
    assert_refused(&res, &["missing.gguf", "No such file"]);
    assert_eq!(res.2.matches("No such file").count(), 1, "the OS error once: {}", res.2);

    let text = dir.join("notes.txt");
    std::fs::write(&text, "just text").unwrap();
    let p = text.display().to_string();
    assert_refused(&tokenize(&["--model", &p, "--text", "x", "--json"]), &["notes.txt", "not a GGUF file"]);

    let fake = dir.join("fake.gguf");
    std::fs::write(&fake, b"GGUF\x03\x00\x00\x00 truncated").unwrap();
    let p = fake.display().to_string();
    assert_refused(&tokenize(&["--model", &p, "--text", "x", "--json"]), &["fake.gguf"]);

    let d = dir.display().to_string();
    assert_refused(&tokenize(&["--model", &d, "--text", "x"]), &["no tokenizer.json"]);
    let _ = std::fs::remove_dir_all(&dir);
}

//! `qdiff eval` and `qdiff logits` end to end: on the built-in synthetic model (always), and on
//! SmolLM2-135M when `models/` has it.

use qdiff_e2e::{assert_could_not_run, qdiff, scratch};
use serde_json::Value;

fn results(dir: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
}

#[test]
fn eval_on_the_synthetic_model_writes_results_and_a_card() {
    let out = scratch("eval-synthetic");
    let o = out.to_str().unwrap();
    let r = qdiff(&["eval", "--device", "ref", "--device", "cpu", "--positions", "160", "--greedy", "8", "--out", o]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let res = results(&out);
    let mr = res["model_results"].as_array().unwrap();
    assert_eq!(mr.len(), 6, "3 default schemes x 2 devices");
    for m in mr {
        assert_eq!(m["status"], "ok", "{m}");
        assert_eq!(m["positions"], 160);
        assert_eq!(m["greedy_tokens"], 8);
        let p = m["top1_agreement"].as_f64().unwrap();
        let se = m["top1_stderr"].as_f64().unwrap();
        assert!((se - (p * (1.0 - p) / 160.0).sqrt()).abs() < 1e-12);
        assert!(m["kld_mean"].as_f64().unwrap() >= 0.0);
        assert!(m["kld_max"].as_f64().unwrap() >= m["kld_p99"].as_f64().unwrap());
    }
    // Fewer bits cost more: on the reference itself (no kernel error), 8-bit groups agree with the
    // oracle at least as often as 4-bit groups and diverge less.
    let get = |scheme: &str, dev: &str| mr.iter().find(|m| m["scheme"] == scheme && m["device"] == dev).unwrap();
    let (w8, w4) = (get("w8g32-sym-ao", "ref"), get("w4g32-sym-ao", "ref"));
    assert!(w8["top1_agree"].as_u64() >= w4["top1_agree"].as_u64());
    assert!(w8["kld_mean"].as_f64() < w4["kld_mean"].as_f64());
    let card = std::fs::read_to_string(out.join("card.md")).unwrap();
    assert!(card.contains("| scheme | head | embed | device |"), "{card}");
    assert!(card.contains("| w4g32-sym-ao | fp32 | fp32 | cpu |"), "{card}");
    assert!(card.contains("synthetic-llama"), "{card}");
    assert_eq!(res["models"][0]["texts"].as_array().unwrap().len(), 1, "160 positions fit in the first text");
}

#[test]
fn bad_eval_arguments_exit_2_with_one_line() {
    let out = scratch("eval-bad");
    let o = out.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["eval", "--device", "ref", "--scheme", "w4g48-sym-ao", "--out", o], "does not divide"),
        (&["eval", "--device", "ref", "--scheme", "a8-pt-asym-ao", "--out", o], "activation-only"),
        (&["eval", "--device", "nosuch", "--out", o], "nosuch"),
        (&["eval", "--device", "ref", "--model", "/nonexistent/model.gguf", "--out", o], "/nonexistent/model.gguf"),
    ];
    for (args, needle) in cases {
        assert_could_not_run(args, needle, &out);
    }
}

fn logits(args: &[&str]) -> Value {
    let r = qdiff(args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    serde_json::from_slice(&r.stdout).unwrap()
}

#[test]
fn oracle_logits_are_the_same_bits_on_every_run_and_thread_count() {
    let args = ["logits", "--tokens", "5,17,300,2,44,44,9", "--top", "4", "--full", "3", "--json"];
    let one = rayon_pool(1).install(|| logits(&args));
    let three = rayon_pool(3).install(|| logits(&args));
    assert_eq!(one, three);
    assert_eq!(one["positions"].as_array().unwrap().len(), 7);
    assert_eq!(one["positions"][0]["top_ids"].as_array().unwrap().len(), 4);
    assert_eq!(one["full"]["3"].as_array().unwrap().len(), 512);
    // A scheme on the cpu changes the logits but (on this peaked model) rarely the top-1.
    let q =
        logits(&["logits", "--tokens", "5,17,300,2,44,44,9", "--device", "cpu", "--scheme", "w8g32-sym-ao", "--json"]);
    assert_ne!(q["positions"][6]["top_logits"], one["positions"][6]["top_logits"]);
    let r = qdiff(&["logits", "--tokens", "5,99999", "--json"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("99999"), "{}", r.stderr);
}

fn rayon_pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap()
}

#[test]
fn smollm2_oracle_and_eval() {
    let Some(model) = models::example_model_for_tests() else { return };
    let m = model.to_str().unwrap();
    // "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    let t = qdiff(&[
        "tokenize",
        "--model",
        m,
        "--text",
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        "--json",
    ]);
    assert_eq!(t.code, 0, "{}", t.stderr);
    let ids: Value = serde_json::from_slice(&t.stdout).unwrap();
    let ids: Vec<String> = ids["tokens"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    let l = logits(&["logits", "--model", m, "--tokens", &ids.join(","), "--top", "3", "--json"]);
    // The instruct model answers: the oracle's next token after the prompt is "The" (id 504).
    let last = &l["positions"][ids.len() - 1]["top_ids"][0];
    assert_eq!(last, 504, "{l}");
}

//! `card.md`: the model results of a run as a Markdown table a model card can paste, with the
//! model's provenance, the texts and qdiff's version under it.

use crate::{ModelResult, Results};
use std::fmt::Write as _;

/// Escapes a table cell (pipes, newlines) so outside strings cannot break the table.
fn cell(s: &str) -> String {
    s.replace('\\', "\\\\").replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn pct(r: &ModelResult) -> String {
    format!("{:.1} % ± {:.1}", 100.0 * r.top1_agreement, 100.0 * r.top1_stderr)
}

fn num(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        format!("{v}")
    }
}

fn rate(v: f64) -> String {
    if v > 0.0 && v.is_finite() {
        if v >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    } else {
        "–".into()
    }
}

/// The card of `results` (empty string when it has no model results).
pub fn card_markdown(results: &Results) -> String {
    if results.model_results.is_empty() {
        return String::new();
    }
    let mut s = String::new();
    for info in &results.models {
        let rows: Vec<&ModelResult> = results.model_results.iter().filter(|r| r.model == info.name).collect();
        if rows.is_empty() {
            continue;
        }
        let positions = rows.iter().find(|r| r.status == "ok").map_or(0, |r| r.positions);
        let greedy = rows.iter().find(|r| r.status == "ok").map_or(0, |r| r.greedy_tokens);
        let _ = writeln!(s, "## {}: quantized vs the fp32 oracle\n", cell(&info.name));
        let _ = writeln!(
            s,
            "Teacher-forced over {positions} positions (the same tokens fed to the oracle and every device): \
             top-1 agreement with its binomial standard error, top-5 overlap, KL(oracle ‖ device) in nats; \
             greedy rollout of {greedy} tokens compared token by token with the oracle's.\n"
        );
        s.push_str(
            "| scheme | head | embed | device | top-1 | top-1 % | top-5 | KLD mean | KLD p99 | KLD max | greedy identical | prefill tok/s | decode tok/s |\n",
        );
        s.push_str("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in rows.iter().filter(|r| r.status == "ok") {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {}/{} | {} | {} | {} | {} | {} | {}/{} | {} | {} |",
                cell(&r.scheme),
                cell(&r.head_scheme),
                cell(&r.embed_scheme),
                cell(&r.device),
                r.top1_agree,
                r.positions,
                pct(r),
                num(r.top5_overlap, 3),
                num(r.kld_mean, 4),
                num(r.kld_p99, 4),
                num(r.kld_max, 4),
                r.greedy_identical_prefix,
                r.greedy_tokens,
                rate(r.tokens_per_s),
                rate(r.decode_tokens_per_s),
            );
        }
        let others: Vec<&&ModelResult> = rows.iter().filter(|r| r.status != "ok").collect();
        if !others.is_empty() {
            s.push('\n');
            for r in others {
                let _ = writeln!(
                    s,
                    "- {} on {}: {} ({})",
                    cell(&r.scheme),
                    cell(&r.device),
                    r.status,
                    cell(r.note.as_deref().unwrap_or(""))
                );
            }
        }
        let mut vs = Vec::new();
        for r in rows.iter().filter(|r| r.status == "ok") {
            for (other, n) in &r.greedy_vs_devices {
                if r.device.as_str() < other.as_str() {
                    vs.push(format!(
                        "{} {} vs {}: {n}/{}",
                        cell(&r.scheme),
                        cell(&r.device),
                        cell(other),
                        r.greedy_tokens
                    ));
                }
            }
        }
        if !vs.is_empty() {
            let _ = writeln!(s, "\nGreedy rollouts, device vs device (identical tokens): {}.", vs.join("; "));
        }
        let sha = if info.sha256.is_empty() { String::new() } else { format!(" (sha256 `{}`)", cell(&info.sha256)) };
        let _ = writeln!(
            s,
            "\nModel: `{}`{sha}; {}; stored as {}; tokenizer: {}.",
            cell(&info.path),
            cell(&info.description),
            cell(&info.storage),
            cell(&info.tokenizer)
        );
        let texts: Vec<String> = info.texts.iter().map(|(n, t)| format!("{} ({t})", cell(n))).collect();
        let _ = writeln!(s, "Texts (tokens): {}.", texts.join(", "));
        // Inside a code span backslashes are literal; only a pipe needs escaping (GFM tables), and
        // a newline is shown as ↵.
        let quote = |t: &str| t.replace('`', "'").replace(['\n', '\r'], "↵").replace('|', "\\|");
        let _ = writeln!(
            s,
            "Rollout prompt: `{}`; the oracle continues `{}`.",
            quote(&info.rollout_prompt),
            quote(&info.oracle_greedy_text)
        );
        let run = &results.run;
        let _ = writeln!(
            s,
            "Measured with qdiff {} (commit {}) on {}, {}.\n",
            cell(&run.qdiff_version),
            cell(&run.git_commit),
            cell(&run.host),
            cell(&run.started_at)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ModelInfo, RunInfo};

    fn result(device: &str, status: &str) -> ModelResult {
        ModelResult {
            model: "m".into(),
            scheme: "w4g32-sym-ao".into(),
            head_scheme: "fp32".into(),
            embed_scheme: "fp32".into(),
            device: device.into(),
            status: status.into(),
            note: (status != "ok").then(|| "no | way\nat all".into()),
            positions: 16,
            top1_agree: 15,
            top1_agreement: 15.0 / 16.0,
            top1_stderr: (15.0f64 / 16.0 * (1.0 / 16.0) / 16.0).sqrt(),
            top5_overlap: 0.95,
            kld_mean: 0.01,
            kld_median: 0.005,
            kld_p99: 0.05,
            kld_max: f64::INFINITY,
            delta_p_rms: 0.01,
            greedy_tokens: 8,
            greedy_identical_prefix: 8,
            greedy_vs_devices: [("cpu".to_string(), 5)].into_iter().collect(),
            tokens_per_s: 1234.5,
            decode_tokens_per_s: 0.0,
            flips: Vec::new(),
            greedy: Vec::new(),
        }
    }

    #[test]
    fn card_table_escapes_outside_strings_and_lists_failures() {
        let run = RunInfo { qdiff_version: "0.1.0".into(), git_commit: "abc".into(), ..RunInfo::default() };
        let results = crate::Results {
            model_results: vec![result("vulkan:0 | evil", "ok"), result("metal", "unsupported")],
            models: vec![ModelInfo {
                name: "m".into(),
                path: "a|b.gguf".into(),
                sha256: "00ff".into(),
                description: "llama".into(),
                storage: "F32 x1".into(),
                tokenizer: "t".into(),
                texts: vec![("story".into(), 16)],
                rollout_prompt: "<|im_start|>user\nHi".into(),
                oracle_greedy: vec![1, 2],
                oracle_greedy_text: "Hello | there".into(),
            }],
            ..crate::Results::new(run, Vec::new())
        };
        let card = card_markdown(&results);
        let row = card.lines().find(|l| l.contains("evil")).expect("the ok row");
        assert!(row.contains("vulkan:0 \\| evil"), "{row}");
        assert!(row.contains("| 15/16 | 93.8 % ± 6.1 |"), "{row}");
        assert!(row.contains("| inf |"), "{row}");
        assert!(row.contains("| 8/8 | 1234 | – |"), "{row}");
        // Every table row has the header's number of cells (escaped pipes do not count).
        let cells = |l: &str| l.replace("\\|", "").matches('|').count();
        let header = card.lines().find(|l| l.starts_with("| scheme")).unwrap();
        assert_eq!(cells(row), cells(header));
        assert!(card.contains("- w4g32-sym-ao on metal: unsupported (no \\| way at all)"), "{card}");
        assert!(card.contains("`<\\|im_start\\|>user↵Hi`"), "{card}");
        assert!(card.contains("Model: `a\\|b.gguf` (sha256 `00ff`)"), "{card}");
        assert!(card_markdown(&crate::Results { model_results: Vec::new(), ..results }).is_empty());
    }
}

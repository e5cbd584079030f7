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
                    vs.push(format!("{} {} vs {}: {n}/{}", cell(&r.scheme), cell(&r.device), cell(other), r.greedy_tokens));
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
        let _ = writeln!(s, "Rollout prompt: `{}`.", cell(&info.rollout_prompt.replace('`', "'").replace('\n', "\\n")));
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

//! The fuzzer's parts: proptest [`strategies`] that draw op cases per (op, scheme), the
//! [`shrink`]er that minimises a failing case, and the failure [`signature`] that says when two
//! failures are the same one (and when a shrunk case still fails as the original did).
//! `qdiff fuzz` (`commands::fuzz`) puts them together.

pub mod shrink;
pub mod strategies;

/// The case vocabulary strategies speak, re-exported so that users of the fuzzer (the e2e tests
/// among them) need no direct dependency on the devices and reports crates.
pub use devices::case::{Fault, Op, OpCase, Storage, Variant};
pub use reports::Verdict;

use devices::case::Outputs;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// What a failure is, beyond its verdict: the first output that differs from the reference
/// (integer outputs by name, then float side outputs by name, then `values`), so that a shrunk
/// case keeps failing in the same place and distinct bugs get distinct case files.
/// `mismatch-values`, `mismatch-zp`, `error`, `crash`, `timeout`.
pub fn signature(verdict: Verdict, expected: Option<&Outputs>, found: Option<&Outputs>) -> String {
    let what = match (verdict, expected, found) {
        (Verdict::Mismatch, Some(e), Some(f)) => first_difference(e, f),
        _ => None,
    };
    match what {
        Some(w) => format!("{}-{w}", verdict.name()),
        None => verdict.name().to_string(),
    }
}

/// The name of the first output of `found` that differs from `expected`.
fn first_difference(expected: &Outputs, found: &Outputs) -> Option<String> {
    for (name, want) in &expected.ints {
        if found.ints.get(name) != Some(want) {
            return Some(name.clone());
        }
    }
    for (name, want) in &expected.floats {
        let same = found.floats.get(name).is_some_and(|got| {
            got.len() == want.len()
                && got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()))
        });
        if !same {
            return Some(name.clone());
        }
    }
    Some("values".into())
}

/// A proptest runner whose draws are a pure function of `seed` (ChaCha, no failure persistence):
/// the same seed gives the same cases on every machine.
pub fn seeded_runner(seed: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    let mut s = seed;
    for chunk in bytes.chunks_mut(8) {
        // SplitMix64 steps spread one u64 over the 32 bytes ChaCha wants.
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    let config = Config { failure_persistence: None, ..Config::default() };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

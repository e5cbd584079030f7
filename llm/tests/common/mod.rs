//! Helpers shared by the models crate's integration tests.
#![allow(dead_code)] // each test file uses its own subset

use models::ModelError;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A number no other call in this process has returned (for unique file names).
pub fn unique() -> usize {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A fresh empty folder under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `qdiff-models-test-{tag}-{pid}-{n}`.
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("qdiff-models-test-{tag}-{}-{}", std::process::id(), unique()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    /// A path inside the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    /// The names of the files in the folder, sorted.
    pub fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `n` seeded values in `[-scale/2, scale/2)` (xorshift).
pub fn seeded(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

/// Asserts `e` is `Unsupported` and its detail contains `needle`.
pub fn expect_unsupported(e: ModelError, needle: &str) {
    match e {
        ModelError::Unsupported { detail, .. } => assert!(detail.contains(needle), "`{detail}` lacks `{needle}`"),
        e => panic!("expected Unsupported ({needle}), got {e}"),
    }
}

/// Asserts `e` is `Malformed` at `want_at` and its detail contains `needle`.
pub fn expect_malformed(e: ModelError, want_at: &str, needle: &str) {
    match e {
        ModelError::Malformed { at, detail, .. } => {
            assert_eq!(at, want_at, "{detail}");
            assert!(detail.contains(needle), "`{detail}` lacks `{needle}`");
        }
        e => panic!("expected Malformed at {want_at}, got {e}"),
    }
}

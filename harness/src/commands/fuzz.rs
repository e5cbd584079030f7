//! `qdiff fuzz` (being built in this change).
use crate::Exit;
use std::path::PathBuf;

/// `qdiff fuzz`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct FuzzArgs {
    /// The device to fuzz.
    #[arg(long)]
    pub device: String,
    /// Scheme names; repeatable. Default: every example of every catalogue family.
    #[arg(long = "scheme")]
    pub schemes: Vec<String>,
    /// Ops; repeatable. Default: all the device runs.
    #[arg(long = "op")]
    pub ops: Vec<String>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub time: Option<f64>,
    /// Stop after this many cases.
    #[arg(long)]
    pub cases: Option<u64>,
    /// Run seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder.
    #[arg(long, default_value = "qdiff-out")]
    pub out: PathBuf,
    /// A deliberate fault for the device to commit.
    #[arg(long)]
    pub inject: Option<String>,
}

/// Run `qdiff fuzz`.
pub fn run(_args: FuzzArgs, _out: &mut dyn std::io::Write) -> anyhow::Result<Exit> {
    anyhow::bail!("qdiff fuzz is being built")
}

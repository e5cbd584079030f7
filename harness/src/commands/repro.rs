//! `qdiff repro` (being built in this change).
use crate::Exit;
use std::path::PathBuf;

/// `qdiff repro`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ReproArgs {
    /// The case file.
    pub case: PathBuf,
    /// Devices to replay on; repeatable. Default: the one it was found on.
    #[arg(long = "device")]
    pub devices: Vec<String>,
}

/// Run `qdiff repro`.
pub fn run(_args: ReproArgs, _out: &mut dyn std::io::Write) -> anyhow::Result<Exit> {
    anyhow::bail!("qdiff repro is being built")
}

//! `qdiff worker` (being built in this change).
use crate::Exit;

/// `qdiff worker`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// The device this worker runs.
    #[arg(long)]
    pub device: String,
}

/// Run a worker.
pub fn run(_args: WorkerArgs) -> anyhow::Result<Exit> {
    anyhow::bail!("qdiff worker is being built")
}

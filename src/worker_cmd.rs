//! `kiln worker`: joins a REAPI farm as a bot and runs the steps `kiln build --remote`
//! sends there, in this store's sandbox, until the farm goes away (exit status 1 then).

use crate::cli::WorkerArgs;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

pub fn run(root: Option<PathBuf>, args: WorkerArgs) -> Result<ExitCode> {
    let endpoint = kiln_build::farm::parse_endpoint(&args.endpoint)?;
    let store = kiln_build::open_store(root)?;
    // Held while serving: prune waits, as for a build.
    let _lock = store.lock_shared().context("locking the store")?;
    let bot_id = args.bot_id.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "kiln".into());
        format!("{host}-{}", std::process::id())
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let log: Arc<dyn Fn(String) + Send + Sync> = Arc::new(|line| eprintln!("{line}"));
    runtime.block_on(kiln_build::farm::serve_worker(
        store, &endpoint, &bot_id, log,
    ))?;
    Ok(ExitCode::SUCCESS)
}

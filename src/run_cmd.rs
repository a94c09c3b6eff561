//! `kiln run`: flags and exit status around `kiln_solver::run` (which does the work).
//!
//! Exit status as docker's: the process's own (128+N when signal N killed it), 125 when
//! kiln could not run it (no such image, an unusable flag, a sandbox failure), 126 when
//! the command cannot be executed, 127 when it is not found.

use crate::cli::{RunArgs, RunNetwork, SnapshotterArg};
use anyhow::{Context, Result, anyhow};
use kiln_build::open_store;
use kiln_executor::sandbox::{ProcessIo, RunOutcome};
use kiln_executor::snapshot::Snapshotter;
use kiln_solver::run::{Bind, RunError, RunOptions};
use std::path::PathBuf;
use std::process::ExitCode;

pub fn run(root: Option<PathBuf>, args: RunArgs) -> Result<ExitCode> {
    let started = options(args).and_then(|(reference, opts)| start(root, &reference, &opts));
    match started {
        Ok(outcome) => Ok(ExitCode::from(
            u8::try_from(outcome.exit_code).unwrap_or(u8::MAX),
        )),
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = e
                .downcast_ref::<RunError>()
                .map_or(125, RunError::exit_status);
            Ok(ExitCode::from(code))
        }
    }
}

/// The image reference and what to change from its config, from the flags.
fn options(args: RunArgs) -> Result<(String, RunOptions)> {
    let Some((reference, command)) = args.args.split_first() else {
        return Err(anyhow!("missing IMAGE"));
    };
    let reference = reference.clone();
    let env = args
        .env
        .iter()
        .filter_map(|e| match e.split_once('=') {
            Some((k, v)) => Some(Ok((k.to_string(), v.to_string()))),
            None if e.is_empty() => Some(Err(anyhow!("-e \"\": expected K=V or K"))),
            // docker: a bare name passes kiln's value, or nothing when unset.
            None => std::env::var(e).ok().map(|v| Ok((e.clone(), v))),
        })
        .collect::<Result<Vec<_>>>()?;
    let binds = args
        .volumes
        .iter()
        .map(|v| v.parse::<Bind>().map_err(|e| anyhow!(e)))
        .collect::<Result<Vec<_>>>()?;
    let opts = RunOptions {
        command: command.to_vec(),
        entrypoint: args.entrypoint,
        env,
        user: args.user,
        workdir: args.workdir,
        network_none: args.network == RunNetwork::None,
        binds,
        io: if args.tty {
            ProcessIo::Terminal {
                stdin: args.interactive,
            }
        } else {
            ProcessIo::Inherit {
                stdin: args.interactive,
            }
        },
        snapshotter: match args.snapshotter {
            SnapshotterArg::Overlay => Some(Snapshotter::Overlay),
            SnapshotterArg::Copy => Some(Snapshotter::Copy),
            SnapshotterArg::Auto => None,
        },
    };
    Ok((reference, opts))
}

/// Everything up to the process's exit; an error here is kiln's, not the command's.
fn start(root: Option<PathBuf>, reference: &str, opts: &RunOptions) -> Result<RunOutcome> {
    let store = open_store(root)?;
    let _lock = store.lock_shared().context("locking the store")?;
    let image = kiln_solver::run::open_image(&store, reference)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(runtime.block_on(kiln_solver::run::run_image(&store, &image, opts))?)
}

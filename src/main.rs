//! The `kiln` command line: parses flags (clap, in `cli`), calls the crates (mostly
//! kiln-build) and prints what they return; a build's progress is drawn by
//! kiln-progressui in the mode `--progress` names.
//!
//! Exit status: 0 on success, 1 when a build or command fails, 2 for usage errors (clap)
//! and for `kiln diff` errors (its 1 means "the images differ").

mod build;
mod cli;
mod diff_cmd;
mod images;
mod import_cmd;
mod interrupt;
mod registry_cmd;
mod run_cmd;
mod worker_cmd;

use clap::Parser;
use cli::{Cli, Command, DebugCommand};
use std::process::ExitCode;

fn main() -> ExitCode {
    // The sandbox helper and the ID mapper are this binary re-exec'd: serve them first.
    kiln_base::phase::init();
    if let Some(code) = kiln_executor::sandbox::helper_main() {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    interrupt::quiet_on_broken_pipe();
    let cli = Cli::parse();
    // Unprivileged: the whole command runs as root inside a user namespace, so the store's
    // files and every layer carry the image's own owners. Must happen before any thread.
    if needs_store(&cli.command) {
        match kiln_executor::userns::enter_user_namespace_if_needed() {
            Ok(state) => {
                if let Some(warning) = state.warning() {
                    eprintln!("{warning}");
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    interrupt::clean_up_on_signals();
    let result = match cli.command {
        Command::Build(args) => build::run(cli.root, *args),
        Command::Diff(args) => diff_cmd::run(cli.root, args),
        Command::Pull(args) => registry_cmd::pull(cli.root, args),
        Command::Push(args) => registry_cmd::push(cli.root, args),
        Command::Login(args) => registry_cmd::login(args),
        Command::Logout(args) => registry_cmd::logout(args),
        Command::Graph(args) => build::graph(args),
        Command::Debug {
            command: DebugCommand::Parse { file },
        } => build::debug_parse(&file),
        Command::Images => images::list(cli.root),
        Command::Inspect {
            reference,
            platform,
        } => images::inspect(cli.root, &reference, platform.as_deref()),
        Command::History {
            reference,
            platform,
        } => images::history(cli.root, &reference, platform.as_deref()),
        Command::Tag { source, target } => images::tag(cli.root, &source, &target),
        Command::Rmi { references } => images::rmi(cli.root, &references),
        Command::Save(args) => images::save(cli.root, args),
        Command::Load { input } => images::load(cli.root, &input),
        Command::Prune(args) => images::prune(cli.root, args),
        Command::Import(args) => import_cmd::run(cli.root, args),
        Command::Run(args) => run_cmd::run(cli.root, args),
        Command::Worker(args) => worker_cmd::run(cli.root, args),
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // The last RUNs' namespaces are torn down as their helpers exit, after all was said:
    // wait for that here, so it is this command's time and not that of whatever runs next.
    kiln_executor::sandbox::wait_for_exiting_helpers(HELPER_EXIT_WAIT);
    kiln_store::remove_own_scratch();
    code
}

/// How long a command waits for its last sandbox helpers to exit (their teardown takes
/// milliseconds; one stuck longer is left to the kernel).
const HELPER_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Commands that read or write the store (and so need the user namespace when rootless).
fn needs_store(command: &Command) -> bool {
    !matches!(
        command,
        Command::Graph(_) | Command::Debug { .. } | Command::Login(_) | Command::Logout(_)
    )
}

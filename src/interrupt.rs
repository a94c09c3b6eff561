//! How kiln ends when it is cut short: a closed output pipe, Ctrl-C or SIGTERM.
//!
//! - A closed pipe (`kiln images | head -1`): Rust ignores SIGPIPE, so `println!` panics on
//!   EPIPE. kiln leaves SIGPIPE alone (the sandbox helper, which is this binary, resets
//!   signals for RUN itself, and kiln writes to pipes of its own children where a signal
//!   would kill it for a child's fault) and ends quietly instead, with status 141 (128 +
//!   SIGPIPE): what a shell reports for `docker images | head -1` (Go dies of SIGPIPE on a
//!   closed stdout) or `yes | head -1`, so `set -o pipefail` scripts see kiln as they see
//!   those.
//! - SIGINT and SIGTERM: this process's scratch in the store is removed before exiting
//!   with 130 or 143 (128 + the signal), so a Ctrl-C during a RUN leaves no staging
//!   behind. Whatever removal misses (a RUN still writing) is reclaimed by the next build
//!   or prune, since the scratch lock dies with the process.

/// Exit status for a closed output pipe (128 + SIGPIPE).
const EXIT_BROKEN_PIPE: i32 = 141;
/// Exit statuses after SIGINT and SIGTERM (128 + the signal number).
const EXIT_SIGINT: i32 = 130;
const EXIT_SIGTERM: i32 = 143;

/// Installs the broken-pipe panic hook; call first thing in `main`.
pub fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // The message std's print macros panic with on a write error (stdout or stderr),
        // ending in the OS's text for EPIPE.
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        let broken_pipe = message.is_some_and(|m| {
            m.starts_with("failed printing to std")
                && m.to_ascii_lowercase().contains("broken pipe")
        });
        if broken_pipe {
            kiln_store::remove_own_scratch();
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        default(info);
    }));
}

/// Starts a thread that waits for SIGINT or SIGTERM, removes this process's scratch and
/// exits. Call after entering the user namespace (which must happen before any thread).
pub fn clean_up_on_signals() {
    let spawned = std::thread::Builder::new()
        .name("kiln-signals".into())
        .spawn(|| {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            else {
                return;
            };
            let code = runtime.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    // No handler: the default disposition still ends kiln; the next
                    // build or prune reclaims its scratch.
                    return None;
                };
                tokio::select! {
                    _ = int.recv() => Some(EXIT_SIGINT),
                    _ = term.recv() => Some(EXIT_SIGTERM),
                }
            });
            if let Some(code) = code {
                kiln_store::remove_own_scratch();
                std::process::exit(code);
            }
        });
    // Without the thread kiln still stops on a signal, only without tidying up.
    drop(spawned);
}

//! `kiln pull`, `kiln push`, `kiln login`, `kiln logout`: flags and output around the
//! kiln-registry crate (which does the work).

use crate::cli::{LoginArgs, LogoutArgs, PullArgs, PushArgs, RegistryFlags};
use anyhow::{Context, Result, bail};
use kiln_build::open_store;
use kiln_registry::{Credentials, Progress, RegistryOptions};
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// The registry options the flags give.
fn options(flags: &RegistryFlags) -> RegistryOptions {
    RegistryOptions {
        insecure_registries: flags.insecure_registries.clone(),
        ..RegistryOptions::default()
    }
}

/// Progress lines on stderr, one per blob.
fn progress_printer(verb: &'static str) -> kiln_registry::ProgressFn {
    Arc::new(move |p: Progress| eprintln!("{}", p.line(verb)))
}

/// `kiln pull`: fetches the image into the store and tags it as written.
pub fn pull(root: Option<PathBuf>, args: PullArgs) -> Result<ExitCode> {
    let store = open_store(root)?;
    let _lock = store.lock_shared()?;
    let mut opts = options(&args.registry);
    opts.platform = args.platform.clone();
    if !args.quiet {
        opts.progress = Some(progress_printer("downloaded"));
    }
    let pulled = kiln_registry::pull_into_store(&store, &args.reference, &opts)?;
    if args.quiet {
        println!("{}", pulled.image.manifest);
    } else {
        println!("Pulled {} as {}", pulled.reference, pulled.local_name);
        println!("Digest: {}", pulled.resolved_digest);
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln push`: sends the store's image to a registry.
pub fn push(root: Option<PathBuf>, args: PushArgs) -> Result<ExitCode> {
    let store = open_store(root)?;
    let _lock = store.lock_shared()?;
    let mut opts = options(&args.registry);
    if !args.quiet {
        opts.progress = Some(progress_printer("pushed"));
    }
    let dest = args.dest.as_deref().unwrap_or(&args.source);
    let pushed = kiln_registry::push_from_store(&store, &args.source, dest, &opts)?;
    if args.quiet {
        println!("{}", pushed.digest);
    } else {
        println!(
            "Pushed {}: digest {} size {}",
            pushed.reference, pushed.digest, pushed.size
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn read_line(prompt: &str) -> Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// `kiln login`: checks the credentials against the registry, then stores them in the
/// docker config (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`).
pub fn login(args: LoginArgs) -> Result<ExitCode> {
    let username = match args.username {
        Some(u) => u,
        None if args.password_stdin => bail!("--password-stdin needs --username"),
        None => read_line("Username: ")?,
    };
    let password = if args.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the password from standard input")?;
        s.trim_end_matches(['\r', '\n']).to_string()
    } else if let Some(p) = args.password {
        eprintln!(
            "warning: a password on the command line is visible to other users; use --password-stdin"
        );
        p
    } else {
        read_line("Password: ")?
    };
    if username.is_empty() || password.is_empty() {
        bail!(
            "login to {}: user name and password must not be empty",
            args.server
        );
    }
    let creds = Credentials { username, password };
    let path = kiln_registry::login(&args.server, &creds, &options(&args.registry))?;
    eprintln!("credentials saved in {}", path.display());
    println!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

/// `kiln logout`: forgets the registry's credentials.
pub fn logout(args: LogoutArgs) -> Result<ExitCode> {
    if kiln_registry::logout(&args.server, &RegistryOptions::default())? {
        println!("Removed login credentials for {}", args.server);
    } else {
        println!("Not logged in to {}", args.server);
    }
    Ok(ExitCode::SUCCESS)
}

//! `cooplocker lock` (contract section 20): run a command under a lock, like
//! `flock(1)` across machines. It takes a [`Lease`](cooplocker_client::Lease)
//! from the project's client library (waiting in the service's fair line),
//! runs the command with `COOPLOCKER_RESOURCE` and `COOPLOCKER_FENCING_TOKEN`
//! in its environment while the lease renews itself every `ttl/3`, passes
//! SIGINT and SIGTERM on to it, and releases the lock once it has exited.
//!
//! Exit status: the command's (128 + the signal if a signal ended it);
//! [`NOT_ACQUIRED`] (75, `EX_TEMPFAIL`) when the lock was not had within
//! `--wait` (the command did not run); [`LEASE_LOST`] (76) when the lease was
//! lost while it ran (it got SIGTERM, then SIGKILL [`KILL_AFTER`] later);
//! [`FAILED`] (2) when the lock could not even be asked for (no or bad key,
//! server unreachable, a refused argument) — each with one line on stderr.

use clap::Args;
use cooplocker_client::{default_requester, Client, Error, ErrorCode, Lease, RetryPolicy};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Not acquired within `--wait` (`EX_TEMPFAIL` of sysexits.h: try later).
pub const NOT_ACQUIRED: u8 = 75;
/// The lease was lost while the command ran.
pub const LEASE_LOST: u8 = 76;
/// The lock could not be asked for.
pub const FAILED: u8 = 2;
/// The command could not be started: not found (as shells answer) ...
pub const NOT_FOUND: u8 = 127;
/// ... or not executable.
pub const NOT_EXECUTABLE: u8 = 126;
/// Between the SIGTERM and the SIGKILL of a command whose lease was lost.
pub const KILL_AFTER: Duration = Duration::from_secs(5);

/// `cooplocker lock [OPTIONS] RESOURCE -- COMMAND [ARGS...]`.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// Base URL of a running cooplocker instance.
    #[arg(
        long,
        env = "COOPLOCKER_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// TTL of the lease in seconds; it is extended every third of it, so a
    /// crashed `cooplocker lock` frees the resource within this.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub ttl: u64,
    /// Seconds to wait in line for the resource (0: try once).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=604_800))]
    pub wait: u64,
    /// Who holds it, as listings and events show (default `<hostname>:<pid>`).
    #[arg(long)]
    pub requester: Option<String>,
    /// Read the API key from this file (else from COOPLOCKER_API_KEY).
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// The resource to lock.
    pub resource: String,
    /// The command to run under the lock, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// Runs `cooplocker lock`; the exit status as described in the module docs.
pub async fn run(args: LockArgs) -> ExitCode {
    match lock(args).await {
        Ok(code) => ExitCode::from(code),
        Err((code, line)) => {
            eprintln!("cooplocker lock: {}", one_line(&line));
            ExitCode::from(code)
        }
    }
}

type Failure = (u8, String);

async fn lock(args: LockArgs) -> Result<u8, Failure> {
    let key = api_key(&args)?;
    let client = Client::builder(&args.server, key)
        // Enough to ride out a restart or a 503, few enough that an
        // unreachable server is reported within seconds.
        .retry(RetryPolicy {
            max_attempts: 4,
            max_elapsed: Duration::from_secs(10),
            ..RetryPolicy::default()
        })
        .connect_timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| (FAILED, e.to_string()))?;
    // Installed before anything is held, so a signal never ends this process
    // between the grant and the command's start.
    let mut signals = Signals::new().map_err(|e| (FAILED, format!("signal handlers: {e}")))?;
    let requester = args.requester.clone().unwrap_or_else(default_requester);
    let acquire = client
        .lease(&args.resource)
        .ttl(Duration::from_secs(args.ttl))
        .wait(Duration::from_secs(args.wait))
        .requester(requester)
        .acquire();
    let lease = tokio::select! {
        got = acquire => got.map_err(|e| describe(&args, e))?,
        // Dropping the waiting request takes it out of the line.
        sig = signals.next() => return Ok(128 + sig as u8),
    };

    let mut command = tokio::process::Command::new(&args.command[0]);
    command
        .args(&args.command[1..])
        .env("COOPLOCKER_RESOURCE", lease.resource())
        .env(
            "COOPLOCKER_FENCING_TOKEN",
            lease.fencing_token().to_string(),
        );
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let _ = lease.release().await;
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                NOT_FOUND
            } else {
                NOT_EXECUTABLE
            };
            return Err((
                code,
                format!("cannot run {}: {e}", args.command[0].to_string_lossy()),
            ));
        }
    };

    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            reason = lease.lost() => {
                eprintln!(
                    "cooplocker lock: lost the lock on {}: {reason}; stopping the command",
                    args.resource
                );
                stop(&mut child).await;
                return Ok(LEASE_LOST);
            }
            sig = signals.next() => send(&child, sig),
        }
    };
    release(lease).await;
    match status {
        Ok(status) => Ok(exit_code(status)),
        Err(e) => Err((FAILED, format!("waiting for the command: {e}"))),
    }
}

/// The API key: `--key-file`, else `COOPLOCKER_API_KEY` (never a flag, which
/// would show in `ps`).
fn api_key(args: &LockArgs) -> Result<String, Failure> {
    let key = match &args.key_file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            (
                FAILED,
                format!("cannot read --key-file {}: {e}", path.display()),
            )
        })?,
        None => std::env::var("COOPLOCKER_API_KEY").map_err(|_| {
            (
                FAILED,
                "no API key: set COOPLOCKER_API_KEY or give --key-file".to_string(),
            )
        })?,
    };
    let key = key.trim().to_string();
    if key.is_empty() {
        return Err((FAILED, "the API key is empty".into()));
    }
    Ok(key)
}

/// The one line for a failed acquire, and its exit status.
fn describe(args: &LockArgs, e: Error) -> Failure {
    match e {
        Error::NotAcquired {
            status, held_by, ..
        } => (
            NOT_ACQUIRED,
            format!(
                "{} not acquired within {} s ({status}{})",
                args.resource,
                args.wait,
                held_by
                    .map(|h| format!(", held by {h}"))
                    .unwrap_or_default()
            ),
        ),
        Error::Api(api) if api.code == ErrorCode::Unauthorized => (
            FAILED,
            format!("the server at {} refused the API key ({api})", args.server),
        ),
        Error::Transport(t) => (
            FAILED,
            format!("cannot reach the server at {}: {}", args.server, chain(&t)),
        ),
        other => (FAILED, format!("{} (server {})", other, args.server)),
    }
}

/// An error and its causes, `a: b: c` (reqwest's own text names only the URL).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// After the command exited: free the lock. A failure leaves it to expire
/// at its TTL, which is said, but the command's status stands.
async fn release(lease: Lease) {
    let resource = lease.resource().to_string();
    match lease.release().await {
        Ok(_) => {}
        Err(e) => eprintln!(
            "cooplocker lock: could not release {resource} (it expires at its TTL): {}",
            one_line(&e.to_string())
        ),
    }
}

/// The lease is gone: SIGTERM, and SIGKILL if the command is still there
/// after [`KILL_AFTER`].
async fn stop(child: &mut tokio::process::Child) {
    send(child, libc::SIGTERM);
    if tokio::time::timeout(KILL_AFTER, child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// Sends `sig` to the command, if it has not been reaped yet.
fn send(child: &tokio::process::Child, sig: libc::c_int) {
    // `id()` is None once the child was reaped, so the pid cannot have been
    // reused by another process.
    if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
        // SAFETY: kill(2) takes plain integers and has no memory effects.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// The command's status as this process's: its code, or 128 + the signal.
fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(FAILED),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(255),
        (None, None) => FAILED,
    }
}

/// SIGINT and SIGTERM, caught from the start, to pass on to the command.
struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal caught (its number).
    async fn next(&mut self) -> libc::c_int {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
        }
    }
}

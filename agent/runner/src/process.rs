//! Running one program of a run (the algorithm, venv creation, pip) as the
//! run user, in its own process group, with a clean environment, and
//! making sure nothing of it survives.

use crate::error::RunError;
use crate::output::RunOutput;
use crate::user::RunUser;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, Uid};
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// When a run must end: its deadline and the Stop signal.
#[derive(Clone)]
pub(crate) struct RunControl {
    /// The run's deadline.
    pub(crate) deadline: Instant,
    /// The limit, for the error message.
    pub(crate) timeout_secs: u64,
    /// Cancelled by `Stop`.
    pub(crate) cancel: CancellationToken,
}

impl RunControl {
    /// Waits for whichever ends the run first, and says which.
    pub(crate) async fn ended(&self) -> RunError {
        tokio::select! {
            () = tokio::time::sleep_until(self.deadline) => RunError::TimedOut(self.timeout_secs),
            () = self.cancel.cancelled() => RunError::Stopped,
        }
    }
}

/// One program to run.
pub(crate) struct ChildSpec<'a> {
    /// The program (absolute path).
    pub(crate) program: &'a Path,
    /// Its arguments.
    pub(crate) args: Vec<OsString>,
    /// Its whole environment.
    pub(crate) env: &'a [(String, String)],
    /// Its working directory.
    pub(crate) cwd: &'a Path,
}

/// How a program ended on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// It exited with this status.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
}

impl Ending {
    /// The name of a signal number, e.g. "SIGSEGV".
    pub(crate) fn signal_name(signal: i32) -> String {
        Signal::try_from(signal)
            .map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_owned())
    }
}

/// Runs `spec` as `user` to its end, the deadline or a Stop, streaming its
/// stdout and stderr to `out`. Whatever happens, the process group is then
/// killed and, when `sweep` is set, every process of the run user.
pub(crate) async fn run_child(
    spec: ChildSpec<'_>,
    user: &RunUser,
    out: &Arc<RunOutput>,
    ctl: &RunControl,
    sweep: bool,
) -> Result<Ending, RunError> {
    let mut cmd = tokio::process::Command::new(spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if user.switch {
        // std drops the supplementary groups (setgroups(0)) before setuid.
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
        program: PathBuf::from(spec.program),
        source,
    })?;
    let pgid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .map(Pid::from_raw);
    tracing::debug!(program = %spec.program.display(), pgid = ?pgid, "started");

    let readers = [
        child
            .stdout
            .take()
            .map(|s| spawn_reader(s, out.clone(), Stream::Stdout)),
        child
            .stderr
            .take()
            .map(|s| spawn_reader(s, out.clone(), Stream::Stderr)),
    ];

    let ended = tokio::select! {
        status = child.wait() => Ok(status),
        err = ctl.ended() => Err(err),
    };
    if let Some(pgid) = pgid {
        kill_group(pgid);
    }
    if ended.is_err() {
        // Reap the leader, killed with its group above.
        let _ = child.wait().await;
    }
    if sweep && user.switch {
        sweep_user(user.uid).await;
    }
    for reader in readers.into_iter().flatten() {
        finish_reader(reader).await;
    }
    let status = ended?.map_err(|source| RunError::Spawn {
        program: PathBuf::from(spec.program),
        source,
    })?;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ok(Ending::Exited(code)),
        (None, Some(signal)) => Ok(Ending::Signaled(signal)),
        (None, None) => Ok(Ending::Exited(-1)),
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

fn spawn_reader(
    mut stream: impl AsyncRead + Unpin + Send + 'static,
    out: Arc<RunOutput>,
    which: Stream,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => match which {
                    Stream::Stdout => out.stdout(&buf[..n]),
                    Stream::Stderr => out.stderr(&buf[..n]),
                },
                Err(err) => {
                    tracing::warn!(%err, "reading the algorithm's output");
                    break;
                }
            }
        }
    })
}

/// Waits briefly for a reader to drain its pipe: once the process group is
/// dead the pipe closes; a writer that escaped the group could hold it open,
/// so the reader is abandoned after a while.
async fn finish_reader(reader: JoinHandle<()>) {
    let abort = reader.abort_handle();
    if tokio::time::timeout(Duration::from_secs(2), reader)
        .await
        .is_err()
    {
        tracing::warn!("the algorithm's output stays open after its end; no longer read");
        abort.abort();
    }
}

/// SIGKILLs process group `pgid`; a group already gone is fine.
pub(crate) fn kill_group(pgid: Pid) {
    match killpg(pgid, Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(err) => tracing::warn!(%pgid, %err, "killing the process group"),
    }
}

/// SIGKILLs every live process of `uid` until none is left (bounded).
pub(crate) async fn sweep_user(uid: Uid) {
    for _ in 0..100 {
        let pids = processes_of(uid);
        if pids.is_empty() {
            return;
        }
        tracing::info!(count = pids.len(), %uid, "killing processes left behind by the run user");
        for pid in pids {
            match kill(pid, Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(err) => tracing::warn!(%pid, %err, "killing a process of the run user"),
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::warn!(%uid, "processes of the run user survive the sweep");
}

/// Live (not zombie) processes whose real, effective, saved or file-system
/// uid is `uid`, from /proc.
pub(crate) fn processes_of(uid: Uid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let mut zombie = false;
        let mut matches = false;
        for line in status.lines() {
            if let Some(state) = line.strip_prefix("State:") {
                zombie = state.trim_start().starts_with(['Z', 'X']);
            } else if let Some(uids) = line.strip_prefix("Uid:") {
                matches = uids
                    .split_whitespace()
                    .any(|u| u.parse::<u32>().is_ok_and(|u| u == uid.as_raw()));
            }
        }
        if let (true, false, Ok(pid)) = (matches, zombie, i32::try_from(pid)) {
            found.push(Pid::from_raw(pid));
        }
    }
    found
}

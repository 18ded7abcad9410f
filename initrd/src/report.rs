//! What cocos-init prints, and where.
//!
//! Every line starts with `cocos-init: `. Each boot step announces itself
//! with `cocos-init: [N/6] <title>` as it starts; a failure prints exactly
//! one line `cocos-init: FATAL: <step>: <cause>` (the cause is the error
//! and its sources joined by `: `, on one line). The end-to-end tests match
//! these lines, so their form is fixed here and unit-tested.
//!
//! Lines go to `/dev/console` (the serial console under QEMU). The FATAL
//! line and the final switch_root line also go to `/dev/kmsg` at debug
//! level, so they are in the kernel log of the running system without
//! being printed twice on the console (debug-level messages are below the
//! default console log level; other lines are not sent there, since the
//! kernel rate-limits writes to `/dev/kmsg` to 10 per 5 s).

use std::error::Error;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;

/// The steps of the boot, in order: their names in FATAL lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// /proc, /sys, /dev, /run, /tmp, configfs.
    Mounts,
    /// Reading /etc/cocos-init.toml.
    Config,
    /// Loading kernel modules.
    Modules,
    /// Parsing /proc/cmdline.
    Cmdline,
    /// Finding the partitions.
    Partitions,
    /// Checking the hash tree, opening root_verity, mounting the root.
    DmVerity,
    /// LUKS2 format and open, ext4, mount of /cocos.
    Cocos,
    /// tmpfs and bind mounts in the new root.
    Runtime,
    /// The runtime /etc/fstab.
    Fstab,
    /// Moving the mounts, switching root, starting /sbin/init.
    SwitchRoot,
}

impl Step {
    /// The name used in FATAL lines.
    pub fn name(self) -> &'static str {
        match self {
            Step::Mounts => "mounts",
            Step::Config => "config",
            Step::Modules => "modules",
            Step::Cmdline => "cmdline",
            Step::Partitions => "partitions",
            Step::DmVerity => "dm-verity",
            Step::Cocos => "cocos",
            Step::Runtime => "runtime",
            Step::Fstab => "fstab",
            Step::SwitchRoot => "switch_root",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The six progress steps, announced as `[N/6]`.
pub const PROGRESS: [&str; 6] = [
    "mounts and kernel modules",
    "kernel command line",
    "partitions",
    "dm-verity root",
    "encrypted /cocos",
    "runtime mounts and switch_root",
];

/// `cocos-init: [N/6] <title>` for progress step `n` (1-based).
pub fn progress_line(n: usize) -> String {
    let title = PROGRESS.get(n.wrapping_sub(1)).copied().unwrap_or("?");
    format!("cocos-init: [{n}/{}] {title}", PROGRESS.len())
}

/// A failure: the step and the cause on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    /// The step that failed.
    pub step: Step,
    /// The cause, one line.
    pub cause: String,
}

impl Fatal {
    /// A failure of `step` caused by `error` (and its sources).
    pub fn new(step: Step, error: &dyn Error) -> Self {
        Fatal {
            step,
            cause: error_chain(error),
        }
    }

    /// `cocos-init: FATAL: <step>: <cause>`.
    pub fn line(&self) -> String {
        format!("cocos-init: FATAL: {}: {}", self.step, self.cause)
    }
}

/// Attaches a [`Step`] to errors.
pub trait AtStep<T> {
    /// Turns the error into a [`Fatal`] of `step`.
    fn at(self, step: Step) -> Result<T, Fatal>;
}

impl<T, E: Error> AtStep<T> for Result<T, E> {
    fn at(self, step: Step) -> Result<T, Fatal> {
        self.map_err(|e| Fatal::new(step, &e))
    }
}

/// The error and its sources joined by `: `, on one line. A source whose
/// text the outer message already ends with is not repeated.
pub fn error_chain(error: &dyn Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out.replace(['\n', '\r'], " ")
}

/// The console (and the kernel log).
#[derive(Debug, Default)]
pub struct Console {
    console: Option<File>,
    kmsg: Option<File>,
}

impl Console {
    /// Opens `/dev/console` and `/dev/kmsg` (whichever exist) and makes the
    /// console this process's stdin, stdout and stderr (`/dev/null` when
    /// there is no console), so that libraries, a debug shell and the
    /// root's init write there. The kernel leaves descriptors 0 to 2 closed
    /// when the initramfs has no `/dev/console`; without this, the next
    /// files opened would take their numbers and library messages meant
    /// for stderr would land in them.
    pub fn open() -> Self {
        use std::os::unix::fs::OpenOptionsExt;
        let console = OpenOptions::new()
            .read(true)
            .write(true)
            // PID 1 must not make the console its controlling terminal.
            .custom_flags(nix::libc::O_NOCTTY)
            .open("/dev/console")
            .ok();
        let null = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .ok();
        if let Some(std_target) = console.as_ref().or(null.as_ref()) {
            // Best effort: without them the lines still reach the console
            // through `console`.
            let _ = nix::unistd::dup2_stdin(std_target);
            let _ = nix::unistd::dup2_stdout(std_target);
            let _ = nix::unistd::dup2_stderr(std_target);
            // If the console itself got descriptor 0, 1 or 2 it was opened
            // close-on-exec; /sbin/init must inherit all three.
            for fd in [
                std::io::stdin().as_fd(),
                std::io::stdout().as_fd(),
                std::io::stderr().as_fd(),
            ] {
                let _ = nix::fcntl::fcntl(
                    fd,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                );
            }
        }
        let kmsg = OpenOptions::new().write(true).open("/dev/kmsg").ok();
        Console { console, kmsg }
    }

    /// Prints `cocos-init: <text>`.
    pub fn info(&mut self, text: &str) {
        self.write(&format!("cocos-init: {text}"), false);
    }

    /// Prints a complete line (such as [`progress_line`]'s).
    pub fn line(&mut self, line: &str) {
        self.write(line, false);
    }

    /// Prints a line and records it in the kernel log.
    pub fn record(&mut self, line: &str) {
        self.write(line, true);
    }

    fn write(&mut self, line: &str, kmsg: bool) {
        let text = format!("{line}\n");
        // One write per line, so lines are not interleaved with the
        // kernel's.
        let written = match &mut self.console {
            Some(c) => c.write_all(text.as_bytes()).is_ok(),
            None => false,
        };
        if !written {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
        if kmsg && let Some(k) = &mut self.kmsg {
            // <7>: debug level, below the console's log level.
            let _ = k.write_all(format!("<7>{line}\n").as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer {0}")]
    struct Outer(&'static str, #[source] std::io::Error);

    #[test]
    fn progress_lines_count_six_steps() {
        assert_eq!(
            progress_line(1),
            "cocos-init: [1/6] mounts and kernel modules"
        );
        assert_eq!(progress_line(4), "cocos-init: [4/6] dm-verity root");
        assert_eq!(
            progress_line(6),
            "cocos-init: [6/6] runtime mounts and switch_root"
        );
    }

    #[test]
    fn fatal_line_has_the_step_and_the_whole_cause() {
        let e = Outer("x", std::io::Error::from_raw_os_error(5));
        let f = Fatal::new(Step::DmVerity, &e);
        assert_eq!(
            f.line(),
            "cocos-init: FATAL: dm-verity: outer x: Input/output error (os error 5)"
        );
        let r: Result<(), Outer> = Err(Outer("y", std::io::Error::other("a\nb")));
        assert_eq!(
            r.at(Step::Partitions).unwrap_err().line(),
            "cocos-init: FATAL: partitions: outer y: a b"
        );
    }

    #[test]
    fn a_source_already_in_the_message_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot open: {0}")]
        struct Inline(#[source] std::io::Error);
        let e = Inline(std::io::Error::other("gone"));
        assert_eq!(error_chain(&e), "cannot open: gone");
    }

    #[test]
    fn step_names_are_the_ones_tests_match() {
        let names: Vec<_> = [
            Step::Mounts,
            Step::Config,
            Step::Modules,
            Step::Cmdline,
            Step::Partitions,
            Step::DmVerity,
            Step::Cocos,
            Step::Runtime,
            Step::Fstab,
            Step::SwitchRoot,
        ]
        .map(Step::name)
        .into();
        assert_eq!(
            names,
            [
                "mounts",
                "config",
                "modules",
                "cmdline",
                "partitions",
                "dm-verity",
                "cocos",
                "runtime",
                "fstab",
                "switch_root"
            ]
        );
    }
}

//! The end of a failed boot: power off, or the debug shell.
//!
//! Fail closed: after the FATAL line the machine syncs and powers off
//! (`reboot(RB_POWER_OFF)`; QEMU then exits). A shell is offered only when
//! the kernel command line says `cocos.debug=1`.

use std::io::Write;
use std::time::Duration;

use nix::sys::reboot::{RebootMode, reboot};

use crate::cmdline::debug_requested;
use crate::report::Console;

/// The shell started in debug mode.
pub const DEBUG_SHELL: &str = "/bin/sh";

/// Whether `/proc/cmdline` (if it can be read) asks for the debug shell.
pub fn debug_mode() -> bool {
    std::fs::read_to_string("/proc/cmdline").is_ok_and(|c| debug_requested(&c))
}

/// Runs the debug shell if `debug`, then powers off. Never returns.
pub fn halt(console: &mut Console, debug: bool) -> ! {
    if debug {
        console.line(&format!("cocos-init: debug: starting {DEBUG_SHELL}"));
        match std::process::Command::new(DEBUG_SHELL).status() {
            Ok(_) => console.line("cocos-init: debug: shell exited; powering off"),
            Err(e) => console.line(&format!(
                "cocos-init: debug: cannot start {DEBUG_SHELL}: {e}"
            )),
        }
    }
    power_off()
}

/// Syncs and powers the machine off; if that fails (not PID 1, no
/// privilege), waits forever rather than let PID 1 exit (a kernel panic).
pub fn power_off() -> ! {
    let _ = std::io::stdout().flush();
    nix::unistd::sync();
    let _ = reboot(RebootMode::RB_POWER_OFF);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

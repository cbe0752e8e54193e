//! Starting, reaping and describing worker processes.
//!
//! Workers started here are direct children: `spawn` execs a fresh interpreter with chosen file
//! descriptors inherited; `try_wait` reaps without blocking; [`ExitStatus`] says how a process
//! ended, by exit code or by signal name. Workers forked by the zygote are its children, not
//! ours: the zygote reaps them and forwards the raw wait status, which `ExitStatus::from_raw`
//! decodes the same way.
use std::ffi::OsStr;
use std::fmt;
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};

use crate::error::{CoreError, Result};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// Decodes a raw `waitpid` status; None if the process has not ended (stopped, continued).
    #[must_use]
    pub fn from_raw(raw: i32) -> Option<Self> {
        // The POSIX encoding (WIFEXITED / WIFSIGNALED), shared by Linux and the BSDs.
        let low = raw & 0x7f;
        if low == 0 {
            Some(Self::Code((raw >> 8) & 0xff))
        } else if low != 0x7f {
            Some(Self::Signal(low))
        } else {
            None
        }
    }

    fn from_wait_status(status: WaitStatus) -> Option<Self> {
        if let Some(code) = status.exit_status() {
            Some(Self::Code(code))
        } else {
            status.terminating_signal().map(Self::Signal)
        }
    }

    /// The exit code a shell would show: the code, or minus the signal number (as Python's
    /// `Popen.returncode` and `multiprocessing.Process.exitcode` do).
    #[must_use]
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Code(code) => code,
            Self::Signal(signal) => -signal,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Code(code) => write!(formatter, "exit code {code}"),
            Self::Signal(signal) => match signal_name(signal) {
                Some(name) => write!(formatter, "signal {name}"),
                None => write!(formatter, "signal {signal}"),
            },
        }
    }
}

/// The conventional name of a signal (`SIGKILL`), if it is a common one.
#[must_use]
pub fn signal_name(signal: i32) -> Option<&'static str> {
    const NAMES: [(Signal, &str); 14] = [
        (Signal::HUP, "SIGHUP"),
        (Signal::INT, "SIGINT"),
        (Signal::QUIT, "SIGQUIT"),
        (Signal::ILL, "SIGILL"),
        (Signal::TRAP, "SIGTRAP"),
        (Signal::ABORT, "SIGABRT"),
        (Signal::BUS, "SIGBUS"),
        (Signal::FPE, "SIGFPE"),
        (Signal::KILL, "SIGKILL"),
        (Signal::USR1, "SIGUSR1"),
        (Signal::SEGV, "SIGSEGV"),
        (Signal::USR2, "SIGUSR2"),
        (Signal::PIPE, "SIGPIPE"),
        (Signal::TERM, "SIGTERM"),
    ];
    NAMES
        .iter()
        .find(|(known, _)| known.as_raw() == signal)
        .map(|(_, name)| *name)
}

/// Starts `program` with `args`, stdin closed, stdout/stderr shared, and the descriptors in
/// `inherit` kept open across exec (all others are close-on-exec). Returns the child's pid.
pub fn spawn(program: &OsStr, args: &[&OsStr], inherit: &[RawFd]) -> Result<u32> {
    let inherit = inherit.to_vec();
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    // SAFETY: the hook runs in the forked child before exec and only calls fcntl, which is
    // async-signal-safe; it allocates nothing (`inherit` was built before the fork).
    unsafe {
        command.pre_exec(move || {
            for &fd in &inherit {
                let fd = BorrowedFd::borrow_raw(fd);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| CoreError::os("spawn worker", e))?;
    // The Child is dropped without waiting: `try_wait`/`wait` reap it by pid.
    Ok(child.id())
}

/// Reaps `pid` if it has ended; None while it runs.
pub fn try_wait(pid: u32) -> Result<Option<ExitStatus>> {
    wait_with(pid, WaitOptions::NOHANG)
}

/// Blocks until `pid` ends and reaps it.
pub fn wait(pid: u32) -> Result<ExitStatus> {
    loop {
        if let Some(status) = wait_with(pid, WaitOptions::empty())? {
            return Ok(status);
        }
    }
}

fn wait_with(pid: u32, options: WaitOptions) -> Result<Option<ExitStatus>> {
    let pid = to_pid(pid)?;
    match rustix::process::waitpid(Some(pid), options) {
        Ok(Some((_, status))) => Ok(ExitStatus::from_wait_status(status)),
        Ok(None) | Err(rustix::io::Errno::INTR) => Ok(None),
        Err(error) => Err(CoreError::os("waitpid", error)),
    }
}

/// Sends `signal` (a raw number) to `pid`. A process that is already gone is not an error.
pub fn kill(pid: u32, signal: i32) -> Result<()> {
    let pid = to_pid(pid)?;
    let signal = Signal::from_named_raw(signal)
        .ok_or_else(|| CoreError::InvalidArgument(format!("unknown signal {signal}")))?;
    match rustix::process::kill_process(pid, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(error) => Err(CoreError::os("kill", error)),
    }
}

fn to_pid(pid: u32) -> Result<Pid> {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| CoreError::InvalidArgument(format!("invalid pid {pid}")))
}

/// This process's parent pid (None if it has been re-parented to init, i.e. the parent died).
#[must_use]
pub fn parent_pid() -> Option<u32> {
    rustix::process::getppid().map(|pid| pid.as_raw_nonzero().get().unsigned_abs())
}

/// Asks the kernel to send `signal` to this process when the thread that created it exits
/// (Linux `PR_SET_PDEATHSIG`); a no-op returning false elsewhere. Only meaningful in a child
/// whose parent is single-threaded, such as a worker forked by the zygote.
pub fn set_parent_death_signal(signal: i32) -> Result<bool> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let signal = Signal::from_named_raw(signal)
            .ok_or_else(|| CoreError::InvalidArgument(format!("unknown signal {signal}")))?;
        rustix::process::set_parent_process_death_signal(Some(signal))
            .map_err(|e| CoreError::os("prctl(PR_SET_PDEATHSIG)", e))?;
        Ok(true)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = signal;
        Ok(false)
    }
}

/// Starts a thread that kills this process (SIGKILL) as soon as its parent is no longer
/// `parent`: the parent died and this process was re-parented. It polls every `interval`, and
/// needs no cooperation from the rest of the process (a worker busy in a long task, holding the
/// GIL, still dies). For processes whose parent may be multi-threaded, where
/// `set_parent_death_signal` would fire when the creating thread ends.
pub fn exit_with_parent(parent: u32, interval: std::time::Duration) -> Result<()> {
    std::thread::Builder::new()
        .name("gilfree-parent-watch".into())
        .spawn(move || loop {
            if parent_pid() != Some(parent) {
                let _ = rustix::process::kill_process(rustix::process::getpid(), Signal::KILL);
            }
            std::thread::sleep(interval);
        })
        .map(drop)
        .map_err(|error| CoreError::os("spawning the parent-watch thread", error))
}

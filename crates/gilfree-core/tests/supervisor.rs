//! Tests of starting, killing and reaping child processes, and of exit-status decoding.
use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use gilfree_core::shm::SharedMemory;
use gilfree_core::supervisor::{self, signal_name, ExitStatus};
use gilfree_core::CoreError;

const SIGKILL: i32 = 9;

/// A child that is killed and reaped when the test ends, whatever way it ends.
struct Child {
    pid: u32,
    reaped: bool,
}

impl Child {
    fn spawn_shell(script: &str, inherit: &[i32]) -> Self {
        let args = [OsStr::new("-c"), OsStr::new(script)];
        let pid = supervisor::spawn(OsStr::new("/bin/sh"), &args, inherit).expect("spawn /bin/sh");
        Self { pid, reaped: false }
    }

    /// Polls `try_wait` until the child has ended (at most 10 s).
    fn poll_until_ended(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = supervisor::try_wait(self.pid).expect("try_wait") {
                self.reaped = true;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "child {} still running after 10 s",
                self.pid
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait(&mut self) -> ExitStatus {
        let status = supervisor::wait(self.pid).expect("wait");
        self.reaped = true;
        status
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Only an unreaped pid is surely still ours (a reaped one may have been reused).
        if !self.reaped {
            let _ = supervisor::kill(self.pid, SIGKILL);
            let _ = supervisor::wait(self.pid);
        }
    }
}

#[test]
fn exit_code_is_reported_by_try_wait() {
    let mut child = Child::spawn_shell("exit 3", &[]);
    let status = child.poll_until_ended();
    assert_eq!(status, ExitStatus::Code(3));
    assert_eq!(status.to_string(), "exit code 3");
    assert_eq!(status.exit_code(), 3);
}

#[test]
fn wait_blocks_until_the_child_ends() {
    let mut child = Child::spawn_shell("sleep 0.1; exit 5", &[]);
    assert_eq!(child.wait(), ExitStatus::Code(5));
}

#[test]
fn try_wait_is_none_while_the_child_runs() {
    let child = Child::spawn_shell("sleep 10", &[]);
    assert_eq!(supervisor::try_wait(child.pid).expect("try_wait"), None);
}

#[test]
fn killed_child_reports_its_signal() {
    let mut child = Child::spawn_shell("exec sleep 10", &[]);
    supervisor::kill(child.pid, SIGKILL).expect("kill");
    let status = child.poll_until_ended();
    assert_eq!(status, ExitStatus::Signal(SIGKILL));
    assert_eq!(status.to_string(), "signal SIGKILL");
    assert_eq!(status.exit_code(), -SIGKILL);
}

#[test]
fn kill_rejects_unknown_signals_and_invalid_pids() {
    assert!(matches!(
        supervisor::kill(std::process::id(), 12345),
        Err(CoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        supervisor::kill(0, SIGKILL),
        Err(CoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        supervisor::kill(u32::MAX, SIGKILL),
        Err(CoreError::InvalidArgument(_))
    ));
}

#[test]
fn raw_wait_statuses_decode_like_waitpid_macros() {
    assert_eq!(ExitStatus::from_raw(0), Some(ExitStatus::Code(0)));
    assert_eq!(ExitStatus::from_raw(0x0300), Some(ExitStatus::Code(3)));
    assert_eq!(ExitStatus::from_raw(0xff00), Some(ExitStatus::Code(255)));
    assert_eq!(ExitStatus::from_raw(9), Some(ExitStatus::Signal(9)));
    assert_eq!(
        ExitStatus::from_raw(0x80 | 0x0b),
        Some(ExitStatus::Signal(11)),
        "core dumped"
    );
    assert_eq!(ExitStatus::from_raw(0x137f), None, "stopped by SIGSTOP");
    assert_eq!(ExitStatus::from_raw(0x7f), None, "stopped");
    assert_eq!(ExitStatus::from_raw(0xffff), None, "continued");
}

#[test]
fn statuses_display_names_and_numbers() {
    assert_eq!(ExitStatus::Code(0).to_string(), "exit code 0");
    assert_eq!(ExitStatus::Signal(11).to_string(), "signal SIGSEGV");
    assert_eq!(ExitStatus::Signal(15).to_string(), "signal SIGTERM");
    assert_eq!(ExitStatus::Signal(64).to_string(), "signal 64");
    assert_eq!(signal_name(2), Some("SIGINT"));
    assert_eq!(signal_name(0), None);
}

/// `sh -c 'test -e /proc/self/fd/N'` run with or without `N` inherited.
fn descriptor_visible_in_child(inherit: bool) -> ExitStatus {
    let memory = SharedMemory::create("gilfree-test", 4096).expect("memfd");
    let fd = memory.fd().as_raw_fd();
    let inherited: &[i32] = if inherit { &[fd] } else { &[] };
    let mut child = Child::spawn_shell(&format!("test -e /proc/self/fd/{fd}"), inherited);
    child.poll_until_ended()
}

#[test]
fn inherited_descriptor_is_open_in_the_child() {
    assert_eq!(descriptor_visible_in_child(true), ExitStatus::Code(0));
}

#[test]
fn other_descriptors_are_closed_in_the_child() {
    assert_ne!(descriptor_visible_in_child(false), ExitStatus::Code(0));
}

#[test]
fn spawn_reports_a_missing_program() {
    let result = supervisor::spawn(OsStr::new("/nonexistent/gilfree-worker"), &[], &[]);
    assert!(matches!(result, Err(CoreError::Os { .. })), "{result:?}");
}

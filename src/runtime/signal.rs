//! Process signals for the main thread. SIGINT, SIGTERM and SIGHUP are blocked before any thread
//! starts (threads inherit the mask), so only the main thread receives them, synchronously, with
//! `sigtimedwait`: no async-signal-safety hazards and no signal ever lands on a worker core.

use std::time::Duration;

/// A signal the process acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT or SIGTERM: drain and exit.
    Terminate,
    /// SIGHUP: reload the configuration.
    Reload,
}

fn set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the set we own; a zeroed sigset_t is a valid
    // starting value for sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// Blocks the handled signals in the calling thread and every thread it starts afterwards.
pub fn block() {
    let set = set();
    // SAFETY: pthread_sigmask with a valid set and a null old-set pointer is always sound.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits up to `timeout` for a handled signal.
pub fn wait(timeout: Duration) -> Option<Signal> {
    let set = set();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: the set and timespec are valid for the call; a null siginfo pointer is allowed.
    let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    match sig {
        libc::SIGINT | libc::SIGTERM => Some(Signal::Terminate),
        libc::SIGHUP => Some(Signal::Reload),
        _ => None,
    }
}

//! Layer 1: the systemd notification protocol (`sd_notify(3)`), std-only. Under a
//! `Type=notify` unit systemd names a unix datagram socket in `$NOTIFY_SOCKET`; the binary sends
//! `READY=1` once every core serves, `RELOADING=1` … `READY=1` around a SIGHUP reload and
//! `STOPPING=1` when it starts draining. Without `$NOTIFY_SOCKET` (not under systemd) every call
//! is a no-op.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (newline-separated `KEY=value` assignments) to `$NOTIFY_SOCKET`. `Ok(false)`:
/// the variable is unset, nothing was sent.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(socket) if !socket.is_empty() => notify_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` to the datagram socket `socket`: a path, or `@name` in the abstract namespace.
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let addr = address(socket)?;
    let sock = UnixDatagram::unbound()?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("{} of {} bytes sent", sent, state.len()),
        ));
    }
    Ok(())
}

fn address(socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    match bytes.first() {
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..])
        }
        Some(b'/') => SocketAddr::from_pathname(socket),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{NOTIFY_SOCKET}={:?} is neither an absolute path nor an abstract name (@…)",
                OsString::from(socket)
            ),
        )),
    }
}

/// `READY=1`, with a status line for `systemctl status`.
pub fn ready(status: &str) -> String {
    format!("READY=1\nSTATUS={}", one_line(status))
}

/// `RELOADING=1` with the `MONOTONIC_USEC` systemd requires next to it.
pub fn reloading() -> String {
    format!(
        "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the configuration",
        monotonic_usec()
    )
}

/// `STOPPING=1`.
pub fn stopping() -> String {
    "STOPPING=1\nSTATUS=draining in-flight requests".to_owned()
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares `MONOTONIC_USEC` with.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        notify_to(
            path.as_os_str(),
            &ready("serving on 127.0.0.1:8081, 2 cores"),
        )
        .unwrap();
        assert_eq!(
            receive(&server),
            "READY=1\nSTATUS=serving on 127.0.0.1:8081, 2 cores"
        );
        notify_to(path.as_os_str(), &stopping()).unwrap();
        assert!(receive(&server).starts_with("STOPPING=1\n"));
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("aperture-test-{}-{}", std::process::id(), line!());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), &reloading()).unwrap();
        let got = receive(&server);
        let usec: u64 = got
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(got.starts_with("RELOADING=1\n") && usec > 0, "{got}");
    }

    #[test]
    fn bad_addresses_are_errors_not_panics() {
        assert!(notify_to(OsStr::new("relative/path"), "READY=1").is_err());
        assert!(notify_to(OsStr::new("/nonexistent/dir/sock"), "READY=1").is_err());
        assert_eq!(one_line("a\nb"), "a b");
    }
}

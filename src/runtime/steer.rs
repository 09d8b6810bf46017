//! Connection steering (layer 3): a classic BPF program on the SO_REUSEPORT group that picks the
//! listener for each new connection from the client's source address, so that every address
//! sharing a rate-limit key (an IPv4 /24, an IPv6 /48) lands on the same core and IP-keyed
//! buckets never need cross-core traffic. The hash itself lives in `ratelimit`
//! ([`steer_index_v4`], [`steer_index_v6`]); this file only encodes it as cBPF and attaches it.
//! It must not change how listeners are bound (that is `listener.rs`).
//!
//! The index a reuseport program returns selects the socket by its position in the kernel's
//! group, which is the order the sockets called `listen()` — `listener::bind_group` does that in
//! core order on one thread, so index `i` is core `i`. An index past the group size (e.g. after a
//! listener closed; the kernel then also moves the last socket into the freed slot) makes the
//! kernel fall back to its own 4-tuple hash, so steering degrades to "some core", never to a
//! refused connection.

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;

use libc::sock_filter;

use crate::ratelimit::STEER_MUL;
#[cfg(doc)]
use crate::ratelimit::{steer_index_v4, steer_index_v6};

/// `SO_ATTACH_REUSEPORT_CBPF` from `asm-generic/socket.h` (libc only exports it for Android).
/// The architectures listed in [`attach_ip_steering`]'s cfg use this generic value.
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// `SKF_NET_OFF`: loads relative to the network (IP) header. The program must use it because
/// the kernel runs reuseport programs with `skb->data` pulled past the TCP header.
const NET: u32 = libc::SKF_NET_OFF as u32;

fn op(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jeq(k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

/// The steering program for a group of `cores` sockets (1..=65536).
///
/// IPv4 packets: `A = ntohl(saddr) >> 8` (the /24). IPv6 packets (only with `ipv6`, which also
/// accepts IPv4 on a dual-stack socket): `A = (ntohl(saddr[0..4]) * M) ^ ntohs(saddr[4..6])`
/// (the /48). Then `A = ((A * M) >> 16) * cores >> 16`, all 32-bit, `M` = [`STEER_MUL`].
pub fn steering_program(cores: usize, ipv6: bool) -> io::Result<Vec<sock_filter>> {
    if !(1..=65_536).contains(&cores) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot steer over {cores} listeners (1..=65536)"),
        ));
    }
    use libc::{BPF_ABS, BPF_ALU, BPF_B, BPF_H, BPF_JA, BPF_JMP, BPF_K, BPF_LD, BPF_MISC};
    use libc::{BPF_MUL, BPF_RET, BPF_RSH, BPF_TAX, BPF_W, BPF_X, BPF_XOR};
    let v4_src = [
        op(BPF_LD | BPF_W | BPF_ABS, NET.wrapping_add(12)),
        op(BPF_ALU | BPF_RSH | BPF_K, 8),
    ];
    let tail = [
        op(BPF_ALU | BPF_MUL | BPF_K, STEER_MUL),
        op(BPF_ALU | BPF_RSH | BPF_K, 16),
        op(BPF_ALU | BPF_MUL | BPF_K, cores as u32),
        op(BPF_ALU | BPF_RSH | BPF_K, 16),
        op(BPF_RET | libc::BPF_A, 0),
    ];
    let mut prog = Vec::with_capacity(16);
    if ipv6 {
        prog.extend([
            op(BPF_LD | BPF_B | BPF_ABS, NET),
            op(BPF_ALU | BPF_RSH | BPF_K, 4),
            // IP version 6: skip the IPv4 source load (2 insns) and its jump (1).
            jeq(6, 3, 0),
        ]);
        prog.extend(v4_src);
        // Over the IPv6 source load (5 insns) to the common tail.
        prog.push(op(BPF_JMP | BPF_JA, 5));
        prog.extend([
            op(BPF_LD | BPF_W | BPF_ABS, NET.wrapping_add(8)),
            op(BPF_ALU | BPF_MUL | BPF_K, STEER_MUL),
            op(BPF_MISC | BPF_TAX, 0),
            op(BPF_LD | BPF_H | BPF_ABS, NET.wrapping_add(12)),
            op(BPF_ALU | BPF_XOR | BPF_X, 0),
        ]);
    } else {
        prog.extend(v4_src);
    }
    prog.extend(tail);
    Ok(prog)
}

/// Attaches the steering program to the SO_REUSEPORT group of `first_listener` (any member
/// works; the program is per group). Call it after every listener of the group is listening,
/// with `cores` = the group size. `ipv6`: the group listens on an IPv6 (dual-stack) address.
#[cfg(all(
    target_os = "linux",
    any(
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "arm",
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "powerpc64",
        target_arch = "s390x",
        target_arch = "loongarch64"
    )
))]
pub fn attach_ip_steering(
    first_listener: &TcpListener,
    cores: usize,
    ipv6: bool,
) -> io::Result<()> {
    let mut prog = steering_program(cores, ipv6)?;
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: the fd is a live socket borrowed from `first_listener` for the whole call;
    // `fprog` points at `prog`, which outlives the call, with its exact length; the kernel copies
    // the program during setsockopt and keeps no pointer into our memory.
    let rc = unsafe {
        libc::setsockopt(
            first_listener.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Unsupported here: connections keep the kernel's default 4-tuple hash.
#[cfg(not(all(
    target_os = "linux",
    any(
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "arm",
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "powerpc64",
        target_arch = "s390x",
        target_arch = "loongarch64"
    )
)))]
pub fn attach_ip_steering(
    first_listener: &TcpListener,
    cores: usize,
    ipv6: bool,
) -> io::Result<()> {
    let _ = (first_listener, steering_program(cores, ipv6)?);
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SO_ATTACH_REUSEPORT_CBPF is not available on this platform",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::{steer_index_v4, steer_index_v6};
    use crate::runtime::listener::bind_group;
    use socket2::{Domain, Socket, Type};
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    /// Runs the subset of cBPF the program uses over an IP header (`NET`-relative loads only).
    fn interpret(prog: &[sock_filter], ip_header: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let load = |k: u32, n: usize| -> u32 {
            let off = k.wrapping_sub(NET) as usize;
            ip_header[off..off + n]
                .iter()
                .fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
        };
        loop {
            let i = prog[pc];
            pc += 1;
            let code = u32::from(i.code);
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => a = load(i.k, 4),
                c if c == libc::BPF_LD | libc::BPF_H | libc::BPF_ABS => a = load(i.k, 2),
                c if c == libc::BPF_LD | libc::BPF_B | libc::BPF_ABS => a = load(i.k, 1),
                c if c == libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K => a >>= i.k,
                c if c == libc::BPF_ALU | libc::BPF_MUL | libc::BPF_K => a = a.wrapping_mul(i.k),
                c if c == libc::BPF_ALU | libc::BPF_XOR | libc::BPF_X => a ^= x,
                c if c == libc::BPF_MISC | libc::BPF_TAX => x = a,
                c if c == libc::BPF_JMP | libc::BPF_JA => pc += i.k as usize,
                c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => {
                    pc += usize::from(if a == i.k { i.jt } else { i.jf })
                }
                c if c == libc::BPF_RET | libc::BPF_A => return a,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn v4_header(src: Ipv4Addr) -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h[0] = 0x45;
        h[12..16].copy_from_slice(&src.octets());
        h
    }

    fn v6_header(src: Ipv6Addr) -> Vec<u8> {
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[8..24].copy_from_slice(&src.octets());
        h
    }

    #[test]
    fn program_computes_the_rust_hash() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for cores in [1usize, 2, 3, 4, 16, 65_536] {
            let v4only = steering_program(cores, false).unwrap();
            let dual = steering_program(cores, true).unwrap();
            for _ in 0..2000 {
                let v4 = Ipv4Addr::from(next() as u32);
                let want = steer_index_v4(v4, cores) as u32;
                assert_eq!(interpret(&v4only, &v4_header(v4)), want);
                assert_eq!(interpret(&dual, &v4_header(v4)), want);
                let v6 = Ipv6Addr::from((u128::from(next()) << 64) | u128::from(next()));
                let want = steer_index_v6(v6, cores) as u32;
                assert_eq!(interpret(&dual, &v6_header(v6)), want);
            }
        }
        assert!(steering_program(0, false).is_err());
        assert!(steering_program(65_537, true).is_err());
    }

    /// Connects once from `src` and returns the client's local address.
    fn connect_from(src: IpAddr, to: SocketAddr) -> std::io::Result<(Socket, SocketAddr)> {
        let s = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
        s.bind(&SocketAddr::new(src, 0).into())?;
        s.connect(&to.into())?;
        let local = s
            .local_addr()?
            .as_socket()
            .ok_or_else(|| std::io::Error::other("not an inet socket"))?;
        Ok((s, local))
    }

    /// Accepts until every client in `want` was seen; returns client address -> listener index.
    fn accept_all(group: &[TcpListener], want: usize) -> HashMap<SocketAddr, usize> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = HashMap::new();
        while seen.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "accepted {} of {want}", seen.len());
            let mut fds: Vec<libc::pollfd> = group
                .iter()
                .map(|l| libc::pollfd {
                    fd: l.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: `fds` is a live, correctly sized array of pollfd for the whole call.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, left.as_millis() as _) };
            assert!(rc >= 0, "poll: {}", std::io::Error::last_os_error());
            for (i, l) in group.iter().enumerate() {
                while let Ok((_stream, peer)) = l.accept() {
                    seen.insert(peer, i);
                }
            }
        }
        seen
    }

    fn check_group(listen: &str, cores: usize, ipv6: bool, sources: &[IpAddr]) -> Vec<usize> {
        let group = bind_group(listen.parse().unwrap(), cores).unwrap();
        attach_ip_steering(&group[0], cores, ipv6).unwrap();
        let port = group[0].local_addr().unwrap().port();
        let mut clients = Vec::new();
        for round in 0..4 {
            for src in sources {
                // IPv4 clients reach a dual-stack group through its IPv4 side.
                let to = match src {
                    IpAddr::V4(_) => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
                    IpAddr::V6(_) => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
                };
                let (sock, local) = connect_from(*src, to)
                    .unwrap_or_else(|e| panic!("round {round} from {src}: {e}"));
                clients.push((sock, local));
            }
        }
        let landed = accept_all(&group, clients.len());
        let mut used = Vec::new();
        for (_, local) in &clients {
            let peer_ip = match local.ip() {
                IpAddr::V4(v4) if ipv6 => IpAddr::V6(v4.to_ipv6_mapped()),
                ip => ip,
            };
            let key = SocketAddr::new(peer_ip, local.port());
            let got = *landed
                .get(&key)
                .unwrap_or_else(|| panic!("{key} not accepted"));
            let want = match local.ip() {
                IpAddr::V4(v4) => steer_index_v4(v4, cores),
                IpAddr::V6(v6) => steer_index_v6(v6, cores),
            };
            assert_eq!(
                got, want,
                "client {local} landed on listener {got}, not {want}"
            );
            used.push(got);
        }
        used.sort_unstable();
        used.dedup();
        used
    }

    fn v4_sources() -> Vec<IpAddr> {
        let mut s: Vec<IpAddr> = ["127.0.0.1", "127.0.0.2", "127.0.1.5"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        s.extend((2..12u8).map(|n| IpAddr::V4(Ipv4Addr::new(127, 0, n, 9))));
        s
    }

    #[test]
    fn ipv4_group_steers_by_slash_24() {
        let used = check_group("127.0.0.1:0", 4, false, &v4_sources());
        assert!(used.len() > 1, "every /24 landed on one listener: {used:?}");
    }

    #[test]
    fn dual_stack_group_steers_both_families() {
        let mut sources = v4_sources();
        sources.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
        let used = check_group("[::]:0", 2, true, &sources);
        assert_eq!(used, vec![0, 1]);
    }
}

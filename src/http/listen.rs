//! Binding a listen address so that the shipped `[::]:PORT` works in IPv4, IPv6-only and dual-stack clusters:
//! kubelet probes an IPv6-only pod on its IPv6 address, which `0.0.0.0` never accepts, and an IPv4 pod on its
//! IPv4 address, which an IPv6-only socket never accepts.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::TcpListener;

/// Pending connections the kernel holds while every worker is busy.
const BACKLOG: i32 = 1024;

/// Binds `addr`. The unspecified IPv6 address gets one dual-stack socket (`IPV6_V6ONLY` off, set explicitly:
/// the system default is a sysctl); where the host has no IPv6 it falls back to `0.0.0.0` on the same port,
/// with a log line naming `key`. Must be called inside the Tokio runtime.
pub fn bind(addr: SocketAddr, key: &str) -> io::Result<TcpListener> {
    match bind_exactly(addr) {
        Err(e) => match ipv4_fallback(addr, &e) {
            Some(v4) => {
                tracing::warn!(%addr, fallback = %v4, error = %e, key, "this host has no IPv6: listening on IPv4 only");
                bind_exactly(v4)
            }
            None => Err(e),
        },
        bound => bound,
    }
}

/// Where to listen instead of `addr` after `error`: `0.0.0.0:PORT` when `addr` is `[::]:PORT` and the error
/// says the host has no IPv6 (no address family, or IPv6 disabled), else nowhere — any other error (port
/// taken, no permission) must stop the program, not move it to another address.
pub fn ipv4_fallback(addr: SocketAddr, error: &io::Error) -> Option<SocketAddr> {
    let no_ipv6 = matches!(
        error.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT)
    );
    match addr {
        SocketAddr::V6(v6) if v6.ip().is_unspecified() && no_ipv6 => {
            Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port())))
        }
        _ => None,
    }
}

fn bind_exactly(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    // As std and Tokio do on Unix: a restarted process can bind while old connections are in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

//! Listener plumbing shared by both fakes: refusing connections at once, and listening again on the same port.

use std::net::{Shutdown, SocketAddr};

use tokio::net::TcpListener;

/// Takes the socket out of the LISTEN state now (Linux resets queued and refuses new connections), even while
/// its accept task still holds it; the task ends on its own signal and drops it.
pub(crate) fn stop_listening(listener: &TcpListener) {
    let _ = socket2::SockRef::from(listener).shutdown(Shutdown::Read);
}

/// Binds `addr` again after [`stop_listening`] (std sets SO_REUSEADDR, so a closed old socket is no obstacle).
pub(crate) fn rebind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

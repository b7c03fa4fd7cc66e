//! A TCP proxy between klutch-health and the API server, to make the network misbehave: a black hole
//! (connections stay open, nothing passes either way, as in a partition) and resets (every connection closed
//! with RST, new ones too). TLS passes through untouched.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forwards both ways.
    Pass,
    /// Accepts and keeps every connection, forwards nothing; open ones stall, and resume on `Pass`.
    BlackHole,
    /// Resets every open connection and each new one at once.
    Reset,
}

/// A proxy on a free loopback port to `upstream`. Stops (closing every connection) when dropped.
pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(ProxyMode::Pass);
        let task = tokio::spawn(accept(listener, upstream, mode.clone()));
        Ok(Proxy { addr, mode, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.mode.send_replace(ProxyMode::Reset);
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, mode: watch::Sender<ProxyMode>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(connection(client, upstream, mode.subscribe()));
    }
}

/// One client connection: held while black-holed, connected upstream once traffic may pass, then copied both
/// ways while the mode allows.
async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<ProxyMode>,
) {
    let Some(ProxyMode::Pass) = pass_or_reset(&mut mode).await else {
        return reset(&client);
    };
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return reset(&client);
    };
    let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        if pass_or_reset(&mut mode).await != Some(ProxyMode::Pass) {
            reset(&server);
            return reset(&client);
        }
        let copied = tokio::select! {
            r = client.read(&mut up) => match r {
                Ok(n) if n > 0 => server.write_all(&up[..n]).await.is_ok(),
                _ => false,
            },
            r = server.read(&mut down) => match r {
                Ok(n) if n > 0 => client.write_all(&down[..n]).await.is_ok(),
                _ => false,
            },
            _ = mode.changed() => true,
        };
        if !copied {
            return;
        }
    }
}

/// Waits while black-holed; `Pass` or `Reset` once one holds (`None`: the proxy is gone).
async fn pass_or_reset(mode: &mut watch::Receiver<ProxyMode>) -> Option<ProxyMode> {
    mode.wait_for(|m| *m != ProxyMode::BlackHole)
        .await
        .ok()
        .map(|m| *m)
}

/// Makes the coming close an RST rather than a FIN: the peer sees "connection reset".
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

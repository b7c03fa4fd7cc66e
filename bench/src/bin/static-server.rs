//! The physical limit for the probe benchmark: a minimal hyper server that answers every request with the
//! same bytes, status and Content-Type klutch-health would send, with no routing and no state.
//! Usage: static-server ADDR FILE [STATUS] [CONTENT-TYPE]
//! Prints `listening on ADDR` once bound (port 0: a free port of its own).
//! With `STATIC_TIMER=1` it also arms hyper's header read timeout, as klutch-health does against slowloris,
//! to measure what that defence costs per request.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(file)) = (args.get(1), args.get(2)) else {
        anyhow::bail!("usage: static-server ADDR FILE [STATUS] [CONTENT-TYPE]");
    };
    let body = Bytes::from(std::fs::read(file)?);
    let status = StatusCode::from_u16(args.get(3).map_or(Ok(200), |s| s.parse())?)?;
    let content_type = args
        .get(4)
        .cloned()
        .unwrap_or_else(|| "text/plain; charset=utf-8".into());
    let timer = std::env::var_os("STATIC_TIMER").is_some();
    let listener = TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (body, content_type) = (body.clone(), content_type.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_req| {
                let mut r = Response::new(Full::new(body.clone()));
                *r.status_mut() = status;
                r.headers_mut().insert(
                    "content-type",
                    content_type.parse().expect("valid content type"),
                );
                r.headers_mut()
                    .insert("cache-control", "no-store".parse().expect("valid"));
                async move { Ok::<_, Infallible>(r) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            if timer {
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(5));
            }
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

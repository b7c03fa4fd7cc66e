//! Freshness: how long from a change in the simulated control plane to `/readyz` answering it.
//! Flips a Provider's Healthy and a Deployment's Available through klutch-sim's control API, polls `/readyz`
//! until its status code follows, and prints p50/p99/max in milliseconds as JSON.
//! Usage: freshness HEALTH_ADDR CONTROL_ADDR FLIPS

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn request(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<u16> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let line = String::from_utf8_lossy(&raw);
    Ok(line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let health: SocketAddr = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(([127, 0, 0, 1], 8080).into());
    let control: SocketAddr = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(([127, 0, 0, 1], 9900).into());
    let flips: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(100);
    let changes = [
        (
            "/provider/provider-anynines/unhealthy",
            "/provider/provider-anynines/healthy",
        ),
        (
            "/deployment/bind/anynines-backend/unavailable",
            "/deployment/bind/anynines-backend/available",
        ),
    ];
    let mut samples = Vec::with_capacity(flips);
    for i in 0..flips {
        let (break_it, heal_it) = changes[i % changes.len()];
        for (path, expect) in [(break_it, 503), (heal_it, 200)] {
            let start = Instant::now();
            request(control, "POST", path).await?;
            loop {
                if request(health, "GET", "/readyz").await? == expect {
                    break;
                }
                anyhow::ensure!(
                    start.elapsed() < Duration::from_secs(10),
                    "/readyz did not follow {path}"
                );
            }
            samples.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{}",
        serde_json::json!({"changes": samples.len(), "p50_ms": percentile(&samples, 0.5),
                           "p99_ms": percentile(&samples, 0.99), "max_ms": samples.last()})
    );
    Ok(())
}

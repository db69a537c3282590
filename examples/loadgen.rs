//! Closed-loop HTTP load generator for the benchmark (`scripts/bench.sh`): N
//! keep-alive connections each loop reserve → unreserve of their own resources
//! for a fixed time, on loopback only. It speaks minimal HTTP/1.1 over raw TCP so
//! that the client costs as little CPU as possible next to the server on the same
//! machine. Prints requests/s, resources/s and latency percentiles. Not part of
//! the service.

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    addr: String,
    key: String,
    concurrency: usize,
    seconds: u64,
    batch: usize,
    /// Only reserve (unique names, no TTL), like redis-benchmark's raw run.
    reserve_only: bool,
    /// One requester for every connection (a token exchanged for a JWT may
    /// only act as its subject); by default each connection has its own.
    requester: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:8080".into(),
        key: String::new(),
        concurrency: 64,
        seconds: 10,
        batch: 1,
        reserve_only: false,
        requester: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--reserve-only" {
            a.reserve_only = true;
            continue;
        }
        let v = it.next().unwrap_or_default();
        match flag.as_str() {
            "--addr" => a.addr = v,
            "--key" => a.key = v,
            "--concurrency" => a.concurrency = v.parse().unwrap_or(64),
            "--seconds" => a.seconds = v.parse().unwrap_or(10).min(300),
            "--batch" => a.batch = v.parse().unwrap_or(1).clamp(1, 1000),
            "--requester" => a.requester = Some(v),
            _ => {}
        }
    }
    assert!(
        a.addr.starts_with("127.") || a.addr.starts_with("localhost"),
        "loopback only"
    );
    a
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Sends one POST and returns (status, body).
    async fn post(&mut self, path: &str, key: &str, body: &str) -> std::io::Result<(u16, Vec<u8>)> {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nX-Api-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(req.as_bytes()).await?;
        self.buf.clear();
        let mut chunk = [0u8; 16384];
        loop {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
            let Some(end) = find(&self.buf, b"\r\n\r\n") else {
                continue;
            };
            let head = std::str::from_utf8(&self.buf[..end]).unwrap_or("");
            let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while self.buf.len() < end + 4 + len {
                let n = self.stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
            return Ok((status, self.buf[end + 4..end + 4 + len].to_vec()));
        }
    }
}

/// Counts a failed request; returns the body of a 200, or `Err(())` when the
/// connection is gone and the worker must stop.
fn outcome(res: std::io::Result<(u16, Vec<u8>)>, errors: &mut u64) -> Result<Option<Vec<u8>>, ()> {
    match res {
        Ok((200, body)) => Ok(Some(body)),
        Ok(_) => {
            *errors += 1;
            Ok(None)
        }
        Err(_) => {
            *errors += 1;
            Err(())
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The release tokens of a reserve response, in order.
fn tokens(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    text.split("\"releaseToken\":\"")
        .skip(1)
        .filter_map(|s| s.split('"').next().map(str::to_string))
        .collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = args();
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for worker in 0..a.concurrency {
        let addr = a.addr.clone();
        let key = a.key.clone();
        let batch = a.batch;
        let reserve_only = a.reserve_only;
        let rq = a.requester.clone().unwrap_or_else(|| format!("w{worker}"));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let Ok(stream) = TcpStream::connect(&addr).await else {
                return (lat, 1);
            };
            let _ = stream.set_nodelay(true);
            let mut conn = Conn { stream, buf: Vec::new() };
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let names: Vec<String> = (0..batch).map(|i| format!("bench-{worker}-{n}-{i}")).collect();
                let body = format!(
                    "[{}]",
                    names
                        .iter()
                        .map(|r| format!("{{\"requester\":\"{rq}\",\"resource\":\"{r}\"}}"))
                        .collect::<Vec<_>>()
                        .join(",")
                );
                let t = Instant::now();
                let res = conn.post("/api/v1/Reservation/reserve", &key, &body).await;
                lat.push(t.elapsed());
                let toks = match outcome(res, &mut errors) {
                    Err(()) => break,
                    Ok(_) if reserve_only => continue,
                    Ok(Some(body)) => tokens(&body),
                    Ok(None) => continue,
                };
                let body = format!(
                    "[{}]",
                    names
                        .iter()
                        .zip(&toks)
                        .map(|(r, t)| format!(
                            "{{\"requester\":\"{rq}\",\"resource\":\"{r}\",\"releaseToken\":\"{t}\"}}"
                        ))
                        .collect::<Vec<_>>()
                        .join(",")
                );
                let t = Instant::now();
                let res = conn.post("/api/v1/Reservation/unreserve", &key, &body).await;
                lat.push(t.elapsed());
                if outcome(res, &mut errors).is_err() {
                    break;
                }
            }
            (lat, errors)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(a.seconds as f64);
    all.sort();
    let rps = all.len() as f64 / elapsed;
    println!(
        "requests={} errors={} seconds={:.1} requests_per_s={:.0} resources_per_s={:.0} p50_ms={:.2} p99_ms={:.2}",
        all.len(),
        errors,
        elapsed,
        rps,
        rps * a.batch as f64,
        percentile(&all, 0.50),
        percentile(&all, 0.99)
    );
}

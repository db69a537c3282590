//! Event-stream benchmark (`scripts/bench.sh`): N SSE clients on one instance,
//! one writer reserving (and releasing) a resource at a steady rate, and the
//! delivery latency of each `RESERVED` event to every client, measured from the
//! reserve response (and from the request). Also the instance's resident memory
//! per connected client. Loopback only, bounded in time. Not part of the service.

use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    addr: String,
    key: String,
    clients: usize,
    rate: u64,
    seconds: u64,
    pid: u32,
}

fn args() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:8080".into(),
        key: String::new(),
        clients: 1000,
        rate: 20,
        seconds: 10,
        pid: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_default();
        match flag.as_str() {
            "--addr" => a.addr = v,
            "--key" => a.key = v,
            "--clients" => a.clients = v.parse().unwrap_or(1000).clamp(1, 20_000),
            "--rate" => a.rate = v.parse().unwrap_or(20).clamp(1, 1000),
            "--seconds" => a.seconds = v.parse().unwrap_or(10).clamp(1, 120),
            "--pid" => a.pid = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    assert!(a.addr.starts_with("127."), "loopback only");
    a
}

/// Resident memory of a process in KiB (0 when unknown).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Opens one stream; returns once the response head has arrived.
async fn open(addr: &str, key: &str) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!(
        "GET /api/v1/events?types=RESERVED HTTP/1.1\r\nHost: bench\r\nX-Api-Key: {key}\r\nAccept: text/event-stream\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 200") {
                return Err(std::io::Error::other(
                    String::from_utf8_lossy(&buf[..end]).into_owned(),
                ));
            }
            return Ok((s, buf[end + 4..].to_vec()));
        }
    }
}

/// Reads a stream until `until`, recording when each `sse-<n>` event arrived.
async fn listen(mut s: TcpStream, mut buf: Vec<u8>, until: Instant) -> Vec<(u32, Instant)> {
    const MARK: &[u8] = b"\"resource\":\"sse-";
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 16384];
    loop {
        // Whole frames only; keep the tail for the next read.
        while let Some(end) = find(&buf, b"\n\n") {
            if let Some(at) = find(&buf[..end], MARK) {
                let digits: Vec<u8> = buf[at + MARK.len()..end]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .copied()
                    .collect();
                if let Some(n) = std::str::from_utf8(&digits)
                    .ok()
                    .and_then(|d| d.parse().ok())
                {
                    got.push((n, Instant::now()));
                }
            }
            buf.drain(..end + 2);
        }
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return got,
        }
    }
}

async fn post(s: &mut TcpStream, path: &str, key: &str, body: &str) -> std::io::Result<Vec<u8>> {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nX-Api-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(buf[end + 4..end + 4 + len].to_vec());
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = args();
    let rss_before = rss_kib(a.pid);

    // Connect every client (a few hundred at a time).
    let mut conns = Vec::with_capacity(a.clients);
    let mut failed = 0;
    for wave in (0..a.clients).collect::<Vec<_>>().chunks(250) {
        let opened =
            futures_util::future::join_all(wave.iter().map(|_| open(&a.addr, &a.key))).await;
        for c in opened {
            match c {
                Ok(c) => conns.push(c),
                Err(e) => {
                    if failed == 0 {
                        eprintln!("stream refused: {e}");
                    }
                    failed += 1;
                }
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_connected = rss_kib(a.pid);

    let total = a.seconds * a.rate;
    let until = Instant::now() + Duration::from_secs(a.seconds + 3);
    let listeners: Vec<_> = conns
        .into_iter()
        .map(|(s, buf)| tokio::spawn(listen(s, buf, until)))
        .collect();

    // The writer: one reserve (and release) every 1/rate s.
    let mut sent: HashMap<u32, (Instant, Instant)> = HashMap::new();
    let mut w = TcpStream::connect(&a.addr).await.expect("writer connects");
    let _ = w.set_nodelay(true);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / a.rate));
    let mut rss_peak = rss_connected;
    for n in 0..total as u32 {
        tick.tick().await;
        let body = format!("[{{\"requester\":\"bench\",\"resource\":\"sse-{n}\"}}]");
        let t0 = Instant::now();
        let Ok(reply) = post(&mut w, "/api/v1/Reservation/reserve", &a.key, &body).await else {
            eprintln!("writer failed");
            break;
        };
        sent.insert(n, (t0, Instant::now()));
        let text = String::from_utf8_lossy(&reply);
        if let Some(tok) = text
            .split("\"releaseToken\":\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
        {
            let body = format!(
                "[{{\"requester\":\"bench\",\"resource\":\"sse-{n}\",\"releaseToken\":\"{tok}\"}}]"
            );
            let _ = post(&mut w, "/api/v1/Reservation/unreserve", &a.key, &body).await;
        }
        if n % a.rate as u32 == 0 {
            rss_peak = rss_peak.max(rss_kib(a.pid));
        }
    }

    let mut from_response = Vec::new();
    let mut from_request = Vec::new();
    let mut early = 0u64;
    for l in listeners {
        for (n, at) in l.await.unwrap_or_default() {
            if let Some((t0, t1)) = sent.get(&n) {
                from_request.push(at.saturating_duration_since(*t0).as_secs_f64() * 1000.0);
                if at < *t1 {
                    early += 1;
                }
                from_response.push(at.saturating_duration_since(*t1).as_secs_f64() * 1000.0);
            }
        }
    }
    from_response.sort_by(f64::total_cmp);
    from_request.sort_by(f64::total_cmp);
    let connected = a.clients - failed;
    let expected = sent.len() as u64 * connected as u64;
    println!(
        "clients={connected} refused={failed} events={} deliveries={} missing={} \
         p50_ms_from_response={:.2} p99_ms_from_response={:.2} \
         p50_ms_from_request={:.2} p99_ms_from_request={:.2} before_response={early} \
         rss_idle_mib={:.1} rss_connected_mib={:.1} rss_peak_mib={:.1} kib_per_client={:.1}",
        sent.len(),
        from_response.len(),
        expected.saturating_sub(from_response.len() as u64),
        pct(&from_response, 0.5),
        pct(&from_response, 0.99),
        pct(&from_request, 0.5),
        pct(&from_request, 0.99),
        rss_before as f64 / 1024.0,
        rss_connected as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
        (rss_connected.saturating_sub(rss_before)) as f64 / connected.max(1) as f64,
    );
}

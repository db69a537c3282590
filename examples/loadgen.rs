//! Load generator for the benchmark (`scripts/bench.sh`), on loopback only,
//! bounded in time and count. It speaks minimal HTTP/1.1 over raw TCP so that
//! the client costs as little CPU as possible next to the server on the same
//! machine. Not part of the service. Modes:
//!
//! - default: N keep-alive connections each loop, for `--seconds`, reserve →
//!   unreserve of their own unique resources (`--reserve-only`: reserve only;
//!   `--ttl S`: with `ttlSeconds`). Prints requests/s, resources/s, pairs/s and
//!   latency percentiles per request and per reserve+unreserve pair.
//! - `--fill N --prefix P`: reserves exactly N deterministic names
//!   `P/BBB/IIII` (batch number, item number in the batch) in batches of
//!   `--batch`, over `--concurrency` connections (`--unreserve`: releases each
//!   batch right after reserving it). Stops early only at `--seconds`. A batch
//!   answered 503 or 429 is sent again (up to 8 times, 250 ms apart; counted
//!   as `retried`); after a retry an item `ALREADY_HELD` counts as reserved
//!   (the fill's names are its own: an earlier attempt reserved it), and so
//!   does `NOT_HELD` after a retried unreserve.
//! - `--etcd`: the same closed loop as the default, against etcd's v3 JSON
//!   gateway: one lease per connection (granted once, reused), then
//!   `/v3/lock/lock` → `/v3/lock/unlock` on unique names.
//! - `--create-tenants N --admin-token T`: creates N tenants through the admin
//!   API over keep-alive connections.
//!
//! Every mode counts answers other than the expected status (`non_200`),
//! broken connections (`io_errors`) and items a 200 did not grant
//! (`item_failures`: not `RESERVED`, not `UNRESERVED`, or a lock without a key),
//! and prints them; a run with any of them is not a clean figure.

use base64::Engine;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone)]
struct Args {
    addr: String,
    key: String,
    concurrency: usize,
    seconds: u64,
    batch: usize,
    /// Only reserve (unique names), like redis-benchmark's raw run.
    reserve_only: bool,
    /// `ttlSeconds` of every reserved item; none by default.
    ttl: Option<u64>,
    /// One requester for every connection (a token exchanged for a JWT may
    /// only act as its subject); by default each connection has its own.
    requester: Option<String>,
    fill: Option<u64>,
    prefix: String,
    unreserve: bool,
    etcd: bool,
    create_tenants: Option<u64>,
    admin_token: String,
}

fn args() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:8080".into(),
        key: String::new(),
        concurrency: 64,
        seconds: 10,
        batch: 1,
        reserve_only: false,
        ttl: None,
        requester: None,
        fill: None,
        prefix: "fill".into(),
        unreserve: false,
        etcd: false,
        create_tenants: None,
        admin_token: String::new(),
    };
    let mut seconds = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--reserve-only" => a.reserve_only = true,
            "--unreserve" => a.unreserve = true,
            "--etcd" => a.etcd = true,
            _ => {
                let v = it.next().unwrap_or_default();
                match flag.as_str() {
                    "--addr" => a.addr = v,
                    "--key" => a.key = v,
                    "--concurrency" => a.concurrency = v.parse().unwrap_or(64).clamp(1, 1024),
                    "--seconds" => seconds = v.parse::<u64>().ok(),
                    "--batch" => a.batch = v.parse().unwrap_or(1).clamp(1, 1000),
                    "--ttl" => a.ttl = v.parse().ok().filter(|&s| s > 0),
                    "--requester" => a.requester = Some(v),
                    "--fill" => a.fill = v.parse().ok(),
                    "--prefix" => a.prefix = v,
                    "--create-tenants" => a.create_tenants = v.parse().ok(),
                    "--admin-token" => a.admin_token = v,
                    other => panic!("unknown flag {other}"),
                }
            }
        }
    }
    // Timed runs default to 10 s; counted runs (fill, tenants) to a 600 s cap.
    let counted = a.fill.is_some() || a.create_tenants.is_some();
    a.seconds = seconds
        .unwrap_or(if counted { 600 } else { 10 })
        .clamp(1, 1800);
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
    async fn open(addr: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        Ok(Self {
            stream,
            buf: Vec::new(),
        })
    }

    /// Sends one POST (`headers`: extra header lines, each ending in CRLF) and
    /// returns (status, body). Understands `Content-Length` and chunked bodies.
    async fn post(
        &mut self,
        path: &str,
        headers: &str,
        body: &str,
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(req.as_bytes()).await?;
        self.buf.clear();
        let end = loop {
            self.fill_more().await?;
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end;
            }
        };
        let head = std::str::from_utf8(&self.buf[..end])
            .unwrap_or("")
            .to_string();
        let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            while find(&self.buf[end + 4..], b"0\r\n\r\n").is_none() {
                self.fill_more().await?;
            }
            return Ok((status, dechunk(&self.buf[end + 4..])));
        }
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while self.buf.len() < end + 4 + len {
            self.fill_more().await?;
        }
        Ok((status, self.buf[end + 4..end + 4 + len].to_vec()))
    }

    async fn fill_more(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// Decodes a complete chunked body (extensions and trailers ignored).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(raw, b"\r\n") {
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || raw.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[(eol + 4 + size).min(raw.len())..];
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| w == &needle).count()
}

/// The values of every `"field":"..."` of a JSON body, in order.
fn strings(body: &[u8], field: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    text.split(&format!("\"{field}\":\""))
        .skip(1)
        .filter_map(|s| s.split('"').next().map(str::to_string))
        .collect()
}

/// The (resource, release token) of every item a reserve answer granted, in
/// order; an item without a token (e.g. `ALREADY_HELD`) is left out.
fn granted(body: &[u8]) -> (Vec<String>, Vec<String>) {
    let text = String::from_utf8_lossy(body);
    text.split("\"resource\":\"")
        .skip(1)
        .filter_map(|item| {
            let name = item.split('"').next()?;
            let token = item
                .split("\"releaseToken\":\"")
                .nth(1)?
                .split('"')
                .next()?;
            Some((name.to_string(), token.to_string()))
        })
        .unzip()
}

/// What one worker saw.
#[derive(Default)]
struct Stats {
    /// Latency of every request answered (whatever its status).
    lat: Vec<Duration>,
    /// Latency of every complete pair (reserve+unreserve, lock+unlock).
    pairs: Vec<Duration>,
    non_200: u64,
    io_errors: u64,
    item_failures: u64,
    items_ok: u64,
    /// Requests answered 503 or 429 and sent again (fills only).
    retried: u64,
    /// The first unexpected answer, to show what went wrong.
    sample: Option<String>,
}

impl Stats {
    /// Checks one answer: the body of an expected status, `Ok(None)` for another
    /// status, `Err(())` when the connection is gone and the worker must stop.
    fn check(
        &mut self,
        res: std::io::Result<(u16, Vec<u8>)>,
        want: u16,
        t: Instant,
    ) -> Result<Option<Vec<u8>>, ()> {
        match res {
            Ok((status, body)) => {
                self.lat.push(t.elapsed());
                if status == want {
                    return Ok(Some(body));
                }
                self.non_200 += 1;
                self.sample.get_or_insert_with(|| {
                    format!(
                        "{status} {}",
                        String::from_utf8_lossy(&body)
                            .chars()
                            .take(200)
                            .collect::<String>()
                    )
                });
                Ok(None)
            }
            Err(e) => {
                self.io_errors += 1;
                self.sample.get_or_insert_with(|| format!("io: {e}"));
                Err(())
            }
        }
    }

    /// Counts the items of a 200 that have one of `statuses`, out of `n`.
    fn items(&mut self, body: &[u8], statuses: &[&str], n: usize) -> usize {
        let ok = statuses
            .iter()
            .map(|s| count(body, format!("\"status\":\"{s}\"").as_bytes()))
            .sum::<usize>()
            .min(n);
        self.items_ok += ok as u64;
        self.item_failures += (n - ok) as u64;
        if ok < n {
            self.sample.get_or_insert_with(|| {
                format!(
                    "200 {}",
                    String::from_utf8_lossy(body)
                        .chars()
                        .take(200)
                        .collect::<String>()
                )
            });
        }
        ok
    }

    fn merge(&mut self, o: Stats) {
        self.lat.extend(o.lat);
        self.pairs.extend(o.pairs);
        self.non_200 += o.non_200;
        self.io_errors += o.io_errors;
        self.item_failures += o.item_failures;
        self.items_ok += o.items_ok;
        self.retried += o.retried;
        if self.sample.is_none() {
            self.sample = o.sample;
        }
    }

    /// `errors=... non_200=... io_errors=... item_failures=...` and, when any,
    /// a last `first_error=` field (quoted, to stderr as well).
    fn errors(&self) -> String {
        let mut s = format!(
            "errors={} non_200={} io_errors={} item_failures={}",
            self.non_200 + self.io_errors,
            self.non_200,
            self.io_errors,
            self.item_failures
        );
        if self.retried > 0 {
            s.push_str(&format!(" retried={}", self.retried));
        }
        if let Some(e) = &self.sample {
            eprintln!("loadgen: first unexpected answer: {e}");
        }
        if self.non_200 + self.io_errors + self.item_failures > 0 {
            s.push_str(" ERRORS_SEEN=1");
        }
        s
    }
}

fn reserve_body(rq: &str, names: &[String], ttl: Option<u64>) -> String {
    let ttl = ttl
        .map(|s| format!(",\"ttlSeconds\":{s}"))
        .unwrap_or_default();
    let items: Vec<String> = names
        .iter()
        .map(|r| format!("{{\"requester\":\"{rq}\",\"resource\":\"{r}\"{ttl}}}"))
        .collect();
    format!("[{}]", items.join(","))
}

fn unreserve_body(rq: &str, names: &[String], tokens: &[String]) -> String {
    let items: Vec<String> = names
        .iter()
        .zip(tokens)
        .map(|(r, t)| {
            format!("{{\"requester\":\"{rq}\",\"resource\":\"{r}\",\"releaseToken\":\"{t}\"}}")
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// One reserve (→ unreserve) round through cooplocker; `Err` when the
/// connection is gone.
async fn cooplocker_round(
    conn: &mut Conn,
    st: &mut Stats,
    a: &Args,
    rq: &str,
    names: &[String],
    release: bool,
    retries: u32,
) -> Result<(), ()> {
    let headers = format!("X-Api-Key: {}\r\n", a.key);
    let mut attempt = 0;
    let (t, body) = loop {
        let t = Instant::now();
        let res = conn
            .post(
                "/api/v1/Reservation/reserve",
                &headers,
                &reserve_body(rq, names, a.ttl),
            )
            .await;
        if matches!(res, Ok((503 | 429, _))) && attempt < retries {
            attempt += 1;
            st.retried += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        match st.check(res, 200, t)? {
            Some(body) => break (t, body),
            None => return Ok(()),
        }
    };
    // After a retry, an item ALREADY_HELD was granted by an earlier attempt
    // (a fill's names are its own): live, but without a release token.
    let statuses: &[&str] = if attempt == 0 {
        &["RESERVED"]
    } else {
        &["RESERVED", "ALREADY_HELD"]
    };
    st.items(&body, statuses, names.len());
    if !release {
        return Ok(());
    }
    let (held, tokens) = granted(&body);
    if attempt > 0 {
        st.item_failures += names.len().saturating_sub(held.len()) as u64;
    }
    let mut attempt = 0;
    loop {
        let t2 = Instant::now();
        let res = conn
            .post(
                "/api/v1/Reservation/unreserve",
                &headers,
                &unreserve_body(rq, &held, &tokens),
            )
            .await;
        if matches!(res, Ok((503 | 429, _))) && attempt < retries {
            attempt += 1;
            st.retried += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        // After a retry, NOT_HELD: an earlier attempt released it.
        let statuses: &[&str] = if attempt == 0 {
            &["UNRESERVED"]
        } else {
            &["UNRESERVED", "NOT_HELD"]
        };
        if let Some(body) = st.check(res, 200, t2)? {
            if st.items(&body, statuses, held.len()) == names.len() {
                st.pairs.push(t.elapsed());
            }
        }
        return Ok(());
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Closed loop through etcd's v3 gateway: lock → unlock, one lease per connection.
async fn etcd_worker(a: Args, worker: usize, deadline: Instant) -> Stats {
    let mut st = Stats::default();
    let Ok(mut conn) = Conn::open(&a.addr).await else {
        st.io_errors += 1;
        return st;
    };
    let ttl = a.seconds + 60;
    let t = Instant::now();
    let res = conn
        .post("/v3/lease/grant", "", &format!("{{\"TTL\":{ttl}}}"))
        .await;
    let lease = match st.check(res, 200, t) {
        Ok(Some(body)) => strings(&body, "ID").into_iter().next(),
        _ => None,
    };
    st.lat.clear(); // the grant is not part of the measured loop
    let Some(lease) = lease else {
        st.item_failures += 1;
        st.sample
            .get_or_insert_with(|| "lease grant gave no ID".into());
        return st;
    };
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let name = b64(&format!("bench/w{worker}/{n}"));
        let t = Instant::now();
        let res = conn
            .post(
                "/v3/lock/lock",
                "",
                &format!("{{\"name\":\"{name}\",\"lease\":\"{lease}\"}}"),
            )
            .await;
        let Ok(got) = st.check(res, 200, t) else {
            break;
        };
        let Some(body) = got else { continue };
        let Some(key) = strings(&body, "key")
            .into_iter()
            .next()
            .filter(|k| !k.is_empty())
        else {
            st.item_failures += 1;
            st.sample.get_or_insert_with(|| {
                format!("lock without a key: {}", String::from_utf8_lossy(&body))
            });
            continue;
        };
        st.items_ok += 1;
        let t2 = Instant::now();
        let res = conn
            .post("/v3/lock/unlock", "", &format!("{{\"key\":\"{key}\"}}"))
            .await;
        match st.check(res, 200, t2) {
            Err(()) => break,
            Ok(Some(_)) => st.pairs.push(t.elapsed()),
            Ok(None) => {}
        }
    }
    st
}

async fn timed(a: Args) {
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..a.concurrency {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            if a.etcd {
                return etcd_worker(a, worker, deadline).await;
            }
            let mut st = Stats::default();
            let rq = a.requester.clone().unwrap_or_else(|| format!("w{worker}"));
            let Ok(mut conn) = Conn::open(&a.addr).await else {
                st.io_errors += 1;
                return st;
            };
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let names: Vec<String> = (0..a.batch)
                    .map(|i| format!("bench-{worker}-{n}-{i}"))
                    .collect();
                if cooplocker_round(&mut conn, &mut st, &a, &rq, &names, !a.reserve_only, 0)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            st
        }));
    }
    let mut all = Stats::default();
    for t in tasks {
        if let Ok(st) = t.await {
            all.merge(st);
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(a.seconds as f64);
    all.lat.sort();
    all.pairs.sort();
    let rps = all.lat.len() as f64 / elapsed;
    let pair_figures = if a.reserve_only {
        String::new()
    } else {
        format!(
            " pairs={} pairs_per_s={:.0} pair_p50_ms={:.2} pair_p99_ms={:.2}",
            all.pairs.len(),
            all.pairs.len() as f64 / elapsed,
            percentile(&all.pairs, 0.50),
            percentile(&all.pairs, 0.99)
        )
    };
    println!(
        "requests={} {} seconds={:.1} requests_per_s={:.0} resources_per_s={:.0} items_ok_per_s={:.0} p50_ms={:.2} p99_ms={:.2}{pair_figures}",
        all.lat.len(),
        all.errors(),
        elapsed,
        rps,
        rps * a.batch as f64,
        all.items_ok as f64 / elapsed,
        percentile(&all.lat, 0.50),
        percentile(&all.lat, 0.99),
    );
}

/// A fill batch answered 503 (store timeout) or 429 is sent again, up to this
/// many times, 250 ms apart: a fill sets a figure up, it is not measured.
const FILL_RETRIES: u32 = 8;

fn digits(n: u64) -> usize {
    n.max(1).ilog10() as usize + 1
}

async fn fill(a: Args, total: u64) {
    let batch = a.batch as u64;
    let batches = total.div_ceil(batch);
    let bw = digits(batches.saturating_sub(1)).max(3);
    let iw = digits(batch - 1).max(4);
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency.min(batches.max(1) as usize) {
        let (a, next) = (a.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut st = Stats::default();
            let rq = a.requester.clone().unwrap_or_else(|| "filler".into());
            let Ok(mut conn) = Conn::open(&a.addr).await else {
                st.io_errors += 1;
                return st;
            };
            while Instant::now() < deadline {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    break;
                }
                let n = batch.min(total - b * batch);
                let names: Vec<String> = (0..n)
                    .map(|i| format!("{}/{b:0bw$}/{i:0iw$}", a.prefix))
                    .collect();
                if cooplocker_round(
                    &mut conn,
                    &mut st,
                    &a,
                    &rq,
                    &names,
                    a.unreserve,
                    FILL_RETRIES,
                )
                .await
                .is_err()
                {
                    break;
                }
            }
            st
        }));
    }
    let mut all = Stats::default();
    for t in tasks {
        if let Ok(st) = t.await {
            all.merge(st);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let done = next.load(Ordering::Relaxed).min(batches);
    // items_ok counts RESERVED (and, with --unreserve, UNRESERVED) items.
    let per_item = if a.unreserve { 2 } else { 1 };
    println!(
        "items={total} batches={batches} batches_sent={done} complete={} items_ok={} {} seconds={elapsed:.1} items_per_s={:.0}",
        done == batches && all.items_ok == total * per_item,
        all.items_ok / per_item,
        all.errors(),
        (all.items_ok / per_item) as f64 / elapsed.max(1e-9),
    );
}

async fn create_tenants(a: Args, total: u64) {
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency.min(total.max(1) as usize) {
        let (a, next) = (a.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut st = Stats::default();
            let headers = format!("Authorization: Bearer {}\r\n", a.admin_token);
            let Ok(mut conn) = Conn::open(&a.addr).await else {
                st.io_errors += 1;
                return st;
            };
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                let res = conn
                    .post(
                        "/api/v1/admin/tenants",
                        &headers,
                        &format!("{{\"name\":\"idle-{i}\",\"tier\":\"free\"}}"),
                    )
                    .await;
                match st.check(res, 201, t) {
                    Err(()) => break,
                    Ok(Some(_)) => st.items_ok += 1,
                    Ok(None) => {}
                }
            }
            st
        }));
    }
    let mut all = Stats::default();
    for t in tasks {
        if let Ok(st) = t.await {
            all.merge(st);
        }
    }
    println!(
        "tenants={total} created={} {} seconds={:.1}",
        all.items_ok,
        all.errors(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = args();
    if let Some(n) = a.create_tenants {
        create_tenants(a, n).await;
    } else if let Some(n) = a.fill {
        fill(a, n).await;
    } else {
        timed(a).await;
    }
}

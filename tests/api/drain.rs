//! A graceful stop behind the project's own load balancer (`deploy/nginx.conf`,
//! run by the real nginx): three processes of the binary on one Redis, eight
//! writers through nginx, SIGTERM one instance mid-traffic. No request may be
//! lost: no 502 (nginx never retries a POST it has sent), and every write the
//! service confirmed is held afterwards. The deployment shape under a rolling
//! restart (each instance SIGTERMed, restarted, ready, in turn, with writers
//! and an event stream through nginx: no write failed, no event lost or
//! repeated) and under a SIGKILL (only requests in flight fail, and retries
//! with their Idempotency-Key leave no grant a client does not know of).

use crate::helpers::{create_tenant, free_port, signal, RedisServer, ADMIN_TOKEN};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NGINX: &str = "/usr/sbin/nginx";

fn nginx_binary() -> &'static str {
    assert!(
        Path::new(NGINX).exists(),
        "nginx is not installed ({NGINX} is missing): this test runs the project's \
         deploy/nginx.conf in front of real instances. Run the README's test command \
         (bash scripts/test.sh), which installs nginx-light, or `apt-get install nginx-light`."
    );
    NGINX
}

struct Instance {
    port: u16,
    child: Option<Child>,
    redis_url: String,
}

impl Instance {
    fn start(redis_url: &str) -> Self {
        let mut i = Self {
            port: free_port(),
            child: None,
            redis_url: redis_url.to_string(),
        };
        i.spawn();
        i
    }

    fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_cooplocker"))
            .env("REDIS_URL", &self.redis_url)
            .env("COOPLOCKER_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("COOPLOCKER_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("COOPLOCKER_RATE_LIMITS", "enterprise=1000000")
            .env("COOPLOCKER_WORKERS", "2")
            .env("COOPLOCKER_SHUTDOWN_TIMEOUT", "10")
            .env("COOPLOCKER_TRUSTED_PROXIES", "1")
            .env("RUST_LOG", "warn")
            .env_remove("COOPLOCKER_TOKEN_SECRET")
            .stdout(Stdio::null())
            .spawn()
            .expect("start an instance");
        self.child = Some(child);
    }

    async fn wait_ready(&self, client: &reqwest::Client) {
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        let up = crate::helpers::eventually(Duration::from_secs(15), || async {
            client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(up.is_some(), "instance on {} did not get ready", self.port);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// nginx with `deploy/nginx.conf`, its upstreams pointed at `ports`, under a
/// temporary prefix, in the foreground.
struct Nginx {
    port: u16,
    child: Child,
    prefix: PathBuf,
}

impl Nginx {
    fn start(ports: &[u16]) -> Self {
        let binary = nginx_binary();
        let port = free_port();
        let prefix =
            std::env::temp_dir().join(format!("cooplocker-nginx-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&prefix);
        std::fs::create_dir_all(prefix.join("logs")).expect("nginx prefix");
        let p = prefix.to_string_lossy().into_owned();
        let deploy =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf"))
                .expect("deploy/nginx.conf");
        let mut conf = String::new();
        conf.push_str(&format!(
            "daemon off;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\n"
        ));
        for line in deploy.lines() {
            let t = line.trim_start();
            let line = if let Some(rest) = t.strip_prefix("server cooplocker-") {
                // "server cooplocker-N:8080 <params>;" → a test instance.
                let n: usize = rest[..1].parse().expect("upstream number");
                let params = rest.split_once(' ').map_or(";", |(_, p)| p);
                format!("    server 127.0.0.1:{} {params}", ports[n - 1])
            } else if t.starts_with("listen 8080;") {
                format!(
                    "    listen 127.0.0.1:{port};\n    access_log off;\n    client_body_temp_path {p}/body;\n    proxy_temp_path {p}/proxy;"
                )
            } else if t.starts_with("worker_processes") {
                "worker_processes 2;".to_string()
            } else {
                line.to_string()
            };
            conf.push_str(&line);
            conf.push('\n');
        }
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = Command::new(binary)
            .args([
                "-p",
                &p,
                "-c",
                &conf_path.to_string_lossy(),
                "-e",
                &format!("{p}/logs/error.log"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        Self {
            port,
            child,
            prefix,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_behind_nginx_loses_no_write() {
    // Arrange: Redis, three instances, nginx in front, a tenant.
    let redis = RedisServer::start();
    let mut instances: Vec<Instance> = (0..3).map(|_| Instance::start(&redis.url())).collect();
    let client = crate::helpers::client();
    for i in &instances {
        i.wait_ready(&client).await;
    }
    let ports: Vec<u16> = instances.iter().map(|i| i.port).collect();
    let nginx = Nginx::start(&ports);
    let base = nginx.base();
    let up = crate::helpers::eventually(Duration::from_secs(10), || async {
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(up.is_some(), "nginx answers:\n{}", nginx.error_log());
    let (_, key) = create_tenant(&client, &base, "drain-nginx", "enterprise").await;

    // Three rounds, each stopping another instance while eight writers run.
    let mut confirmed = Vec::new();
    let mut statuses: std::collections::BTreeMap<u16, usize> = Default::default();
    for (round, victim) in instances.iter_mut().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..8 {
            let (client, base, key, stop) =
                (client.clone(), base.clone(), key.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let mut held = Vec::new();
                let mut seen = Vec::new();
                for i in 0..100_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let name = format!("r{round}-w{w}-{i}");
                    let res = client
                        .post(format!("{base}/api/v1/Reservation/reserve"))
                        .header("X-Api-Key", &key)
                        .json(&json!([{"requester": "d", "resource": name}]))
                        .send()
                        .await;
                    let Ok(res) = res else {
                        seen.push(0);
                        continue;
                    };
                    let status = res.status().as_u16();
                    let body: Value = res.json().await.unwrap_or(Value::Null);
                    seen.push(status);
                    if body["results"][0]["status"] == "RESERVED" {
                        held.push(name);
                    }
                }
                (held, seen)
            }));
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        // Act: SIGTERM one instance mid-traffic.
        let pid = victim.child.as_ref().map(Child::id).expect("running");
        assert!(signal(pid, "TERM"), "SIGTERM");
        let sent = Instant::now();
        let exited = loop {
            if let Some(status) = victim
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                break status;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(12),
                "exits within the shutdown bound"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(exited.success(), "exit status {exited:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            let (held, seen) = w.await.expect("writer");
            confirmed.extend(held);
            for s in seen {
                *statuses.entry(s).or_default() += 1;
            }
        }
        // The stopped instance comes back for the next round.
        victim.child = None;
        victim.spawn();
        victim.wait_ready(&client).await;
    }

    // Assert: no 502 (or other failure), and every confirmed write is held.
    let failed: usize = statuses
        .iter()
        .filter(|(s, _)| **s != 200)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        failed,
        0,
        "answers by status: {statuses:?}\nnginx error log:\n{}",
        nginx.error_log()
    );
    assert!(confirmed.len() > 300, "traffic ran: {statuses:?}");
    for chunk in confirmed.chunks(1000) {
        let items: Vec<Value> = chunk.iter().map(|r| json!({"resource": r})).collect();
        let res = client
            .post(format!("{base}/api/v1/Reservation/check"))
            .header("X-Api-Key", &key)
            .json(&items)
            .send()
            .await
            .expect("check");
        let body: Value = res.json().await.expect("check json");
        let results = body["results"].as_array().expect("results");
        assert_eq!(results.len(), chunk.len());
        for (name, r) in chunk.iter().zip(results) {
            assert_eq!(
                r["status"], "HELD",
                "confirmed write {name} is not held: {r}"
            );
        }
    }
    eprintln!(
        "{} writes confirmed and held; answers by status: {statuses:?}",
        confirmed.len()
    );
}

/// Reads one HTTP response head (and a `Content-Length` body) from `s`.
fn read_response(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => out.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&out).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let _ = s.read_exact(&mut body);
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_draining_idle_connections_get_one_more_answer_with_connection_close() {
    use std::io::{Read, Write};
    // Arrange: an instance (a real process) and two keep-alive connections
    // that have each had one answer.
    let redis = RedisServer::start();
    let mut instance = Instance::start(&redis.url());
    let client = crate::helpers::client();
    instance.wait_ready(&client).await;
    let port = instance.port;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let open = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(request).expect("send");
        let head = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        s
    };
    let (mut busy, mut idle) = (open(), open());

    // Act: SIGTERM; a moment later the next request arrives on one of them.
    let pid = instance.child.as_ref().map(Child::id).expect("running");
    assert!(signal(pid, "TERM"), "SIGTERM");
    let sent = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (head, busy_closed, idle_closed_after) = tokio::task::spawn_blocking(move || {
        let answered = busy.write_all(request).is_ok();
        let head = if answered {
            read_response(&mut busy)
        } else {
            String::new()
        };
        let mut rest = Vec::new();
        let busy_closed = busy.read_to_end(&mut rest).is_ok();
        let _ = idle.read_to_end(&mut rest);
        (head, busy_closed, sent.elapsed())
    })
    .await
    .expect("raw connections");

    // Assert: the request is answered, with Connection: close, then that
    // connection ends; the idle one is closed after a quiet second, not at
    // once and not at the shutdown bound.
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "answered while draining: {head:?}"
    );
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "with Connection: close: {head}"
    );
    assert!(busy_closed, "the answered connection is closed after it");
    assert!(
        idle_closed_after >= Duration::from_millis(900)
            && idle_closed_after < Duration::from_secs(5),
        "the idle connection closed {idle_closed_after:?} after SIGTERM"
    );
    let exited = crate::helpers::eventually(Duration::from_secs(5), || {
        let done = instance
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
            .is_some();
        async move { done }
    })
    .await;
    assert!(
        exited.is_some(),
        "the instance exits once its connections are closed"
    );
}

/// Three instances on one Redis behind nginx (`deploy/nginx.conf`), and a
/// tenant, for the deployment-shape tests.
struct Fleet {
    instances: Vec<Instance>,
    nginx: Nginx,
    base: String,
    key: String,
    client: reqwest::Client,
    _redis: RedisServer,
}

impl Fleet {
    async fn start(tenant: &str) -> Self {
        let redis = RedisServer::start();
        let instances: Vec<Instance> = (0..3).map(|_| Instance::start(&redis.url())).collect();
        let client = crate::helpers::client();
        for i in &instances {
            i.wait_ready(&client).await;
        }
        let ports: Vec<u16> = instances.iter().map(|i| i.port).collect();
        let nginx = Nginx::start(&ports);
        let base = nginx.base();
        let up = crate::helpers::eventually(Duration::from_secs(10), || async {
            client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(up.is_some(), "nginx answers:\n{}", nginx.error_log());
        let (_, key) = create_tenant(&client, &base, tenant, "enterprise").await;
        Self {
            instances,
            nginx,
            base,
            key,
            client,
            _redis: redis,
        }
    }

    /// Sends `sig` to instance `n` and waits (at most 12 s) until it has exited;
    /// returns its exit status.
    async fn stop(&mut self, n: usize, sig: &str) -> std::process::ExitStatus {
        let victim = &mut self.instances[n];
        let pid = victim.child.as_ref().map(Child::id).expect("running");
        assert!(signal(pid, sig), "SIG{sig}");
        let sent = Instant::now();
        loop {
            if let Some(status) = victim
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                victim.child = None;
                return status;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(12),
                "instance {n} exits within the shutdown bound after SIG{sig}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts instance `n` again (same port) and waits until it is ready.
    async fn restart(&mut self, n: usize) {
        self.instances[n].spawn();
        self.instances[n].wait_ready(&self.client).await;
    }

    /// Every listed reservation: resource -> fencing token.
    async fn listing(&self) -> std::collections::BTreeMap<String, i64> {
        let mut out = std::collections::BTreeMap::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let mut url = format!("{}/api/v1/Reservation?limit=10000", self.base);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let res = self
                .client
                .get(url)
                .header("X-Api-Key", &self.key)
                .send()
                .await
                .expect("list");
            assert_eq!(res.status(), 200, "list: {res:?}");
            let body: Value = res.json().await.expect("list json");
            for r in body["reservations"].as_array().expect("reservations") {
                out.insert(
                    r["resource"].as_str().expect("resource").to_string(),
                    r["fencingToken"].as_i64().expect("fencing token"),
                );
            }
            match body["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
        panic!("the listing did not end");
    }
}

/// One POST with an `Idempotency-Key`, retried with the same key after a
/// failure (a 5xx, a `409 IDEMPOTENCY_KEY_IN_USE` or a connection error) until
/// it gets an answer, as a careful client does.
struct Answer {
    body: Value,
    /// The final answer was a replay of a committed execution.
    replayed: bool,
    /// What the failed attempts got: status, or 0 for a connection error.
    failures: Vec<u16>,
}

async fn post_until_answered(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    idempotency_key: &str,
    body: &Value,
) -> Answer {
    let mut failures = Vec::new();
    let started = Instant::now();
    loop {
        let res = client
            .post(url)
            .header("X-Api-Key", key)
            .header("Idempotency-Key", idempotency_key)
            .json(body)
            .send()
            .await;
        match res {
            Ok(res) if res.status() == 200 => {
                let replayed = res
                    .headers()
                    .get("idempotent-replayed")
                    .is_some_and(|v| v == "true");
                let body = res.json().await.expect("answer json");
                return Answer {
                    body,
                    replayed,
                    failures,
                };
            }
            Ok(res) => failures.push(res.status().as_u16()),
            Err(_) => failures.push(0),
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{idempotency_key}: no answer after 20 s of retries: {failures:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one writer did and was told.
#[derive(Default)]
struct WriterLog {
    requester: String,
    /// Holds the writer believes it has: resource -> (fencing token, release token).
    held: std::collections::BTreeMap<String, (i64, String)>,
    /// Reservations it was told it made: (resource, fencing token).
    reserved: Vec<(String, i64)>,
    /// Releases it was told it made: (resource, fencing token).
    released: Vec<(String, i64)>,
    /// Failed attempts (status, 0 for a connection error), each retried.
    failures: Vec<u16>,
    /// Retries answered as replays: the failed attempt had committed.
    replays_after_failure: usize,
    requests: usize,
}

/// A writer through the load balancer: reserves `{prefix}-w{w}-{i}` (TTL 60 s)
/// and releases every other one again, every write with its own
/// Idempotency-Key, until `stop`.
async fn writer(
    client: reqwest::Client,
    base: String,
    key: String,
    prefix: String,
    w: usize,
    stop: Arc<AtomicBool>,
) -> WriterLog {
    let mut log = WriterLog {
        requester: format!("w{w}"),
        ..WriterLog::default()
    };
    let reserve = format!("{base}/api/v1/Reservation/reserve");
    let unreserve = format!("{base}/api/v1/Reservation/unreserve");
    for i in 0..100_000 {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let name = format!("{prefix}-w{w}-{i:05}");
        let body = json!([{"requester": format!("w{w}"), "resource": name, "ttlSeconds": 60}]);
        let a =
            post_until_answered(&client, &reserve, &key, &format!("{name}:reserve"), &body).await;
        log.requests += 1;
        log.replays_after_failure += usize::from(a.replayed && !a.failures.is_empty());
        log.failures.extend(&a.failures);
        let r = &a.body["results"][0];
        assert_eq!(r["status"], "RESERVED", "{name}: {r}");
        let fence = r["fencingToken"].as_i64().expect("fencing token");
        let token = r["releaseToken"]
            .as_str()
            .expect("release token")
            .to_string();
        log.reserved.push((name.clone(), fence));
        if i % 2 == 1 {
            let body =
                json!([{"requester": format!("w{w}"), "resource": name, "releaseToken": token}]);
            let a = post_until_answered(
                &client,
                &unreserve,
                &key,
                &format!("{name}:unreserve"),
                &body,
            )
            .await;
            log.requests += 1;
            log.replays_after_failure += usize::from(a.replayed && !a.failures.is_empty());
            log.failures.extend(&a.failures);
            assert_eq!(
                a.body["results"][0]["status"], "UNRESERVED",
                "{name}: {}",
                a.body
            );
            log.released.push((name, fence));
        } else {
            log.held.insert(name, (fence, token));
        }
    }
    log
}

/// One event of the stream: (id, type, resource, fencing token).
#[derive(Debug, Clone)]
struct Event {
    id: (u64, u64),
    raw_id: String,
    kind: String,
    resource: String,
    fence: Option<i64>,
}

/// What the follower saw.
#[derive(Default)]
struct Followed {
    events: Vec<Event>,
    /// Streams that ended (each followed by a reconnect with Last-Event-ID).
    ended: usize,
    /// Reconnects refused (status, 0 for a connection error).
    refused: Vec<u16>,
}

fn parse_event(block: &str) -> Option<Event> {
    let (mut id, mut kind, mut data) = (None, None, None);
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("event: ") {
            kind = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = Some(serde_json::from_str::<Value>(v).expect("event data is JSON"));
        }
    }
    let (raw_id, kind, data) = (id?, kind?, data?);
    let (ms, seq) = raw_id.split_once('-').expect("an id <ms>-<seq>");
    Some(Event {
        id: (ms.parse().expect("ms"), seq.parse().expect("seq")),
        raw_id,
        kind,
        resource: data["resource"].as_str().unwrap_or("").to_string(),
        fence: data["fencingToken"].as_i64(),
    })
}

/// Follows the tenant's events through the load balancer, reconnecting with
/// `Last-Event-ID` whenever a stream ends, until `done` (or 60 s).
async fn follow(
    base: String,
    key: String,
    seen: Arc<std::sync::Mutex<Followed>>,
    done: Arc<AtomicBool>,
) {
    cooplocker::tokens::init_crypto().expect("crypto self-test");
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut last: Option<String> = None;
    while !done.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
        let mut req = client
            .get(format!("{base}/api/v1/events"))
            .header("X-Api-Key", &key);
        if let Some(id) = &last {
            req = req.header("Last-Event-ID", id);
        }
        let mut res = match req.send().await {
            Ok(r) if r.status() == 200 => r,
            other => {
                let status = other.map_or(0, |r| r.status().as_u16());
                seen.lock().expect("follower").refused.push(status);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut buf = String::new();
        loop {
            if done.load(Ordering::SeqCst) {
                return;
            }
            match tokio::time::timeout(Duration::from_millis(250), res.chunk()).await {
                Err(_) => continue,
                Ok(Ok(Some(bytes))) => {
                    buf.push_str(std::str::from_utf8(&bytes).expect("UTF-8 stream"));
                    while let Some(end) = buf.find("\n\n") {
                        let block: String = buf.drain(..end + 2).collect();
                        if let Some(ev) = parse_event(&block) {
                            last = Some(ev.raw_id.clone());
                            seen.lock().expect("follower").events.push(ev);
                        }
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    seen.lock().expect("follower").ended += 1;
                    break;
                }
            }
        }
    }
}

/// Reserves `name` through the fleet and waits (at most `within`) until the
/// follower has seen its `RESERVED`; false if it has not.
async fn mark(
    fleet: &Fleet,
    seen: &Arc<std::sync::Mutex<Followed>>,
    name: &str,
    within: Duration,
) -> bool {
    let url = format!("{}/api/v1/Reservation/reserve", fleet.base);
    let body = json!([{"requester": "mark", "resource": name, "ttlSeconds": 60}]);
    let a = post_until_answered(
        &fleet.client,
        &url,
        &fleet.key,
        &format!("{name}:mark"),
        &body,
    )
    .await;
    assert_eq!(a.body["results"][0]["status"], "RESERVED", "{}", a.body);
    crate::helpers::eventually(within, || {
        let there = seen
            .lock()
            .expect("follower")
            .events
            .iter()
            .any(|e| e.kind == "RESERVED" && e.resource == name);
        async move { there }
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_nginx_loses_no_write_and_no_event() {
    // Arrange: the fleet, an event follower through nginx (connected: it has
    // seen a first mark), six writers.
    let mut fleet = Fleet::start("rolling").await;
    let seen = Arc::new(std::sync::Mutex::new(Followed::default()));
    let done = Arc::new(AtomicBool::new(false));
    let follower = tokio::spawn(follow(
        fleet.base.clone(),
        fleet.key.clone(),
        seen.clone(),
        done.clone(),
    ));
    // The first connection has no Last-Event-ID: it gets what happens once it
    // is subscribed, so mark until a mark arrives.
    let mut started = None;
    for n in 0..20 {
        let name = format!("a-start-{n:02}");
        if mark(&fleet, &seen, &name, Duration::from_millis(500)).await {
            started = Some(name);
            break;
        }
    }
    assert!(
        started.is_some(),
        "the event stream through nginx delivers events"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..6)
        .map(|w| {
            tokio::spawn(writer(
                fleet.client.clone(),
                fleet.base.clone(),
                fleet.key.clone(),
                "r".into(),
                w,
                stop.clone(),
            ))
        })
        .collect();

    // Act: SIGTERM each instance in turn, wait for it to exit, start it
    // again, wait until it is ready; writers and the stream keep going.
    tokio::time::sleep(Duration::from_millis(700)).await;
    for n in 0..3 {
        let status = fleet.stop(n, "TERM").await;
        assert!(status.success(), "instance {n} exit status {status:?}");
        fleet.restart(n).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut logs = Vec::new();
    for w in writers {
        logs.push(w.await.expect("writer"));
    }
    // The follower is connected and resumes with Last-Event-ID: the end mark
    // must arrive.
    let ended = mark(&fleet, &seen, "z-end", Duration::from_secs(15)).await;
    done.store(true, Ordering::SeqCst);
    follower.await.expect("follower");

    // Assert: the stream is still delivering after the restarts ...
    {
        let f = seen.lock().expect("follower");
        assert!(
            ended,
            "the event stream delivers the end mark after the rolling restart: {} events, {} ends, refused reconnects {:?}, last {:?}",
            f.events.len(),
            f.ended,
            f.refused,
            f.events.last()
        );
    }
    // ... no write failed (no 502, no 5xx, no connection error) ...
    let failures: Vec<u16> = logs.iter().flat_map(|l| l.failures.clone()).collect();
    let requests: usize = logs.iter().map(|l| l.requests).sum();
    assert!(
        failures.is_empty(),
        "{} of {requests} writes failed during the rolling restart (status, 0 = connection error): {failures:?}\nnginx error log:\n{}",
        failures.len(),
        fleet.nginx.error_log()
    );
    assert!(requests > 100, "traffic ran: {requests} writes");
    // ... every hold the writers believe they have is listed, with its fencing
    // token, and nothing else (but the marks) ...
    let listed = fleet.listing().await;
    let mut believed: std::collections::BTreeMap<String, i64> = logs
        .iter()
        .flat_map(|l| l.held.iter().map(|(r, (f, _))| (r.clone(), *f)))
        .collect();
    for m in listed
        .keys()
        .filter(|r| r.starts_with("a-start-") || *r == "z-end")
    {
        believed.insert(m.clone(), listed[m]);
    }
    assert_eq!(
        listed.len(),
        believed.len(),
        "listed {} holds, the writers believe in {}",
        listed.len(),
        believed.len()
    );
    assert_eq!(
        listed, believed,
        "the listing is what the writers were told"
    );
    // ... and the stream, across every restart and reconnect, saw every event
    // once, in order, without a GAP: exactly the writers' RESERVED (by
    // fencing token) and UNRESERVED.
    let followed = seen.lock().expect("follower");
    let events = &followed.events;
    let gaps: Vec<&Event> = events.iter().filter(|e| e.kind == "GAP").collect();
    assert!(gaps.is_empty(), "GAP events on resume: {gaps:?}");
    for pair in events.windows(2) {
        assert!(
            pair[0].id < pair[1].id,
            "event ids strictly increase (none repeated, none out of order): {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
    let got = |kind: &str| -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = events
            .iter()
            .filter(|e| e.kind == kind && e.resource.starts_with("r-"))
            .map(|e| (e.resource.clone(), e.fence.expect("fencing token")))
            .collect();
        v.sort();
        v
    };
    let want = |f: fn(&WriterLog) -> &Vec<(String, i64)>| -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = logs.iter().flat_map(|l| f(l).clone()).collect();
        v.sort();
        v
    };
    let (reserved, released) = (want(|l| &l.reserved), want(|l| &l.released));
    let (got_reserved, got_released) = (got("RESERVED"), got("UNRESERVED"));
    let missing: Vec<_> = reserved
        .iter()
        .filter(|r| !got_reserved.contains(r))
        .collect();
    assert!(
        missing.is_empty() && got_reserved.len() == reserved.len(),
        "RESERVED events: {} confirmed, {} streamed; missing {missing:?}",
        reserved.len(),
        got_reserved.len()
    );
    assert_eq!(
        got_released, released,
        "UNRESERVED events are the confirmed releases"
    );
    assert!(
        followed.refused.is_empty(),
        "every reconnect through nginx was accepted (status, 0 = connection error): {:?}",
        followed.refused
    );
    assert!(
        followed.ended >= 1,
        "the stream was ended by a restart and resumed ({} ends)",
        followed.ended
    );
    eprintln!(
        "{requests} writes, {} events, the stream ended {} times and resumed; refused reconnects: {:?}",
        events.len(),
        followed.ended,
        followed.refused
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_costs_only_requests_in_flight_and_retries_orphan_no_grant() {
    // Arrange: the fleet and six writers that retry a failed write with the
    // same Idempotency-Key.
    let mut fleet = Fleet::start("sigkill").await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..6)
        .map(|w| {
            tokio::spawn(writer(
                fleet.client.clone(),
                fleet.base.clone(),
                fleet.key.clone(),
                "k".into(),
                w,
                stop.clone(),
            ))
        })
        .collect();

    // Act: SIGKILL one instance mid-traffic; the others carry on.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let status = fleet.stop(1, "KILL").await;
    assert!(!status.success(), "killed: {status:?}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut logs = Vec::new();
    for w in writers {
        logs.push(w.await.expect("writer"));
    }

    // Assert: only requests in flight failed, and only as 502 or a lost
    // connection ...
    let failures: Vec<u16> = logs.iter().flat_map(|l| l.failures.clone()).collect();
    let requests: usize = logs.iter().map(|l| l.requests).sum();
    let replays: usize = logs.iter().map(|l| l.replays_after_failure).sum();
    assert!(requests > 100, "traffic ran: {requests} writes");
    assert!(
        failures.iter().all(|s| *s == 502 || *s == 0),
        "failures other than 502: {failures:?}\nnginx error log:\n{}",
        fleet.nginx.error_log()
    );
    assert!(
        failures.len() <= logs.len(),
        "{} failed attempts for {} writers (at most one request each was in flight): {failures:?}\nnginx error log:\n{}",
        failures.len(),
        logs.len(),
        fleet.nginx.error_log()
    );
    // ... the holds listed are exactly those the writers believe they have
    // (a write that committed before its answer was lost was replayed to its
    // retry, so no grant is orphaned) ...
    let listed = fleet.listing().await;
    let believed: std::collections::BTreeMap<String, i64> = logs
        .iter()
        .flat_map(|l| l.held.iter().map(|(r, (f, _))| (r.clone(), *f)))
        .collect();
    let orphans: Vec<_> = listed
        .iter()
        .filter(|(r, f)| believed.get(*r) != Some(*f))
        .collect();
    assert!(orphans.is_empty(), "holds no client knows of: {orphans:?}");
    assert_eq!(
        listed, believed,
        "the listing is what the writers were told"
    );
    // ... and the release tokens they were given release every one of them.
    let items: Vec<Value> = logs
        .iter()
        .flat_map(|l| {
            l.held.iter().map(
                |(r, (_, t))| json!({"requester": l.requester, "resource": r, "releaseToken": t}),
            )
        })
        .collect();
    for chunk in items.chunks(500) {
        let url = format!("{}/api/v1/Reservation/unreserve", fleet.base);
        let res = fleet
            .client
            .post(url)
            .header("X-Api-Key", &fleet.key)
            .json(&chunk)
            .send()
            .await
            .expect("unreserve");
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.expect("json");
        for r in body["results"].as_array().expect("results") {
            assert_eq!(r["status"], "UNRESERVED", "{r}");
        }
    }
    assert!(fleet.listing().await.is_empty(), "nothing left held");
    eprintln!(
        "{requests} writes; {} failed attempts at the SIGKILL ({failures:?}), {replays} of the retries replayed a committed write",
        failures.len()
    );
}

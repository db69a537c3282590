//! Bad input at scale and secrets at rest, against a real process of the
//! binary on a real Redis:
//! - the hostile-input table, replayed many times over concurrent connections,
//!   plus raw-socket abuse (header floods, a never-finished request): never a
//!   5xx, never a hang, memory bounded, nothing changed;
//! - names full of hash-tag, glob and pattern characters are plain names;
//! - no API key, service token, JWT, lock secret or admin token appears in the
//!   logs (at debug level) or anywhere in Redis.

use crate::both_stores;
use crate::helpers::{create_tenant, free_port, RedisServer, TestApp, ADMIN_TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

both_stores!(hash_tag_and_glob_characters_are_plain_names);

/// A process of the binary on `redis`, logging to a file at `RUST_LOG`.
struct Process {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Process {
    async fn start(redis: &RedisServer, name: &str, rust_log: &str) -> Self {
        let port = free_port();
        let log = super::faults::report_dir().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_cooplocker"))
            .env("REDIS_URL", redis.url())
            .env("COOPLOCKER_LISTEN", format!("127.0.0.1:{port}"))
            .env("COOPLOCKER_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("COOPLOCKER_RATE_LIMITS", "pro=1000000,enterprise=1000000")
            .env("COOPLOCKER_TOKEN_EXCHANGE_PER_IP", "100000")
            .env("COOPLOCKER_AUTH_FAILURES_PER_IP", "100000")
            .env("COOPLOCKER_WORKERS", "2")
            .env("COOPLOCKER_BODY_TIMEOUT_MS", "2000")
            .env("COOPLOCKER_SSE_MAX_PER_TENANT", "100000")
            .env("RUST_LOG", rust_log)
            .env_remove("COOPLOCKER_TOKEN_SECRET")
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("start the binary");
        let base = format!("http://127.0.0.1:{port}");
        let client = crate::helpers::client();
        let up = crate::helpers::eventually(Duration::from_secs(20), || async {
            client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(
            up.is_some(),
            "the binary did not become ready; see {}",
            log.display()
        );
        Self { child, base, log }
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    fn port(&self) -> u16 {
        self.base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Extra hostile requests beyond the bad-input table: (name, method, path,
/// headers, body, expected status).
type Extra = (
    &'static str,
    Method,
    String,
    Vec<(String, Vec<u8>)>,
    Vec<u8>,
    u16,
);
/// A request of either table, ready to send.
type Prepared = (String, Method, String, Vec<(String, Vec<u8>)>, Vec<u8>, u16);

fn extra_cases(key: &str) -> Vec<Extra> {
    let json = || ("content-type".to_string(), b"application/json".to_vec());
    let k = || ("x-api-key".to_string(), key.as_bytes().to_vec());
    let mut v: Vec<Extra> = vec![
        (
            "1 MiB of JSON",
            Method::POST,
            "/api/v1/Reservation/reserve".into(),
            vec![k(), json()],
            format!("[\"{}\"]", "a".repeat(1024 * 1024)).into_bytes(),
            413,
        ),
        (
            "nesting 100k deep",
            Method::POST,
            "/api/v1/Reservation/check".into(),
            vec![k(), json()],
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
            400,
        ),
        (
            "objects nested deep",
            Method::POST,
            "/api/v1/admin/tenants".into(),
            vec![
                (
                    "authorization".into(),
                    format!("Bearer {ADMIN_TOKEN}").into_bytes(),
                ),
                json(),
            ],
            format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000)).into_bytes(),
            400,
        ),
        (
            "1e309 as expires_in",
            Method::POST,
            "/v1/api/lock/key/hostile".into(),
            vec![k(), json()],
            br#"{"expires_in":1e309}"#.to_vec(),
            400,
        ),
        (
            "duplicate keys in the token exchange",
            Method::POST,
            "/api/v1/auth/token".into(),
            vec![json()],
            br#"{"jwt":"a","jwt":"b"}"#.to_vec(),
            400,
        ),
        (
            "invalid UTF-8 in an admin body",
            Method::POST,
            "/api/v1/admin/tenants".into(),
            vec![
                (
                    "authorization".into(),
                    format!("Bearer {ADMIN_TOKEN}").into_bytes(),
                ),
                json(),
            ],
            b"{\"name\":\"\xc3\x28\"}".to_vec(),
            400,
        ),
        (
            "two X-Api-Key headers",
            Method::GET,
            "/api/v1/Reservation".into(),
            vec![k(), ("x-api-key".into(), b"ck_other".to_vec())],
            Vec::new(),
            400,
        ),
        (
            "a non-UTF-8 API key",
            Method::GET,
            "/api/v1/Reservation".into(),
            vec![("x-api-key".into(), b"ck_\xff\xfe".to_vec())],
            Vec::new(),
            401,
        ),
        (
            "a 64 KiB header",
            Method::GET,
            "/api/v1/Reservation".into(),
            vec![k(), ("x-filler".into(), vec![b'a'; 64 * 1024])],
            Vec::new(),
            431,
        ),
    ];
    for garbage in [
        "garbage",
        "-1",
        "99999999999999999999999-0",
        "1-2-3",
        "0-",
        "%00",
        "\u{e9}t\u{e9}",
    ] {
        v.push((
            "garbage Last-Event-ID",
            Method::GET,
            "/api/v1/events".into(),
            vec![k(), ("last-event-id".into(), garbage.as_bytes().to_vec())],
            Vec::new(),
            // The contract: an unparsable id starts the stream with a GAP.
            200,
        ));
    }
    v
}

/// The bad-input table and the extras above, 25 rounds over 8 concurrent
/// connections, plus raw-socket abuse; then memory, answers and state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_at_scale_changes_nothing_and_memory_stays_bounded() {
    let redis = RedisServer::start();
    let p = Process::start(&redis, "hostile", "warn").await;
    let client = crate::helpers::client();
    let (tenant, key) = create_tenant(&client, &p.base, "hostile", "pro").await;
    let held = client
        .post(format!("{}/api/v1/Reservation/reserve", p.base))
        .header("X-Api-Key", &key)
        .json(&json!([{"resource": "keep", "requester": "me"}]))
        .send()
        .await
        .expect("reserve");
    assert_eq!(held.status(), 200);
    let snapshot = || async {
        let r = client
            .get(format!("{}/api/v1/Reservation", p.base))
            .header("X-Api-Key", &key)
            .send()
            .await
            .expect("list");
        r.json::<Value>().await.expect("json")["reservations"].clone()
    };
    let before = snapshot().await;
    // Every key but the rate limiter's (which expire by themselves) and the
    // sweeper's lease (taken and let go every round of the sweeper, whenever
    // it runs).
    let keys = || {
        let mut k: Vec<String> = redis
            .cli(&["--scan"])
            .lines()
            .filter(|k| !k.contains(":rl:") && *k != "c:sweep-lease")
            .map(str::to_string)
            .collect();
        k.sort();
        k
    };
    let redis_keys_before = keys();

    // Warm up once, then measure memory around the rounds.
    let table = crate::bad_input::cases();
    let extras = extra_cases(&key);
    let one_round = |round: usize| {
        let client = client.clone();
        let base = p.base.clone();
        let key = key.clone();
        let reqs: Vec<Prepared> = table
            .iter()
            .map(|c| {
                let (path, (header, credential)) = c.target(&tenant, &key);
                let mut h = vec![(header.to_string(), credential.into_bytes())];
                if let Some(ct) = c.content_type {
                    h.push(("content-type".into(), ct.as_bytes().to_vec()));
                }
                (
                    c.name.to_string(),
                    c.method.clone(),
                    path,
                    h,
                    c.body.clone(),
                    c.status,
                )
            })
            .chain(extras.iter().map(|e| {
                (
                    e.0.to_string(),
                    e.1.clone(),
                    e.2.clone(),
                    e.3.clone(),
                    e.4.clone(),
                    e.5,
                )
            }))
            .collect();
        async move {
            let mut failures = Vec::new();
            let mut slowest = Duration::ZERO;
            for (name, method, path, headers, body, status) in reqs {
                let mut req = client.request(method, format!("{base}{path}")).body(body);
                for (k, v) in headers {
                    if let Ok(v) = reqwest::header::HeaderValue::from_bytes(&v) {
                        req = req.header(k, v);
                    }
                }
                let started = Instant::now();
                match tokio::time::timeout(Duration::from_secs(10), req.send()).await {
                    Ok(Ok(mut r)) => {
                        let got = r.status().as_u16();
                        let stream = r
                            .headers()
                            .get("content-type")
                            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
                        if stream {
                            // A stream never ends: its first event must be the GAP.
                            let mut text = String::new();
                            let until = tokio::time::Instant::now() + Duration::from_secs(5);
                            while !text.contains("event: GAP") {
                                match tokio::time::timeout_at(until, r.chunk()).await {
                                    Ok(Ok(Some(b))) => text.push_str(&String::from_utf8_lossy(&b)),
                                    _ => break,
                                }
                            }
                            if !text.contains("event: GAP") {
                                failures
                                    .push(format!("round {round} {name}: first frames {text:?}"));
                            }
                        } else {
                            let _ = r.bytes().await;
                        }
                        if got != status {
                            failures
                                .push(format!("round {round} {name}: {got}, expected {status}"));
                        }
                    }
                    Ok(Err(e)) => failures.push(format!("round {round} {name}: no answer: {e}")),
                    Err(_) => failures.push(format!("round {round} {name}: hung for 10 s")),
                }
                slowest = slowest.max(started.elapsed());
            }
            (failures, slowest)
        }
    };
    let (failures, _) = one_round(0).await;
    assert!(failures.is_empty(), "{failures:#?}");
    // Two equal phases of 8 connections x 3 rounds: memory may grow in the
    // first (allocator pools warming up) but must level off in the second.
    let rss_before = p.rss_kib();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut rss_phase = Vec::new();
    let phases: usize = std::env::var("COOPLOCKER_HOSTILE_PHASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .max(2);
    for phase in 0..phases {
        let mut handles = Vec::new();
        for worker in 0..8 {
            let rounds: Vec<_> = (0..3)
                .map(|r| one_round(phase * 100 + worker * 3 + r + 1))
                .collect();
            handles.push(tokio::spawn(async move {
                let mut all = (Vec::new(), Duration::ZERO);
                for r in rounds {
                    let (f, s) = r.await;
                    all.0.extend(f);
                    all.1 = all.1.max(s);
                }
                all
            }));
        }
        for h in handles {
            let (f, s) = h.await.expect("round");
            assert!(f.is_empty(), "{f:#?}");
            slowest = slowest.max(s);
        }
        rss_phase.push(p.rss_kib());
        if std::env::var_os("HOSTILE_TRACE").is_some() {
            let m = client
                .get(format!("{}/metrics", p.base))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .unwrap_or_default();
            eprintln!(
                "{}",
                m.lines()
                    .filter(|l| l.starts_with("cooplocker_sse_clients"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        if std::env::var_os("HOSTILE_TRACE").is_some() {
            eprintln!("phase {phase}: RSS {} KiB", p.rss_kib());
        }
    }
    let requests = phases * 24 * (table.len() + extras.len());

    // Raw sockets: a flood of 10,000 small headers, and a request that never ends.
    let port = p.port();
    let flood = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut req = b"GET /api/v1/Reservation HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..10_000 {
            req.extend_from_slice(format!("X-F{i}: v\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        let _ = s.write_all(&req);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    });
    let status_line = flood.await.expect("flood");
    assert!(
        status_line.contains(" 431 "),
        "header flood: {status_line:?}"
    );
    let slow_key = key.clone();
    let slow = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let head = format!(
            "POST /api/v1/Reservation/reserve HTTP/1.1\r\nHost: x\r\nX-Api-Key: {slow_key}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n["
        );
        let _ = s.write_all(head.as_bytes());
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        (
            started.elapsed(),
            String::from_utf8_lossy(&out).into_owned(),
        )
    });
    let (closed_after, answer) = slow.await.expect("slow request");
    assert!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("REQUEST_TIMEOUT"),
        "a body that never arrives: {answer:?}"
    );
    assert!(
        closed_after < Duration::from_secs(10),
        "the connection of a body that never arrives was held {closed_after:?}"
    );

    let rss_after = p.rss_kib();
    println!(
        "hostile input: {requests} requests in {:.1} s over 8 connections, slowest {} ms; \
         RSS {:.1} -> {:.1} (first phase) -> {:.1} MiB (last phase) -> {:.1} MiB (after raw-socket abuse); \
         an unfinished request was cut off after {:.1} s",
        started.elapsed().as_secs_f64(),
        slowest.as_millis(),
        rss_before as f64 / 1024.0,
        rss_phase[0] as f64 / 1024.0,
        rss_phase[phases - 1] as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        closed_after.as_secs_f64()
    );
    // Bounded, not flat: RSS moves with the 1 MiB bodies in flight when it is
    // sampled, so the later half of the phases may not rise above the earlier
    // half by more than that noise, and nothing ever approaches a leak's scale.
    let half = phases / 2;
    let early = rss_phase[..half].iter().max().copied().unwrap_or(0);
    let late = rss_phase[half..].iter().max().copied().unwrap_or(0);
    assert!(
        late < early + 48 * 1024 && rss_after < rss_before + 160 * 1024,
        "memory keeps growing: {rss_before} KiB, then {rss_phase:?}, then {rss_after} KiB"
    );
    assert_eq!(snapshot().await, before, "nothing changed");
    // The dropped event streams are noticed without waiting for a keep-alive.
    let sse_clients = || async {
        let m = client
            .get(format!("{}/metrics", p.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default();
        m.lines()
            .find(|l| l.starts_with("cooplocker_sse_clients"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    let gone = crate::helpers::eventually(Duration::from_secs(5), || async {
        sse_clients().await == 0.0
    })
    .await;
    assert!(
        gone.is_some(),
        "closed event streams linger: {}",
        sse_clients().await
    );
    assert_eq!(
        keys(),
        redis_keys_before,
        "no key was added to or removed from Redis"
    );
    let log = std::fs::read_to_string(&p.log).unwrap_or_default();
    assert!(!log.contains("panicked"), "the instance panicked:\n{log}");
}

/// Every secret a tenant ever holds, and where it must never appear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_token_or_jwt_in_logs_or_in_the_store() {
    let redis = RedisServer::start();
    let p = Process::start(&redis, "secrets", "debug").await;
    let client = crate::helpers::client();
    let base = p.base.clone();
    let (tenant, key1) = create_tenant(&client, &base, "secrets", "pro").await;
    let admin = |m: Method, path: String, body: Option<Value>| {
        let mut r = client
            .request(m, format!("{base}/api/v1/admin{path}"))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let r = r.send().await.expect("admin");
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, k2) = admin(
        Method::POST,
        format!("/tenants/{tenant}/keys"),
        Some(json!({"label": "second"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let key2_old = k2["key"].as_str().expect("key").to_string();
    let (s, k2) = admin(
        Method::POST,
        format!(
            "/tenants/{tenant}/keys/{}/rotate",
            k2["id"].as_str().expect("id")
        ),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let key2 = k2["key"].as_str().expect("key").to_string();
    // JWT exchange with an HS256 tenant secret.
    let hs = "an-hs256-tenant-secret-of-enough-length-0123456789";
    let (s, _) = admin(Method::PATCH, format!("/tenants/{tenant}"), Some(json!({"jwt": {
        "issuer": "https://idp.example", "audience": "cooplocker", "algorithms": ["HS256"], "hs256Secret": hs}}))).await;
    assert_eq!(s, StatusCode::OK);
    let now = chrono::Utc::now().timestamp();
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iss": "https://idp.example", "aud": "cooplocker", "sub": "worker", "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_secret(hs.as_bytes()),
    )
    .expect("jwt");
    let r = client
        .post(format!("{base}/api/v1/auth/token"))
        .json(&json!({"jwt": jwt}))
        .send()
        .await
        .expect("exchange");
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_string();

    // Use everything, including refusals (old key, a wrong key, a bad JWT).
    let lock_secret = "a-locklock-secret-4242";
    for (cred, expect) in [(&key1, 200), (&key2, 200), (&token, 200), (&key2_old, 401)] {
        let r = client
            .post(format!("{base}/api/v1/Reservation/reserve"))
            .header("X-Api-Key", cred.as_str())
            .json(&json!([{"resource": format!("r-{expect}-{}", &cred[..6]), "requester": "worker", "ttlSeconds": 60}]))
            .send()
            .await
            .expect("reserve");
        assert_eq!(r.status().as_u16(), expect);
    }
    let r = client
        .post(format!("{base}/v1/api/lock/key/guarded"))
        .header("X-Api-Key", &key1)
        .json(&json!({"secret": lock_secret}))
        .send()
        .await
        .expect("lock");
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("{base}/api/v1/auth/token"))
        .json(&json!({"jwt": format!("{jwt}x")}))
        .send()
        .await
        .expect("bad exchange");
    assert_eq!(r.status(), 401);
    let r = client
        .get(format!("{base}/api/v1/Reservation"))
        .header("Authorization", format!("Bearer {key1}"))
        .send()
        .await
        .expect("bearer");
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let fleet_key = redis
        .cli(&["GET", cooplocker::store::redis::keys::TOKEN_SECRET])
        .trim()
        .to_string();
    assert!(
        fleet_key.len() >= 32,
        "the fleet signing key is in Redis: {fleet_key:?}"
    );
    let mut secrets = vec![
        ("API key", key1.clone()),
        ("rotated-away key", key2_old.clone()),
        ("rotated key", key2.clone()),
        ("service token", token.clone()),
        ("JWT", jwt.clone()),
        ("lock secret", lock_secret.to_string()),
        ("admin token", ADMIN_TOKEN.to_string()),
    ];
    // Everything stored in Redis, every value of every type.
    let mut stored = String::new();
    for key in redis.cli(&["--scan"]).lines() {
        stored.push_str(key);
        stored.push('\n');
        let kind = redis.cli(&["TYPE", key]);
        let dump = match kind.trim() {
            "string" => redis.cli(&["GET", key]),
            "hash" => redis.cli(&["HGETALL", key]),
            "set" => redis.cli(&["SMEMBERS", key]),
            "zset" => redis.cli(&["ZRANGE", key, "0", "-1", "WITHSCORES"]),
            "list" => redis.cli(&["LRANGE", key, "0", "-1"]),
            "stream" => redis.cli(&["XRANGE", key, "-", "+"]),
            // Expired between the scan and now (a lease, a limiter counter).
            "none" => String::new(),
            other => panic!("unexpected type {other} of {key}"),
        };
        stored.push_str(&dump);
    }
    assert!(stored.contains("guarded"), "the scan saw the data");
    for (what, secret) in &secrets {
        assert!(
            !stored.contains(secret.as_str()),
            "the {what} is stored in clear in Redis"
        );
    }
    // The logs (debug level) hold none of them, nor the fleet key or the tenant's HS256 secret.
    secrets.push(("fleet signing key", fleet_key));
    secrets.push(("HS256 tenant secret", hs.to_string()));
    let log = std::fs::read_to_string(&p.log).expect("log");
    assert!(log.lines().count() >= 10, "the debug log has lines: {log}");
    for (what, secret) in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "the {what} appears in the log"
        );
    }
}

/// Names with `{`/`}` (Redis Cluster hash tags), glob and Lua-pattern
/// characters and key separators are ordinary, independent resources.
async fn hash_tag_and_glob_characters_are_plain_names(app: TestApp) {
    let names = [
        "{x}",
        "{",
        "}",
        "{}",
        "cl:{t}:r:a",
        "*",
        "a*",
        "?",
        "[a]",
        "[",
        "\\",
        "%d+",
        "%",
        "a b",
        "a",
        "ab",
        "^$",
        "..",
        "\u{e9}",
    ];
    let items: Vec<Value> = names
        .iter()
        .map(|n| json!({"resource": n, "requester": n, "ttlSeconds": 60}))
        .collect();
    let r = app.reserve(Value::Array(items)).await;
    assert_eq!(r.status, StatusCode::OK);
    for (res, name) in r.results().iter().zip(names) {
        assert_eq!(res["status"], "RESERVED", "{name}: {res}");
    }
    assert_eq!(app.list_all("").await.len(), names.len());
    for (prefix, expect) in [
        ("a*", vec!["a*"]),
        ("[", vec!["[", "[a]"]),
        ("{", vec!["{", "{x}", "{}"]),
        ("%", vec!["%", "%d+"]),
        ("*", vec!["*"]),
    ] {
        let q = format!(
            "prefix={}",
            percent_encoding::utf8_percent_encode(prefix, percent_encoding::NON_ALPHANUMERIC)
        );
        let got: Vec<String> = app
            .list_all(&q)
            .await
            .iter()
            .map(|v| v["resource"].as_str().unwrap_or("").to_string())
            .collect();
        let mut want: Vec<String> = expect.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "prefix {prefix:?}");
    }
    // Releasing "*" releases only "*"; "{x}" is released by name through the admin path.
    let r = app.check(json!([{"resource": "*"}])).await;
    assert_eq!(r.results()[0]["status"], "HELD");
    let r = app
        .admin(
            Method::DELETE,
            &format!("/tenants/{}/reservations/%7Bx%7D", app.tenant_id),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    assert_eq!(app.check_status("{x}").await, "FREE");
    assert_eq!(app.check_status("{}").await, "HELD");
    assert_eq!(app.list_all("").await.len(), names.len() - 1);
    // Deleting the tenant releases every one of them.
    let r = app
        .admin(Method::DELETE, &format!("/tenants/{}", app.tenant_id), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

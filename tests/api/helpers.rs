//! Test harness: a real `redis-server` spawned on a free port (killed on drop,
//! and killable/restartable for fault tests), in-process app instances on port 0,
//! and typed request helpers. Each test gets its own tenant (and its own Redis),
//! so tests run in parallel.

use cooplocker::config::Settings;
use cooplocker::startup::Application;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The prefix of every Redis key of a tenant (`c:{<tag>}:`), as the store
/// builds it.
pub fn key_prefix(tenant: &str) -> String {
    let id = cooplocker::domain::TenantId::parse(tenant).expect("a tenant id");
    cooplocker::store::redis::keys::prefix(&id)
}

/// The tenant's keys in a Redis, one per line.
pub fn tenant_keys(redis: &RedisServer, tenant: &str) -> Vec<String> {
    redis
        .cli(&["--scan", "--pattern", &format!("{}*", key_prefix(tenant))])
        .lines()
        .map(str::to_string)
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Redis,
    Embedded,
    /// A 3-master Redis Cluster.
    Cluster,
    /// A master, a replica and three Sentinels.
    Sentinel,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// Whether the Redis answering on `port` is the process `pid` (`INFO server`
/// names its process id).
pub fn serves_as(port: u16, pid: u32) -> bool {
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "server"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == format!("process_id:{pid}"))
        })
        .unwrap_or(false)
}

pub fn redis_binary() -> String {
    for candidate in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.to_string();
        }
    }
    panic!(
        "redis-server is not installed: the integration tests need a real Redis. \
         Run the README's test command (bash scripts/test.sh), which installs it, \
         or `apt-get install redis-server`."
    );
}

/// A real Redis on 127.0.0.1: no persistence, or (for fault tests) an
/// append-only file fsynced before every reply, so a SIGKILL loses nothing.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// The data directory of a durable server (removed on drop).
    dir: Option<std::path::PathBuf>,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut s = Self {
            port: free_port(),
            child: None,
            dir: None,
        };
        s.first_start();
        s
    }

    /// Starts on a fresh port; another process may take a free port between
    /// `free_port` and redis-server's bind (tests run in parallel), and then
    /// the server exits at once and starts again on another port.
    fn first_start(&mut self) {
        for _ in 0..5 {
            if self.spawn_and_wait() {
                return;
            }
            self.kill();
            self.port = free_port();
        }
        panic!(
            "redis-server did not start on five free ports (last {})",
            self.port
        );
    }

    /// A server with `appendonly yes` and `appendfsync always`: the production
    /// setting for a lock store, under which a crash loses no acknowledged write.
    pub fn start_durable() -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("cooplocker-redis-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("redis data directory");
        let mut s = Self {
            port,
            child: None,
            dir: Some(dir),
        };
        s.first_start();
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts on the same port and waits until it answers: empty, or for a
    /// durable server with what its append-only file holds.
    pub fn restart(&mut self) {
        if !self.spawn_and_wait() {
            panic!("redis-server did not start again on port {}", self.port);
        }
    }

    /// Spawns the server on `self.port` and waits until it answers; false if
    /// it exited (the port was taken) or did not answer in time.
    fn spawn_and_wait(&mut self) -> bool {
        self.kill();
        let port = self.port.to_string();
        let mut args = vec!["--port", &port, "--bind", "127.0.0.1", "--save", ""];
        let dir;
        match &self.dir {
            Some(d) => {
                dir = d.to_string_lossy().into_owned();
                args.extend([
                    "--dir",
                    &dir,
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ]);
            }
            None => args.extend(["--appendonly", "no"]),
        }
        args.extend(["--protected-mode", "yes"]);
        let child = Command::new(redis_binary())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("failed to spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                if s.write_all(b"PING\r\n").is_ok() {
                    let mut buf = [0u8; 16];
                    if let Ok(n) = s.read(&mut buf) {
                        if buf[..n].starts_with(b"+PONG") {
                            // Ours, not another test's server that took the
                            // port first (then ours exits: start again).
                            let pid = self.child.as_ref().map_or(0, |c| c.id());
                            return serves_as(self.port, pid);
                        }
                    }
                }
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("redis is running")
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the server process.
    pub fn signal(&self, sig: &str) {
        assert!(signal(self.pid(), sig), "kill -s {sig} redis-server failed");
    }

    /// SIGKILL: the store disappears at once.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs a redis-cli command against this server (for white-box checks of
    /// what is stored).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped server would not die of SIGKILL's cleanup otherwise.
            let _ = signal(c.id(), "CONT");
        }
        self.kill();
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Sends `sig` (a name as `kill -s` takes it) to a process; false if it failed.
pub fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// One running instance plus a tenant of its own.
pub struct TestApp {
    pub address: String,
    pub api_key: String,
    pub tenant_id: String,
    pub client: reqwest::Client,
    pub redis: Option<RedisServer>,
    /// Keeps a Cluster or Sentinel topology running while the app lives.
    pub topology: Option<Box<dyn std::any::Any + Send + Sync>>,
}

pub fn settings(redis_url: Option<String>) -> Settings {
    let mut s = Settings::for_tests();
    s.redis_url = redis_url;
    s.admin_token = Some(ADMIN_TOKEN.to_string());
    s.workers = Some(2);
    s.store_timeout_ms = 500;
    // Other behaviour is not throttled; the rate-limit tests set their own.
    s.rate_limits = cooplocker::config::RateLimits {
        free: 1_000_000,
        starter: 1_000_000,
        pro: 1_000_000,
        enterprise: 1_000_000,
    };
    s.token_exchange_per_ip = 100_000;
    s.auth_failures_per_ip = 100_000;
    s
}

/// Starts one instance with the given settings; returns its base URL and handle.
pub async fn start_instance(settings: Settings) -> (String, actix_web::dev::ServerHandle) {
    let app = Application::build(&settings)
        .await
        .expect("the application failed to build");
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    (address, handle)
}

pub fn client() -> reqwest::Client {
    cooplocker::tokens::init_crypto().expect("crypto self-test");
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

pub async fn spawn_app(kind: Kind) -> TestApp {
    spawn_app_with(kind, |_| {}).await
}

/// [`spawn_app`] with settings adjusted by `tweak`.
pub async fn spawn_app_with(kind: Kind, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let redis = match kind {
        Kind::Redis => Some(RedisServer::start()),
        _ => None,
    };
    let (url, topology): (Option<String>, Option<Box<dyn std::any::Any + Send + Sync>>) = match kind
    {
        Kind::Redis => (redis.as_ref().map(|r| r.url()), None),
        Kind::Embedded => (None, None),
        Kind::Cluster => {
            let c = crate::topologies::RedisCluster::start();
            (Some(c.url()), Some(Box::new(c)))
        }
        Kind::Sentinel => {
            let s = crate::topologies::SentinelSet::start();
            (Some(s.url()), Some(Box::new(s)))
        }
    };
    let mut s = settings(url);
    tweak(&mut s);
    let (address, _handle) = start_instance(s).await;
    let client = client();
    let (tenant_id, api_key) = create_tenant(&client, &address, "test", "pro").await;
    TestApp {
        address,
        api_key,
        tenant_id,
        client,
        redis,
        topology,
    }
}

/// Creates a tenant through the admin API; returns (tenant id, default key).
pub async fn create_tenant(
    client: &reqwest::Client,
    address: &str,
    name: &str,
    tier: &str,
) -> (String, String) {
    let res = client
        .post(format!("{address}/api/v1/admin/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": name, "tier": tier}))
        .send()
        .await
        .expect("create tenant request");
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.expect("tenant json");
    (
        body["tenant"]["id"]
            .as_str()
            .expect("tenant id")
            .to_string(),
        body["apiKey"]["key"].as_str().expect("api key").to_string(),
    )
}

/// A response reduced to what tests assert on.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Asserts the contract's error shape and returns the code.
    pub fn error_code(&self) -> &str {
        let ct = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "error without JSON content type: {self:?}"
        );
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "error without message: {self:?}"
        );
        assert!(self.body["error"]["details"].is_array(), "{self:?}");
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn results(&self) -> &Vec<Value> {
        self.body["results"]
            .as_array()
            .unwrap_or_else(|| panic!("no results in {self:?}"))
    }
}

pub async fn send(
    client: &reqwest::Client,
    method: Method,
    url: String,
    key: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut req = client.request(method, url);
    if let Some(k) = key {
        req = req.header("X-Api-Key", k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("request failed to send");
    into_reply(res).await
}

pub async fn into_reply(res: reqwest::Response) -> Reply {
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Reply {
        status,
        headers,
        body,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// The operator's force release of `resource` (admin API).
    pub async fn force_release(&self, resource: &str) -> Reply {
        self.admin(
            Method::DELETE,
            &format!("/tenants/{}/reservations/{resource}", self.tenant_id),
            None,
        )
        .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        send(
            &self.client,
            Method::POST,
            self.url(path),
            Some(&self.api_key),
            Some(body),
        )
        .await
    }

    pub async fn post_as(&self, key: &str, path: &str, body: Value) -> Reply {
        send(
            &self.client,
            Method::POST,
            self.url(path),
            Some(key),
            Some(body),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        send(
            &self.client,
            Method::GET,
            self.url(path),
            Some(&self.api_key),
            None,
        )
        .await
    }

    pub async fn get_as(&self, key: &str, path: &str) -> Reply {
        send(&self.client, Method::GET, self.url(path), Some(key), None).await
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self
            .client
            .request(method, self.url(&format!("/api/v1/admin{path}")))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        into_reply(req.send().await.expect("admin request")).await
    }

    pub async fn reserve(&self, items: Value) -> Reply {
        self.post("/api/v1/Reservation/reserve", items).await
    }

    pub async fn unreserve(&self, items: Value) -> Reply {
        self.post("/api/v1/Reservation/unreserve", items).await
    }

    pub async fn extend(&self, items: Value) -> Reply {
        self.post("/api/v1/Reservation/extend", items).await
    }

    pub async fn check(&self, items: Value) -> Reply {
        self.post("/api/v1/Reservation/check", items).await
    }

    /// Reserves one resource; returns the RESERVED result.
    pub async fn reserve_one(&self, resource: &str, requester: &str, ttl: Option<u64>) -> Value {
        let mut item = json!({"resource": resource, "requester": requester});
        if let Some(t) = ttl {
            item["ttlSeconds"] = json!(t);
        }
        let r = self.reserve(json!([item])).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let first = r.results()[0].clone();
        assert_eq!(first["status"], "RESERVED", "{first}");
        first
    }

    pub async fn check_status(&self, resource: &str) -> String {
        let r = self.check(json!([{"resource": resource}])).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        r.results()[0]["status"].as_str().unwrap_or("").to_string()
    }

    /// Every listed resource, following cursors.
    pub async fn list_all(&self, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let sep = if query.is_empty() { "" } else { "&" };
            let path = match &cursor {
                Some(c) => format!("/api/v1/Reservation?{query}{sep}cursor={c}"),
                None => format!("/api/v1/Reservation?{query}"),
            };
            let r = self.get(&path).await;
            assert_eq!(r.status, StatusCode::OK, "{r:?}");
            out.extend(
                r.body["reservations"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
            match r.body["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
        panic!("listing did not end");
    }
}

/// Polls `f` until it returns true or `within` passes; returns the time taken.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if f().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Runs one behavioural test against both stores.
#[macro_export]
macro_rules! both_stores {
    ($($f:ident),* $(,)?) => {
        $(
            mod $f {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    let app = $crate::helpers::spawn_app($crate::helpers::Kind::Redis).await;
                    super::$f(app).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn embedded() {
                    let app = $crate::helpers::spawn_app($crate::helpers::Kind::Embedded).await;
                    super::$f(app).await;
                }
            }
        )*
    };
}

/// Runs one behavioural test against both stores and against Redis Cluster and
/// Redis Sentinel topologies (the core suite).
#[macro_export]
macro_rules! every_topology {
    ($($f:ident),* $(,)?) => {
        $(
            mod $f {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    let app = $crate::helpers::spawn_app($crate::helpers::Kind::Redis).await;
                    super::$f(app).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn embedded() {
                    let app = $crate::helpers::spawn_app($crate::helpers::Kind::Embedded).await;
                    super::$f(app).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn cluster() {
                    let app = $crate::helpers::spawn_app($crate::helpers::Kind::Cluster).await;
                    super::$f(app).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sentinel() {
                    let app = $crate::helpers::spawn_app($crate::helpers::Kind::Sentinel).await;
                    super::$f(app).await;
                }
            }
        )*
    };
}

/// The two stores, driven directly (no HTTP): one on `redis`, one embedded,
/// each with a fresh tenant `name` and an unmetered caller of it.
pub async fn raw_stores(
    redis: &RedisServer,
    name: &str,
) -> Vec<(
    &'static str,
    Box<dyn cooplocker::store::Store>,
    cooplocker::store::Caller,
)> {
    use cooplocker::domain::{TenantName, Tier};
    use cooplocker::store::{embedded::EmbeddedStore, redis::RedisOptions, redis::RedisStore};
    let on_redis = RedisStore::connect(RedisOptions {
        url: redis.url(),
        op_timeout: Duration::from_millis(500),
        events_retain: 100,
    })
    .await
    .expect("redis store");
    let stores: Vec<(&'static str, Box<dyn cooplocker::store::Store>)> = vec![
        ("redis", Box::new(on_redis)),
        ("embedded", Box::new(EmbeddedStore::new())),
    ];
    let mut out = Vec::new();
    for (kind, store) in stores {
        let (tenant, _) = store
            .create_tenant(&TenantName::parse(name).expect("name"), Tier::Pro, None)
            .await
            .expect("tenant");
        let caller = cooplocker::store::Caller {
            tenant: tenant.id,
            label: "default".into(),
            quota: None,
            idempotency: None,
        };
        out.push((kind, store, caller));
    }
    out
}

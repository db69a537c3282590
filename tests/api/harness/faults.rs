//! The fault-injection run: three instances (real processes of the binary
//! under test: the test profile's build, debug by default) on one durable
//! Redis, each behind its own TCP proxy; 120 naive clients taking 320
//! resources with a 2 s TTL, 30% of their reserves a batch of several, a
//! quarter of them waiting in line (up to 1 s), a fifth of the resources
//! semaphores or read-write locks (contract section 15), and exclusive holders
//! writing to a fenced test resource, well over 1,000 calls/s; one fault every
//! few seconds; then heal, final operations, the history checker and the load
//! and availability figures.
//!
//! Duration: `COOPLOCKER_HARNESS_SECS` (default 60); seed:
//! `COOPLOCKER_HARNESS_SEED` (default random, printed). `bash scripts/harness.sh
//! --duration 300` runs it longer.

use super::history::{check, FencedResource, Grant, GrantKind, Verdict};
use super::proxy::{Link, Proxy};
use crate::helpers::{create_tenant, free_port, signal, RedisServer, ADMIN_TOKEN};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const INSTANCES: usize = 3;
/// Clients, each bound to one instance (`id % INSTANCES`), each with one
/// keep-alive connection at a time: the sockets are bounded by this.
const CLIENTS: usize = 120;
const RESOURCES: usize = 320;
const TTL_SECONDS: u64 = 2;
/// Share of reserve calls that ask for several resources in one batch, and
/// the largest such batch (each item is its own grant, with its own fencing
/// token and expiry).
const BATCH_SHARE: f64 = 0.3;
const MAX_BATCH: usize = 4;
/// Share of reserve calls that wait in line (`atomic=true&waitSeconds=1`):
/// their grants are made by whoever frees the resource, in that release's
/// own step, and judged by the checker like every other grant.
const WAIT_SHARE: f64 = 0.25;
/// Kinds (contract section 15): resource `res-i` with `i % 10 == 0` is a
/// semaphore of `SEM_LIMIT` permits, with `i % 10 == 1` a read-write lock
/// (`SHARED_SHARE` of its requests shared, the others exclusive); the rest are
/// exclusive locks. A resource keeps its kind, so `LIMIT_MISMATCH` never
/// answers (and fails the client if it does).
const SEM_LIMIT: u16 = 3;
const SHARED_SHARE: f64 = 0.75;
/// Critical sections: most are short (up to `SHORT_CRITICAL_MS`), so the
/// clients offer well over 1,000 calls/s; one in `LONG_ONE_IN` runs up to
/// `CRITICAL_MS`, as long as the TTL, so leases also run out under holders
/// that did not heartbeat.
const SHORT_CRITICAL_MS: u64 = 300;
const LONG_ONE_IN: u32 = 10;
const CRITICAL_MS: u64 = 2000;
/// How long a paused process (instance or Redis) stays stopped: longer than the TTL.
const PAUSE: Duration = Duration::from_secs(3);
/// How long a link is cut or slowed.
const LINK_FAULT: Duration = Duration::from_secs(5);

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn rfc3339_ms(v: &Value) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.timestamp_millis())
}

pub fn report_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/harness");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    KillInstance,
    PauseInstance,
    KillRedis,
    PauseRedis,
    CutLink,
    SlowLink,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::KillInstance,
        FaultKind::PauseInstance,
        FaultKind::KillRedis,
        FaultKind::PauseRedis,
        FaultKind::CutLink,
        FaultKind::SlowLink,
    ];

    fn redis_down(self) -> bool {
        matches!(self, FaultKind::KillRedis | FaultKind::PauseRedis)
    }
}

#[derive(Debug, Clone)]
struct FaultWindow {
    kind: FaultKind,
    detail: String,
    /// Which instance, for instance and link faults.
    instance: Option<usize>,
    start_ms: i64,
    /// When the fault was healed (process back, link open).
    end_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Reserve,
    /// A reserve that waits in line (contract section 12).
    WaitReserve,
    Extend,
    Unreserve,
}

impl Call {
    fn path(self) -> &'static str {
        match self {
            Call::Reserve => "/api/v1/Reservation/reserve",
            Call::WaitReserve => "/api/v1/Reservation/reserve?atomic=true&waitSeconds=1",
            Call::Extend => "/api/v1/Reservation/extend",
            Call::Unreserve => "/api/v1/Reservation/unreserve",
        }
    }
}

/// One HTTP call a client made.
#[derive(Debug, Clone)]
struct Op {
    call: Call,
    /// Items in the call's batch.
    items: usize,
    instance: usize,
    sent_ms: i64,
    elapsed_ms: i64,
    /// None: no HTTP answer (connection refused or reset, or timed out).
    status: Option<u16>,
}

pub struct RunConfig {
    pub name: &'static str,
    pub duration: Duration,
    pub warmup: Duration,
    pub fenced: bool,
    pub faults: Vec<FaultKind>,
    pub seed: u64,
}

impl RunConfig {
    pub fn from_env(name: &'static str, default_secs: u64) -> Self {
        let secs = std::env::var("COOPLOCKER_HARNESS_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default_secs);
        let seed = std::env::var("COOPLOCKER_HARNESS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        Self {
            name,
            duration: Duration::from_secs(secs.max(20)),
            warmup: Duration::from_secs(5),
            fenced: true,
            faults: FaultKind::ALL.to_vec(),
            seed,
        }
    }
}

/// One instance: a real process of the binary, its proxy to Redis, its log.
struct Instance {
    port: u16,
    proxy: Proxy,
    child: Option<Child>,
    log: PathBuf,
    restarts: u32,
}

impl Instance {
    async fn start(idx: usize, redis_port: u16, run: &str) -> Self {
        let proxy = Proxy::start(redis_port).await;
        let log = report_dir().join(format!("{run}-instance-{idx}.log"));
        let _ = std::fs::remove_file(&log);
        let mut i = Self {
            port: free_port(),
            proxy,
            child: None,
            log,
            restarts: 0,
        };
        i.spawn();
        i
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("instance log");
        let err = log.try_clone().expect("instance log");
        let child = Command::new(env!("CARGO_BIN_EXE_cooplocker"))
            .env(
                "REDIS_URL",
                format!("redis://127.0.0.1:{}", self.proxy.port),
            )
            .env("COOPLOCKER_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("COOPLOCKER_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("COOPLOCKER_RATE_LIMITS", "enterprise=1000000")
            .env("COOPLOCKER_WORKERS", "2")
            .env("COOPLOCKER_SHUTDOWN_TIMEOUT", "5")
            .env("RUST_LOG", "warn")
            .env_remove("COOPLOCKER_TOKEN_SECRET")
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("start an instance");
        self.child = Some(child);
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = signal(c.id(), "CONT");
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn wait_ready(&self, client: &reqwest::Client, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/readyz", self.base())).send().await {
                if r.status() == 200 {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// (resident memory in KiB, open file descriptors)
    fn usage(&self) -> Option<(u64, usize)> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
        Some((rss, fds))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the clients share.
struct Shared {
    bases: Vec<String>,
    key: String,
    http: reqwest::Client,
    fence: FencedResource,
    grants: Mutex<Vec<Grant>>,
    ops: Mutex<Vec<Op>>,
    stop: AtomicBool,
}

impl Shared {
    /// One POST of a batch; records it; returns (status, body) when an answer came.
    async fn call(&self, instance: usize, call: Call, items: Vec<Value>) -> Option<(u16, Value)> {
        let n = items.len();
        let sent_ms = now_ms();
        let started = Instant::now();
        let res = self
            .http
            .post(format!("{}{}", self.bases[instance], call.path()))
            .header("X-Api-Key", &self.key)
            .json(&Value::Array(items))
            .send()
            .await;
        let answer = match res {
            Ok(r) => {
                let status = r.status().as_u16();
                match r.json::<Value>().await {
                    Ok(v) => Some((status, v)),
                    Err(_) => Some((status, Value::Null)),
                }
            }
            Err(_) => None,
        };
        self.ops.lock().expect("ops").push(Op {
            call,
            items: n,
            instance,
            sent_ms,
            elapsed_ms: started.elapsed().as_millis() as i64,
            status: answer.as_ref().map(|a| a.0),
        });
        answer
    }
}

/// The result for item `i` of a 200 answer to a batch, checked to be about
/// `resource`: the harness must never credit one item's answer to another.
fn item<'a>(answer: &'a Value, i: usize, n: usize, resource: &str) -> &'a Value {
    let results = answer["results"].as_array();
    assert!(
        results.is_some_and(|r| r.len() == n),
        "a 200 answer without one result per item ({n}): {answer}"
    );
    let r = &answer["results"][i];
    assert!(
        r["resource"] == resource,
        "result {i} is not about {resource:?}: {answer}"
    );
    r
}

/// One resource a client was granted: its grant in the history, and what it
/// needs to extend, write and release.
struct Held {
    grant: usize,
    resource: String,
    release: String,
    token: u64,
    kind: GrantKind,
}

/// The kind a request for resource `res-i` asks for (see `SEM_LIMIT`).
fn kind_of(i: usize, rng: &mut StdRng) -> GrantKind {
    match i % 10 {
        0 => GrantKind::Semaphore(SEM_LIMIT),
        1 if rng.random_bool(SHARED_SHARE) => GrantKind::Shared,
        _ => GrantKind::Exclusive,
    }
}

/// A reserve item of that kind.
fn reserve_item(requester: &str, resource: &str, kind: GrantKind) -> Value {
    let mut item = json!({"requester": requester, "resource": resource, "ttlSeconds": TTL_SECONDS});
    match kind {
        GrantKind::Exclusive => {}
        GrantKind::Shared => item["mode"] = json!("shared"),
        GrantKind::Semaphore(n) => item["limit"] = json!(n),
    }
    item
}

/// Records every RESERVED item of a 200 reserve answer as its own grant (the
/// fencing token, `reservedAt` and `expiresAt` the client was told); items
/// ALREADY_HELD, and those of a wait that timed out (TIMED_OUT) or of an
/// atomic batch that did not commit (ABORTED), are not grants; anything else
/// fails the client (and the run).
fn granted(
    shared: &Shared,
    client: usize,
    resources: &[(String, GrantKind)],
    answer: &Value,
) -> Vec<Held> {
    let mut held = Vec::new();
    for (i, (resource, kind)) in resources.iter().enumerate() {
        let r = item(answer, i, resources.len(), resource);
        if r["status"] == "ALREADY_HELD" || r["status"] == "TIMED_OUT" || r["status"] == "ABORTED" {
            continue;
        }
        let parsed = (r["status"] == "RESERVED").then(|| {
            Some((
                r["releaseToken"].as_str()?.to_string(),
                r["fencingToken"].as_u64()?,
                rfc3339_ms(&r["reservedAt"])?,
                rfc3339_ms(&r["expiresAt"])?,
            ))
        });
        let Some(Some((release, token, start_ms, expires_ms))) = parsed else {
            panic!("a reserve answer the harness does not understand: {answer}");
        };
        let mut g = shared.grants.lock().expect("grants");
        g.push(Grant {
            resource: resource.clone(),
            client,
            kind: *kind,
            token,
            start_ms,
            expires_ms,
            release_sent_ms: None,
        });
        held.push(Held {
            grant: g.len() - 1,
            resource: resource.clone(),
            release,
            token,
            kind: *kind,
        });
    }
    held
}

/// A naive client: it never checks its lease before writing (whatever the
/// extend said, however long it was stopped), so the fence alone stands
/// between a stale holder and the data. Each round it asks for one resource
/// or (`BATCH_SHARE`) a batch of 2..=`MAX_BATCH` distinct ones in one call,
/// holds whatever items were granted, writes to each, heartbeats them in one
/// extend call, writes again and releases them in one unreserve call.
async fn client_loop(shared: Arc<Shared>, id: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(id as u64 * 7919));
    let instance = id % INSTANCES;
    let requester = format!("client-{id}");
    while !shared.stop.load(Ordering::SeqCst) {
        let n = if rng.random_bool(BATCH_SHARE) {
            rng.random_range(2..=MAX_BATCH)
        } else {
            1
        };
        let resources: Vec<(String, GrantKind)> = rand::seq::index::sample(&mut rng, RESOURCES, n)
            .into_iter()
            .map(|i| (format!("res-{i}"), kind_of(i, &mut rng)))
            .collect();
        let items = resources
            .iter()
            .map(|(r, kind)| reserve_item(&requester, r, *kind))
            .collect();
        let call = if rng.random_bool(WAIT_SHARE) {
            Call::WaitReserve
        } else {
            Call::Reserve
        };
        let answer = shared.call(instance, call, items).await;
        let held = match &answer {
            Some((200, body)) => granted(&shared, id, &resources, body),
            _ => Vec::new(),
        };
        if held.is_empty() {
            tokio::time::sleep(Duration::from_millis(rng.random_range(10..50))).await;
            continue;
        }
        // Only exclusive holders write; shared holders and permits read.
        for h in held.iter().filter(|h| h.kind == GrantKind::Exclusive) {
            shared.fence.write(&h.resource, h.grant, h.token);
        }
        let critical = if rng.random_ratio(1, LONG_ONE_IN) {
            rng.random_range(0..CRITICAL_MS)
        } else {
            rng.random_range(0..SHORT_CRITICAL_MS)
        };
        if rng.random_bool(0.8) {
            // A heartbeat half-way (most clients send one), one call for all.
            tokio::time::sleep(Duration::from_millis(critical / 2)).await;
            let items = held
                .iter()
                .map(|h| {
                    json!({"requester": requester, "resource": h.resource,
                           "releaseToken": h.release, "ttlSeconds": TTL_SECONDS})
                })
                .collect();
            let answer = shared.call(instance, Call::Extend, items).await;
            if let Some((200, body)) = &answer {
                for (i, h) in held.iter().enumerate() {
                    let r = item(body, i, held.len(), &h.resource);
                    if r["status"] == "EXTENDED" {
                        let Some(e) = rfc3339_ms(&r["expiresAt"]) else {
                            panic!("an extend answer the harness does not understand: {body}");
                        };
                        shared.grants.lock().expect("grants")[h.grant].expires_ms = e;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(critical - critical / 2)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(critical)).await;
        }
        // Only exclusive holders write; shared holders and permits read.
        for h in held.iter().filter(|h| h.kind == GrantKind::Exclusive) {
            shared.fence.write(&h.resource, h.grant, h.token);
        }
        let sent = now_ms();
        {
            let mut g = shared.grants.lock().expect("grants");
            for h in &held {
                g[h.grant].release_sent_ms = Some(sent);
            }
        }
        let items = held
            .iter()
            .map(|h| json!({"requester": requester, "resource": h.resource, "releaseToken": h.release}))
            .collect();
        shared.call(instance, Call::Unreserve, items).await;
    }
}

pub struct Outcome {
    pub verdict: Verdict,
    pub report: String,
    pub other_5xx: usize,
    pub kinds_seen: Vec<FaultKind>,
    pub final_ok: bool,
    pub panics: Vec<String>,
    /// Clients that failed (an answer the harness does not understand).
    pub client_failures: Vec<String>,
}

/// Runs one fault-injection run and returns what the checker found and the figures.
pub async fn run(cfg: RunConfig) -> Outcome {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut redis = RedisServer::start_durable();
    let mut instances = Vec::new();
    for i in 0..INSTANCES {
        instances.push(Instance::start(i, redis.port, cfg.name).await);
    }
    let http = crate::helpers::client();
    for i in &instances {
        assert!(
            i.wait_ready(&http, Duration::from_secs(30)).await,
            "instance on port {} did not become ready; see {}",
            i.port,
            i.log.display()
        );
    }
    let (_, key) = create_tenant(&http, &instances[0].base(), "harness", "enterprise").await;
    // The clients' own connection pool: one connection in use per client at a
    // time, and no more idle ones per instance than it has clients, so the
    // sockets stay bounded however often instances are killed.
    let load_http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(CLIENTS.div_ceil(INSTANCES))
        .build()
        .expect("http client");
    let shared = Arc::new(Shared {
        bases: instances.iter().map(Instance::base).collect(),
        key,
        http: load_http,
        fence: FencedResource::new(cfg.fenced),
        grants: Mutex::new(Vec::new()),
        ops: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let t0 = now_ms();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client_loop(shared.clone(), id, cfg.seed)))
        .collect();

    // Warm-up without faults: the baseline rate.
    tokio::time::sleep(cfg.warmup).await;
    let usage_before: Vec<_> = instances.iter().map(Instance::usage).collect();

    // Faults, one every few seconds, each kind in turn from a shuffled deck.
    let fault_until = started + cfg.duration.saturating_sub(Duration::from_secs(8));
    let mut windows: Vec<FaultWindow> = Vec::new();
    let mut deck: Vec<FaultKind> = Vec::new();
    let mut link_mode = Link::Blackhole;
    while Instant::now() < fault_until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1500..3000))).await;
        if Instant::now() >= fault_until {
            break;
        }
        if deck.is_empty() {
            deck = cfg.faults.clone();
            deck.shuffle(&mut rng);
        }
        let kind = deck.pop().expect("a fault");
        let target = rng.random_range(0..INSTANCES);
        let start_ms = now_ms();
        let (instance, detail) = match kind {
            FaultKind::KillInstance => {
                instances[target].kill();
                tokio::time::sleep(Duration::from_secs(1)).await;
                instances[target].spawn();
                instances[target].restarts += 1;
                let ready = instances[target]
                    .wait_ready(&http, Duration::from_secs(30))
                    .await;
                assert!(ready, "instance {target} did not come back after SIGKILL");
                (Some(target), "SIGKILL, restart after 1 s".to_string())
            }
            FaultKind::PauseInstance => {
                let pid = instances[target].pid().expect("instance running");
                assert!(signal(pid, "STOP"));
                tokio::time::sleep(PAUSE).await;
                assert!(signal(pid, "CONT"));
                (Some(target), format!("SIGSTOP for {} s", PAUSE.as_secs()))
            }
            FaultKind::KillRedis => {
                redis.kill();
                tokio::time::sleep(Duration::from_secs(2)).await;
                redis.restart();
                (None, "SIGKILL, restart after 2 s".to_string())
            }
            FaultKind::PauseRedis => {
                redis.signal("STOP");
                tokio::time::sleep(PAUSE).await;
                redis.signal("CONT");
                (None, format!("SIGSTOP for {} s", PAUSE.as_secs()))
            }
            FaultKind::CutLink => {
                link_mode = if link_mode == Link::Blackhole {
                    Link::Reset
                } else {
                    Link::Blackhole
                };
                instances[target].proxy.set_link(link_mode);
                tokio::time::sleep(LINK_FAULT).await;
                instances[target].proxy.heal();
                (
                    Some(target),
                    format!("{link_mode:?} for {} s", LINK_FAULT.as_secs()),
                )
            }
            FaultKind::SlowLink => {
                let ms = rng.random_range(100..600);
                instances[target]
                    .proxy
                    .set_latency(Duration::from_millis(ms));
                tokio::time::sleep(LINK_FAULT).await;
                instances[target].proxy.heal();
                (
                    Some(target),
                    format!("+{ms} ms per chunk for {} s", LINK_FAULT.as_secs()),
                )
            }
        };
        windows.push(FaultWindow {
            kind,
            detail,
            instance,
            start_ms,
            end_ms: now_ms(),
        });
    }

    // Heal everything, wait until every instance is ready, let traffic settle.
    for i in &instances {
        i.proxy.heal();
        if let Some(pid) = i.pid() {
            let _ = signal(pid, "CONT");
        }
    }
    let _ = signal(redis.pid(), "CONT");
    for (n, i) in instances.iter().enumerate() {
        assert!(
            i.wait_ready(&http, Duration::from_secs(30)).await,
            "instance {n} not ready after healing"
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    shared.stop.store(true, Ordering::SeqCst);
    let stop_ms = now_ms();
    let mut client_failures = Vec::new();
    for (id, c) in clients.into_iter().enumerate() {
        match tokio::time::timeout(Duration::from_secs(30), c).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => client_failures.push(format!("client {id}: {e}")),
            Err(_) => client_failures.push(format!("client {id} did not stop within 30 s")),
        }
    }

    // Final operations on every instance must succeed.
    let mut final_ok = true;
    let mut final_log = String::new();
    for n in 0..INSTANCES {
        let resource = format!("final-{n}");
        let answer = shared
            .call(
                n,
                Call::Reserve,
                vec![
                    json!({"requester": "final", "resource": resource, "ttlSeconds": TTL_SECONDS}),
                ],
            )
            .await;
        let release = answer.as_ref().and_then(|(s, b)| {
            (*s == 200 && b["results"][0]["status"] == "RESERVED")
                .then(|| b["results"][0]["releaseToken"].as_str().map(str::to_string))?
        });
        let released = match &release {
            Some(token) => shared
                .call(
                    n,
                    Call::Unreserve,
                    vec![
                        json!({"requester": "final", "resource": resource, "releaseToken": token}),
                    ],
                )
                .await,
            None => None,
        };
        let unreserved = released
            .as_ref()
            .is_some_and(|(s, b)| *s == 200 && b["results"][0]["status"] == "UNRESERVED");
        if !unreserved {
            final_ok = false;
            let _ = writeln!(
                final_log,
                "  final operation on instance {n} failed: {answer:?}, then {released:?}"
            );
        }
    }
    let usage_after: Vec<_> = instances.iter().map(Instance::usage).collect();
    let end_ms = now_ms();

    // The verdict.
    let grants = shared.grants.lock().expect("grants").clone();
    let writes = shared.fence.writes();
    let verdict = check(&grants, &writes, cfg.fenced);
    let ops = shared.ops.lock().expect("ops").clone();
    let mut panics = Vec::new();
    for i in &instances {
        let text = std::fs::read_to_string(&i.log).unwrap_or_default();
        panics.extend(
            text.lines()
                .filter(|l| l.contains("panicked"))
                .map(str::to_string),
        );
    }

    // Figures.
    let ok = |o: &Op| o.status.is_some_and(|s| (200..300).contains(&s));
    let warm_end = t0 + cfg.warmup.as_millis() as i64;
    let faulted: i64 = windows.iter().map(|w| w.end_ms - w.start_ms).sum();
    // The clients' load between two instants (calls sent, grants made): the
    // final operations come after `stop_ms` and are not part of it.
    let load = |from: i64, to: i64| {
        let secs = (to - from) as f64 / 1000.0;
        let sent: Vec<&Op> = ops
            .iter()
            .filter(|o| o.sent_ms >= from && o.sent_ms < to)
            .collect();
        let ok_calls = sent.iter().filter(|o| ok(o)).count();
        let items: usize = sent.iter().map(|o| o.items).sum();
        let made = grants
            .iter()
            .filter(|g| g.start_ms >= from && g.start_ms < to)
            .count();
        format!(
            "{:.1} ({:.1} answered 2xx; {:.1} items/s; {:.1} grants/s; {} calls, {} grants in {:.1} s)",
            sent.len() as f64 / secs,
            ok_calls as f64 / secs,
            items as f64 / secs,
            made as f64 / secs,
            sent.len(),
            made,
            secs
        )
    };
    let other_5xx = ops
        .iter()
        .filter(|o| o.status.is_some_and(|s| s >= 500 && s != 503))
        .count();
    let mut r = String::new();
    let _ = writeln!(
        r,
        "== fault-injection run {:?}: {} s, seed {}, {} fenced ==",
        cfg.name,
        (end_ms - t0) / 1000,
        cfg.seed,
        if cfg.fenced { "" } else { "UN" }
    );
    let _ = writeln!(r, "faults ({}):", windows.len());
    for w in &windows {
        let _ = writeln!(
            r,
            "  t+{:>5.1}s {:?}{} {} (healed after {} ms)",
            (w.start_ms - t0) as f64 / 1000.0,
            w.kind,
            w.instance
                .map(|i| format!(" instance {i}"))
                .unwrap_or_default(),
            w.detail,
            w.end_ms - w.start_ms
        );
    }
    let _ = writeln!(
        r,
        "history: {} HTTP calls, {} grants, {} writes; {} stale writes, {} rejected",
        ops.len(),
        verdict.grants,
        verdict.writes,
        verdict.stale_writes,
        verdict.stale_rejected
    );
    let of_kind = |k: GrantKind| grants.iter().filter(|g| g.kind == k).count();
    let _ = writeln!(
        r,
        "grants by kind: {} exclusive, {} shared, {} permits of semaphores of {SEM_LIMIT}",
        of_kind(GrantKind::Exclusive),
        of_kind(GrantKind::Shared),
        of_kind(GrantKind::Semaphore(SEM_LIMIT))
    );
    let _ = writeln!(r, "checker: {} violation(s)", verdict.violations.len());
    for v in verdict.violations.iter().take(20) {
        let _ = writeln!(r, "  {v}");
    }
    let _ = writeln!(
        r,
        "load: {CLIENTS} clients ({} per instance) on {RESOURCES} resources, TTL {TTL_SECONDS} s; \
         {:.0}% of reserves a batch of 2-{MAX_BATCH} items (each item its own grant), \
         {:.0}% waiting in line up to 1 s; every tenth resource a semaphore of {SEM_LIMIT}, \
         every tenth a read-write lock ({:.0}% of its requests shared)",
        CLIENTS / INSTANCES,
        100.0 * BATCH_SHARE,
        100.0 * WAIT_SHARE,
        100.0 * SHARED_SHARE
    );
    let _ = writeln!(
        r,
        "calls/s before faults: {}",
        load(t0, warm_end.min(stop_ms))
    );
    let _ = writeln!(
        r,
        "calls/s over the whole run: {} ({:.0}% of it under a fault)",
        load(t0, stop_ms),
        100.0 * faulted as f64 / (stop_ms - t0) as f64
    );
    let count = |call: Call| ops.iter().filter(|o| o.call == call).count();
    let _ = writeln!(
        r,
        "calls by kind: {} reserve ({} of them batches), {} waiting reserve, {} extend, {} unreserve",
        count(Call::Reserve),
        ops.iter()
            .filter(|o| o.call == Call::Reserve && o.items > 1)
            .count(),
        count(Call::WaitReserve),
        count(Call::Extend),
        count(Call::Unreserve)
    );
    // While Redis was down: how quickly the instances said so.
    let mut down_sent = 0usize;
    let mut down_fast_503 = 0usize;
    let mut down_slow_503 = 0usize;
    let mut down_ok = 0usize;
    let mut recoveries = Vec::new();
    for w in windows.iter().filter(|w| w.kind.redis_down()) {
        for o in ops
            .iter()
            .filter(|o| o.sent_ms >= w.start_ms && o.sent_ms < w.end_ms)
        {
            down_sent += 1;
            match o.status {
                Some(503) if o.elapsed_ms <= 1000 => down_fast_503 += 1,
                Some(503) => down_slow_503 += 1,
                Some(s) if (200..300).contains(&s) => down_ok += 1,
                _ => {}
            }
        }
        let first_ok = |inst: Option<usize>| {
            ops.iter()
                .filter(|o| o.sent_ms >= w.end_ms && ok(o) && inst.is_none_or(|i| o.instance == i))
                .map(|o| o.sent_ms + o.elapsed_ms - w.end_ms)
                .min()
        };
        let any = first_ok(None);
        let all = (0..INSTANCES)
            .map(|i| first_ok(Some(i)))
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().max());
        recoveries.push((w.kind, any, all));
    }
    let _ = writeln!(
        r,
        "Redis down: {} of {} calls sent meanwhile ({:.1}%) were answered 503 within 1 s; \
         {} got 503 later, {} succeeded (Redis was back before they finished)",
        down_fast_503,
        down_sent,
        if down_sent == 0 {
            0.0
        } else {
            100.0 * down_fast_503 as f64 / down_sent as f64
        },
        down_slow_503,
        down_ok
    );
    for (kind, any, all) in &recoveries {
        let _ = writeln!(
            r,
            "  after {kind:?}: first success {} ms after Redis returned, every instance {} ms",
            any.map_or("-".into(), |v| v.to_string()),
            all.map_or("-".into(), |v| v.to_string())
        );
    }
    let no_answer_outside = ops
        .iter()
        .filter(|o| {
            o.status.is_none()
                && !windows.iter().any(|w| {
                    matches!(w.kind, FaultKind::KillInstance | FaultKind::PauseInstance)
                        && w.instance == Some(o.instance)
                        && o.sent_ms + o.elapsed_ms >= w.start_ms
                        && o.sent_ms <= w.end_ms + 1000
                })
        })
        .count();
    let _ = writeln!(
        r,
        "other 5xx: {other_5xx}; calls without an answer outside instance kills/pauses: {no_answer_outside}; 503 in all: {}",
        ops.iter().filter(|o| o.status == Some(503)).count()
    );
    for (n, (b, a)) in usage_before.iter().zip(&usage_after).enumerate() {
        let fmt = |u: &Option<(u64, usize)>| {
            u.map_or("-".to_string(), |(rss, fds)| {
                format!("{:.1} MiB RSS, {fds} fds", rss as f64 / 1024.0)
            })
        };
        let _ = writeln!(
            r,
            "instance {n}: before {} / after {}{}",
            fmt(b),
            fmt(a),
            if instances[n].restarts > 0 {
                format!(" (restarted {}x: a new process)", instances[n].restarts)
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        r,
        "final operations after healing: {}",
        if final_ok { "all succeeded" } else { "FAILED" }
    );
    r.push_str(&final_log);
    if !panics.is_empty() {
        let _ = writeln!(r, "PANICS in instance logs: {panics:?}");
    }
    if !client_failures.is_empty() {
        let _ = writeln!(r, "CLIENTS FAILED: {client_failures:?}");
    }
    let _ = std::fs::write(report_dir().join(format!("{}.txt", cfg.name)), &r);
    println!("{r}");
    let mut kinds_seen: Vec<FaultKind> = Vec::new();
    for w in &windows {
        if !kinds_seen.contains(&w.kind) {
            kinds_seen.push(w.kind);
        }
    }
    Outcome {
        verdict,
        report: r,
        other_5xx,
        kinds_seen,
        final_ok,
        panics,
        client_failures,
    }
}

//! Fleet mode: every piece of state lives in Redis, so any instance can answer any
//! request. Each batch endpoint is one `EVALSHA` of a script from `lua/` (loaded
//! once; `redis::Script` reloads it on `NOSCRIPT`); time comes from Redis `TIME`
//! inside the scripts. All keys of a tenant carry the `{tenantId}` hash tag and
//! every key a script touches is passed in `KEYS`, so the scripts run unchanged
//! on Redis Cluster.
//!
//! Key layout (T = tenant id):
//! - `cl:{T}:tenant` hash id/name/tier/createdAt/jwt; `cl:{T}:keys` hash
//!   keyId → JSON record with the secret's SHA-256
//! - `cl:{T}:r:<resource>` the reservation (hash, `PEXPIREAT` at its expiry)
//! - `cl:{T}:f:<resource>` last fencing token of the resource
//! - `cl:{T}:idx` / `cl:{T}:q:<requester>` sorted-set indexes for listing
//! - `cl:{T}:exp` / `cl:{T}:meta` expiry deadlines for the sweeper
//! - `cl:tenants` registry of tenant ids; `cl:apikey:<sha256>` → `T keyId`
//! - `cl:{T}:ev` the tenant's event stream (history for resume, `MAXLEN ~`), and
//!   the channel of the same name its live events are published on
//! - channel `cl:auth`: tenant ids whose cached credentials must be dropped
//! - `cl:jwt-iss:<sha256(issuer)>` set of tenants whose JWT settings name the
//!   issuer; `cl:token-secret` the generated key exchanged tokens are signed with
//! - `cl:{T}:rl:<tier>:<read|write>` a rate-limit partition's GCRA state

use super::topology::Conn;
use super::{
    Caller, CheckOutcome, ExtendItem, ExtendOutcome, Invalidation, KeyCreateError, ListPage,
    ListQuery, LockOutcome, LockRequest, Metered, Principal, Quota, RateDecision, ReleaseByName,
    ReleaseItem, ReleaseOutcome, Releaser, ReserveItem, ReserveOutcome, Store, StoreError,
    StoreResult, TenantPatch, FENCE_RETENTION_MS,
};
use crate::domain::{
    ApiKeyInfo, Holding, IssuedKey, KeyId, Millis, ReleaseToken, Resource, Tenant, TenantId,
    TenantName, Tier,
};
use crate::events::{Event, EventId, EventKind, History, Live};
use async_trait::async_trait;
use futures_util::StreamExt;
use redis::{Script, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot};

macro_rules! script {
    ($name:ident, $file:literal) => {
        static $name: LazyLock<Script> =
            LazyLock::new(|| Script::new(include_str!(concat!("../../lua/", $file))));
    };
    // A script that emits events: the events.lua prelude goes first.
    ($name:ident, events, $file:literal) => {
        static $name: LazyLock<Script> = LazyLock::new(|| {
            Script::new(concat!(
                include_str!("../../lua/events.lua"),
                include_str!(concat!("../../lua/", $file))
            ))
        });
    };
    // A script a tenant request runs: its body is wrapped in a function that
    // meter.lua calls only when the rate limit allows (see `meter`), after the
    // events.lua prelude when it emits events.
    ($name:ident, metered, $file:literal) => {
        static $name: LazyLock<Script> = LazyLock::new(|| {
            Script::new(concat!(
                "local function body()\n",
                include_str!(concat!("../../lua/", $file)),
                "\nend\n",
                include_str!("../../lua/meter.lua")
            ))
        });
    };
    ($name:ident, metered, events, $file:literal) => {
        static $name: LazyLock<Script> = LazyLock::new(|| {
            Script::new(concat!(
                include_str!("../../lua/events.lua"),
                "local function body()\n",
                include_str!(concat!("../../lua/", $file)),
                "\nend\n",
                include_str!("../../lua/meter.lua")
            ))
        });
    };
}

script!(RESERVE, metered, events, "reserve.lua");
script!(UNRESERVE, metered, events, "unreserve.lua");
script!(EXTEND, metered, events, "extend.lua");
script!(CHECK, metered, "check.lua");
script!(LIST_RANGE, metered, "list_range.lua");
script!(LIST_READ, "list_read.lua");
script!(SWEEP_DUE, "sweep_due.lua");
script!(SWEEP_EXPIRE, events, "sweep_expire.lua");
script!(RELEASE, metered, events, "release.lua");
script!(RATE_LIMIT, "rate_limit.lua");
script!(EVENTS_READ, "events_read.lua");
script!(KEY_ADD, "key_add.lua");
script!(KEY_ROTATE, "key_rotate.lua");
script!(TENANT_UPDATE, "tenant_update.lua");

const AUTH_CHANNEL: &str = "cl:auth";
/// Short lease that lets one instance of the fleet sweep per round; the others
/// skip. Correctness does not depend on it (the scripts are idempotent), only
/// the load does: without it every instance would read every tenant.
const SWEEP_LEASE: &str = "cl:sweep-lease";
const SWEEP_LEASE_MS: u64 = 400;
const TENANTS: &str = "cl:tenants";
/// Expired reservations retired per script call.
const SWEEP_BATCH: usize = 200;

/// Key names, in one place.
mod keys {
    use crate::domain::TenantId;

    fn tagged(t: &TenantId, suffix: &str) -> String {
        format!("cl:{{{}}}:{suffix}", t.as_str())
    }
    fn tagged_bytes(t: &TenantId, kind: &str, name: &str) -> Vec<u8> {
        let mut k = format!("cl:{{{}}}:{kind}:", t.as_str()).into_bytes();
        k.extend_from_slice(name.as_bytes());
        k
    }
    pub fn tenant(t: &TenantId) -> String {
        tagged(t, "tenant")
    }
    pub fn api_keys(t: &TenantId) -> String {
        tagged(t, "keys")
    }
    pub fn index(t: &TenantId) -> String {
        tagged(t, "idx")
    }
    pub fn expiries(t: &TenantId) -> String {
        tagged(t, "exp")
    }
    /// The tenant's event stream; its live channel has the same name.
    pub fn events(t: &TenantId) -> String {
        tagged(t, "ev")
    }
    pub fn meta(t: &TenantId) -> String {
        tagged(t, "meta")
    }
    pub fn lock(t: &TenantId, resource: &str) -> Vec<u8> {
        tagged_bytes(t, "r", resource)
    }
    pub fn fence(t: &TenantId, resource: &str) -> Vec<u8> {
        tagged_bytes(t, "f", resource)
    }
    pub fn by_requester(t: &TenantId, requester: &str) -> Vec<u8> {
        tagged_bytes(t, "q", requester)
    }
    pub fn all_of(t: &TenantId) -> String {
        format!("cl:{{{}}}:*", t.as_str())
    }
    pub fn key_hash(hash: &str) -> String {
        format!("cl:apikey:{hash}")
    }
    /// Set of the tenants whose JWT settings name an issuer.
    pub fn issuer(issuer: &str) -> String {
        format!("cl:jwt-iss:{}", crate::domain::hash_secret(issuer))
    }
    /// The fleet's generated key for signing exchanged tokens.
    pub const TOKEN_SECRET: &str = "cl:token-secret";
}

/// Connection settings that bound every store call.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub url: String,
    /// An operation that takes longer is answered `STORE_UNAVAILABLE`.
    pub op_timeout: Duration,
    /// Events kept per tenant for resume (approximately: `XADD MAXLEN ~`, which
    /// keeps at least this many).
    pub events_retain: u64,
}

#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    op_timeout: Duration,
    retain: u64,
    invalidations: broadcast::Sender<Invalidation>,
    subscribed: Arc<AtomicBool>,
    live: broadcast::Sender<Live>,
    /// Requests to the subscriber task to follow or drop a tenant's channel.
    subscriber: mpsc::UnboundedSender<SubCmd>,
}

enum SubCmd {
    Follow(TenantId, oneshot::Sender<StoreResult<()>>),
    Unfollow(TenantId),
}

impl RedisStore {
    /// Connects (lazily: the service starts, unready, while Redis is down) and
    /// starts the invalidation subscriber.
    pub async fn connect(options: RedisOptions) -> anyhow::Result<Self> {
        let topology =
            super::topology::parse(&options.url).map_err(|e| anyhow::anyhow!("REDIS_URL {e}"))?;
        let conn = Conn::new(&topology, options.op_timeout)
            .map_err(|e| anyhow::anyhow!("cannot set up the Redis connection: {e}"))?;
        conn.watch_master();
        let (invalidations, _) = broadcast::channel(1024);
        let (live, _) = broadcast::channel(4096);
        let (subscriber, commands) = mpsc::unbounded_channel();
        let subscribed = Arc::new(AtomicBool::new(false));
        tokio::spawn(run_subscriber(
            conn.clone(),
            topology,
            Feeds {
                invalidations: invalidations.clone(),
                live: live.clone(),
                subscribed: subscribed.clone(),
                op_timeout: options.op_timeout,
            },
            commands,
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                op_timeout: options.op_timeout,
                retain: options.events_retain,
                invalidations,
                subscribed,
                live,
                subscriber,
            }),
        })
    }

    /// Runs a store operation under the operation timeout, mapping failures.
    async fn run<T, F>(&self, what: &'static str, op: F) -> StoreResult<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.inner.op_timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(what, e)),
            Err(_) => Err(StoreError::Unavailable(format!("{what}: timed out"))),
        };
        let error = match &result {
            Err(StoreError::Unavailable(_)) => Some("unavailable"),
            Err(StoreError::Internal(_)) => Some("internal"),
            _ => None,
        };
        crate::metrics::store_call(what, started.elapsed().as_secs_f64(), error);
        result
    }

    fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    async fn publish_invalidation(&self, tenant: &TenantId) -> StoreResult<()> {
        let mut c = self.conn();
        self.run("publish", async move {
            redis::cmd("PUBLISH")
                .arg(AUTH_CHANNEL)
                .arg(tenant.as_str())
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .map(|_| ())
    }

    /// Runs reserve.lua: -1 (tenant gone), -2 (cap reached) or one row per item.
    async fn run_reserve(
        &self,
        caller: &Caller,
        items_in: &[ReserveArgs<'_>],
        cap: usize,
    ) -> StoreResult<Metered<Value>> {
        let t = &caller.tenant;
        let mut inv = RESERVE.prepare_invoke();
        inv.key(keys::index(t))
            .key(keys::expiries(t))
            .key(keys::meta(t))
            .key(keys::tenant(t))
            .key(keys::events(t));
        inv.arg(caller.label.as_str())
            .arg(items_in.len())
            .arg(FENCE_RETENTION_MS)
            .arg(self.inner.retain)
            .arg(cap);
        for it in items_in {
            inv.key(keys::lock(t, it.resource))
                .key(keys::fence(t, it.resource))
                .key(keys::by_requester(t, it.requester));
            inv.arg(it.resource)
                .arg(it.requester)
                .arg(it.ttl_ms)
                .arg(it.token.as_str())
                .arg(it.secret_hash);
        }
        meter(&mut inv, t, caller.quota.as_ref());
        let mut c = self.conn();
        let reply = self
            .run("reserve", async { inv.invoke_async(&mut c).await })
            .await?;
        metered_reply(reply, caller.quota.as_ref())
    }

    /// Retires the expired reservations of every tenant: a few hundred per tenant
    /// per call, when this instance holds the sweep lease. Idempotent, so two
    /// instances sweeping at once (a lease that ran out mid-round) do no harm.
    pub async fn sweep_once(&self) -> StoreResult<usize> {
        let mut c = self.conn();
        let lease: Option<String> = self
            .run("sweep lease", async {
                redis::cmd("SET")
                    .arg(SWEEP_LEASE)
                    .arg(std::process::id())
                    .arg("NX")
                    .arg("PX")
                    .arg(SWEEP_LEASE_MS)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if lease.is_none() {
            return Ok(0);
        }
        let mut retired = 0;
        let mut after: Option<TenantId> = None;
        loop {
            let (ids, next) = self.tenant_ids(after.as_ref(), 500).await?;
            let results =
                futures_util::future::join_all(ids.iter().map(|t| self.sweep_tenant(t))).await;
            for r in results {
                retired += r?;
            }
            match next {
                Some(n) => after = Some(n),
                None => return Ok(retired),
            }
        }
    }

    /// Retires a tenant's due reservations, a batch at a time, for at most about
    /// the sweep period, so a mass expiry is announced promptly.
    async fn sweep_tenant(&self, tenant: &TenantId) -> StoreResult<usize> {
        let started = Instant::now();
        let mut retired = 0;
        loop {
            let (n, full) = self.sweep_tenant_batch(tenant).await?;
            retired += n;
            if !full || started.elapsed() > Duration::from_millis(SWEEP_LEASE_MS) {
                return Ok(retired);
            }
        }
    }

    /// One batch of [`Self::sweep_tenant`]: (retired, whether the batch was full).
    async fn sweep_tenant_batch(&self, tenant: &TenantId) -> StoreResult<(usize, bool)> {
        let mut c = self.conn();
        let due: Vec<Vec<u8>> = self
            .run("sweep_due", async {
                SWEEP_DUE
                    .key(keys::expiries(tenant))
                    .key(keys::meta(tenant))
                    .arg(SWEEP_BATCH)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if due.is_empty() {
            return Ok((0, false));
        }
        let full = due.len() >= 2 * SWEEP_BATCH;
        let mut inv = SWEEP_EXPIRE.prepare_invoke();
        inv.key(keys::index(tenant))
            .key(keys::expiries(tenant))
            .key(keys::meta(tenant))
            .key(keys::events(tenant));
        let mut n = 0;
        let mut args: Vec<Vec<u8>> = Vec::new();
        for pair in due.chunks(2) {
            let [tok, meta] = pair else { continue };
            let parsed: Option<SweepMeta> = serde_json::from_slice(meta).ok();
            let (res, rq) = parsed.map(|m| (m.r, m.q)).unwrap_or_default();
            inv.key(keys::lock(tenant, &res))
                .key(keys::by_requester(tenant, &rq));
            args.push(tok.clone());
            args.push(res.into_bytes());
            args.push(rq.into_bytes());
            n += 1;
        }
        inv.arg(n).arg(self.inner.retain);
        for a in args {
            inv.arg(a);
        }
        let retired: usize = self
            .run("sweep_expire", async { inv.invoke_async(&mut c).await })
            .await?;
        Ok((retired, full))
    }

    async fn tenant_ids(
        &self,
        after: Option<&TenantId>,
        limit: usize,
    ) -> StoreResult<(Vec<TenantId>, Option<TenantId>)> {
        let min = match after {
            Some(t) => format!("({}", t.as_str()),
            None => "-".to_string(),
        };
        let mut c = self.conn();
        let ids: Vec<String> = self
            .run("list tenants", async {
                redis::cmd("ZRANGEBYLEX")
                    .arg(TENANTS)
                    .arg(min)
                    .arg("+")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit + 1)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut ids: Vec<TenantId> = ids.iter().filter_map(|s| TenantId::parse(s).ok()).collect();
        let next = if ids.len() > limit {
            ids.truncate(limit);
            ids.last().cloned()
        } else {
            None
        };
        Ok((ids, next))
    }

    async fn load_tenant(&self, id: &TenantId) -> StoreResult<Option<Tenant>> {
        let mut c = self.conn();
        let fields: Vec<(String, String)> = self
            .run("get tenant", async {
                redis::cmd("HGETALL")
                    .arg(keys::tenant(id))
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(tenant_from_fields(id, &fields))
    }

    /// Adds a tenant to (`SADD`) or removes it from (`SREM`) an issuer's set.
    async fn index_issuer(&self, op: &str, issuer: &str, id: &TenantId) -> StoreResult<()> {
        let mut c = self.conn();
        self.run("issuer index", async {
            redis::cmd(op)
                .arg(keys::issuer(issuer))
                .arg(id.as_str())
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn now_millis(&self) -> StoreResult<Millis> {
        let mut c = self.conn();
        let (secs, micros): (u64, u64) = self
            .run("time", async {
                redis::cmd("TIME").query_async(&mut c).await
            })
            .await?;
        Ok(secs * 1000 + micros / 1000)
    }

    async fn add_key(
        &self,
        tenant: &TenantId,
        label: &str,
        secret: Option<String>,
    ) -> StoreResult<Result<IssuedKey, KeyCreateError>> {
        let id = KeyId::generate();
        let secret = secret.unwrap_or_else(crate::domain::generate_secret);
        let hash = crate::domain::hash_secret(&secret);
        let record = serde_json::json!({"id": id.as_str(), "label": label, "hash": hash});
        let mut prefix = record.to_string();
        prefix.pop(); // drop '}' so the script can append createdAt
        let limit = |t: Tier| t.key_limit().map_or(-1, |l| l as i64);
        let mut c = self.conn();
        let reply: Vec<i64> = self
            .run("add key", async {
                KEY_ADD
                    .key(keys::tenant(tenant))
                    .key(keys::api_keys(tenant))
                    .arg(id.as_str())
                    .arg(prefix)
                    .arg(limit(Tier::Free))
                    .arg(limit(Tier::Starter))
                    .arg(limit(Tier::Pro))
                    .arg(limit(Tier::Enterprise))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match reply.as_slice() {
            [1, created_at] => {
                let mut c = self.conn();
                let mapping = format!("{} {}", tenant.as_str(), id.as_str());
                self.run("map key", async {
                    redis::cmd("SET")
                        .arg(keys::key_hash(&hash))
                        .arg(mapping)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await?;
                Ok(Ok(IssuedKey {
                    info: ApiKeyInfo {
                        id,
                        label: label.to_string(),
                        created_at: u64::try_from(*created_at).unwrap_or(0),
                    },
                    secret,
                }))
            }
            [2, limit] => Ok(Err(KeyCreateError::LimitReached(
                usize::try_from(*limit).unwrap_or(0),
            ))),
            _ => Ok(Err(KeyCreateError::TenantNotFound)),
        }
    }

    async fn key_records(&self, tenant: &TenantId) -> StoreResult<Vec<KeyRecord>> {
        let mut c = self.conn();
        let raw: Vec<(String, String)> = self
            .run("list keys", async {
                redis::cmd("HGETALL")
                    .arg(keys::api_keys(tenant))
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut recs: Vec<KeyRecord> = raw
            .iter()
            .filter_map(|(_, json)| serde_json::from_str(json).ok())
            .collect();
        recs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(recs)
    }
}

#[derive(serde::Deserialize, Default)]
struct SweepMeta {
    #[serde(default)]
    r: String,
    #[serde(default)]
    q: String,
}

#[derive(serde::Deserialize, Clone)]
struct KeyRecord {
    id: String,
    label: String,
    hash: String,
    #[serde(rename = "createdAt", default)]
    created_at: u64,
}

impl KeyRecord {
    fn info(&self) -> Option<ApiKeyInfo> {
        Some(ApiKeyInfo {
            id: KeyId::parse(&self.id).ok()?,
            label: self.label.clone(),
            created_at: self.created_at,
        })
    }
}

fn tenant_from_fields(id: &TenantId, fields: &[(String, String)]) -> Option<Tenant> {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let tier = Tier::parse(get("tier")?).ok()?;
    Some(Tenant {
        id: id.clone(),
        name: get("name").unwrap_or_default().to_string(),
        tier,
        created_at: get("createdAt").and_then(|v| v.parse().ok()).unwrap_or(0),
        jwt: get("jwt")
            .filter(|v| !v.is_empty())
            .and_then(|v| serde_json::from_str(v).ok()),
    })
}

/// Redis I/O failures, timeouts and transient server states (loading, failover,
/// read-only replica) mean the store is unavailable; anything else is a bug.
fn classify(what: &str, e: redis::RedisError) -> StoreError {
    use redis::{ErrorKind, ServerErrorKind as S};
    let transient = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Io
                | ErrorKind::ClusterConnectionNotFound
                | ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::Server(
                    S::BusyLoading
                        | S::TryAgain
                        | S::ClusterDown
                        | S::MasterDown
                        | S::ReadOnly
                        | S::Moved
                        | S::Ask
                )
        );
    if transient {
        StoreError::Unavailable(format!("{what}: {e}"))
    } else {
        StoreError::Internal(format!("{what}: {e}"))
    }
}

/// One item of reserve.lua.
struct ReserveArgs<'a> {
    resource: &'a str,
    requester: &'a str,
    ttl_ms: u64,
    token: ReleaseToken,
    secret_hash: &'a str,
}

/// Where the subscriber task delivers what it hears.
struct Feeds {
    invalidations: broadcast::Sender<Invalidation>,
    live: broadcast::Sender<Live>,
    subscribed: Arc<AtomicBool>,
    op_timeout: Duration,
}

/// The tenant whose event channel this is (`cl:{T}:ev`).
fn tenant_of_channel(channel: &str) -> Option<TenantId> {
    let id = channel.strip_prefix("cl:{")?.strip_suffix("}:ev")?;
    TenantId::parse(id).ok()
}

/// Decodes one published message: a JSON array of
/// `[id, type, resource, requester, label, atMs, expiresAtMs or "", fencingToken]`.
fn live_events(payload: &[u8]) -> Option<Vec<Event>> {
    let rows: Vec<[String; 8]> = serde_json::from_slice(payload).ok()?;
    rows.into_iter()
        .map(|[id, kind, resource, requester, label, at, ea, ft]| {
            Some(Event {
                id: EventId::parse(&id)?,
                kind: EventKind::parse(&kind)?,
                resource,
                requester,
                label,
                at: at.parse().ok()?,
                expires_at: ea.parse().ok(),
                fencing_token: ft.parse().ok()?,
            })
        })
        .collect()
}

/// Decodes one stream entry (`XRANGE` reply row) written by events.lua.
fn stream_event(row: Value) -> Option<Event> {
    let mut parts = items(row).ok()?.into_iter();
    let id = EventId::parse(&as_string(&parts.next()?)?)?;
    let fields = items(parts.next()?).ok()?;
    let get = |name: &str| -> Option<String> {
        fields
            .chunks(2)
            .find(|kv| as_string(&kv[0]).as_deref() == Some(name))
            .and_then(|kv| kv.get(1).and_then(as_string))
    };
    Some(Event {
        id,
        kind: EventKind::parse(&get("t")?)?,
        resource: get("r")?,
        requester: get("q")?,
        label: get("l")?,
        at: get("a")?.parse().ok()?,
        expires_at: get("x")?.parse().ok(),
        fencing_token: get("f")?.parse().ok()?,
    })
}

/// Keeps this instance's one pub/sub connection alive for as long as the process
/// runs: the invalidation channel plus the event channel of every tenant that a
/// local SSE client follows (and only those). Every (re)connect is announced as
/// `Invalidation::All` and `Live::Resync`, because messages published while it
/// was down are lost: the auth cache starts over and the hub catches its clients
/// up from the streams. While it is down the auth cache is bypassed.
async fn run_subscriber(
    conn: Conn,
    topology: super::topology::Topology,
    feeds: Feeds,
    mut commands: mpsc::UnboundedReceiver<SubCmd>,
) {
    let mut followed: HashSet<TenantId> = HashSet::new();
    let mut backoff = Duration::from_millis(50);
    for n in 0.. {
        let channels: Vec<String> = followed.iter().map(keys::events).collect();
        let attempt = async {
            let client = conn.pubsub_client(&topology, n).await?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(AUTH_CHANNEL).await?;
            if !channels.is_empty() {
                pubsub.subscribe(&channels).await?;
            }
            redis::RedisResult::Ok(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(pubsub)) => {
                backoff = Duration::from_millis(50);
                let (mut sink, mut stream) = pubsub.split();
                let _ = feeds.invalidations.send(Invalidation::All);
                let _ = feeds.live.send(Live::Resync);
                feeds.subscribed.store(true, Ordering::SeqCst);
                tracing::info!(tenants = followed.len(), "pub/sub feed subscribed");
                let mut ping = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        msg = stream.next() => match msg {
                            Some(msg) => route_message(&msg, &feeds),
                            None => break,
                        },
                        cmd = commands.recv() => match cmd {
                            None => return,
                            Some(SubCmd::Follow(tenant, reply)) => {
                                let chan = keys::events(&tenant);
                                let done = tokio::time::timeout(
                                    feeds.op_timeout,
                                    sink.subscribe(&chan),
                                ).await;
                                if matches!(done, Ok(Ok(()))) {
                                    followed.insert(tenant);
                                    let _ = reply.send(Ok(()));
                                } else {
                                    let _ = reply.send(Err(StoreError::Unavailable(
                                        "event feed: subscribe failed".into(),
                                    )));
                                    break;
                                }
                            }
                            Some(SubCmd::Unfollow(tenant)) => {
                                if followed.remove(&tenant) {
                                    let chan = keys::events(&tenant);
                                    let done = tokio::time::timeout(
                                        feeds.op_timeout,
                                        sink.unsubscribe(&chan),
                                    ).await;
                                    if !matches!(done, Ok(Ok(()))) {
                                        break;
                                    }
                                }
                            }
                        },
                        _ = ping.tick() => {
                            // A dead peer (a paused or unplugged Redis) sends no FIN;
                            // only a ping that goes unanswered reveals it.
                            // (In RESP2 subscribed mode PING answers an array, so
                            // accept any reply, not just "PONG".)
                            let alive = tokio::time::timeout(
                                Duration::from_millis(900),
                                sink.ping::<Value>(),
                            ).await;
                            if !matches!(alive, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                feeds.subscribed.store(false, Ordering::SeqCst);
                let _ = feeds.invalidations.send(Invalidation::All);
                tracing::warn!("pub/sub feed lost; reconnecting");
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "pub/sub feed: connect failed");
            }
            Err(_) => tracing::debug!("pub/sub feed: connect timed out"),
        }
        // Wait before the next attempt, answering requests meanwhile: a follow
        // cannot be honoured now (its client gets a 503 and retries).
        let pause = tokio::time::sleep(backoff);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(SubCmd::Follow(_, reply)) => {
                        let _ = reply.send(Err(StoreError::Unavailable(
                            "event feed: reconnecting to Redis".into(),
                        )));
                    }
                    Some(SubCmd::Unfollow(tenant)) => {
                        followed.remove(&tenant);
                    }
                },
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Hands one pub/sub message to the feed it belongs to.
fn route_message(msg: &redis::Msg, feeds: &Feeds) {
    let channel = msg.get_channel_name();
    if channel == AUTH_CHANNEL {
        let payload: String = msg.get_payload().unwrap_or_default();
        let inv = TenantId::parse(&payload)
            .map(Invalidation::Tenant)
            .unwrap_or(Invalidation::All);
        let _ = feeds.invalidations.send(inv);
    } else if let Some(tenant) = tenant_of_channel(channel) {
        match live_events(msg.get_payload_bytes()) {
            Some(events) => {
                let _ = feeds.live.send(Live::Batch(tenant, Arc::new(events)));
            }
            None => {
                tracing::error!(%tenant, "undecodable event message; resyncing from the stream");
                let _ = feeds.live.send(Live::Resync);
            }
        }
    }
}

/// Appends a request's rate limit to a metered script call (see meter.lua):
/// after every key and argument of the script's own.
fn meter(inv: &mut redis::ScriptInvocation<'_>, tenant: &TenantId, quota: Option<&Quota>) {
    match quota {
        Some(q) => inv
            .key(q.key(tenant))
            .arg(q.interval_us())
            .arg(q.burst.max(1)),
        None => inv.key(keys::tenant(tenant)).arg(0).arg(1),
    };
}

/// Splits a metered script's reply into the script body's reply and the rate
/// limiter's decision; a refused request is `StoreError::RateLimited`.
fn metered_reply(reply: Value, quota: Option<&Quota>) -> StoreResult<Metered<Value>> {
    let mut parts = items(reply)?.into_iter();
    let (flag, a, b) = (parts.next(), parts.next(), parts.next());
    let num = |v: &Option<Value>| {
        v.as_ref()
            .and_then(as_u64)
            .ok_or_else(|| bad_reply("meter"))
    };
    let limit = quota.map_or(0, |q| q.per_second);
    match flag {
        Some(Value::Int(1)) => Ok(Metered {
            value: parts.next().unwrap_or(Value::Nil),
            rate: match quota {
                Some(_) => Some(RateDecision {
                    allowed: true,
                    limit,
                    remaining: num(&a)?,
                    retry_after_ms: 0,
                    reset_ms: num(&b)?,
                }),
                None => None,
            },
        }),
        Some(Value::Int(0)) => Err(StoreError::RateLimited(RateDecision {
            allowed: false,
            limit,
            remaining: 0,
            retry_after_ms: num(&a)?,
            reset_ms: num(&b)?,
        })),
        _ => Err(bad_reply("meter")),
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn as_opt_millis(v: &Value) -> Option<Millis> {
    match v {
        Value::Int(i) if *i >= 0 => Some(*i as u64),
        _ => None,
    }
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn items(v: Value) -> StoreResult<Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Nil => Ok(Vec::new()),
        other => Err(StoreError::Internal(format!(
            "expected an array from a script, got {other:?}"
        ))),
    }
}

fn bad_reply(what: &str) -> StoreError {
    StoreError::Internal(format!("unexpected reply shape from {what}"))
}

fn holding_from(resource: Resource, parts: &[Value]) -> Option<Holding> {
    // parts: requester, reservedAt, expiresAt, fencingToken, label
    Some(Holding {
        resource,
        requester: as_string(parts.first()?)?,
        reserved_at: as_u64(parts.get(1)?)?,
        expires_at: as_opt_millis(parts.get(2)?),
        fencing_token: as_u64(parts.get(3)?)?,
        api_key_label: parts.get(4).and_then(as_string).unwrap_or_default(),
    })
}

#[async_trait]
impl Store for RedisStore {
    #[tracing::instrument(skip_all, fields(tenant = %caller.tenant, n = items_in.len()))]
    async fn reserve(
        &self,
        caller: &Caller,
        items_in: &[ReserveItem],
    ) -> StoreResult<Metered<Vec<ReserveOutcome>>> {
        let mut tokens = Vec::with_capacity(items_in.len());
        let plain: Vec<ReserveArgs> = items_in
            .iter()
            .map(|it| {
                let token = ReleaseToken::generate();
                tokens.push(token.clone());
                ReserveArgs {
                    resource: it.resource.as_str(),
                    requester: it.requester.as_str(),
                    ttl_ms: it.ttl.map_or(0, |d| d.millis()),
                    token,
                    secret_hash: "",
                }
            })
            .collect();
        let Metered { value: reply, rate } = self.run_reserve(caller, &plain, 0).await?;
        let rows = match reply {
            Value::Int(-1) => return Err(StoreError::TenantGone),
            Value::Int(-2) => return Err(bad_reply("reserve (no cap was set)")),
            reply => items(reply)?,
        };
        if rows.len() != items_in.len() {
            return Err(bad_reply("reserve"));
        }
        let value = rows
            .into_iter()
            .zip(tokens)
            .map(|(row, token)| {
                let row = items(row)?;
                match row.as_slice() {
                    [Value::Int(1), _tok, at, ea, ft] => Ok(ReserveOutcome::Reserved {
                        release_token: token,
                        reserved_at: as_u64(at).ok_or_else(|| bad_reply("reserve"))?,
                        expires_at: as_opt_millis(ea),
                        fencing_token: as_u64(ft).ok_or_else(|| bad_reply("reserve"))?,
                    }),
                    [Value::Int(0), by, ea] => Ok(ReserveOutcome::AlreadyHeld {
                        held_by: as_string(by).unwrap_or_default(),
                        expires_at: as_opt_millis(ea),
                    }),
                    _ => Err(bad_reply("reserve")),
                }
            })
            .collect::<StoreResult<_>>()?;
        Ok(Metered { value, rate })
    }

    #[tracing::instrument(skip_all, fields(tenant = %caller.tenant, n = items_in.len()))]
    async fn unreserve(
        &self,
        caller: &Caller,
        items_in: &[ReleaseItem],
    ) -> StoreResult<Metered<Vec<ReleaseOutcome>>> {
        let t = &caller.tenant;
        let mut inv = UNRESERVE.prepare_invoke();
        inv.key(keys::index(t))
            .key(keys::expiries(t))
            .key(keys::meta(t))
            .key(keys::events(t));
        inv.arg(items_in.len())
            .arg(FENCE_RETENTION_MS)
            .arg(caller.label.as_str())
            .arg(self.inner.retain);
        for it in items_in {
            inv.key(keys::lock(t, it.resource.as_str()))
                .key(keys::fence(t, it.resource.as_str()))
                .key(keys::by_requester(t, it.requester.as_str()));
            inv.arg(it.resource.as_str())
                .arg(it.requester.as_str())
                .arg(it.release_token.as_str());
        }
        meter(&mut inv, t, caller.quota.as_ref());
        let mut c = self.conn();
        let reply: Value = self
            .run("unreserve", async { inv.invoke_async(&mut c).await })
            .await?;
        let Metered { value, rate } = metered_reply(reply, caller.quota.as_ref())?;
        let codes = items(value)?;
        if codes.len() != items_in.len() {
            return Err(bad_reply("unreserve"));
        }
        let value = codes
            .into_iter()
            .map(|code| match code {
                Value::Int(1) => Ok(ReleaseOutcome::Unreserved),
                Value::Int(0) => Ok(ReleaseOutcome::NotHeld),
                Value::Int(2) => Ok(ReleaseOutcome::InvalidToken),
                _ => Err(bad_reply("unreserve")),
            })
            .collect::<StoreResult<_>>()?;
        Ok(Metered { value, rate })
    }

    #[tracing::instrument(skip_all, fields(tenant = %caller.tenant, n = items_in.len()))]
    async fn extend(
        &self,
        caller: &Caller,
        items_in: &[ExtendItem],
    ) -> StoreResult<Metered<Vec<ExtendOutcome>>> {
        let t = &caller.tenant;
        let mut inv = EXTEND.prepare_invoke();
        inv.key(keys::expiries(t))
            .key(keys::meta(t))
            .key(keys::events(t));
        inv.arg(items_in.len())
            .arg(FENCE_RETENTION_MS)
            .arg(caller.label.as_str())
            .arg(self.inner.retain);
        for it in items_in {
            inv.key(keys::lock(t, it.resource.as_str()))
                .key(keys::fence(t, it.resource.as_str()));
            inv.arg(it.resource.as_str())
                .arg(it.requester.as_str())
                .arg(it.release_token.as_str())
                .arg(it.ttl.millis());
        }
        meter(&mut inv, t, caller.quota.as_ref());
        let mut c = self.conn();
        let reply: Value = self
            .run("extend", async { inv.invoke_async(&mut c).await })
            .await?;
        let Metered { value, rate } = metered_reply(reply, caller.quota.as_ref())?;
        let rows = items(value)?;
        if rows.len() != items_in.len() {
            return Err(bad_reply("extend"));
        }
        let value = rows
            .into_iter()
            .map(|row| {
                let row = items(row)?;
                match row.as_slice() {
                    [Value::Int(1), ea] => Ok(ExtendOutcome::Extended {
                        expires_at: as_u64(ea).ok_or_else(|| bad_reply("extend"))?,
                    }),
                    [Value::Int(0)] => Ok(ExtendOutcome::NotHeld),
                    [Value::Int(2)] => Ok(ExtendOutcome::InvalidToken),
                    _ => Err(bad_reply("extend")),
                }
            })
            .collect::<StoreResult<_>>()?;
        Ok(Metered { value, rate })
    }

    #[tracing::instrument(skip_all, fields(tenant = %caller.tenant, n = resources.len()))]
    async fn check(
        &self,
        caller: &Caller,
        resources: &[Resource],
    ) -> StoreResult<Metered<Vec<CheckOutcome>>> {
        let tenant = &caller.tenant;
        let mut inv = CHECK.prepare_invoke();
        for r in resources {
            inv.key(keys::lock(tenant, r.as_str()));
        }
        meter(&mut inv, tenant, caller.quota.as_ref());
        let mut c = self.conn();
        let reply: Value = self
            .run("check", async { inv.invoke_async(&mut c).await })
            .await?;
        let Metered { value, rate } = metered_reply(reply, caller.quota.as_ref())?;
        let rows = items(value)?;
        if rows.len() != resources.len() {
            return Err(bad_reply("check"));
        }
        let value = rows
            .into_iter()
            .zip(resources)
            .map(|(row, r)| {
                let row = items(row)?;
                match row.as_slice() {
                    [Value::Int(1), rest @ ..] => holding_from(r.clone(), rest)
                        .map(CheckOutcome::Held)
                        .ok_or_else(|| bad_reply("check")),
                    [Value::Int(0)] => Ok(CheckOutcome::Free),
                    _ => Err(bad_reply("check")),
                }
            })
            .collect::<StoreResult<_>>()?;
        Ok(Metered { value, rate })
    }

    #[tracing::instrument(skip_all, fields(tenant = %caller.tenant))]
    async fn list(&self, caller: &Caller, query: &ListQuery) -> StoreResult<Metered<ListPage>> {
        let tenant = &caller.tenant;
        let index: Vec<u8> = match &query.requester {
            Some(rq) => keys::by_requester(tenant, rq.as_str()),
            None => keys::index(tenant).into_bytes(),
        };
        let want_rq = query
            .requester
            .as_ref()
            .map(|r| r.as_str().to_string())
            .unwrap_or_default();
        // Lexicographic bounds: start after the cursor (or at the prefix), stop at
        // the end of the prefix range. 0xFF never occurs in UTF-8, so prefix+0xFF
        // is above every name that starts with the prefix.
        let prefix = query
            .prefix
            .as_ref()
            .map(|p| p.as_str().as_bytes().to_vec());
        let mut min: Vec<u8> = match (&query.after, &prefix) {
            (Some(after), Some(p)) if after.as_bytes() < p.as_slice() => [b"[", &p[..]].concat(),
            (Some(after), _) => [b"(", after.as_bytes()].concat(),
            (None, Some(p)) => [b"[", &p[..]].concat(),
            (None, None) => b"-".to_vec(),
        };
        let max: Vec<u8> = match &prefix {
            Some(p) => [b"(", &p[..], &[0xFF]].concat(),
            None => b"+".to_vec(),
        };

        let mut out: Vec<Holding> = Vec::new();
        let mut last_seen: Option<String> = None;
        let mut rate = None;
        // Each round reads at most one page of index entries; dead entries met on
        // the way are removed, so later rounds and pages do not see them again.
        // The request is counted once, by the first round.
        for round in 0..8 {
            let want = query.limit - out.len();
            let quota = caller.quota.as_ref().filter(|_| round == 0);
            let mut inv = LIST_RANGE.prepare_invoke();
            inv.key(&index).arg(&min).arg(&max).arg(want + 1);
            meter(&mut inv, tenant, quota);
            let mut c = self.conn();
            let reply: Value = self
                .run("list index", async { inv.invoke_async(&mut c).await })
                .await?;
            let metered = metered_reply(reply, quota)?;
            if round == 0 {
                rate = metered.rate;
            }
            let members: Vec<Vec<u8>> = items(metered.value)?
                .iter()
                .map(|m| match m {
                    Value::BulkString(b) => Ok(b.clone()),
                    _ => Err(bad_reply("list index")),
                })
                .collect::<StoreResult<_>>()?;
            let more = members.len() > want;
            let page = &members[..members.len().min(want)];
            if page.is_empty() {
                return Ok(Metered {
                    value: ListPage {
                        items: out,
                        next_after: None,
                    },
                    rate,
                });
            }
            let mut inv = LIST_READ.prepare_invoke();
            inv.key(&index).arg(want_rq.as_str());
            for m in page {
                let name = String::from_utf8_lossy(m);
                inv.key(keys::lock(tenant, &name)).arg(m.as_slice());
            }
            let mut c = self.conn();
            let reply: Value = self
                .run("list read", async { inv.invoke_async(&mut c).await })
                .await?;
            for row in items(reply)? {
                let row = items(row)?;
                let (first, rest) = row.split_first().ok_or_else(|| bad_reply("list"))?;
                let name = as_string(first).ok_or_else(|| bad_reply("list"))?;
                let resource = Resource::parse(name).map_err(|_| bad_reply("list"))?;
                out.push(holding_from(resource, rest).ok_or_else(|| bad_reply("list"))?);
            }
            let last = page.last().map(|m| String::from_utf8_lossy(m).into_owned());
            min = [b"(", page.last().map(Vec::as_slice).unwrap_or_default()].concat();
            last_seen = last;
            if !more {
                return Ok(Metered {
                    value: ListPage {
                        items: out,
                        next_after: None,
                    },
                    rate,
                });
            }
            if out.len() >= query.limit {
                break;
            }
        }
        Ok(Metered {
            value: ListPage {
                items: out,
                next_after: last_seen,
            },
            rate,
        })
    }

    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    async fn release_by_name(
        &self,
        tenant: &TenantId,
        resource: &Resource,
        by: &Releaser,
        quota: Option<&Quota>,
    ) -> StoreResult<Metered<ReleaseByName>> {
        let (kind, label, check, presented) = match by {
            Releaser::Admin => ("FORCE_RELEASED", "admin", "0", ""),
            Releaser::Locklock { label, secret_hash } => (
                "UNRESERVED",
                label.as_str(),
                "1",
                secret_hash.as_deref().unwrap_or(""),
            ),
        };
        // The holder's requester names one of the keys, so read it first and let
        // the script confirm it did not change in between.
        let mut holder = String::new();
        let mut rate = None;
        for attempt in 0..5 {
            // Counted once, by the first attempt.
            let quota = quota.filter(|_| attempt == 0);
            let mut c = self.conn();
            let reply: Value = self
                .run("release", async {
                    let mut inv = RELEASE.prepare_invoke();
                    inv.key(keys::index(tenant))
                        .key(keys::expiries(tenant))
                        .key(keys::meta(tenant))
                        .key(keys::lock(tenant, resource.as_str()))
                        .key(keys::fence(tenant, resource.as_str()))
                        .key(keys::by_requester(tenant, &holder))
                        .key(keys::events(tenant))
                        .arg(resource.as_str())
                        .arg(holder.as_str())
                        .arg(FENCE_RETENTION_MS)
                        .arg(self.inner.retain)
                        .arg(kind)
                        .arg(label)
                        .arg(check)
                        .arg(presented);
                    meter(&mut inv, tenant, quota);
                    inv.invoke_async(&mut c).await
                })
                .await?;
            let metered = metered_reply(reply, quota)?;
            if attempt == 0 {
                rate = metered.rate;
            }
            let done = |value| Ok(Metered { value, rate });
            let row = items(metered.value)?;
            match row.as_slice() {
                [Value::Int(1), ..] => return done(ReleaseByName::Released),
                [Value::Int(0)] => return done(ReleaseByName::NotHeld),
                [Value::Int(3)] => return done(ReleaseByName::WrongSecret),
                [Value::Int(2), who] => {
                    holder = as_string(who).ok_or_else(|| bad_reply("release"))?
                }
                _ => return Err(bad_reply("release")),
            }
        }
        Err(StoreError::Unavailable(
            "release: the holder kept changing; try again".into(),
        ))
    }

    #[tracing::instrument(skip_all, fields(tenant = %caller.tenant))]
    async fn lock(&self, caller: &Caller, req: &LockRequest) -> StoreResult<Metered<LockOutcome>> {
        let args = [ReserveArgs {
            resource: req.resource.as_str(),
            requester: req.requester.as_str(),
            ttl_ms: req.ttl.millis(),
            token: ReleaseToken::generate(),
            secret_hash: req.secret_hash.as_deref().unwrap_or(""),
        }];
        let Metered { value: reply, rate } = self
            .run_reserve(caller, &args, req.max_held.unwrap_or(0))
            .await?;
        let done = |value| Ok(Metered { value, rate });
        let row = match reply {
            Value::Int(-1) => return Err(StoreError::TenantGone),
            Value::Int(-2) => return done(LockOutcome::Full),
            reply => items(reply)?
                .into_iter()
                .next()
                .ok_or_else(|| bad_reply("lock"))?,
        };
        match items(row)?.as_slice() {
            [Value::Int(1), _tok, _at, ea, ft] => done(LockOutcome::Acquired {
                expires_at: as_u64(ea).ok_or_else(|| bad_reply("lock"))?,
                fencing_token: as_u64(ft).ok_or_else(|| bad_reply("lock"))?,
            }),
            [Value::Int(0), ..] => done(LockOutcome::Locked),
            _ => Err(bad_reply("lock")),
        }
    }

    async fn ensure_tenant(&self, id: &TenantId, name: &TenantName, tier: Tier) -> StoreResult<()> {
        let now = self.now_millis().await?;
        let mut c = self.conn();
        self.run("ensure tenant", async {
            // Not MULTI: the registry and the tenant live in different cluster
            // slots, and every step is idempotent.
            let key = keys::tenant(id);
            let now = now.to_string();
            let fields = [
                ("id", id.as_str()),
                ("name", name.as_str()),
                ("tier", tier.as_str()),
                ("createdAt", now.as_str()),
                ("jwt", ""),
            ];
            let mut pipe = redis::pipe();
            for (field, value) in fields {
                pipe.cmd("HSETNX").arg(&key).arg(field).arg(value);
            }
            pipe.cmd("ZADD")
                .arg(TENANTS)
                .arg("NX")
                .arg(0)
                .arg(id.as_str());
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    async fn rate_limit(
        &self,
        key: &str,
        per_second: u32,
        burst: u32,
    ) -> StoreResult<RateDecision> {
        let interval_us = super::interval_us(per_second);
        let mut c = self.conn();
        let reply: Vec<u64> = self
            .run("rate limit", async {
                RATE_LIMIT
                    .key(key)
                    .arg(interval_us)
                    .arg(burst.max(1))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match reply.as_slice() {
            [allowed, remaining, retry, reset] => Ok(RateDecision {
                allowed: *allowed == 1,
                limit: per_second,
                remaining: *remaining,
                retry_after_ms: *retry,
                reset_ms: *reset,
            }),
            _ => Err(bad_reply("rate limit")),
        }
    }

    async fn create_tenant(
        &self,
        name: &TenantName,
        tier: Tier,
        secret: Option<String>,
    ) -> StoreResult<(Tenant, IssuedKey)> {
        let id = TenantId::generate();
        let now = self.now_millis().await?;
        let mut c = self.conn();
        self.run("create tenant", async {
            redis::cmd("HSET")
                .arg(keys::tenant(&id))
                .arg("id")
                .arg(id.as_str())
                .arg("name")
                .arg(name.as_str())
                .arg("tier")
                .arg(tier.as_str())
                .arg("createdAt")
                .arg(now)
                .arg("jwt")
                .arg("")
                .query_async::<()>(&mut c)
                .await
        })
        .await?;
        let key = match self.add_key(&id, "default", secret).await? {
            Ok(k) => k,
            Err(e) => return Err(StoreError::Internal(format!("default key: {e:?}"))),
        };
        let mut c = self.conn();
        self.run("register tenant", async {
            redis::cmd("ZADD")
                .arg(TENANTS)
                .arg(0)
                .arg(id.as_str())
                .query_async::<()>(&mut c)
                .await
        })
        .await?;
        let tenant = Tenant {
            id,
            name: name.as_str().to_string(),
            tier,
            created_at: now,
            jwt: None,
        };
        Ok((tenant, key))
    }

    async fn list_tenants(
        &self,
        after: Option<&TenantId>,
        limit: usize,
    ) -> StoreResult<(Vec<Tenant>, Option<TenantId>)> {
        let (ids, next) = self.tenant_ids(after, limit).await?;
        let loaded =
            futures_util::future::join_all(ids.iter().map(|id| self.load_tenant(id))).await;
        let mut out = Vec::with_capacity(ids.len());
        for t in loaded {
            if let Some(t) = t? {
                out.push(t);
            }
        }
        Ok((out, next))
    }

    async fn get_tenant(&self, id: &TenantId) -> StoreResult<Option<Tenant>> {
        self.load_tenant(id).await
    }

    async fn update_tenant(
        &self,
        id: &TenantId,
        patch: &TenantPatch,
    ) -> StoreResult<Option<Tenant>> {
        // The issuer index lives outside the tenant's slot, so it is kept beside
        // the update rather than inside it; look-ups re-check each tenant.
        let old_issuer = match &patch.jwt {
            Some(_) => self
                .load_tenant(id)
                .await?
                .and_then(|t| t.jwt.map(|j| j.issuer)),
            None => None,
        };
        let mut inv = TENANT_UPDATE.prepare_invoke();
        inv.key(keys::tenant(id));
        if let Some(name) = &patch.name {
            inv.arg("name").arg(name.as_str());
        }
        if let Some(tier) = patch.tier {
            inv.arg("tier").arg(tier.as_str());
        }
        if let Some(jwt) = &patch.jwt {
            let stored = match jwt {
                Some(j) => serde_json::to_string(j)
                    .map_err(|e| StoreError::Internal(format!("jwt settings: {e}")))?,
                None => String::new(),
            };
            inv.arg("jwt").arg(stored);
        }
        let mut c = self.conn();
        let fields: Vec<(String, String)> = self
            .run("update tenant", async { inv.invoke_async(&mut c).await })
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let tenant = tenant_from_fields(id, &fields);
        if let Some(jwt) = &patch.jwt {
            let new_issuer = jwt.as_ref().map(|j| j.issuer.clone());
            if let Some(old) = old_issuer.filter(|o| Some(o) != new_issuer.as_ref()) {
                self.index_issuer("SREM", &old, id).await?;
            }
            if let Some(new) = new_issuer {
                self.index_issuer("SADD", &new, id).await?;
            }
        }
        self.publish_invalidation(id).await?;
        Ok(tenant)
    }

    async fn delete_tenant(&self, id: &TenantId) -> StoreResult<bool> {
        let mut c = self.conn();
        let removed: i64 = self
            .run("unregister tenant", async {
                redis::cmd("ZREM")
                    .arg(TENANTS)
                    .arg(id.as_str())
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let existing = self.load_tenant(id).await?;
        if removed == 0 && existing.is_none() {
            return Ok(false);
        }
        if let Some(jwt) = existing.and_then(|t| t.jwt) {
            self.index_issuer("SREM", &jwt.issuer, id).await?;
        }
        for rec in self.key_records(id).await? {
            let mut c = self.conn();
            self.run("unmap key", async {
                redis::cmd("DEL")
                    .arg(keys::key_hash(&rec.hash))
                    .query_async::<()>(&mut c)
                    .await
            })
            .await?;
        }
        let mut c = self.conn();
        self.run("delete tenant", async {
            redis::cmd("DEL")
                .arg(keys::tenant(id))
                .arg(keys::api_keys(id))
                .query_async::<()>(&mut c)
                .await
        })
        .await?;
        self.publish_invalidation(id).await?;
        // Everything else of the tenant (reservations, indexes, counters).
        let mut cursor: u64 = 0;
        loop {
            let mut c = self.conn();
            let (next, found): (u64, Vec<Vec<u8>>) = self
                .run("scan tenant", async {
                    let mut scan = redis::cmd("SCAN");
                    scan.cursor_arg(cursor)
                        .arg("MATCH")
                        .arg(keys::all_of(id))
                        .arg("COUNT")
                        .arg(1000);
                    let reply = c.on_node_of(keys::tenant(id).as_bytes(), &scan).await?;
                    redis::from_redis_value(reply).map_err(redis::RedisError::from)
                })
                .await?;
            if !found.is_empty() {
                let mut c = self.conn();
                self.run("unlink tenant keys", async {
                    redis::cmd("UNLINK")
                        .arg(&found)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await?;
            }
            if next == 0 {
                return Ok(true);
            }
            cursor = next;
        }
    }

    async fn create_key(
        &self,
        tenant: &TenantId,
        label: &str,
    ) -> StoreResult<Result<IssuedKey, KeyCreateError>> {
        self.add_key(tenant, label, None).await
    }

    async fn list_keys(&self, tenant: &TenantId) -> StoreResult<Option<Vec<ApiKeyInfo>>> {
        if self.load_tenant(tenant).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(
            self.key_records(tenant)
                .await?
                .iter()
                .filter_map(KeyRecord::info)
                .collect(),
        ))
    }

    async fn rotate_key(&self, tenant: &TenantId, key: &KeyId) -> StoreResult<Option<IssuedKey>> {
        let secret = crate::domain::generate_secret();
        let hash = crate::domain::hash_secret(&secret);
        let mut c = self.conn();
        let reply: Vec<String> = self
            .run("rotate key", async {
                KEY_ROTATE
                    .key(keys::api_keys(tenant))
                    .arg(key.as_str())
                    .arg(&hash)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let [old_hash, json] = reply.as_slice() else {
            return Ok(None);
        };
        let rec: KeyRecord =
            serde_json::from_str(json).map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut c = self.conn();
        let mapping = format!("{} {}", tenant.as_str(), key.as_str());
        self.run("remap key", async {
            redis::pipe()
                .cmd("SET")
                .arg(keys::key_hash(&hash))
                .arg(mapping)
                .ignore()
                .cmd("DEL")
                .arg(keys::key_hash(old_hash))
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await?;
        self.publish_invalidation(tenant).await?;
        Ok(rec.info().map(|info| IssuedKey { info, secret }))
    }

    async fn delete_key(&self, tenant: &TenantId, key: &KeyId) -> StoreResult<bool> {
        let Some(rec) = self
            .key_records(tenant)
            .await?
            .into_iter()
            .find(|r| r.id == key.as_str())
        else {
            return Ok(false);
        };
        let mut c = self.conn();
        self.run("delete key", async {
            redis::pipe()
                .cmd("HDEL")
                .arg(keys::api_keys(tenant))
                .arg(key.as_str())
                .ignore()
                .cmd("DEL")
                .arg(keys::key_hash(&rec.hash))
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await?;
        self.publish_invalidation(tenant).await?;
        Ok(true)
    }

    async fn authenticate(&self, key_hash: &str) -> StoreResult<Option<Principal>> {
        let mut c = self.conn();
        let mapping: Option<String> = self
            .run("auth lookup", async {
                redis::cmd("GET")
                    .arg(keys::key_hash(key_hash))
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let Some((tenant, key_id)) = mapping.as_deref().and_then(|m| m.split_once(' ')) else {
            return Ok(None);
        };
        let (Ok(tenant), Ok(key_id)) = (TenantId::parse(tenant), KeyId::parse(key_id)) else {
            return Ok(None);
        };
        let mut c = self.conn();
        let (record, tier): (Option<String>, Option<String>) = self
            .run("auth record", async {
                redis::pipe()
                    .cmd("HGET")
                    .arg(keys::api_keys(&tenant))
                    .arg(key_id.as_str())
                    .cmd("HGET")
                    .arg(keys::tenant(&tenant))
                    .arg("tier")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let Some(rec) = record.and_then(|r| serde_json::from_str::<KeyRecord>(&r).ok()) else {
            return Ok(None);
        };
        let Some(tier) = tier.and_then(|t| Tier::parse(&t).ok()) else {
            return Ok(None);
        };
        // The mapping may be stale (rotation in progress): the record decides.
        if !crate::domain::constant_time_eq(rec.hash.as_bytes(), key_hash.as_bytes()) {
            return Ok(None);
        }
        Ok(Some(Principal {
            tenant,
            key_id: Some(key_id),
            label: rec.label,
            tier,
            subject: None,
        }))
    }

    async fn tenants_by_issuer(&self, issuer: &str) -> StoreResult<Vec<Tenant>> {
        let mut c = self.conn();
        let ids: Vec<String> = self
            .run("issuer index", async {
                redis::cmd("SRANDMEMBER")
                    .arg(keys::issuer(issuer))
                    .arg(16)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut out = Vec::new();
        for id in ids.iter().filter_map(|i| TenantId::parse(i).ok()) {
            if let Some(t) = self.load_tenant(&id).await? {
                if t.jwt.as_ref().is_some_and(|j| j.issuer == issuer) {
                    out.push(t);
                }
            }
        }
        Ok(out)
    }

    async fn token_secret(&self) -> StoreResult<String> {
        let candidate = hex::encode(rand::random::<[u8; 32]>());
        let mut c = self.conn();
        let (secret,): (Option<String>,) = self
            .run("token secret", async {
                redis::pipe()
                    .cmd("SET")
                    .arg(keys::TOKEN_SECRET)
                    .arg(&candidate)
                    .arg("NX")
                    .ignore()
                    .cmd("GET")
                    .arg(keys::TOKEN_SECRET)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        secret.ok_or_else(|| StoreError::Unavailable("token secret: not readable".into()))
    }

    fn invalidations(&self) -> broadcast::Receiver<Invalidation> {
        self.inner.invalidations.subscribe()
    }

    fn cache_allowed(&self) -> bool {
        self.inner.subscribed.load(Ordering::SeqCst)
    }

    async fn sweep(&self) -> StoreResult<usize> {
        self.sweep_once().await
    }

    async fn events_after(
        &self,
        tenant: &TenantId,
        after: EventId,
        limit: usize,
    ) -> StoreResult<History> {
        let mut c = self.conn();
        let reply: Value = self
            .run("events read", async {
                EVENTS_READ
                    .key(keys::events(tenant))
                    .arg(after.to_string())
                    .arg(limit)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let mut parts = items(reply)?.into_iter();
        let (Some(last), Some(first), Some(trimmed), Some(rows)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad_reply("events read"));
        };
        let last = as_string(&last).and_then(|s| EventId::parse(&s));
        let first = as_string(&first).and_then(|s| EventId::parse(&s));
        let trimmed = as_u64(&trimmed).unwrap_or(0) > 0;
        // After a trim the id of the newest dropped event is unknown, so an id
        // below the first retained one is a gap (at worst one the client could
        // have done without: it re-lists).
        let gap = match last {
            None => after > EventId::ZERO,
            Some(last) => after > last || (trimmed && first.is_some_and(|f| f > after)),
        };
        if gap {
            return Ok(History::Gap { latest: last });
        }
        let events = items(rows)?
            .into_iter()
            .map(|row| stream_event(row).ok_or_else(|| bad_reply("events read")))
            .collect::<StoreResult<Vec<Event>>>()?;
        Ok(History::Events(events))
    }

    async fn latest_event(&self, tenant: &TenantId) -> StoreResult<Option<EventId>> {
        let mut c = self.conn();
        let rows: Value = self
            .run("latest event", async {
                redis::cmd("XREVRANGE")
                    .arg(keys::events(tenant))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(items(rows)?
            .into_iter()
            .next()
            .and_then(|row| items(row).ok()?.first().and_then(as_string))
            .and_then(|id| EventId::parse(&id)))
    }

    async fn follow_events(&self, tenant: &TenantId) -> StoreResult<()> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .subscriber
            .send(SubCmd::Follow(tenant.clone(), reply))
            .map_err(|_| StoreError::Internal("the subscriber task has stopped".into()))?;
        match tokio::time::timeout(self.inner.op_timeout * 2, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::Internal(
                "the subscriber task has stopped".into(),
            )),
            Err(_) => Err(StoreError::Unavailable(
                "event feed: subscribe timed out".into(),
            )),
        }
    }

    fn unfollow_events(&self, tenant: &TenantId) {
        let _ = self.inner.subscriber.send(SubCmd::Unfollow(tenant.clone()));
    }

    fn live_events(&self) -> broadcast::Receiver<Live> {
        self.inner.live.subscribe()
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut c = self.conn();
        self.run("ping", async {
            redis::cmd("PING").query_async::<String>(&mut c).await
        })
        .await
        .map(|_| ())
    }
}

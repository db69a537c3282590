//! Fleet mode: every piece of state lives in Redis, so any instance can answer any
//! request. Each batch endpoint is one `EVALSHA` of a script composed from
//! `lua/` ([`scripts`]); time comes from Redis `TIME` inside the scripts. All
//! keys of a tenant share one hash tag ([`keys`]), so the scripts run unchanged
//! on Redis Cluster.
//!
//! One module per concern: [`keys`] (every key and channel name), [`scripts`]
//! (composition), [`replies`] (decoding, error classes), [`reservations`],
//! [`tenants`] (tenants, API keys, authentication), [`events`] (history),
//! [`subscriber`] (the pub/sub connection), [`sweeper`] (expiries, fleet-wide).

mod events;
pub mod keys;
mod replies;
mod reservations;
pub mod scripts;
mod subscriber;
mod sweeper;
mod tenants;
mod waits;

use super::topology::Conn;
use super::{AddressLimit, Invalidation, Quota, RateDecision, StoreError, StoreResult, Upkeep};
use crate::domain::{Millis, TenantId};
use crate::events::Live;
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

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
    last_pong: Arc<std::sync::atomic::AtomicU64>,
    live: broadcast::Sender<Live>,
    grants: broadcast::Sender<(TenantId, crate::store::WaiterId)>,
    /// Requests to the subscriber task to follow or drop a tenant's channel.
    subscriber: mpsc::UnboundedSender<subscriber::SubCmd>,
    /// Set once the Redis is known to hold this binary's data layout; until
    /// then every call answers `STORE_UNAVAILABLE`.
    layout_ok: AtomicBool,
    /// Where the slow reconcile of the due index has got to.
    reconcile_after: std::sync::Mutex<Option<TenantId>>,
}

/// What [`RedisStore::check_layout`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum LayoutCheck {
    Ok,
    /// The Redis holds another layout: the one-line reason.
    Other(String),
}

impl RedisStore {
    /// Connects (lazily: the service starts, unready, while Redis is down) and
    /// starts the pub/sub subscriber. When Redis answers now and holds another
    /// data layout, this fails with one line naming both versions; when it is
    /// down, the layout is checked as soon as it answers and the process exits
    /// on a mismatch (see [`RedisStore::watch_layout`]).
    pub async fn connect(options: RedisOptions) -> anyhow::Result<Self> {
        let topology =
            super::topology::parse(&options.url).map_err(|e| anyhow::anyhow!("REDIS_URL {e}"))?;
        let conn = Conn::new(&topology, options.op_timeout)
            .map_err(|e| anyhow::anyhow!("cannot set up the Redis connection: {e}"))?;
        conn.watch_master();
        let (invalidations, _) = broadcast::channel(1024);
        let (live, _) = broadcast::channel(4096);
        let (grants, _) = broadcast::channel(4096);
        let (sub_tx, commands) = mpsc::unbounded_channel();
        let subscribed = Arc::new(AtomicBool::new(false));
        let last_pong = Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn(subscriber::run(
            conn.clone(),
            topology,
            subscriber::Feeds {
                invalidations: invalidations.clone(),
                live: live.clone(),
                grants: grants.clone(),
                subscribed: subscribed.clone(),
                last_pong: last_pong.clone(),
                op_timeout: options.op_timeout,
            },
            commands,
        ));
        let store = Self {
            inner: Arc::new(Inner {
                conn,
                op_timeout: options.op_timeout,
                retain: options.events_retain,
                invalidations,
                subscribed,
                last_pong,
                live,
                grants,
                subscriber: sub_tx,
                layout_ok: AtomicBool::new(false),
                reconcile_after: std::sync::Mutex::new(None),
            }),
        };
        match store.check_layout().await {
            Ok(LayoutCheck::Ok) => {}
            Ok(LayoutCheck::Other(why)) => anyhow::bail!("{why}"),
            Err(_) => store.watch_layout(),
        }
        Ok(store)
    }

    /// Checks (and on an empty Redis records) the data layout version.
    pub async fn check_layout(&self) -> StoreResult<LayoutCheck> {
        let c = self.conn();
        let ask = |cmd: redis::Cmd| {
            let mut c = c.clone();
            async move {
                tokio::time::timeout(
                    self.inner.op_timeout,
                    cmd.query_async::<redis::Value>(&mut c),
                )
                .await
                .map_err(|_| StoreError::Unavailable("layout check: timed out".into()))?
                .map_err(|e| replies::classify("layout check", e))
            }
        };
        // Layout 1 had no version key: its registry gives it away. Only a
        // Redis without it gets ours written (SET NX GET: the one there wins).
        let mut exists = redis::cmd("EXISTS");
        exists.arg(keys::LAYOUT_1_MARK);
        let found = if ask(exists).await? == redis::Value::Int(1) {
            Some("1".to_string())
        } else {
            let mut set = redis::cmd("SET");
            set.arg(keys::LAYOUT_KEY)
                .arg(keys::LAYOUT)
                .arg("NX")
                .arg("GET");
            replies::as_string(&ask(set).await?)
        };
        match found {
            Some(v) if v != keys::LAYOUT.to_string() => Ok(LayoutCheck::Other(format!(
                "REDIS_URL holds cooplocker data layout {v}, and this binary uses layout {}: \
                 drain the fleet, then flush that Redis (or migrate it) before starting this \
                 version (README: Upgrading)",
                keys::LAYOUT
            ))),
            _ => {
                self.inner.layout_ok.store(true, Ordering::SeqCst);
                Ok(LayoutCheck::Ok)
            }
        }
    }

    /// Checks the layout once Redis answers; on a mismatch the process stops
    /// with that one line, so a fleet never runs mixed layouts.
    fn watch_layout(&self) {
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                match store.check_layout().await {
                    Ok(LayoutCheck::Ok) => return,
                    Ok(LayoutCheck::Other(why)) => {
                        tracing::error!("{why}");
                        eprintln!("error: {why}");
                        std::process::exit(1);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
        });
    }

    /// Runs a store operation under the operation timeout, mapping failures.
    async fn run<T, F>(&self, what: &'static str, op: F) -> StoreResult<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.inner.layout_ok.load(Ordering::Relaxed) {
            return Err(StoreError::Unavailable(format!(
                "{what}: the data layout of this Redis is not checked yet"
            )));
        }
        let started = Instant::now();
        let result = match tokio::time::timeout(self.inner.op_timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(replies::classify(what, e)),
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
                .arg(keys::AUTH_CHANNEL)
                .arg(tenant.as_str())
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .map(|_| ())
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
}

impl RedisStore {
    /// One request against the GCRA limit at `key` (lua/meter.lua).
    async fn gcra(&self, key: &str, per_second: u32, burst: u32) -> StoreResult<RateDecision> {
        let interval_us = super::interval_us(per_second);
        let mut c = self.conn();
        let reply: redis::Value = self
            .run("rate limit", async {
                scripts::RATE_LIMIT
                    .key(key)
                    .arg(interval_us)
                    .arg(burst.max(1))
                    // No Idempotency-Key (lua/idem.lua).
                    .arg("0")
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        replies::decision(reply, per_second)
    }
}

#[async_trait]
impl Upkeep for RedisStore {
    async fn rate_limit(
        &self,
        limit: AddressLimit<'_>,
        per_second: u32,
        burst: u32,
    ) -> StoreResult<RateDecision> {
        self.gcra(&keys::address_limit(limit), per_second, burst)
            .await
    }

    async fn charge(&self, tenant: &TenantId, quota: &Quota) -> StoreResult<RateDecision> {
        self.gcra(
            &keys::quota(&keys::prefix(tenant), quota),
            quota.per_second,
            quota.burst,
        )
        .await?
        .checked()
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut c = self.conn();
        let serving = self
            .run("ping", async {
                redis::cmd("PING").query_async::<String>(&mut c).await?;
                c.serving().await
            })
            .await?;
        if serving {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "the Redis Cluster reports cluster_state:fail".into(),
            ))
        }
    }

    async fn sweep(&self) -> StoreResult<usize> {
        self.sweep_once().await
    }

    async fn clock_ms(&self) -> StoreResult<Millis> {
        let mut c = self.conn();
        let (s, us): (u64, u64) = self
            .run("time", async {
                redis::cmd("TIME").query_async(&mut c).await
            })
            .await?;
        Ok(s * 1000 + us / 1000)
    }
}

//! Expiry, fleet-wide, with work proportional to what is due — not to the
//! number of tenants. The reservation scripts file every hold with a TTL in a
//! per-second bucket of its tenant (`lua/holds.lua`) and report when they gave
//! the tenant an earlier second than it had; the caller then moves the tenant
//! up in the fleet's due index `c:due` (tenant id -> second). Each round the
//! instance holding the sweep lease reads the tenants due now and runs
//! `lua/sweep.lua` for each, which retires what has expired (announcing each
//! `EXPIRED` exactly once) and answers the tenant's next second.
//!
//! The two steps are separate calls (the due index lives outside any tenant's
//! Cluster slot), so an instance that dies between them can leave a tenant out
//! of the index; a slow reconcile walks every tenant, a few per round, and puts
//! back what is missing.

use super::replies::{self, as_i64, items};
use super::{keys, scripts, RedisStore};
use crate::domain::TenantId;
use crate::store::{StoreError, StoreResult};
use redis::Value;
use std::time::{Duration, Instant};

/// How long a sweep lease lasts: one instance of the fleet sweeps per round.
/// Correctness does not depend on it (the scripts are idempotent), only the
/// load does.
pub const SWEEP_LEASE_MS: u64 = 400;
/// Holds retired per script call.
const SWEEP_BATCH: usize = 500;
/// Tenants read from the due index per round.
const DUE_PER_ROUND: usize = 256;
/// Tenants the reconcile looks at per round (two rounds a second).
const RECONCILE_PER_ROUND: usize = 32;

impl RedisStore {
    /// Moves a tenant to `second` in the due index unless it is due earlier
    /// already. A failure is only logged: the reconcile repairs it.
    pub(super) async fn mark_due(&self, tenant: &TenantId, second: i64) {
        let mut c = self.conn();
        let done = self
            .run("mark due", async {
                redis::cmd("ZADD")
                    .arg(keys::DUE)
                    .arg("LT")
                    .arg(second)
                    .arg(tenant.as_str())
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await;
        if let Err(e) = done {
            tracing::warn!(%tenant, error = %e, "due index not updated; the reconcile will");
        }
    }

    /// One sweep round, when this instance holds the sweep lease: retires the
    /// expired holds of every tenant that is due, then reconciles a few tenants.
    pub async fn sweep_once(&self) -> StoreResult<usize> {
        let mut c = self.conn();
        let lease: Option<String> = self
            .run("sweep lease", async {
                redis::cmd("SET")
                    .arg(keys::SWEEP_LEASE)
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
        let now_s = self.now_millis().await? / 1000;
        let mut c = self.conn();
        let due: Vec<String> = self
            .run("due tenants", async {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(keys::DUE)
                    .arg("-inf")
                    .arg(now_s)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(DUE_PER_ROUND)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let tenants: Vec<TenantId> = due.iter().filter_map(|t| TenantId::parse(t).ok()).collect();
        let results =
            futures_util::future::join_all(tenants.iter().map(|t| self.sweep_tenant(t))).await;
        let mut retired = 0;
        for r in results {
            retired += r?;
        }
        self.reconcile_some().await?;
        Ok(retired)
    }

    /// Retires a tenant's due holds, a batch at a time for at most about the
    /// lease, then records its next second in the due index.
    async fn sweep_tenant(&self, tenant: &TenantId) -> StoreResult<usize> {
        let started = Instant::now();
        let p = keys::prefix(tenant);
        let mut retired = 0;
        loop {
            let mut c = self.conn();
            let reply: Value = self
                .run("sweep", async {
                    scripts::SWEEP
                        .key(keys::tenant(&p))
                        .key(keys::events(&p))
                        .arg(self.inner.retain)
                        .arg(SWEEP_BATCH)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            let parts = items(reply)?;
            let [n, more, next, ended] = parts.as_slice() else {
                return Err(StoreError::Internal("unexpected reply from sweep".into()));
            };
            replies::holds_ended(ended);
            retired += as_i64(n).unwrap_or(0).max(0) as usize;
            let more = as_i64(more) == Some(1);
            if !more || started.elapsed() > Duration::from_millis(SWEEP_LEASE_MS) {
                self.set_due(tenant, &p, as_i64(next).unwrap_or(-1)).await?;
                return Ok(retired);
            }
        }
    }

    /// Sets a tenant's place in the due index to `next` (-1: none) after a
    /// sweep, then re-reads its earliest second: a reserve that gave it an
    /// earlier one between the sweep and this write has set the index already
    /// (it ran `mark_due` after its script) or is about to, and the re-read
    /// catches the case where this write overtook it.
    async fn set_due(&self, tenant: &TenantId, p: &str, next: i64) -> StoreResult<()> {
        let mut c = self.conn();
        self.run("set due", async {
            let cmd = if next < 0 {
                let mut z = redis::cmd("ZREM");
                z.arg(keys::DUE).arg(tenant.as_str());
                z
            } else {
                let mut z = redis::cmd("ZADD");
                z.arg(keys::DUE).arg(next).arg(tenant.as_str());
                z
            };
            cmd.query_async::<i64>(&mut c).await
        })
        .await?;
        if let Some(first) = self.first_second(p).await? {
            if next < 0 || first < next {
                self.mark_due(tenant, first).await;
            }
        }
        Ok(())
    }

    /// The earliest second a tenant has buckets in.
    async fn first_second(&self, p: &str) -> StoreResult<Option<i64>> {
        let mut c = self.conn();
        let first: Vec<(String, f64)> = self
            .run("first due second", async {
                redis::cmd("ZRANGE")
                    .arg(format!("{p}xd"))
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(first.first().map(|(_, s)| *s as i64))
    }

    /// Looks at the next few tenants of the registry and puts any that has
    /// buckets but is missing from the due index (or is placed too late) back.
    async fn reconcile_some(&self) -> StoreResult<()> {
        let after = self
            .inner
            .reconcile_after
            .lock()
            .map(|g| g.clone())
            .unwrap_or(None);
        let (ids, next) = self.tenant_ids(after.as_ref(), RECONCILE_PER_ROUND).await?;
        for t in &ids {
            if let Some(first) = self.first_second(&keys::prefix(t)).await? {
                self.mark_due(t, first).await;
            }
        }
        if let Ok(mut g) = self.inner.reconcile_after.lock() {
            *g = next;
        }
        Ok(())
    }
}

//! Tenants and their API keys: records under the tenant's prefix, the fleet's
//! tenant registry and key look-up, and authentication on them. Writes that span
//! Cluster slots (the registry, the key look-up, the issuer index) are separate
//! calls, each idempotent, never one pipeline.

use super::{keys, scripts, RedisStore};
use crate::domain::policy::PolicyPatch;
use crate::domain::{
    ApiKeyInfo, IssuedKey, KeyId, KeyScope, LeasePolicy, Principal, Tenant, TenantId, TenantName,
    Tier,
};
use crate::store::{Accounts, Invalidation, KeyCreateError, StoreError, StoreResult, TenantPatch};
use async_trait::async_trait;
use std::sync::atomic::Ordering;
use tokio::sync::broadcast;

impl RedisStore {
    /// Adds a tenant to the registry (idempotent).
    async fn register(&self, id: &TenantId) -> StoreResult<()> {
        let mut c = self.conn();
        self.run("register tenant", async {
            redis::cmd("ZADD")
                .arg(keys::TENANTS)
                .arg(0)
                .arg(id.as_str())
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// Drops a key look-up (`c:apikey:<hash>`).
    async fn unmap_key(&self, hash: &str) -> StoreResult<()> {
        let mut c = self.conn();
        self.run("unmap key", async {
            redis::cmd("DEL")
                .arg(keys::key_hash(hash))
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    pub(super) async fn tenant_ids(
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
                    .arg(keys::TENANTS)
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

    /// A whole hash, field/value pairs.
    async fn hgetall(&self, what: &'static str, key: String) -> StoreResult<Vec<(String, String)>> {
        let mut c = self.conn();
        self.run(what, async {
            redis::cmd("HGETALL").arg(key).query_async(&mut c).await
        })
        .await
    }

    async fn load_tenant(&self, id: &TenantId) -> StoreResult<Option<Tenant>> {
        let fields = self
            .hgetall("get tenant", keys::tenant(&keys::prefix(id)))
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

    async fn add_key(
        &self,
        tenant: &TenantId,
        label: &str,
        scope: KeyScope,
        secret: Option<String>,
    ) -> StoreResult<Result<IssuedKey, KeyCreateError>> {
        let id = KeyId::generate();
        let secret = secret.unwrap_or_else(crate::domain::generate_secret);
        let hash = crate::domain::hash_secret(&secret);
        let record = serde_json::json!({
            "id": id.as_str(),
            "label": label,
            "hash": hash,
            "scope": scope,
        });
        let mut prefix = record.to_string();
        prefix.pop(); // drop '}' so the script can append createdAt
        let limit = |t: Tier| t.key_limit().map_or(-1, |l| l as i64);
        let mut c = self.conn();
        let reply: Vec<i64> = self
            .run("add key", async {
                scripts::KEY_ADD
                    .key(keys::tenant(&keys::prefix(tenant)))
                    .key(keys::api_keys(&keys::prefix(tenant)))
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
                        scope,
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
        let raw = self
            .hgetall("list keys", keys::api_keys(&keys::prefix(tenant)))
            .await?;
        let mut recs: Vec<KeyRecord> = raw
            .iter()
            .filter_map(|(_, json)| serde_json::from_str(json).ok())
            .collect();
        recs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(recs)
    }
}

#[derive(serde::Deserialize, Clone)]
struct KeyRecord {
    id: String,
    label: String,
    hash: String,
    #[serde(rename = "createdAt", default)]
    created_at: u64,
    /// Absent in records written before scopes: such keys write.
    #[serde(default)]
    scope: KeyScope,
}

impl KeyRecord {
    fn info(&self) -> Option<ApiKeyInfo> {
        Some(ApiKeyInfo {
            id: KeyId::parse(&self.id).ok()?,
            label: self.label.clone(),
            created_at: self.created_at,
            scope: self.scope,
        })
    }
}

#[async_trait]
impl Accounts for RedisStore {
    async fn ensure_tenant(&self, id: &TenantId, name: &TenantName, tier: Tier) -> StoreResult<()> {
        let now = self.now_millis().await?;
        let mut c = self.conn();
        self.run("ensure tenant", async {
            // Only the tenant's own keys (one slot); the registry after it.
            let key = keys::tenant(&keys::prefix(id));
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
                pipe.cmd("HSETNX").arg(&key).arg(field).arg(value).ignore();
            }
            pipe.query_async::<()>(&mut c).await
        })
        .await?;
        self.register(id).await
    }

    async fn create_tenant(
        &self,
        name: &TenantName,
        tier: Tier,
        secret: Option<String>,
    ) -> StoreResult<(Tenant, IssuedKey)> {
        let now = self.now_millis().await?;
        // The record's `id` field claims the tag; a tag already claimed by
        // another tenant (64 bits: not to be expected) draws another id.
        let mut id = TenantId::generate();
        for attempt in 0.. {
            let mut c = self.conn();
            let claimed: bool = self
                .run("claim tenant tag", async {
                    redis::cmd("HSETNX")
                        .arg(keys::tenant(&keys::prefix(&id)))
                        .arg("id")
                        .arg(id.as_str())
                        .query_async(&mut c)
                        .await
                })
                .await?;
            if claimed {
                break;
            }
            if attempt == 8 {
                return Err(StoreError::Internal("no free tenant tag".into()));
            }
            id = TenantId::generate();
        }
        let mut c = self.conn();
        self.run("create tenant", async {
            redis::cmd("HSET")
                .arg(keys::tenant(&keys::prefix(&id)))
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
        let key = match self
            .add_key(&id, "default", KeyScope::Write, secret)
            .await?
        {
            Ok(k) => k,
            Err(e) => return Err(StoreError::Internal(format!("default key: {e:?}"))),
        };
        self.register(&id).await?;
        let tenant = Tenant {
            id,
            name: name.as_str().to_string(),
            tier,
            created_at: now,
            jwt: None,
            policy: LeasePolicy::default(),
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
        let mut inv = scripts::TENANT_UPDATE.prepare_invoke();
        inv.key(keys::tenant(&keys::prefix(id)));
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
        for (field, value) in policy_fields(&patch.policy) {
            inv.arg(field).arg(value);
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
                    .arg(keys::TENANTS)
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
            self.unmap_key(&rec.hash).await?;
        }
        let mut c = self.conn();
        self.run("undue tenant", async {
            redis::cmd("ZREM")
                .arg(keys::DUE)
                .arg(id.as_str())
                .query_async::<()>(&mut c)
                .await
        })
        .await?;
        let mut c = self.conn();
        self.run("delete tenant", async {
            redis::cmd("DEL")
                .arg(keys::tenant(&keys::prefix(id)))
                .arg(keys::api_keys(&keys::prefix(id)))
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
                        .arg(keys::all_of(&keys::prefix(id)))
                        .arg("COUNT")
                        .arg(1000);
                    let reply = c
                        .on_node_of(keys::tenant(&keys::prefix(id)).as_bytes(), &scan)
                        .await?;
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
        scope: KeyScope,
    ) -> StoreResult<Result<IssuedKey, KeyCreateError>> {
        self.add_key(tenant, label, scope, None).await
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
                scripts::KEY_ROTATE
                    .key(keys::api_keys(&keys::prefix(tenant)))
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
        // The new look-up first, then the old one goes: two calls, since
        // they live in different Cluster slots. The record has changed
        // already, so the old secret fails from this moment either way.
        self.run("remap key", async {
            redis::cmd("SET")
                .arg(keys::key_hash(&hash))
                .arg(mapping)
                .query_async::<()>(&mut c)
                .await
        })
        .await?;
        self.unmap_key(old_hash).await?;
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
            redis::cmd("HDEL")
                .arg(keys::api_keys(&keys::prefix(tenant)))
                .arg(key.as_str())
                .query_async::<()>(&mut c)
                .await
        })
        .await?;
        self.unmap_key(&rec.hash).await?;
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
                    .arg(keys::api_keys(&keys::prefix(&tenant)))
                    .arg(key_id.as_str())
                    .cmd("HGET")
                    .arg(keys::tenant(&keys::prefix(&tenant)))
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
            scope: rec.scope,
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
        let fresh = super::subscriber::monotonic_ms()
            .saturating_sub(self.inner.last_pong.load(Ordering::SeqCst))
            < super::subscriber::PONG_FRESH_MS;
        fresh && self.inner.subscribed.load(Ordering::SeqCst)
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
    // A tag shared by two tenants would show another id: not this tenant.
    if get("id")? != id.as_str() {
        return None;
    }
    Some(Tenant {
        id: id.clone(),
        name: get("name").unwrap_or_default().to_string(),
        tier,
        created_at: get("createdAt").and_then(|v| v.parse().ok()).unwrap_or(0),
        jwt: get("jwt")
            .filter(|v| !v.is_empty())
            .and_then(|v| serde_json::from_str(v).ok()),
        policy: policy_from_fields(get),
    })
}

/// The tenant hash's fields of a policy change (read by the scripts:
/// `lua/holds.lua` policy_load), in seconds; `0` is none.
fn policy_fields(p: &PolicyPatch) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(v) = p.max_ttl_seconds {
        out.push(("pmt", v.unwrap_or(0).to_string()));
    }
    if let Some(v) = p.require_ttl {
        out.push(("prt", if v { "1" } else { "0" }.to_string()));
    }
    if let Some(v) = p.max_hold_seconds {
        out.push(("pmh", v.unwrap_or(0).to_string()));
    }
    if let Some(v) = p.lock_delay_seconds {
        out.push(("pld", v.to_string()));
    }
    if let Some(v) = p.max_wait_seconds {
        out.push(("pmw", v.to_string()));
    }
    out
}

/// The policy a tenant hash holds (absent fields: the defaults).
fn policy_from_fields<'a>(get: impl Fn(&str) -> Option<&'a str>) -> LeasePolicy {
    let d = LeasePolicy::default();
    let secs = |name: &str| get(name).and_then(|v| v.parse::<u64>().ok());
    LeasePolicy {
        max_ttl_seconds: secs("pmt").filter(|s| *s > 0),
        require_ttl: get("prt") == Some("1"),
        max_hold_seconds: secs("pmh").filter(|s| *s > 0),
        lock_delay_seconds: secs("pld").unwrap_or(d.lock_delay_seconds),
        max_wait_seconds: secs("pmw").filter(|s| *s > 0).unwrap_or(d.max_wait_seconds),
    }
}

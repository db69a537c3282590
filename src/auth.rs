//! Authentication of API keys with an in-process cache, so the hot path costs no
//! store round trip. The cache is kept honest by the store's invalidation feed
//! (Redis pub/sub in fleet mode): a rotated or revoked key, a deleted tenant or a
//! tier change drops the tenant's entries on every instance; a reconnect of the
//! feed drops everything, and while the feed is down nothing is served from cache.
//!
//! Tokens exchanged for JWTs are verified by signature (no store read) and
//! checked against the tenant's cached tier and JWT-settings fingerprint, kept
//! current by the same feed: changing or removing a tenant's JWT settings, or
//! deleting the tenant, revokes its tokens fleet-wide within the same bound.

use crate::domain::{hash_secret, TenantId, Tier};
use crate::store::{Invalidation, Principal, Store, StoreError, StoreResult};
use crate::tokens::{looks_like_token, TokenKeys};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Entries older than this are re-read even without an invalidation: a last line
/// of defence, never the mechanism that meets the 1 s revocation promise.
const MAX_AGE: Duration = Duration::from_secs(60);
/// Most credentials cached at once; past it the cache starts over.
const MAX_ENTRIES: usize = 100_000;

/// What a token check needs of its tenant.
#[derive(Debug, Clone)]
struct TenantInfo {
    tier: Tier,
    /// Fingerprint of the tenant's JWT settings; `None` when it has none.
    jwt: Option<String>,
}

pub struct Authenticator {
    store: Arc<dyn Store>,
    cache: Mutex<HashMap<String, (Principal, Instant)>>,
    tenants: Mutex<HashMap<TenantId, (TenantInfo, Instant)>>,
    /// Configured token keys, or empty to use the store's shared one.
    configured_keys: Vec<String>,
    token_keys: tokio::sync::OnceCell<Arc<TokenKeys>>,
    /// Bumped by every invalidation, so a look-up that raced with one does not
    /// put a stale answer back into the cache.
    generation: AtomicU64,
}

impl Authenticator {
    /// Creates the authenticator and starts following the invalidation feed.
    /// `token_keys`: the configured keys for exchanged tokens (the first
    /// signs), or none to use the one the store keeps for the fleet.
    pub fn start(store: Arc<dyn Store>, token_keys: Vec<String>) -> Arc<Self> {
        let me = Arc::new(Self {
            cache: Mutex::new(HashMap::new()),
            tenants: Mutex::new(HashMap::new()),
            configured_keys: token_keys,
            token_keys: tokio::sync::OnceCell::new(),
            generation: AtomicU64::new(0),
            store: store.clone(),
        });
        let mut feed = store.invalidations();
        let weak = Arc::downgrade(&me);
        tokio::spawn(async move {
            loop {
                let inv = match feed.recv().await {
                    Ok(inv) => inv,
                    // Missed some: forget everything to be safe.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Invalidation::All,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let Some(me) = weak.upgrade() else { return };
                me.invalidate(&inv);
            }
        });
        me
    }

    /// Drops a tenant's cached credentials on this instance at once. The admin
    /// handlers call it after a change, so the instance that made the change
    /// never serves the old state, not even for the pub/sub round trip.
    pub fn forget_tenant(&self, tenant: &crate::domain::TenantId) {
        self.invalidate(&Invalidation::Tenant(tenant.clone()));
    }

    fn invalidate(&self, inv: &Invalidation) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut cache = self.lock();
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        match inv {
            Invalidation::All => {
                cache.clear();
                tenants.clear();
            }
            Invalidation::Tenant(t) => {
                cache.retain(|_, (p, _)| &p.tenant != t);
                tenants.remove(t);
            }
        }
    }

    /// The keys exchanged tokens are signed and checked with.
    pub async fn token_keys(&self) -> StoreResult<Arc<TokenKeys>> {
        self.token_keys
            .get_or_try_init(|| async {
                let secrets = if self.configured_keys.is_empty() {
                    vec![self.store.token_secret().await?]
                } else {
                    self.configured_keys.clone()
                };
                TokenKeys::new(&secrets)
                    .map(Arc::new)
                    .ok_or_else(|| StoreError::Internal("no token key".into()))
            })
            .await
            .cloned()
    }

    /// The tier and JWT fingerprint of a tenant, from cache when the feed is live.
    async fn tenant_info(&self, tenant: &TenantId) -> StoreResult<Option<TenantInfo>> {
        let use_cache = self.store.cache_allowed();
        if use_cache {
            let tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((info, at)) = tenants.get(tenant) {
                if at.elapsed() < MAX_AGE {
                    return Ok(Some(info.clone()));
                }
            }
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let Some(t) = self.store.get_tenant(tenant).await? else {
            return Ok(None);
        };
        let info = TenantInfo {
            tier: t.tier,
            jwt: t.jwt.as_ref().map(|j| j.fingerprint()),
        };
        if use_cache && self.store.cache_allowed() {
            let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
            if self.generation.load(Ordering::SeqCst) == generation {
                if tenants.len() >= MAX_ENTRIES {
                    tenants.clear();
                }
                tenants.insert(tenant.clone(), (info.clone(), Instant::now()));
            }
        }
        Ok(Some(info))
    }

    /// The principal of an exchanged token, or `None` when it is not one this
    /// fleet signed, has expired, or was revoked by a change of its tenant.
    async fn authenticate_token(&self, token: &str) -> StoreResult<Option<Principal>> {
        let Some(claims) = self.token_keys().await?.check(token) else {
            return Ok(None);
        };
        let Ok(tenant) = TenantId::parse(&claims.tid) else {
            return Ok(None);
        };
        let Some(info) = self.tenant_info(&tenant).await? else {
            return Ok(None);
        };
        if info.jwt.as_deref() != Some(claims.jfp.as_str()) {
            return Ok(None);
        }
        Ok(Some(Principal {
            tenant,
            key_id: None,
            label: format!("jwt:{}", claims.sub),
            tier: info.tier,
            subject: Some(claims.sub),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Principal, Instant)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The principal a presented secret stands for, or `None` if it is unknown,
    /// revoked or rotated away.
    pub async fn authenticate(&self, secret: &str) -> StoreResult<Option<Principal>> {
        if looks_like_token(secret) {
            return self.authenticate_token(secret).await;
        }
        let hash = hash_secret(secret);
        let use_cache = self.store.cache_allowed();
        if use_cache {
            if let Some((p, at)) = self.lock().get(&hash) {
                if at.elapsed() < MAX_AGE {
                    return Ok(Some(p.clone()));
                }
            }
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let found = self.store.authenticate(&hash).await?;
        if let Some(p) = &found {
            if use_cache && self.store.cache_allowed() {
                let mut cache = self.lock();
                if self.generation.load(Ordering::SeqCst) == generation {
                    if cache.len() >= MAX_ENTRIES {
                        cache.clear();
                    }
                    cache.insert(hash, (p.clone(), Instant::now()));
                }
            }
        }
        Ok(found)
    }
}

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
//!
//! The generated signing key (no `COOPLOCKER_TOKEN_SECRET`) is read from the
//! store once and cached, but not forever: a token signed with a key this
//! instance does not know makes it re-read the store's key (at most once a
//! second), so after Redis lost the key and a later instance generated
//! another, the fleet converges on the store's key instead of each instance
//! refusing the others' tokens and sessions. Keys read earlier keep verifying.

use crate::domain::{hash_secret, TenantId, Tier};
use crate::domain::{KeyScope, Principal};
use crate::store::{Invalidation, Store, StoreError, StoreResult};
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
/// The store's token key is re-read at most this often.
const KEY_REREAD_GAP: Duration = Duration::from_secs(1);
/// Generated keys kept for verifying (the newest also signs).
const MAX_SHARED_KEYS: usize = 4;

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
    /// The keys in use; `None` until first needed.
    token_keys: Mutex<Option<Arc<TokenKeys>>>,
    /// The store's generated keys read so far, newest (the signing one) first.
    shared_secrets: Mutex<Vec<String>>,
    /// Serialises reads of the store's key.
    key_read: tokio::sync::Mutex<()>,
    /// When the store's key was last re-read because a token named another.
    last_reread: Mutex<Option<Instant>>,
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
            token_keys: Mutex::new(None),
            shared_secrets: Mutex::new(Vec::new()),
            key_read: tokio::sync::Mutex::new(()),
            last_reread: Mutex::new(None),
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

    /// Drops a tenant's cached credentials on this instance at once.
    /// [`crate::accounts`] calls it after a change, so the instance that made
    /// the change never serves the old state, not even for the pub/sub round
    /// trip.
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
        if let Some(keys) = self.current_keys() {
            return Ok(keys);
        }
        let _turn = self.key_read.lock().await;
        if let Some(keys) = self.current_keys() {
            return Ok(keys);
        }
        let keys = if self.configured_keys.is_empty() {
            self.adopt_store_key().await?
        } else {
            Self::build_keys(&self.configured_keys)?
        };
        *self.token_keys.lock().unwrap_or_else(|p| p.into_inner()) = Some(keys.clone());
        Ok(keys)
    }

    fn current_keys(&self) -> Option<Arc<TokenKeys>> {
        self.token_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn build_keys(secrets: &[String]) -> StoreResult<Arc<TokenKeys>> {
        TokenKeys::new(secrets)
            .map(Arc::new)
            .ok_or_else(|| StoreError::Internal("no token key".into()))
    }

    /// Reads the store's key and makes it the signing one, keeping the keys
    /// read before it for verifying. Call with `key_read` held.
    async fn adopt_store_key(&self) -> StoreResult<Arc<TokenKeys>> {
        let secret = self.store.token_secret().await?;
        let secrets = {
            let mut shared = self
                .shared_secrets
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            shared.retain(|s| s != &secret);
            shared.insert(0, secret);
            shared.truncate(MAX_SHARED_KEYS);
            shared.clone()
        };
        Self::build_keys(&secrets)
    }

    /// Checks a fleet-signed token with `check`; if it fails because the token
    /// names a key this instance does not know, re-reads the store's key (at
    /// most once per [`KEY_REREAD_GAP`] per process) and checks again.
    pub async fn check_signed<T>(
        &self,
        token: &str,
        check: impl Fn(&TokenKeys) -> Option<T>,
    ) -> StoreResult<Option<T>> {
        let keys = self.token_keys().await?;
        if let Some(v) = check(&keys) {
            return Ok(Some(v));
        }
        if !self.configured_keys.is_empty() || !keys.names_unknown_key(token) {
            return Ok(None);
        }
        {
            let mut last = self.last_reread.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < KEY_REREAD_GAP) {
                return Ok(None);
            }
            *last = Some(Instant::now());
        }
        let fresh = {
            let _turn = self.key_read.lock().await;
            let fresh = self.adopt_store_key().await?;
            *self.token_keys.lock().unwrap_or_else(|p| p.into_inner()) = Some(fresh.clone());
            fresh
        };
        tracing::info!("token signed with an unknown key: re-read the fleet's token key");
        Ok(check(&fresh))
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
        let Some(claims) = self.check_signed(token, |k| k.check(token)).await? else {
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
            scope: KeyScope::Write,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Principal, Instant)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The principal of an API key this instance has cached (and may trust
    /// now), without a store look-up; `None` for anything else, tokens
    /// included.
    pub fn cached(&self, secret: &str) -> Option<Principal> {
        if looks_like_token(secret) || !self.store.cache_allowed() {
            return None;
        }
        let hash = hash_secret(secret);
        self.lock()
            .get(&hash)
            .filter(|(_, at)| at.elapsed() < MAX_AGE)
            .map(|(p, _)| p.clone())
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

//! Authentication of API keys with an in-process cache, so the hot path costs no
//! store round trip. The cache is kept honest by the store's invalidation feed
//! (Redis pub/sub in fleet mode): a rotated or revoked key, a deleted tenant or a
//! tier change drops the tenant's entries on every instance; a reconnect of the
//! feed drops everything, and while the feed is down nothing is served from cache.

use crate::domain::hash_secret;
use crate::store::{Invalidation, Principal, Store, StoreResult};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Entries older than this are re-read even without an invalidation: a last line
/// of defence, never the mechanism that meets the 1 s revocation promise.
const MAX_AGE: Duration = Duration::from_secs(60);
/// Most credentials cached at once; past it the cache starts over.
const MAX_ENTRIES: usize = 100_000;

pub struct Authenticator {
    store: Arc<dyn Store>,
    cache: Mutex<HashMap<String, (Principal, Instant)>>,
    /// Bumped by every invalidation, so a look-up that raced with one does not
    /// put a stale answer back into the cache.
    generation: AtomicU64,
}

impl Authenticator {
    /// Creates the authenticator and starts following the invalidation feed.
    pub fn start(store: Arc<dyn Store>) -> Arc<Self> {
        let me = Arc::new(Self {
            cache: Mutex::new(HashMap::new()),
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
        match inv {
            Invalidation::All => cache.clear(),
            Invalidation::Tenant(t) => cache.retain(|_, (p, _)| &p.tenant != t),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Principal, Instant)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The principal a presented secret stands for, or `None` if it is unknown,
    /// revoked or rotated away.
    pub async fn authenticate(&self, secret: &str) -> StoreResult<Option<Principal>> {
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

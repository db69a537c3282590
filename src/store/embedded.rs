//! Embedded mode: the whole store in this process, behind one mutex, so every
//! batch is atomic exactly as a Lua script is in Redis. Same rules as the Redis
//! store (`lua/` is the reference): fencing tokens never below the clock in
//! microseconds, an expired reservation counts as free at once, a sweeper retires
//! expired ones. Events are recorded and published under the same lock as the
//! change they describe. State lives only as long as the process.

use super::{
    Caller, CheckOutcome, ExtendItem, ExtendOutcome, Invalidation, KeyCreateError, ListPage,
    ListQuery, LockOutcome, LockRequest, Metered, Principal, Quota, RateDecision, ReleaseByName,
    ReleaseItem, ReleaseOutcome, Releaser, ReserveItem, ReserveOutcome, Store, StoreError,
    StoreResult, TenantPatch, FENCE_RETENTION_MS,
};
use crate::domain::{
    constant_time_eq, generate_secret, hash_secret, ApiKeyInfo, Holding, IssuedKey, KeyId, Millis,
    ReleaseToken, Resource, Tenant, TenantId, TenantName, Tier,
};
use crate::events::{Event, EventId, EventKind, History, Live};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Rate limits: key -> theoretical arrival time (µs), as in rate_limit.lua.
    limits: Mutex<HashMap<String, u64>>,
    invalidations: broadcast::Sender<Invalidation>,
    live: broadcast::Sender<Live>,
    /// Signs exchanged tokens when none is configured; lives with the process.
    token_secret: String,
}

struct State {
    tenants: BTreeMap<TenantId, TenantState>,
    key_hashes: HashMap<String, (TenantId, KeyId)>,
    last_us: u64,
    /// Events kept per tenant for resume.
    retain: usize,
}

struct TenantState {
    tenant: Tenant,
    keys: HashMap<KeyId, KeyRec>,
    locks: BTreeMap<String, Lock>,
    /// (requester, resource) of every lock, for listing by requester.
    by_requester: BTreeSet<(String, String)>,
    /// (expiresAt, resource) of every lock with a TTL, for the sweeper.
    expiries: BTreeSet<(Millis, String)>,
    /// resource -> (last fencing token, when the counter may be forgotten)
    fences: HashMap<String, (u64, Option<Millis>)>,
    /// The retained event history, oldest first.
    events: VecDeque<Event>,
    last_event: Option<EventId>,
    /// The newest id dropped from `events`: resuming from before it is a gap.
    max_dropped: Option<EventId>,
    /// Events of the operation in progress, published when it completes.
    pending: Vec<Event>,
}

struct KeyRec {
    info: ApiKeyInfo,
    hash: String,
}

#[derive(Clone)]
struct Lock {
    /// Hash of a locklock secret.
    secret_hash: Option<String>,
    requester: String,
    token: String,
    reserved_at: Millis,
    expires_at: Option<Millis>,
    fencing: u64,
    label: String,
}

impl Lock {
    fn live(&self, now_ms: Millis) -> bool {
        self.expires_at.is_none_or(|ea| ea > now_ms)
    }

    fn holding(&self, resource: &str) -> Option<Holding> {
        Some(Holding {
            resource: Resource::parse(resource).ok()?,
            requester: self.requester.clone(),
            reserved_at: self.reserved_at,
            expires_at: self.expires_at,
            fencing_token: self.fencing,
            api_key_label: self.label.clone(),
        })
    }
}

impl State {
    /// The store clock in microseconds; never goes back within the process.
    fn now_us(&mut self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        self.last_us = self.last_us.max(wall);
        self.last_us
    }
}

impl TenantState {
    fn new(tenant: Tenant) -> Self {
        Self {
            tenant,
            keys: HashMap::new(),
            locks: BTreeMap::new(),
            by_requester: BTreeSet::new(),
            expiries: BTreeSet::new(),
            fences: HashMap::new(),
            events: VecDeque::new(),
            last_event: None,
            max_dropped: None,
            pending: Vec::new(),
        }
    }

    /// Records an event of `lock` on `resource` (history and pending publish).
    fn emit(
        &mut self,
        retain: usize,
        now_ms: Millis,
        kind: EventKind,
        resource: &str,
        lock: &Lock,
        label: &str,
    ) {
        let id = match self.last_event {
            Some(last) if last.ms >= now_ms => EventId {
                ms: last.ms,
                seq: last.seq + 1,
            },
            _ => EventId { ms: now_ms, seq: 0 },
        };
        self.last_event = Some(id);
        let event = Event {
            id,
            kind,
            resource: resource.to_string(),
            requester: lock.requester.clone(),
            label: label.to_string(),
            at: now_ms,
            expires_at: lock.expires_at,
            fencing_token: lock.fencing,
        };
        self.events.push_back(event.clone());
        while self.events.len() > retain {
            if let Some(old) = self.events.pop_front() {
                self.max_dropped = Some(old.id);
            }
        }
        self.pending.push(event);
    }

    /// The history after `after`, by the same rules as the Redis store.
    fn history(&self, after: EventId, limit: usize) -> History {
        let gap = match self.last_event {
            None => after > EventId::ZERO,
            Some(last) => after > last || self.max_dropped.is_some_and(|d| d > after),
        };
        if gap {
            return History::Gap {
                latest: self.last_event,
            };
        }
        let start = self.events.partition_point(|e| e.id <= after);
        History::Events(self.events.range(start..).take(limit).cloned().collect())
    }

    /// Removes a lock and its index entries; returns it.
    fn drop_lock(&mut self, resource: &str, now_ms: Millis) -> Option<Lock> {
        let lock = self.locks.remove(resource)?;
        self.by_requester
            .remove(&(lock.requester.clone(), resource.to_string()));
        if let Some(ea) = lock.expires_at {
            self.expiries.remove(&(ea, resource.to_string()));
        }
        let until = lock.expires_at.unwrap_or(now_ms).max(now_ms) + FENCE_RETENTION_MS;
        if let Some(f) = self.fences.get_mut(resource) {
            f.1 = Some(until);
        }
        Some(lock)
    }

    fn live_lock(&self, resource: &str, now_ms: Millis) -> Option<&Lock> {
        self.locks.get(resource).filter(|l| l.live(now_ms))
    }

    /// Retires every reservation whose expiry has passed, emitting `EXPIRED`
    /// for each; returns how many.
    fn sweep(&mut self, now_ms: Millis, retain: usize) -> usize {
        let due: Vec<(Millis, String)> = self
            .expiries
            .range(..(now_ms + 1, String::new()))
            .cloned()
            .collect();
        for (_, resource) in &due {
            if let Some(lock) = self.drop_lock(resource, now_ms) {
                let label = lock.label.clone();
                self.emit(retain, now_ms, EventKind::Expired, resource, &lock, &label);
            }
        }
        self.fences
            .retain(|_, (_, until)| until.is_none_or(|u| u > now_ms));
        due.len()
    }
}

impl Default for EmbeddedStore {
    fn default() -> Self {
        Self::new()
    }
}

impl EmbeddedStore {
    pub fn new() -> Self {
        Self::with_retain(10_000)
    }

    /// A store keeping `retain` events per tenant for resume.
    pub fn with_retain(retain: usize) -> Self {
        let (invalidations, _) = broadcast::channel(1024);
        let (live, _) = broadcast::channel(4096);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    tenants: BTreeMap::new(),
                    key_hashes: HashMap::new(),
                    last_us: 0,
                    retain: retain.max(1),
                }),
                invalidations,
                live,
                limits: Mutex::new(HashMap::new()),
                token_secret: hex::encode(rand::random::<[u8; 32]>()),
            }),
        }
    }

    /// The reserve step (also locklock's acquire, with a secret and a cap on the
    /// tenant's reservations); `None` when the cap is reached.
    fn reserve_sync(
        &self,
        caller: &Caller,
        items: &[ReserveItem],
        secret_hash: Option<String>,
        max_held: Option<usize>,
    ) -> StoreResult<Option<Vec<ReserveOutcome>>> {
        let mut st = self.state();
        let now_us = st.now_us();
        let now_ms = now_us / 1000;
        let retain = st.retain;
        let Some(ts) = st.tenants.get_mut(&caller.tenant) else {
            return Err(StoreError::TenantGone);
        };
        if max_held.is_some_and(|max| ts.locks.len() + items.len() > max) {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            let res = it.resource.as_str();
            if let Some(held) = ts.live_lock(res, now_ms) {
                out.push(ReserveOutcome::AlreadyHeld {
                    held_by: held.requester.clone(),
                    expires_at: held.expires_at,
                });
                continue;
            }
            if let Some(old) = ts.drop_lock(res, now_ms) {
                // Expired but not yet swept: announce it before the new grant.
                let label = old.label.clone();
                ts.emit(retain, now_ms, EventKind::Expired, res, &old, &label);
            }
            let last = ts.fences.get(res).map_or(0, |f| f.0);
            let fencing = (last + 1).max(now_us);
            let expires_at = it.ttl.map(|t| now_ms + t.millis());
            let token = ReleaseToken::generate();
            ts.fences.insert(
                res.to_string(),
                (fencing, expires_at.map(|ea| ea + FENCE_RETENTION_MS)),
            );
            let lock = Lock {
                secret_hash: secret_hash.clone(),
                requester: it.requester.as_str().to_string(),
                token: token.as_str().to_string(),
                reserved_at: now_ms,
                expires_at,
                fencing,
                label: caller.label.clone(),
            };
            ts.emit(
                retain,
                now_ms,
                EventKind::Reserved,
                res,
                &lock,
                &caller.label,
            );
            ts.locks.insert(res.to_string(), lock);
            ts.by_requester
                .insert((it.requester.as_str().to_string(), res.to_string()));
            if let Some(ea) = expires_at {
                ts.expiries.insert((ea, res.to_string()));
            }
            out.push(ReserveOutcome::Reserved {
                release_token: token,
                reserved_at: now_ms,
                expires_at,
                fencing_token: fencing,
            });
        }
        self.publish(&caller.tenant, ts);
        Ok(Some(out))
    }

    /// Publishes the events a tenant's operation produced. Called with the state
    /// lock held, so events reach the hub in the order they happened.
    fn publish(&self, tenant: &TenantId, ts: &mut TenantState) {
        if !ts.pending.is_empty() {
            let events = std::mem::take(&mut ts.pending);
            let _ = self
                .inner
                .live
                .send(Live::Batch(tenant.clone(), Arc::new(events)));
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would leave a batch half-applied; the
        // code under the lock does not panic, so recover the guard rather than
        // poisoning every later request.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One request against a GCRA limit, as rate_limit.lua and meter.lua do it.
    fn gcra(&self, key: &str, per_second: u32, burst: u32) -> RateDecision {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let interval = super::interval_us(per_second);
        let burst = u64::from(burst.max(1));
        let mut limits = self.inner.limits.lock().unwrap_or_else(|p| p.into_inner());
        if limits.len() > 100_000 {
            // Forget limits that are whole again (their state says nothing).
            limits.retain(|_, tat| *tat > now);
        }
        let tat = limits.get(key).copied().unwrap_or(0).max(now);
        let allow_at = tat.saturating_sub((burst - 1) * interval);
        if now < allow_at {
            return RateDecision {
                allowed: false,
                limit: per_second,
                remaining: 0,
                retry_after_ms: (allow_at - now).div_ceil(1000),
                reset_ms: (tat - now).div_ceil(1000),
            };
        }
        let tat = tat + interval;
        limits.insert(key.to_string(), tat);
        RateDecision {
            allowed: true,
            limit: per_second,
            remaining: (now + burst * interval).saturating_sub(tat) / interval,
            retry_after_ms: 0,
            reset_ms: (tat - now).div_ceil(1000),
        }
    }

    /// Counts a request against `quota` (if any): the decision, or
    /// `StoreError::RateLimited` when it is refused.
    fn meter(&self, tenant: &TenantId, quota: Option<&Quota>) -> StoreResult<Option<RateDecision>> {
        let Some(q) = quota else { return Ok(None) };
        self.gcra(&q.key(tenant), q.per_second, q.burst)
            .checked()
            .map(Some)
    }

    fn invalidate(&self, tenant: &TenantId) {
        let _ = self
            .inner
            .invalidations
            .send(Invalidation::Tenant(tenant.clone()));
    }

    /// Retires expired reservations of every tenant.
    pub fn sweep_once(&self) -> usize {
        let mut st = self.state();
        let now_ms = st.now_us() / 1000;
        let retain = st.retain;
        let mut retired = 0;
        for (id, ts) in st.tenants.iter_mut() {
            retired += ts.sweep(now_ms, retain);
            self.publish(id, ts);
        }
        retired
    }

    fn add_key(
        st: &mut State,
        tenant: &TenantId,
        label: &str,
        secret: Option<String>,
    ) -> Result<IssuedKey, KeyCreateError> {
        let now_ms = st.now_us() / 1000;
        let Some(ts) = st.tenants.get_mut(tenant) else {
            return Err(KeyCreateError::TenantNotFound);
        };
        if let Some(limit) = ts.tenant.tier.key_limit() {
            if ts.keys.len() >= limit {
                return Err(KeyCreateError::LimitReached(limit));
            }
        }
        let secret = secret.unwrap_or_else(generate_secret);
        let hash = hash_secret(&secret);
        let info = ApiKeyInfo {
            id: KeyId::generate(),
            label: label.to_string(),
            created_at: now_ms,
        };
        ts.keys.insert(
            info.id.clone(),
            KeyRec {
                info: info.clone(),
                hash: hash.clone(),
            },
        );
        st.key_hashes
            .insert(hash, (tenant.clone(), info.id.clone()));
        Ok(IssuedKey { info, secret })
    }
}

/// The operations, as one atomic step each under the state lock; the trait
/// methods count the request against its quota first.
impl EmbeddedStore {
    fn reserve_now(
        &self,
        caller: &Caller,
        items: &[ReserveItem],
    ) -> StoreResult<Vec<ReserveOutcome>> {
        self.reserve_sync(caller, items, None, None)?
            .ok_or_else(|| StoreError::Internal("reserve refused without a cap".into()))
    }

    fn unreserve_now(
        &self,
        caller: &Caller,
        items: &[ReleaseItem],
    ) -> StoreResult<Vec<ReleaseOutcome>> {
        let mut st = self.state();
        let now_ms = st.now_us() / 1000;
        let retain = st.retain;
        let Some(ts) = st.tenants.get_mut(&caller.tenant) else {
            return Err(StoreError::TenantGone);
        };
        let out = items
            .iter()
            .map(|it| {
                let res = it.resource.as_str();
                match ts.live_lock(res, now_ms) {
                    None => ReleaseOutcome::NotHeld,
                    Some(l)
                        if l.requester != it.requester.as_str()
                            || l.token != it.release_token.as_str() =>
                    {
                        ReleaseOutcome::InvalidToken
                    }
                    Some(_) => {
                        if let Some(old) = ts.drop_lock(res, now_ms) {
                            ts.emit(
                                retain,
                                now_ms,
                                EventKind::Unreserved,
                                res,
                                &old,
                                &caller.label,
                            );
                        }
                        ReleaseOutcome::Unreserved
                    }
                }
            })
            .collect();
        self.publish(&caller.tenant, ts);
        Ok(out)
    }

    fn extend_now(&self, caller: &Caller, items: &[ExtendItem]) -> StoreResult<Vec<ExtendOutcome>> {
        let mut st = self.state();
        let now_ms = st.now_us() / 1000;
        let retain = st.retain;
        let Some(ts) = st.tenants.get_mut(&caller.tenant) else {
            return Err(StoreError::TenantGone);
        };
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            let res = it.resource.as_str();
            let outcome = match ts.live_lock(res, now_ms) {
                None => ExtendOutcome::NotHeld,
                Some(l)
                    if l.requester != it.requester.as_str()
                        || l.token != it.release_token.as_str() =>
                {
                    ExtendOutcome::InvalidToken
                }
                Some(_) => {
                    let ea = now_ms + it.ttl.millis();
                    if let Some(lock) = ts.locks.get_mut(res) {
                        if let Some(old) = lock.expires_at.replace(ea) {
                            ts.expiries.remove(&(old, res.to_string()));
                        }
                        let fencing = lock.fencing;
                        let snapshot = lock.clone();
                        ts.expiries.insert((ea, res.to_string()));
                        let entry = ts.fences.entry(res.to_string()).or_insert((fencing, None));
                        entry.0 = entry.0.max(fencing);
                        entry.1 = Some(ea + FENCE_RETENTION_MS);
                        ts.emit(
                            retain,
                            now_ms,
                            EventKind::Extended,
                            res,
                            &snapshot,
                            &caller.label,
                        );
                    }
                    ExtendOutcome::Extended { expires_at: ea }
                }
            };
            out.push(outcome);
        }
        self.publish(&caller.tenant, ts);
        Ok(out)
    }

    fn check_now(
        &self,
        tenant: &TenantId,
        resources: &[Resource],
    ) -> StoreResult<Vec<CheckOutcome>> {
        let mut st = self.state();
        let now_ms = st.now_us() / 1000;
        let ts = st.tenants.get(tenant);
        Ok(resources
            .iter()
            .map(|r| {
                ts.and_then(|ts| ts.live_lock(r.as_str(), now_ms))
                    .and_then(|l| l.holding(r.as_str()))
                    .map_or(CheckOutcome::Free, CheckOutcome::Held)
            })
            .collect())
    }

    fn list_now(&self, tenant: &TenantId, query: &ListQuery) -> StoreResult<ListPage> {
        let mut st = self.state();
        let now_ms = st.now_us() / 1000;
        let Some(ts) = st.tenants.get(tenant) else {
            return Ok(ListPage {
                items: Vec::new(),
                next_after: None,
            });
        };
        let prefix = query.prefix.as_ref().map_or("", |p| p.as_str());
        let lower = match &query.after {
            Some(after) if after.as_str() >= prefix => Bound::Excluded(after.clone()),
            _ => Bound::Included(prefix.to_string()),
        };
        let names: Box<dyn Iterator<Item = &String>> = match &query.requester {
            Some(rq) => {
                let rq = rq.as_str().to_string();
                let lo = match lower {
                    Bound::Excluded(s) => Bound::Excluded((rq.clone(), s)),
                    Bound::Included(s) => Bound::Included((rq.clone(), s)),
                    Bound::Unbounded => Bound::Unbounded,
                };
                Box::new(
                    ts.by_requester
                        .range((lo, Bound::Unbounded))
                        .take_while(move |(q, _)| *q == rq)
                        .map(|(_, r)| r),
                )
            }
            None => Box::new(ts.locks.range((lower, Bound::Unbounded)).map(|(r, _)| r)),
        };
        let mut items = Vec::new();
        let mut next_after = None;
        for name in names.take_while(|n| n.starts_with(prefix)) {
            let Some(h) = ts.live_lock(name, now_ms).and_then(|l| l.holding(name)) else {
                continue;
            };
            if items.len() == query.limit {
                next_after = items
                    .last()
                    .map(|h: &Holding| h.resource.as_str().to_string());
                break;
            }
            items.push(h);
        }
        Ok(ListPage { items, next_after })
    }

    fn release_by_name_now(
        &self,
        tenant: &TenantId,
        resource: &Resource,
        by: &Releaser,
    ) -> StoreResult<ReleaseByName> {
        let mut st = self.state();
        let now_ms = st.now_us() / 1000;
        let retain = st.retain;
        let Some(ts) = st.tenants.get_mut(tenant) else {
            return Ok(ReleaseByName::NotHeld);
        };
        let res = resource.as_str();
        let Some(lock) = ts.live_lock(res, now_ms) else {
            return Ok(ReleaseByName::NotHeld);
        };
        let (kind, label) = match by {
            Releaser::Admin => (EventKind::ForceReleased, "admin".to_string()),
            Releaser::Locklock { label, secret_hash } => {
                if let Some(expected) = &lock.secret_hash {
                    let presented = secret_hash.as_deref().unwrap_or("");
                    if !constant_time_eq(expected.as_bytes(), presented.as_bytes()) {
                        return Ok(ReleaseByName::WrongSecret);
                    }
                }
                (EventKind::Unreserved, label.clone())
            }
        };
        let Some(old) = ts.drop_lock(res, now_ms) else {
            return Ok(ReleaseByName::NotHeld);
        };
        ts.emit(retain, now_ms, kind, res, &old, &label);
        self.publish(tenant, ts);
        Ok(ReleaseByName::Released)
    }

    fn lock_now(&self, caller: &Caller, req: &LockRequest) -> StoreResult<LockOutcome> {
        let item = ReserveItem {
            resource: req.resource.clone(),
            requester: req.requester.clone(),
            ttl: Some(req.ttl),
        };
        let Some(outcome) = self
            .reserve_sync(caller, &[item], req.secret_hash.clone(), req.max_held)?
            .and_then(|mut v| v.pop())
        else {
            return Ok(LockOutcome::Full);
        };
        Ok(match outcome {
            ReserveOutcome::Reserved {
                expires_at,
                fencing_token,
                ..
            } => LockOutcome::Acquired {
                expires_at: expires_at.unwrap_or(0),
                fencing_token,
            },
            ReserveOutcome::AlreadyHeld { .. } => LockOutcome::Locked,
        })
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn reserve(
        &self,
        caller: &Caller,
        items: &[ReserveItem],
    ) -> StoreResult<Metered<Vec<ReserveOutcome>>> {
        let rate = self.meter(&caller.tenant, caller.quota.as_ref())?;
        Ok(Metered {
            value: self.reserve_now(caller, items)?,
            rate,
        })
    }

    async fn unreserve(
        &self,
        caller: &Caller,
        items: &[ReleaseItem],
    ) -> StoreResult<Metered<Vec<ReleaseOutcome>>> {
        let rate = self.meter(&caller.tenant, caller.quota.as_ref())?;
        Ok(Metered {
            value: self.unreserve_now(caller, items)?,
            rate,
        })
    }

    async fn extend(
        &self,
        caller: &Caller,
        items: &[ExtendItem],
    ) -> StoreResult<Metered<Vec<ExtendOutcome>>> {
        let rate = self.meter(&caller.tenant, caller.quota.as_ref())?;
        Ok(Metered {
            value: self.extend_now(caller, items)?,
            rate,
        })
    }

    async fn check(
        &self,
        caller: &Caller,
        resources: &[Resource],
    ) -> StoreResult<Metered<Vec<CheckOutcome>>> {
        let rate = self.meter(&caller.tenant, caller.quota.as_ref())?;
        Ok(Metered {
            value: self.check_now(&caller.tenant, resources)?,
            rate,
        })
    }

    async fn list(&self, caller: &Caller, query: &ListQuery) -> StoreResult<Metered<ListPage>> {
        let rate = self.meter(&caller.tenant, caller.quota.as_ref())?;
        Ok(Metered {
            value: self.list_now(&caller.tenant, query)?,
            rate,
        })
    }

    async fn release_by_name(
        &self,
        tenant: &TenantId,
        resource: &Resource,
        by: &Releaser,
        quota: Option<&Quota>,
    ) -> StoreResult<Metered<ReleaseByName>> {
        let rate = self.meter(tenant, quota)?;
        Ok(Metered {
            value: self.release_by_name_now(tenant, resource, by)?,
            rate,
        })
    }

    async fn lock(&self, caller: &Caller, req: &LockRequest) -> StoreResult<Metered<LockOutcome>> {
        let rate = self.meter(&caller.tenant, caller.quota.as_ref())?;
        Ok(Metered {
            value: self.lock_now(caller, req)?,
            rate,
        })
    }

    async fn ensure_tenant(&self, id: &TenantId, name: &TenantName, tier: Tier) -> StoreResult<()> {
        let mut st = self.state();
        let now_ms = st.now_us() / 1000;
        st.tenants.entry(id.clone()).or_insert_with(|| {
            TenantState::new(Tenant {
                id: id.clone(),
                name: name.as_str().to_string(),
                tier,
                created_at: now_ms,
                jwt: None,
            })
        });
        Ok(())
    }

    async fn rate_limit(
        &self,
        key: &str,
        per_second: u32,
        burst: u32,
    ) -> StoreResult<RateDecision> {
        Ok(self.gcra(key, per_second, burst))
    }

    async fn create_tenant(
        &self,
        name: &TenantName,
        tier: Tier,
        secret: Option<String>,
    ) -> StoreResult<(Tenant, IssuedKey)> {
        let mut st = self.state();
        let now_ms = st.now_us() / 1000;
        let tenant = Tenant {
            id: TenantId::generate(),
            name: name.as_str().to_string(),
            tier,
            created_at: now_ms,
            jwt: None,
        };
        st.tenants
            .insert(tenant.id.clone(), TenantState::new(tenant.clone()));
        let key = Self::add_key(&mut st, &tenant.id, "default", secret).map_err(|e| {
            super::StoreError::Internal(format!("default key for a new tenant: {e:?}"))
        })?;
        Ok((tenant, key))
    }

    async fn list_tenants(
        &self,
        after: Option<&TenantId>,
        limit: usize,
    ) -> StoreResult<(Vec<Tenant>, Option<TenantId>)> {
        let st = self.state();
        let lower = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.clone()));
        let mut out: Vec<Tenant> = st
            .tenants
            .range((lower, Bound::Unbounded))
            .take(limit + 1)
            .map(|(_, t)| t.tenant.clone())
            .collect();
        let next = if out.len() > limit {
            out.truncate(limit);
            out.last().map(|t| t.id.clone())
        } else {
            None
        };
        Ok((out, next))
    }

    async fn get_tenant(&self, id: &TenantId) -> StoreResult<Option<Tenant>> {
        Ok(self.state().tenants.get(id).map(|t| t.tenant.clone()))
    }

    async fn update_tenant(
        &self,
        id: &TenantId,
        patch: &TenantPatch,
    ) -> StoreResult<Option<Tenant>> {
        let updated = {
            let mut st = self.state();
            let Some(ts) = st.tenants.get_mut(id) else {
                return Ok(None);
            };
            if let Some(name) = &patch.name {
                ts.tenant.name = name.as_str().to_string();
            }
            if let Some(tier) = patch.tier {
                ts.tenant.tier = tier;
            }
            if let Some(jwt) = &patch.jwt {
                ts.tenant.jwt = jwt.clone();
            }
            ts.tenant.clone()
        };
        self.invalidate(id);
        Ok(Some(updated))
    }

    async fn delete_tenant(&self, id: &TenantId) -> StoreResult<bool> {
        let removed = {
            let mut st = self.state();
            match st.tenants.remove(id) {
                Some(ts) => {
                    for k in ts.keys.values() {
                        st.key_hashes.remove(&k.hash);
                    }
                    true
                }
                None => false,
            }
        };
        if removed {
            self.invalidate(id);
        }
        Ok(removed)
    }

    async fn create_key(
        &self,
        tenant: &TenantId,
        label: &str,
    ) -> StoreResult<Result<IssuedKey, KeyCreateError>> {
        Ok(Self::add_key(&mut self.state(), tenant, label, None))
    }

    async fn list_keys(&self, tenant: &TenantId) -> StoreResult<Option<Vec<ApiKeyInfo>>> {
        let st = self.state();
        Ok(st.tenants.get(tenant).map(|ts| {
            let mut keys: Vec<ApiKeyInfo> = ts.keys.values().map(|k| k.info.clone()).collect();
            keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            keys
        }))
    }

    async fn rotate_key(&self, tenant: &TenantId, key: &KeyId) -> StoreResult<Option<IssuedKey>> {
        let issued = {
            let mut st = self.state();
            let secret = generate_secret();
            let hash = hash_secret(&secret);
            let Some(rec) = st
                .tenants
                .get_mut(tenant)
                .and_then(|ts| ts.keys.get_mut(key))
            else {
                return Ok(None);
            };
            let old = std::mem::replace(&mut rec.hash, hash.clone());
            let info = rec.info.clone();
            st.key_hashes.remove(&old);
            st.key_hashes.insert(hash, (tenant.clone(), key.clone()));
            IssuedKey { info, secret }
        };
        self.invalidate(tenant);
        Ok(Some(issued))
    }

    async fn delete_key(&self, tenant: &TenantId, key: &KeyId) -> StoreResult<bool> {
        let removed = {
            let mut st = self.state();
            let rec = st
                .tenants
                .get_mut(tenant)
                .and_then(|ts| ts.keys.remove(key));
            match rec {
                Some(rec) => {
                    st.key_hashes.remove(&rec.hash);
                    true
                }
                None => false,
            }
        };
        if removed {
            self.invalidate(tenant);
        }
        Ok(removed)
    }

    async fn authenticate(&self, key_hash: &str) -> StoreResult<Option<Principal>> {
        let st = self.state();
        let Some((tenant, key_id)) = st.key_hashes.get(key_hash) else {
            return Ok(None);
        };
        let Some(ts) = st.tenants.get(tenant) else {
            return Ok(None);
        };
        let Some(rec) = ts.keys.get(key_id) else {
            return Ok(None);
        };
        if !constant_time_eq(rec.hash.as_bytes(), key_hash.as_bytes()) {
            return Ok(None);
        }
        Ok(Some(Principal {
            tenant: tenant.clone(),
            key_id: Some(key_id.clone()),
            label: rec.info.label.clone(),
            tier: ts.tenant.tier,
            subject: None,
        }))
    }

    async fn tenants_by_issuer(&self, issuer: &str) -> StoreResult<Vec<Tenant>> {
        Ok(self
            .state()
            .tenants
            .values()
            .filter(|t| t.tenant.jwt.as_ref().is_some_and(|j| j.issuer == issuer))
            .take(16)
            .map(|t| t.tenant.clone())
            .collect())
    }

    async fn token_secret(&self) -> StoreResult<String> {
        Ok(self.inner.token_secret.clone())
    }

    fn invalidations(&self) -> broadcast::Receiver<Invalidation> {
        self.inner.invalidations.subscribe()
    }

    fn cache_allowed(&self) -> bool {
        true
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn sweep(&self) -> StoreResult<usize> {
        Ok(self.sweep_once())
    }

    async fn events_after(
        &self,
        tenant: &TenantId,
        after: EventId,
        limit: usize,
    ) -> StoreResult<History> {
        let st = self.state();
        Ok(match st.tenants.get(tenant) {
            Some(ts) => ts.history(after, limit),
            None => History::Gap { latest: None },
        })
    }

    async fn latest_event(&self, tenant: &TenantId) -> StoreResult<Option<EventId>> {
        Ok(self
            .state()
            .tenants
            .get(tenant)
            .and_then(|ts| ts.last_event))
    }

    async fn follow_events(&self, _tenant: &TenantId) -> StoreResult<()> {
        // Every event of this process reaches `live` already.
        Ok(())
    }

    fn unfollow_events(&self, _tenant: &TenantId) {}

    fn live_events(&self) -> broadcast::Receiver<Live> {
        self.inner.live.subscribe()
    }
}

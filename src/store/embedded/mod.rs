//! Embedded mode: the whole store in this process, behind one mutex, so every
//! batch is atomic exactly as a Lua script is in Redis. Same rules as the Redis
//! store (`lua/` is the reference): fencing tokens never below the clock in
//! microseconds, an expired reservation counts as free at once, a sweeper retires
//! expired ones. Events are recorded and published under the same lock as the
//! change they describe. State lives only as long as the process.

mod accounts;
mod events;
mod idempotency;
mod reservations;
mod waits;

use super::{
    Accounts, AddressLimit, BatchMode, Caller, CheckOutcome, Contended, EventLog, ExtendItem,
    ExtendOutcome, FenceItem, FenceOutcome, Invalidation, KeyCreateError, LeaveOutcome, ListPage,
    ListQuery, LockOutcome, LockRequest, Metered, Quota, RateDecision, ReleaseByName, ReleaseItem,
    ReleaseOutcome, Releaser, Reservations, ReserveItem, ReserveOutcome, Settled, StoreError,
    StoreResult, TenantPatch, Upkeep, WaitState, WaiterId,
};
use crate::domain::{
    constant_time_eq, generate_secret, hash_secret, ApiKeyInfo, Holding, IssuedKey, KeyId,
    KeyScope, Kind, Millis, PolicyRefusal, Principal, ReleaseToken, Requester, Resource, Tenant,
    TenantId, TenantName, Tier,
};
use crate::events::{Event, EventId, EventKind, History, Live};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
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
    /// Waiters granted by a hand-over (their instance is this one).
    grants: broadcast::Sender<(TenantId, WaiterId)>,
    /// Signs exchanged tokens when none is configured; lives with the process.
    token_secret: String,
    /// Idempotency-Key records (taken before `state` when both are).
    idempotency: Mutex<idempotency::Records>,
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
    /// The holds of each resource, in fencing-token order: one exclusive
    /// hold, or a group of shared or semaphore holds of one kind (contract
    /// section 15). Holds past their time stay until retired (EXPIRED).
    locks: BTreeMap<String, Vec<Lock>>,
    /// (requester, resource, fencing token) of every hold, for listing by
    /// requester and the per-requester cap; its length is the tenant's hold
    /// count.
    by_requester: BTreeSet<(String, String, u64)>,
    /// (expiresAt, resource, fencing token) of every hold with a TTL, for the
    /// sweeper.
    expiries: BTreeSet<(Millis, String, u64)>,
    /// (expiresAt - warnBeforeSeconds, resource, fencing token) of every hold
    /// whose expiry warning (`EXPIRING`, contract section 18) is still due,
    /// as the warning entries of `lua/holds.lua`.
    warnings: BTreeSet<(Millis, String, u64)>,
    /// The highest fencing token handed out in this tenant: tokens are
    /// max(this + 1, now in µs), rising across every hold with no per-resource
    /// state, as in the Redis store (`lua/holds.lua`).
    high_water: u64,
    /// The retained event history, oldest first.
    events: VecDeque<Event>,
    last_event: Option<EventId>,
    /// The newest id dropped from `events`: resuming from before it is a gap.
    max_dropped: Option<EventId>,
    /// Events of the operation in progress, published when it completes.
    pending: Vec<Event>,
    /// The lines of waiting requests (contract section 12).
    waits: waits::Lines,
    /// Resources in their lock delay (contract section 17): availableAt, as
    /// `P d:<resource>` of `lua/holds.lua`; dropped by the sweep once past.
    delays: HashMap<String, Millis>,
}

struct KeyRec {
    info: ApiKeyInfo,
    hash: String,
}

#[derive(Clone)]
struct Lock {
    /// Exclusive, shared or a semaphore permit.
    kind: Kind,
    /// Whether locklock acquired it (only such a lock may be released through
    /// locklock), and the hash of its secret, if any.
    locklock: bool,
    secret_hash: Option<String>,
    requester: String,
    token: String,
    reserved_at: Millis,
    expires_at: Option<Millis>,
    fencing: u64,
    label: String,
    /// Its expiry warning in seconds (contract section 18), if it has one.
    warn_s: Option<u64>,
}

impl Lock {
    /// Whether `requester` with `token` is this lock's holder.
    fn matches(&self, requester: &Requester, token: &ReleaseToken) -> bool {
        self.requester == requester.as_str() && self.token == token.as_str()
    }

    fn live(&self, now_ms: Millis) -> bool {
        self.expires_at.is_none_or(|ea| ea > now_ms)
    }

    /// When its `EXPIRING` is due, if it has a warning (and a TTL).
    fn warn_at(&self) -> Option<Millis> {
        Some(self.expires_at?.saturating_sub(self.warn_s? * 1000))
    }

    /// The hold as answers show it; `max_hold`: the tenant's maxHoldSeconds
    /// in ms, which gives its holdDeadline.
    fn holding(&self, resource: &str, max_hold: Option<Millis>) -> Option<Holding> {
        Some(Holding {
            resource: Resource::parse(resource).ok()?,
            requester: self.requester.clone(),
            reserved_at: self.reserved_at,
            expires_at: self.expires_at,
            fencing_token: self.fencing,
            api_key_label: self.label.clone(),
            kind: self.kind,
            hold_deadline: max_hold.map(|m| self.reserved_at + m),
        })
    }

    /// The hold's member in the listing's order (and the Redis indexes):
    /// `<resource>` for an exclusive hold, `<resource>\0<fencing token, 17
    /// digits>` for one of a group.
    fn member(&self, resource: &str) -> String {
        if self.kind.is_multi() {
            format!("{resource}\0{:017}", self.fencing)
        } else {
            resource.to_string()
        }
    }
}

/// A resource's live holders as a request sees them: their kind, how many,
/// and the oldest one's requester and expiry.
#[derive(Debug, Clone, Default)]
struct View {
    kind: Kind,
    holders: u64,
    oldest: Option<(String, Option<Millis>)>,
}

impl View {
    /// Whether a request of kind `r` meets holders of a kind it can never
    /// join (contract section 15: a semaphore and anything else, or two
    /// limits).
    fn mismatch(&self, r: Kind) -> bool {
        self.holders > 0
            && self.kind != r
            && (matches!(self.kind, Kind::Semaphore(_)) || matches!(r, Kind::Semaphore(_)))
    }

    /// Whether a request of kind `r` may join the holders now (the line
    /// aside).
    fn can_join(&self, r: Kind) -> bool {
        self.holders == 0 || (self.kind == r && r.is_multi() && self.holders < r.capacity() as u64)
    }

    /// A hold of kind `r` joins (a batch's simulation).
    fn join(&mut self, r: Kind, requester: &str, expires_at: Option<Millis>) {
        if self.holders == 0 {
            self.kind = r;
            self.oldest = Some((requester.to_string(), expires_at));
        }
        self.holders += 1;
    }

    fn already_held(&self, queue_length: u64) -> ReserveOutcome {
        let (held_by, expires_at) = self.oldest.clone().unwrap_or_default();
        ReserveOutcome::AlreadyHeld {
            held_by,
            expires_at,
            queue_length,
            holders: self.holders,
            available: match (self.holders, self.kind) {
                (0, _) => None,
                (k, Kind::Semaphore(l)) => Some(u64::from(l).saturating_sub(k)),
                _ => None,
            },
        }
    }

    /// Why a request of kind `r` cannot be granted now, with `queue_length`
    /// waiting (no barging), or `None` when it can.
    fn verdict(&self, r: Kind, queue_length: u64) -> Option<ReserveOutcome> {
        if self.mismatch(r) {
            return Some(ReserveOutcome::LimitMismatch { kind: self.kind });
        }
        if queue_length > 0 || !self.can_join(r) {
            return Some(self.already_held(queue_length));
        }
        None
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
            warnings: BTreeSet::new(),
            high_water: 0,
            events: VecDeque::new(),
            last_event: None,
            max_dropped: None,
            pending: Vec::new(),
            waits: waits::Lines::default(),
            delays: HashMap::new(),
        }
    }

    /// The lease policy's maxHoldSeconds in ms, if it has one.
    fn max_hold_ms(&self) -> Option<Millis> {
        self.tenant.policy.max_hold_seconds.map(|s| s * 1000)
    }

    /// The TTL a grant gets for `ttl_ms` under maxHoldSeconds, and whether
    /// the policy capped it (`lua/holds.lua` hold_clamp).
    fn hold_clamp(&self, ttl_ms: Option<Millis>) -> (Option<Millis>, bool) {
        match (self.max_hold_ms(), ttl_ms) {
            (Some(mh), None) => (Some(mh), true),
            (Some(mh), Some(t)) if t > mh => (Some(mh), true),
            _ => (ttl_ms, false),
        }
    }

    /// availableAt when `resource` is in its lock delay now (a hold past its
    /// time not retired yet counts as ended at its expiresAt), else `None`
    /// (`lua/holds.lua` delay_until).
    fn delay_until(&self, resource: &str, now_ms: Millis) -> Option<Millis> {
        let ld = self.tenant.policy.lock_delay_seconds * 1000;
        if ld == 0 {
            return None;
        }
        let lapsed = self
            .locks
            .get(resource)
            .into_iter()
            .flatten()
            .filter(|l| !l.live(now_ms))
            .filter_map(|l| l.expires_at)
            .map(|ea| ea + ld)
            .max();
        let at = self.delays.get(resource).copied().max(lapsed)?;
        (at > now_ms).then_some(at)
    }

    /// Why a request of kind `kind` on `resource` (holders `view`) cannot be
    /// granted now — LIMIT_MISMATCH, LOCK_DELAY, or ALREADY_HELD — or `None`.
    fn judge(
        &self,
        view: &View,
        resource: &str,
        kind: Kind,
        now_ms: Millis,
    ) -> Option<ReserveOutcome> {
        if !view.mismatch(kind) && view.can_join(kind) {
            if let Some(available_at) = self.delay_until(resource, now_ms) {
                return Some(ReserveOutcome::LockDelay { available_at });
            }
        }
        view.verdict(kind, self.waits.len_of(resource))
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
        let end = match kind {
            EventKind::Unreserved => Some("released"),
            EventKind::Expired => Some("expired"),
            EventKind::ForceReleased => Some("force_released"),
            _ => None,
        };
        if let Some(end) = end {
            let ms = now_ms.saturating_sub(lock.reserved_at);
            crate::metrics::hold_ended(end, ms as f64 / 1000.0);
        }
        // EXPIRED (at its expiresAt) and FORCE_RELEASED (now) start the
        // resource's lock delay (contract section 17).
        let ld = self.tenant.policy.lock_delay_seconds * 1000;
        let ended_at = match kind {
            EventKind::Expired => Some(lock.expires_at.unwrap_or(now_ms)),
            EventKind::ForceReleased => Some(now_ms),
            _ => None,
        };
        if let Some(until) = ended_at.map(|e| e + ld).filter(|u| ld > 0 && *u > now_ms) {
            let at = self.delays.entry(resource.to_string()).or_insert(until);
            *at = (*at).max(until);
        }
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
            hold: lock.kind,
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

    /// Grants `g.resource` (free, or joinable: the caller has checked;
    /// holds past their time are announced EXPIRED first): the hold, its
    /// indexes, a fencing token above the tenant's mark, RESERVED.
    fn grant(&mut self, g: Grant<'_>, now_us: u64, retain: usize) -> ReserveOutcome {
        let now_ms = now_us / 1000;
        let res = g.resource;
        // Expired but not yet swept: announced before the new grant.
        self.retire_expired(res, now_ms, retain);
        let fencing = (self.high_water + 1).max(now_us);
        self.high_water = fencing;
        let (ttl_ms, capped) = self.hold_clamp(g.ttl_ms);
        let expires_at = ttl_ms.map(|t| now_ms + t);
        let lock = Lock {
            kind: g.kind,
            locklock: g.locklock.is_some(),
            secret_hash: g.locklock.flatten(),
            requester: g.requester.to_string(),
            token: g.token.as_str().to_string(),
            reserved_at: now_ms,
            expires_at,
            fencing,
            label: g.label.to_string(),
            warn_s: g.warn_s,
        };
        self.emit(retain, now_ms, EventKind::Reserved, res, &lock, g.label);
        self.add_hold(res, lock);
        ReserveOutcome::Reserved {
            release_token: g.token,
            reserved_at: now_ms,
            expires_at,
            fencing_token: fencing,
            waited_ms: None,
            hold_deadline: self.max_hold_ms().map(|m| now_ms + m),
            capped,
        }
    }

    /// Adds a hold (its fencing token is the tenant's newest, so it goes
    /// last) and its index entries.
    fn add_hold(&mut self, resource: &str, lock: Lock) {
        self.by_requester
            .insert((lock.requester.clone(), resource.to_string(), lock.fencing));
        if let Some(ea) = lock.expires_at {
            self.expiries
                .insert((ea, resource.to_string(), lock.fencing));
        }
        self.arm_warning(resource, &lock);
        self.locks
            .entry(resource.to_string())
            .or_default()
            .push(lock);
    }

    /// Removes the hold of `resource` with fencing token `fencing` and its
    /// index entries (the resource's state goes with its last hold); returns
    /// it.
    fn remove_hold(&mut self, resource: &str, fencing: u64) -> Option<Lock> {
        self.take_hold(resource, fencing).map(|(lock, _)| lock)
    }

    /// `remove_hold`, also answering whether the hold's expiry warning was
    /// still due (for a retirement: `EXPIRING` before its `EXPIRED`).
    fn take_hold(&mut self, resource: &str, fencing: u64) -> Option<(Lock, bool)> {
        let holds = self.locks.get_mut(resource)?;
        let at = holds.binary_search_by_key(&fencing, |l| l.fencing).ok()?;
        let lock = holds.remove(at);
        if holds.is_empty() {
            self.locks.remove(resource);
        }
        self.by_requester
            .remove(&(lock.requester.clone(), resource.to_string(), fencing));
        if let Some(ea) = lock.expires_at {
            self.expiries.remove(&(ea, resource.to_string(), fencing));
        }
        let warned = self.disarm_warning(resource, &lock);
        Some((lock, warned))
    }

    /// Files `lock`'s expiry warning, if it has one, for the sweeper.
    fn arm_warning(&mut self, resource: &str, lock: &Lock) {
        if let Some(at) = lock.warn_at() {
            self.warnings
                .insert((at, resource.to_string(), lock.fencing));
        }
    }

    /// Takes `lock`'s expiry warning out: whether it was still due (its
    /// `EXPIRING` not announced yet).
    fn disarm_warning(&mut self, resource: &str, lock: &Lock) -> bool {
        lock.warn_at().is_some_and(|at| {
            self.warnings
                .remove(&(at, resource.to_string(), lock.fencing))
        })
    }

    /// The hold of `resource` with fencing token `fencing`, to change it.
    fn hold_mut(&mut self, resource: &str, fencing: u64) -> Option<&mut Lock> {
        let holds = self.locks.get_mut(resource)?;
        let at = holds.binary_search_by_key(&fencing, |l| l.fencing).ok()?;
        holds.get_mut(at)
    }

    /// Retires the holds of `resource` past their time, each with its
    /// EXPIRED (in fencing-token order).
    fn retire_expired(&mut self, resource: &str, now_ms: Millis, retain: usize) {
        let due: Vec<u64> = self
            .locks
            .get(resource)
            .map(|holds| {
                holds
                    .iter()
                    .filter(|l| !l.live(now_ms))
                    .map(|l| l.fencing)
                    .collect()
            })
            .unwrap_or_default();
        for fencing in due {
            if let Some((old, warned)) = self.take_hold(resource, fencing) {
                self.retired(retain, now_ms, resource, &old, warned);
            }
        }
    }

    /// The live holds of `resource`, in fencing-token order.
    fn live_holds(&self, resource: &str, now_ms: Millis) -> impl Iterator<Item = &Lock> {
        self.locks
            .get(resource)
            .into_iter()
            .flatten()
            .filter(move |l| l.live(now_ms))
    }

    /// The live holders of `resource` as a request sees them.
    fn view(&self, resource: &str, now_ms: Millis) -> View {
        let mut view = View::default();
        for l in self.live_holds(resource, now_ms) {
            view.join(l.kind, &l.requester, l.expires_at);
        }
        view
    }

    /// Why a request of kind `kind` on `resource` cannot be granted now
    /// (LIMIT_MISMATCH, or ALREADY_HELD: held, full, or free with a line —
    /// no barging); `None` when it can.
    fn blocked(&self, resource: &str, kind: Kind, now_ms: Millis) -> Option<ReserveOutcome> {
        self.judge(&self.view(resource, now_ms), resource, kind, now_ms)
    }

    /// The live hold of `resource` that `requester` holds with `token`.
    fn find_hold(
        &self,
        resource: &str,
        now_ms: Millis,
        (requester, token): (&Requester, &ReleaseToken),
        gone: &HashSet<u64>,
    ) -> Found {
        let mut any = false;
        for l in self
            .live_holds(resource, now_ms)
            .filter(|l| !gone.contains(&l.fencing))
        {
            if l.matches(requester, token) {
                return Found::Hold(l.fencing);
            }
            any = true;
        }
        if any {
            Found::InvalidToken
        } else {
            Found::NotHeld
        }
    }

    /// Announces the retirement of `old` (removed already: `take_hold`):
    /// its `EXPIRING` first when that was still due (`warned`), as a sweep
    /// that found both due would, then its `EXPIRED`.
    fn retired(&mut self, retain: usize, now_ms: Millis, resource: &str, old: &Lock, warned: bool) {
        let label = old.label.clone();
        if warned {
            self.emit(retain, now_ms, EventKind::Expiring, resource, old, &label);
        }
        self.emit(retain, now_ms, EventKind::Expired, resource, old, &label);
    }

    /// Retires every hold whose expiry has passed, emitting `EXPIRED` for
    /// each (after the `EXPIRING` of every warning due: a warning falls due
    /// before its hold's expiry); returns how many.
    fn sweep(&mut self, now_ms: Millis, retain: usize) -> usize {
        let warned: Vec<(Millis, String, u64)> = self
            .warnings
            .range(..(now_ms + 1, String::new(), 0))
            .cloned()
            .collect();
        for entry in warned {
            self.warnings.remove(&entry);
            let (_, resource, fencing) = entry;
            if let Some(lock) = self.hold_mut(&resource, fencing).map(|l| l.clone()) {
                let label = lock.label.clone();
                self.emit(
                    retain,
                    now_ms,
                    EventKind::Expiring,
                    &resource,
                    &lock,
                    &label,
                );
            }
        }
        let due: Vec<(Millis, String, u64)> = self
            .expiries
            .range(..(now_ms + 1, String::new(), 0))
            .cloned()
            .collect();
        let mut seen = HashSet::new();
        let mut freed: Vec<&str> = Vec::new();
        for (_, resource, fencing) in &due {
            if let Some((lock, warned)) = self.take_hold(resource, *fencing) {
                self.retired(retain, now_ms, resource, &lock, warned);
            }
            if seen.insert(resource.as_str()) {
                freed.push(resource);
            }
        }
        for resource in freed {
            self.handover(resource, now_ms * 1000, retain);
        }
        self.delays.retain(|_, at| *at > now_ms);
        due.len()
    }
}

/// A release or extend item's hold, found by its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// The resource has no live holder.
    NotHeld,
    /// It has, but none with that token (and requester).
    InvalidToken,
    /// The hold with this fencing token.
    Hold(u64),
}

/// What `TenantState::grant` grants.
struct Grant<'a> {
    resource: &'a str,
    requester: &'a str,
    ttl_ms: Option<u64>,
    token: ReleaseToken,
    label: &'a str,
    /// A locklock lock: the hash of its secret, if any.
    locklock: Option<Option<String>>,
    kind: Kind,
    /// Its expiry warning in seconds (with `ttl_ms` only).
    warn_s: Option<u64>,
}

/// The name of a tenant's rate-limit partition in `Inner::limits`.
fn quota_key(tenant: &TenantId, q: &Quota) -> String {
    format!("{tenant}:{}:{}", q.tier.as_str(), q.access.as_str())
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
        let (grants, _) = broadcast::channel(4096);
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
                grants,
                limits: Mutex::new(HashMap::new()),
                token_secret: hex::encode(rand::random::<[u8; 32]>()),
                idempotency: Mutex::new(idempotency::Records::default()),
            }),
        }
    }

    /// The reserve step (also locklock's acquire, with a secret and caps on
    /// the tenant's and the requester's reservations); `Err(Full)` or
    /// `Err(TooMany)` when a cap is reached.
    fn reserve_sync(
        &self,
        caller: &Caller,
        items: &[ReserveItem],
        locklock: Option<Option<String>>,
        caps: (Option<usize>, Option<usize>),
        mode: BatchMode,
    ) -> StoreResult<Result<Vec<ReserveOutcome>, LockOutcome>> {
        let (max_held, max_per_requester) = caps;
        let mut st = self.state();
        let now_us = st.now_us();
        let now_ms = now_us / 1000;
        let retain = st.retain;
        let Some(ts) = st.tenants.get_mut(&caller.tenant) else {
            return Err(StoreError::TenantGone);
        };
        // The tenant's lease policy refuses first, before anything is done
        // (contract section 17; reserve.lua's order).
        let policy = ts.tenant.policy;
        if let Some(w) = mode.wait {
            if w.ms > policy.max_wait_seconds * 1000 {
                return Err(StoreError::Policy(PolicyRefusal::WaitAboveMax {
                    max_seconds: policy.max_wait_seconds,
                }));
            }
        }
        for (index, it) in items.iter().enumerate() {
            match (it.ttl, policy.max_ttl_seconds) {
                (Some(t), Some(max)) if t.seconds() > max => {
                    return Err(StoreError::Policy(PolicyRefusal::TtlAboveMax {
                        index,
                        max_seconds: max,
                    }))
                }
                (None, _) if policy.require_ttl => {
                    return Err(StoreError::Policy(PolicyRefusal::TtlRequired { index }))
                }
                _ => {}
            }
        }
        // The tenant's (and the requester's) holds, every permit and shared
        // hold counted.
        if max_held.is_some_and(|max| ts.by_requester.len() + items.len() > max) {
            return Ok(Err(LockOutcome::Full));
        }
        if let (Some(max), Some(first)) = (max_per_requester, items.first()) {
            let rq = first.requester.as_str();
            let held = ts
                .by_requester
                .range((rq.to_string(), String::new(), 0)..)
                .take_while(|(q, _, _)| q == rq)
                .take(max)
                .count();
            if held >= max {
                return Ok(Err(LockOutcome::TooMany));
            }
        }
        if locklock.is_some()
            && items
                .iter()
                .any(|it| ts.view(it.resource.as_str(), now_ms).kind.is_multi())
        {
            // Shared or semaphore holders: locklock answers LOCKED at once,
            // even with a wait (contract section 15).
            return Ok(Err(LockOutcome::Locked));
        }
        if mode.atomic || mode.wait.is_some() {
            // Read-only: each item against the state the earlier items would
            // leave (a semaphore repeated takes a permit each time).
            let mut views: HashMap<&str, View> = HashMap::new();
            let verdicts: Vec<Option<ReserveOutcome>> = items
                .iter()
                .map(|it| {
                    let res = it.resource.as_str();
                    let view = views.entry(res).or_insert_with(|| ts.view(res, now_ms));
                    let verdict = ts.judge(view, res, it.kind, now_ms);
                    if verdict.is_none() {
                        let ea = it.ttl.map(|t| now_ms + t.millis());
                        view.join(it.kind, it.requester.as_str(), ea);
                    }
                    verdict
                })
                .collect();
            let failed = verdicts.iter().any(Option::is_some);
            if let (true, Some(wait)) = (failed, mode.wait) {
                let mismatch = |v: &Option<ReserveOutcome>| {
                    matches!(v, Some(ReserveOutcome::LimitMismatch { .. }))
                };
                // An item that cannot join the batch's own earlier items (an
                // exclusive resource named twice, more permits than the
                // semaphore has) can never be granted: no wait either.
                let mut own: HashMap<&str, View> = HashMap::new();
                let never = items.iter().fold(false, |never, it| {
                    let o = own.entry(it.resource.as_str()).or_default();
                    let ok = !o.mismatch(it.kind) && o.can_join(it.kind);
                    o.join(it.kind, "", None);
                    never || !ok
                });
                if never || verdicts.iter().any(mismatch) {
                    // A mismatch never waits: all or nothing, at once (the
                    // failing items with their real outcome, contract
                    // section 13).
                    let out = verdicts
                        .into_iter()
                        .map(|v| v.unwrap_or(ReserveOutcome::Aborted))
                        .collect();
                    return Ok(Ok(out));
                }
                if ts.waits.live(now_ms) >= wait.max_waiters {
                    return Err(StoreError::TooManyWaiters);
                }
                let wanted = items
                    .iter()
                    .map(|it| waits::WaitItem {
                        resource: it.resource.as_str().to_string(),
                        requester: it.requester.as_str().to_string(),
                        ttl_ms: it.ttl.map_or(0, |t| t.millis()),
                        token: ReleaseToken::generate(),
                        kind: it.kind,
                        warn_s: it.warn.map(|w| w.seconds()),
                    })
                    .collect();
                let places = ts.enter(
                    (wait.waiter, &caller.label, locklock.clone()),
                    wanted,
                    now_ms,
                    wait.ms,
                );
                let out = verdicts
                    .into_iter()
                    .zip(places)
                    .map(|(v, place)| match v {
                        Some(ReserveOutcome::AlreadyHeld {
                            held_by,
                            expires_at,
                            ..
                        }) => ReserveOutcome::Queued {
                            place,
                            held_by,
                            expires_at,
                        },
                        _ => ReserveOutcome::Queued {
                            place,
                            held_by: String::new(),
                            expires_at: None,
                        },
                    })
                    .collect();
                return Ok(Ok(out));
            }
            if let Some(aborted) =
                reservations::all_or_nothing(verdicts.into_iter(), ReserveOutcome::Aborted)
            {
                return Ok(Ok(aborted));
            }
        }
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            let res = it.resource.as_str();
            if let Some(blocked) = ts.blocked(res, it.kind, now_ms) {
                out.push(blocked);
                continue;
            }
            out.push(ts.grant(
                Grant {
                    resource: res,
                    requester: it.requester.as_str(),
                    ttl_ms: it.ttl.map(|t| t.millis()),
                    token: ReleaseToken::generate(),
                    label: &caller.label,
                    locklock: locklock.clone(),
                    kind: it.kind,
                    warn_s: it.warn.map(|w| w.seconds()),
                },
                now_us,
                retain,
            ));
        }
        self.publish(&caller.tenant, ts);
        Ok(Ok(out))
    }

    /// Publishes the events a tenant's operation produced. Called with the state
    /// lock held, so events reach the hub in the order they happened.
    fn publish(&self, tenant: &TenantId, ts: &mut TenantState) {
        for wid in std::mem::take(&mut ts.waits.granted_now) {
            let _ = self.inner.grants.send((tenant.clone(), wid));
        }
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
        self.gcra(&quota_key(tenant, q), q.per_second, q.burst)
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
        scope: KeyScope,
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
            scope,
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

#[async_trait]
impl Upkeep for EmbeddedStore {
    async fn rate_limit(
        &self,
        limit: AddressLimit<'_>,
        per_second: u32,
        burst: u32,
    ) -> StoreResult<RateDecision> {
        let key = match limit {
            AddressLimit::PublicLocks(addr) => format!("ip:{addr}"),
            AddressLimit::TokenExchange(addr) => format!("ip-jwt:{addr}"),
        };
        Ok(self.gcra(&key, per_second, burst))
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn clock_ms(&self) -> StoreResult<Millis> {
        Ok(self.state().now_us() / 1000)
    }

    async fn sweep(&self) -> StoreResult<usize> {
        Ok(self.sweep_once())
    }

    async fn charge(&self, tenant: &TenantId, quota: &Quota) -> StoreResult<RateDecision> {
        self.gcra(&quota_key(tenant, quota), quota.per_second, quota.burst)
            .checked()
    }
}

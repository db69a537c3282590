//! The data model behind the API: a [`Store`] trait with two implementations —
//! [`redis::RedisStore`] (fleet mode: all state in Redis, each batch one Lua script)
//! and [`embedded::EmbeddedStore`] (one process, same behaviour, no Redis). Handlers
//! call the trait and get domain results back, never Redis types.

pub mod embedded;
pub mod redis;
pub mod topology;

use crate::domain::{
    ApiKeyInfo, Holding, IssuedKey, KeyId, KeyScope, Kind, Millis, PolicyRefusal, Principal,
    ReleaseToken, Requester, Resource, Tenant, TenantId, TenantName, Tier, Ttl, WarnBefore,
};
use crate::events::{EventId, History, Live};
use async_trait::async_trait;
use tokio::sync::broadcast;

/// Why the store could not answer. `Unavailable` becomes `503 STORE_UNAVAILABLE`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store returned something unexpected: {0}")]
    Internal(String),
    /// The caller's tenant was deleted while its credential was in flight.
    #[error("the tenant no longer exists")]
    TenantGone,
    /// The request was counted against its rate limit and refused; nothing changed.
    #[error("rate limit reached")]
    RateLimited(RateDecision),
    /// The tenant has as many waiting requests as its tier allows.
    #[error("the tenant has its most waiting requests")]
    TooManyWaiters,
    /// The request's Idempotency-Key has a record of another request (another
    /// body, query or path); nothing changed.
    #[error("the Idempotency-Key was used for another request")]
    IdempotencyKeyReused,
    /// The request under the Idempotency-Key is still waiting (contract
    /// section 12); nothing changed.
    #[error("the request under the Idempotency-Key is still waiting")]
    IdempotencyKeyInUse,
    /// The tenant's lease policy refused the request (contract section 17);
    /// nothing changed and nothing was recorded for its Idempotency-Key.
    #[error("the tenant's lease policy refused the request")]
    Policy(PolicyRefusal),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Who is calling: the tenant, the label that events and listings attribute to,
/// and the rate limit the request is counted against (`None`: not limited, e.g.
/// the operator, or a caller limited elsewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: TenantId,
    pub label: String,
    pub quota: Option<Quota>,
    /// The request's Idempotency-Key, when it has one.
    pub idempotency: Option<Idempotency>,
}

/// A request's Idempotency-Key (contract section 14), as the store keeps it.
/// The first execution records, in the same atomic step as its effect, what
/// a repeat must answer; a repeat with the same fingerprint gets that answer
/// (and changes nothing, emits nothing, counts against `replay_quota`); one
/// with another fingerprint gets `StoreError::IdempotencyKeyReused`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The record's id (22 characters): a digest of the credential, the route
    /// and the key's value, so scopes never meet.
    pub record: String,
    /// A digest of the request: method, path, query and body.
    pub fingerprint: String,
    /// How long the record is kept.
    pub retain_ms: u64,
    /// Most records the tenant keeps; past it the oldest go first.
    pub max_records: usize,
    /// What a repeat counts against: the tenant's reads.
    pub replay_quota: Option<Quota>,
}

/// Whether a request reads or changes state: the two rate-limit partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

/// The fleet-wide rate limit a tenant request is counted against: the
/// partition `{tenantId}:{tier}:{read|write}` (contract section 7), refilled at
/// `per_second` with room for a burst of `burst` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub tier: Tier,
    pub access: Access,
    pub per_second: u32,
    pub burst: u32,
}

impl Quota {
    /// Microseconds between two requests at the steady rate (at least 1: the
    /// limiters count in whole microseconds, and 0 would mean "no limit" to
    /// meter.lua).
    pub fn interval_us(&self) -> u64 {
        interval_us(self.per_second)
    }
}

/// Microseconds between two requests at `per_second`, at least 1.
pub fn interval_us(per_second: u32) -> u64 {
    (1_000_000 / u64::from(per_second.max(1))).max(1)
}

/// The result of a rate-limited operation, with the limiter's decision (for the
/// `RateLimit-*` headers) when a quota was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metered<T> {
    pub value: T,
    pub rate: Option<RateDecision>,
    /// The answer of an earlier execution with the same Idempotency-Key: the
    /// request changed nothing.
    pub replayed: bool,
}

impl<T> Metered<T> {
    pub fn new(value: T, rate: Option<RateDecision>) -> Self {
        Self {
            value,
            rate,
            replayed: false,
        }
    }

    pub fn unmetered(value: T) -> Self {
        Self::new(value, None)
    }
}

#[derive(Debug, Clone)]
pub struct ReserveItem {
    pub resource: Resource,
    pub requester: Requester,
    pub ttl: Option<Ttl>,
    /// Exclusive, shared or a semaphore (contract section 15).
    pub kind: Kind,
    /// `EXPIRING` this long before the hold's expiry (contract section 18;
    /// only with a `ttl`, and below it).
    pub warn: Option<WarnBefore>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    Reserved {
        release_token: ReleaseToken,
        reserved_at: Millis,
        expires_at: Option<Millis>,
        fencing_token: u64,
        /// A grant after a wait: how long the request waited in line (store
        /// clock, entering to grant), so a repeat answers the same.
        waited_ms: Option<Millis>,
        /// `reservedAt + maxHoldSeconds` when the tenant's policy has one.
        hold_deadline: Option<Millis>,
        /// The policy's maxHoldSeconds lowered the expiry (contract section 17).
        capped: bool,
    },
    /// The resource is in its lock delay after an `EXPIRED` or
    /// `FORCE_RELEASED` (contract section 17): no new holder before
    /// `available_at`. Nothing changed.
    LockDelay { available_at: Millis },
    /// Held (by `held_by`, empty when the resource is free but has a line),
    /// or free with waiters in line: no barging (contract section 12).
    /// With several holders, `held_by` and `expires_at` are the oldest
    /// holder's (lowest fencing token); `holders` counts the live holders and
    /// `available` is `Some(0)` for a full semaphore (contract section 15).
    AlreadyHeld {
        held_by: String,
        expires_at: Option<Millis>,
        queue_length: u64,
        holders: u64,
        available: Option<u64>,
    },
    /// The resource is held as another kind (a lock for a semaphore request,
    /// a semaphore for a lock request, or a semaphore of another limit):
    /// `kind` is the current holders'. Nothing changed.
    LimitMismatch { kind: Kind },
    /// All or nothing: another item failed, so nothing was done.
    Aborted,
    /// Waiting: the request is in the resource's line at `place` (1 = next).
    Queued {
        place: u64,
        held_by: String,
        expires_at: Option<Millis>,
    },
}

/// A waiting acquire (contract section 12): how long, under which id, and the
/// most waiters the tenant may have fleet-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub ms: u64,
    pub waiter: WaiterId,
    pub max_waiters: usize,
}

/// A waiter's id: 128 random bits, drawn by the waiting instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WaiterId(pub u128);

impl WaiterId {
    pub fn generate() -> Self {
        Self(rand::random())
    }
}

impl std::fmt::Display for WaiterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Where a waiter stands (`Reservations::wait_poll`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitState {
    /// Granted: one outcome per item (`Reserved`).
    Granted(Vec<ReserveOutcome>),
    /// Still in line: its place in each item's line.
    Waiting(Vec<u64>),
    /// No such waiter (it left, or its record expired).
    Gone,
}

/// How a wait under an Idempotency-Key ended (`Reservations::settle`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// A reserve was granted: a repeat answers with this grant.
    Reserve(Vec<ReserveOutcome>),
    /// A locklock acquire was granted.
    Lock(LockOutcome),
    /// Nothing was granted: a retry executes again.
    Nothing,
}

/// How a waiter left (`Reservations::wait_leave`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaveOutcome {
    /// It had been granted just before: the grant is the answer.
    Granted(Vec<ReserveOutcome>),
    /// It left its lines: per item its place and who held the resource.
    Left(Vec<(u64, String, Option<Millis>)>),
    /// Its client went away after a grant: the grant was released again.
    Released,
    /// No such waiter.
    Gone,
}

/// How a batch applies (contract section 13).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchMode {
    /// All or nothing: if any item would not succeed, nothing changes (no hold,
    /// no event, no fencing token used); the failing items carry their real
    /// outcome and the others `Aborted`.
    pub atomic: bool,
    /// Reserve only: wait in line when the batch cannot be granted now.
    pub wait: Option<Wait>,
}

/// Whether an item's outcome is its operation's success.
pub trait Succeeded {
    fn succeeded(&self) -> bool;
}

impl Succeeded for ReserveOutcome {
    fn succeeded(&self) -> bool {
        matches!(self, Self::Reserved { .. })
    }
}

impl Succeeded for ReleaseOutcome {
    fn succeeded(&self) -> bool {
        matches!(self, Self::Unreserved)
    }
}

impl Succeeded for ExtendOutcome {
    fn succeeded(&self) -> bool {
        matches!(self, Self::Extended { .. })
    }
}

#[derive(Debug, Clone)]
pub struct ReleaseItem {
    pub resource: Resource,
    pub requester: Requester,
    pub release_token: ReleaseToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseOutcome {
    Unreserved,
    NotHeld,
    InvalidToken,
    /// All or nothing: another item failed, so nothing was done.
    Aborted,
}

#[derive(Debug, Clone)]
pub struct ExtendItem {
    pub resource: Resource,
    pub requester: Requester,
    pub release_token: ReleaseToken,
    pub ttl: Ttl,
    /// A new expiry warning for the hold (below `ttl`); `None` keeps the
    /// one it has, re-armed for the new expiry (contract section 18).
    pub warn: Option<WarnBefore>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtendOutcome {
    Extended {
        expires_at: Millis,
        /// `reservedAt + maxHoldSeconds` when the tenant's policy has one.
        hold_deadline: Option<Millis>,
        /// The policy's maxHoldSeconds lowered the expiry.
        capped: bool,
    },
    NotHeld,
    InvalidToken,
    /// All or nothing: another item failed, so nothing was done.
    Aborted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Held exclusively, with how many wait in its line.
    Held(Holding, u64),
    /// Held as shared or semaphore: its live holders (oldest first, by
    /// fencing token), with how many wait in its line.
    Holders {
        kind: Kind,
        holders: Vec<Holding>,
        queue_length: u64,
    },
    /// Free, with how many wait in its line (a multi-item waiter at its head
    /// may be waiting for its other resources).
    Free(u64),
    /// Free but in its lock delay until `available_at` (contract section 17).
    LockDelay {
        queue_length: u64,
        available_at: Millis,
    },
}

/// One item of a validate batch: the fencing token a writer presented for a
/// resource (contract section 16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceItem {
    pub resource: Resource,
    pub fencing_token: u64,
}

/// Whether a presented fencing token is the one an active hold has now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceOutcome {
    /// An active hold of the resource has that token.
    Current {
        requester: String,
        expires_at: Option<Millis>,
    },
    /// No active hold has it: `holder` is the token of the hold there is now,
    /// `None` when the resource is free.
    Stale { holder: Option<u64> },
}

/// A locklock acquire: one reservation with an optional secret.
#[derive(Debug, Clone)]
pub struct LockRequest {
    pub resource: Resource,
    pub requester: Requester,
    pub ttl: Ttl,
    /// Hash of the lock's secret ([`secret_hash`]), if it has one.
    pub secret_hash: Option<String>,
    /// Most reservations the tenant may hold (the public tenant's cap).
    pub max_held: Option<usize>,
    /// Most reservations the requester may hold (a public lock's client
    /// address).
    pub max_per_requester: Option<usize>,
    /// Wait in line when the lock is held (locklock `?wait=N`).
    pub wait: Option<Wait>,
    /// `ttl` is locklock's default, not the client's `expires_in`: the
    /// tenant's maxTtlSeconds lowers it instead of refusing it.
    pub ttl_defaulted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    Acquired {
        expires_at: Millis,
        fencing_token: u64,
    },
    Locked,
    /// The tenant holds `max_held` reservations already.
    Full,
    /// The requester holds `max_per_requester` reservations already.
    TooMany,
    /// In the lock's line (with `wait`): the answer comes when the wait ends.
    Queued,
    /// In its lock delay (contract section 17): free again at `available_at`.
    Delayed {
        available_at: Millis,
    },
}

/// Who may release a reservation by name (without its release token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Releaser {
    /// The operator: event `FORCE_RELEASED`, label `admin`.
    Admin,
    /// A locklock client: event `UNRESERVED` with its label; the secret (hash)
    /// must match when the lock has one.
    Locklock {
        label: String,
        secret_hash: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseByName {
    Released,
    NotHeld,
    /// The lock has a secret and it was missing or wrong.
    WrongSecret,
    /// A locklock release met a hold made through the Reservation API, which
    /// only its `releaseToken` releases (contract section 22).
    NotALock,
}

/// The stored form of a locklock secret: SHA-256 over the tenant, the lock name
/// and the secret, so equal secrets of different locks do not hash alike.
pub fn secret_hash(tenant: &TenantId, resource: &Resource, secret: &str) -> String {
    crate::domain::hash_secret(&format!(
        "{}\u{0}{}\u{0}{secret}",
        tenant.as_str(),
        resource.as_str()
    ))
}

/// The decision of a rate limit for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// The limit, in requests per second.
    pub limit: u32,
    /// Requests that would still pass right now.
    pub remaining: u64,
    /// When refused: milliseconds until the next request passes.
    pub retry_after_ms: u64,
    /// Milliseconds until the limit is whole again.
    pub reset_ms: u64,
}

impl RateDecision {
    /// The decision when the request may go on, `StoreError::RateLimited` when not.
    pub fn checked(self) -> StoreResult<Self> {
        if self.allowed {
            Ok(self)
        } else {
            Err(StoreError::RateLimited(self))
        }
    }
}

/// A resource's contention counters (`Reservations::contention`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contended {
    pub resource: String,
    /// Requests that joined its line.
    pub waits: u64,
    /// Waits in its line that ended without a grant (timed out).
    pub timed_out: u64,
}

/// The most resources a tenant's contention counters keep, and how long after
/// its last change a tenant's counters are kept.
pub const CONTENTION_MAX: usize = 1000;
pub const CONTENTION_KEEP_MS: Millis = 3_600_000;

/// One page request of active reservations, sorted by resource (bytewise).
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub prefix: Option<Resource>,
    pub requester: Option<Requester>,
    pub limit: usize,
    /// Resume strictly after this resource (from a previous page's cursor).
    pub after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub items: Vec<Holding>,
    /// The last resource of this page when more may follow.
    pub next_after: Option<String>,
}

/// Changes to a tenant through the admin API; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TenantPatch {
    pub name: Option<TenantName>,
    pub tier: Option<Tier>,
    /// `Some(None)` removes the JWT settings.
    pub jwt: Option<Option<crate::tokens::JwtSettings>>,
    /// The lease policy fields to change (contract section 17).
    pub policy: crate::domain::policy::PolicyPatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCreateError {
    TenantNotFound,
    LimitReached(usize),
}

/// Something every instance must forget from its authentication cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// A tenant's keys or tier changed.
    Tenant(TenantId),
    /// Forget everything (e.g. the invalidation feed reconnected and may have missed
    /// messages).
    All,
}

/// The reservation operations. Those taking a [`Caller`] (or a `quota`) count
/// the request against its rate limit in the same atomic step as the operation
/// itself; over the limit they answer `StoreError::RateLimited` and change
/// nothing. An empty batch is counted and answers no items.
#[async_trait]
pub trait Reservations: Send + Sync {
    /// Reserves every item in order, as one atomic step.
    async fn reserve(
        &self,
        caller: &Caller,
        items: &[ReserveItem],
        mode: BatchMode,
    ) -> StoreResult<Metered<Vec<ReserveOutcome>>>;
    /// Releases every item in order, as one atomic step.
    async fn unreserve(
        &self,
        caller: &Caller,
        items: &[ReleaseItem],
        mode: BatchMode,
    ) -> StoreResult<Metered<Vec<ReleaseOutcome>>>;
    /// Re-arms the TTL of every item from now, as one atomic step.
    async fn extend(
        &self,
        caller: &Caller,
        items: &[ExtendItem],
        mode: BatchMode,
    ) -> StoreResult<Metered<Vec<ExtendOutcome>>>;
    /// Reads the state of every resource (read-only, one atomic step).
    async fn check(
        &self,
        caller: &Caller,
        resources: &[Resource],
    ) -> StoreResult<Metered<Vec<CheckOutcome>>>;
    /// Checks presented fencing tokens against the holds now (read-only,
    /// one atomic step).
    async fn validate(
        &self,
        caller: &Caller,
        items: &[FenceItem],
    ) -> StoreResult<Metered<Vec<FenceOutcome>>>;
    /// Grants to waiting requests as they happen (tenant, waiter): a waiter's
    /// instance learns of its grant here, or at its next `wait_poll`.
    fn grants(&self) -> tokio::sync::broadcast::Receiver<(TenantId, WaiterId)>;
    /// Settles the Idempotency-Key record of a request whose wait ended (the
    /// Redis store does it in the grant's own script, so there it is a no-op).
    async fn settle(&self, caller: &Caller, how: Settled) -> StoreResult<()>;
    /// Where a waiter stands: refreshes its heartbeat and tries the hand-over
    /// of its resources (a lost notification only delays a grant).
    async fn wait_poll(&self, tenant: &TenantId, waiter: WaiterId) -> StoreResult<WaitState>;
    /// Takes a waiter out of its lines (its wait ended, or, with `went_away`,
    /// its client disconnected: then a grant that came first is released).
    async fn wait_leave(
        &self,
        tenant: &TenantId,
        waiter: WaiterId,
        went_away: bool,
    ) -> StoreResult<LeaveOutcome>;
    /// One page of the tenant's active reservations.
    async fn list(&self, caller: &Caller, query: &ListQuery) -> StoreResult<Metered<ListPage>>;
    /// The tenant's contention counters: the resources most requests waited
    /// for (at most `limit`, most waits first), counted in the waiting steps
    /// themselves and kept for the most contended 1,000 resources while they
    /// keep changing (an hour after the last change they are gone).
    async fn contention(&self, tenant: &TenantId, limit: usize) -> StoreResult<Vec<Contended>>;
    /// Releases a reservation whoever holds it; `false` when it was not held.
    async fn force_release(&self, tenant: &TenantId, resource: &Resource) -> StoreResult<bool> {
        let admin = Caller {
            tenant: tenant.clone(),
            label: "admin".into(),
            quota: None,
            idempotency: None,
        };
        Ok(self
            .release_by_name(&admin, resource, &Releaser::Admin)
            .await?
            .value
            == ReleaseByName::Released)
    }
    /// Releases a reservation by name, without its release token.
    async fn release_by_name(
        &self,
        caller: &Caller,
        resource: &Resource,
        by: &Releaser,
    ) -> StoreResult<Metered<ReleaseByName>>;
    /// Acquires a locklock lock: a reservation like `reserve` makes.
    async fn lock(&self, caller: &Caller, req: &LockRequest) -> StoreResult<Metered<LockOutcome>>;
}

/// Tenants, their API keys, and the authentication that rests on them.
#[async_trait]
pub trait Accounts: Send + Sync {
    /// Creates a tenant with a given id unless it exists (the public tenant).
    async fn ensure_tenant(&self, id: &TenantId, name: &TenantName, tier: Tier) -> StoreResult<()>;
    /// Creates a tenant with its default key. `secret` pins the key's value (only
    /// for the embedded mode's configured default key); otherwise one is generated.
    async fn create_tenant(
        &self,
        name: &TenantName,
        tier: Tier,
        secret: Option<String>,
    ) -> StoreResult<(Tenant, IssuedKey)>;
    /// Tenants in id (creation) order, after `after`, at most `limit`.
    async fn list_tenants(
        &self,
        after: Option<&TenantId>,
        limit: usize,
    ) -> StoreResult<(Vec<Tenant>, Option<TenantId>)>;
    async fn get_tenant(&self, id: &TenantId) -> StoreResult<Option<Tenant>>;
    async fn update_tenant(
        &self,
        id: &TenantId,
        patch: &TenantPatch,
    ) -> StoreResult<Option<Tenant>>;
    /// Deletes a tenant, its keys and its reservations; `false` when unknown.
    async fn delete_tenant(&self, id: &TenantId) -> StoreResult<bool>;

    /// Adds a key of `scope` to a tenant, within its tier's key limit.
    async fn create_key(
        &self,
        tenant: &TenantId,
        label: &str,
        scope: KeyScope,
    ) -> StoreResult<Result<IssuedKey, KeyCreateError>>;
    async fn list_keys(&self, tenant: &TenantId) -> StoreResult<Option<Vec<ApiKeyInfo>>>;
    /// A new secret for an existing key (same id and label); `None` when unknown.
    async fn rotate_key(&self, tenant: &TenantId, key: &KeyId) -> StoreResult<Option<IssuedKey>>;
    async fn delete_key(&self, tenant: &TenantId, key: &KeyId) -> StoreResult<bool>;
    /// Looks a key up by the hash of its secret (uncached).
    async fn authenticate(&self, key_hash: &str) -> StoreResult<Option<Principal>>;
    /// The tenants whose JWT settings name `issuer` (at most a few).
    async fn tenants_by_issuer(&self, issuer: &str) -> StoreResult<Vec<Tenant>>;
    /// The fleet's shared secret for signing exchanged tokens, created on first
    /// use (used when none is configured).
    async fn token_secret(&self) -> StoreResult<String>;

    /// Feed of cache invalidations from every instance of the fleet.
    fn invalidations(&self) -> broadcast::Receiver<Invalidation>;
    /// Whether the invalidation feed is live, so that cached credentials can be
    /// trusted. While it is down every request re-reads its key from the store.
    fn cache_allowed(&self) -> bool;
}

/// The tenants' event histories and live feeds.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Up to `limit` events of a tenant after `after`, oldest first, or a gap when
    /// some of them are no longer retained.
    async fn events_after(
        &self,
        tenant: &TenantId,
        after: EventId,
        limit: usize,
    ) -> StoreResult<History>;
    /// The id of the tenant's newest event, if it has any.
    async fn latest_event(&self, tenant: &TenantId) -> StoreResult<Option<EventId>>;
    /// Makes this instance receive the tenant's live events on [`EventLog::live_events`].
    /// Returns once every event committed from then on is sure to arrive.
    async fn follow_events(&self, tenant: &TenantId) -> StoreResult<()>;
    /// Stops [`EventLog::follow_events`] (when no local client follows the tenant).
    fn unfollow_events(&self, tenant: &TenantId);
    /// Live events of the followed tenants (and resync notices).
    fn live_events(&self) -> broadcast::Receiver<Live>;
}

/// A fleet-wide limit counted per client address (not per tenant): the address
/// is an IPv4 address or an IPv6 /64, as the HTTP layer derives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressLimit<'a> {
    /// Keyless public locklock locks.
    PublicLocks(&'a str),
    /// JWT exchanges.
    TokenExchange(&'a str),
}

/// Rate limits on their own, readiness, and the periodic expiry sweep.
#[async_trait]
pub trait Upkeep: Send + Sync {
    /// Counts one request of a client address against `limit` (`per_second`
    /// with a burst of `burst`), for the whole fleet.
    async fn rate_limit(
        &self,
        limit: AddressLimit<'_>,
        per_second: u32,
        burst: u32,
    ) -> StoreResult<RateDecision>;
    /// Counts one request of a tenant against its quota on its own (for requests
    /// that run no metered operation, such as opening an event stream); over the
    /// limit it answers `StoreError::RateLimited`.
    async fn charge(&self, tenant: &TenantId, quota: &Quota) -> StoreResult<RateDecision>;
    /// Whether the store answers now (readiness).
    async fn ping(&self) -> StoreResult<()>;
    /// The store's clock (Redis `TIME`), in ms: the clock every expiry is
    /// counted by.
    async fn clock_ms(&self) -> StoreResult<Millis>;
    /// Retires reservations whose expiry has passed, emitting their `EXPIRED`
    /// events. Idempotent: every instance runs it periodically.
    async fn sweep(&self) -> StoreResult<usize>;
}

/// The whole store: what the HTTP layer, the CLI and the dashboard are given.
pub trait Store: Reservations + Accounts + EventLog + Upkeep + 'static {}

impl<T: Reservations + Accounts + EventLog + Upkeep + 'static> Store for T {}

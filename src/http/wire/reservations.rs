//! The Coop Locker reservation endpoints: batch items, their results, the listing.

use crate::domain::{
    format_millis, Holding, Kind, ReleaseToken, Requester, Resource, Ttl, WarnBefore,
};
use serde::Serialize;
use std::borrow::Cow;
use utoipa::openapi::schema::ArrayBuilder;
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};

/// Default and largest page of `GET /api/v1/Reservation`.
pub const DEFAULT_LIST_LIMIT: u64 = 1000;
pub const MAX_LIST_LIMIT: u64 = 10_000;
/// Most items of one batch by default (`COOPLOCKER_MAX_BATCH`).
pub const DEFAULT_MAX_BATCH: usize = 1000;

/// One item of a reserve batch.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ReserveItem {
    pub requester: Requester,
    pub resource: Resource,
    /// Absent or null: no expiry.
    pub ttl_seconds: Option<Ttl>,
    /// `shared`: a read lock (any number of shared holders, no exclusive
    /// one). Absent or `exclusive`: an exclusive lock. Not with `limit`.
    #[schema(nullable = false)]
    pub mode: Option<LockMode>,
    /// A semaphore of this many permits (each holder takes one). Not with
    /// `mode`.
    #[schema(minimum = 1, maximum = 10000, nullable = false)]
    pub limit: Option<u16>,
    /// An `EXPIRING` event this many seconds before `expiresAt`, once, unless
    /// released first (armed at the grant, also after waitSeconds). Only
    /// with ttlSeconds, and below it.
    pub warn_before_seconds: Option<WarnBefore>,
}

/// The lock modes a reserve item may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    Exclusive,
    Shared,
}

/// One item of an unreserve batch.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ReleaseItem {
    pub requester: Requester,
    pub resource: Resource,
    pub release_token: ReleaseToken,
}

/// One item of an extend batch.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ExtendItem {
    pub requester: Requester,
    pub resource: Resource,
    pub release_token: ReleaseToken,
    pub ttl_seconds: Ttl,
    /// Replaces the reservation's expiry warning (below ttlSeconds). Absent:
    /// the warning it has, if any, is kept, re-armed for the new expiresAt
    /// (due at once when it is not below ttlSeconds).
    pub warn_before_seconds: Option<WarnBefore>,
}

/// One item of a check batch.
#[derive(ToSchema)]
pub struct CheckItem {
    pub resource: Resource,
}

/// One item of a validate batch: the fencing token a writer presented.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ValidateItem {
    pub resource: Resource,
    /// The token as the service handed it out (RESERVED, check, a locklock
    /// acquire): a non-negative integer.
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_807_u64)]
    pub fencing_token: u64,
}

/// A batch body's schema: an array of 0 to [`DEFAULT_MAX_BATCH`] items (the
/// default of `COOPLOCKER_MAX_BATCH`).
macro_rules! batch {
    ($(#[$doc:meta])* $name:ident, $item:ty) => {
        $(#[$doc])*
        pub struct $name;
        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ArrayBuilder::new()
                    .items(Ref::from_schema_name(<$item as ToSchema>::name()))
                    .max_items(Some(DEFAULT_MAX_BATCH))
                    .description(Some(
                        "0 to 1000 items (COOPLOCKER_MAX_BATCH), applied in order as one atomic step.",
                    ))
                    .into()
            }
        }
        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
            fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                schemas.push((
                    <$item as ToSchema>::name().into_owned(),
                    <$item as PartialSchema>::schema(),
                ));
                <$item as ToSchema>::schemas(schemas);
            }
        }
    };
}

batch!(
    /// The body of `reserve`.
    ReserveBatch,
    ReserveItem
);
batch!(
    /// The body of `unreserve`.
    ReleaseBatch,
    ReleaseItem
);
batch!(
    /// The body of `extend`.
    ExtendBatch,
    ExtendItem
);
batch!(
    /// The body of `check`.
    CheckBatch,
    CheckItem
);

batch!(
    /// The body of `validate`.
    ValidateBatch,
    ValidateItem
);

/// Whether a presented fencing token is the one an active hold has now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FenceStatus {
    /// An active hold of the resource has this token now.
    Current,
    /// No active hold has it: released, expired, force-released, or the
    /// resource was granted again since.
    Stale,
}

impl FenceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "CURRENT",
            Self::Stale => "STALE",
        }
    }
}

/// The outcome of one validate item, in request order.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FenceResult<'a> {
    pub resource: &'a str,
    /// The token the item presented.
    pub fencing_token: u64,
    pub status: FenceStatus,
    /// CURRENT only: the holder's requester.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub requester: Option<&'a str>,
    /// CURRENT only; null when the reservation has no TTL.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<String>>,
    /// STALE only: the token of the hold there is now, null when the
    /// resource is free.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>, minimum = 0)]
    pub current_fencing_token: Option<Option<u64>>,
}

#[derive(Serialize, ToSchema)]
pub struct FenceResults<'a> {
    pub results: Vec<FenceResult<'a>>,
}

/// The status of one batch item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ItemStatus {
    Reserved,
    AlreadyHeld,
    Unreserved,
    Extended,
    NotHeld,
    InvalidToken,
    Held,
    Free,
    /// All or nothing: another item failed, so this one was not done.
    Aborted,
    /// The resource is held as another kind (a lock, a semaphore, or a
    /// semaphore of another limit); `mode` and `limit` describe its holders.
    LimitMismatch,
    /// Not granted within `waitSeconds`: nothing is held, the request left
    /// every line.
    TimedOut,
    /// The resource is in its lock delay after an `EXPIRED` or
    /// `FORCE_RELEASED` (the tenant's `lockDelaySeconds`): no new holder
    /// before `availableAt`. Nothing was done.
    LockDelay,
}

impl ItemStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "RESERVED",
            Self::AlreadyHeld => "ALREADY_HELD",
            Self::Unreserved => "UNRESERVED",
            Self::Extended => "EXTENDED",
            Self::NotHeld => "NOT_HELD",
            Self::InvalidToken => "INVALID_TOKEN",
            Self::Held => "HELD",
            Self::Free => "FREE",
            Self::Aborted => "ABORTED",
            Self::LimitMismatch => "LIMIT_MISMATCH",
            Self::TimedOut => "TIMED_OUT",
            Self::LockDelay => "LOCK_DELAY",
        }
    }
}

/// The outcome of one batch item, in request order. Fields that do not apply
/// to the status are left out.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemResult<'a> {
    pub resource: &'a str,
    /// Left out only for FREE.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub requester: Option<&'a str>,
    pub status: ItemStatus,
    /// RESERVED only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = "uuid")]
    pub release_token: Option<&'a str>,
    /// ALREADY_HELD only: the holder's requester.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub held_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = DateTime)]
    pub reserved_at: Option<String>,
    /// Null when the reservation has no TTL.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub fencing_token: Option<u64>,
    /// RESERVED after a wait (`waitSeconds`): how long the request waited.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub waited_ms: Option<u64>,
    /// ALREADY_HELD and HELD when the resource has waiters: how many.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub queue_length: Option<u64>,
    /// TIMED_OUT: the request's place in the line when its wait ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub queue_position: Option<u64>,
    /// TIMED_OUT because the instance is shutting down: `SHUTDOWN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<&'static str>,
    /// The kind of hold: `exclusive`, `shared` or `semaphore`. On reserve
    /// results the item's own kind, except LIMIT_MISMATCH: the current
    /// holders' kind. On HELD: the holders' kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, pattern = "^(exclusive|shared|semaphore)$")]
    pub mode: Option<&'static str>,
    /// With `"mode":"semaphore"`: its permits.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1, maximum = 10000)]
    pub limit: Option<u16>,
    /// ALREADY_HELD: how many hold the resource now. HELD of a shared or
    /// semaphore resource: the holders, oldest (lowest fencing token) first.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub holders: Option<Holders>,
    /// Held as a semaphore: permits left (`limit` minus the holders).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub available: Option<u64>,
    /// With the tenant's `maxHoldSeconds`: `reservedAt + maxHoldSeconds`, past
    /// which no extend moves `expiresAt` (RESERVED, EXTENDED, HELD).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = DateTime)]
    pub hold_deadline: Option<String>,
    /// RESERVED, EXTENDED: `true` when `maxHoldSeconds` lowered `expiresAt`
    /// below what the item asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub capped: Option<bool>,
    /// LOCK_DELAY, and FREE in a lock delay: when the resource takes a new
    /// holder again.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = DateTime)]
    pub available_at: Option<String>,
}

/// `holders`: a count on ALREADY_HELD, the list on HELD.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Holders {
    Count(u64),
    List(Vec<Holder>),
}

/// One holder of a shared or semaphore resource (check).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    pub requester: String,
    #[schema(format = DateTime)]
    pub reserved_at: String,
    /// Null when the hold has no TTL.
    #[schema(format = DateTime, required = true)]
    pub expires_at: Option<String>,
    pub fencing_token: u64,
    /// With the tenant's `maxHoldSeconds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = DateTime)]
    pub hold_deadline: Option<String>,
}

impl<'a> ItemResult<'a> {
    pub fn new(resource: &'a str, requester: Option<&'a str>, status: ItemStatus) -> Self {
        Self {
            resource,
            requester,
            status,
            release_token: None,
            held_by: None,
            reserved_at: None,
            expires_at: None,
            fencing_token: None,
            waited_ms: None,
            queue_length: None,
            queue_position: None,
            reason: None,
            mode: None,
            limit: None,
            holders: None,
            available: None,
            hold_deadline: None,
            capped: None,
            available_at: None,
        }
    }

    /// Names the kind of hold (`mode`, and `limit` for a semaphore).
    pub fn kind(mut self, kind: Kind) -> Self {
        self.mode = Some(kind.mode());
        self.limit = kind.limit();
        self
    }
}

#[derive(Serialize, ToSchema)]
pub struct Results<'a> {
    pub results: Vec<ItemResult<'a>>,
    /// With `atomic=true` only: whether the batch took effect (every item
    /// succeeded) or nothing changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub committed: Option<bool>,
}

/// The Idempotency-Key header of the writing routes (contract section 14).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyParams {
    /// 1 to 255 printable ASCII characters. A repeat within
    /// COOPLOCKER_IDEMPOTENCY_TTL (same credential, route, key, method, path,
    /// query and body) gets the first answer again, with Idempotent-Replayed:
    /// true, and changes nothing; the same key with another request is 422
    /// IDEMPOTENCY_KEY_REUSED. The remedy for a 503 whose effect did commit.
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]([ -~]*[!-~])?$"
    )]
    pub idempotency_key: Option<String>,
}

/// The query of `unreserve` and `extend`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BatchParams {
    /// All or nothing: `true` applies the batch only if every item succeeds;
    /// otherwise nothing changes and the other items answer ABORTED.
    #[param(default = false)]
    pub atomic: Option<bool>,
}

/// The query of `reserve`: `atomic`, and `waitSeconds` (contract section 12).
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct ReserveParams {
    /// All or nothing, as for unreserve and extend.
    #[param(default = false)]
    pub atomic: Option<bool>,
    /// Wait up to this many seconds in the line of each
    /// resource (strict FIFO) when the batch cannot be granted now; every item
    /// needs ttlSeconds, and more than one item needs atomic=true.
    /// At most the tenant's `policy.maxWaitSeconds` (default 60).
    #[param(minimum = 0, maximum = 300, default = 0)]
    pub wait_seconds: Option<u64>,
}

/// One active reservation (never its releaseToken).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reservation<'a> {
    pub resource: &'a str,
    pub requester: &'a str,
    #[schema(format = DateTime)]
    pub reserved_at: String,
    /// Null when the reservation has no TTL.
    #[schema(format = DateTime, required = true)]
    pub expires_at: Option<String>,
    pub fencing_token: u64,
    pub api_key_label: &'a str,
    /// `exclusive`, `shared` or `semaphore`.
    #[schema(pattern = "^(exclusive|shared|semaphore)$")]
    pub mode: &'static str,
    /// With `"mode":"semaphore"`: its permits.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1, maximum = 10000)]
    pub limit: Option<u16>,
    /// With the tenant's `maxHoldSeconds`: `reservedAt + maxHoldSeconds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = DateTime)]
    pub hold_deadline: Option<String>,
}

impl<'a> From<&'a Holding> for Reservation<'a> {
    fn from(h: &'a Holding) -> Self {
        Self {
            resource: h.resource.as_str(),
            requester: &h.requester,
            reserved_at: format_millis(h.reserved_at),
            expires_at: h.expires_at.map(format_millis),
            fencing_token: h.fencing_token,
            api_key_label: &h.api_key_label,
            mode: h.kind.mode(),
            limit: h.kind.limit(),
            hold_deadline: h.hold_deadline.map(format_millis),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservationPage<'a> {
    pub reservations: Vec<Reservation<'a>>,
    /// Null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The query of `GET /api/v1/Reservation` (and `activeReservations`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only resources starting with it
    pub prefix: Option<Resource>,
    /// Only the reservations of this requester
    pub requester: Option<Requester>,
    /// 1 to 10000, default 1000
    #[param(minimum = 1, maximum = 10000, default = 1000)]
    pub limit: Option<u64>,
    /// The nextCursor of the previous page, as issued (the hex of a resource
    /// name: valid UTF-8 of at most 256 bytes without C0 controls or DEL;
    /// then, when the page ended among the holds of a shared or semaphore
    /// resource, `.` and a fencing token in 17 digits)
    // The pattern: `r1.` and one well-formed UTF-8 sequence (RFC 3629) after
    // another, in lower-case hex, C0 controls and DEL left out; at most 512 hex
    // digits (256 bytes); then perhaps `.` and 17 digits.
    #[param(
        pattern = "^r1\\.(?:[2-6][0-9a-f]|7[0-9a-e]|c[2-9a-f][89ab][0-9a-f]|d[0-9a-f][89ab][0-9a-f]|e0[ab][0-9a-f][89ab][0-9a-f]|e[1-9a-cef][89ab][0-9a-f][89ab][0-9a-f]|ed[89][0-9a-f][89ab][0-9a-f]|f0[9ab][0-9a-f](?:[89ab][0-9a-f]){2}|f[1-3](?:[89ab][0-9a-f]){3}|f48[0-9a-f](?:[89ab][0-9a-f]){2})+(?:\\.[0-9]{17})?$",
        max_length = 533
    )]
    pub cursor: Option<String>,
}

//! The wire shapes of the tenant API (contract sections 3, 12, 13, 15, 16):
//! batch items as this client sends them, results as the service answers.
//! Times are the service's RFC 3339 strings, kept as they came.

use serde::{Deserialize, Serialize};

/// The kind of hold a reserve item asks for (contract section 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// One holder at a time (the default).
    #[default]
    Exclusive,
    /// A read lock: any number of shared holders, no exclusive one.
    Shared,
    /// A semaphore of this many permits (1–10000); every holder takes one.
    Semaphore(u16),
}

/// The `mode` the service reports on results, listings and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Exclusive,
    Shared,
    Semaphore,
    /// A mode this version does not know.
    #[serde(other)]
    Unknown,
}

/// One item of a reserve batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveItem {
    pub resource: String,
    pub requester: String,
    /// `None`: no expiry. Required when waiting.
    pub ttl_seconds: Option<u64>,
    pub kind: Kind,
    /// One `EXPIRING` event this many seconds before the expiry.
    pub warn_before_seconds: Option<u64>,
}

impl ReserveItem {
    /// An exclusive hold without expiry; see [`ttl`](Self::ttl) and
    /// [`kind`](Self::kind).
    pub fn new(resource: impl Into<String>, requester: impl Into<String>) -> Self {
        Self {
            resource: resource.into(),
            requester: requester.into(),
            ttl_seconds: None,
            kind: Kind::Exclusive,
            warn_before_seconds: None,
        }
    }

    pub fn ttl(mut self, seconds: u64) -> Self {
        self.ttl_seconds = Some(seconds);
        self
    }

    pub fn kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    pub fn warn_before(mut self, seconds: u64) -> Self {
        self.warn_before_seconds = Some(seconds);
        self
    }
}

impl Serialize for ReserveItem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            requester: &'a str,
            resource: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            ttl_seconds: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            mode: Option<&'static str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            limit: Option<u16>,
            #[serde(skip_serializing_if = "Option::is_none")]
            warn_before_seconds: Option<u64>,
        }
        let (mode, limit) = match self.kind {
            Kind::Exclusive => (None, None),
            Kind::Shared => (Some("shared"), None),
            Kind::Semaphore(n) => (None, Some(n)),
        };
        Wire {
            requester: &self.requester,
            resource: &self.resource,
            ttl_seconds: self.ttl_seconds,
            mode,
            limit,
            warn_before_seconds: self.warn_before_seconds,
        }
        .serialize(s)
    }
}

/// One item of an unreserve batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseItem {
    pub requester: String,
    pub resource: String,
    pub release_token: String,
}

impl ReleaseItem {
    pub fn new(
        resource: impl Into<String>,
        requester: impl Into<String>,
        release_token: impl Into<String>,
    ) -> Self {
        Self {
            requester: requester.into(),
            resource: resource.into(),
            release_token: release_token.into(),
        }
    }
}

/// One item of an extend batch: the hold's TTL becomes `ttl_seconds` from now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtendItem {
    pub requester: String,
    pub resource: String,
    pub release_token: String,
    pub ttl_seconds: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warn_before_seconds: Option<u64>,
}

impl ExtendItem {
    pub fn new(
        resource: impl Into<String>,
        requester: impl Into<String>,
        release_token: impl Into<String>,
        ttl_seconds: u64,
    ) -> Self {
        Self {
            requester: requester.into(),
            resource: resource.into(),
            release_token: release_token.into(),
            ttl_seconds,
            warn_before_seconds: None,
        }
    }
}

/// One item of a validate batch: a fencing token a writer presented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidateItem {
    pub resource: String,
    pub fencing_token: u64,
}

/// The status of one batch item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Reserved,
    AlreadyHeld,
    Unreserved,
    Extended,
    NotHeld,
    InvalidToken,
    Held,
    Free,
    Aborted,
    LimitMismatch,
    TimedOut,
    LockDelay,
    /// A status this version does not know.
    #[serde(other)]
    Unknown,
}

impl Status {
    /// The wire name (`RESERVED`, ...).
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
            Self::Unknown => "UNKNOWN",
        }
    }
}

/// The outcome of one item of reserve, unreserve, extend or check. Fields
/// that do not apply to the status are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemResult {
    pub resource: String,
    #[serde(default)]
    pub requester: Option<String>,
    pub status: Status,
    /// RESERVED only: what unreserve and extend need.
    #[serde(default)]
    pub release_token: Option<String>,
    /// ALREADY_HELD, TIMED_OUT: the (oldest) holder's requester.
    #[serde(default)]
    pub held_by: Option<String>,
    #[serde(default)]
    pub reserved_at: Option<String>,
    /// `None` when absent or when the hold has no TTL.
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub fencing_token: Option<u64>,
    #[serde(default)]
    pub waited_ms: Option<u64>,
    #[serde(default)]
    pub queue_length: Option<u64>,
    #[serde(default)]
    pub queue_position: Option<u64>,
    /// TIMED_OUT because the instance was shutting down: `SHUTDOWN`.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub limit: Option<u16>,
    /// A count on ALREADY_HELD, the list on HELD of a multi-holder resource.
    #[serde(default)]
    pub holders: Option<Holders>,
    #[serde(default)]
    pub available: Option<u64>,
    /// The lease policy clamped `expiresAt` to `holdDeadline`.
    #[serde(default)]
    pub capped: Option<bool>,
    #[serde(default)]
    pub hold_deadline: Option<String>,
    /// LOCK_DELAY: when the resource takes a holder again.
    #[serde(default)]
    pub available_at: Option<String>,
}

/// `holders`: how many on ALREADY_HELD, who on HELD.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Holders {
    Count(u64),
    List(Vec<Holder>),
}

/// One holder of a shared or semaphore resource.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    pub requester: String,
    pub reserved_at: String,
    pub expires_at: Option<String>,
    pub fencing_token: u64,
}

/// The answer of reserve, unreserve, extend and check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BatchAnswer {
    pub results: Vec<ItemResult>,
    /// With `atomic`: whether the batch took effect.
    #[serde(default)]
    pub committed: Option<bool>,
    /// The service answered a repeat of an earlier request with the same
    /// `Idempotency-Key` (header `Idempotent-Replayed: true`): the first
    /// answer again, nothing changed.
    #[serde(skip)]
    pub replayed: bool,
}

/// Options of one reserve, unreserve or extend call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOptions {
    /// `atomic=true`: all or nothing (contract section 13).
    pub atomic: bool,
    /// `waitSeconds` (reserve only): wait in line up to this long (0–300,
    /// at most the tenant's `maxWaitSeconds`).
    pub wait_seconds: u64,
    /// The `Idempotency-Key` to send; `None` generates a fresh one per call
    /// (reused on every retry of that call).
    pub idempotency_key: Option<String>,
}

impl BatchOptions {
    pub fn atomic(mut self) -> Self {
        self.atomic = true;
        self
    }

    pub fn wait_seconds(mut self, seconds: u64) -> Self {
        self.wait_seconds = seconds;
        self
    }

    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// Whether a presented fencing token is the one an active hold has now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FenceStatus {
    Current,
    Stale,
    #[serde(other)]
    Unknown,
}

/// The outcome of one validate item.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FenceResult {
    pub resource: String,
    pub fencing_token: u64,
    pub status: FenceStatus,
    /// CURRENT: the holder.
    #[serde(default)]
    pub requester: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    /// STALE: the exclusive holder's token now, `None` when free.
    #[serde(default)]
    pub current_fencing_token: Option<u64>,
}

#[derive(Deserialize)]
pub(crate) struct FenceResults {
    pub results: Vec<FenceResult>,
}

/// One active reservation of a listing (never its release token).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    pub resource: String,
    pub requester: String,
    pub reserved_at: String,
    pub expires_at: Option<String>,
    pub fencing_token: u64,
    pub api_key_label: String,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub limit: Option<u16>,
    #[serde(default)]
    pub hold_deadline: Option<String>,
}

/// One page of a listing; pass `next_cursor` to [`ListQuery::cursor`] for the
/// next one (`None` on the last page).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservationPage {
    pub reservations: Vec<Reservation>,
    pub next_cursor: Option<String>,
}

/// The filters and page of `GET /api/v1/Reservation`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub prefix: Option<String>,
    pub requester: Option<String>,
    /// 1–10000 (the service's default: 1000).
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl ListQuery {
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    pub fn requester(mut self, requester: impl Into<String>) -> Self {
        self.requester = Some(requester.into());
        self
    }

    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(p) = &self.prefix {
            q.push(("prefix", p.clone()));
        }
        if let Some(r) = &self.requester {
            q.push(("requester", r.clone()));
        }
        if let Some(l) = self.limit {
            q.push(("limit", l.to_string()));
        }
        if let Some(c) = &self.cursor {
            q.push(("cursor", c.clone()));
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_are_sent_as_the_contract_names_them() {
        let wire = |k| serde_json::to_value(ReserveItem::new("r", "a").ttl(5).kind(k)).unwrap();
        assert_eq!(
            wire(Kind::Exclusive),
            json!({"requester":"a","resource":"r","ttlSeconds":5})
        );
        assert_eq!(
            wire(Kind::Shared),
            json!({"requester":"a","resource":"r","ttlSeconds":5,"mode":"shared"})
        );
        assert_eq!(
            wire(Kind::Semaphore(3)),
            json!({"requester":"a","resource":"r","ttlSeconds":5,"limit":3})
        );
    }

    #[test]
    fn unknown_statuses_and_fields_do_not_break_decoding() {
        let r: ItemResult = serde_json::from_value(
            json!({"resource":"r","status":"SOMETHING_NEW","brandNew":1,"holders":2}),
        )
        .unwrap();
        assert_eq!(r.status, Status::Unknown);
        assert_eq!(r.holders, Some(Holders::Count(2)));
    }
}

//! The locklock-compatible API (contract section 5): `POST`/`DELETE`
//! `/v1/api/lock/uuid/{uuid}` and `/v1/api/lock/key/{name}`. A lock is a
//! reservation (same engine, events and fencing tokens) held by the requester
//! `locklock`, with an optional secret stored as a salted hash.
//!
//! Without an API key, UUID locks live in a shared public tenant (switchable off
//! with `COOPLOCKER_PUBLIC_LOCKS`), limited per client address and in number;
//! with a key, in the key's tenant. Named locks need a `pro` or `enterprise` key.

use super::body::{invalid_items, parse_object, Fields};
use super::client_addr::{charge_address, AddressLimit};
use super::error::ApiError;
use super::extract::{has_credentials, locklock_caller};
use super::idempotency;
use super::query::Query;
use super::rate_headers::headers;
use super::wire::{
    ErrorBody, IdempotencyParams, LockAcquired, LockErrors, LockOptions, LockReleased, LockSecret,
    LockWaitParams,
};
use crate::domain::{format_millis, Requester, Resource, TenantId, TenantName, Tier, Ttl};
use crate::state::AppState;
use crate::store::{
    secret_hash, Caller, LockOutcome, LockRequest, RateDecision, ReleaseByName, Releaser,
    ReserveOutcome, Settled, StoreError, Wait, WaiterId,
};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use std::sync::atomic::Ordering;

/// The tenant of keyless (public) locks.
pub const PUBLIC_TENANT: &str = "00000000-0000-7000-8000-00000000d0c5";
/// The requester of every locklock lock (locklock has no requester).
pub const REQUESTER: &str = "locklock";
/// `expires_in` when the body does not give one: 30 days.
pub const DEFAULT_EXPIRES_IN: u64 = 2_592_000;
/// Longest secret accepted.
const MAX_SECRET_BYTES: usize = 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Naming {
    Uuid,
    Key,
}

impl Naming {
    /// The route of `op` on locks of this naming (an Idempotency-Key's scope).
    fn route(self, op: &str) -> &'static str {
        match (op, self) {
            ("lock", Self::Uuid) => "lock:uuid",
            ("lock", Self::Key) => "lock:key",
            (_, Self::Uuid) => "unlock:uuid",
            (_, Self::Key) => "unlock:key",
        }
    }
}

/// Who a lock belongs to, and the rate-limit headers to send (public locks).
struct Holder {
    caller: Caller,
    max_held: Option<usize>,
    /// Public locks: the most one client address may hold, and the longest
    /// (and default) `expires_in`.
    per_address: Option<(usize, u64)>,
    /// Public locks: the client's address as requester.
    requester: Option<Requester>,
    /// Who sends an Idempotency-Key (the API key, or the public client's
    /// address), and the tier its records count against.
    credential: String,
    tier: Option<Tier>,
    limit_headers: Vec<(&'static str, String)>,
}

impl Holder {
    /// Takes the request's Idempotency-Key, if it has one, for `route`.
    fn idempotent(
        &mut self,
        req: &HttpRequest,
        state: &AppState,
        route: &str,
        body: &[u8],
    ) -> Result<(), ApiError> {
        if let Some(k) = idempotency::key(req)? {
            self.caller.idempotency = Some(idempotency::record(
                req,
                state,
                &k,
                (&self.credential, route),
                self.tier,
                body,
            ));
        }
        Ok(())
    }

    /// The headers of the answer: the rate limit's, and `Idempotent-Replayed`
    /// for a repeat's.
    fn answered(&mut self, rate: Option<&RateDecision>, replayed: bool) {
        if let Some(rate) = rate {
            self.limit_headers = headers(rate);
        }
        if replayed {
            crate::metrics::idempotent_replay();
            self.limit_headers
                .push((idempotency::REPLAYED, "true".to_string()));
        }
    }
}

async fn holder(req: &HttpRequest, state: &AppState, naming: Naming) -> Result<Holder, ApiError> {
    if has_credentials(req) {
        let who = locklock_caller(req, state, naming == Naming::Key).await?;
        return Ok(Holder {
            credential: who.credential(),
            tier: Some(who.principal.tier),
            caller: who.caller,
            max_held: None,
            per_address: None,
            requester: None,
            limit_headers: Vec::new(),
        });
    }
    if naming == Naming::Key {
        return Err(ApiError::Unauthorized(
            "named locks need an API key of a pro or enterprise tenant in X-Api-Key".into(),
        ));
    }
    if !state.limits.public_locks {
        return Err(ApiError::Unauthorized(
            "public locks are disabled on this server: send an API key in X-Api-Key".into(),
        ));
    }
    let decision = charge_address(req, state, AddressLimit::PublicLocks).await?;
    let limit_headers = headers(&decision);
    let tenant = public_tenant(state).await?;
    // A public lock's requester is the client's address (its /64 for IPv6),
    // so what one address holds can be counted, and capped.
    let address = super::client_addr::client_addr(req, state);
    let requester = Requester::parse(format!("public:{}", address.as_str()))
        .map_err(|e| ApiError::Internal(format!("public requester: {}", e.0)))?;
    Ok(Holder {
        // Counted per client address above, not per tenant.
        caller: Caller {
            tenant,
            label: "public".into(),
            quota: None,
            idempotency: None,
        },
        credential: format!("public:{}", address.as_str()),
        tier: None,
        max_held: Some(state.limits.public_locks_max),
        per_address: Some((
            state.limits.public_locks_per_address,
            state.limits.public_max_expires_in,
        )),
        requester: Some(requester),
        limit_headers,
    })
}

/// The public tenant, created (once per instance, idempotently) on first use.
async fn public_tenant(state: &AppState) -> Result<TenantId, ApiError> {
    let id = TenantId::parse(PUBLIC_TENANT)
        .map_err(|e| ApiError::Internal(format!("public tenant id: {}", e.0)))?;
    if !state.public_tenant_ready.load(Ordering::Relaxed) {
        let name = TenantName::parse("public locklock locks")
            .map_err(|e| ApiError::Internal(format!("public tenant name: {}", e.0)))?;
        state.store.ensure_tenant(&id, &name, Tier::Free).await?;
        state.public_tenant_ready.store(true, Ordering::Relaxed);
    }
    Ok(id)
}

fn lock_name(req: &HttpRequest, naming: Naming) -> Result<Resource, ApiError> {
    let name = match naming {
        Naming::Uuid => super::decoded_tail(req, "/lock/uuid/", "uuid")?,
        Naming::Key => super::decoded_tail(req, "/lock/key/", "name")?,
    };
    match naming {
        Naming::Uuid => uuid::Uuid::parse_str(&name)
            .map_err(|_| {
                ApiError::invalid_field(
                    "uuid",
                    "is not a UUID (e.g. 180da65c-cf80-4997-8574-0c0801817d6f)",
                )
            })
            .and_then(|u| {
                Resource::parse(u.hyphenated().to_string())
                    .map_err(|e| ApiError::invalid_field("uuid", e.0))
            }),
        Naming::Key => Resource::parse(name).map_err(|e| ApiError::invalid_field("name", e.0)),
    }
}

/// The optional body: absent, empty, or a JSON object with the allowed fields
/// (`secret` and, when acquiring, `expires_in`).
fn options(body: &[u8], allowed: &[&str]) -> Result<LockOptions, ApiError> {
    let obj = parse_object(body, true)?;
    let mut details = Vec::new();
    let mut f = Fields::new(None, obj, allowed, &mut details);
    let secret = f.opt_string("secret", |s: String| {
        if s.is_empty() || s.len() > MAX_SECRET_BYTES {
            Err(format!("must be 1 to {MAX_SECRET_BYTES} bytes"))
        } else {
            Ok(s)
        }
    });
    let expires_in = if allowed.contains(&"expires_in") {
        match f.opt_u64("expires_in") {
            Some(Some(s)) => match Ttl::from_seconds(s) {
                Ok(_) => Some(Some(s)),
                Err(e) => {
                    f.problem("expires_in", e.0);
                    None
                }
            },
            other => other,
        }
    } else {
        Some(None)
    };
    if !details.is_empty() {
        return Err(invalid_items(details));
    }
    match (secret, expires_in) {
        (Some(secret), Some(expires_in)) => Ok(LockOptions { secret, expires_in }),
        _ => Err(ApiError::invalid("the body is not valid")),
    }
}

/// The optional body of a release: only `secret`.
fn release_options(body: &[u8]) -> Result<LockSecret, ApiError> {
    options(body, &["secret"]).map(|o| LockSecret { secret: o.secret })
}

fn with_limit_headers(
    mut res: HttpResponseBuilder,
    headers: &[(&'static str, String)],
) -> HttpResponseBuilder {
    for (k, v) in headers {
        res.insert_header((*k, v.as_str()));
    }
    res
}

#[tracing::instrument(skip_all, fields(tenant = tracing::field::Empty))]
async fn acquire(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
    naming: Naming,
) -> Result<HttpResponse, ApiError> {
    let resource = lock_name(&req, naming)?;
    let wait_seconds = Query::parse(req.query_string(), &["wait"])?.integer(
        "wait",
        0,
        super::waiting::MAX_WAIT_SECONDS,
    )?;
    let LockOptions { secret, expires_in } = options(&body, &["secret", "expires_in"])?;
    let mut holder = holder(&req, &state, naming).await?;
    tracing::Span::current().record("tenant", tracing::field::display(&holder.caller.tenant));
    holder.idempotent(&req, &state, naming.route("lock"), &body)?;
    // Without expires_in the tenant's maxTtlSeconds lowers the default
    // rather than refusing it (contract section 17).
    let ttl_defaulted = expires_in.is_none();
    let expires_in = expires_in.unwrap_or(DEFAULT_EXPIRES_IN);
    if holder.per_address.is_some() && expires_in > DEFAULT_EXPIRES_IN {
        return Err(ApiError::invalid_field(
            "expires_in",
            format!("must be at most {DEFAULT_EXPIRES_IN} seconds (30 days) for public locks"),
        ));
    }
    // A public lock lives at most COOPLOCKER_PUBLIC_MAX_EXPIRES_IN (a day by
    // default), so one client cannot hold pool slots for a month: longer
    // requests are clamped (the answer's expiresAt says so), which keeps
    // clients written against the seeds' 30-day default working.
    let expires_in = match holder.per_address {
        Some((_, longest)) => expires_in.min(longest),
        None => expires_in,
    };
    let ttl =
        Ttl::from_seconds(expires_in).map_err(|e| ApiError::invalid_field("expires_in", e.0))?;
    let requester = match holder.requester.take() {
        Some(r) => r,
        None => Requester::parse(REQUESTER)
            .map_err(|e| ApiError::Internal(format!("locklock requester: {}", e.0)))?,
    };
    let request = LockRequest {
        secret_hash: secret
            .as_deref()
            .map(|s| secret_hash(&holder.caller.tenant, &resource, s)),
        resource: resource.clone(),
        requester,
        ttl,
        max_held: holder.max_held,
        max_per_requester: holder.per_address.map(|(n, _)| n),
        // The lock's expires_in is its TTL; keyless public locks wait among
        // at most a free tenant's number of waiters.
        wait: wait_seconds.filter(|s| *s > 0).map(|s| Wait {
            ms: s * 1000,
            waiter: WaiterId::generate(),
            max_waiters: super::waiting::max_waiters(holder.tier.unwrap_or(Tier::Free)),
        }),
        ttl_defaulted,
    };
    let started = std::time::Instant::now();
    // Subscribed before the waiter enters, so no grant goes unheard.
    let grants = request.wait.map(|_| state.store.grants());
    let mut outcome = state
        .store
        .lock(&holder.caller, &request)
        .await
        .map_err(|e| tenant_gone(e, &state))?;
    if let (LockOutcome::Queued, Some(wait), Some(grants)) = (&outcome.value, request.wait, grants)
    {
        outcome.value = match super::waiting::wait_for_grant(
            &state,
            (&holder.caller.tenant, super::events::connection(&req)),
            wait,
            grants,
            started,
        )
        .await?
        {
            super::waiting::WaitEnd::Granted(rows, _) => match rows.first() {
                Some(ReserveOutcome::Reserved {
                    expires_at,
                    fencing_token,
                    ..
                }) => LockOutcome::Acquired {
                    expires_at: expires_at.unwrap_or(0),
                    fencing_token: *fencing_token,
                },
                _ => LockOutcome::Locked,
            },
            super::waiting::WaitEnd::TimedOut { .. } => LockOutcome::Locked,
        };
        if holder.caller.idempotency.is_some() {
            let how = match &outcome.value {
                LockOutcome::Acquired { .. } => Settled::Lock(outcome.value.clone()),
                _ => Settled::Nothing,
            };
            state.store.settle(&holder.caller, how).await?;
        }
    }
    holder.answered(outcome.rate.as_ref(), outcome.replayed);
    crate::metrics::outcome(
        "lock",
        match outcome.value {
            LockOutcome::Acquired { .. } => "ACQUIRED",
            LockOutcome::Locked => "LOCKED",
            LockOutcome::Full => "FULL",
            LockOutcome::TooMany => "TOO_MANY",
            LockOutcome::Queued => "QUEUED",
            LockOutcome::Delayed { .. } => "LOCK_DELAY",
        },
        1,
    );
    match outcome.value {
        LockOutcome::Acquired {
            expires_at,
            fencing_token,
        } => Ok(
            with_limit_headers(HttpResponse::Ok(), &holder.limit_headers).json(LockAcquired {
                lock: resource.as_str(),
                acquired: true,
                expires_at: format_millis(expires_at),
                fencing_token,
            }),
        ),
        // A wait that ended without the lock is LOCKED too.
        LockOutcome::Locked | LockOutcome::Queued => Err(ApiError::Locked(format!(
            "the lock {:?} is held; try again later",
            resource.as_str()
        ))
        .with_headers(holder.limit_headers)),
        // In its lock delay after an expiry or a force release (the tenant's
        // lockDelaySeconds): 409, with when to come back.
        LockOutcome::Delayed { available_at } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let after = available_at.saturating_sub(now).div_ceil(1000).max(1);
            let mut headers = holder.limit_headers;
            headers.push(("Retry-After", after.to_string()));
            Err(ApiError::Locked(format!(
                "the lock {:?} is in its lock delay after its holder was lost; it can be acquired again at {}",
                resource.as_str(),
                format_millis(available_at)
            ))
            .with_headers(headers))
        }
        LockOutcome::TooMany => Err(ApiError::RateLimited {
            message: format!(
                "this address holds as many public locks as it may ({}); release some, wait for them to expire, or use an API key",
                holder.per_address.map_or(0, |(n, _)| n)
            ),
            retry_after_seconds: 5,
        }
        .with_headers(holder.limit_headers)),
        LockOutcome::Full => Err(ApiError::RateLimited {
            message: "the public lock service holds as many locks as it may; retry later or use an API key".into(),
            retry_after_seconds: 5,
        }
        .with_headers(holder.limit_headers)),
    }
}

#[tracing::instrument(skip_all, fields(tenant = tracing::field::Empty))]
async fn release(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
    naming: Naming,
) -> Result<HttpResponse, ApiError> {
    let resource = lock_name(&req, naming)?;
    let LockSecret { secret } = release_options(&body)?;
    let mut holder = holder(&req, &state, naming).await?;
    tracing::Span::current().record("tenant", tracing::field::display(&holder.caller.tenant));
    holder.idempotent(&req, &state, naming.route("unlock"), &body)?;
    let by = Releaser::Locklock {
        label: holder.caller.label.clone(),
        secret_hash: secret
            .as_deref()
            .map(|s| secret_hash(&holder.caller.tenant, &resource, s)),
    };
    let outcome = state
        .store
        .release_by_name(&holder.caller, &resource, &by)
        .await
        .map_err(|e| tenant_gone(e, &state))?;
    holder.answered(outcome.rate.as_ref(), outcome.replayed);
    crate::metrics::outcome(
        "unlock",
        match outcome.value {
            ReleaseByName::Released => "RELEASED",
            ReleaseByName::NotHeld => "NOT_HELD",
            ReleaseByName::WrongSecret => "WRONG_SECRET",
            ReleaseByName::NotALock => "NOT_A_LOCK",
        },
        1,
    );
    match outcome.value {
        ReleaseByName::Released => Ok(with_limit_headers(
            HttpResponse::Ok(),
            &holder.limit_headers,
        )
        .json(LockReleased { released: true })),
        ReleaseByName::NotHeld => Err(ApiError::NotFound(format!(
            "the lock {:?} is not held",
            resource.as_str()
        ))
        .with_headers(holder.limit_headers)),
        ReleaseByName::WrongSecret => Err(ApiError::Forbidden {
            code: "FORBIDDEN",
            message: "this lock was acquired with a secret: send the same secret to release it"
                .into(),
        }
        .with_headers(holder.limit_headers)),
        ReleaseByName::NotALock => Err(ApiError::Forbidden {
            code: "FORBIDDEN",
            message: "this resource is held through the Reservation API: release it with \
                      POST /api/v1/Reservation/unreserve and its releaseToken"
                .into(),
        }
        .with_headers(holder.limit_headers)),
    }
}

/// A deleted public tenant is re-created on the next request.
fn tenant_gone(e: StoreError, state: &AppState) -> ApiError {
    if matches!(e, StoreError::TenantGone) {
        state.public_tenant_ready.store(false, Ordering::Relaxed);
    }
    match e {
        StoreError::Policy(why) => ApiError::policy(why, None, "wait"),
        e => e.into(),
    }
}

#[utoipa::path(post, path = "/v1/api/lock/uuid/{uuid}", tag = "locklock", summary = "Acquire a UUID lock (keyless public locks allowed)", request_body(content = LockOptions, description = "Optional: no body, an empty one, or this object"), params(LockWaitParams, IdempotencyParams, ("uuid" = String, Path, format = "uuid", description = "A UUID (any case)")), responses((status = 200, description = "Acquired", body = LockAcquired<'static>), (status = 409, description = "Held by someone else (LOCKED)", body = ErrorBody<'static>), LockErrors))]
pub async fn acquire_uuid(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    acquire(req, body, state, Naming::Uuid).await
}

#[utoipa::path(delete, path = "/v1/api/lock/uuid/{uuid}", tag = "locklock", summary = "Release a UUID lock", request_body(content = LockSecret, description = "Optional: no body, an empty one, or this object"), params(IdempotencyParams, ("uuid" = String, Path, format = "uuid", description = "A UUID (any case)")), responses((status = 200, description = "Released", body = LockReleased), (status = 404, description = "Not held", body = ErrorBody<'static>), LockErrors))]
pub async fn release_uuid(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    release(req, body, state, Naming::Uuid).await
}

#[utoipa::path(post, path = "/v1/api/lock/key/{name}", tag = "locklock", summary = "Acquire a named lock (pro and enterprise keys)", request_body(content = LockOptions, description = "Optional: no body, an empty one, or this object"), params(LockWaitParams, IdempotencyParams, ("name" = String, Path, min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F]+$", description = "A lock name, percent-decoded: 1–256 UTF-8 bytes, no control characters")), responses((status = 200, description = "Acquired", body = LockAcquired<'static>), (status = 409, description = "Held by someone else (LOCKED)", body = ErrorBody<'static>), LockErrors), security(("apiKey" = [])))]
pub async fn acquire_key(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    acquire(req, body, state, Naming::Key).await
}

#[utoipa::path(delete, path = "/v1/api/lock/key/{name}", tag = "locklock", summary = "Release a named lock", request_body(content = LockSecret, description = "Optional: no body, an empty one, or this object"), params(IdempotencyParams, ("name" = String, Path, min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F]+$", description = "A lock name, percent-decoded: 1–256 UTF-8 bytes, no control characters")), responses((status = 200, description = "Released", body = LockReleased), (status = 404, description = "Not held", body = ErrorBody<'static>), LockErrors), security(("apiKey" = [])))]
pub async fn release_key(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    release(req, body, state, Naming::Key).await
}

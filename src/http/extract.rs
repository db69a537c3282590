//! Extractors for the callers of the service, which arrive at a handler
//! ready: authenticated, checked against what the route needs (tier, kind of
//! credential), and as the store sees them, with the rate-limit quota of the
//! route's access. The tenant is always taken from the verified credential,
//! never from the path or the body.
//!
//! - [`ReadCaller`] / [`WriteCaller`]: a tenant caller (an API key, or a
//!   token exchanged for a JWT, which needs a starter tenant or above),
//!   counted against the tenant's read or write limit. A read-only key
//!   (scope `read`) is refused as a `WriteCaller`, here, so no writing
//!   handler can forget it.
//! - [`locklock_caller`]: the locklock API's caller, API keys only (`pro` and
//!   above for named locks), and write keys only.
//! - [`AdminCaller`]: the operator, by the admin token.

use super::error::ApiError;
use crate::config::RateLimits;
use crate::domain::{KeyScope, Principal, Tier};
use crate::state::AppState;
use crate::store::{Access, Caller, Quota};
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

/// Reads get this many times the write limit.
pub const READ_FACTOR: u32 = 5;

/// The quota of a tier's reads or writes: the configured rate, with a burst of
/// one second's worth.
pub fn quota(limits: &RateLimits, tier: Tier, access: Access) -> Quota {
    let writes = limits.writes(tier);
    let per_second = match access {
        Access::Write => writes,
        Access::Read => writes.saturating_mul(READ_FACTOR),
    };
    Quota {
        tier,
        access,
        per_second,
        burst: per_second,
    }
}

/// The access a route's caller is counted against.
pub trait Scope {
    const ACCESS: Access;
}

/// Routes that only read (`check`, `validate`, listing, the event stream).
#[derive(Debug, Clone, Copy)]
pub struct Reads;

/// Routes that change holds.
#[derive(Debug, Clone, Copy)]
pub struct Writes;

impl Scope for Reads {
    const ACCESS: Access = Access::Read;
}

impl Scope for Writes {
    const ACCESS: Access = Access::Write;
}

/// A tenant caller of the Coop Locker API, ready for the store.
#[derive(Debug, Clone)]
pub struct TenantCaller<S> {
    pub principal: Principal,
    /// The caller as the store sees it: tenant, label, and `quota`.
    pub caller: Caller,
    /// The partition of the tenant's rate limit this request counts against.
    pub quota: Quota,
    scope: PhantomData<S>,
}

/// A tenant caller of a reading route.
pub type ReadCaller = TenantCaller<Reads>;
/// A tenant caller of a writing route.
pub type WriteCaller = TenantCaller<Writes>;

impl<S: Scope> TenantCaller<S> {
    fn ready(principal: Principal, state: &AppState) -> Self {
        let quota = quota(&state.rates, principal.tier, S::ACCESS);
        Self {
            caller: Caller {
                tenant: principal.tenant.clone(),
                label: principal.label.clone(),
                quota: Some(quota),
                idempotency: None,
            },
            principal,
            quota,
            scope: PhantomData,
        }
    }
}

impl<S: Scope + 'static> FromRequest for TenantCaller<S> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let key = presented_key(req);
        let state = state(req);
        let req = req.clone();
        Box::pin(async move {
            let key = key?;
            let state = state?;
            let p = authenticate(&req, &state, &key).await?;
            if p.subject.is_some() && p.tier == Tier::Free {
                return Err(tier_required_for_tokens());
            }
            if S::ACCESS == Access::Write {
                may_write(&p)?;
            }
            Ok(Self::ready(p, &state))
        })
    }
}

/// Whether the request carries a credential at all (the locklock API also
/// serves keyless public locks).
pub fn has_credentials(req: &HttpRequest) -> bool {
    req.headers().contains_key("x-api-key") || req.headers().contains_key(header::AUTHORIZATION)
}

/// The caller of a locklock request that carries a credential: an API key
/// (a token exchanged for a JWT is refused), of a `pro` or `enterprise`
/// tenant for a named lock, counted against the tenant's write limit.
pub async fn locklock_caller(
    req: &HttpRequest,
    state: &AppState,
    named: bool,
) -> Result<WriteCaller, ApiError> {
    let key = presented_key(req)?;
    let p = authenticate(req, state, &key).await?;
    if p.subject.is_some() {
        return Err(ApiError::Forbidden {
            code: "FORBIDDEN",
            message: "a token exchanged for a JWT works with the Coop Locker API (/api/v1/Reservation/...) only; locklock locks need an API key".into(),
        });
    }
    may_write(&p)?;
    if named && !matches!(p.tier, Tier::Pro | Tier::Enterprise) {
        return Err(ApiError::Forbidden {
            code: "TIER_REQUIRED",
            message: format!(
                "named locks (/lock/key/...) need a pro or enterprise tenant; this one is {}",
                p.tier.as_str()
            ),
        });
    }
    Ok(WriteCaller::ready(p, state))
}

/// Refuses a read-only key (scope `read`) on a route that changes state
/// (contract section 16): `403 FORBIDDEN`, before anything is read or changed.
fn may_write(p: &Principal) -> Result<(), ApiError> {
    match p.scope {
        KeyScope::Write => Ok(()),
        KeyScope::Read => Err(ApiError::Forbidden {
            code: "FORBIDDEN",
            message: format!(
                "the API key {:?} is read-only (scope read): it may check, list, validate and follow events only; reserve, unreserve, extend and locklock locks need a write key. Nothing was changed",
                p.label
            ),
        }),
    }
}

/// The operator, authenticated by the admin token (`Authorization: Bearer`).
#[derive(Debug, Clone, Copy)]
pub struct AdminCaller;

fn state(req: &HttpRequest) -> Result<web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))
}

/// The single value of a header that must appear at most once.
fn single(req: &HttpRequest, name: header::HeaderName) -> Result<Option<&str>, ApiError> {
    let mut values = req.headers().get_all(&name);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::invalid(format!(
            "send the {name} header once (it appeared several times)"
        )));
    }
    first
        .to_str()
        .map(|v| Some(v.trim()))
        .map_err(|_| ApiError::Unauthorized(format!("the {name} header is not valid text")))
}

fn bearer(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    Ok(single(req, header::AUTHORIZATION)?.map(|v| {
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            rest.trim()
        } else {
            ""
        }
    }))
}

/// The credential a tenant request carries.
pub fn presented_key(req: &HttpRequest) -> Result<String, ApiError> {
    let api_key = single(req, header::HeaderName::from_static("x-api-key"))?;
    let bearer = bearer(req)?;
    let key = match (api_key, bearer) {
        (Some(a), Some(b)) if !b.is_empty() && a != b => {
            return Err(ApiError::invalid(
                "X-Api-Key and Authorization carry different credentials; send one",
            ))
        }
        (Some(a), _) => a,
        (None, Some(b)) => b,
        (None, None) => "",
    };
    if key.is_empty() {
        return Err(ApiError::Unauthorized(
            "missing API key: send it in the X-Api-Key header".into(),
        ));
    }
    Ok(key.to_string())
}

/// The principal of a presented key or token, or `401`. A credential the
/// cache cannot answer costs a store look-up, so failures are counted per
/// client address: past `COOPLOCKER_AUTH_FAILURES_PER_IP` an address gets
/// `429 RATE_LIMITED` for such credentials, without a look-up.
pub async fn authenticate(
    req: &HttpRequest,
    state: &AppState,
    key: &str,
) -> Result<Principal, ApiError> {
    if let Some(p) = state.auth.cached(key) {
        return Ok(p);
    }
    let addr = super::client_addr::client_addr(req, state);
    if let Err(wait) = state.auth_failures.check(&addr) {
        crate::metrics::rate_limited("auth_failures");
        return Err(ApiError::RateLimited {
            message: format!(
                "too many failed authentications from this address (limit {}/s); check the API key",
                state.limits.auth_failures_per_ip
            ),
            retry_after_seconds: wait,
        });
    }
    match state.auth.authenticate(key).await? {
        Some(p) => Ok(p),
        None => {
            state.auth_failures.record(&addr);
            Err(ApiError::Unauthorized(
                "unknown, revoked, rotated or expired API key or token".into(),
            ))
        }
    }
}

/// JWT exchange is a starter-and-above feature (contract section 2).
pub fn tier_required_for_tokens() -> ApiError {
    ApiError::Forbidden {
        code: "TIER_REQUIRED",
        message: "JWT exchange needs a starter, pro or enterprise tenant; this one is free".into(),
    }
}

impl<S> TenantCaller<S> {
    /// For a caller with an exchanged token: refuses the whole request unless
    /// every item's requester is the token's subject.
    pub fn may_act_as<'a>(
        &self,
        requesters: impl Iterator<Item = &'a str>,
    ) -> Result<(), ApiError> {
        let Some(sub) = &self.principal.subject else {
            return Ok(());
        };
        for (i, rq) in requesters.enumerate() {
            if rq != sub {
                return Err(ApiError::Forbidden {
                    code: "FORBIDDEN",
                    message: format!(
                        "this token acts for requester {sub:?} (its JWT's sub) only; item {i} names {rq:?}. Nothing was changed"
                    ),
                });
            }
        }
        Ok(())
    }
}

impl FromRequest for AdminCaller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready((|| {
            let state = state(req)?;
            let Some(expected) = state.admin_token_hash.as_deref() else {
                return Err(ApiError::Unauthorized(
                    "the admin API is disabled: start the server with COOPLOCKER_ADMIN_TOKEN"
                        .into(),
                ));
            };
            let token = bearer(req)?.unwrap_or("");
            if token.is_empty() {
                return Err(ApiError::Unauthorized(
                    "missing admin token: send Authorization: Bearer <admin token>".into(),
                ));
            }
            let presented = crate::domain::hash_secret(token);
            if crate::domain::constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
                Ok(AdminCaller)
            } else {
                Err(ApiError::Unauthorized("invalid admin token".into()))
            }
        })())
    }
}

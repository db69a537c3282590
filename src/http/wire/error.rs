//! The error body every failure answers with, and the error sets the document
//! lists per group of endpoints.

use serde::Serialize;
use utoipa::{IntoResponses, ToSchema};

/// `{"error":{...}}`: every error, including the framework's own.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    pub error: ErrorInfo<'a>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo<'a> {
    /// e.g. INVALID_REQUEST, UNAUTHORIZED, FORBIDDEN, TIER_REQUIRED,
    /// KEY_LIMIT_REACHED, NOT_FOUND, METHOD_NOT_ALLOWED, LOCKED,
    /// PAYLOAD_TOO_LARGE, URI_TOO_LONG, UNSUPPORTED_MEDIA_TYPE, RATE_LIMITED,
    /// HEADERS_TOO_LARGE, REQUEST_TIMEOUT, STORE_UNAVAILABLE, SHUTTING_DOWN.
    pub code: &'a str,
    pub message: &'a str,
    pub details: &'a [Detail],
    /// Only on 429.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1)]
    pub retry_after_seconds: Option<u64>,
}

/// One entry of `details`: which item and field a problem is about.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct Detail {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<String>,
    pub problem: String,
}

impl Detail {
    pub fn field(index: Option<usize>, field: &str, problem: impl Into<String>) -> Self {
        Self {
            index,
            field: Some(field.to_string()),
            problem: problem.into(),
        }
    }
}

/// The errors every tenant endpoint may answer (in the document once, used by
/// every path).
#[derive(IntoResponses)]
pub enum TenantErrors {
    /// Malformed request; details name index and field
    #[response(status = 400)]
    BadRequest(ErrorBody<'static>),
    /// Missing, unknown, revoked or expired credential
    #[response(status = 401)]
    Unauthorized(ErrorBody<'static>),
    /// Not allowed (FORBIDDEN, TIER_REQUIRED)
    #[response(status = 403)]
    Forbidden(ErrorBody<'static>),
    /// Body over 1 MiB
    #[response(status = 413)]
    TooLarge(ErrorBody<'static>),
    /// Not JSON
    #[response(status = 415)]
    NotJson(ErrorBody<'static>),
    /// Rate limited (Retry-After, RateLimit-*)
    #[response(status = 429)]
    RateLimited(ErrorBody<'static>),
    /// Store unavailable (Retry-After)
    #[response(status = 503)]
    Unavailable(ErrorBody<'static>),
}

/// The errors every admin endpoint may answer.
#[derive(IntoResponses)]
pub enum AdminErrors {
    /// Malformed request
    #[response(status = 400)]
    BadRequest(ErrorBody<'static>),
    /// Missing or wrong admin token
    #[response(status = 401)]
    Unauthorized(ErrorBody<'static>),
    /// No such tenant, key or reservation
    #[response(status = 404)]
    NotFound(ErrorBody<'static>),
    /// Store unavailable
    #[response(status = 503)]
    Unavailable(ErrorBody<'static>),
}

/// The errors of the locklock endpoints (both acquire and release).
#[derive(IntoResponses)]
pub enum LockErrors {
    /// Bad name or body
    #[response(status = 400)]
    BadRequest(ErrorBody<'static>),
    /// Bad key, or public locks disabled
    #[response(status = 401)]
    Unauthorized(ErrorBody<'static>),
    /// Wrong secret, TIER_REQUIRED, an exchanged token, or a lock held through the Reservation API
    #[response(status = 403)]
    Forbidden(ErrorBody<'static>),
    /// IDEMPOTENCY_KEY_REUSED: the Idempotency-Key was used for another request
    #[response(status = 422)]
    KeyReused(ErrorBody<'static>),
    /// Rate limited, or the public lock pool (or this address's share) is full
    #[response(status = 429)]
    RateLimited(ErrorBody<'static>),
    /// Store unavailable
    #[response(status = 503)]
    Unavailable(ErrorBody<'static>),
}

/// The errors of the JWT exchange.
#[derive(IntoResponses)]
pub enum TokenErrors {
    /// Malformed body, or several tenants trust the issuer
    #[response(status = 400)]
    BadRequest(ErrorBody<'static>),
    /// Bad, expired or unverifiable JWT
    #[response(status = 401)]
    Unauthorized(ErrorBody<'static>),
    /// TIER_REQUIRED: free tier
    #[response(status = 403)]
    Forbidden(ErrorBody<'static>),
    /// Not JSON
    #[response(status = 415)]
    NotJson(ErrorBody<'static>),
    /// Too many exchanges from this address
    #[response(status = 429)]
    RateLimited(ErrorBody<'static>),
    /// Store unavailable
    #[response(status = 503)]
    Unavailable(ErrorBody<'static>),
}

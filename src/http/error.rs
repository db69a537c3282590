//! The one error type at the HTTP boundary. Every error the service sends —
//! including the ones actix-web produces itself, rewritten by
//! [`super::middleware::json_errors`] — is
//! `{"error":{"code","message","details"}}` with `Content-Type: application/json`.
//! Internal causes are logged with their chain and never sent to the client.

use super::wire::{Detail, ErrorBody, ErrorInfo};
use crate::domain::PolicyRefusal;
use crate::store::StoreError;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use std::fmt;

#[derive(Debug)]
pub enum ApiError {
    InvalidRequest {
        message: String,
        details: Vec<Detail>,
    },
    Unauthorized(String),
    Forbidden {
        code: &'static str,
        message: String,
    },
    NotFound(String),
    MethodNotAllowed(String),
    Locked(String),
    /// 422: the Idempotency-Key was used for another request.
    IdempotencyKeyReused,
    /// 409: the request under the Idempotency-Key is still waiting.
    IdempotencyKeyInUse,
    PayloadTooLarge(String),
    UriTooLong(String),
    UnsupportedMediaType(String),
    HeadersTooLarge(String),
    /// The request body did not arrive in time.
    RequestTimeout(String),
    /// 429 with `Retry-After` (and `retryAfterSeconds` in the body).
    RateLimited {
        message: String,
        retry_after_seconds: u64,
    },
    StoreUnavailable,
    /// The instance is shutting down; another one will answer.
    ShuttingDown,
    /// A bug: logged in full, answered opaquely.
    Internal(String),
    /// Another error, with extra response headers (e.g. `RateLimit-*`).
    WithHeaders(Box<ApiError>, Vec<(&'static str, String)>),
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn invalid_field(field: &str, problem: impl Into<String>) -> Self {
        let problem = problem.into();
        Self::InvalidRequest {
            message: format!("{field} {problem}"),
            details: vec![Detail::field(None, field, problem)],
        }
    }

    /// The same error, answered with extra headers.
    pub fn with_headers(self, headers: Vec<(&'static str, String)>) -> Self {
        if headers.is_empty() {
            self
        } else {
            Self::WithHeaders(Box::new(self), headers)
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::WithHeaders(inner, _) => inner.code(),
            Self::InvalidRequest { .. } => "INVALID_REQUEST",
            Self::Unauthorized(_) => "UNAUTHORIZED",
            Self::Forbidden { code, .. } => code,
            Self::NotFound(_) => "NOT_FOUND",
            Self::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
            Self::Locked(_) => "LOCKED",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::IdempotencyKeyInUse => "IDEMPOTENCY_KEY_IN_USE",
            Self::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            Self::UriTooLong(_) => "URI_TOO_LONG",
            Self::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            Self::HeadersTooLarge(_) => "HEADERS_TOO_LARGE",
            Self::RequestTimeout(_) => "REQUEST_TIMEOUT",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::StoreUnavailable => "STORE_UNAVAILABLE",
            Self::ShuttingDown => "SHUTTING_DOWN",
            Self::Internal(_) => "INTERNAL",
        }
    }

    fn message(&self) -> &str {
        match self {
            Self::WithHeaders(inner, _) => inner.message(),
            Self::InvalidRequest { message, .. } => message,
            Self::Unauthorized(m)
            | Self::NotFound(m)
            | Self::MethodNotAllowed(m)
            | Self::Locked(m)
            | Self::PayloadTooLarge(m)
            | Self::UriTooLong(m)
            | Self::UnsupportedMediaType(m)
            | Self::HeadersTooLarge(m)
            | Self::RequestTimeout(m) => m,
            Self::Forbidden { message, .. } | Self::RateLimited { message, .. } => message,
            Self::ShuttingDown => {
                "this instance is shutting down; retry (another instance will answer)"
            }
            Self::IdempotencyKeyReused => {
                "this Idempotency-Key was used for another request (other body, query or path); use a new key for a new request. Nothing was changed"
            }
            Self::IdempotencyKeyInUse => {
                "the request under this Idempotency-Key is still waiting (waitSeconds); retry when it has been answered. Nothing was changed"
            }
            Self::StoreUnavailable => {
                "the lock store cannot be reached right now; retry after the Retry-After delay"
            }
            Self::Internal(_) => "internal error; it has been logged",
        }
    }

    /// The error the contract prescribes for a bare status produced elsewhere.
    pub fn from_status(status: StatusCode, method: &str, path: &str) -> Self {
        match status.as_u16() {
            404 => Self::NotFound(format!("no such endpoint: {method} {path}")),
            405 => Self::MethodNotAllowed(format!("{method} is not allowed on {path}")),
            413 => Self::PayloadTooLarge("the request body is larger than allowed".into()),
            414 => Self::UriTooLong("the request URI is too long".into()),
            415 => Self::UnsupportedMediaType("send the body as application/json".into()),
            431 => Self::HeadersTooLarge("the request headers are too large".into()),
            401 => Self::Unauthorized("missing or invalid credentials".into()),
            s if (400..500).contains(&s) => {
                Self::invalid(format!("the request could not be understood ({s})"))
            }
            503 => Self::StoreUnavailable,
            s => Self::Internal(format!("framework produced status {s}")),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "store unavailable");
                Self::StoreUnavailable
            }
            StoreError::Internal(cause) => Self::Internal(cause),
            StoreError::IdempotencyKeyReused => Self::IdempotencyKeyReused,
            StoreError::IdempotencyKeyInUse => Self::IdempotencyKeyInUse,
            StoreError::TooManyWaiters => Self::RateLimited {
                message: "this tenant has as many waiting requests as its tier allows; retry later, or without waitSeconds".into(),
                retry_after_seconds: 1,
            },
            StoreError::TenantGone => {
                Self::Unauthorized("the tenant of this API key has been deleted".into())
            }
            StoreError::RateLimited(d) => {
                crate::metrics::rate_limited("tenant");
                Self::RateLimited {
                message: format!(
                    "this tenant's rate limit ({} requests per second) is used up; retry after {} s",
                    d.limit,
                    d.retry_after_ms.div_ceil(1000).max(1)
                ),
                retry_after_seconds: d.retry_after_ms.div_ceil(1000).max(1),
            }
            .with_headers(super::rate_headers::headers(&d))
            }
            StoreError::Policy(why) => Self::policy(why, Some("ttlSeconds"), "waitSeconds"),
        }
    }
}

impl ApiError {
    /// A lease-policy refusal (contract section 17) as a 400 naming the
    /// item and field: `ttl_field` is the items' name for the TTL (`None`: a
    /// request of no items, locklock's `expires_in`), `wait_field` the
    /// request's for the wait.
    pub fn policy(why: PolicyRefusal, ttl_field: Option<&str>, wait_field: &str) -> Self {
        let itemized = ttl_field.is_some();
        let ttl_field = ttl_field.unwrap_or("expires_in");
        let (index, field, problem) = match why {
            PolicyRefusal::TtlAboveMax { index, max_seconds } => (
                Some(index),
                ttl_field,
                format!("is above this tenant's lease policy maxTtlSeconds ({max_seconds})"),
            ),
            PolicyRefusal::TtlRequired { index } => (
                Some(index),
                ttl_field,
                "is required by this tenant's lease policy (requireTtl)".to_string(),
            ),
            PolicyRefusal::WaitAboveMax { max_seconds } => (
                None,
                wait_field,
                format!("is above this tenant's lease policy maxWaitSeconds ({max_seconds})"),
            ),
        };
        let index = index.filter(|_| itemized);
        let message = match index {
            Some(i) => format!("item {i}: {field} {problem}"),
            None => format!("{field} {problem}"),
        };
        Self::InvalidRequest {
            message,
            details: vec![Detail::field(index, field, problem)],
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::WithHeaders(inner, _) => inner.status_code(),
            Self::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Locked(_) => StatusCode::CONFLICT,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::IdempotencyKeyInUse => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::StoreUnavailable | Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::WithHeaders(inner, headers) = self {
            let mut res = inner.error_response();
            for (name, value) in headers {
                if let (Ok(k), Ok(v)) = (
                    header::HeaderName::from_bytes(name.as_bytes()),
                    header::HeaderValue::from_str(value),
                ) {
                    res.headers_mut().insert(k, v);
                }
            }
            return res;
        }
        if let Self::Internal(cause) = self {
            tracing::error!(%cause, "internal error");
        }
        let empty: [Detail; 0] = [];
        let details = match self {
            Self::InvalidRequest { details, .. } => details.as_slice(),
            _ => &empty,
        };
        let body = ErrorBody {
            error: ErrorInfo {
                code: self.code(),
                message: self.message(),
                details,
                retry_after_seconds: match self {
                    Self::RateLimited {
                        retry_after_seconds,
                        ..
                    } => Some(*retry_after_seconds),
                    _ => None,
                },
            },
        };
        let mut res = HttpResponse::build(self.status_code());
        match self {
            Self::StoreUnavailable | Self::ShuttingDown => {
                res.insert_header((header::RETRY_AFTER, "1"));
            }
            Self::RateLimited {
                retry_after_seconds,
                ..
            } => {
                res.insert_header((header::RETRY_AFTER, retry_after_seconds.to_string()));
            }
            _ => {}
        }
        res.json(body)
    }
}

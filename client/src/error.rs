//! What can go wrong: the service's own refusals (the contract's error codes,
//! with status, message and details from the JSON error body), a lease that
//! could not be had, and the network.

use crate::types::ItemResult;
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// Everything a call of this crate can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service answered with an error status and its JSON error body.
    #[error("{0}")]
    Api(ApiError),
    /// The request never got an answer: connection refused or reset, DNS, TLS,
    /// a timeout. A write may or may not have taken effect; a retry of the
    /// same call (same `Idempotency-Key`) answers what it did.
    #[error("cannot reach the server: {0}")]
    Transport(#[source] reqwest::Error),
    /// The service answered something this client does not understand.
    #[error("unexpected answer from the server (HTTP {status}): {message}")]
    Decode { status: u16, message: String },
    /// A [`Lease`](crate::Lease) was not granted: the item's result says why
    /// (`ALREADY_HELD`, `TIMED_OUT`, `LIMIT_MISMATCH`, `LOCK_DELAY`, ...).
    #[error("{resource} was not acquired: {status}{}", held_by.as_deref().map(|h| format!(" (held by {h})")).unwrap_or_default())]
    NotAcquired {
        resource: String,
        status: String,
        held_by: Option<String>,
        /// The whole result of the reserve item.
        result: Box<ItemResult>,
    },
    /// An argument this client refuses before sending (an empty resource,
    /// a TTL of zero, a malformed URL).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// The contract's error code, when the service answered with one.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Self::Api(e) => Some(&e.code),
            _ => None,
        }
    }

    /// The HTTP status, when the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api(e) => Some(e.status),
            Self::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An error answer of the service (contract section 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: ErrorCode,
    pub message: String,
    /// Which item and field a 400 is about.
    pub details: Vec<Detail>,
    /// From `Retry-After` (429, 503), when the server sent it.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)?;
        for d in &self.details {
            match (&d.index, &d.field) {
                (Some(i), Some(field)) => write!(f, "; item {i} {field}: {}", d.problem)?,
                (None, Some(field)) => write!(f, "; {field}: {}", d.problem)?,
                (Some(i), None) => write!(f, "; item {i}: {}", d.problem)?,
                (None, None) => write!(f, "; {}", d.problem)?,
            }
        }
        Ok(())
    }
}

/// One entry of an error's `details`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Detail {
    #[serde(default)]
    pub index: Option<usize>,
    #[serde(default)]
    pub field: Option<String>,
    pub problem: String,
}

/// The contract's error codes; [`ErrorCode::Other`] keeps one this version
/// does not know.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    TierRequired,
    KeyLimitReached,
    NotFound,
    MethodNotAllowed,
    Locked,
    PayloadTooLarge,
    UriTooLong,
    UnsupportedMediaType,
    RateLimited,
    HeadersTooLarge,
    RequestTimeout,
    StoreUnavailable,
    ShuttingDown,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    Other(String),
}

impl ErrorCode {
    const NAMES: [(&'static str, ErrorCode); 18] = [
        ("INVALID_REQUEST", Self::InvalidRequest),
        ("UNAUTHORIZED", Self::Unauthorized),
        ("FORBIDDEN", Self::Forbidden),
        ("TIER_REQUIRED", Self::TierRequired),
        ("KEY_LIMIT_REACHED", Self::KeyLimitReached),
        ("NOT_FOUND", Self::NotFound),
        ("METHOD_NOT_ALLOWED", Self::MethodNotAllowed),
        ("LOCKED", Self::Locked),
        ("PAYLOAD_TOO_LARGE", Self::PayloadTooLarge),
        ("URI_TOO_LONG", Self::UriTooLong),
        ("UNSUPPORTED_MEDIA_TYPE", Self::UnsupportedMediaType),
        ("RATE_LIMITED", Self::RateLimited),
        ("HEADERS_TOO_LARGE", Self::HeadersTooLarge),
        ("REQUEST_TIMEOUT", Self::RequestTimeout),
        ("STORE_UNAVAILABLE", Self::StoreUnavailable),
        ("SHUTTING_DOWN", Self::ShuttingDown),
        ("IDEMPOTENCY_KEY_IN_USE", Self::IdempotencyKeyInUse),
        ("IDEMPOTENCY_KEY_REUSED", Self::IdempotencyKeyReused),
    ];

    pub fn parse(code: &str) -> Self {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == code)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| Self::Other(code.to_string()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Other(s) => s,
            known => Self::NAMES
                .iter()
                .find(|(_, c)| c == known)
                .map(|(name, _)| *name)
                .unwrap_or("UNKNOWN"),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"error":{"code","message","details"}}`.
#[derive(Deserialize)]
pub(crate) struct ErrorBody {
    pub error: ErrorInfo,
}

#[derive(Deserialize)]
pub(crate) struct ErrorInfo {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub details: Vec<Detail>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_ones_are_kept() {
        for (name, code) in ErrorCode::NAMES.iter() {
            assert_eq!(&ErrorCode::parse(name), code);
            assert_eq!(code.as_str(), *name);
        }
        assert_eq!(
            ErrorCode::parse("SOMETHING_NEW"),
            ErrorCode::Other("SOMETHING_NEW".into())
        );
    }
}

//! Who a request comes from, for the per-address limits (contract section 22):
//! the client address (the peer, or the N-th `X-Forwarded-For` entry from the
//! right behind N trusted proxies), counted as its /64 for IPv6 so a client
//! cannot get a fresh bucket per address of its prefix; the fleet-wide
//! per-address limits of public locks and JWT exchange; and the per-instance
//! limit on failed authentications, which keeps unknown keys from costing a
//! store look-up each without bound.

use super::error::ApiError;
use super::rate_headers::headers;
pub use crate::address::{client_ip, AuthFailures, ClientAddr};
use crate::state::AppState;
use crate::store::RateDecision;
use actix_web::HttpRequest;

/// The bucket of the request's client (see [`client_ip`]).
pub fn client_addr(req: &HttpRequest, state: &AppState) -> ClientAddr {
    let lines: Vec<&[u8]> = req
        .headers()
        .get_all("x-forwarded-for")
        .map(|v| v.as_bytes())
        .collect();
    let peer = req.peer_addr().map(|a| a.ip());
    client_ip(&lines, peer, state.limits.trusted_proxies)
        .map(ClientAddr::of)
        .unwrap_or_else(ClientAddr::unknown)
}

/// The fleet-wide per-address limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressLimit {
    /// Keyless (public) locklock requests.
    PublicLocks,
    /// JWT exchanges.
    TokenExchange,
}

impl AddressLimit {
    /// The store's limit of this kind for `addr`.
    pub fn for_address(self, addr: &ClientAddr) -> crate::store::AddressLimit<'_> {
        match self {
            Self::PublicLocks => crate::store::AddressLimit::PublicLocks(addr.as_str()),
            Self::TokenExchange => crate::store::AddressLimit::TokenExchange(addr.as_str()),
        }
    }

    fn per_second(self, state: &AppState) -> u32 {
        match self {
            Self::PublicLocks => state.limits.public_locks_per_ip,
            Self::TokenExchange => state.limits.token_exchange_per_ip,
        }
    }

    fn refusal(self, per_second: u32) -> String {
        match self {
            Self::PublicLocks => format!(
                "too many public lock requests from this address (limit {per_second}/s); use an API key for more"
            ),
            Self::TokenExchange => format!(
                "too many JWT exchanges from this address (limit {per_second}/s); reuse the token until it expires"
            ),
        }
    }
}

/// Counts one request of the caller's address against `limit` (fleet-wide,
/// burst one second's worth): the decision, or `429 RATE_LIMITED` with
/// `Retry-After` and the `RateLimit-*` headers.
pub async fn charge_address(
    req: &HttpRequest,
    state: &AppState,
    limit: AddressLimit,
) -> Result<RateDecision, ApiError> {
    let per_second = limit.per_second(state);
    let addr = client_addr(req, state);
    let d = state
        .store
        .rate_limit(limit.for_address(&addr), per_second, per_second)
        .await?;
    if !d.allowed {
        crate::metrics::rate_limited("address");
        return Err(ApiError::RateLimited {
            message: limit.refusal(per_second),
            retry_after_seconds: d.retry_after_ms.div_ceil(1000).max(1),
        }
        .with_headers(headers(&d)));
    }
    Ok(d)
}

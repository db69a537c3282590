//! Rate limits of tenant requests (contract section 7): which partition a
//! request counts against, and the `RateLimit-*` headers of its response.
//!
//! The counting itself happens in the store, in the same atomic step as the
//! operation (see `lua/meter.lua`), so the limit holds for the whole fleet and
//! costs no extra round trip.

use super::extract::ApiCaller;
use crate::config::RateLimits;
use crate::domain::Tier;
use crate::state::AppState;
use crate::store::{Access, Caller, Quota, RateDecision};
use actix_web::HttpResponseBuilder;

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

impl ApiCaller {
    /// The caller as the store sees it, counted against the partition of its
    /// tenant, tier and `access`.
    pub fn caller(&self, state: &AppState, access: Access) -> Caller {
        Caller {
            tenant: self.0.tenant.clone(),
            label: self.0.label.clone(),
            quota: Some(self.quota(state, access)),
        }
    }

    pub fn quota(&self, state: &AppState, access: Access) -> Quota {
        quota(&state.rates, self.0.tier, access)
    }
}

/// `RateLimit-Limit` (requests per second), `RateLimit-Remaining` and
/// `RateLimit-Reset` (seconds until the limit is whole again).
pub fn headers(d: &RateDecision) -> Vec<(&'static str, String)> {
    vec![
        ("RateLimit-Limit", d.limit.to_string()),
        ("RateLimit-Remaining", d.remaining.to_string()),
        ("RateLimit-Reset", d.reset_ms.div_ceil(1000).to_string()),
    ]
}

/// Adds the `RateLimit-*` headers of a decision to a response.
pub fn add_headers(res: &mut HttpResponseBuilder, rate: Option<&RateDecision>) {
    if let Some(d) = rate {
        for h in headers(d) {
            res.insert_header(h);
        }
    }
}

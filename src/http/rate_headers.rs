//! The `RateLimit-*` headers of a response (contract section 7), rendered
//! here only. The counting itself happens in the store, in the same atomic
//! step as the operation (see `lua/meter.lua`), so a limit holds for the whole
//! fleet and costs no extra round trip.

use crate::store::RateDecision;
use actix_web::HttpResponseBuilder;

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

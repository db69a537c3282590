//! The HTTP layer: routes, extractors, strict input parsing and error mapping.
//! It knows the [`Store`] trait and the domain types, nothing of Redis.

pub mod admin;
pub mod body;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod limits;
pub mod locklock;
pub mod middleware;
pub mod query;
pub mod reservations;
pub mod token;

use crate::auth::Authenticator;
use crate::events::hub::Hub;
use crate::store::Store;
use actix_web::web;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Request limits from configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_batch: usize,
    pub max_body_bytes: usize,
    /// Keyless locklock locks allowed.
    pub public_locks: bool,
    pub public_locks_per_ip: u32,
    pub public_locks_max: usize,
    pub trust_forwarded_for: bool,
    /// JWT exchanges per second per client address.
    pub token_exchange_per_ip: u32,
}

/// Everything a handler needs, shared by all workers of one instance.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub auth: Arc<Authenticator>,
    /// SHA-256 of the admin token; `None` disables the admin API.
    pub admin_token_hash: Option<String>,
    pub limits: Limits,
    /// Write requests per second per tier (reads get five times as many).
    pub rates: crate::config::RateLimits,
    /// Set on SIGTERM: readiness turns false before the listener closes.
    pub shutting_down: Arc<AtomicBool>,
    /// This instance's fan-out of live events to its SSE clients.
    pub hub: Arc<Hub>,
    /// Idle time between `: keep-alive` comments on an event stream.
    pub sse_keepalive: std::time::Duration,
    /// Set once this instance has made sure the public locklock tenant exists.
    pub public_tenant_ready: AtomicBool,
    /// Verifies tenants' JWTs (and caches their JWKS).
    pub verifier: crate::tokens::Verifier,
    /// Lifetime of an exchanged token.
    pub token_ttl: std::time::Duration,
    /// Renders the process's metrics.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

/// The part of the request path after `marker`, percent-decoded: a resource or
/// lock name (so `a%2Fb` names `a/b`). `field` names it in the error.
pub fn decoded_tail(
    req: &actix_web::HttpRequest,
    marker: &str,
    field: &str,
) -> Result<String, error::ApiError> {
    let raw = req.uri().path();
    let encoded = raw
        .find(marker)
        .map(|i| &raw[i + marker.len()..])
        .unwrap_or_default();
    percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| error::ApiError::invalid_field(field, "is not valid percent-encoded UTF-8"))
}

/// One of the two static paths of the reservation listing (GET and HEAD).
fn list_resource(path: &str) -> actix_web::Resource {
    web::resource(path)
        .route(web::get().to(reservations::list))
        .route(web::head().to(reservations::list))
}

/// The route table. Paths are registered lower-case; the front-door middleware
/// lower-cases the fixed segments of incoming paths so `/api/v1/Reservation`
/// matches as the seeds write it.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use reservations as r;
    cfg.service(
        web::resource("/healthz")
            .route(web::get().to(health::healthz))
            .route(web::head().to(health::healthz)),
    )
    .service(web::resource("/metrics").route(web::get().to(health::metrics)))
    .service(
        web::resource("/readyz")
            .route(web::get().to(health::readyz))
            .route(web::head().to(health::readyz)),
    )
    // Every pattern is static up to the admin routes: a multi-pattern or
    // parameterised resource is matched with a regex, which the router would run
    // for every request that reaches it.
    .service(web::resource("/api/v1/reservation/reserve").route(web::post().to(r::reserve)))
    .service(web::resource("/api/v1/reservation/unreserve").route(web::post().to(r::unreserve)))
    .service(web::resource("/api/v1/reservation/extend").route(web::post().to(r::extend)))
    .service(web::resource("/api/v1/reservation/check").route(web::post().to(r::check)))
    .service(list_resource("/api/v1/reservation"))
    .service(list_resource("/api/v1/reservation/activereservations"))
    .service(web::resource("/api/v1/events").route(web::get().to(events::stream)))
    .service(web::resource("/api/v1/auth/token").route(web::post().to(token::exchange)))
    .service(
        web::resource("/v1/api/lock/uuid/{uuid:.+}")
            .route(web::post().to(locklock::acquire_uuid))
            .route(web::delete().to(locklock::release_uuid)),
    )
    .service(
        web::resource("/v1/api/lock/key/{name:.+}")
            .route(web::post().to(locklock::acquire_key))
            .route(web::delete().to(locklock::release_key)),
    )
    .service(
        web::resource("/api/v1/admin/tenants")
            .route(web::get().to(admin::list_tenants))
            .route(web::post().to(admin::create_tenant)),
    )
    .service(
        web::resource("/api/v1/admin/tenants/{id}")
            .route(web::get().to(admin::get_tenant))
            .route(web::patch().to(admin::update_tenant))
            .route(web::delete().to(admin::delete_tenant)),
    )
    .service(
        web::resource("/api/v1/admin/tenants/{id}/keys")
            .route(web::get().to(admin::list_keys))
            .route(web::post().to(admin::create_key)),
    )
    .service(
        web::resource("/api/v1/admin/tenants/{id}/keys/{key}")
            .route(web::delete().to(admin::delete_key)),
    )
    .service(
        web::resource("/api/v1/admin/tenants/{id}/keys/{key}/rotate")
            .route(web::post().to(admin::rotate_key)),
    )
    .service(
        web::resource("/api/v1/admin/tenants/{id}/reservations/{resource:.+}")
            .route(web::delete().to(admin::force_release)),
    );
}

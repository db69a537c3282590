//! What every handler shares on one instance: the store, the credential cache,
//! the account operations, the event hub and the configured limits. A module of
//! its own so the HTTP layer and the dashboard both depend on it, not on each
//! other (the dashboard's own settings are its own app data).

use crate::auth::Authenticator;
use crate::fanout::hub::Hub;
use crate::store::Store;
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
    pub public_locks_per_address: usize,
    pub public_max_expires_in: u64,
    /// Proxies in front of the instance that append to `X-Forwarded-For`: the
    /// client is the N-th entry from the right (0: the peer address).
    pub trusted_proxies: u32,
    /// JWT exchanges per second per client address.
    pub token_exchange_per_ip: u32,
    /// Failed authentications per second per client address, per instance.
    pub auth_failures_per_ip: u32,
    /// Longest wait for a request body to arrive in full.
    pub body_timeout: std::time::Duration,
    /// How long an Idempotency-Key's record is kept.
    pub idempotency_ttl: std::time::Duration,
    /// Most Idempotency-Key records a tenant keeps, per tier.
    pub idempotency_records: crate::config::RateLimits,
}

/// Everything a handler needs, shared by all workers of one instance.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub auth: Arc<Authenticator>,
    /// Tenant and key changes, with the cache invalidation they need.
    pub accounts: crate::accounts::Accounts,
    /// SHA-256 of the admin token; `None` disables the admin API.
    pub admin_token_hash: Option<String>,
    pub limits: Limits,
    /// Write requests per second per tier (reads get five times as many).
    pub rates: crate::config::RateLimits,
    /// Set on SIGTERM: readiness turns false before the listener closes.
    pub shutting_down: Arc<AtomicBool>,
    /// Set on SIGTERM once the listener is closed: every answer from then on
    /// carries `Connection: close` (not before, or a proxy would open new
    /// connections into a listener about to close, and lose their requests).
    pub closing_connections: Arc<AtomicBool>,
    /// This instance's fan-out of live events to its SSE clients.
    pub hub: Arc<Hub>,
    /// Idle time between `: keep-alive` comments on an event stream.
    pub sse_keepalive: std::time::Duration,
    /// Set once this instance has made sure the public locklock tenant exists.
    pub public_tenant_ready: AtomicBool,
    /// Failed authentications per client address on this instance.
    pub auth_failures: crate::address::AuthFailures,
    /// Verifies tenants' JWTs (and caches their JWKS).
    pub verifier: crate::tokens::Verifier,
    /// Lifetime of an exchanged token.
    pub token_ttl: std::time::Duration,
    /// Renders the process's metrics.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

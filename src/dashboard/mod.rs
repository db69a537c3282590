//! The web dashboard at `/dashboard`: sign-in with OpenID Connect (or, in
//! embedded mode without a provider, with the admin token), then the tenant's
//! keys, live reservations, recent events and plan.
//!
//! - Sessions are signed cookies (HS256 with the fleet's token key, audience
//!   `cooplocker-dashboard`), so every instance of the fleet accepts them and
//!   none keeps them in memory. They never open the API (wrong audience) and an
//!   API key never opens the dashboard (only the session cookie is read).
//! - Cookies: `HttpOnly`, `SameSite=Lax`, `Secure` unless
//!   `COOPLOCKER_COOKIE_SECURE=false`, path `/dashboard`.
//! - Every state-changing form is a POST carrying the session's CSRF token,
//!   and a cross-site `Origin` is refused.
//! - Pages are server-rendered (maud, compiled in); one small script makes the
//!   reservations, events and plan pages live through `/dashboard/live` (the
//!   tenant's event stream) and the JSON of `/dashboard/data/*`.
//!
//! Modules: `session` (the session cookie, its look-up and the CSRF check of
//! forms), `sign_in` (the login page, OIDC and local sign-in, sign-out),
//! `handlers` (the keys, reservations, events and plan pages, the live feed
//! and the assets), `data` (the JSON the script reads), `reply` (the answers'
//! headers) and `pages` (the templates).

mod data;
mod handlers;
pub mod oidc;
mod pages;
mod reply;
mod session;
mod sign_in;

pub use session::Session;

use handlers::{
    events_page, home, key_create, key_revoke, key_rotate, keys_page, live, plan_page, release,
    reservations_page, script, style,
};
use sign_in::{callback, login_local, login_page, login_start, logout};

use crate::domain::TenantId;
use actix_web::web;
use std::sync::Arc;
use std::time::Duration;

/// The dashboard's settings, built at start-up and given to [`routes`], which
/// registers them as the dashboard's own app data.
pub struct Dashboard {
    pub oidc: Option<Arc<oidc::Provider>>,
    pub public_url: Option<String>,
    pub cookie_secure: bool,
    pub session_ttl: Duration,
    /// Embedded mode without a provider: the tenant the admin token signs in to.
    pub local_tenant: Option<TenantId>,
}

pub(super) fn now_secs() -> u64 {
    crate::tokens::service::now_secs()
}

/// This instance's clock in milliseconds since the epoch: the `now` the
/// dashboard's JSON carries, from which the script measures its own clock's
/// offset.
pub(super) fn now_millis() -> crate::domain::Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as crate::domain::Millis)
}

/// The dashboard's routes, all under `/dashboard`, with its settings as their
/// app data (the dashboard's handlers take them as `web::Data<Dashboard>`).
pub fn routes(settings: web::Data<Dashboard>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(settings)
            .route("/dashboard", web::get().to(home))
            .route("/dashboard/", web::get().to(home))
            .route("/dashboard/login", web::get().to(login_page))
            .route("/dashboard/login/start", web::get().to(login_start))
            .route("/dashboard/login/local", web::post().to(login_local))
            .route("/dashboard/callback", web::get().to(callback))
            .route("/dashboard/logout", web::post().to(logout))
            .route("/dashboard/keys", web::get().to(keys_page))
            .route("/dashboard/keys", web::post().to(key_create))
            .route("/dashboard/keys/{id}/rotate", web::post().to(key_rotate))
            .route("/dashboard/keys/{id}/revoke", web::post().to(key_revoke))
            .route("/dashboard/reservations", web::get().to(reservations_page))
            .route("/dashboard/reservations/release", web::post().to(release))
            .route("/dashboard/events", web::get().to(events_page))
            .route("/dashboard/plan", web::get().to(plan_page))
            .route("/dashboard/live", web::get().to(live))
            .route(
                "/dashboard/data/reservations",
                web::get().to(data::reservations),
            )
            .route("/dashboard/data/activity", web::get().to(data::activity))
            .route("/dashboard/data/usage", web::get().to(data::usage))
            .route("/dashboard/assets/app.js", web::get().to(script))
            .route("/dashboard/assets/style.css", web::get().to(style));
    }
}

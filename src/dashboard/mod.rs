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
//!   reservations and events pages live through `/dashboard/live`.

pub mod oidc;
mod pages;

use crate::accounts::SignInError;
use crate::domain::{constant_time_eq, KeyId, Resource, TenantId};
use crate::state::AppState;
use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const SESSION_COOKIE: &str = "cl_session";
const SIGNIN_COOKIE: &str = "cl_signin";
const SESSION_AUD: &str = "cooplocker-dashboard";
const SIGNIN_AUD: &str = "cooplocker-dashboard-signin";
/// The sign-in's answer when the store cannot be reached.
const STORE_DOWN: &str = "The store cannot be reached right now; try again shortly.";
/// How long a started sign-in may take at the provider.
const SIGNIN_TTL: Duration = Duration::from_secs(600);

/// The dashboard's settings, built at start-up.
pub struct Dashboard {
    pub oidc: Option<Arc<oidc::Provider>>,
    pub public_url: Option<String>,
    pub cookie_secure: bool,
    pub session_ttl: Duration,
    /// Embedded mode without a provider: the tenant the admin token signs in to.
    pub local_tenant: Option<TenantId>,
}

/// A signed-in session.
#[derive(Debug, Clone)]
pub struct Session {
    pub tenant: TenantId,
    pub who: String,
    pub csrf: String,
    /// When the session ends (seconds since the epoch); its live feed ends then.
    pub expires_at: u64,
}

fn now_secs() -> u64 {
    crate::tokens::service::now_secs()
}

/// An HTML page response.
fn html(status: actix_web::http::StatusCode, body: maud::Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ))
        .insert_header(("Referrer-Policy", "same-origin"))
        .body(body.into_string())
}

fn ok(body: maud::Markup) -> HttpResponse {
    html(actix_web::http::StatusCode::OK, body)
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

fn cookie<'a>(d: &Dashboard, name: &'a str, value: String, max_age: Duration) -> Cookie<'a> {
    Cookie::build(name, value)
        .path("/dashboard")
        .http_only(true)
        .secure(d.cookie_secure)
        .same_site(SameSite::Lax)
        .max_age(CookieDuration::seconds(max_age.as_secs() as i64))
        .finish()
}

fn removal<'a>(d: &Dashboard, name: &'a str) -> Cookie<'a> {
    let mut c = cookie(d, name, String::new(), Duration::ZERO);
    c.make_removal();
    c
}

fn dashboard(state: &AppState) -> &Dashboard {
    &state.dashboard
}

/// The session of this request, if its cookie verifies and its tenant exists.
async fn session(req: &HttpRequest, state: &AppState) -> Option<Session> {
    let raw = req.cookie(SESSION_COOKIE)?;
    let claims = state
        .auth
        .check_signed(raw.value(), |k| k.check_value(raw.value(), SESSION_AUD))
        .await
        .ok()??;
    let tenant = TenantId::parse(claims["tid"].as_str()?).ok()?;
    // A deleted tenant's sessions end with it.
    state.store.get_tenant(&tenant).await.ok()??;
    Some(Session {
        tenant,
        who: claims["who"].as_str().unwrap_or_default().to_string(),
        csrf: claims["csrf"].as_str()?.to_string(),
        expires_at: claims["exp"].as_u64()?,
    })
}

/// Starts a session for `tenant`: the cookie to set.
async fn start_session(
    state: &AppState,
    tenant: &TenantId,
    who: &str,
) -> Result<Cookie<'static>, String> {
    let d = dashboard(state);
    let keys = state
        .auth
        .token_keys()
        .await
        .map_err(|e| format!("the session key is not available: {e}"))?;
    let token = keys.sign_value(
        SESSION_AUD,
        json!({
            "tid": tenant.as_str(),
            "who": who,
            "csrf": oidc::random_token(),
            "exp": now_secs() + d.session_ttl.as_secs(),
        }),
    )?;
    Ok(cookie(d, SESSION_COOKIE, token, d.session_ttl).into_owned())
}

/// The origin this instance is reached at, for the OIDC redirect URI.
fn public_origin(req: &HttpRequest, d: &Dashboard) -> String {
    match &d.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    }
}

fn redirect_uri(req: &HttpRequest, d: &Dashboard) -> String {
    format!("{}/dashboard/callback", public_origin(req, d))
}

/// Checks a state-changing form: the session's CSRF token, and no foreign Origin.
fn check_form(req: &HttpRequest, s: &Session, form: &HashMap<String, String>) -> bool {
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let info = req.connection_info();
        let own = format!("{}://{}", info.scheme(), info.host());
        let public = req
            .app_data::<web::Data<AppState>>()
            .and_then(|st| st.dashboard.public_url.clone())
            .map(|u| u.trim_end_matches('/').to_string());
        let o = origin.to_str().unwrap_or_default();
        if o != own && Some(o.to_string()) != public {
            return false;
        }
    }
    form.get("csrf")
        .is_some_and(|t| constant_time_eq(t.as_bytes(), s.csrf.as_bytes()))
}

fn forbidden(msg: &str) -> HttpResponse {
    html(
        actix_web::http::StatusCode::FORBIDDEN,
        pages::message("Refused", msg),
    )
}

/// The session of the request, or a redirect to sign in.
macro_rules! signed_in {
    ($req:expr, $state:expr) => {
        match session(&$req, &$state).await {
            Some(s) => s,
            None => return see_other("/dashboard/login"),
        }
    };
}

/// [`signed_in!`] for a state-changing form: also checks its CSRF token and
/// Origin, else answers 403.
macro_rules! signed_in_form {
    ($req:expr, $state:expr, $form:expr) => {{
        let s = signed_in!($req, $state);
        if !check_form(&$req, &s, &$form) {
            return forbidden("The form is stale or came from another site; reload the page.");
        }
        s
    }};
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/dashboard", web::get().to(home))
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
        .route("/dashboard/assets/app.js", web::get().to(script))
        .route("/dashboard/assets/style.css", web::get().to(style));
}

async fn home(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match session(&req, &state).await {
        Some(_) => see_other("/dashboard/keys"),
        None => see_other("/dashboard/login"),
    }
}

async fn login_page(state: web::Data<AppState>) -> HttpResponse {
    let d = dashboard(&state);
    ok(pages::login(
        d.oidc.is_some(),
        d.local_tenant.is_some(),
        None,
    ))
}

/// Begins an OIDC sign-in: state, nonce and PKCE verifier go into a short-lived
/// signed cookie; the browser goes to the provider.
async fn login_start(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let d = dashboard(&state);
    let Some(provider) = &d.oidc else {
        return see_other("/dashboard/login");
    };
    let discovery = match provider.discovery().await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(error = %e, "dashboard sign-in: provider unavailable");
            return html(
                actix_web::http::StatusCode::BAD_GATEWAY,
                pages::message(
                    "Sign-in unavailable",
                    "The sign-in provider cannot be reached right now; try again shortly.",
                ),
            );
        }
    };
    let (st, nonce, verifier) = (
        oidc::random_token(),
        oidc::random_token(),
        oidc::random_token(),
    );
    let redirect = redirect_uri(&req, d);
    let url = match provider.authorize_url(&discovery, &redirect, &st, &nonce, &verifier) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, "dashboard sign-in: bad provider configuration");
            return html(
                actix_web::http::StatusCode::BAD_GATEWAY,
                pages::message(
                    "Sign-in unavailable",
                    "The sign-in provider is misconfigured.",
                ),
            );
        }
    };
    let signed = match state.auth.token_keys().await {
        Ok(keys) => keys.sign_value(
            SIGNIN_AUD,
            json!({"state": st, "nonce": nonce, "verifier": verifier,
                   "exp": now_secs() + SIGNIN_TTL.as_secs()}),
        ),
        Err(e) => Err(e.to_string()),
    };
    let Ok(signed) = signed else {
        return html(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            pages::message("Sign-in unavailable", STORE_DOWN),
        );
    };
    HttpResponse::Found()
        .insert_header((header::LOCATION, url))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(cookie(d, SIGNIN_COOKIE, signed, SIGNIN_TTL))
        .finish()
}

/// The provider's redirect back: checks `state` against the sign-in cookie,
/// trades the code (with the PKCE verifier), verifies the ID token and its
/// nonce, then signs in — creating a free-tier tenant and its default key on
/// an identity's first sign-in, and showing that key at once.
async fn callback(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let d = dashboard(&state);
    let Some(provider) = &d.oidc else {
        return see_other("/dashboard/login");
    };
    let refuse = |why: &str| {
        tracing::info!(reason = why, "dashboard sign-in refused");
        let mut res = html(
            actix_web::http::StatusCode::BAD_REQUEST,
            pages::login(true, d.local_tenant.is_some(), Some(why)),
        );
        let _ = res.add_removal_cookie(&removal(d, SIGNIN_COOKIE));
        res
    };
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .unwrap_or_default();
    if let Some(err) = query.get("error") {
        return refuse(&format!(
            "The sign-in provider said: {}",
            truncate(err, 100)
        ));
    }
    let (Some(code), Some(got_state)) = (query.get("code"), query.get("state")) else {
        return refuse("The sign-in answer has no code or state.");
    };
    let started = match req.cookie(SIGNIN_COOKIE) {
        None => None,
        Some(c) => match state
            .auth
            .check_signed(c.value(), |k| k.check_value(c.value(), SIGNIN_AUD))
            .await
        {
            Ok(v) => v,
            Err(_) => return refuse(STORE_DOWN),
        },
    };
    let Some(started) = started else {
        return refuse("This sign-in was not started here or took too long; start again.");
    };
    let expected = started["state"].as_str().unwrap_or_default();
    if !constant_time_eq(expected.as_bytes(), got_state.as_bytes()) {
        return refuse("The sign-in state does not match; start again.");
    }
    let identity = match provider
        .finish(
            &state.verifier,
            code,
            started["verifier"].as_str().unwrap_or_default(),
            &redirect_uri(&req, d),
            started["nonce"].as_str().unwrap_or_default(),
        )
        .await
    {
        Ok(i) => i,
        Err(e) => return refuse(&e),
    };
    let signed_in = state
        .accounts
        .sign_in(
            &identity.issuer,
            &identity.subject,
            truncate(&identity.display, 200),
        )
        .await;
    let (tenant, new_key) = match signed_in {
        Ok(t) => (t.tenant, t.new_key),
        Err(SignInError::NoUsableName) => return refuse("The identity has no usable name."),
        Err(SignInError::Store(_)) => return refuse(STORE_DOWN),
    };
    let session_cookie = match start_session(&state, &tenant, &identity.display).await {
        Ok(c) => c,
        Err(_) => return refuse(STORE_DOWN),
    };
    let mut res = match new_key {
        Some(k) => {
            let s = Session {
                tenant: tenant.clone(),
                who: identity.display.clone(),
                csrf: String::new(),
                expires_at: now_secs() + d.session_ttl.as_secs(),
            };
            ok(pages::secret_shown(
                &s,
                "Welcome: your API key",
                &k.info.label,
                &k.secret,
                true,
            ))
        }
        None => see_other("/dashboard/keys"),
    };
    let _ = res.add_cookie(&session_cookie);
    let _ = res.add_removal_cookie(&removal(d, SIGNIN_COOKIE));
    res
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Embedded mode without a provider: the admin token signs in to the default
/// tenant.
async fn login_local(
    state: web::Data<AppState>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let d = dashboard(&state);
    let Some(tenant) = &d.local_tenant else {
        return see_other("/dashboard/login");
    };
    let given = form.get("token").map(String::as_str).unwrap_or_default();
    let given_hash = crate::domain::hash_secret(given);
    let ok_token = state
        .admin_token_hash
        .as_ref()
        .is_some_and(|h| constant_time_eq(h.as_bytes(), given_hash.as_bytes()));
    if !ok_token {
        return html(
            actix_web::http::StatusCode::UNAUTHORIZED,
            pages::login(d.oidc.is_some(), true, Some("That is not the admin token.")),
        );
    }
    match start_session(&state, tenant, "local admin").await {
        Ok(c) => {
            let mut res = see_other("/dashboard/keys");
            let _ = res.add_cookie(&c);
            res
        }
        Err(_) => html(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            pages::message("Sign-in unavailable", "Try again shortly."),
        ),
    }
}

async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let _session = signed_in_form!(req, state, form);
    let mut res = see_other("/dashboard/login");
    let _ = res.add_removal_cookie(&removal(dashboard(&state), SESSION_COOKIE));
    res
}

fn unavailable() -> HttpResponse {
    html(
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        pages::message(
            "Store unavailable",
            "The lock store cannot be reached right now; reload in a moment.",
        ),
    )
}

async fn keys_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let s = signed_in!(req, state);
    keys_view(&state, &s, None).await
}

async fn keys_view(state: &AppState, s: &Session, error: Option<&str>) -> HttpResponse {
    let (Ok(Some(tenant)), Ok(Some(keys))) = (
        state.store.get_tenant(&s.tenant).await,
        state.store.list_keys(&s.tenant).await,
    ) else {
        return unavailable();
    };
    let status = if error.is_some() {
        actix_web::http::StatusCode::UNPROCESSABLE_ENTITY
    } else {
        actix_web::http::StatusCode::OK
    };
    html(status, pages::keys(s, &tenant, &keys, error))
}

async fn key_create(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let s = signed_in_form!(req, state, form);
    let label = form.get("label").map(|l| l.trim()).unwrap_or_default();
    if crate::domain::KeyLabel::parse(label.to_string()).is_err() {
        return keys_view(
            &state,
            &s,
            Some("A label is 1 to 256 characters, without control characters."),
        )
        .await;
    }
    match state.accounts.create_key(&s.tenant, label).await {
        Ok(Ok(k)) => {
            tracing::info!(tenant = %s.tenant, key = %k.info.id, "api key created from the dashboard");
            ok(pages::secret_shown(
                &s,
                "New API key",
                &k.info.label,
                &k.secret,
                false,
            ))
        }
        Ok(Err(crate::store::KeyCreateError::LimitReached(max))) => {
            let msg = format!("Your plan allows {max} key(s); revoke one or upgrade to add more.");
            keys_view(&state, &s, Some(&msg)).await
        }
        Ok(Err(_)) | Err(_) => unavailable(),
    }
}

async fn key_rotate(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let s = signed_in_form!(req, state, form);
    let Ok(key) = KeyId::parse(&path) else {
        return keys_view(&state, &s, Some("No such key.")).await;
    };
    match state.accounts.rotate_key(&s.tenant, &key).await {
        Ok(Some(k)) => {
            tracing::info!(tenant = %s.tenant, %key, "api key rotated from the dashboard");
            ok(pages::secret_shown(
                &s,
                "Rotated API key",
                &k.info.label,
                &k.secret,
                false,
            ))
        }
        Ok(None) => keys_view(&state, &s, Some("No such key.")).await,
        Err(_) => unavailable(),
    }
}

async fn key_revoke(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let s = signed_in_form!(req, state, form);
    let Ok(key) = KeyId::parse(&path) else {
        return keys_view(&state, &s, Some("No such key.")).await;
    };
    match state.accounts.revoke_key(&s.tenant, &key).await {
        Ok(true) => {
            tracing::info!(tenant = %s.tenant, %key, "api key revoked from the dashboard");
            see_other("/dashboard/keys")
        }
        Ok(false) => keys_view(&state, &s, Some("No such key.")).await,
        Err(_) => unavailable(),
    }
}

/// Every active reservation of the tenant, at most 1000 shown.
async fn holdings(state: &AppState, s: &Session) -> Option<Vec<crate::domain::Holding>> {
    let caller = crate::store::Caller {
        tenant: s.tenant.clone(),
        label: "dashboard".into(),
        quota: None,
    };
    let q = crate::store::ListQuery {
        prefix: None,
        requester: None,
        limit: 1000,
        after: None,
    };
    state
        .store
        .list(&caller, &q)
        .await
        .ok()
        .map(|m| m.value.items)
}

async fn reservations_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let s = signed_in!(req, state);
    let Some(items) = holdings(&state, &s).await else {
        return unavailable();
    };
    ok(pages::reservations(&s, &items))
}

async fn release(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let s = signed_in_form!(req, state, form);
    let Some(Ok(resource)) = form.get("resource").map(|r| Resource::parse(r.clone())) else {
        return forbidden("No such reservation.");
    };
    match state.store.force_release(&s.tenant, &resource).await {
        Ok(_) => see_other("/dashboard/reservations"),
        Err(_) => unavailable(),
    }
}

/// The most recent events (up to 200), newest first.
async fn events_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let s = signed_in!(req, state);
    let mut after = crate::events::EventId::ZERO;
    let mut recent: std::collections::VecDeque<crate::events::Event> = Default::default();
    for _ in 0..20 {
        match state.store.events_after(&s.tenant, after, 1000).await {
            Ok(crate::events::History::Events(page)) => {
                let full = page.len() == 1000;
                if let Some(last) = page.last() {
                    after = last.id;
                }
                recent.extend(page);
                while recent.len() > 200 {
                    recent.pop_front();
                }
                if !full {
                    break;
                }
            }
            Ok(crate::events::History::Gap { .. }) => break,
            Err(_) => return unavailable(),
        }
    }
    let events: Vec<_> = recent.into_iter().rev().collect();
    ok(pages::events(&s, &events))
}

async fn plan_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let s = signed_in!(req, state);
    let (Ok(Some(tenant)), Ok(Some(keys)), Some(items)) = (
        state.store.get_tenant(&s.tenant).await,
        state.store.list_keys(&s.tenant).await,
        holdings(&state, &s).await,
    ) else {
        return unavailable();
    };
    let writes = state.rates.writes(tenant.tier);
    ok(pages::plan(&s, &tenant, keys.len(), items.len(), writes))
}

/// The tenant's live events for the dashboard's script, as Server-Sent Events
/// (the session cookie, not an API key, opens it).
async fn live(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(s) = session(&req, &state).await else {
        return HttpResponse::Unauthorized()
            .content_type("application/json")
            .body(r#"{"error":{"code":"UNAUTHORIZED","message":"sign in to the dashboard first","details":[]}}"#);
    };
    crate::http::events::session_stream(&req, &state, s.tenant, s.expires_at).await
}

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(pages::SCRIPT)
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(pages::STYLE)
}

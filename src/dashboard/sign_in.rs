//! Signing in to the dashboard and out: the login page, the OpenID Connect
//! authorization-code flow (start, and the provider's callback), the admin
//! token in embedded mode without a provider, and sign-out.

use super::reply::{html, ok, see_other};
use super::session::{cookie, removal, start_session, Session, SignedForm, SESSION_COOKIE};
use super::{now_secs, oidc, pages, Dashboard};
use crate::accounts::SignInError;
use crate::domain::constant_time_eq;
use crate::state::AppState;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

const SIGNIN_COOKIE: &str = "cl_signin";
const SIGNIN_AUD: &str = "cooplocker-dashboard-signin";

/// The sign-in's answer when the store cannot be reached.
const STORE_DOWN: &str = "The store cannot be reached right now; try again shortly.";

/// How long a started sign-in may take at the provider.
const SIGNIN_TTL: Duration = Duration::from_secs(600);

/// The page saying sign-in cannot be done right now, and why.
fn unavailable(status: actix_web::http::StatusCode, why: &str) -> HttpResponse {
    html(status, pages::message("Sign-in unavailable", why))
}

/// The provider failed a sign-in's start: logged (`what`), and a 502 page
/// saying `why`.
fn provider_failed(e: &dyn std::fmt::Display, what: &str, why: &str) -> HttpResponse {
    tracing::warn!(error = %e, "dashboard sign-in: {what}");
    unavailable(actix_web::http::StatusCode::BAD_GATEWAY, why)
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

pub(super) async fn login_page(d: web::Data<Dashboard>) -> HttpResponse {
    ok(pages::login(
        d.oidc.is_some(),
        d.local_tenant.is_some(),
        None,
    ))
}

/// Begins an OIDC sign-in: state, nonce and PKCE verifier go into a short-lived
/// signed cookie; the browser goes to the provider.
pub(super) async fn login_start(
    req: HttpRequest,
    state: web::Data<AppState>,
    d: web::Data<Dashboard>,
) -> HttpResponse {
    let Some(provider) = &d.oidc else {
        return see_other("/dashboard/login");
    };
    let discovery = match provider.discovery().await {
        Ok(x) => x,
        Err(e) => {
            return provider_failed(
                &e,
                "provider unavailable",
                "The sign-in provider cannot be reached right now; try again shortly.",
            )
        }
    };
    let (st, nonce, verifier) = (
        oidc::random_token(),
        oidc::random_token(),
        oidc::random_token(),
    );
    let redirect = redirect_uri(&req, &d);
    let url = match provider.authorize_url(&discovery, &redirect, &st, &nonce, &verifier) {
        Ok(u) => u,
        Err(e) => {
            return provider_failed(
                &e,
                "bad provider configuration",
                "The sign-in provider is misconfigured.",
            )
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
        return unavailable(actix_web::http::StatusCode::SERVICE_UNAVAILABLE, STORE_DOWN);
    };
    HttpResponse::Found()
        .insert_header((header::LOCATION, url))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(cookie(&d, SIGNIN_COOKIE, signed, SIGNIN_TTL))
        .finish()
}

/// The provider's redirect back: checks `state` against the sign-in cookie,
/// trades the code (with the PKCE verifier), verifies the ID token and its
/// nonce, then signs in — creating a free-tier tenant and its default key on
/// an identity's first sign-in, and showing that key at once.
pub(super) async fn callback(
    req: HttpRequest,
    state: web::Data<AppState>,
    d: web::Data<Dashboard>,
) -> HttpResponse {
    let refuse = |why: &str| {
        tracing::info!(reason = why, "dashboard sign-in refused");
        let mut res = html(
            actix_web::http::StatusCode::BAD_REQUEST,
            pages::login(true, d.local_tenant.is_some(), Some(why)),
        );
        let _ = res.add_removal_cookie(&removal(&d, SIGNIN_COOKIE));
        res
    };
    let Some(provider) = &d.oidc else {
        return see_other("/dashboard/login");
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
            &redirect_uri(&req, &d),
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
    let session_cookie = match start_session(&state, &d, &tenant, &identity.display).await {
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
    let _ = res.add_removal_cookie(&removal(&d, SIGNIN_COOKIE));
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
pub(super) async fn login_local(
    state: web::Data<AppState>,
    d: web::Data<Dashboard>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
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
    match start_session(&state, &d, tenant, "local admin").await {
        Ok(c) => {
            let mut res = see_other("/dashboard/keys");
            let _ = res.add_cookie(&c);
            res
        }
        Err(_) => unavailable(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "Try again shortly.",
        ),
    }
}

/// Signs out (a signed-in form, so no other site can sign anyone out).
pub(super) async fn logout(d: web::Data<Dashboard>, _: SignedForm) -> HttpResponse {
    let mut res = see_other("/dashboard/login");
    let _ = res.add_removal_cookie(&removal(&d, SESSION_COOKIE));
    res
}

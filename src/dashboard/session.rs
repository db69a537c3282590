//! Dashboard sessions: the signed session cookie (HS256 with the fleet's token
//! key, audience `cooplocker-dashboard`), looking a request's session up,
//! starting one, and the CSRF and Origin check of every state-changing form:
//! the extractors [`SignedIn`] and [`SignedForm`] that the signed-in pages take.

use super::reply::{forbidden, see_other};
use super::{now_secs, oidc, Dashboard};
use crate::domain::{constant_time_eq, TenantId};
use crate::state::AppState;
use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use serde_json::json;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub(super) const SESSION_COOKIE: &str = "cl_session";
const SESSION_AUD: &str = "cooplocker-dashboard";

/// A signed-in session.
#[derive(Debug, Clone)]
pub struct Session {
    pub tenant: TenantId,
    pub who: String,
    pub csrf: String,
    /// When the session ends (seconds since the epoch); its live feed ends then.
    pub expires_at: u64,
}

pub(super) fn cookie<'a>(
    d: &Dashboard,
    name: &'a str,
    value: String,
    max_age: Duration,
) -> Cookie<'a> {
    Cookie::build(name, value)
        .path("/dashboard")
        .http_only(true)
        .secure(d.cookie_secure)
        .same_site(SameSite::Lax)
        .max_age(CookieDuration::seconds(max_age.as_secs() as i64))
        .finish()
}

pub(super) fn removal<'a>(d: &Dashboard, name: &'a str) -> Cookie<'a> {
    let mut c = cookie(d, name, String::new(), Duration::ZERO);
    c.make_removal();
    c
}

/// The session of this request, if its cookie verifies and its tenant exists.
pub(super) async fn session(req: &HttpRequest, state: &AppState) -> Option<Session> {
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
pub(super) async fn start_session(
    state: &AppState,
    d: &Dashboard,
    tenant: &TenantId,
    who: &str,
) -> Result<Cookie<'static>, String> {
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

/// Checks a state-changing form: the session's CSRF token, and no foreign Origin.
fn check_form(req: &HttpRequest, s: &Session, form: &HashMap<String, String>) -> bool {
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let info = req.connection_info();
        let own = format!("{}://{}", info.scheme(), info.host());
        let public = req
            .app_data::<web::Data<Dashboard>>()
            .and_then(|d| d.public_url.clone())
            .map(|u| u.trim_end_matches('/').to_string());
        let o = origin.to_str().unwrap_or_default();
        if o != own && Some(o.to_string()) != public {
            return false;
        }
    }
    form.get("csrf")
        .is_some_and(|t| constant_time_eq(t.as_bytes(), s.csrf.as_bytes()))
}

/// The session of a request to a signed-in page, as a handler argument;
/// without one the browser is sent to sign in instead.
pub(super) struct SignedIn(pub Session);

/// A state-changing form of a signed-in session, as a handler argument: its
/// fields, once the session is found (else the browser is sent to sign in)
/// and the form's CSRF token and Origin check out (else 403).
pub(super) struct SignedForm {
    pub session: Session,
    pub fields: HashMap<String, String>,
}

/// Why a dashboard request is answered before its handler runs.
#[derive(Debug)]
enum Turned {
    /// No valid session: sign in first.
    SignIn,
    /// The form's CSRF token or Origin does not check out.
    StaleForm,
}

impl std::fmt::Display for Turned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Turned::SignIn => "not signed in",
            Turned::StaleForm => "stale or cross-site form",
        })
    }
}

impl ResponseError for Turned {
    fn status_code(&self) -> StatusCode {
        match self {
            Turned::SignIn => StatusCode::SEE_OTHER,
            Turned::StaleForm => StatusCode::FORBIDDEN,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Turned::SignIn => see_other("/dashboard/login"),
            Turned::StaleForm => {
                forbidden("The form is stale or came from another site; reload the page.")
            }
        }
    }
}

/// The request's session, or [`Turned::SignIn`].
async fn signed_in(req: &HttpRequest) -> Result<Session, actix_web::Error> {
    let state = web::Data::<AppState>::extract(req).await?;
    session(req, &state)
        .await
        .ok_or_else(|| Turned::SignIn.into())
}

impl FromRequest for SignedIn {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { signed_in(&req).await.map(Self) })
    }
}

impl FromRequest for SignedForm {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    /// The form is read first, as by `web::Form` (its errors are the same).
    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let form = web::Form::<HashMap<String, String>>::from_request(&req, payload);
        Box::pin(async move {
            let fields = form.await?.into_inner();
            let session = signed_in(&req).await?;
            if !check_form(&req, &session, &fields) {
                return Err(Turned::StaleForm.into());
            }
            Ok(Self { session, fields })
        })
    }
}

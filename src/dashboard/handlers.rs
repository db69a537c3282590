//! The signed-in dashboard's pages and actions: keys (create, rotate, revoke),
//! reservations (and releasing one), recent events, the plan, the live feed
//! of the tenant's events, and the two static assets.

use super::reply::{forbidden, html, ok, see_other, unavailable};
use super::session::{session, Session, SignedForm, SignedIn};
use super::{data, pages};
use crate::domain::{IssuedKey, KeyId, KeyScope, Resource};
use crate::state::AppState;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

pub(super) async fn home(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match session(&req, &state).await {
        Some(_) => see_other("/dashboard/keys"),
        None => see_other("/dashboard/login"),
    }
}

#[tracing::instrument(skip_all, fields(tenant = %s.tenant))]
pub(super) async fn keys_page(state: web::Data<AppState>, SignedIn(s): SignedIn) -> HttpResponse {
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

#[tracing::instrument(skip_all, fields(tenant = %s.tenant))]
pub(super) async fn key_create(
    state: web::Data<AppState>,
    SignedForm { session: s, fields }: SignedForm,
) -> HttpResponse {
    let label = fields.get("label").map(|l| l.trim()).unwrap_or_default();
    if crate::domain::KeyLabel::parse(label.to_string()).is_err() {
        return keys_view(
            &state,
            &s,
            Some("A label is 1 to 256 characters, without control characters."),
        )
        .await;
    }
    // No scope field (an older form) means write, like the admin API.
    let scope = match fields.get("scope").map(|v| v.trim()) {
        None | Some("") => KeyScope::Write,
        Some(v) => match KeyScope::parse(v) {
            Ok(scope) => scope,
            Err(_) => {
                return keys_view(&state, &s, Some("A key's scope is read or write.")).await;
            }
        },
    };
    match state.accounts.create_key(&s.tenant, label, scope).await {
        Ok(Ok(k)) => {
            tracing::info!(tenant = %s.tenant, key = %k.info.id, "api key created from the dashboard");
            secret_page(&s, "New API key", &k)
        }
        Ok(Err(crate::store::KeyCreateError::LimitReached(max))) => {
            let msg = format!("Your plan allows {max} key(s); revoke one or upgrade to add more.");
            keys_view(&state, &s, Some(&msg)).await
        }
        Ok(Err(_)) | Err(_) => unavailable(),
    }
}

#[tracing::instrument(skip_all, fields(tenant = %s.tenant))]
pub(super) async fn key_rotate(
    state: web::Data<AppState>,
    path: web::Path<String>,
    SignedForm { session: s, .. }: SignedForm,
) -> HttpResponse {
    let rotated = match KeyId::parse(&path) {
        Ok(key) => state.accounts.rotate_key(&s.tenant, &key).await,
        Err(_) => Ok(None),
    };
    match rotated {
        Ok(Some(k)) => {
            tracing::info!(tenant = %s.tenant, key = %k.info.id, "api key rotated from the dashboard");
            secret_page(&s, "Rotated API key", &k)
        }
        Ok(None) => no_such_key(&state, &s).await,
        Err(_) => unavailable(),
    }
}

#[tracing::instrument(skip_all, fields(tenant = %s.tenant))]
pub(super) async fn key_revoke(
    state: web::Data<AppState>,
    path: web::Path<String>,
    SignedForm { session: s, .. }: SignedForm,
) -> HttpResponse {
    let Some(key) = KeyId::parse(&path).ok() else {
        return no_such_key(&state, &s).await;
    };
    match state.accounts.revoke_key(&s.tenant, &key).await {
        Ok(true) => {
            tracing::info!(tenant = %s.tenant, %key, "api key revoked from the dashboard");
            see_other("/dashboard/keys")
        }
        Ok(false) => no_such_key(&state, &s).await,
        Err(_) => unavailable(),
    }
}

/// The page showing a key's new secret, once.
fn secret_page(s: &Session, title: &str, k: &IssuedKey) -> HttpResponse {
    ok(pages::secret_shown(
        s,
        title,
        &k.info.label,
        &k.secret,
        false,
    ))
}

/// The keys page saying the form named a key the tenant does not have.
async fn no_such_key(state: &AppState, s: &Session) -> HttpResponse {
    keys_view(state, s, Some("No such key.")).await
}

/// The tenant's active reservations, at most 1000 (the plan page counts them).
async fn holdings(state: &AppState, s: &Session) -> Option<Vec<crate::domain::Holding>> {
    let caller = crate::store::Caller {
        tenant: s.tenant.clone(),
        label: "dashboard".into(),
        quota: None,
        idempotency: None,
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

/// The first page of the tenant's holds (filtered as the query asks), with
/// each resource's line; the script takes over from there.
#[tracing::instrument(skip_all, fields(tenant = %s.tenant))]
pub(super) async fn reservations_page(
    state: web::Data<AppState>,
    SignedIn(s): SignedIn,
    q: web::Query<data::PageQuery>,
) -> HttpResponse {
    let query = match data::list_query(&q) {
        Ok(query) => query,
        Err((field, why)) => {
            let msg = format!("The {field} filter {why}.");
            return html(
                actix_web::http::StatusCode::BAD_REQUEST,
                pages::reservations(&s, &q, &[], &Default::default(), None, Some(&msg)),
            );
        }
    };
    let Ok(listed) = state.store.list(&data::caller(&s), &query).await else {
        return unavailable();
    };
    let page = listed.value;
    let Ok(lines) = data::lines(&state, &s, &data::distinct(&page.items)).await else {
        return unavailable();
    };
    ok(pages::reservations(
        &s,
        &q,
        &page.items,
        &lines,
        page.next_after.as_deref(),
        None,
    ))
}

#[tracing::instrument(skip_all, fields(tenant = %s.tenant))]
pub(super) async fn release(
    state: web::Data<AppState>,
    SignedForm { session: s, fields }: SignedForm,
) -> HttpResponse {
    let Some(Ok(resource)) = fields.get("resource").map(|r| Resource::parse(r.clone())) else {
        return forbidden("No such reservation.");
    };
    match state.store.force_release(&s.tenant, &resource).await {
        Ok(_) => see_other("/dashboard/reservations"),
        Err(_) => unavailable(),
    }
}

/// The most recent events (up to 200), newest first.
#[tracing::instrument(skip_all, fields(tenant = %s.tenant))]
pub(super) async fn events_page(state: web::Data<AppState>, SignedIn(s): SignedIn) -> HttpResponse {
    // From the oldest event still retained (the very start of the history
    // is a gap once it has been trimmed).
    let mut after = match data::readable_from(&state, &s.tenant, crate::events::EventId::ZERO).await
    {
        Ok(Some(from)) => from,
        Ok(None) => return ok(pages::events(&s, &[])),
        Err(_) => return unavailable(),
    };
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

#[tracing::instrument(skip_all, fields(tenant = %s.tenant))]
pub(super) async fn plan_page(state: web::Data<AppState>, SignedIn(s): SignedIn) -> HttpResponse {
    let (Ok(Some(tenant)), Ok(Some(keys)), Some(items)) = (
        state.store.get_tenant(&s.tenant).await,
        state.store.list_keys(&s.tenant).await,
        holdings(&state, &s).await,
    ) else {
        return unavailable();
    };
    let writes = state.rates.writes(tenant.tier);
    // The tenant as the admin API shows it: its lease `policy`, once the
    // tenant carries one, is rendered field by field as it is sent.
    let policy = serde_json::to_value(crate::http::wire::admin::TenantView::from(&tenant))
        .ok()
        .and_then(|v| v.get("policy").cloned());
    let usage = pages::Usage {
        keys: keys.len(),
        active: items.len(),
        writes,
        waiter_limit: crate::http::waiting::max_waiters(tenant.tier),
    };
    ok(pages::plan(&s, &tenant, &usage, policy.as_ref()))
}

/// The tenant's live events for the dashboard's script, as Server-Sent Events
/// (the session cookie, not an API key, opens it).
pub(super) async fn live(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(s) = session(&req, &state).await else {
        return HttpResponse::Unauthorized()
            .content_type("application/json")
            .body(r#"{"error":{"code":"UNAUTHORIZED","message":"sign in to the dashboard first","details":[]}}"#);
    };
    crate::http::events::session_stream(&req, &state, s.tenant, s.expires_at).await
}

pub(super) async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(pages::SCRIPT)
}

pub(super) async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(pages::STYLE)
}

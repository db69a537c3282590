//! The admin API (contract section 6): tenants and their API keys, and force
//! release. Only the admin token opens it.

use super::body::{invalid_items, parse_object, require_json, Fields, Object};
use super::error::{ApiError, Detail};
use super::extract::AdminCaller;
use super::query::Query;
use super::AppState;
use crate::domain::{
    format_millis, ApiKeyInfo, IssuedKey, KeyId, KeyLabel, Resource, Tenant, TenantId, TenantName,
    Tier,
};
use crate::store::{KeyCreateError, TenantPatch};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::json;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    id: String,
    name: String,
    tier: Tier,
    created_at: String,
    jwt: Option<serde_json::Value>,
}

impl From<&Tenant> for TenantView {
    fn from(t: &Tenant) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name.clone(),
            tier: t.tier,
            created_at: format_millis(t.created_at),
            jwt: t.jwt.as_ref().map(|j| j.view()),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    id: String,
    label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    created_at: String,
}

impl KeyView {
    fn info(k: &ApiKeyInfo) -> Self {
        Self {
            id: k.id.to_string(),
            label: k.label.clone(),
            key: None,
            created_at: format_millis(k.created_at),
        }
    }
    fn issued(k: &IssuedKey) -> Self {
        Self {
            key: Some(k.secret.clone()),
            ..Self::info(&k.info)
        }
    }
}

fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    // An id that cannot exist is simply not found: same answer as an unknown one.
    TenantId::parse(raw).map_err(|_| ApiError::NotFound(format!("no tenant {raw:?}")))
}

fn not_found_tenant(id: &TenantId) -> ApiError {
    ApiError::NotFound(format!("no tenant {id}"))
}

fn no_query(req: &HttpRequest) -> Result<(), ApiError> {
    Query::parse(req.query_string(), &[]).map(|_| ())
}

#[utoipa::path(post, path = "/api/v1/admin/tenants", tag = "admin", summary = "Create a tenant and its default key (the secret is shown only here)", request_body = crate::http::openapi::TenantCreate, responses((status = 201, description = "Created", body = crate::http::openapi::TenantCreated), crate::http::openapi::AdminErrors), security(("adminToken" = [])))]
pub async fn create_tenant(
    req: HttpRequest,
    _: AdminCaller,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    no_query(&req)?;
    require_json(&req)?;
    let obj = parse_object(&body, false)?;
    let mut details = Vec::new();
    let mut f = Fields::new(None, obj, &["name", "tier"], &mut details);
    let name = f.string("name", TenantName::parse);
    let tier = f.opt_string("tier", |t| Tier::parse(&t));
    let (Some(name), Some(tier), true) = (name, tier, details.is_empty()) else {
        return Err(invalid_items(details));
    };
    let (tenant, key) = state
        .store
        .create_tenant(&name, tier.unwrap_or(Tier::Free), None)
        .await?;
    tracing::info!(tenant = %tenant.id, tier = %tenant.tier, "tenant created");
    Ok(HttpResponse::Created().json(json!({
        "tenant": TenantView::from(&tenant),
        "apiKey": KeyView::issued(&key),
    })))
}

#[utoipa::path(get, path = "/api/v1/admin/tenants", tag = "admin", summary = "List tenants (creation order)", params(("limit" = Option<u32>, Query, description = "1 to 1000, default 100"), ("cursor" = Option<String>, Query, description = "nextCursor of the previous page")), responses((status = 200, description = "A page", body = crate::http::openapi::TenantList), crate::http::openapi::AdminErrors), security(("adminToken" = [])))]
pub async fn list_tenants(
    req: HttpRequest,
    _: AdminCaller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut q = Query::parse(req.query_string(), &["limit", "cursor"])?;
    let limit = q.integer("limit", 1, 1000)?.unwrap_or(100) as usize;
    let after = match q.take("cursor") {
        Some(c) => Some(TenantId::parse(&c).map_err(|_| {
            ApiError::invalid_field("cursor", "is not a cursor this service issued")
        })?),
        None => None,
    };
    let (tenants, next) = state.store.list_tenants(after.as_ref(), limit).await?;
    Ok(HttpResponse::Ok().json(json!({
        "tenants": tenants.iter().map(TenantView::from).collect::<Vec<_>>(),
        "nextCursor": next.map(|n| n.to_string()),
    })))
}

#[utoipa::path(get, path = "/api/v1/admin/tenants/{id}", tag = "admin", summary = "Show a tenant", params(("id" = String, Path, description = "Tenant id")), responses((status = 200, description = "The tenant", body = crate::http::openapi::Tenant), crate::http::openapi::AdminErrors), security(("adminToken" = [])))]
pub async fn get_tenant(
    req: HttpRequest,
    _: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    no_query(&req)?;
    let id = tenant_id(&path)?;
    let tenant = state
        .store
        .get_tenant(&id)
        .await?
        .ok_or_else(|| not_found_tenant(&id))?;
    Ok(HttpResponse::Ok().json(TenantView::from(&tenant)))
}

#[utoipa::path(patch, path = "/api/v1/admin/tenants/{id}", tag = "admin", summary = "Change the name, tier or JWT settings of a tenant", request_body = crate::http::openapi::TenantPatch, params(("id" = String, Path, description = "Tenant id")), responses((status = 200, description = "The tenant", body = crate::http::openapi::Tenant), crate::http::openapi::AdminErrors), security(("adminToken" = [])))]
pub async fn update_tenant(
    req: HttpRequest,
    _: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    no_query(&req)?;
    require_json(&req)?;
    let id = tenant_id(&path)?;
    let obj = parse_object(&body, false)?;
    let mut details = Vec::new();
    let mut f = Fields::new(None, obj, &["name", "tier", "jwt"], &mut details);
    let name = f.opt_string("name", TenantName::parse);
    let tier = f.opt_string("tier", |t| Tier::parse(&t));
    let jwt = if f.has("jwt") {
        jwt_settings(&body, &mut details).map(Some)
    } else {
        Some(None)
    };
    let (Some(name), Some(tier), Some(jwt), true) = (name, tier, jwt, details.is_empty()) else {
        return Err(invalid_items(details));
    };
    let patch = TenantPatch { name, tier, jwt };
    let tenant = state
        .store
        .update_tenant(&id, &patch)
        .await?
        .ok_or_else(|| not_found_tenant(&id))?;
    state.auth.forget_tenant(&id);
    tracing::info!(tenant = %tenant.id, tier = %tenant.tier, "tenant updated");
    Ok(HttpResponse::Ok().json(TenantView::from(&tenant)))
}

/// The `jwt` field of a tenant PATCH: settings, or `None` (null) to remove
/// them. Read again from the body so that repeated fields inside it are seen.
fn jwt_settings(
    body: &[u8],
    details: &mut Vec<Detail>,
) -> Option<Option<crate::tokens::JwtSettings>> {
    use crate::tokens::settings::{JwtSettings, FIELDS};
    #[derive(serde::Deserialize)]
    struct Part {
        #[serde(default)]
        jwt: Option<Object>,
    }
    let part = match serde_json::from_slice::<Part>(body) {
        Ok(p) => p,
        Err(_) => {
            details.push(Detail::field(
                None,
                "jwt",
                "must be an object (issuer, audience, algorithms and one of hs256Secret, publicKeyPem, jwksUrl) or null",
            ));
            return None;
        }
    };
    // Present (the caller checked), so absent here means null.
    let Some(obj) = part.jwt else {
        return Some(None);
    };
    let before = details.len();
    let mut seen: Vec<&str> = Vec::new();
    for (k, _) in &obj.0 {
        let name = format!("jwt.{k}");
        if !FIELDS.contains(&k.as_str()) {
            details.push(Detail::field(
                None,
                &name,
                format!("unknown field; allowed: {}", FIELDS.join(", ")),
            ));
        } else if seen.contains(&k.as_str()) {
            details.push(Detail::field(None, &name, "appears more than once"));
        } else {
            seen.push(k);
        }
    }
    if details.len() > before {
        return None;
    }
    match JwtSettings::parse(obj.0) {
        Ok(s) => Some(Some(s)),
        Err(problems) => {
            for (field, problem) in problems {
                details.push(Detail::field(None, &format!("jwt.{field}"), problem));
            }
            None
        }
    }
}

#[utoipa::path(delete, path = "/api/v1/admin/tenants/{id}", tag = "admin", summary = "Delete a tenant, its keys and reservations", params(("id" = String, Path, description = "Tenant id")), responses((status = 204, description = "Deleted"), crate::http::openapi::AdminErrors), security(("adminToken" = [])))]
pub async fn delete_tenant(
    req: HttpRequest,
    _: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    no_query(&req)?;
    let id = tenant_id(&path)?;
    if state.store.delete_tenant(&id).await? {
        state.auth.forget_tenant(&id);
        tracing::info!(tenant = %id, "tenant deleted");
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(not_found_tenant(&id))
    }
}

#[utoipa::path(post, path = "/api/v1/admin/tenants/{id}/keys", tag = "admin", summary = "Create a key (the secret is shown only here)", request_body = crate::http::openapi::KeyCreate, params(("id" = String, Path, description = "Tenant id")), responses((status = 201, description = "Created", body = crate::http::openapi::ApiKeyView), (status = 403, description = "KEY_LIMIT_REACHED", body = crate::http::openapi::ErrorBody), crate::http::openapi::AdminErrors), security(("adminToken" = [])))]
pub async fn create_key(
    req: HttpRequest,
    _: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    no_query(&req)?;
    require_json(&req)?;
    let id = tenant_id(&path)?;
    let obj = parse_object(&body, false)?;
    let mut details = Vec::new();
    let mut f = Fields::new(None, obj, &["label"], &mut details);
    let label = f.string("label", KeyLabel::parse);
    let (Some(label), true) = (label, details.is_empty()) else {
        return Err(invalid_items(details));
    };
    match state.store.create_key(&id, label.as_str()).await? {
        Ok(key) => {
            tracing::info!(tenant = %id, key = %key.info.id, "api key created");
            Ok(HttpResponse::Created().json(KeyView::issued(&key)))
        }
        Err(KeyCreateError::TenantNotFound) => Err(not_found_tenant(&id)),
        Err(KeyCreateError::LimitReached(limit)) => Err(ApiError::Forbidden {
            code: "KEY_LIMIT_REACHED",
            message: format!(
                "this tenant's tier allows {limit} API key(s); delete one or move to a higher tier"
            ),
        }),
    }
}

#[utoipa::path(get, path = "/api/v1/admin/tenants/{id}/keys", tag = "admin", summary = "List the keys of a tenant (never secrets)", params(("id" = String, Path, description = "Tenant id")), responses((status = 200, description = "Keys", body = crate::http::openapi::KeyList), crate::http::openapi::AdminErrors), security(("adminToken" = [])))]
pub async fn list_keys(
    req: HttpRequest,
    _: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    no_query(&req)?;
    let id = tenant_id(&path)?;
    let keys = state
        .store
        .list_keys(&id)
        .await?
        .ok_or_else(|| not_found_tenant(&id))?;
    Ok(HttpResponse::Ok().json(json!({
        "keys": keys.iter().map(KeyView::info).collect::<Vec<_>>(),
    })))
}

fn key_path(path: &(String, String)) -> Result<(TenantId, KeyId), ApiError> {
    let tenant = tenant_id(&path.0)?;
    let key = KeyId::parse(&path.1)
        .map_err(|_| ApiError::NotFound(format!("no API key {:?}", path.1)))?;
    Ok((tenant, key))
}

#[utoipa::path(post, path = "/api/v1/admin/tenants/{id}/keys/{key}/rotate", tag = "admin", summary = "Give a key a new secret (the old one is refused fleet-wide within 1 s)", params(("id" = String, Path, description = "Tenant id"), ("key" = String, Path, description = "Key id")), responses((status = 200, description = "The new secret", body = crate::http::openapi::ApiKeyView), crate::http::openapi::AdminErrors), security(("adminToken" = [])))]
pub async fn rotate_key(
    req: HttpRequest,
    _: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    no_query(&req)?;
    let (tenant, key) = key_path(&path)?;
    let issued = state
        .store
        .rotate_key(&tenant, &key)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no API key {key} in tenant {tenant}")))?;
    state.auth.forget_tenant(&tenant);
    tracing::info!(%tenant, %key, "api key rotated");
    Ok(HttpResponse::Ok().json(KeyView::issued(&issued)))
}

#[utoipa::path(delete, path = "/api/v1/admin/tenants/{id}/keys/{key}", tag = "admin", summary = "Revoke a key", params(("id" = String, Path, description = "Tenant id"), ("key" = String, Path, description = "Key id")), responses((status = 204, description = "Revoked"), crate::http::openapi::AdminErrors), security(("adminToken" = [])))]
pub async fn delete_key(
    req: HttpRequest,
    _: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    no_query(&req)?;
    let (tenant, key) = key_path(&path)?;
    if state.store.delete_key(&tenant, &key).await? {
        state.auth.forget_tenant(&tenant);
        tracing::info!(%tenant, %key, "api key revoked");
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!(
            "no API key {key} in tenant {tenant}"
        )))
    }
}

#[utoipa::path(delete, path = "/api/v1/admin/tenants/{id}/reservations/{resource}", tag = "admin", summary = "Force-release a reservation (event FORCE_RELEASED)", params(("id" = String, Path, description = "Tenant id"), ("resource" = String, Path, description = "Percent-decoded resource name")), responses((status = 204, description = "Released"), crate::http::openapi::AdminErrors), security(("adminToken" = [])))]
/// `DELETE /api/v1/admin/tenants/{id}/reservations/{resource}`: the resource is
/// the rest of the raw path, percent-decoded, so `a%2Fb` names `a/b`.
pub async fn force_release(
    req: HttpRequest,
    _: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    no_query(&req)?;
    let id = tenant_id(&path.0)?;
    let name = super::decoded_tail(&req, "/reservations/", "resource")?;
    let resource = Resource::parse(name).map_err(|e| ApiError::invalid_field("resource", e.0))?;
    if state.store.get_tenant(&id).await?.is_none() {
        return Err(not_found_tenant(&id));
    }
    if state.store.force_release(&id, &resource).await? {
        crate::metrics::outcome("force_release", "FORCE_RELEASED", 1);
        tracing::info!(tenant = %id, "reservation force-released");
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!(
            "{:?} is not held in tenant {id}",
            resource.as_str()
        )))
    }
}

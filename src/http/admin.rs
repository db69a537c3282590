//! The admin API (contract section 6): tenants and their API keys, and force
//! release. Only the admin token opens it. Changes to tenants and keys go
//! through [`crate::accounts`], which keeps the credential cache honest.

use super::body::{invalid_items, parse_object, require_json, Fields, Object};
use super::error::ApiError;
use super::extract::AdminCaller;
use super::query::Query;
use super::wire::Detail;
use super::wire::{
    AdminErrors, ErrorBody, KeyCreate, KeyList, KeyView, TenantCreate, TenantCreated, TenantList,
    TenantListParams, TenantPatch, TenantView, DEFAULT_TENANT_LIMIT, MAX_TENANT_LIMIT,
};
use crate::domain::policy::PolicyPatch;
use crate::domain::{KeyId, KeyLabel, KeyScope, Resource, TenantId, TenantName, Tier};
use crate::state::AppState;
use crate::store::KeyCreateError;
use actix_web::{web, HttpRequest, HttpResponse};

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

#[utoipa::path(post, path = "/api/v1/admin/tenants", tag = "admin", summary = "Create a tenant and its default key (the secret is shown only here)", request_body = TenantCreate, responses((status = 201, description = "Created", body = TenantCreated<'static>), AdminErrors), security(("adminToken" = [])))]
#[tracing::instrument(skip_all)]
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
    let request = TenantCreate { name, tier };
    let (tenant, key) = state
        .accounts
        .create_tenant(&request.name, request.tier.unwrap_or(Tier::Free))
        .await?;
    tracing::info!(tenant = %tenant.id, tier = %tenant.tier, "tenant created");
    Ok(HttpResponse::Created().json(TenantCreated {
        tenant: TenantView::from(&tenant),
        api_key: KeyView::issued(&key),
    }))
}

#[utoipa::path(get, path = "/api/v1/admin/tenants", tag = "admin", summary = "List tenants (creation order)", params(TenantListParams), responses((status = 200, description = "A page", body = TenantList<'static>), AdminErrors), security(("adminToken" = [])))]
#[tracing::instrument(skip_all)]
pub async fn list_tenants(
    req: HttpRequest,
    _: AdminCaller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut q = Query::parse(req.query_string(), &["limit", "cursor"])?;
    let params = TenantListParams {
        limit: q.integer("limit", 1, MAX_TENANT_LIMIT)?,
        cursor: match q.take("cursor") {
            Some(c) => Some(TenantId::parse(&c).map_err(|_| {
                ApiError::invalid_field("cursor", "is not a cursor this service issued")
            })?),
            None => None,
        },
    };
    let limit = params.limit.unwrap_or(DEFAULT_TENANT_LIMIT) as usize;
    let (tenants, next) = state
        .store
        .list_tenants(params.cursor.as_ref(), limit)
        .await?;
    Ok(HttpResponse::Ok().json(TenantList {
        tenants: tenants.iter().map(TenantView::from).collect(),
        next_cursor: next.map(|n| n.to_string()),
    }))
}

#[utoipa::path(get, path = "/api/v1/admin/tenants/{id}", tag = "admin", summary = "Show a tenant", params(("id" = String, Path, format = "uuid", description = "Tenant id")), responses((status = 200, description = "The tenant", body = TenantView<'static>), AdminErrors), security(("adminToken" = [])))]
#[tracing::instrument(skip_all, fields(tenant = %path.as_str()))]
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

#[utoipa::path(patch, path = "/api/v1/admin/tenants/{id}", tag = "admin", summary = "Change the name, tier, JWT settings or lease policy of a tenant", request_body = TenantPatch, params(("id" = String, Path, format = "uuid", description = "Tenant id")), responses((status = 200, description = "The tenant", body = TenantView<'static>), AdminErrors), security(("adminToken" = [])))]
#[tracing::instrument(skip_all, fields(tenant = %path.as_str()))]
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
    let mut f = Fields::new(None, obj, &["name", "tier", "jwt", "policy"], &mut details);
    let name = f.opt_string("name", TenantName::parse);
    let tier = f.opt_string("tier", |t| Tier::parse(&t));
    let has_policy = f.has("policy");
    let jwt = if f.has("jwt") {
        jwt_settings(&body, &mut details).map(Some)
    } else {
        Some(None)
    };
    let policy = if has_policy {
        policy_patch(&body, &mut details).map(Some)
    } else {
        Some(None)
    };
    let (Some(name), Some(tier), Some(jwt), Some(policy), true) =
        (name, tier, jwt, policy, details.is_empty())
    else {
        return Err(invalid_items(details));
    };
    let request = TenantPatch {
        name,
        tier,
        jwt,
        policy,
    };
    let patch = crate::store::TenantPatch {
        name: request.name,
        tier: request.tier,
        jwt: request.jwt,
        policy: request.policy.unwrap_or_default(),
    };
    let tenant = state
        .accounts
        .update_tenant(&id, &patch)
        .await?
        .ok_or_else(|| not_found_tenant(&id))?;
    tracing::info!(tenant = %tenant.id, tier = %tenant.tier, "tenant updated");
    Ok(HttpResponse::Ok().json(TenantView::from(&tenant)))
}

/// The `jwt` field of a tenant PATCH: settings, or `None` (null) to remove
/// them. Read again from the body so that repeated fields inside it are seen.
fn jwt_settings(
    body: &[u8],
    details: &mut Vec<Detail>,
) -> Option<Option<crate::tokens::JwtSettings>> {
    use crate::domain::jwt::{JwtSettings, FIELDS};
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

/// The `policy` field of a tenant PATCH (contract section 17): the fields to
/// change, or every field back to its default for null. Read again from the
/// body so that repeated fields inside it are seen.
fn policy_patch(body: &[u8], details: &mut Vec<Detail>) -> Option<PolicyPatch> {
    use crate::domain::policy::FIELDS;
    #[derive(serde::Deserialize)]
    struct Part {
        #[serde(default)]
        policy: Option<Object>,
    }
    let Ok(part) = serde_json::from_slice::<Part>(body) else {
        details.push(Detail::field(
            None,
            "policy",
            format!(
                "must be an object with some of {} or null",
                FIELDS.join(", ")
            ),
        ));
        return None;
    };
    // Present (the caller checked), so absent here means null.
    let Some(obj) = part.policy else {
        return Some(PolicyPatch::reset());
    };
    let before = details.len();
    let mut seen: Vec<&str> = Vec::new();
    for (k, _) in &obj.0 {
        if seen.contains(&k.as_str()) {
            details.push(Detail::field(
                None,
                &format!("policy.{k}"),
                "appears more than once",
            ));
        } else {
            seen.push(k);
        }
    }
    if details.len() > before {
        return None;
    }
    match PolicyPatch::parse(obj.0) {
        Ok(p) => Some(p),
        Err(problems) => {
            for (field, problem) in problems {
                details.push(Detail::field(None, &format!("policy.{field}"), problem));
            }
            None
        }
    }
}

#[utoipa::path(delete, path = "/api/v1/admin/tenants/{id}", tag = "admin", summary = "Delete a tenant, its keys and reservations", params(("id" = String, Path, format = "uuid", description = "Tenant id")), responses((status = 204, description = "Deleted"), AdminErrors), security(("adminToken" = [])))]
#[tracing::instrument(skip_all, fields(tenant = %path.as_str()))]
pub async fn delete_tenant(
    req: HttpRequest,
    _: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    no_query(&req)?;
    let id = tenant_id(&path)?;
    if state.accounts.delete_tenant(&id).await? {
        tracing::info!(tenant = %id, "tenant deleted");
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(not_found_tenant(&id))
    }
}

#[utoipa::path(post, path = "/api/v1/admin/tenants/{id}/keys", tag = "admin", summary = "Create a key (the secret is shown only here)", request_body = KeyCreate, params(("id" = String, Path, format = "uuid", description = "Tenant id")), responses((status = 201, description = "Created", body = KeyView<'static>), (status = 403, description = "KEY_LIMIT_REACHED", body = ErrorBody<'static>), AdminErrors), security(("adminToken" = [])))]
#[tracing::instrument(skip_all, fields(tenant = %path.as_str()))]
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
    let mut f = Fields::new(None, obj, &["label", "scope"], &mut details);
    let label = f.string("label", KeyLabel::parse);
    // Absent means write; present, it must be one of the two names (a null
    // is refused, not read as the default: it is not a scope).
    let scope = match f.raw("scope") {
        None => Some(None),
        Some(serde_json::Value::String(s)) => match KeyScope::parse(&s) {
            Ok(scope) => Some(Some(scope)),
            Err(e) => {
                f.problem("scope", e.0);
                None
            }
        },
        Some(_) => {
            f.problem(
                "scope",
                "must be \"read\" or \"write\" (a string; leave it out for write)",
            );
            None
        }
    };
    let (Some(label), Some(scope), true) = (label, scope, details.is_empty()) else {
        return Err(invalid_items(details));
    };
    let request = KeyCreate { label, scope };
    match state
        .accounts
        .create_key(
            &id,
            request.label.as_str(),
            request.scope.unwrap_or_default(),
        )
        .await?
    {
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

#[utoipa::path(get, path = "/api/v1/admin/tenants/{id}/keys", tag = "admin", summary = "List the keys of a tenant (never secrets)", params(("id" = String, Path, format = "uuid", description = "Tenant id")), responses((status = 200, description = "Keys", body = KeyList<'static>), AdminErrors), security(("adminToken" = [])))]
#[tracing::instrument(skip_all, fields(tenant = %path.as_str()))]
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
    Ok(HttpResponse::Ok().json(KeyList {
        keys: keys.iter().map(KeyView::info).collect(),
    }))
}

fn key_path(path: &(String, String)) -> Result<(TenantId, KeyId), ApiError> {
    let tenant = tenant_id(&path.0)?;
    let key = KeyId::parse(&path.1)
        .map_err(|_| ApiError::NotFound(format!("no API key {:?}", path.1)))?;
    Ok((tenant, key))
}

#[utoipa::path(post, path = "/api/v1/admin/tenants/{id}/keys/{keyId}/rotate", tag = "admin", summary = "Give a key a new secret (the old one is refused fleet-wide within 1 s)", params(("id" = String, Path, format = "uuid", description = "Tenant id"), ("keyId" = String, Path, pattern = "^key_[0-9a-fA-F]{16}$", description = "Key id")), responses((status = 200, description = "The new secret", body = KeyView<'static>), AdminErrors), security(("adminToken" = [])))]
#[tracing::instrument(skip_all, fields(tenant = %path.0))]
pub async fn rotate_key(
    req: HttpRequest,
    _: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    no_query(&req)?;
    let (tenant, key) = key_path(&path)?;
    let issued = state
        .accounts
        .rotate_key(&tenant, &key)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no API key {key} in tenant {tenant}")))?;
    tracing::info!(%tenant, %key, "api key rotated");
    Ok(HttpResponse::Ok().json(KeyView::issued(&issued)))
}

#[utoipa::path(delete, path = "/api/v1/admin/tenants/{id}/keys/{keyId}", tag = "admin", summary = "Revoke a key", params(("id" = String, Path, format = "uuid", description = "Tenant id"), ("keyId" = String, Path, pattern = "^key_[0-9a-fA-F]{16}$", description = "Key id")), responses((status = 204, description = "Revoked"), AdminErrors), security(("adminToken" = [])))]
#[tracing::instrument(skip_all, fields(tenant = %path.0))]
pub async fn delete_key(
    req: HttpRequest,
    _: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    no_query(&req)?;
    let (tenant, key) = key_path(&path)?;
    if state.accounts.revoke_key(&tenant, &key).await? {
        tracing::info!(%tenant, %key, "api key revoked");
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!(
            "no API key {key} in tenant {tenant}"
        )))
    }
}

#[utoipa::path(delete, path = "/api/v1/admin/tenants/{id}/reservations/{resource}", tag = "admin", summary = "Force-release a reservation (event FORCE_RELEASED)", params(("id" = String, Path, format = "uuid", description = "Tenant id"), ("resource" = String, Path, min_length = 1, max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F]+$", description = "A resource name, percent-decoded: 1–256 UTF-8 bytes, no control characters")), responses((status = 204, description = "Released"), AdminErrors), security(("adminToken" = [])))]
/// `DELETE /api/v1/admin/tenants/{id}/reservations/{resource}`: the resource is
/// the rest of the raw path, percent-decoded, so `a%2Fb` names `a/b`.
#[tracing::instrument(skip_all, fields(tenant = %path.0))]
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

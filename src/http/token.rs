//! `POST /api/v1/auth/token` (contract section 2): exchanges a tenant's own JWT
//! for a short-lived token accepted in `X-Api-Key` (see `crate::tokens`).

use super::body::{invalid_items, parse_object, require_json, Fields};
use super::client_addr::{charge_address, AddressLimit};
use super::error::ApiError;
use super::extract::{quota, tier_required_for_tokens};
use super::query::Query;
use super::rate_headers::add_headers;
use super::wire::{TokenErrors, TokenRequest, TokenResponse};
use crate::domain::{format_millis, Tenant, TenantId, Tier};
use crate::state::AppState;
use crate::store::Access;
use crate::tokens::service::now_secs;
use crate::tokens::verify::{unverified_issuer, MAX_JWT_BYTES};
use actix_web::{web, HttpRequest, HttpResponse};

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::Unauthorized(message.into())
}

/// The tenant whose settings verify the JWT: the one named, or the one whose
/// issuer the JWT names.
async fn tenant_for(
    state: &AppState,
    named: Option<TenantId>,
    jwt: &str,
) -> Result<Tenant, ApiError> {
    if let Some(id) = named {
        return state
            .store
            .get_tenant(&id)
            .await?
            .filter(|t| t.jwt.is_some())
            .ok_or_else(|| {
                unauthorized(format!(
                    "tenant {id} does not exist or does not accept JWTs"
                ))
            });
    }
    let issuer = unverified_issuer(jwt).ok_or_else(|| {
        unauthorized("the JWT has no readable iss claim; send the tenant id in \"tenant\"")
    })?;
    let mut found = state.store.tenants_by_issuer(&issuer).await?;
    match found.len() {
        0 => Err(unauthorized(format!(
            "no tenant trusts the issuer {issuer:?}; configure it (admin PATCH jwt) or name the tenant"
        ))),
        1 => Ok(found.remove(0)),
        _ => Err(ApiError::invalid_field(
            "tenant",
            format!("is required: several tenants trust the issuer {issuer:?}"),
        )),
    }
}

#[utoipa::path(post, path = "/api/v1/auth/token", tag = "auth", summary = "Exchange a JWT of the tenant for a short-lived token (starter and above)", request_body = TokenRequest, responses((status = 200, description = "A token for X-Api-Key", body = TokenResponse<'static>), TokenErrors))]
#[tracing::instrument(skip_all, fields(tenant = tracing::field::Empty))]
pub async fn exchange(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    Query::parse(req.query_string(), &[])?;
    require_json(&req)?;
    // Valid or not, every exchange counts against the caller's address, since
    // verifying costs more than refusing.
    charge_address(&req, &state, AddressLimit::TokenExchange).await?;

    let obj = parse_object(&body, false)?;
    let mut details = Vec::new();
    let mut f = Fields::new(None, obj, &["jwt", "tenant"], &mut details);
    let jwt = f.string("jwt", |s: String| {
        if s.is_empty() || s.len() > MAX_JWT_BYTES {
            Err(format!("must be a JWT of 1 to {MAX_JWT_BYTES} bytes"))
        } else {
            Ok(s)
        }
    });
    let named = f.opt_string("tenant", |t: String| {
        TenantId::parse(&t).map_err(|_| "is not a tenant id")
    });
    let (Some(jwt), Some(tenant), true) = (jwt, named, details.is_empty()) else {
        return Err(invalid_items(details));
    };
    let request = TokenRequest { jwt, tenant };
    let jwt = request.jwt;

    let tenant = tenant_for(&state, request.tenant, &jwt).await?;
    tracing::Span::current().record("tenant", tracing::field::display(&tenant.id));
    let Some(settings) = &tenant.jwt else {
        return Err(unauthorized("this tenant does not accept JWTs"));
    };
    let verified = state.verifier.verify(settings, &jwt).await.map_err(|r| {
        crate::metrics::jwt_exchange("rejected");
        unauthorized(r.0)
    })?;
    if tenant.tier == Tier::Free {
        crate::metrics::jwt_exchange("tier_required");
        return Err(tier_required_for_tokens());
    }
    let now = now_secs();
    if verified.expires_at <= now {
        return Err(unauthorized("the JWT has expired (exp)"));
    }
    // An exchange is one write request of the tenant.
    let rate = state
        .store
        .charge(&tenant.id, &quota(&state.rates, tenant.tier, Access::Write))
        .await?;
    // Never outlives the JWT it was exchanged for.
    let expires_at = (now + state.token_ttl.as_secs()).min(verified.expires_at);
    let token = state
        .auth
        .token_keys()
        .await?
        .issue(
            &tenant.id,
            &verified.subject,
            &settings.fingerprint(),
            expires_at,
        )
        .map_err(|e| ApiError::Internal(format!("signing a token: {e}")))?;
    crate::metrics::jwt_exchange("issued");
    tracing::info!(tenant = %tenant.id, subject = %verified.subject, "JWT exchanged");
    let mut res = HttpResponse::Ok();
    add_headers(&mut res, Some(&rate));
    Ok(res.json(TokenResponse {
        token,
        expires_at: format_millis(expires_at * 1000),
        tenant: tenant.id.as_str(),
        subject: verified.subject,
    }))
}

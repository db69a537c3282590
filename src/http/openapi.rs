//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of the whole public
//! API, generated from the handlers' `#[utoipa::path]` attributes and the wire
//! shapes below. A test checks that every route [`super::served`] lists is in it
//! and nothing else is, and the test command validates it
//! (`scripts/validate-deploy.sh`, openapi-spec-validator).
//!
//! The shapes here describe the JSON on the wire; the handlers parse requests
//! strictly by hand (to report every problem with its index and field), so
//! request bodies have documentation types of their own.

#![allow(dead_code)] // documentation-only types: never built, only described

use actix_web::HttpResponse;
use serde::Serialize;
use std::sync::LazyLock;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// `{"error":{...}}`: every error, including the framework's own.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorInfo,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    /// e.g. INVALID_REQUEST, UNAUTHORIZED, FORBIDDEN, TIER_REQUIRED,
    /// KEY_LIMIT_REACHED, NOT_FOUND, METHOD_NOT_ALLOWED, LOCKED,
    /// PAYLOAD_TOO_LARGE, URI_TOO_LONG, UNSUPPORTED_MEDIA_TYPE, RATE_LIMITED,
    /// HEADERS_TOO_LARGE, STORE_UNAVAILABLE.
    code: String,
    message: String,
    details: Vec<ErrorDetail>,
    /// Only on 429.
    retry_after_seconds: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    index: Option<usize>,
    field: Option<String>,
    problem: String,
}

/// One item of a reserve batch.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReserveItem {
    /// 1–256 UTF-8 bytes, no control characters.
    requester: String,
    /// 1–256 UTF-8 bytes, no control characters.
    resource: String,
    /// 1–31,536,000; absent or null: no expiry.
    #[schema(minimum = 1, maximum = 31_536_000)]
    ttl_seconds: Option<u64>,
}

/// One item of an unreserve batch.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseItem {
    requester: String,
    resource: String,
    release_token: String,
}

/// One item of an extend batch.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtendItem {
    requester: String,
    resource: String,
    release_token: String,
    #[schema(minimum = 1, maximum = 31_536_000)]
    ttl_seconds: u64,
}

/// One item of a check batch.
#[derive(Serialize, ToSchema)]
pub struct CheckItem {
    resource: String,
}

/// The outcome of one batch item, in request order.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemResult {
    resource: String,
    requester: Option<String>,
    /// RESERVED, ALREADY_HELD, UNRESERVED, EXTENDED, NOT_HELD, INVALID_TOKEN,
    /// HELD or FREE.
    status: String,
    release_token: Option<String>,
    held_by: Option<String>,
    reserved_at: Option<String>,
    expires_at: Option<String>,
    fencing_token: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct Results {
    results: Vec<ItemResult>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    resource: String,
    requester: String,
    reserved_at: String,
    expires_at: Option<String>,
    fencing_token: u64,
    api_key_label: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservationPage {
    reservations: Vec<Reservation>,
    next_cursor: Option<String>,
}

/// The `data` of one Server-Sent Event (its `id:` is `id`, its `event:` is `type`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    id: String,
    /// RESERVED, UNRESERVED, EXTENDED, EXPIRED or FORCE_RELEASED.
    r#type: String,
    resource: String,
    requester: String,
    api_key_label: String,
    at: String,
    expires_at: Option<String>,
    fencing_token: u64,
}

#[derive(Serialize, ToSchema)]
pub struct TokenRequest {
    /// The tenant's own JWT (at most 8 KiB).
    jwt: String,
    /// Optional: otherwise the JWT's `iss` selects the tenant.
    tenant: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    token: String,
    expires_at: String,
    tenant: String,
    subject: String,
}

/// Optional locklock body.
#[derive(Serialize, ToSchema)]
pub struct LockOptions {
    /// 1–1024 bytes; needed again to release the lock.
    secret: Option<String>,
    /// Seconds (default 2,592,000).
    expires_in: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockAcquired {
    lock: String,
    acquired: bool,
    expires_at: String,
    fencing_token: u64,
}

#[derive(Serialize, ToSchema)]
pub struct LockReleased {
    released: bool,
}

/// A tenant's JWT settings as set: exactly one of `hs256Secret`,
/// `publicKeyPem`, `jwksUrl`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtSettings {
    issuer: String,
    audience: String,
    /// HS256, RS256, ES256; by default what the key allows.
    algorithms: Option<Vec<String>>,
    /// Write-only: shown back as "(set; never shown)".
    hs256_secret: Option<String>,
    public_key_pem: Option<String>,
    jwks_url: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    id: String,
    name: String,
    /// free, starter, pro or enterprise.
    tier: String,
    created_at: String,
    jwt: Option<JwtSettings>,
}

#[derive(Serialize, ToSchema)]
pub struct TenantCreate {
    name: String,
    /// Default free.
    tier: Option<String>,
}

/// Fields left out stay as they are; `"jwt": null` removes the JWT settings.
#[derive(Serialize, ToSchema)]
pub struct TenantPatch {
    name: Option<String>,
    tier: Option<String>,
    jwt: Option<JwtSettings>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantList {
    tenants: Vec<Tenant>,
    next_cursor: Option<String>,
}

/// An API key; `key` (the secret) only when it is created or rotated.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    id: String,
    label: String,
    key: Option<String>,
    created_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantCreated {
    tenant: Tenant,
    api_key: ApiKeyView,
}

#[derive(Serialize, ToSchema)]
pub struct KeyCreate {
    label: String,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    keys: Vec<ApiKeyView>,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    status: String,
}

/// The errors every tenant endpoint may answer (in the document once, used by
/// every path).
#[derive(utoipa::IntoResponses)]
pub enum TenantErrors {
    /// Malformed request; details name index and field
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// Missing, unknown, revoked or expired credential
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Not allowed (FORBIDDEN, TIER_REQUIRED)
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Body over 1 MiB
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Not JSON
    #[response(status = 415)]
    NotJson(ErrorBody),
    /// Rate limited (Retry-After, RateLimit-*)
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// Store unavailable (Retry-After)
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The errors every admin endpoint may answer.
#[derive(utoipa::IntoResponses)]
pub enum AdminErrors {
    /// Malformed request
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// Missing or wrong admin token
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// No such tenant, key or reservation
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// Store unavailable
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Api-Key",
                "An API key, or a token from POST /api/v1/auth/token (also accepted as Authorization: Bearer).",
            ))),
        );
        components.add_security_scheme(
            "adminToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The server's admin token (COOPLOCKER_ADMIN_TOKEN)."))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cooplocker",
        description = "Multi-tenant distributed locks and resource reservations: the Coop Locker API, live events, JWT exchange, the locklock-compatible API and the admin API. Every error is {\"error\":{\"code\",\"message\",\"details\"}}.",
        license(name = "MIT")
    ),
    modifiers(&Security),
    paths(
        super::health::healthz,
        super::health::healthz_head,
        super::health::readyz,
        super::health::readyz_head,
        super::health::metrics,
        document,
        super::reservations::reserve,
        super::reservations::unreserve,
        super::reservations::extend,
        super::reservations::check,
        super::reservations::list,
        super::reservations::list_head,
        super::reservations::list_active,
        super::reservations::list_active_head,
        super::events::stream,
        super::token::exchange,
        super::locklock::acquire_uuid,
        super::locklock::release_uuid,
        super::locklock::acquire_key,
        super::locklock::release_key,
        super::admin::list_tenants,
        super::admin::create_tenant,
        super::admin::get_tenant,
        super::admin::update_tenant,
        super::admin::delete_tenant,
        super::admin::list_keys,
        super::admin::create_key,
        super::admin::delete_key,
        super::admin::rotate_key,
        super::admin::force_release,
    ),
    tags(
        (name = "reservations", description = "The Coop Locker API"),
        (name = "events", description = "Live lock events (Server-Sent Events)"),
        (name = "auth", description = "JWT exchange"),
        (name = "locklock", description = "The locklock-compatible API"),
        (name = "admin", description = "Tenants, keys and force release (admin token)"),
        (name = "operations", description = "Probes, metrics and this document"),
    )
)]
pub struct ApiDoc;

static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| ApiDoc::openapi().to_json().unwrap_or_default());

/// The document as JSON.
pub fn json() -> &'static str {
    &DOCUMENT
}

/// The OpenAPI document of this API.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(json())
}

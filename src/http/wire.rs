//! The JSON of the public API, each shape written once: the handlers build the
//! response types below and the strict parsers (`body.rs`, `query.rs`) produce
//! the request types, and the OpenAPI document (`openapi.rs`) describes these
//! same types, so what is documented is what is sent and read. Requests are
//! still read field by field rather than by serde, so that every problem is
//! reported with its item index and field; the schemas state the limits that
//! reading enforces (names of 1–256 UTF-8 bytes without control characters,
//! TTLs of 1–31,536,000 s, batch sizes), so generated clients get typed values.
//!
//! The domain types that requests parse into get their schemas here too
//! ([`Resource`], [`Requester`], [`Tier`] ...): the rules live in `domain`, their
//! description on the wire lives next to the shapes that carry them.

use crate::domain::{
    format_millis, ApiKeyInfo, Holding, IssuedKey, KeyLabel, ReleaseToken, Requester, Resource,
    Tenant, TenantId, TenantName, Tier, Ttl, MAX_NAME_BYTES, MAX_TTL_SECONDS,
};
use crate::events::EventKind;
use crate::tokens::JwtSettings;
use serde::Serialize;
use std::borrow::Cow;
use utoipa::openapi::schema::AdditionalProperties;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{IntoParams, IntoResponses, Modify, PartialSchema, ToSchema};

/// Default and largest page of `GET /api/v1/Reservation`.
pub const DEFAULT_LIST_LIMIT: u64 = 1000;
pub const MAX_LIST_LIMIT: u64 = 10_000;
/// Default and largest page of `GET /api/v1/admin/tenants`.
pub const DEFAULT_TENANT_LIMIT: u64 = 100;
pub const MAX_TENANT_LIMIT: u64 = 1000;
/// Most items of one batch by default (`COOPLOCKER_MAX_BATCH`).
pub const DEFAULT_MAX_BATCH: usize = 1000;

/// Section 1 strings: no C0 control character and no DEL (JSON Schema counts
/// characters, so the 256-byte limit is also stated in each description).
const NAME_PATTERN: &str = "^[^\\u0000-\\u001F\\u007F]+$";

fn name_schema(description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_BYTES))
        .pattern(Some(NAME_PATTERN))
        .description(Some(description))
        .into()
}

macro_rules! schema_of {
    ($ty:ty, $name:literal, $schema:expr) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }
        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

schema_of!(
    Resource,
    "Resource",
    name_schema("A resource name (or prefix): 1–256 UTF-8 bytes, no control characters.")
);
schema_of!(
    Requester,
    "Requester",
    name_schema("Who holds or asks: 1–256 UTF-8 bytes, no control characters.")
);
schema_of!(
    KeyLabel,
    "KeyLabel",
    name_schema("An API key's label: 1–256 UTF-8 bytes, no control characters.")
);
schema_of!(
    TenantName,
    "TenantName",
    name_schema("A tenant's name: 1–256 UTF-8 bytes, no control characters.")
);
schema_of!(
    ReleaseToken,
    "ReleaseTokenIn",
    name_schema(
        "The releaseToken a reserve answered (a UUID); any 1–256-byte string is accepted, \
         a wrong one is INVALID_TOKEN."
    )
);
schema_of!(
    TenantId,
    "TenantId",
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom("uuid".into())))
        .description(Some("A tenant id (a UUID)."))
        .into()
);
schema_of!(
    Ttl,
    "TtlSeconds",
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(MAX_TTL_SECONDS))
        .description(Some("Seconds, 1 to 31,536,000 (one year)."))
        .into()
);
schema_of!(
    Tier,
    "Tier",
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["free", "starter", "pro", "enterprise"]))
        .description(Some("A tenant's tier."))
        .into()
);

/// The request objects: read strictly, so a field they do not name is a 400.
/// [`StrictRequests`] says so in the document (`additionalProperties: false`).
fn request_objects() -> [Cow<'static, str>; 11] {
    [
        ReserveItem::name(),
        ReleaseItem::name(),
        ExtendItem::name(),
        CheckItem::name(),
        TokenRequest::name(),
        LockOptions::name(),
        LockSecret::name(),
        TenantCreate::name(),
        TenantPatch::name(),
        KeyCreate::name(),
        JwtSettings::name(),
    ]
}

/// Marks every request object closed (`additionalProperties: false`): the
/// parsers refuse unknown fields. (utoipa derives that only from serde's
/// `deny_unknown_fields`, and these types are not read by serde.)
pub struct StrictRequests;

impl Modify for StrictRequests {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let Some(components) = doc.components.as_mut() else {
            return;
        };
        for name in request_objects() {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(&*name) {
                object.additional_properties =
                    Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
        }
    }
}

// ---------------------------------------------------------------- errors

/// `{"error":{...}}`: every error, including the framework's own.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    pub error: ErrorInfo<'a>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo<'a> {
    /// e.g. INVALID_REQUEST, UNAUTHORIZED, FORBIDDEN, TIER_REQUIRED,
    /// KEY_LIMIT_REACHED, NOT_FOUND, METHOD_NOT_ALLOWED, LOCKED,
    /// PAYLOAD_TOO_LARGE, URI_TOO_LONG, UNSUPPORTED_MEDIA_TYPE, RATE_LIMITED,
    /// HEADERS_TOO_LARGE, REQUEST_TIMEOUT, STORE_UNAVAILABLE, SHUTTING_DOWN.
    pub code: &'a str,
    pub message: &'a str,
    pub details: &'a [Detail],
    /// Only on 429.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1)]
    pub retry_after_seconds: Option<u64>,
}

/// One entry of `details`: which item and field a problem is about.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct Detail {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<String>,
    pub problem: String,
}

impl Detail {
    pub fn field(index: Option<usize>, field: &str, problem: impl Into<String>) -> Self {
        Self {
            index,
            field: Some(field.to_string()),
            problem: problem.into(),
        }
    }
}

/// The errors every tenant endpoint may answer (in the document once, used by
/// every path).
#[derive(IntoResponses)]
pub enum TenantErrors {
    /// Malformed request; details name index and field
    #[response(status = 400)]
    BadRequest(ErrorBody<'static>),
    /// Missing, unknown, revoked or expired credential
    #[response(status = 401)]
    Unauthorized(ErrorBody<'static>),
    /// Not allowed (FORBIDDEN, TIER_REQUIRED)
    #[response(status = 403)]
    Forbidden(ErrorBody<'static>),
    /// Body over 1 MiB
    #[response(status = 413)]
    TooLarge(ErrorBody<'static>),
    /// Not JSON
    #[response(status = 415)]
    NotJson(ErrorBody<'static>),
    /// Rate limited (Retry-After, RateLimit-*)
    #[response(status = 429)]
    RateLimited(ErrorBody<'static>),
    /// Store unavailable (Retry-After)
    #[response(status = 503)]
    Unavailable(ErrorBody<'static>),
}

/// The errors every admin endpoint may answer.
#[derive(IntoResponses)]
pub enum AdminErrors {
    /// Malformed request
    #[response(status = 400)]
    BadRequest(ErrorBody<'static>),
    /// Missing or wrong admin token
    #[response(status = 401)]
    Unauthorized(ErrorBody<'static>),
    /// No such tenant, key or reservation
    #[response(status = 404)]
    NotFound(ErrorBody<'static>),
    /// Store unavailable
    #[response(status = 503)]
    Unavailable(ErrorBody<'static>),
}

/// The errors of the locklock endpoints (both acquire and release).
#[derive(IntoResponses)]
pub enum LockErrors {
    /// Bad name or body
    #[response(status = 400)]
    BadRequest(ErrorBody<'static>),
    /// Bad key, or public locks disabled
    #[response(status = 401)]
    Unauthorized(ErrorBody<'static>),
    /// Wrong secret, TIER_REQUIRED, an exchanged token, or a lock held through the Reservation API
    #[response(status = 403)]
    Forbidden(ErrorBody<'static>),
    /// Rate limited, or the public lock pool (or this address's share) is full
    #[response(status = 429)]
    RateLimited(ErrorBody<'static>),
    /// Store unavailable
    #[response(status = 503)]
    Unavailable(ErrorBody<'static>),
}

/// The errors of the JWT exchange.
#[derive(IntoResponses)]
pub enum TokenErrors {
    /// Malformed body, or several tenants trust the issuer
    #[response(status = 400)]
    BadRequest(ErrorBody<'static>),
    /// Bad, expired or unverifiable JWT
    #[response(status = 401)]
    Unauthorized(ErrorBody<'static>),
    /// TIER_REQUIRED: free tier
    #[response(status = 403)]
    Forbidden(ErrorBody<'static>),
    /// Not JSON
    #[response(status = 415)]
    NotJson(ErrorBody<'static>),
    /// Too many exchanges from this address
    #[response(status = 429)]
    RateLimited(ErrorBody<'static>),
    /// Store unavailable
    #[response(status = 503)]
    Unavailable(ErrorBody<'static>),
}

// ---------------------------------------------------------------- reservations

/// One item of a reserve batch.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ReserveItem {
    pub requester: Requester,
    pub resource: Resource,
    /// Absent or null: no expiry.
    pub ttl_seconds: Option<Ttl>,
}

/// One item of an unreserve batch.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ReleaseItem {
    pub requester: Requester,
    pub resource: Resource,
    pub release_token: ReleaseToken,
}

/// One item of an extend batch.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ExtendItem {
    pub requester: Requester,
    pub resource: Resource,
    pub release_token: ReleaseToken,
    pub ttl_seconds: Ttl,
}

/// One item of a check batch.
#[derive(ToSchema)]
pub struct CheckItem {
    pub resource: Resource,
}

/// A batch body's schema: an array of 0 to [`DEFAULT_MAX_BATCH`] items (the
/// default of `COOPLOCKER_MAX_BATCH`).
macro_rules! batch {
    ($(#[$doc:meta])* $name:ident, $item:ty) => {
        $(#[$doc])*
        pub struct $name;
        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ArrayBuilder::new()
                    .items(Ref::from_schema_name(<$item as ToSchema>::name()))
                    .max_items(Some(DEFAULT_MAX_BATCH))
                    .description(Some(
                        "0 to 1000 items (COOPLOCKER_MAX_BATCH), applied in order as one atomic step.",
                    ))
                    .into()
            }
        }
        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
            fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                schemas.push((
                    <$item as ToSchema>::name().into_owned(),
                    <$item as PartialSchema>::schema(),
                ));
                <$item as ToSchema>::schemas(schemas);
            }
        }
    };
}

batch!(
    /// The body of `reserve`.
    ReserveBatch,
    ReserveItem
);
batch!(
    /// The body of `unreserve`.
    ReleaseBatch,
    ReleaseItem
);
batch!(
    /// The body of `extend`.
    ExtendBatch,
    ExtendItem
);
batch!(
    /// The body of `check`.
    CheckBatch,
    CheckItem
);

/// The status of one batch item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ItemStatus {
    Reserved,
    AlreadyHeld,
    Unreserved,
    Extended,
    NotHeld,
    InvalidToken,
    Held,
    Free,
}

impl ItemStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "RESERVED",
            Self::AlreadyHeld => "ALREADY_HELD",
            Self::Unreserved => "UNRESERVED",
            Self::Extended => "EXTENDED",
            Self::NotHeld => "NOT_HELD",
            Self::InvalidToken => "INVALID_TOKEN",
            Self::Held => "HELD",
            Self::Free => "FREE",
        }
    }
}

/// The outcome of one batch item, in request order. Fields that do not apply
/// to the status are left out.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemResult<'a> {
    pub resource: &'a str,
    /// Left out only for FREE.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub requester: Option<&'a str>,
    pub status: ItemStatus,
    /// RESERVED only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = "uuid")]
    pub release_token: Option<&'a str>,
    /// ALREADY_HELD only: the holder's requester.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub held_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = DateTime)]
    pub reserved_at: Option<String>,
    /// Null when the reservation has no TTL.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub fencing_token: Option<u64>,
}

impl<'a> ItemResult<'a> {
    pub fn new(resource: &'a str, requester: Option<&'a str>, status: ItemStatus) -> Self {
        Self {
            resource,
            requester,
            status,
            release_token: None,
            held_by: None,
            reserved_at: None,
            expires_at: None,
            fencing_token: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Results<'a> {
    pub results: Vec<ItemResult<'a>>,
}

/// One active reservation (never its releaseToken).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reservation<'a> {
    pub resource: &'a str,
    pub requester: &'a str,
    #[schema(format = DateTime)]
    pub reserved_at: String,
    /// Null when the reservation has no TTL.
    #[schema(format = DateTime, required = true)]
    pub expires_at: Option<String>,
    pub fencing_token: u64,
    pub api_key_label: &'a str,
}

impl<'a> From<&'a Holding> for Reservation<'a> {
    fn from(h: &'a Holding) -> Self {
        Self {
            resource: h.resource.as_str(),
            requester: &h.requester,
            reserved_at: format_millis(h.reserved_at),
            expires_at: h.expires_at.map(format_millis),
            fencing_token: h.fencing_token,
            api_key_label: &h.api_key_label,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservationPage<'a> {
    pub reservations: Vec<Reservation<'a>>,
    /// Null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The query of `GET /api/v1/Reservation` (and `activeReservations`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only resources starting with it
    pub prefix: Option<Resource>,
    /// Only the reservations of this requester
    pub requester: Option<Requester>,
    /// 1 to 10000, default 1000
    #[param(minimum = 1, maximum = 10000, default = 1000)]
    pub limit: Option<u64>,
    /// The nextCursor of the previous page, as issued (the hex of a resource
    /// name: valid UTF-8 of at most 256 bytes without C0 controls or DEL)
    // The pattern: `r1.` and one well-formed UTF-8 sequence (RFC 3629) after
    // another, in lower-case hex, C0 controls and DEL left out; at most 512 hex
    // digits (256 bytes).
    #[param(
        pattern = "^r1\\.(?:[2-6][0-9a-f]|7[0-9a-e]|c[2-9a-f][89ab][0-9a-f]|d[0-9a-f][89ab][0-9a-f]|e0[ab][0-9a-f][89ab][0-9a-f]|e[1-9a-cef][89ab][0-9a-f][89ab][0-9a-f]|ed[89][0-9a-f][89ab][0-9a-f]|f0[9ab][0-9a-f](?:[89ab][0-9a-f]){2}|f[1-3](?:[89ab][0-9a-f]){3}|f48[0-9a-f](?:[89ab][0-9a-f]){2})+$",
        max_length = 515
    )]
    pub cursor: Option<String>,
}

// ---------------------------------------------------------------- events

/// The query of `GET /api/v1/events`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Only these resources (repeatable, up to 100)
    #[param(max_items = 100)]
    pub resource: Option<Vec<Resource>>,
    /// Only resources starting with it
    pub prefix: Option<Resource>,
    /// Only these event types, comma-separated
    #[param(style = Form, explode = false)]
    pub types: Option<Vec<EventKind>>,
}

// ---------------------------------------------------------------- JWT exchange

#[derive(ToSchema)]
pub struct TokenRequest {
    /// The tenant's own JWT (at most 8 KiB).
    #[schema(min_length = 1, max_length = 8192)]
    pub jwt: String,
    /// Optional: otherwise the JWT's `iss` selects the tenant.
    pub tenant: Option<TenantId>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse<'a> {
    /// Send it in X-Api-Key (or Authorization: Bearer).
    pub token: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    #[schema(format = "uuid")]
    pub tenant: &'a str,
    /// The JWT's `sub`.
    pub subject: String,
}

// ---------------------------------------------------------------- locklock

/// The optional body of a locklock acquire.
#[derive(ToSchema)]
pub struct LockOptions {
    /// 1–1024 bytes; needed again to release the lock.
    #[schema(min_length = 1, max_length = 1024)]
    pub secret: Option<String>,
    /// Seconds, 1 to 31,536,000 (default 2,592,000; public locks at most
    /// 2,592,000, clamped to the server's COOPLOCKER_PUBLIC_MAX_EXPIRES_IN).
    #[schema(minimum = 1, maximum = 31_536_000)]
    pub expires_in: Option<u64>,
}

/// The optional body of a locklock release.
#[derive(ToSchema)]
pub struct LockSecret {
    /// The secret the lock was acquired with, if any.
    #[schema(min_length = 1, max_length = 1024)]
    pub secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockAcquired<'a> {
    pub lock: &'a str,
    pub acquired: bool,
    #[schema(format = DateTime)]
    pub expires_at: String,
    pub fencing_token: u64,
}

#[derive(Serialize, ToSchema)]
pub struct LockReleased {
    pub released: bool,
}

// ---------------------------------------------------------------- admin

/// A tenant's JWT settings as the admin API shows them: never the secret.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtView<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    #[schema(value_type = Vec<crate::tokens::JwtAlg>)]
    pub algorithms: Vec<&'static str>,
    /// Shown as "(set; never shown)" when an HS256 secret is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub hs256_secret: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub public_key_pem: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub jwks_url: Option<&'a str>,
}

impl<'a> From<&'a JwtSettings> for JwtView<'a> {
    fn from(j: &'a JwtSettings) -> Self {
        Self {
            issuer: &j.issuer,
            audience: &j.audience,
            algorithms: j.algorithms.iter().map(|a| a.as_str()).collect(),
            hs256_secret: j.hs256_secret.as_ref().map(|_| "(set; never shown)"),
            public_key_pem: j.public_key_pem.as_deref(),
            jwks_url: j.jwks_url.as_deref(),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Tenant)]
pub struct TenantView<'a> {
    #[schema(format = "uuid")]
    pub id: &'a str,
    pub name: &'a str,
    pub tier: Tier,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Null when the tenant accepts no JWTs.
    #[schema(required = true)]
    pub jwt: Option<JwtView<'a>>,
}

impl<'a> From<&'a Tenant> for TenantView<'a> {
    fn from(t: &'a Tenant) -> Self {
        Self {
            id: t.id.as_str(),
            name: &t.name,
            tier: t.tier,
            created_at: format_millis(t.created_at),
            jwt: t.jwt.as_ref().map(JwtView::from),
        }
    }
}

/// An API key; `key` (the secret) only when it is created or rotated.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ApiKeyView)]
pub struct KeyView<'a> {
    #[schema(pattern = "^key_[0-9a-f]{16}$")]
    pub id: &'a str,
    pub label: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub key: Option<&'a str>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl<'a> KeyView<'a> {
    pub fn info(k: &'a ApiKeyInfo) -> Self {
        Self {
            id: k.id.as_str(),
            label: &k.label,
            key: None,
            created_at: format_millis(k.created_at),
        }
    }

    pub fn issued(k: &'a IssuedKey) -> Self {
        Self {
            key: Some(&k.secret),
            ..Self::info(&k.info)
        }
    }
}

#[derive(ToSchema)]
pub struct TenantCreate {
    pub name: TenantName,
    /// Default free.
    pub tier: Option<Tier>,
}

/// Fields left out stay as they are; `"jwt": null` removes the JWT settings.
#[derive(ToSchema)]
pub struct TenantPatch {
    pub name: Option<TenantName>,
    pub tier: Option<Tier>,
    #[schema(value_type = Option<JwtSettings>)]
    pub jwt: Option<Option<JwtSettings>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantList<'a> {
    pub tenants: Vec<TenantView<'a>>,
    /// Null on the last page.
    #[schema(format = "uuid", required = true)]
    pub next_cursor: Option<String>,
}

/// The query of `GET /api/v1/admin/tenants`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantListParams {
    /// 1 to 1000, default 100
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<u64>,
    /// nextCursor of the previous page
    pub cursor: Option<TenantId>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantCreated<'a> {
    pub tenant: TenantView<'a>,
    pub api_key: KeyView<'a>,
}

#[derive(ToSchema)]
pub struct KeyCreate {
    pub label: KeyLabel,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList<'a> {
    pub keys: Vec<KeyView<'a>>,
}

// ---------------------------------------------------------------- operations

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` (liveness) or `ready` (readiness).
    pub status: &'static str,
}

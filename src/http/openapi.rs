//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of the whole public
//! API, generated from the handlers' `#[utoipa::path]` attributes and the wire
//! shapes they build ([`super::wire`], and the event data in
//! [`crate::events::EventData`]). A test checks that every route
//! [`super::served`] lists is in it and nothing else is, and the test command
//! validates it (`scripts/validate-deploy.sh`, openapi-spec-validator), fuzzes
//! the service against it (`scripts/schemathesis.sh`) and drives the service
//! through a client generated from it (`scripts/generated-client.sh`).

use super::wire::StrictRequests;
use actix_web::HttpResponse;
use std::sync::LazyLock;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::Required;
use utoipa::{Modify, OpenApi};

/// The locklock bodies are optional (absent or empty), but JSON `null` is not
/// one: utoipa can say "not required" only by making the schema nullable too.
struct OptionalLockBodies;

impl Modify for OptionalLockBodies {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for (path, item) in doc.paths.paths.iter_mut() {
            if !path.starts_with("/v1/api/lock/") {
                continue;
            }
            for op in [item.post.as_mut(), item.delete.as_mut()]
                .into_iter()
                .flatten()
            {
                if let Some(body) = op.request_body.as_mut() {
                    body.required = Some(Required::False);
                }
            }
        }
    }
}

/// Routes that answer the same as another: `HEAD` of the `GET` routes, and
/// `/api/v1/Reservation/activeReservations`, the seeds' second name of the
/// listing. One handler serves each group; the document gets a copy of the
/// first route's operation under each other method and path.
struct SameAnswers;

/// The `GET` routes also served as `HEAD`.
const HEAD_TOO: [&str; 4] = [
    "/healthz",
    "/readyz",
    "/api/v1/Reservation",
    "/api/v1/Reservation/activeReservations",
];

impl Modify for SameAnswers {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let paths = &mut doc.paths.paths;
        if let Some(mut op) = paths.get("/api/v1/Reservation").and_then(|i| i.get.clone()) {
            op.operation_id = Some("list_active".into());
            op.summary = Some("List active reservations (the second name the seeds use)".into());
            let mut item = utoipa::openapi::PathItem::default();
            item.get = Some(op);
            paths.insert("/api/v1/Reservation/activeReservations".into(), item);
        }
        for path in HEAD_TOO {
            let Some(item) = paths.get_mut(path) else {
                continue;
            };
            if let Some(mut op) = item.get.clone() {
                op.operation_id = op.operation_id.map(|id| format!("{id}_head"));
                op.summary = op.summary.map(|s| format!("(HEAD) {s}"));
                item.head = Some(op);
            }
        }
    }
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
    modifiers(&Security, &SameAnswers, &OptionalLockBodies, &StrictRequests),
    paths(
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
        document,
        super::reservations::reserve,
        super::reservations::unreserve,
        super::reservations::extend,
        super::reservations::check,
        super::reservations::validate,
        super::reservations::list,
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

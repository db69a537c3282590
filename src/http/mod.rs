//! The HTTP layer: routes, extractors, strict input parsing and error mapping;
//! the JSON shapes it reads and writes live, once, in [`wire`], which the
//! OpenAPI document ([`openapi`]) describes.
//! It knows the [`Store`] trait and the domain types, nothing of Redis.

pub mod admin;
pub mod body;
pub mod client_addr;
pub mod connection;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod idempotency;
pub mod locklock;
pub mod middleware;
pub mod openapi;
pub mod query;
pub mod rate_headers;
pub mod reservations;
pub mod token;
pub mod waiting;
pub mod wire;

use actix_web::web;

/// The part of the request path after `marker`, percent-decoded: a resource or
/// lock name (so `a%2Fb` names `a/b`). `field` names it in the error.
pub fn decoded_tail(
    req: &actix_web::HttpRequest,
    marker: &str,
    field: &str,
) -> Result<String, error::ApiError> {
    let raw = req.uri().path();
    let encoded = raw
        .find(marker)
        .map(|i| &raw[i + marker.len()..])
        .unwrap_or_default();
    percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| error::ApiError::invalid_field(field, "is not valid percent-encoded UTF-8"))
}

/// Every route the service serves: a path pattern and its methods with their
/// handlers. [`routes`] registers exactly this table and [`served`] lists it, so
/// the OpenAPI coverage test compares the document with what is really served.
///
/// Paths are lower-case; the front-door middleware lower-cases the fixed
/// segments of incoming paths so `/api/v1/Reservation` matches as the seeds
/// write it. Every pattern is static up to the admin routes: a multi-pattern or
/// parameterised resource is matched with a regex, which the router would run
/// for every request that reaches it.
fn table() -> Vec<(&'static str, Vec<(&'static str, actix_web::Route)>)> {
    use reservations as r;
    vec![
        (
            "/healthz",
            vec![
                ("GET", web::get().to(health::healthz)),
                ("HEAD", web::head().to(health::healthz)),
            ],
        ),
        (
            "/readyz",
            vec![
                ("GET", web::get().to(health::readyz)),
                ("HEAD", web::head().to(health::readyz)),
            ],
        ),
        ("/metrics", vec![("GET", web::get().to(health::metrics))]),
        (
            "/api/v1/openapi.json",
            vec![("GET", web::get().to(openapi::document))],
        ),
        (
            "/api/v1/reservation/reserve",
            vec![("POST", web::post().to(r::reserve))],
        ),
        (
            "/api/v1/reservation/unreserve",
            vec![("POST", web::post().to(r::unreserve))],
        ),
        (
            "/api/v1/reservation/extend",
            vec![("POST", web::post().to(r::extend))],
        ),
        (
            "/api/v1/reservation/check",
            vec![("POST", web::post().to(r::check))],
        ),
        (
            "/api/v1/reservation/validate",
            vec![("POST", web::post().to(r::validate))],
        ),
        (
            "/api/v1/reservation",
            vec![
                ("GET", web::get().to(r::list)),
                ("HEAD", web::head().to(r::list)),
            ],
        ),
        (
            "/api/v1/reservation/activereservations",
            vec![
                ("GET", web::get().to(r::list)),
                ("HEAD", web::head().to(r::list)),
            ],
        ),
        (
            "/api/v1/events",
            vec![("GET", web::get().to(events::stream))],
        ),
        (
            "/api/v1/auth/token",
            vec![("POST", web::post().to(token::exchange))],
        ),
        (
            "/v1/api/lock/uuid/{uuid:.+}",
            vec![
                ("POST", web::post().to(locklock::acquire_uuid)),
                ("DELETE", web::delete().to(locklock::release_uuid)),
            ],
        ),
        (
            "/v1/api/lock/key/{name:.+}",
            vec![
                ("POST", web::post().to(locklock::acquire_key)),
                ("DELETE", web::delete().to(locklock::release_key)),
            ],
        ),
        (
            "/api/v1/admin/tenants",
            vec![
                ("GET", web::get().to(admin::list_tenants)),
                ("POST", web::post().to(admin::create_tenant)),
            ],
        ),
        (
            "/api/v1/admin/tenants/{id}",
            vec![
                ("GET", web::get().to(admin::get_tenant)),
                ("PATCH", web::patch().to(admin::update_tenant)),
                ("DELETE", web::delete().to(admin::delete_tenant)),
            ],
        ),
        (
            "/api/v1/admin/tenants/{id}/keys",
            vec![
                ("GET", web::get().to(admin::list_keys)),
                ("POST", web::post().to(admin::create_key)),
            ],
        ),
        (
            "/api/v1/admin/tenants/{id}/keys/{keyId}",
            vec![("DELETE", web::delete().to(admin::delete_key))],
        ),
        (
            "/api/v1/admin/tenants/{id}/keys/{keyId}/rotate",
            vec![("POST", web::post().to(admin::rotate_key))],
        ),
        (
            "/api/v1/admin/tenants/{id}/reservations/{resource:.+}",
            vec![("DELETE", web::delete().to(admin::force_release))],
        ),
    ]
}

/// The route table.
pub fn routes(cfg: &mut web::ServiceConfig) {
    for (path, methods) in table() {
        let mut resource = web::resource(path);
        // A 405 names the methods the path does serve (RFC 9110 Allow).
        let allow = methods
            .iter()
            .map(|(m, _)| *m)
            .collect::<Vec<_>>()
            .join(", ");
        for (_, route) in methods {
            resource = resource.route(route);
        }
        resource = resource.default_service(web::to(move |req: actix_web::HttpRequest| {
            let allow = allow.clone();
            async move {
                use actix_web::ResponseError;
                let mut res = error::ApiError::MethodNotAllowed(format!(
                    "{} is not allowed on {}; allowed: {allow}",
                    req.method(),
                    req.path()
                ))
                .error_response();
                if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&allow) {
                    res.headers_mut().insert(actix_web::http::header::ALLOW, v);
                }
                res
            }
        }));
        cfg.service(resource);
    }
}

/// Every (method, path pattern) served, for the OpenAPI coverage test.
pub fn served() -> Vec<(&'static str, &'static str)> {
    table()
        .into_iter()
        .flat_map(|(path, methods)| methods.into_iter().map(move |(m, _)| (m, path)))
        .collect()
}

//! How the dashboard answers: HTML pages with its security headers (no
//! caching, no framing, a strict content security policy), redirects, and the
//! refusals every page shares.

use super::pages;
use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;

/// An HTML page response.
pub(super) fn html(status: StatusCode, body: maud::Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ))
        .insert_header(("Referrer-Policy", "same-origin"))
        .body(body.into_string())
}

pub(super) fn ok(body: maud::Markup) -> HttpResponse {
    html(StatusCode::OK, body)
}

pub(super) fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

pub(super) fn forbidden(msg: &str) -> HttpResponse {
    html(StatusCode::FORBIDDEN, pages::message("Refused", msg))
}

pub(super) fn unavailable() -> HttpResponse {
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::message(
            "Store unavailable",
            "The lock store cannot be reached right now; reload in a moment.",
        ),
    )
}

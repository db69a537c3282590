//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: the
//! store answers and the instance is not shutting down).

use super::error::ApiError;
use super::wire::{ErrorBody, Health};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use std::sync::atomic::Ordering;

#[utoipa::path(get, path = "/healthz", tag = "operations", summary = "Liveness: the process answers", responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", tag = "operations", summary = "Readiness: the store answers and the instance is not shutting down", responses((status = 200, description = "Ready", body = Health), (status = 503, description = "Store unreachable or shutting down", body = ErrorBody<'static>)))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.shutting_down.load(Ordering::SeqCst) {
        return Err(ApiError::StoreUnavailable);
    }
    state.store.ping().await?;
    Ok(HttpResponse::Ok().json(Health { status: "ready" }))
}

#[utoipa::path(get, path = "/metrics", tag = "operations", summary = "Prometheus metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    crate::metrics::sse_clients(state.hub.client_count());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

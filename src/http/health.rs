//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: the
//! store answers and the instance is not shutting down).

use super::error::ApiError;
use super::AppState;
use actix_web::{web, HttpResponse};
use serde_json::json;
use std::sync::atomic::Ordering;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.shutting_down.load(Ordering::SeqCst) {
        return Err(ApiError::StoreUnavailable);
    }
    state.store.ping().await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    crate::metrics::sse_clients(state.hub.client_count());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

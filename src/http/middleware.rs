//! Request-wide concerns, in the order a request meets them: request id and the
//! access log line, the size limits of the request head, case-insensitive
//! matching of the fixed path segments, and rewriting every non-JSON error the
//! framework produces into the contract's JSON error.

use super::error::ApiError;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::Payload;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::Uri;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, ResponseError};
use futures_util::StreamExt;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

/// Longest request target accepted (bytes); longer is `414`.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header fields / header bytes accepted; more is `431`. (actix-web itself
/// refuses heads over 128 KiB or 96 fields before any of this runs.)
pub const MAX_HEADER_COUNT: usize = 64;
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request, for handlers and logs.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// Outermost layer: request id, head limits, path normalisation, JSON errors,
/// and one log line per request (method, path, status, duration, request id —
/// never a header value or a body).
pub async fn front_door(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let started = Instant::now();
    let id = request_id(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().to_string();
    let raw_path = req.uri().path().to_string();

    let early = check_head(&req);
    let timed_out = Rc::new(Cell::new(false));
    let res = match early {
        Some(err) => req.into_response(err.error_response()),
        None => {
            normalize_path(&mut req);
            bound_body_time(&mut req, &timed_out);
            match next.call(req).await {
                Ok(res) => res.map_into_boxed_body(),
                Err(e) => {
                    return Err(e);
                }
            }
        }
    };
    let res = if timed_out.get() {
        // Whatever the handler made of the cut-off body, the answer is 408,
        // and the connection (with an unread body on it) is closed.
        let (req, _) = res.into_parts();
        let mut res = ServiceResponse::new(
            req,
            ApiError::RequestTimeout(
                "the request body did not arrive in time; send it in full after the headers".into(),
            )
            .error_response(),
        );
        res.response_mut()
            .head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
        res
    } else {
        res
    };
    // The route pattern (e.g. /api/v1/admin/tenants/{id}), never the path
    // itself: metric labels stay bounded whatever clients send.
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let stopping = res
        .request()
        .app_data::<actix_web::web::Data<crate::state::AppState>>()
        .is_some_and(|s| {
            s.closing_connections
                .load(std::sync::atomic::Ordering::SeqCst)
        });
    let mut res = into_json_error(res, &method, &raw_path);
    if stopping {
        // Draining: answer this request, then close the connection, so a
        // keep-alive client moves to another instance instead of holding this
        // one open until the shutdown bound.
        res.response_mut()
            .head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    let status = res.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    crate::metrics::http_request(&method, route, status, seconds);
    let ms = seconds * 1000.0;
    let path = truncate(&raw_path, 200);
    if status >= 500 {
        tracing::warn!(request_id = %id, %method, %path, status, ms, "request");
    } else {
        tracing::info!(request_id = %id, %method, %path, status, ms, "request");
    }
    Ok(res)
}

/// Wraps a request's body so that reading it fails once the configured body
/// timeout has passed since the headers arrived (and sets `timed_out`). A
/// request without a body is left alone.
fn bound_body_time(req: &mut ServiceRequest, timed_out: &Rc<Cell<bool>>) {
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let Some(limit) = req
        .app_data::<actix_web::web::Data<crate::state::AppState>>()
        .map(|s| s.limits.body_timeout)
    else {
        return;
    };
    if !has_body {
        return;
    }
    let deadline = tokio::time::Instant::now() + limit;
    let payload = req.take_payload();
    let flag = timed_out.clone();
    let timed = futures_util::stream::unfold(Some(payload), move |state| {
        let flag = flag.clone();
        async move {
            let mut payload = state?;
            match tokio::time::timeout_at(deadline, payload.next()).await {
                Ok(Some(item)) => Some((item, Some(payload))),
                Ok(None) => None,
                Err(_) => {
                    flag.set(true);
                    let e =
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "request body timeout");
                    Some((Err(PayloadError::Io(e)), None))
                }
            }
        }
    });
    req.set_payload(Payload::Stream {
        payload: Box::pin(timed),
    });
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn check_head(req: &ServiceRequest) -> Option<ApiError> {
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return Some(ApiError::UriTooLong(format!(
            "the request URI is {uri_len} bytes; the limit is {MAX_URI_BYTES}"
        )));
    }
    let headers = req.headers();
    let count = headers.len();
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if count > MAX_HEADER_COUNT || bytes > MAX_HEADER_BYTES {
        return Some(ApiError::HeadersTooLarge(format!(
            "{count} header fields, {bytes} bytes; the limits are {MAX_HEADER_COUNT} fields and {MAX_HEADER_BYTES} bytes"
        )));
    }
    None
}

/// Literal path segments, matched case-insensitively and rewritten to the
/// lower-case form the routes are registered under. A segment right after one
/// of `PARAM_BEFORE` is a parameter (an id or a name) and is left exactly as
/// sent; after `reservations` and the locklock `uuid`/`key` everything is.
const LITERALS: &[&str] = &[
    "api",
    "v1",
    "reservation",
    "reserve",
    "unreserve",
    "extend",
    "check",
    "validate",
    "activereservations",
    "events",
    "auth",
    "token",
    "admin",
    "tenants",
    "keys",
    "rotate",
    "reservations",
    "openapi.json",
    "lock",
    "uuid",
    "key",
    "healthz",
    "readyz",
    "metrics",
];
const PARAM_BEFORE: &[&str] = &["tenants", "keys"];
const REST_AFTER: &[&str] = &["reservations", "uuid", "key"];

fn normalize_path(req: &mut ServiceRequest) {
    let path = req.uri().path();
    if !path.bytes().any(|b| b.is_ascii_uppercase()) {
        return;
    }
    let mut out = String::with_capacity(path.len());
    let mut param_next = false;
    let mut rest_raw = false;
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if rest_raw || param_next {
            out.push_str(seg);
            param_next = false;
            continue;
        }
        let lower = seg.to_ascii_lowercase();
        if LITERALS.contains(&lower.as_str()) {
            param_next = PARAM_BEFORE.contains(&lower.as_str());
            rest_raw = REST_AFTER.contains(&lower.as_str());
            out.push_str(&lower);
        } else {
            out.push_str(seg);
        }
    }
    let pq = match req.uri().query() {
        Some(q) => format!("{out}?{q}"),
        None => out,
    };
    let mut parts = req.head().uri.clone().into_parts();
    let Ok(pq) = pq.parse() else { return };
    parts.path_and_query = Some(pq);
    if let Ok(uri) = Uri::from_parts(parts) {
        req.match_info_mut().get_mut().update(&uri);
        req.head_mut().uri = uri;
    }
}

/// Replaces the body of any error response that is not JSON (the framework's own
/// 404, 405, 413, extractor errors...) with the contract's JSON error.
fn into_json_error(
    res: ServiceResponse<BoxBody>,
    method: &str,
    path: &str,
) -> ServiceResponse<BoxBody> {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let dashboard_page = path.starts_with("/dashboard")
        && res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html"));
    if is_json || dashboard_page {
        return res;
    }
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), %method, "non-JSON server error from the framework");
    }
    let err = ApiError::from_status(status, method, truncate(path, 200));
    let (req, _) = res.into_parts();
    let mut new = err.error_response();
    *new.status_mut() = status;
    ServiceResponse::new(req, new)
}

//! `GET /api/v1/events` (contract section 4): the tenant's lock events as
//! Server-Sent Events, filtered by `resource` and `requester` (repeatable),
//! `prefix` and `types`,
//! resumable with `Last-Event-ID`.

use super::error::ApiError;
use super::extract::ReadCaller;
use super::query::Query;
use super::wire::{self, EventParams};
use crate::domain::hash_secret;
use crate::domain::{Requester, Resource, TenantId};
use crate::events::{gap_frame, EventId, EventKind, Filter, History};
use crate::fanout::hub::{Credential, JoinError, PAGE};
use crate::fanout::sse::{self, Start};
use crate::state::AppState;
use crate::tokens::looks_like_token;
use crate::tokens::service::now_secs;
use actix_web::http::header;
use actix_web::ResponseError;
use actix_web::{web, HttpRequest, HttpResponse};
use std::os::fd::{BorrowedFd, RawFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Most `resource` filters one stream may name.
pub const MAX_RESOURCE_FILTERS: usize = 100;
/// Longest `Last-Event-ID` echoed back in a `GAP` event.
const MAX_ECHOED_ID: usize = 64;

/// The socket of an HTTP connection, recorded when it is accepted (see
/// `startup.rs`) so a stream that falls behind can be shut down.
#[derive(Debug, Clone, Copy)]
pub struct ConnFd(pub RawFd);

/// A handle on the request's connection that the hub may shut down.
pub(super) fn connection(req: &HttpRequest) -> Option<std::net::TcpStream> {
    let fd = req.conn_data::<ConnFd>()?.0;
    // SAFETY: the descriptor belongs to the connection this request arrived on,
    // which stays open at least until this handler returns; it is only borrowed
    // here to duplicate it, and the duplicate is ours to shut down and close.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed
        .try_clone_to_owned()
        .ok()
        .map(std::net::TcpStream::from)
}

fn filter(req: &HttpRequest) -> Result<Filter, ApiError> {
    let mut q = Query::parse_repeatable(
        req.query_string(),
        &["resource", "prefix", "types", "requester"],
        &["resource", "requester"],
    )?;
    let resources = q.take_all("resource");
    if resources.len() > MAX_RESOURCE_FILTERS {
        return Err(ApiError::invalid_field(
            "resource",
            format!("may be given at most {MAX_RESOURCE_FILTERS} times"),
        ));
    }
    let requesters = q.take_all("requester");
    if requesters.len() > MAX_RESOURCE_FILTERS {
        return Err(ApiError::invalid_field(
            "requester",
            format!("may be given at most {MAX_RESOURCE_FILTERS} times"),
        ));
    }
    let requesters = requesters
        .into_iter()
        .map(Requester::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::invalid_field("requester", e.0))?;
    let resources = resources
        .into_iter()
        .map(Resource::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::invalid_field("resource", e.0))?;
    let prefix = q.string("prefix", |p| Resource::parse(p).map_err(|e| e.0))?;
    let types = match q.take("types") {
        None => None,
        Some(raw) => {
            let mut kinds = Vec::new();
            for name in raw.split(',').map(str::trim) {
                match EventKind::parse(name) {
                    Some(k) => kinds.push(k),
                    None => {
                        let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                        return Err(ApiError::invalid_field(
                            "types",
                            format!(
                                "has an unknown event type; use a comma-separated list of {}",
                                known.join(", ")
                            ),
                        ));
                    }
                }
            }
            Some(kinds)
        }
    };
    let params = EventParams {
        resource: Some(resources),
        prefix,
        types,
        requester: Some(requesters),
    };
    Ok(Filter::new(
        params
            .resource
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.as_str().to_string())
            .collect(),
        params.prefix.map(|p| p.as_str().to_string()),
        params.types,
    )
    .requesters(
        params
            .requester
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.as_str().to_string())
            .collect(),
    ))
}

/// The `Last-Event-ID` the client sent: `None` when absent or empty, else the
/// raw text (lossy for non-UTF-8 bytes) and its parse.
fn last_event_id(req: &HttpRequest) -> Option<(String, Option<EventId>)> {
    let mut values = req.headers().get_all("last-event-id");
    let first = values.next()?;
    let raw = String::from_utf8_lossy(first.as_bytes()).trim().to_string();
    if raw.is_empty() {
        return None;
    }
    // Two different ids cannot both be resumed: treat as unparsable.
    let parsed = if values.next().is_some() {
        None
    } else {
        EventId::parse(&raw)
    };
    Some((raw.chars().take(MAX_ECHOED_ID).collect(), parsed))
}

/// What opened the stream (to check it again when the invalidation feed may
/// have missed a change) and, for an exchanged token, when it expires: the
/// stream ends then. An already expired token is a `401`.
async fn credential(
    req: &HttpRequest,
    state: &AppState,
) -> Result<(Credential, Option<SystemTime>), ApiError> {
    let presented = super::extract::presented_key(req)?;
    if !looks_like_token(&presented) {
        return Ok((Credential::ApiKey(hash_secret(&presented)), None));
    }
    let claims = state
        .auth
        .check_signed(&presented, |k| k.check(&presented))
        .await?
        .filter(|c| c.exp > now_secs())
        .ok_or_else(|| ApiError::Unauthorized("the token has expired".into()))?;
    Ok((
        Credential::Token {
            fingerprint: claims.jfp,
        },
        Some(UNIX_EPOCH + Duration::from_secs(claims.exp)),
    ))
}

#[utoipa::path(get, path = "/api/v1/events", tag = "events", summary = "Live lock events of the tenant of the caller (Server-Sent Events)", params(EventParams, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")), responses((status = 200, description = "text/event-stream: the data of each event is an Event (its `id:` is `id`, its `event:` is `type`); one event of type GAP, data {\"id\",\"type\":\"GAP\",\"lastEventId\"}, when history was lost", content_type = "text/event-stream", body = crate::events::EventData), wire::TenantErrors), security(("apiKey" = [])))]
#[tracing::instrument(skip_all, fields(tenant = %caller.caller.tenant))]
pub async fn stream(
    req: HttpRequest,
    caller: ReadCaller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let filter = filter(&req)?;
    let tenant = caller.caller.tenant.clone();
    let (credential, ends_at) = credential(&req, &state).await?;
    let resume = last_event_id(&req);
    // Opening a stream is one read request; what it carries afterwards is not
    // counted.
    let rate = state.store.charge(&tenant, &caller.quota).await?;
    // Join first, read history second: whatever is committed in between arrives
    // both ways and the stream drops the repeat by id.
    let sub = state
        .hub
        .join(&tenant, filter.clone(), connection(&req), credential)
        .await
        .map_err(|e| match e {
            JoinError::TooMany(max) => ApiError::RateLimited {
                message: format!(
                    "this tenant already has {max} event streams open on this instance; close one or retry later"
                ),
                retry_after_seconds: 5,
            },
            JoinError::ShuttingDown => ApiError::ShuttingDown,
            JoinError::Store(e) => e.into(),
        })?;
    let start = match resume {
        None => Start::Live,
        Some((raw, None)) => Start::Gap(gap_frame(state.store.latest_event(&tenant).await?, &raw)),
        Some((raw, Some(after))) => match state.store.events_after(&tenant, after, PAGE).await? {
            History::Events(first) => Start::Replay { after, first },
            History::Gap { latest } => Start::Gap(gap_frame(latest, &raw)),
        },
    };
    let body = sse::stream(
        sub,
        state.store.clone(),
        tenant,
        filter,
        start,
        sse::Client {
            keepalive: state.sse_keepalive,
            peer: connection(&req),
            ends_at,
        },
    );
    let mut res = HttpResponse::Ok();
    super::rate_headers::add_headers(&mut res, Some(&rate));
    Ok(res
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Tells nginx-style proxies not to buffer the stream.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// The dashboard's live feed: every event of `tenant` (no filter, no resume),
/// for a request authenticated by a dashboard session.
pub async fn session_stream(
    req: &HttpRequest,
    state: &AppState,
    tenant: TenantId,
    expires_at: u64,
) -> HttpResponse {
    let filter = Filter::default();
    let sub = match state
        .hub
        .join(
            &tenant,
            filter.clone(),
            connection(req),
            Credential::Session,
        )
        .await
    {
        Ok(sub) => sub,
        Err(JoinError::TooMany(_)) => {
            return ApiError::RateLimited {
                message: "too many event streams open for this tenant on this instance".into(),
                retry_after_seconds: 5,
            }
            .error_response()
        }
        Err(JoinError::ShuttingDown) => return ApiError::ShuttingDown.error_response(),
        Err(JoinError::Store(e)) => return ApiError::from(e).error_response(),
    };
    let body = sse::stream(
        sub,
        state.store.clone(),
        tenant,
        filter,
        Start::Live,
        sse::Client {
            keepalive: state.sse_keepalive,
            peer: connection(req),
            ends_at: Some(UNIX_EPOCH + Duration::from_secs(expires_at)),
        },
    );
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

//! The Coop Locker reservation endpoints (contract section 3).

use super::body::{invalid_items, parse_batch, require_json, Fields};
use super::error::ApiError;
use super::extract::ApiCaller;
use super::limits::{add_headers, charge_only};
use super::query::Query;
use super::AppState;
use crate::domain::{format_millis, Holding, ReleaseToken, Requester, Resource, Ttl};
use crate::store::{
    Access, CheckOutcome, ExtendItem, ExtendOutcome, ListQuery, Metered, RateDecision, ReleaseItem,
    ReleaseOutcome, ReserveItem, ReserveOutcome,
};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

/// Default and largest page of `GET /api/v1/Reservation`.
pub const DEFAULT_LIST_LIMIT: usize = 1000;
pub const MAX_LIST_LIMIT: usize = 10_000;

/// A 200 with the `RateLimit-*` headers of the request.
fn ok(rate: Option<&RateDecision>, body: impl Serialize) -> HttpResponse {
    let mut res = HttpResponse::Ok();
    add_headers(&mut res, rate);
    res.json(body)
}

fn ttl(seconds: u64) -> Result<Ttl, String> {
    Ttl::from_seconds(seconds).map_err(|e| e.0)
}

/// Parses a batch body into typed items with `build`, reporting every problem.
fn items<T>(
    req: &HttpRequest,
    body: &[u8],
    state: &AppState,
    allowed: &[&str],
    mut build: impl FnMut(&mut Fields) -> Option<T>,
) -> Result<Vec<T>, ApiError> {
    require_json(req)?;
    let objects = parse_batch(body, state.limits.max_batch)?;
    let mut details = Vec::new();
    let mut out = Vec::with_capacity(objects.len());
    for (i, obj) in objects.into_iter().enumerate() {
        let mut f = Fields::new(Some(i), obj, allowed, &mut details);
        if let Some(item) = build(&mut f) {
            out.push(item);
        }
    }
    if details.is_empty() {
        Ok(out)
    } else {
        Err(invalid_items(details))
    }
}

fn parse_ttl(f: &mut Fields, required: bool) -> Option<Option<Ttl>> {
    match f.opt_u64("ttlSeconds") {
        Some(Some(s)) => match ttl(s) {
            Ok(t) => Some(Some(t)),
            Err(e) => {
                f.problem("ttlSeconds", e);
                None
            }
        },
        Some(None) if required => {
            f.problem("ttlSeconds", "is required");
            None
        }
        Some(None) => Some(None),
        None => None,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ItemResult<'a> {
    resource: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    requester: Option<&'a str>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    release_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    held_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reserved_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fencing_token: Option<u64>,
}

impl<'a> ItemResult<'a> {
    fn new(resource: &'a str, requester: Option<&'a str>, status: &'static str) -> Self {
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

#[derive(Serialize)]
struct Results<'a> {
    results: Vec<ItemResult<'a>>,
}

/// Counts a batch's per-item statuses in the metrics (one increment per status).
fn record(op: &'static str, results: &[ItemResult]) {
    let mut counts: Vec<(&'static str, u64)> = Vec::new();
    for r in results {
        match counts.iter_mut().find(|(s, _)| *s == r.status) {
            Some(c) => c.1 += 1,
            None => counts.push((r.status, 1)),
        }
    }
    for (status, n) in counts {
        crate::metrics::outcome(op, status, n);
    }
}

#[utoipa::path(post, path = "/api/v1/Reservation/reserve", tag = "reservations", summary = "Reserve resources (a batch, atomically, in order)", request_body = Vec<crate::http::openapi::ReserveItem>, responses((status = 200, description = "One result per item: RESERVED (with releaseToken and fencingToken) or ALREADY_HELD", body = crate::http::openapi::Results), crate::http::openapi::TenantErrors), security(("apiKey" = [])))]
pub async fn reserve(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: ApiCaller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let batch = items(
        &req,
        &body,
        &state,
        &["requester", "resource", "ttlSeconds"],
        |f| {
            let requester = f.string("requester", Requester::parse);
            let resource = f.string("resource", Resource::parse);
            let ttl = parse_ttl(f, false);
            Some(ReserveItem {
                requester: requester?,
                resource: resource?,
                ttl: ttl?,
            })
        },
    )?;
    who.may_act_as(batch.iter().map(|it| it.requester.as_str()))?;
    let caller = who.caller(&state, Access::Write);
    let Metered {
        value: outcomes,
        rate,
    } = if batch.is_empty() {
        charge_only(&state, &caller).await?
    } else {
        state.store.reserve(&caller, &batch).await?
    };
    let results = batch
        .iter()
        .zip(&outcomes)
        .map(|(it, out)| {
            let mut r = ItemResult::new(it.resource.as_str(), Some(it.requester.as_str()), "");
            match out {
                ReserveOutcome::Reserved {
                    release_token,
                    reserved_at,
                    expires_at,
                    fencing_token,
                } => {
                    r.status = "RESERVED";
                    r.release_token = Some(release_token.as_str());
                    r.reserved_at = Some(format_millis(*reserved_at));
                    r.expires_at = Some(expires_at.map(format_millis));
                    r.fencing_token = Some(*fencing_token);
                }
                ReserveOutcome::AlreadyHeld {
                    held_by,
                    expires_at,
                } => {
                    r.status = "ALREADY_HELD";
                    r.held_by = Some(held_by);
                    r.expires_at = Some(expires_at.map(format_millis));
                }
            }
            r
        })
        .collect::<Vec<_>>();
    record("reserve", &results);
    Ok(ok(rate.as_ref(), Results { results }))
}

fn release_items(
    req: &HttpRequest,
    body: &[u8],
    state: &AppState,
) -> Result<Vec<ReleaseItem>, ApiError> {
    items(
        req,
        body,
        state,
        &["requester", "resource", "releaseToken"],
        |f| {
            let requester = f.string("requester", Requester::parse);
            let resource = f.string("resource", Resource::parse);
            let token = f.string("releaseToken", ReleaseToken::parse);
            Some(ReleaseItem {
                requester: requester?,
                resource: resource?,
                release_token: token?,
            })
        },
    )
}

#[utoipa::path(post, path = "/api/v1/Reservation/unreserve", tag = "reservations", summary = "Release reservations with their release tokens", request_body = Vec<crate::http::openapi::ReleaseItem>, responses((status = 200, description = "UNRESERVED, NOT_HELD or INVALID_TOKEN per item", body = crate::http::openapi::Results), crate::http::openapi::TenantErrors), security(("apiKey" = [])))]
pub async fn unreserve(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: ApiCaller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let batch = release_items(&req, &body, &state)?;
    who.may_act_as(batch.iter().map(|it| it.requester.as_str()))?;
    let caller = who.caller(&state, Access::Write);
    let Metered {
        value: outcomes,
        rate,
    } = if batch.is_empty() {
        charge_only(&state, &caller).await?
    } else {
        state.store.unreserve(&caller, &batch).await?
    };
    let results = batch
        .iter()
        .zip(outcomes)
        .map(|(it, out)| {
            let status = match out {
                ReleaseOutcome::Unreserved => "UNRESERVED",
                ReleaseOutcome::NotHeld => "NOT_HELD",
                ReleaseOutcome::InvalidToken => "INVALID_TOKEN",
            };
            ItemResult::new(it.resource.as_str(), Some(it.requester.as_str()), status)
        })
        .collect::<Vec<_>>();
    record("unreserve", &results);
    Ok(ok(rate.as_ref(), Results { results }))
}

#[utoipa::path(post, path = "/api/v1/Reservation/extend", tag = "reservations", summary = "Re-arm the TTLs of reservations from now", request_body = Vec<crate::http::openapi::ExtendItem>, responses((status = 200, description = "EXTENDED (with expiresAt), NOT_HELD or INVALID_TOKEN per item", body = crate::http::openapi::Results), crate::http::openapi::TenantErrors), security(("apiKey" = [])))]
pub async fn extend(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: ApiCaller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let batch = items(
        &req,
        &body,
        &state,
        &["requester", "resource", "releaseToken", "ttlSeconds"],
        |f| {
            let requester = f.string("requester", Requester::parse);
            let resource = f.string("resource", Resource::parse);
            let token = f.string("releaseToken", ReleaseToken::parse);
            let ttl = parse_ttl(f, true);
            Some(ExtendItem {
                requester: requester?,
                resource: resource?,
                release_token: token?,
                ttl: ttl??,
            })
        },
    )?;
    who.may_act_as(batch.iter().map(|it| it.requester.as_str()))?;
    let caller = who.caller(&state, Access::Write);
    let Metered {
        value: outcomes,
        rate,
    } = if batch.is_empty() {
        charge_only(&state, &caller).await?
    } else {
        state.store.extend(&caller, &batch).await?
    };
    let results = batch
        .iter()
        .zip(outcomes)
        .map(|(it, out)| {
            let mut r = ItemResult::new(it.resource.as_str(), Some(it.requester.as_str()), "");
            match out {
                ExtendOutcome::Extended { expires_at } => {
                    r.status = "EXTENDED";
                    r.expires_at = Some(Some(format_millis(expires_at)));
                }
                ExtendOutcome::NotHeld => r.status = "NOT_HELD",
                ExtendOutcome::InvalidToken => r.status = "INVALID_TOKEN",
            }
            r
        })
        .collect::<Vec<_>>();
    record("extend", &results);
    Ok(ok(rate.as_ref(), Results { results }))
}

#[utoipa::path(post, path = "/api/v1/Reservation/check", tag = "reservations", summary = "Read the state of resources", request_body = Vec<crate::http::openapi::CheckItem>, responses((status = 200, description = "HELD (with holder) or FREE per item", body = crate::http::openapi::Results), crate::http::openapi::TenantErrors), security(("apiKey" = [])))]
pub async fn check(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: ApiCaller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let batch = items(&req, &body, &state, &["resource"], |f| {
        f.string("resource", Resource::parse)
    })?;
    let caller = who.caller(&state, Access::Read);
    let Metered {
        value: outcomes,
        rate,
    } = if batch.is_empty() {
        charge_only(&state, &caller).await?
    } else {
        state.store.check(&caller, &batch).await?
    };
    let results = batch
        .iter()
        .zip(&outcomes)
        .map(|(res, out)| match out {
            CheckOutcome::Held(h) => {
                let mut r = ItemResult::new(res.as_str(), Some(h.requester.as_str()), "HELD");
                r.reserved_at = Some(format_millis(h.reserved_at));
                r.expires_at = Some(h.expires_at.map(format_millis));
                r.fencing_token = Some(h.fencing_token);
                r
            }
            CheckOutcome::Free => ItemResult::new(res.as_str(), None, "FREE"),
        })
        .collect::<Vec<_>>();
    record("check", &results);
    Ok(ok(rate.as_ref(), Results { results }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed<'a> {
    resource: &'a str,
    requester: &'a str,
    reserved_at: String,
    expires_at: Option<String>,
    fencing_token: u64,
    api_key_label: &'a str,
}

impl<'a> From<&'a Holding> for Listed<'a> {
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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListBody<'a> {
    reservations: Vec<Listed<'a>>,
    next_cursor: Option<String>,
}

/// Cursors are the last resource of a page, hex-encoded and versioned, so they
/// are opaque to clients and can be checked strictly.
fn encode_cursor(after: &str) -> String {
    format!("r1.{}", hex::encode(after.as_bytes()))
}

fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    let bad = || ApiError::invalid_field("cursor", "is not a cursor this service issued");
    let hexed = cursor.strip_prefix("r1.").ok_or_else(bad)?;
    let bytes = hex::decode(hexed).map_err(|_| bad())?;
    let name = String::from_utf8(bytes).map_err(|_| bad())?;
    Resource::parse(name.clone()).map_err(|_| bad())?;
    Ok(name)
}

#[utoipa::path(get, path = "/api/v1/Reservation", tag = "reservations", summary = "List active reservations (sorted by resource)", params(("prefix" = Option<String>, Query, description = "Only resources starting with it"), ("requester" = Option<String>, Query, description = "Only the reservations of this requester"), ("limit" = Option<u32>, Query, description = "1 to 10000, default 1000"), ("cursor" = Option<String>, Query, description = "nextCursor of the previous page")), responses((status = 200, description = "A page", body = crate::http::openapi::ReservationPage), crate::http::openapi::TenantErrors), security(("apiKey" = [])))]
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: ApiCaller,
) -> Result<HttpResponse, ApiError> {
    let mut q = Query::parse(
        req.query_string(),
        &["prefix", "requester", "limit", "cursor"],
    )?;
    let prefix = q.string("prefix", Resource::parse)?;
    let requester = q.string("requester", Requester::parse)?;
    let limit = q
        .integer("limit", 1, MAX_LIST_LIMIT as u64)?
        .map_or(DEFAULT_LIST_LIMIT, |l| l as usize);
    let after = match q.take("cursor") {
        Some(c) => Some(decode_cursor(&c)?),
        None => None,
    };
    let Metered { value: page, rate } = state
        .store
        .list(
            &who.caller(&state, Access::Read),
            &ListQuery {
                prefix,
                requester,
                limit,
                after,
            },
        )
        .await?;
    Ok(ok(
        rate.as_ref(),
        ListBody {
            reservations: page.items.iter().map(Listed::from).collect(),
            next_cursor: page.next_after.as_deref().map(encode_cursor),
        },
    ))
}

#[utoipa::path(get, path = "/api/v1/Reservation/activeReservations", tag = "reservations", summary = "List active reservations (the second name the seeds use)", params(("prefix" = Option<String>, Query, description = "Only resources starting with it"), ("requester" = Option<String>, Query, description = "Only the reservations of this requester"), ("limit" = Option<u32>, Query, description = "1 to 10000, default 1000"), ("cursor" = Option<String>, Query, description = "nextCursor of the previous page")), responses((status = 200, description = "A page", body = crate::http::openapi::ReservationPage), crate::http::openapi::TenantErrors), security(("apiKey" = [])))]
pub async fn list_active(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: ApiCaller,
) -> Result<HttpResponse, ApiError> {
    list(req, state, who).await
}

#[utoipa::path(head, path = "/api/v1/Reservation", tag = "reservations", summary = "(HEAD) List active reservations (sorted by resource)", params(("prefix" = Option<String>, Query, description = "Only resources starting with it"), ("requester" = Option<String>, Query, description = "Only the reservations of this requester"), ("limit" = Option<u32>, Query, description = "1 to 10000, default 1000"), ("cursor" = Option<String>, Query, description = "nextCursor of the previous page")), responses((status = 200, description = "A page", body = crate::http::openapi::ReservationPage), crate::http::openapi::TenantErrors), security(("apiKey" = [])))]
pub async fn list_head(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: ApiCaller,
) -> Result<HttpResponse, ApiError> {
    list(req, state, who).await
}

#[utoipa::path(head, path = "/api/v1/Reservation/activeReservations", tag = "reservations", summary = "(HEAD) List active reservations (the second name the seeds use)", params(("prefix" = Option<String>, Query, description = "Only resources starting with it"), ("requester" = Option<String>, Query, description = "Only the reservations of this requester"), ("limit" = Option<u32>, Query, description = "1 to 10000, default 1000"), ("cursor" = Option<String>, Query, description = "nextCursor of the previous page")), responses((status = 200, description = "A page", body = crate::http::openapi::ReservationPage), crate::http::openapi::TenantErrors), security(("apiKey" = [])))]
pub async fn list_active_head(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: ApiCaller,
) -> Result<HttpResponse, ApiError> {
    list(req, state, who).await
}

//! The Coop Locker reservation endpoints (contract section 3).

use super::body::{invalid_items, parse_batch, require_json, Fields};
use super::error::ApiError;
use super::extract::{ReadCaller, WriteCaller};
use super::idempotency;
use super::query::Query;
use super::rate_headers::add_headers;
use super::waiting;
use super::wire::{
    self, BatchParams, ErrorBody, FenceResult, FenceResults, FenceStatus, IdempotencyParams,
    ItemResult, ItemStatus, ListParams, Reservation, ReservationPage, ReserveParams, Results,
    DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT,
};
use crate::domain::{
    format_millis, Kind, ReleaseToken, Requester, Resource, Ttl, WarnBefore, MAX_HOLDERS,
};
use crate::state::AppState;
use crate::store::{
    BatchMode, CheckOutcome, ExtendItem, ExtendOutcome, FenceItem, FenceOutcome, ListQuery,
    Metered, ReleaseItem, ReleaseOutcome, ReserveItem, ReserveOutcome, Settled, Succeeded,
};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::Value;

/// A 200 with the `RateLimit-*` headers of the request (and
/// `Idempotent-Replayed` for a repeat's answer).
fn ok<T>(m: &Metered<T>, body: impl Serialize) -> HttpResponse {
    let mut res = HttpResponse::Ok();
    add_headers(&mut res, m.rate.as_ref());
    idempotency::mark(&mut res, m.replayed);
    res.json(body)
}

fn ttl(seconds: u64) -> Result<Ttl, String> {
    Ttl::from_seconds(seconds).map_err(|e| e.0)
}

/// How a batch applies, from its query (`atomic`).
fn batch_mode(req: &HttpRequest) -> Result<BatchMode, ApiError> {
    let mut q = Query::parse(req.query_string(), &["atomic"])?;
    let params = BatchParams {
        atomic: q.boolean("atomic")?,
    };
    Ok(BatchMode {
        atomic: params.atomic.unwrap_or(false),
        wait: None,
    })
}

/// The query of a reserve (`atomic`, `waitSeconds`).
fn reserve_query(req: &HttpRequest) -> Result<ReserveParams, ApiError> {
    let mut q = Query::parse(req.query_string(), &["atomic", "waitSeconds"])?;
    Ok(ReserveParams {
        atomic: q.boolean("atomic")?,
        wait_seconds: q.integer("waitSeconds", 0, waiting::MAX_WAIT_SECONDS)?,
    })
}

/// The answer of a batch: its results, and with `atomic=true` whether it took
/// effect.
fn batch_results<'a, O: Succeeded>(
    atomic: bool,
    outcomes: &[O],
    results: Vec<ItemResult<'a>>,
) -> Results<'a> {
    Results {
        results,
        committed: atomic.then(|| outcomes.iter().all(Succeeded::succeeded)),
    }
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

/// An item's expiry warning (contract section 18): whole seconds, at least 1
/// and below the item's TTL, and only with one. `ttl` is what `parse_ttl`
/// made of the item (`None`: it had a problem, reported already).
fn parse_warn(f: &mut Fields, ttl: Option<Option<Ttl>>) -> Option<Option<WarnBefore>> {
    const FIELD: &str = "warnBeforeSeconds";
    let Some(seconds) = f.opt_u64(FIELD)? else {
        return Some(None);
    };
    match ttl? {
        None => {
            f.problem(
                FIELD,
                "needs ttlSeconds (a reservation without a TTL never expires)",
            );
            None
        }
        Some(ttl) => match WarnBefore::new(seconds, ttl) {
            Ok(w) => Some(Some(w)),
            Err(e) => {
                f.problem(FIELD, e.0);
                None
            }
        },
    }
}

/// The kind of a reserve item (contract section 15): `"limit":N` a semaphore
/// of N permits, `"mode":"shared"` a read lock, neither (or `"mode":
/// "exclusive"`) an exclusive lock; both at once is a problem.
fn parse_kind(f: &mut Fields) -> Option<Kind> {
    let mode = f.raw("mode");
    let limit = f.raw("limit");
    let limit_problem = "must be an integer from 1 to 10000 (a semaphore's permits)";
    match (mode, limit) {
        (Some(_), Some(_)) => {
            f.problem(
                "limit",
                "cannot be given with mode (limit makes a semaphore; mode is for locks)",
            );
            None
        }
        (None, None) => Some(Kind::Exclusive),
        (Some(Value::String(m)), None) if m == "shared" => Some(Kind::Shared),
        (Some(Value::String(m)), None) if m == "exclusive" => Some(Kind::Exclusive),
        (Some(_), None) => {
            f.problem(
                "mode",
                "must be \"shared\" or \"exclusive\" (leave it out for an exclusive lock)",
            );
            None
        }
        (None, Some(Value::Number(n))) => {
            let kind = n
                .as_u64()
                .filter(|n| (1..=u64::from(MAX_HOLDERS)).contains(n))
                .and_then(|n| u16::try_from(n).ok())
                .map(Kind::Semaphore);
            if kind.is_none() {
                f.problem("limit", limit_problem);
            }
            kind
        }
        (None, Some(_)) => {
            f.problem("limit", limit_problem);
            None
        }
    }
}

/// Counts a batch's per-item statuses in the metrics (one increment per status).
fn record(op: &'static str, results: &[ItemResult]) {
    count_statuses(op, results.iter().map(|r| r.status.as_str()));
}

fn count_statuses(op: &'static str, statuses: impl Iterator<Item = &'static str>) {
    let mut counts: Vec<(&'static str, u64)> = Vec::new();
    for status in statuses {
        match counts.iter_mut().find(|(s, _)| *s == status) {
            Some(c) => c.1 += 1,
            None => counts.push((status, 1)),
        }
    }
    for (status, n) in counts {
        crate::metrics::outcome(op, status, n);
    }
}

#[utoipa::path(post, path = "/api/v1/Reservation/reserve", tag = "reservations", summary = "Reserve resources (a batch, atomically, in order)", request_body = wire::ReserveBatch, params(ReserveParams, IdempotencyParams), responses((status = 200, description = "One result per item: RESERVED (with releaseToken and fencingToken), ALREADY_HELD, ABORTED (atomic) or TIMED_OUT (waitSeconds)", body = Results<'static>), (status = 422, description = "IDEMPOTENCY_KEY_REUSED: the Idempotency-Key was used for another request", body = ErrorBody<'static>), wire::TenantErrors), security(("apiKey" = [])))]
#[tracing::instrument(skip_all, fields(tenant = %who.caller.tenant))]
pub async fn reserve(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: WriteCaller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    let query = reserve_query(&req)?;
    let batch = items(
        &req,
        &body,
        &state,
        &[
            "requester",
            "resource",
            "ttlSeconds",
            "mode",
            "limit",
            "warnBeforeSeconds",
        ],
        |f| {
            let requester = f.string("requester", Requester::parse);
            let resource = f.string("resource", Resource::parse);
            let ttl = parse_ttl(f, false);
            let kind = parse_kind(f);
            let warn = parse_warn(f, ttl);
            Some((
                wire::ReserveItem {
                    requester: requester?,
                    resource: resource?,
                    ttl_seconds: ttl?,
                    mode: None,
                    limit: None,
                    warn_before_seconds: warn?,
                },
                kind?,
            ))
        },
    )?
    .into_iter()
    .map(|(it, kind)| ReserveItem {
        requester: it.requester,
        resource: it.resource,
        ttl: it.ttl_seconds,
        kind,
        warn: it.warn_before_seconds,
    })
    .collect::<Vec<_>>();
    who.may_act_as(batch.iter().map(|it| it.requester.as_str()))?;
    let atomic = query.atomic.unwrap_or(false);
    let mode = BatchMode {
        atomic,
        wait: waiting::wait_of(query.wait_seconds, atomic, &batch, who.principal.tier)?,
    };
    let caller = idempotency::write_caller(&req, &state, &who, "reserve", &body)?;
    // Subscribed before the waiter enters, so no grant goes unheard.
    let grants = mode.wait.map(|_| state.store.grants());
    let mut metered = state.store.reserve(&caller, &batch, mode).await?;
    let mut waited = None;
    let mut timed_out = None;
    let queued = metered
        .value
        .iter()
        .any(|o| matches!(o, ReserveOutcome::Queued { .. }));
    if let (true, Some(wait), Some(grants)) = (queued, mode.wait, grants) {
        match waiting::wait_for_grant(
            &state,
            (&who.caller.tenant, super::events::connection(&req)),
            wait,
            grants,
            started,
        )
        .await?
        {
            waiting::WaitEnd::Granted(rows, ms) => {
                if caller.idempotency.is_some() {
                    state
                        .store
                        .settle(&caller, Settled::Reserve(rows.clone()))
                        .await?;
                }
                metered.value = rows;
                waited = Some(ms);
            }
            waiting::WaitEnd::TimedOut { left, shutdown } => {
                if caller.idempotency.is_some() {
                    state.store.settle(&caller, Settled::Nothing).await?;
                }
                timed_out = Some((left, shutdown))
            }
        }
    }
    if let Some((left, shutdown)) = &timed_out {
        let results = batch
            .iter()
            .enumerate()
            .map(|(i, it)| {
                let (place, held_by, expires_at) = match left.get(i) {
                    Some((place, by, ea)) => (*place, by.as_str(), *ea),
                    None => (0, "", None),
                };
                ItemResult {
                    held_by: Some(held_by).filter(|h| !h.is_empty()),
                    expires_at: Some(expires_at.map(format_millis)),
                    queue_position: Some(place),
                    reason: shutdown.then_some("SHUTDOWN"),
                    ..ItemResult::new(
                        it.resource.as_str(),
                        Some(it.requester.as_str()),
                        ItemStatus::TimedOut,
                    )
                    .kind(it.kind)
                }
            })
            .collect::<Vec<_>>();
        record("reserve", &results);
        return Ok(ok(
            &metered,
            Results {
                results,
                committed: atomic.then_some(false),
            },
        ));
    }
    let outcomes = &metered.value;
    let results = batch
        .iter()
        .zip(outcomes)
        .map(|(it, out)| {
            let item =
                |status| ItemResult::new(it.resource.as_str(), Some(it.requester.as_str()), status);
            match out {
                ReserveOutcome::Reserved {
                    release_token,
                    reserved_at,
                    expires_at,
                    fencing_token,
                    waited_ms,
                    hold_deadline,
                    capped,
                } => ItemResult {
                    release_token: Some(release_token.as_str()),
                    reserved_at: Some(format_millis(*reserved_at)),
                    expires_at: Some(expires_at.map(format_millis)),
                    fencing_token: Some(*fencing_token),
                    // The store's count (a repeat answers the same), else
                    // what this instance saw.
                    waited_ms: waited_ms.or(waited),
                    hold_deadline: hold_deadline.map(format_millis),
                    capped: capped.then_some(true),
                    ..item(ItemStatus::Reserved).kind(it.kind)
                },
                ReserveOutcome::LockDelay { available_at } => ItemResult {
                    available_at: Some(format_millis(*available_at)),
                    ..item(ItemStatus::LockDelay).kind(it.kind)
                },
                ReserveOutcome::AlreadyHeld {
                    held_by,
                    expires_at,
                    queue_length,
                    holders,
                    available,
                } => ItemResult {
                    // A free resource with a line has no holder.
                    held_by: Some(held_by.as_str()).filter(|h| !h.is_empty()),
                    expires_at: Some(expires_at.map(format_millis)),
                    queue_length: Some(*queue_length).filter(|q| *q > 0),
                    holders: Some(wire::Holders::Count(*holders)),
                    available: *available,
                    ..item(ItemStatus::AlreadyHeld).kind(it.kind)
                },
                ReserveOutcome::LimitMismatch { kind } => {
                    item(ItemStatus::LimitMismatch).kind(*kind)
                }
                ReserveOutcome::Aborted => item(ItemStatus::Aborted).kind(it.kind),
                // A wait that ended returned above; a queued answer is never
                // sent.
                ReserveOutcome::Queued { .. } => item(ItemStatus::TimedOut).kind(it.kind),
            }
        })
        .collect::<Vec<_>>();
    record("reserve", &results);
    Ok(ok(&metered, batch_results(mode.atomic, outcomes, results)))
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
            Some(wire::ReleaseItem {
                requester: requester?,
                resource: resource?,
                release_token: token?,
            })
        },
    )
    .map(|batch| {
        batch
            .into_iter()
            .map(|it| ReleaseItem {
                requester: it.requester,
                resource: it.resource,
                release_token: it.release_token,
            })
            .collect()
    })
}

#[utoipa::path(post, path = "/api/v1/Reservation/unreserve", tag = "reservations", summary = "Release reservations with their release tokens", request_body = wire::ReleaseBatch, params(BatchParams, IdempotencyParams), responses((status = 200, description = "UNRESERVED, NOT_HELD or INVALID_TOKEN per item", body = Results<'static>), (status = 422, description = "IDEMPOTENCY_KEY_REUSED: the Idempotency-Key was used for another request", body = ErrorBody<'static>), wire::TenantErrors), security(("apiKey" = [])))]
#[tracing::instrument(skip_all, fields(tenant = %who.caller.tenant))]
pub async fn unreserve(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: WriteCaller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let mode = batch_mode(&req)?;
    let batch = release_items(&req, &body, &state)?;
    who.may_act_as(batch.iter().map(|it| it.requester.as_str()))?;
    let caller = idempotency::write_caller(&req, &state, &who, "unreserve", &body)?;
    let metered = state.store.unreserve(&caller, &batch, mode).await?;
    let outcomes = &metered.value;
    let results = batch
        .iter()
        .zip(outcomes.iter().copied())
        .map(|(it, out)| {
            let status = match out {
                ReleaseOutcome::Unreserved => ItemStatus::Unreserved,
                ReleaseOutcome::NotHeld => ItemStatus::NotHeld,
                ReleaseOutcome::InvalidToken => ItemStatus::InvalidToken,
                ReleaseOutcome::Aborted => ItemStatus::Aborted,
            };
            ItemResult::new(it.resource.as_str(), Some(it.requester.as_str()), status)
        })
        .collect::<Vec<_>>();
    record("unreserve", &results);
    Ok(ok(&metered, batch_results(mode.atomic, outcomes, results)))
}

#[utoipa::path(post, path = "/api/v1/Reservation/extend", tag = "reservations", summary = "Re-arm the TTLs of reservations from now", request_body = wire::ExtendBatch, params(BatchParams, IdempotencyParams), responses((status = 200, description = "EXTENDED (with expiresAt), NOT_HELD or INVALID_TOKEN per item", body = Results<'static>), (status = 422, description = "IDEMPOTENCY_KEY_REUSED: the Idempotency-Key was used for another request", body = ErrorBody<'static>), wire::TenantErrors), security(("apiKey" = [])))]
#[tracing::instrument(skip_all, fields(tenant = %who.caller.tenant))]
pub async fn extend(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: WriteCaller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let mode = batch_mode(&req)?;
    let batch = items(
        &req,
        &body,
        &state,
        &[
            "requester",
            "resource",
            "releaseToken",
            "ttlSeconds",
            "warnBeforeSeconds",
        ],
        |f| {
            let requester = f.string("requester", Requester::parse);
            let resource = f.string("resource", Resource::parse);
            let token = f.string("releaseToken", ReleaseToken::parse);
            let ttl = parse_ttl(f, true);
            let warn = parse_warn(f, ttl);
            Some(wire::ExtendItem {
                requester: requester?,
                resource: resource?,
                release_token: token?,
                ttl_seconds: ttl??,
                warn_before_seconds: warn?,
            })
        },
    )?
    .into_iter()
    .map(|it| ExtendItem {
        requester: it.requester,
        resource: it.resource,
        release_token: it.release_token,
        ttl: it.ttl_seconds,
        warn: it.warn_before_seconds,
    })
    .collect::<Vec<_>>();
    who.may_act_as(batch.iter().map(|it| it.requester.as_str()))?;
    let caller = idempotency::write_caller(&req, &state, &who, "extend", &body)?;
    let metered = state.store.extend(&caller, &batch, mode).await?;
    let outcomes = &metered.value;
    let results = batch
        .iter()
        .zip(outcomes.iter().copied())
        .map(|(it, out)| {
            let item =
                |status| ItemResult::new(it.resource.as_str(), Some(it.requester.as_str()), status);
            match out {
                ExtendOutcome::Extended {
                    expires_at,
                    hold_deadline,
                    capped,
                } => ItemResult {
                    expires_at: Some(Some(format_millis(expires_at))),
                    hold_deadline: hold_deadline.map(format_millis),
                    capped: capped.then_some(true),
                    ..item(ItemStatus::Extended)
                },
                ExtendOutcome::NotHeld => item(ItemStatus::NotHeld),
                ExtendOutcome::InvalidToken => item(ItemStatus::InvalidToken),
                ExtendOutcome::Aborted => item(ItemStatus::Aborted),
            }
        })
        .collect::<Vec<_>>();
    record("extend", &results);
    Ok(ok(&metered, batch_results(mode.atomic, outcomes, results)))
}

#[utoipa::path(post, path = "/api/v1/Reservation/check", tag = "reservations", summary = "Read the state of resources", request_body = wire::CheckBatch, responses((status = 200, description = "HELD (with holder) or FREE per item", body = Results<'static>), wire::TenantErrors), security(("apiKey" = [])))]
#[tracing::instrument(skip_all, fields(tenant = %who.caller.tenant))]
pub async fn check(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: ReadCaller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let batch = items(&req, &body, &state, &["resource"], |f| {
        f.string("resource", Resource::parse)
            .map(|resource| wire::CheckItem { resource })
    })?
    .into_iter()
    .map(|it| it.resource)
    .collect::<Vec<_>>();
    let metered = state.store.check(&who.caller, &batch).await?;
    let outcomes = &metered.value;
    let results = batch
        .iter()
        .zip(outcomes)
        .map(|(res, out)| match out {
            CheckOutcome::Held(h, waiting) => {
                let mut r =
                    ItemResult::new(res.as_str(), Some(h.requester.as_str()), ItemStatus::Held);
                r.reserved_at = Some(format_millis(h.reserved_at));
                r.expires_at = Some(h.expires_at.map(format_millis));
                r.fencing_token = Some(h.fencing_token);
                r.queue_length = Some(*waiting).filter(|q| *q > 0);
                r.hold_deadline = h.hold_deadline.map(format_millis);
                r.kind(h.kind)
            }
            CheckOutcome::Holders {
                kind,
                holders,
                queue_length,
            } => {
                // heldBy-like fields are the oldest holder's; the list has all.
                let oldest = holders.first();
                let mut r = ItemResult::new(
                    res.as_str(),
                    oldest.map(|h| h.requester.as_str()),
                    ItemStatus::Held,
                )
                .kind(*kind);
                r.reserved_at = oldest.map(|h| format_millis(h.reserved_at));
                r.expires_at = oldest.map(|h| h.expires_at.map(format_millis));
                r.fencing_token = oldest.map(|h| h.fencing_token);
                r.queue_length = Some(*queue_length).filter(|q| *q > 0);
                r.hold_deadline = oldest.and_then(|h| h.hold_deadline).map(format_millis);
                r.available = kind
                    .limit()
                    .map(|l| u64::from(l).saturating_sub(holders.len() as u64));
                r.holders = Some(wire::Holders::List(
                    holders
                        .iter()
                        .map(|h| wire::Holder {
                            requester: h.requester.clone(),
                            reserved_at: format_millis(h.reserved_at),
                            expires_at: h.expires_at.map(format_millis),
                            fencing_token: h.fencing_token,
                            hold_deadline: h.hold_deadline.map(format_millis),
                        })
                        .collect(),
                ));
                r
            }
            CheckOutcome::Free(waiting) => ItemResult {
                queue_length: Some(*waiting).filter(|q| *q > 0),
                ..ItemResult::new(res.as_str(), None, ItemStatus::Free)
            },
            CheckOutcome::LockDelay {
                queue_length,
                available_at,
            } => ItemResult {
                queue_length: Some(*queue_length).filter(|q| *q > 0),
                available_at: Some(format_millis(*available_at)),
                ..ItemResult::new(res.as_str(), None, ItemStatus::Free)
            },
        })
        .collect::<Vec<_>>();
    record("check", &results);
    Ok(ok(
        &metered,
        Results {
            results,
            committed: None,
        },
    ))
}

#[utoipa::path(post, path = "/api/v1/Reservation/validate", tag = "reservations", summary = "Check writers' fencing tokens against the holds now (a read)", request_body = wire::ValidateBatch, responses((status = 200, description = "CURRENT (with requester and expiresAt) or STALE (with currentFencingToken, null when free) per item", body = FenceResults<'static>), wire::TenantErrors), security(("apiKey" = [])))]
#[tracing::instrument(skip_all, fields(tenant = %who.caller.tenant))]
pub async fn validate(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: ReadCaller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let batch = items(&req, &body, &state, &["resource", "fencingToken"], |f| {
        let resource = f.string("resource", Resource::parse);
        let fencing_token = f.u64("fencingToken", "a fencing token the service handed out");
        Some(FenceItem {
            resource: resource?,
            fencing_token: fencing_token?,
        })
    })?;
    let metered = state.store.validate(&who.caller, &batch).await?;
    let results = batch
        .iter()
        .zip(&metered.value)
        .map(|(it, out)| {
            let item = |status| FenceResult {
                resource: it.resource.as_str(),
                fencing_token: it.fencing_token,
                status,
                requester: None,
                expires_at: None,
                current_fencing_token: None,
            };
            match out {
                FenceOutcome::Current {
                    requester,
                    expires_at,
                } => FenceResult {
                    requester: Some(requester.as_str()),
                    expires_at: Some(expires_at.map(format_millis)),
                    ..item(FenceStatus::Current)
                },
                FenceOutcome::Stale { holder } => FenceResult {
                    current_fencing_token: Some(*holder),
                    ..item(FenceStatus::Stale)
                },
            }
        })
        .collect::<Vec<_>>();
    count_statuses("validate", results.iter().map(|r| r.status.as_str()));
    let current = results
        .iter()
        .filter(|r| r.status == FenceStatus::Current)
        .count() as u64;
    crate::metrics::fence_checks("current", current);
    crate::metrics::fence_checks("stale", results.len() as u64 - current);
    Ok(ok(&metered, FenceResults { results }))
}

/// Cursors are the last resource of a page, hex-encoded and versioned, so they
/// are opaque to clients and can be checked strictly.
/// A page's cursor: `r1.` and the hex of the resource it ended on, and, when
/// it ended on one hold of a shared or semaphore resource, `.` and that
/// hold's fencing token in 17 digits (the stores' `<resource>\0<token>`).
fn encode_cursor(after: &str) -> String {
    match after.split_once('\0') {
        Some((res, ft)) => format!("r1.{}.{ft}", hex::encode(res.as_bytes())),
        None => format!("r1.{}", hex::encode(after.as_bytes())),
    }
}

fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    let bad = || ApiError::invalid_field("cursor", "is not a cursor this service issued");
    let rest = cursor.strip_prefix("r1.").ok_or_else(bad)?;
    let (hexed, token) = match rest.split_once('.') {
        Some((h, t)) if t.len() == 17 && t.bytes().all(|b| b.is_ascii_digit()) => (h, Some(t)),
        Some(_) => return Err(bad()),
        None => (rest, None),
    };
    let bytes = hex::decode(hexed).map_err(|_| bad())?;
    let name = String::from_utf8(bytes).map_err(|_| bad())?;
    Resource::parse(name.clone()).map_err(|_| bad())?;
    Ok(match token {
        Some(t) => format!("{name}\0{t}"),
        None => name,
    })
}

#[utoipa::path(get, path = "/api/v1/Reservation", tag = "reservations", summary = "List active reservations (sorted by resource)", params(ListParams), responses((status = 200, description = "A page", body = ReservationPage<'static>), wire::TenantErrors), security(("apiKey" = [])))]
#[tracing::instrument(skip_all, fields(tenant = %who.caller.tenant))]
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: ReadCaller,
) -> Result<HttpResponse, ApiError> {
    let mut q = Query::parse(
        req.query_string(),
        &["prefix", "requester", "limit", "cursor"],
    )?;
    let params = ListParams {
        prefix: q.string("prefix", Resource::parse)?,
        requester: q.string("requester", Requester::parse)?,
        limit: q.integer("limit", 1, MAX_LIST_LIMIT)?,
        cursor: q.take("cursor"),
    };
    let after = match &params.cursor {
        Some(c) => Some(decode_cursor(c)?),
        None => None,
    };
    let metered = state
        .store
        .list(
            &who.caller,
            &ListQuery {
                prefix: params.prefix,
                requester: params.requester,
                limit: params.limit.unwrap_or(DEFAULT_LIST_LIMIT) as usize,
                after,
            },
        )
        .await?;
    Ok(ok(
        &metered,
        ReservationPage {
            reservations: metered.value.items.iter().map(Reservation::from).collect(),
            next_cursor: metered.value.next_after.as_deref().map(encode_cursor),
        },
    ))
}

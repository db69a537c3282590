//! The JSON the dashboard's script reads, opened by the session cookie (never
//! an API key): a page of reservations with each resource's line of waiters,
//! the tenant's activity of the last 15 minutes with its most contended
//! resources, and live usage against the plan.
//!
//! Every answer carries `now` (the serving instance's clock, in the same
//! RFC 3339 form as every time of the API): the script measures the offset of
//! the browser's clock from it and counts down from `expiresAt` with that
//! offset, so a browser whose clock is wrong still shows the right time left.
//! The shapes of reservations and tenants are the API's own wire types, so a
//! field the API gains (e.g. `holdDeadline`) reaches the dashboard unchanged.
//!
//! Nothing here adds a store operation: it lists, checks and reads the event
//! history as the API does, unmetered like the dashboard's pages, except the
//! usage probe, which is one counted read (that is how it learns what is left).

use super::session::SignedIn;
use super::{now_millis, Session};
use crate::domain::{format_millis, Holding, Millis, Requester, Resource};
use crate::events::{Event, EventId, EventKind, History};
use crate::http::wire::reservations::{Reservation, ReservationPage};
use crate::state::AppState;
use crate::store::{Access, Caller, CheckOutcome, Contended, ListQuery, StoreError};
use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Rows per page of the reservations page by default, and at most.
pub const PAGE_DEFAULT: usize = 50;
pub const PAGE_MAX: usize = 500;
/// The activity chart's window and the width of one of its buckets.
pub const WINDOW_MS: Millis = 15 * 60 * 1000;
pub const BUCKET_MS: Millis = 10 * 1000;
/// The event types the chart draws (`EXTENDED` and `EXPIRING` change no holder).
pub const CHARTED: [EventKind; 4] = [
    EventKind::Reserved,
    EventKind::Unreserved,
    EventKind::Expired,
    EventKind::ForceReleased,
];
/// Resources of the window checked for their line, and rows of the top list.
const CANDIDATES: usize = 25;
const TOP: usize = 10;
/// Resources checked for the usage page's count of waiters.
const USAGE_CHECKED: usize = 200;

pub(super) fn caller(s: &Session) -> Caller {
    Caller {
        tenant: s.tenant.clone(),
        label: "dashboard".into(),
        quota: None,
        idempotency: None,
    }
}

fn json<T: Serialize>(body: &T) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}

fn bad_request(field: &str, why: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(serde_json::json!({
        "error": {"code": "INVALID_REQUEST", "message": format!("{field} {why}"), "details": []}
    }))
}

fn unavailable() -> HttpResponse {
    HttpResponse::ServiceUnavailable().json(serde_json::json!({
        "error": {"code": "STORE_UNAVAILABLE", "message": "the lock store cannot be reached", "details": []}
    }))
}

/// The line and the holders of one resource, as `check` sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    pub queue_length: u64,
    pub holders: usize,
}

impl From<&CheckOutcome> for Line {
    fn from(c: &CheckOutcome) -> Self {
        match c {
            CheckOutcome::Held(_, q) => Self {
                queue_length: *q,
                holders: 1,
            },
            CheckOutcome::Holders {
                holders,
                queue_length,
                ..
            } => Self {
                queue_length: *queue_length,
                holders: holders.len(),
            },
            CheckOutcome::Free(q) => Self {
                queue_length: *q,
                holders: 0,
            },
            // Free but taking no holder until its lock delay ends.
            CheckOutcome::LockDelay { queue_length, .. } => Self {
                queue_length: *queue_length,
                holders: 0,
            },
        }
    }
}

/// `check` of `resources` (in slices the batch limit allows): each one's line.
pub(super) async fn lines(
    state: &AppState,
    s: &Session,
    resources: &[Resource],
) -> Result<BTreeMap<String, Line>, StoreError> {
    let mut out = BTreeMap::new();
    let who = caller(s);
    for chunk in resources.chunks(100) {
        let checked = state.store.check(&who, chunk).await?;
        for (r, c) in chunk.iter().zip(checked.value.iter()) {
            out.insert(r.as_str().to_string(), Line::from(c));
        }
    }
    Ok(out)
}

/// The distinct resources of a page of holds, in order.
pub(super) fn distinct(items: &[Holding]) -> Vec<Resource> {
    let mut out: Vec<Resource> = Vec::new();
    for h in items {
        if out.last() != Some(&h.resource) {
            out.push(h.resource.clone());
        }
    }
    out
}

/// The reservations page's query: filters, page size and cursor (each may
/// be empty, as an HTML form sends them).
#[derive(Deserialize, Default)]
pub(super) struct PageQuery {
    pub prefix: Option<String>,
    pub requester: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

/// The listing a page query asks for, or the field it got wrong and why.
pub(super) fn list_query(q: &PageQuery) -> Result<ListQuery, (&'static str, String)> {
    let limit = page_limit(q.limit.as_deref()).map_err(|why| ("limit", why.to_string()))?;
    let prefix = filter(&q.prefix, Resource::parse).map_err(|why| ("prefix", why))?;
    let requester = filter(&q.requester, Requester::parse).map_err(|why| ("requester", why))?;
    Ok(ListQuery {
        prefix,
        requester,
        limit,
        after: q.cursor.clone().filter(|c| !c.is_empty()),
    })
}

/// A page's size: `PAGE_DEFAULT` when absent, else 1..=`PAGE_MAX`.
pub fn page_limit(raw: Option<&str>) -> Result<usize, &'static str> {
    match raw.map(str::trim) {
        None | Some("") => Ok(PAGE_DEFAULT),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=PAGE_MAX).contains(&n) => Ok(n),
            _ => Err("is a whole number from 1 to 500"),
        },
    }
}

/// An optional filter: empty means none.
fn filter<T>(
    raw: &Option<String>,
    parse: impl Fn(String) -> Result<T, crate::domain::Invalid>,
) -> Result<Option<T>, String> {
    match raw.as_deref() {
        None | Some("") => Ok(None),
        Some(v) => parse(v.to_string()).map(Some).map_err(|e| e.0),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReservationsData<'a> {
    now: String,
    #[serde(flatten)]
    page: ReservationPage<'a>,
    /// Each listed resource's line (`queueLength`) and holder count.
    resources: BTreeMap<String, Line>,
}

/// `GET /dashboard/data/reservations?prefix=&requester=&cursor=&limit=`: one
/// page of active holds (the API's listing), with `now` and each resource's
/// line. `cursor` is the `nextCursor` of the page before.
#[tracing::instrument(skip_all, fields(tenant = %s.tenant))]
pub(super) async fn reservations(
    state: web::Data<AppState>,
    SignedIn(s): SignedIn,
    q: web::Query<PageQuery>,
) -> HttpResponse {
    // Only a session opens it, and it changes nothing: no CSRF token needed
    // (a cross-site page can neither send the Lax cookie with fetch nor read
    // the answer).
    let query = match list_query(&q) {
        Ok(query) => query,
        Err((field, why)) => return bad_request(field, &why),
    };
    let Ok(listed) = state.store.list(&caller(&s), &query).await else {
        return unavailable();
    };
    let page = listed.value;
    let Ok(resources) = lines(&state, &s, &distinct(&page.items)).await else {
        return unavailable();
    };
    // The store's clock, which every expiry is counted by (Redis TIME).
    let Ok(now) = state.store.clock_ms().await else {
        return unavailable();
    };
    json(&ReservationsData {
        now: format_millis(now),
        page: ReservationPage {
            reservations: page.items.iter().map(Reservation::from).collect(),
            next_cursor: page.next_after.clone(),
        },
        resources,
    })
}

/// Events per bucket of the window, by charted type, oldest bucket first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    /// When the first bucket starts (ms since the epoch, a multiple of `bucket_ms`).
    pub start: Millis,
    pub bucket_ms: Millis,
    pub counts: BTreeMap<&'static str, Vec<u32>>,
}

/// Buckets `events` into the window ending at `now`: `WINDOW_MS / BUCKET_MS`
/// buckets, the last one holding `now`. Events outside it are left out.
pub fn series(events: &[Event], now: Millis) -> Series {
    let n = (WINDOW_MS / BUCKET_MS) as usize;
    let last = now - now % BUCKET_MS;
    let start = last.saturating_sub((n as Millis - 1) * BUCKET_MS);
    let mut counts: BTreeMap<&'static str, Vec<u32>> =
        CHARTED.iter().map(|k| (k.as_str(), vec![0; n])).collect();
    for e in events {
        if e.at < start || e.at >= last + BUCKET_MS {
            continue;
        }
        let i = ((e.at - start) / BUCKET_MS) as usize;
        if let Some(slot) = counts.get_mut(e.kind.as_str()).and_then(|v| v.get_mut(i)) {
            *slot += 1;
        }
    }
    Series {
        start,
        bucket_ms: BUCKET_MS,
        counts,
    }
}

/// What the window's events say about one resource, and its line now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Contention {
    pub resource: String,
    /// Waiters in its line now (`check`'s `queueLength`).
    pub waiting: u64,
    /// The store's contention counters (last hour): requests that joined its
    /// line, and waits there that timed out.
    pub waits: u64,
    pub timed_out: u64,
    /// Holds granted in the window (`RESERVED`), hand-overs to waiters included.
    pub reserved: u32,
    /// Holds that ran out (`EXPIRED`) or were taken away (`FORCE_RELEASED`).
    pub expired: u32,
    pub force_released: u32,
}

/// The resources of the window's events, busiest first (most `RESERVED`,
/// `EXPIRED` and `FORCE_RELEASED` events), at most `CANDIDATES`.
pub fn candidates(events: &[Event]) -> Vec<Contention> {
    let mut by: HashMap<&str, Contention> = HashMap::new();
    for e in events {
        let c = by.entry(e.resource.as_str()).or_insert_with(|| Contention {
            resource: e.resource.clone(),
            ..Default::default()
        });
        match e.kind {
            EventKind::Reserved => c.reserved += 1,
            EventKind::Expired => c.expired += 1,
            EventKind::ForceReleased => c.force_released += 1,
            _ => {}
        }
    }
    let mut all: Vec<Contention> = by.into_values().collect();
    all.sort_by(|a, b| {
        let busy = |c: &Contention| c.reserved + c.expired + c.force_released;
        busy(b)
            .cmp(&busy(a))
            .then_with(|| a.resource.cmp(&b.resource))
    });
    all.truncate(CANDIDATES);
    all
}

/// Adds the store's contention counters to the candidates of the events
/// (a resource only the counters name joins them).
pub fn with_counters(mut all: Vec<Contention>, counters: &[Contended]) -> Vec<Contention> {
    for c in counters {
        match all.iter_mut().find(|x| x.resource == c.resource) {
            Some(x) => {
                x.waits = c.waits;
                x.timed_out = c.timed_out;
            }
            None => all.push(Contention {
                resource: c.resource.clone(),
                waits: c.waits,
                timed_out: c.timed_out,
                ..Default::default()
            }),
        }
    }
    all
}

/// The most contended first: longest line now, then most waits that timed
/// out, most waits, then most expiries and force releases (holders that did
/// not let go), then most holds; at most `TOP`.
pub fn rank(mut all: Vec<Contention>) -> Vec<Contention> {
    all.sort_by(|a, b| {
        b.waiting
            .cmp(&a.waiting)
            .then_with(|| b.timed_out.cmp(&a.timed_out))
            .then_with(|| b.waits.cmp(&a.waits))
            .then_with(|| (b.expired + b.force_released).cmp(&(a.expired + a.force_released)))
            .then_with(|| b.reserved.cmp(&a.reserved))
            .then_with(|| a.resource.cmp(&b.resource))
    });
    all.truncate(TOP);
    all
}

/// Where to read the tenant's history from to get everything after `from`
/// that is still retained: `from` itself when nothing after it was dropped;
/// after a trim, the first millisecond past `from` that reads without a gap
/// (bisected up to the latest event, a few dozen one-event reads at most).
/// `None` when no event follows `from`.
pub(super) async fn readable_from(
    state: &AppState,
    tenant: &crate::domain::TenantId,
    from: EventId,
) -> Result<Option<EventId>, StoreError> {
    let latest = match state.store.events_after(tenant, from, 1).await? {
        History::Events(_) => return Ok(Some(from)),
        History::Gap { latest } => match latest {
            Some(l) if l > from => l,
            _ => return Ok(None),
        },
    };
    // Invariant: reading after `lo` is a gap, reading after `hi` is not (the
    // latest event's own millisecond, seq 0, is never older than the history).
    let (mut lo, mut hi) = (from.ms, latest.ms);
    while hi > lo + 1 {
        let mid = lo + (hi - lo) / 2;
        let probe = EventId { ms: mid, seq: 0 };
        match state.store.events_after(tenant, probe, 1).await? {
            History::Events(_) => hi = mid,
            History::Gap { .. } => lo = mid,
        }
    }
    Ok(Some(EventId { ms: hi, seq: 0 }))
}

/// The tenant's retained events of the window ending at `now`, oldest first
/// (at most 20,000). A window reaching before the retained history starts
/// where the history does.
async fn window(state: &AppState, s: &Session, now: Millis) -> Result<Vec<Event>, StoreError> {
    let from = EventId {
        ms: now.saturating_sub(WINDOW_MS),
        seq: 0,
    };
    let Some(mut after) = readable_from(state, &s.tenant, from).await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for _ in 0..20 {
        match state.store.events_after(&s.tenant, after, 1000).await? {
            History::Events(page) => {
                let full = page.len() == 1000;
                if let Some(last) = page.last() {
                    after = last.id;
                }
                out.extend(page);
                if !full {
                    break;
                }
            }
            // Trimmed while we read: what we have is the window's start.
            History::Gap { .. } => break,
        }
    }
    Ok(out)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ActivityData {
    now: String,
    series: Series,
    top: Vec<Contention>,
}

/// `GET /dashboard/data/activity`: events per 10 s bucket by type over the
/// last 15 minutes, and the most contended resources of that window.
#[tracing::instrument(skip_all, fields(tenant = %s.tenant))]
pub(super) async fn activity(state: web::Data<AppState>, SignedIn(s): SignedIn) -> HttpResponse {
    let Ok(now) = state.store.clock_ms().await else {
        return unavailable();
    };
    let Ok(events) = window(&state, &s, now).await else {
        return unavailable();
    };
    let Ok(counters) = state.store.contention(&s.tenant, CANDIDATES).await else {
        return unavailable();
    };
    let mut top = with_counters(candidates(&events), &counters);
    let mut checked = Vec::new();
    for c in &top {
        if let Ok(r) = Resource::parse(c.resource.clone()) {
            checked.push(r);
        }
    }
    let Ok(lines) = lines(&state, &s, &checked).await else {
        return unavailable();
    };
    for c in &mut top {
        c.waiting = lines.get(&c.resource).map_or(0, |l| l.queue_length);
    }
    json(&ActivityData {
        now: format_millis(now),
        series: series(&events, now),
        top: rank(top),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rate {
    limit: u32,
    remaining: u64,
    reset_seconds: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageData {
    now: String,
    /// The read partition after this probe (which counted as one read).
    reads: Rate,
    writes_per_second: u32,
    keys: usize,
    key_limit: Option<usize>,
    /// Active holds (up to 1000 counted) and the waiters in the lines of the
    /// first `USAGE_CHECKED` held resources.
    active: usize,
    waiters: u64,
    waiter_limit: usize,
}

/// `GET /dashboard/data/usage`: live usage against the plan's limits. It
/// counts as one read of the tenant, and answers the `RateLimit-*` headers of
/// that read like the API does.
#[tracing::instrument(skip_all, fields(tenant = %s.tenant))]
pub(super) async fn usage(state: web::Data<AppState>, SignedIn(s): SignedIn) -> HttpResponse {
    let (Ok(Some(tenant)), Ok(Some(keys))) = (
        state.store.get_tenant(&s.tenant).await,
        state.store.list_keys(&s.tenant).await,
    ) else {
        return unavailable();
    };
    let quota = crate::http::extract::quota(&state.rates, tenant.tier, Access::Read);
    let decision = match state.store.charge(&s.tenant, &quota).await {
        Ok(d) | Err(StoreError::RateLimited(d)) => d,
        Err(_) => return unavailable(),
    };
    let query = ListQuery {
        prefix: None,
        requester: None,
        limit: 1000,
        after: None,
    };
    let Ok(listed) = state.store.list(&caller(&s), &query).await else {
        return unavailable();
    };
    let held = distinct(&listed.value.items);
    let checked = &held[..held.len().min(USAGE_CHECKED)];
    let Ok(lines) = lines(&state, &s, checked).await else {
        return unavailable();
    };
    let mut res = HttpResponse::Ok();
    res.insert_header((header::CACHE_CONTROL, "no-store"));
    crate::http::rate_headers::add_headers(&mut res, Some(&decision));
    res.json(UsageData {
        now: format_millis(now_millis()),
        reads: Rate {
            limit: decision.limit,
            remaining: decision.remaining,
            reset_seconds: decision.reset_ms.div_ceil(1000),
        },
        writes_per_second: state.rates.writes(tenant.tier),
        keys: keys.len(),
        key_limit: tenant.tier.key_limit(),
        active: listed.value.items.len(),
        waiters: lines.values().map(|l| l.queue_length).sum(),
        waiter_limit: crate::http::waiting::max_waiters(tenant.tier),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Kind;

    fn event(kind: EventKind, resource: &str, at: Millis) -> Event {
        Event {
            id: EventId { ms: at, seq: 0 },
            kind,
            resource: resource.into(),
            requester: "w".into(),
            label: "k".into(),
            at,
            expires_at: None,
            fencing_token: 1,
            hold: Kind::Exclusive,
        }
    }

    #[test]
    fn page_limit_defaults_and_refuses_what_is_out_of_range() {
        assert_eq!(page_limit(None), Ok(PAGE_DEFAULT));
        assert_eq!(page_limit(Some("")), Ok(PAGE_DEFAULT));
        assert_eq!(page_limit(Some("1")), Ok(1));
        assert_eq!(page_limit(Some("500")), Ok(500));
        for bad in ["0", "501", "-1", "ten", "1e3"] {
            assert!(page_limit(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn series_buckets_events_of_the_window_by_type() {
        // Arrange: now is 5 s into a bucket.
        let now: Millis = 1_000_000_005_000;
        let last = now - 5_000;
        let events = [
            event(EventKind::Reserved, "a", now),
            event(EventKind::Reserved, "b", last),
            event(EventKind::Unreserved, "a", last - 1),
            event(EventKind::Expired, "c", last - WINDOW_MS + BUCKET_MS),
            // Outside the window, and a type the chart does not draw.
            event(EventKind::Reserved, "old", last - WINDOW_MS),
            event(EventKind::Extended, "a", now),
        ];

        // Act
        let s = series(&events, now);

        // Assert: 90 buckets ending with the one holding now.
        let n = (WINDOW_MS / BUCKET_MS) as usize;
        assert_eq!(s.start, last - (n as Millis - 1) * BUCKET_MS);
        assert_eq!(s.counts["RESERVED"].len(), n);
        assert_eq!(s.counts["RESERVED"][n - 1], 2);
        assert_eq!(s.counts["RESERVED"].iter().sum::<u32>(), 2);
        assert_eq!(s.counts["UNRESERVED"][n - 2], 1);
        assert_eq!(s.counts["EXPIRED"][0], 1);
        assert_eq!(s.counts["FORCE_RELEASED"].iter().sum::<u32>(), 0);
        assert!(!s.counts.contains_key("EXTENDED"));
    }

    #[test]
    fn the_longest_line_ranks_first_then_holders_that_did_not_let_go() {
        // Arrange: "busy" has the most holds, "stuck" expired twice, "queued"
        // has waiters now.
        let mut events = Vec::new();
        for _ in 0..5 {
            events.push(event(EventKind::Reserved, "busy", 1));
            events.push(event(EventKind::Unreserved, "busy", 1));
        }
        events.push(event(EventKind::Reserved, "stuck", 1));
        events.push(event(EventKind::Expired, "stuck", 2));
        events.push(event(EventKind::Expired, "stuck", 3));
        events.push(event(EventKind::Reserved, "queued", 1));

        // Act
        let mut all = candidates(&events);
        assert_eq!(all[0].resource, "busy", "candidates: busiest first");
        for c in &mut all {
            if c.resource == "queued" {
                c.waiting = 3;
            }
        }
        let top = rank(all);

        // Assert
        let order: Vec<&str> = top.iter().map(|c| c.resource.as_str()).collect();
        assert_eq!(order, ["queued", "stuck", "busy"]);
        assert_eq!(top[1].expired, 2);
        assert_eq!(top[2].reserved, 5);
    }

    #[test]
    fn a_line_counts_holders_and_waiters_of_every_kind() {
        let h = Holding {
            resource: Resource::parse("r").expect("name"),
            requester: "w".into(),
            reserved_at: 1,
            expires_at: None,
            fencing_token: 1,
            api_key_label: "k".into(),
            kind: Kind::Semaphore(3),
            hold_deadline: None,
        };
        assert_eq!(
            Line::from(&CheckOutcome::Held(h.clone(), 2)),
            Line {
                queue_length: 2,
                holders: 1
            }
        );
        let two = CheckOutcome::Holders {
            kind: Kind::Semaphore(3),
            holders: vec![h.clone(), h],
            queue_length: 0,
        };
        assert_eq!(Line::from(&two).holders, 2);
        assert_eq!(Line::from(&CheckOutcome::Free(4)).queue_length, 4);
        let delayed = CheckOutcome::LockDelay {
            queue_length: 2,
            available_at: 9,
        };
        assert_eq!(
            Line::from(&delayed),
            Line {
                queue_length: 2,
                holders: 0
            }
        );
    }
}

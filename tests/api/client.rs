//! The Rust client library (`client/`, `cooplocker_client`) against a real
//! server: every method on both stores, the `Idempotency-Key` reused on a
//! retry, `Retry-After` honoured on 429 and 503, the event stream resumed with
//! `Last-Event-ID` after its instance went away, and `Lease`: renewed past
//! its TTL, lost on a force release, released on drop.

use crate::both_stores;
use crate::helpers::{
    create_tenant, eventually, free_port, settings, spawn_app_with, start_instance, Kind,
    RedisServer, TestApp,
};
use cooplocker_client::{
    BatchOptions, Client, Error, ErrorCode, EventFilter, EventKind, EventStream, ExtendItem,
    FenceStatus, Holders, Kind as HoldKind, LeaseState, ListQuery, LostReason, Mode, ReleaseItem,
    ReserveItem, RetryPolicy, Status, ValidateItem,
};
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

both_stores!(
    every_method_answers_as_the_contract_says,
    kinds_waiting_and_atomic_batches,
    a_retry_after_a_lost_answer_reuses_the_idempotency_key,
    a_lease_renews_past_its_ttl_and_releases,
    a_force_released_lease_is_lost,
    a_dropped_lease_frees_the_resource,
);

fn client(app: &TestApp) -> Client {
    Client::new(&app.address, &app.api_key).expect("client")
}

fn token(r: &cooplocker_client::ItemResult) -> String {
    r.release_token.clone().expect("a release token")
}

async fn every_method_answers_as_the_contract_says(app: TestApp) {
    let c = client(&app);

    // reserve: RESERVED, then ALREADY_HELD for anyone else.
    let got = c
        .reserve(&[ReserveItem::new("m/a", "alice").ttl(30)])
        .await
        .expect("reserve");
    let a = &got.results[0];
    assert_eq!(a.status, Status::Reserved, "{got:?}");
    assert!(!got.replayed);
    assert_eq!(got.committed, None);
    let fence = a.fencing_token.expect("a fencing token");
    let held = c
        .reserve(&[ReserveItem::new("m/a", "bob")])
        .await
        .expect("reserve");
    assert_eq!(held.results[0].status, Status::AlreadyHeld);
    assert_eq!(held.results[0].held_by.as_deref(), Some("alice"));

    // check: HELD with the holder, FREE otherwise.
    let checked = c.check(&["m/a", "m/free"]).await.expect("check");
    assert_eq!(checked[0].status, Status::Held);
    assert_eq!(checked[0].requester.as_deref(), Some("alice"));
    assert_eq!(checked[0].fencing_token, Some(fence));
    assert_eq!(checked[1].status, Status::Free);

    // extend: EXTENDED, same fencing token; a wrong token changes nothing.
    let ext = c
        .extend(&[
            ExtendItem::new("m/a", "alice", token(a), 60),
            ExtendItem::new("m/a", "alice", uuid_like(), 60),
        ])
        .await
        .expect("extend");
    assert_eq!(ext.results[0].status, Status::Extended);
    assert!(ext.results[0].expires_at.is_some());
    assert_eq!(ext.results[1].status, Status::InvalidToken);

    // validate: CURRENT for the holder's token, STALE for an older one.
    let fences = c
        .validate(&[
            ValidateItem {
                resource: "m/a".into(),
                fencing_token: fence,
            },
            ValidateItem {
                resource: "m/a".into(),
                fencing_token: fence - 1,
            },
        ])
        .await
        .expect("validate");
    assert_eq!(fences[0].status, FenceStatus::Current);
    assert_eq!(fences[0].requester.as_deref(), Some("alice"));
    assert_eq!(fences[1].status, FenceStatus::Stale);
    assert_eq!(fences[1].current_fencing_token, Some(fence));

    // list: pages of 2 over 5 resources, followed by cursor, sorted.
    let more: Vec<_> = (1..=4)
        .map(|i| ReserveItem::new(format!("m/p{i}"), "lister"))
        .collect();
    c.reserve(&more).await.expect("reserve");
    let first = c
        .list(&ListQuery::default().prefix("m/").limit(2))
        .await
        .expect("list");
    assert_eq!(first.reservations.len(), 2);
    assert_eq!(first.reservations[0].resource, "m/a");
    assert_eq!(first.reservations[0].api_key_label, "default");
    let cursor = first.next_cursor.clone().expect("a next page");
    let second = c
        .list(&ListQuery::default().prefix("m/").limit(2).cursor(cursor))
        .await
        .expect("list");
    assert_eq!(second.reservations[0].resource, "m/p2");
    let all = c
        .list_all(ListQuery::default().prefix("m/").limit(2), 10)
        .await
        .expect("list all");
    let names: Vec<_> = all.iter().map(|r| r.resource.as_str()).collect();
    assert_eq!(names, ["m/a", "m/p1", "m/p2", "m/p3", "m/p4"]);
    let mine = c
        .list(&ListQuery::default().requester("alice"))
        .await
        .expect("list");
    assert_eq!(mine.reservations.len(), 1);
    assert_eq!(mine.next_cursor, None);

    // unreserve: INVALID_TOKEN for another requester, UNRESERVED, NOT_HELD.
    let rel = c
        .unreserve(&[
            ReleaseItem::new("m/a", "mallory", token(a)),
            ReleaseItem::new("m/a", "alice", token(a)),
            ReleaseItem::new("m/a", "alice", token(a)),
        ])
        .await
        .expect("unreserve");
    let statuses: Vec<_> = rel.results.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [Status::InvalidToken, Status::Unreserved, Status::NotHeld]
    );

    // Errors: the contract's code, status, message and details.
    let err = c
        .reserve(&[ReserveItem::new("", "alice")])
        .await
        .expect_err("an empty resource is refused");
    match &err {
        Error::Api(e) => {
            assert_eq!((e.status, &e.code), (400, &ErrorCode::InvalidRequest));
            assert!(!e.message.is_empty());
            assert!(
                e.details
                    .iter()
                    .any(|d| d.index == Some(0) && d.field.as_deref() == Some("resource")),
                "{e:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let bad = Client::new(&app.address, "not-a-key").expect("client");
    let err = bad.check(&["m/a"]).await.expect_err("401");
    assert_eq!(err.code(), Some(&ErrorCode::Unauthorized));
    assert_eq!(err.status(), Some(401));
    let down = Client::builder(format!("http://127.0.0.1:{}", free_port()), "k")
        .retry(RetryPolicy::never())
        .build()
        .expect("client");
    assert!(matches!(down.check(&["x"]).await, Err(Error::Transport(_))));
}

/// A random UUID that no reservation has.
fn uuid_like() -> String {
    "00000000-0000-4000-8000-000000000000".into()
}

async fn kinds_waiting_and_atomic_batches(app: TestApp) {
    let c = client(&app);

    // A semaphore of 2: two permits, then ALREADY_HELD with the count.
    let sem = |who: &str| {
        ReserveItem::new("k/sem", who)
            .ttl(30)
            .kind(HoldKind::Semaphore(2))
    };
    let got = c
        .reserve(&[sem("s1"), sem("s2"), sem("s3")])
        .await
        .expect("reserve");
    let statuses: Vec<_> = got.results.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [Status::Reserved, Status::Reserved, Status::AlreadyHeld]
    );
    assert_eq!(got.results[0].mode, Some(Mode::Semaphore));
    assert_eq!(got.results[0].limit, Some(2));
    assert_eq!(got.results[2].holders, Some(Holders::Count(2)));
    assert_eq!(got.results[2].available, Some(0));
    let checked = c.check(&["k/sem"]).await.expect("check");
    match &checked[0].holders {
        Some(Holders::List(list)) => assert_eq!(list.len(), 2),
        other => panic!("holders {other:?}"),
    }
    // Another kind on it: LIMIT_MISMATCH.
    let other = c
        .reserve(&[ReserveItem::new("k/sem", "x")])
        .await
        .expect("reserve");
    assert_eq!(other.results[0].status, Status::LimitMismatch);

    // Shared holds admit readers and block a writer.
    let read = |who: &str| ReserveItem::new("k/rw", who).ttl(30).kind(HoldKind::Shared);
    let got = c.reserve(&[read("r1"), read("r2")]).await.expect("reserve");
    assert!(got.results.iter().all(|r| r.status == Status::Reserved));
    assert_eq!(got.results[0].mode, Some(Mode::Shared));
    let writer = c
        .reserve(&[ReserveItem::new("k/rw", "w")])
        .await
        .expect("reserve");
    assert_eq!(writer.results[0].status, Status::AlreadyHeld);

    // atomic: nothing changes when one item fails.
    let atomic = c
        .reserve_with(
            &[
                ReserveItem::new("k/new", "w"),
                ReserveItem::new("k/rw", "w"),
            ],
            &BatchOptions::default().atomic(),
        )
        .await
        .expect("reserve");
    assert_eq!(atomic.committed, Some(false));
    assert_eq!(atomic.results[0].status, Status::Aborted);
    assert_eq!(
        c.check(&["k/new"]).await.expect("check")[0].status,
        Status::Free
    );

    // waitSeconds: the waiter gets it when the holder lets go.
    let held = c
        .reserve(&[ReserveItem::new("k/wait", "first").ttl(30)])
        .await
        .expect("reserve");
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move {
            c.reserve_with(
                &[ReserveItem::new("k/wait", "second").ttl(30)],
                &BatchOptions::default().wait_seconds(5),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.unreserve(&[ReleaseItem::new("k/wait", "first", token(&held.results[0]))])
        .await
        .expect("unreserve");
    let granted = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter is answered")
        .expect("task")
        .expect("reserve");
    assert_eq!(granted.results[0].status, Status::Reserved);
    assert!(granted.results[0].waited_ms.is_some_and(|ms| ms >= 200));
    // ... and one that is not let go times out.
    let start = Instant::now();
    let timed_out = c
        .reserve_with(
            &[ReserveItem::new("k/wait", "third").ttl(30)],
            &BatchOptions::default().wait_seconds(1),
        )
        .await
        .expect("reserve");
    assert_eq!(timed_out.results[0].status, Status::TimedOut);
    assert!(start.elapsed() >= Duration::from_millis(900));
}

/// What the flaky proxy saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    idempotency_key: Option<String>,
    status: u16,
    replayed: bool,
    body: serde_json::Value,
    /// When its answer came back from the server.
    at: Instant,
}

/// A reverse proxy in front of `upstream` that forwards every request, but
/// answers the first `lose` of them `503` (with `Retry-After: 1`) instead of
/// the server's answer: a committed write whose answer was lost.
async fn flaky_proxy(upstream: String, lose: usize) -> (String, Arc<Mutex<Vec<Seen>>>) {
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let http = reqwest::Client::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let server = HttpServer::new(move || {
        let (log, http, upstream) = (log.clone(), http.clone(), upstream.clone());
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let (log, http, upstream) = (log.clone(), http.clone(), upstream.clone());
            async move {
                let method =
                    reqwest::Method::from_bytes(req.method().as_str().as_bytes()).expect("method");
                let mut out = http.request(method, format!("{upstream}{}", req.uri()));
                for (name, value) in req.headers() {
                    if !matches!(name.as_str(), "host" | "content-length") {
                        out = out.header(name.as_str(), value.as_bytes());
                    }
                }
                let res = out.body(body.to_vec()).send().await.expect("upstream");
                let status = res.status().as_u16();
                let replayed = res.headers().contains_key("idempotent-replayed");
                let headers: Vec<(String, Vec<u8>)> = res
                    .headers()
                    .iter()
                    .filter(|(n, _)| {
                        !matches!(
                            n.as_str(),
                            "content-length" | "transfer-encoding" | "connection" | "date"
                        )
                    })
                    .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                    .collect();
                let bytes = res.bytes().await.expect("upstream body");
                let n = {
                    let mut log = log.lock().expect("log");
                    log.push(Seen {
                        idempotency_key: req
                            .headers()
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string),
                        status,
                        replayed,
                        body: serde_json::from_slice(&bytes).unwrap_or_default(),
                        at: Instant::now(),
                    });
                    log.len()
                };
                if n <= lose {
                    return HttpResponse::ServiceUnavailable()
                        .insert_header(("Retry-After", "1"))
                        .content_type("application/json")
                        .body(r#"{"error":{"code":"STORE_UNAVAILABLE","message":"lost","details":[]}}"#);
                }
                let mut answer = HttpResponse::build(
                    actix_web::http::StatusCode::from_u16(status).expect("status"),
                );
                for (name, value) in headers {
                    answer.insert_header((name, value));
                }
                answer.body(bytes.to_vec())
            }
        }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("listen")
    .run();
    tokio::spawn(server);
    (address, seen)
}

async fn a_retry_after_a_lost_answer_reuses_the_idempotency_key(app: TestApp) {
    // Arrange: the first answer is lost on the way back (the server did it).
    let (proxy, seen) = flaky_proxy(app.address.clone(), 1).await;
    let c = Client::new(&proxy, &app.api_key).expect("client");

    // Act
    let start = Instant::now();
    let got = c
        .reserve(&[ReserveItem::new("idem/one", "w").ttl(30)])
        .await
        .expect("the retry succeeds");

    // Assert: two attempts, one key, the second a replay of the first.
    let elapsed = start.elapsed();
    let seen = seen.lock().expect("log").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].idempotency_key.is_some());
    assert_eq!(seen[0].idempotency_key, seen[1].idempotency_key);
    assert_eq!(seen[0].status, 200);
    assert_eq!(seen[0].body["results"][0]["status"], "RESERVED");
    assert!(!seen[0].replayed);
    assert!(seen[1].replayed, "{seen:?}");
    assert!(elapsed >= Duration::from_secs(1), "Retry-After: 1 honoured");
    assert!(got.replayed);
    let r = &got.results[0];
    assert_eq!(r.status, Status::Reserved);
    assert_eq!(
        Some(r.release_token.as_deref().unwrap_or("")),
        seen[0].body["results"][0]["releaseToken"].as_str()
    );
    assert_eq!(
        r.fencing_token,
        seen[0].body["results"][0]["fencingToken"].as_u64()
    );
    // One hold, and the token the client got releases it.
    let direct = client(&app);
    let listed = direct
        .list(&ListQuery::default().prefix("idem/"))
        .await
        .expect("list");
    assert_eq!(listed.reservations.len(), 1);
    let rel = direct
        .unreserve(&[ReleaseItem::new("idem/one", "w", token(r))])
        .await
        .expect("unreserve");
    assert_eq!(rel.results[0].status, Status::Unreserved);

    // A chosen key: the repeat replays; the same key for another body is 422.
    let opts = BatchOptions::default().idempotency_key("chosen-1");
    let one = direct
        .reserve_with(&[ReserveItem::new("idem/two", "w")], &opts)
        .await
        .expect("reserve");
    let again = direct
        .reserve_with(&[ReserveItem::new("idem/two", "w")], &opts)
        .await
        .expect("reserve");
    assert!(!one.replayed && again.replayed);
    assert_eq!(one.results, again.results);
    let reused = direct
        .reserve_with(&[ReserveItem::new("idem/three", "w")], &opts)
        .await
        .expect_err("422");
    assert_eq!(reused.code(), Some(&ErrorCode::IdempotencyKeyReused));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_call_waits_for_retry_after() {
    // Arrange: a starter tenant allowed one write a second.
    let app = spawn_app_with(Kind::Embedded, |s| s.rate_limits.starter = 1).await;
    let (_, key) = create_tenant(&app.client, &app.address, "slow", "starter").await;
    let once = Client::builder(&app.address, &key)
        .retry(RetryPolicy::never())
        .build()
        .expect("client");
    let (proxy, seen) = flaky_proxy(app.address.clone(), 0).await;
    let patient = Client::new(&proxy, &key).expect("client");
    let item = |r: &str| [ReserveItem::new(r, "w")];
    once.reserve(&item("rl/1")).await.expect("the first write");
    let refused = once.reserve(&item("rl/2")).await.expect_err("429");
    let retry_after = match &refused {
        Error::Api(e) => {
            assert_eq!((e.status, &e.code), (429, &ErrorCode::RateLimited));
            e.retry_after.expect("Retry-After")
        }
        other => panic!("{other:?}"),
    };
    assert!(retry_after >= Duration::from_secs(1));

    // Act: within the same second, with retries.
    let start = Instant::now();
    let got = patient.reserve(&item("rl/3")).await.expect("retried");

    // Assert: refused once, then, Retry-After later, let through: two
    // attempts under one Idempotency-Key, not a burst of back-offs.
    assert_eq!(got.results[0].status, Status::Reserved);
    let waited = start.elapsed();
    assert!(waited < retry_after + Duration::from_secs(2), "{waited:?}");
    let seen = seen.lock().expect("log").clone();
    let statuses: Vec<_> = seen.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [429, 200], "{seen:?}");
    assert!(seen[0].idempotency_key.is_some());
    assert_eq!(seen[0].idempotency_key, seen[1].idempotency_key);
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= retry_after,
        "retried after {gap:?}, Retry-After {retry_after:?}"
    );
    assert_eq!(
        patient.check(&["rl/2"]).await.expect("check")[0].status,
        Status::Free,
        "the refused write changed nothing"
    );
}

/// The next event; with `skip_probes`, the next one that is not a probe of
/// the connection (`ev/probe/...`).
async fn next_event(events: &mut EventStream, skip_probes: bool) -> cooplocker_client::Event {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream goes on")
            .expect("an event, not an error");
        if !(skip_probes && ev.resource.starts_with("ev/probe/")) {
            return ev;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_resumes_with_last_event_id_after_its_instance_stops() {
    // Arrange: instance A on a fixed port, B beside it, one Redis.
    let redis = RedisServer::start();
    let port = free_port();
    let mut on_port = settings(Some(redis.url()));
    on_port.listen = format!("127.0.0.1:{port}").parse().expect("address");
    let (a, handle_a) = start_instance(on_port.clone()).await;
    let (b, _handle_b) = start_instance(settings(Some(redis.url()))).await;
    let (_, key) = create_tenant(&crate::helpers::client(), &a, "resume", "pro").await;
    let via_a = Client::new(&a, &key).expect("client");
    let via_b = Client::new(&b, &key).expect("client");
    let mut events = via_a.events(
        EventFilter::default()
            .prefix("ev/")
            .reconnect_delay(Duration::from_millis(200)),
    );
    let reserve = |c: &Client, r: &'static str| {
        let c = c.clone();
        async move {
            let got = c
                .reserve(&[ReserveItem::new(r, "w")])
                .await
                .expect("reserve");
            assert_eq!(got.results[0].status, Status::Reserved);
        }
    };
    // The stream connects on its first poll: probe until it has seen one.
    let first = tokio::spawn(async move {
        let ev = next_event(&mut events, false).await;
        (ev, events)
    });
    for i in 0..50 {
        if first.is_finished() {
            break;
        }
        let probe = ReserveItem::new(format!("ev/probe/{i}"), "w");
        via_b.reserve(&[probe]).await.expect("reserve");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ev, mut events) = first.await.expect("task");
    assert!(ev.resource.starts_with("ev/probe/"), "{ev:?}");
    assert_eq!(events.connections(), 1);
    reserve(&via_b, "ev/1").await;
    assert_eq!(next_event(&mut events, true).await.resource, "ev/1");

    // Act: A stops (the stream breaks); events happen while it is down; a
    // new instance comes up on A's port.
    handle_a.stop(false).await;
    reserve(&via_b, "ev/2").await;
    reserve(&via_b, "ev/3").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_a2, _handle_a2) = start_instance(on_port).await;
    reserve(&via_b, "ev/4").await;

    // Assert: the missed events in order, then the live one, none twice.
    let mut got = Vec::new();
    for _ in 0..3 {
        let ev = next_event(&mut events, true).await;
        assert_eq!(ev.kind, EventKind::Reserved);
        got.push(ev.resource);
    }
    assert_eq!(got, ["ev/2", "ev/3", "ev/4"]);
    assert!(events.connections() >= 2, "it reconnected");
    let extra = tokio::time::timeout(Duration::from_millis(500), events.next()).await;
    assert!(extra.is_err(), "nothing repeated: {extra:?}");
    assert!(events.last_event_id().is_some());
}

async fn a_lease_renews_past_its_ttl_and_releases(app: TestApp) {
    let c = client(&app);
    let lease = c
        .lease("lease/renewed")
        .ttl(Duration::from_secs(2))
        .requester("holder")
        .acquire()
        .await
        .expect("acquire");
    let fence = lease.fencing_token();
    assert!(fence > 0 && !lease.release_token().is_empty());
    assert_eq!(lease.requester(), "holder");

    // Held for twice its TTL: renewed every ~0.67 s, same hold throughout.
    tokio::time::sleep(Duration::from_millis(4200)).await;
    let checked = c.check(&["lease/renewed"]).await.expect("check");
    assert_eq!(checked[0].status, Status::Held);
    assert_eq!(checked[0].fencing_token, Some(fence));
    assert!(!lease.is_lost());
    match lease.state() {
        LeaseState::Held { renewals, .. } => assert!(renewals >= 4, "{renewals} renewals"),
        other => panic!("{other:?}"),
    }
    // Someone else waits and gets it once the lease is released.
    let other = c.clone();
    let waiter = tokio::spawn(async move {
        other
            .lease("lease/renewed")
            .ttl(Duration::from_secs(5))
            .wait(Duration::from_secs(5))
            .requester("next")
            .acquire()
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(lease.release().await.expect("release"));
    let next = waiter.await.expect("task").expect("the waiter acquires");
    assert!(next.fencing_token() > fence);
    // Not acquired without waiting while it is held.
    let refused = c
        .lease("lease/renewed")
        .ttl(Duration::from_secs(5))
        .acquire()
        .await
        .expect_err("held");
    assert!(
        matches!(&refused, Error::NotAcquired { status, held_by, .. } if status == "ALREADY_HELD" && held_by.as_deref() == Some("next")),
        "{refused:?}"
    );
    next.release().await.expect("release");
}

async fn a_force_released_lease_is_lost(app: TestApp) {
    let c = client(&app);
    let lease = c
        .lease("lease/forced")
        .ttl(Duration::from_secs(2))
        .acquire()
        .await
        .expect("acquire");
    let r = app.force_release("lease/forced").await;
    assert_eq!(r.status, reqwest::StatusCode::NO_CONTENT, "{r:?}");

    let reason = tokio::time::timeout(Duration::from_secs(3), lease.lost())
        .await
        .expect("lost() resolves within the TTL");
    assert_eq!(reason, LostReason::NotHeld);
    assert!(lease.is_lost());
    assert!(!lease.release().await.expect("release"), "it was not held");
}

async fn a_dropped_lease_frees_the_resource(app: TestApp) {
    let c = client(&app);
    {
        let lease = c
            .lease("lease/dropped")
            .ttl(Duration::from_secs(60))
            .acquire()
            .await
            .expect("acquire");
        assert!(lease.fencing_token() > 0);
    }
    let freed = eventually(Duration::from_secs(3), || {
        let c = c.clone();
        async move {
            c.check(&["lease/dropped"])
                .await
                .is_ok_and(|r| r[0].status == Status::Free)
        }
    })
    .await;
    assert!(
        freed.is_some(),
        "dropping the lease released it (TTL was 60 s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_extends_all_fail_is_lost_by_its_expiry() {
    // Arrange: the only instance goes away while the lease is held.
    let redis = RedisServer::start();
    let (address, handle) = start_instance(settings(Some(redis.url()))).await;
    let (_, key) = create_tenant(&crate::helpers::client(), &address, "cut", "pro").await;
    let c = Client::new(&address, &key).expect("client");
    let lease = c
        .lease("lease/cut-off")
        .ttl(Duration::from_secs(2))
        .acquire()
        .await
        .expect("acquire");
    let start = Instant::now();

    // Act
    handle.stop(false).await;

    // Assert: lost when the TTL runs out with no extend through, not before.
    let reason = tokio::time::timeout(Duration::from_secs(4), lease.lost())
        .await
        .expect("lost() resolves by the expiry");
    assert_eq!(reason, LostReason::Expired);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1000) && took <= Duration::from_millis(2100),
        "{took:?}"
    );
}

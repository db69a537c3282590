//! Expiry warnings (contract section 18): `warnBeforeSeconds` on reserve and
//! extend items, and the one `EXPIRING` event per lease, fleet-wide, at
//! `expiresAt - warnBeforeSeconds` (±1 s) unless the lease was released
//! first — on each store, across two instances of one Redis, and when it fell
//! due while no instance ran.

use crate::events::{Sse, Stream};
use crate::helpers::{create_tenant, send, settings, start_instance, RedisServer, TestApp};
use crate::{both_stores, every_topology};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

both_stores!(
    an_extend_re_arms_the_warning_for_the_new_expiry,
    a_released_lease_gets_no_warning,
    a_waiter_granted_by_a_hand_over_gets_its_warning,
);

every_topology!(every_kind_of_lease_is_warned_once_at_its_time);

/// The OpenAPI document describes the field and the event type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_warnings() {
    let app = crate::helpers::spawn_app(crate::helpers::Kind::Embedded).await;
    let doc = app.get("/api/v1/openapi.json").await.body;
    let schemas = &doc["components"]["schemas"];
    for item in ["ReserveItem", "ExtendItem"] {
        let field = &schemas[item]["properties"]["warnBeforeSeconds"];
        assert!(!field.is_null(), "{item}: {}", schemas[item]);
    }
    assert_eq!(schemas["WarnBeforeSeconds"]["minimum"], 1);
    let kinds = schemas["EventKind"]["enum"]
        .as_array()
        .expect("event types");
    assert!(kinds.contains(&json!("EXPIRING")), "{kinds:?}");
}

/// A time of the contract (RFC 3339) in ms since the epoch.
fn millis(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or(""))
        .expect("an RFC 3339 time")
        .timestamp_millis()
}

/// When an event says a lease's warning is due: its expiresAt minus `warn` s.
fn due_ms(e: &Sse, warn: i64) -> i64 {
    millis(&e.data["expiresAt"]) - warn * 1000
}

fn at_ms(e: &Sse) -> i64 {
    millis(&e.data["at"])
}

/// Asserts that `e` is the EXPIRING of the lease `reserved` announced (its
/// data, the current expiresAt `ea`), at `ea - warn` ±1 s by the store clock.
fn assert_warning(e: &Sse, reserved: &Sse, ea: &Value, warn: i64) {
    assert_eq!(e.event, "EXPIRING", "{e:?}");
    for field in [
        "resource",
        "requester",
        "apiKeyLabel",
        "fencingToken",
        "mode",
        "limit",
    ] {
        assert_eq!(e.data[field], reserved.data[field], "{field}: {e:?}");
    }
    assert_eq!(&e.data["expiresAt"], ea, "{e:?}");
    let late = at_ms(e) - due_ms(e, warn);
    assert!((-1000..=1000).contains(&late), "{late} ms off: {e:?}");
}

fn of<'a>(events: &'a [Sse], kind: &str, resource: &str) -> Vec<&'a Sse> {
    events
        .iter()
        .filter(|e| e.event == kind && e.data["resource"] == resource)
        .collect()
}

/// Reads events until `n` EXPIRED have arrived (or `within` passes).
async fn until_expired(s: &mut Stream, n: usize, within: Duration) -> Vec<Sse> {
    let deadline = std::time::Instant::now() + within;
    let mut out: Vec<Sse> = Vec::new();
    while out.iter().filter(|e| e.event == "EXPIRED").count() < n {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match s.next(left).await {
            Some(e) => out.push(e),
            None => panic!("expected {n} EXPIRED, got {out:#?}"),
        }
    }
    out
}

async fn every_kind_of_lease_is_warned_once_at_its_time(app: TestApp) {
    let mut s = Stream::open(&app.address, &app.api_key, "", None).await;
    // An all-or-nothing batch: an exclusive hold, a shared one and a permit.
    let r = app
        .post(
            "/api/v1/Reservation/reserve?atomic=true",
            json!([
                {"resource":"x","requester":"a","ttlSeconds":3,"warnBeforeSeconds":1},
                {"resource":"s","requester":"b","ttlSeconds":3,"warnBeforeSeconds":2,"mode":"shared"},
                {"resource":"m","requester":"c","ttlSeconds":3,"warnBeforeSeconds":1,"limit":2},
                {"resource":"plain","requester":"d","ttlSeconds":3},
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["committed"], true, "{r:?}");
    let reserved = s.take(4, Duration::from_secs(5)).await;
    let events = until_expired(&mut s, 4, Duration::from_secs(8)).await;
    let extra = s.drain(Duration::from_millis(1200)).await;
    assert!(extra.is_empty(), "nothing more: {extra:?}");
    for (res, warn) in [("x", 1), ("s", 2), ("m", 1)] {
        let granted = reserved
            .iter()
            .find(|e| e.data["resource"] == res)
            .expect("RESERVED");
        let warnings = of(&events, "EXPIRING", res);
        assert_eq!(warnings.len(), 1, "one EXPIRING of {res}: {events:#?}");
        assert_warning(warnings[0], granted, &granted.data["expiresAt"], warn);
        let expired = of(&events, "EXPIRED", res);
        assert_eq!(expired.len(), 1, "{events:#?}");
        let pos = |id: &str| events.iter().position(|e| e.id == id);
        assert!(pos(&warnings[0].id) < pos(&expired[0].id), "{events:#?}");
    }
    assert!(of(&events, "EXPIRING", "plain").is_empty(), "{events:#?}");
}

async fn an_extend_re_arms_the_warning_for_the_new_expiry(app: TestApp) {
    let mut s = Stream::open(&app.address, &app.api_key, "", None).await;
    let r = app
        .reserve(json!([
            {"resource":"kept","requester":"a","ttlSeconds":3,"warnBeforeSeconds":2},
            {"resource":"new","requester":"a","ttlSeconds":3,"warnBeforeSeconds":2,"mode":"shared"},
        ]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let tokens: Vec<Value> = r
        .results()
        .iter()
        .map(|x| x["releaseToken"].clone())
        .collect();
    let reserved = s.take(2, Duration::from_secs(5)).await;
    // Before either warning (due 1 s after the grant): `kept` keeps its
    // warning (2 s before the new expiry), `new` gets one of 4 s.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = app
        .extend(json!([
            {"resource":"kept","requester":"a","releaseToken":tokens[0],"ttlSeconds":4},
            {"resource":"new","requester":"a","releaseToken":tokens[1],"ttlSeconds":5,"warnBeforeSeconds":4},
        ]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let extended = s.take(2, Duration::from_secs(5)).await;
    assert!(
        extended.iter().all(|e| e.event == "EXTENDED"),
        "{extended:?}"
    );
    // `new` warns about 1 s after the extend, `kept` about 2 s after it.
    let warned = s.take(2, Duration::from_secs(5)).await;
    for (res, warn) in [("kept", 2), ("new", 4)] {
        let granted = reserved.iter().find(|e| e.data["resource"] == res);
        let ext = extended.iter().find(|e| e.data["resource"] == res);
        let w = of(&warned, "EXPIRING", res);
        assert_eq!(w.len(), 1, "{warned:#?}");
        let (granted, ext) = (granted.expect("RESERVED"), ext.expect("EXTENDED"));
        assert_warning(w[0], granted, &ext.data["expiresAt"], warn);
    }
    assert_eq!(warned[0].data["resource"], "new", "the earlier one first");
    // Released now: no further warning, none at the old times either.
    let r = app
        .unreserve(json!([
            {"resource":"kept","requester":"a","releaseToken":tokens[0]},
            {"resource":"new","requester":"a","releaseToken":tokens[1]},
        ]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let after = s.drain(Duration::from_millis(1500)).await;
    assert_eq!(after.len(), 2, "{after:#?}");
    assert!(after.iter().all(|e| e.event == "UNRESERVED"), "{after:#?}");
}

async fn a_released_lease_gets_no_warning(app: TestApp) {
    let mut s = Stream::open(&app.address, &app.api_key, "", None).await;
    let r = app
        .reserve(json!([
            {"resource":"u","requester":"a","ttlSeconds":2,"warnBeforeSeconds":1},
            {"resource":"sh","requester":"a","ttlSeconds":2,"warnBeforeSeconds":1,"mode":"shared"},
            {"resource":"f","requester":"a","ttlSeconds":2,"warnBeforeSeconds":1,"limit":3},
        ]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let results = r.results().clone();
    let r = app
        .unreserve(json!([
            {"resource":"u","requester":"a","releaseToken":results[0]["releaseToken"]},
            {"resource":"sh","requester":"a","releaseToken":results[1]["releaseToken"]},
        ]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(app.force_release("f").await.status, StatusCode::NO_CONTENT);
    let got = s.drain(Duration::from_millis(3000)).await;
    let kinds: Vec<&str> = got.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "RESERVED",
            "RESERVED",
            "RESERVED",
            "UNRESERVED",
            "UNRESERVED",
            "FORCE_RELEASED"
        ],
        "{got:#?}"
    );
}

async fn a_waiter_granted_by_a_hand_over_gets_its_warning(app: TestApp) {
    let mut s = Stream::open(&app.address, &app.api_key, "", None).await;
    let r = app
        .reserve(json!([{"resource":"w","requester":"first","ttlSeconds":1}]))
        .await;
    assert_eq!(r.results()[0]["status"], "RESERVED", "{r:?}");
    let r = app
        .post(
            "/api/v1/Reservation/reserve?waitSeconds=5",
            json!([{"resource":"w","requester":"next","ttlSeconds":3,"warnBeforeSeconds":1}]),
        )
        .await;
    assert_eq!(r.results()[0]["status"], "RESERVED", "{r:?}");
    let events = until_expired(&mut s, 2, Duration::from_secs(8)).await;
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.event.as_str(), e.data["requester"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        kinds,
        [
            ("RESERVED", "first"),
            ("EXPIRED", "first"),
            ("RESERVED", "next"),
            ("EXPIRING", "next"),
            ("EXPIRED", "next"),
        ],
        "{events:#?}"
    );
    assert_warning(&events[3], &events[2], &events[2].data["expiresAt"], 1);
}

/// A fleet of two instances on one Redis, an SSE client on each: every
/// warning arrives once on each, with the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warning_is_announced_once_fleet_wide() {
    let redis = RedisServer::start();
    let (a, _) = start_instance(settings(Some(redis.url()))).await;
    let (b, _) = start_instance(settings(Some(redis.url()))).await;
    let client = crate::helpers::client();
    let (_, key) = create_tenant(&client, &a, "warned", "pro").await;
    let mut on_a = Stream::open(&a, &key, "", None).await;
    let mut on_b = Stream::open(&b, &key, "", None).await;
    let r = send(
        &client,
        Method::POST,
        format!("{b}/api/v1/Reservation/reserve"),
        Some(&key),
        Some(json!([
            {"resource":"e","requester":"w","ttlSeconds":2,"warnBeforeSeconds":1},
            {"resource":"p","requester":"w","ttlSeconds":2,"warnBeforeSeconds":1,"limit":2},
        ])),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let got_a = until_expired(&mut on_a, 2, Duration::from_secs(6)).await;
    let got_b = until_expired(&mut on_b, 2, Duration::from_secs(6)).await;
    assert!(on_a.drain(Duration::from_millis(1200)).await.is_empty());
    assert!(on_b.drain(Duration::from_millis(100)).await.is_empty());
    let ids = |v: &[Sse]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&got_a),
        ids(&got_b),
        "the same events, with the same ids"
    );
    for res in ["e", "p"] {
        let warned = of(&got_a, "EXPIRING", res);
        assert_eq!(warned.len(), 1, "{got_a:#?}");
        let granted = of(&got_a, "RESERVED", res)[0];
        assert_warning(warned[0], granted, &granted.data["expiresAt"], 1);
    }
}

/// A warning and an expiry that fell due while no instance ran are announced
/// by the next instance's first sweep: EXPIRING, then EXPIRED, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warning_that_fell_due_while_no_instance_ran_comes_before_the_expiry() {
    let redis = RedisServer::start();
    let (a, handle) = start_instance(settings(Some(redis.url()))).await;
    let client = crate::helpers::client();
    let (_, key) = create_tenant(&client, &a, "dormant", "pro").await;
    let mut before = Stream::open(&a, &key, "", None).await;
    let r = send(
        &client,
        Method::POST,
        format!("{a}/api/v1/Reservation/reserve"),
        Some(&key),
        Some(json!([
            {"resource":"x","requester":"w","ttlSeconds":2,"warnBeforeSeconds":1},
            {"resource":"s","requester":"w","ttlSeconds":2,"warnBeforeSeconds":1,"mode":"shared"},
        ])),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let reserved = before.take(2, Duration::from_secs(5)).await;
    drop(before);
    handle.stop(false).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let (b, _) = start_instance(settings(Some(redis.url()))).await;
    let mut s = Stream::open(&b, &key, "", Some(&reserved[1].id)).await;
    let got = s.take(4, Duration::from_secs(4)).await;
    assert!(s.drain(Duration::from_millis(1200)).await.is_empty());
    for res in ["x", "s"] {
        let kinds: Vec<&str> = got
            .iter()
            .filter(|e| e.data["resource"] == res)
            .map(|e| e.event.as_str())
            .collect();
        assert_eq!(kinds, ["EXPIRING", "EXPIRED"], "{got:#?}");
    }
    // Read again from the history, through the types filter: the same.
    let mut all = Stream::open(&b, &key, "?types=EXPIRING,EXPIRED", Some(&reserved[1].id)).await;
    let history = all.take(4, Duration::from_secs(4)).await;
    let ids = |v: &[Sse]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&history), ids(&got));
}

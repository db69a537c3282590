//! `Idempotency-Key` (contract section 14): a repeat gets the first answer —
//! the same release tokens, fencing tokens and times — with
//! `Idempotent-Replayed: true`, changes nothing and emits nothing; the same key
//! with another request is `422`; a malformed key is `400`; records are
//! scoped, bounded and counted as reads when repeated.

use crate::events::Stream;
use crate::every_topology;
use crate::helpers::{into_reply, spawn_app_with, Kind, Reply, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

every_topology!(
    a_repeated_reserve_gets_the_first_answer_and_changes_nothing,
    repeated_unreserve_and_extend_get_their_first_answers,
    a_key_used_for_another_request_is_422_and_changes_nothing,
    keys_are_scoped_by_credential_and_route,
    a_malformed_key_is_400_and_changes_nothing,
    locklock_acquire_and_release_repeat_their_first_answers,
);

/// A request to `path` as `api_key` with `Idempotency-Key` headers (raw
/// bytes, so malformed ones can be sent too).
async fn keyed(
    app: &TestApp,
    method: Method,
    path: &str,
    api_key: &str,
    keys: &[&[u8]],
    body: Value,
) -> Reply {
    let mut req = app
        .client
        .request(method, format!("{}{path}", app.address))
        .header("X-Api-Key", api_key)
        .json(&body);
    for k in keys {
        let v = reqwest::header::HeaderValue::from_bytes(k).expect("a header value");
        req = req.header("Idempotency-Key", v);
    }
    into_reply(req.send().await.expect("request")).await
}

/// POST `body` to `path` with `Idempotency-Key: key`, as `api_key`.
async fn post_keyed(app: &TestApp, api_key: &str, path: &str, key: &str, body: Value) -> Reply {
    keyed(app, Method::POST, path, api_key, &[key.as_bytes()], body).await
}

fn replayed(r: &Reply) -> bool {
    r.headers
        .get("idempotent-replayed")
        .is_some_and(|v| v.as_bytes() == b"true")
}

async fn a_repeated_reserve_gets_the_first_answer_and_changes_nothing(app: TestApp) {
    let mut events = Stream::open(&app.address, &app.api_key, "", None).await;
    let items = json!([
        {"resource": "r1", "requester": "x", "ttlSeconds": 60},
        {"resource": "r2", "requester": "x"},
    ]);
    let path = "/api/v1/Reservation/reserve";
    let first = post_keyed(&app, &app.api_key, path, "order-17", items.clone()).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert!(!replayed(&first), "the first answer is no repeat");
    assert_eq!(first.results()[0]["status"], "RESERVED", "{:?}", first.body);
    for _ in 0..2 {
        let again = post_keyed(&app, &app.api_key, path, "order-17", items.clone()).await;
        assert_eq!(again.status, StatusCode::OK, "{again:?}");
        assert!(replayed(&again), "{again:?}");
        assert_eq!(
            again.body, first.body,
            "the same tokens, fencing tokens and times"
        );
    }
    // Without the key, the same body is a new request: the resources are held.
    let plain = app.reserve(items).await;
    assert_eq!(plain.results()[0]["status"], "ALREADY_HELD");
    assert!(!replayed(&plain));
    // Two grants, no more: the repeats emitted nothing.
    let got = events.take(2, Duration::from_secs(5)).await;
    assert!(got.iter().all(|e| e.event == "RESERVED"), "{got:?}");
    let extra = events.drain(Duration::from_millis(300)).await;
    assert!(extra.is_empty(), "no other event: {extra:?}");
}

async fn repeated_unreserve_and_extend_get_their_first_answers(app: TestApp) {
    let r = app
        .reserve(json!([{"resource": "u", "requester": "x", "ttlSeconds": 30}]))
        .await;
    let token = r.results()[0]["releaseToken"].clone();
    let extend =
        json!([{"resource": "u", "requester": "x", "releaseToken": token, "ttlSeconds": 600}]);
    let first = post_keyed(
        &app,
        &app.api_key,
        "/api/v1/Reservation/extend",
        "e1",
        extend.clone(),
    )
    .await;
    assert_eq!(first.results()[0]["status"], "EXTENDED", "{first:?}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let again = post_keyed(
        &app,
        &app.api_key,
        "/api/v1/Reservation/extend",
        "e1",
        extend,
    )
    .await;
    assert!(replayed(&again), "{again:?}");
    assert_eq!(
        again.body, first.body,
        "the same expiresAt, not a later one"
    );

    let release = json!([{"resource": "u", "requester": "x", "releaseToken": token}]);
    let first = post_keyed(
        &app,
        &app.api_key,
        "/api/v1/Reservation/unreserve",
        "u1",
        release.clone(),
    )
    .await;
    assert_eq!(first.results()[0]["status"], "UNRESERVED", "{first:?}");
    let again = post_keyed(
        &app,
        &app.api_key,
        "/api/v1/Reservation/unreserve",
        "u1",
        release.clone(),
    )
    .await;
    assert!(replayed(&again), "{again:?}");
    assert_eq!(again.results()[0]["status"], "UNRESERVED", "not NOT_HELD");
    // Without the key the release is done again, and finds nothing.
    let plain = app.unreserve(release).await;
    assert_eq!(plain.results()[0]["status"], "NOT_HELD");

    // An atomic batch that aborted answers the same when repeated.
    let aborted = json!([
        {"resource": "v", "requester": "x"},
        {"resource": "v", "requester": "y"},
    ]);
    let path = "/api/v1/Reservation/reserve?atomic=true";
    let first = post_keyed(&app, &app.api_key, path, "a1", aborted.clone()).await;
    assert_eq!(first.body["committed"], false, "{first:?}");
    let again = post_keyed(&app, &app.api_key, path, "a1", aborted).await;
    assert!(replayed(&again));
    assert_eq!(again.body, first.body);
}

async fn a_key_used_for_another_request_is_422_and_changes_nothing(app: TestApp) {
    let path = "/api/v1/Reservation/reserve";
    let first = post_keyed(
        &app,
        &app.api_key,
        path,
        "k",
        json!([{"resource": "a", "requester": "x"}]),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK);
    for (p, body) in [
        (path, json!([{"resource": "b", "requester": "x"}])),
        (
            path,
            json!([{"resource": "a", "requester": "x", "ttlSeconds": 5}]),
        ),
        (
            "/api/v1/Reservation/reserve?atomic=true",
            json!([{"resource": "a", "requester": "x"}]),
        ),
    ] {
        let r = post_keyed(&app, &app.api_key, p, "k", body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{p} {body}: {r:?}"
        );
        assert_eq!(r.error_code(), "IDEMPOTENCY_KEY_REUSED");
    }
    assert_eq!(app.check_status("b").await, "FREE", "nothing was reserved");
    // The original is still answered.
    let again = post_keyed(
        &app,
        &app.api_key,
        path,
        "k",
        json!([{"resource": "a", "requester": "x"}]),
    )
    .await;
    assert!(replayed(&again));
    assert_eq!(again.body, first.body);
}

async fn keys_are_scoped_by_credential_and_route(app: TestApp) {
    let items = json!([{"resource": "s", "requester": "x"}]);
    let first = post_keyed(
        &app,
        &app.api_key,
        "/api/v1/Reservation/reserve",
        "same",
        items.clone(),
    )
    .await;
    assert_eq!(first.results()[0]["status"], "RESERVED");
    // Another key of the tenant: its own scope, so a request of its own.
    let other = app
        .admin(
            Method::POST,
            &format!("/tenants/{}/keys", app.tenant_id),
            Some(json!({"label": "second"})),
        )
        .await;
    assert_eq!(other.status, StatusCode::CREATED, "{other:?}");
    let other_key = other.body["key"].as_str().expect("key").to_string();
    let second = post_keyed(
        &app,
        &other_key,
        "/api/v1/Reservation/reserve",
        "same",
        items,
    )
    .await;
    assert!(!replayed(&second));
    assert_eq!(second.results()[0]["status"], "ALREADY_HELD");
    // Another route: its own scope too (not 422).
    let token = first.results()[0]["releaseToken"].clone();
    let release = json!([{"resource": "s", "requester": "x", "releaseToken": token}]);
    let r = post_keyed(
        &app,
        &app.api_key,
        "/api/v1/Reservation/unreserve",
        "same",
        release,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.results()[0]["status"], "UNRESERVED");
}

async fn a_malformed_key_is_400_and_changes_nothing(app: TestApp) {
    let items = json!([{"resource": "m", "requester": "x"}]);
    let long = "k".repeat(256);
    let huge = "k".repeat(10_000);
    let path = "/api/v1/Reservation/reserve";
    for key in [
        &b""[..],
        long.as_bytes(),
        huge.as_bytes(),
        "caf\u{e9}".as_bytes(),
        b"tab\there",
    ] {
        let r = keyed(
            &app,
            Method::POST,
            path,
            &app.api_key,
            &[key],
            items.clone(),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{key:?}: {r:?}");
        assert_eq!(r.error_code(), "INVALID_REQUEST");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("Idempotency-Key"),
            "{r:?}"
        );
    }
    let twice = keyed(
        &app,
        Method::POST,
        path,
        &app.api_key,
        &[b"a", b"b"],
        items.clone(),
    )
    .await;
    assert_eq!(twice.status, StatusCode::BAD_REQUEST, "{twice:?}");
    assert_eq!(app.check_status("m").await, "FREE");
    // The longest key is fine.
    let ok = post_keyed(&app, &app.api_key, path, &"k".repeat(255), items).await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
}

async fn locklock_acquire_and_release_repeat_their_first_answers(app: TestApp) {
    let path = "/v1/api/lock/key/build-lock";
    let body = json!({"expires_in": 60});
    let lock = |key: &'static str, method: Method, body: Value| {
        let app = &app;
        async move { keyed(app, method, path, &app.api_key, &[key.as_bytes()], body).await }
    };
    let first = lock("l1", Method::POST, body.clone()).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    let again = lock("l1", Method::POST, body.clone()).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert!(replayed(&again));
    assert_eq!(
        again.body, first.body,
        "the same fencingToken and expiresAt"
    );
    // A fresh acquire finds it held.
    let held = lock("l2", Method::POST, body.clone()).await;
    assert_eq!(held.status, StatusCode::CONFLICT, "{held:?}");
    let held_again = lock("l2", Method::POST, body).await;
    assert_eq!(held_again.status, StatusCode::CONFLICT);
    assert!(replayed(&held_again), "a recorded 409 is repeated as such");

    let released = lock("d1", Method::DELETE, json!({})).await;
    assert_eq!(released.status, StatusCode::OK, "{released:?}");
    let again = lock("d1", Method::DELETE, json!({})).await;
    assert_eq!(again.status, StatusCode::OK, "released, not 404: {again:?}");
    assert!(replayed(&again));
}

/// A repeat counts as a read: with the write limit used up, a repeat still
/// gets its answer; a new write is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_counts_as_a_read() {
    for kind in [Kind::Redis, Kind::Embedded] {
        let app = spawn_app_with(kind, |s| {
            s.rate_limits.pro = 1;
        })
        .await;
        let path = "/api/v1/Reservation/reserve";
        let items = json!([{"resource": "c", "requester": "x"}]);
        let first = post_keyed(&app, &app.api_key, path, "rk", items.clone()).await;
        assert_eq!(first.status, StatusCode::OK, "{kind:?}: {first:?}");
        let fresh = app
            .reserve(json!([{"resource": "d", "requester": "x"}]))
            .await;
        assert_eq!(
            fresh.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{kind:?}: writes used up"
        );
        for _ in 0..3 {
            let again = post_keyed(&app, &app.api_key, path, "rk", items.clone()).await;
            assert_eq!(again.status, StatusCode::OK, "{kind:?}: {again:?}");
            assert!(replayed(&again));
            assert_eq!(
                again
                    .headers
                    .get("ratelimit-limit")
                    .and_then(|v| v.to_str().ok()),
                Some("5"),
                "{kind:?}: counted against the reads (5 per second)"
            );
        }
    }
}

/// Records are bounded per tenant: past the tier's number the oldest go
/// first, and a repeat whose record is gone simply executes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_bounded_and_the_oldest_go_first() {
    for kind in [Kind::Redis, Kind::Embedded] {
        let app = spawn_app_with(kind, |s| {
            s.idempotency_records.pro = 2;
        })
        .await;
        let path = "/api/v1/Reservation/reserve";
        let item = |r: &str| json!([{"resource": r, "requester": "x"}]);
        for (key, r) in [("k1", "r1"), ("k2", "r2"), ("k3", "r3")] {
            let res = post_keyed(&app, &app.api_key, path, key, item(r)).await;
            assert_eq!(res.results()[0]["status"], "RESERVED", "{kind:?}");
        }
        let newest = post_keyed(&app, &app.api_key, path, "k3", item("r3")).await;
        assert!(replayed(&newest), "{kind:?}: k3 is kept");
        let oldest = post_keyed(&app, &app.api_key, path, "k1", item("r1")).await;
        assert!(
            !replayed(&oldest),
            "{kind:?}: k1 was the oldest, and is gone"
        );
        assert_eq!(oldest.results()[0]["status"], "ALREADY_HELD", "{kind:?}");
        if let Some(redis) = &app.redis {
            let records: Vec<String> = crate::helpers::tenant_keys(redis, &app.tenant_id)
                .into_iter()
                .filter(|k| k.contains(":ik:"))
                .collect();
            assert_eq!(records.len(), 2, "two records kept: {records:?}");
            for k in &records {
                let ttl: i64 = redis.cli(&["PTTL", k]).trim().parse().unwrap_or(-9);
                assert!(
                    (1..=3_600_000).contains(&ttl),
                    "{k} expires within COOPLOCKER_IDEMPOTENCY_TTL: {ttl}"
                );
            }
        }
    }
}

/// A repeat through another instance of the fleet gets the first answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_on_another_instance_gets_the_first_answer() {
    use crate::helpers::{create_tenant, settings, start_instance, RedisServer};
    let redis = RedisServer::start();
    let (a, _) = start_instance(settings(Some(redis.url()))).await;
    let (b, _) = start_instance(settings(Some(redis.url()))).await;
    let client = crate::helpers::client();
    let (_, key) = create_tenant(&client, &a, "fleet", "pro").await;
    let post = |base: String| {
        let (client, key) = (client.clone(), key.clone());
        async move {
            into_reply(
                client
                    .post(format!("{base}/api/v1/Reservation/reserve"))
                    .header("X-Api-Key", key)
                    .header("Idempotency-Key", "across")
                    .json(&json!([{"resource": "x", "requester": "r", "ttlSeconds": 60}]))
                    .send()
                    .await
                    .expect("request"),
            )
            .await
        }
    };
    let first = post(a.clone()).await;
    assert_eq!(first.results()[0]["status"], "RESERVED", "{first:?}");
    let again = post(b.clone()).await;
    assert!(replayed(&again), "{again:?}");
    assert_eq!(again.body, first.body);
}

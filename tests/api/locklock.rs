//! The locklock-compatible API (contract section 5), first with the seed's own
//! examples, then its interplay with reservations, tiers, limits and the fleet.

use crate::events::Stream;
use crate::every_topology;
use crate::helpers::{
    create_tenant, settings, spawn_app_with, start_instance, Kind, RedisServer, Reply, TestApp,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

const UUID: &str = "180da65c-cf80-4997-8574-0c0801817d6f";

/// A locklock call as the seed's curl examples make it: JSON content type,
/// optional body, optional key.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<&str>,
    key: Option<&str>,
) -> Reply {
    let mut req = app
        .client
        .request(method, app.url(&format!("/v1/api{path}")))
        .header("Content-Type", "application/json");
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    if let Some(k) = key {
        req = req.header("X-Api-Key", k);
    }
    crate::helpers::into_reply(req.send().await.expect("locklock request")).await
}

fn seconds_from_now(at: &Value) -> i64 {
    let t = chrono::DateTime::parse_from_rfc3339(at.as_str().unwrap_or("")).expect("RFC 3339");
    (t.timestamp_millis() - chrono::Utc::now().timestamp_millis()) / 1000
}

every_topology!(
    the_seed_examples_work_as_written,
    a_secret_guards_the_release,
    a_lock_and_a_reservation_of_one_name_are_the_same_lock,
    named_locks_need_a_pro_key,
    bad_locklock_input_is_refused_and_changes_nothing,
    an_expired_lock_is_free_again,
);

async fn the_seed_examples_work_as_written(app: TestApp) {
    // curl -X POST -H "Content-Type: application/json" .../lock/uuid/<uuid>
    let r = call(
        &app,
        Method::POST,
        &format!("/lock/uuid/{UUID}"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["lock"], UUID);
    assert_eq!(r.body["acquired"], true);
    assert!(r.body["fencingToken"].as_u64().is_some());
    let left = seconds_from_now(&r.body["expiresAt"]);
    // A public lock lives at most a day (COOPLOCKER_PUBLIC_MAX_EXPIRES_IN),
    // so the seeds' 30-day default is clamped to it; keyed locks keep 30 days.
    assert!(
        (86_390..=86_400).contains(&left),
        "a day by default for a public lock: {left}"
    );
    for h in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
        assert!(r.headers.contains_key(h), "public locks carry {h}");
    }

    // Only one holder.
    let again = call(
        &app,
        Method::POST,
        &format!("/lock/uuid/{UUID}"),
        None,
        None,
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error_code(), "LOCKED");

    // curl -X DELETE -H "Content-Type: application/json" .../lock/uuid/<uuid>
    let r = call(
        &app,
        Method::DELETE,
        &format!("/lock/uuid/{UUID}"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"released": true}));
    let r = call(
        &app,
        Method::DELETE,
        &format!("/lock/uuid/{UUID}"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "NOT_FOUND");

    // -d '{"secret":"super-secret", "expires_in": 300}'
    let r = call(
        &app,
        Method::POST,
        &format!("/lock/uuid/{UUID}"),
        Some(r#"{"secret":"super-secret", "expires_in": 300}"#),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!((290..=300).contains(&seconds_from_now(&r.body["expiresAt"])));
    // -d '{"secret":"super-secret"}'
    let r = call(
        &app,
        Method::DELETE,
        &format!("/lock/uuid/{UUID}"),
        Some(r#"{"secret":"super-secret"}"#),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["released"], true);

    // Any case of a UUID names the same (canonical) lock; an empty body is fine.
    let upper = UUID.to_uppercase();
    let r = call(
        &app,
        Method::POST,
        &format!("/lock/uuid/{upper}"),
        Some(""),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["lock"], UUID);
    let r = call(
        &app,
        Method::DELETE,
        &format!("/lock/uuid/{UUID}"),
        Some("{}"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

async fn a_secret_guards_the_release(app: TestApp) {
    let path = format!("/lock/uuid/{UUID}");
    let r = call(
        &app,
        Method::POST,
        &path,
        Some(r#"{"secret":"s3cret"}"#),
        Some(&app.api_key),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    for body in [None, Some(r#"{"secret":"wrong"}"#), Some("{}")] {
        let r = call(&app, Method::DELETE, &path, body, Some(&app.api_key)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{body:?}");
        assert_eq!(r.error_code(), "FORBIDDEN");
        let still = call(&app, Method::POST, &path, None, Some(&app.api_key)).await;
        assert_eq!(
            still.status,
            StatusCode::CONFLICT,
            "still held after {body:?}"
        );
    }
    // The same secret on another tenant's lock of the same name opens nothing.
    let (_, other) = create_tenant(&app.client, &app.address, "other", "pro").await;
    let r = call(
        &app,
        Method::DELETE,
        &path,
        Some(r#"{"secret":"s3cret"}"#),
        Some(&other),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(
        &app,
        Method::DELETE,
        &path,
        Some(r#"{"secret":"s3cret"}"#),
        Some(&app.api_key),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

async fn a_lock_and_a_reservation_of_one_name_are_the_same_lock(app: TestApp) {
    let mut events = Stream::open(&app.address, &app.api_key, "", None).await;
    let r = call(
        &app,
        Method::POST,
        "/lock/key/deploy%2Fprod",
        None,
        Some(&app.api_key),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["lock"], "deploy/prod");
    let lock_fence = r.body["fencingToken"].as_u64().expect("fencing");

    // Listed, and it conflicts with reserve.
    let listed = app.list_all("").await;
    assert!(listed
        .iter()
        .any(|h| h["resource"] == "deploy/prod" && h["requester"] == "locklock"));
    let r = app
        .reserve(json!([{"resource":"deploy/prod","requester":"ci"}]))
        .await;
    assert_eq!(r.results()[0]["status"], "ALREADY_HELD");
    assert_eq!(r.results()[0]["heldBy"], "locklock");

    let r = call(
        &app,
        Method::DELETE,
        "/lock/key/deploy%2Fprod",
        None,
        Some(&app.api_key),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // Now a reservation takes it, with a higher fencing token; locklock sees it held.
    let got = app.reserve_one("deploy/prod", "ci", None).await;
    assert!(got["fencingToken"].as_u64() > Some(lock_fence));
    let r = call(
        &app,
        Method::POST,
        "/lock/key/deploy%2Fprod",
        None,
        Some(&app.api_key),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // A reservation is released only with its releaseToken (contract section
    // 22): locklock DELETE answers 403 and changes nothing.
    let r = call(
        &app,
        Method::DELETE,
        "/lock/key/deploy%2Fprod",
        None,
        Some(&app.api_key),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert_eq!(r.error_code(), "FORBIDDEN");
    assert_eq!(app.check_status("deploy/prod").await, "HELD");
    let r = app
        .unreserve(
            json!([{"resource":"deploy/prod","requester":"ci","releaseToken":got["releaseToken"]}]),
        )
        .await;
    assert_eq!(r.results()[0]["status"], "UNRESERVED");

    let ev = events.take(4, Duration::from_secs(5)).await;
    let seen: Vec<(&str, &str, &str)> = ev
        .iter()
        .map(|e| {
            (
                e.event.as_str(),
                e.data["requester"].as_str().unwrap_or(""),
                e.data["apiKeyLabel"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("RESERVED", "locklock", "default"),
            ("UNRESERVED", "locklock", "default"),
            ("RESERVED", "ci", "default"),
            ("UNRESERVED", "ci", "default"),
        ]
    );
}

async fn named_locks_need_a_pro_key(app: TestApp) {
    let r = call(&app, Method::POST, "/lock/key/build", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error_code(), "UNAUTHORIZED");
    for tier in ["free", "starter"] {
        let (_, key) = create_tenant(&app.client, &app.address, tier, tier).await;
        let r = call(&app, Method::POST, "/lock/key/build", None, Some(&key)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{tier}");
        assert_eq!(r.error_code(), "TIER_REQUIRED");
        // UUID locks are for every tier.
        let r = call(
            &app,
            Method::POST,
            &format!("/lock/uuid/{UUID}"),
            None,
            Some(&key),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{tier}");
    }
    // A key that is sent must be valid: no falling back to the public tenant.
    let r = call(
        &app,
        Method::POST,
        &format!("/lock/uuid/{UUID}"),
        None,
        Some("ck_nope"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

async fn bad_locklock_input_is_refused_and_changes_nothing(app: TestApp) {
    let key = Some(app.api_key.as_str());
    for (path, body) in [
        ("/lock/uuid/not-a-uuid", None),
        ("/lock/uuid/180da65c-cf80-4997-8574", None),
        (&*format!("/lock/uuid/{UUID}"), Some("{not json")),
        (&*format!("/lock/uuid/{UUID}"), Some("[1,2]")),
        (&*format!("/lock/uuid/{UUID}"), Some(r#"{"expires_in":0}"#)),
        (
            &*format!("/lock/uuid/{UUID}"),
            Some(r#"{"expires_in":"300"}"#),
        ),
        (
            &*format!("/lock/uuid/{UUID}"),
            Some(r#"{"expires_in":1e309}"#),
        ),
        (
            &*format!("/lock/uuid/{UUID}"),
            Some(r#"{"expires_in":31536001}"#),
        ),
        (&*format!("/lock/uuid/{UUID}"), Some(r#"{"secret":""}"#)),
        (&*format!("/lock/uuid/{UUID}"), Some(r#"{"secret":5}"#)),
        (
            &*format!("/lock/uuid/{UUID}"),
            Some(r#"{"secret":"a","secret":"b"}"#),
        ),
        (&*format!("/lock/uuid/{UUID}"), Some(r#"{"colour":"red"}"#)),
        ("/lock/key/%01bad", None),
        ("/lock/key/%FF", None),
    ] {
        let r = call(&app, Method::POST, path, body, key).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path} {body:?}: {r:?}");
        assert_eq!(r.error_code(), "INVALID_REQUEST");
    }
    let long = "x".repeat(257);
    let r = call(&app, Method::POST, &format!("/lock/key/{long}"), None, key).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Nothing was locked by any of them.
    assert!(app.list_all("").await.is_empty());
    let r = call(&app, Method::PUT, &format!("/lock/uuid/{UUID}"), None, key).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

async fn an_expired_lock_is_free_again(app: TestApp) {
    let path = format!("/lock/uuid/{UUID}");
    let r = call(
        &app,
        Method::POST,
        &path,
        Some(r#"{"expires_in":1,"secret":"s"}"#),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Expired: no secret needed any more, and nothing to release.
    let r = call(&app, Method::DELETE, &path, None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(&app, Method::POST, &path, None, None).await;
    assert_eq!(r.status, StatusCode::OK);
}

async fn each_store(tweak: fn(&mut cooplocker::config::Settings)) -> Vec<TestApp> {
    vec![
        spawn_app_with(Kind::Redis, tweak).await,
        spawn_app_with(Kind::Embedded, tweak).await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_locks_can_be_switched_off() {
    for app in each_store(|s| s.public_locks = false).await {
        let r = call(
            &app,
            Method::POST,
            &format!("/lock/uuid/{UUID}"),
            None,
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.error_code(), "UNAUTHORIZED");
        let r = call(
            &app,
            Method::POST,
            &format!("/lock/uuid/{UUID}"),
            None,
            Some(&app.api_key),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "with a key they still work");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_locks_are_limited_per_client_address() {
    for app in each_store(|s| s.public_locks_per_ip = 5).await {
        let mut statuses = Vec::new();
        let mut refused = None;
        for i in 0..8 {
            let uuid = format!("00000000-0000-4000-8000-00000000000{i}");
            let r = call(
                &app,
                Method::POST,
                &format!("/lock/uuid/{uuid}"),
                None,
                None,
            )
            .await;
            statuses.push(r.status.as_u16());
            if r.status == StatusCode::TOO_MANY_REQUESTS && refused.is_none() {
                refused = Some(r);
            }
        }
        assert_eq!(&statuses[..5], &[200; 5], "{statuses:?}");
        let r = refused.expect("a request over the limit is refused");
        assert_eq!(r.error_code(), "RATE_LIMITED");
        assert!(r.body["error"]["retryAfterSeconds"].as_u64() >= Some(1));
        assert!(r.headers.contains_key("retry-after"));
        assert_eq!(r.headers["ratelimit-limit"], "5");
        assert_eq!(r.headers["ratelimit-remaining"], "0");
        // Keyed locks do not count against the public limit.
        let r = call(
            &app,
            Method::POST,
            &format!("/lock/uuid/{UUID}"),
            None,
            Some(&app.api_key),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_lock_count_is_capped() {
    for app in each_store(|s| s.public_locks_max = 2).await {
        for i in 0..2 {
            let uuid = format!("00000000-0000-4000-8000-00000000000{i}");
            let r = call(
                &app,
                Method::POST,
                &format!("/lock/uuid/{uuid}"),
                None,
                None,
            )
            .await;
            assert_eq!(r.status, StatusCode::OK);
        }
        let r = call(
            &app,
            Method::POST,
            &format!("/lock/uuid/{UUID}"),
            None,
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.error_code(), "RATE_LIMITED");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_64_concurrent_acquirers_on_two_instances_exactly_one_wins() {
    let redis = RedisServer::start();
    let (a, _) = start_instance(settings(Some(redis.url()))).await;
    let (b, _) = start_instance(settings(Some(redis.url()))).await;
    let client = crate::helpers::client();
    let (_, key) = create_tenant(&client, &a, "race", "pro").await;
    for (path, key) in [
        (format!("/v1/api/lock/uuid/{UUID}"), None),
        ("/v1/api/lock/key/the-one".to_string(), Some(key.clone())),
    ] {
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let url = format!("{}{path}", if i % 2 == 0 { &a } else { &b });
                let client = client.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    let mut req = client.post(url);
                    if let Some(k) = key {
                        req = req.header("X-Api-Key", k);
                    }
                    req.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
                })
            })
            .collect();
        let mut codes = Vec::new();
        for t in tasks {
            codes.push(t.await.unwrap_or(0));
        }
        // Public locks from one address are rate-limited too: 200 once, every
        // other answer a 409 or a 429, never a second 200.
        assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
        assert!(
            codes.iter().all(|c| [200, 409, 429].contains(c)),
            "{codes:?}"
        );
        if key.is_some() {
            assert_eq!(codes.iter().filter(|c| **c == 409).count(), 63);
        }
    }
}

/// A keyless acquire of a fresh UUID lock as sent through proxies that wrote
/// `forwarded_for`; returns the status.
async fn public_acquire_from(app: &TestApp, i: usize, forwarded_for: &str) -> u16 {
    let uuid = format!("00000000-0000-4000-8000-{i:012}");
    let res = app
        .client
        .post(app.url(&format!("/v1/api/lock/uuid/{uuid}")))
        .header("X-Forwarded-For", forwarded_for)
        .send()
        .await
        .expect("locklock request");
    res.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_client_is_counted_by_its_64() {
    let app = spawn_app_with(Kind::Redis, |s| {
        s.public_locks_per_ip = 3;
        s.trusted_proxies = 1;
    })
    .await;
    // Four addresses of one /64: one bucket of three.
    let mut statuses = Vec::new();
    for (i, addr) in [
        "2001:db8:7:1::1",
        "2001:db8:7:1::2",
        "2001:db8:7:1:ffff::3",
        "2001:db8:7:1::4",
    ]
    .iter()
    .enumerate()
    {
        statuses.push(public_acquire_from(&app, i, addr).await);
    }
    assert_eq!(statuses, [200, 200, 200, 429], "one /64, one bucket");
    // Another /64 has its own.
    assert_eq!(public_acquire_from(&app, 10, "2001:db8:7:2::1").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_is_the_nth_forwarded_address_from_the_right() {
    // Two proxies: the client is the second entry from the right; entries left
    // of it are the client's own writing and the rightmost is the first proxy.
    let app = spawn_app_with(Kind::Redis, |s| {
        s.public_locks_per_ip = 3;
        s.trusted_proxies = 2;
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let xff = format!("198.51.100.{i}, 203.0.113.7, 10.0.0.{i}");
        statuses.push(public_acquire_from(&app, i, &xff).await);
    }
    assert_eq!(statuses, [200, 200, 200, 429], "counted as 203.0.113.7");
    assert_eq!(
        public_acquire_from(&app, 10, "198.51.100.1, 203.0.113.8, 10.0.0.1").await,
        200,
        "another client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_written_forwarded_entry_is_ignored() {
    // COOPLOCKER_TRUST_FORWARDED_FOR=true is one proxy: only the entry it
    // appended counts, whatever the client put before it.
    let app = spawn_app_with(Kind::Embedded, |s| {
        s.public_locks_per_ip = 3;
        s.trust_forwarded_for = true;
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let xff = format!("192.0.2.{i}, 203.0.113.9");
        statuses.push(public_acquire_from(&app, i, &xff).await);
    }
    assert_eq!(statuses, [200, 200, 200, 429], "counted as 203.0.113.9");
}

/// One client address cannot fill the public lock pool: it may hold at most
/// `COOPLOCKER_PUBLIC_LOCKS_PER_ADDRESS` public locks, and a public lock lives
/// at most `COOPLOCKER_PUBLIC_MAX_EXPIRES_IN` (1 day by default, which is also
/// its default); keyed locks keep the 30-day default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_fill_the_public_pool() {
    for kind in [crate::helpers::Kind::Redis, crate::helpers::Kind::Embedded] {
        let app = crate::helpers::spawn_app_with(kind, |s| {
            s.public_locks_per_address = 3;
            s.public_locks_per_ip = 1000;
        })
        .await;
        let uuid = |i: u32| format!("/lock/uuid/00000000-0000-4000-8000-{i:012}");
        for i in 0..3 {
            let r = call(&app, Method::POST, &uuid(i), None, None).await;
            assert_eq!(r.status, StatusCode::OK, "{kind:?} lock {i}: {r:?}");
        }
        let r = call(&app, Method::POST, &uuid(3), None, None).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{kind:?}: {r:?}");
        assert_eq!(r.error_code(), "RATE_LIMITED");
        assert!(r.headers.get("retry-after").is_some());
        // A release makes room again.
        let r = call(&app, Method::DELETE, &uuid(0), None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{kind:?}: {r:?}");
        let r = call(&app, Method::POST, &uuid(3), None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{kind:?}: {r:?}");

        // Public: 1 day by default, and no longer.
        let day_ms = 86_400_000i64;
        let expires_in_ms = |r: &crate::helpers::Reply| {
            let at =
                chrono::DateTime::parse_from_rfc3339(r.body["expiresAt"].as_str().unwrap_or(""))
                    .map(|t| t.timestamp_millis())
                    .unwrap_or(0);
            at - chrono::Utc::now().timestamp_millis()
        };
        let r = call(&app, Method::DELETE, &uuid(1), None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        let r = call(&app, Method::POST, &uuid(1), None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        let left = expires_in_ms(&r);
        assert!(
            (day_ms - 5_000..=day_ms).contains(&left),
            "{kind:?}: {left}"
        );
        let r = call(&app, Method::DELETE, &uuid(2), None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        let r = call(
            &app,
            Method::POST,
            &uuid(9),
            Some(r#"{"expires_in":2592000}"#),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{kind:?}: {r:?}");
        let left = expires_in_ms(&r);
        assert!(
            left <= day_ms,
            "{kind:?}: a longer request is clamped: {left}"
        );
        let r = call(&app, Method::DELETE, &uuid(9), None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        // Keyed: 30 days.
        let r = call(&app, Method::POST, &uuid(9), None, Some(&app.api_key)).await;
        assert_eq!(r.status, StatusCode::OK, "{kind:?}: {r:?}");
        assert!(expires_in_ms(&r) > 29 * day_ms, "{kind:?}");
    }
}

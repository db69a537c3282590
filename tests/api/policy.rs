//! The tenant lease policy (contract section 17): each field set by the admin
//! API and applied by each store, on the very next request and on another
//! instance of the same Redis; lock delay after EXPIRED and FORCE_RELEASED
//! (never after UNRESERVED), with waiters keeping their place; hostile policy
//! values refused without a change.

use crate::helpers::{client, create_tenant, send, settings, start_instance, RedisServer, TestApp};
use crate::{both_stores, every_topology};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

both_stores!(hostile_policy_values_are_refused_and_change_nothing);

// The scripts apply the policy: on Cluster and Sentinel too.
every_topology!(
    the_policy_is_shown_changed_and_reset,
    max_ttl_and_require_ttl_refuse_the_item_and_do_nothing,
    max_hold_caps_every_hold_at_its_deadline,
    lock_delay_follows_expiry_and_force_release_not_unreserve,
    waiters_keep_their_place_through_a_lock_delay,
    max_wait_bounds_the_wait,
    locklock_honours_the_policy,
);

const DEFAULTS: &str = r#"{"maxTtlSeconds":null,"requireTtl":false,"maxHoldSeconds":null,"lockDelaySeconds":0,"maxWaitSeconds":60}"#;

fn defaults() -> Value {
    serde_json::from_str(DEFAULTS).expect("json")
}

/// PATCHes the tenant's policy; returns the policy the answer shows.
async fn set_policy(app: &TestApp, policy: Value) -> Value {
    let r = app
        .admin(
            Method::PATCH,
            &format!("/tenants/{}", app.tenant_id),
            Some(json!({ "policy": policy })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r.body["policy"].clone()
}

async fn policy_of(app: &TestApp) -> Value {
    let r = app
        .admin(Method::GET, &format!("/tenants/{}", app.tenant_id), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r.body["policy"].clone()
}

/// A time of the contract (RFC 3339) in ms since the epoch.
fn millis(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or(""))
        .unwrap_or_else(|_| panic!("an RFC 3339 time: {v}"))
        .timestamp_millis()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Asserts a 400 whose one detail names `index` and `field`.
fn assert_refused(r: &crate::helpers::Reply, index: Option<usize>, field: &str) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.error_code(), "INVALID_REQUEST", "{r:?}");
    let d = &r.body["error"]["details"][0];
    assert_eq!(d["field"], field, "{r:?}");
    match index {
        Some(i) => assert_eq!(d["index"], i, "{r:?}"),
        None => assert!(d["index"].is_null(), "{r:?}"),
    }
}

/// Asserts the error message of `r` says `what`.
fn assert_says(r: &crate::helpers::Reply, what: &str) {
    let message = r.body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains(what), "{what:?} not in {r:?}");
}

async fn the_policy_is_shown_changed_and_reset(app: TestApp) {
    assert_eq!(
        policy_of(&app).await,
        defaults(),
        "every field, with defaults"
    );
    let p = set_policy(&app, json!({"maxTtlSeconds": 30})).await;
    let mut want = defaults();
    want["maxTtlSeconds"] = json!(30);
    assert_eq!(p, want);
    // Fields left out stay as they are.
    let p = set_policy(
        &app,
        json!({"lockDelaySeconds": 5, "maxWaitSeconds": 120, "requireTtl": true, "maxHoldSeconds": 600}),
    )
    .await;
    want["lockDelaySeconds"] = json!(5);
    want["maxWaitSeconds"] = json!(120);
    want["requireTtl"] = json!(true);
    want["maxHoldSeconds"] = json!(600);
    assert_eq!(p, want);
    assert_eq!(policy_of(&app).await, want);
    // A name change keeps the policy; null removes a limit.
    let r = app
        .admin(
            Method::PATCH,
            &format!("/tenants/{}", app.tenant_id),
            Some(json!({"name": "renamed"})),
        )
        .await;
    assert_eq!(r.body["policy"], want, "{r:?}");
    let p = set_policy(&app, json!({"maxHoldSeconds": null})).await;
    want["maxHoldSeconds"] = Value::Null;
    assert_eq!(p, want);
    // The tenant listing shows it too.
    let r = app.admin(Method::GET, "/tenants", None).await;
    let listed = r.body["tenants"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["id"] == app.tenant_id.as_str()))
        .cloned()
        .expect("listed");
    assert_eq!(listed["policy"], want);
    // null puts every field back.
    assert_eq!(set_policy(&app, Value::Null).await, defaults());
    assert_eq!(policy_of(&app).await, defaults());
}

async fn hostile_policy_values_are_refused_and_change_nothing(app: TestApp) {
    let before = set_policy(&app, json!({"maxTtlSeconds": 100, "lockDelaySeconds": 1})).await;
    let path = format!("{}/api/v1/admin/tenants/{}", app.address, app.tenant_id);
    let cases: &[(&str, &str)] = &[
        (r#"{"policy":{"maxTtlSeconds":0}}"#, "policy.maxTtlSeconds"),
        (
            r#"{"policy":{"maxTtlSeconds":31536001}}"#,
            "policy.maxTtlSeconds",
        ),
        (
            r#"{"policy":{"maxTtlSeconds":"30"}}"#,
            "policy.maxTtlSeconds",
        ),
        (r#"{"policy":{"maxTtlSeconds":1e400}}"#, ""),
        (
            r#"{"policy":{"maxHoldSeconds":-1}}"#,
            "policy.maxHoldSeconds",
        ),
        (
            r#"{"policy":{"maxHoldSeconds":2.5}}"#,
            "policy.maxHoldSeconds",
        ),
        (r#"{"policy":{"requireTtl":"yes"}}"#, "policy.requireTtl"),
        (r#"{"policy":{"requireTtl":null}}"#, "policy.requireTtl"),
        (
            r#"{"policy":{"lockDelaySeconds":61}}"#,
            "policy.lockDelaySeconds",
        ),
        (
            r#"{"policy":{"lockDelaySeconds":null}}"#,
            "policy.lockDelaySeconds",
        ),
        (
            r#"{"policy":{"maxWaitSeconds":0}}"#,
            "policy.maxWaitSeconds",
        ),
        (
            r#"{"policy":{"maxWaitSeconds":301}}"#,
            "policy.maxWaitSeconds",
        ),
        (
            r#"{"policy":{"maxWaitSeconds":18446744073709551616}}"#,
            "policy.maxWaitSeconds",
        ),
        (r#"{"policy":{"maxWait":10}}"#, "policy.maxWait"),
        (
            r#"{"policy":{"maxTtlSeconds":5,"maxTtlSeconds":6}}"#,
            "policy.maxTtlSeconds",
        ),
        (r#"{"policy":5}"#, "policy"),
        (r#"{"policy":[]}"#, "policy"),
        (r#"{"policy":"strict"}"#, "policy"),
        // A good field beside a bad one: nothing is changed.
        (
            r#"{"policy":{"maxTtlSeconds":7,"lockDelaySeconds":99}}"#,
            "policy.lockDelaySeconds",
        ),
        (
            r#"{"name":"x","policy":{"requireTtl":1}}"#,
            "policy.requireTtl",
        ),
    ];
    let http = client();
    for (body, field) in cases {
        let res = http
            .patch(&path)
            .bearer_auth(crate::helpers::ADMIN_TOKEN)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("patch");
        let r = crate::helpers::into_reply(res).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {r:?}");
        assert_eq!(r.error_code(), "INVALID_REQUEST", "{body}: {r:?}");
        if !field.is_empty() {
            let fields: Vec<&Value> = r.body["error"]["details"]
                .as_array()
                .map(|d| d.iter().map(|x| &x["field"]).collect())
                .unwrap_or_default();
            assert!(fields.iter().any(|f| *f == field), "{body}: {r:?}");
        }
        assert_eq!(policy_of(&app).await, before, "{body} changed nothing");
    }
    let r = app
        .admin(Method::GET, &format!("/tenants/{}", app.tenant_id), None)
        .await;
    assert_eq!(r.body["name"], "test", "the name was not changed either");
}

async fn max_ttl_and_require_ttl_refuse_the_item_and_do_nothing(app: TestApp) {
    let held = app.reserve_one("kept", "a", Some(100)).await;
    set_policy(&app, json!({"maxTtlSeconds": 30})).await;
    // The second item asks too much: 400 naming it, the first is not taken.
    let r = app
        .reserve(json!([
            {"resource":"one","requester":"a","ttlSeconds":30},
            {"resource":"two","requester":"a","ttlSeconds":31},
        ]))
        .await;
    assert_refused(&r, Some(1), "ttlSeconds");
    assert_says(&r, "maxTtlSeconds (30)");
    assert_eq!(app.check_status("one").await, "FREE");
    // An extend above it is refused and leaves the hold as it was; at the
    // limit it goes through.
    let r = app
        .extend(json!([{"resource":"kept","requester":"a","releaseToken":held["releaseToken"],"ttlSeconds":31}]))
        .await;
    assert_refused(&r, Some(0), "ttlSeconds");
    let c = app.check(json!([{"resource":"kept"}])).await;
    assert_eq!(c.results()[0]["expiresAt"], held["expiresAt"], "{c:?}");
    let r = app
        .extend(json!([{"resource":"kept","requester":"a","releaseToken":held["releaseToken"],"ttlSeconds":30}]))
        .await;
    assert_eq!(r.results()[0]["status"], "EXTENDED", "{r:?}");
    // No TTL is fine until requireTtl.
    let r = app
        .reserve(json!([{"resource":"free","requester":"a"}]))
        .await;
    assert_eq!(r.results()[0]["status"], "RESERVED", "{r:?}");
    set_policy(&app, json!({"requireTtl": true})).await;
    let r = app
        .reserve(json!([
            {"resource":"three","requester":"a","ttlSeconds":5},
            {"resource":"four","requester":"a","mode":"shared"},
        ]))
        .await;
    assert_refused(&r, Some(1), "ttlSeconds");
    assert_says(&r, "requireTtl");
    assert_eq!(app.check_status("three").await, "FREE");
    // Reset: both go again.
    set_policy(&app, Value::Null).await;
    let r = app
        .reserve(json!([{"resource":"four","requester":"a"},{"resource":"five","requester":"a","ttlSeconds":31}]))
        .await;
    assert_eq!(r.results()[0]["status"], "RESERVED", "{r:?}");
    assert_eq!(r.results()[1]["status"], "RESERVED", "{r:?}");
}

async fn max_hold_caps_every_hold_at_its_deadline(app: TestApp) {
    set_policy(&app, json!({"maxHoldSeconds": 3})).await;
    let r = app
        .reserve(json!([
            {"resource":"long","requester":"a","ttlSeconds":10},
            {"resource":"short","requester":"a","ttlSeconds":2},
            {"resource":"forever","requester":"a"},
            {"resource":"shared","requester":"a","ttlSeconds":10,"mode":"shared"},
            {"resource":"sem","requester":"a","ttlSeconds":10,"limit":2},
        ]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let rs = r.results().clone();
    for x in &rs {
        assert_eq!(x["status"], "RESERVED", "{x}");
        let deadline = millis(&x["holdDeadline"]);
        assert_eq!(deadline - millis(&x["reservedAt"]), 3000, "{x}");
        if x["resource"] == "short" {
            assert!(x.get("capped").is_none(), "not capped: {x}");
            assert_eq!(
                millis(&x["expiresAt"]) - millis(&x["reservedAt"]),
                2000,
                "{x}"
            );
        } else {
            assert_eq!(x["capped"], true, "{x}");
            assert_eq!(x["expiresAt"], x["holdDeadline"], "{x}");
        }
    }
    // An extend never moves expiresAt past the deadline.
    let short = &rs[1];
    let r = app
        .extend(json!([{"resource":"short","requester":"a","releaseToken":short["releaseToken"],"ttlSeconds":60}]))
        .await;
    let x = &r.results()[0];
    assert_eq!(x["status"], "EXTENDED", "{r:?}");
    assert_eq!(x["capped"], true, "{x}");
    assert_eq!(x["expiresAt"], short["holdDeadline"], "{x}");
    assert_eq!(x["holdDeadline"], short["holdDeadline"], "{x}");
    // Check and the listing show the deadline of every hold.
    let c = app
        .check(json!([{"resource":"long"},{"resource":"shared"},{"resource":"sem"}]))
        .await;
    for (x, want) in c.results().iter().zip([&rs[0], &rs[3], &rs[4]]) {
        assert_eq!(x["status"], "HELD", "{x}");
        assert_eq!(x["holdDeadline"], want["holdDeadline"], "{x}");
    }
    assert_eq!(
        c.results()[1]["holders"][0]["holdDeadline"],
        rs[3]["holdDeadline"],
        "{c:?}"
    );
    let listed = app.list_all("").await;
    assert_eq!(listed.len(), 5, "{listed:?}");
    for h in &listed {
        let want = rs
            .iter()
            .find(|x| x["resource"] == h["resource"])
            .expect("listed");
        assert_eq!(h["holdDeadline"], want["holdDeadline"], "{h}");
    }
    // Past the deadline every hold is gone, the one without a TTL too.
    let wait = millis(&rs[0]["holdDeadline"]) - now_ms() + 300;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    let c = app
        .check(json!([{"resource":"long"},{"resource":"short"},{"resource":"forever"},{"resource":"shared"},{"resource":"sem"}]))
        .await;
    for x in c.results() {
        assert_eq!(x["status"], "FREE", "{x}");
    }
    // Without the policy, no deadline is shown.
    set_policy(&app, json!({"maxHoldSeconds": null})).await;
    let x = app.reserve_one("after", "a", Some(10)).await;
    assert!(
        x.get("holdDeadline").is_none() && x.get("capped").is_none(),
        "{x}"
    );
}

async fn lock_delay_follows_expiry_and_force_release_not_unreserve(app: TestApp) {
    set_policy(&app, json!({"lockDelaySeconds": 2})).await;
    let mut events = crate::events::Stream::open(&app.address, &app.api_key, "", None).await;
    let expiring = app.reserve_one("x", "a", Some(1)).await;
    let forced = app.reserve_one("y", "a", None).await;
    let released = app.reserve_one("z", "a", None).await;
    let shared = app
        .reserve(json!([{"resource":"s","requester":"a","ttlSeconds":1,"mode":"shared"}]))
        .await;
    let shared = shared.results()[0].clone();
    assert_eq!(shared["status"], "RESERVED", "{shared:?}");

    // UNRESERVED: no delay.
    let r = app
        .unreserve(
            json!([{"resource":"z","requester":"a","releaseToken":released["releaseToken"]}]),
        )
        .await;
    assert_eq!(r.results()[0]["status"], "UNRESERVED", "{r:?}");
    let again = app.reserve_one("z", "b", None).await;
    assert!(again.get("availableAt").is_none(), "{again}");

    // FORCE_RELEASED: LOCK_DELAY for 2 s from the release, named in reserve,
    // check and the event's time.
    let before = now_ms();
    let r = app.force_release("y").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let r = app
        .reserve(json!([{"resource":"y","requester":"b","ttlSeconds":5}]))
        .await;
    let x = &r.results()[0];
    assert_eq!(x["status"], "LOCK_DELAY", "{r:?}");
    assert!(x.get("releaseToken").is_none(), "{x}");
    let available = millis(&x["availableAt"]);
    assert!(
        (before + 1000..=now_ms() + 2500).contains(&available),
        "{available} vs {before}: {x}"
    );
    let c = app.check(json!([{"resource":"y"}])).await;
    assert_eq!(c.results()[0]["status"], "FREE", "{c:?}");
    assert_eq!(c.results()[0]["availableAt"], x["availableAt"], "{c:?}");
    // All or nothing: the delayed item fails the batch.
    let r = app
        .post(
            "/api/v1/Reservation/reserve?atomic=true",
            json!([{"resource":"other","requester":"b"},{"resource":"y","requester":"b"}]),
        )
        .await;
    assert_eq!(r.results()[0]["status"], "ABORTED", "{r:?}");
    assert_eq!(r.results()[1]["status"], "LOCK_DELAY", "{r:?}");

    // EXPIRED: the delay runs from expiresAt, also before any sweep ran.
    let wait = millis(&expiring["expiresAt"]) - now_ms() + 100;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    for (res, hold) in [("x", &expiring), ("s", &shared)] {
        let r = app
            .reserve(json!([{"resource": res,"requester":"b","ttlSeconds":5}]))
            .await;
        let x = &r.results()[0];
        assert_eq!(x["status"], "LOCK_DELAY", "{res}: {r:?}");
        assert_eq!(
            millis(&x["availableAt"]),
            millis(&hold["expiresAt"]) + 2000,
            "{res}: two seconds after its expiresAt: {x}"
        );
    }
    // Once it passes, the resource takes a holder again.
    let wait = available - now_ms() + 200;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    let got = app.reserve_one("y", "b", Some(5)).await;
    assert!(
        got["fencingToken"].as_u64() > forced["fencingToken"].as_u64(),
        "{got}"
    );
    let wait = millis(&shared["expiresAt"]).max(millis(&expiring["expiresAt"])) + 2200 - now_ms();
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    app.reserve_one("x", "b", Some(5)).await;
    let r = app
        .reserve(json!([{"resource":"s","requester":"b","ttlSeconds":5,"mode":"shared"}]))
        .await;
    assert_eq!(r.results()[0]["status"], "RESERVED", "{r:?}");
    // The events were the usual ones: the delay is no event of its own.
    let seen = events.drain(Duration::from_millis(300)).await;
    let kinds: Vec<&str> = seen.iter().map(|e| e.event.as_str()).collect();
    assert!(
        kinds.contains(&"FORCE_RELEASED") && kinds.contains(&"EXPIRED"),
        "{kinds:?}"
    );
    // lockDelaySeconds 0 means none: a force release is free at once.
    set_policy(&app, json!({"lockDelaySeconds": 0})).await;
    app.force_release("x").await;
    app.reserve_one("x", "c", Some(5)).await;
}

/// Two waiters queue behind a hold that expires under a lock delay: neither
/// gets it before availableAt, the first gets it then, the second stays in
/// line and gets it at once when the first unreserves (no delay).
async fn waiters_keep_their_place_through_a_lock_delay(app: TestApp) {
    set_policy(&app, json!({"lockDelaySeconds": 2})).await;
    let held = app.reserve_one("w", "h", Some(1)).await;
    let wait = |requester: &'static str| {
        let app_url = app.url("/api/v1/Reservation/reserve?waitSeconds=8");
        let key = app.api_key.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("client");
            send(
                &http,
                Method::POST,
                app_url,
                Some(&key),
                Some(json!([{"resource":"w","requester":requester,"ttlSeconds":10}])),
            )
            .await
        })
    };
    let app = &app;
    let queue = |n: u64| async move {
        let found = crate::helpers::eventually(Duration::from_secs(3), || async move {
            let c = app.check(json!([{"resource":"w"}])).await;
            c.results()[0]["queueLength"] == n
        })
        .await;
        assert!(found.is_some(), "{n} in line");
    };
    let first = wait("w1");
    queue(1).await;
    let second = wait("w2");
    queue(2).await;
    let r = first.await.expect("first waiter");
    let x = &r.results()[0];
    assert_eq!(x["status"], "RESERVED", "{r:?}");
    let available = millis(&held["expiresAt"]) + 2000;
    assert!(
        millis(&x["reservedAt"]) >= available,
        "not before availableAt ({available}): {x}"
    );
    assert!(
        millis(&x["reservedAt"]) < available + 1500,
        "soon after: {x}"
    );
    // The second is still in line, first now.
    let c = app.check(json!([{"resource":"w"}])).await;
    assert_eq!(c.results()[0]["requester"], "w1", "{c:?}");
    assert_eq!(c.results()[0]["queueLength"], 1, "{c:?}");
    let released_at = now_ms();
    let r = app
        .unreserve(json!([{"resource":"w","requester":"w1","releaseToken":x["releaseToken"]}]))
        .await;
    assert_eq!(r.results()[0]["status"], "UNRESERVED", "{r:?}");
    let r = second.await.expect("second waiter");
    let y = &r.results()[0];
    assert_eq!(y["status"], "RESERVED", "{r:?}");
    assert!(
        millis(&y["reservedAt"]) < released_at + 1000,
        "handed over at once after an unreserve: {y}"
    );
}

async fn max_wait_bounds_the_wait(app: TestApp) {
    let item = json!([{"resource":"q","requester":"a","ttlSeconds":5}]);
    // The default bound is 60 s, named as the tenant's maxWaitSeconds.
    let r = app
        .post("/api/v1/Reservation/reserve?waitSeconds=61", item.clone())
        .await;
    assert_refused(&r, None, "waitSeconds");
    assert_says(&r, "maxWaitSeconds (60)");
    // Past 300 no policy allows it.
    let r = app
        .post("/api/v1/Reservation/reserve?waitSeconds=301", item.clone())
        .await;
    assert_refused(&r, None, "waitSeconds");
    set_policy(&app, json!({"maxWaitSeconds": 300})).await;
    let r = app
        .post("/api/v1/Reservation/reserve?waitSeconds=120", item.clone())
        .await;
    assert_eq!(r.results()[0]["status"], "RESERVED", "{r:?}");
    set_policy(&app, json!({"maxWaitSeconds": 5})).await;
    let r = app
        .post(
            "/api/v1/Reservation/reserve?waitSeconds=6",
            json!([{"resource":"q2","requester":"a","ttlSeconds":5}]),
        )
        .await;
    assert_refused(&r, None, "waitSeconds");
    assert_eq!(app.check_status("q2").await, "FREE");
}

async fn locklock(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> crate::helpers::Reply {
    let mut req = app
        .client
        .request(method, app.url(&format!("/v1/api{path}")))
        .header("Content-Type", "application/json")
        .header("X-Api-Key", &app.api_key);
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    crate::helpers::into_reply(req.send().await.expect("locklock request")).await
}

async fn locklock_honours_the_policy(app: TestApp) {
    set_policy(&app, json!({"maxTtlSeconds": 60, "lockDelaySeconds": 2})).await;
    // expires_in above maxTtlSeconds: 400; the 30-day default is lowered.
    let r = locklock(
        &app,
        Method::POST,
        "/lock/key/job",
        Some(r#"{"expires_in":61}"#),
    )
    .await;
    assert_refused(&r, None, "expires_in");
    let r = locklock(&app, Method::POST, "/lock/key/job", None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let left = millis(&r.body["expiresAt"]) - now_ms();
    assert!((55_000..=61_000).contains(&left), "lowered to 60 s: {r:?}");
    // Force released: 409 with Retry-After until availableAt.
    app.force_release("job").await;
    let r = locklock(&app, Method::POST, "/lock/key/job", None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    let retry: u64 = r
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=2).contains(&retry), "{r:?}");
    assert_says(&r, "lock delay");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = locklock(
        &app,
        Method::POST,
        "/lock/key/job",
        Some(r#"{"expires_in":60}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    // A wait above maxWaitSeconds is refused as `wait`.
    let r = locklock(&app, Method::POST, "/lock/key/other?wait=61", None).await;
    assert_refused(&r, None, "wait");
}

/// Each field, changed through one instance, applies on another instance of
/// the same Redis at its very next request (the scripts read the policy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_applies_on_another_instance_at_the_next_request() {
    let redis = RedisServer::start();
    let (a, _ha) = start_instance(settings(Some(redis.url()))).await;
    let (b, _hb) = start_instance(settings(Some(redis.url()))).await;
    let http = client();
    let (tenant, key) = create_tenant(&http, &a, "fleet", "pro").await;
    let on = |address: &str| TestApp {
        address: address.to_string(),
        api_key: key.clone(),
        tenant_id: tenant.clone(),
        client: http.clone(),
        redis: None,
        topology: None,
    };
    let (app_a, app_b) = (on(&a), on(&b));
    // Warm B's credential cache, so nothing on B is re-read for the request.
    app_b.reserve_one("warm", "a", Some(60)).await;

    set_policy(&app_a, json!({"maxTtlSeconds": 10})).await;
    let r = app_b
        .reserve(json!([{"resource":"m","requester":"a","ttlSeconds":11}]))
        .await;
    assert_refused(&r, Some(0), "ttlSeconds");

    set_policy(&app_a, json!({"requireTtl": true})).await;
    let r = app_b
        .reserve(json!([{"resource":"m","requester":"a"}]))
        .await;
    assert_refused(&r, Some(0), "ttlSeconds");

    set_policy(&app_a, json!({"maxHoldSeconds": 4})).await;
    let x = app_b.reserve_one("h", "a", Some(9)).await;
    assert_eq!(x["capped"], true, "{x}");
    assert_eq!(millis(&x["holdDeadline"]) - millis(&x["reservedAt"]), 4000);

    set_policy(&app_a, json!({"maxWaitSeconds": 3})).await;
    let r = app_b
        .post(
            "/api/v1/Reservation/reserve?waitSeconds=4",
            json!([{"resource":"w","requester":"a","ttlSeconds":5}]),
        )
        .await;
    assert_refused(&r, None, "waitSeconds");

    set_policy(&app_a, json!({"lockDelaySeconds": 3})).await;
    app_b.reserve_one("d", "a", Some(5)).await;
    app_a.force_release("d").await;
    let r = app_b
        .reserve(json!([{"resource":"d","requester":"b","ttlSeconds":5}]))
        .await;
    assert_eq!(r.results()[0]["status"], "LOCK_DELAY", "{r:?}");

    // And back: the next request on B is free of every limit.
    set_policy(&app_a, Value::Null).await;
    let r = app_b
        .reserve(json!([{"resource":"m","requester":"a"},{"resource":"d","requester":"b"}]))
        .await;
    assert_eq!(r.results()[0]["status"], "RESERVED", "{r:?}");
    assert_eq!(r.results()[1]["status"], "RESERVED", "{r:?}");
    assert!(r.results()[0].get("holdDeadline").is_none(), "{r:?}");
}

/// The OpenAPI document describes the policy, its fields and the new answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_the_policy() {
    let app = crate::helpers::spawn_app(crate::helpers::Kind::Embedded).await;
    let doc = app.get("/api/v1/openapi.json").await.body;
    let schemas = &doc["components"]["schemas"];
    let policy = &schemas["LeasePolicy"]["properties"];
    for field in [
        "maxTtlSeconds",
        "requireTtl",
        "maxHoldSeconds",
        "lockDelaySeconds",
        "maxWaitSeconds",
    ] {
        assert!(!policy[field].is_null(), "{field}: {policy}");
        assert!(
            !schemas["LeasePolicyPatch"]["properties"][field].is_null(),
            "{field}: {}",
            schemas["LeasePolicyPatch"]
        );
    }
    assert_eq!(policy["lockDelaySeconds"]["maximum"], 60, "{policy}");
    assert_eq!(policy["maxWaitSeconds"]["maximum"], 300, "{policy}");
    assert!(!schemas["Tenant"]["properties"]["policy"].is_null());
    assert!(!schemas["TenantPatch"]["properties"]["policy"].is_null());
    let statuses = schemas["ItemStatus"]["enum"].as_array().expect("statuses");
    assert!(statuses.contains(&json!("LOCK_DELAY")), "{statuses:?}");
    for field in ["holdDeadline", "capped", "availableAt"] {
        assert!(
            !schemas["ItemResult"]["properties"][field].is_null(),
            "{field}"
        );
    }
    assert!(!schemas["Reservation"]["properties"]["holdDeadline"].is_null());
}

//! Fence validation and read-only keys (contract section 16): `validate`
//! across the life of a hold, on every topology and across two instances;
//! read keys on every route of the route table.

use crate::helpers::{
    client, create_tenant, send, settings, start_instance, RedisServer, Reply, TestApp,
};
use crate::{both_stores, every_topology};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

every_topology!(validate_follows_the_life_of_a_hold);
both_stores!(
    validate_is_a_read_batch,
    read_keys_may_read_and_nothing_else,
    key_scopes_are_created_listed_and_kept
);

const VALIDATE: &str = "/api/v1/Reservation/validate";

async fn validate(app: &TestApp, resource: &str, token: &Value) -> Value {
    let r = app
        .post(
            VALIDATE,
            json!([{"resource": resource, "fencingToken": token}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.results().len(), 1, "{r:?}");
    r.results()[0].clone()
}

/// Validates `token` for `resource` and asserts it is STALE, naming `current`.
async fn assert_stale(app: &TestApp, resource: &str, token: &Value, current: Value) {
    let v = validate(app, resource, token).await;
    assert_eq!(v["status"], "STALE", "{v}");
    assert_eq!(&v["fencingToken"], token, "{v}");
    assert_eq!(v["currentFencingToken"], current, "{v}");
    assert!(
        v.get("requester").is_none() && v.get("expiresAt").is_none(),
        "{v}"
    );
}

/// Reserve → CURRENT; unreserve → STALE (free); a re-grant → the old token
/// STALE with the new one; an admin force release → STALE; an expiry → STALE.
async fn validate_follows_the_life_of_a_hold(app: TestApp) {
    // Arrange: a hold without a TTL.
    let held = app.reserve_one("db/primary", "writer-1", None).await;
    let first = held["fencingToken"].clone();
    assert!(first.as_u64().is_some(), "{held}");

    // CURRENT, with the holder; any other token is STALE with the holder's.
    let v = validate(&app, "db/primary", &first).await;
    assert_eq!(v["status"], "CURRENT", "{v}");
    assert_eq!(v["resource"], "db/primary");
    assert_eq!(v["fencingToken"], first);
    assert_eq!(v["requester"], "writer-1");
    assert_eq!(v["expiresAt"], Value::Null);
    assert!(v.get("currentFencingToken").is_none(), "{v}");
    let older = json!(first.as_u64().unwrap_or(1) - 1);
    assert_stale(&app, "db/primary", &older, first.clone()).await;

    // Released: STALE, and the resource is free.
    let r = app
        .unreserve(json!([{"resource": "db/primary", "requester": "writer-1", "releaseToken": held["releaseToken"]}]))
        .await;
    assert_eq!(r.results()[0]["status"], "UNRESERVED");
    assert_stale(&app, "db/primary", &first, Value::Null).await;

    // Granted again: the old token is STALE and names the new one.
    let again = app.reserve_one("db/primary", "writer-2", Some(600)).await;
    let second = again["fencingToken"].clone();
    assert!(second.as_u64() > first.as_u64(), "{again}");
    assert_stale(&app, "db/primary", &first, second.clone()).await;
    let v = validate(&app, "db/primary", &second).await;
    assert_eq!(v["status"], "CURRENT", "{v}");
    assert_eq!(v["requester"], "writer-2");
    assert_eq!(v["expiresAt"], again["expiresAt"]);

    // Force-released by the operator: STALE, free.
    let path = format!("/tenants/{}/reservations/db%2Fprimary", app.tenant_id);
    let r = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    assert_stale(&app, "db/primary", &second, Value::Null).await;

    // Expired (a 1 s TTL): CURRENT until then, STALE after, with nothing held.
    let short = app.reserve_one("lease", "writer-3", Some(1)).await;
    let third = short["fencingToken"].clone();
    assert_eq!(validate(&app, "lease", &third).await["status"], "CURRENT");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_stale(&app, "lease", &third, Value::Null).await;

    // A name never held, and a token no hold could have.
    let huge = json!(i64::MAX);
    assert_stale(&app, "never", &huge, Value::Null).await;
    assert_stale(&app, "db/primary", &json!(0), Value::Null).await;
}

/// A batch answers in order, each item on its own; an empty batch answers
/// nothing; validate counts as a read, like check; paths match in any case.
async fn validate_is_a_read_batch(app: TestApp) {
    let a = app.reserve_one("a", "w", None).await;
    let b = app.reserve_one("b", "w", None).await;
    let r = app
        .post(
            VALIDATE,
            json!([
                {"resource": "b", "fencingToken": b["fencingToken"]},
                {"resource": "a", "fencingToken": b["fencingToken"]},
                {"resource": "c", "fencingToken": 7},
                {"resource": "a", "fencingToken": a["fencingToken"]},
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let expected = [
        ("b", "CURRENT"),
        ("a", "STALE"),
        ("c", "STALE"),
        ("a", "CURRENT"),
    ];
    assert_eq!(r.results().len(), expected.len(), "{r:?}");
    for (got, (resource, status)) in r.results().iter().zip(expected) {
        assert_eq!(
            (&got["resource"], &got["status"]),
            (&json!(resource), &json!(status))
        );
    }
    assert_eq!(r.results()[1]["currentFencingToken"], a["fencingToken"]);
    assert_eq!(r.results()[2]["currentFencingToken"], Value::Null);

    let empty = app.post(VALIDATE, json!([])).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.body, json!({"results": []}));

    // Counted against the read limit: check's limit, not reserve's.
    let limit = |r: &Reply| {
        r.headers
            .get("ratelimit-limit")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let check = app.check(json!([{"resource": "a"}])).await;
    let reserve = app.reserve(json!([])).await;
    assert!(limit(&empty).is_some(), "{empty:?}");
    assert_eq!(limit(&empty), limit(&check));
    assert_ne!(limit(&empty), limit(&reserve));

    for path in [
        "/api/v1/reservation/validate",
        "/API/V1/RESERVATION/VALIDATE",
    ] {
        let r = app
            .post(
                path,
                json!([{"resource": "a", "fencingToken": a["fencingToken"]}]),
            )
            .await;
        assert_eq!(r.results()[0]["status"], "CURRENT", "{path}: {r:?}");
    }

    // Strict items: the index and field of each problem; nothing answered.
    let r = app
        .post(
            VALIDATE,
            json!([{"resource": "a", "fencingToken": 1}, {"resource": "a", "fencingToken": -1}, {"resource": "a"}, {"resource": "a", "fencingToken": 1, "requester": "w"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.error_code(), "INVALID_REQUEST");
    let details: Vec<(u64, &str)> = r.body["error"]["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|x| {
                    (
                        x["index"].as_u64().unwrap_or(99),
                        x["field"].as_str().unwrap_or(""),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        details,
        [(1, "fencingToken"), (2, "fencingToken"), (3, "requester")]
    );
}

/// A token granted through one instance validates CURRENT on the other, and
/// a release through that one makes it STALE on the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fencing_token_validates_on_every_instance_of_the_fleet() {
    let redis = RedisServer::start();
    let (a, _) = start_instance(settings(Some(redis.url()))).await;
    let (b, _) = start_instance(settings(Some(redis.url()))).await;
    let client = client();
    let (_, key) = create_tenant(&client, &a, "fleet", "pro").await;
    let call = |base: &str, path: &str, body: Value| {
        send(
            &client,
            Method::POST,
            format!("{base}{path}"),
            Some(&key),
            Some(body),
        )
    };
    let r = call(
        &a,
        "/api/v1/Reservation/reserve",
        json!([{"resource": "shared", "requester": "on-a"}]),
    )
    .await;
    let granted = r.results()[0].clone();
    assert_eq!(granted["status"], "RESERVED");
    let fence = json!([{"resource": "shared", "fencingToken": granted["fencingToken"]}]);
    let v = call(&b, VALIDATE, fence.clone()).await;
    assert_eq!(v.results()[0]["status"], "CURRENT", "{v:?}");
    assert_eq!(v.results()[0]["requester"], "on-a");
    let u = call(
        &b,
        "/api/v1/Reservation/unreserve",
        json!([{"resource": "shared", "requester": "on-a", "releaseToken": granted["releaseToken"]}]),
    )
    .await;
    assert_eq!(u.results()[0]["status"], "UNRESERVED");
    let v = call(&a, VALIDATE, fence).await;
    assert_eq!(v.results()[0]["status"], "STALE", "{v:?}");
    assert_eq!(v.results()[0]["currentFencingToken"], Value::Null);
}

/// Creates a key of `scope` for the app's tenant; returns the creation answer.
async fn new_key(app: &TestApp, label: &str, scope: Option<&str>) -> Reply {
    let mut body = json!({"label": label});
    if let Some(s) = scope {
        body["scope"] = json!(s);
    }
    keys_call(app, Method::POST, Some(body)).await
}

/// The admin API's keys collection of the app's tenant.
async fn keys_call(app: &TestApp, method: Method, body: Option<Value>) -> Reply {
    let path = format!("/tenants/{}/keys", app.tenant_id);
    app.admin(method, &path, body).await
}

async fn key_list(app: &TestApp) -> Vec<Value> {
    let r = keys_call(app, Method::GET, None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r.body["keys"].as_array().cloned().unwrap_or_default()
}

/// Scopes on creation (default write), in listings and rotation answers; a
/// rotated read key stays read; a scope that is not one is a 400 and
/// creates nothing.
async fn key_scopes_are_created_listed_and_kept(app: TestApp) {
    let w = new_key(&app, "writer", None).await;
    assert_eq!(w.status, StatusCode::CREATED, "{w:?}");
    assert_eq!(w.body["scope"], "write");
    let explicit = new_key(&app, "writer-2", Some("write")).await;
    assert_eq!(explicit.body["scope"], "write", "{explicit:?}");
    let r = new_key(&app, "reader", Some("read")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.body["scope"], "read");
    // (Keys made in the same millisecond list in no particular order.)
    let mut scopes: Vec<(String, String)> = key_list(&app)
        .await
        .iter()
        .map(|k| {
            (
                k["label"].as_str().unwrap_or("").into(),
                k["scope"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    scopes.sort();
    let pairs = |l: &str, s: &str| (l.to_string(), s.to_string());
    assert_eq!(
        scopes,
        [
            pairs("default", "write"),
            pairs("reader", "read"),
            pairs("writer", "write"),
            pairs("writer-2", "write"),
        ]
    );

    // Rotation keeps the scope: the new secret is still read-only.
    let id = r.body["id"].as_str().unwrap_or("");
    let rotate = format!("/tenants/{}/keys/{id}/rotate", app.tenant_id);
    let rotated = app.admin(Method::POST, &rotate, None).await;
    assert_eq!(rotated.status, StatusCode::OK, "{rotated:?}");
    assert_eq!(rotated.body["scope"], "read");
    let secret = rotated.body["key"].as_str().unwrap_or("").to_string();
    for (path, item, status) in [
        (
            "reserve",
            json!({"resource": "x", "requester": "q"}),
            StatusCode::FORBIDDEN,
        ),
        ("check", json!({"resource": "x"}), StatusCode::OK),
    ] {
        let path = format!("/api/v1/Reservation/{path}");
        let r = app.post_as(&secret, &path, json!([item])).await;
        assert_eq!(r.status, status, "{path}: {r:?}");
    }

    // Not a scope: 400 naming the field, no key made.
    let before = key_list(&app).await.len();
    for bad in [
        json!("admin"),
        json!(""),
        json!(null),
        json!(1),
        json!("READ"),
        json!(["read"]),
    ] {
        let body = json!({"label": "bad", "scope": bad});
        let r = keys_call(&app, Method::POST, Some(body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {r:?}");
        assert_eq!(r.error_code(), "INVALID_REQUEST");
        assert_eq!(r.body["error"]["details"][0]["field"], "scope", "{r:?}");
    }
    assert_eq!(key_list(&app).await.len(), before, "nothing was created");
}

/// How a read key must fare on each tenant route of the table.
fn read_key_may(method: &str, pattern: &str) -> Option<bool> {
    let write = [
        ("POST", "/api/v1/reservation/reserve"),
        ("POST", "/api/v1/reservation/unreserve"),
        ("POST", "/api/v1/reservation/extend"),
        ("POST", "/v1/api/lock/uuid/{uuid:.+}"),
        ("DELETE", "/v1/api/lock/uuid/{uuid:.+}"),
        ("POST", "/v1/api/lock/key/{name:.+}"),
        ("DELETE", "/v1/api/lock/key/{name:.+}"),
    ];
    let read = [
        ("POST", "/api/v1/reservation/check"),
        ("POST", "/api/v1/reservation/validate"),
        ("GET", "/api/v1/reservation"),
        ("HEAD", "/api/v1/reservation"),
        ("GET", "/api/v1/reservation/activereservations"),
        ("HEAD", "/api/v1/reservation/activereservations"),
        ("GET", "/api/v1/events"),
    ];
    if write.contains(&(method, pattern)) {
        Some(false)
    } else if read.contains(&(method, pattern)) {
        Some(true)
    } else {
        None
    }
}

/// Every route of the route table, called with a read key: the reading
/// routes answer as for a write key, every other tenant route is `403
/// FORBIDDEN` and changes nothing. Routes that take no API key (operations,
/// the JWT exchange, the admin API) are not the key's: listed, not called
/// with it as a tenant credential.
async fn read_keys_may_read_and_nothing_else(app: TestApp) {
    // Arrange: a hold and a lock made with the write key, and a read key.
    let held = app.reserve_one("kept", "writer", Some(600)).await;
    let lock = send(
        &app.client,
        Method::POST,
        app.url("/v1/api/lock/key/kept-lock"),
        Some(&app.api_key),
        None,
    )
    .await;
    assert_eq!(lock.status, StatusCode::OK, "{lock:?}");
    let created = new_key(&app, "reader", Some("read")).await;
    let reader = created.body["key"].as_str().unwrap_or("").to_string();
    let before = app.list_all("").await;
    let uuid = "0b6f2c1e-5d0a-4d84-9a55-8b7c1f0e2a33";
    let release = |resource: &str| json!([{"resource": resource, "requester": "writer", "releaseToken": held["releaseToken"]}]);

    let mut walked = 0;
    let mut not_the_keys = Vec::new();
    for (method, pattern) in cooplocker::http::served() {
        let Some(may) = read_key_may(method, pattern) else {
            not_the_keys.push((method, pattern));
            continue;
        };
        walked += 1;
        let path = pattern
            .replace("{uuid:.+}", uuid)
            .replace("{name:.+}", "kept-lock");
        let body = match pattern {
            "/api/v1/reservation/reserve" => Some(json!([{"resource": "new", "requester": "r"}])),
            "/api/v1/reservation/unreserve" => Some(release("kept")),
            "/api/v1/reservation/extend" => Some(
                json!([{"resource": "kept", "requester": "writer", "releaseToken": held["releaseToken"], "ttlSeconds": 5}]),
            ),
            "/api/v1/reservation/check" => Some(json!([{"resource": "kept"}])),
            "/api/v1/reservation/validate" => {
                Some(json!([{"resource": "kept", "fencingToken": held["fencingToken"]}]))
            }
            _ => None,
        };
        let m = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
        let mut req = app
            .client
            .request(m, app.url(&path))
            .header("X-Api-Key", &reader);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let res = req.send().await.expect("send");
        let status = res.status();
        if may {
            assert!(
                status.is_success(),
                "{method} {pattern} with a read key: {status}"
            );
            if pattern == "/api/v1/reservation/validate" {
                let v: Value = res.json().await.expect("json");
                assert_eq!(v["results"][0]["status"], "CURRENT", "{v}");
            }
            // An event stream never ends: dropping it closes it.
        } else {
            let r = crate::helpers::into_reply(res).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {pattern}: {r:?}");
            assert_eq!(r.error_code(), "FORBIDDEN", "{method} {pattern}");
            assert!(
                r.body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("read-only")),
                "{r:?}"
            );
        }
    }
    assert_eq!(walked, 14, "every tenant route was walked");
    for (method, pattern) in &not_the_keys {
        assert!(
            pattern.starts_with("/api/v1/admin/")
                || [
                    "/healthz",
                    "/readyz",
                    "/metrics",
                    "/api/v1/openapi.json",
                    "/api/v1/auth/token"
                ]
                .contains(pattern),
            "{method} {pattern}: a tenant route this test does not classify"
        );
    }
    // The admin API stays shut to it, as to every key.
    let r = send(
        &app.client,
        Method::GET,
        app.url(&format!("/api/v1/admin/tenants/{}/keys", app.tenant_id)),
        Some(&reader),
        None,
    )
    .await;
    assert!(matches!(r.status.as_u16(), 401 | 403), "{r:?}");

    // Nothing changed: the hold and the lock are the write key's, as before.
    assert_eq!(app.list_all("").await, before);
    let still = app
        .post(
            VALIDATE,
            json!([{"resource": "kept", "fencingToken": held["fencingToken"]}]),
        )
        .await;
    assert_eq!(still.results()[0]["status"], "CURRENT");
    assert_eq!(app.check_status("new").await, "FREE");
    // The write key still writes.
    let r = app.unreserve(release("kept")).await;
    assert_eq!(r.results()[0]["status"], "UNRESERVED");
}

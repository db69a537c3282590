//! Tenant isolation matrix: every endpoint of the route table, called by
//! tenant B with tenant A's resource names, release tokens, lock names, key
//! ids, tenant id and event ids. No data crosses, nothing of A's changes, and
//! the test fails if a route is added without a row here.

use crate::both_stores;
use crate::events::Stream;
use crate::helpers::{create_tenant, send, TestApp, ADMIN_TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

both_stores!(no_data_crosses_tenants_on_any_endpoint);

async fn no_data_crosses_tenants_on_any_endpoint(app: TestApp) {
    let base = app.address.clone();
    let (a_id, a_key) = create_tenant(&app.client, &base, "tenant-a", "pro").await;
    let (b_id, b_key) = create_tenant(&app.client, &base, "tenant-b", "pro").await;
    let mut covered: BTreeSet<(&str, &str)> = BTreeSet::new();
    let call = |method: Method, path: String, key: Option<String>, body: Option<Value>| {
        let client = app.client.clone();
        let url = app.url(&path);
        async move { send(&client, method, url, key.as_deref(), body).await }
    };
    let a = || Some(a_key.clone());
    let b = || Some(b_key.clone());

    // A's state: a reservation, a locklock lock with a secret, events.
    let mut a_events = Stream::open(&base, &a_key, "", None).await;
    let r = app
        .post_as(
            &a_key,
            "/api/v1/Reservation/reserve",
            json!([{"resource": "a-secret-plan", "requester": "alice", "ttlSeconds": 600}]),
        )
        .await;
    assert_eq!(r.results()[0]["status"], "RESERVED");
    let a_token = r.results()[0]["releaseToken"]
        .as_str()
        .expect("token")
        .to_string();
    let a_fence = r.results()[0]["fencingToken"].as_u64().expect("fence");
    let lock = call(
        Method::POST,
        "/v1/api/lock/key/a-lock".into(),
        a(),
        Some(json!({"secret": "s3cret"})),
    )
    .await;
    assert_eq!(lock.status, StatusCode::OK, "{lock:?}");
    let first = a_events
        .next(Duration::from_secs(5))
        .await
        .expect("A's own event");
    let a_event_id = first.id.clone();
    let uuid = "6f1c0a52-2a4e-4d4c-9d59-5f8f1f0f7c11";
    let r = call(Method::POST, format!("/v1/api/lock/uuid/{uuid}"), a(), None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let a_before = list(&app, &a_key).await;
    assert_eq!(a_before.as_array().map(Vec::len), Some(3));

    // B's event stream, opened with A's event id as Last-Event-ID: no replay of A's events.
    let mut b_events = Stream::open(&base, &b_key, "", Some(&a_event_id)).await;
    covered.insert(("GET", "/api/v1/events"));

    // Reservations: B sees none of A's, and B's calls with A's token change nothing.
    let r = call(
        Method::POST,
        "/api/v1/Reservation/check".into(),
        b(),
        Some(json!([{"resource": "a-secret-plan"}])),
    )
    .await;
    assert_eq!(r.results()[0]["status"], "FREE", "{r:?}");
    covered.insert(("POST", "/api/v1/reservation/check"));
    // A's fencing token means nothing in B's namespace.
    let r = call(
        Method::POST,
        "/api/v1/Reservation/validate".into(),
        b(),
        Some(json!([{"resource": "a-secret-plan", "fencingToken": a_fence}])),
    )
    .await;
    assert_eq!(r.results()[0]["status"], "STALE", "{r:?}");
    assert_eq!(r.results()[0]["currentFencingToken"], Value::Null, "{r:?}");
    assert!(!r.body.to_string().contains("alice"), "{r:?}");
    covered.insert(("POST", "/api/v1/reservation/validate"));
    // The read-only column: B's read key sees what B's key sees, and may
    // change nothing (of A's or B's) with A's token.
    let b_read = app
        .admin(
            Method::POST,
            &format!("/tenants/{b_id}/keys"),
            Some(json!({"label": "b-reader", "scope": "read"})),
        )
        .await
        .body["key"]
        .as_str()
        .expect("read key")
        .to_string();
    let b_ro = || Some(b_read.clone());
    for (path, body) in [
        (
            "/api/v1/Reservation/check",
            json!([{"resource": "a-secret-plan"}]),
        ),
        (
            "/api/v1/Reservation/validate",
            json!([{"resource": "a-secret-plan", "fencingToken": a_fence}]),
        ),
    ] {
        let by_key = call(Method::POST, path.into(), b(), Some(body.clone())).await;
        let by_read_key = call(Method::POST, path.into(), b_ro(), Some(body)).await;
        assert_eq!(
            by_read_key.status,
            StatusCode::OK,
            "{path}: {by_read_key:?}"
        );
        assert_eq!(by_read_key.body, by_key.body, "{path}");
    }
    for (path, body) in [
        (
            "/api/v1/Reservation/reserve",
            json!([{"resource": "a-secret-plan", "requester": "bob"}]),
        ),
        (
            "/api/v1/Reservation/unreserve",
            json!([{"resource": "a-secret-plan", "requester": "alice", "releaseToken": a_token}]),
        ),
        (
            "/api/v1/Reservation/extend",
            json!([{"resource": "a-secret-plan", "requester": "alice", "releaseToken": a_token, "ttlSeconds": 5}]),
        ),
    ] {
        let r = call(Method::POST, path.into(), b_ro(), Some(body)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {r:?}");
    }
    for method in [Method::POST, Method::DELETE] {
        for path in [
            "/v1/api/lock/key/a-lock".to_string(),
            format!("/v1/api/lock/uuid/{uuid}"),
        ] {
            let r = call(method.clone(), path.clone(), b_ro(), None).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {path}: {r:?}");
        }
    }
    let r = call(
        Method::POST,
        "/api/v1/Reservation/unreserve".into(),
        b(),
        Some(json!([{"resource": "a-secret-plan", "requester": "alice", "releaseToken": a_token}])),
    )
    .await;
    assert_eq!(r.results()[0]["status"], "NOT_HELD", "{r:?}");
    covered.insert(("POST", "/api/v1/reservation/unreserve"));
    let r = call(Method::POST, "/api/v1/Reservation/extend".into(), b(),
        Some(json!([{"resource": "a-secret-plan", "requester": "alice", "releaseToken": a_token, "ttlSeconds": 5}]))).await;
    assert_eq!(r.results()[0]["status"], "NOT_HELD", "{r:?}");
    covered.insert(("POST", "/api/v1/reservation/extend"));
    for path in [
        "/api/v1/Reservation",
        "/api/v1/Reservation/activeReservations",
    ] {
        let r = call(Method::GET, format!("{path}?prefix=a-"), b(), None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["reservations"], json!([]), "{path}: {r:?}");
        let r = call(Method::HEAD, path.into(), b(), None).await;
        assert_eq!(r.status, StatusCode::OK);
        let lower = path.to_lowercase();
        let lower: &'static str = Box::leak(lower.into_boxed_str());
        covered.insert(("GET", lower));
        covered.insert(("HEAD", lower));
    }
    // B may take the same name in its own namespace; its fencing token is its own.
    let r = call(
        Method::POST,
        "/api/v1/Reservation/reserve".into(),
        b(),
        Some(json!([{"resource": "a-secret-plan", "requester": "bob", "ttlSeconds": 600}])),
    )
    .await;
    assert_eq!(r.results()[0]["status"], "RESERVED", "{r:?}");
    covered.insert(("POST", "/api/v1/reservation/reserve"));
    // A's event id means nothing in B's history: B is told of a gap (echoing
    // only the id B sent), never given A's events.
    let gap = b_events.next(Duration::from_secs(5)).await.expect("gap");
    assert_eq!(gap.event, "GAP", "{gap:?}");
    assert_eq!(gap.data["lastEventId"], a_event_id.as_str());
    let b_own = b_events
        .next(Duration::from_secs(5))
        .await
        .expect("B's own event");
    assert_eq!(
        b_own.data["requester"], "bob",
        "B's first event is its own: {b_own:?}"
    );

    // locklock: A's lock is not B's to release, and B's namesake is separate.
    let r = call(Method::DELETE, "/v1/api/lock/key/a-lock".into(), b(), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    let r = call(Method::POST, "/v1/api/lock/key/a-lock".into(), b(), None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let r = call(Method::DELETE, "/v1/api/lock/key/a-lock".into(), b(), None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    covered.insert(("POST", "/v1/api/lock/key/{name:.+}"));
    covered.insert(("DELETE", "/v1/api/lock/key/{name:.+}"));
    let r = call(
        Method::DELETE,
        format!("/v1/api/lock/uuid/{uuid}"),
        b(),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    let r = call(
        Method::DELETE,
        format!("/v1/api/lock/uuid/{uuid}"),
        None,
        None,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "the public tenant is not A: {r:?}"
    );
    covered.insert(("POST", "/v1/api/lock/uuid/{uuid:.+}"));
    covered.insert(("DELETE", "/v1/api/lock/uuid/{uuid:.+}"));

    // The token exchange: a JWT naming A as tenant gets nothing for B (A has no
    // JWT settings: refused), and nothing about A leaks in the refusal.
    let r = call(
        Method::POST,
        "/api/v1/auth/token".into(),
        None,
        Some(json!({"jwt": "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln", "tenant": a_id})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    assert!(!r.body.to_string().contains("a-secret-plan"));
    covered.insert(("POST", "/api/v1/auth/token"));

    // Admin: tenant keys never open it, for A's or B's id.
    let a_keys = app
        .admin(Method::GET, &format!("/tenants/{a_id}/keys"), None)
        .await;
    let a_key_id = a_keys.body["keys"][0]["id"]
        .as_str()
        .expect("key id")
        .to_string();
    let admin_rows: [(&str, &str, String, Option<Value>); 10] = [
        (
            "GET",
            "/api/v1/admin/tenants",
            "/api/v1/admin/tenants".into(),
            None,
        ),
        (
            "POST",
            "/api/v1/admin/tenants",
            "/api/v1/admin/tenants".into(),
            Some(json!({"name": "x"})),
        ),
        (
            "GET",
            "/api/v1/admin/tenants/{id}",
            format!("/api/v1/admin/tenants/{a_id}"),
            None,
        ),
        (
            "PATCH",
            "/api/v1/admin/tenants/{id}",
            format!("/api/v1/admin/tenants/{a_id}"),
            Some(json!({"tier": "free"})),
        ),
        (
            "DELETE",
            "/api/v1/admin/tenants/{id}",
            format!("/api/v1/admin/tenants/{a_id}"),
            None,
        ),
        (
            "GET",
            "/api/v1/admin/tenants/{id}/keys",
            format!("/api/v1/admin/tenants/{a_id}/keys"),
            None,
        ),
        (
            "POST",
            "/api/v1/admin/tenants/{id}/keys",
            format!("/api/v1/admin/tenants/{a_id}/keys"),
            Some(json!({"label": "x"})),
        ),
        (
            "DELETE",
            "/api/v1/admin/tenants/{id}/keys/{keyId}",
            format!("/api/v1/admin/tenants/{a_id}/keys/{a_key_id}"),
            None,
        ),
        (
            "POST",
            "/api/v1/admin/tenants/{id}/keys/{keyId}/rotate",
            format!("/api/v1/admin/tenants/{a_id}/keys/{a_key_id}/rotate"),
            None,
        ),
        (
            "DELETE",
            "/api/v1/admin/tenants/{id}/reservations/{resource:.+}",
            format!("/api/v1/admin/tenants/{a_id}/reservations/a-secret-plan"),
            None,
        ),
    ];
    for (method, pattern, path, body) in &admin_rows {
        let m = Method::from_bytes(method.as_bytes()).expect("method");
        for key in [a(), b()] {
            let r = call(m.clone(), path.clone(), key, body.clone()).await;
            assert!(
                matches!(r.status.as_u16(), 401 | 403),
                "{method} {path} with a tenant key: {r:?}"
            );
            let text = r.body.to_string();
            assert!(
                !text.contains("a-secret-plan") && !text.contains(&a_key_id),
                "{text}"
            );
        }
        covered.insert((method, pattern));
    }
    // ... and the admin token never opens tenant endpoints.
    let r = call(
        Method::POST,
        "/api/v1/Reservation/check".into(),
        Some(ADMIN_TOKEN.into()),
        Some(json!([{"resource": "a-secret-plan"}])),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    // Admin paths under B's id do not reach A's key or reservation.
    let r = app
        .admin(
            Method::POST,
            &format!("/tenants/{b_id}/keys/{a_key_id}/rotate"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    let r = app
        .admin(
            Method::DELETE,
            &format!("/tenants/{b_id}/keys/{a_key_id}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    let r = app
        .admin(
            Method::DELETE,
            &format!("/tenants/{b_id}/reservations/a-lock"),
            None,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "B's a-lock was released above: {r:?}"
    );

    // Operations endpoints carry no tenant data.
    for (method, pattern) in [
        ("GET", "/healthz"),
        ("HEAD", "/healthz"),
        ("GET", "/readyz"),
        ("HEAD", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/openapi.json"),
    ] {
        let m = Method::from_bytes(method.as_bytes()).expect("method");
        let r = app
            .client
            .request(m, app.url(pattern))
            .send()
            .await
            .expect("send");
        assert!(r.status().is_success(), "{method} {pattern}");
        let text = r.text().await.unwrap_or_default();
        for secret in ["a-secret-plan", "alice", a_id.as_str(), a_key.as_str()] {
            assert!(!text.contains(secret), "{method} {pattern} shows {secret}");
        }
        covered.insert((method, pattern));
    }

    // Nothing of A's changed, and B's stream never saw A.
    assert_eq!(list(&app, &a_key).await, a_before);
    let r = app
        .post_as(
            &a_key,
            "/api/v1/Reservation/check",
            json!([{"resource": "a-secret-plan"}]),
        )
        .await;
    assert_eq!(r.results()[0]["requester"], "alice");
    assert_eq!(r.results()[0]["fencingToken"], a_fence);
    let a_key_ok = call(Method::GET, "/api/v1/Reservation".into(), a(), None).await;
    assert_eq!(a_key_ok.status, StatusCode::OK, "A's key still works");
    while let Some(ev) = b_events.next(Duration::from_millis(300)).await {
        assert_ne!(
            ev.data["requester"], "alice",
            "A's event on B's stream: {ev:?}"
        );
    }

    // Every route of the table has a row above.
    let served: BTreeSet<(&str, &str)> = cooplocker::http::served().into_iter().collect();
    let missing: Vec<_> = served.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "routes without an isolation row: {missing:?}"
    );
}

async fn list(app: &TestApp, key: &str) -> Value {
    let r = app.get_as(key, "/api/v1/Reservation").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r.body["reservations"].clone()
}

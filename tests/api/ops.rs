//! Operations: `/metrics` in Prometheus text format, with names and values that
//! move as the service works.

use crate::events::Stream;
use crate::helpers::{send, spawn_app_with, Kind, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

async fn scrape(app: &TestApp) -> String {
    let res = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(res.status(), StatusCode::OK);
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("text/plain"), "content type {ct}");
    res.text().await.expect("body")
}

/// The value of the sample `name{labels...}` (every given label must match),
/// or 0 when it is not there yet.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_the_service_works() {
    let app = spawn_app_with(Kind::Redis, |s| s.token_exchange_per_ip = 1).await;
    let before = scrape(&app).await;
    let reserved = [("op", "reserve"), ("result", "RESERVED")];
    let held = [("op", "reserve"), ("result", "ALREADY_HELD")];
    let route = [
        ("method", "POST"),
        ("route", "/api/v1/reservation/reserve"),
        ("status", "200"),
    ];

    let r = app
        .reserve(json!([
            {"requester": "a", "resource": "m1"},
            {"requester": "a", "resource": "m2"},
            {"requester": "a", "resource": "m3", "ttlSeconds": 1}
        ]))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .reserve(json!([{"requester": "b", "resource": "m1"}]))
        .await;
    assert_eq!(r.results()[0]["status"], "ALREADY_HELD");
    let _events = Stream::open(&app.address, &app.api_key, "", None).await;
    let nope = send(
        &app.client,
        Method::GET,
        app.url("/no/such/path-12345"),
        None,
        None,
    )
    .await;
    assert_eq!(nope.status, StatusCode::NOT_FOUND);
    let odd = send(
        &app.client,
        Method::from_bytes(b"FROBNICATE").expect("method"),
        app.url("/api/v1/Reservation"),
        None,
        None,
    )
    .await;
    assert!(odd.status.is_client_error(), "{odd:?}");
    for _ in 0..2 {
        send(
            &app.client,
            Method::POST,
            app.url("/api/v1/auth/token"),
            None,
            Some(json!({"jwt": "x.y.z"})),
        )
        .await;
    }
    // The 1 s reservation expires and the sweeper retires it.
    let mut after = String::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = scrape(&app).await;
        if sample(&after, "cooplocker_reservations_expired_total", &[]) >= 1.0 {
            break;
        }
    }

    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    assert_eq!(
        delta("cooplocker_operations_total", &reserved),
        3.0,
        "{after}"
    );
    assert_eq!(delta("cooplocker_operations_total", &held), 1.0);
    assert_eq!(delta("cooplocker_http_requests_total", &route), 2.0);
    assert!(
        after.contains("cooplocker_http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/v1/reservation/reserve\",le=\"0.005\"}"),
        "latency histogram with buckets: {after}"
    );
    assert_eq!(sample(&after, "cooplocker_sse_clients", &[]), 1.0);
    assert!(delta("cooplocker_store_calls_total", &[("op", "reserve")]) >= 2.0);
    assert!(after.contains("cooplocker_store_call_duration_seconds_bucket{op=\"reserve\""));
    assert_eq!(
        delta("cooplocker_rate_limited_total", &[("scope", "address")]),
        1.0
    );
    assert!(delta("cooplocker_reservations_expired_total", &[]) >= 1.0);
    // Unknown paths are counted under one label, never by their path.
    assert!(
        delta(
            "cooplocker_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ) >= 1.0
    );
    assert!(
        !after.contains("path-12345"),
        "a client path became a label"
    );
    // Any method token is counted, but as OTHER: labels stay bounded.
    assert!(delta("cooplocker_http_requests_total", &[("method", "OTHER")]) >= 1.0);
    assert!(
        !after.contains("FROBNICATE"),
        "a client method became a label"
    );
}

/// A served path pattern as the document writes it: lower-case (paths match
/// case-insensitively), without the router's `:regex` suffixes.
fn normalise(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    let mut skipping = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push(c);
            }
            '}' => {
                in_param = false;
                skipping = false;
                out.push(c);
            }
            ':' if in_param => skipping = true,
            _ if skipping => {}
            _ => out.extend(c.to_lowercase()),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_covers_exactly_the_served_routes() {
    let app = spawn_app_with(Kind::Embedded, |_| {}).await;
    let res = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), StatusCode::OK);
    let doc: serde_json::Value = res.json().await.expect("json");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            if ["get", "head", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                assert!(
                    op["responses"].is_object(),
                    "{method} {path} has no responses"
                );
                documented.push((method.to_uppercase(), path.to_lowercase()));
            }
        }
    }
    let served: Vec<(String, String)> = cooplocker::http::served()
        .into_iter()
        .map(|(m, p)| (m.to_string(), normalise(p)))
        .collect();
    for route in &served {
        assert!(
            documented.contains(route),
            "served but not documented: {route:?}"
        );
    }
    for route in &documented {
        assert!(
            served.contains(route),
            "documented but not served: {route:?}"
        );
    }
    assert_eq!(served.len(), documented.len());
    // Every schema a body refers to exists.
    let text = doc.to_string();
    for name in [
        "ErrorBody",
        "ReserveItem",
        "Results",
        "ReservationPage",
        "Event",
        "TokenResponse",
        "Tenant",
    ] {
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "schema {name}"
        );
    }
    assert!(text.contains("\"apiKey\"") && text.contains("\"adminToken\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_honoured_or_made() {
    let app = spawn_app_with(Kind::Embedded, |_| {}).await;
    let get = |id: Option<&'static str>| {
        let mut req = app.client.get(app.url("/healthz"));
        if let Some(id) = id {
            req = req.header("X-Request-Id", id);
        }
        req.send()
    };
    let res = get(Some("trace-abc-123")).await.expect("send");
    assert_eq!(res.headers()["x-request-id"], "trace-abc-123");
    let res = get(None).await.expect("send");
    let made = res.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(!made.is_empty() && made.len() <= 128, "{made}");
    // Not echoed when it is not a plausible id (too long).
    let long: &'static str = Box::leak("x".repeat(200).into_boxed_str());
    let res = get(Some(long)).await.expect("send");
    assert_ne!(res.headers()["x-request-id"], long);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_one_line_per_request_and_no_secret() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let redis = crate::helpers::RedisServer::start();
    let port = crate::helpers::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cooplocker"))
        .env("REDIS_URL", redis.url())
        .env("COOPLOCKER_ADMIN_TOKEN", crate::helpers::ADMIN_TOKEN)
        .env("COOPLOCKER_LISTEN", format!("127.0.0.1:{port}"))
        .env("COOPLOCKER_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    let base = format!("http://127.0.0.1:{port}");
    let client = crate::helpers::client();
    let up = crate::helpers::eventually(Duration::from_secs(10), || async {
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(up.is_some());
    let (_, key) = crate::helpers::create_tenant(&client, &base, "logs", "pro").await;
    let r = client
        .post(format!("{base}/api/v1/Reservation/reserve"))
        .header("X-Api-Key", &key)
        .header("X-Request-Id", "log-test-1")
        .json(&json!([{"requester": "a", "resource": "r"}]))
        .send()
        .await
        .expect("reserve");
    assert_eq!(r.status(), StatusCode::OK);
    let r = client
        .get(format!("{base}/api/v1/Reservation"))
        .header("X-Api-Key", format!("{key}-wrong"))
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let reserve: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["request_id"] == "log-test-1")
        .collect();
    assert_eq!(reserve.len(), 1, "one line for the request: {out}");
    assert_eq!(reserve[0]["status"], 200);
    assert_eq!(reserve[0]["path"], "/api/v1/Reservation/reserve");
    assert!(lines.iter().any(|l| l["status"] == 401), "{out}");
    assert!(!out.contains(&key), "an API key was logged: {out}");
    assert!(
        !out.contains(crate::helpers::ADMIN_TOKEN),
        "the admin token was logged"
    );
}

/// The contention metrics of contract section 19: waits by how they ended,
/// the waiters gauge, replays of an Idempotency-Key and fence checks move as
/// the service works; none of them names a tenant or a resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contention_metrics_move_and_name_no_tenant_or_resource() {
    let app = spawn_app_with(Kind::Redis, |_| {}).await;
    let before = scrape(&app).await;
    let waiting = |query: &'static str, requester: &'static str, timeout: Duration| {
        let url = app.url(&format!("/api/v1/Reservation/reserve?{query}"));
        let key = app.api_key.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("client");
            client
                .post(url)
                .header("X-Api-Key", key)
                .json(&json!([{"requester": requester, "resource": "contended-xyz", "ttlSeconds": 30}]))
                .send()
                .await
                .ok()
                .map(|r| r.status())
        })
    };
    let held = app
        .reserve(json!([{"requester": "a", "resource": "contended-xyz", "ttlSeconds": 30}]))
        .await;
    let token = held.results()[0]["releaseToken"].clone();
    let fencing = held.results()[0]["fencingToken"].clone();
    let granted = waiting("waitSeconds=10", "b", Duration::from_secs(20));
    let mut during = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        during = scrape(&app).await;
        if sample(&during, "cooplocker_waiters", &[]) >= 1.0 {
            break;
        }
    }
    assert_eq!(sample(&during, "cooplocker_waiters", &[]), 1.0, "{during}");
    let r = app
        .post(
            "/api/v1/Reservation/unreserve",
            json!([{"requester": "a", "resource": "contended-xyz", "releaseToken": token}]),
        )
        .await;
    assert_eq!(r.results()[0]["status"], "UNRESERVED");
    assert_eq!(granted.await.expect("granted"), Some(StatusCode::OK));
    // One that times out, one whose client goes away.
    let timed_out = waiting("waitSeconds=1", "c", Duration::from_secs(10));
    assert_eq!(timed_out.await.expect("timed out"), Some(StatusCode::OK));
    let cancelled = waiting("waitSeconds=20", "d", Duration::from_millis(500));
    assert_eq!(cancelled.await.expect("cancelled"), None);
    // A repeat under its Idempotency-Key, and three fence checks.
    let mut other = serde_json::Value::Null;
    for _ in 0..2 {
        let r = app
            .client
            .post(app.url("/api/v1/Reservation/reserve"))
            .header("X-Api-Key", &app.api_key)
            .header("Idempotency-Key", "metrics-once")
            .json(&json!([{"requester": "e", "resource": "other-xyz"}]))
            .send()
            .await
            .expect("reserve");
        assert_eq!(r.status(), StatusCode::OK);
        other = r.json().await.expect("json");
    }
    let v = app
        .post(
            "/api/v1/Reservation/validate",
            json!([
                {"resource": "other-xyz", "fencingToken": 1},
                {"resource": "other-xyz", "fencingToken": other["results"][0]["fencingToken"]},
                {"resource": "contended-xyz", "fencingToken": fencing}
            ]),
        )
        .await;
    assert_eq!(v.status, StatusCode::OK, "{v:?}");

    let mut after = String::new();
    for _ in 0..40 {
        after = scrape(&app).await;
        if sample(
            &after,
            "cooplocker_wait_seconds_count",
            &[("outcome", "cancelled")],
        ) >= 1.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    for outcome in ["granted", "timed_out", "cancelled"] {
        assert_eq!(
            delta("cooplocker_wait_seconds_count", &[("outcome", outcome)]),
            1.0,
            "{outcome}: {after}"
        );
    }
    assert!(
        after.contains("cooplocker_wait_seconds_bucket{outcome=\"timed_out\",le=\"300\"}"),
        "waits have buckets up to 300 s: {after}"
    );
    assert_eq!(sample(&after, "cooplocker_waiters", &[]), 0.0, "{after}");
    assert_eq!(delta("cooplocker_idempotent_replays_total", &[]), 1.0);
    // Token 1, and the old holder's after the waiter took the resource.
    assert_eq!(
        delta("cooplocker_fence_checks_total", &[("result", "stale")]),
        2.0
    );
    assert_eq!(
        delta("cooplocker_fence_checks_total", &[("result", "current")]),
        1.0
    );
    for line in after.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !line.contains("xyz") && !line.contains(&app.tenant_id),
            "a metric names a resource or tenant: {line}"
        );
    }
}

/// `cooplocker_hold_seconds` (contract section 19): one sample per ended hold,
/// by how it ended, its length by the store clock — on both stores. A hold of
/// about 1.2 s released, one of 1 s TTL expired, one force released; a semaphore
/// permit released counts like any hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_times_are_measured_by_how_the_hold_ended() {
    for kind in [Kind::Redis, Kind::Embedded] {
        let app = spawn_app_with(kind, |_| {}).await;
        let before = scrape(&app).await;
        let held = app
            .reserve(json!([
                {"requester": "a", "resource": "released-xyz", "ttlSeconds": 30},
                {"requester": "a", "resource": "permit-xyz", "ttlSeconds": 30, "limit": 2},
                {"requester": "a", "resource": "expires-xyz", "ttlSeconds": 1},
                {"requester": "a", "resource": "forced-xyz"}
            ]))
            .await;
        assert!(
            held.results().iter().all(|r| r["status"] == "RESERVED"),
            "{held:?}"
        );
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let r = app
            .unreserve(json!([
                {"requester": "a", "resource": "released-xyz", "releaseToken": held.results()[0]["releaseToken"]},
                {"requester": "a", "resource": "permit-xyz", "releaseToken": held.results()[1]["releaseToken"]}
            ]))
            .await;
        assert!(
            r.results().iter().all(|r| r["status"] == "UNRESERVED"),
            "{r:?}"
        );
        assert_eq!(
            app.force_release("forced-xyz").await.status,
            StatusCode::NO_CONTENT
        );
        let mut after = String::new();
        for _ in 0..60 {
            after = scrape(&app).await;
            let expired = &[("end", "expired")];
            if sample(&after, "cooplocker_hold_seconds_count", expired)
                > sample(&before, "cooplocker_hold_seconds_count", expired)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let delta = |name: &str, end: &str| {
            sample(&after, name, &[("end", end)]) - sample(&before, name, &[("end", end)])
        };
        assert_eq!(
            delta("cooplocker_hold_seconds_count", "released"),
            2.0,
            "{kind:?}: {after}"
        );
        assert_eq!(
            delta("cooplocker_hold_seconds_count", "expired"),
            1.0,
            "{kind:?}: {after}"
        );
        assert_eq!(
            delta("cooplocker_hold_seconds_count", "force_released"),
            1.0,
            "{kind:?}: {after}"
        );
        let released = delta("cooplocker_hold_seconds_sum", "released");
        assert!(
            (2.3..10.0).contains(&released),
            "two holds of ~1.2 s: {released} ({kind:?})"
        );
        let expired = delta("cooplocker_hold_seconds_sum", "expired");
        assert!(
            (0.9..10.0).contains(&expired),
            "a hold of 1 s TTL: {expired} ({kind:?})"
        );
        assert!(
            after.contains("cooplocker_hold_seconds_bucket{end=\"released\",le=\"86400\"}"),
            "holds have buckets up to a day: {after}"
        );
    }
}

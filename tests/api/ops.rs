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

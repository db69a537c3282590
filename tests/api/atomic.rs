//! All-or-nothing batches (contract section 13): `?atomic=true` on reserve,
//! extend and unreserve either applies every item or changes nothing — no
//! hold, no event — with the failing items' real statuses and `ABORTED` for
//! the others.

use crate::events::Stream;
use crate::every_topology;
use crate::helpers::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

every_topology!(
    an_atomic_reserve_takes_all_or_nothing,
    atomic_extend_and_unreserve_take_all_or_nothing,
    only_atomic_answers_say_committed,
    a_bad_atomic_parameter_is_refused_and_changes_nothing,
);

fn statuses(results: &[Value]) -> Vec<&str> {
    results
        .iter()
        .map(|r| r["status"].as_str().unwrap_or("?"))
        .collect()
}

async fn atomic(app: &TestApp, op: &str, items: Value) -> Value {
    let r = app
        .post(&format!("/api/v1/Reservation/{op}?atomic=true"), items)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{op}: {r:?}");
    r.body
}

fn token(res: &Value) -> String {
    res["releaseToken"]
        .as_str()
        .expect("a releaseToken")
        .to_string()
}

async fn an_atomic_reserve_takes_all_or_nothing(app: TestApp) {
    let mut events = Stream::open(&app.address, &app.api_key, "", None).await;
    app.reserve_one("a", "x", None).await;

    // One item is held: nothing is reserved, the others are ABORTED.
    let body = atomic(
        &app,
        "reserve",
        json!([
            {"resource": "b", "requester": "y", "ttlSeconds": 60},
            {"resource": "a", "requester": "y"},
            {"resource": "c", "requester": "y"},
        ]),
    )
    .await;
    assert_eq!(body["committed"], false, "{body}");
    let results = body["results"].as_array().expect("results");
    assert_eq!(statuses(results), ["ABORTED", "ALREADY_HELD", "ABORTED"]);
    assert_eq!(results[1]["heldBy"], "x");
    assert_eq!(results[0]["resource"], "b");
    assert_eq!(results[0]["requester"], "y");
    assert!(results[0].get("releaseToken").is_none(), "{body}");
    assert!(results[0].get("fencingToken").is_none(), "{body}");
    for free in ["b", "c"] {
        assert_eq!(app.check_status(free).await, "FREE", "{free}");
    }

    // A resource repeated in the batch is held by its first item by then.
    let body = atomic(
        &app,
        "reserve",
        json!([
            {"resource": "e", "requester": "y", "ttlSeconds": 60},
            {"resource": "e", "requester": "z"},
        ]),
    )
    .await;
    assert_eq!(body["committed"], false, "{body}");
    let results = body["results"].as_array().expect("results");
    assert_eq!(statuses(results), ["ABORTED", "ALREADY_HELD"]);
    assert_eq!(results[1]["heldBy"], "y");
    assert!(results[1]["expiresAt"].is_string(), "{body}");
    assert_eq!(app.check_status("e").await, "FREE");

    // Every item free: all reserved, as without atomic.
    let body = atomic(
        &app,
        "reserve",
        json!([
            {"resource": "b", "requester": "y", "ttlSeconds": 60},
            {"resource": "c", "requester": "y"},
        ]),
    )
    .await;
    assert_eq!(body["committed"], true, "{body}");
    let results = body["results"].as_array().expect("results");
    assert_eq!(statuses(results), ["RESERVED", "RESERVED"]);
    let (f1, f2) = (
        results[0]["fencingToken"].as_u64().expect("fencing token"),
        results[1]["fencingToken"].as_u64().expect("fencing token"),
    );
    assert!(f1 < f2, "fencing tokens rise within a batch: {f1} {f2}");
    for held in ["b", "c"] {
        assert_eq!(app.check_status(held).await, "HELD", "{held}");
    }

    // The aborted batches emitted nothing: a's grant, then b and c.
    let got: Vec<(String, String)> = events
        .take(3, Duration::from_secs(5))
        .await
        .iter()
        .map(|e| {
            (
                e.event.clone(),
                e.data["resource"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [("RESERVED", "a"), ("RESERVED", "b"), ("RESERVED", "c")]
        .iter()
        .map(|(k, r)| (k.to_string(), r.to_string()))
        .collect();
    assert_eq!(got, want);
    let extra = events.drain(Duration::from_millis(300)).await;
    assert!(extra.is_empty(), "no other event: {extra:?}");
}

async fn atomic_extend_and_unreserve_take_all_or_nothing(app: TestApp) {
    let r = app
        .reserve(json!([
            {"resource": "p", "requester": "x", "ttlSeconds": 30},
            {"resource": "q", "requester": "x", "ttlSeconds": 30},
        ]))
        .await;
    let (tp, tq) = (token(&r.results()[0]), token(&r.results()[1]));
    let p_expires = r.results()[0]["expiresAt"].clone();

    // One wrong token: nothing is extended.
    let body = atomic(
        &app,
        "extend",
        json!([
            {"resource": "p", "requester": "x", "releaseToken": tp, "ttlSeconds": 600},
            {"resource": "q", "requester": "x", "releaseToken": tp, "ttlSeconds": 600},
        ]),
    )
    .await;
    assert_eq!(body["committed"], false, "{body}");
    assert_eq!(
        statuses(body["results"].as_array().expect("results")),
        ["ABORTED", "INVALID_TOKEN"]
    );
    let listed = app.list_all("").await;
    let p = listed
        .iter()
        .find(|r| r["resource"] == "p")
        .expect("p listed");
    assert_eq!(p["expiresAt"], p_expires, "p's TTL is as it was");

    // Both right: both extended, and an item may repeat.
    let body = atomic(
        &app,
        "extend",
        json!([
            {"resource": "p", "requester": "x", "releaseToken": tp, "ttlSeconds": 600},
            {"resource": "q", "requester": "x", "releaseToken": tq, "ttlSeconds": 600},
            {"resource": "p", "requester": "x", "releaseToken": tp, "ttlSeconds": 600},
        ]),
    )
    .await;
    assert_eq!(body["committed"], true, "{body}");
    assert_eq!(
        statuses(body["results"].as_array().expect("results")),
        ["EXTENDED", "EXTENDED", "EXTENDED"]
    );

    // Releasing p twice in one batch: the second is NOT_HELD, so nothing is
    // released.
    let body = atomic(
        &app,
        "unreserve",
        json!([
            {"resource": "p", "requester": "x", "releaseToken": tp},
            {"resource": "q", "requester": "x", "releaseToken": tq},
            {"resource": "p", "requester": "x", "releaseToken": tp},
        ]),
    )
    .await;
    assert_eq!(body["committed"], false, "{body}");
    assert_eq!(
        statuses(body["results"].as_array().expect("results")),
        ["ABORTED", "ABORTED", "NOT_HELD"]
    );
    for held in ["p", "q"] {
        assert_eq!(app.check_status(held).await, "HELD", "{held}");
    }

    let body = atomic(
        &app,
        "unreserve",
        json!([
            {"resource": "p", "requester": "x", "releaseToken": tp},
            {"resource": "q", "requester": "x", "releaseToken": tq},
        ]),
    )
    .await;
    assert_eq!(body["committed"], true, "{body}");
    assert_eq!(
        statuses(body["results"].as_array().expect("results")),
        ["UNRESERVED", "UNRESERVED"]
    );
    for free in ["p", "q"] {
        assert_eq!(app.check_status(free).await, "FREE", "{free}");
    }
}

async fn only_atomic_answers_say_committed(app: TestApp) {
    let items = json!([{"resource": "n", "requester": "x"}]);
    for path in [
        "/api/v1/Reservation/reserve",
        "/api/v1/Reservation/reserve?atomic=false",
    ] {
        let r = app.post(path, items.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {r:?}");
        assert!(r.body.get("committed").is_none(), "{path}: {:?}", r.body);
    }
    let r = app
        .post("/api/v1/Reservation/check", json!([{"resource": "n"}]))
        .await;
    assert!(r.body.get("committed").is_none(), "{:?}", r.body);
    // Every item failing is not committed either.
    let body = atomic(&app, "reserve", items).await;
    assert_eq!(body["committed"], false, "{body}");
    assert_eq!(
        statuses(body["results"].as_array().expect("results")),
        ["ALREADY_HELD"]
    );
}

async fn a_bad_atomic_parameter_is_refused_and_changes_nothing(app: TestApp) {
    let items = json!([{"resource": "m", "requester": "x"}]);
    for query in [
        "atomic=yes",
        "atomic=",
        "atomic=TRUE",
        "atomic=true&atomic=true",
        "atomc=true",
    ] {
        for op in ["reserve", "unreserve", "extend"] {
            let r = app
                .post(&format!("/api/v1/Reservation/{op}?{query}"), items.clone())
                .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{op}?{query}: {r:?}");
            assert_eq!(r.error_code(), "INVALID_REQUEST", "{op}?{query}");
        }
    }
    assert_eq!(app.check_status("m").await, "FREE");
}

//! Semaphores and shared locks (contract section 15, docs/design/kinds.md):
//! `"limit":N` admits N holders that ask for the same limit, `"mode":"shared"`
//! admits readers and blocks writers; each permit or shared hold is a
//! reservation of its own; a request of another kind answers LIMIT_MISMATCH
//! and changes nothing; waiting, atomic, check, listing, events and locklock
//! all know the kinds.

use crate::events::{Sse, Stream};
use crate::every_topology;
use crate::helpers::{into_reply, Reply, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

every_topology!(
    a_semaphore_admits_its_limit_and_each_permit_is_its_own,
    a_permit_comes_back_after_its_ttl,
    a_writer_waits_for_the_readers_and_readers_queue_behind_it,
    consecutive_shared_waiters_are_granted_together,
    a_mismatch_answers_at_once_and_changes_nothing,
    an_atomic_batch_takes_k_permits_or_none,
    check_shows_the_mode_and_the_holders,
    the_listing_has_a_row_per_hold,
    fencing_tokens_rise_across_kinds_and_events_carry_the_mode,
    locklock_meets_shared_and_semaphore_holds_with_409_and_403,
    an_expiring_permit_is_handed_to_the_head_of_the_line,
    a_waiter_granted_elsewhere_lets_the_next_reader_join_it,
    validate_knows_every_hold_of_a_group,
    a_waiting_batch_takes_k_permits_together,
    a_repeat_under_its_idempotency_key_takes_no_more_permits,
    one_batch_fills_a_semaphore_item_by_item,
);

const WAIT: Duration = Duration::from_secs(5);

/// A reserve item of a kind: `mode` and `limit` as given.
fn item(resource: &str, requester: &str, kind: Value) -> Value {
    let mut it = json!({"resource": resource, "requester": requester, "ttlSeconds": 30});
    if let (Some(m), Some(k)) = (it.as_object_mut(), kind.as_object()) {
        m.extend(k.clone());
    }
    it
}

fn sem(n: u64) -> Value {
    json!({"limit": n})
}

fn shared() -> Value {
    json!({"mode": "shared"})
}

fn exclusive() -> Value {
    json!({})
}

/// A result without the fields that differ from run to run (tokens, times),
/// to compare whole bodies.
fn stable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        for k in ["releaseToken", "reservedAt", "expiresAt", "fencingToken"] {
            m.remove(k);
        }
        if let Some(Value::Array(hs)) = m.get_mut("holders") {
            for h in hs.iter_mut() {
                *h = stable(h);
            }
        }
    }
    v
}

/// One item reserved: its RESERVED result.
async fn take(app: &TestApp, resource: &str, requester: &str, kind: Value) -> Value {
    let r = app.reserve(json!([item(resource, requester, kind)])).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let res = r.results()[0].clone();
    assert_eq!(res["status"], "RESERVED", "{res}");
    res
}

/// One item tried: its result.
async fn attempt(app: &TestApp, resource: &str, requester: &str, kind: Value) -> Value {
    let r = app.reserve(json!([item(resource, requester, kind)])).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r.results()[0].clone()
}

async fn unreserve(app: &TestApp, resource: &str, requester: &str, token: &Value) -> String {
    let r = app
        .unreserve(json!([{"resource": resource, "requester": requester, "releaseToken": token}]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r.results()[0]["status"].as_str().unwrap_or("?").to_string()
}

async fn check_one(app: &TestApp, resource: &str) -> Value {
    let r = app.check(json!([{"resource": resource}])).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r.results()[0].clone()
}

async fn queue_length(app: &TestApp, resource: &str) -> u64 {
    check_one(app, resource).await["queueLength"]
        .as_u64()
        .unwrap_or(0)
}

/// Waits until `resource` has `n` waiters.
async fn until_waiting(app: &TestApp, resource: &str, n: u64) {
    let deadline = Instant::now() + WAIT;
    while queue_length(app, resource).await != n {
        assert!(
            Instant::now() < deadline,
            "{resource} never had {n} waiters"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A reserve that waits, in its own task.
fn wait_for(app: &TestApp, query: &str, items: Value) -> tokio::task::JoinHandle<Reply> {
    let url = app.url(&format!("/api/v1/Reservation/reserve?{query}"));
    let key = app.api_key.clone();
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let res = client
            .post(url)
            .header("X-Api-Key", key)
            .json(&items)
            .send()
            .await
            .expect("waiting reserve");
        into_reply(res).await
    })
}

/// (type, resource, requester, mode, limit) of each event.
fn summary(events: &[Sse]) -> Vec<(String, String, String, String, Value)> {
    events
        .iter()
        .map(|e| {
            (
                e.event.clone(),
                e.data["resource"].as_str().unwrap_or("").to_string(),
                e.data["requester"].as_str().unwrap_or("").to_string(),
                e.data["mode"].as_str().unwrap_or("").to_string(),
                e.data.get("limit").cloned().unwrap_or(Value::Null),
            )
        })
        .collect()
}

fn ev(
    kind: &str,
    res: &str,
    rq: &str,
    mode: &str,
    limit: Value,
) -> (String, String, String, String, Value) {
    (kind.into(), res.into(), rq.into(), mode.into(), limit)
}

async fn a_semaphore_admits_its_limit_and_each_permit_is_its_own(app: TestApp) {
    let mut got = Vec::new();
    for rq in ["a", "b", "c"] {
        let r = take(&app, "pool", rq, sem(3)).await;
        assert_eq!(
            stable(&r),
            json!({"resource": "pool", "requester": rq, "status": "RESERVED",
                   "mode": "semaphore", "limit": 3}),
            "{r}"
        );
        got.push(r);
    }
    let tokens: Vec<&str> = got
        .iter()
        .filter_map(|r| r["releaseToken"].as_str())
        .collect();
    assert_eq!(tokens.len(), 3);
    assert!(tokens[0] != tokens[1] && tokens[1] != tokens[2] && tokens[0] != tokens[2]);
    let fts: Vec<u64> = got
        .iter()
        .filter_map(|r| r["fencingToken"].as_u64())
        .collect();
    assert!(fts[0] < fts[1] && fts[1] < fts[2], "{fts:?}");

    // The fourth: full, no line.
    let full = attempt(&app, "pool", "d", sem(3)).await;
    assert_eq!(
        stable(&full),
        json!({"resource": "pool", "requester": "d", "status": "ALREADY_HELD",
               "heldBy": "a", "holders": 3, "available": 0,
               "mode": "semaphore", "limit": 3}),
        "{full}"
    );
    assert_eq!(
        full["expiresAt"], got[0]["expiresAt"],
        "the oldest holder's"
    );

    // Each permit is extended on its own.
    let e = app
        .extend(json!([{"resource": "pool", "requester": "b",
                        "releaseToken": got[1]["releaseToken"], "ttlSeconds": 120}]))
        .await;
    assert_eq!(e.results()[0]["status"], "EXTENDED", "{e:?}");
    let wrong = app
        .extend(json!([{"resource": "pool", "requester": "b",
                        "releaseToken": got[0]["releaseToken"], "ttlSeconds": 120}]))
        .await;
    assert_eq!(wrong.results()[0]["status"], "INVALID_TOKEN", "{wrong:?}");
    let check = check_one(&app, "pool").await;
    let holders = check["holders"].as_array().expect("holders");
    assert_eq!(holders.len(), 3);
    assert_eq!(holders[1]["requester"], "b");
    assert_eq!(holders[1]["expiresAt"], e.results()[0]["expiresAt"]);
    assert_eq!(holders[0]["expiresAt"], got[0]["expiresAt"]);

    // ... and released on its own: another's token is INVALID_TOKEN.
    assert_eq!(
        unreserve(&app, "pool", "b", &got[0]["releaseToken"]).await,
        "INVALID_TOKEN"
    );
    assert_eq!(
        unreserve(&app, "pool", "b", &got[1]["releaseToken"]).await,
        "UNRESERVED"
    );
    // The permit is back: d gets it.
    let d = take(&app, "pool", "d", sem(3)).await;
    assert!(d["fencingToken"].as_u64() > got[2]["fencingToken"].as_u64());
    // b's permit is gone, the others are held: INVALID_TOKEN, not NOT_HELD.
    assert_eq!(
        unreserve(&app, "pool", "b", &got[1]["releaseToken"]).await,
        "INVALID_TOKEN"
    );
    for (rq, r) in [("a", &got[0]), ("c", &got[2]), ("d", &d)] {
        assert_eq!(
            unreserve(&app, "pool", rq, &r["releaseToken"]).await,
            "UNRESERVED"
        );
    }
    assert_eq!(
        unreserve(&app, "pool", "a", &got[0]["releaseToken"]).await,
        "NOT_HELD"
    );
    assert_eq!(check_one(&app, "pool").await["status"], "FREE");
}

async fn a_permit_comes_back_after_its_ttl(app: TestApp) {
    let mut events = Stream::open(&app.address, &app.api_key, "", None).await;
    let mut short = item("p", "a", sem(2));
    short["ttlSeconds"] = json!(1);
    let r = app.reserve(json!([short])).await;
    let a = r.results()[0].clone();
    assert_eq!(a["status"], "RESERVED", "{r:?}");
    take(&app, "p", "b", sem(2)).await;
    let full = attempt(&app, "p", "c", sem(2)).await;
    assert_eq!(full["status"], "ALREADY_HELD", "{full}");
    assert_eq!(full["available"], 0);
    assert_eq!(full["holders"], 2);

    // a crashed: its permit comes back at its TTL.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let check = check_one(&app, "p").await;
    assert_eq!(check["available"], 1, "{check}");
    assert_eq!(check["requester"], "b", "{check}");
    take(&app, "p", "c", sem(2)).await;

    let got = events.take(4, WAIT).await;
    assert_eq!(
        summary(&got),
        vec![
            ev("RESERVED", "p", "a", "semaphore", json!(2)),
            ev("RESERVED", "p", "b", "semaphore", json!(2)),
            ev("EXPIRED", "p", "a", "semaphore", json!(2)),
            ev("RESERVED", "p", "c", "semaphore", json!(2)),
        ]
    );
    assert_eq!(got[2].data["fencingToken"], a["fencingToken"]);
    // Exactly one EXPIRED, whoever retires it (the sweeper runs meanwhile).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let more = events.drain(Duration::from_millis(300)).await;
    assert!(more.is_empty(), "{more:#?}");
}

async fn a_writer_waits_for_the_readers_and_readers_queue_behind_it(app: TestApp) {
    let r1 = take(&app, "doc", "r1", shared()).await;
    let r2 = take(&app, "doc", "r2", shared()).await;
    assert_eq!(r2["mode"], "shared");
    assert!(r2.get("limit").is_none(), "{r2}");

    // A writer is refused while readers hold it, and waits with a wait.
    let no = attempt(&app, "doc", "w", exclusive()).await;
    assert_eq!(
        stable(&no),
        json!({"resource": "doc", "requester": "w", "status": "ALREADY_HELD",
               "heldBy": "r1", "holders": 2, "mode": "exclusive"}),
        "{no}"
    );
    let writer = wait_for(
        &app,
        "waitSeconds=10",
        json!([item("doc", "w", exclusive())]),
    );
    until_waiting(&app, "doc", 1).await;

    // A new reader does not get past the waiting writer.
    let late = attempt(&app, "doc", "r3", shared()).await;
    assert_eq!(
        stable(&late),
        json!({"resource": "doc", "requester": "r3", "status": "ALREADY_HELD",
               "heldBy": "r1", "holders": 2, "queueLength": 1, "mode": "shared"}),
        "{late}"
    );
    let reader = wait_for(&app, "waitSeconds=10", json!([item("doc", "r4", shared())]));
    until_waiting(&app, "doc", 2).await;

    // One reader leaves: the writer still waits.
    assert_eq!(
        unreserve(&app, "doc", "r1", &r1["releaseToken"]).await,
        "UNRESERVED"
    );
    let check = check_one(&app, "doc").await;
    assert_eq!(
        stable(&check),
        json!({"resource": "doc", "requester": "r2", "status": "HELD", "mode": "shared",
               "queueLength": 2, "holders": [{"requester": "r2"}]}),
        "{check}"
    );
    // The last reader leaves: the writer gets it, the reader behind still waits.
    assert_eq!(
        unreserve(&app, "doc", "r2", &r2["releaseToken"]).await,
        "UNRESERVED"
    );
    let w = writer.await.expect("writer");
    assert_eq!(w.status, StatusCode::OK, "{w:?}");
    let w = w.results()[0].clone();
    assert_eq!(w["status"], "RESERVED", "{w}");
    assert_eq!(w["mode"], "exclusive");
    assert!(w["fencingToken"].as_u64() > r2["fencingToken"].as_u64());
    let check = check_one(&app, "doc").await;
    assert_eq!(
        stable(&check),
        json!({"resource": "doc", "requester": "w", "status": "HELD", "mode": "exclusive",
               "queueLength": 1}),
        "{check}"
    );
    assert_eq!(
        unreserve(&app, "doc", "w", &w["releaseToken"]).await,
        "UNRESERVED"
    );
    let r4 = reader.await.expect("reader");
    let r4 = r4.results()[0].clone();
    assert_eq!(r4["status"], "RESERVED", "{r4}");
    assert_eq!(r4["mode"], "shared");
    assert_eq!(r4["requester"], "r4");
}

async fn consecutive_shared_waiters_are_granted_together(app: TestApp) {
    let w = take(&app, "t", "w", exclusive()).await;
    let mut events = Stream::open(&app.address, &app.api_key, "", None).await;
    let mut waiters = Vec::new();
    let line = [
        ("s1", shared()),
        ("s2", shared()),
        ("s3", shared()),
        ("w2", exclusive()),
        ("s4", shared()),
    ];
    for (n, (rq, kind)) in line.iter().enumerate() {
        waiters.push(wait_for(
            &app,
            "waitSeconds=10",
            json!([item("t", rq, kind.clone())]),
        ));
        until_waiting(&app, "t", n as u64 + 1).await;
    }
    assert_eq!(
        unreserve(&app, "t", "w", &w["releaseToken"]).await,
        "UNRESERVED"
    );
    let mut readers = Vec::new();
    for handle in waiters.drain(..3) {
        let r = handle.await.expect("reader");
        let r = r.results()[0].clone();
        assert_eq!(r["status"], "RESERVED", "{r}");
        readers.push(r);
    }
    let check = check_one(&app, "t").await;
    assert_eq!(
        stable(&check),
        json!({"resource": "t", "requester": "s1", "status": "HELD", "mode": "shared",
               "queueLength": 2,
               "holders": [{"requester": "s1"}, {"requester": "s2"}, {"requester": "s3"}]}),
        "{check}"
    );
    let got = events.take(4, WAIT).await;
    assert_eq!(
        summary(&got),
        vec![
            ev("UNRESERVED", "t", "w", "exclusive", Value::Null),
            ev("RESERVED", "t", "s1", "shared", Value::Null),
            ev("RESERVED", "t", "s2", "shared", Value::Null),
            ev("RESERVED", "t", "s3", "shared", Value::Null),
        ]
    );
    // The writer behind them waits for all three; s4 waits behind it.
    for (r, rq) in readers.iter().zip(["s1", "s2", "s3"]) {
        assert_eq!(
            unreserve(&app, "t", rq, &r["releaseToken"]).await,
            "UNRESERVED"
        );
    }
    let mut rest = waiters.into_iter();
    let w2 = rest.next().expect("w2").await.expect("w2");
    let w2 = w2.results()[0].clone();
    assert_eq!(w2["status"], "RESERVED", "{w2}");
    assert_eq!(w2["requester"], "w2");
    assert_eq!(queue_length(&app, "t").await, 1);
    assert_eq!(
        unreserve(&app, "t", "w2", &w2["releaseToken"]).await,
        "UNRESERVED"
    );
    let s4 = rest.next().expect("s4").await.expect("s4");
    assert_eq!(s4.results()[0]["status"], "RESERVED", "{s4:?}");
}

async fn a_mismatch_answers_at_once_and_changes_nothing(app: TestApp) {
    let mut events = Stream::open(&app.address, &app.api_key, "", None).await;
    take(&app, "x", "a", exclusive()).await;
    take(&app, "s", "a", shared()).await;
    take(&app, "m", "a", sem(2)).await;
    // The setup's own events, so that what follows must add none.
    assert_eq!(events.take(3, WAIT).await.len(), 3);
    let before_list = app.list_all("").await;
    let before_check = app
        .check(json!([{"resource": "x"}, {"resource": "s"}, {"resource": "m"}]))
        .await
        .body;

    let cases = [
        ("x", sem(2), json!({"mode": "exclusive"})),
        ("s", sem(2), json!({"mode": "shared"})),
        ("m", exclusive(), json!({"mode": "semaphore", "limit": 2})),
        (
            "m",
            json!({"mode": "exclusive"}),
            json!({"mode": "semaphore", "limit": 2}),
        ),
        ("m", shared(), json!({"mode": "semaphore", "limit": 2})),
        ("m", sem(3), json!({"mode": "semaphore", "limit": 2})),
    ];
    for (res, kind, holders) in &cases {
        let mut want = json!({"resource": res, "requester": "b", "status": "LIMIT_MISMATCH"});
        if let (Some(w), Some(h)) = (want.as_object_mut(), holders.as_object()) {
            w.extend(h.clone());
        }
        let got = attempt(&app, res, "b", kind.clone()).await;
        assert_eq!(got, want, "{res} {kind}");
        // With a wait it answers at once, and nothing is queued.
        let started = Instant::now();
        let r = app
            .post(
                "/api/v1/Reservation/reserve?waitSeconds=5",
                json!([item(res, "b", kind.clone())]),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.results()[0], want, "{res} {kind} waiting");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(queue_length(&app, res).await, 0);
    }
    // A waiting batch with a mismatching item: all or nothing, at once.
    let r = app
        .post(
            "/api/v1/Reservation/reserve?waitSeconds=5&atomic=true",
            json!([
                item("free", "b", exclusive()),
                item("m", "b", sem(3)),
                item("x", "b", exclusive())
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["committed"], false, "{r:?}");
    assert_eq!(
        r.body["results"],
        json!([
            {"resource": "free", "requester": "b", "status": "ABORTED", "mode": "exclusive"},
            {"resource": "m", "requester": "b", "status": "LIMIT_MISMATCH", "mode": "semaphore", "limit": 2},
            // Held: the failing items carry their real status (section 13).
            {"resource": "x", "requester": "b", "status": "ALREADY_HELD", "mode": "exclusive",
             "heldBy": "a", "holders": 1, "expiresAt": r.body["results"][2]["expiresAt"]},
        ])
    );
    for res in ["free", "x", "m"] {
        assert_eq!(queue_length(&app, res).await, 0, "{res}");
    }
    // Nothing changed: listing, check, events.
    assert_eq!(app.list_all("").await, before_list);
    let after_check = app
        .check(json!([{"resource": "x"}, {"resource": "s"}, {"resource": "m"}]))
        .await
        .body;
    assert_eq!(after_check, before_check);
    assert_eq!(check_one(&app, "free").await["status"], "FREE");
    let none = events.drain(Duration::from_millis(300)).await;
    assert!(none.is_empty(), "{none:#?}");
}

async fn an_atomic_batch_takes_k_permits_or_none(app: TestApp) {
    take(&app, "k", "a", sem(3)).await;
    let three = json!([
        item("k", "b", sem(3)),
        item("k", "b", sem(3)),
        item("k", "b", sem(3))
    ]);
    let r = app
        .post("/api/v1/Reservation/reserve?atomic=true", three.clone())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["committed"], false, "{r:?}");
    let results: Vec<Value> = r.results().iter().map(stable).collect();
    assert_eq!(
        results,
        vec![
            json!({"resource": "k", "requester": "b", "status": "ABORTED", "mode": "semaphore", "limit": 3}),
            json!({"resource": "k", "requester": "b", "status": "ABORTED", "mode": "semaphore", "limit": 3}),
            json!({"resource": "k", "requester": "b", "status": "ALREADY_HELD", "heldBy": "a",
                   "holders": 3, "available": 0, "mode": "semaphore", "limit": 3}),
        ]
    );
    assert_eq!(check_one(&app, "k").await["available"], 2);

    let two = json!([item("k", "b", sem(3)), item("k", "b", sem(3))]);
    let r = app
        .post("/api/v1/Reservation/reserve?atomic=true", two)
        .await;
    assert_eq!(r.body["committed"], true, "{r:?}");
    let got = r.results();
    assert!(got.iter().all(|g| g["status"] == "RESERVED"), "{r:?}");
    assert_ne!(got[0]["releaseToken"], got[1]["releaseToken"]);
    assert!(got[0]["fencingToken"].as_u64() < got[1]["fencingToken"].as_u64());
    let check = check_one(&app, "k").await;
    assert_eq!(check["available"], 0, "{check}");
    assert_eq!(
        stable(&check)["holders"],
        json!([{"requester": "a"}, {"requester": "b"}, {"requester": "b"}])
    );

    // Without atomic the items apply one by one: the third is refused.
    let r = app
        .reserve(json!([
            item("k2", "c", sem(2)),
            item("k2", "c", sem(2)),
            item("k2", "c", sem(2))
        ]))
        .await;
    let statuses: Vec<&str> = r
        .results()
        .iter()
        .filter_map(|g| g["status"].as_str())
        .collect();
    assert_eq!(statuses, ["RESERVED", "RESERVED", "ALREADY_HELD"], "{r:?}");

    // An atomic unreserve of one permit twice: the second finds the others.
    let t = got[0]["releaseToken"].clone();
    let r = app
        .post(
            "/api/v1/Reservation/unreserve?atomic=true",
            json!([{"resource": "k", "requester": "b", "releaseToken": t},
                   {"resource": "k", "requester": "b", "releaseToken": t}]),
        )
        .await;
    assert_eq!(r.body["committed"], false, "{r:?}");
    let statuses: Vec<&str> = r
        .results()
        .iter()
        .filter_map(|g| g["status"].as_str())
        .collect();
    assert_eq!(statuses, ["ABORTED", "INVALID_TOKEN"], "{r:?}");
    assert_eq!(check_one(&app, "k").await["available"], 0);
}

async fn check_shows_the_mode_and_the_holders(app: TestApp) {
    let a = take(&app, "sem", "a", sem(3)).await;
    let b = take(&app, "sem", "b", sem(3)).await;
    let check = check_one(&app, "sem").await;
    assert_eq!(
        check,
        json!({"resource": "sem", "requester": "a", "status": "HELD", "mode": "semaphore",
        "limit": 3, "available": 1,
        "reservedAt": a["reservedAt"], "expiresAt": a["expiresAt"],
        "fencingToken": a["fencingToken"],
        "holders": [
            {"requester": "a", "reservedAt": a["reservedAt"], "expiresAt": a["expiresAt"],
             "fencingToken": a["fencingToken"]},
            {"requester": "b", "reservedAt": b["reservedAt"], "expiresAt": b["expiresAt"],
             "fencingToken": b["fencingToken"]},
        ]})
    );
    let r = take(&app, "rw", "r", shared()).await;
    let check = check_one(&app, "rw").await;
    assert_eq!(
        check,
        json!({"resource": "rw", "requester": "r", "status": "HELD", "mode": "shared",
               "reservedAt": r["reservedAt"], "expiresAt": r["expiresAt"],
               "fencingToken": r["fencingToken"],
               "holders": [{"requester": "r", "reservedAt": r["reservedAt"],
                            "expiresAt": r["expiresAt"], "fencingToken": r["fencingToken"]}]})
    );
    let x = take(&app, "ex", "x", exclusive()).await;
    let check = check_one(&app, "ex").await;
    assert_eq!(
        check,
        json!({"resource": "ex", "requester": "x", "status": "HELD", "mode": "exclusive",
               "reservedAt": x["reservedAt"], "expiresAt": x["expiresAt"],
               "fencingToken": x["fencingToken"]})
    );
    assert_eq!(check_one(&app, "none").await["status"], "FREE");
}

async fn the_listing_has_a_row_per_hold(app: TestApp) {
    take(&app, "b", "x", sem(2)).await;
    take(&app, "c", "z", exclusive()).await;
    take(&app, "a", "p", shared()).await;
    take(&app, "b", "y", sem(2)).await;
    take(&app, "a", "q", shared()).await;
    take(&app, "a/1", "x", exclusive()).await;
    let rows = app.list_all("").await;
    let seen: Vec<(String, String, String, Value)> = rows
        .iter()
        .map(|r| {
            (
                r["resource"].as_str().unwrap_or("").to_string(),
                r["requester"].as_str().unwrap_or("").to_string(),
                r["mode"].as_str().unwrap_or("").to_string(),
                r.get("limit").cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    let want = |res: &str, rq: &str, mode: &str, limit: Value| {
        (res.to_string(), rq.to_string(), mode.to_string(), limit)
    };
    assert_eq!(
        seen,
        vec![
            want("a", "p", "shared", Value::Null),
            want("a", "q", "shared", Value::Null),
            want("a/1", "x", "exclusive", Value::Null),
            want("b", "x", "semaphore", json!(2)),
            want("b", "y", "semaphore", json!(2)),
            want("c", "z", "exclusive", Value::Null),
        ]
    );
    assert!(rows[0]["fencingToken"].as_u64() < rows[1]["fencingToken"].as_u64());
    assert!(rows[3]["fencingToken"].as_u64() < rows[4]["fencingToken"].as_u64());
    // Pages of one: the cursor falls between two holds of one resource.
    assert_eq!(app.list_all("limit=1").await, rows);
    assert_eq!(app.list_all("limit=2").await, rows);
    let by_x = app.list_all("requester=x&limit=1").await;
    assert_eq!(by_x, vec![rows[2].clone(), rows[3].clone()]);
    let a = app.list_all("prefix=a&limit=1").await;
    assert_eq!(a, rows[..3].to_vec());
}

async fn fencing_tokens_rise_across_kinds_and_events_carry_the_mode(app: TestApp) {
    let mut events = Stream::open(&app.address, &app.api_key, "", None).await;
    let e = take(&app, "f", "e", exclusive()).await;
    assert_eq!(
        unreserve(&app, "f", "e", &e["releaseToken"]).await,
        "UNRESERVED"
    );
    let s1 = take(&app, "f", "s1", shared()).await;
    let s2 = take(&app, "f", "s2", shared()).await;
    // The operator force-releases the group: one event per hold.
    let r = app.force_release("f").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    assert_eq!(check_one(&app, "f").await["status"], "FREE");
    let m = take(&app, "f", "m", sem(2)).await;
    let e2 = take(&app, "g", "e", exclusive()).await;
    let fts: Vec<u64> = [&e, &s1, &s2, &m, &e2]
        .iter()
        .filter_map(|r| r["fencingToken"].as_u64())
        .collect();
    assert_eq!(fts.len(), 5);
    assert!(fts.windows(2).all(|w| w[0] < w[1]), "{fts:?}");

    let got = events.take(8, WAIT).await;
    assert_eq!(
        summary(&got),
        vec![
            ev("RESERVED", "f", "e", "exclusive", Value::Null),
            ev("UNRESERVED", "f", "e", "exclusive", Value::Null),
            ev("RESERVED", "f", "s1", "shared", Value::Null),
            ev("RESERVED", "f", "s2", "shared", Value::Null),
            ev("FORCE_RELEASED", "f", "s1", "shared", Value::Null),
            ev("FORCE_RELEASED", "f", "s2", "shared", Value::Null),
            ev("RESERVED", "f", "m", "semaphore", json!(2)),
            ev("RESERVED", "g", "e", "exclusive", Value::Null),
        ]
    );
    let event_fts: Vec<u64> = got
        .iter()
        .filter_map(|e| e.data["fencingToken"].as_u64())
        .collect();
    assert_eq!(
        event_fts,
        [fts[0], fts[0], fts[1], fts[2], fts[1], fts[2], fts[3], fts[4]]
    );
    assert!(got
        .iter()
        .all(|e| e.data.get("limit").is_none() || e.data["mode"] == "semaphore"));
    assert_eq!(got[4].data["apiKeyLabel"], "admin");
}

async fn locklock_meets_shared_and_semaphore_holds_with_409_and_403(app: TestApp) {
    let lock = |name: &str, query: &str, method: Method| {
        let url = app.url(&format!("/v1/api/lock/key/{name}{query}"));
        let key = app.api_key.clone();
        let body = if method == Method::POST {
            json!({"expires_in": 30})
        } else {
            json!({})
        };
        async move {
            into_reply(
                reqwest::Client::new()
                    .request(method, url)
                    .header("X-Api-Key", key)
                    .json(&body)
                    .send()
                    .await
                    .expect("lock request"),
            )
            .await
        }
    };
    take(&app, "readers", "r", shared()).await;
    take(&app, "permits", "p", sem(5)).await;
    for name in ["readers", "permits"] {
        let r = lock(name, "", Method::POST).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{name}: {r:?}");
        // At once, even with a wait.
        let started = Instant::now();
        let r = lock(name, "?wait=5", Method::POST).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{name}: {r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(queue_length(&app, name).await, 0);
        // Reservation API holds: locklock may not release them.
        let r = lock(name, "", Method::DELETE).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{name}: {r:?}");
        assert_eq!(check_one(&app, name).await["status"], "HELD");
    }
}

async fn an_expiring_permit_is_handed_to_the_head_of_the_line(app: TestApp) {
    let mut short = item("q", "a", sem(2));
    short["ttlSeconds"] = json!(1);
    let r = app.reserve(json!([short])).await;
    assert_eq!(r.results()[0]["status"], "RESERVED", "{r:?}");
    take(&app, "q", "b", sem(2)).await;
    let waiter = wait_for(&app, "waitSeconds=10", json!([item("q", "c", sem(2))]));
    until_waiting(&app, "q", 1).await;
    // Another kind does not wait (LIMIT_MISMATCH at once); a permit behind
    // c does.
    let r = app
        .post(
            "/api/v1/Reservation/reserve?waitSeconds=3",
            json!([item("q", "e", shared())]),
        )
        .await;
    assert_eq!(r.results()[0]["status"], "LIMIT_MISMATCH", "{r:?}");
    let other = wait_for(&app, "waitSeconds=3", json!([item("q", "d", sem(2))]));
    until_waiting(&app, "q", 2).await;
    let started = Instant::now();
    let got = waiter.await.expect("waiter");
    let got = got.results()[0].clone();
    assert_eq!(got["status"], "RESERVED", "{got}");
    assert_eq!(got["mode"], "semaphore");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let check = check_one(&app, "q").await;
    assert_eq!(
        stable(&check),
        json!({"resource": "q", "requester": "b", "status": "HELD", "mode": "semaphore",
               "limit": 2, "available": 0, "queueLength": 1,
               "holders": [{"requester": "b"}, {"requester": "c"}]}),
        "{check}"
    );
    let other = other.await.expect("other");
    let other = other.results()[0].clone();
    assert_eq!(other["status"], "TIMED_OUT", "{other}");
    assert_eq!(other["heldBy"], "b", "{other}");
    assert_eq!(other["queuePosition"], 1, "{other}");
    assert_eq!(other["mode"], "semaphore", "{other}");
}

async fn a_waiter_granted_elsewhere_lets_the_next_reader_join_it(app: TestApp) {
    let x = take(&app, "ma", "x", exclusive()).await;
    // W waits for ma (held) and mb (free): it heads mb's line.
    let w = wait_for(
        &app,
        "waitSeconds=10&atomic=true",
        json!([item("ma", "w", shared()), item("mb", "w", shared())]),
    );
    until_waiting(&app, "mb", 1).await;
    // A reader of mb queues behind W (no barging).
    let s = wait_for(&app, "waitSeconds=10", json!([item("mb", "s", shared())]));
    until_waiting(&app, "mb", 2).await;
    // ma is released: W gets both, and the reader behind it on mb joins it.
    assert_eq!(
        unreserve(&app, "ma", "x", &x["releaseToken"]).await,
        "UNRESERVED"
    );
    let w = w.await.expect("w");
    let statuses: Vec<&str> = w
        .results()
        .iter()
        .filter_map(|r| r["status"].as_str())
        .collect();
    assert_eq!(statuses, ["RESERVED", "RESERVED"], "{w:?}");
    let s = s.await.expect("s");
    assert_eq!(s.results()[0]["status"], "RESERVED", "{s:?}");
    let check = check_one(&app, "mb").await;
    assert_eq!(
        stable(&check),
        json!({"resource": "mb", "requester": "w", "status": "HELD", "mode": "shared",
               "holders": [{"requester": "w"}, {"requester": "s"}]}),
        "{check}"
    );
}

async fn validate_knows_every_hold_of_a_group(app: TestApp) {
    let validate = |token: Value| {
        let app = &app;
        async move {
            let r = app
                .post(
                    "/api/v1/Reservation/validate",
                    json!([{"resource": "v", "fencingToken": token}]),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{r:?}");
            r.results()[0].clone()
        }
    };
    let a = take(&app, "v", "a", sem(2)).await;
    let b = take(&app, "v", "b", sem(2)).await;
    for (rq, r) in [("a", &a), ("b", &b)] {
        let v = validate(r["fencingToken"].clone()).await;
        assert_eq!(
            v,
            json!({"resource": "v", "status": "CURRENT", "fencingToken": r["fencingToken"],
                   "requester": rq, "expiresAt": r["expiresAt"]}),
            "{v}"
        );
    }
    // Stale against a group: no single current token.
    let old = a["fencingToken"].as_u64().unwrap_or(0) - 1;
    let v = validate(json!(old)).await;
    assert_eq!(
        v,
        json!({"resource": "v", "status": "STALE", "fencingToken": old,
               "currentFencingToken": null}),
        "{v}"
    );
    assert_eq!(
        unreserve(&app, "v", "a", &a["releaseToken"]).await,
        "UNRESERVED"
    );
    assert_eq!(validate(a["fencingToken"].clone()).await["status"], "STALE");
    assert_eq!(
        validate(b["fencingToken"].clone()).await["status"],
        "CURRENT"
    );
}

/// A waiting batch may name a semaphore several times (k permits, up to its
/// limit) or a shared resource; it waits for all of them and gets them
/// together. Repeats that could never be granted (an exclusive resource
/// twice, more permits than the limit, exclusive and shared) are a 400 and
/// change nothing.
async fn a_waiting_batch_takes_k_permits_together(app: TestApp) {
    for (res, kinds) in [
        ("twice", vec![exclusive(), exclusive()]),
        ("sem2", vec![sem(2), sem(2), sem(2)]),
        ("rw", vec![exclusive(), shared()]),
        ("mixed", vec![sem(2), sem(3)]),
    ] {
        let items: Vec<Value> = kinds.into_iter().map(|k| item(res, "a", k)).collect();
        let r = app
            .post(
                "/api/v1/Reservation/reserve?waitSeconds=5&atomic=true",
                Value::Array(items),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{res}: {r:?}");
        assert_eq!(r.error_code(), "INVALID_REQUEST", "{res}");
        let check = app
            .post("/api/v1/Reservation/check", json!([{"resource": res}]))
            .await;
        assert_eq!(check.results()[0]["status"], "FREE", "{res}: {check:?}");
    }
    // Two of three permits are taken by others; a batch wanting two waits.
    let one = take(&app, "pool", "x", sem(3)).await;
    take(&app, "pool", "y", sem(3)).await;
    let waiter = wait_for(
        &app,
        "waitSeconds=10&atomic=true",
        json!([item("pool", "w", sem(3)), item("pool", "w", sem(3))]),
    );
    let queued =
        crate::helpers::eventually(WAIT, || async { queue_length(&app, "pool").await == 1 }).await;
    assert!(queued.is_some(), "the batch waits in line");
    app.post(
        "/api/v1/Reservation/unreserve",
        json!([{"resource": "pool", "requester": "x", "releaseToken": one["releaseToken"]}]),
    )
    .await;
    let got = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("granted in time")
        .expect("waiter");
    assert_eq!(got.body["committed"], true, "{got:?}");
    let results = got.results();
    assert!(
        results
            .iter()
            .all(|x| x["status"] == "RESERVED" && x["limit"] == 3),
        "{results:?}"
    );
    assert_ne!(results[0]["releaseToken"], results[1]["releaseToken"]);
    let check = app
        .post("/api/v1/Reservation/check", json!([{"resource": "pool"}]))
        .await;
    assert_eq!(check.results()[0]["available"], 0, "{check:?}");
    assert_eq!(
        check.results()[0]["holders"].as_array().map(Vec::len),
        Some(3),
        "{check:?}"
    );
}

/// Idempotency-Key (contract section 14) with permits: a repeat answers the
/// same permits (tokens, fencing tokens) and takes none more; a repeat of a
/// LIMIT_MISMATCH answers it again and changes nothing.
async fn a_repeat_under_its_idempotency_key_takes_no_more_permits(app: TestApp) {
    let send = |key: &'static str, body: Value| {
        let app = &app;
        async move {
            let res = app
                .client
                .post(app.url("/api/v1/Reservation/reserve?atomic=true"))
                .header("X-Api-Key", &app.api_key)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .expect("reserve");
            let replayed = res.headers().get("idempotent-replayed").is_some();
            (into_reply(res).await, replayed)
        }
    };
    let two = json!([
        item("idem-pool", "a", sem(3)),
        item("idem-pool", "b", sem(3))
    ]);
    let (first, replayed) = send("permits-1", two.clone()).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert!(!replayed);
    assert_eq!(first.body["committed"], true, "{first:?}");
    let (again, replayed) = send("permits-1", two).await;
    assert!(replayed, "{again:?}");
    assert_eq!(again.body, first.body);
    let check = check_one(&app, "idem-pool").await;
    assert_eq!(check["available"], 1, "{check}");
    let mismatch = json!([item("idem-pool", "c", shared())]);
    let (m1, _) = send("mismatch-1", mismatch.clone()).await;
    assert_eq!(m1.results()[0]["status"], "LIMIT_MISMATCH", "{m1:?}");
    let (m2, replayed) = send("mismatch-1", mismatch).await;
    assert!(replayed, "an executed request is recorded: {m2:?}");
    assert_eq!(m2.body, m1.body);
    let check = check_one(&app, "idem-pool").await;
    assert_eq!(check["available"], 1, "{check}");
}

/// Items of one batch on one semaphore apply in order, each against what the
/// earlier ones left (the Redis script writes the group once at the end).
async fn one_batch_fills_a_semaphore_item_by_item(app: TestApp) {
    let r = app
        .reserve(json!([
            item("fill", "a", sem(3)),
            item("fill", "b", sem(3)),
            item("fill", "c", exclusive()),
            item("fill", "d", sem(3)),
            item("fill", "e", sem(3)),
            item("fill", "f", shared())
        ]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let got: Vec<Value> = r.results().iter().map(stable).collect();
    assert_eq!(
        got,
        vec![
            json!({"resource": "fill", "requester": "a", "status": "RESERVED", "mode": "semaphore", "limit": 3}),
            json!({"resource": "fill", "requester": "b", "status": "RESERVED", "mode": "semaphore", "limit": 3}),
            json!({"resource": "fill", "requester": "c", "status": "LIMIT_MISMATCH", "mode": "semaphore", "limit": 3}),
            json!({"resource": "fill", "requester": "d", "status": "RESERVED", "mode": "semaphore", "limit": 3}),
            json!({"resource": "fill", "requester": "e", "status": "ALREADY_HELD", "mode": "semaphore", "limit": 3,
                   "heldBy": "a", "holders": 3, "available": 0}),
            json!({"resource": "fill", "requester": "f", "status": "LIMIT_MISMATCH", "mode": "semaphore", "limit": 3}),
        ]
    );
    let check = check_one(&app, "fill").await;
    let holders: Vec<&str> = check["holders"]
        .as_array()
        .map(|hs| hs.iter().filter_map(|h| h["requester"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(holders, ["a", "b", "d"], "{check}");
    assert_eq!(app.list_all("").await.len(), 3);
}

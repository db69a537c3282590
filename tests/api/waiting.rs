//! Waiting acquire with a fair queue (contract section 12): `?waitSeconds=N`
//! on reserve waits in the line of each resource, strict FIFO, no barging, and
//! whatever frees a resource hands it to the head of its line.

use crate::every_topology;
use crate::helpers::{
    create_tenant, into_reply, send, settings, spawn_app_with, start_instance, Kind, RedisServer,
    Reply, TestApp,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

every_topology!(
    a_waiter_gets_the_resource_when_it_is_released,
    waiters_are_served_in_order,
    a_wait_that_times_out_leaves_the_line_with_its_place,
    a_free_resource_with_a_line_is_not_taken_by_a_plain_reserve,
    an_expiry_hands_the_resource_on,
    a_force_release_hands_the_resource_on,
    multi_item_waiters_in_opposite_orders_both_complete,
    a_client_that_goes_away_leaves_the_line,
    bad_waits_are_refused_and_change_nothing,
    locklock_acquire_waits_too,
    a_waiting_request_holds_its_idempotency_key,
);

/// A waiting reserve with an Idempotency-Key, in the background.
fn wait_keyed(
    app: &TestApp,
    key: &'static str,
    query: &str,
    items: Value,
) -> tokio::task::JoinHandle<Reply> {
    let url = format!("{}/api/v1/Reservation/reserve?{query}", app.address);
    let api_key = app.api_key.clone();
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        into_reply(
            client
                .post(url)
                .header("X-Api-Key", api_key)
                .header("Idempotency-Key", key)
                .json(&items)
                .send()
                .await
                .expect("keyed request"),
        )
        .await
    })
}

/// Starts a waiting reserve of `items` (in the background) and answers its
/// reply when it ends.
fn wait_for(
    app: &TestApp,
    query: &str,
    items: Value,
    timeout: Duration,
) -> tokio::task::JoinHandle<Reply> {
    wait_on(&app.address, &app.api_key, query, items, timeout)
}

/// [`wait_for`] on the instance at `base` with `key`.
fn wait_on(
    base: &str,
    key: &str,
    query: &str,
    items: Value,
    timeout: Duration,
) -> tokio::task::JoinHandle<Reply> {
    let url = format!("{base}/api/v1/Reservation/reserve?{query}");
    let key = key.to_string();
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("client");
        match client
            .post(url)
            .header("X-Api-Key", key)
            .json(&items)
            .send()
            .await
        {
            Ok(res) => into_reply(res).await,
            // The client gave up (a test of a client that goes away).
            Err(_) => Reply {
                status: StatusCode::REQUEST_TIMEOUT,
                headers: Default::default(),
                body: Value::Null,
            },
        }
    })
}

fn one(resource: &str, requester: &str) -> Value {
    json!([{"resource": resource, "requester": requester, "ttlSeconds": 30}])
}

async fn take(app: &TestApp, resource: &str, requester: &str, ttl: Option<u64>) -> Value {
    let held = app.reserve_one(resource, requester, ttl).await;
    assert_eq!(held["status"], "RESERVED", "{held}");
    held
}

async fn release(app: &TestApp, resource: &str, requester: &str, token: &Value) {
    let r = app
        .unreserve(json!([{"resource": resource, "requester": requester, "releaseToken": token}]))
        .await;
    assert_eq!(r.results()[0]["status"], "UNRESERVED", "{r:?}");
}

/// The queue length `check` reports for `resource` (0 when none).
async fn queue_length(app: &TestApp, resource: &str) -> u64 {
    let r = app.check(json!([{"resource": resource}])).await;
    r.results()[0]["queueLength"].as_u64().unwrap_or(0)
}

/// Waits until `resource` has `n` waiters.
async fn until_waiting(app: &TestApp, resource: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while queue_length(app, resource).await != n {
        assert!(
            Instant::now() < deadline,
            "{resource} never had {n} waiters"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_waiter_gets_the_resource_when_it_is_released(app: TestApp) {
    let held = take(&app, "r", "a", None).await;
    let waiter = wait_for(
        &app,
        "waitSeconds=10",
        one("r", "b"),
        Duration::from_secs(15),
    );
    until_waiting(&app, "r", 1).await;
    // No barging: a plain reserve is refused with the line's length.
    let plain = app.reserve(one("r", "c")).await;
    let res = &plain.results()[0];
    assert_eq!(res["status"], "ALREADY_HELD", "{res}");
    assert_eq!(res["heldBy"], "a");
    assert_eq!(res["queueLength"], 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    release(&app, "r", "a", &held["releaseToken"]).await;
    let got = waiter.await.expect("waiter");
    assert_eq!(got.status, StatusCode::OK, "{got:?}");
    let res = &got.results()[0];
    assert_eq!(res["status"], "RESERVED", "{res}");
    assert_eq!(res["requester"], "b");
    assert!(res["waitedMs"].as_u64().unwrap_or(0) >= 100, "{res}");
    assert!(
        res["fencingToken"].as_u64() > held["fencingToken"].as_u64(),
        "the grant's fencing token is above the released one: {res}"
    );
    assert!(res["releaseToken"].is_string());
    let check = app.check(json!([{"resource": "r"}])).await;
    assert_eq!(check.results()[0]["requester"], "b");
    assert!(check.results()[0].get("queueLength").is_none(), "{check:?}");
}

async fn waiters_are_served_in_order(app: TestApp) {
    let mut token = take(&app, "q", "w0", None).await["releaseToken"].clone();
    let mut waiters = Vec::new();
    for i in 1..=3 {
        waiters.push(wait_for(
            &app,
            "waitSeconds=20",
            one("q", &format!("w{i}")),
            Duration::from_secs(25),
        ));
        until_waiting(&app, "q", i).await;
    }
    for (i, w) in waiters.into_iter().enumerate() {
        release(&app, "q", &format!("w{i}"), &token).await;
        let got = w.await.expect("waiter");
        let res = &got.results()[0];
        assert_eq!(res["status"], "RESERVED", "waiter {}: {res}", i + 1);
        assert_eq!(res["requester"], format!("w{}", i + 1));
        token = res["releaseToken"].clone();
    }
}

async fn a_wait_that_times_out_leaves_the_line_with_its_place(app: TestApp) {
    take(&app, "t", "a", None).await;
    let first = wait_for(
        &app,
        "waitSeconds=2",
        one("t", "b"),
        Duration::from_secs(10),
    );
    until_waiting(&app, "t", 1).await;
    let second = wait_for(
        &app,
        "waitSeconds=1",
        one("t", "c"),
        Duration::from_secs(10),
    );
    until_waiting(&app, "t", 2).await;
    let started = Instant::now();
    let got = second.await.expect("waiter");
    assert!(started.elapsed() < Duration::from_secs(3));
    let res = &got.results()[0];
    assert_eq!(res["status"], "TIMED_OUT", "{res}");
    assert_eq!(res["queuePosition"], 2);
    assert_eq!(res["heldBy"], "a");
    assert!(res.get("releaseToken").is_none());
    let got = first.await.expect("waiter");
    assert_eq!(got.results()[0]["queuePosition"], 1, "{got:?}");
    assert_eq!(queue_length(&app, "t").await, 0, "both left the line");
}

async fn a_free_resource_with_a_line_is_not_taken_by_a_plain_reserve(app: TestApp) {
    let x = take(&app, "x", "a", None).await;
    let both = json!([
        {"resource": "x", "requester": "w", "ttlSeconds": 30},
        {"resource": "y", "requester": "w", "ttlSeconds": 30},
    ]);
    let waiter = wait_for(
        &app,
        "atomic=true&waitSeconds=10",
        both,
        Duration::from_secs(15),
    );
    until_waiting(&app, "x", 1).await;
    // y is free, but w waits for it (with x): a plain reserve does not barge.
    let plain = app.reserve(one("y", "c")).await;
    let res = &plain.results()[0];
    assert_eq!(res["status"], "ALREADY_HELD", "{res}");
    assert!(res.get("heldBy").is_none(), "no holder: {res}");
    assert_eq!(res["queueLength"], 1);
    release(&app, "x", "a", &x["releaseToken"]).await;
    let got = waiter.await.expect("waiter");
    assert_eq!(got.body["committed"], true, "{got:?}");
    for r in got.results() {
        assert_eq!(r["status"], "RESERVED", "{r}");
    }
}

async fn an_expiry_hands_the_resource_on(app: TestApp) {
    take(&app, "e", "a", Some(1)).await;
    let waiter = wait_for(
        &app,
        "waitSeconds=10",
        one("e", "b"),
        Duration::from_secs(15),
    );
    let started = Instant::now();
    let got = waiter.await.expect("waiter");
    let res = &got.results()[0];
    assert_eq!(res["status"], "RESERVED", "{res}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "granted soon after the expiry: {:?}",
        started.elapsed()
    );
}

async fn a_force_release_hands_the_resource_on(app: TestApp) {
    take(&app, "f", "a", None).await;
    let waiter = wait_for(
        &app,
        "waitSeconds=10",
        one("f", "b"),
        Duration::from_secs(15),
    );
    until_waiting(&app, "f", 1).await;
    let r = app.force_release("f").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let got = waiter.await.expect("waiter");
    assert_eq!(got.results()[0]["status"], "RESERVED", "{got:?}");
}

async fn multi_item_waiters_in_opposite_orders_both_complete(app: TestApp) {
    let xs = take(&app, "m1", "a", None).await;
    let ys = take(&app, "m2", "a", None).await;
    let w1 = wait_for(
        &app,
        "atomic=true&waitSeconds=10",
        json!([
            {"resource": "m1", "requester": "w1", "ttlSeconds": 30},
            {"resource": "m2", "requester": "w1", "ttlSeconds": 30},
        ]),
        Duration::from_secs(15),
    );
    until_waiting(&app, "m1", 1).await;
    let w2 = wait_for(
        &app,
        "atomic=true&waitSeconds=10",
        json!([
            {"resource": "m2", "requester": "w2", "ttlSeconds": 30},
            {"resource": "m1", "requester": "w2", "ttlSeconds": 30},
        ]),
        Duration::from_secs(15),
    );
    until_waiting(&app, "m1", 2).await;
    release(&app, "m1", "a", &xs["releaseToken"]).await;
    release(&app, "m2", "a", &ys["releaseToken"]).await;
    let first = w1.await.expect("w1");
    assert_eq!(first.body["committed"], true, "{first:?}");
    let tokens: Vec<Value> = first
        .results()
        .iter()
        .map(|r| r["releaseToken"].clone())
        .collect();
    release(&app, "m1", "w1", &tokens[0]).await;
    release(&app, "m2", "w1", &tokens[1]).await;
    let second = w2.await.expect("w2");
    assert_eq!(second.body["committed"], true, "{second:?}");
}

async fn a_client_that_goes_away_leaves_the_line(app: TestApp) {
    let held = take(&app, "d", "a", None).await;
    let gone = wait_for(
        &app,
        "waitSeconds=30",
        one("d", "b"),
        Duration::from_millis(300),
    );
    until_waiting(&app, "d", 1).await;
    let _ = gone.await;
    let deadline = Instant::now() + Duration::from_millis(1500);
    while queue_length(&app, "d").await != 0 {
        assert!(
            Instant::now() < deadline,
            "the waiter left within 1 s of its client"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    release(&app, "d", "a", &held["releaseToken"]).await;
    assert_eq!(app.check_status("d").await, "FREE", "nobody was granted");
}

async fn bad_waits_are_refused_and_change_nothing(app: TestApp) {
    take(&app, "h", "a", None).await;
    let cases = [
        (
            "waitSeconds=5",
            json!([{"resource": "h", "requester": "b"}]),
        ),
        (
            "waitSeconds=5",
            json!([
                {"resource": "h", "requester": "b", "ttlSeconds": 5},
                {"resource": "i", "requester": "b", "ttlSeconds": 5},
            ]),
        ),
        (
            "atomic=true&waitSeconds=5",
            json!([
                {"resource": "h", "requester": "b", "ttlSeconds": 5},
                {"resource": "h", "requester": "c", "ttlSeconds": 5},
            ]),
        ),
        ("waitSeconds=61", one("h", "b")),
        ("waitSeconds=-1", one("h", "b")),
        ("waitSeconds=1.5", one("h", "b")),
        ("waitSeconds=abc", one("h", "b")),
        ("waitSeconds=5&waitSeconds=5", one("h", "b")),
    ];
    for (query, items) in cases {
        let r = app
            .post(
                &format!("/api/v1/Reservation/reserve?{query}"),
                items.clone(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query} {items}: {r:?}");
        assert_eq!(r.error_code(), "INVALID_REQUEST");
    }
    for other in ["unreserve", "extend"] {
        let r = app
            .post(
                &format!("/api/v1/Reservation/{other}?waitSeconds=5"),
                json!([{"resource": "h", "requester": "a", "releaseToken": "x", "ttlSeconds": 5}]),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{other}: {r:?}");
    }
    assert_eq!(queue_length(&app, "h").await, 0, "nobody queued");
    assert_eq!(app.check_status("i").await, "FREE");
    // waitSeconds=0 is the plain reserve.
    let r = app
        .post("/api/v1/Reservation/reserve?waitSeconds=0", one("h", "b"))
        .await;
    assert_eq!(r.results()[0]["status"], "ALREADY_HELD", "{r:?}");
}

async fn locklock_acquire_waits_too(app: TestApp) {
    let lock = |query: &'static str, method: Method| {
        let url = format!("{}/v1/api/lock/key/job{query}", app.address);
        let key = app.api_key.clone();
        let body = if method == Method::POST {
            json!({"expires_in": 30})
        } else {
            json!({})
        };
        async move {
            let client = reqwest::Client::new();
            into_reply(
                client
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
    let first = lock("", Method::POST).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    let started = Instant::now();
    let refused = lock("?wait=1", Method::POST).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{refused:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "it waited: {:?} {refused:?}",
        started.elapsed()
    );
    let waiter = tokio::spawn(lock("?wait=10", Method::POST));
    until_waiting(&app, "job", 1).await;
    let released = lock("", Method::DELETE).await;
    assert_eq!(released.status, StatusCode::OK, "{released:?}");
    let got = waiter.await.expect("waiter");
    assert_eq!(got.status, StatusCode::OK, "{got:?}");
    assert_eq!(got.body["acquired"], true);
    assert!(got.body["fencingToken"].as_u64() > first.body["fencingToken"].as_u64());
    // Granted after a wait, it is still a locklock lock: locklock releases it.
    let released = lock("", Method::DELETE).await;
    assert_eq!(released.status, StatusCode::OK, "{released:?}");
    let bad = lock("?wait=61", Method::POST).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{bad:?}");
}

/// The waiters of a tenant are capped fleet-wide by its tier (free: 10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiters_of_a_tenant_are_capped() {
    for kind in [Kind::Redis, Kind::Embedded] {
        let app = spawn_app_with(kind, |s| s.rate_limits.free = 1000).await;
        let (_, key) = create_tenant(&app.client, &app.address, "small", "free").await;
        let held = app
            .post_as(&key, "/api/v1/Reservation/reserve", one("cap", "a"))
            .await;
        assert_eq!(held.results()[0]["status"], "RESERVED", "{held:?}");
        let waiters: Vec<_> = (0..10)
            .map(|i| {
                wait_on(
                    &app.address,
                    &key,
                    "waitSeconds=3",
                    one("cap", &format!("w{i}")),
                    Duration::from_secs(10),
                )
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = app
                .post_as(
                    &key,
                    "/api/v1/Reservation/check",
                    json!([{"resource": "cap"}]),
                )
                .await;
            if r.results()[0]["queueLength"] == 10 {
                break;
            }
            assert!(Instant::now() < deadline, "{kind:?}: ten waiters: {r:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let over = app
            .post_as(
                &key,
                "/api/v1/Reservation/reserve?waitSeconds=3",
                one("cap", "eleventh"),
            )
            .await;
        assert_eq!(
            over.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{kind:?}: {over:?}"
        );
        assert_eq!(over.error_code(), "RATE_LIMITED");
        assert!(over.headers.contains_key("retry-after"));
        for w in waiters {
            let got = w.await.expect("waiter");
            assert_eq!(got.results()[0]["status"], "TIMED_OUT", "{kind:?}");
        }
    }
}

/// A grant made on one instance reaches a waiter held by another through the
/// grant feed, well before the once-a-second poll would have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_on_one_instance_reaches_a_waiter_on_another() {
    let redis = RedisServer::start();
    let (a, _) = start_instance(settings(Some(redis.url()))).await;
    let (b, _) = start_instance(settings(Some(redis.url()))).await;
    let client = crate::helpers::client();
    let (_, key) = create_tenant(&client, &a, "fleet", "pro").await;
    for round in 0..5 {
        let resource = format!("x{round}");
        let held = send(
            &client,
            Method::POST,
            format!("{a}/api/v1/Reservation/reserve"),
            Some(&key),
            Some(one(&resource, "a")),
        )
        .await;
        let token = held.results()[0]["releaseToken"].clone();
        let waiter = wait_on(
            &b,
            &key,
            "waitSeconds=10",
            one(&resource, "b"),
            Duration::from_secs(15),
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        let released_at = Instant::now();
        let r = send(
            &client,
            Method::POST,
            format!("{a}/api/v1/Reservation/unreserve"),
            Some(&key),
            Some(json!([{"resource": resource, "requester": "a", "releaseToken": token}])),
        )
        .await;
        assert_eq!(r.results()[0]["status"], "UNRESERVED");
        let got = waiter.await.expect("waiter");
        let took = released_at.elapsed();
        assert_eq!(got.results()[0]["status"], "RESERVED", "{got:?}");
        assert!(
            took < Duration::from_millis(400),
            "round {round}: the grant came by the feed, not by the poll: {took:?}"
        );
    }
}

/// SIGTERM: every waiter of the instance is answered at once, TIMED_OUT with
/// reason SHUTDOWN, and has left its line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_waiters_at_once() {
    let port = crate::helpers::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cooplocker"))
        .env("COOPLOCKER_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "COOPLOCKER_DEFAULT_API_KEY",
            "shutdown-test-key-0123456789abcdef",
        )
        .env("COOPLOCKER_SHUTDOWN_TIMEOUT", "10")
        .env("RUST_LOG", "warn")
        .env_remove("REDIS_URL")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start an instance");
    let base = format!("http://127.0.0.1:{port}");
    let key = "shutdown-test-key-0123456789abcdef";
    let client = crate::helpers::client();
    let up = crate::helpers::eventually(Duration::from_secs(15), || async {
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(up.is_some(), "the instance did not get ready");
    let held = send(
        &client,
        Method::POST,
        format!("{base}/api/v1/Reservation/reserve"),
        Some(key),
        Some(one("s", "a")),
    )
    .await;
    assert_eq!(held.results()[0]["status"], "RESERVED", "{held:?}");
    let waiter = wait_on(
        &base,
        key,
        "waitSeconds=30",
        one("s", "b"),
        Duration::from_secs(40),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped_at = Instant::now();
    assert!(crate::helpers::signal(child.id(), "TERM"), "SIGTERM");
    let got = waiter.await.expect("waiter");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(3),
        "answered at once: {:?}",
        stopped_at.elapsed()
    );
    let res = &got.results()[0];
    assert_eq!(res["status"], "TIMED_OUT", "{got:?}");
    assert_eq!(res["reason"], "SHUTDOWN");
    assert_eq!(res["queuePosition"], 1);
    let status = child.wait().expect("exit");
    assert!(status.success(), "a clean exit: {status:?}");
}

/// A waiter whose instance died (no heartbeat for 15 s) is skipped by the
/// next hand-over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_instance_died_is_skipped() {
    let redis = RedisServer::start();
    let (b, _) = start_instance(settings(Some(redis.url()))).await;
    let client = crate::helpers::client();
    let (_, key) = create_tenant(&client, &b, "died", "pro").await;
    let port = crate::helpers::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cooplocker"))
        .env("COOPLOCKER_LISTEN", format!("127.0.0.1:{port}"))
        .env("REDIS_URL", redis.url())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start an instance");
    let a = format!("http://127.0.0.1:{port}");
    let up = crate::helpers::eventually(Duration::from_secs(15), || async {
        client
            .get(format!("{a}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(up.is_some(), "the instance did not get ready");
    let held = send(
        &client,
        Method::POST,
        format!("{b}/api/v1/Reservation/reserve"),
        Some(&key),
        Some(one("z", "holder")),
    )
    .await;
    let token = held.results()[0]["releaseToken"].clone();
    let doomed = wait_on(
        &a,
        &key,
        "waitSeconds=60",
        one("z", "doomed"),
        Duration::from_secs(70),
    );
    let check = || {
        let client = client.clone();
        let (b, key) = (b.clone(), key.clone());
        async move {
            send(
                &client,
                Method::POST,
                format!("{b}/api/v1/Reservation/check"),
                Some(&key),
                Some(json!([{"resource": "z"}])),
            )
            .await
        }
    };
    let queued = crate::helpers::eventually(Duration::from_secs(5), || async {
        check().await.results()[0]["queueLength"] == 1
    })
    .await;
    assert!(queued.is_some(), "the doomed waiter is in line");
    // Its instance dies: no goodbye, no more heartbeats.
    let _ = child.kill();
    let _ = child.wait();
    let _ = doomed.await;
    tokio::time::sleep(Duration::from_secs(16)).await;
    let r = send(
        &client,
        Method::POST,
        format!("{b}/api/v1/Reservation/unreserve"),
        Some(&key),
        Some(json!([{"resource": "z", "requester": "holder", "releaseToken": token}])),
    )
    .await;
    assert_eq!(r.results()[0]["status"], "UNRESERVED");
    let after = check().await;
    assert_eq!(
        after.results()[0]["status"],
        "FREE",
        "the dead waiter was skipped: {after:?}"
    );
    assert!(after.results()[0].get("queueLength").is_none(), "{after:?}");
}

async fn a_waiting_request_holds_its_idempotency_key(app: TestApp) {
    let held = take(&app, "k", "a", None).await;
    let first = wait_keyed(&app, "wait-1", "waitSeconds=10", one("k", "b"));
    until_waiting(&app, "k", 1).await;
    // While it waits, its key is in use.
    let again = wait_keyed(&app, "wait-1", "waitSeconds=10", one("k", "b"))
        .await
        .expect("repeat");
    assert_eq!(again.status, StatusCode::CONFLICT, "{again:?}");
    assert_eq!(again.error_code(), "IDEMPOTENCY_KEY_IN_USE");
    assert_eq!(queue_length(&app, "k").await, 1, "the repeat did not queue");
    release(&app, "k", "a", &held["releaseToken"]).await;
    let granted = first.await.expect("waiter");
    let res = &granted.results()[0];
    assert_eq!(res["status"], "RESERVED", "{granted:?}");
    // After the grant, a repeat gets it: the same tokens, nothing new.
    let replay = wait_keyed(&app, "wait-1", "waitSeconds=10", one("k", "b"))
        .await
        .expect("replay");
    assert_eq!(replay.status, StatusCode::OK, "{replay:?}");
    assert!(
        replay.headers.contains_key("idempotent-replayed"),
        "{replay:?}"
    );
    let again = &replay.results()[0];
    assert_eq!(again["status"], "RESERVED");
    assert_eq!(again["releaseToken"], res["releaseToken"]);
    assert_eq!(again["fencingToken"], res["fencingToken"]);
    assert!(res["waitedMs"].is_u64(), "{res}");
    assert_eq!(
        replay.body, granted.body,
        "the same body, waitedMs included"
    );
    // A wait that ended without a grant leaves no record: its retry executes.
    let timed_out = wait_keyed(&app, "wait-2", "waitSeconds=1", one("k", "c"))
        .await
        .expect("waiter");
    assert_eq!(
        timed_out.results()[0]["status"],
        "TIMED_OUT",
        "{timed_out:?}"
    );
    let retry = wait_keyed(&app, "wait-2", "waitSeconds=1", one("k", "c"))
        .await
        .expect("retry");
    assert!(
        !retry.headers.contains_key("idempotent-replayed"),
        "{retry:?}"
    );
    assert_eq!(retry.results()[0]["status"], "TIMED_OUT", "{retry:?}");
}

/// Two instances on one Redis, and a tenant's key.
async fn two_instances() -> (RedisServer, String, String, String) {
    let redis = RedisServer::start();
    let (a, _) = start_instance(settings(Some(redis.url()))).await;
    let (b, _) = start_instance(settings(Some(redis.url()))).await;
    let client = crate::helpers::client();
    let (_, key) = create_tenant(&client, &a, "two", "pro").await;
    (redis, a, b, key)
}

async fn post_on(base: &str, key: &str, path: &str, body: Value) -> Reply {
    send(
        &crate::helpers::client(),
        Method::POST,
        format!("{base}{path}"),
        Some(key),
        Some(body),
    )
    .await
}

async fn queue_length_on(base: &str, key: &str, resource: &str) -> u64 {
    let r = post_on(
        base,
        key,
        "/api/v1/Reservation/check",
        json!([{"resource": resource}]),
    )
    .await;
    r.results()[0]["queueLength"].as_u64().unwrap_or(0)
}

/// FIFO holds across instances: waiters queued on alternating instances are
/// served in the order they queued, whichever instance releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_spread_over_instances_are_served_in_order() {
    let (_redis, a, b, key) = two_instances().await;
    let held = post_on(&a, &key, "/api/v1/Reservation/reserve", one("f", "w0")).await;
    let mut token = held.results()[0]["releaseToken"].clone();
    let mut waiters = Vec::new();
    for i in 1..=4u64 {
        let on = if i % 2 == 0 { &b } else { &a };
        waiters.push(wait_on(
            on,
            &key,
            "waitSeconds=30",
            one("f", &format!("w{i}")),
            Duration::from_secs(40),
        ));
        let deadline = Instant::now() + Duration::from_secs(5);
        while queue_length_on(&a, &key, "f").await != i {
            assert!(Instant::now() < deadline, "waiter {i} never queued");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for (i, w) in waiters.into_iter().enumerate() {
        // Released alternately through the other instance.
        let on = if i % 2 == 0 { &b } else { &a };
        let r = post_on(
            on,
            &key,
            "/api/v1/Reservation/unreserve",
            json!([{"resource": "f", "requester": format!("w{i}"), "releaseToken": token}]),
        )
        .await;
        assert_eq!(r.results()[0]["status"], "UNRESERVED", "{r:?}");
        let got = w.await.expect("waiter");
        let res = &got.results()[0];
        assert_eq!(res["requester"], format!("w{}", i + 1), "FIFO: {res}");
        token = res["releaseToken"].clone();
    }
}

/// 200 waiters on one resource over two instances: each gets it exactly once,
/// one at a time, in the order they queued, with rising fencing tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_waiters_each_get_the_resource_once_without_overlap() {
    let (_redis, a, b, key) = two_instances().await;
    let held = post_on(&a, &key, "/api/v1/Reservation/reserve", one("hot", "first")).await;
    let first = held.results()[0]["releaseToken"].clone();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let base = if i % 2 == 0 { a.clone() } else { b.clone() };
        let task_key = key.clone();
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let key = task_key;
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(90))
                .build()
                .expect("client");
            let requester = format!("w{i}");
            let got = into_reply(
                client
                    .post(format!("{base}/api/v1/Reservation/reserve?waitSeconds=60"))
                    .header("X-Api-Key", &key)
                    .json(&one("hot", &requester))
                    .send()
                    .await
                    .expect("waiting reserve"),
            )
            .await;
            let res = got.results()[0].clone();
            assert_eq!(res["status"], "RESERVED", "{requester}: {res}");
            let granted_at = Instant::now();
            log.lock().expect("log").push((
                res["fencingToken"].as_u64().expect("fencing token"),
                requester.clone(),
                granted_at,
            ));
            // Logged before the release is sent: the next grant can only
            // come after the release, so it is logged after this.
            log.lock()
                .expect("log")
                .push((0, requester.clone(), Instant::now()));
            let released = into_reply(
                client
                    .post(format!("{base}/api/v1/Reservation/unreserve"))
                    .header("X-Api-Key", &key)
                    .json(&json!([{"resource": "hot", "requester": requester, "releaseToken": res["releaseToken"]}]))
                    .send()
                    .await
                    .expect("unreserve"),
            )
            .await;
            assert_eq!(released.results()[0]["status"], "UNRESERVED", "{released:?}");
        }));
        // In line before the next one comes: the line's order is known.
        let deadline = Instant::now() + Duration::from_secs(10);
        while queue_length_on(&a, &key, "hot").await < i as u64 + 1 {
            assert!(Instant::now() < deadline, "waiter {i} never queued");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let r = post_on(
        &b,
        &key,
        "/api/v1/Reservation/unreserve",
        json!([{"resource": "hot", "requester": "first", "releaseToken": first}]),
    )
    .await;
    assert_eq!(r.results()[0]["status"], "UNRESERVED");
    for t in tasks {
        t.await.expect("a waiter failed");
    }
    // The log alternates grant, release, grant, release...: no two holders
    // at once, every waiter once, in the order they queued (ticket order),
    // fencing tokens rising.
    let log = log.lock().expect("log").clone();
    assert_eq!(log.len(), 400);
    let mut last_token = held.results()[0]["fencingToken"].as_u64().unwrap_or(0);
    let mut seen = std::collections::HashSet::new();
    for pair in log.chunks(2) {
        let (token, who, _) = &pair[0];
        let (zero, released_by, _) = &pair[1];
        assert!(
            *token > 0 && *zero == 0,
            "a grant, then its release: {pair:?}"
        );
        assert_eq!(
            who, released_by,
            "released by its holder before the next grant"
        );
        assert!(*token > last_token, "fencing tokens rise");
        last_token = *token;
        assert!(seen.insert(who.clone()), "{who} granted twice");
        assert_eq!(
            *who,
            format!("w{}", seen.len() - 1),
            "granted in ticket order"
        );
    }
    assert_eq!(seen.len(), 200);
}

/// A Redis that goes away during a wait: the waiter is answered (503 or
/// TIMED_OUT), and once Redis is back nothing is stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_during_a_wait_answers_and_leaves_nothing_stuck() {
    let mut redis = RedisServer::start_durable();
    let (a, _) = start_instance(settings(Some(redis.url()))).await;
    let client = crate::helpers::client();
    let (_, key) = create_tenant(&client, &a, "lost", "pro").await;
    let held = post_on(&a, &key, "/api/v1/Reservation/reserve", one("l", "holder")).await;
    let token = held.results()[0]["releaseToken"].clone();
    let waiter = wait_on(
        &a,
        &key,
        "waitSeconds=5",
        one("l", "w"),
        Duration::from_secs(20),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while queue_length_on(&a, &key, "l").await != 1 {
        assert!(Instant::now() < deadline, "never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.kill();
    let got = waiter.await.expect("waiter");
    assert!(
        got.status == StatusCode::SERVICE_UNAVAILABLE || got.results()[0]["status"] == "TIMED_OUT",
        "{got:?}"
    );
    redis.restart();
    // Back: the waiter's line is gone (its heartbeat lapses, or it left), and
    // the resource moves on as usual.
    let released = crate::helpers::eventually(Duration::from_secs(10), || async {
        post_on(
            &a,
            &key,
            "/api/v1/Reservation/unreserve",
            json!([{"resource": "l", "requester": "holder", "releaseToken": token}]),
        )
        .await
        .status
            == StatusCode::OK
    })
    .await;
    assert!(released.is_some(), "the store came back");
    let next = crate::helpers::eventually(Duration::from_secs(20), || async {
        let r = post_on(&a, &key, "/api/v1/Reservation/reserve", one("l", "next")).await;
        r.status == StatusCode::OK && r.results()[0]["status"] == "RESERVED"
    })
    .await;
    assert!(next.is_some(), "nothing is stuck on the resource");
}

/// Atomic batches under contention, over two instances: every batch holds all
/// its resources or none, at every moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_batches_under_contention_never_leave_a_partial_hold() {
    let (_redis, a, b, key) = two_instances().await;
    let pairs = [["p", "q"], ["q", "r"], ["r", "p"]];
    let mut tasks = Vec::new();
    for i in 0..24 {
        let base = if i % 2 == 0 { a.clone() } else { b.clone() };
        let key = key.clone();
        let [x, y] = pairs[i % 3];
        tasks.push(tokio::spawn(async move {
            let requester = format!("c{i}");
            let items = json!([
                {"resource": x, "requester": requester, "ttlSeconds": 30},
                {"resource": y, "requester": requester, "ttlSeconds": 30},
            ]);
            for _ in 0..10 {
                let r = post_on(&base, &key, "/api/v1/Reservation/reserve?atomic=true", items.clone()).await;
                let results = r.results().clone();
                let reserved = results.iter().filter(|x| x["status"] == "RESERVED").count();
                assert!(reserved == 0 || reserved == 2, "all or nothing: {results:?}");
                assert_eq!(r.body["committed"], reserved == 2);
                if reserved == 2 {
                    let release: Vec<Value> = results
                        .iter()
                        .map(|x| json!({"resource": x["resource"], "requester": requester, "releaseToken": x["releaseToken"]}))
                        .collect();
                    let u = post_on(&base, &key, "/api/v1/Reservation/unreserve?atomic=true", Value::Array(release)).await;
                    assert_eq!(u.body["committed"], true, "{u:?}");
                }
            }
        }));
    }
    // Meanwhile, no requester ever holds just one of its pair.
    let watcher = {
        let (a, key) = (a.clone(), key.clone());
        tokio::spawn(async move {
            for _ in 0..40 {
                let r = send(
                    &crate::helpers::client(),
                    Method::GET,
                    format!("{a}/api/v1/Reservation"),
                    Some(&key),
                    None,
                )
                .await;
                let mut per: std::collections::HashMap<String, usize> = Default::default();
                for h in r.body["reservations"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                {
                    *per.entry(h["requester"].as_str().unwrap_or("").to_string())
                        .or_default() += 1;
                }
                assert!(per.values().all(|n| *n == 2), "a partial hold: {per:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    for t in tasks {
        t.await.expect("a client failed");
    }
    watcher.await.expect("the watcher saw a partial hold");
}

/// A grant that crosses its client's disconnect is released again at once
/// (store level, so the crossing is deterministic), on both stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_that_crosses_a_disconnect_is_released_again() {
    use cooplocker::domain::{Requester, Resource, Ttl};
    use cooplocker::store::{
        BatchMode, CheckOutcome, LeaveOutcome, ReleaseItem, ReserveItem, ReserveOutcome, Wait,
        WaiterId,
    };
    let redis = RedisServer::start();
    for (name, store, caller) in crate::helpers::raw_stores(&redis, "cross").await {
        let tenant_id = caller.tenant.clone();
        let resource = Resource::parse("r").expect("resource");
        let item = |rq: &str| ReserveItem {
            resource: resource.clone(),
            requester: Requester::parse(rq).expect("requester"),
            ttl: Some(Ttl::from_seconds(30).expect("ttl")),
            kind: cooplocker::domain::Kind::Exclusive,
            warn: None,
        };
        let held = store
            .reserve(&caller, &[item("holder")], BatchMode::default())
            .await
            .expect("reserve");
        let ReserveOutcome::Reserved { release_token, .. } = held.value[0].clone() else {
            panic!("{name}: not reserved");
        };
        let waiter = WaiterId::generate();
        let wait = BatchMode {
            atomic: false,
            wait: Some(Wait {
                ms: 10_000,
                waiter,
                max_waiters: 10,
            }),
        };
        let queued = store
            .reserve(&caller, &[item("waiter")], wait)
            .await
            .expect("queue");
        assert!(
            matches!(queued.value[0], ReserveOutcome::Queued { place: 1, .. }),
            "{name}: {:?}",
            queued.value
        );
        // The release grants the waiter...
        store
            .unreserve(
                &caller,
                &[ReleaseItem {
                    resource: resource.clone(),
                    requester: Requester::parse("holder").expect("requester"),
                    release_token,
                }],
                BatchMode::default(),
            )
            .await
            .expect("unreserve");
        let check = store
            .check(&caller, std::slice::from_ref(&resource))
            .await
            .expect("check");
        assert!(
            matches!(&check.value[0], CheckOutcome::Held(h, _) if h.requester == "waiter"),
            "{name}: granted: {:?}",
            check.value
        );
        // ...while its client is already gone: the grant is released again.
        let left = store
            .wait_leave(&tenant_id, waiter, true)
            .await
            .expect("leave");
        assert_eq!(left, LeaveOutcome::Released, "{name}");
        let check = store
            .check(&caller, std::slice::from_ref(&resource))
            .await
            .expect("check");
        assert!(
            matches!(check.value[0], CheckOutcome::Free(0)),
            "{name}: free again: {:?}",
            check.value
        );
    }
}

//! Rate limits (contract section 7): partitioned by tenant, tier and read/write,
//! fleet-wide (three instances give a tenant its limit, not three times it),
//! answered 429 with `Retry-After` and the `RateLimit-*` headers, and a refused
//! request changes nothing.

use crate::helpers::{
    create_tenant, send, settings, spawn_app_with, start_instance, Kind, RedisServer, Reply,
};
use cooplocker::config::RateLimits;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};

/// Write requests per second of the starter tier in these tests (reads: 5×).
const STARTER: u32 = 10;

fn limits() -> RateLimits {
    RateLimits {
        free: 1_000_000,
        starter: STARTER,
        pro: 1_000_000,
        enterprise: 1_000_000,
    }
}

/// What a paced run of requests got back.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    limited: u64,
    other: Vec<String>,
    /// From the first request sent to the last.
    window: Duration,
}

fn header(r: &Reply, name: &str) -> Option<u64> {
    r.headers.get(name)?.to_str().ok()?.parse().ok()
}

/// Checks what every answer of a rate-limited endpoint carries.
fn check_reply(r: &Reply, limit: u32, tally: &mut Tally) {
    assert_eq!(
        header(r, "ratelimit-limit"),
        Some(u64::from(limit)),
        "{r:?}"
    );
    assert!(header(r, "ratelimit-remaining").is_some(), "{r:?}");
    assert!(header(r, "ratelimit-reset").is_some(), "{r:?}");
    match r.status {
        StatusCode::OK => tally.ok += 1,
        StatusCode::TOO_MANY_REQUESTS => {
            tally.limited += 1;
            assert_eq!(r.error_code(), "RATE_LIMITED");
            let retry = header(r, "retry-after").expect("Retry-After");
            assert!((1..=2).contains(&retry), "Retry-After {retry}");
            assert_eq!(
                r.body["error"]["retryAfterSeconds"].as_u64(),
                Some(retry),
                "{r:?}"
            );
        }
        s => tally.other.push(format!("{s}: {}", r.body)),
    }
}

/// Sends `per_second` requests a second for `secs`, spread round-robin over
/// `bases`; `make(i)` builds request i as (path, body or None for GET).
async fn offer(
    client: &reqwest::Client,
    bases: &[String],
    key: &str,
    per_second: u32,
    secs: u64,
    limit: u32,
    make: impl Fn(u64) -> (String, Option<serde_json::Value>),
) -> Tally {
    let mut tally = Tally::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = Instant::now();
    let total = u64::from(per_second) * secs;
    let mut last = start;
    for i in 0..total {
        tick.tick().await;
        last = Instant::now();
        let (path, body) = make(i);
        let method = if body.is_some() {
            Method::POST
        } else {
            Method::GET
        };
        let base = &bases[i as usize % bases.len()];
        let r = send(client, method, format!("{base}{path}"), Some(key), body).await;
        check_reply(&r, limit, &mut tally);
    }
    tally.window = last - start;
    tally
}

/// The count a GCRA limit allows over `window`: a full burst plus the rate.
fn expected(per_second: u32, window: Duration) -> f64 {
    f64::from(per_second) + f64::from(per_second) * window.as_secs_f64()
}

fn assert_near(got: u64, want: f64, what: &str) {
    let off = (got as f64 - want).abs() / want;
    assert!(
        off <= 0.10,
        "{what}: {got} allowed, expected {want:.0} ±10% (off by {:.1}%)",
        off * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_holds_for_the_whole_fleet_and_per_partition() {
    let redis = RedisServer::start();
    let mut bases = Vec::new();
    for _ in 0..3 {
        let mut s = settings(Some(redis.url()));
        s.rate_limits = limits();
        bases.push(start_instance(s).await.0);
    }
    let client = crate::helpers::client();
    let (tenant, key) = create_tenant(&client, &bases[0], "busy", "starter").await;
    let (_, quiet_key) = create_tenant(&client, &bases[0], "quiet", "starter").await;

    // 4× the write limit, 4× the read limit, and a quiet tenant well under its
    // limit, all at once for 5 s.
    let writes = offer(&client, &bases, &key, 4 * STARTER, 5, STARTER, |i| {
        (
            "/api/v1/Reservation/reserve".into(),
            Some(json!([{"requester": "w", "resource": format!("w-{i}")}])),
        )
    });
    let reads = offer(
        &client,
        &bases,
        &key,
        4 * 5 * STARTER,
        5,
        5 * STARTER,
        |i| {
            if i % 2 == 0 {
                (
                    "/api/v1/Reservation/check".into(),
                    Some(json!([{"resource": "w-0"}])),
                )
            } else {
                ("/api/v1/Reservation?limit=1".into(), None)
            }
        },
    );
    let quiet = offer(&client, &bases, &quiet_key, STARTER / 2, 5, STARTER, |i| {
        (
            "/api/v1/Reservation/reserve".into(),
            Some(json!([{"requester": "q", "resource": format!("q-{i}")}])),
        )
    });
    let (writes, reads, quiet) = tokio::join!(writes, reads, quiet);
    eprintln!(
        "fleet of 3: writes {} ok / {} limited over {:?} (expected {:.1}); reads {} ok / {} limited over {:?} (expected {:.1}); quiet tenant {} ok / {} limited",
        writes.ok,
        writes.limited,
        writes.window,
        expected(STARTER, writes.window),
        reads.ok,
        reads.limited,
        reads.window,
        expected(5 * STARTER, reads.window),
        quiet.ok,
        quiet.limited
    );
    for t in [&writes, &reads, &quiet] {
        assert!(
            t.other.is_empty(),
            "answers other than 200/429: {:?}",
            t.other
        );
    }
    assert_near(writes.ok, expected(STARTER, writes.window), "writes");
    assert_near(reads.ok, expected(5 * STARTER, reads.window), "reads");
    assert!(writes.limited > 0 && reads.limited > 0);
    assert_eq!(quiet.limited, 0, "the other tenant was limited: {quiet:?}");

    // A refused reserve changed nothing: exactly the accepted ones are held.
    let t = format!("{}t", crate::helpers::key_prefix(&tenant));
    let s = redis.cli(&["HGET", &t, "n"]);
    assert_eq!(s.trim().parse::<u64>().ok(), Some(writes.ok), "held: {s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_applies_the_same_limits() {
    let app = spawn_app_with(Kind::Embedded, |s| s.rate_limits = limits()).await;
    let (_, key) = create_tenant(&app.client, &app.address, "busy", "starter").await;
    let bases = vec![app.address.clone()];
    let writes = offer(&app.client, &bases, &key, 4 * STARTER, 3, STARTER, |i| {
        (
            "/api/v1/Reservation/reserve".into(),
            Some(json!([{"requester": "w", "resource": format!("w-{i}")}])),
        )
    })
    .await;
    assert!(writes.other.is_empty(), "{:?}", writes.other);
    assert_near(writes.ok, expected(STARTER, writes.window), "writes");
    // Refused reserves changed nothing.
    let listed = send(
        &app.client,
        Method::GET,
        app.url("/api/v1/Reservation?limit=10000"),
        Some(&key),
        None,
    )
    .await;
    if listed.status == StatusCode::OK {
        let n = listed.body["reservations"].as_array().map_or(0, Vec::len) as u64;
        assert_eq!(n, writes.ok);
    } else {
        assert_eq!(listed.status, StatusCode::TOO_MANY_REQUESTS);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_of_a_tenant_is_counted() {
    let app = spawn_app_with(Kind::Redis, |s| {
        s.rate_limits = RateLimits {
            starter: 1,
            ..limits()
        }
    })
    .await;
    let (_, key) = create_tenant(&app.client, &app.address, "tiny", "starter").await;
    // Writes: 1/s, burst 1 — the second write within a second is refused,
    // whichever endpoint it is (an empty batch too).
    let writes = [
        (
            "/api/v1/Reservation/reserve",
            json!([{"requester": "a", "resource": "x"}]),
        ),
        ("/api/v1/Reservation/unreserve", json!([])),
        (
            "/api/v1/Reservation/extend",
            json!([{"requester": "a", "resource": "x", "releaseToken": "00000000-0000-4000-8000-000000000000", "ttlSeconds": 5}]),
        ),
    ];
    for (path, body) in writes {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let first = app.post_as(&key, path, body.clone()).await;
        assert_eq!(first.status, StatusCode::OK, "{path}: {first:?}");
        let second = app.post_as(&key, path, body).await;
        assert_eq!(
            second.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{path}: {second:?}"
        );
        assert_eq!(header(&second, "ratelimit-limit"), Some(1));
    }
    // Reads: 5/s, burst 5 — the event stream's opening counts as one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(app.get_as(&key, "/api/v1/Reservation").await.status);
    }
    let sse = crate::events::Stream::request(&app.address, &key, "", None).await;
    assert_eq!(sse.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_exchanges_are_limited_per_client_address() {
    let app = spawn_app_with(Kind::Redis, |s| s.token_exchange_per_ip = 3).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = send(
            &app.client,
            Method::POST,
            app.url("/api/v1/auth/token"),
            None,
            Some(json!({"jwt": "not.a.jwt"})),
        )
        .await;
        statuses.push(r.status.as_u16());
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(r.error_code(), "RATE_LIMITED");
            assert!(header(&r, "retry-after").is_some());
            assert_eq!(header(&r, "ratelimit-limit"), Some(3));
        }
    }
    // Invalid or not, each exchange counts: burst 3, then refused.
    assert_eq!(statuses, vec![401, 401, 401, 429, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_are_limited_per_client_address() {
    let app = spawn_app_with(Kind::Redis, |s| s.auth_failures_per_ip = 5).await;
    // A key that works is cached by its first use...
    assert_eq!(app.get("/api/v1/Reservation").await.status, StatusCode::OK);
    // ...then a flood of unknown keys from the same address: five 401s (each
    // a store look-up), then 429 without one.
    let mut statuses = Vec::new();
    let mut refused = None;
    for i in 0..12 {
        let r = app
            .get_as(&format!("ck_{i:040x}"), "/api/v1/Reservation")
            .await;
        statuses.push(r.status.as_u16());
        if r.status == StatusCode::TOO_MANY_REQUESTS && refused.is_none() {
            refused = Some(r);
        }
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    let r = refused.expect("refused");
    assert_eq!(r.error_code(), "RATE_LIMITED");
    assert!(header(&r, "retry-after").is_some_and(|s| s >= 1), "{r:?}");
    // The cached key keeps working; the locklock API is bounded the same way.
    assert_eq!(app.get("/api/v1/Reservation").await.status, StatusCode::OK);
    let r = send(
        &app.client,
        Method::POST,
        app.url("/v1/api/lock/key/some-lock"),
        Some("ck_0000000000000000000000000000000000000bad"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{r:?}");
    // After the wait, the address may try again.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let r = app
        .get_as(
            "ck_00000000000000000000000000000000000000ff",
            "/api/v1/Reservation",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

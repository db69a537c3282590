//! The JSON behind the live pages (`/dashboard/data/*`): opened by the
//! session only; pages by cursor, filters, each resource's line of waiters,
//! the server's `now`, the activity window and the usage probe with the API's
//! `RateLimit-*` headers.

use super::{app_with_provider, shown_key, sign_in, Browser, Provider};
use crate::helpers::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// A signed-in GET of the dashboard's JSON: status, `RateLimit-Remaining`, body.
async fn data(b: &Browser, url: &str) -> (StatusCode, Option<String>, Value) {
    let res = b
        .http
        .get(url)
        .header("Cookie", b.cookie_header())
        .send()
        .await
        .expect("data");
    let status = res.status();
    let remaining = res
        .headers()
        .get("RateLimit-Remaining")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = res.json().await.unwrap_or(Value::Null);
    (status, remaining, body)
}

fn resources(page: &Value) -> Vec<String> {
    page["reservations"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r["resource"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Signs a browser in to `app` (a new tenant): the app, the browser and the
/// API key its first page shows.
async fn signed_in(app: TestApp) -> (TestApp, Browser, String) {
    let mut b = Browser::new();
    let page = sign_in(&app.address, &mut b).await;
    let key = shown_key(&page.body).expect("the key is shown");
    (app, b, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_data_pages_filters_and_counts_the_line_of_waiters() {
    // Arrange: a signed-in tenant with an exclusive hold, a semaphore of two
    // holders and another requester's hold; then a waiter for the first.
    let provider = Provider::start().await;
    let (app, b, key) = signed_in(app_with_provider(&provider).await).await;
    let reserve = |body: Value, query: &str| {
        app.client
            .post(app.url(&format!("/api/v1/Reservation/reserve{query}")))
            .header("X-Api-Key", &key)
            .json(&body)
            .send()
    };
    let r = reserve(
        json!([
            {"resource": "a/1", "requester": "w", "ttlSeconds": 600},
            {"resource": "a/sem", "requester": "w", "ttlSeconds": 600, "limit": 2},
            {"resource": "a/sem", "requester": "w2", "ttlSeconds": 600, "limit": 2},
            {"resource": "b/1", "requester": "other", "ttlSeconds": 600},
        ]),
        "",
    )
    .await
    .expect("reserve");
    assert_eq!(r.status(), StatusCode::OK);
    let (client, wait_url, k) = (
        app.client.clone(),
        app.url("/api/v1/Reservation/reserve?waitSeconds=4"),
        key.clone(),
    );
    let waiter = tokio::spawn(async move {
        let res = client
            .post(wait_url)
            .header("X-Api-Key", k)
            .json(&json!([{"resource": "a/1", "requester": "next", "ttlSeconds": 60}]))
            .send()
            .await
            .expect("a waiting reserve");
        res.text().await.unwrap_or_default()
    });
    let url = |q: &str| app.url(&format!("/dashboard/data/reservations{q}"));

    // Act / Assert: the waiter shows as the line of a/1.
    let mut page = Value::Null;
    for _ in 0..40 {
        let (status, _, body) = data(&b, &url("")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        page = body;
        if page["resources"]["a/1"]["queueLength"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(page["resources"]["a/1"]["queueLength"], 1, "{page}");
    assert_eq!(page["resources"]["a/sem"]["holders"], 2, "{page}");
    assert_eq!(page["resources"]["b/1"]["queueLength"], 0, "{page}");
    assert_eq!(resources(&page), ["a/1", "a/sem", "a/sem", "b/1"]);
    let sem = &page["reservations"][1];
    assert_eq!(
        (sem["mode"].as_str(), sem["limit"].as_u64()),
        (Some("semaphore"), Some(2))
    );
    assert!(
        page["reservations"][0].get("releaseToken").is_none(),
        "{page}"
    );
    // `now` is the server's clock, in the API's time format.
    let now = page["now"].as_str().expect("now");
    assert!(now.len() == 24 && now.ends_with('Z'), "{now}");

    // Pages by cursor: every hold once, in order.
    let (_, _, first) = data(&b, &url("?limit=2")).await;
    assert!(resources(&first).len() <= 3, "{first}");
    let cursor = first["nextCursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let next = url(&format!("?limit=2&cursor={}", urlencode(&cursor)));
    let (_, _, second) = data(&b, &next).await;
    let mut all = resources(&first);
    all.extend(resources(&second));
    let mut cursor = second["nextCursor"].as_str().map(str::to_string);
    while let Some(c) = cursor {
        let (_, _, more) = data(&b, &url(&format!("?limit=2&cursor={}", urlencode(&c)))).await;
        all.extend(resources(&more));
        cursor = more["nextCursor"].as_str().map(str::to_string);
    }
    assert_eq!(all, ["a/1", "a/sem", "a/sem", "b/1"]);

    // Filters: prefix and requester, as the API's listing; empty means none.
    let (_, _, by_prefix) = data(&b, &url("?prefix=b%2F&requester=")).await;
    assert_eq!(resources(&by_prefix), ["b/1"]);
    let (_, _, by_requester) = data(&b, &url("?requester=other")).await;
    assert_eq!(resources(&by_requester), ["b/1"]);
    for bad in ["?limit=0", "?limit=501", "?limit=x", "?prefix=%01"] {
        let (status, _, body) = data(&b, &url(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }

    // Activity: the window's reserves, and a/1 (with its waiter) on top.
    let (status, _, activity) = data(&b, &app.url("/dashboard/data/activity")).await;
    assert_eq!(status, StatusCode::OK, "{activity}");
    let reserved: u64 = activity["series"]["counts"]["RESERVED"]
        .as_array()
        .expect("a series")
        .iter()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(reserved, 4, "{activity}");
    assert_eq!(
        activity["series"]["counts"]["RESERVED"]
            .as_array()
            .map(Vec::len),
        Some(90)
    );
    assert_eq!(activity["top"][0]["resource"], "a/1", "{activity}");
    assert_eq!(activity["top"][0]["waiting"], 1, "{activity}");

    // Usage: one counted read, with the API's RateLimit headers.
    let (status, remaining, usage) = data(&b, &app.url("/dashboard/data/usage")).await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    assert_eq!(
        remaining
            .as_deref()
            .map(str::parse::<u64>)
            .and_then(Result::ok),
        usage["reads"]["remaining"].as_u64()
    );
    assert_eq!(usage["waiters"], 1, "{usage}");
    assert_eq!(usage["waiterLimit"], 10, "{usage}");
    assert_eq!(
        (usage["keys"].as_u64(), usage["keyLimit"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(usage["active"], 4, "{usage}");

    // The wait times out: the line falls back to 0.
    let answer = waiter.await.expect("the waiter ends");
    assert!(answer.contains("TIMED_OUT"), "{answer}");
    let (_, _, after) = data(&b, &url("")).await;
    assert_eq!(after["resources"]["a/1"]["queueLength"], 0, "{after}");
    // ... and the contention counters keep it: one wait, timed out.
    let (_, _, activity) = data(&b, &app.url("/dashboard/data/activity")).await;
    assert_eq!(activity["top"][0]["resource"], "a/1", "{activity}");
    assert_eq!(activity["top"][0]["waiting"], 0, "{activity}");
    assert_eq!(activity["top"][0]["waits"], 1, "{activity}");
    assert_eq!(activity["top"][0]["timedOut"], 1, "{activity}");

    // Without a session: sent to sign in, no data.
    let stranger = Browser::new();
    for path in [
        "/dashboard/data/reservations",
        "/dashboard/data/activity",
        "/dashboard/data/usage",
    ] {
        let res = stranger.http.get(app.url(path)).send().await.expect("get");
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{path}");
    }
    // An API key does not open them either.
    let res = stranger
        .http
        .get(app.url("/dashboard/data/reservations"))
        .header("X-Api-Key", &key)
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The tenant id the plan page shows (`(<code>id</code>)`).
fn tenant_of(plan: &str) -> String {
    let marker = "(<code>";
    let i = plan.find(marker).expect("the tenant id") + marker.len();
    plan[i..].chars().take_while(|c| *c != '<').collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_policy_and_hold_deadlines_reach_the_dashboard() {
    // Arrange: a signed-in tenant whose policy caps holds at 120 s.
    let provider = Provider::start().await;
    let (app, mut b, key) = signed_in(app_with_provider(&provider).await).await;
    let plan = b.get(&app.url("/dashboard/plan")).await;
    let tenant = tenant_of(&plan.body);
    let r = app
        .admin(
            reqwest::Method::PATCH,
            &format!("/tenants/{tenant}"),
            Some(json!({"policy": {"maxHoldSeconds": 120, "maxWaitSeconds": 30}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");

    // Act: a hold asking for 600 s, then the page and the plan.
    let reserved = app
        .client
        .post(app.url("/api/v1/Reservation/reserve"))
        .header("X-Api-Key", &key)
        .json(&json!([{"resource": "capped", "requester": "w", "ttlSeconds": 600}]))
        .send()
        .await
        .expect("reserve");
    assert_eq!(reserved.status(), StatusCode::OK);
    let (_, _, page) = data(&b, &app.url("/dashboard/data/reservations")).await;
    let plan = b.get(&app.url("/dashboard/plan")).await;

    // Assert: the hold's deadline is in the page's data, the policy on the plan.
    let hold = &page["reservations"][0];
    assert_eq!(hold["resource"], "capped", "{page}");
    assert!(hold["holdDeadline"].is_string(), "{page}");
    assert_eq!(hold["holdDeadline"], hold["expiresAt"], "capped: {page}");
    for shown in [
        "<dt>Longest hold (s)</dt><dd>120</dd>",
        "<dt>Longest wait (s)</dt><dd>30</dd>",
        "<dt>Longest TTL (s)</dt><dd>none</dd>",
        "<dt>TTL required</dt><dd>no</dd>",
    ] {
        assert!(plan.body.contains(shown), "{shown}: {}", plan.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trimmed_history_still_feeds_the_chart_and_the_events_page() {
    // Arrange: 100 events kept; 600 reserves trim the history.
    let provider = Provider::start().await;
    let (app, mut b, key) =
        signed_in(super::app_with_provider_and(&provider, |s| s.events_retain = 100).await).await;
    for batch in 0..3 {
        let items: Vec<Value> = (0..200)
            .map(|i| json!({"resource": format!("t/{batch}-{i:03}"), "requester": "w", "ttlSeconds": 600}))
            .collect();
        let r = app
            .client
            .post(app.url("/api/v1/Reservation/reserve"))
            .header("X-Api-Key", &key)
            .json(&items)
            .send()
            .await
            .expect("reserve");
        assert_eq!(r.status(), StatusCode::OK);
    }

    // Act
    let (status, _, activity) = data(&b, &app.url("/dashboard/data/activity")).await;
    let events = b.get(&app.url("/dashboard/events")).await;

    // Assert: the retained events (at least 100, fewer than all 600), and the
    // events page lists the newest.
    assert_eq!(status, StatusCode::OK, "{activity}");
    let reserved: u64 = activity["series"]["counts"]["RESERVED"]
        .as_array()
        .expect("a series")
        .iter()
        .filter_map(Value::as_u64)
        .sum();
    assert!((100..600).contains(&reserved), "{reserved} of 600 retained");
    assert_eq!(events.status, StatusCode::OK);
    assert!(
        events.body.contains("t/2-199"),
        "the newest event is listed"
    );
    assert!(!events.body.contains("t/0-000"), "the oldest was trimmed");
}

/// The contention counters behind the dashboard's most contended resources,
/// on both stores: a request that joins a line counts a wait, a wait that ends
/// without a grant a time-out (a client that went away does not), and only
/// the 1,000 most contended resources are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contention_counters_count_waits_and_time_outs_on_both_stores() {
    use cooplocker::domain::{Kind, Requester, Resource, Ttl};
    use cooplocker::store::{BatchMode, ReserveItem, ReserveOutcome, Wait, WaiterId};
    let redis = crate::helpers::RedisServer::start();
    for (kind, store, caller) in crate::helpers::raw_stores(&redis, "counters").await {
        let item = |res: &str, rq: &str| ReserveItem {
            resource: Resource::parse(res.to_string()).expect("resource"),
            requester: Requester::parse(rq).expect("requester"),
            ttl: Some(Ttl::from_seconds(60).expect("ttl")),
            kind: Kind::Exclusive,
            warn: None,
        };
        let now = BatchMode {
            atomic: false,
            wait: None,
        };
        // Hold every resource first, so each waiting request queues.
        let names: Vec<String> = (0..1001).map(|i| format!("r{i:04}")).collect();
        let all: Vec<ReserveItem> = names.iter().map(|n| item(n, "holder")).collect();
        for chunk in all.chunks(500) {
            store.reserve(&caller, chunk, now).await.expect("reserve");
        }
        let wait = |res: &str| {
            let waiter = WaiterId::generate();
            let mode = BatchMode {
                atomic: false,
                wait: Some(Wait {
                    ms: 30_000,
                    waiter,
                    max_waiters: 100_000,
                }),
            };
            (item(res, "waiter"), mode, waiter)
        };
        assert!(
            store
                .contention(&caller.tenant, 10)
                .await
                .expect("counters")
                .is_empty(),
            "{kind}: none before any wait"
        );
        // r0000: three waits, two timed out, one client went away.
        for went_away in [false, false, true] {
            let (it, mode, waiter) = wait("r0000");
            let out = store.reserve(&caller, &[it], mode).await.expect("wait");
            assert!(
                matches!(out.value[0], ReserveOutcome::Queued { .. }),
                "{kind}: {:?}",
                out.value
            );
            store
                .wait_leave(&caller.tenant, waiter, went_away)
                .await
                .expect("leave");
        }
        // r0001: one wait, still in line.
        let (it, mode, _) = wait("r0001");
        store.reserve(&caller, &[it], mode).await.expect("wait");
        let got = store
            .contention(&caller.tenant, 10)
            .await
            .expect("counters");
        let row = |r: &str| got.iter().find(|c| c.resource == r).cloned();
        let first = row("r0000").expect("r0000 counted");
        assert_eq!((first.waits, first.timed_out), (3, 2), "{kind}: {got:?}");
        let second = row("r0001").expect("r0001 counted");
        assert_eq!((second.waits, second.timed_out), (1, 0), "{kind}: {got:?}");
        assert_eq!(
            got[0].resource, "r0000",
            "{kind}: most waits first: {got:?}"
        );
        assert_eq!(got.len(), 2, "{kind}: {got:?}");
        // Past 1,000 resources the least contended goes (r0000 stays).
        for n in &names[2..] {
            let (it, mode, _) = wait(n);
            store.reserve(&caller, &[it], mode).await.expect("wait");
        }
        let got = store
            .contention(&caller.tenant, 2000)
            .await
            .expect("counters");
        assert_eq!(got.len(), 1000, "{kind}: kept to 1,000");
        assert!(got.iter().any(|c| c.resource == "r0000"), "{kind}");
        assert_eq!(got[0].resource, "r0000", "{kind}");
    }
}

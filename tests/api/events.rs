//! `GET /api/v1/events`: what arrives, in what order, to whom — on each store,
//! across instances of a fleet, across a reconnect, and for slow clients.

use crate::both_stores;
use crate::helpers::{
    create_tenant, send, settings, spawn_app_with, start_instance, Kind, RedisServer, TestApp,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One parsed SSE message.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: String,
    pub event: String,
    pub data: Value,
}

/// A minimal, strict SSE reader over a streaming response.
pub struct Stream {
    res: reqwest::Response,
    buf: String,
    pub comments: usize,
    pub retry: Option<u64>,
    pub ended: bool,
}

impl Stream {
    pub async fn open(base: &str, key: &str, query: &str, last_event_id: Option<&str>) -> Self {
        let res = Self::request(base, key, query, last_event_id).await;
        assert_eq!(res.status(), StatusCode::OK, "stream refused: {res:?}");
        let ct = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(ct.starts_with("text/event-stream"), "content type {ct}");
        Self {
            res,
            buf: String::new(),
            comments: 0,
            retry: None,
            ended: false,
        }
    }

    pub async fn request(
        base: &str,
        key: &str,
        query: &str,
        last_event_id: Option<&str>,
    ) -> reqwest::Response {
        // No overall timeout: a stream is long-lived by design.
        cooplocker::tokens::init_crypto().expect("crypto self-test");
        let client = reqwest::Client::new();
        let mut req = client
            .get(format!("{base}/api/v1/events{query}"))
            .header("X-Api-Key", key);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        req.send().await.expect("open event stream")
    }

    /// The next event within `within`, skipping comments and `retry:` blocks.
    pub async fn next(&mut self, within: Duration) -> Option<Sse> {
        let deadline = Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if let Some(ev) = self.parse(&block) {
                    return Some(ev);
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.res.chunk()).await {
                Ok(Ok(Some(bytes))) => {
                    self.buf
                        .push_str(std::str::from_utf8(&bytes).expect("UTF-8 stream"));
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    self.ended = true;
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    fn parse(&mut self, block: &str) -> Option<Sse> {
        let (mut id, mut event, mut data) = (None, None, None);
        for line in block.lines() {
            if line.is_empty() {
                continue;
            } else if line.starts_with(':') {
                self.comments += 1;
            } else if let Some(v) = line.strip_prefix("retry: ") {
                self.retry = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(v).expect("data is JSON"));
            } else {
                panic!("unexpected SSE line {line:?}");
            }
        }
        let data: Value = data?;
        let ev = Sse {
            id: id.expect("every event has an id"),
            event: event.expect("every event has a type"),
            data,
        };
        assert_eq!(ev.data["id"], ev.id.as_str(), "id: equals data.id");
        assert_eq!(
            ev.data["type"],
            ev.event.as_str(),
            "event: equals data.type"
        );
        Some(ev)
    }

    /// Exactly `n` events (panics with what arrived otherwise).
    pub async fn take(&mut self, n: usize, within: Duration) -> Vec<Sse> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(e) => out.push(e),
                None => panic!("expected {n} events, got {}: {out:#?}", out.len()),
            }
        }
        out
    }

    /// Every event that arrives within `quiet`.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Sse> {
        let mut out = Vec::new();
        while let Some(e) = self.next(quiet).await {
            out.push(e);
        }
        out
    }
}

const WAIT: Duration = Duration::from_secs(5);

/// The (type, resource) of each event.
fn kinds(events: &[Sse]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e.event.clone(),
                e.data["resource"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

async fn key_with_label(app: &TestApp, label: &str) -> String {
    let r = app
        .admin(
            Method::POST,
            &format!("/tenants/{}/keys", app.tenant_id),
            Some(json!({ "label": label })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    r.body["key"].as_str().expect("key").to_string()
}

async fn reserve_as(app: &TestApp, key: &str, items: Value) -> Vec<Value> {
    let r = app.post_as(key, "/api/v1/Reservation/reserve", items).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r.results().clone()
}

both_stores!(
    every_change_arrives_with_the_label_of_the_key_that_caused_it,
    an_expiry_is_announced_once_and_a_release_is_not_an_expiry,
    resume_replays_exactly_the_missed_events_then_goes_live,
    filters_pick_resources_prefixes_and_types,
    no_event_crosses_tenants,
    the_stream_advises_a_retry_and_keeps_alive,
    bad_filters_are_refused,
    a_holder_follows_its_own_leases_by_requester,
);

async fn every_change_arrives_with_the_label_of_the_key_that_caused_it(app: TestApp) {
    let key = key_with_label(&app, "worker-prod").await;
    let mut s = Stream::open(&app.address, &app.api_key, "", None).await;

    let got = reserve_as(
        &app,
        &key,
        json!([{"resource":"r","requester":"app","ttlSeconds":60}]),
    )
    .await;
    let token = got[0]["releaseToken"].clone();
    let fencing = got[0]["fencingToken"].as_u64().expect("fencing");
    let r = app
        .post_as(
            &key,
            "/api/v1/Reservation/extend",
            json!([{"resource":"r","requester":"app","releaseToken":token,"ttlSeconds":120}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .post_as(
            &key,
            "/api/v1/Reservation/unreserve",
            json!([{"resource":"r","requester":"app","releaseToken":token}]),
        )
        .await;
    assert_eq!(r.results()[0]["status"], "UNRESERVED");
    // A second grant, force-released by the operator.
    reserve_as(
        &app,
        &app.api_key,
        json!([{"resource":"r","requester":"other"}]),
    )
    .await;
    let r = app.force_release("r").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    let ev = s.take(5, WAIT).await;
    assert_eq!(
        kinds(&ev),
        pairs(&[
            ("RESERVED", "r"),
            ("EXTENDED", "r"),
            ("UNRESERVED", "r"),
            ("RESERVED", "r"),
            ("FORCE_RELEASED", "r")
        ])
    );
    for e in &ev[..3] {
        assert_eq!(e.data["apiKeyLabel"], "worker-prod", "{e:?}");
        assert_eq!(e.data["requester"], "app");
        assert_eq!(e.data["fencingToken"].as_u64(), Some(fencing));
        assert!(e.data["at"].as_str().is_some_and(|a| a.ends_with('Z')));
    }
    assert_eq!(ev[0].data["expiresAt"].as_str().map(str::len), Some(24));
    assert_ne!(ev[0].data["expiresAt"], ev[1].data["expiresAt"]);
    assert_eq!(ev[3].data["apiKeyLabel"], "default");
    assert_eq!(ev[3].data["expiresAt"], Value::Null);
    assert_eq!(ev[4].data["apiKeyLabel"], "admin");
    assert_eq!(ev[4].data["requester"], "other");
    assert!(ev[4].data["fencingToken"].as_u64() > Some(fencing));
    let ids: Vec<&str> = ev.iter().map(|e| e.id.as_str()).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "ids are distinct: {ids:?}");
}

async fn an_expiry_is_announced_once_and_a_release_is_not_an_expiry(app: TestApp) {
    let key = key_with_label(&app, "worker-prod").await;
    let mut s = Stream::open(&app.address, &app.api_key, "?types=EXPIRED", None).await;
    let got = reserve_as(
        &app,
        &key,
        json!([
            {"resource":"lapses","requester":"app","ttlSeconds":1},
            {"resource":"released","requester":"app","ttlSeconds":1}
        ]),
    )
    .await;
    let r = app
        .post(
            "/api/v1/Reservation/unreserve",
            json!([{"resource":"released","requester":"app","releaseToken":got[1]["releaseToken"]}]),
        )
        .await;
    assert_eq!(r.results()[0]["status"], "UNRESERVED");
    let reserved_at = Instant::now();

    let ev = s
        .next(Duration::from_secs(4))
        .await
        .expect("an EXPIRED event");
    // Within 2 s of the expiry (1 s TTL), measured from the reserve response.
    assert!(reserved_at.elapsed() < Duration::from_millis(3000));
    assert_eq!(ev.event, "EXPIRED");
    assert_eq!(ev.data["resource"], "lapses");
    assert_eq!(ev.data["requester"], "app");
    assert_eq!(ev.data["apiKeyLabel"], "worker-prod");
    assert_eq!(ev.data["fencingToken"], got[0]["fencingToken"]);
    assert_eq!(ev.data["expiresAt"], got[0]["expiresAt"]);
    let millis = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or(""))
            .map(|t| t.timestamp_millis())
            .expect("RFC 3339 time")
    };
    let delay = millis(&ev.data["at"]) - millis(&ev.data["expiresAt"]);
    assert!(
        (0..=2000).contains(&delay),
        "announced {delay} ms after the expiry"
    );
    let more = s.drain(Duration::from_millis(1500)).await;
    assert!(more.is_empty(), "one EXPIRED only: {more:?}");
}

async fn resume_replays_exactly_the_missed_events_then_goes_live(app: TestApp) {
    let mut s = Stream::open(&app.address, &app.api_key, "", None).await;
    let got = reserve_as(
        &app,
        &app.api_key,
        json!([{"resource":"a","requester":"q"}]),
    )
    .await;
    let seen = s.take(1, WAIT).await;
    drop(s);

    // Missed while disconnected.
    let token = got[0]["releaseToken"].clone();
    reserve_as(
        &app,
        &app.api_key,
        json!([{"resource":"b","requester":"q"},{"resource":"c","requester":"q"}]),
    )
    .await;
    app.post(
        "/api/v1/Reservation/unreserve",
        json!([{"resource":"a","requester":"q","releaseToken":token}]),
    )
    .await;

    let mut s = Stream::open(&app.address, &app.api_key, "", Some(&seen[0].id)).await;
    let replayed = s.take(3, WAIT).await;
    assert_eq!(
        kinds(&replayed),
        pairs(&[("RESERVED", "b"), ("RESERVED", "c"), ("UNRESERVED", "a")])
    );
    reserve_as(
        &app,
        &app.api_key,
        json!([{"resource":"d","requester":"q"}]),
    )
    .await;
    let live = s.take(1, WAIT).await;
    assert_eq!(kinds(&live), pairs(&[("RESERVED", "d")]));
    let extra = s.drain(Duration::from_millis(300)).await;
    assert!(extra.is_empty(), "no repeats at the seam: {extra:?}");

    // Resuming from the newest id gives nothing old.
    let mut s = Stream::open(&app.address, &app.api_key, "", Some(&live[0].id)).await;
    assert!(s.drain(Duration::from_millis(300)).await.is_empty());
}

async fn filters_pick_resources_prefixes_and_types(app: TestApp) {
    let mut by_name =
        Stream::open(&app.address, &app.api_key, "?resource=a&resource=b", None).await;
    let mut by_prefix = Stream::open(&app.address, &app.api_key, "?prefix=job%2F", None).await;
    let mut by_type = Stream::open(&app.address, &app.api_key, "?types=UNRESERVED", None).await;
    let mut all = Stream::open(&app.address, &app.api_key, "", None).await;

    let got = reserve_as(
        &app,
        &app.api_key,
        json!([
            {"resource":"a","requester":"q"},
            {"resource":"c","requester":"q"},
            {"resource":"job/1","requester":"q"},
            {"resource":"b","requester":"q"}
        ]),
    )
    .await;
    app.post(
        "/api/v1/Reservation/unreserve",
        json!([{"resource":"c","requester":"q","releaseToken":got[1]["releaseToken"]}]),
    )
    .await;

    assert_eq!(all.take(5, WAIT).await.len(), 5);
    assert_eq!(
        kinds(&by_name.take(2, WAIT).await),
        pairs(&[("RESERVED", "a"), ("RESERVED", "b")])
    );
    assert_eq!(
        kinds(&by_prefix.take(1, WAIT).await),
        pairs(&[("RESERVED", "job/1")])
    );
    assert_eq!(
        kinds(&by_type.take(1, WAIT).await),
        pairs(&[("UNRESERVED", "c")])
    );
    for s in [&mut by_name, &mut by_prefix, &mut by_type] {
        let extra = s.drain(Duration::from_millis(300)).await;
        assert!(extra.is_empty(), "filtered out: {extra:?}");
    }
}

/// `requester=` (repeatable, exact; contract section 18): a holder sees its
/// own grants and learns that it lost one (EXPIRED, FORCE_RELEASED), and
/// nothing of other requesters.
async fn a_holder_follows_its_own_leases_by_requester(app: TestApp) {
    let mut mine = Stream::open(
        &app.address,
        &app.api_key,
        "?requester=me&requester=me%2Fjob",
        None,
    )
    .await;
    reserve_as(
        &app,
        &app.api_key,
        json!([
            {"resource":"a","requester":"me","ttlSeconds":1},
            {"resource":"b","requester":"mex"},
            {"resource":"c","requester":"me/job"},
            {"resource":"d","requester":"Me"}
        ]),
    )
    .await;
    let r = app.force_release("c").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let got = mine.take(4, WAIT).await;
    assert_eq!(
        kinds(&got),
        pairs(&[
            ("RESERVED", "a"),
            ("RESERVED", "c"),
            ("FORCE_RELEASED", "c"),
            ("EXPIRED", "a")
        ]),
        "{got:?}"
    );
    assert!(got
        .iter()
        .all(|e| e.data["requester"] == "me" || e.data["requester"] == "me/job"));
    let extra = mine.drain(Duration::from_millis(300)).await;
    assert!(extra.is_empty(), "other requesters' events: {extra:?}");
}

async fn no_event_crosses_tenants(app: TestApp) {
    let (_, other_key) = create_tenant(&app.client, &app.address, "other", "pro").await;
    let mut mine = Stream::open(&app.address, &app.api_key, "", None).await;
    let mut theirs = Stream::open(&app.address, &other_key, "", None).await;
    reserve_as(
        &app,
        &other_key,
        json!([{"resource":"same-name","requester":"them"}]),
    )
    .await;
    reserve_as(
        &app,
        &app.api_key,
        json!([{"resource":"same-name","requester":"me"}]),
    )
    .await;
    let got = mine.take(1, WAIT).await;
    assert_eq!(got[0].data["requester"], "me");
    let got = theirs.take(1, WAIT).await;
    assert_eq!(got[0].data["requester"], "them");
    assert!(mine.drain(Duration::from_millis(300)).await.is_empty());
    assert!(theirs.drain(Duration::from_millis(300)).await.is_empty());
}

async fn the_stream_advises_a_retry_and_keeps_alive(app: TestApp) {
    // The default keep-alive is 15 s; this app uses the default, so only the
    // retry advice is checked here (see `keep_alive_comments_flow`).
    let mut s = Stream::open(&app.address, &app.api_key, "", None).await;
    assert!(s.next(Duration::from_millis(300)).await.is_none());
    assert_eq!(s.retry, Some(2000));
    assert!(!s.ended);
}

async fn bad_filters_are_refused(app: TestApp) {
    for query in [
        "?types=RESERVED,NOPE",
        "?types=",
        "?resource=",
        "?resource=%01",
        "?prefix=",
        "?prefix=a&prefix=b",
        "?unknown=1",
        "?resource=%FF",
        "?requester=",
        "?requester=%01",
    ] {
        let res = Stream::request(&app.address, &app.api_key, query, None).await;
        let r = crate::helpers::into_reply(res).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {r:?}");
        assert_eq!(r.error_code(), "INVALID_REQUEST", "{query}");
    }
    let many: String = (0..101).map(|i| format!("&resource=r{i}")).collect();
    let res = Stream::request(
        &app.address,
        &app.api_key,
        &format!("?{}", &many[1..]),
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = Stream::request(&app.address, "ck_not-a-key", "", None).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

/// Both stores, with settings of their own.
async fn each_store(tweak: fn(&mut cooplocker::config::Settings)) -> Vec<TestApp> {
    vec![
        spawn_app_with(Kind::Redis, tweak).await,
        spawn_app_with(Kind::Embedded, tweak).await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_comments_flow() {
    for app in each_store(|s| s.sse_keepalive_ms = 200).await {
        let mut s = Stream::open(&app.address, &app.api_key, "", None).await;
        assert!(s.next(Duration::from_millis(1100)).await.is_none());
        assert!(s.comments >= 3, "keep-alive comments: {}", s.comments);
        assert!(!s.ended);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_older_than_the_history_or_unparsable_gives_one_gap() {
    for app in each_store(|s| s.events_retain = 100).await {
        let mut s = Stream::open(&app.address, &app.api_key, "", None).await;
        reserve_as(
            &app,
            &app.api_key,
            json!([{"resource":"first","requester":"q"}]),
        )
        .await;
        let first = s.take(1, WAIT).await.remove(0);
        drop(s);
        for round in 0..3 {
            let items: Vec<Value> = (0..100)
                .map(|i| json!({"resource": format!("r{round}-{i}"), "requester":"q"}))
                .collect();
            reserve_as(&app, &app.api_key, Value::Array(items)).await;
        }

        // Ids at and past the edges of the id space too: the largest id
        // (nothing can follow it; XRANGE refuses to start after it), a
        // largest sequence, and numbers beyond 64 bits.
        for stale in [
            first.id.as_str(),
            "not-an-id",
            "99999999999999-0",
            "18446744073709551615-18446744073709551615",
            "18446744073709551615-0",
            "99999999999999-18446744073709551615",
            "18446744073709551616-0",
        ] {
            let mut s = Stream::open(&app.address, &app.api_key, "", Some(stale)).await;
            let gap = s.take(1, WAIT).await.remove(0);
            assert_eq!(gap.event, "GAP", "{stale}");
            assert_eq!(gap.data["lastEventId"], stale);
            reserve_as(
                &app,
                &app.api_key,
                json!([{"resource":format!("live-{stale}"),"requester":"q"}]),
            )
            .await;
            let live = s.take(1, WAIT).await;
            assert_eq!(live[0].event, "RESERVED", "then live: {live:?}");
            assert!(s.drain(Duration::from_millis(200)).await.is_empty());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_tenant_are_capped() {
    // A closed connection is noticed on the next write: keep-alives every 200 ms.
    let tweak = |s: &mut cooplocker::config::Settings| {
        s.sse_max_per_tenant = 2;
        s.sse_keepalive_ms = 200;
    };
    for app in each_store(tweak).await {
        let one = Stream::open(&app.address, &app.api_key, "", None).await;
        let _two = Stream::open(&app.address, &app.api_key, "", None).await;
        let res = Stream::request(&app.address, &app.api_key, "", None).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(res.headers().contains_key("retry-after"));
        let r = crate::helpers::into_reply(res).await;
        assert_eq!(r.error_code(), "RATE_LIMITED");
        // Another tenant is not affected.
        let (_, other) = create_tenant(&app.client, &app.address, "other", "pro").await;
        let _theirs = Stream::open(&app.address, &other, "", None).await;
        // Closing one frees its slot.
        drop(one);
        let freed = crate::helpers::eventually(Duration::from_secs(3), || async {
            Stream::request(&app.address, &app.api_key, "", None)
                .await
                .status()
                == StatusCode::OK
        })
        .await;
        assert!(freed.is_some(), "a closed stream frees its slot");
    }
}

/// A raw client that sends the request and then never reads.
async fn stalled_client(address: &str, key: &str) -> tokio::net::TcpStream {
    let addr: std::net::SocketAddr = address
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small buffer");
    let mut stream = socket.connect(addr).await.expect("connect");
    let req = format!(
        "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.expect("send");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_and_others_keep_receiving() {
    // The default per-client buffer (1024 events, a full batch).
    for app in each_store(|_| {}).await {
        let mut stalled = stalled_client(&app.address, &app.api_key).await;
        let mut reader = Stream::open(&app.address, &app.api_key, "", None).await;
        tokio::time::sleep(Duration::from_millis(200)).await;

        // Far more than the stalled client's buffers (socket and per-client) hold.
        let rounds = 40;
        let reader_task = tokio::spawn(async move {
            let mut n = 0;
            while n < rounds * 1000 {
                match reader.next(Duration::from_secs(10)).await {
                    Some(_) => n += 1,
                    None => break,
                }
            }
            n
        });
        let big = "x".repeat(200);
        for round in 0..rounds {
            let items: Vec<Value> = (0..500)
                .map(|i| json!({"resource": format!("{big}-{round}-{i}"), "requester":"q"}))
                .collect();
            let got = reserve_as(&app, &app.api_key, Value::Array(items.clone())).await;
            let release: Vec<Value> = items
                .iter()
                .zip(&got)
                .map(|(it, g)| json!({"resource": it["resource"], "requester":"q", "releaseToken": g["releaseToken"]}))
                .collect();
            let r = app
                .post("/api/v1/Reservation/unreserve", Value::Array(release))
                .await;
            assert_eq!(r.status, StatusCode::OK);
        }
        let received = reader_task.await.expect("reader");
        assert_eq!(
            received,
            rounds * 1000,
            "the reading client got every event"
        );

        // The stalled one was cut: its socket ends (after what was in flight).
        let mut sink = vec![0u8; 1 << 16];
        let mut total = 0usize;
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match stalled.read(&mut sink).await {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => total += n,
                }
            }
        })
        .await;
        assert_eq!(
            ended,
            Ok(true),
            "the stalled client's connection was closed"
        );
        assert!(
            total < rounds * 1000 * 300,
            "it did not get everything ({total} bytes)"
        );
    }
}

// ---- fleet: several instances on one Redis ----

struct Fleet {
    _redis: RedisServer,
    a: String,
    b: String,
    client: reqwest::Client,
    tenant: String,
    key: String,
}

async fn fleet() -> Fleet {
    let redis = RedisServer::start();
    let (a, _) = start_instance(settings(Some(redis.url()))).await;
    let (b, _) = start_instance(settings(Some(redis.url()))).await;
    let client = crate::helpers::client();
    let (tenant, key) = create_tenant(&client, &a, "fleet", "pro").await;
    Fleet {
        _redis: redis,
        a,
        b,
        client,
        tenant,
        key,
    }
}

async fn fleet_post(
    f: &Fleet,
    base: &str,
    key: &str,
    path: &str,
    body: Value,
) -> crate::helpers::Reply {
    send(
        &f.client,
        Method::POST,
        format!("{base}{path}"),
        Some(key),
        Some(body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_one_instance_sees_changes_made_through_another() {
    let f = fleet().await;
    let r = f
        .client
        .post(format!("{}/api/v1/admin/tenants/{}/keys", f.a, f.tenant))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&json!({"label":"worker-prod"}))
        .send()
        .await
        .expect("create key");
    let key: Value = r.json().await.expect("key json");
    let key = key["key"].as_str().expect("key").to_string();

    let mut on_b = Stream::open(&f.b, &f.key, "", None).await;
    let got = fleet_post(
        &f,
        &f.a,
        &key,
        "/api/v1/Reservation/reserve",
        json!([{"resource":"x","requester":"w","ttlSeconds":30}]),
    )
    .await;
    let token = got.results()[0]["releaseToken"].clone();
    fleet_post(
        &f,
        &f.a,
        &key,
        "/api/v1/Reservation/extend",
        json!([{"resource":"x","requester":"w","releaseToken":token,"ttlSeconds":60}]),
    )
    .await;
    fleet_post(
        &f,
        &f.a,
        &key,
        "/api/v1/Reservation/unreserve",
        json!([{"resource":"x","requester":"w","releaseToken":token}]),
    )
    .await;
    let ev = on_b.take(3, WAIT).await;
    assert_eq!(
        kinds(&ev),
        pairs(&[("RESERVED", "x"), ("EXTENDED", "x"), ("UNRESERVED", "x")])
    );
    assert!(ev.iter().all(|e| e.data["apiKeyLabel"] == "worker-prod"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_expiry_reaches_clients_on_every_instance_once_with_one_id() {
    let f = fleet().await;
    let mut on_a = Stream::open(&f.a, &f.key, "?types=EXPIRED", None).await;
    let mut on_b = Stream::open(&f.b, &f.key, "?types=EXPIRED", None).await;
    let got = fleet_post(
        &f,
        &f.a,
        &f.key,
        "/api/v1/Reservation/reserve",
        json!([
            {"resource":"e1","requester":"w","ttlSeconds":1},
            {"resource":"e2","requester":"w","ttlSeconds":1},
            {"resource":"kept","requester":"w","ttlSeconds":1}
        ]),
    )
    .await;
    let token = got.results()[2]["releaseToken"].clone();
    fleet_post(
        &f,
        &f.b,
        &f.key,
        "/api/v1/Reservation/unreserve",
        json!([{"resource":"kept","requester":"w","releaseToken":token}]),
    )
    .await;

    let a = on_a.take(2, Duration::from_secs(4)).await;
    let b = on_b.take(2, Duration::from_secs(4)).await;
    let mut a_names: Vec<_> = kinds(&a);
    a_names.sort();
    assert_eq!(a_names, pairs(&[("EXPIRED", "e1"), ("EXPIRED", "e2")]));
    let ids = |v: &[Sse]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b), "the same events, with the same ids");
    assert!(on_a.drain(Duration::from_millis(1500)).await.is_empty());
    assert!(on_b.drain(Duration::from_millis(100)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_that_expired_while_no_instance_ran_is_announced_when_one_starts() {
    let redis = RedisServer::start();
    let (a, handle) = start_instance(settings(Some(redis.url()))).await;
    let client = crate::helpers::client();
    let (_, key) = create_tenant(&client, &a, "dormant", "pro").await;
    let mut before = Stream::open(&a, &key, "", None).await;
    let r = send(
        &client,
        Method::POST,
        format!("{a}/api/v1/Reservation/reserve"),
        Some(&key),
        Some(json!([{"resource":"while-down","requester":"w","ttlSeconds":1}])),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let reserved = before.take(1, WAIT).await.remove(0);
    drop(before);
    handle.stop(false).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let (b, _) = start_instance(settings(Some(redis.url()))).await;
    let mut s = Stream::open(&b, &key, "", Some(&reserved.id)).await;
    let ev = s.take(1, Duration::from_secs(3)).await;
    assert_eq!(kinds(&ev), pairs(&[("EXPIRED", "while-down")]));
    assert!(s.drain(Duration::from_millis(1200)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_while_the_subscriber_reconnects_are_not_lost() {
    let f = fleet().await;
    let mut on_a = Stream::open(&f.a, &f.key, "", None).await;
    fleet_post(
        &f,
        &f.b,
        &f.key,
        "/api/v1/Reservation/reserve",
        json!([{"resource":"before","requester":"w"}]),
    )
    .await;
    assert_eq!(
        kinds(&on_a.take(1, WAIT).await),
        pairs(&[("RESERVED", "before")])
    );

    for round in 0..5 {
        // Drop every pub/sub connection (both instances' subscribers), then
        // change things at once, while they reconnect.
        f._redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        let name = format!("during-{round}");
        fleet_post(
            &f,
            &f.b,
            &f.key,
            "/api/v1/Reservation/reserve",
            json!([{"resource":name,"requester":"w"}]),
        )
        .await;
        let got = on_a.take(1, WAIT).await;
        assert_eq!(kinds(&got), pairs(&[("RESERVED", name.as_str())]));
    }
    assert!(
        on_a.drain(Duration::from_millis(500)).await.is_empty(),
        "no repeats"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stops_receiving_events() {
    for app in each_store(|_| {}).await {
        let r = app
            .admin(
                Method::POST,
                &format!("/tenants/{}/keys", app.tenant_id),
                Some(json!({"label":"soon-gone"})),
            )
            .await;
        let key_id = r.body["id"].as_str().expect("id").to_string();
        let key = r.body["key"].as_str().expect("key").to_string();
        let mut s = Stream::open(&app.address, &key, "", None).await;
        let r = app
            .admin(
                Method::DELETE,
                &format!("/tenants/{}/keys/{key_id}", app.tenant_id),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert!(s.next(Duration::from_secs(1)).await.is_none());
        assert!(s.ended, "the stream of a revoked key is closed within 1 s");
        let res = Stream::request(&app.address, &key, "", None).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_while_the_pubsub_link_is_down_ends_its_stream() {
    use crate::harness::proxy::{Link, Proxy};
    // Arrange: instance A reaches Redis through a proxy that can cut its link
    // alone; B reaches it directly. A stream on A with a key of its own.
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.port).await;
    let (a, _) = start_instance(settings(Some(format!("redis://127.0.0.1:{}", proxy.port)))).await;
    let (b, _) = start_instance(settings(Some(redis.url()))).await;
    let client = crate::helpers::client();
    let (tenant, _) = create_tenant(&client, &b, "pubsub-down", "pro").await;
    let r = client
        .post(format!("{b}/api/v1/admin/tenants/{tenant}/keys"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&json!({"label":"soon-gone"}))
        .send()
        .await
        .expect("create key");
    let created: Value = r.json().await.expect("key json");
    let key_id = created["id"].as_str().expect("id").to_string();
    let key = created["key"].as_str().expect("key").to_string();
    // One event, so the stream has a cursor to resume from after a reconnect
    // (and is kept, not dropped, by the catch-up).
    let r = send(
        &client,
        Method::POST,
        format!("{b}/api/v1/Reservation/reserve"),
        Some(&key),
        Some(json!([{"resource":"before","requester":"w"}])),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let mut s = Stream::open(&a, &key, "", None).await;
    assert!(s.next(Duration::from_millis(300)).await.is_none());
    assert!(!s.ended);

    // Act: A's link goes dark long enough for its pub/sub to be lost; the key
    // is revoked through B meanwhile (A's feed never hears of it); the link
    // comes back.
    proxy.set_link(Link::Blackhole);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = client
        .delete(format!("{b}/api/v1/admin/tenants/{tenant}/keys/{key_id}"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    proxy.heal();
    let healed = Instant::now();

    // Assert: the stream ends soon after A is back, and the key is refused.
    while !s.ended && healed.elapsed() < Duration::from_secs(6) {
        s.next(Duration::from_millis(100)).await;
    }
    assert!(
        s.ended,
        "the stream of a key revoked while pub/sub was down still runs {:?} after the link healed",
        healed.elapsed()
    );
    let res = Stream::request(&a, &key, "", None).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

/// A pub/sub connection that dies silently (no FIN; commands still flow) must
/// not let a revoked key through for longer than the contract's 1 s: cached
/// credentials are trusted only while the feed answered a ping within 500 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_feed_does_not_stretch_revocation_past_a_second() {
    use crate::harness::proxy::Proxy;
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.port).await;
    let (a, _) = start_instance(settings(Some(format!("redis://127.0.0.1:{}", proxy.port)))).await;
    let (b, _) = start_instance(settings(Some(redis.url()))).await;
    let client = crate::helpers::client();
    let (tenant, _) = create_tenant(&client, &b, "silent-feed", "pro").await;
    let mut slowest = Duration::ZERO;
    for round in 0..3 {
        let r = client
            .post(format!("{b}/api/v1/admin/tenants/{tenant}/keys"))
            .bearer_auth(crate::helpers::ADMIN_TOKEN)
            .json(&json!({"label": format!("k{round}")}))
            .send()
            .await
            .expect("create key");
        let created: Value = r.json().await.expect("key json");
        let key_id = created["id"].as_str().expect("id").to_string();
        let key = created["key"].as_str().expect("key").to_string();
        let check = |key: String| {
            let (client, a) = (client.clone(), a.clone());
            async move {
                send(
                    &client,
                    Method::POST,
                    format!("{a}/api/v1/Reservation/check"),
                    Some(&key),
                    Some(json!([{"resource":"x"}])),
                )
                .await
                .status
            }
        };
        // The key is cached on A, and A's feed is live.
        assert_eq!(check(key.clone()).await, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A's pub/sub connection goes dark; the key is revoked through B.
        proxy.darken_subscribers(true);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = client
            .delete(format!("{b}/api/v1/admin/tenants/{tenant}/keys/{key_id}"))
            .bearer_auth(crate::helpers::ADMIN_TOKEN)
            .send()
            .await
            .expect("revoke");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let revoked = Instant::now();
        while check(key.clone()).await == StatusCode::OK
            && revoked.elapsed() < Duration::from_secs(4)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        slowest = slowest.max(revoked.elapsed());
        assert_eq!(check(key.clone()).await, StatusCode::UNAUTHORIZED);
        proxy.darken_subscribers(false);
        // Let the feed come back before the next round.
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    eprintln!("slowest refusal after a revocation with a dark feed: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "revocation took {slowest:?}"
    );
}

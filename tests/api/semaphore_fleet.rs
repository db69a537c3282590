//! A hot semaphore over a fleet (contract section 15): 64 clients on two
//! instances of one real Redis take and give back permits of one 5-permit
//! semaphore, some waiting in line; never more than 5 hold it at any moment,
//! judged twice: by the history checker over what the clients were told, and
//! by the tenant's event stream, which is in the store's order.

use crate::events::Stream;
use crate::harness::history::{check, Grant, GrantKind};
use crate::helpers::{create_tenant, into_reply, settings, start_instance, RedisServer};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CLIENTS: usize = 64;
const LIMIT: u64 = 5;
/// How long the clients keep going.
const RUN: Duration = Duration::from_secs(6);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a time"))
        .expect("RFC 3339")
        .timestamp_millis()
}

/// The (milliseconds, sequence) of an event id `<ms>-<seq>`: the store's order.
fn event_order(id: &str) -> (u64, u64) {
    let (a, b) = id.split_once('-').unwrap_or((id, "0"));
    (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}

/// What one client saw: its grants (by the store's times) and how its other
/// answers went.
#[derive(Default)]
struct Seen {
    grants: Vec<Grant>,
    already_held: usize,
    timed_out: usize,
}

async fn client_loop(id: usize, base: String, key: String, seen: Arc<Mutex<Seen>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    // Every fourth client waits in line (up to 1 s); the others do not.
    let query = if id % 4 == 0 { "?waitSeconds=1" } else { "" };
    let requester = format!("c{id}");
    let item =
        json!([{"resource": "sem", "requester": requester, "limit": LIMIT, "ttlSeconds": 5}]);
    let deadline = Instant::now() + RUN;
    let mut round = 0u64;
    while Instant::now() < deadline {
        round += 1;
        let r = into_reply(
            http.post(format!("{base}/api/v1/Reservation/reserve{query}"))
                .header("X-Api-Key", &key)
                .json(&item)
                .send()
                .await
                .expect("reserve"),
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        let res = &r.results()[0];
        assert_eq!(res["mode"], "semaphore", "{res}");
        assert_eq!(res["limit"], LIMIT, "{res}");
        match res["status"].as_str() {
            Some("RESERVED") => {}
            Some("ALREADY_HELD") => {
                let holders = res["holders"].as_u64().expect("holders");
                assert!(holders <= LIMIT, "{res}");
                if let Some(a) = res["available"].as_u64() {
                    assert_eq!(a + holders, LIMIT, "available = limit - holders: {res}");
                }
                seen.lock().expect("seen").already_held += 1;
                tokio::time::sleep(Duration::from_millis(5 + round % 5)).await;
                continue;
            }
            Some("TIMED_OUT") if !query.is_empty() => {
                seen.lock().expect("seen").timed_out += 1;
                continue;
            }
            _ => panic!("{requester}: unexpected answer {res}"),
        }
        let mut grant = Grant {
            resource: "sem".into(),
            client: id,
            kind: GrantKind::Semaphore(LIMIT as u16),
            token: res["fencingToken"].as_u64().expect("fencing token"),
            start_ms: ms(&res["reservedAt"]),
            expires_ms: ms(&res["expiresAt"]),
            release_sent_ms: None,
        };
        // Hold it a few ms, then give the permit back.
        tokio::time::sleep(Duration::from_millis(1 + (id as u64 + round) % 5)).await;
        grant.release_sent_ms = Some(now_ms());
        let u = into_reply(
            http.post(format!("{base}/api/v1/Reservation/unreserve"))
                .header("X-Api-Key", &key)
                .json(&json!([{"resource": "sem", "requester": requester,
                               "releaseToken": res["releaseToken"]}]))
                .send()
                .await
                .expect("unreserve"),
        )
        .await;
        assert_eq!(u.results()[0]["status"], "UNRESERVED", "{u:?}");
        seen.lock().expect("seen").grants.push(grant);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_over_two_instances_never_hold_more_than_five_permits() {
    // Arrange: two instances on one Redis, a tenant, a stream of its events
    // about the semaphore.
    let redis = RedisServer::start();
    let (a, _) = start_instance(settings(Some(redis.url()))).await;
    // The stream's instance buffers far more than the run's events: its
    // reader shares two threads with 64 clients and may fall behind for a
    // while, and a disconnect would lose events the check needs.
    let mut streaming = settings(Some(redis.url()));
    streaming.sse_buffer = 1_000_000;
    let (b, _) = start_instance(streaming).await;
    let (_, key) = create_tenant(&crate::helpers::client(), &a, "semaphore", "enterprise").await;
    let mut stream = Stream::open(&b, &key, "?resource=sem", None).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (events, stop) = (events.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                match stream.next(Duration::from_millis(500)).await {
                    Some(e) => events.lock().expect("events").push(e),
                    None if stream.ended => panic!("the event stream ended"),
                    None if stop.load(std::sync::atomic::Ordering::SeqCst) => return,
                    None => {}
                }
            }
        })
    };

    // Act: 64 clients, alternately on either instance, for RUN.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let base = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(client_loop(i, base, key.clone(), seen.clone()))
        })
        .collect();
    for c in clients {
        c.await.expect("a client failed");
    }
    // Every release is in; the stream goes quiet for 500 ms, then stops.
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    reader.await.expect("the event reader failed");

    // Assert 1: the history checker over what the clients were told.
    let seen = seen.lock().expect("seen");
    let verdict = check(&seen.grants, &[], true);
    assert!(
        verdict.violations.is_empty(),
        "the checker found violations: {:#?}",
        verdict.violations.iter().take(10).collect::<Vec<_>>()
    );
    // Assert 2: the event stream, in the store's order: holders go up with
    // each RESERVED and down with each release, never past the limit.
    let mut events = events.lock().expect("events").clone();
    events.sort_by_key(|e| event_order(&e.id));
    let (mut holders, mut peak, mut reserved) = (0i64, 0i64, 0usize);
    for e in &events {
        assert_eq!(e.data["resource"], "sem", "{:?}", e.data);
        match e.event.as_str() {
            "RESERVED" => {
                assert_eq!(e.data["mode"], "semaphore", "{:?}", e.data);
                assert_eq!(e.data["limit"], LIMIT, "{:?}", e.data);
                reserved += 1;
                holders += 1;
            }
            "UNRESERVED" | "EXPIRED" | "FORCE_RELEASED" => holders -= 1,
            other => panic!("unexpected event {other}: {:?}", e.data),
        }
        assert!(
            (0..=LIMIT as i64).contains(&holders),
            "{holders} holders after event {} ({} {:?})",
            e.id,
            e.event,
            e.data
        );
        peak = peak.max(holders);
    }
    assert_eq!(holders, 0, "every permit came back");
    assert_eq!(
        reserved,
        seen.grants.len(),
        "one RESERVED event per grant a client was told of"
    );
    let waiting_grants = seen.grants.iter().filter(|g| g.client % 4 == 0).count();
    println!(
        "{} grants ({} of waiting clients), {} ALREADY_HELD, {} TIMED_OUT, {} events, peak {peak} holders",
        seen.grants.len(),
        waiting_grants,
        seen.already_held,
        seen.timed_out,
        events.len()
    );
    assert!(seen.grants.len() >= 100, "too little happened");
    assert!(waiting_grants > 0, "no waiting client was ever granted");
    // Not vacuous: the semaphore was full at some moment.
    assert_eq!(peak, LIMIT as i64, "the permits were never all in use");
}

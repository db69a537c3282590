//! The lean Redis data model (layout 2): nothing is left behind after churn or
//! expiry, fencing tokens keep rising with no per-resource state, the sweeper
//! costs nothing per idle tenant, and an instance refuses a Redis holding
//! another data layout. These look at Redis itself, so they run on Redis only.

use crate::helpers::{
    client, create_tenant, eventually, key_prefix, send, settings, start_instance, tenant_keys,
    RedisServer,
};
use cooplocker::store::redis::{keys, RedisOptions, RedisStore};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

struct One {
    redis: RedisServer,
    base: String,
    key: String,
    tenant: String,
    client: reqwest::Client,
}

async fn one(redis: RedisServer) -> One {
    let (base, _) = start_instance(settings(Some(redis.url()))).await;
    let client = client();
    let (tenant, key) = create_tenant(&client, &base, "lean", "enterprise").await;
    One {
        redis,
        base,
        key,
        tenant,
        client,
    }
}

impl One {
    async fn post(&self, path: &str, body: Value) -> Value {
        let r = send(
            &self.client,
            Method::POST,
            format!("{}{path}", self.base),
            Some(&self.key),
            Some(body),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
        r.body
    }

    async fn reserve_one(&self, resource: &str, ttl: Option<u64>) -> (u64, Value) {
        let b = self
            .post(
                "/api/v1/Reservation/reserve",
                json!([{"resource": resource, "requester": "rq", "ttlSeconds": ttl}]),
            )
            .await;
        let r = &b["results"][0];
        assert_eq!(r["status"], "RESERVED", "{b}");
        (
            r["fencingToken"].as_u64().expect("token"),
            r["releaseToken"].clone(),
        )
    }

    /// One reservation made and released, so the event stream exists: the
    /// tenant's keys from then on.
    async fn baseline(&self) -> Vec<String> {
        let (_, tok) = self.reserve_one("warm-up", None).await;
        self.post(
            "/api/v1/Reservation/unreserve",
            json!([{"resource":"warm-up","requester":"rq","releaseToken":tok}]),
        )
        .await;
        tenant_keys(&self.redis, &self.tenant)
    }

    /// Waits (up to 6 s: expiries are retired within a second or two) until
    /// the tenant has no key but those of `before` (and its rate limits).
    async fn back_to(&self, before: &[String]) {
        let clean = eventually(Duration::from_secs(6), || async {
            tenant_keys(&self.redis, &self.tenant)
                .iter()
                .all(|k| before.contains(k) || k.contains(":rl:"))
        })
        .await;
        assert!(
            clean.is_some(),
            "left behind: {:?}",
            tenant_keys(&self.redis, &self.tenant)
                .into_iter()
                .filter(|k| !before.contains(k))
                .take(20)
                .collect::<Vec<_>>()
        );
    }

    fn used_memory(&self) -> i64 {
        self.redis
            .cli(&["INFO", "memory"])
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory")
    }

    fn dbsize(&self) -> i64 {
        self.redis.cli(&["DBSIZE"]).trim().parse().expect("dbsize")
    }
}

/// 3,000 distinct names reserved and unreserved (enough to split the listing
/// and requester indexes into many pages and merge them back), then 1,000 with
/// a TTL left to expire: afterwards the tenant has exactly the keys it had
/// before (plus its event history), and memory is back within 2 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_and_expiry_leave_no_residue() {
    let o = one(RedisServer::start()).await;
    let keys_before = o.baseline().await;
    let (mem_before, db_before) = (o.used_memory(), o.dbsize());

    for batch in 0..30 {
        let items: Vec<Value> = (0..100)
            .map(|i| json!({"resource": format!("churn/{batch:03}/{i:04}"), "requester": format!("w{}", i % 7)}))
            .collect();
        let b = o
            .post("/api/v1/Reservation/reserve", Value::Array(items))
            .await;
        let release: Vec<Value> = b["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| {
                assert_eq!(r["status"], "RESERVED");
                json!({"resource": r["resource"], "requester": r["requester"], "releaseToken": r["releaseToken"]})
            })
            .collect();
        // Unreserve in another order than reserved, so pages empty unevenly.
        let mut release = release;
        release.reverse();
        let b = o
            .post("/api/v1/Reservation/unreserve", Value::Array(release))
            .await;
        assert!(b["results"]
            .as_array()
            .expect("results")
            .iter()
            .all(|r| r["status"] == "UNRESERVED"));
    }
    let items: Vec<Value> = (0..1000)
        .map(|i| json!({"resource": format!("ttl/{i:04}"), "requester": format!("t{}", i % 3), "ttlSeconds": 1}))
        .collect();
    o.post("/api/v1/Reservation/reserve", Value::Array(items))
        .await;
    assert!(tenant_keys(&o.redis, &o.tenant).len() > 1000);

    o.back_to(&keys_before).await;
    let listed = o
        .post(
            "/api/v1/Reservation/check",
            json!([{"resource": "churn/000/0000"}]),
        )
        .await;
    assert_eq!(listed["results"][0]["status"], "FREE");
    // Keys: the tenant's are as before; the fleet's own (due index, sweep
    // lease) are a handful.
    assert!(
        o.dbsize() - db_before <= 5,
        "{} more keys",
        o.dbsize() - db_before
    );
    let grown = o.used_memory() - mem_before;
    assert!(grown < 2 * 1024 * 1024, "used_memory grew by {grown} bytes");
}

/// Semaphores and shared locks leave nothing behind either: 20 semaphores of
/// 10 permits taken in full (each permit its own hold), half released permit
/// by permit in another order, half left to expire, plus shared holds left to
/// expire: afterwards the tenant has exactly the keys it had before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphores_and_shared_holds_leave_no_residue() {
    let o = one(RedisServer::start()).await;
    let keys_before = o.baseline().await;
    for s in 0..20 {
        let ttl = (s % 2 == 0).then_some(1);
        let items: Vec<Value> = (0..10)
            .map(|i| json!({"resource": format!("sem/{s:02}"), "requester": format!("p{i}"), "limit": 10, "ttlSeconds": ttl}))
            .collect();
        let b = o
            .post("/api/v1/Reservation/reserve", Value::Array(items))
            .await;
        let results = b["results"].as_array().expect("results");
        assert!(results.iter().all(|r| r["status"] == "RESERVED"), "{b}");
        if ttl.is_none() {
            let mut release: Vec<Value> = results
                .iter()
                .map(|r| json!({"resource": r["resource"], "requester": r["requester"], "releaseToken": r["releaseToken"]}))
                .collect();
            release.swap(0, 5);
            release.reverse();
            let b = o
                .post("/api/v1/Reservation/unreserve", Value::Array(release))
                .await;
            assert!(
                b["results"]
                    .as_array()
                    .expect("results")
                    .iter()
                    .all(|r| r["status"] == "UNRESERVED"),
                "{b}"
            );
        }
    }
    let shared: Vec<Value> = (0..5)
        .map(|i| json!({"resource": "rw", "requester": format!("r{i}"), "mode": "shared", "ttlSeconds": 1}))
        .collect();
    o.post("/api/v1/Reservation/reserve", Value::Array(shared))
        .await;
    o.back_to(&keys_before).await;
    let listed = o
        .post(
            "/api/v1/Reservation/check",
            json!([{"resource": "sem/00"}, {"resource": "sem/01"}, {"resource": "rw"}]),
        )
        .await;
    for r in listed["results"].as_array().expect("results") {
        assert_eq!(r["status"], "FREE", "{listed}");
    }
}

/// Fencing tokens rise across a release, an expiry, a restart of a durable
/// Redis (the tenant's saved high-water mark), and a clock step back — shown
/// as a mark far above the store clock, which is what a clock that stepped
/// back leaves behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_rise_across_release_expiry_restart_and_a_clock_step_back() {
    let mut o = one(RedisServer::start_durable()).await;
    let (t1, tok) = o.reserve_one("f", None).await;
    o.post(
        "/api/v1/Reservation/unreserve",
        json!([{"resource":"f","requester":"rq","releaseToken":tok}]),
    )
    .await;
    let (t2, _) = o.reserve_one("f", Some(1)).await;
    assert!(t2 > t1, "after a release: {t2} > {t1}");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (t3, _) = o.reserve_one("f", Some(1)).await;
    assert!(t3 > t2, "after an expiry: {t3} > {t2}");

    o.redis.restart();
    let store_back = eventually(Duration::from_secs(5), || async {
        send(
            &o.client,
            Method::POST,
            format!("{}/api/v1/Reservation/check", o.base),
            Some(&o.key),
            Some(json!([{"resource":"f"}])),
        )
        .await
        .status
            == StatusCode::OK
    })
    .await;
    assert!(
        store_back.is_some(),
        "the instance recovers after the restart"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (t4, _) = o.reserve_one("f", None).await;
    assert!(t4 > t3, "after a Redis restart: {t4} > {t3}");

    let mark = t4 + 10_000_000_000_000; // ~4 months of µs ahead of the clock
    o.redis.cli(&[
        "HSET",
        &format!("{}t", key_prefix(&o.tenant)),
        "hw",
        &mark.to_string(),
    ]);
    let (t5, _) = o.reserve_one("g", None).await;
    let (t6, _) = o.reserve_one("f2", None).await;
    assert!(
        t5 > mark && t6 > t5,
        "after a clock step back: {t5}, {t6} > {mark}"
    );
}

/// The sweeper's work follows what is due, not the number of tenants: with 300
/// idle tenants (the old layout ran two scripts per tenant per second, 600/s)
/// the whole fleet's Redis sees a few dozen calls a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_costs_nothing_per_idle_tenant() {
    let o = one(RedisServer::start()).await;
    for i in 0..300 {
        create_tenant(&o.client, &o.base, &format!("idle-{i}"), "free").await;
    }
    let total_calls = || -> u64 {
        o.redis
            .cli(&["INFO", "commandstats"])
            .lines()
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = total_calls();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let per_second = (total_calls() - before - 1) as f64 / 4.0;
    eprintln!("sweeper: {per_second:.1} Redis calls/s with 301 idle tenants");
    assert!(per_second < 120.0, "{per_second} calls/s");
}

/// A tenant missing from the due index (an instance died between its script
/// and the index update) is put back by the reconcile: its EXPIRED still comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconcile_repairs_a_lost_due_entry() {
    let o = one(RedisServer::start()).await;
    o.reserve_one("lost", Some(1)).await;
    let removed = o.redis.cli(&["ZREM", keys::DUE, &o.tenant]);
    assert_eq!(
        removed.trim(),
        "1",
        "the reserve put the tenant in the due index"
    );
    let freed = eventually(Duration::from_secs(8), || async {
        !tenant_keys(&o.redis, &o.tenant)
            .iter()
            .any(|k| k.contains(":h:"))
    })
    .await;
    assert!(freed.is_some(), "the expired hold was retired");
}

fn options(redis: &RedisServer) -> RedisOptions {
    RedisOptions {
        url: redis.url(),
        op_timeout: Duration::from_millis(500),
        events_retain: 100,
    }
}

/// An instance refuses a Redis holding another data layout — a newer version's
/// or the previous one's (recognised by its `cl:tenants` registry) — with one
/// line naming both versions; an empty Redis gets this layout recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_refuses_a_redis_with_another_data_layout() {
    let redis = RedisServer::start();
    assert!(RedisStore::connect(options(&redis)).await.is_ok());
    assert_eq!(redis.cli(&["GET", keys::LAYOUT_KEY]).trim(), "2");

    redis.cli(&["SET", keys::LAYOUT_KEY, "3"]);
    let Err(e) = RedisStore::connect(options(&redis)).await else {
        panic!("a layout-3 Redis was accepted");
    };
    let line = e.to_string();
    assert!(
        line.contains("layout 3") && line.contains("layout 2"),
        "{line}"
    );
    assert!(!line.contains('\n'), "one line: {line}");

    let old = RedisServer::start();
    old.cli(&[
        "ZADD",
        keys::LAYOUT_1_MARK,
        "0",
        "0190f5e2-7c4a-7b3e-9d1a-2f4b6c8d0e1f",
    ]);
    let Err(e) = RedisStore::connect(options(&old)).await else {
        panic!("a layout-1 Redis was accepted");
    };
    assert!(e.to_string().contains("layout 1"), "{e}");
    assert_eq!(
        old.cli(&["EXISTS", keys::LAYOUT_KEY]).trim(),
        "0",
        "nothing is written to a Redis of another layout"
    );
}

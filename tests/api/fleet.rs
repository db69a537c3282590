//! Several instances on one real Redis, and Redis faults.

use crate::helpers::{
    client, create_tenant, eventually, key_prefix, send, settings, start_instance, tenant_keys,
    RedisServer, ADMIN_TOKEN,
};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};

struct Fleet {
    redis: RedisServer,
    a: String,
    b: String,
    client: reqwest::Client,
    key: String,
    tenant: String,
}

async fn fleet() -> Fleet {
    let redis = RedisServer::start();
    let (a, _) = start_instance(settings(Some(redis.url()))).await;
    let (b, _) = start_instance(settings(Some(redis.url()))).await;
    let client = client();
    let (tenant, key) = create_tenant(&client, &a, "fleet", "pro").await;
    Fleet {
        redis,
        a,
        b,
        client,
        key,
        tenant,
    }
}

async fn reserve(
    f: &Fleet,
    base: &str,
    key: &str,
    resource: &str,
    requester: &str,
) -> crate::helpers::Reply {
    send(
        &f.client,
        Method::POST,
        format!("{base}/api/v1/Reservation/reserve"),
        Some(key),
        Some(json!([{"resource": resource, "requester": requester}])),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_made_on_one_instance_holds_on_the_other() {
    let f = fleet().await;
    let first = reserve(&f, &f.a, &f.key, "shared", "on-a").await;
    assert_eq!(first.results()[0]["status"], "RESERVED");
    let second = reserve(&f, &f.b, &f.key, "shared", "on-b").await;
    assert_eq!(second.results()[0]["status"], "ALREADY_HELD");
    assert_eq!(second.results()[0]["heldBy"], "on-a");
    let listed = send(
        &f.client,
        Method::GET,
        format!("{}/api/v1/Reservation", f.b),
        Some(&f.key),
        None,
    )
    .await;
    assert_eq!(listed.body["reservations"][0]["resource"], "shared");
    // Released through B with the token A handed out.
    let token = first.results()[0]["releaseToken"].clone();
    let u = send(
        &f.client,
        Method::POST,
        format!("{}/api/v1/Reservation/unreserve", f.b),
        Some(&f.key),
        Some(json!([{"resource":"shared","requester":"on-a","releaseToken":token}])),
    )
    .await;
    assert_eq!(u.results()[0]["status"], "UNRESERVED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_on_one_instance_is_refused_by_the_other_within_a_second() {
    let f = fleet().await;
    // Warm both instances' caches with the key.
    for base in [&f.a, &f.b] {
        let r = send(
            &f.client,
            Method::GET,
            format!("{base}/api/v1/Reservation"),
            Some(&f.key),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let keys = send(
        &f.client,
        Method::GET,
        format!("{}/api/v1/admin/tenants/{}/keys", f.a, f.tenant),
        None,
        None,
    )
    .await;
    assert_eq!(
        keys.status,
        StatusCode::UNAUTHORIZED,
        "admin needs the admin token"
    );
    let keys = f
        .client
        .get(format!("{}/api/v1/admin/tenants/{}/keys", f.a, f.tenant))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("keys");
    let keys: serde_json::Value = keys.json().await.expect("json");
    let key_id = keys["keys"][0]["id"].as_str().expect("key id").to_string();
    let rotated = f
        .client
        .post(format!(
            "{}/api/v1/admin/tenants/{}/keys/{key_id}/rotate",
            f.a, f.tenant
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("rotate");
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated_at = Instant::now();
    let new_key = rotated.json::<serde_json::Value>().await.expect("json")["key"]
        .as_str()
        .expect("new key")
        .to_string();
    let refused = eventually(Duration::from_secs(1), || async {
        send(
            &f.client,
            Method::GET,
            format!("{}/api/v1/Reservation", f.b),
            Some(&f.key),
            None,
        )
        .await
        .status
            == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(refused.is_some(), "old key still accepted by B after 1 s");
    assert!(rotated_at.elapsed() < Duration::from_millis(1500));
    let ok = send(
        &f.client,
        Method::GET,
        format!("{}/api/v1/Reservation", f.b),
        Some(&new_key),
        None,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    // And the tier change is seen by B on the next request.
    let patched = f
        .client
        .patch(format!("{}/api/v1/admin/tenants/{}", f.a, f.tenant))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"tier":"free"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(patched.status(), StatusCode::OK);
    let over = f
        .client
        .post(format!("{}/api/v1/admin/tenants/{}/keys", f.b, f.tenant))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"label":"second"}))
        .send()
        .await
        .expect("create key");
    assert_eq!(over.status(), StatusCode::FORBIDDEN, "free tier: one key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reserves_over_two_instances_grant_exactly_one() {
    let f = fleet().await;
    for round in 0..10 {
        let resource = format!("contended-{round}");
        let mut tasks = Vec::new();
        for i in 0..64 {
            let base = if i % 2 == 0 { f.a.clone() } else { f.b.clone() };
            let client = f.client.clone();
            let key = f.key.clone();
            let resource = resource.clone();
            tasks.push(tokio::spawn(async move {
                send(
                    &client,
                    Method::POST,
                    format!("{base}/api/v1/Reservation/reserve"),
                    Some(&key),
                    Some(json!([{"resource": resource, "requester": format!("c{i}")}])),
                )
                .await
            }));
        }
        let mut granted = 0;
        let mut held = 0;
        for t in tasks {
            let r = t.await.expect("task");
            assert_eq!(r.status, StatusCode::OK, "{r:?}");
            match r.results()[0]["status"].as_str() {
                Some("RESERVED") => granted += 1,
                Some("ALREADY_HELD") => held += 1,
                other => panic!("unexpected status {other:?}"),
            }
        }
        assert_eq!((granted, held), (1, 63), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_gives_503_quickly_and_the_service_recovers_by_itself() {
    let mut f = fleet().await;
    let r = reserve(&f, &f.a, &f.key, "before", "x").await;
    assert_eq!(r.results()[0]["status"], "RESERVED");

    f.redis.kill();
    let started = Instant::now();
    let down = reserve(&f, &f.a, &f.key, "during", "x").await;
    let took = started.elapsed();
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE, "{down:?}");
    assert_eq!(down.error_code(), "STORE_UNAVAILABLE");
    assert_eq!(
        down.headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert!(took < Duration::from_secs(1), "503 took {took:?}");
    let ready = f
        .client
        .get(format!("{}/readyz", f.a))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Repeated requests keep failing fast (no hang while reconnecting).
    for _ in 0..5 {
        let started = Instant::now();
        let r = reserve(&f, &f.b, &f.key, "during", "x").await;
        assert!(
            r.status == StatusCode::SERVICE_UNAVAILABLE || r.status == StatusCode::UNAUTHORIZED
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    f.redis.restart();
    // The restarted Redis is empty: create a fresh tenant once it answers.
    let recovered = eventually(Duration::from_secs(10), || async {
        f.client
            .get(format!("{}/readyz", f.a))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    assert!(recovered.is_some(), "instance A did not recover");
    // The restarted Redis lost everything: the old key is refused, not half-working.
    let stale = reserve(&f, &f.a, &f.key, "after", "x").await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED, "{stale:?}");
    let (_, key) = create_tenant(&f.client, &f.b, "after", "pro").await;
    let after = reserve(&f, &f.a, &key, "after", "x").await;
    assert_eq!(after.results()[0]["status"], "RESERVED");
    let _ = f.tenant;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_reservations_leave_nothing_behind() {
    let f = fleet().await;
    let before = tenant_keys(&f.redis, &f.tenant);
    let items: Vec<serde_json::Value> = (0..20)
        .map(|i| json!({"resource": format!("e{i}"), "requester": format!("q{}", i % 3), "ttlSeconds": 1}))
        .collect();
    let r = send(
        &f.client,
        Method::POST,
        format!("{}/api/v1/Reservation/reserve", f.a),
        Some(&f.key),
        Some(serde_json::Value::Array(items)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let holds = |keys: &[String]| keys.iter().filter(|k| k.contains(":h:")).count();
    assert_eq!(holds(&tenant_keys(&f.redis, &f.tenant)), 20);
    // No listing, no access: only the sweepers of the two instances clean up.
    // What may remain: the tenant, its keys, its event history and rate-limit
    // state (which expires by itself) — no per-resource residue at all.
    let clean = eventually(Duration::from_secs(4), || async {
        tenant_keys(&f.redis, &f.tenant)
            .iter()
            .all(|k| before.contains(k) || k.ends_with(":ev") || k.contains(":rl:"))
    })
    .await;
    assert!(
        clean.is_some(),
        "left behind: {:?}",
        tenant_keys(&f.redis, &f.tenant)
    );
    let held = f
        .redis
        .cli(&["HGET", &format!("{}t", key_prefix(&f.tenant)), "n"]);
    assert_eq!(held.trim(), "0", "the tenant's count of holds is back to 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_never_go_back_even_when_the_high_water_mark_is_lost() {
    let f = fleet().await;
    let first = reserve(&f, &f.a, &f.key, "fenced", "x").await;
    let t1 = first.results()[0]["fencingToken"].as_u64().expect("token");
    let token = first.results()[0]["releaseToken"].clone();
    send(
        &f.client,
        Method::POST,
        format!("{}/api/v1/Reservation/unreserve", f.a),
        Some(&f.key),
        Some(json!([{"resource":"fenced","requester":"x","releaseToken":token}])),
    )
    .await;
    // Simulate a Redis that lost the mark (restart without persistence): the
    // store clock in microseconds still keeps tokens rising.
    let deleted = f
        .redis
        .cli(&["HDEL", &format!("{}t", key_prefix(&f.tenant)), "hw"]);
    assert_eq!(deleted.trim(), "1");
    let second = reserve(&f, &f.b, &f.key, "fenced", "y").await;
    let t2 = second.results()[0]["fencingToken"].as_u64().expect("token");
    assert!(t2 > t1, "{t2} must exceed {t1}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_gives_503_not_a_hang() {
    let f = fleet().await;
    let r = reserve(&f, &f.a, &f.key, "before", "x").await;
    assert_eq!(r.results()[0]["status"], "RESERVED");
    let pid = f.redis.pid();
    signal(pid, "-STOP");
    let started = Instant::now();
    let paused = reserve(&f, &f.a, &f.key, "during", "x").await;
    let took = started.elapsed();
    signal(pid, "-CONT");
    assert_eq!(paused.status, StatusCode::SERVICE_UNAVAILABLE, "{paused:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let back = eventually(Duration::from_secs(5), || async {
        reserve(&f, &f.b, &f.key, "after", "x").await.status == StatusCode::OK
    })
    .await;
    assert!(back.is_some(), "service did not come back after SIGCONT");
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// Calls of one Redis command so far, from `INFO commandstats`.
fn command_calls(redis: &RedisServer, command: &str) -> u64 {
    let info = redis.cli(&["INFO", "commandstats"]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hot_path_is_one_script_call_with_authentication_from_cache() {
    let f = fleet().await;
    // Warm the cache.
    reserve(&f, &f.a, &f.key, "warm", "x").await;
    // The invalidation feed of each instance stays subscribed: no reconnect loop
    // (which would flush the cache over and over).
    let subscribes = command_calls(&f.redis, "subscribe");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        command_calls(&f.redis, "subscribe"),
        subscribes,
        "the invalidation feed keeps reconnecting"
    );
    // Authentication reads the key record with HGET (the scripts never do).
    let hgets = command_calls(&f.redis, "hget");
    let evals = command_calls(&f.redis, "evalsha");
    let sweeps = command_calls(&f.redis, "zrangebyscore");
    for i in 0..20 {
        let r = reserve(&f, &f.a, &f.key, &format!("hot-{i}"), "x").await;
        assert_eq!(r.results()[0]["status"], "RESERVED");
    }
    assert_eq!(
        command_calls(&f.redis, "hget"),
        hgets,
        "the key was read from Redis again"
    );
    // Every script call is a reserve, except the sweepers' reads (one
    // ZRANGEBYSCORE each): one round trip per request.
    let sweep_calls = command_calls(&f.redis, "zrangebyscore") - sweeps;
    assert_eq!(command_calls(&f.redis, "evalsha") - evals, 20 + sweep_calls);
}

/// The store's own conditions — out of memory, a busy script, a read-only
/// replica — are `503 STORE_UNAVAILABLE` with `Retry-After`, never a 500, and
/// the service recovers by itself once they pass (contract section 22).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_conditions_are_503_and_pass_by_themselves() {
    let f = fleet().await;
    let unavailable = |r: &crate::helpers::Reply, what: &str| {
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {r:?}");
        assert_eq!(r.error_code(), "STORE_UNAVAILABLE", "{what}");
        assert!(
            r.headers.get("retry-after").is_some(),
            "{what}: Retry-After"
        );
    };
    let ok = |r: &crate::helpers::Reply, what: &str| {
        assert_eq!(r.status, StatusCode::OK, "{what}: {r:?}");
        assert_eq!(r.results()[0]["status"], "RESERVED", "{what}");
    };

    // Out of memory (noeviction, the setting a lock store needs).
    f.redis
        .cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    f.redis.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    unavailable(&reserve(&f, &f.a, &f.key, "oom", "x").await, "OOM");
    f.redis.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    ok(&reserve(&f, &f.a, &f.key, "oom", "x").await, "after OOM");

    // A script that runs past busy-reply-threshold: BUSY to everyone else.
    f.redis
        .cli(&["CONFIG", "SET", "busy-reply-threshold", "50"]);
    let port = f.redis.port.to_string();
    let busy = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &port,
            "EVAL",
            "local t = redis.call('TIME') while (redis.call('TIME')[1] - t[1]) < 2 do end return 1",
            "0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-cli");
    tokio::time::sleep(Duration::from_millis(300)).await;
    unavailable(&reserve(&f, &f.b, &f.key, "busy", "x").await, "BUSY");
    let mut busy = busy;
    let _ = busy.wait();
    let back = eventually(Duration::from_secs(3), || async {
        reserve(&f, &f.b, &f.key, "busy", "x").await.status == StatusCode::OK
    })
    .await;
    assert!(back.is_some(), "recovers after BUSY");

    // A read-only replica (the master it follows does not exist).
    let nowhere = crate::helpers::free_port().to_string();
    f.redis.cli(&["REPLICAOF", "127.0.0.1", &nowhere]);
    unavailable(&reserve(&f, &f.a, &f.key, "ro", "x").await, "READONLY");
    f.redis.cli(&["REPLICAOF", "NO", "ONE"]);
    ok(
        &reserve(&f, &f.a, &f.key, "ro", "x").await,
        "after READONLY",
    );
}

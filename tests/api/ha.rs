//! Redis Cluster and Sentinel beyond the core suite: live events across the
//! topology, and a Sentinel failover during traffic.

use crate::events::Stream;
use crate::helpers::{spawn_app, Kind};
use crate::topologies::SentinelSet;
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_on_a_cluster_and_through_sentinel() {
    for kind in [Kind::Cluster, Kind::Sentinel] {
        let app = spawn_app(kind).await;
        let mut stream = Stream::open(&app.address, &app.api_key, "", None).await;
        let r = app
            .reserve(json!([{"requester": "ha", "resource": "ev-1"}]))
            .await;
        assert_eq!(r.results()[0]["status"], "RESERVED", "{kind:?}");
        let ev = stream
            .next(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("{kind:?}: no event"));
        assert_eq!(ev.event, "RESERVED", "{kind:?}");
        assert_eq!(ev.data["resource"], "ev-1");
        // Resume from before it: the history lives on the tenant's node.
        let mut again = Stream::open(&app.address, &app.api_key, "", Some("0-0")).await;
        let ev2 = again.next(Duration::from_secs(5)).await.expect("replayed");
        assert_eq!(ev2.id, ev.id, "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_follows_a_sentinel_failover_during_traffic() {
    let mut app = spawn_app(Kind::Sentinel).await;
    let mut set = app
        .topology
        .take()
        .expect("topology")
        .downcast::<SentinelSet>()
        .expect("a Sentinel set");
    set.wait_for_replica();
    let old_master = set.master.port;

    // One writer, reserving a new resource every 5 ms, for the whole test.
    let started = Instant::now();
    let mut confirmed_before_kill = Vec::new();
    let mut confirmed_after = Vec::new();
    let mut statuses: Vec<u16> = Vec::new();
    let mut killed_at: Option<Instant> = None;
    let mut first_failure: Option<Instant> = None;
    let mut recovered_at: Option<Instant> = None;
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(45) {
        if killed_at.is_none() && started.elapsed() > Duration::from_secs(1) {
            set.master.kill();
            killed_at = Some(Instant::now());
        }
        i += 1;
        let name = format!("fo-{i}");
        let r = app
            .reserve(json!([{"requester": "w", "resource": name}]))
            .await;
        statuses.push(r.status.as_u16());
        if r.status == StatusCode::OK {
            assert_eq!(r.results()[0]["status"], "RESERVED");
            if killed_at.is_none() {
                confirmed_before_kill.push(name);
            } else {
                if first_failure.is_some() && recovered_at.is_none() {
                    recovered_at = Some(Instant::now());
                }
                confirmed_after.push(name);
                if recovered_at.is_some() && confirmed_after.len() >= 50 {
                    break;
                }
            }
        } else {
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
            assert_eq!(r.error_code(), "STORE_UNAVAILABLE");
            first_failure.get_or_insert_with(Instant::now);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed_at = killed_at.expect("killed");
    let recovered_at = recovered_at.expect("the service recovered by itself");
    assert_ne!(
        set.current_master_port(),
        Some(old_master),
        "the replica was promoted"
    );
    assert!(
        confirmed_after.len() >= 50,
        "writes succeed after the failover"
    );

    // What the failover lost: reservations confirmed by the old master that the
    // replica had not received (Redis replicates asynchronously).
    let mut lost = 0;
    for name in &confirmed_before_kill {
        let r = app.check(json!([{"resource": name}])).await;
        if r.results()[0]["status"] != "HELD" {
            lost += 1;
        }
    }
    for name in &confirmed_after {
        let r = app.check(json!([{"resource": name}])).await;
        assert_eq!(
            r.results()[0]["status"],
            "HELD",
            "{name} confirmed after the failover"
        );
    }
    let unavailable = statuses.iter().filter(|s| **s == 503).count();
    eprintln!(
        "failover: {} confirmed before the kill ({lost} lost), {unavailable} answered 503, recovered {:?} after the kill",
        confirmed_before_kill.len(),
        recovered_at - killed_at
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
}

/// Readiness tells when this instance cannot serve: a cluster that lost a
/// master (no replicas to take over) reports `cluster_state:fail` and refuses
/// every command on every node, though the other nodes still answer `PING`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_a_failed_cluster() {
    let cluster = crate::topologies::RedisCluster::start();
    let mut s = crate::helpers::settings(Some(cluster.url()));
    s.store_timeout_ms = 500;
    let (base, _) = crate::helpers::start_instance(s).await;
    let client = crate::helpers::client();
    let ready = |client: reqwest::Client, base: String| async move {
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map(|r| r.status())
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
    };
    assert_eq!(ready(client.clone(), base.clone()).await, StatusCode::OK);
    let mut cluster = cluster;
    cluster.nodes[2].kill();
    // cluster-node-timeout is 2 s: the others mark it failed soon after.
    let unready = crate::helpers::eventually(Duration::from_secs(10), || {
        let (c, b) = (client.clone(), base.clone());
        async move { ready(c, b).await == StatusCode::SERVICE_UNAVAILABLE }
    })
    .await;
    assert!(unready.is_some(), "/readyz still 200 on a failed cluster");
    // And it stays so: not only when a ping happens to meet the dead node.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            ready(client.clone(), base.clone()).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}

/// The pub/sub connection follows a Sentinel failover even when the old master
/// stays up and answers pings (a graceful `SENTINEL FAILOVER` demotes it to a
/// replica): the subscriber moves to the master the Sentinels name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscriber_follows_the_master_when_the_old_one_stays_up() {
    use crate::topologies::{cli, MASTER_NAME};
    let mut app = spawn_app(Kind::Sentinel).await;
    let set = app
        .topology
        .take()
        .expect("topology")
        .downcast::<SentinelSet>()
        .expect("a Sentinel set");
    set.wait_for_replica();
    let pubsub_clients = |port: u16| {
        cli(port, &["CLIENT", "LIST", "TYPE", "pubsub"])
            .lines()
            // The Sentinels hold pub/sub connections of their own.
            .filter(|l| l.contains("sub=") && !l.contains("name=sentinel"))
            .count()
    };
    let old = set.master.port;
    let new = set.replica.port;
    assert_eq!(
        pubsub_clients(old),
        1,
        "the subscriber starts on the master"
    );
    let out = cli(
        set.sentinels[0].port,
        &["SENTINEL", "FAILOVER", MASTER_NAME],
    );
    assert!(out.contains("OK"), "failover: {out}");
    let promoted = crate::helpers::eventually(Duration::from_secs(15), || async {
        set.current_master_port() == Some(new)
    })
    .await;
    assert!(promoted.is_some(), "the Sentinels promote the replica");
    // Within a few seconds of the promotion — not only once the Sentinels get
    // round to disconnecting the old master's clients.
    let moved = crate::helpers::eventually(Duration::from_secs(3), || async {
        pubsub_clients(new) == 1
    })
    .await;
    assert!(
        moved.is_some(),
        "the subscriber is on the new master (old: {}, new: {})",
        pubsub_clients(old),
        pubsub_clients(new)
    );
    assert_eq!(pubsub_clients(old), 0, "and has left the old one");
    // Live events still flow.
    let mut events = Stream::open(&app.address, &app.api_key, "", None).await;
    let r = app
        .reserve(json!([{"resource":"after-failover","requester":"q"}]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let got = events.take(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].event, "RESERVED");
}

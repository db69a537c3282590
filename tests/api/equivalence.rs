//! The two stores behave the same: one random sequence of operations applied to
//! an instance on Redis and an instance on the embedded store, compared step by
//! step (release tokens differ by nature, so each side keeps its own, and the
//! sequence refers to "the token I got for this grant").

use crate::helpers::{spawn_app, Kind, TestApp};
use serde_json::{json, Value};
use std::collections::HashMap;

/// A small deterministic PRNG (xorshift), so a failure names a reproducible seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const RESOURCES: [&str; 5] = ["a", "b", "a/1", "a/2", "c"];
const REQUESTERS: [&str; 3] = ["x", "y", "z"];

/// Keeps each side's release tokens by (resource, requester) of the last grant.
#[derive(Default)]
struct Tokens(HashMap<(String, String), String>);

/// What must be equal between the stores: everything but tokens and times.
fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "releaseToken" | "reservedAt" | "expiresAt" | "fencingToken" | "nextCursor"
                    )
                })
                .map(|(k, v)| (k.clone(), normalize(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

async fn apply(app: &TestApp, tokens: &mut Tokens, op: &Value) -> Value {
    let kind = op["op"].as_str().unwrap_or("");
    let items: Vec<Value> = op["items"].as_array().cloned().unwrap_or_default();
    let with_tokens = |items: &[Value], tokens: &Tokens| -> Value {
        Value::Array(
            items
                .iter()
                .map(|it| {
                    let mut it = it.clone();
                    let key = (
                        it["resource"].as_str().unwrap_or("").to_string(),
                        it["requester"].as_str().unwrap_or("").to_string(),
                    );
                    let token = if it["useToken"] == json!(true) {
                        tokens.0.get(&key).cloned().unwrap_or_else(|| "none".into())
                    } else {
                        "wrong-token".into()
                    };
                    if let Some(m) = it.as_object_mut() {
                        m.remove("useToken");
                        m.insert("releaseToken".into(), json!(token));
                    }
                    it
                })
                .collect(),
        )
    };
    // All or nothing, or item by item (contract section 13).
    let atomic = op["atomic"] == json!(true);
    let path = |name: &str| {
        if atomic {
            format!("/api/v1/Reservation/{name}?atomic=true")
        } else {
            format!("/api/v1/Reservation/{name}")
        }
    };
    let reply = match kind {
        "reserve" => {
            app.post(&path("reserve"), Value::Array(items.clone()))
                .await
        }
        "unreserve" => {
            app.post(&path("unreserve"), with_tokens(&items, tokens))
                .await
        }
        "extend" => app.post(&path("extend"), with_tokens(&items, tokens)).await,
        "check" => app.check(Value::Array(items.clone())).await,
        "page" => {
            // One page only: whether a next page is announced must agree too.
            let q: Vec<&str> = op["query"]
                .as_str()
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.starts_with("limit=") && !p.is_empty())
                .collect();
            let q = q.join("&");
            let page = app.get(&format!("/api/v1/Reservation?{q}&limit=2")).await;
            assert_eq!(page.status.as_u16(), 200, "{op}: {page:?}");
            return json!({
                "page": page.body["reservations"],
                "more": !page.body["nextCursor"].is_null(),
            });
        }
        _ => {
            let q = op["query"].as_str().unwrap_or("");
            return json!({"list": app.list_all(q).await});
        }
    };
    assert_eq!(reply.status.as_u16(), 200, "{op}: {reply:?}");
    if kind == "reserve" {
        for r in reply.results() {
            if r["status"] == "RESERVED" {
                let key = (
                    r["resource"].as_str().unwrap_or("").to_string(),
                    r["requester"].as_str().unwrap_or("").to_string(),
                );
                tokens
                    .0
                    .insert(key, r["releaseToken"].as_str().unwrap_or("").to_string());
            }
        }
    }
    reply.body
}

fn random_op(rng: &mut Rng) -> Value {
    let n = 1 + rng.pick(3);
    let mut items = Vec::new();
    let kind = [
        "reserve",
        "reserve",
        "unreserve",
        "extend",
        "check",
        "list",
        "page",
    ][rng.pick(7)];
    for _ in 0..n {
        let resource = RESOURCES[rng.pick(RESOURCES.len())];
        let requester = REQUESTERS[rng.pick(REQUESTERS.len())];
        let mut item = match kind {
            // TTLs long enough that no expiry happens during the run.
            "reserve" if rng.pick(2) == 0 => {
                json!({"resource": resource, "requester": requester, "ttlSeconds": 600})
            }
            "reserve" => json!({"resource": resource, "requester": requester}),
            "unreserve" => {
                json!({"resource": resource, "requester": requester, "useToken": rng.pick(4) != 0})
            }
            "extend" => {
                json!({"resource": resource, "requester": requester, "useToken": rng.pick(4) != 0, "ttlSeconds": 900})
            }
            _ => json!({"resource": resource}),
        };
        // Every kind (contract section 15): exclusive half the time, else
        // shared or a semaphore of 2 or 3, so holds meet, join and mismatch.
        if kind == "reserve" {
            let extra = match rng.pick(6) {
                0 => Some(("mode", json!("shared"))),
                1 => Some(("limit", json!(2))),
                2 => Some(("limit", json!(3))),
                _ => None,
            };
            if let (Some((k, v)), Some(m)) = (extra, item.as_object_mut()) {
                m.insert(k.into(), v);
            }
        }
        items.push(item);
    }
    let queries = [
        "",
        "prefix=a",
        "requester=x",
        "requester=y&prefix=a%2F",
        "limit=2",
    ];
    let atomic = rng.pick(3) == 0;
    json!({"op": kind, "items": items, "query": queries[rng.pick(queries.len())], "atomic": atomic})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_and_embedded_stores_agree_step_by_step() {
    let redis = spawn_app(Kind::Redis).await;
    let embedded = spawn_app(Kind::Embedded).await;
    for seed in [0x9e3779b97f4a7c15u64, 42, 7_777_777, 2026] {
        let mut rng = Rng(seed);
        let (mut tr, mut te) = (Tokens::default(), Tokens::default());
        // Each seed on fresh names, so runs do not see each other.
        let prefix = format!("s{seed}-");
        for step in 0..150 {
            let mut op = random_op(&mut rng);
            if let Some(items) = op["items"].as_array_mut() {
                for it in items {
                    let r = format!("{prefix}{}", it["resource"].as_str().unwrap_or(""));
                    it["resource"] = json!(r);
                }
            }
            if let Some(q) = op["query"].as_str() {
                let q = if q.contains("prefix=") {
                    q.replace("prefix=", &format!("prefix={prefix}"))
                } else if q.is_empty() {
                    format!("prefix={prefix}")
                } else {
                    format!("{q}&prefix={prefix}")
                };
                op["query"] = json!(q);
            }
            let a = apply(&redis, &mut tr, &op).await;
            let b = apply(&embedded, &mut te, &op).await;
            assert_eq!(
                normalize(&a),
                normalize(&b),
                "seed {seed} step {step}: {op}"
            );
        }
    }
}

/// Operations of a tenant that was deleted while its credential was in flight:
/// both stores answer "tenant gone" (a 401 at the HTTP layer) for every write,
/// rather than one of them answering NOT_HELD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stores_refuse_writes_of_a_deleted_tenant_alike() {
    use cooplocker::domain::{ReleaseToken, Requester, Resource, Ttl};
    use cooplocker::store::{
        BatchMode, ExtendItem, ReleaseItem, ReserveItem, ReserveOutcome, StoreError,
    };
    let redis = crate::helpers::RedisServer::start();
    for (name, store, caller) in crate::helpers::raw_stores(&redis, "gone").await {
        let tenant_id = caller.tenant.clone();
        let resource = Resource::parse("r").expect("resource");
        let requester = Requester::parse("q").expect("requester");
        let got = store
            .reserve(
                &caller,
                &[ReserveItem {
                    resource: resource.clone(),
                    requester: requester.clone(),
                    ttl: None,
                    kind: cooplocker::domain::Kind::Exclusive,
                    warn: None,
                }],
                BatchMode::default(),
            )
            .await
            .expect("reserve");
        let ReserveOutcome::Reserved { release_token, .. } = got.value[0].clone() else {
            panic!("{name}: not reserved");
        };
        assert!(store.delete_tenant(&tenant_id).await.expect("delete"));
        let release = [ReleaseItem {
            resource: resource.clone(),
            requester: requester.clone(),
            release_token: release_token.clone(),
        }];
        let extend = [ExtendItem {
            resource: resource.clone(),
            requester: requester.clone(),
            release_token: ReleaseToken::parse(release_token.as_str()).expect("token"),
            ttl: Ttl::from_seconds(60).expect("ttl"),
            warn: None,
        }];
        let reserve = [ReserveItem {
            resource,
            requester,
            ttl: None,
            kind: cooplocker::domain::Kind::Exclusive,
            warn: None,
        }];
        assert!(
            matches!(
                store
                    .unreserve(
                        &caller,
                        &release,
                        BatchMode {
                            atomic: true,
                            wait: None
                        }
                    )
                    .await,
                Err(StoreError::TenantGone)
            ),
            "{name}: unreserve"
        );
        assert!(
            matches!(
                store
                    .extend(
                        &caller,
                        &extend,
                        BatchMode {
                            atomic: true,
                            wait: None
                        }
                    )
                    .await,
                Err(StoreError::TenantGone)
            ),
            "{name}: extend"
        );
        assert!(
            matches!(
                store
                    .reserve(
                        &caller,
                        &reserve,
                        BatchMode {
                            atomic: true,
                            wait: None
                        }
                    )
                    .await,
                Err(StoreError::TenantGone)
            ),
            "{name}: reserve"
        );
    }
}

/// Expiry warnings (contract section 18) on both stores, driven directly
/// (no sweeper runs but the test's): the same events per resource when a
/// warning falls due, is re-armed by an extend, goes with a release, and is
/// announced by a reserve that takes over a lapsed hold before its sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stores_warn_alike() {
    use cooplocker::domain::{Kind, ReleaseToken, Requester, Resource, Ttl, WarnBefore};
    use cooplocker::events::{EventId, History};
    use cooplocker::store::{BatchMode, ExtendItem, ReleaseItem, ReserveItem, ReserveOutcome};
    use std::collections::BTreeMap;
    use std::time::Duration;
    let redis = crate::helpers::RedisServer::start();
    let mut seen = Vec::new();
    for (name, store, caller) in crate::helpers::raw_stores(&redis, "warn").await {
        let item = |res: &str, ttl: Option<u64>, warn: Option<u64>, kind: Kind| {
            let ttl = ttl.map(|t| Ttl::from_seconds(t).expect("ttl"));
            ReserveItem {
                resource: Resource::parse(res).expect("resource"),
                requester: Requester::parse("q").expect("requester"),
                ttl,
                kind,
                warn: warn
                    .zip(ttl)
                    .map(|(w, t)| WarnBefore::new(w, t).expect("warn")),
            }
        };
        let batch = [
            item("a", Some(2), Some(1), Kind::Exclusive),
            item("b", Some(2), Some(1), Kind::Shared),
            item("c", Some(3), Some(1), Kind::Semaphore(2)),
            item("d", Some(2), Some(1), Kind::Exclusive),
            item("e", Some(2), Some(1), Kind::Exclusive),
            item("f", Some(2), Some(1), Kind::Shared),
        ];
        let got = store
            .reserve(&caller, &batch, BatchMode::default())
            .await
            .expect("reserve");
        let token = |i: usize| match &got.value[i] {
            ReserveOutcome::Reserved { release_token, .. } => release_token.clone(),
            other => panic!("{name}: {other:?}"),
        };
        let (q, d, e, f) = (
            Requester::parse("q").expect("requester"),
            Resource::parse("d").expect("d"),
            Resource::parse("e").expect("e"),
            Resource::parse("f").expect("f"),
        );
        // `d` released (its warning goes with it); `e` extended, keeping
        // its warning; `f` extended with a new one.
        store
            .unreserve(
                &caller,
                &[ReleaseItem {
                    resource: d,
                    requester: q.clone(),
                    release_token: token(3),
                }],
                BatchMode::default(),
            )
            .await
            .expect("unreserve");
        let four = Ttl::from_seconds(4).expect("ttl");
        store
            .extend(
                &caller,
                &[
                    ExtendItem {
                        resource: e,
                        requester: q.clone(),
                        release_token: ReleaseToken::parse(token(4).as_str()).expect("token"),
                        ttl: four,
                        warn: None,
                    },
                    ExtendItem {
                        resource: f,
                        requester: q.clone(),
                        release_token: ReleaseToken::parse(token(5).as_str()).expect("token"),
                        ttl: four,
                        warn: Some(WarnBefore::new(3, four).expect("warn")),
                    },
                ],
                BatchMode::default(),
            )
            .await
            .expect("extend");
        // Past `a`'s and `b`'s expiry with no sweep: a reserve takes them
        // over, announcing each one's EXPIRING, then EXPIRED.
        tokio::time::sleep(Duration::from_millis(2200)).await;
        store
            .reserve(
                &caller,
                &[
                    item("a", None, None, Kind::Exclusive),
                    item("b", None, None, Kind::Shared),
                ],
                BatchMode::default(),
            )
            .await
            .expect("reserve again");
        // The sweeps then announce the rest (the Redis sweep lease is 400 ms).
        for _ in 0..8 {
            store.sweep().await.expect("sweep");
            tokio::time::sleep(Duration::from_millis(450)).await;
        }
        let History::Events(events) = store
            .events_after(&caller.tenant, EventId::ZERO, 1000)
            .await
            .expect("history")
        else {
            panic!("{name}: a gap");
        };
        let mut by_resource: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
        for ev in &events {
            by_resource
                .entry(ev.resource.clone())
                .or_default()
                .push(ev.kind.as_str());
        }
        seen.push((name, by_resource));
    }
    let expected: BTreeMap<String, Vec<&'static str>> = [
        ("a", vec!["RESERVED", "EXPIRING", "EXPIRED", "RESERVED"]),
        ("b", vec!["RESERVED", "EXPIRING", "EXPIRED", "RESERVED"]),
        ("c", vec!["RESERVED", "EXPIRING", "EXPIRED"]),
        ("d", vec!["RESERVED", "UNRESERVED"]),
        ("e", vec!["RESERVED", "EXTENDED", "EXPIRING", "EXPIRED"]),
        ("f", vec!["RESERVED", "EXTENDED", "EXPIRING", "EXPIRED"]),
    ]
    .into_iter()
    .map(|(r, v)| (r.to_string(), v))
    .collect();
    for (name, by_resource) in &seen {
        assert_eq!(by_resource, &expected, "{name}");
    }
}

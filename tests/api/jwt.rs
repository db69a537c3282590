//! JWT exchange (contract section 2): real JWTs signed in the tests (HS256,
//! RS256, ES256), verified against tenant settings made through the admin API,
//! PEM keys and a JWKS served by the test on a local port; every way a JWT can
//! be wrong; what an exchanged token may do; and its revocation.

use crate::both_stores;
use crate::events::Stream;
use crate::helpers::{
    create_tenant, send, settings, spawn_app, start_instance, Kind, RedisServer, Reply, TestApp,
};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

both_stores!(
    an_exchanged_token_reserves_as_its_subject_only,
    rs256_and_es256_verify_with_a_pem_key,
    every_bad_jwt_is_refused,
    a_free_tenant_gets_tier_required,
    changing_or_removing_the_settings_revokes_tokens,
    bad_jwt_settings_are_refused_and_change_nothing,
);

const HS_SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";
const ISSUER: &str = "https://issuer.example.test";
const AUDIENCE: &str = "cooplocker-tests";
const RSA_PRIVATE: &str = include_str!("../fixtures/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../fixtures/rsa_public.pem");
const RSA2_PRIVATE: &str = include_str!("../fixtures/rsa2_private.pem");
const EC_PRIVATE: &str = include_str!("../fixtures/ec_private.pem");
const EC_PUBLIC: &str = include_str!("../fixtures/ec_public.pem");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Claims that pass every check, for `sub`.
fn claims(sub: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": now() + 3600, "iat": now()})
}

fn encoding_key(alg: Algorithm, key: &str) -> EncodingKey {
    match alg {
        Algorithm::HS256 => EncodingKey::from_secret(key.as_bytes()),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(key.as_bytes()).expect("rsa key"),
        Algorithm::ES256 => EncodingKey::from_ec_pem(key.as_bytes()).expect("ec key"),
        other => panic!("no test key for {other:?}"),
    }
}

/// A JWT signed with `key` under `alg`, with an optional `kid`.
fn sign(alg: Algorithm, key: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &encoding_key(alg, key)).expect("sign")
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// `alg: none`: a header and claims with an empty signature.
fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(claims)
    )
}

/// A JWKS on a local port, counting how often it is fetched.
struct Jwks {
    url: String,
    hits: Arc<AtomicUsize>,
}

async fn serve_jwks(keys: Vec<Jwk>) -> Jwks {
    let body = serde_json::to_string(&JwkSet { keys }).expect("jwks json");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind jwks");
    let url = format!(
        "http://127.0.0.1:{}/.well-known/jwks.json",
        listener.local_addr().expect("addr").port()
    );
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let body = body.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let res = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(res.as_bytes()).await;
            });
        }
    });
    Jwks { url, hits }
}

fn jwk(alg: Algorithm, private_pem: &str, kid: &str) -> Jwk {
    let mut k = Jwk::from_encoding_key(&encoding_key(alg, private_pem), alg).expect("jwk");
    k.common.key_id = Some(kid.to_string());
    k
}

/// An admin request by its full path.
async fn admin(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Reply {
    let path = path.strip_prefix("/api/v1/admin").unwrap_or(path);
    app.admin(method, path, body).await
}

/// Sets a tenant's JWT settings; asserts 200.
async fn configure(app: &TestApp, tenant: &str, jwt: Value) -> Reply {
    let r = admin(
        app,
        Method::PATCH,
        &format!("/api/v1/admin/tenants/{tenant}"),
        Some(json!({ "jwt": jwt })),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r
}

fn hs256_settings() -> Value {
    json!({"issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["HS256"], "hs256Secret": HS_SECRET})
}

async fn exchange(app: &TestApp, body: Value) -> Reply {
    send(
        &app.client,
        Method::POST,
        app.url("/api/v1/auth/token"),
        None,
        Some(body),
    )
    .await
}

/// Exchanges a JWT naming the app's tenant; asserts 200 and returns the token.
async fn token_for(app: &TestApp, jwt: &str) -> String {
    let r = exchange(app, json!({"jwt": jwt, "tenant": app.tenant_id})).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r.body["token"].as_str().expect("token").to_string()
}

async fn an_exchanged_token_reserves_as_its_subject_only(app: TestApp) {
    let view = configure(&app, &app.tenant_id, hs256_settings()).await;
    // The secret is never shown back.
    assert!(!view.body.to_string().contains(HS_SECRET), "{view:?}");
    assert_eq!(view.body["jwt"]["issuer"], ISSUER);
    assert_eq!(view.body["jwt"]["algorithms"], json!(["HS256"]));
    let got = admin(
        &app,
        Method::GET,
        &format!("/api/v1/admin/tenants/{}", app.tenant_id),
        None,
    )
    .await;
    assert!(!got.body.to_string().contains(HS_SECRET), "{got:?}");

    let jwt = sign(Algorithm::HS256, HS_SECRET, None, &claims("alice"));
    let r = exchange(&app, json!({"jwt": jwt, "tenant": app.tenant_id})).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["tenant"], app.tenant_id.as_str());
    assert_eq!(r.body["subject"], "alice");
    let token = r.body["token"].as_str().expect("token").to_string();
    // Default lifetime: 15 minutes.
    let expires = chrono::DateTime::parse_from_rfc3339(r.body["expiresAt"].as_str().expect("at"))
        .expect("rfc3339")
        .timestamp() as u64;
    assert!(
        (now() + 900 - 5..=now() + 900 + 5).contains(&expires),
        "expiresAt {expires}, now {}",
        now()
    );
    // Without naming the tenant: found by the JWT's issuer.
    let r = exchange(&app, json!({"jwt": jwt})).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");

    // Events of the token's requests carry jwt:<sub>.
    let mut events = Stream::open(&app.address, &token, "", None).await;
    let r = app
        .post_as(
            &token,
            "/api/v1/Reservation/reserve",
            json!([{"requester": "alice", "resource": "r1", "ttlSeconds": 60}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.results()[0]["status"], "RESERVED");
    assert!(r.headers.contains_key("ratelimit-limit"), "{r:?}");
    let release = r.results()[0]["releaseToken"]
        .as_str()
        .expect("token")
        .to_string();
    let ev = events.next(Duration::from_secs(5)).await.expect("event");
    assert_eq!(ev.event, "RESERVED");
    assert_eq!(ev.data["apiKeyLabel"], "jwt:alice");
    assert_eq!(ev.data["requester"], "alice");

    // Any item for another requester refuses the whole request.
    for (path, body) in [
        (
            "/api/v1/Reservation/reserve",
            json!([{"requester": "alice", "resource": "r2"}, {"requester": "bob", "resource": "r3"}]),
        ),
        (
            "/api/v1/Reservation/unreserve",
            json!([{"requester": "bob", "resource": "r1", "releaseToken": release}]),
        ),
        (
            "/api/v1/Reservation/extend",
            json!([{"requester": "bob", "resource": "r1", "releaseToken": release, "ttlSeconds": 60}]),
        ),
    ] {
        let r = app.post_as(&token, path, body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {r:?}");
        assert_eq!(r.error_code(), "FORBIDDEN");
    }
    assert_eq!(app.check_status("r2").await, "FREE", "nothing was reserved");
    assert_eq!(app.check_status("r1").await, "HELD");

    // Reads are tenant-wide: a reservation by an API key is visible.
    app.reserve_one("by-key", "bob", None).await;
    let r = app
        .post_as(
            &token,
            "/api/v1/Reservation/check",
            json!([{"resource": "by-key"}]),
        )
        .await;
    assert_eq!(r.results()[0]["status"], "HELD", "{r:?}");
    let r = app
        .get_as(&token, "/api/v1/Reservation?requester=alice")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["reservations"][0]["apiKeyLabel"], "jwt:alice");

    // Its own reservation it may extend and release.
    let r = app
        .post_as(
            &token,
            "/api/v1/Reservation/unreserve",
            json!([{"requester": "alice", "resource": "r1", "releaseToken": release}]),
        )
        .await;
    assert_eq!(r.results()[0]["status"], "UNRESERVED", "{r:?}");

    // Locklock locks need an API key.
    let r = app
        .post_as(
            &token,
            "/v1/api/lock/uuid/180da65c-cf80-4997-8574-0c0801817d6f",
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
}

async fn rs256_and_es256_verify_with_a_pem_key(app: TestApp) {
    let (es_tenant, _) = create_tenant(&app.client, &app.address, "es", "starter").await;
    configure(
        &app,
        &app.tenant_id,
        json!({"issuer": ISSUER, "audience": AUDIENCE, "publicKeyPem": RSA_PUBLIC}),
    )
    .await;
    let view = configure(
        &app,
        &es_tenant,
        json!({"issuer": "https://es.example.test", "audience": AUDIENCE, "algorithms": ["ES256"], "publicKeyPem": EC_PUBLIC}),
    )
    .await;
    assert_eq!(view.body["jwt"]["algorithms"], json!(["ES256"]));

    let rs = sign(Algorithm::RS256, RSA_PRIVATE, None, &claims("rsa-user"));
    let r = exchange(&app, json!({"jwt": rs})).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["tenant"], app.tenant_id.as_str());

    let mut c = claims("ec-user");
    c["iss"] = json!("https://es.example.test");
    let es = sign(Algorithm::ES256, EC_PRIVATE, None, &c);
    let r = exchange(&app, json!({"jwt": es})).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["tenant"], es_tenant.as_str());
    assert_eq!(r.body["subject"], "ec-user");
    let token = r.body["token"].as_str().expect("token");
    let r = app
        .post_as(
            token,
            "/api/v1/Reservation/reserve",
            json!([{"requester": "ec-user", "resource": "x"}]),
        )
        .await;
    assert_eq!(r.results()[0]["status"], "RESERVED", "{r:?}");
}

/// Asserts a 401 with the contract's error body.
fn unauthorized(r: &Reply, case: &str) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{case}: {r:?}");
    assert_eq!(r.error_code(), "UNAUTHORIZED", "{case}");
}

async fn every_bad_jwt_is_refused(app: TestApp) {
    let (rs_tenant, _) = create_tenant(&app.client, &app.address, "rs", "pro").await;
    configure(&app, &app.tenant_id, hs256_settings()).await;
    configure(
        &app,
        &rs_tenant,
        json!({"issuer": "https://rs.example.test", "audience": AUDIENCE, "publicKeyPem": RSA_PUBLIC}),
    )
    .await;
    let hs = |c: &Value| sign(Algorithm::HS256, HS_SECRET, None, c);
    let with = |k: &str, v: Value| {
        let mut c = claims("alice");
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = claims("alice");
        c.as_object_mut().expect("object").remove(k);
        c
    };
    let mut rs_claims = claims("alice");
    rs_claims["iss"] = json!("https://rs.example.test");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            hs(&with("exp", json!(now() - 120))),
            &app.tenant_id,
        ),
        (
            "not yet valid",
            hs(&with("nbf", json!(now() + 300))),
            &app.tenant_id,
        ),
        (
            "wrong issuer",
            hs(&with("iss", json!("https://evil.example"))),
            &app.tenant_id,
        ),
        (
            "wrong audience",
            hs(&with("aud", json!("someone-else"))),
            &app.tenant_id,
        ),
        ("no exp", hs(&without("exp")), &app.tenant_id),
        ("no sub", hs(&without("sub")), &app.tenant_id),
        ("no aud", hs(&without("aud")), &app.tenant_id),
        ("alg none", unsigned(&claims("alice")), &app.tenant_id),
        ("alg none, RS tenant", unsigned(&rs_claims), &rs_tenant),
        (
            "bad signature (another secret)",
            sign(
                Algorithm::HS256,
                "another-secret-of-at-least-32-bytes!!",
                None,
                &claims("alice"),
            ),
            &app.tenant_id,
        ),
        (
            "HS256 signed with the tenant's RSA public key",
            sign(Algorithm::HS256, RSA_PUBLIC, None, &rs_claims),
            &rs_tenant,
        ),
        (
            "RS256 by another key",
            sign(Algorithm::RS256, RSA2_PRIVATE, None, &rs_claims),
            &rs_tenant,
        ),
        (
            "RS256 at an HS256 tenant",
            sign(Algorithm::RS256, RSA_PRIVATE, None, &claims("alice")),
            &app.tenant_id,
        ),
        (
            "not a JWT",
            "eyJhbGciOiJIUzI1NiJ9.garbage".to_string(),
            &app.tenant_id,
        ),
        (
            "a tampered payload",
            {
                let good = hs(&claims("alice"));
                let parts: Vec<&str> = good.split('.').collect();
                format!("{}.{}.{}", parts[0], b64(&claims("mallory")), parts[2])
            },
            &app.tenant_id,
        ),
    ];
    for (case, jwt, tenant) in &cases {
        let r = exchange(&app, json!({"jwt": jwt, "tenant": tenant})).await;
        unauthorized(&r, case);
    }
    // An issuer nobody trusts, an unknown tenant, a tenant without settings.
    let r = exchange(
        &app,
        json!({"jwt": hs(&with("iss", json!("https://nobody.example")))}),
    )
    .await;
    unauthorized(&r, "unknown issuer");
    let r = exchange(
        &app,
        json!({"jwt": hs(&claims("alice")), "tenant": "01890000-0000-7000-8000-000000000000"}),
    )
    .await;
    unauthorized(&r, "unknown tenant");
    let (plain, _) = create_tenant(&app.client, &app.address, "plain", "pro").await;
    let r = exchange(&app, json!({"jwt": hs(&claims("alice")), "tenant": plain})).await;
    unauthorized(&r, "tenant without settings");
    // A bad body is a 400, not a 401.
    for body in [
        json!({}),
        json!({"jwt": 5}),
        json!({"jwt": "x", "extra": 1}),
        json!({"jwt": "x", "tenant": "not-an-id"}),
        json!({"jwt": "x".repeat(9000)}),
    ] {
        let r = exchange(&app, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {r:?}");
        assert_eq!(r.error_code(), "INVALID_REQUEST");
    }
    // The requester check: a token for alice cannot reserve as bob.
    let token = token_for(&app, &hs(&claims("alice"))).await;
    let r = app
        .post_as(
            &token,
            "/api/v1/Reservation/reserve",
            json!([{"requester": "bob", "resource": "x"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    // A token is not a key: garbage in its shape is a 401.
    let r = app
        .post_as(
            &format!("{token}x"),
            "/api/v1/Reservation/check",
            json!([{"resource": "x"}]),
        )
        .await;
    unauthorized(&r, "tampered token");
}

async fn a_free_tenant_gets_tier_required(app: TestApp) {
    let (free, _) = create_tenant(&app.client, &app.address, "free", "free").await;
    let mut c = claims("alice");
    c["iss"] = json!("https://free.example.test");
    let mut settings = hs256_settings();
    settings["issuer"] = json!("https://free.example.test");
    configure(&app, &free, settings).await;
    let jwt = sign(Algorithm::HS256, HS_SECRET, None, &c);
    let r = exchange(&app, json!({"jwt": jwt, "tenant": free})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert_eq!(r.error_code(), "TIER_REQUIRED");

    // A token of a tenant moved down to free stops working the same way.
    configure(&app, &app.tenant_id, hs256_settings()).await;
    let token = token_for(
        &app,
        &sign(Algorithm::HS256, HS_SECRET, None, &claims("alice")),
    )
    .await;
    let r = admin(
        &app,
        Method::PATCH,
        &format!("/api/v1/admin/tenants/{}", app.tenant_id),
        Some(json!({"tier": "free"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .post_as(
            &token,
            "/api/v1/Reservation/check",
            json!([{"resource": "x"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert_eq!(r.error_code(), "TIER_REQUIRED");
}

async fn changing_or_removing_the_settings_revokes_tokens(app: TestApp) {
    configure(&app, &app.tenant_id, hs256_settings()).await;
    let jwt = sign(Algorithm::HS256, HS_SECRET, None, &claims("alice"));
    let check = |token: String| {
        let app = &app;
        async move {
            app.post_as(
                &token,
                "/api/v1/Reservation/check",
                json!([{"resource": "x"}]),
            )
            .await
            .status
        }
    };
    let token = token_for(&app, &jwt).await;
    assert_eq!(check(token.clone()).await, StatusCode::OK);
    // New audience: old tokens are refused.
    let mut changed = hs256_settings();
    changed["audience"] = json!("another-audience");
    configure(&app, &app.tenant_id, changed).await;
    assert_eq!(check(token).await, StatusCode::UNAUTHORIZED);
    // Settings removed: exchange and tokens refused.
    configure(&app, &app.tenant_id, hs256_settings()).await;
    let token = token_for(&app, &jwt).await;
    let r = configure(&app, &app.tenant_id, Value::Null).await;
    assert_eq!(r.body["jwt"], Value::Null);
    assert_eq!(check(token).await, StatusCode::UNAUTHORIZED);
    let r = exchange(&app, json!({"jwt": jwt, "tenant": app.tenant_id})).await;
    unauthorized(&r, "settings removed");
    // Tenant deleted: its token is refused.
    configure(&app, &app.tenant_id, hs256_settings()).await;
    let token = token_for(&app, &jwt).await;
    let r = admin(
        &app,
        Method::DELETE,
        &format!("/api/v1/admin/tenants/{}", app.tenant_id),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(check(token).await, StatusCode::UNAUTHORIZED);
    let r = exchange(&app, json!({"jwt": jwt})).await;
    unauthorized(&r, "tenant deleted");
}

async fn bad_jwt_settings_are_refused_and_change_nothing(app: TestApp) {
    let path = format!("/api/v1/admin/tenants/{}", app.tenant_id);
    let base = |extra: Value| {
        let mut v = json!({"issuer": ISSUER, "audience": AUDIENCE});
        for (k, x) in extra.as_object().expect("object") {
            v[k] = x.clone();
        }
        v
    };
    let cases = [
        (base(json!({"hs256Secret": "short"})), "jwt.hs256Secret"),
        (
            base(json!({"hs256Secret": HS_SECRET, "publicKeyPem": RSA_PUBLIC})),
            "jwt.hs256Secret",
        ),
        (base(json!({})), "jwt.hs256Secret"),
        (
            base(json!({"hs256Secret": HS_SECRET, "algorithms": ["none"]})),
            "jwt.algorithms",
        ),
        (
            base(json!({"hs256Secret": HS_SECRET, "algorithms": ["RS256"]})),
            "jwt.algorithms",
        ),
        (
            base(json!({"publicKeyPem": RSA_PUBLIC, "algorithms": ["HS256"]})),
            "jwt.algorithms",
        ),
        (
            base(json!({"publicKeyPem": RSA_PUBLIC, "algorithms": ["ES256"]})),
            "jwt.algorithms",
        ),
        (
            base(
                json!({"publicKeyPem": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"}),
            ),
            "jwt.publicKeyPem",
        ),
        (
            base(json!({"publicKeyPem": RSA_PRIVATE})),
            "jwt.publicKeyPem",
        ),
        (
            base(json!({"jwksUrl": "http://example.com/jwks.json"})),
            "jwt.jwksUrl",
        ),
        (base(json!({"jwksUrl": "ftp://x/y"})), "jwt.jwksUrl"),
        (
            base(json!({"jwksUrl": "https://user:pw@example.com/jwks"})),
            "jwt.jwksUrl",
        ),
        (
            base(json!({"jwksUrl": "https://example.com/jwks", "algorithms": ["HS256"]})),
            "jwt.algorithms",
        ),
        (
            json!({"audience": AUDIENCE, "hs256Secret": HS_SECRET}),
            "jwt.issuer",
        ),
        (
            base(json!({"hs256Secret": HS_SECRET, "kid": "x"})),
            "jwt.kid",
        ),
        (json!("HS256"), "jwt"),
    ];
    for (jwt, field) in cases {
        let r = admin(&app, Method::PATCH, &path, Some(json!({ "jwt": jwt }))).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{jwt}: {r:?}");
        assert_eq!(r.error_code(), "INVALID_REQUEST");
        let fields: Vec<&str> = r.body["error"]["details"]
            .as_array()
            .expect("details")
            .iter()
            .filter_map(|d| d["field"].as_str())
            .collect();
        assert!(
            fields.contains(&field),
            "{jwt}: expected {field} in {fields:?}"
        );
    }
    // A repeated field inside jwt is refused too (the raw body, since a JSON
    // value would keep only the last).
    let raw = format!(
        r#"{{"jwt":{{"issuer":"{ISSUER}","issuer":"x","audience":"{AUDIENCE}","hs256Secret":"{HS_SECRET}"}}}}"#
    );
    let res = app
        .client
        .patch(app.url(&path))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let got = admin(&app, Method::GET, &path, None).await;
    assert_eq!(got.body["jwt"], Value::Null, "nothing changed: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_verifies_by_kid_and_is_refetched_at_a_bounded_rate() {
    let jwks = serve_jwks(vec![
        jwk(Algorithm::RS256, RSA_PRIVATE, "rsa-1"),
        jwk(Algorithm::ES256, EC_PRIVATE, "ec-1"),
    ])
    .await;
    let app = spawn_app(Kind::Redis).await;
    configure(
        &app,
        &app.tenant_id,
        json!({"issuer": ISSUER, "audience": AUDIENCE, "jwksUrl": jwks.url}),
    )
    .await;
    let rs = sign(
        Algorithm::RS256,
        RSA_PRIVATE,
        Some("rsa-1"),
        &claims("alice"),
    );
    let es = sign(Algorithm::ES256, EC_PRIVATE, Some("ec-1"), &claims("bob"));
    let r = exchange(&app, json!({"jwt": rs})).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let r = exchange(&app, json!({"jwt": es})).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["subject"], "bob");
    assert_eq!(
        jwks.hits.load(Ordering::SeqCst),
        1,
        "fetched once, then cached"
    );

    // The right key under a kid the JWKS does not have, a key the JWKS does not
    // have under a kid it has, and a kid that is a URL: all refused, and the
    // unknown kids cost at most one refetch (bounded rate), never a fetch
    // elsewhere.
    for (case, jwt) in [
        (
            "unknown kid",
            sign(
                Algorithm::RS256,
                RSA_PRIVATE,
                Some("rsa-9"),
                &claims("alice"),
            ),
        ),
        (
            "wrong key under a known kid",
            sign(
                Algorithm::RS256,
                RSA2_PRIVATE,
                Some("rsa-1"),
                &claims("alice"),
            ),
        ),
        (
            "kid as a URL",
            sign(
                Algorithm::RS256,
                RSA2_PRIVATE,
                Some("http://127.0.0.1:1/k"),
                &claims("alice"),
            ),
        ),
        (
            "kid of the other family",
            sign(
                Algorithm::RS256,
                RSA_PRIVATE,
                Some("ec-1"),
                &claims("alice"),
            ),
        ),
    ] {
        for _ in 0..3 {
            let r = exchange(&app, json!({"jwt": jwt, "tenant": app.tenant_id})).await;
            unauthorized(&r, case);
        }
    }
    let hits = jwks.hits.load(Ordering::SeqCst);
    assert!(hits <= 2, "JWKS fetched {hits} times for 12 bad tokens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_work_on_every_instance_and_survive_key_rotation() {
    let redis = RedisServer::start();
    // A and B share the generated key in Redis.
    let (a, _) = start_instance(settings(Some(redis.url()))).await;
    let (b, _) = start_instance(settings(Some(redis.url()))).await;
    // C signs with a configured new key and still accepts the old one... if it
    // is configured; D has only the new key.
    let client = crate::helpers::client();
    let (tenant, _) = create_tenant(&client, &a, "fleet-jwt", "starter").await;
    let app = TestApp {
        address: a.clone(),
        api_key: String::new(),
        tenant_id: tenant.clone(),
        client: client.clone(),
        redis: None,
        topology: None,
    };
    configure(&app, &tenant, hs256_settings()).await;
    let jwt = sign(Algorithm::HS256, HS_SECRET, None, &claims("alice"));
    let token_a = token_for(&app, &jwt).await;
    let use_on = |base: String, token: String| {
        let client = client.clone();
        async move {
            send(
                &client,
                Method::POST,
                format!("{base}/api/v1/Reservation/check"),
                Some(&token),
                Some(json!([{"resource": "x"}])),
            )
            .await
            .status
        }
    };
    assert_eq!(use_on(b.clone(), token_a.clone()).await, StatusCode::OK);

    let old = redis
        .cli(&["GET", cooplocker::store::redis::keys::TOKEN_SECRET])
        .trim()
        .to_string();
    assert_eq!(old.len(), 64, "a generated key is kept in Redis");
    let new_key = "a-newly-configured-token-key-0123456789";
    let mut s = settings(Some(redis.url()));
    s.token_secret = Some(cooplocker::config::TokenSecrets(vec![
        new_key.to_string(),
        old.clone(),
    ]));
    let (c, _) = start_instance(s).await;
    let mut s = settings(Some(redis.url()));
    s.token_secret = Some(cooplocker::config::TokenSecrets(vec![new_key.to_string()]));
    let (d, _) = start_instance(s).await;
    // Rotation step: C accepts old tokens and signs new ones.
    assert_eq!(use_on(c.clone(), token_a.clone()).await, StatusCode::OK);
    let app_c = TestApp {
        address: c.clone(),
        ..app
    };
    let token_c = token_for(&app_c, &jwt).await;
    assert_eq!(use_on(d.clone(), token_c).await, StatusCode::OK);
    // After the old key is dropped, its tokens are refused.
    assert_eq!(use_on(d, token_a).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_costs_no_store_read_per_request() {
    let app = spawn_app(Kind::Redis).await;
    let redis = app.redis.as_ref().expect("redis");
    configure(&app, &app.tenant_id, hs256_settings()).await;
    let token = token_for(
        &app,
        &sign(Algorithm::HS256, HS_SECRET, None, &claims("alice")),
    )
    .await;
    // Warm the tenant cache (and load the script).
    let r = app
        .post_as(
            &token,
            "/api/v1/Reservation/reserve",
            json!([{"requester": "alice", "resource": "warm"}]),
        )
        .await;
    assert_eq!(r.results()[0]["status"], "RESERVED");
    redis.cli(&["CONFIG", "RESETSTAT"]);
    for i in 0..10 {
        let r = app
            .post_as(
                &token,
                "/api/v1/Reservation/reserve",
                json!([{"requester": "alice", "resource": format!("hot-{i}")}]),
            )
            .await;
        assert_eq!(r.results()[0]["status"], "RESERVED");
    }
    let info = redis.cli(&["INFO", "commandstats"]);
    let calls = |cmd: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    // (Commands that scripts run count too: the rate limit's GET and SET are
    // inside the one EVALSHA.)
    for read in ["hgetall", "hget"] {
        assert_eq!(calls(read), 0, "{read} on the hot path:\n{info}");
    }
    let sweeps = calls("zrangebyscore");
    assert_eq!(calls("evalsha"), 10 + sweeps, "{info}");
}

/// A JWKS host that accepts connections, reads the request and never answers
/// (until the verifier's own timeout gives up on it).
async fn stalling_jwks() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind stalling jwks");
    let url = format!(
        "http://127.0.0.1:{}/.well-known/jwks.json",
        listener.local_addr().expect("addr").port()
    );
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            // Bounded: the test makes one or two requests.
            if held.len() < 16 {
                held.push(sock);
            }
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_jwks_host_does_not_delay_other_tenants() {
    // Arrange: tenant A's JWKS host stalls; tenant B's answers at once.
    let good = serve_jwks(vec![jwk(Algorithm::RS256, RSA_PRIVATE, "rsa-1")]).await;
    let stall = stalling_jwks().await;
    let app = spawn_app(Kind::Embedded).await;
    let (slow_tenant, _) = create_tenant(&app.client, &app.address, "slow-jwks", "pro").await;
    configure(
        &app,
        &slow_tenant,
        json!({"issuer": ISSUER, "audience": AUDIENCE, "jwksUrl": stall}),
    )
    .await;
    configure(
        &app,
        &app.tenant_id,
        json!({"issuer": ISSUER, "audience": AUDIENCE, "jwksUrl": good.url}),
    )
    .await;
    let jwt = sign(
        Algorithm::RS256,
        RSA_PRIVATE,
        Some("rsa-1"),
        &claims("alice"),
    );

    // Act: A's first exchange waits on its host; B's starts meanwhile.
    let slow = {
        let (client, url, jwt) = (
            app.client.clone(),
            app.url("/api/v1/auth/token"),
            jwt.clone(),
        );
        let tenant = slow_tenant.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"jwt": jwt, "tenant": tenant}))
                .send()
                .await
                .map(|r| r.status())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let r = exchange(&app, json!({"jwt": jwt, "tenant": app.tenant_id})).await;
    let took = started.elapsed();

    // Assert: B is served at once, while A is still waiting.
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(
        took < Duration::from_secs(1),
        "tenant B's exchange waited {took:?} behind tenant A's stalled JWKS host"
    );
    assert!(!slow.is_finished(), "tenant A's exchange is still waiting");
    slow.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_key_lost_by_redis_is_reread_and_both_instances_agree_again() {
    // Arrange: A starts, mints with the generated key; Redis then loses it and
    // B, started later, generates another.
    let redis = RedisServer::start();
    let (a, _) = start_instance(settings(Some(redis.url()))).await;
    let client = crate::helpers::client();
    let (tenant, _) = create_tenant(&client, &a, "lost-key", "starter").await;
    let app_a = TestApp {
        address: a.clone(),
        api_key: String::new(),
        tenant_id: tenant.clone(),
        client: client.clone(),
        redis: None,
        topology: None,
    };
    configure(&app_a, &tenant, hs256_settings()).await;
    let jwt = sign(Algorithm::HS256, HS_SECRET, None, &claims("alice"));
    let first_a = token_for(&app_a, &jwt).await;
    let old = redis
        .cli(&["GET", cooplocker::store::redis::keys::TOKEN_SECRET])
        .trim()
        .to_string();
    assert_eq!(old.len(), 64, "a generated key is kept in Redis");
    redis.cli(&["DEL", cooplocker::store::redis::keys::TOKEN_SECRET]);
    let (b, _) = start_instance(settings(Some(redis.url()))).await;
    let app_b = TestApp {
        address: b.clone(),
        ..app_a
    };
    let from_b = token_for(&app_b, &jwt).await;
    let new = redis
        .cli(&["GET", cooplocker::store::redis::keys::TOKEN_SECRET])
        .trim()
        .to_string();
    assert_ne!(new, old, "B generated another key");
    let use_on = |base: String, token: String| {
        let client = client.clone();
        async move {
            send(
                &client,
                Method::POST,
                format!("{base}/api/v1/Reservation/check"),
                Some(&token),
                Some(json!([{"resource": "x"}])),
            )
            .await
            .status
        }
    };

    // Act + Assert: A accepts B's token after one re-read of the key...
    assert_eq!(use_on(a.clone(), from_b.clone()).await, StatusCode::OK);
    // ...keeps accepting its own earlier tokens...
    assert_eq!(use_on(a.clone(), first_a).await, StatusCode::OK);
    // ...and from then on mints with the fleet's key, which B accepts.
    let app_a = TestApp {
        address: a.clone(),
        ..app_b
    };
    let later_a = token_for(&app_a, &jwt).await;
    assert_eq!(use_on(b.clone(), later_a).await, StatusCode::OK);
    assert_eq!(use_on(b, from_b).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_opened_with_a_token_ends_when_the_token_expires() {
    // Arrange: a token that lives three seconds (it never outlives its JWT).
    let app = spawn_app(Kind::Embedded).await;
    configure(&app, &app.tenant_id, hs256_settings()).await;
    let mut short = claims("alice");
    short["exp"] = json!(now() + 3);
    let jwt = sign(Algorithm::HS256, HS_SECRET, None, &short);
    let r = exchange(&app, json!({"jwt": jwt, "tenant": app.tenant_id})).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let token = r.body["token"].as_str().expect("token").to_string();
    let expires = chrono::DateTime::parse_from_rfc3339(r.body["expiresAt"].as_str().expect("at"))
        .expect("RFC 3339")
        .timestamp_millis();

    // Act: follow the stream until it ends.
    let mut s = Stream::open(&app.address, &token, "", None).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while !s.ended && std::time::Instant::now() < deadline {
        s.next(Duration::from_millis(100)).await;
    }
    let ended_at = chrono::Utc::now().timestamp_millis();

    // Assert: it ended within 1 s of the expiry, not before it.
    assert!(s.ended, "the stream outlived its token");
    assert!(
        ended_at >= expires - 200 && ended_at <= expires + 1000,
        "ended {} ms after the token's expiry",
        ended_at - expires
    );
    let res = Stream::request(&app.address, &token, "", None).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

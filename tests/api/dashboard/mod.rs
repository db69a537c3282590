//! The dashboard: OpenID Connect sign-in against a real (test) provider on
//! loopback, sessions across instances, CSRF, keys, and the separation of
//! dashboard sessions from API keys. `e2e.rs` drives it in headless Chromium.

mod data;
mod e2e;
pub mod provider;

use crate::helpers::{spawn_app_with, start_instance, Kind, TestApp};
use provider::{Knobs, Provider, CLIENT_ID, CLIENT_SECRET};
use reqwest::StatusCode;
use std::collections::HashMap;

/// A browser stand-in: no automatic redirects, a cookie jar by name.
pub struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
    pub set_cookies: Vec<String>,
}

impl Browser {
    pub fn new() -> Self {
        cooplocker::tokens::init_crypto().expect("crypto");
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .expect("client"),
            cookies: HashMap::new(),
        }
    }

    async fn take(&mut self, res: reqwest::Response) -> Page {
        let status = res.status();
        let location = res
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut set_cookies = Vec::new();
        for v in res.headers().get_all("set-cookie") {
            let text = v.to_str().unwrap_or_default().to_string();
            if let Some((name, rest)) = text.split_once('=') {
                let value = rest.split(';').next().unwrap_or_default().to_string();
                if value.is_empty() || text.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_string(), value);
                }
            }
            set_cookies.push(text);
        }
        Page {
            status,
            location,
            body: res.text().await.unwrap_or_default(),
            set_cookies,
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn get(&mut self, url: &str) -> Page {
        let res = self
            .http
            .get(url)
            .header("Cookie", self.cookie_header())
            .send()
            .await
            .expect("get");
        self.take(res).await
    }

    pub async fn post(&mut self, url: &str, form: &[(&str, &str)], origin: Option<&str>) -> Page {
        let mut req = self
            .http
            .post(url)
            .header("Cookie", self.cookie_header())
            .form(form);
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        let res = req.send().await.expect("post");
        self.take(res).await
    }
}

/// An instance on Redis with the test provider configured.
pub async fn app_with_provider(provider: &Provider) -> TestApp {
    app_with_provider_and(provider, |_| {}).await
}

/// The same, with more settings changed by `more`.
pub async fn app_with_provider_and(
    provider: &Provider,
    more: impl FnOnce(&mut cooplocker::config::Settings),
) -> TestApp {
    let issuer = provider.issuer.clone();
    spawn_app_with(Kind::Redis, move |s| {
        s.oidc_issuer = Some(issuer);
        s.oidc_client_id = Some(CLIENT_ID.into());
        s.oidc_client_secret = Some(CLIENT_SECRET.into());
        s.cookie_secure = false;
        more(s);
    })
    .await
}

/// The whole code flow through the browser stand-in; returns the callback's page.
pub async fn sign_in(base: &str, b: &mut Browser) -> Page {
    let start = b.get(&format!("{base}/dashboard/login/start")).await;
    assert_eq!(start.status, StatusCode::FOUND, "{}", start.body);
    let at_provider = start.location.expect("to the provider");
    assert!(
        at_provider.contains("code_challenge_method=S256"),
        "{at_provider}"
    );
    assert!(start
        .set_cookies
        .iter()
        .any(|c| c.starts_with("cl_signin=") && c.contains("HttpOnly")));
    let back = b.get(&at_provider).await;
    assert_eq!(back.status, StatusCode::FOUND, "provider: {}", back.body);
    let callback = back.location.expect("back to the dashboard");
    assert!(
        callback.starts_with(&format!("{base}/dashboard/callback")),
        "{callback}"
    );
    b.get(&callback).await
}

/// The API key shown on a page (`ck_...`).
pub fn shown_key(body: &str) -> Option<String> {
    let i = body.find("id=\"secret\"")?;
    let rest = &body[i..];
    let start = rest.find("ck_")?;
    let key: String = rest[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    Some(key)
}

fn csrf_of(body: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let i = body.find(marker).expect("a csrf field") + marker.len();
    body[i..].chars().take_while(|c| *c != '"').collect()
}

async fn api_status(app: &TestApp, key: &str) -> StatusCode {
    app.client
        .get(app.url("/api/v1/Reservation"))
        .header("X-Api-Key", key)
        .send()
        .await
        .expect("api")
        .status()
}

#[tokio::test]
async fn first_sign_in_creates_a_free_tenant_and_shows_its_key_at_once() {
    let provider = Provider::start().await;
    let app = app_with_provider(&provider).await;
    let mut b = Browser::new();
    let page = sign_in(&app.address, &mut b).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let key = shown_key(&page.body).expect("the key is on the page");
    let session = page
        .set_cookies
        .iter()
        .find(|c| c.starts_with("cl_session="))
        .expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/dashboard"] {
        assert!(session.contains(attr), "{session}");
    }
    assert!(
        !session.contains("Secure"),
        "COOPLOCKER_COOKIE_SECURE=false: {session}"
    );
    // The key works on the API at once; the tenant is free tier.
    assert_eq!(api_status(&app, &key).await, StatusCode::OK);
    let plan = b.get(&app.url("/dashboard/plan")).await;
    assert!(
        plan.body.contains("<dd id=\"tier\">free</dd>"),
        "{}",
        plan.body
    );

    // A second sign-in of the same identity lands on the keys page: no new key.
    let mut again = Browser::new();
    let page = sign_in(&app.address, &mut again).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location.as_deref(), Some("/dashboard/keys"));
    let keys = again.get(&app.url("/dashboard/keys")).await;
    assert_eq!(keys.body.matches("data-key=").count(), 1, "{}", keys.body);

    // Another identity gets a tenant of its own.
    provider.set(Knobs {
        subject: "user-2".into(),
        email: "grace@example.com".into(),
        ..Knobs::default()
    });
    let mut other = Browser::new();
    let page = sign_in(&app.address, &mut other).await;
    let key2 = shown_key(&page.body).expect("a second tenant's key");
    assert_ne!(key, key2);
}

#[tokio::test]
async fn bad_state_nonce_or_signature_signs_nobody_in() {
    let provider = Provider::start().await;
    let app = app_with_provider(&provider).await;
    for (knobs, expect) in [
        (
            Knobs {
                state_override: Some("forged-state".into()),
                ..Knobs::default()
            },
            "state does not match",
        ),
        (
            Knobs {
                nonce_override: Some("replayed-nonce".into()),
                ..Knobs::default()
            },
            "nonce",
        ),
        (
            Knobs {
                wrong_key: true,
                ..Knobs::default()
            },
            "ID token was refused",
        ),
    ] {
        provider.set(knobs);
        let mut b = Browser::new();
        let page = sign_in(&app.address, &mut b).await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{expect}: {}",
            page.body
        );
        assert!(page.body.contains(expect), "{expect}: {}", page.body);
        assert!(!page
            .set_cookies
            .iter()
            .any(|c| c.starts_with("cl_session=")));
        assert!(shown_key(&page.body).is_none());
        let keys = b.get(&app.url("/dashboard/keys")).await;
        assert_eq!(
            keys.location.as_deref(),
            Some("/dashboard/login"),
            "{expect}"
        );
    }
    // A callback without a started sign-in, and a replayed code.
    provider.set(Knobs::default());
    let mut b = Browser::new();
    let start = b.get(&app.url("/dashboard/login/start")).await;
    let back = b.get(&start.location.expect("provider")).await;
    let callback = back.location.expect("callback");
    let mut stranger = Browser::new();
    let page = stranger.get(&callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("not started here"), "{}", page.body);
    let page = b.get(&callback).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(provider.refusals().is_empty(), "{:?}", provider.refusals());
    // The same answer again: its sign-in is over.
    let page = b.get(&callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sessions_and_api_keys_never_open_each_other() {
    let provider = Provider::start().await;
    let app = app_with_provider(&provider).await;
    let mut b = Browser::new();
    let page = sign_in(&app.address, &mut b).await;
    let key = shown_key(&page.body).expect("key");
    let session = b.cookies.get("cl_session").cloned().expect("session");
    // The session's token is not an API credential, as a key or a bearer.
    assert_eq!(api_status(&app, &session).await, StatusCode::UNAUTHORIZED);
    let r = app
        .client
        .get(app.url("/api/v1/Reservation"))
        .header("Cookie", format!("cl_session={session}"))
        .send()
        .await
        .expect("api");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // An API key does not open the dashboard.
    let r = Browser::new()
        .http
        .get(app.url("/dashboard/keys"))
        .header("X-Api-Key", &key)
        .header("Authorization", format!("Bearer {key}"))
        .send()
        .await
        .expect("dashboard");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // A tampered session is no session.
    let mut forged = Browser::new();
    forged
        .cookies
        .insert("cl_session".into(), format!("{session}x"));
    let page = forged.get(&app.url("/dashboard/keys")).await;
    assert_eq!(page.location.as_deref(), Some("/dashboard/login"));
}

#[tokio::test]
async fn keys_page_creates_rotates_and_revokes_with_csrf() {
    let provider = Provider::start().await;
    let app = app_with_provider(&provider).await;
    let mut b = Browser::new();
    let page = sign_in(&app.address, &mut b).await;
    let old = shown_key(&page.body).expect("key");
    let keys = b.get(&app.url("/dashboard/keys")).await;
    let csrf = csrf_of(&keys.body);
    let key_id: String = keys.body[keys.body.find("data-key=\"").expect("a key row") + 10..]
        .chars()
        .take_while(|c| *c != '"')
        .collect();

    // No token, a wrong token, or a foreign origin: refused, nothing changes.
    let url = app.url(&format!("/dashboard/keys/{key_id}/rotate"));
    for (form, origin) in [
        (vec![], None),
        (vec![("csrf", "nope")], None),
        (vec![("csrf", csrf.as_str())], Some("https://evil.example")),
    ] {
        let r = b.post(&url, &form, origin).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{form:?} {origin:?}");
    }
    assert_eq!(api_status(&app, &old).await, StatusCode::OK);

    // Free tier: one key; a second is refused with the reason.
    let r = b
        .post(
            &app.url("/dashboard/keys"),
            &[("csrf", &csrf), ("label", "ci")],
            Some(&app.address),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("allows 1 key"), "{}", r.body);

    // Force release of the tenant's own reservation, from the reservations page.
    let r = app
        .client
        .post(app.url("/api/v1/Reservation/reserve"))
        .header("X-Api-Key", &old)
        .json(&serde_json::json!([{"resource": "stuck/job", "requester": "w", "ttlSeconds": 600}]))
        .send()
        .await
        .expect("reserve");
    assert_eq!(r.status(), StatusCode::OK);
    let listing = b.get(&app.url("/dashboard/reservations")).await;
    assert!(
        listing.body.contains("data-resource=\"stuck/job\""),
        "{}",
        listing.body
    );
    let release = app.url("/dashboard/reservations/release");
    let r = b.post(&release, &[("resource", "stuck/job")], None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no csrf, no release");
    let r = b
        .post(
            &release,
            &[("csrf", &csrf), ("resource", "stuck/job")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let check = app
        .client
        .post(app.url("/api/v1/Reservation/check"))
        .header("X-Api-Key", &old)
        .json(&serde_json::json!([{"resource": "stuck/job"}]))
        .send()
        .await
        .expect("check");
    let body: serde_json::Value = check.json().await.expect("json");
    assert_eq!(body["results"][0]["status"], "FREE");

    // Rotate: a new secret, shown once; the old one is refused.
    let r = b.post(&url, &[("csrf", &csrf)], Some(&app.address)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let new = shown_key(&r.body).expect("rotated key");
    assert_ne!(new, old);
    assert_eq!(api_status(&app, &old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(api_status(&app, &new).await, StatusCode::OK);

    // Revoke: gone from the page and refused by the API.
    let r = b
        .post(
            &app.url(&format!("/dashboard/keys/{key_id}/revoke")),
            &[("csrf", &csrf)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(api_status(&app, &new).await, StatusCode::UNAUTHORIZED);
    let keys = b.get(&app.url("/dashboard/keys")).await;
    assert!(!keys.body.contains(&key_id));

    // A read-only key from the form: its scope shows on the page, and the
    // API lets it read, not write.
    assert!(keys.body.contains("name=\"scope\""), "{}", keys.body);
    let r = b
        .post(
            &app.url("/dashboard/keys"),
            &[("csrf", &csrf), ("label", "reader"), ("scope", "read")],
            Some(&app.address),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let reader = shown_key(&r.body).expect("read key");
    let keys = b.get(&app.url("/dashboard/keys")).await;
    assert!(
        keys.body.contains("<td class=\"scope\">read</td>"),
        "{}",
        keys.body
    );
    assert_eq!(api_status(&app, &reader).await, StatusCode::OK);
    let w = app
        .client
        .post(app.url("/api/v1/Reservation/reserve"))
        .header("X-Api-Key", &reader)
        .json(&serde_json::json!([{"resource": "r", "requester": "w"}]))
        .send()
        .await
        .expect("reserve");
    assert_eq!(w.status(), StatusCode::FORBIDDEN);

    // Sign-out needs the token too, then the session is gone from the browser.
    let r = b
        .post(&app.url("/dashboard/logout"), &[("csrf", &csrf)], None)
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r
        .set_cookies
        .iter()
        .any(|c| c.starts_with("cl_session=") && c.contains("Max-Age=0")));
    let page = b.get(&app.url("/dashboard/keys")).await;
    assert_eq!(page.location.as_deref(), Some("/dashboard/login"));
}

#[tokio::test]
async fn a_session_works_on_every_instance_of_the_fleet() {
    let provider = Provider::start().await;
    let app = app_with_provider(&provider).await;
    let redis = app.redis.as_ref().expect("redis").url();
    let mut s = crate::helpers::settings(Some(redis));
    s.oidc_issuer = Some(provider.issuer.clone());
    s.oidc_client_id = Some(CLIENT_ID.into());
    s.oidc_client_secret = Some(CLIENT_SECRET.into());
    s.cookie_secure = false;
    let (other, _handle) = start_instance(s).await;
    let mut b = Browser::new();
    let page = sign_in(&app.address, &mut b).await;
    assert_eq!(page.status, StatusCode::OK);
    let keys = b.get(&format!("{other}/dashboard/keys")).await;
    assert_eq!(keys.status, StatusCode::OK, "{}", keys.body);
    assert!(keys.body.contains("ada@example.com"));
}

#[tokio::test]
async fn embedded_mode_signs_in_locally_with_the_admin_token() {
    let app = spawn_app_with(Kind::Embedded, |s| s.cookie_secure = false).await;
    let mut b = Browser::new();
    let login = b.get(&app.url("/dashboard/login")).await;
    assert!(login.body.contains("Admin token"), "{}", login.body);
    let r = b
        .post(
            &app.url("/dashboard/login/local"),
            &[("token", "wrong")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = b
        .post(
            &app.url("/dashboard/login/local"),
            &[("token", crate::helpers::ADMIN_TOKEN)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let keys = b.get(&app.url("/dashboard/keys")).await;
    assert_eq!(keys.status, StatusCode::OK);
    assert!(keys.body.contains("default"));
    // Every page renders, with its assets served by the binary.
    for page in [
        "/dashboard/reservations",
        "/dashboard/events",
        "/dashboard/plan",
    ] {
        let p = b.get(&app.url(page)).await;
        assert_eq!(p.status, StatusCode::OK, "{page}");
    }
    for asset in ["/dashboard/assets/app.js", "/dashboard/assets/style.css"] {
        let p = b.get(&app.url(asset)).await;
        assert_eq!(p.status, StatusCode::OK, "{asset}");
        assert!(p.body.len() > 100);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_ends_when_its_session_expires() {
    // Arrange: sessions that last two seconds; sign in.
    let app = spawn_app_with(Kind::Embedded, |s| {
        s.cookie_secure = false;
        s.session_ttl = std::time::Duration::from_secs(2);
    })
    .await;
    let mut b = Browser::new();
    let r = b
        .post(
            &app.url("/dashboard/login/local"),
            &[("token", crate::helpers::ADMIN_TOKEN)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let signed_in = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();

    // Act: follow the live feed until it ends.
    let mut res = reqwest::Client::new()
        .get(app.url("/dashboard/live"))
        .header("Cookie", b.cookie_header())
        .send()
        .await
        .expect("live feed");
    assert_eq!(res.status(), StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
    let mut ended = false;
    while std::time::Instant::now() < deadline {
        match tokio::time::timeout(std::time::Duration::from_millis(200), res.chunk()).await {
            Ok(Ok(Some(_))) | Err(_) => {}
            Ok(Ok(None)) | Ok(Err(_)) => {
                ended = true;
                break;
            }
        }
    }
    let ended_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;

    // Assert: it ended within 1 s of the session's end (its exp is in whole
    // seconds, at most signed_in + 2), and not before it could have.
    assert!(ended, "the live feed outlived its session");
    assert!(
        ended_at <= (signed_in + 2) * 1000 + 1000,
        "ended {} ms after the session's latest possible end",
        ended_at as i64 - ((signed_in + 2) * 1000) as i64
    );
    assert!(
        ended_at >= (signed_in + 1) * 1000,
        "ended before the session did"
    );
}

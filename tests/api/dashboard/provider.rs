//! A small OpenID Connect provider on loopback, for the dashboard tests: a
//! discovery document, a JWKS, an authorize endpoint that signs the user in at
//! once and redirects back, and a token endpoint that checks the client, the
//! redirect URI and the PKCE verifier and returns an RS256 ID token. Knobs let
//! a test break one thing at a time (state, nonce, signing key).

use actix_web::{web, App, HttpResponse, HttpServer};
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const RSA_PRIVATE: &str = include_str!("../../fixtures/rsa_private.pem");
const RSA2_PRIVATE: &str = include_str!("../../fixtures/rsa2_private.pem");
pub const CLIENT_ID: &str = "cooplocker-dashboard-test";
pub const CLIENT_SECRET: &str = "test-client-secret-0123456789";

/// What the next sign-in does.
#[derive(Clone, Debug)]
pub struct Knobs {
    pub subject: String,
    pub email: String,
    /// Redirect back with this state instead of the one received.
    pub state_override: Option<String>,
    /// Put this nonce in the ID token instead of the one received.
    pub nonce_override: Option<String>,
    /// Sign the ID token with a key that is not in the JWKS.
    pub wrong_key: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            subject: "user-1".into(),
            email: "ada@example.com".into(),
            state_override: None,
            nonce_override: None,
            wrong_key: false,
        }
    }
}

struct Grant {
    nonce: String,
    challenge: String,
    redirect_uri: String,
    knobs: Knobs,
}

#[derive(Default)]
struct Inner {
    knobs: Knobs,
    codes: HashMap<String, Grant>,
    /// Token requests refused, with why.
    refusals: Vec<String>,
}

#[derive(Clone)]
pub struct Provider {
    pub issuer: String,
    inner: Arc<Mutex<Inner>>,
}

impl Provider {
    pub async fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let issuer = format!(
            "http://127.0.0.1:{}",
            listener.local_addr().expect("addr").port()
        );
        let inner = Arc::new(Mutex::new(Inner::default()));
        let data = web::Data::new((issuer.clone(), inner.clone()));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route(
                    "/.well-known/openid-configuration",
                    web::get().to(discovery),
                )
                .route("/jwks", web::get().to(jwks))
                .route("/authorize", web::get().to(authorize))
                .route("/token", web::post().to(token))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        tokio::spawn(server);
        Self { issuer, inner }
    }

    pub fn set(&self, knobs: Knobs) {
        self.inner.lock().expect("provider").knobs = knobs;
    }

    pub fn refusals(&self) -> Vec<String> {
        self.inner.lock().expect("provider").refusals.clone()
    }
}

type Data = web::Data<(String, Arc<Mutex<Inner>>)>;

async fn discovery(data: Data) -> HttpResponse {
    let issuer = &data.0;
    HttpResponse::Ok().json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

async fn jwks() -> HttpResponse {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("rsa");
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).expect("jwk");
    jwk.common.key_id = Some("k1".into());
    HttpResponse::Ok().json(JwkSet { keys: vec![jwk] })
}

async fn authorize(data: Data, q: web::Query<HashMap<String, String>>) -> HttpResponse {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("response_type") != "code"
        || get("client_id") != CLIENT_ID
        || get("code_challenge_method") != "S256"
        || get("code_challenge").is_empty()
        || !get("scope").split(' ').any(|s| s == "openid")
    {
        return HttpResponse::BadRequest().body("bad authorization request");
    }
    let mut inner = data.1.lock().expect("provider");
    let code = format!("code-{}", rand::random::<u64>());
    let knobs = inner.knobs.clone();
    let state = knobs.state_override.clone().unwrap_or_else(|| get("state"));
    let redirect = get("redirect_uri");
    inner.codes.insert(
        code.clone(),
        Grant {
            nonce: get("nonce"),
            challenge: get("code_challenge"),
            redirect_uri: redirect.clone(),
            knobs,
        },
    );
    let mut url = reqwest::Url::parse(&redirect).expect("redirect uri");
    url.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &state);
    HttpResponse::Found()
        .insert_header(("Location", url.to_string()))
        .finish()
}

async fn token(data: Data, form: web::Form<HashMap<String, String>>) -> HttpResponse {
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let mut inner = data.1.lock().expect("provider");
    let refuse = |inner: &mut Inner, why: &str| {
        inner.refusals.push(why.to_string());
        HttpResponse::BadRequest().json(json!({"error": "invalid_grant", "error_description": why}))
    };
    if get("grant_type") != "authorization_code" {
        return refuse(&mut inner, "grant_type");
    }
    if get("client_id") != CLIENT_ID || get("client_secret") != CLIENT_SECRET {
        return refuse(&mut inner, "client authentication");
    }
    // A code is good once.
    let Some(grant) = inner.codes.remove(&get("code")) else {
        return refuse(&mut inner, "unknown or used code");
    };
    if grant.redirect_uri != get("redirect_uri") {
        return refuse(&mut inner, "redirect_uri");
    }
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(get("code_verifier").as_bytes()));
    if challenge != grant.challenge {
        return refuse(&mut inner, "PKCE verifier");
    }
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": data.0,
        "aud": CLIENT_ID,
        "sub": grant.knobs.subject,
        "email": grant.knobs.email,
        "nonce": grant.knobs.nonce_override.clone().unwrap_or(grant.nonce),
        "iat": now,
        "exp": now + 300,
    });
    let pem = if grant.knobs.wrong_key {
        RSA2_PRIVATE
    } else {
        RSA_PRIVATE
    };
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k1".into());
    let id_token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).expect("rsa"),
    )
    .expect("sign");
    HttpResponse::Ok().json(json!({
        "access_token": "unused",
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
    }))
}

//! OpenID Connect sign-in for the dashboard: authorization code flow with
//! PKCE (S256), `state` and `nonce`, and ID tokens verified against the
//! provider's JWKS by the same verifier as tenant JWTs (pinned algorithms,
//! issuer, audience, expiry).

use crate::domain::jwt::{JwtAlg, JwtSettings};
use crate::tokens::Verifier;
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The configured provider.
pub struct Provider {
    pub issuer: String,
    pub client_id: String,
    client_secret: String,
    http: reqwest::Client,
    discovery: Mutex<Option<(Discovery, Instant)>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
}

/// How long a fetched discovery document is used.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

/// What the callback learns about the person signing in.
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub display: String,
}

/// A random URL-safe string of 32 bytes of entropy (state, nonce, verifier).
pub fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// The PKCE S256 challenge of a verifier.
pub fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl Provider {
    pub fn new(issuer: &str, client_id: &str, client_secret: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            issuer: issuer.trim_end_matches('/').to_string(),
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            http,
            discovery: Mutex::new(None),
        })
    }

    /// The provider's discovery document (cached for an hour); its `issuer`
    /// must be the configured one.
    pub async fn discovery(&self) -> Result<Discovery, String> {
        let mut cached = self.discovery.lock().await;
        if let Some((d, at)) = cached.as_ref() {
            if at.elapsed() < DISCOVERY_TTL {
                return Ok(d.clone());
            }
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let d: Discovery = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("the sign-in provider's discovery document: {e}"))?
            .json()
            .await
            .map_err(|e| format!("the sign-in provider's discovery document: {e}"))?;
        if d.issuer.trim_end_matches('/') != self.issuer {
            return Err(format!(
                "the sign-in provider says its issuer is {:?}, not the configured {:?}",
                d.issuer, self.issuer
            ));
        }
        *cached = Some((d.clone(), Instant::now()));
        Ok(d)
    }

    pub fn authorize_url(
        &self,
        d: &Discovery,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        verifier: &str,
    ) -> Result<String, String> {
        let mut url = reqwest::Url::parse(&d.authorization_endpoint)
            .map_err(|e| format!("the provider's authorization endpoint: {e}"))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", "openid email profile")
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &challenge(verifier))
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    /// Trades the code for tokens and verifies the ID token (signature by a
    /// key of the provider's JWKS, issuer, audience = our client id, expiry,
    /// and the nonce of this sign-in).
    pub async fn finish(
        &self,
        verifier_cache: &Verifier,
        code: &str,
        code_verifier: &str,
        redirect_uri: &str,
        nonce: &str,
    ) -> Result<Identity, String> {
        #[derive(Deserialize)]
        struct TokenResponse {
            id_token: Option<String>,
        }
        let d = self.discovery().await?;
        let res = self
            .http
            .post(&d.token_endpoint)
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", code_verifier),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.as_str()),
            ])
            .send()
            .await
            .map_err(|e| format!("the sign-in provider's token endpoint: {e}"))?;
        if !res.status().is_success() {
            return Err(format!(
                "the sign-in provider refused the code ({})",
                res.status()
            ));
        }
        let tokens: TokenResponse = res
            .json()
            .await
            .map_err(|e| format!("the sign-in provider's token answer: {e}"))?;
        let id_token = tokens
            .id_token
            .ok_or("the sign-in provider returned no ID token")?;
        let settings = JwtSettings {
            issuer: d.issuer.clone(),
            audience: self.client_id.clone(),
            algorithms: vec![JwtAlg::RS256, JwtAlg::ES256],
            hs256_secret: None,
            public_key_pem: None,
            jwks_url: Some(d.jwks_uri.clone()),
        };
        let v = verifier_cache
            .verify(&settings, &id_token)
            .await
            .map_err(|e| format!("the ID token was refused: {}", e.0))?;
        if v.nonce.as_deref() != Some(nonce) {
            return Err("the ID token's nonce is not this sign-in's".into());
        }
        let display = v.email.or(v.name).unwrap_or_else(|| v.subject.clone());
        Ok(Identity {
            issuer: d.issuer,
            subject: v.subject,
            display,
        })
    }
}

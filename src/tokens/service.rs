//! Service tokens: what a JWT exchange hands out. A token is itself a JWT, HS256,
//! signed with a key the whole fleet shares, so any instance verifies it with no
//! store round trip. It names the tenant, the subject (the requester it may act
//! as), its expiry, and the fingerprint of the tenant's JWT settings that
//! verified the exchange; the authenticator checks the fingerprint and the
//! tenant's tier against its cached tenant state, which the fleet-wide
//! invalidation feed keeps current.
//!
//! Keys: `COOPLOCKER_TOKEN_SECRET` is a comma-separated list; the first signs,
//! all verify (rotation: put the new key first on every instance, wait one
//! token lifetime, drop the old). Without it, a random key is created once in
//! the store (`cl:token-secret` in Redis) and shared by the fleet; in embedded
//! mode it lives as long as the process.

use crate::domain::TenantId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

const ISSUER: &str = "cooplocker";
const AUDIENCE: &str = "cooplocker-api";
/// Clock skew tolerated between instances, in seconds.
const LEEWAY_SECS: u64 = 5;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceClaims {
    pub iss: String,
    pub aud: String,
    /// The JWT's subject: the requester this token may reserve as.
    pub sub: String,
    /// The tenant.
    pub tid: String,
    /// Fingerprint of the tenant's JWT settings at exchange time.
    pub jfp: String,
    pub iat: u64,
    pub exp: u64,
}

/// A verifying (and, for the first, signing) key.
struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Key {
    fn new(secret: &str) -> Self {
        Self {
            kid: crate::domain::hash_secret(secret)[..12].to_string(),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        }
    }
}

/// The fleet's token keys.
pub struct TokenKeys {
    keys: Vec<Key>,
    validation: Validation,
}

/// Whether a presented credential is a service token rather than an API key
/// (API keys start `ck_`; a JWT's header starts `eyJ`).
pub fn looks_like_token(credential: &str) -> bool {
    credential.starts_with("eyJ") && credential.bytes().filter(|b| *b == b'.').count() == 2
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TokenKeys {
    /// Keys from secrets, the first of which signs. `None` when there are none.
    pub fn new<S: AsRef<str>>(secrets: &[S]) -> Option<Self> {
        if secrets.is_empty() {
            return None;
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        Some(Self {
            keys: secrets.iter().map(|s| Key::new(s.as_ref())).collect(),
            validation,
        })
    }

    /// Signs a token for `sub` of `tenant`, valid until `exp` (seconds).
    pub fn issue(
        &self,
        tenant: &TenantId,
        sub: &str,
        fingerprint: &str,
        exp: u64,
    ) -> Result<String, String> {
        let key = &self.keys[0];
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        let claims = ServiceClaims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: sub.into(),
            tid: tenant.as_str().into(),
            jfp: fingerprint.into(),
            iat: now_secs(),
            exp,
        };
        jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(|e| e.to_string())
    }

    /// Signs other fleet tokens (dashboard sessions, sign-in state): `claims`
    /// plus `iss` and the given `aud`, which keeps each kind from passing as
    /// another (an API token's audience is never one of these).
    pub fn sign_value(&self, aud: &str, mut claims: serde_json::Value) -> Result<String, String> {
        if let Some(m) = claims.as_object_mut() {
            m.insert("iss".into(), ISSUER.into());
            m.insert("aud".into(), aud.into());
        }
        let key = &self.keys[0];
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(|e| e.to_string())
    }

    /// The claims of a token from [`TokenKeys::sign_value`] for `aud`, if it
    /// verifies and has not expired.
    pub fn check_value(&self, token: &str, aud: &str) -> Option<serde_json::Value> {
        let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
        let key = self.keys.iter().find(|k| k.kid == kid)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[aud]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 0;
        jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &validation)
            .ok()
            .map(|d| d.claims)
    }

    /// Whether `token` names (by `kid`) a key that is not among these: signed
    /// by another key, or not by this fleet at all.
    pub fn names_unknown_key(&self, token: &str) -> bool {
        match jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid) {
            Some(kid) => !self.keys.iter().any(|k| k.kid == kid),
            None => false,
        }
    }

    /// The claims of a token this fleet signed and that has not expired.
    pub fn check(&self, token: &str) -> Option<ServiceClaims> {
        let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
        let key = self.keys.iter().find(|k| k.kid == kid)?;
        jsonwebtoken::decode::<ServiceClaims>(token, &key.decoding, &self.validation)
            .ok()
            .map(|d| d.claims)
    }
}

/// Checks at start-up that jsonwebtoken has a working crypto backend (it panics
/// at the first use otherwise): signs and verifies one HS256 token.
pub fn self_test() -> Result<(), String> {
    let run = || -> Result<(), String> {
        let keys = TokenKeys::new(&["self-test-self-test-self-test-self-test"]).ok_or("no key")?;
        let tenant = TenantId::generate();
        let token = keys.issue(&tenant, "self-test", "-", now_secs() + 60)?;
        match keys.check(&token) {
            Some(c) if c.sub == "self-test" && c.tid == tenant.as_str() => Ok(()),
            _ => Err("a freshly signed token did not verify".into()),
        }
    };
    std::panic::catch_unwind(run).map_err(|_| {
        "jsonwebtoken panicked: its crypto backend is missing or doubled".to_string()
    })?
}

//! Verification of a tenant's own JWTs against its settings, following RFC 8725:
//! the algorithm must be one the tenant pinned, and the key comes only from the
//! tenant's settings (its secret, its PEM key, or the JWKS at its configured
//! URL). Header parameters that point elsewhere (`jku`, `x5u`, `x5c`, `jwk`) are
//! never followed; `kid` only selects among the configured JWKS's keys.
//! `exp`, `iss`, `aud` and `sub` are required, `nbf` is honoured, with a small
//! leeway for clock skew.

use crate::domain::jwt::{JwtAlg, JwtSettings};
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest JWT accepted.
pub const MAX_JWT_BYTES: usize = 8 * 1024;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// A JWKS fetch must complete within this time...
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// ...and be at most this large.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most keys kept from one JWKS.
const MAX_JWKS_KEYS: usize = 50;
/// A fetched JWKS is used for this long before it is fetched again.
const JWKS_FRESH: Duration = Duration::from_secs(600);
/// An unknown `kid` triggers a refetch, but not more often than this per URL.
pub const JWKS_REFETCH_GAP: Duration = Duration::from_secs(10);
/// Most JWKS URLs cached at once (one per tenant that uses one).
const MAX_JWKS_URLS: usize = 10_000;

/// Why a JWT was not accepted. Every case is answered 401 with this text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected(pub String);

fn reject(msg: impl Into<String>) -> Rejected {
    Rejected(msg.into())
}

/// What a verified JWT says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub subject: String,
    /// The JWT's `exp`, in seconds since the epoch.
    pub expires_at: u64,
    /// `nonce`, `email` and `name` when present (OpenID Connect ID tokens).
    pub nonce: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<serde_json::Value>,
    nonce: Option<String>,
    email: Option<String>,
    name: Option<String>,
}

/// The header fields looked at before anything else.
#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

fn b64_json<T: serde::de::DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `iss` claim of a JWT, read without verifying anything: only to find
/// which tenant's settings should verify it.
pub fn unverified_issuer(jwt: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let mut parts = jwt.split('.');
    let (_, payload) = (parts.next()?, parts.next()?);
    b64_json::<Iss>(payload)?.iss
}

/// One key of a JWKS that may verify tokens.
struct JwksKey {
    kid: Option<String>,
    alg: JwtAlg,
    key: DecodingKey,
}

struct JwksEntry {
    keys: Arc<Vec<JwksKey>>,
    fetched: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// Verifies tenants' JWTs; keeps this instance's cache of JWKS documents.
pub struct Verifier {
    http: reqwest::Client,
    jwks: Mutex<HashMap<String, JwksEntry>>,
    /// One lock per JWKS URL being fetched: a burst of tokens with a new `kid`
    /// costs one fetch, and a slow host delays only the tenants that use it.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(JWKS_TIMEOUT)
            .connect_timeout(JWKS_TIMEOUT)
            // A redirect could lead anywhere; the tenant configured one URL.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            http,
            jwks: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies `jwt` against a tenant's settings.
    pub async fn verify(&self, settings: &JwtSettings, jwt: &str) -> Result<Verified, Rejected> {
        if jwt.len() > MAX_JWT_BYTES {
            return Err(reject(format!(
                "the JWT is longer than {MAX_JWT_BYTES} bytes"
            )));
        }
        let header_part = jwt.split('.').next().unwrap_or_default();
        if jwt.split('.').count() != 3 {
            return Err(reject(
                "not a JWT (three base64url parts separated by dots)",
            ));
        }
        let header: RawHeader =
            b64_json(header_part).ok_or_else(|| reject("the JWT header is not base64url JSON"))?;
        if header.crit.is_some() {
            return Err(reject(
                "the JWT has critical header extensions (crit), which are not supported",
            ));
        }
        let alg_name = header.alg.unwrap_or_default();
        let alg = JwtAlg::parse(&alg_name)
            .filter(|a| settings.algorithms.contains(a))
            .ok_or_else(|| {
                let names: Vec<&str> = settings.algorithms.iter().map(|a| a.as_str()).collect();
                reject(format!(
                    "the JWT's algorithm {alg_name:?} is not accepted; this tenant accepts {}",
                    names.join(", ")
                ))
            })?;

        let mut validation = Validation::new(alg.algorithm());
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;

        let check = |key: &DecodingKey| {
            jsonwebtoken::decode::<Claims>(jwt, key, &validation).map_err(|e| reject(describe(&e)))
        };
        let claims = if let Some(secret) = &settings.hs256_secret {
            check(&DecodingKey::from_secret(secret.as_bytes()))?
        } else if let Some(pem) = &settings.public_key_pem {
            let key = match alg {
                JwtAlg::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()),
                JwtAlg::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
                JwtAlg::HS256 => return Err(reject("HS256 is not accepted with a public key")),
            }
            .map_err(|_| reject("this tenant's public key cannot verify this algorithm"))?;
            check(&key)?
        } else if let Some(url) = &settings.jwks_url {
            let keys = self.jwks_keys(url, alg, header.kid.as_deref()).await?;
            let candidates: Vec<&JwksKey> = keys
                .iter()
                .filter(|k| k.alg == alg)
                .filter(|k| match &header.kid {
                    Some(kid) => k.kid.as_deref() == Some(kid.as_str()),
                    None => true,
                })
                .collect();
            match candidates.as_slice() {
                [] => {
                    return Err(reject(match &header.kid {
                        Some(kid) => format!("no key with kid {kid:?} for {} in the tenant's JWKS", alg.as_str()),
                        None => format!("no {} key in the tenant's JWKS", alg.as_str()),
                    }))
                }
                [one] => check(&one.key)?,
                _ => return Err(reject("the tenant's JWKS has several keys for this algorithm: the JWT must name one with kid")),
            }
        } else {
            return Err(reject("this tenant has no key to verify JWTs with"));
        };
        let sub = claims.claims.sub.unwrap_or_default();
        if sub.is_empty() || sub.len() > 256 || sub.chars().any(|c| c.is_control()) {
            return Err(reject("the JWT's sub must be 1 to 256 bytes without control characters (it becomes the requester)"));
        }
        Ok(Verified {
            nonce: claims.claims.nonce,
            email: claims.claims.email,
            name: claims.claims.name,
            subject: sub,
            expires_at: claims
                .claims
                .exp
                .and_then(|e| e.as_f64())
                .map_or(0, |e| e.max(0.0) as u64),
        })
    }

    /// The usable keys of a JWKS, fetched when not cached, stale, or (at a
    /// bounded rate) when the wanted `kid` is not among them.
    async fn jwks_keys(
        &self,
        url: &str,
        alg: JwtAlg,
        kid: Option<&str>,
    ) -> Result<Arc<Vec<JwksKey>>, Rejected> {
        let wanted = |keys: &[JwksKey]| {
            keys.iter()
                .any(|k| k.alg == alg && kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)))
        };
        let cached = |this: &Self| -> (Option<Arc<Vec<JwksKey>>>, bool) {
            let map = this.jwks.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(url) {
                None => (None, true),
                Some(e) => {
                    let stale = e.fetched.is_none_or(|f| f.elapsed() > JWKS_FRESH);
                    let missing = !wanted(&e.keys);
                    let may_retry = e
                        .last_attempt
                        .is_none_or(|a| a.elapsed() >= JWKS_REFETCH_GAP);
                    (Some(e.keys.clone()), (stale || missing) && may_retry)
                }
            }
        };
        let (keys, fetch) = cached(self);
        if !fetch {
            return keys.ok_or_else(|| reject("the tenant's JWKS could not be fetched"));
        }
        let url_lock = self.url_lock(url);
        let turn = url_lock.lock().await;
        // Someone else may have fetched while this one waited.
        let (keys, fetch) = cached(self);
        if !fetch {
            drop(turn);
            self.release_url_lock(url, url_lock);
            return keys.ok_or_else(|| reject("the tenant's JWKS could not be fetched"));
        }
        let fetched = self.fetch(url).await;
        drop(turn);
        self.release_url_lock(url, url_lock);
        let mut map = self.jwks.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_JWKS_URLS && !map.contains_key(url) {
            map.clear();
        }
        let entry = map.entry(url.to_string()).or_insert_with(|| JwksEntry {
            keys: Arc::new(Vec::new()),
            fetched: None,
            last_attempt: None,
        });
        entry.last_attempt = Some(Instant::now());
        match fetched {
            Ok(keys) => {
                entry.keys = Arc::new(keys);
                entry.fetched = Some(Instant::now());
                Ok(entry.keys.clone())
            }
            Err(e) => {
                tracing::warn!(url, error = %e, "JWKS fetch failed");
                // Keep serving the keys already known, if any.
                if entry.fetched.is_some() {
                    Ok(entry.keys.clone())
                } else {
                    Err(reject(format!(
                        "the tenant's JWKS could not be fetched: {e}"
                    )))
                }
            }
        }
    }

    /// The lock that serialises fetches of `url` (created on first need).
    fn url_lock(&self, url: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(url.to_string()).or_default().clone()
    }

    /// Forgets the lock of `url` once nobody holds or waits for it, so the map
    /// stays as small as the number of fetches under way.
    fn release_url_lock(&self, url: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        // Two references: the map's and `lock`; any more is a waiter.
        if Arc::strong_count(&lock) <= 2 {
            locks.remove(url);
        }
    }

    async fn fetch(&self, url: &str) -> Result<Vec<JwksKey>, String> {
        let res = self
            .http
            .get(url)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| {
                format!(
                    "request failed ({})",
                    if e.is_timeout() {
                        "timed out"
                    } else {
                        "no answer"
                    }
                )
            })?;
        if !res.status().is_success() {
            return Err(format!("it answered {}", res.status().as_u16()));
        }
        if res
            .content_length()
            .is_some_and(|l| l > MAX_JWKS_BYTES as u64)
        {
            return Err(format!("it is larger than {MAX_JWKS_BYTES} bytes"));
        }
        let mut body = Vec::new();
        let mut res = res;
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|_| "the body was cut short".to_string())?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("it is larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body)
            .map_err(|_| "it is not a JWKS (JSON with keys)".to_string())?;
        Ok(set
            .keys
            .iter()
            .filter(|k| !matches!(k.common.public_key_use, Some(PublicKeyUse::Encryption)))
            .filter_map(|k| {
                // The key's type decides its algorithm; a declared `alg` must agree.
                let alg = match &k.algorithm {
                    AlgorithmParameters::RSA(_) => JwtAlg::RS256,
                    AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                        JwtAlg::ES256
                    }
                    // Symmetric keys in a JWKS are refused (HS/RS confusion).
                    _ => return None,
                };
                let declared = match k.common.key_algorithm {
                    None => None,
                    Some(KeyAlgorithm::RS256) => Some(JwtAlg::RS256),
                    Some(KeyAlgorithm::ES256) => Some(JwtAlg::ES256),
                    Some(_) => return None,
                };
                if declared.is_some_and(|d| d != alg) {
                    return None;
                }
                Some(JwksKey {
                    kid: k.common.key_id.clone(),
                    alg,
                    key: DecodingKey::from_jwk(k).ok()?,
                })
            })
            .take(MAX_JWKS_KEYS)
            .collect())
    }
}

/// A client-facing reason for a failed verification.
fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "the JWT has expired (exp)".into(),
        K::ImmatureSignature => "the JWT is not valid yet (nbf)".into(),
        K::InvalidIssuer => "the JWT's issuer (iss) is not the one this tenant trusts".into(),
        K::InvalidAudience => "the JWT's audience (aud) is not the one this tenant expects".into(),
        K::InvalidSignature => "the JWT's signature does not verify".into(),
        K::InvalidAlgorithm => "the JWT's algorithm does not fit this tenant's key".into(),
        K::MissingRequiredClaim(c) => format!("the JWT lacks the required claim {c}"),
        K::InvalidSubject => "the JWT's sub is not valid".into(),
        _ => "the JWT is malformed or its claims are not valid".into(),
    }
}
